"""Why is this item still open? Its nearest candidates, and what stopped each.

Pure, like the rest of the engine. :func:`why` takes one open item (the
*target*), the other side's items around it (its *neighbourhood*, some of
them perhaps held by matches already), the target's own side's open items that
compete for the same partners (*rivals*) and the account's configuration, and:

1. runs the real engine (:func:`.engine.reconcile`) over them with a trace, so
   that whatever a rule proposed is reported as the engine treated it (would
   be matched now, suggested and why, lost to a better candidate, below a
   threshold), never guessed;
2. for each neighbour no rule proposed, computes the facts (amount difference,
   days apart, name similarity in the engine's normalisation, reference found,
   known payer) and asks each configured rule's check for the first condition
   it fails, phrased with that rule's own parameter ("date 19 days apart, rule
   window 14"), the most telling first;
3. ranks them closest first.

The checks read every parameter from the account's rule list; a parameter the
list leaves out takes the rule's default (:data:`RULE_DEFAULTS`). A rule this
module has no check for still shows what the engine made of it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable
from decimal import ROUND_DOWN, ROUND_HALF_EVEN, Decimal

from . import rules as _rules
from .context import Context, Item, similarity
from .engine import Pass, Trace, reconcile
from .model import BankLine, EngineConfig, KnownPayer, LedgerEntry
from .text import fuzzy_ref_score

Source = BankLine | LedgerEntry

#: Candidates shown by default, and at most.
DEFAULT_LIMIT = 5
MAX_LIMIT = 20
#: How far (days) the neighbourhood reaches: the widest rule window plus a margin, within these bounds.
MIN_REACH_DAYS = 45
MAX_REACH_DAYS = 120
REACH_MARGIN_DAYS = 30
#: Amounts within this band of the target's are neighbours whatever their names: ±20 % or ±100.
BAND_PERCENT = Decimal(20)
BAND_ABSOLUTE = Decimal(100)
#: Names at least this alike (0..1) make a neighbour whatever its amount (batches, partial payments).
NEIGHBOUR_SIMILARITY = 0.6
#: At most this many neighbours and rivals go into the traced run (the closest ones).
MAX_NEIGHBOURS = 150
MAX_RIVALS = 150

#: What the built-in rules take when an account's rule list leaves a parameter out.
RULE_DEFAULTS: dict[str, dict] = {
    "reference": {"window_days": 45},
    "amount_date": {"window_days": 3},
    "fuzzy_counterparty": {"window_days": 5, "min_similarity": 85},
    "batch": {"window_days": 3, "max_items": 5, "min_similarity": 80},
    "partial": {"window_days": 14, "max_items": 5, "min_similarity": 80},
    "tolerance": {"window_days": 5, "absolute": "0", "percent": 0, "min_similarity": 85},
    "fx": {"window_days": 60, "rate_tolerance": 0.5},
}


@dataclasses.dataclass(frozen=True)
class TakenBy:
    """The match that already holds a neighbour."""

    match_id: str
    rule: str
    score: float
    #: The match's items on the target's side (whoever "took it").
    partner_ids: tuple[str, ...] = ()


@dataclasses.dataclass
class Finding:
    """One candidate for the target: the other side's item(s) and why they were not taken."""

    items: list[Source]
    #: would_match, suggested, lost, below_threshold, not_proposed or taken.
    outcome: str
    rule: str | None
    score: float | None
    reasons: list[str]
    #: Rule name -> every condition of it this candidate fails, in the rule's order.
    by_rule: dict[str, list[str]]
    facts: dict
    #: The rule's own reasons, when a rule proposed the candidate.
    explanation: str | None = None
    taken_by: TakenBy | None = None
    rank: tuple = ()


@dataclasses.dataclass
class Answer:
    """What :func:`why` found: the candidates best first, and whether a run would match the target now."""

    candidates: list[Finding]
    #: The finding a run would take now (its rule and score), else None.
    would_match: Finding | None
    #: How many of the other side's items were looked at.
    neighbourhood: int


