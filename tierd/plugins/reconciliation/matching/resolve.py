"""Settle conflicts between candidates globally, independent of input order.

Candidates are taken best first (score, then ids). A candidate is matched
automatically when all its items are still free, its score reaches the
threshold, and its evidence (the score without the share that only says how
close the dates are) beats by ``min_margin`` every other candidate that wants
one of its items and could still be made: a nearer date alone never decides
between two otherwise equal candidates. Anything else worth showing
becomes a suggestion for a person, and its items stay open for the later,
more specific passes. Taking candidates in score order while demanding a
margin over all live competitors on *either* side means an automatic match
is the best use of each of its items: no better total is possible by
swapping partners, and close calls are left to people.
"""

from __future__ import annotations

from collections import defaultdict

from .evidence import Candidate


def dedupe(candidates: list[Candidate]) -> list[Candidate]:
    """One candidate per set of items (the best), sorted best first."""
    best: dict[tuple, Candidate] = {}
    for c in candidates:
        key = (c.bank_ids, c.ledger_ids)
        kept = best.get(key)
        if kept is None or c.sort_key() < kept.sort_key():
            best[key] = c
    return sorted(best.values(), key=Candidate.sort_key)


def resolve(
    candidates: list[Candidate], threshold: float, min_margin: float, floor: float, auto: bool = True
) -> tuple[list[Candidate], list[Candidate]]:
    """Split candidates into automatic matches and suggestions."""
    ordered = dedupe(candidates)
    by_item: dict[tuple[str, str], list[int]] = defaultdict(list)
    for n, c in enumerate(ordered):
        for item in c.items:
            by_item[item].append(n)  # each list stays in best-first order
    taken: set[tuple[str, str]] = set()
    matches, suggestions = [], []
    for n, c in enumerate(ordered):
        if c.score < floor:
            break
        items = c.items
        if any(i in taken for i in items):
            continue
        runner_up = _best_competitor(n, items, ordered, by_item, taken)
        if auto and c.score >= threshold and c.evidence - runner_up >= min_margin:
            matches.append(c)
            taken.update(items)
            continue
        # Say why a person is asked, so the suggestion reads as a question.
        if c.evidence - runner_up < min_margin:
            c.reasons = c.reasons + ["another candidate for the same items is about as good"]
        elif not auto:
            c.reasons = c.reasons + ["this rule only suggests"]
        else:
            c.reasons = c.reasons + [f"score below the automatic threshold of {threshold:g}"]
        suggestions.append(c)
    return matches, suggestions


def _best_competitor(n: int, items, ordered: list[Candidate], by_item, taken) -> float:
    """Evidence (score without date closeness) of the strongest other live candidate sharing an item."""
    best = 0.0
    for item in items:
        for m in by_item[item]:
            other = ordered[m]
            if other.score <= best:
                break  # sorted by score, and evidence <= score: nothing stronger further on
            if m != n and other.evidence > best and not any(i in taken for i in other.items):
                best = other.evidence
    return best
