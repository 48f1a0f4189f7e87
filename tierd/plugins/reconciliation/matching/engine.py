"""Run the configured rule passes over open items: the public entry point.

``reconcile(bank_lines, ledger_entries, config)`` is pure and synchronous;
the daemon runs it with ``asyncio.to_thread`` so the event loop stays free.
"""

from __future__ import annotations

import contextlib
import dataclasses
import gc
from collections import Counter

from .context import Context
from .model import RULE_DEFAULTS, BankLine, EngineConfig, LedgerEntry, Match, Result
from .resolve import dedupe, resolve
from .rules import RULES, Candidate


class RuleConfigError(ValueError):
    """An account names a rule that does not exist."""


@dataclasses.dataclass
class Pass:
    """One rule pass as a traced run saw it (see :class:`Trace`)."""

    rule: str
    params: dict
    #: Every candidate the rule proposed, with the reasons it gave (before
    #: resolve added why a person is asked).
    candidates: list[Candidate]
    reasons: list[list[str]]
    auto: list[Candidate]
    suggested: list[Candidate]
    threshold: float
    floor: float
    min_margin: float


@dataclasses.dataclass
class Trace:
    """What a traced run did, pass by pass: the raw material of "why is this still open?".

    Passed to :func:`reconcile` only when someone asks; a run without it
    records nothing and costs nothing more.
    """

    passes: list[Pass] = dataclasses.field(default_factory=list)


def check_rules(rules: list[dict]) -> list[str]:
    """Problems with a rules list (empty when fine), checked before any work starts."""
    return [
        f"rules[{i}]: unknown rule {r.get('rule')!r} (known: {', '.join(RULES)})"
        for i, r in enumerate(rules)
        if r.get("rule") not in RULES
    ]


@contextlib.contextmanager
def _gc_paused():
    """Pause the cyclic garbage collector for the duration of a run.

    A run allocates millions of small, acyclic objects (items, index lists,
    candidates); each allocation burst triggers collections that walk the
    whole growing heap, which made 100k-line runs about 40% slower. Nothing
    here forms cycles, and the collector resumes (and catches up) right after.
    """
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def reconcile(
    bank_lines: list[BankLine],
    ledger_entries: list[LedgerEntry],
    config: EngineConfig | None = None,
    trace: Trace | None = None,
) -> Result:
    """Match bank lines with ledger entries; the result does not depend on input order.

    With a ``trace``, every pass's candidates and what became of them are
    recorded in it (the result is the same).
    """
    config = config or EngineConfig()
    problems = check_rules(config.rules)
    if problems:
        raise RuleConfigError("; ".join(problems))
    with _gc_paused():
        return _reconcile(bank_lines, ledger_entries, config, trace)


def _reconcile(
    bank_lines: list[BankLine], ledger_entries: list[LedgerEntry], config: EngineConfig, trace: Trace | None
) -> Result:
    ctx = Context(bank_lines, ledger_entries, config.known_payers)
    matches: list[Match] = []
    pending: list[Candidate] = []
    by_rule: Counter = Counter()
    for rule_cfg in config.rules:
        if not ctx.open_banks or not ctx.open_ledgers:
            break
        # Each rule reads every parameter it takes: the account's, else its default.
        given_params = {k: v for k, v in rule_cfg.items() if k != "rule" and v is not None}
        params = {**RULE_DEFAULTS.get(rule_cfg["rule"], {}), **given_params}
        candidates = RULES[rule_cfg["rule"]](ctx, params)
        threshold = float(params.get("auto_threshold", config.auto_threshold))
        given = [list(c.reasons) for c in candidates] if trace is not None else []
        auto, suggested = resolve(
            candidates,
            threshold=threshold,
            min_margin=config.min_margin,
            floor=config.suggestion_threshold,
            auto=bool(params.get("auto", True)),
        )
        if trace is not None:
            trace.passes.append(
                Pass(
                    rule_cfg["rule"],
                    params,
                    candidates,
                    given,
                    auto,
                    suggested,
                    threshold,
                    config.suggestion_threshold,
                    config.min_margin,
                )
            )
        for c in auto:
            ctx.close(c.bank_ids, c.ledger_ids)
            matches.append(_to_match(ctx, c))
            by_rule[c.rule] += 1
        pending.extend(suggested)
    return Result(matches=matches, suggestions=_suggestions(ctx, pending, config), by_rule=dict(by_rule))


def _to_match(ctx: Context, c: Candidate) -> Match:
    return Match(
        rule=c.rule,
        score=c.score,
        explanation="; ".join(c.reasons),
        bank_ids=c.bank_ids,
        ledger_ids=c.ledger_ids,
        adjustment=ctx.to_decimal(c.adjustment),
        exchange_rate=c.exchange_rate,
    )


def _suggestions(ctx: Context, pending: list[Candidate], config: EngineConfig) -> list[Match]:
    """Suggestions whose items are all still open, best first, a few per item."""
    per_item: Counter = Counter()
    out = []
    for c in dedupe(pending):
        if not all(i in ctx.open_banks for i in c.bank_ids) or not all(i in ctx.open_ledgers for i in c.ledger_ids):
            continue
        if any(per_item[item] >= config.max_suggestions_per_item for item in c.items):
            continue
        per_item.update(c.items)
        out.append(_to_match(ctx, c))
    return out
