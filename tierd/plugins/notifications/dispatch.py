"""The dispatcher: flush due groups into digests, send due notifications.

One task per daemon. It is woken by an ``asyncio.Event`` (new rows) and by
its own timer (the next retry or group flush, at most ``poll_interval``
away); the database says what is due, so after a crash or ``kill -9``
everything pending is found again. Time comes from ``daemon.clock``; tests
call :meth:`Dispatcher.tick` after moving a fake clock instead of sleeping.

Delivery is at least once: a notification is marked after its send, so a
crash in between sends it again on restart (receivers get a stable id).

Several nodes on one PostgreSQL database: each due row is claimed in the
database before it is sent (``store.claim_due``: ``FOR UPDATE SKIP LOCKED``,
``claimed_by`` this node, due again only after :data:`CLAIM_LEASE`), so one
node sends it; its outcome clears the claim. Every :data:`TAKEOVER_EVERY`
seconds a node puts back the rows claimed by nodes that are gone (their
connections closed: ``Database.gone``), so a ``kill -9`` delays those rows by
seconds, not by the lease; the lease stays as the backstop. At start a node
takes back the claims under its own name and never another live node's.
The at-least-once window is then one send: from the moment a node hands a
message to its channel to the commit of its outcome (a node killed in
between has it sent again by another). On SQLite (one node) nothing is
claimed in the database: the rows in flight are kept in memory, as before.
"""

from __future__ import annotations

import asyncio
import collections
import json
import logging
import time

import prometheus_client

from tierd.core.events import wait_any
from tierd.core.ids import new_id
from tierd.core.registry import Attachment, Message, SendResult
from tierd.core.retry import next_delay

from . import grouping, store
from .intake import throttle_reason, throttled
from .templates import context_for, render

log = logging.getLogger("tierd.notifications")

#: How long a row sent inline (test, manual send) is hidden from the dispatcher.
INLINE_LEASE = 120.0
#: The dispatcher's pause after a failed tick (a database that refuses writes),
#: doubled up to RETRY_MAX while it keeps failing.
RETRY_FIRST, RETRY_MAX = 0.5, 5.0
#: Upper bound of one channel send; a hung third-party channel must not block a batch forever.
SEND_TIMEOUT = 300.0
#: How long a claimed row is hidden from other nodes (PostgreSQL): longer than a
#: send may take, so a live node's row is never sent twice; a dead node's rows are
#: taken over sooner (see TAKEOVER_EVERY).
CLAIM_LEASE = SEND_TIMEOUT + 60.0
#: How often a node looks for rows claimed by nodes that are gone (PostgreSQL).
TAKEOVER_EVERY = 2.0
#: A claim this young is never taken over (a node whose connections are still
#: being opened, or whose session pg_stat_activity does not show yet).
TAKEOVER_GRACE = 3.0
_SEVERITY_RANK = {"info": 0, "warning": 1, "critical": 2}
#: Events a digest carries (in its row, to channels and templates); a larger
#: burst is still one digest, whose ``count`` says how many it stands for.
DIGEST_EVENTS = 200


class Metrics:
    """Counters per channel, on the daemon's registry."""

    def __init__(self, registry):
        def counter(name, doc):
            return prometheus_client.Counter(name, doc, ["channel"], registry=registry)

        self.sent = counter("tierd_notifications_sent", "Notifications delivered")
        self.failed = counter("tierd_notifications_failed", "Notifications failed permanently")
        self.retried = counter("tierd_notifications_retried", "Send attempts that will be retried")
        self.muted = counter("tierd_notifications_muted", "Notifications muted by a silence or time interval")
        self.throttled = counter("tierd_notifications_throttled", "Notifications dropped by a route throttle")


def message_of(row, attachments: list[Attachment] | None = None) -> Message:
    return Message(
        subject=row["subject"],
        body=row["body"],
        html=row["html"],
        severity=row["severity"],
        events=json.loads(row["events"]),
        id=row["id"],
        attachments=attachments or [],
    )


def _has_attachments(row) -> bool:
    try:
        return bool(row["attachments"])
    except (IndexError, KeyError):
        return False


class AttachmentGone(Exception):
    """A file a message was to carry cannot be read (deleted, moved)."""


