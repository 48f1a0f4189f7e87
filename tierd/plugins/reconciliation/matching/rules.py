"""The built-in rule passes. Each turns the open items into scored candidates.

A rule never decides: it proposes candidates (which items, a score 0..1, the
reasons a person can read, an adjustment) and :mod:`.resolve` settles the
conflicts between them. Scores are built from the same few pieces of
evidence everywhere: equal amounts, dates close together, a reference found
(exactly or nearly) in the remittance, similar counterparty names.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from decimal import Decimal

from .context import Context, DatedIndex, Item, amount_index, key_index, name_index, similarity
from .subsets import subsets_summing_to
from .text import fuzzy_ref_score


class Candidate:
    """A proposed match: the items, its score and why."""

    __slots__ = (
        "score",
        "evidence",
        "bank_ids",
        "ledger_ids",
        "items",
        "rule",
        "reasons",
        "adjustment",
        "exchange_rate",
    )

    def __init__(
        self, rule: str, score: float, banks, ledgers, reasons: list[str], adjustment: int = 0, date_part: float = 0.0
    ):
        self.rule = rule
        self.score = round(min(max(score, 0.0), 1.0), 4)
        # The score without its date-closeness share: two candidates that
        # differ only in how close their dates are count as a close call.
        self.evidence = round(self.score - date_part, 4)
        self.bank_ids = tuple(sorted(b.id for b in banks))
        self.ledger_ids = tuple(sorted(e.id for e in ledgers))
        # Both sides' ids, tagged; read over and over while conflicts are settled, so made once.
        self.items: tuple[tuple[str, str], ...] = tuple(("b", i) for i in self.bank_ids) + tuple(
            ("l", i) for i in self.ledger_ids
        )
        self.reasons = reasons
        self.adjustment = adjustment
        #: Set by the fx rule: ledger amounts were converted at this rate.
        self.exchange_rate: Decimal | None = None

    def sort_key(self):
        # Best first; ties broken by ids, never by the order items came in.
        return (-self.score, self.bank_ids, self.ledger_ids, self.rule)


# --- shared pieces of evidence ------------------------------------------------------


def closeness(days: int, window: int) -> float:
    """1.0 for the same day, falling linearly to just above 0 at the window's edge."""
    return 1.0 - days / (window + 1)


def days_phrase(days: int, within: bool = False) -> str:
    if days == 0:
        return "booked the same day"
    unit = "day" if days == 1 else "days"
    return f"booked within {days} {unit}" if within else f"booked {days} {unit} apart"


#: Below this similarity two known names are taken to be different parties
#: (unrelated short names still reach 50-65% with token_set_ratio).
NAMES_DIFFER_BELOW = 0.7


def name_weight(sim: float | None) -> float:
    """Name evidence 0..1: nothing below NAMES_DIFFER_BELOW, full at identical names."""
    if sim is None or sim < NAMES_DIFFER_BELOW:
        return 0.0
    return (sim - NAMES_DIFFER_BELOW) / (1 - NAMES_DIFFER_BELOW)


def names_differ(sim: float | None) -> bool:
    return sim is not None and sim < NAMES_DIFFER_BELOW


def name_phrase(sim: float | None) -> str | None:
    return f"counterparty names {round(sim * 100)}% alike" if sim is not None else None


def _ledger_label(entry: Item) -> str:
    return entry.src.reference or entry.src.external_id


def _clean(reasons) -> list[str]:
    return [r for r in reasons if r]


# --- 1:1 rules on equal amounts -------------------------------------------------------


#: More same-amount entries than this within one window make a crowd.
CROWD = 8


