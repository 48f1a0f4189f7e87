"""Bounded subset-sum: which 2..k of a few amounts add up to a target."""

from __future__ import annotations


def subsets_summing_to(
    values: list[int], target: int, min_items: int, max_items: int, limit: int = 3
) -> list[tuple[int, ...]]:
    """Index tuples of ``values`` (all positive) whose sum is ``target``.

    A depth-first search over the values sorted from largest down, pruned as
    soon as the running sum passes the target or the remaining values cannot
    reach it. With the pools the rules build (at most a dozen items, k <= 5)
    it visits a few thousand nodes at worst. Stops after ``limit`` subsets:
    the caller only needs to know whether the answer is unique.
    """
    order = sorted(range(len(values)), key=lambda i: (-values[i], i))
    vals = [values[i] for i in order]
    # suffix[i] = sum of vals[i:], to prune branches that can no longer reach the target
    suffix = [0] * (len(vals) + 1)
    for i in range(len(vals) - 1, -1, -1):
        suffix[i] = suffix[i + 1] + vals[i]
    found: list[tuple[int, ...]] = []

    def walk(start: int, remaining: int, chosen: list[int]) -> None:
        if len(found) >= limit:
            return
        if remaining == 0:
            if len(chosen) >= min_items:
                found.append(tuple(sorted(order[i] for i in chosen)))
            return
        if len(chosen) == max_items:
            return
        for i in range(start, len(vals)):
            if suffix[i] < remaining:
                return  # everything left together is too little
            if vals[i] <= remaining:
                chosen.append(i)
                walk(i + 1, remaining - vals[i], chosen)
                chosen.pop()

    walk(0, target, [])
    return found
