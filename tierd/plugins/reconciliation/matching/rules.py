"""The built-in rule passes. Each turns the open items into scored candidates.

A rule never decides: it proposes candidates (which items, a score 0..1, the
reasons a person can read, an adjustment) and :mod:`.resolve` settles the
conflicts between them. Scores are built from the same few pieces of
evidence everywhere (:mod:`.evidence`): equal amounts, dates close together,
a reference found (exactly or nearly) in the remittance, the counterparty
(similar names, or a payer reviewers matched to it before). The 1:1 rules and
the tolerance rule live here, the many-to-one rules in :mod:`.batch`.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator
from decimal import Decimal

from .batch import batch_rule, partial_rule
from .context import Context, DatedIndex, Item, PartyIndex, amount_index
from .evidence import (
    NAMES_AGREE,
    Candidate,
    NamedElsewhere,
    Party,
    clean,
    closeness,
    days_phrase,
    elsewhere_phrase,
    name_phrase,
    name_weight,
    names_differ,
    party,
    ref_label,
)
from .fx import fx_rule
from .text import fuzzy_ref_score, norm_ref, swapped_key

__all__ = [
    "RULES",
    "Candidate",
    "closeness",
    "days_phrase",
    "name_phrase",
    "name_weight",
    "names_differ",
]


# --- 1:1 rules on equal amounts -------------------------------------------------------


#: More same-amount entries than this within one window make a crowd.
CROWD = 8


def _equal_amount_pairs(ctx: Context, window: int, after: int | None = None) -> Iterator[tuple[Item, Item, int]]:
    """Open (bank, ledger) pairs with the same currency and amount within the window.

    The ledger entry may be dated up to ``window`` days before the bank line
    and up to ``after`` days after it (``window`` unless given): invoices come
    before their payment, so a wide window need not reach as far forward.

    An amount that many open entries share within the window (a round
    amount, a monthly fee) says little about which one is meant, and
    pairing it with all of them would grow with the square of the data's
    density. In such a crowd only the entries whose counterparty shares a
    name key with the bank line, or that reviewers have seen this payer pay
    for (a known payer, by IBAN or name), are candidates (from a second index
    keyed by amount and name); a bank line with neither gets none there.
    """
    ledgers = list(ctx.open_ledgers.values())
    index = amount_index(ledgers)
    sizes: dict = {}
    for entry in ledgers:
        sizes[(entry.currency, entry.units)] = sizes.get((entry.currency, entry.units), 0) + 1
    crowd_index = DatedIndex()
    for entry in ledgers:
        if sizes[(entry.currency, entry.units)] > CROWD:
            for key in entry.name_keys:
                crowd_index.add((entry.currency, entry.units, key), entry)
            if entry.name and ctx.known:
                crowd_index.add((entry.currency, entry.units, "=" + entry.name), entry)
    crowd_index.freeze()
    after = window if after is None else after
    for b in ctx.open_banks.values():
        first, last = b.day - window, b.day + after
        found = index.between((b.currency, b.units), first, last)
        if len(found) > CROWD:
            named: dict[str, Item] = {}
            keys = list(b.name_keys) + ["=" + kp.ledger_key for kp in ctx.learned(b)]
            for key in keys:
                for entry in crowd_index.between((b.currency, b.units, key), first, last):
                    named[entry.id] = entry
            found = sorted(named.values(), key=lambda it: (it.day, it.id))
        for entry in found:
            yield b, entry, abs(b.day - entry.day)


def _reference_hits(ctx: Context, b: Item, window: int) -> Iterator[tuple[Item, str, str]]:
    """Open ledger entries whose reference key occurs in the bank line: (entry, key, where)."""
    seen = set()
    index, open_ledgers = ctx.ledger_keys(), ctx.open_ledgers
    for key in sorted(b.keys | b.grams):
        for entry in index.window(key, b.day, window):
            if entry.id not in seen and entry.id in open_ledgers:
                seen.add(entry.id)
                yield entry, key, ("end-to-end id" if key in b.keys else "remittance")


def _known_phrase(who: Party) -> str | None:
    """The learned payer's sentence, where one decided (names are not mentioned otherwise)."""
    return who.phrase if who.known else None


