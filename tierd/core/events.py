"""The event bus: a durable log in SQLite with a stored cursor per consumer.

``publish`` answers only after the event row is committed. Concurrent
publishers are committed together in one transaction (group commit): one
fsync for many events is what makes durable intake fast. Each consumer reads
the log from its own cursor and moves the cursor only after its handler
returned, so it sees every event at least once, in order, across crashes.
A consumer's loop ends only when the daemon stops: whatever fails (its
handler, reading the log, storing its cursor on a full disk) is logged,
counted and retried after a growing pause.
"""

from __future__ import annotations

import asyncio
import builtins
import collections
import contextlib
import dataclasses
import json
import logging
import math
import re
import sqlite3
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any, cast

from tierd.core.clock import Clock, iso
from tierd.core.ids import new_ids
from tierd.core.storage import (
    Database,
    Lookups,
    Params,
    bulk_rows,
    is_decode_error,
    is_storage_full,
    value_list,
)

if TYPE_CHECKING:
    from tierd.core.pg import PgDatabase

log = logging.getLogger("tierd.events")

#: A dotted lowercase event type (use with ``fullmatch``).
TYPE_RE = re.compile(r"[a-z0-9_-]+(?:\.[a-z0-9_-]+)*\Z")

#: At most this many (tenant, type) index walks are merged for one page of
#: a type pattern (see EventBus.list); SQLite allows 500 arms of a UNION.
MERGE_ARMS = 32

_COLUMNS = ("seq", "id", "tenant_id", "type", "data", "idempotency_key", "created_at")
_TEXT_COLUMNS = ("id", "tenant_id", "type", "data", "idempotency_key")
#: The event columns as stored (``{columns}`` in the queries below), and the
#: same with text read as bytes, for rows holding text that is not UTF-8.
_INSERT_EVENTS = "INSERT INTO events(seq, id, tenant_id, type, data, idempotency_key, created_at) "
#: An event row as intake inserts it: column -> PostgreSQL type (see bulk_rows).
_EVENT_ROW = {
    "seq": "bigint",
    "id": "text",
    "tenant_id": "text",
    "type": "text",
    "data": "text",
    "idempotency_key": "text",
    "created_at": "float8",
}
_EVENT_COLUMNS = ", ".join(f"e.{c}" for c in _COLUMNS)
_EVENT_COLUMNS_RAW = ", ".join(f"CAST(e.{c} AS BLOB) AS {c}" if c in _TEXT_COLUMNS else f"e.{c}" for c in _COLUMNS)


@dataclasses.dataclass(frozen=True)
class Event:
    seq: int
    id: str
    tenant: str
    type: str
    data: dict
    created_at: str

    def to_json(self) -> dict:
        return {
            "id": self.id,
            "seq": self.seq,
            "tenant": self.tenant,
            "type": self.type,
            "data": self.data,
            "created_at": self.created_at,
        }


@dataclasses.dataclass
class Consumer:
    """A durable subscriber to the bus (see ``tierd_event_consumers``)."""

    name: str
    handle: Callable[[list[Event]], Awaitable[None]]
    types: list[str] = dataclasses.field(default_factory=lambda: ["*"])
    batch_size: int = 200


def type_matches(pattern: str, event_type: str) -> bool:
    """``*`` matches all; ``invoice.*`` matches ``invoice.paid`` and deeper; else exact."""
    if pattern == "*":
        return True
    if pattern.endswith(".*"):
        return event_type.startswith(pattern[:-1])
    return pattern == event_type


