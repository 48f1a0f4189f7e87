"""The delivery loop: claim due deliveries and run one task per attempt.

One task claims due rows (oldest due first, in bounded batches) within the
free slots (``slots.py``) and starts one task per delivery, which makes the
call (``attempt.py``), decides what follows (``outcome.py``) and hands the
outcome to the batched writer (``recorder.py``). The event consumer hands
new deliveries over directly when they may go at once (:meth:`reserve`,
:meth:`launch`): no claim query, no wait for the loop.

Several nodes on one PostgreSQL database: each claim records its node, and
:meth:`Dispatcher.take_over` (every ``TAKEOVER_INTERVAL`` seconds there, a
node-scoped job) puts back to pending what nodes that are gone had in flight,
so another node sends it within seconds of a ``kill -9``, never what a live
node is sending. On SQLite the pass at startup is all it takes (one process
owns the file).
"""

from __future__ import annotations

import asyncio
import itertools
import logging

from . import outcome as policy
from .attempt import Sender
from .endpoints import EndpointCache
from .metrics import WebhookMetrics
from .ordering import Ordering, unqueued
from .recorder import Recorder
from .records import Claimed, Outcome
from .slots import Slots
from .store import Store

log = logging.getLogger("tierd.webhooks")

#: Rows claimed per query at most (a backlog is drained in slices this big).
CLAIM_BATCH = 500
#: Longest sleep of the loop when nothing wakes it (retries coming due).
TICK = 1.0
#: A claimed delivery that could not be prepared (its endpoint's row is
#: unusable, a bug) is tried again this much later, not in a tight loop.
BROKEN_RETRY = 60.0
#: PostgreSQL: how often (seconds) a node looks for deliveries in flight on a
#: node that is gone, and how old (seconds) such a claim must be first (a node
#: that has just connected may not be in the sessions read yet).
TAKEOVER_INTERVAL = 2.0
TAKEOVER_GRACE = 3.0