def reference_rule(ctx: Context, p: dict) -> list[Candidate]:
    """(a) Exact keys: end-to-end id or invoice number found in the bank line."""
    window = int(p["window_days"])
    out = []
    for b in ctx.open_banks.values():
        for entry, key, where in _reference_hits(ctx, b, window):
            if entry.currency != b.currency or entry.units != b.units:
                continue
            d = abs(b.day - entry.day)
            who = party(ctx, b, entry)
            date_part = 0.05 * closeness(d, window)
            score = 0.9 + date_part + 0.05 * (who.weight if who.sim is not None else 0.5)
            short = key not in (entry.ref, norm_ref(entry.src.external_id))
            if short:
                score -= 0.02  # only the serial was written: "Rg.Nr. 10431"
            if who.differ:
                # A typo in one reference can make it another real invoice's
                # number (numbering is dense): when the names disagree a person
                # should look, and always where only a serial was written.
                score -= 0.15 if short else 0.1
            reasons = [
                f"reference {ref_label(entry, key)} in {where}",
                "amounts equal",
                days_phrase(d),
                _known_phrase(who),
                "but the counterparty names differ" if who.differ else None,
            ]
            out.append(Candidate("reference", score, [b], [entry], clean(reasons), date_part=date_part))
    return out


#: A name that is not identical singles an entry out only when every other
#: same-amount entry's name is this much less alike ("MAIER BAU" is 92% like
#: "Mayer Bau" and 83% like "Meyer Bau": a person decides).
NAME_GAP = 0.12
#: Score of a candidate whose name does not single it out: a suggestion.
CLOSE_NAMES_SCORE = 0.8


def _per_bank_line(ctx: Context, pairs) -> Iterator[tuple[Item, list[tuple[Item, int, Party]]]]:
    """The equal-amount pairs grouped by bank line (they come one line after the other), with their party."""
    for b, group in itertools.groupby(pairs, key=lambda pair: pair[0]):
        yield b, [(entry, d, party(ctx, b, entry)) for _, entry, d in group]


def _close_rivals(found: list[tuple[Item, int, Party]]) -> dict[str, str]:
    """Entry id -> the name of a rival entry whose name is nearly as alike, for entries not singled out.

    An identical name (or a known payer) is singled out by itself; any other
    name must beat every differently named rival by NAME_GAP.
    """
    named = [(e, who) for e, _, who in found if who.sim is not None and not who.differ]
    rivals: dict[str, str] = {}
    for e, who in named:
        if who.sim is None or who.sim >= 1.0:
            continue
        for other, other_who in named:
            if other.name != e.name and other_who.sim is not None and other_who.sim >= who.sim - NAME_GAP:
                rivals[e.id] = f"{other.src.counterparty} ({round(other_who.sim * 100)}%)"
                break
    return rivals


def _rival_phrase(name: str) -> str:
    return f"but {name} is nearly as alike: the name does not single out one customer"


def _near_reference(b: Item, entry: Item) -> tuple[float, str | None]:
    """How much a reference nearly in the remittance says (0..1), and the phrase saying so.

    Invoice numbers are dense: one digit off is as often the next invoice as
    a typo, so a number only alike counts half; two digits swapped, the
    commonest typo, counts almost fully.
    """
    if not entry.ref:
        return 0.0, None
    if swapped_key(entry.keys, b.grams):
        return 0.95, f"reference {entry.src.reference} in remittance with two digits swapped"
    fref = fuzzy_ref_score(entry.ref, b.grams)
    if not fref:
        return 0.0, None
    return fref / 2, f"reference {entry.src.reference} nearly in remittance ({round(fref * 100)}% alike)"


