"""Cell values by column type, shared by the exporters.

A report's rows hold what the database holds (see
:class:`tierd.core.registry.Column`): ``decimal`` as text (``"1234.50"``),
``instant`` as unix seconds (UTC), ``date`` as ``YYYY-MM-DD`` text, ``boolean``
as 0 or 1. Each exporter turns them into its own cells through these
functions. Money stays :class:`~decimal.Decimal`; a value that does not parse
as its column's type is written as the text it is, never dropped.
"""

from __future__ import annotations

import datetime as dt
import itertools
import unicodedata
from collections.abc import Iterator
from decimal import Decimal, InvalidOperation
from typing import Any

from tierd.core.registry import Column, ReportData, ReportExporter

UTC = dt.UTC

#: A text cell starting with one of these is read as a formula by spreadsheets
#: (OWASP, "CSV injection"): the CSV and XLSX exporters neutralise it.
FORMULA_PREFIXES = ("=", "+", "-", "@", "\t", "\r")

#: Column types written as numbers (right-aligned in tables).
NUMERIC = ("integer", "decimal")


def to_decimal(value: Any) -> Decimal | None:
    """The decimal a ``decimal`` cell holds, or None (empty or not a finite number)."""
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, Decimal):
        return value if value.is_finite() else None
    if isinstance(value, int):
        return Decimal(value)
    try:
        number = Decimal(str(value).strip())
    except InvalidOperation:
        return None
    return number if number.is_finite() else None


def to_instant(value: Any) -> dt.datetime | None:
    """The UTC datetime an ``instant`` cell holds (unix seconds), or None."""
    if value is None or value == "" or isinstance(value, bool):
        return None
    if isinstance(value, dt.datetime):
        return value.astimezone(UTC) if value.tzinfo else value.replace(tzinfo=UTC)
    try:
        return dt.datetime.fromtimestamp(float(value), UTC)
    except (TypeError, ValueError, OverflowError, OSError):
        pass
    try:
        parsed = dt.datetime.fromisoformat(str(value))
    except ValueError:
        return None
    return parsed.astimezone(UTC) if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def to_date(value: Any) -> dt.date | None:
    """The date a ``date`` cell holds (``YYYY-MM-DD``), or None."""
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, dt.datetime):
        return value.date()
    if isinstance(value, dt.date):
        return value
    try:
        return dt.date.fromisoformat(str(value))
    except ValueError:
        return None


def to_bool(value: Any) -> bool | None:
    """The boolean a ``boolean`` cell holds (0 or 1), or None."""
    if value is None or value == "":
        return None
    if isinstance(value, str):
        lowered = value.strip().lower()
        if lowered in ("1", "true", "yes"):
            return True
        if lowered in ("0", "false", "no"):
            return False
        return None
    return bool(value)


def typed(type_: str, value: Any) -> Any:
    """The Python value of a cell: ``str``, ``int``, ``Decimal``, an aware UTC
    ``datetime``, ``date``, ``bool`` or None; a value that does not parse as
    its type comes back as its text."""
    if value is None:
        return None
    converted: Any
    if type_ == "integer":
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        try:
            return int(str(value).strip())
        except ValueError:
            converted = None
    elif type_ == "decimal":
        converted = to_decimal(value)
    elif type_ == "instant":
        converted = to_instant(value)
    elif type_ == "date":
        converted = to_date(value)
    elif type_ == "boolean":
        converted = to_bool(value)
    else:
        return value if isinstance(value, str) else str(value)
    return str(value) if converted is None else converted


def iso_instant(moment: dt.datetime) -> str:
    """``2026-11-30T12:00:00Z`` (milliseconds only when there are some)."""
    spec = "seconds" if moment.microsecond == 0 else "milliseconds"
    return moment.astimezone(UTC).replace(tzinfo=None).isoformat(timespec=spec) + "Z"


def decimal_text(value: Any) -> str:
    """A decimal as the text it was stored as (``"1234.50"`` keeps its zero)."""
    return format(value, "f") if isinstance(value, Decimal) else str(value).strip()


def display(type_: str, value: Any) -> str:
    """A cell as people read it in a table (PDF, HTML, Markdown); instants
    in UTC as ``2026-11-30 12:00:00``."""
    value = typed(type_, value)
    if value is None:
        return ""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, dt.datetime):
        return iso_instant(value).replace("T", " ").removesuffix("Z")
    if isinstance(value, Decimal):
        return decimal_text(value)
    if isinstance(value, dt.date):
        return value.isoformat()
    return str(value)


def is_formula_like(text: str) -> bool:
    """True if a spreadsheet would read ``text`` as a formula."""
    return text.startswith(FORMULA_PREFIXES)


def neutralise(text: str) -> str:
    """``text`` made inert for spreadsheets: a leading ``'`` before a formula
    character, as OWASP recommends against CSV injection."""
    return "'" + text if is_formula_like(text) else text


def printable(text: str) -> str:
    """``text`` without control characters other than line breaks (for PDF)."""
    text = text.replace("\r\n", "\n").replace("\r", "\n").replace("\t", " ")
    if text.isprintable():
        return text
    return "".join(c if c == "\n" or unicodedata.category(c)[0] != "C" else " " for c in text)


def params_text(params: dict[str, Any]) -> str:
    """``from=2026-11-01, to=2026-11-30`` (``none`` when there are none)."""
    return ", ".join(f"{key}={value}" for key, value in params.items()) or "none"


def generated_at(report: ReportData) -> dt.datetime:
    """When the report was generated, an aware UTC datetime."""
    return dt.datetime.fromtimestamp(report.generated_at, UTC)


def peek(rows: Iterator[tuple], count: int) -> tuple[list[tuple], Iterator[tuple]]:
    """The first ``count`` rows (to size columns from), and an iterator over all
    rows, those first ones included. Only those first rows are held."""
    head = list(itertools.islice(rows, count))
    return head, itertools.chain(head, rows)


def one_report(exporter: ReportExporter, reports: list[ReportData]) -> ReportData:
    """The one report a single-report format is given (refuse several)."""
    if len(reports) != 1:
        raise ValueError(f"the {exporter.format_name} format takes exactly one report, not {len(reports)}")
    return reports[0]


def column_types(columns: list[Column]) -> list[str]:
    return [column.type for column in columns]