# --- the facts of one (bank line, ledger entry) pair -----------------------------------------------------


@dataclasses.dataclass
class Pair:
    """A bank line and a ledger entry, and what the rules look at between them."""

    bank: Item
    entry: Item
    days: int
    #: bank minus ledger in ``diff_currency`` (the instructed amount where the
    #: entry is in the currency the payer instructed); None when not comparable.
    diff: Decimal | None
    diff_currency: str
    sim: float | None
    known: KnownPayer | None
    ref_found: bool
    near_ref: float

    @property
    def party(self) -> float | None:
        """The counterparty evidence as rules weigh it: a known payer counts as identical names."""
        return 1.0 if self.known is not None else self.sim


def pair_of(ctx: Context, bank: Item, entry: Item) -> Pair:
    b, e = bank.src, entry.src
    if b.currency == e.currency:
        diff: Decimal | None = b.amount - e.amount
        ccy = b.currency
    elif b.instructed_currency == e.currency and b.instructed_amount is not None:
        diff, ccy = b.instructed_amount - e.amount, e.currency
    else:
        diff, ccy = None, ""
    found = bool((bank.keys | bank.grams) & entry.keys)
    return Pair(
        bank,
        entry,
        abs(bank.day - entry.day),
        diff,
        ccy,
        similarity(bank, entry),
        ctx.known_payer(bank, entry),
        found,
        0.0 if found or not entry.ref else fuzzy_ref_score(entry.ref, bank.grams),
    )


def _percent(sim: float | None) -> int | None:
    return None if sim is None else round(sim * 100)


def facts_of(ctx: Context, target: Item, others: list[Item]) -> dict:
    """The facts of a candidate (one or more items against the target), as the API shows them."""
    pairs = [_oriented(ctx, target, o) for o in others]
    diffs = [p.diff for p in pairs]
    if any(d is None for d in diffs):
        difference = None
    elif len(pairs) == 1:
        difference = diffs[0]
    else:  # the target against the sum of the others
        total = sum((o.src.amount for o in others), Decimal(0))
        difference = target.src.amount - total if target.side == "bank" else total - target.src.amount
    sims = [p.sim for p in pairs if p.sim is not None]
    return {
        "amount_difference": None if difference is None else str(difference),
        "currency": pairs[0].diff_currency if pairs and difference is not None else None,
        "days_apart": max(p.days for p in pairs),
        "name_similarity": _percent(min(sims)) if sims else None,
        "reference_found": any(p.ref_found for p in pairs),
        "known_payer": any(p.known is not None for p in pairs),
    }


def _oriented(ctx: Context, target: Item, other: Item) -> Pair:
    return pair_of(ctx, target, other) if target.side == "bank" else pair_of(ctx, other, target)


# --- each rule's conditions ----------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Failure:
    """A condition a rule's check found unmet."""

    text: str
    #: How far off, 0 (just missed) .. 1 (plainly unmet) and beyond.
    gap: float
    #: The text names a parameter of the rule (what a person could change).
    tunable: bool = False


def _param(rule: str, p: dict, name: str):
    value = p.get(name)
    return RULE_DEFAULTS.get(rule, {}).get(name) if value is None else value


def _money(ctx: Context, value: Decimal) -> str:
    return str(value.quantize(Decimal(1).scaleb(-max(ctx.scale, 2))))


def _currency(pair: Pair) -> Failure | None:
    b, e = pair.bank.src, pair.entry.src
    if b.currency == e.currency:
        return None
    if b.instructed_currency == e.currency and b.instructed_amount is not None:
        return Failure(
            f"currency {e.currency}, the line is in {b.currency} (instructed {b.instructed_amount} {e.currency}):"
            " only the fx rule converts",
            1.0,
        )
    return Failure(f"currency {e.currency}, the line is in {b.currency} and names no instructed amount", 1.0)


