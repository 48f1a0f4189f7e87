"""Handle success, handle failure: what follows an attempt.

:func:`decide` is the policy (pure: tested without a network or a clock):
a 2xx ends the delivery, a 410 ends it and disables the endpoint, anything
else is tried again on the schedule (core's retry policy; a Retry-After on
429/502/503/504 moves the next attempt within [scheduled, 2 x scheduled])
until the schedule is spent. :class:`FollowUps` does what an outcome asks
once it is recorded: a log line per failure, the endpoint disabled, the
operators told that a delivery gave up.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Awaitable, Callable

from tierd.core import retry
from tierd.core.clock import iso_or_none
from tierd.core.http import parse_retry_after

from .attempt import Response
from .ordering import retry_after_schedule
from .records import Claimed, Outcome

log = logging.getLogger("tierd.webhooks")

#: Status codes whose Retry-After header we honour (as Svix does).
RETRY_AFTER_STATUSES = frozenset({429, 502, 503, 504})


def retry_delay(
    schedule: list[float],
    attempts_made: int,
    *,
    status: int | None = None,
    retry_after: str | None = None,
    now: float | None = None,
    rng: random.Random | None = None,
) -> float | None:
    """Seconds before the next attempt after ``attempts_made`` failed ones, or None when the schedule is spent."""
    wanted = parse_retry_after(retry_after, now) if status in RETRY_AFTER_STATUSES and retry_after else None
    return retry.next_delay(schedule, attempts_made, retry_after=wanted, stretch=2.0, jitter=retry.JITTER, rng=rng)


def decide(delivery: Claimed, now: float, response: Response, schedule: list[float]) -> Outcome:
    """The delivery's next state after an attempt that got ``response``."""
    kind = response.kind
    if kind == "success":
        next_status, due_at = "succeeded", None
    elif kind == "gone":
        next_status, due_at = "failed", None  # 410: the receiver told us to stop
    elif kind == "transform_error" and not delivery.fifo:
        next_status, due_at = "failed", None  # the same template fails again: fixed, it is sent by retry/recover
    else:
        delay = retry_delay(
            schedule, delivery.attempts + 1, status=response.status, retry_after=response.retry_after, now=now
        )
        # A fifo head is never given up (ordering.py), a template that fails on it neither:
        # it holds the ones after it until the template is fixed, then they go on in order.
        if delay is None and delivery.fifo:
            delay = retry_after_schedule(schedule)
        next_status, due_at = ("failed", None) if delay is None else ("pending", now + delay)
    return Outcome(
        delivery.seq,
        delivery.tenant_id,
        delivery.endpoint_id,
        now,
        kind,
        response.status,
        round(response.latency * 1000, 2),
        response.error,
        response.snippet,
        next_status,
        due_at,
        disable_endpoint=kind == "gone",
        delivery_id=delivery.id,
        event_type=delivery.event_type,
        attempts=delivery.attempts + 1,
    )


def crashed(delivery: Claimed, now: float, exc: Exception, schedule: list[float]) -> Outcome:
    """The outcome of an attempt that raised (a bug): tried again on the schedule, never lost."""
    return decide(
        delivery,
        now,
        Response("internal_error", None, 0.0, f"internal error: {type(exc).__name__}", None, None),
        schedule,
    )


class FollowUps:
    """What recorded outcomes ask for besides their row.

    ``disable(endpoint_id, reason)`` disables an endpoint; ``on_failed(outcome)``
    tells operators that a delivery gave up (schedule spent or 410).
    """

    def __init__(
        self,
        disable: Callable[[str, str], Awaitable[bool]],
        on_failed: Callable[[Outcome], Awaitable[None]] | None,
        on_error: Callable[[], None],
    ):
        self.disable = disable
        self.on_failed = on_failed
        self.on_error = on_error

    async def handle(self, batch: list[Outcome]) -> None:
        for o in batch:
            if o.outcome == "success":
                continue  # nothing logged per success: the hot path stays quiet
            # Recorded already: a follow-up that fails is logged, never retried
            # with the batch (that would record its attempts twice).
            try:
                _log_failed_attempt(o)
                if o.disable_endpoint:
                    await self.disable(o.endpoint_id, "the endpoint answered 410 Gone")
                if o.next_status == "failed" and self.on_failed is not None:
                    await self.on_failed(o)
            except Exception:
                self.on_error()
                log.exception(
                    "webhook delivery %s: could not disable its endpoint or report that it gave up", o.delivery_id
                )


def _log_failed_attempt(o: Outcome) -> None:
    """One line per failed attempt, for operators: never the payload, the URL or a secret."""
    what = o.error or f"HTTP {o.status_code}"
    if o.next_status == "pending":
        log.info(
            "webhook attempt %d of delivery %s (tenant %s, endpoint %s) failed: %s; next attempt at %s",
            o.attempts,
            o.delivery_id,
            o.tenant_id,
            o.endpoint_id,
            what,
            iso_or_none(o.due_at),  # set: the delivery is pending
        )
    else:
        log.warning(
            "webhook delivery %s (tenant %s, endpoint %s) gave up after %d attempt(s): %s",
            o.delivery_id,
            o.tenant_id,
            o.endpoint_id,
            o.attempts,
            what,
        )
