"""Many-to-one rules: one payment for several open items, several payments for one.

Both work as an accountant does, anchored on the counterparty:

* ``batch``: a customer pays several open invoices in one transfer, often
  weeks after the first was issued and often naming none of them
  ("Sammelzahlung"). The pool is that customer's open items (by name, or by a
  known payer) issued up to ``window_days`` (90) before the bank date and at
  most ``days_after`` (5) after it, plus any invoice the remittance names.
* ``partial``: one invoice paid in instalments, weeks or months apart. The
  lines that name the invoice are looked up with no real date window
  (``ref_window_days``, a year); lines that do not name it must come from the
  same counterparty within ``window_days`` (14).

In each pool, a bounded subset-sum (:mod:`.subsets`) looks for 2..``max_items``
items adding up exactly to the target. What the payer named comes first:
exactly the named items adding up is the strongest answer, then the named
items completed by others of the same counterparty, then the named items
alone when they are more than needed, and only then any combination of the
counterparty's items. A combination is matched automatically only when it is
the only one that fits (the search saw every combination); where two or more
fit, each becomes a suggestion naming the others, for a person to choose.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

from .context import Context, Item, PartyIndex, key_index, payer_phrase
from .evidence import (
    Candidate,
    NamedElsewhere,
    Party,
    clean,
    ledger_label,
    party,
    party_with,
    span_phrase,
)
from .subsets import find_subsets
from .text import swapped_key

#: Score of each alternative where several combinations fit: a suggestion, never automatic.
AMBIGUOUS_SCORE = 0.75
#: Score of a combination that leaves out items the payer named: a person should look.
CONTRADICTED_SCORE = 0.8
#: At most this many alternatives are offered for one target.
MAX_ALTERNATIVES = 3


@dataclasses.dataclass
class Pool:
    """The items that may add up to one target, and what is known about each.

    ``named`` are the items the payment names (by reference), ``same`` maps
    the ids of items of the target's counterparty to that evidence.
    """

    named: list[Item]
    same: dict[str, tuple[Item, Party]]


@dataclasses.dataclass
class Found:
    """One combination adding up to the target, how it was found, and its rivals."""

    items: list[Item]
    how: str  # "named", "completed", "named_part", "unique", "contradicted", "unchecked" or "ambiguous"
    rivals: list[list[Item]]
    #: The counterparty had more open items than the search takes: only the nearest in date were tried.
    capped: int = 0


def _search(pool: list[Item], target: int, min_items: int, max_items: int, budget: int) -> tuple[list, bool]:
    """Combinations of ``pool`` adding up to ``target`` (at most MAX_ALTERNATIVES), and whether they are all."""
    if max_items < min_items or not pool:
        return [], True
    result = find_subsets([abs(it.units) for it in pool], target, min_items, max_items, MAX_ALTERNATIVES, budget)
    return [[pool[i] for i in subset] for subset in result.found], result.complete


def solve(pool: Pool, target: int, max_items: int, max_pool: int, budget: int, near: int) -> list[Found]:
    """The combinations worth proposing for one target, most convincing kind first (see the module)."""
    named = sorted(pool.named, key=lambda it: (it.day, it.id))[:max_items]
    named_ids = {it.id for it in named}
    named_sum = sum(abs(it.units) for it in named)
    # The counterparty's other items, the nearest in date first, as many as the search may take.
    others = sorted(
        (it for it, _ in pool.same.values() if it.id not in named_ids), key=lambda it: (abs(it.day - near), it.id)
    )
    capped = max_pool if len(others) > max_pool else 0
    others = others[:max_pool]
    if len(named) >= 2 and named_sum == target:
        return [Found(named, "named", [])]
    steps: list[tuple[str, list[Item], list[Item], int]] = []  # (how, fixed, pool, min extra items)
    if named and named_sum < target:
        steps.append(("completed", named, others, max(1, 2 - len(named))))
    if len(named) > 2 and named_sum > target:
        steps.append(("named_part", [], named, 2))
    party_pool = sorted(
        [it for it in named if it.id in pool.same] + others, key=lambda it: (abs(it.day - near), it.id)
    )[:max_pool]
    steps.append(("contradicted" if named else "unique", [], party_pool, 2))
    for how, fixed, items, min_extra in steps:
        remainder = target - sum(abs(it.units) for it in fixed)
        subsets, complete = _search(items, remainder, min_extra, max_items - len(fixed), budget)
        if not subsets:
            continue
        combos = [fixed + s for s in subsets]
        if len(combos) == 1:
            # Unique only if the search saw every combination within its budget.
            return [Found(combos[0], how if complete else "unchecked", [], capped)]
        return [Found(c, "ambiguous", [o for o in combos if o is not c], capped) for c in combos]
    return []


def _score(how: str, weight: float) -> float:
    """How convincing each kind of combination is; ``weight`` is the weakest name evidence 0..1."""
    if how == "named":
        return 0.94 + 0.04 * weight
    if how == "completed":
        return 0.9 + 0.05 * weight
    if how in ("named_part", "unique"):
        return 0.86 + 0.06 * weight
    if how in ("contradicted", "unchecked"):
        return CONTRADICTED_SCORE
    return AMBIGUOUS_SCORE


def _weakest(found: list[Item], pool: Pool) -> tuple[float, list[Party]]:
    """The weakest name evidence of a combination (0.5 for items known by reference only), and the known payers."""
    parties = [pool.same[it.id][1] for it in found if it.id in pool.same]
    weight = min((p.weight for p in parties), default=0.5) if len(parties) == len(found) else 0.5
    return weight, [p for p in parties if p.known]


def _label(it: Item) -> str:
    """A ledger item by its number, a bank line by its date and amount."""
    if it.side == "ledger":
        return ledger_label(it) or it.id
    return f"the line of {it.src.date.isoformat()} for {it.src.amount}"


def _labels(items: list[Item]) -> str:
    return ", ".join(_label(it) for it in sorted(items, key=lambda it: (it.day, it.id)))


#: Why a combination was chosen (or left to a person), per rule and kind.
WHY: dict[str, dict[str, str | None]] = {
    "batch": {
        "named": "the remittance names exactly these items",
        "completed": "with the items the remittance names, no other combination of the customer's open items does",
        "named_part": "no other combination of the items the remittance names does",
        "unique": "no other combination of its open items does",
        "contradicted": "but the remittance names items that are not part of it",
    },
    "partial": {
        "named": None,
        "completed": "with the lines naming it, no other combination of the customer's payments does",
        "named_part": "no other combination of the lines naming it does",
        "unique": "no other combination of the customer's payments does",
        "contradicted": "but other lines name it too",
    },
}


def _why_chosen(f: Found, rule: str) -> str | None:
    """The sentence saying why this combination, or why a person has to choose."""
    if f.how == "unchecked":
        return "the search stopped before it could rule out other combinations: a person checks"
    if f.how == "ambiguous":
        alternatives = "; ".join(_labels(r) for r in f.rivals)
        return f"other combinations add up too ({alternatives}): a person chooses"
    why = WHY[rule][f.how]
    if why and f.capped and f.how in ("completed", "unique"):
        why += f" (of the {f.capped} nearest in date)"
    return why


# --- batch: one bank line, several ledger items -----------------------------------------------


def batch_rule(ctx: Context, p: dict) -> list[Candidate]:
    """(d) One bank line pays 2..k open items of one counterparty (a payment run, "Sammelzahlung")."""
    before = int(p["window_days"])
    after = int(p["days_after"])
    max_items = int(p["max_items"])
    max_pool = int(p["max_pool"])
    budget = int(p["budget"])
    # Near-namesakes ("Mayer Bau" / "Meyer Bau", 89%) must not share a pool: a
    # customer's own spellings are identical once normalised.
    min_sim = float(p["min_similarity"]) / 100
    ledgers = list(ctx.open_ledgers.values())
    parties = PartyIndex(ledgers)
    by_key = ctx.ledger_keys()
    out: list[Candidate] = []
    for b in ctx.open_banks.values():
        first, last = b.day - before, b.day + after
        fits = _fits(b)
        named = {
            it.id: it
            for key in sorted(b.keys | b.grams)
            for it in by_key.between(key, first, last)
            if it.id in ctx.open_ledgers and fits(it)
        }
        same = _same_party(ctx, b, parties, first, last, fits, min_sim, bank_side=True)
        pool = Pool(_named_items(b, named, same), same)
        if len(pool.named) + len(same) < 2:
            continue
        for f in solve(pool, abs(b.units), max_items, max_pool, budget, b.day):
            out.append(_batch_candidate(ctx, b, f, pool))
    return out


def _named_items(b: Item, named: dict[str, Item], same: dict[str, tuple[Item, Party]]) -> list[Item]:
    """The open items the payment names, as far as they belong to its counterparty.

    Numbering is dense, so a mistyped number is often another customer's
    invoice: where the payment names items of its own counterparty, items of
    others are dropped, and the counterparty's items whose number it wrote
    with two digits swapped are added. Where it names only others' items
    (a payment service paying for several), they are kept.
    """
    own = [it for i, it in named.items() if i in same]
    if not own:
        return list(named.values())
    grams = b.keys | b.grams
    swapped = [it for i, (it, _) in same.items() if i not in named and swapped_key(it.keys, grams)]
    return own + swapped


def _fits(t: Item) -> Callable[[Item], bool]:
    """Items that can be part of a sum equal to ``t``: same currency and sign, smaller."""
    sign = 1 if t.units > 0 else -1
    return lambda it: it.currency == t.currency and it.units * sign > 0 and abs(it.units) < abs(t.units)


def _same_party(
    ctx: Context,
    t: Item,
    parties: PartyIndex,
    first: int,
    last: int,
    fits,
    min_sim: float,
    bank_side: bool,
) -> dict[str, tuple[Item, Party]]:
    """Items of ``t``'s counterparty dated ``first`` to ``last``: names alike, or (for a bank line) a known payer."""
    same: dict[str, tuple[Item, Party]] = {}
    for name, sim in parties.alike(t, min_sim):
        for it in parties.between(t.currency, name, first, last):
            if fits(it) and it.id not in same:
                same[it.id] = (it, party_with(ctx, t, it, sim) if bank_side else party_with(ctx, it, t, sim))
    if bank_side:
        for kp in ctx.learned(t):
            for it in parties.between(t.currency, kp.ledger_key, first, last):
                if fits(it):
                    same[it.id] = (it, Party(1.0, payer_phrase(kp), kp))
    return same