def _signs(pair: Pair) -> Failure | None:
    b, e = pair.bank.src.amount, pair.entry.src.amount
    if b * e > 0 or pair.diff is None:
        return None
    side = "credit" if b > 0 else "debit"
    return Failure(f"the line is a {side}, the entry is not", 1.0)


def _equal(ctx: Context, pair: Pair) -> Failure | None:
    if pair.diff is None or pair.diff == 0:
        return None
    return Failure(f"amount differs by {_money(ctx, abs(pair.diff))}, the rule needs equal amounts", 1.0)


def _window(pair: Pair, window: int | None) -> Failure | None:
    if window is None or pair.days <= window:
        return None
    return Failure(f"date {pair.days} days apart, rule window {window}", (pair.days - window) / max(window, 1), True)


def _names_differ(pair: Pair) -> Failure | None:
    limit = float(getattr(_rules, "NAMES_DIFFER_BELOW", 0.7))
    sim = pair.party
    if sim is None or sim >= limit:
        return None
    return Failure(
        f"counterparty names {_percent(sim)}% alike, under {_percent(limit)}%: equal amounts of different"
        " parties are not proposed",
        (limit - sim) / limit,
    )


def _similar(pair: Pair, min_similarity: float, also: str = "") -> Failure | None:
    sim = pair.party
    if sim is None:
        return Failure("a counterparty name is missing" + also, 1.0)
    if sim * 100 >= min_similarity:
        return None
    return Failure(
        f"name similarity {_percent(sim)} < {min_similarity:g}{also}", (min_similarity / 100 - sim) / 0.5, True
    )


def _first(*failures: Failure | None) -> list[Failure]:
    return [f for f in failures if f is not None]


def check_reference(ctx: Context, pair: Pair, p: dict) -> list[Failure] | None:
    entry = pair.entry.src
    labels = [x for x in (entry.reference, entry.external_id) if x]
    if not pair.entry.keys:
        ref: Failure | None = Failure("the entry has no reference or document id to look for", 1.0)
    elif pair.ref_found:
        ref = None
    elif pair.near_ref:
        alike = _percent(pair.near_ref)
        ref = Failure(f"reference {entry.reference} only nearly in the remittance ({alike}% alike)", 0.5)
    else:
        ref = Failure(f"no reference of it in the remittance ({' or '.join(labels)} not found)", 1.0)
    return _first(ref, _currency(pair), _equal(ctx, pair), _window(pair, _param("reference", p, "window_days")))


def check_amount_date(ctx: Context, pair: Pair, p: dict) -> list[Failure] | None:
    return _first(
        _currency(pair),
        _signs(pair),
        _equal(ctx, pair),
        _window(pair, _param("amount_date", p, "window_days")),
        _names_differ(pair),
    )


def check_fuzzy(ctx: Context, pair: Pair, p: dict) -> list[Failure] | None:
    return _first(
        _currency(pair),
        _signs(pair),
        _equal(ctx, pair),
        _window(pair, _param("fuzzy_counterparty", p, "window_days")),
        _similar(pair, float(_param("fuzzy_counterparty", p, "min_similarity"))),
    )


