"""When to try a failed send again: one policy for every plugin that sends things out.

A schedule lists the delay before each attempt, the first included (usually 0,
"at once"); its length is the number of attempts. Webhooks configure theirs
key by key (Svix's); notifications give a first delay that doubles up to a
ceiling (:func:`exponential_schedule`). Pure functions, so the policy is
tested without a network or a clock.
"""

from __future__ import annotations

import random
from collections.abc import Sequence

#: Jitter spreads retries of many sends that failed together (+-10%).
JITTER = 0.1


def exponential_schedule(first: float, ceiling: float, attempts: int) -> list[float]:
    """``attempts`` delays: at once, then ``first``, doubled each time up to ``ceiling``."""
    return [0.0] + [min(first * 2**i, ceiling) for i in range(attempts - 1)]


def next_delay(
    schedule: Sequence[float],
    attempts_made: int,
    *,
    retry_after: float | None = None,
    stretch: float | None = 2.0,
    cap: float | None = None,
    jitter: float = 0.0,
    rng: random.Random | None = None,
) -> float | None:
    """Seconds to wait before the next attempt, or None when the schedule is spent.

    After ``attempts_made`` failed attempts the planned delay is
    ``schedule[attempts_made]``, jittered by ``+-jitter``. ``retry_after``
    (seconds the receiver asked for, already parsed) replaces it, but never
    below the planned delay and at most ``stretch`` times it (a receiver can
    slow us down, not make us hammer it nor park the work forever) and at
    most ``cap``; ``stretch=None`` lifts the first bound, not the cap.
    """
    if attempts_made >= len(schedule):
        return None
    planned = schedule[attempts_made]
    delay = planned * (1 + (rng or random).uniform(-jitter, jitter)) if planned > 0 and jitter else float(planned)
    if retry_after is not None:
        delay = max(retry_after, planned)
        if stretch is not None:
            delay = min(delay, stretch * planned)
    if cap is not None:
        delay = min(delay, cap)
    return delay
