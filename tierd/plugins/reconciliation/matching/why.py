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
list leaves out takes the rule's default (:data:`.model.RULE_DEFAULTS`). A rule this
module has no check for still shows what the engine made of it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable
from decimal import ROUND_DOWN, ROUND_HALF_EVEN, Decimal

from . import rules as _rules
from .context import Context, Item, similarity
from .engine import Pass, Trace, reconcile
from .model import RULE_DEFAULTS, BankLine, EngineConfig, KnownPayer, LedgerEntry
from .text import flat_name, fuzzy_ref_score, name_similarity, norm_name, norm_ref, payer_keys, ref_grams

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
MAX_NEIGHBOURS = 80
MAX_RIVALS = 60

#: A reference at least this sure (two digits swapped) counts as named; one only alike needs the name too.
SURE_REFERENCE = 0.95


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
    #: Each configured rule that applies, closest first: ``{"rule": name, "unmet": [conditions]}``.
    by_rule: list[dict]
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
    #: How surely the line names the entry's reference, 0..1, as the fee rule weighs it
    #: (exact, two digits swapped, nearly alike).
    ref_evidence: float

    @property
    def party(self) -> float | None:
        """The counterparty evidence as rules weigh it: a known payer counts as identical names."""
        return 1.0 if self.known is not None else self.sim


def difference(b: BankLine, e: LedgerEntry) -> tuple[Decimal | None, str]:
    """Bank minus ledger amount and its currency: the booked amounts in one currency, else the
    instructed amount where the entry is in the currency the payer instructed; (None, "") otherwise."""
    if b.currency == e.currency:
        return b.amount - e.amount, b.currency
    if b.instructed_currency == e.currency and b.instructed_amount is not None:
        return b.instructed_amount - e.amount, e.currency
    return None, ""


def pair_of(ctx: Context, bank: Item, entry: Item) -> Pair:
    """What the rules would look at between a bank line and a ledger entry (the engine's normalisation)."""
    diff, ccy = difference(bank.src, entry.src)
    found = bool((bank.keys | bank.grams) & entry.keys)
    weigh = getattr(_rules, "_reference_evidence", None)
    near = 0.0 if found or not entry.ref else fuzzy_ref_score(entry.ref, bank.grams)
    return Pair(
        bank,
        entry,
        abs(bank.day - entry.day),
        diff,
        ccy,
        similarity(bank, entry),
        ctx.known_payer(bank, entry),
        found,
        near,
        weigh(bank, entry)[0] if weigh else (1.0 if found else near),
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
    # The further apart, the less a rule of equal amounts has to do with the pair.
    scale = max(abs(pair.bank.src.amount), abs(pair.entry.src.amount))
    gap = 1.0 + min(1.0, float(abs(pair.diff) / scale)) if scale else 1.0
    return Failure(f"amount differs by {_money(ctx, abs(pair.diff))}, the rule needs equal amounts", gap)


def _window(pair: Pair, before: int | None, after: int | None = None) -> Failure | None:
    """The entry must be dated at most ``before`` days before the line and ``after`` days after it.

    ``after`` None means the same as ``before``; ``before`` None, no window at all.
    """
    if before is None:
        return None
    after = before if after is None else after
    offset = pair.entry.day - pair.bank.day  # > 0: the entry is dated after the line
    limit = after if offset > 0 else before
    if pair.days <= limit:
        return None
    gap = (pair.days - limit) / max(limit, 1)
    if after == before:
        return Failure(f"date {pair.days} days apart, rule window {before}", gap, True)
    where = "after" if offset > 0 else "before"
    return Failure(f"the entry is dated {pair.days} days {where} the line, the rule allows {limit} {where}", gap, True)


def _rule_window(rule: str, p: dict) -> tuple[int | None, int | None]:
    """A rule's (days before, days after) from its parameters."""
    before, after = _param(rule, p, "window_days"), _param(rule, p, "days_after")
    return (None if before is None else int(before)), (None if after is None else int(after))


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
        _window(pair, *_rule_window("amount_date", p)),
        _names_differ(pair),
    )


def check_fuzzy(ctx: Context, pair: Pair, p: dict) -> list[Failure] | None:
    return _first(
        _currency(pair),
        _signs(pair),
        _equal(ctx, pair),
        _window(pair, *_rule_window("fuzzy_counterparty", p)),
        _similar(pair, float(_param("fuzzy_counterparty", p, "min_similarity"))),
    )


def _tolerance(ctx: Context, pair: Pair, p: dict, absolute: str, percent: str) -> tuple[Decimal, str]:
    """The larger of an absolute tolerance and a percentage of the entry, and how to say it."""
    fixed = Decimal(str(_param("tolerance", p, absolute)))
    share = Decimal(str(_param("tolerance", p, percent)))
    amount = abs(pair.entry.src.amount)
    by_percent = (amount * share / 100).quantize(Decimal(1).scaleb(-ctx.scale), rounding=ROUND_DOWN)
    if by_percent > fixed:
        return by_percent, f"{_money(ctx, by_percent)} ({share:g}% of {_money(ctx, amount)})"
    return fixed, _money(ctx, fixed)


