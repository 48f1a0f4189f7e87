"""The delivery loop: claim due deliveries, send them, record every attempt.

One task claims due rows (oldest due first, in bounded batches) and starts
one task per delivery. Limits keep one bad endpoint from hurting the
others: a global cap on requests in flight, a cap per endpoint and an
optional rate per endpoint. An endpoint at its cap is simply not given more
work (its rows stay pending in the database), so a hanging or failing
endpoint holds at most its own share of the global slots, and memory is
bounded by ``max_in_flight`` whatever the backlog.

Results are written back in small batches, one transaction each. A crash
between a request and its record means the delivery is sent again after the
restart (at least once); a delivery recorded as succeeded never is.
"""

from __future__ import annotations

import asyncio
import logging
import time
import itertools
from typing import Awaitable, Callable

import aiohttp

from tierd import __version__
from tierd.core.clock import iso
from tierd.core.http import tls_context

from . import retry
from .metrics import WebhookMetrics
from .endpoints import EndpointCache
from .signing import signature_header
from .ssrf import AddressPolicy, find_refusal, make_connector
from .store import Claimed, Outcome, Store

log = logging.getLogger("tierd.webhooks")

#: How much of a response body each attempt keeps.
BODY_LIMIT = 4096
#: Rows claimed per query at most (a backlog is drained in slices this big).
CLAIM_BATCH = 500
#: Longest sleep of the loop when nothing wakes it (retries coming due).
TICK = 1.0
#: Results wait this long to be written together (one statement for all):
#: fewer trips to the writer, which event intake waits on. A crash in that
#: window sends those deliveries again (at least once, never lost).
RECORD_DELAY = 0.02
#: A claimed delivery that could not be prepared (its endpoint's row is
#: unusable, a bug) is tried again this much later, not in a tight loop.
BROKEN_RETRY = 60.0


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


