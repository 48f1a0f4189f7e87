"""Who may send now: requests in flight (all together and per endpoint) and
each rate-limited endpoint's token bucket.

One bad endpoint must not hurt the others: an endpoint at its cap is simply
not given more work (its rows stay pending in the database), so a hanging
or failing endpoint holds at most its own share of the global slots, and
memory is bounded by ``max_in_flight`` whatever the backlog.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from .endpoints import EndpointCache


class TokenBucket:
    """``rate`` requests per second with bursts of up to ``max(1, rate)``; never blocks."""

    def __init__(self, rate: float):
        self.rate = rate
        self.capacity = max(1.0, rate)
        self.tokens = self.capacity
        self.updated = time.monotonic()

    def available(self) -> int:
        now = time.monotonic()
        self.tokens = min(self.capacity, self.tokens + (now - self.updated) * self.rate)
        self.updated = now
        return int(self.tokens)

    def take(self) -> None:
        self.tokens -= 1


class Slots:
    """The dispatcher's slots. ``on_freed`` is called when a freed slot may
    let due rows go that the last claim left behind (it wakes the claim loop)."""

    def __init__(self, endpoints: EndpointCache, on_freed: Callable[[], None]):
        self.endpoints = endpoints
        self.on_freed = on_freed
        self.max_in_flight = 1
        self.cap = 1
        self.in_flight = 0
        self.per_endpoint: dict[str, int] = {}
        self.buckets: dict[str, TokenBucket] = {}
        # What limited the last claim: a finished request wakes the loop only
        # if its slot may let more due rows go (otherwise a claim would find
        # nothing and cost two database round trips per finished request).
        self.capped: set[str] = set()
        self.global_capped = False

    def configure(self, max_in_flight: int, cap: int) -> None:
        self.max_in_flight, self.cap = max_in_flight, cap

    @property
    def free(self) -> int:
        return self.max_in_flight - self.in_flight

    def room(self) -> dict[str, int]:
        """Requests each endpoint may start now, for endpoints below the default cap.

        Endpoints with requests in flight have ``cap - in flight``; those with
        a rate limit at most the tokens of their bucket.
        """
        cap = self.cap
        room = {ep: max(0, cap - n) for ep, n in self.per_endpoint.items()}
        room.update(dict.fromkeys(self.endpoints.unusable, 0))
        room.update(dict.fromkeys(self.endpoints.fifo, 0))  # their heads are claimed apart (ordering.py)
        for endpoint in self.sync_buckets():
            room[endpoint.id] = min(room.get(endpoint.id, cap), self.buckets[endpoint.id].available())
        return room

    def sync_buckets(self) -> list:
        """A token bucket for each rate-limited endpoint (made, resized or
        forgotten as limits change); returns those endpoints.

        Their rates were checked when the endpoint cache loaded them
        (:func:`usable_rate_limit`: a number within (0, MAX_RATE_LIMIT]), so
        making a bucket or reading its tokens cannot fail here.
        """
        limited = self.endpoints.rate_limited()
        for endpoint in limited:
            rate = endpoint.rate_limit
            assert rate is not None  # rate_limited() lists only endpoints with a limit
            bucket = self.buckets.get(endpoint.id)
            if bucket is None or bucket.rate != rate:
                self.buckets[endpoint.id] = TokenBucket(rate)
        if len(self.buckets) > len(limited):  # limits removed: forget their buckets
            keep = {e.id for e in limited}
            self.buckets = {k: v for k, v in self.buckets.items() if k in keep}
        return limited

    def claimed(self, room: dict[str, int], taken: dict[str, int], limit: int, rows: int) -> None:
        """Remember what limited a claim of ``rows`` rows (``taken``: rows per endpoint)."""
        cap = self.cap
        self.global_capped = rows >= limit
        self.capped = {ep for ep, r in room.items() if r <= taken.get(ep, 0)}
        self.capped.update(ep for ep, n in taken.items() if n >= room.get(ep, cap))

    def reserve(self, endpoint_ids: list[str]) -> list[bool]:
        """Take a slot now for each new delivery that may be sent at once: only
        when nothing older waits for its endpoint (the last claim left no due
        rows behind for it) and a slot and a rate token are free."""
        if self.global_capped:
            return [False] * len(endpoint_ids)
        cap, max_in_flight, buckets_fresh = self.cap, self.max_in_flight, False
        per_endpoint, capped, fifo = self.per_endpoint, self.capped, self.endpoints.fifo
        granted = []
        for endpoint_id in endpoint_ids:
            ok = (
                self.in_flight < max_in_flight
                and endpoint_id not in capped
                and endpoint_id not in fifo  # in order, through the claim of heads
                and per_endpoint.get(endpoint_id, 0) < cap
            )
            if ok and self.endpoints.is_rate_limited(endpoint_id):
                if not buckets_fresh:
                    self.sync_buckets()
                    buckets_fresh = True
                bucket = self.buckets.get(endpoint_id)
                ok = bucket is not None and bucket.available() >= 1
            if ok:
                self.take(endpoint_id)
            granted.append(ok)
        return granted

    def take(self, endpoint_id: str) -> None:
        self.in_flight += 1
        self.per_endpoint[endpoint_id] = self.per_endpoint.get(endpoint_id, 0) + 1
        bucket = self.buckets.get(endpoint_id)
        if bucket is not None:
            bucket.take()

    def free_one(self, endpoint_id: str) -> None:
        self.in_flight -= 1
        left = self.per_endpoint.get(endpoint_id, 1) - 1
        if left > 0:
            self.per_endpoint[endpoint_id] = left
        else:
            self.per_endpoint.pop(endpoint_id, None)
        if self.global_capped or endpoint_id in self.capped:
            self.on_freed()

    def waiting_for_tokens(self) -> bool:
        """A rate-limited endpoint gets a token soon."""
        return any(b.available() < 1 for b in self.buckets.values())
