"""When to try a failed delivery again: the schedule, jitter and Retry-After.

Pure functions, so the policy is tested without a network or a clock.
"""

from __future__ import annotations

import random

from tierd.core.http import parse_retry_after

#: Status codes whose Retry-After header we honour (as Svix does).
RETRY_AFTER_STATUSES = frozenset({429, 502, 503, 504})
#: Jitter spreads retries of many deliveries that failed together (+-10%).
JITTER = 0.1


def next_delay(schedule: list[float], attempts_made: int, *, status: int | None = None,
               retry_after: str | None = None, now: float | None = None,
               rng: random.Random | None = None) -> float | None:
    """Seconds to wait before the next attempt, or None when the schedule is spent.

    ``schedule[i]`` is the delay before attempt ``i + 1`` (the first is usually
    0, "at once"). After ``attempts_made`` failed attempts the next delay is
    ``schedule[attempts_made]``. A Retry-After on 429/502/503/504 moves it, but
    only within [scheduled, 2 x scheduled]: a receiver can slow us down, not
    make us hammer it nor park the delivery forever.
    """
    if attempts_made >= len(schedule):
        return None
    scheduled = schedule[attempts_made]
    delay = scheduled * (1 + (rng or random).uniform(-JITTER, JITTER)) if scheduled > 0 else 0.0
    if status in RETRY_AFTER_STATUSES and retry_after:
        wanted = parse_retry_after(retry_after, now)
        if wanted is not None:
            delay = min(max(wanted, scheduled), 2 * scheduled)
    return delay