class Dispatcher:
    def __init__(self, daemon, store: Store, endpoints: EndpointCache, settings: dict,
                 on_disabled: Callable[[dict, str], Awaitable[None]] | None = None,
                 on_failed: Callable[[Outcome], Awaitable[None]] | None = None):
        self.daemon = daemon
        self.store = store
        self.endpoints = endpoints
        self._claim_ids = itertools.count(1)
        self.clock = daemon.clock
        self.metrics = WebhookMetrics(daemon.metrics)
        self.metrics.unusable.set_function(lambda: len(self.endpoints.unusable))  # read at each scrape
        #: Called as ``await on_disabled(endpoint, reason)`` after an endpoint was disabled.
        self.on_disabled = on_disabled
        #: Called as ``await on_failed(outcome)`` when a delivery gave up (schedule spent or 410).
        self.on_failed = on_failed
        self.wakeup = asyncio.Event()
        self.in_flight = 0
        self.per_endpoint: dict[str, int] = {}
        self.buckets: dict[str, TokenBucket] = {}
        # What limited the last claim: a finished request wakes the loop only
        # if its slot may let more due rows go (otherwise a claim would find
        # nothing and cost two database round trips per finished request).
        self._capped: set[str] = set()
        self._global_capped = False
        #: The time the last claim took due rows up to.
        self._claimed_until = 0.0
        self.tasks: set[asyncio.Task] = set()
        self.results: list[Outcome] = []
        self.results_ready = asyncio.Event()
        self.session: aiohttp.ClientSession | None = None
        self.policy = AddressPolicy()
        self._stopping = asyncio.Event()
        self.configure(settings)

    def configure(self, settings: dict) -> None:
        """Apply (re)loaded settings; requests in flight keep theirs."""
        self.settings = settings
        self.timeout = aiohttp.ClientTimeout(total=settings["timeout"])
        # Per request, so a reload that changes ca_file applies to new connections.
        self.tls = tls_context(settings["ca_file"] or None)
        # The resolver and socket factory hold this very object: new
        # connections see the new allowlist at once.
        self.policy.allow = list(settings["allow_destinations"])

    # --- lifecycle ---------------------------------------------------------------------

    async def start(self) -> None:
        released = await self.store.requeue_inflight()
        if released:
            log.info("%d webhook deliveries were in flight when tierd stopped; sending them again", released)
        # The connector limit is ours to enforce (per endpoint, not per host): 0 = none.
        self.session = aiohttp.ClientSession(
            connector=make_connector(self.policy, limit=0), cookie_jar=aiohttp.DummyCookieJar(),
            auto_decompress=False)  # user-agent: set on each request, with the signature headers
        self.daemon.spawn(self._loop(), name="webhooks.dispatch")
        self.daemon.spawn(self._writer(), name="webhooks.results")

    async def stop(self, grace: float = 5.0) -> None:
        """Stop claiming, let requests in flight finish (up to ``grace``), record them."""
        self._stopping.set()
        self.wakeup.set()
        if self.tasks:
            _, pending = await asyncio.wait(list(self.tasks), timeout=grace)
            for task in pending:
                task.cancel()  # their rows stay in flight and are sent again at the next start
            await asyncio.gather(*pending, return_exceptions=True)
        await self._flush()
        self.results_ready.set()
        if self.session is not None:
            await self.session.close()

    def wake(self) -> None:
        """New work may be due (called by the consumer and the API)."""
        self.wakeup.set()

    # --- claiming ------------------------------------------------------------------------

    async def _loop(self) -> None:
        while not self._stopping.is_set():
            self.wakeup.clear()
            if self.in_flight >= self.settings["max_in_flight"]:
                idle = TICK  # every finished request wakes us
            else:
                try:
                    if await self.fill():
                        continue  # there may be more due right now
                    idle = await self._idle_time()
                except Exception:
                    log.exception("webhook dispatch failed; retrying in 1 s")
                    idle = TICK
            try:
                await asyncio.wait_for(self.wakeup.wait(), timeout=idle)
            except asyncio.TimeoutError:
                pass

    async def _idle_time(self) -> float:
        """How long the loop may sleep when nobody wakes it."""
        if any(b.available() < 1 for b in self.buckets.values()):
            return 0.05  # a rate-limited endpoint gets a token soon
        next_due = await self.store.next_due()
        if next_due is None or next_due <= self._claimed_until:
            # Nothing pending, or due rows the last claim could not take (their
            # endpoint is at its cap or disabled): a finished request or new
            # work wakes us.
            return TICK
        # Due later, or come due since the claim looked (then: claim again at once).
        return min(TICK, max(0.005, next_due - self.clock.time()))

    def _room(self) -> dict[str, int]:
        """Requests each endpoint may start now, for endpoints below the default cap.

        Endpoints with requests in flight have ``cap - in flight``; those with
        a rate limit at most the tokens of their bucket.
        """
        cap = self.settings["endpoint_max_in_flight"]
        room = {ep: max(0, cap - n) for ep, n in self.per_endpoint.items()}
        room.update(dict.fromkeys(self.endpoints.unusable, 0))
        for endpoint in self._sync_buckets():
            try:
                room[endpoint.id] = min(room.get(endpoint.id, cap), self.buckets[endpoint.id].available())
            except Exception:  # this endpoint waits; the others' deliveries go on
                self._endpoint_failed(endpoint.id, "computing its rate limit")
                room[endpoint.id] = 0
        return room

    def _sync_buckets(self) -> list:
        """A token bucket for each rate-limited endpoint (made, resized or
        forgotten as limits change); returns those endpoints."""
        limited = self.endpoints.rate_limited()
        for endpoint in limited:
            bucket = self.buckets.get(endpoint.id)
            if bucket is None or bucket.rate != endpoint.rate_limit:
                try:
                    self.buckets[endpoint.id] = TokenBucket(endpoint.rate_limit)
                except Exception:
                    self._endpoint_failed(endpoint.id, "making its rate limit")
                    self.buckets.pop(endpoint.id, None)
        limited = [e for e in limited if e.id in self.buckets]
        if len(self.buckets) > len(limited):  # limits removed: forget their buckets
            keep = {e.id for e in limited}
            self.buckets = {k: v for k, v in self.buckets.items() if k in keep}
        return limited

    async def fill(self) -> int:
        """Claim as many due deliveries as there are free slots and start them."""
        free = self.settings["max_in_flight"] - self.in_flight
        if free <= 0:
            return 0
        await self.endpoints.refresh()
        now = self._claimed_until = self.clock.time()
        cap, limit, room = self.settings["endpoint_max_in_flight"], min(free, CLAIM_BATCH), self._room()
        rows = await self.store.claim(now, limit, cap, room, next(self._claim_ids))
        taken: dict[str, int] = {}
        for row in rows:
            taken[row["endpoint_id"]] = taken.get(row["endpoint_id"], 0) + 1
        self._global_capped = len(rows) >= limit
        self._capped = {ep for ep, r in room.items() if r <= taken.get(ep, 0)}
        self._capped.update(ep for ep, n in taken.items() if n >= room.get(ep, cap))
        unsendable = []
        for row in rows:
            try:
                delivery = await self._claimed(row, now)
            except Exception as exc:  # only this delivery waits; the rest of the claim goes out
                unsendable.append((row, exc))
                continue
            self._take_slot(delivery.endpoint_id)
            self.launch(delivery)
        for row, exc in unsendable:
            await self._postpone(row, now, exc)
        return len(rows)

    async def _postpone(self, row, now: float, exc: Exception) -> None:
        """A claimed row that cannot be sent now goes back to pending, due later."""
        self.metrics.dispatch_errors.labels("delivery").inc()
        log.error("webhook delivery %s of tenant %s to endpoint %s cannot be sent (%s: %s); trying again in %g s",
                  row["id"], row["tenant_id"], row["endpoint_id"], type(exc).__name__, exc, BROKEN_RETRY)
        await self.store.postpone(row["seq"], now + BROKEN_RETRY)

    def _endpoint_failed(self, endpoint_id: str, doing: str) -> None:
        """An error in one endpoint's state: it is set aside (no room) until the API changes it."""
        self.metrics.dispatch_errors.labels("endpoint").inc()
        self.endpoints.unusable[endpoint_id] = f"error while {doing}"
        log.exception("webhook endpoint %s: error while %s; its deliveries wait until it is changed, "
                      "the others go on", endpoint_id, doing)

    # --- the fast path: new deliveries handed over by the consumer ------------------------

    def reserve(self, endpoint_ids: list[str]) -> list[bool]:
        """Take a slot now for each new delivery that may be sent at once.

        The consumer stores those rows already claimed and hands them to
        :meth:`launch`: no claim query, no wait for the loop. A delivery is
        sent at once only when nothing older waits for its endpoint (the last
        claim left no due rows behind for it) and a slot and a rate token are
        free; the rest are stored pending and go through the claim, oldest
        first. Each slot taken here goes with a delivery to :meth:`launch`
        (freed when its attempt ends) or back through :meth:`release`.
        """
        if self._stopping.is_set() or self._global_capped:
            return [False] * len(endpoint_ids)
        cap, buckets_fresh = self.settings["endpoint_max_in_flight"], False
        granted = []
        for endpoint_id in endpoint_ids:
            ok = self.in_flight < self.settings["max_in_flight"] and endpoint_id not in self._capped \
                and self.per_endpoint.get(endpoint_id, 0) < cap
            if ok and self.endpoints.is_rate_limited(endpoint_id):
                if not buckets_fresh:
                    self._sync_buckets()
                    buckets_fresh = True
                bucket = self.buckets.get(endpoint_id)
                ok = bucket is not None and bucket.available() >= 1
            if ok:
                self._take_slot(endpoint_id)
            granted.append(ok)
        return granted

    def release(self, endpoint_id: str) -> None:
        """Give back a slot taken by :meth:`reserve` and not used."""
        self._free_slot(endpoint_id)

    def launch(self, delivery: Claimed) -> None:
        """Send a claimed delivery whose slot is taken."""
        if self._stopping.is_set():
            # Claimed while we stop (the claim or the insert was under way):
            # its row stays in flight and is sent again at the next start.
            self._free_slot(delivery.endpoint_id)
            return
        task = asyncio.get_running_loop().create_task(self._run(delivery))
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    def _take_slot(self, endpoint_id: str) -> None:
        self.in_flight += 1
        self.per_endpoint[endpoint_id] = self.per_endpoint.get(endpoint_id, 0) + 1
        bucket = self.buckets.get(endpoint_id)
        if bucket is not None:
            bucket.take()

    def _free_slot(self, endpoint_id: str) -> None:
        self.in_flight -= 1
        left = self.per_endpoint.get(endpoint_id, 1) - 1
        if left > 0:
            self.per_endpoint[endpoint_id] = left
        else:
            self.per_endpoint.pop(endpoint_id, None)
        if self._global_capped or endpoint_id in self._capped:
            self.wakeup.set()

    async def _claimed(self, row, now: float) -> Claimed:
        """A claimed row with what sending it needs from its endpoint."""
        endpoint = self.endpoints.by_id.get(row["endpoint_id"])
        if endpoint is None:  # created a moment ago by another path: load it
            self.endpoints.forget(row["endpoint_id"])
            await self.endpoints.refresh()
            endpoint = self.endpoints.by_id.get(row["endpoint_id"])
        if endpoint is None:
            why = self.endpoints.unusable.get(row["endpoint_id"], "it was deleted")
            raise LookupError(f"its endpoint cannot be used: {why}")
        return Claimed(row["seq"], row["id"], row["tenant_id"], row["endpoint_id"], row["event_type"],
                       row["payload"], row["attempts"], row["created_at"], endpoint.url, endpoint.headers,
                       endpoint.secrets(now))

    async def _run(self, delivery: Claimed) -> None:
        try:
            outcome = await self.attempt(delivery)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a bug must not kill the loop nor lose the row
            log.exception("webhook delivery %s crashed", delivery.id)
            outcome = self.outcome(delivery, self.clock.time(), "internal_error", None, 0.0,
                                   f"internal error: {type(exc).__name__}", None, None)
        finally:
            self._free_slot(delivery.endpoint_id)
        self.results.append(outcome)
        self.results_ready.set()

    # --- one attempt -----------------------------------------------------------------------

    async def attempt(self, delivery: Claimed) -> Outcome:
        """Send ``delivery`` once and say what happened (not yet stored)."""
        now = self.clock.time()
        timestamp = int(now)
        body = delivery.payload.encode()
        # Static headers first: ours win, a tenant cannot forge a signature header.
        headers = dict(delivery.headers)
        headers.update({
            "webhook-id": delivery.id,
            "webhook-timestamp": str(timestamp),
            "webhook-signature": signature_header(delivery.secrets, delivery.id, timestamp, body),
            "content-type": "application/json",
            "user-agent": f"tierd/{__version__}",
        })
        timeout = self.settings["timeout"]
        status = retry_after = error = snippet = None
        started = time.monotonic()
        try:
            async with self.session.post(delivery.url, data=body, headers=headers, allow_redirects=False,
                                         timeout=self.timeout, ssl=self.tls) as resp:
                status = resp.status
                retry_after = resp.headers.get("Retry-After")
                snippet = await _read_head(resp, BODY_LIMIT)
            kind = "success" if 200 <= status < 300 else "gone" if status == 410 else "http_error"
            if kind != "success":
                error = f"HTTP {status}" + (" (redirects are not followed)" if 300 <= status < 400 else "")
        except asyncio.TimeoutError:
            kind, error = "timeout", f"no complete answer within {timeout:g}s"
        except (aiohttp.ClientError, OSError) as exc:
            refusal = find_refusal(exc)
            if refusal is not None:
                kind, error = "refused", str(refusal)
            elif isinstance(exc, aiohttp.ClientConnectorError):
                kind, error = "connect_error", f"cannot connect: {exc.os_error or exc}"
            else:
                kind, error = "connect_error" if isinstance(exc, OSError) else "http_error", \
                    f"{type(exc).__name__}: {exc}"
        except ValueError as exc:
            # What the client refuses to send: a host name that is no DNS name
            # (an endpoint stored before such URLs were refused), a bad header.
            kind, error = "connect_error", f"invalid request: {exc}"
        latency = time.monotonic() - started
        self.metrics.latency.observe(latency)
        return self.outcome(delivery, now, kind, status, latency, error, snippet, retry_after)

    def outcome(self, delivery: Claimed, now: float, kind: str, status: int | None, latency: float,
                error: str | None, snippet: str | None, retry_after: str | None) -> Outcome:
        """Decide what comes next for a delivery after an attempt."""
        self.metrics.count_attempt(kind)
        if kind == "success":
            next_status, due_at = "succeeded", None
        elif kind == "gone":
            next_status, due_at = "failed", None  # 410: the receiver told us to stop
        else:
            delay = retry.next_delay(self.settings["retry_schedule"], delivery.attempts + 1,
                                     status=status, retry_after=retry_after, now=now)
            next_status, due_at = ("failed", None) if delay is None else ("pending", now + delay)
        if delivery.attempts == 0:
            # Event accepted -> first attempt: the latency the issue cares about.
            self.metrics.first_attempt_delay.observe(max(0.0, now - delivery.created_at))
        return Outcome(delivery.seq, delivery.tenant_id, delivery.endpoint_id, now, kind, status,
                       round(latency * 1000, 2), error, snippet, next_status, due_at,
                       disable_endpoint=kind == "gone", delivery_id=delivery.id,
                       event_type=delivery.event_type, attempts=delivery.attempts + 1)

    async def send_now(self, seq: int) -> Outcome:
        """One attempt of a delivery claimed by the caller (test sends), recorded like any other."""
        await self.endpoints.refresh()
        delivery = await self._claimed(await self.store.claimed_row(seq), self.clock.time())
        outcome = await self.attempt(delivery)
        await self._record([outcome])
        return outcome

    # --- recording results --------------------------------------------------------------------

    async def _writer(self) -> None:
        while not self._stopping.is_set():
            await self.results_ready.wait()
            self.results_ready.clear()
            await asyncio.sleep(RECORD_DELAY)
            try:
                await self._flush()
            except Exception:
                log.exception("could not record webhook attempts; retrying in 1 s")
                await asyncio.sleep(1)
                self.results_ready.set()

    async def _flush(self) -> None:
        while self.results:
            batch, self.results = self.results[:500], self.results[500:]
            try:
                await self._record(batch)
            except BaseException:
                self.results = batch + self.results
                raise

    async def _record(self, batch: list[Outcome]) -> None:
        await self.store.record(batch)
        soon = self.clock.time() + TICK
        if any(o.due_at is not None and o.due_at < soon for o in batch):
            self.wakeup.set()  # a retry due before the loop's next tick
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
                self.metrics.dispatch_errors.labels("follow_up").inc()
                log.exception("webhook delivery %s: could not disable its endpoint or report that it gave up",
                              o.delivery_id)

    async def disable(self, endpoint_id: str, reason: str) -> bool:
        """Disable an endpoint and tell the bus; False if it was not enabled."""
        endpoint = await self.store.disable_endpoint(endpoint_id, reason, self.clock.time())
        self.endpoints.forget(endpoint_id)
        if endpoint is None:
            return False
        log.warning("webhook endpoint %s of tenant %s disabled: %s", endpoint_id, endpoint["_tenant_id"], reason)
        if self.on_disabled is not None:
            await self.on_disabled(endpoint, reason)
        return True

    # --- jobs ------------------------------------------------------------------------------------

    async def disable_failing(self) -> int:
        """Disable endpoints whose deliveries have all failed for ``disable_after``."""
        cutoff = self.clock.time() - self.settings["disable_after"]
        reason = f"every delivery failed for more than {self.settings['disable_after'] / 86400:g} days"
        count = 0
        for endpoint_id in await self.store.endpoints_failing_since(cutoff):
            count += await self.disable(endpoint_id, reason)
        return count

    async def prune(self) -> int:
        removed = await self.store.prune(self.clock.time() - self.settings["retention"])
        if removed:
            log.info("webhooks retention: pruned %d old attempts and finished deliveries", removed)
        return removed

    async def update_metrics(self) -> None:
        now = self.clock.time()
        due, oldest = await self.store.due_stats(now)
        self.metrics.due.set(due)
        self.metrics.oldest_due_age.set(max(0.0, now - oldest) if oldest is not None else 0)
        self.metrics.disabled.set(await self.store.count_disabled())


def _log_failed_attempt(o: Outcome) -> None:
    """One line per failed attempt, for operators: never the payload, the URL or a secret."""
    what = o.error or f"HTTP {o.status_code}"
    if o.next_status == "pending":
        log.info("webhook attempt %d of delivery %s (tenant %s, endpoint %s) failed: %s; next attempt at %s",
                 o.attempts, o.delivery_id, o.tenant_id, o.endpoint_id, what, iso(o.due_at))
    else:
        log.warning("webhook delivery %s (tenant %s, endpoint %s) gave up after %d attempt(s): %s",
                    o.delivery_id, o.tenant_id, o.endpoint_id, o.attempts, what)


async def _read_head(resp: aiohttp.ClientResponse, limit: int) -> str:
    """The first ``limit`` bytes of a response body, as text."""
    chunks, size = [], 0
    while size < limit and not resp.content.at_eof():
        chunk = await resp.content.read(limit - size)
        if not chunk:
            break
        chunks.append(chunk)
        size += len(chunk)
    return b"".join(chunks).decode("utf-8", "replace")