def _batch_candidate(ctx: Context, b: Item, f: Found, pool: Pool) -> Candidate:
    weight, known = _weakest(f.items, pool)
    chosen = sorted(f.items, key=lambda it: (it.day, it.id))
    parties = {it.src.counterparty for it in chosen if it.id in pool.same}
    owner = f" of {parties.pop()}" if len(parties) == 1 and all(it.id in pool.same for it in chosen) else ""
    named = [it for it in chosen if it in pool.named]
    refs = [ledger_label(it) for it in named]
    reasons = [
        f"{len(chosen)} open items{owner} issued {span_phrase([b.day - it.day for it in chosen])}"
        f" add up to the bank amount {ctx.to_decimal(abs(b.units))}",
        _why_chosen(f, "batch"),
        f"reference{'s' if len(refs) > 1 else ''} {', '.join(refs)} in remittance" if refs else None,
        *(k.phrase for k in known[:1]),
    ]
    score = _score(f.how, weight)
    return Candidate("batch", score, [b], chosen, clean(reasons))


# --- partial: several bank lines, one ledger item -----------------------------------------------


def partial_rule(ctx: Context, p: dict) -> list[Candidate]:
    """(e) 2..k bank lines pay one open item (instalments, or a payment split by the payer)."""
    window = int(p["window_days"])
    ref_window = int(p["ref_window_days"])
    max_items = int(p["max_items"])
    max_pool = int(p["max_pool"])
    budget = int(p["budget"])
    min_sim = float(p["min_similarity"]) / 100
    banks = list(ctx.open_banks.values())
    by_key = key_index(banks, lambda it: it.keys | it.grams)
    elsewhere = NamedElsewhere(ctx)
    parties = PartyIndex(banks)
    out: list[Candidate] = []
    for t in ctx.open_ledgers.values():
        fits = _fits(t)
        # Instalments come after the invoice, however long after; a few days before is a booking lag.
        named = {it.id: it for key in sorted(t.keys) for it in by_key.between(key, t.day - window, t.day + ref_window)}
        named = {i: it for i, it in named.items() if fits(it)}
        # Where lines name the item, its counterparty's other lines over the same long span may
        # complete them (a part whose reference the payer mistyped); otherwise only nearby ones.
        last = t.day + (ref_window if named else window)
        same = _same_party(ctx, t, parties, t.day - window, last, fits, min_sim, bank_side=False)
        # A line of the same customer that gives another open item's number pays that one.
        same = {i: v for i, v in same.items() if i in named or not elsewhere.other(v[0], t)}
        for i, it in named.items():
            # A line naming the item counts as its counterparty when its name agrees (or is missing).
            if i not in same:
                who = party(ctx, it, t)
                if not who.differ:
                    same[i] = (it, who)
        pool = Pool(list(named.values()), same)
        if len(pool.named) + len(same) < 2:
            continue
        for f in solve(pool, abs(t.units), max_items, max_pool, budget, t.day):
            out.append(_partial_candidate(ctx, t, f, pool))
    return out


def _partial_candidate(ctx: Context, t: Item, f: Found, pool: Pool) -> Candidate:
    weight, known = _weakest(f.items, pool)
    chosen = sorted(f.items, key=lambda it: (it.day, it.id))
    label = ledger_label(t)
    naming = sum(1 for it in chosen if it in pool.named)
    names: str | None = None
    if naming == len(chosen):
        names = f"each names {label}"
    elif naming:
        names = f"{naming} of them name{'s' if naming == 1 else ''} {label}"
    owner = f" from {t.src.counterparty}" if t.src.counterparty and all(it.id in pool.same for it in chosen) else ""
    reasons = [
        f"{len(chosen)} bank lines add up to the ledger amount {ctx.to_decimal(abs(t.units))}{owner}",
        names,
        f"paid {span_phrase([it.day - t.day for it in chosen], 'after', 'before')} it was booked",
        _why_chosen(f, "partial"),
        *(k.phrase for k in known[:1]),
    ]
    return Candidate("partial", _score(f.how, weight), chosen, [t], clean(reasons))