def read_attachments(row, stored: dict[int, bytes] | None = None) -> list[Attachment]:
    """The files of a row's ``attachments`` (see :meth:`NotificationsService.send`), read
    when the message is sent (in a worker thread: they may be large). An item with
    ``stored`` has its bytes in the database (``stored``: position -> bytes)."""
    try:
        raw = row["attachments"]
    except (IndexError, KeyError):
        return []
    out = []
    for position, item in enumerate(json.loads(raw) if raw else []):
        if item.get("stored"):
            content = (stored or {}).get(position)
            if content is None:
                raise AttachmentGone(f"attachment {item.get('filename')!r} is not in the database")
            out.append(Attachment(item["filename"], content, item.get("media_type") or "application/octet-stream"))
            continue
        try:
            with open(item["path"], "rb") as f:
                content = f.read()
        except OSError as exc:
            raise AttachmentGone(f"attachment {item.get('filename')!r} cannot be read: {exc.strerror or exc}") from None
        out.append(Attachment(item["filename"], content, item.get("media_type") or "application/octet-stream"))
    return out


class Dispatcher:
    def __init__(
        self,
        db,
        clock,
        metrics: Metrics,
        compiled_of,
        max_in_flight: int = 50,
        poll_interval: float = 1.0,
        max_per_channel: int = 10,
    ):
        self.db = db
        self.clock = clock
        self.metrics = metrics
        self._compiled_of = compiled_of  # a callable: the compiled config changes on reload
        self.max_in_flight = max_in_flight
        # One slow or failing channel must not take every slot from the others.
        self.max_per_channel = max_per_channel
        self.poll_interval = poll_interval
        self._wake = asyncio.Event()
        self._inflight: dict[str, str] = {}  # id -> channel, being sent or not yet recorded
        self._tasks: set[asyncio.Task] = set()
        self._finished: list[dict] = []  # outcomes waiting to be written
        self._recording = asyncio.Lock()
        self._next_cleanup = 0.0
        #: Several nodes may share the database (PostgreSQL): claim rows in it.
        self.claims = db.dialect == "postgresql"
        self.node: str = db.node
        self._next_takeover = 0.0

    @property
    def compiled(self):
        return self._compiled_of()

    def wake(self) -> None:
        self._wake.set()

    async def run(self, stopping: asyncio.Event) -> None:
        """The daemon's loop: never waits for a slow send before starting others."""
        if self.claims:
            try:
                taken = await store.take_back(self.db, self.node, self.clock.time())
                if taken:
                    log.info("took back %d notification(s) claimed under this node's name before", taken)
            except Exception:
                log.exception("notification dispatcher: taking back this node's claims failed")
        backoff = RETRY_FIRST
        try:
            while not stopping.is_set():
                self._wake.clear()
                try:
                    busy = await self.tick(wait=False)
                    backoff = RETRY_FIRST
                except asyncio.CancelledError:
                    raise
                except Exception:
                    # A failing database (a full disk) must not turn the loop into
                    # a busy one: pause, doubling, as event consumers do.
                    log.exception("notification dispatcher tick failed; retrying in %gs", backoff)
                    # New rows (intake wrote them: the database takes writes again)
                    # end the pause early, as a new event does for event consumers.
                    await wait_any(self._wake, stopping, timeout=backoff)
                    backoff = min(backoff * 2, RETRY_MAX)
                    continue
                if busy and self._free_slots():
                    continue  # more may be due right away
                await wait_any(self._wake, stopping, timeout=await self._idle_timeout())
        finally:
            # Shutdown: let sends in flight finish and record them (the daemon
            # cancels us after its grace period; unrecorded rows stay pending).
            await self.drain()

    async def _idle_timeout(self) -> float:
        """Sleep until the next due row (by the daemon clock), at most poll_interval."""
        # Rows in flight are pending and due, but their task wakes us when done.
        due = [
            t
            for t in (
                await store.next_attempt(self.db, exclude=self._inflight, exclude_channels=self._saturated()),
                await store.next_group_flush(self.db),
            )
            if t
        ]
        if not due:
            return self.poll_interval
        return max(0.0, min(self.poll_interval, min(due) - self.clock.time()))

    async def tick(self, wait: bool = True) -> int:
        """Flush due groups, record finished sends, start due ones; returns work done.

        ``wait=True`` (tests, benchmarks) also waits until every send started
        has finished and is recorded; the daemon's loop passes False.
        """
        now = self.clock.time()
        flushed = await self.flush_groups(now)
        if now >= self._next_cleanup:  # a write: not on every tick
            await store.delete_expired_groups(self.db, now)
            self._next_cleanup = now + 60
        recorded = await self.record_finished()
        if self.claims and time.monotonic() >= self._next_takeover:
            self._next_takeover = time.monotonic() + TAKEOVER_EVERY
            await self.take_over(now)
        started = await self.start_due(now)
        if wait:
            recorded += await self.drain()
        return flushed + recorded + started

    # --- groups ------------------------------------------------------------------------

    async def flush_groups(self, now: float) -> int:
        flushed = 0
        for group in await store.due_groups(self.db, now):
            flushed += await self._flush(group, now)
        return flushed

    async def _flush(self, due, now: float) -> bool:
        """Make ``due``'s digest (or find nothing to send); False if it was no longer due."""
        compiled = self.compiled
        node = compiled.tree.by_id.get(due["route"])
        settings = node.settings if node is not None else None
        repeat = settings["repeat_interval"] if settings else 4 * 3600.0
        async with self.db.transaction() as tx:
            # Read again, locked (PostgreSQL; SQLite's writer is alone anyway):
            # between due_groups() and here intake may have added events, or
            # another node flushed it. Its count of flushes names the digest.
            group = await store.lock_due_group(tx, due["id"], now, self.db.dialect)
            if group is None:
                return False
            items = await store.group_items(tx, group["id"])
            if not items:
                await store.set_group_times(tx, group["id"], grouping.on_flush(now, repeat), flushed=False)
                return True
            events = [json.loads(i["events"])[0] for i in items[:DIGEST_EVENTS]]
            labels = json.loads(group["labels"])
            severity = max((i["severity"] for i in items), key=lambda s: _SEVERITY_RANK.get(s, 0))
            digest = {
                "id": new_id(store.ID_PREFIX),
                "tenant_id": group["tenant_id"],
                "kind": "digest" if len(items) > 1 else "event",
                # The group's row id is never reused (AUTOINCREMENT): a group closed
                # and opened again must not collide with its former digests.
                "dedup_key": f"{group['group_key']}#{group['id']}.{group['flushes'] + 1}",
                "event_id": events[0]["id"],
                "event_type": events[0]["type"] if len({e["type"] for e in events}) == 1 else "*",
                "route": group["route"],
                "channel": group["channel"],
                "events": events,
                "created_at": now,
                "event_count": len(items),
                "severity": severity,
            }
            if settings and await throttled(tx, settings, group["route"], group["channel"], now, self.db.dialect):
                digest.update(status="throttled", reason=throttle_reason(settings))
                self.metrics.throttled.labels(group["channel"]).inc()
            else:
                ctx = context_for(events, labels, group["route"], group["channel"], count=len(items))
                rendered = render(compiled.templates(settings, group["channel"]), ctx)
                digest.update(
                    status="pending",
                    next_attempt_at=now,
                    reason=rendered.error,
                    subject=rendered.subject,
                    body=rendered.body,
                    html=rendered.html,
                )
            await store.insert_notification(tx, digest)
            await store.mark_digested(tx, [i["id"] for i in items], digest["id"], now)
            await store.set_group_times(tx, group["id"], grouping.on_flush(now, repeat), flushed=True)
        log.info("group %s: %d event(s) -> %s %s", group["group_key"], len(items), digest["kind"], digest["id"])
        return True

    # --- sending -------------------------------------------------------------------------

    def _free_slots(self) -> int:
        return self.max_in_flight - len(self._inflight)

    def _saturated(self) -> list[str]:
        busy = collections.Counter(self._inflight.values())
        return [channel for channel, n in busy.items() if n >= self.max_per_channel]

    async def take_over(self, now: float) -> int:
        """Make due again the rows claimed by nodes that are gone; how many."""
        taken = await store.take_over(self.db, now, TAKEOVER_GRACE)
        for node, n in sorted(taken.items()):
            log.info("took over %d notification(s) claimed by node %s, which is gone", n, node)
        if taken:
            self._wake.set()
        return sum(taken.values())

    async def start_due(self, now: float) -> int:
        """Start a task for each due row while there are free slots."""
        free = self._free_slots()
        if free <= 0:
            return 0
        busy = collections.Counter(self._inflight.values())

        def pick(due) -> list:
            rows = []
            for row in due:
                if row["id"] in self._inflight or busy[row["channel"]] >= self.max_per_channel:
                    continue
                busy[row["channel"]] += 1
                rows.append(row)
                if len(rows) == free:
                    break
            return rows

        if self.claims:
            # This node's rows in flight are claimed (not due): ``free`` rows are enough.
            rows = await store.claim_due(self.db, now, free, self._saturated(), pick, self.node, now + CLAIM_LEASE)
        else:
            rows = pick(await store.due_notifications(self.db, now, free + len(self._inflight), self._saturated()))
        for row in rows:
            # A row stays in _inflight until its outcome is written, so that a
            # later tick cannot pick it up (and send it twice) in between.
            self._inflight[row["id"]] = row["channel"]
            task = asyncio.get_running_loop().create_task(self._send(row), name=f"notify:{row['id']}")
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        return len(rows)

    async def _send(self, row) -> None:
        try:
            outcome = await self.attempt(row)
            # Not `self._finished.append(await ...)`: that would bind the list
            # before the await, and record_finished() swaps it meanwhile.
            self._finished.append(outcome)
        finally:
            self._wake.set()

    async def record_finished(self) -> int:
        """Write the outcomes of finished sends in one transaction.

        One write at a time: a caller (``drain``, a test's ``tick``) that comes
        while the loop is writing waits for that write, so once it returns every
        outcome finished before it is in the database.
        """
        async with self._recording:
            done, self._finished = self._finished, []
            if not done:
                return 0
            try:
                await self._write(done)
                written = done
            except Exception:
                # Not written (a full disk): keep the outcomes, and their rows out of
                # the next claims, and write them later. Sending again what was sent
                # would spam the receivers for as long as the disk is full; if the
                # process ends first, the rows are still pending and are sent again
                # after a restart (at least once). A batch may not fit where a
                # single outcome does (each rewrites its notification's row, body
                # included, on a nearly full disk): then one at a time.
                written, kept = [], []
                for o in done if len(done) > 1 else []:
                    try:
                        await self._write([o])
                        written.append(o)
                    except Exception:
                        kept.append(o)
                self._finished[:0] = kept if written else done
                if not written:
                    raise
            for o in written:
                self._inflight.pop(o["id"], None)
        self._count(written)
        return len(written)

    async def _write(self, outcomes: list[dict]) -> None:
        async with self.db.transaction() as tx:
            await store.record_attempts(tx, outcomes, self.node if self.claims else None)

    async def drain(self) -> int:
        """Wait for every send in flight, then record them all."""
        if self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)
        return await self.record_finished()

    async def send_inline(self, row) -> dict:
        """Send one row now (test and manual sends; inserted with a lease) and record it."""
        self._inflight[row["id"]] = row["channel"]
        try:
            outcome = await self.attempt(row)
            async with self.db.transaction() as tx:
                await store.record_attempts(tx, [outcome], self.node if self.claims else None)
        finally:
            self._inflight.pop(row["id"], None)
        self._count([outcome])
        return outcome

    async def attempt(self, row) -> dict:
        """Send ``row`` once; return the attempt record and the row's next state."""
        compiled = self.compiled
        channel = compiled.channels.get(row["channel"])
        started = time.monotonic()
        if channel is None:
            result = SendResult.failed(f"channel {row['channel']!r} is not configured (any more)")
        else:
            try:
                attachments = await self._attachments(row) if _has_attachments(row) else []
                result = await asyncio.wait_for(channel.send(message_of(row, attachments)), SEND_TIMEOUT)
                if not isinstance(result, SendResult):
                    raise TypeError(f"send() returned {type(result).__name__}, not SendResult")
            except AttachmentGone as exc:
                result = SendResult.failed(str(exc))
            except TimeoutError:
                result = SendResult.retry(f"channel send did not finish within {SEND_TIMEOUT:g}s")
            except Exception as exc:  # a bug in a channel: keep the row, retry, tell the log
                log.exception("channel %s raised", row["channel"])
                result = SendResult.retry(f"channel raised {type(exc).__name__}: {exc}")
        now = self.clock.time()
        attempt = row["attempts"] + 1
        out = {
            "id": row["id"],
            "channel": row["channel"],
            "attempt": attempt,
            "at": now,
            "outcome": result.outcome,
            "detail": result.detail[:2000],
            "duration_ms": round((time.monotonic() - started) * 1000, 1),
            "next_attempt_at": None,
            "last_error": "",
            "sent_at": None,
        }
        if result.outcome == "delivered":
            out.update(status="delivered", sent_at=now)
        elif (
            result.outcome == "retry"
            and (
                delay := next_delay(
                    compiled.retry_schedule,
                    attempt,
                    retry_after=result.retry_after,
                    stretch=None,
                    cap=compiled.retry["max_backoff"],
                )
            )
            is not None
        ):
            # A channel's Retry-After is honoured up to max_backoff (never sooner than planned).
            out.update(status="pending", last_error=result.detail, next_attempt_at=now + delay)
        else:
            detail = (
                result.detail if result.outcome == "failed" else f"gave up after {attempt} attempts: {result.detail}"
            )
            out.update(status="failed", last_error=detail)
        return out

    async def _attachments(self, row) -> list[Attachment]:
        stored = {}
        if any(item.get("stored") for item in json.loads(row["attachments"])):
            stored = await store.files_of(self.db, row["id"])
        return await asyncio.to_thread(read_attachments, row, stored)

    def _count(self, outcomes: list[dict]) -> None:
        for o in outcomes:
            counter = {"delivered": self.metrics.sent, "pending": self.metrics.retried, "failed": self.metrics.failed}[
                o["status"]
            ]
            counter.labels(o["channel"]).inc()
            if o["status"] == "failed":
                log.warning("notification %s to %s failed: %s", o["id"], o["channel"], o["last_error"])
