"""Embedded storage: one SQLite file in WAL mode, with numbered migrations.

One writer connection serialised by an asyncio lock (SQLite has one writer
anyway), a small pool of reader connections (WAL lets readers run side by
side and never wait for a write), and one more reader kept for the hot path's
point lookups (a token, an idempotency key): a long query never holds up
intake. A read may be given a time budget (:meth:`Database.budget`, set per
API request): past it, SQLite is interrupted and :class:`QueryTimeout` raised.
SQL lives in each plugin's ``store.py``; this module only runs it.

Deleting much at once (retention) goes through :meth:`Database.delete_in_slices`:
small statements sized to a time budget, with pauses that leave the writer to
intake, then freed pages given back to the file system (incremental
auto-vacuum, on for every database created by this version; ``tierd db
compact`` turns it on for older ones).

Failures leave both connections usable: a read that fails half-way lets go of
its statement (and so of its snapshot), a transaction whose COMMIT fails is
rolled back, and a write refused for lack of disk space is remembered
(:attr:`Database.full`) so that the API answers 503 ``storage_full`` and
``/readyz`` says why until writes succeed again.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import errno
import fcntl
import json
import logging
import os
import socket
import sqlite3
import time
from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Mapping, Sequence
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

import aiosqlite

#: Parameters of an SQL statement: positional (?) or named (:name).
Params = Sequence[Any] | Mapping[str, Any]

log = logging.getLogger("tierd.storage")

T = TypeVar("T")

CORE_MIGRATIONS = [
    # 1: tenants, tokens and the event log with its consumer cursors.
    """
    CREATE TABLE tenants (
        id TEXT PRIMARY KEY,
        name TEXT NOT NULL,
        created_at REAL NOT NULL
    );
    CREATE TABLE tokens (
        id TEXT PRIMARY KEY,
        tenant_id TEXT NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
        token_hash TEXT NOT NULL UNIQUE,
        description TEXT NOT NULL DEFAULT '',
        created_at REAL NOT NULL,
        revoked_at REAL
    );
    CREATE TABLE events (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        id TEXT NOT NULL UNIQUE,
        tenant_id TEXT NOT NULL,
        type TEXT NOT NULL,
        data TEXT NOT NULL,
        idempotency_key TEXT,
        created_at REAL NOT NULL
    );
    CREATE UNIQUE INDEX events_idempotency ON events(tenant_id, idempotency_key)
        WHERE idempotency_key IS NOT NULL;
    CREATE INDEX events_tenant_time ON events(tenant_id, created_at);
    CREATE TABLE consumer_cursors (
        name TEXT PRIMARY KEY,
        last_seq INTEGER NOT NULL,
        updated_at REAL NOT NULL
    );
    """,
    # 2: a tenant's events in log order, and of one type in log order: a page
    # of GET /v1/events reads its own rows along one of these (or merges a few
    # of the second for a pattern such as webhook.endpoint.*), at any size.
    """
    CREATE INDEX events_tenant_seq ON events(tenant_id, seq);
    CREATE INDEX events_tenant_type ON events(tenant_id, type, seq);
    """,
    # 3: the web console's sessions (see tierd.core.ui.sessions).
    """
    CREATE TABLE ui_sessions (
        id_hash TEXT PRIMARY KEY,
        kind TEXT NOT NULL,
        subject TEXT NOT NULL,
        csrf TEXT NOT NULL,
        label TEXT NOT NULL DEFAULT '',
        created_at REAL NOT NULL,
        expires_at REAL NOT NULL
    );
    CREATE INDEX ui_sessions_expiry ON ui_sessions(expires_at);
    CREATE INDEX ui_sessions_subject ON ui_sessions(kind, subject);
    """,
    # 4: nothing on SQLite. PostgreSQL's 4 is intake's function (several nodes
    # share its log); this one keeps both dialects at the same version, as
    # migrations_for and ``tierd db copy`` require.
    "SELECT 1;",
]


#: The same tables for PostgreSQL, version for version (see :func:`migrations_for`).
CORE_MIGRATIONS_POSTGRESQL = [
    """
    CREATE TABLE tenants (
        id TEXT PRIMARY KEY,
        name TEXT NOT NULL,
        created_at DOUBLE PRECISION NOT NULL
    );
    CREATE TABLE tokens (
        id TEXT PRIMARY KEY,
        tenant_id TEXT NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
        token_hash TEXT NOT NULL UNIQUE,
        description TEXT NOT NULL DEFAULT '',
        created_at DOUBLE PRECISION NOT NULL,
        revoked_at DOUBLE PRECISION
    );
    CREATE TABLE events (
        seq BIGINT PRIMARY KEY,
        id TEXT NOT NULL UNIQUE,
        tenant_id TEXT NOT NULL,
        -- Byte order, as SQLite's: a pattern's prefix is a range of the index
        -- whatever the database's locale.
        type TEXT COLLATE "C" NOT NULL,
        data TEXT NOT NULL,
        idempotency_key TEXT,
        created_at DOUBLE PRECISION NOT NULL
    );
    CREATE UNIQUE INDEX events_idempotency ON events(tenant_id, idempotency_key)
        WHERE idempotency_key IS NOT NULL;
    CREATE INDEX events_tenant_time ON events(tenant_id, created_at);
    CREATE TABLE consumer_cursors (
        name TEXT PRIMARY KEY,
        last_seq BIGINT NOT NULL,
        updated_at DOUBLE PRECISION NOT NULL
    );
    """,
    """
    CREATE INDEX events_tenant_seq ON events(tenant_id, seq);
    CREATE INDEX events_tenant_type ON events(tenant_id, type, seq);
    """,
    """
    CREATE TABLE ui_sessions (
        id_hash TEXT PRIMARY KEY,
        kind TEXT NOT NULL,
        subject TEXT NOT NULL,
        csrf TEXT NOT NULL,
        label TEXT NOT NULL DEFAULT '',
        created_at DOUBLE PRECISION NOT NULL,
        expires_at DOUBLE PRECISION NOT NULL
    );
    CREATE INDEX ui_sessions_expiry ON ui_sessions(expires_at);
    CREATE INDEX ui_sessions_subject ON ui_sessions(kind, subject);
    """,
    # 4: intake's batch in one call (tierd.core.events.EventBus._insert_shared).
    # Nodes store batches one at a time under the log's lock, so the round
    # trips made while it is held bound the cluster's intake: here the lock,
    # the numbering, the key lookup, the insert and the NOTIFY are one call,
    # run in autocommit (the lock goes with that call's commit). Each statement
    # of a VOLATILE PL/pgSQL function takes a new snapshot (READ COMMITTED), so
    # the statements after the lock see every batch committed before it took
    # the lock; one plain SQL statement would read MAX(seq) and the keys in the
    # snapshot it took before waiting for the lock, and number events twice.
    # Per input position (o_pos, from 1), in order: the event's seq and id,
    # whether it is new, and for an event stored by an earlier batch its
    # stored columns (NULL for the batch's own events, which the caller has).
    # A key seen before answers its stored event; a key repeated in the batch
    # answers the batch's first. New events are numbered top+1.. in batch order
    # and take the ids given in that order (the n-th new event the n-th id).
    # p_keys NULL (not an array): the batch has no key, every event is new.
    # A key is looked up with the unique index (a LATERAL seek per keyed event),
    # never by a join the planner might make a scan of the whole log.
    """
    CREATE FUNCTION tierd_publish(
        p_tenants TEXT[], p_types TEXT[], p_data TEXT[], p_keys TEXT[], p_ids TEXT[], p_now DOUBLE PRECISION
    ) RETURNS TABLE (
        o_pos BIGINT, o_seq BIGINT, o_id TEXT, o_new BOOLEAN,
        o_tenant TEXT, o_type TEXT, o_data TEXT, o_created_at DOUBLE PRECISION
    ) LANGUAGE plpgsql VOLATILE AS $fn$
    DECLARE
        v_top BIGINT;
        v_count BIGINT;
    BEGIN
        PERFORM pg_advisory_xact_lock(hashtextextended('tierd.events', 0));
        SELECT COALESCE(MAX(e.seq), 0) INTO v_top FROM events e;
        IF p_keys IS NULL THEN
            INSERT INTO events(seq, id, tenant_id, type, data, idempotency_key, created_at)
            SELECT v_top + b.pos, p_ids[b.pos], b.tenant, b.type, b.data, NULL, p_now
            FROM unnest(p_tenants, p_types, p_data) WITH ORDINALITY AS b(tenant, type, data, pos);
            GET DIAGNOSTICS v_count = ROW_COUNT;
            RETURN QUERY
            SELECT s.pos, v_top + s.pos, p_ids[s.pos], TRUE, NULL::TEXT, NULL::TEXT, NULL::TEXT, NULL::DOUBLE PRECISION
            FROM generate_series(1::BIGINT, v_count) AS s(pos);
        ELSE
            RETURN QUERY
            WITH batch AS (
                SELECT b.pos, b.tenant, b.type, b.data, b.key,
                    CASE WHEN b.key IS NULL THEN b.pos
                         ELSE MIN(b.pos) OVER (PARTITION BY b.tenant, b.key) END AS first_pos
                FROM unnest(p_tenants, p_types, p_data, p_keys) WITH ORDINALITY AS b(tenant, type, data, key, pos)
            ), known AS (
                SELECT b.pos, e.seq, e.id, e.tenant_id, e.type, e.data, e.created_at
                FROM batch b CROSS JOIN LATERAL (
                    SELECT s.seq, s.id, s.tenant_id, s.type, s.data, s.created_at FROM events s
                    WHERE s.tenant_id = b.tenant AND s.idempotency_key = b.key LIMIT 1
                ) e
                WHERE b.key IS NOT NULL
            ), fresh AS (
                SELECT b.pos, b.tenant, b.type, b.data, b.key, ROW_NUMBER() OVER (ORDER BY b.pos) AS n
                FROM batch b
                WHERE b.first_pos = b.pos AND NOT EXISTS (SELECT 1 FROM known k WHERE k.pos = b.pos)
            ), inserted AS (
                INSERT INTO events(seq, id, tenant_id, type, data, idempotency_key, created_at)
                SELECT v_top + f.n, p_ids[f.n], f.tenant, f.type, f.data, f.key, p_now FROM fresh f
                RETURNING 1
            )
            SELECT b.pos, COALESCE(k.seq, v_top + f.n), COALESCE(k.id, p_ids[f.n]),
                k.pos IS NULL AND f.pos = b.pos, k.tenant_id, k.type, k.data, k.created_at
            FROM batch b
            LEFT JOIN known k ON k.pos = b.pos
            LEFT JOIN fresh f ON f.pos = b.first_pos
            ORDER BY b.pos;
            SELECT MAX(e.seq) - v_top INTO v_count FROM events e;
        END IF;
        IF v_count > 0 THEN
            PERFORM pg_notify('tierd_events', (v_top + v_count)::TEXT);
        END IF;
    END
    $fn$;
    """,
]
#: Core's migrations as ``tierd_migrations`` declares a plugin's (per dialect).
CORE = {"sqlite": CORE_MIGRATIONS, "postgresql": CORE_MIGRATIONS_POSTGRESQL}


def safe_url(url: str) -> str:
    """A database URL fit for a terminal or a log: its password masked."""
    import urllib.parse

    parts = urllib.parse.urlsplit(url)
    if parts.password is None:
        return url
    return urllib.parse.urlunsplit(parts._replace(netloc=parts.netloc.replace(f":{parts.password}@", ":***@")))


def describe_storage(storage: Mapping[str, Any]) -> str:
    """Where the configured storage is, for logs: ``PostgreSQL at URL`` or the SQLite file."""
    return f"PostgreSQL at {safe_url(storage['url'])}" if storage.get("url") else str(storage["path"])


def node_name() -> str:
    """This process's name among the nodes of one database (``host:pid``).

    A claim (a delivery in flight, a notification being sent) records it, so
    that a node can tell a claim of a node that is gone (to take over) from
    one of a node still at work (to leave alone): see ``Database.gone``.
    """
    return f"{socket.gethostname()}:{os.getpid()}"[:NODE_NAME_MAX]


#: A node's name is its connections' application_name on PostgreSQL, after
#: "tierd " (63 bytes at most there): names are cut to fit, on both backends.
NODE_NAME_MAX = 57


def sql_string(value: str) -> str:
    """``value`` as an SQL string literal (for a fragment that takes no parameters)."""
    return "'" + value.replace("'", "''") + "'"


async def open_database(storage: Mapping[str, Any]) -> Any:
    """The configured backend, opened: PostgreSQL when ``storage.url`` names
    one, else the SQLite file at ``storage.path``."""
    url = storage.get("url")
    if url:
        from tierd.core.pg import PgDatabase

        return await PgDatabase(url, readers=storage["readers"]).open()
    return await Database(storage["path"], busy_timeout=storage["busy_timeout"], readers=storage["readers"]).open()


#: Reader connections besides the one for point lookups (``storage.readers``).
DEFAULT_READERS = 3
#: Each slice of :meth:`Database.delete_in_slices` aims at this many seconds ...
SLICE_BUDGET = 0.02
#: ... and is followed by a pause of this many times its duration: a prune
#: takes at most a fifth of the writer's time, whatever it has to delete.
SLICE_PAUSE = 4.0
#: Seconds between checkpoints of the WAL (made off the writer).
CHECKPOINT_EVERY = 0.5
#: Pages given back to the file system per incremental-vacuum step.
VACUUM_STEP = 256

#: (loop.time() by which reads must be done, the budget in seconds it came
#: from, the task it binds), or None for no limit. Set with :meth:`Database.budget`.
_deadline: contextvars.ContextVar[tuple[float, float, asyncio.Task | None] | None] = contextvars.ContextVar(
    "tierd_read_deadline", default=None
)


class QueryTimeout(Exception):
    """A read ran past its time budget and was interrupted."""

    def __init__(self, budget: float) -> None:
        super().__init__(f"the query ran past its time budget of {budget:g} s and was stopped")
        self.budget = budget


#: A write refused for lack of space makes the database "full" for this long,
#: unless a later write succeeds first (an idle daemon is not full forever).
FULL_FOR = 30.0
#: Writes that succeed for this long after a failed one end a logged "full".
RECOVERED_AFTER = 5.0


def is_storage_full(exc: BaseException) -> bool:
    """Whether ``exc`` says there is no space left for the database (or a file):
    SQLite's SQLITE_FULL, PostgreSQL's SQLSTATE 53100 (disk_full), or the OS's."""
    if getattr(exc, "sqlstate", None) == "53100":  # asyncpg's DiskFullError, without importing it
        return True
    if isinstance(exc, sqlite3.Error):
        # The primary code (the low byte) of e.g. "database or disk is full".
        return (getattr(exc, "sqlite_errorcode", None) or 0) & 0xFF == sqlite3.SQLITE_FULL
    return isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT)