def check_tolerance(ctx: Context, pair: Pair, p: dict) -> list[Failure] | None:
    if pair.diff == 0:
        return None  # equal amounts are the other rules' business
    absolute = Decimal(str(_param("tolerance", p, "absolute")))
    percent = Decimal(str(_param("tolerance", p, "percent")))
    scale = Decimal(1).scaleb(-ctx.scale)
    by_percent = (abs(pair.entry.src.amount) * percent / 100).quantize(scale, rounding=ROUND_DOWN)
    tol = max(absolute, by_percent)
    over: Failure | None = None
    if pair.diff is not None and pair.bank.currency == pair.entry.currency and abs(pair.diff) > tol:
        shown = f"{_money(ctx, tol)} ({percent:g}% of {_money(ctx, abs(pair.entry.src.amount))})"
        over = Failure(
            f"amount differs by {_money(ctx, abs(pair.diff))}, over the tolerance of "
            + (shown if by_percent > absolute else _money(ctx, tol)),
            float(abs(pair.diff) / tol - 1) if tol else 1.0,
            True,
        )
    evidence = None
    if not pair.ref_found and not pair.near_ref:
        evidence = _similar(pair, float(_param("tolerance", p, "min_similarity")), " and no reference of it found")
    return _first(_currency(pair), _signs(pair), over, _window(pair, _param("tolerance", p, "window_days")), evidence)


def _check_sum(rule: str, whole: str) -> Callable[[Context, Pair, dict], list[Failure] | None]:
    """batch (a bank line is the sum of entries) and partial (an entry is the sum of bank lines)."""

    def check(ctx: Context, pair: Pair, p: dict) -> list[Failure] | None:
        b, e = pair.bank.src.amount, pair.entry.src.amount
        big, part = (b, e) if whole == "bank" else (e, b)
        if pair.bank.currency != pair.entry.currency or big * part <= 0 or abs(part) >= abs(big):
            return None  # cannot be a part of the other's sum
        min_similarity = float(_param(rule, p, "min_similarity"))
        same_payer = None if pair.ref_found else _similar(pair, min_similarity, ", no reference shared")
        window = _param(rule, p, "window_days")
        failures = _first(_window(pair, window), same_payer)
        if not failures:
            parts = "entries" if whole == "bank" else "lines"
            failures.append(
                Failure(
                    f"no 2 to {_param(rule, p, 'max_items')} open {parts} of this party within {window} days"
                    f" add up to {_money(ctx, abs(big))} with it",
                    1.5,
                )
            )
        return failures

    return check


def check_fx(ctx: Context, pair: Pair, p: dict) -> list[Failure] | None:
    b, e = pair.bank.src, pair.entry.src
    if b.currency == e.currency:
        return None  # nothing to convert
    if b.instructed_amount is None or not b.instructed_currency:
        return [Failure(f"currency {e.currency}, the line is in {b.currency} and names no instructed amount", 1.0)]
    if b.instructed_currency != e.currency:
        return [Failure(f"the line was instructed in {b.instructed_currency}, the entry is in {e.currency}", 1.0)]
    failures = _first(_window(pair, _param("fx", p, "window_days")))
    if b.instructed_amount != e.amount:
        diff = _money(ctx, abs(b.instructed_amount - e.amount))
        failures.insert(0, Failure(f"instructed amount differs from the entry's by {diff} {e.currency}", 1.0))
        return failures
    rate = b.exchange_rate if b.exchange_rate and b.exchange_rate > 0 else b.amount / b.instructed_amount
    converted = (e.amount * rate).quantize(Decimal(1).scaleb(-ctx.scale), rounding=ROUND_HALF_EVEN)
    tolerance = Decimal(str(_param("fx", p, "rate_tolerance")))
    off = abs(b.amount - converted) * 100 / abs(b.amount) if b.amount else Decimal(0)
    if off > tolerance:
        failures.append(
            Failure(
                f"at the rate {rate.normalize():f} the entry is {converted} {b.currency}, {off:.2f}% off the booked"
                f" {b.amount}, over the rate tolerance of {tolerance:g}%",
                float(off / tolerance - 1) if tolerance else 1.0,
                True,
            )
        )
    return failures


#: Rule name -> its check: the conditions it needs, each unmet one phrased with the rule's parameter.
CHECKS: dict[str, Callable[[Context, Pair, dict], list[Failure] | None]] = {
    "reference": check_reference,
    "amount_date": check_amount_date,
    "fuzzy_counterparty": check_fuzzy,
    "tolerance": check_tolerance,
    "batch": _check_sum("batch", "bank"),
    "partial": _check_sum("partial", "ledger"),
    "fx": check_fx,
}