def check_tolerance(ctx: Context, pair: Pair, p: dict) -> list[Failure] | None:
    """A difference within the tolerance, backed by a reference or the same counterparty.

    With both a reference and the counterparty the rule forgives up to
    ``absolute``/``percent``; with one of them only ``single_absolute``/``single_percent``.
    A named entry may be ``ref_window_days`` away, an unnamed one ``window_days``;
    a reference only alike needs the counterparty too.
    """
    if pair.diff == 0:
        return None  # equal amounts are the other rules' business
    ref = pair.ref_evidence
    min_similarity = float(_param("tolerance", p, "min_similarity"))
    same_party = pair.party is not None and pair.party * 100 >= min_similarity
    over: Failure | None = None
    if pair.diff is not None and pair.bank.currency == pair.entry.currency:
        tiers = ("absolute", "percent") if ref and same_party else ("single_absolute", "single_percent")
        tol, shown = _tolerance(ctx, pair, p, *tiers)
        if abs(pair.diff) > tol:
            why_tier = "" if ref and same_party else _tier_phrase(ctx, pair, p, bool(ref), same_party)
            over = Failure(
                f"amount differs by {_money(ctx, abs(pair.diff))}, over the tolerance of {shown}{why_tier}",
                float(abs(pair.diff) / tol - 1) if tol else 1.0,
                True,
            )
    evidence = None
    if not ref:
        evidence = _similar(pair, min_similarity, " and no reference of it found")
    elif ref < SURE_REFERENCE and not same_party:
        evidence = _similar(pair, min_similarity, ", and its reference is only nearly in the remittance")
    window = int(_param("tolerance", p, "window_days") or 0)
    if ref:
        window = max(window, int(_param("tolerance", p, "ref_window_days") or 0))
    return _first(_currency(pair), _signs(pair), over, _window(pair, window), evidence)


def _tier_phrase(ctx: Context, pair: Pair, p: dict, has_ref: bool, same_party: bool) -> str:
    """Why the stricter tolerance applied: only one of a reference and the counterparty backs the pair."""
    if not has_ref and not same_party:
        return ""
    full, _ = _tolerance(ctx, pair, p, "absolute", "percent")
    if pair.diff is None or abs(pair.diff) > full:
        return ""
    missing = "a reference" if not has_ref else "the same counterparty"
    return f" without {missing} ({_money(ctx, full)} with it)"