def amount_date_rule(ctx: Context, p: dict) -> list[Candidate]:
    """(b) Equal amount within a date window; names, known payers and near-references add weight."""
    window = int(p["window_days"])
    after = p["days_after"]
    elsewhere = NamedElsewhere(ctx)
    out = []
    for b, found in _per_bank_line(ctx, _equal_amount_pairs(ctx, window, None if after is None else int(after))):
        rivals = _close_rivals(found)
        for entry, d, who in found:
            if who.differ:
                # Same amount, different parties: what decoys look like. Not even
                # a suggestion (round amounts would flood people with them).
                continue
            fref, ref_phrase = _near_reference(b, entry)
            date_part = 0.25 * closeness(d, window)
            agree = who.sim is not None and who.sim >= NAMES_AGREE
            score = 0.6 + date_part + 0.15 * max(who.weight if agree else 0.0, fref)
            # A line without a name (a bank fee, a card payment) against an entry
            # with one is weaker than two items that both name nobody.
            one_named = who.sim is None and bool(b.name or entry.name)
            if one_named:
                score -= 0.02
            # Names alike but not the same ("Schreinerei Lang" / "Schreinerei
            # Maier", 80%) are as often two customers of one trade: a person decides.
            partly = who.sim is not None and not agree
            rival = rivals.get(entry.id)
            other = elsewhere.other(b, entry)
            if rival or partly or other:
                score = min(score, CLOSE_NAMES_SCORE)
            reasons = [
                "amounts equal",
                days_phrase(d),
                ref_phrase,
                who.phrase + (" only" if partly else "") if who.phrase else None,
                "only one side names a counterparty" if one_named else None,
                _rival_phrase(rival) if rival else None,
                elsewhere_phrase(other) if other else None,
            ]
            out.append(Candidate("amount_date", score, [b], [entry], clean(reasons), date_part=date_part))
    return out


def fuzzy_counterparty_rule(ctx: Context, p: dict) -> list[Candidate]:
    """(c) Similar counterparty names (rapidfuzz) or a known payer, with equal amount and date window."""
    window = int(p["window_days"])
    after = p["days_after"]
    min_sim = float(p["min_similarity"]) / 100
    elsewhere = NamedElsewhere(ctx)
    out = []
    for b, found in _per_bank_line(ctx, _equal_amount_pairs(ctx, window, None if after is None else int(after))):
        rivals = _close_rivals(found)
        for entry, d, who in found:
            if who.sim is None or who.sim < min_sim:
                continue
            fref = fuzzy_ref_score(entry.ref, b.grams) if entry.ref else 0.0
            date_part = 0.1 * closeness(d, window)
            score = 0.65 + 0.25 * who.sim + 0.05 * fref + date_part
            rival = rivals.get(entry.id)
            other = elsewhere.other(b, entry)
            if rival or other:
                score = min(score, CLOSE_NAMES_SCORE)
            reasons = [
                who.phrase,
                "amounts equal",
                days_phrase(d),
                f"reference {entry.src.reference} nearly in remittance ({round(fref * 100)}% alike)" if fref else None,
                _rival_phrase(rival) if rival else None,
                elsewhere_phrase(other) if other else None,
            ]
            out.append(Candidate("fuzzy_counterparty", score, [b], [entry], clean(reasons), date_part=date_part))
    return out


# --- amounts that differ a little (fees) ------------------------------------------------------


#: A near reference counts as evidence of a fee deducted only this alike (a
#: transposition of two digits in "RE-2026-10431" is 91% alike).
NEAR_REFERENCE = 90


def _tolerance_units(ctx: Context, entry: Item, absolute: Decimal, percent: Decimal) -> int:
    """The larger of an absolute tolerance and a percentage of the entry, in engine units."""
    return max(int(absolute.scaleb(ctx.scale)), int(abs(entry.units) * percent / 100))


def tolerance_rule(ctx: Context, p: dict) -> list[Candidate]:
    """(f) Amounts within a tolerance (a fee deducted), the difference kept as an adjustment.

    A small difference alone proves nothing, so a candidate also needs a
    reference (exact, with two digits swapped, or nearly alike) or the same
    counterparty (a similar name or a known payer). How large a difference
    is forgiven depends on how much of that evidence there is: with both a
    reference and the counterparty, up to ``absolute`` (15.00) or ``percent``
    (1%) of the amount, what banks charge for a transfer; with only one of
    them, the stricter ``single_absolute`` (2.50) or ``single_percent``
    (0.5%). A named invoice may be up to ``ref_window_days`` (45) old, an
    unnamed one only ``window_days`` (5). The pool comes from the reference
    index and the counterparty's items (:class:`.context.PartyIndex`); then
    the amount is checked.
    """
    window = int(p["window_days"])
    ref_window = int(p["ref_window_days"])
    full = (Decimal(str(p["absolute"])), Decimal(str(p["percent"])))
    single = (Decimal(str(p["single_absolute"])), Decimal(str(p["single_percent"])))
    min_sim = float(p["min_similarity"]) / 100
    # The widest tolerance, as plain numbers: most of the pool fails this first test.
    widest_abs, widest_pct = int(full[0].scaleb(ctx.scale)), float(full[1]) / 100
    elsewhere = NamedElsewhere(ctx)
    parties = PartyIndex(ctx.open_ledgers.values())
    widest = max(window, ref_window)
    out = []
    for b in ctx.open_banks.values():
        first, last = b.day - widest, b.day + widest
        pool: dict[str, Item] = {entry.id: entry for entry, _, _ in _reference_hits(ctx, b, widest)}
        for name, _ in parties.alike(b, min_sim):
            for entry in parties.between(b.currency, name, first, last):
                pool.setdefault(entry.id, entry)
        for kp in ctx.learned(b):
            for entry in parties.between(b.currency, kp.ledger_key, first, last):
                pool.setdefault(entry.id, entry)
        for entry in sorted(pool.values(), key=lambda it: it.id):
            diff = b.units - entry.units
            if entry.currency != b.currency or diff == 0 or entry.units * b.units <= 0:
                continue
            if abs(diff) > max(widest_abs, abs(entry.units) * widest_pct):
                continue  # too far apart even with every piece of evidence
            c = _fee_candidate(ctx, b, entry, diff, full, single, min_sim, window, ref_window, elsewhere)
            if c is not None:
                out.append(c)
    return out


