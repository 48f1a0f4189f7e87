"""Bounded subset-sum: which 2..k of a few amounts add up to a target."""

from __future__ import annotations

import dataclasses

#: Search nodes one target may cost: a customer with many open items must not
#: hold up a run. Where it runs out, the answer is "not known to be unique".
DEFAULT_BUDGET = 20_000


@dataclasses.dataclass
class Search:
    """What a search found: index tuples into the values, and whether it saw every subset.

    ``complete`` is False when the node budget ran out first; then a single
    subset found is not known to be the only one. Stopping at ``limit``
    subsets is complete for the question asked (is it unique?).
    """

    found: list[tuple[int, ...]]
    complete: bool


def find_subsets(
    values: list[int], target: int, min_items: int, max_items: int, limit: int = 3, budget: int = DEFAULT_BUDGET
) -> Search:
    """Index tuples of ``values`` (all positive) whose sum is ``target``.

    A depth-first search over the values sorted from largest down, pruned as
    soon as the remaining values cannot reach the target: neither all of them
    (a suffix sum) nor the largest ones that still fit in the slots left (a
    window sum of the sorted values). Stops after ``limit`` subsets (the
    caller only needs to know whether the answer is unique) or ``budget``
    nodes (a time box: the pools of a busy customer can be large).
    """
    order = sorted(range(len(values)), key=lambda i: (-values[i], i))
    vals = [values[i] for i in order]
    n = len(vals)
    # prefix[i] = sum of vals[:i]: the k largest values from i on sum to prefix[i+k] - prefix[i]
    prefix = [0] * (n + 1)
    for i, v in enumerate(vals):
        prefix[i + 1] = prefix[i] + v
    found: list[tuple[int, ...]] = []
    nodes = 0

    def walk(start: int, remaining: int, chosen: list[int]) -> bool:
        """False when the search must stop (limit or budget reached)."""
        nonlocal nodes
        nodes += 1
        if nodes > budget:
            return False
        if remaining == 0:
            if len(chosen) >= min_items:
                found.append(tuple(sorted(order[i] for i in chosen)))
            return len(found) < limit
        slots = max_items - len(chosen)
        if slots == 0:
            return True
        for i in range(start, n):
            if prefix[n] - prefix[i] < remaining:
                return True  # everything left together is too little
            if prefix[min(n, i + slots)] - prefix[i] < remaining:
                return True  # the largest values that fit in the slots left are too little
            if vals[i] <= remaining:
                chosen.append(i)
                go_on = walk(i + 1, remaining - vals[i], chosen)
                chosen.pop()
                if not go_on:
                    return False
        return True

    finished = walk(0, target, [])
    return Search(found, finished or len(found) >= limit)


def subsets_summing_to(
    values: list[int], target: int, min_items: int, max_items: int, limit: int = 3
) -> list[tuple[int, ...]]:
    """The subsets :func:`find_subsets` finds, without saying whether it saw them all."""
    return find_subsets(values, target, min_items, max_items, limit).found