class Dispatcher:
    def __init__(
        self,
        daemon,
        store: Store,
        endpoints: EndpointCache,
        metrics: WebhookMetrics,
        settings: dict,
        follow_ups: policy.FollowUps,
    ):
        self.daemon = daemon
        self.store = store
        self.endpoints = endpoints
        self.clock = daemon.clock
        self.metrics = metrics
        self.follow_ups = follow_ups
        self.wakeup = asyncio.Event()
        self.slots = Slots(endpoints, on_freed=self.wakeup.set)
        self.sender = Sender(settings)
        self.recorder = Recorder(store, self._recorded)
        self.ordering = Ordering(store, endpoints, self.clock, lambda *event: daemon.bus.publish(*event))
        self._claim_ids = itertools.count(1)
        #: The time the last claim took due rows up to.
        self._claimed_until = 0.0
        self.tasks: set[asyncio.Task] = set()
        self._stopping = asyncio.Event()
        self.configure(settings)

    def configure(self, settings: dict) -> None:
        """Apply (re)loaded settings; requests in flight keep theirs."""
        self.settings = settings
        self.slots.configure(settings["max_in_flight"], settings["endpoint_max_in_flight"])
        self.sender.configure(settings)

    # --- lifecycle ---------------------------------------------------------------------

    async def start(self) -> None:
        # This node's own name (a restart) and nodes that are gone (on SQLite:
        # every claim, the previous run's); never another live node's claims.
        now = self.clock.time()
        for taken in await self.store.take_back(own=True, now=now, grace=TAKEOVER_GRACE):
            if taken.node == self.store.db.node or taken.node is None or self.store.db.dialect == "sqlite":
                log.info("%d webhook deliveries were in flight when tierd stopped; sending them again", taken.rows)
            else:
                self._took_over(taken.rows, taken.node)
        self.sender.open()
        self.daemon.spawn(self._loop(), name="webhooks.dispatch")
        self.daemon.spawn(self.recorder.run(self._stopping), name="webhooks.results")

    async def stop(self, grace: float = 5.0) -> None:
        """Stop claiming, let requests in flight finish (up to ``grace``), record them."""
        self._stopping.set()
        self.wakeup.set()
        if self.tasks:
            _, pending = await asyncio.wait(list(self.tasks), timeout=grace)
            for task in pending:
                task.cancel()  # their rows stay in flight and are sent again at the next start
            await asyncio.gather(*pending, return_exceptions=True)
        await self.recorder.flush()
        self.recorder.ready.set()  # the writer task sees _stopping and ends
        await self.sender.close()

    def wake(self) -> None:
        """New work may be due (called by the consumer and the API)."""
        self.wakeup.set()

    async def take_over(self) -> int:
        """Put back to pending the deliveries in flight on nodes that are gone
        (PostgreSQL's node job, every ``TAKEOVER_INTERVAL``); how many."""
        total = 0
        for taken in await self.store.take_back(now=self.clock.time(), grace=TAKEOVER_GRACE):
            self._took_over(taken.rows, taken.node)
            total += taken.rows
        if total:
            self.wakeup.set()
        return total

    def _took_over(self, count: int, node: str | None) -> None:
        log.info(
            "took over %d webhook deliveries in flight on node %s, which is gone; sending them again",
            count,
            node or "(unknown)",
        )

    # --- claiming ------------------------------------------------------------------------

    async def _loop(self) -> None:
        while not self._stopping.is_set():
            self.wakeup.clear()
            if self.slots.free <= 0:
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
            except TimeoutError:
                pass

    async def _idle_time(self) -> float:
        """How long the loop may sleep when nobody wakes it."""
        if self.slots.waiting_for_tokens():
            return 0.05
        next_due = await self.store.next_due()
        if next_due is None or next_due <= self._claimed_until:
            # Nothing pending, or due rows the last claim could not take (their
            # endpoint is at its cap or disabled): a finished request or new
            # work wakes us.
            return TICK
        # Due later, or come due since the claim looked (then: claim again at once).
        return min(TICK, max(0.005, next_due - self.clock.time()))

    async def fill(self) -> int:
        """Claim as many due deliveries as there are free slots and start them."""
        free = self.slots.free
        if free <= 0:
            return 0
        await self.endpoints.refresh()
        now = self._claimed_until = self.clock.time()
        limit, room = min(free, CLAIM_BATCH), self.slots.room()
        rows = await self.store.claim(now, limit, self.slots.cap, room, next(self._claim_ids))
        taken: dict[str, int] = {}
        for row in rows:
            taken[row["endpoint_id"]] = taken.get(row["endpoint_id"], 0) + 1
        self.slots.claimed(room, taken, limit, len(rows))
        if self.endpoints.fifo and len(rows) < free:
            rows += await self.ordering.claim(now, self.slots, free - len(rows), next(self._claim_ids))
        unsendable = []
        for row in rows:
            try:
                delivery = await self._claimed(row, now)
            except Exception as exc:  # only this delivery waits; the rest of the claim goes out
                unsendable.append((row, exc))
                continue
            self.slots.take(delivery.endpoint_id)
            self.launch(delivery)
        for row, error in unsendable:
            await self._postpone(row, now, error)
        return len(rows)

    async def _postpone(self, row, now: float, exc: Exception) -> None:
        """A claimed row that cannot be sent now goes back to pending, due later."""
        self.metrics.dispatch_errors.labels("delivery").inc()
        log.error(
            "webhook delivery %s of tenant %s to endpoint %s cannot be sent (%s: %s); trying again in %g s",
            row["id"],
            row["tenant_id"],
            row["endpoint_id"],
            type(exc).__name__,
            exc,
            BROKEN_RETRY,
        )
        await self.store.postpone(row["seq"], now + BROKEN_RETRY)

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
        return Claimed(
            row["seq"],
            row["id"],
            row["tenant_id"],
            row["endpoint_id"],
            row["event_type"],
            row["payload"],
            row["attempts"],
            row["created_at"],
            endpoint.url,
            endpoint.headers,
            endpoint.secrets(now),
            transform=endpoint.transform,
            fifo=endpoint.fifo,
        )

    # --- the fast path: new deliveries handed over by the consumer ------------------------

    def reserve(self, endpoint_ids: list[str]) -> list[bool]:
        """Take a slot now for each new delivery that may be sent at once.

        The consumer stores those rows already claimed and hands them to
        :meth:`launch`; the rest are stored pending and go through the claim,
        oldest first (see :meth:`Slots.reserve`). Each slot taken here goes
        with a delivery to :meth:`launch` (freed when its attempt ends) or
        back through :meth:`release`.
        """
        if self._stopping.is_set():
            return [False] * len(endpoint_ids)
        return self.slots.reserve(endpoint_ids)

    def release(self, endpoint_id: str) -> None:
        """Give back a slot taken by :meth:`reserve` and not used."""
        self.slots.free_one(endpoint_id)

    def launch(self, delivery: Claimed) -> None:
        """Send a claimed delivery whose slot is taken."""
        if self._stopping.is_set():
            # Claimed while we stop (the claim or the insert was under way):
            # its row stays in flight and is sent again at the next start.
            self.slots.free_one(delivery.endpoint_id)
            return
        task = asyncio.get_running_loop().create_task(self._run(delivery))
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    # --- one delivery's attempt ------------------------------------------------------------

    async def _run(self, delivery: Claimed) -> None:
        try:
            outcome = await self.attempt(delivery)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a bug must not kill the loop nor lose the row
            log.exception("webhook delivery %s crashed", delivery.id)
            outcome = self._counted(
                delivery, policy.crashed(delivery, self.clock.time(), exc, self.settings["retry_schedule"])
            )
        finally:
            self.slots.free_one(delivery.endpoint_id)
        self.recorder.add(outcome, urgent=delivery.fifo)

    async def attempt(self, delivery: Claimed) -> Outcome:
        """Send ``delivery`` once and say what happened (not yet stored)."""
        now = self.clock.time()
        response = await self.sender.send(delivery, now)
        self.metrics.latency.observe(response.latency)
        return self._counted(delivery, policy.decide(delivery, now, response, self.settings["retry_schedule"]))

    def _counted(self, delivery: Claimed, outcome: Outcome) -> Outcome:
        self.metrics.count_attempt(outcome.outcome)
        if delivery.attempts == 0:
            # Event accepted -> first attempt: the latency the issue cares about.
            self.metrics.first_attempt_delay.observe(max(0.0, outcome.attempted_at - delivery.created_at))
        return outcome

    async def send_now(self, seq: int) -> Outcome:
        """One attempt of a delivery claimed by the caller (test sends), recorded like any other."""
        await self.endpoints.refresh()
        delivery = await self._claimed(await self.store.claimed_row(seq), self.clock.time())
        outcome = await self.attempt(delivery)
        if delivery.fifo:
            outcome = unqueued(outcome)
        await self.recorder.record_now([outcome])
        return outcome

    async def _recorded(self, batch: list[Outcome]) -> None:
        soon = self.clock.time() + TICK
        if self.store.pg or any(o.due_at is not None and o.due_at < soon for o in batch):
            # A retry due before the loop's next tick; on PostgreSQL, also rows
            # out of flight in the database now: an endpoint's cap counts them
            # there (across the nodes), so its slots freed here before they were
            # written let no claim through until now.
            self.wakeup.set()
        await self.follow_ups.handle(batch)
        if self.endpoints.fifo:
            await self._ordered(batch)

    async def _ordered(self, batch: list[Outcome]) -> None:
        """Fifo endpoints in ``batch``: claim their next head now, and say which are blocked."""
        if any(o.endpoint_id in self.endpoints.fifo for o in batch):
            self.wakeup.set()  # the head's result is written: the next one may go
        try:
            await self.ordering.recorded(batch)
        except Exception:
            self.metrics.dispatch_errors.labels("follow_up").inc()
            log.exception("webhooks: could not record whether fifo endpoints are blocked")