def rule_failures(ctx: Context, pair: Pair, config: EngineConfig) -> list[tuple[str, list[Failure], tuple]]:
    """Each configured rule that applies to the pair, with what it finds unmet, the closest rule first.

    A rule that fails fewer conditions is closer (one that fails none would
    have proposed the pair, had its items been open); between equals, one
    whose condition names a parameter tells more (it is what would change the
    outcome), then the smaller miss, then the configured order.
    """
    found = []
    for order, rule_cfg in enumerate(config.rules):
        name = rule_cfg["rule"]
        params = {k: v for k, v in rule_cfg.items() if k != "rule"}
        check = CHECKS.get(name)
        failures = check(ctx, pair, params) if check else [Failure("no check of this rule: it proposed nothing", 2.0)]
        if failures is not None:
            gaps = sum(f.gap for f in failures)
            key = (len(failures), bool(failures) and not failures[0].tunable, gaps, order)
            found.append((name, failures, key))
    found.sort(key=lambda x: x[2])
    return found


def merge_reasons(per_rule: list[tuple[str, list[Failure], tuple]]) -> list[str]:
    """Each rule's first unmet condition, most telling first; rules failing alike share one sentence."""
    texts: dict[str, list[str]] = {}
    for name, failures, _ in per_rule:
        if failures:
            texts.setdefault(failures[0].text, []).append(name)
    return [f"{text} (rule{'s' if len(names) > 1 else ''} {', '.join(names)})" for text, names in texts.items()]


# --- the neighbourhood ---------------------------------------------------------------------------------------


def reach_days(config: EngineConfig) -> int:
    """Days around the target worth looking at: the widest rule window plus a margin, bounded."""
    widest = 0
    for r in config.rules:
        w = _param(r["rule"], r, "window_days")
        widest = max(widest, int(w) if w is not None else MAX_REACH_DAYS)
    return max(MIN_REACH_DAYS, min(MAX_REACH_DAYS, widest + REACH_MARGIN_DAYS))


def band(amount: Decimal) -> Decimal:
    """How far an amount may be from the target's and still count as a neighbour."""
    return max(abs(amount) * BAND_PERCENT / 100, BAND_ABSOLUTE)


def closeness(pair: Pair, width: Decimal, reach: int) -> float:
    """0..1, how plausible a neighbour looks before any rule is asked (None-safe); 0 when implausible."""
    if pair.days > reach:
        return 0.0
    amount = 0.0 if pair.diff is None else max(0.0, 1.0 - float(abs(pair.diff) / width))
    name = pair.party or 0.0
    ref = 1.0 if pair.ref_found else pair.near_ref
    if not amount and not ref and name < NEIGHBOUR_SIMILARITY:
        return 0.0
    return 0.3 * ref + 0.2 * name + 0.3 * amount + 0.2 * (1 - pair.days / (reach + 1))


# --- the answer ----------------------------------------------------------------------------------------------


