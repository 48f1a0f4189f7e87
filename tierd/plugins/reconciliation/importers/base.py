"""Small parsing helpers every statement importer shares.

They all raise :class:`StatementError` with the location they are given, so an
importer only has to say *where* it is reading, never how to phrase an error.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import re
from decimal import Decimal, InvalidOperation

from tierd.core.registry import StatementError

_PLAIN_DECIMAL = re.compile(r"[+-]?(\d+(\.\d*)?|\.\d+)")


def parse_decimal(text: str, location: str, what: str = "amount") -> Decimal:
    """A decimal in the plain ``-1234.56`` form; anything else is an error.

    ``Decimal()`` alone would accept ``NaN``, ``Infinity`` and ``1e5``, none of
    which a bank means, so the text is checked against a strict pattern first.
    """
    value = (text or "").strip()
    if not _PLAIN_DECIMAL.fullmatch(value):
        raise StatementError(f"bad {what} {value!r}", location)
    try:
        return Decimal(value)
    except InvalidOperation:  # pragma: no cover - the pattern already rules this out
        raise StatementError(f"bad {what} {value!r}", location) from None


def parse_localized_decimal(text: str, decimal_sep: str, location: str, what: str = "amount") -> Decimal:
    """A decimal written with ``decimal_sep`` and optional thousands separators.

    ``1.234,56`` with ``decimal_sep=","`` and ``1,234.56`` with ``"."`` both
    give ``1234.56``. A trailing minus (``12,50-``, common in German exports)
    is accepted too.
    """
    value = (text or "").strip().replace("\u00a0", "").replace(" ", "")
    if value.endswith("-") and not value.startswith("-"):
        value = "-" + value[:-1]
    thousands = "." if decimal_sep == "," else ","
    if thousands in value:
        # Thousands separators are only allowed between groups of three digits.
        integer = value.split(decimal_sep, 1)[0].lstrip("+-")
        if not re.fullmatch(r"\d{1,3}(" + re.escape(thousands) + r"\d{3})+", integer):
            raise StatementError(f"bad {what} {text.strip()!r}", location)
        value = value.replace(thousands, "")
    return parse_decimal(value.replace(decimal_sep, "."), location, what)


def parse_iso_date(text: str, location: str, what: str = "date") -> dt.date:
    """``YYYY-MM-DD``, or the date part of an ISO date-time."""
    value = (text or "").strip()
    try:
        return dt.date.fromisoformat(value[:10]) if len(value) >= 10 else dt.date.fromisoformat(value)
    except ValueError:
        raise StatementError(f"bad {what} {value!r}", location) from None


def parse_date_format(text: str, fmt: str, location: str, what: str = "date") -> dt.date:
    """A date in a ``strptime`` format (as configured for a CSV layout)."""
    value = (text or "").strip()
    try:
        return dt.datetime.strptime(value, fmt).date()
    except ValueError:
        raise StatementError(f"bad {what} {value!r} (expected format {fmt})", location) from None


def reject_xml_declarations(data: bytes) -> None:
    """Refuse documents with a DOCTYPE or ENTITY declaration.

    Statements never need them, and refusing them up front closes the door on
    entity-expansion ("billion laughs") and external-entity (XXE) attacks
    without depending on the expat version.
    """
    upper = data.upper()
    for marker in (b"<!DOCTYPE", b"<!ENTITY"):
        pos = upper.find(marker)
        if pos >= 0:
            line = data.count(b"\n", 0, pos) + 1
            raise StatementError(f"{marker[2:].decode().lower()} declarations are not allowed", f"line {line}")


def decode_text(data: bytes, encoding: str | None = None) -> str:
    """Decode bytes, honouring a byte-order mark before the named encoding.

    A UTF-8 or UTF-16 BOM wins over the configured encoding: banks that say
    "cp1252" in their documentation do sometimes ship UTF-8 with a BOM.
    """
    if data.startswith(b"\xef\xbb\xbf"):
        encoding, data = "utf-8", data[3:]
    elif data.startswith((b"\xff\xfe", b"\xfe\xff")):
        encoding = "utf-16"
    encoding = encoding or "utf-8"
    try:
        return data.decode(encoding)
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise StatementError(f"cannot decode byte {data[exc.start]:#04x} as {encoding}", f"line {line}") from None
    except LookupError:
        raise StatementError(f"unknown encoding {encoding!r}") from None


def csv_rows(text: str, delimiter: str, quotechar: str):
    """``(line number, row)`` for each row of a CSV text; a row the csv module
    cannot read (a field over its 131,072-character limit, an unclosed quote
    at the end) is a StatementError naming its line."""
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter, quotechar=quotechar)
    while True:
        try:
            row = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            raise StatementError(f"unreadable CSV: {exc}", f"line {reader.line_num}") from None
        yield reader.line_num, row


def clean(text: str | None) -> str:
    """Collapse runs of whitespace (banks wrap remittance text at odd places)."""
    return " ".join((text or "").split())