def _check_sum(rule: str, whole: str) -> Callable[[Context, Pair, dict], list[Failure] | None]:
    """batch (a bank line is the sum of entries) and partial (an entry is the sum of bank lines).

    The part must come from the whole's counterparty (a similar name or a known
    payer) or be named by reference, within the rule's days; what is left is
    the sum itself, which the traced run has looked for.
    """

    def check(ctx: Context, pair: Pair, p: dict) -> list[Failure] | None:
        b, e = pair.bank.src.amount, pair.entry.src.amount
        big, part = (b, e) if whole == "bank" else (e, b)
        if pair.bank.currency != pair.entry.currency or big * part <= 0 or abs(part) >= abs(big):
            return None  # cannot be a part of the other's sum
        min_similarity = float(_param(rule, p, "min_similarity"))
        same_payer = None if pair.ref_found else _similar(pair, min_similarity, ", no reference shared")
        before, after = _rule_window(rule, p)
        if whole == "ledger" and pair.ref_found:
            # Instalments that name the invoice may come up to ref_window_days after it.
            before, after = int(_param(rule, p, "ref_window_days") or 0), before
        failures = _first(_window(pair, before, after), same_payer)
        if not failures:
            parts = "entries" if whole == "bank" else "lines"
            failures.append(
                Failure(
                    f"no 2 to {_param(rule, p, 'max_items')} open {parts} of this party with it add up to"
                    f" {_money(ctx, abs(big))}",
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


#: A parameter missed by at most this much (relative to it) is what a person would change.
TELLING_GAP = 3.0

#: What a rule without a check here says: the traced run is all there is to go by.
UNCHECKED = Failure("proposed nothing for it (its conditions are not spelt out here)", 2.0)

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
    whose condition names a parameter and misses it by no more than
    TELLING_GAP tells more (it is what would change the outcome: a tolerance
    of 5.00 against a difference of 12.40, not of 200.00), then the smaller
    miss, then the configured order.
    """
    found = []
    for order, rule_cfg in enumerate(config.rules):
        name = rule_cfg["rule"]
        params = {k: v for k, v in rule_cfg.items() if k != "rule"}
        check = CHECKS.get(name)
        failures = check(ctx, pair, params) if check else [UNCHECKED]
        if failures is not None:
            gaps = sum(f.gap for f in failures)
            telling = bool(failures) and failures[0].tunable and failures[0].gap <= TELLING_GAP
            key = (len(failures), not telling, gaps, order)
            found.append((name, failures, key))
    found.sort(key=lambda x: x[2])
    return found


def merge_reasons(per_rule: list[tuple[str, list[Failure], tuple]]) -> list[str]:
    """Each rule's first unmet condition, most telling first; rules failing alike share one sentence."""
    texts: dict[str, list[str]] = {}
    for name, failures, _ in per_rule:
        if failures and name not in texts.setdefault(failures[0].text, []):
            texts[failures[0].text].append(name)
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


class Rough:
    """How plausible the other side's items look next to the target, before any rule is asked.

    Read straight off the items (no engine context), so that only the closest
    few of what the store loaded are prepared for matching.
    """

    def __init__(self, target: Source, config: EngineConfig):
        self.target = target
        self.bank = isinstance(target, BankLine)
        self.width, self.reach = band(target.amount), reach_days(config)
        self.name = norm_name(target.counterparty)
        self.flat = flat_name(target.counterparty)
        if isinstance(target, BankLine):
            self.grams = ref_grams(target.remittance, target.end_to_end_id)
            self.keys: frozenset[str] = frozenset()
            self.payer = set(payer_keys(target.counterparty_account, target.counterparty))
        else:
            self.grams = frozenset()
            self.keys = frozenset(k for k in (norm_ref(target.reference), norm_ref(target.external_id)) if k)
            self.payer = set()
        self.known = {(kp.bank_key, kp.ledger_key) for kp in config.known_payers}

    def __call__(self, other: Source) -> float:
        """0..1; 0 when the item is too far off in every respect to be worth a look."""
        t = self.target
        days = abs((other.date - t.date).days)
        if days > self.reach:
            return 0.0
        bank, entry = (t, other) if self.bank else (other, t)
        assert isinstance(bank, BankLine) and isinstance(entry, LedgerEntry)
        diff, _ = difference(bank, entry)
        amount = 0.0 if diff is None else max(0.0, 1.0 - float(abs(diff) / self.width))
        sim = name_similarity(self.name, norm_name(other.counterparty), self.flat, flat_name(other.counterparty))
        name = sim or 0.0
        if self.known:
            keys = self.payer if self.bank else set(payer_keys(bank.counterparty_account, bank.counterparty))
            ledger_key = norm_name(entry.counterparty)
            if any((k, ledger_key) in self.known for k in keys):
                name = 1.0
        if self.bank:
            ref = 1.0 if {norm_ref(entry.reference), norm_ref(entry.external_id)} & self.grams else 0.0
        else:
            text = norm_ref(bank.remittance) + " " + norm_ref(bank.end_to_end_id)
            ref = 1.0 if any(k in text for k in self.keys) else 0.0
        if not amount and not ref and name < NEIGHBOUR_SIMILARITY:
            return 0.0
        return 0.3 * ref + 0.2 * name + 0.3 * amount + 0.2 * (1 - days / (self.reach + 1))


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
    limit = max(1, min(limit, MAX_LIMIT))
    side = "bank" if isinstance(target, BankLine) else "ledger"
    rough = Rough(target, config)
    scored = [(rough(o), o) for o in others]
    near = [o for score, o in sorted(scored, key=lambda x: (-x[0], x[1].id)) if score > 0][:MAX_NEIGHBOURS]
    closest = {o.id: n for n, o in enumerate(near)}
    near_rivals = sorted(
        (r for r in rivals if r.id != target.id),
        key=lambda r: (abs(r.amount - target.amount), abs((r.date - target.date).days), r.id),
    )[:MAX_RIVALS]
    mine: list = [target, *near_rivals]
    open_near: list = [o for o in near if o.id not in taken]
    trace = Trace()
    if side == "bank":
        reconcile(mine, open_near, config, trace)
        ctx = Context(mine, near, config.known_payers)  # type: ignore[arg-type]
        t, theirs = ctx.banks[target.id], ctx.ledgers
    else:
        reconcile(open_near, mine, config, trace)
        ctx = Context(near, mine, config.known_payers)  # type: ignore[arg-type]
        t, theirs = ctx.ledgers[target.id], ctx.banks
    findings = _proposed(ctx, t, trace, ("b" if side == "bank" else "l", t.id))
    covered = {i for f in findings for i in (x.id for x in f.items)}
    winners = _winners(trace)
    # Each rule's conditions are checked for the closest of the rest only: enough to fill any page.
    rest = [o for o in near if o.id not in covered][: max(3 * limit, 30)]
    for o in rest:
        findings.append(_unproposed(ctx, t, theirs[o.id], config, taken.get(o.id), winners, closest[o.id]))
    findings.sort(key=lambda f: f.rank)
    would = next((f for f in findings if f.outcome == "would_match"), None)
    return Answer(findings[:limit], would, len(near))


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
                by_rule=[],
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


def _unproposed(
    ctx: Context, t: Item, o: Item, config: EngineConfig, held: TakenBy | None, winners, order: int
) -> Finding:
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
        by_rule=[{"rule": name, "unmet": [f.text for f in failures]} for name, failures, _ in per_rule],
        facts=facts_of(ctx, t, [o]),
        taken_by=held,
        rank=(2, *(closest[2][:3] if closest else (99, True, 0.0)), order),
    )