def is_decode_error(exc: BaseException) -> bool:
    """Whether ``exc`` is a read of text that is not UTF-8 (stored before tierd
    refused lone surrogates at intake)."""
    return isinstance(exc, sqlite3.OperationalError) and str(exc).startswith("Could not decode to UTF-8")


class DatabaseInUse(OSError):
    """Another process owns the database (see :func:`claim`)."""


def claim(path: str | Path) -> int | None:
    """Take the lock that says "this process owns the database": the daemon
    holds it while it runs, ``tierd db compact`` while it rewrites the file.
    Raises :class:`DatabaseInUse` if another process holds it; returns the
    lock's file descriptor for :func:`release` (None for ``:memory:``).

    A file of its own beside the database (``PATH.lock``): closing any other
    descriptor of the database file would drop SQLite's own locks on it.
    """
    if str(path) == ":memory:":
        return None
    lock = Path(f"{path}.lock")
    lock.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(lock, os.O_CREAT | os.O_RDWR, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise DatabaseInUse(f"the database {path} is in use by another tierd process (a running daemon?)") from None
    return fd


def release(fd: int | None) -> None:
    """Let go of what :func:`claim` took."""
    if fd is not None:
        os.close(fd)


class _Cursor(sqlite3.Cursor):
    """A cursor that lets go of its statement when reading a row fails.

    A statement stopped half-way (e.g. by "Could not decode to UTF-8") stays
    open, and with it its read transaction: every later read on the
    connection would see the database as it was then (a revoked token still
    valid, a new tenant not found), until the cursor is garbage-collected.
    """

    def fetchall(self) -> list[Any]:
        try:
            return super().fetchall()
        finally:
            self.close()

    def fetchone(self) -> Any:
        try:
            return super().fetchone()
        except BaseException:
            self.close()
            raise

    def fetchmany(self, *args: Any, **kwargs: Any) -> list[Any]:
        try:
            return super().fetchmany(*args, **kwargs)
        except BaseException:
            self.close()
            raise


class _Connection(sqlite3.Connection):
    """Its ``execute`` (what aiosqlite calls) makes a :class:`_Cursor`."""

    def execute(self, sql: str, parameters: Any = (), /) -> sqlite3.Cursor:
        return self.cursor(_Cursor).execute(sql, parameters)


class Transaction:
    """The handle given inside ``async with db.transaction()``."""

    def __init__(self, conn: aiosqlite.Connection) -> None:
        self._conn = conn

    async def execute(self, sql: str, params: Params = ()) -> aiosqlite.Cursor:
        return await self._conn.execute(sql, params)

    async def executemany(self, sql: str, seq: Iterable[Params]) -> aiosqlite.Cursor:
        return await self._conn.executemany(sql, seq)

    async def fetchall(self, sql: str, params: Params = ()) -> list[sqlite3.Row]:
        return list(await self._conn.execute_fetchall(sql, params))

    async def fetchone(self, sql: str, params: Params = ()) -> sqlite3.Row | None:
        rows = list(await self._conn.execute_fetchall(sql, params))
        return rows[0] if rows else None


class Lookups:
    """The reader connection kept for point lookups on the hot path.

    Only reads of a few rows by a unique key belong here (a token by its
    hash, events by idempotency key): they queue behind each other on this
    connection, never behind a scan, so intake's latency does not depend on
    what the API is reading at the same time.
    """

    def __init__(self, conn: aiosqlite.Connection) -> None:
        self._conn = conn

    async def fetchall(self, sql: str, params: Params = ()) -> list[sqlite3.Row]:
        return list(await self._conn.execute_fetchall(sql, params))

    async def fetchone(self, sql: str, params: Params = ()) -> sqlite3.Row | None:
        rows = list(await self._conn.execute_fetchall(sql, params))
        return rows[0] if rows else None


class SpaceWatch:
    """Whether writes fail for lack of space, for both backends: a failed write
    makes the database "full" (the API answers 503 storage_full, /readyz says
    why) until a write succeeds or FULL_FOR passes; logged once per episode."""

    #: When (time.monotonic()) a write last failed for lack of space; None
    #: once a write succeeded since.
    full_at: float | None = None
    #: Called after each write refused for lack of space (a metric).
    on_full: Callable[[], None] | None = None
    _full_told = False
    _full_failed_at = 0.0

    @property
    def full(self) -> bool:
        """The last write failed for lack of space (less than FULL_FOR seconds ago)."""
        return self.full_at is not None and time.monotonic() - self.full_at < FULL_FOR

    def _write_failed(self, exc: BaseException) -> None:
        if is_storage_full(exc):
            self.full_at = self._full_failed_at = time.monotonic()
            if not self._full_told:
                self._full_told = True
                log.error("no space left for the database %s (%s): writes fail until space is freed", self, exc)
            if self.on_full is not None:
                self.on_full()

    def _write_succeeded(self) -> None:
        self.full_at = None
        # On a nearly full disk small writes succeed between failed ones: the
        # recovery is told once none has failed for a while.
        if self._full_told and time.monotonic() - self._full_failed_at >= RECOVERED_AFTER:
            self._full_told = False
            log.info("writes to the database %s succeed again", self)


class Database(SpaceWatch):
    """SQLite storage (see the module's docstring)."""

    #: Which SQL this backend speaks (see :data:`DIALECTS`).
    dialect = "sqlite"

    def __init__(self, path: str | Path, busy_timeout: float = 5.0, readers: int = DEFAULT_READERS) -> None:
        self.path = Path(path)
        self.busy_timeout = busy_timeout
        self.readers = readers
        self._writer: aiosqlite.Connection | None = None
        self._readers: list[aiosqlite.Connection] = []
        self._free: asyncio.Queue[aiosqlite.Connection] = asyncio.Queue()
        self._lookups: Lookups | None = None
        self._checkpointer: aiosqlite.Connection | None = None
        self._checkpoints_task: asyncio.Future | None = None
        self._lock = asyncio.Lock()
        self._opened_at = 0.0
        #: This process among the nodes of the database (see :func:`node_name`).
        self.node = node_name()

    def __str__(self) -> str:
        return str(self.path)

    async def open(self) -> Database:
        if str(self.path) != ":memory:":
            self.path.parent.mkdir(parents=True, exist_ok=True)
            if not self.path.exists():
                # Created 0600 before SQLite touches it: it holds secrets.
                os.close(os.open(self.path, os.O_CREAT | os.O_WRONLY, 0o600))
        self._opened_at = time.time()
        self._writer = await self._connect()
        # Only a database without tables takes a new auto_vacuum mode this way
        # (an older one keeps its own until `tierd db compact`): incremental
        # lets pruning give pages back to the file system a few at a time.
        await self._writer.execute_fetchall("PRAGMA auto_vacuum=INCREMENTAL")
        await self._writer.execute_fetchall("PRAGMA journal_mode=WAL")
        # Checkpoints (copying the WAL back into the database file, with an
        # fsync) run on a connection of their own, not inside whichever
        # commit crossed SQLite's threshold: an event's commit never pays for
        # a checkpoint, however much a prune writes (see _checkpoints).
        await self._writer.execute_fetchall("PRAGMA wal_autocheckpoint=0")
        self._checkpointer = await self._connect()
        self._checkpoints_task = asyncio.ensure_future(self._checkpoints())
        for _ in range(self.readers):
            conn = await self._connect(read_only=True)
            self._readers.append(conn)
            self._free.put_nowait(conn)
        self._lookups = Lookups(await self._connect(read_only=True))
        return self

    async def _connect(self, read_only: bool = False) -> aiosqlite.Connection:
        conn = await aiosqlite.connect(self.path, isolation_level=None, factory=_Connection)
        conn.row_factory = sqlite3.Row
        # PRAGMAs are read to the end: an unfinished statement holds a lock.
        await conn.execute_fetchall(f"PRAGMA busy_timeout={int(self.busy_timeout * 1000)}")
        await conn.execute_fetchall("PRAGMA foreign_keys=ON")
        # NORMAL is durable in WAL mode across process crashes (kill -9);
        # only an OS crash or power loss can lose the last commits.
        await conn.execute_fetchall("PRAGMA synchronous=NORMAL")
        if read_only:
            await conn.execute_fetchall("PRAGMA query_only=ON")
        return conn

    async def _checkpoints(self) -> None:
        """Checkpoint the WAL every CHECKPOINT_EVERY seconds (PASSIVE: never
        waits for a reader or the writer, so it never holds them up either)."""
        assert self._checkpointer is not None
        while True:
            await asyncio.sleep(CHECKPOINT_EVERY)
            try:
                await self._checkpointer.execute_fetchall("PRAGMA wal_checkpoint(PASSIVE)")
            except sqlite3.Error as exc:  # e.g. a full disk: the next one retries
                log.debug("checkpoint of %s failed: %s", self.path, exc)

    async def close(self) -> None:
        if self._checkpoints_task is not None:
            self._checkpoints_task.cancel()
            await asyncio.gather(self._checkpoints_task, return_exceptions=True)
            self._checkpoints_task = None
        if self._checkpointer is not None:
            # What the last writes left in the WAL goes into the file now.
            with contextlib.suppress(sqlite3.Error):
                await self._checkpointer.execute_fetchall("PRAGMA wal_checkpoint(PASSIVE)")
            await self._checkpointer.close()
            self._checkpointer = None
        conns = [*self._readers, *([self._lookups._conn] if self._lookups else []), self._writer]
        for conn in conns:
            if conn is not None:
                await conn.close()
        self._readers, self._lookups, self._writer = [], None, None
        self._free = asyncio.Queue()

    @property
    def lookups(self) -> Lookups:
        """The connection for the hot path's point lookups (see :class:`Lookups`)."""
        if self._lookups is None:
            raise RuntimeError(f"the database {self.path} is not open")
        return self._lookups

    @property
    def _write_conn(self) -> aiosqlite.Connection:
        if self._writer is None:
            raise RuntimeError(f"the database {self.path} is not open")
        return self._writer

    # --- the same calls as several PostgreSQL nodes need ------------------------

    @contextlib.asynccontextmanager
    async def exclusive(self, name: str, retry: float = 1.0, until: asyncio.Event | None = None) -> AsyncIterator[bool]:
        """One process owns a SQLite file (:func:`claim`): held at once."""
        yield True

    async def listen(self, channel: str, callback: Callable[[str], object]) -> None:
        """No other node writes a SQLite file: nothing to hear."""

    def gone(self, column: str) -> str:
        """An SQL condition: ``column`` (a claim's node) names no live node.

        One process owns a SQLite file, so any claim but this process's is
        left from a run that ended (a crash, a ``kill -9``).
        """
        return f"({column} IS NULL OR {column} <> {sql_string(self.node)})"

    async def nodes(self, lock_names: Iterable[str]) -> list[dict]:
        """This process, the only node of a SQLite file, holding everything."""
        return [
            {
                "node": self.node,
                "connected_since": self._opened_at,
                "connections": 2 + self.readers + 1,
                "holds": sorted(lock_names),
                "this": True,
            }
        ]

    # --- reads ---------------------------------------------------------------

    async def fetchall(self, sql: str, params: Params = ()) -> list[sqlite3.Row]:
        """Rows of a query, on a reader of the pool (waiting for a free one).

        Within :meth:`budget`, a query still running at the deadline is
        interrupted and :class:`QueryTimeout` raised; a query whose caller
        is cancelled (e.g. at shutdown) is interrupted too, so no reader stays
        busy for an answer nobody will read.
        """
        if not self._readers:
            raise RuntimeError(f"the database {self.path} is not open")
        limit = _deadline.get()
        if limit is not None and limit[2] is not asyncio.current_task():
            limit = None  # a task started under a budget (a timer woken by a request) has none of its own
        loop = asyncio.get_running_loop()
        if limit is not None and loop.time() >= limit[0]:
            raise QueryTimeout(limit[1])
        conn: aiosqlite.Connection | None = await self._free.get()
        assert conn is not None
        # A reader is used by one query at a time: an interrupt can only ever
        # stop the query it was meant for.
        raw: sqlite3.Connection = conn._conn  # aiosqlite's connection; interrupt() is thread-safe
        query = asyncio.ensure_future(conn.execute_fetchall(sql, params))
        timer = loop.call_at(limit[0], raw.interrupt) if limit is not None else None
        try:
            rows = await asyncio.shield(query)
        except asyncio.CancelledError:
            if not query.done():
                raw.interrupt()
                # Back to the pool once SQLite has let go of it.
                query.add_done_callback(partial(self._release, conn))
                conn = None
            raise
        except sqlite3.OperationalError as exc:
            if limit is not None and str(exc) == "interrupted":
                raise QueryTimeout(limit[1]) from None
            raise
        finally:
            if timer is not None:
                timer.cancel()
            if conn is not None:
                self._free.put_nowait(conn)
        return list(rows)

    async def fetchone(self, sql: str, params: Params = ()) -> sqlite3.Row | None:
        rows = await self.fetchall(sql, params)
        return rows[0] if rows else None

    def _release(self, conn: aiosqlite.Connection, query: asyncio.Future) -> None:
        if not query.cancelled():
            query.exception()  # retrieved: an interrupted query's error is expected
        self._free.put_nowait(conn)

    async def read_in_thread(self, fn: Callable[[sqlite3.Connection], T], budget: float | None = None) -> T:
        """Run ``fn(conn)`` in a worker thread on a read-only connection of its
        own, and return what it returns: for a long read that streams, such as
        a report written to a file while its rows are read (nothing of it runs
        on the event loop, and it holds none of the pool's readers).

        Past ``budget`` seconds (or when the caller is cancelled) SQLite is
        interrupted: :class:`QueryTimeout` (or the cancellation) is raised.
        """
        conn = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True, check_same_thread=False)
        conn.execute(f"PRAGMA busy_timeout={int(self.busy_timeout * 1000)}")
        loop = asyncio.get_running_loop()
        timer = loop.call_later(budget, conn.interrupt) if budget else None
        work = asyncio.ensure_future(asyncio.to_thread(fn, conn))
        try:
            return await asyncio.shield(work)
        except asyncio.CancelledError:
            conn.interrupt()
            raise
        except sqlite3.OperationalError as exc:
            if budget and str(exc) == "interrupted":
                raise QueryTimeout(budget) from None
            raise
        finally:
            if timer is not None:
                timer.cancel()
            # Closed once the thread let go of it (at once, unless cancelled mid-read).
            work.add_done_callback(partial(_close_after, conn))

    async def trace_reads(self, callback: Callable[[str], None] | None) -> None:
        """Call ``callback`` with the SQL (parameters inlined) of every statement
        the readers run, from their threads; None stops it. For tests and
        debugging (see ``tierd.testing.recorded_reads``)."""
        for conn in [*self._readers, self.lookups._conn]:
            await conn.set_trace_callback(callback)  # type: ignore[arg-type]  # None is documented

    @staticmethod
    @contextlib.contextmanager
    def budget(seconds: float | None) -> Iterator[None]:
        """Reads this task makes inside must be done within ``seconds`` of
        now; None or 0 sets no limit. A budget inside another one never
        extends it. Tasks started inside inherit the context but not the
        budget: work a request wakes up (a timer, a background job) is not
        the request's to limit."""
        if not seconds:
            yield
            return
        deadline = asyncio.get_running_loop().time() + seconds
        outer = _deadline.get()
        if outer is not None and outer[0] < deadline:
            yield
            return
        token = _deadline.set((deadline, seconds, asyncio.current_task()))
        try:
            yield
        finally:
            _deadline.reset(token)

    # --- writes --------------------------------------------------------------

    async def execute(self, sql: str, params: Params = ()) -> aiosqlite.Cursor:
        """Run one statement on the writer (atomic on its own).

        Statements are queued to the writer thread at once, one behind the
        other, without waiting for the previous one's answer: under load the
        answer of each takes a turn of the event loop, and waiting for it
        would leave the thread idle. Only an open transaction (which holds
        the lock) makes a statement wait, so that it never runs inside
        somebody else's BEGIN ... COMMIT.
        """
        try:
            if self._lock.locked():
                async with self._lock:
                    cursor = await self._write_conn.execute(sql, params)
            else:
                # No await between the check and the queueing: aiosqlite puts
                # the statement on its queue before its first suspension.
                cursor = await self._write_conn.execute(sql, params)
        except Exception as exc:
            self._write_failed(exc)
            raise
        self._write_succeeded()
        return cursor

    async def write_fetchall(self, sql: str, params: Params = ()) -> list[sqlite3.Row]:
        """The rows of one statement that writes (``INSERT ... RETURNING``),
        atomic on its own; PostgreSQL's ``write_fetchall`` runs it in autocommit
        on a writer, where ``fetchall`` would go to a read-only reader."""
        async with self.transaction() as tx:
            return await tx.fetchall(sql, params)

    @contextlib.asynccontextmanager
    async def transaction(self) -> AsyncIterator[Transaction]:
        async with self._lock:
            writer = self._write_conn
            await writer.execute("BEGIN IMMEDIATE")
            try:
                yield Transaction(writer)
                await writer.execute("COMMIT")
            except BaseException as exc:
                # Also when COMMIT failed (e.g. disk full): a transaction left
                # open would take in every later write and never commit it.
                await self._rollback()
                self._write_failed(exc)
                raise
        self._write_succeeded()

    async def _rollback(self) -> None:
        try:
            await self._write_conn.execute("ROLLBACK")
        except sqlite3.OperationalError:
            pass  # no transaction: SQLite rolled it back itself (as it may on SQLITE_FULL)

    # --- migrations ------------------------------------------------------------

    async def migration_status(self, migrations: dict[str, list[str]]) -> list[dict]:
        """For each namespace: applied and available migration numbers."""
        await self._ensure_migrations_table()
        applied = {}
        for row in await self.fetchall("SELECT namespace, MAX(version) AS v FROM schema_migrations GROUP BY namespace"):
            applied[row["namespace"]] = row["v"]
        return [
            {
                "namespace": ns,
                "applied": applied.get(ns, 0),
                "available": len(scripts),
                "pending": max(0, len(scripts) - applied.get(ns, 0)),
            }
            for ns, scripts in migrations.items()
        ]

    async def migrate(self, migrations: dict[str, list[str]]) -> list[tuple[str, int]]:
        """Apply every migration not yet recorded; each in its own transaction."""
        await self._ensure_migrations_table()
        done = []
        for status in await self.migration_status(migrations):
            ns = status["namespace"]
            for version in range(status["applied"] + 1, status["available"] + 1):
                script = migrations[ns][version - 1]
                async with self.transaction() as tx:
                    # executescript would COMMIT our transaction; run statements one by one.
                    for statement in _split_sql(script):
                        await tx.execute(statement)
                    await tx.execute(
                        "INSERT INTO schema_migrations(namespace, version, applied_at) VALUES (?,?,?)",
                        (ns, version, time.time()),
                    )
                log.info("applied migration %s %d", ns, version)
                done.append((ns, version))
        return done

    async def _ensure_migrations_table(self) -> None:
        await self.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations ("
            " namespace TEXT NOT NULL, version INTEGER NOT NULL, applied_at REAL NOT NULL,"
            " PRIMARY KEY (namespace, version))"
        )

    # --- backup ------------------------------------------------------------------

    async def backup(self, target: str | Path) -> None:
        """A consistent copy of the live database (SQLite's online backup API)."""
        target = Path(target)
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(target.name + ".partial")
        if tmp.exists():
            tmp.unlink()
        os.close(os.open(tmp, os.O_CREAT | os.O_WRONLY, 0o600))
        dest = await aiosqlite.connect(tmp)
        source = await self._free.get()  # a reader: the writer goes on meanwhile
        try:
            await source.backup(dest)
        finally:
            self._free.put_nowait(source)
            await dest.close()
        os.replace(tmp, target)

    # --- pruning and disk space -----------------------------------------------------

    async def delete_in_slices(self, sql: str, params: Mapping[str, Any] | None = None) -> int:
        """Run a DELETE a slice at a time until nothing is left; the rows deleted.

        ``sql`` deletes at most ``:slice`` rows (a named parameter, e.g.
        ``DELETE FROM t WHERE id IN (SELECT id FROM t WHERE created_at<:cutoff
        ORDER BY id LIMIT :slice)``); its subquery must walk an index, or every
        slice would scan. Each slice is one statement (atomic on its own), sized
        to take about :data:`SLICE_BUDGET` and followed by a pause of
        :data:`SLICE_PAUSE` times its duration: intake's statements run in
        between, so a prune of a million rows slows nobody down, it only takes
        longer. Freed pages go back to the file system afterwards (:meth:`reclaim`).
        """
        size, removed = 256, 0
        while True:
            started = time.monotonic()
            cur = await self.execute(sql, {**(params or {}), "slice": size})
            took = time.monotonic() - started
            removed += cur.rowcount
            if cur.rowcount < size:
                break
            # Towards the budget, by at most a factor of two per slice (one
            # slow slice, e.g. behind a checkpoint, must not shrink it to nothing).
            size = max(16, min(size * 2, 50_000, int(size * SLICE_BUDGET / max(took, 1e-4)) or 1))
            await asyncio.sleep(took * SLICE_PAUSE)
        if removed:
            await self.reclaim()
        return removed

    async def reclaim(self) -> int:
        """Give free pages back to the file system, :data:`VACUUM_STEP` pages a
        statement with pauses as in :meth:`delete_in_slices`; the pages freed.

        Only a database in incremental auto-vacuum mode can (every database this
        version creates; ``tierd db compact`` converts an older one).
        """
        if (await self._pragma("auto_vacuum")) != 2:
            return 0
        freed = 0
        while (free := await self._pragma("freelist_count")) > 0:
            started = time.monotonic()
            await self._write_all(f"PRAGMA incremental_vacuum({min(free, VACUUM_STEP)})")
            freed += min(free, VACUUM_STEP)
            await asyncio.sleep((time.monotonic() - started) * SLICE_PAUSE)
        return freed

    async def space(self) -> dict[str, int]:
        """The file's pages (all, and free for reuse), their size in bytes and
        the auto_vacuum mode (2: incremental, pruning shrinks the file)."""
        names = ("page_count", "freelist_count", "page_size", "auto_vacuum")
        # One statement (the /metrics job asks every few seconds): the
        # PRAGMAs as table-valued functions.
        row = await self.lookups.fetchone(
            "SELECT " + ", ".join(f"(SELECT * FROM pragma_{name}()) AS {name}" for name in names)
        )
        assert row is not None  # a SELECT of constants always answers a row
        return {name: int(row[name]) for name in names}

    async def compact(self) -> None:
        """Rewrite the file without its free pages and turn on incremental
        auto-vacuum (VACUUM): for a database made before this version. It holds
        the writer for as long as it takes and needs as much free disk as the
        database is large: run it with the daemon stopped."""
        await self._write_all("PRAGMA auto_vacuum=INCREMENTAL")
        await self._write_all("VACUUM")
        await self._write_all("PRAGMA wal_checkpoint(TRUNCATE)")

    async def _pragma(self, name: str) -> int:
        row = await self.lookups.fetchone(f"PRAGMA {name}")  # each a fresh read: current
        assert row is not None  # these PRAGMAs always answer a row
        return int(row[0])

    async def _write_all(self, sql: str) -> list[sqlite3.Row]:
        """A statement on the writer, stepped to its end (PRAGMAs that work as they are read)."""
        async with self._lock:
            return list(await self._write_conn.execute_fetchall(sql))


