"""Payments instructed in another currency, matched through the bank's rate.

A EUR account receives a payment its customer instructed in USD: the bank
books EUR 921.30 and says what was instructed (CAMT ``AmtDtls/InstdAmt``,
OFX ``ORIGCURRENCY``, MT940 ``/OCMT/``) and, mostly, at which rate. The books
hold the invoice in USD. This rule pairs the two on the instructed amount,
then converts the entry at the bank's rate (or, where the bank names none,
the rate its two amounts imply): when that lands on the booked amount within
``rate_tolerance`` percent, the rest is kept as an exchange adjustment, so
that ``booked == entry × rate + adjustment`` holds in the account's currency.

Equal foreign amounts alone do not decide (two customers may owe USD 500.00):
a reference, a similar name or a learned payer has to agree before a match
is automatic; otherwise it is a suggestion.
"""

from __future__ import annotations

from decimal import ROUND_HALF_EVEN, Decimal

from ..importers.base import rate_between
from .context import Context, DatedIndex, Item, key_index
from .evidence import Candidate, clean, closeness, days_phrase, party
from .text import fuzzy_ref_score


def _instructed_units(b: Item, scale: int) -> int | None:
    """The instructed amount in the engine's integer units (None if absent or finer than them)."""
    amount = b.src.instructed_amount
    if amount is None or not b.src.instructed_currency:
        return None
    units = amount.scaleb(scale)
    return int(units) if units == units.to_integral_value() else None


def _money(value: Decimal, places: int) -> str:
    return f"{value:,.{places}f}"


def fx_rule(ctx: Context, p: dict) -> list[Candidate]:
    """(g) A line instructed in currency X pays a ledger entry in X, converted at the bank's rate."""
    window = int(p["window_days"])
    rate_tolerance = Decimal(str(p["rate_tolerance"]))
    home = {b.currency for b in ctx.open_banks.values()}
    foreign = [e for e in ctx.open_ledgers.values() if e.currency not in home]
    by_amount = DatedIndex()
    for entry in foreign:
        by_amount.add((entry.currency, entry.units), entry)
    by_amount.freeze()
    by_key = key_index(foreign)
    out = []
    for b in ctx.open_banks.values():
        units = _instructed_units(b, ctx.scale)
        if units is None or b.src.instructed_currency == b.currency:
            continue
        ccy = b.src.instructed_currency
        pool = {e.id: e for e in by_amount.window((ccy, units), b.day, window)}
        for key in sorted(b.keys | b.grams):
            for e in by_key.window(key, b.day, window):
                if e.currency == ccy and e.units == units:
                    pool.setdefault(e.id, e)
        for entry in sorted(pool.values(), key=lambda it: it.id):
            candidate = _candidate(ctx, b, entry, window, rate_tolerance)
            if candidate is not None:
                out.append(candidate)
    return out


def _candidate(ctx: Context, b: Item, entry: Item, window: int, rate_tolerance: Decimal) -> Candidate | None:
    booked = b.src.amount
    instructed = b.src.instructed_amount
    assert instructed is not None  # the caller looked it up by it
    rate = b.src.exchange_rate
    rate_source = "the bank's rate"
    if rate is None or rate <= 0:
        # As the importers derive one (ten places): stored with the match,
        # booked == entry x rate + adjustment must hold for the rate as stored.
        rate = rate_between(booked, instructed)
        rate_source = "the rate the booked amount implies"
    exact = Decimal(1).scaleb(-ctx.scale)
    converted = (entry.src.amount * rate).quantize(exact, rounding=ROUND_HALF_EVEN)
    diff = booked - converted
    if abs(diff) * 100 > abs(booked) * rate_tolerance:
        return None  # the bank's own figures disagree beyond its spread: let a person look
    who = party(ctx, b, entry)
    found = bool((b.keys | b.grams) & entry.keys)
    fref = 1.0 if found else (fuzzy_ref_score(entry.ref, b.grams) if entry.ref else 0.0)
    d = abs(b.day - entry.day)
    date_part = 0.1 * closeness(d, window)
    score = 0.7 + 0.15 * max(fref, who.weight) + date_part - (0.1 if who.differ else 0.0)
    places = max(ctx.scale, 2)
    ccy = b.src.instructed_currency
    reasons = [
        f"instructed {ccy} {_money(instructed, places)}, the ledger amount; booked"
        f" {b.currency} {_money(booked, places)} at {rate_source} {rate.normalize():f}",
        f"reference {entry.src.reference or entry.src.external_id} in remittance"
        if found
        else (f"reference {entry.src.reference} nearly in remittance ({round(fref * 100)}% alike)" if fref else None),
        who.phrase,
        f"exchange difference {_money(diff, places)} kept as an adjustment" if diff else "no exchange difference",
        days_phrase(d),
    ]
    adjustment = int(diff.scaleb(ctx.scale))
    c = Candidate("fx", score, [b], [entry], clean(reasons), adjustment=adjustment, date_part=date_part)
    c.exchange_rate = rate
    return c