def _equal_amount_pairs(ctx: Context, window: int) -> Iterator[tuple[Item, Item, int]]:
    """Open (bank, ledger) pairs with the same currency and amount within the window.

    An amount that many open entries share within the window (a round
    amount, a monthly fee) says little about which one is meant, and
    pairing it with all of them would grow with the square of the data's
    density. In such a crowd only the entries whose counterparty shares a
    name key with the bank line are candidates (from a second index keyed by
    amount and name key); a bank line without a name gets none there.
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
    crowd_index.freeze()
    for b in ctx.open_banks.values():
        found = index.window((b.currency, b.units), b.day, window)
        if len(found) > CROWD:
            named: dict[str, Item] = {}
            for key in b.name_keys:
                for entry in crowd_index.window((b.currency, b.units, key), b.day, window):
                    named[entry.id] = entry
            found = sorted(named.values(), key=lambda it: (it.day, it.id))
        for entry in found:
            yield b, entry, abs(b.day - entry.day)


def _reference_hits(b: Item, ledgers_by_key, window: int) -> Iterator[tuple[Item, str, str]]:
    """Ledger entries whose reference key occurs in the bank line: (entry, key, where)."""
    seen = set()
    for key in sorted(b.keys | b.grams):
        for entry in ledgers_by_key.window(key, b.day, window):
            if entry.id not in seen:
                seen.add(entry.id)
                yield entry, key, ("end-to-end id" if key in b.keys else "remittance")


def reference_rule(ctx: Context, p: dict) -> list[Candidate]:
    """(a) Exact keys: end-to-end id or invoice number found in the bank line."""
    window = int(p.get("window_days", 45))
    index = key_index(ctx.open_ledgers.values())
    out = []
    for b in ctx.open_banks.values():
        for entry, key, where in _reference_hits(b, index, window):
            if entry.currency != b.currency or entry.units != b.units:
                continue
            d = abs(b.day - entry.day)
            sim = similarity(b, entry)
            date_part = 0.05 * closeness(d, window)
            score = 0.9 + date_part + 0.05 * (name_weight(sim) if sim is not None else 0.5)
            if names_differ(sim):
                # A typo in one reference can make it another real invoice's
                # number: when the names disagree a person should look.
                score -= 0.1
            label = entry.src.reference if key == entry.ref else entry.src.external_id
            reasons = [
                f"reference {label} in {where}",
                "amounts equal",
                days_phrase(d),
                "but the counterparty names differ" if names_differ(sim) else None,
            ]
            out.append(Candidate("reference", score, [b], [entry], _clean(reasons), date_part=date_part))
    return out


def amount_date_rule(ctx: Context, p: dict) -> list[Candidate]:
    """(b) Equal amount within a date window; names and near-references add weight."""
    window = int(p.get("window_days", 3))
    out = []
    for b, entry, d in _equal_amount_pairs(ctx, window):
        sim = similarity(b, entry)
        if names_differ(sim):
            # Same amount, different parties: what decoys look like. Not even
            # a suggestion (round amounts would flood people with them).
            continue
        fref = fuzzy_ref_score(entry.ref, b.grams) if entry.ref else 0.0
        date_part = 0.25 * closeness(d, window)
        score = 0.6 + date_part + 0.15 * max(name_weight(sim), fref)
        reasons = [
            "amounts equal",
            days_phrase(d),
            f"reference {entry.src.reference} nearly in remittance ({round(fref * 100)}% alike)" if fref else None,
            name_phrase(sim),
        ]
        out.append(Candidate("amount_date", score, [b], [entry], _clean(reasons), date_part=date_part))
    return out


def fuzzy_counterparty_rule(ctx: Context, p: dict) -> list[Candidate]:
    """(c) Similar counterparty names (rapidfuzz) with equal amount and date window."""
    window = int(p.get("window_days", 5))
    min_sim = float(p.get("min_similarity", 85)) / 100
    out = []
    for b, entry, d in _equal_amount_pairs(ctx, window):
        sim = similarity(b, entry)
        if sim is None or sim < min_sim:
            continue
        date_part = 0.1 * closeness(d, window)
        score = 0.65 + 0.25 * sim + date_part
        reasons = [name_phrase(sim), "amounts equal", days_phrase(d)]
        out.append(Candidate("fuzzy_counterparty", score, [b], [entry], _clean(reasons), date_part=date_part))
    return out


# --- many-to-one rules by bounded subset-sum ----------------------------------------------


def _subset_rule(
    ctx: Context,
    p: dict,
    rule: str,
    targets: dict,
    pool: dict,
    target_keys: Callable[[Item], frozenset],
    pool_keys: Callable[[Item], frozenset],
) -> list[Candidate]:
    """One target item equals the sum of 2..k pool items of one counterparty.

    Pools come from two indexes only, each searched within the date window:
    pool items whose name shares a blocking key with the target's and is at
    least ``min_similarity`` alike (one counterparty, however spelt), and pool
    items whose reference the target mentions (or that mention the target's
    reference). Each pool keeps its ``max_pool`` items nearest in date, and a
    bounded subset-sum looks for 2..``max_items`` of them adding up exactly.
    """
    window = int(p.get("window_days", 3))
    max_items = int(p.get("max_items", 5))
    max_pool = int(p.get("max_pool", 12))
    min_sim = float(p.get("min_similarity", 80)) / 100
    by_name = name_index(pool.values())
    by_key = key_index(pool.values(), pool_keys)
    out = []
    for t in targets.values():
        sign = 1 if t.units > 0 else -1
        groups: dict[str, dict[str, Item]] = {}
        named: dict[str, Item] = {}  # an item shows up under several name keys
        for nk in t.name_keys:
            for it in by_name.window((t.currency, nk), t.day, window):
                if it.units * sign > 0 and abs(it.units) < abs(t.units):
                    named[it.id] = it
        for it in named.values():
            sim = similarity(t, it)
            if sim is not None and sim >= min_sim:
                # One group per target: everything named like the target is
                # the same counterparty, whatever its spelling.
                groups.setdefault("name:", {})[it.id] = it
        for key in sorted(target_keys(t)):
            for it in by_key.window(key, t.day, window):
                if it.currency == t.currency and it.units * sign > 0 and abs(it.units) < abs(t.units):
                    groups.setdefault("ref:", {})[it.id] = it
        for gkey in sorted(groups):
            members = sorted(groups[gkey].values(), key=lambda it: (abs(it.day - t.day), it.id))[:max_pool]
            for subset in subsets_summing_to([abs(m.units) for m in members], abs(t.units), 2, max_items, limit=3):
                chosen = [members[i] for i in subset]
                out.append(
                    _subset_candidate(ctx, rule, t, chosen, gkey.startswith("ref:"), target_keys, pool_keys, window)
                )
    return out


def _subset_candidate(
    ctx, rule, t: Item, chosen: list[Item], by_ref: bool, target_keys, pool_keys, window
) -> Candidate:
    spread = max(abs(c.day - t.day) for c in chosen)
    sims = [similarity(t, c) for c in chosen]
    sim = min((s for s in sims if s is not None), default=None)
    tkeys = target_keys(t)
    referenced = [c for c in chosen if tkeys & pool_keys(c)]
    ref_frac = len(referenced) / len(chosen)
    date_part = 0.05 * closeness(spread, window)
    score = 0.8 + 0.1 * ref_frac + 0.05 * name_weight(sim) + date_part
    if rule == "batch":
        banks, ledgers = [t], chosen
        head = f"{len(chosen)} ledger entries add up to the bank amount {ctx.to_decimal(t.units)}"
        refs = [_ledger_label(c) for c in referenced]
    else:
        banks, ledgers = chosen, [t]
        head = f"{len(chosen)} bank lines add up to the ledger amount {ctx.to_decimal(t.units)}"
        refs = [_ledger_label(t)] if referenced else []
    party = (t.src.counterparty or chosen[0].src.counterparty) if not by_ref or sim is not None else ""
    reasons = [
        head + (f" from {party}" if party else ""),
        f"reference{'s' if len(refs) > 1 else ''} {', '.join(refs)} in remittance" if refs else None,
        name_phrase(sim),
        days_phrase(spread, within=True),
    ]
    return Candidate(rule, score, banks, ledgers, _clean(reasons), date_part=date_part)


def _bank_keys(b: Item) -> frozenset:
    return b.keys | b.grams


def _ledger_keys(entry: Item) -> frozenset:
    return entry.keys


def batch_rule(ctx: Context, p: dict) -> list[Candidate]:
    """(d) One bank line is the sum of 2..k ledger entries (a batch deposit)."""
    return _subset_rule(ctx, p, "batch", ctx.open_banks, ctx.open_ledgers, _bank_keys, _ledger_keys)


def partial_rule(ctx: Context, p: dict) -> list[Candidate]:
    """(e) Several bank lines pay one ledger entry (partial payments)."""
    return _subset_rule(
        ctx, {"window_days": 14, **p}, "partial", ctx.open_ledgers, ctx.open_banks, _ledger_keys, _bank_keys
    )


# --- amounts that differ a little (fees) ------------------------------------------------------


def tolerance_rule(ctx: Context, p: dict) -> list[Candidate]:
    """(f) Amounts within a tolerance, the difference kept as an adjustment.

    A small difference alone proves nothing, so a candidate also needs a
    reference (exact or near) or a similar counterparty name; its pool comes
    from the reference and name indexes, then the amount is checked.
    """
    window = int(p.get("window_days", 5))
    absolute = Decimal(str(p.get("absolute", "0")))
    percent = Decimal(str(p.get("percent", 0)))
    min_sim = float(p.get("min_similarity", 85)) / 100
    abs_units = int(absolute.scaleb(ctx.scale))
    by_key = key_index(ctx.open_ledgers.values())
    by_name = name_index(ctx.open_ledgers.values())
    out = []
    for b in ctx.open_banks.values():
        pool: dict[str, Item] = {entry.id: entry for entry, _, _ in _reference_hits(b, by_key, window)}
        for nk in b.name_keys:
            for entry in by_name.window((b.currency, nk), b.day, window):
                pool.setdefault(entry.id, entry)
        for entry in sorted(pool.values(), key=lambda it: it.id):
            diff = b.units - entry.units
            tol = max(abs_units, int(abs(entry.units) * percent / 100))
            if entry.currency != b.currency or diff == 0 or abs(diff) > tol or entry.units * b.units <= 0:
                continue
            exact = bool((b.keys | b.grams) & entry.keys)
            fref = 1.0 if exact else (fuzzy_ref_score(entry.ref, b.grams) if entry.ref else 0.0)
            sim = similarity(b, entry)
            if not fref and (sim is None or sim < min_sim):
                continue
            d = abs(b.day - entry.day)
            date_part = 0.05 * closeness(d, window)
            score = (
                0.7
                + 0.2 * fref
                + 0.05 * name_weight(sim)
                + date_part
                - 0.05 * abs(diff) / max(tol, 1)
                - (0.1 if names_differ(sim) else 0.0)
            )
            adj = ctx.to_decimal(diff)
            reasons = [
                f"reference {entry.src.reference} in remittance"
                if exact
                else (
                    f"reference {entry.src.reference} nearly in remittance ({round(fref * 100)}% alike)"
                    if fref
                    else None
                ),
                name_phrase(sim),
                f"bank amount {ctx.to_decimal(b.units)} differs from ledger amount {ctx.to_decimal(entry.units)}"
                f" by {adj}, within the tolerance of {ctx.to_decimal(tol)}, kept as an adjustment",
                days_phrase(d),
            ]
            out.append(
                Candidate("tolerance", score, [b], [entry], _clean(reasons), adjustment=diff, date_part=date_part)
            )
    return out


#: Rule name (as written in the configuration) -> candidate generator.
RULES: dict[str, Callable[[Context, dict], list[Candidate]]] = {
    "reference": reference_rule,
    "amount_date": amount_date_rule,
    "fuzzy_counterparty": fuzzy_counterparty_rule,
    "batch": batch_rule,
    "partial": partial_rule,
    "tolerance": tolerance_rule,
}