def _numbered(
    batch: list[tuple[tuple, asyncio.Future]], known: dict[tuple[str, str], Event], first_seq: int, now: float
) -> tuple[list[tuple[Event, bool]], list[tuple]]:
    """Each publisher's answer, (event, new?), and the rows to insert: new events
    numbered from ``first_seq``; a key seen before (``known``, or earlier in this
    batch) answers its first event."""
    created_at = iso(now)
    results: list[tuple[Event, bool]] = []
    rows: list[tuple] = []
    ids = new_ids("evt_", len(batch))
    for (tenant, type_, data, key, text), _ in batch:
        if key is not None and (tenant, key) in known:
            results.append((known[(tenant, key)], False))
            continue
        event = Event(first_seq + len(rows), ids[len(rows)], tenant, type_, data, created_at)
        if key is not None:
            known[(tenant, key)] = event  # a repeat within this batch gets this one
        rows.append((event.seq, event.id, tenant, type_, text, key, now))
        results.append((event, True))
    return results, rows


def _row_to_event(row: sqlite3.Row | dict[str, Any]) -> Event:
    return Event(row["seq"], row["id"], row["tenant_id"], row["type"], json.loads(row["data"]), iso(row["created_at"]))


def _mend(row: sqlite3.Row) -> dict:
    """A row read with its text as bytes, decoded with U+FFFD for what is not UTF-8."""
    return {c: row[c].decode("utf-8", "replace") if isinstance(row[c], bytes) else row[c] for c in _COLUMNS}


@dataclasses.dataclass
class ConsumerProgress:
    """How a running consumer is doing (for /readyz and /metrics)."""

    #: The last event handled (None until its stored cursor is read).
    cursor: int | None = None
    #: time.monotonic() when it last handled a batch or found nothing to do.
    ok_at: float = dataclasses.field(default_factory=time.monotonic)
    #: Failures since it started (its handler's, or of the log and cursor).
    errors: int = 0