def why(
    target: Source,
    others: Iterable[Source],
    rivals: Iterable[Source],
    config: EngineConfig,
    taken: dict[str, TakenBy] | None = None,
    limit: int = DEFAULT_LIMIT,
) -> Answer:
    """The target's closest candidates, best first, each with why it was not taken.

    ``others`` are the other side's items near the target; those in ``taken``
    (by id) are held by a match already. ``rivals`` are open items of the
    target's side that may compete for them.
    """
    taken = taken or {}
    side = "bank" if isinstance(target, BankLine) else "ledger"
    others = list(others)
    rivals = [r for r in rivals if r.id != target.id]
    banks = [target, *rivals] if side == "bank" else list(others)
    ledgers = list(others) if side == "bank" else [target, *rivals]
    ctx = Context(banks, ledgers, config.known_payers)  # type: ignore[arg-type]
    mine, theirs = (ctx.banks, ctx.ledgers) if side == "bank" else (ctx.ledgers, ctx.banks)
    t = mine[target.id]
    width, reach = band(target.amount), reach_days(config)
    scored = {o.id: closeness(_oriented(ctx, t, o), width, reach) for o in theirs.values()}
    near = sorted((o for o in theirs.values() if scored[o.id] > 0), key=lambda o: (-scored[o.id], o.id))
    near = near[:MAX_NEIGHBOURS]
    near_rivals = sorted(
        (r for r in mine.values() if r is not t),
        key=lambda r: (abs(r.src.amount - target.amount), abs(r.day - t.day), r.id),
    )[:MAX_RIVALS]
    trace = Trace()
    open_near = [o.src for o in near if o.id not in taken]
    if side == "bank":
        reconcile([target, *(r.src for r in near_rivals)], open_near, config, trace)  # type: ignore[list-item]
    else:
        reconcile(open_near, [target, *(r.src for r in near_rivals)], config, trace)  # type: ignore[list-item]
    tag = "b" if side == "bank" else "l"
    findings = _proposed(ctx, t, trace, (tag, t.id))
    covered = {i for f in findings for i in (x.id for x in f.items)}
    winners = _winners(trace)
    for o in near:
        if o.id not in covered:
            findings.append(_unproposed(ctx, t, o, config, taken.get(o.id), winners))
    findings.sort(key=lambda f: f.rank)
    would = next((f for f in findings if f.outcome == "would_match"), None)
    return Answer(findings[: max(1, min(limit, MAX_LIMIT))], would, len(near))


def _describe(tagged: Iterable[tuple[str, str]]) -> str:
    """``(("b", "9"),)`` -> ``"statement line 9"``; several -> ``"ledger entries 3, 4"``."""
    lines = [i for s, i in tagged if s == "b"]
    entries = [i for s, i in tagged if s == "l"]
    parts = []
    if lines:
        parts.append(("statement line " if len(lines) == 1 else "statement lines ") + ", ".join(lines))
    if entries:
        parts.append(("ledger entry " if len(entries) == 1 else "ledger entries ") + ", ".join(entries))
    return " with ".join(parts)


def _winners(trace: Trace) -> dict[tuple[str, str], tuple[Pass, object]]:
    """Item -> the automatic match the traced run made of it (with its pass)."""
    out: dict[tuple[str, str], tuple[Pass, object]] = {}
    for p in trace.passes:
        for c in p.auto:
            for item in c.items:
                out[item] = (p, c)
    return out


def _proposed(ctx: Context, t: Item, trace: Trace, me: tuple[str, str]) -> list[Finding]:
    """The candidates some rule proposed for the target, one per set of partners, as the engine treated them."""
    winners = _winners(trace)
    best: dict[tuple, tuple] = {}
    for p in trace.passes:
        for c, given in zip(p.candidates, p.reasons, strict=True):
            if me not in c.items:
                continue
            partners = tuple(i for i in c.items if i[0] != me[0])
            kept = best.get(partners)
            if kept is None or (c in p.auto, c.score) > (kept[1] in kept[0].auto, kept[1].score):
                best[partners] = (p, c, given)
    out = []
    other = ctx.ledgers if me[0] == "b" else ctx.banks
    for partners, (p, c, given) in best.items():
        items = [other[i] for _, i in partners]
        outcome, reasons = _fate(p, c, given, winners, me)
        first = {"would_match": 0, "suggested": 1, "lost": 1, "below_threshold": 1}[outcome]
        out.append(
            Finding(
                items=[i.src for i in items],
                outcome=outcome,
                rule=c.rule,
                score=c.score,
                reasons=reasons,
                by_rule={},
                facts=facts_of(ctx, t, items),
                explanation="; ".join(given),
                rank=(first, -c.score, [i.id for i in items]),
            )
        )
    return out