def _close_after(conn: sqlite3.Connection, work: asyncio.Future) -> None:
    if not work.cancelled():
        work.exception()  # retrieved: an interrupted read's error was raised or is moot
    conn.close()


#: The storage backends: ``Database.dialect`` / ``PgDatabase.dialect``.
DIALECTS = ("sqlite", "postgresql")


class UnsupportedBackend(Exception):
    """A plugin's migrations do not cover the configured storage backend."""


def migrations_for(declared: Mapping[str, Any], dialect: str) -> dict[str, list[str]]:
    """Each namespace's migration scripts for ``dialect``.

    A plugin's ``tierd_migrations`` gives, per namespace, either a list of
    scripts (SQLite's: every plugin written before PostgreSQL) or a mapping
    ``{"sqlite": [...], "postgresql": [...]}``, numbered alike: version N of
    one dialect builds the same tables as version N of the other (so that
    ``tierd db copy`` can move rows). A namespace without scripts for
    ``dialect`` raises :class:`UnsupportedBackend` naming it.
    """
    chosen: dict[str, list[str]] = {}
    for namespace, scripts in declared.items():
        if isinstance(scripts, Mapping):
            unknown = set(scripts) - set(DIALECTS)
            if unknown:
                raise ValueError(f"migrations of {namespace!r} name unknown dialects: {', '.join(sorted(unknown))}")
            lengths = {d: len(v) for d, v in scripts.items()}
            if len(set(lengths.values())) > 1:
                raise ValueError(f"migrations of {namespace!r} differ in number between dialects: {lengths}")
            picked = scripts.get(dialect)
        else:
            picked = scripts if dialect == "sqlite" else None
        if picked is None:
            raise UnsupportedBackend(
                f"{namespace!r} has no {dialect} migrations: it runs on SQLite only; disable the plugin that "
                f"provides it (plugins.disabled) or keep storage on SQLite"
            )
        chosen[namespace] = list(picked)
    return chosen


