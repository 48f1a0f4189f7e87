"""Ordered delivery per endpoint (``ordering: fifo``, issue 14).

A fifo endpoint gets its deliveries in event order (the events' time, then
the order they were stored: the events of one intake batch share their
time), one in flight at a time. What that means, decided here:

* The head is the endpoint's oldest *unfinished* delivery (pending or in
  flight). Only the head is ever claimed; the consumer never hands a fifo
  endpoint's new delivery over directly (``Slots.reserve``), so every one
  goes through :meth:`Ordering.claim`, one statement for all idle fifo
  endpoints per claim. Unordered endpoints pay nothing: no query runs while
  no endpoint is fifo, and the main claim only skips the fifo ones.
* A head that keeps failing stays the head: once the retry schedule is spent
  it is tried again at the schedule's last (longest) delay, never given up
  (``outcome.decide``), so it blocks the ones after it until it lands, an
  operator retries it (``POST /v1/deliveries/{id}/retry`` sends it at once)
  or the endpoint is disabled (``webhooks.disable_after``, as for any
  failing endpoint; its deliveries wait, and flow in order once enabled).
* A finished delivery never blocks: a 410 Gone fails the head and disables
  the endpoint; once enabled, the next one flows. Re-queued deliveries
  (retry, recover) and replayed ones take their place by event order: an
  old event re-queued goes before the newer ones still waiting, a newer one
  waits behind the head (the retry answers which delivery it waits for).
* Test sends are outside the order: sent at once, never retried on a fifo
  endpoint (a failed test would hold real events back).
* ``blocked_since`` is set at the head's first failed attempt and cleared
  when a delivery of the endpoint finishes (delivered, or failed for good);
  each change is published once: ``webhook.endpoint.blocked`` (an operator
  alert, like ``webhook.endpoint.disabled``) and ``webhook.endpoint.unblocked``.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

from tierd.core.clock import iso

from .endpoints import EndpointCache
from .event_types import ENDPOINT_BLOCKED, ENDPOINT_UNBLOCKED
from .records import Outcome
from .slots import Slots
from .store import Store

log = logging.getLogger("tierd.webhooks")

#: An endpoint's ``ordering``: the first is the default.
ORDERINGS = ("unordered", "fifo")
#: Deliveries that are not events and never hold a fifo endpoint's queue.
TEST_TYPE = "webhook.test"


def retry_after_schedule(schedule: list[float]) -> float:
    """The delay between a blocked head's attempts once its schedule is spent:
    the schedule's longest step (at least a second, never a tight loop)."""
    return max(max(schedule), 1.0)


def unqueued(outcome: Outcome) -> Outcome:
    """A test send's outcome on a fifo endpoint: final, never retried (it would
    take a place in the endpoint's queue and hold real events back)."""
    if outcome.next_status == "pending":
        outcome.next_status, outcome.due_at = "failed", None
    return outcome


class Ordering:
    """Claims the heads of fifo endpoints and follows whether they are blocked.

    ``publish(tenant, type, data)`` publishes an event (the bus).
    """

    def __init__(
        self,
        store: Store,
        endpoints: EndpointCache,
        clock,
        publish: Callable[[str, str, dict], Awaitable[object]],
    ):
        self.store = store
        self.endpoints = endpoints
        self.clock = clock
        self.publish = publish

    async def claim(self, now: float, slots: Slots, most: int, claim_id: int) -> list:
        """Claim the due head of each fifo endpoint with nothing in flight (at most ``most``)."""
        idle: list[str] = []
        for endpoint_id in self.endpoints.fifo:
            if endpoint_id in slots.per_endpoint or endpoint_id in self.endpoints.unusable:
                continue
            bucket = slots.buckets.get(endpoint_id)
            if bucket is not None and bucket.available() < 1:
                continue  # its rate limit: a token comes soon (the loop polls for it)
            idle.append(endpoint_id)
        if not idle:
            return []
        return await self.store.claim_heads(now, idle, most, claim_id)

    async def recorded(self, batch: list[Outcome]) -> None:
        """After a batch of results is written: fifo endpoints blocked or flowing again."""
        fifo = self.endpoints.fifo
        last: dict[str, Outcome] = {}
        for o in batch:
            if o.endpoint_id in fifo and o.event_type != TEST_TYPE:
                last[o.endpoint_id] = o
        for o in last.values():
            blocked = o.next_status == "pending"
            endpoint = await self.store.set_blocked(o.endpoint_id, blocked, o.attempted_at)
            if endpoint is not None:
                await (self._blocked(endpoint, o) if blocked else self._unblocked(endpoint, o))

    async def _blocked(self, endpoint: dict, o: Outcome) -> None:
        log.warning(
            "webhook endpoint %s of tenant %s (fifo) is blocked: delivery %s failed (%s); the ones after it wait",
            endpoint["id"],
            endpoint["_tenant_id"],
            o.delivery_id,
            o.error or f"HTTP {o.status_code}",
        )
        await self.publish(
            endpoint["_tenant_id"],
            ENDPOINT_BLOCKED,
            {
                "endpoint_id": endpoint["id"],
                "url": endpoint["url"],
                "description": endpoint["description"],
                "delivery_id": o.delivery_id,
                "event_type": o.event_type,
                "error": o.error or f"HTTP {o.status_code}",
                "blocked_since": iso(o.attempted_at),
            },
        )

    async def _unblocked(self, endpoint: dict, o: Outcome) -> None:
        log.info(
            "webhook endpoint %s of tenant %s (fifo) flows again: delivery %s %s",
            endpoint["id"],
            endpoint["_tenant_id"],
            o.delivery_id,
            o.next_status,
        )
        await self.publish(
            endpoint["_tenant_id"],
            ENDPOINT_UNBLOCKED,
            {
                "endpoint_id": endpoint["id"],
                "url": endpoint["url"],
                "description": endpoint["description"],
                "delivery_id": o.delivery_id,
                "delivery_status": o.next_status,
            },
        )