def _fate(p: Pass, c, given: list[str], winners, me) -> tuple[str, list[str]]:
    """What the engine did with a candidate of the target, and the sentence that says why it is not a match."""
    rule = f"(rule {c.rule})"
    if c in p.auto:
        return "would_match", [f"would be matched now by rule {c.rule}, score {c.score:g}: run the account again"]
    for item in c.items:
        won = winners.get(item)
        if won is not None and won[1] is not c:
            w = won[1]
            if item == me:
                mine = tuple(i for i in w.items if i[0] != me[0])
                text = f"a run would match this item with {_describe(mine)} instead"
            else:
                text = f"{_describe(i for i in w.items if i[0] == me[0])} is a better match for it"
            return "lost", [f"{text} (rule {w.rule}, score {w.score:g})"]
    added = c.reasons[len(given) :] if c in p.suggested else []
    if "another candidate for the same items is about as good" in added:
        rival = _rival(p, c)
        text = "another candidate for the same items is about as good"
        if rival is not None:
            text += f": {_describe(rival.items)}, score {rival.score:g} (rule {rival.rule})"
        return "suggested", [text]
    if "this rule only suggests" in added:
        return "suggested", [f"rule {c.rule} only suggests (auto: false), score {c.score:g}"]
    if c in p.suggested:
        return "suggested", [f"score {c.score:g} is below the automatic threshold of {p.threshold:g} {rule}"]
    if c.score < p.floor:
        return "below_threshold", [f"score {c.score:g} is below the suggestion threshold of {p.floor:g} {rule}"]
    return "lost", [f"a better candidate of the same rule took these items {rule}"]


def _rival(p: Pass, c):
    """The strongest other candidate of the pass sharing an item, within the margin: the close call."""
    mine = set(c.items)
    for other in sorted(p.candidates, key=lambda x: x.sort_key()):
        if other is not c and mine & set(other.items) and other.evidence >= c.evidence - p.min_margin:
            return other
    return None


def _unproposed(ctx: Context, t: Item, o: Item, config: EngineConfig, held: TakenBy | None, winners) -> Finding:
    """A neighbour no rule proposed with the target: each rule's first unmet condition."""
    pair = _oriented(ctx, t, o)
    per_rule = rule_failures(ctx, pair, config)
    reasons = merge_reasons(per_rule)
    outcome = "not_proposed"
    if held is not None:
        outcome = "taken"
        who = "line" if t.side == "bank" else "entry"
        partners = _describe(("b" if t.side == "bank" else "l", i) for i in held.partner_ids)
        reasons.insert(
            0,
            f"another {who} took it, score {held.score:g} (match {held.match_id}, rule {held.rule}"
            + (f", {partners})" if partners else ")"),
        )
    else:
        won = winners.get(("l" if o.side == "ledger" else "b", o.id))
        if won is not None:
            w = won[1]
            outcome = "lost"
            tag = "b" if t.side == "bank" else "l"
            reasons.insert(
                0,
                f"{_describe(i for i in w.items if i[0] == tag)} is a better match for it"
                f" (rule {w.rule}, score {w.score:g})",
            )
    closest = per_rule[0] if per_rule else None
    if outcome == "not_proposed" and closest and not closest[1]:
        reasons.insert(
            0,
            f"what rule {closest[0]} checks here holds, yet it proposed nothing: too many alike open items"
            " nearby to tell apart, or a limit of the rule",
        )
    return Finding(
        items=[o.src],
        outcome=outcome,
        rule=closest[0] if closest else None,
        score=None,
        reasons=reasons,
        by_rule={name: [f.text for f in failures] for name, failures, _ in per_rule},
        facts=facts_of(ctx, t, [o]),
        taken_by=held,
        rank=(2, *(closest[2][:3] if closest else (99, True, 0.0)), o.id),
    )