class EventBus:
    TAIL_SIZE = 20_000
    #: A consumer that keeps up stores its cursor at most this often (seconds);
    #: after a crash it sees at most this much again (handlers are idempotent).
    CURSOR_INTERVAL = 1.0
    #: Pauses before a failed consumer tries again: doubling, up to the last.
    RETRY_FIRST, RETRY_MAX = 0.5, 30.0
    #: PostgreSQL: a consumer at the known end of the log reads it anyway after
    #: this many seconds, so a NOTIFY lost with a dropped connection delays
    #: another node's events by about this much, not for ever.
    END_CHECK = 1.0

    def __init__(
        self,
        db: Database,
        clock: Clock,
        on_publish: Callable[[int], object] | None = None,
        on_consumer_error: Callable[[str], object] | None = None,
    ) -> None:
        self.db = db
        self.clock = clock
        #: Called with the number of new events after each commit (metrics).
        self.on_publish = on_publish
        #: Called with a consumer's name each time it fails (metrics).
        self.on_consumer_error = on_consumer_error
        #: Running consumers by name (on this node).
        self.progress: dict[str, ConsumerProgress] = {}
        #: Every consumer's name, run here or (PostgreSQL) by another node.
        self.declared: set[str] = set()
        self._mended_logged = False
        self._pending: list[tuple[tuple, asyncio.Future]] = []
        self._flushing = False
        self._wakeups: list[asyncio.Event] = []
        # The newest events this process committed, by seq: consumers that keep
        # up read them from here instead of the database. Only this process
        # writes the log, so the tail has no gaps.
        self._tail: collections.OrderedDict[int, Event] = collections.OrderedDict()
        self._next_seq: int | None = None
        # Where nodes share the log (PostgreSQL), the end of it as this node
        # knows it: the last seq of its own batches and of the other nodes'
        # (their NOTIFY's payload), and when a read of the log last looked
        # (time.monotonic()). A consumer at that end does not ask the database
        # again within END_CHECK seconds of that read.
        self._known_end = 0
        self._end_checked_at = -self.END_CHECK

    # --- publishing -------------------------------------------------------------

    async def publish(self, tenant: str, type: str, data: dict, key: str | None = None) -> Event:
        """Store an event durably and return it."""
        event, _created = await self.publish_ex(tenant, type, data, key)
        return event

    async def publish_ex(self, tenant: str, type: str, data: dict, key: str | None = None) -> tuple[Event, bool]:
        """Like ``publish``; also says whether the event is new (False: same key seen).

        ValueError for what could not be stored and read back: a type that is
        not dotted lowercase, a key that is not Unicode text, data that is not
        JSON (NaN, Infinity). Each publisher gets its own error; the others
        committed with it are not affected.
        """
        if not TYPE_RE.fullmatch(type):
            raise ValueError(f"event type {type!r} is not dotted lowercase")
        if key is not None and not key.isascii():
            key.encode("utf-8")  # UnicodeEncodeError (a ValueError) for a lone surrogate
        # ensure_ascii (the default): the stored text is ASCII whatever the strings.
        text = json.dumps(data, separators=(",", ":"), allow_nan=False)
        future = asyncio.get_running_loop().create_future()
        self._pending.append(((tenant, type, data, key, text), future))
        if not self._flushing:
            self._flushing = True
            asyncio.get_running_loop().create_task(self._flush())
        result: tuple[Event, bool] = await future
        return result

    async def _flush(self) -> None:
        try:
            # This task starts at the loop's next turn, after every request of
            # this turn queued its event; later batches gather while the
            # previous one is written. No extra yield: it would cost every
            # request a turn of the loop.
            while self._pending:
                batch, self._pending = self._pending, []
                try:
                    results = await self._insert(batch)
                except Exception as exc:  # the whole batch failed: nothing was stored
                    for _, fut in batch:
                        if not fut.done():
                            fut.set_exception(exc)
                    continue
                for (_, fut), result in zip(batch, results, strict=True):
                    if not fut.done():
                        fut.set_result(result)
                self._wake()
        finally:
            self._flushing = False

    async def _insert(self, batch: list[tuple[tuple, asyncio.Future]]) -> list[tuple[Event, bool]]:
        """The whole batch in one INSERT statement: one trip to the database
        thread, atomic on its own."""
        if self.db.dialect != "sqlite":
            return await self._insert_shared(batch)
        now = self.clock.time()
        if self._next_seq is None:
            # This process is the only writer of the log: it numbers events
            # itself instead of asking SQLite after each insert.
            row = await self.db.lookups.fetchone("SELECT COALESCE(MAX(seq), 0) AS m FROM events")
            assert row is not None  # an aggregate always answers a row
            self._next_seq = row["m"] + 1
        # Keys seen before. Batches are inserted one at a time (``_flush``), so
        # every earlier one is committed and visible to the reader.
        known = await self._known_keys({(args[0], args[3]) for args, _ in batch if args[3] is not None})
        results, rows = _numbered(batch, known, self._next_seq, now)
        if rows:
            try:
                source, params = bulk_rows(self.db.dialect, _EVENT_ROW, rows)
                await self.db.execute(_INSERT_EVENTS + source, params)
            except BaseException:
                self._next_seq = None  # not stored (or unknown): read the numbering again next time
                raise
        self._next_seq += len(rows)
        return self._stored(results)

    async def _insert_shared(self, batch: list[tuple[tuple, asyncio.Future]]) -> list[tuple[Event, bool]]:
        """The batch stored in a log several nodes write (PostgreSQL).

        One node at a time numbers and stores a batch, holding the log's lock
        until its commit. So events commit in ``seq`` order across the cluster
        (a consumer reading ``seq > cursor`` never skips one that commits later
        under a lower number), and a key is checked against every node's events.
        The commit notifies the other nodes, whose consumers wake at once.

        Why one call: the time the lock is held bounds the cluster's intake,
        and each round trip made while holding it counts. So the whole batch
        is one call of ``tierd_publish`` (core's PostgreSQL migration 4) in
        autocommit: the lock, the numbering read after it, the key lookup, the
        insert and the NOTIFY run in the server, and the lock is held for one
        round trip instead of six (the lock, MAX(seq), the keys, INSERT,
        NOTIFY, COMMIT). The answers are ``_numbered``'s: new events numbered
        in batch order, a key seen before answers its stored event, a key
        repeated in the batch the batch's first.
        """
        now = self.clock.time()
        created_at = iso(now)
        tenants, types, texts, keys = [], [], [], []
        for (tenant, type_, _data, key, text), _ in batch:
            tenants.append(tenant)
            types.append(type_)
            texts.append(text)
            keys.append(key)
        db = cast("PgDatabase", self.db)
        # None for a batch without keys: the function skips their lookup.
        keyed = keys if any(key is not None for key in keys) else None
        rows = await db.intake_fetchall(
            "SELECT o_seq, o_id, o_new, o_tenant, o_type, o_data, o_created_at"
            " FROM tierd_publish(?::text[], ?::text[], ?::text[], ?::text[], ?::text[], ?::float8) ORDER BY o_pos",
            (tenants, types, texts, keyed, new_ids("evt_", len(batch)), now),
        )
        results: list[tuple[Event, bool]] = []
        # Events by seq: a repeat of a key answers the same Event as its first.
        events: dict[int, Event] = {}
        for ((tenant, type_, data, _key, _text), _), row in zip(batch, rows, strict=True):
            seq = row["o_seq"]
            if row["o_new"]:
                events[seq] = Event(seq, row["o_id"], tenant, type_, data, created_at)
                results.append((events[seq], True))
                continue
            if seq not in events:  # stored by an earlier batch
                events[seq] = Event(
                    seq,
                    row["o_id"],
                    row["o_tenant"],
                    row["o_type"],
                    json.loads(row["o_data"]),
                    iso(row["o_created_at"]),
                )
            results.append((events[seq], False))
        return self._stored(results)

    def _stored(self, results: list[tuple[Event, bool]]) -> list[tuple[Event, bool]]:
        """After a batch's commit: its new events into the tail, counted."""
        new = [event for event, created in results if created]
        for event in new:
            self._tail[event.seq] = event
        if new:
            self._known_end = max(self._known_end, new[-1].seq)
        while len(self._tail) > self.TAIL_SIZE:
            self._tail.popitem(last=False)
        if self.on_publish is not None:
            self.on_publish(len(new))
        return results

    async def listen(self) -> None:
        """Wake this node's consumers when another node stores events (PostgreSQL)."""
        await self.db.listen("tierd_events", self._notified)

    def _notified(self, payload: str) -> None:
        """A batch committed (on any node, this one's too): its last seq is the
        payload (``tierd_publish``)."""
        with contextlib.suppress(ValueError):
            self._known_end = max(self._known_end, int(payload))
        self._wake()

    async def _known_keys(self, keys: set[tuple[str, str]]) -> dict[tuple[str, str], Event]:
        """The stored events of these (tenant, idempotency key) pairs."""
        if not keys:
            return {}
        # Point lookups on intake's path: on the connection no long query uses.
        source, params = bulk_rows(self.db.dialect, {"tenant": "text", "key": "text"}, sorted(keys))
        rows = await self._rows(
            f"SELECT {{columns}} FROM ({source}) AS k JOIN events e"
            " ON e.tenant_id=k.tenant AND e.idempotency_key=k.key",
            params,
            reader=self.db.lookups,
        )
        return {(r["tenant_id"], r["idempotency_key"]): _row_to_event(r) for r in rows}

    async def _rows(
        self, sql: str, params: Params, reader: Database | Lookups | None = None
    ) -> Sequence[sqlite3.Row | dict[str, Any]]:
        """Event rows of ``sql`` (``{columns}`` for its column list, ``e`` the events table).

        Rows stored before intake refused lone surrogates hold text that is
        not UTF-8, and every read of them fails: they are read again with
        that text as bytes and decoded with U+FFFD in place of what is not
        UTF-8, so that no consumer or listing is stuck on them for ever.
        """
        reader = reader or self.db
        try:
            return await reader.fetchall(sql.format(columns=_EVENT_COLUMNS), params)
        except Exception as exc:
            if not is_decode_error(exc):
                raise
        rows = [_mend(r) for r in await reader.fetchall(sql.format(columns=_EVENT_COLUMNS_RAW), params)]
        if not self._mended_logged:
            self._mended_logged = True
            log.warning(
                "events %s hold text that is not valid UTF-8 (stored by an older tierd); read with"
                " U+FFFD in its place (logged once)",
                ", ".join(str(r["seq"]) for r in rows[:10]),
            )
        return rows

    def _wake(self) -> None:
        for wakeup in self._wakeups:
            wakeup.set()

    # --- reading ----------------------------------------------------------------

    async def get(self, tenant: str | None, event_id: str) -> Event | None:
        sql, params = "SELECT {columns} FROM events e WHERE id=?", [event_id]
        if tenant is not None:
            sql += " AND tenant_id=?"
            params.append(tenant)
        rows = await self._rows(sql, params)
        return _row_to_event(rows[0]) if rows else None

    async def list(
        self, tenant: str | None, after_seq: int, limit: int, type_pattern: str | None = None
    ) -> list[Event]:
        """Events after ``after_seq``, oldest first; ``type_pattern`` as in :func:`type_matches`.

        A page reads its own rows, whatever the size of the log: it walks an
        index in seq order (the primary key, a tenant's events, or a tenant's
        events of one type) and stops at ``limit``. A pattern such as
        ``webhook.endpoint.*`` is the few types it matches (found with one
        index seek each), merged in seq order by SQLite; only when it matches
        very many does the page walk the tenant's log and skip the others.
        """
        where = "e.seq>?"
        params: builtins.list[object] = [after_seq]
        if type_pattern and type_pattern != "*":
            arms = await self._type_arms(tenant, type_pattern)
            if arms is not None:
                if not arms:
                    return []
                sql = " UNION ALL ".join(
                    "SELECT {columns} FROM events e WHERE e.tenant_id=? AND e.type=? AND e.seq>?" for _ in arms
                )
                merged = [v for t, ty in arms for v in (t, ty, after_seq)]
                rows = await self._rows(sql + " ORDER BY seq LIMIT ?", (*merged, limit))
                return [_row_to_event(r) for r in rows]
            # Too many to merge: they are then much of the log, and a walk in
            # seq order that skips the rest soon fills a page.
            if type_pattern.endswith(".*"):
                where += " AND substr(e.type, 1, ?)=?"
                params += [len(type_pattern) - 1, type_pattern[:-1]]
            else:
                where += " AND e.type=?"
                params.append(type_pattern)
        if tenant is not None:
            where += " AND e.tenant_id=?"
            params.append(tenant)
        sql = f"SELECT {{columns}} FROM events e WHERE {where} ORDER BY e.seq LIMIT ?"
        rows = await self._rows(sql, (*params, limit))
        return [_row_to_event(r) for r in rows]

    async def _type_arms(self, tenant: str | None, pattern: str) -> builtins.list[tuple[str, str]] | None:
        """The (tenant, type) pairs of the log that ``pattern`` selects, or None
        when there are more than :data:`MERGE_ARMS`."""
        if tenant is not None:
            tenants = [tenant]
        else:
            tenants = [r["id"] for r in await self.db.fetchall("SELECT id FROM tenants LIMIT ?", (MERGE_ARMS + 1,))]
        arms = []
        for t in tenants:
            if pattern.endswith(".*"):
                # The types of the pattern sort between the prefix and the
                # prefix with its final dot moved one up ('/'): a range.
                prefix = pattern[:-1]
                arms += [(t, ty) for ty in await self._types_between(t, prefix, prefix[:-1] + "/")]
            else:
                arms.append((t, pattern))
            if len(arms) > MERGE_ARMS:
                return None
        return arms

    async def _types_between(self, tenant: str, low: str, high: str) -> builtins.list[str]:
        """The tenant's event types in [low, high): one index seek per type
        (a "loose index scan"), not a read of their events; at most
        MERGE_ARMS + 1 of them."""
        rows = await self.db.fetchall(
            # A counter, not LIMIT, bounds the recursion: PostgreSQL has no LIMIT in a recursive term.
            "WITH RECURSIVE t(type, n) AS ("
            " SELECT (SELECT MIN(type) FROM events WHERE tenant_id=:tenant AND type>=:low AND type<:high), 1"
            " UNION ALL"
            " SELECT (SELECT MIN(type) FROM events WHERE tenant_id=:tenant AND type>t.type AND type<:high), t.n + 1"
            " FROM t WHERE t.type IS NOT NULL AND t.n < :cap"
            ") SELECT type FROM t WHERE type IS NOT NULL",
            {"tenant": tenant, "low": low, "high": high, "cap": MERGE_ARMS + 1},
        )
        return [r["type"] for r in rows]

    async def span(
        self, tenant: str, since: float, until: float | None = None, page: int = 1000
    ) -> AsyncIterator[builtins.list[Event]]:
        """Yield the tenant's events created in ``[since, until)`` (unix
        seconds), oldest first, in lists of at most ``page``.

        Each page continues from the last one's (time, seq) along the
        (tenant, created_at) index: it costs its own rows, however long the
        span or the log (a filter on seq would sort the whole span per page).
        """
        after = (since, -1)
        while True:
            rows = await self._rows(
                "SELECT {columns} FROM events e WHERE tenant_id=? AND (created_at, seq)>(?, ?) AND created_at<?"
                " ORDER BY created_at, seq LIMIT ?",
                (tenant, *after, math.inf if until is None else until, page),
            )
            if not rows:
                return
            yield [_row_to_event(r) for r in rows]
            after = (rows[-1]["created_at"], rows[-1]["seq"])

    # --- consuming ---------------------------------------------------------------

    async def run_consumer(self, consumer: Consumer, stopping: asyncio.Event) -> None:
        """Feed ``consumer`` from its cursor until ``stopping`` is set, on one
        node of the cluster at a time (where nodes share a PostgreSQL database:
        the others wait, and one takes over from the stored cursor when the
        node running it stops or dies)."""
        self.declared.add(consumer.name)
        backoff = self.RETRY_FIRST
        while not stopping.is_set():
            try:
                async with self.db.exclusive(f"tierd.consumer.{consumer.name}", until=stopping) as held:
                    if held:
                        await self._run_consumer(consumer, stopping)
                    return
            except asyncio.CancelledError:
                raise
            except Exception:  # the lock's connection (a database restarting): try again, as for any failure
                log.exception("consumer %s could not take its lock; trying again in %gs", consumer.name, backoff)
                if self.on_consumer_error is not None:
                    self.on_consumer_error(consumer.name)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stopping.wait(), backoff)
                backoff = min(backoff * 2, self.RETRY_MAX)

    async def _run_consumer(self, consumer: Consumer, stopping: asyncio.Event) -> None:
        """Feed ``consumer`` from its cursor until ``stopping`` is set.

        Any exception but cancellation, wherever it happens (reading the stored
        cursor or the log, the handler, storing the cursor), is logged, counted
        and retried after a pause that doubles up to RETRY_MAX; the loop then
        goes on from the last event handled.
        """
        wakeup = asyncio.Event()
        self._wakeups.append(wakeup)
        progress = self.progress[consumer.name] = ConsumerProgress()
        # One task for the consumer's whole life turns a stop into a wakeup, so
        # an idle wait is on ``wakeup`` alone (wait_any costs two tasks a time,
        # and a busy consumer is idle after nearly every batch).
        stop_watch = asyncio.get_running_loop().create_task(_set_when(stopping, wakeup))
        backoff = self.RETRY_FIRST
        cursor = saved = None
        saved_at = time.monotonic()
        events: list[Event] = []
        try:
            while not stopping.is_set():
                events = []
                try:
                    if cursor is None:
                        cursor = saved = progress.cursor = await self._load_cursor(consumer.name)
                    wakeup.clear()
                    events = await self._read_after(cursor, consumer.batch_size)
                    if not events:
                        # Caught up. The cursor is stored at most once per interval
                        # here too: a consumer that catches up after every batch
                        # would otherwise write it after every batch.
                        progress.ok_at = time.monotonic()
                        unsaved_for = progress.ok_at - saved_at
                        if saved != cursor and unsaved_for >= self.CURSOR_INTERVAL:
                            await self._save_cursor(consumer.name, cursor)
                            saved, saved_at = cursor, time.monotonic()
                        backoff = self.RETRY_FIRST
                        timeout = 1.0 if saved == cursor else self.CURSOR_INTERVAL - unsaved_for
                        await _wait(wakeup, timeout)
                        continue
                    wanted = [e for e in events if any(type_matches(p, e.type) for p in consumer.types)]
                    if wanted:
                        await consumer.handle(wanted)
                    cursor = progress.cursor = events[-1].seq
                    progress.ok_at = time.monotonic()
                    events = []  # handled: a failure from here on is not theirs
                    backoff = self.RETRY_FIRST
                    if progress.ok_at - saved_at >= self.CURSOR_INTERVAL:
                        await self._save_cursor(consumer.name, cursor)
                        saved, saved_at = cursor, time.monotonic()
                except asyncio.CancelledError:
                    raise
                except Exception as exc:
                    progress.errors += 1
                    if self.on_consumer_error is not None:
                        self.on_consumer_error(consumer.name)
                    where = f" on events {events[0].seq}..{events[-1].seq}" if events else ""
                    log.exception("consumer %s failed%s; retrying in %.1fs", consumer.name, where, backoff)
                    # Out of space, intake refuses every event until space is back: the
                    # next event stored is the sign of it, so retry then rather than up
                    # to RETRY_MAX later (any other failure waits its whole backoff).
                    await wait_any(*((wakeup,) if is_storage_full(exc) else ()), stopping, timeout=backoff)
                    backoff = min(backoff * 2, self.RETRY_MAX)
            if cursor is not None and saved != cursor:
                try:
                    await self._save_cursor(consumer.name, cursor)
                except Exception:  # the events after the stored cursor are handled again at the next start
                    log.exception("consumer %s could not store its cursor at %d on stopping", consumer.name, cursor)
        finally:
            stop_watch.cancel()
            self._wakeups.remove(wakeup)
            del self.progress[consumer.name]

    async def _load_cursor(self, name: str) -> int:
        row = await self.db.fetchone("SELECT last_seq FROM consumer_cursors WHERE name=?", (name,))
        return row["last_seq"] if row else 0

    async def _read_after(self, cursor: int, limit: int) -> builtins.list[Event]:
        if cursor + 1 == self._next_seq:
            return []  # at the end of the log (only this process writes it; None where nodes share it)
        if cursor + 1 in self._tail:
            events: builtins.list[Event] = []
            seq = cursor + 1
            while seq in self._tail and len(events) < limit:
                events.append(self._tail[seq])
                seq += 1
            return events
        shared = self.db.dialect != "sqlite"
        if shared and cursor >= self._known_end and time.monotonic() - self._end_checked_at < self.END_CHECK:
            # Nodes share the log: nothing after the end this node knows of, and
            # a read reached the end a moment ago (each batch wakes every consumer
            # twice, at its commit and at its NOTIFY: without this, each would
            # read the log for nothing once a batch).
            return []
        rows = await self._rows("SELECT {columns} FROM events e WHERE seq>? ORDER BY seq LIMIT ?", (cursor, limit))
        events = [_row_to_event(r) for r in rows]
        if shared and len(events) < limit:  # the end of the log (a full batch may have more after it)
            self._end_checked_at = time.monotonic()
            if events:
                self._known_end = max(self._known_end, events[-1].seq)
        return events

    async def _save_cursor(self, name: str, cursor: int) -> None:
        await self.db.execute(
            "INSERT INTO consumer_cursors(name, last_seq, updated_at) VALUES (?,?,?)"
            " ON CONFLICT(name) DO UPDATE SET last_seq=excluded.last_seq, updated_at=excluded.updated_at",
            (name, cursor, time.time()),
        )

    async def prune(self, older_than: float) -> int:
        """Delete events created before ``older_than`` that every running
        consumer has passed; returns how many.

        An event a consumer has not handled yet is kept whatever its age (a
        plugin that was stopped catches up first). Deleted in slices that
        leave the writer to intake (``Database.delete_in_slices``). Idempotency
        keys go with their events: a key re-sent after the retention makes a
        new event.
        """
        if not self.declared:
            return 0
        # Every consumer's stored cursor, whichever node runs it.
        names, param = value_list(self.db.dialect, "text", sorted(self.declared))
        rows = await self.db.fetchall(f"SELECT name, last_seq FROM consumer_cursors WHERE name IN {names}", (param,))
        if len(rows) < len(self.declared):
            return 0  # a consumer that has not stored a cursor yet has handled nothing
        # The oldest events by seq (a walk of the primary key, bounded whatever
        # the table's size); those old enough go. Events are numbered as they
        # are stored, so their times rise with seq: a slice with a young one
        # deletes fewer than it took, and that ends the prune.
        return await self.db.delete_in_slices(
            "DELETE FROM events WHERE created_at<:cutoff AND seq IN"
            " (SELECT seq FROM events WHERE seq<=:handled ORDER BY seq LIMIT :slice)",
            {"cutoff": older_than, "handled": min(r["last_seq"] for r in rows)},
        )

    async def lag(self) -> dict[str, int]:
        """Events not yet consumed, per consumer (for /metrics, /readyz and `tierd db
        status`): by a running consumer's own cursor, else by its stored one."""
        top_row = await self.db.fetchone("SELECT COALESCE(MAX(seq), 0) AS m FROM events")
        assert top_row is not None  # an aggregate always answers a row
        top = top_row["m"]
        rows = await self.db.fetchall("SELECT name, last_seq FROM consumer_cursors")
        lag = {r["name"]: top - r["last_seq"] for r in rows}
        lag.update({name: top - p.cursor for name, p in self.progress.items() if p.cursor is not None})
        return lag

    def stalled(self, lag: dict[str, int], after: float) -> dict[str, float]:
        """The running consumers that have events to handle (by ``lag``) and have
        not advanced for ``after`` seconds: name -> seconds since they last did."""
        now = time.monotonic()
        return {
            name: now - p.ok_at for name, p in self.progress.items() if lag.get(name, 1) > 0 and now - p.ok_at >= after
        }


async def wait_any(*events: asyncio.Event, timeout: float) -> None:
    """Wait until any of ``events`` is set, or ``timeout`` seconds passed."""
    waiters = [asyncio.ensure_future(e.wait()) for e in events]
    try:
        await asyncio.wait(waiters, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for w in waiters:
            w.cancel()


async def _set_when(source: asyncio.Event, target: asyncio.Event) -> None:
    await source.wait()
    target.set()


async def _wait(event: asyncio.Event, timeout: float) -> None:
    """Wait until ``event`` is set, or set it after ``timeout`` seconds."""
    timer = asyncio.get_running_loop().call_later(timeout, event.set)
    try:
        await event.wait()
    finally:
        timer.cancel()