def json_columns(count: int, start: int = 0) -> str:
    """SQL for items ``start .. start+count-1`` of each array of ``json_each(?)``.

    Many rows go to SQLite as one JSON parameter of one statement
    (``INSERT ... SELECT {json_columns(n)} FROM json_each(?)``): one trip to
    the database thread, and atomic without a transaction around it, so the
    writer is held for one trip instead of three (BEGIN, statement, COMMIT).
    """
    return ", ".join(f"json_extract(value, '$[{i}]')" for i in range(start, start + count))


def bulk_rows(dialect: str, columns: Mapping[str, str], rows: Sequence[Sequence[Any]]) -> tuple[str, tuple]:
    """Many rows as one statement's source, portable: ``(sql, params)`` where
    ``sql`` is a ``SELECT`` of the rows with ``columns``' names, for
    ``INSERT INTO t(a, b) {sql}`` or ``FROM ({sql}) AS k JOIN ...``.

    ``columns`` maps each column's name to PostgreSQL's name of its type
    (``bigint``, ``text``, ``float8``...). SQLite gets the rows as one JSON
    text read by ``json_each`` (see :func:`json_columns`); PostgreSQL one
    array per column, read by ``unnest`` (asyncpg sends arrays natively).
    Either way one trip to the database, atomic on its own.
    """
    names = list(columns)
    if dialect == "sqlite":
        selected = ", ".join(f"json_extract(value, '$[{i}]') AS {name}" for i, name in enumerate(names))
        return f"SELECT {selected} FROM json_each(?)", (json.dumps(rows, separators=(",", ":")),)
    arrays = tuple(list(column) for column in zip(*rows, strict=True)) if rows else tuple([] for _ in names)
    unnest = ", ".join(f"?::{t}[]" for t in columns.values())
    return f"SELECT * FROM unnest({unnest}) AS src({', '.join(names)})", arrays


def value_list(dialect: str, type_: str, values: Sequence[Any]) -> tuple[str, Any]:
    """``(sql, param)`` of a subquery of ``values``, for ``x IN {sql}``: one
    parameter whatever the number of values (SQLite's limit on parameters)."""
    if dialect == "sqlite":
        return "(SELECT value FROM json_each(?))", json.dumps(list(values))
    return f"(SELECT unnest(?::{type_}[]))", list(values)


def _split_sql(script: str) -> list[str]:
    """Split a migration script into complete statements (triggers included)."""
    statements, buf = [], ""
    for line in script.splitlines(keepends=True):
        buf += line
        if sqlite3.complete_statement(buf):
            if buf.strip():
                statements.append(buf.strip())
            buf = ""
    if buf.strip():
        statements.append(buf.strip())
    return statements
