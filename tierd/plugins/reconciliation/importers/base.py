"""Small parsing helpers every statement importer shares.

They all raise :class:`StatementError` with the location they are given, so an
importer only has to say *where* it is reading, never how to phrase an error.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import re
from decimal import ROUND_HALF_EVEN, Decimal, InvalidOperation

from tierd.core.registry import StatementError

#: An ISO 4217 code (accounts, ledger entries, a CSV's instructed currency).
CURRENCY_RE = re.compile(r"[A-Z]{3}")
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


# --- amounts in another currency ------------------------------------------------------

#: ISO 4217 currencies whose minor unit is not the cent (all others have two decimals).
_MINOR_UNITS = {
    **dict.fromkeys("BIF CLP DJF GNF ISK JPY KMF KRW PYG RWF UGX UYI VND VUV XAF XOF XPF".split(), 0),
    **dict.fromkeys("BHD IQD JOD KWD LYD OMR TND".split(), 3),
    **dict.fromkeys("CLF UYW".split(), 4),
}
#: Banks quote rates with up to ten decimals (ISO 20022 ``BaseOneRate``).
_RATE_PLACES = Decimal("1e-10")


def to_minor_units(amount: Decimal, currency: str) -> Decimal:
    """``amount`` rounded to the currency's minor unit (JPY 0, KWD 3, most 2).

    Used for an amount a format does not state but implies (an OFX original
    amount is the booked one divided by the rate), so it reads like money.
    """
    places = _MINOR_UNITS.get(currency.upper(), 2)
    return amount.quantize(Decimal(1).scaleb(-places), rounding=ROUND_HALF_EVEN)


def parse_rate(text: str, location: str) -> Decimal:
    """An exchange rate: a plain positive decimal (a comma decimal mark accepted).

    Zero or negative rates cannot convert anything, so they are errors too.
    """
    rate = parse_decimal((text or "").strip().replace(",", "."), location, "exchange rate")
    if rate <= 0:
        raise StatementError(f"bad exchange rate {text.strip()!r} (it must be more than zero)", location)
    return rate


def invert_rate(rate: Decimal) -> Decimal:
    """``1 / rate`` to ten decimals, trailing zeros dropped (``0.8`` for ``1.25``)."""
    return tidy((Decimal(1) / rate).quantize(_RATE_PLACES, rounding=ROUND_HALF_EVEN))


def tidy(value: Decimal) -> Decimal:
    """The same number without trailing zeros, never in exponent form (``1E+1``)."""
    normal = value.normalize()
    return normal.quantize(Decimal(1)) if normal.as_tuple().exponent > 0 else normal  # type: ignore[operator]


def orient_rate(rate: Decimal, instructed: Decimal, booked: Decimal) -> Decimal:
    """``rate`` or its inverse, whichever turns ``instructed`` into ``booked``.

    For a rate whose direction the file does not state (an MT940 ``/EXCH/``,
    a CAMT ``CcyXchg`` without ``UnitCcy``): the two readings differ by the
    square of the rate, so the amounts tell them apart even after charges.
    """
    inverse = invert_rate(rate)
    target = abs(booked)
    if abs(abs(instructed) * inverse - target) < abs(abs(instructed) * rate - target):
        return inverse
    return tidy(rate)


def rate_between(booked: Decimal, instructed: Decimal) -> Decimal:
    """The rate that turned ``instructed`` into ``booked``, to ten decimals."""
    return tidy((abs(booked) / abs(instructed)).quantize(_RATE_PLACES, rounding=ROUND_HALF_EVEN))