def _reference_evidence(b: Item, entry: Item) -> tuple[float, str | None]:
    """How surely the bank line names the entry's invoice (0..1), and the phrase saying so."""
    if (b.keys | b.grams) & entry.keys:
        return 1.0, f"reference {entry.src.reference or entry.src.external_id} in remittance"
    if swapped_key(entry.keys, b.grams):
        return 0.95, f"reference {entry.src.reference} in remittance with two digits swapped"
    # Numbering is dense: a reference 80% alike is as often the next invoice as a typo of this one.
    fref = fuzzy_ref_score(entry.ref, b.grams, NEAR_REFERENCE) if entry.ref else 0.0
    if fref:
        return fref, f"reference {entry.src.reference} nearly in remittance ({round(fref * 100)}% alike)"
    return 0.0, None


def _fee_candidate(
    ctx: Context,
    b: Item,
    entry: Item,
    diff: int,
    full,
    single,
    min_sim: float,
    window: int,
    ref_window: int,
    elsewhere: NamedElsewhere,
) -> Candidate | None:
    """The candidate for a fee deducted, if the evidence covers the difference."""
    fref, ref_phrase = _reference_evidence(b, entry)
    if fref < 1.0 and elsewhere.other(b, entry):
        return None  # the line gives another open item's number: it pays that one
    who = party(ctx, b, entry)
    same_party = who.sim is not None and who.sim >= min_sim
    d = abs(b.day - entry.day)
    if not fref and (not same_party or d > window):
        return None
    if 0 < fref < 0.95 and not same_party:
        return None  # a reference only alike, and nothing else: as likely the next invoice's number
    if fref and same_party:
        tol, basis = _tolerance_units(ctx, entry, *full), " (reference and counterparty agree)"
    else:
        tol, basis = _tolerance_units(ctx, entry, *single), ""
    if abs(diff) > tol:
        return None
    date_part = 0.05 * closeness(d, ref_window if fref else window)
    score = (
        0.7 + 0.2 * fref + 0.05 * who.weight + date_part - 0.05 * abs(diff) / max(tol, 1) - (0.1 if who.differ else 0.0)
    )
    adj = ctx.to_decimal(diff)
    reasons = [
        ref_phrase,
        who.phrase,
        f"bank amount {ctx.to_decimal(b.units)} differs from ledger amount {ctx.to_decimal(entry.units)}"
        f" by {adj}, within the tolerance of {ctx.to_decimal(tol)}{basis}, kept as an adjustment",
        days_phrase(d),
    ]
    return Candidate("tolerance", score, [b], [entry], clean(reasons), adjustment=diff, date_part=date_part)


#: Rule name (as written in the configuration) -> candidate generator.
RULES: dict[str, Callable[[Context, dict], list[Candidate]]] = {
    "reference": reference_rule,
    "amount_date": amount_date_rule,
    "fuzzy_counterparty": fuzzy_counterparty_rule,
    "batch": batch_rule,
    "partial": partial_rule,
    "tolerance": tolerance_rule,
    "fx": fx_rule,
}
