"""Ledger entries in another currency than the account's, valued for a manual match.

An invoice in USD on a EUR account is paid by a line the bank booked in EUR.
A person matching the two by hand names the rate, or leaves it to the
statement line: the bank's rate when the line was instructed in the entry's
currency, else the rate its booked and instructed amounts imply. The entry's
value in the account's currency is then ``amount × rate``, rounded to the
account's smallest unit, and the usual rule applies: the bank total minus
that value is the adjustment.
"""

from __future__ import annotations

from decimal import ROUND_HALF_EVEN, Decimal

from tierd.core.api import ApiError

from .importers.base import rate_between


def _places(rows: list[dict]) -> int:
    exponents = [Decimal(r["amount"]).as_tuple().exponent for r in rows]
    return max([2, *(-e for e in exponents if isinstance(e, int))])


def line_rate(lines: list[dict], currency: str) -> Decimal | None:
    """The rate the statement lines give for ``currency`` (booked per unit), if they agree on one."""
    instructed = [r for r in lines if r.get("instructed_currency") == currency and r.get("instructed_amount")]
    if not instructed or len(instructed) != len(lines):
        return None
    rates = {Decimal(r["exchange_rate"]) for r in instructed if r.get("exchange_rate")}
    if len(rates) == 1 and len(instructed) == sum(1 for r in instructed if r.get("exchange_rate")):
        return rates.pop()
    booked = sum((Decimal(r["amount"]) for r in instructed), Decimal(0))
    sent = sum((Decimal(r["instructed_amount"]) for r in instructed), Decimal(0))
    return rate_between(booked, sent) if sent else None


def ledger_value(
    account_currency: str, lines: list[dict], entries: list[dict], rate: Decimal | None
) -> tuple[Decimal, Decimal | None]:
    """The entries' total in the account's currency, and the rate used (None when none was needed).

    :class:`ApiError` 422 when entries mix two foreign currencies, or when a
    foreign entry has no rate (none given and none on the lines).
    """
    home = [e for e in entries if e["currency"] == account_currency]
    foreign = [e for e in entries if e["currency"] != account_currency]
    total = sum((Decimal(e["amount"]) for e in home), Decimal(0))
    if not foreign:
        return total, None
    currencies = sorted({e["currency"] for e in foreign})
    if len(currencies) > 1:
        raise ApiError(
            422,
            "mixed_currencies",
            f"ledger entries in {' and '.join(currencies)}: match entries of one foreign currency at a time",
            {"currencies": currencies},
        )
    rate = rate or line_rate(lines, currencies[0])
    if rate is None:
        raise ApiError(
            422,
            "exchange_rate_required",
            f"ledger entries are in {currencies[0]}, the account in {account_currency}, and the statement lines"
            f' name no {currencies[0]} amount: give "exchange_rate" ({account_currency} per {currencies[0]})',
            {"currency": currencies[0]},
        )
    unit = Decimal(1).scaleb(-_places(lines + home))
    value = sum((Decimal(e["amount"]) for e in foreign), Decimal(0)) * rate
    return total + value.quantize(unit, rounding=ROUND_HALF_EVEN), rate
