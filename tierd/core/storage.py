"""Embedded storage: one SQLite file in WAL mode, with numbered migrations.

One writer connection serialised by an asyncio lock (SQLite has one writer
anyway) and one reader connection, so reads never wait for a write
transaction. SQL lives in each plugin's ``store.py``; this module only runs it.

Failures leave both connections usable: a read that fails half-way lets go of
its statement (and so of its snapshot), a transaction whose COMMIT fails is
rolled back, and a write refused for lack of disk space is remembered
(:attr:`Database.full`) so that the API answers 503 ``storage_full`` and
``/readyz`` says why until writes succeed again.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import os
import sqlite3
import time
from collections.abc import AsyncIterator, Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import aiosqlite

#: Parameters of an SQL statement: positional (?) or named (:name).
Params = Sequence[Any] | Mapping[str, Any]

log = logging.getLogger("tierd.storage")

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
]


#: A write refused for lack of space makes the database "full" for this long,
#: unless a later write succeeds first (an idle daemon is not full forever).
FULL_FOR = 30.0
#: Writes that succeed for this long after a failed one end a logged "full".
RECOVERED_AFTER = 5.0


def is_storage_full(exc: BaseException) -> bool:
    """Whether ``exc`` says there is no space left for the database (or a file)."""
    if isinstance(exc, sqlite3.Error):
        # The primary code (the low byte) of e.g. "database or disk is full".
        return (getattr(exc, "sqlite_errorcode", None) or 0) & 0xFF == sqlite3.SQLITE_FULL
    return isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT)


def is_decode_error(exc: BaseException) -> bool:
    """Whether ``exc`` is a read of text that is not UTF-8 (stored before tierd
    refused lone surrogates at intake)."""
    return isinstance(exc, sqlite3.OperationalError) and str(exc).startswith("Could not decode to UTF-8")


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


class Database:
    def __init__(self, path: str | Path, busy_timeout: float = 5.0) -> None:
        self.path = Path(path)
        self.busy_timeout = busy_timeout
        self._writer: aiosqlite.Connection | None = None
        self._reader: aiosqlite.Connection | None = None
        self._lock = asyncio.Lock()
        #: When (time.monotonic()) a write last failed for lack of space; None
        #: once a write succeeded since.
        self.full_at: float | None = None
        #: Called after each write refused for lack of space (a metric).
        self.on_full: Callable[[], None] | None = None
        self._full_told = False
        self._full_failed_at = 0.0

    async def open(self) -> Database:
        if str(self.path) != ":memory:":
            self.path.parent.mkdir(parents=True, exist_ok=True)
            if not self.path.exists():
                # Created 0600 before SQLite touches it: it holds secrets.
                os.close(os.open(self.path, os.O_CREAT | os.O_WRONLY, 0o600))
        self._writer = await self._connect()
        await self._writer.execute_fetchall("PRAGMA journal_mode=WAL")
        self._reader = await self._connect()
        return self

    async def _connect(self) -> aiosqlite.Connection:
        conn = await aiosqlite.connect(self.path, isolation_level=None, factory=_Connection)
        conn.row_factory = sqlite3.Row
        # PRAGMAs are read to the end: an unfinished statement holds a lock.
        await conn.execute_fetchall(f"PRAGMA busy_timeout={int(self.busy_timeout * 1000)}")
        await conn.execute_fetchall("PRAGMA foreign_keys=ON")
        # NORMAL is durable in WAL mode across process crashes (kill -9);
        # only an OS crash or power loss can lose the last commits.
        await conn.execute_fetchall("PRAGMA synchronous=NORMAL")
        return conn

    async def close(self) -> None:
        for conn in (self._reader, self._writer):
            if conn is not None:
                await conn.close()
        self._reader = self._writer = None

    @property
    def _read_conn(self) -> aiosqlite.Connection:
        if self._reader is None:
            raise RuntimeError(f"the database {self.path} is not open")
        return self._reader

    @property
    def _write_conn(self) -> aiosqlite.Connection:
        if self._writer is None:
            raise RuntimeError(f"the database {self.path} is not open")
        return self._writer

    # --- reads ---------------------------------------------------------------

    async def fetchall(self, sql: str, params: Params = ()) -> list[sqlite3.Row]:
        return list(await self._read_conn.execute_fetchall(sql, params))

    async def fetchone(self, sql: str, params: Params = ()) -> sqlite3.Row | None:
        rows = list(await self._read_conn.execute_fetchall(sql, params))
        return rows[0] if rows else None

    # --- writes --------------------------------------------------------------

    @property
    def full(self) -> bool:
        """The last write failed for lack of space (less than FULL_FOR seconds ago)."""
        return self.full_at is not None and time.monotonic() - self.full_at < FULL_FOR

    def _write_failed(self, exc: BaseException) -> None:
        if is_storage_full(exc):
            self.full_at = self._full_failed_at = time.monotonic()
            if not self._full_told:
                self._full_told = True
                log.error("no space left for the database %s (%s): writes fail until space is freed", self.path, exc)
            if self.on_full is not None:
                self.on_full()

    def _write_succeeded(self) -> None:
        self.full_at = None
        # On a nearly full disk small writes succeed between failed ones: the
        # recovery is told once none has failed for a while.
        if self._full_told and time.monotonic() - self._full_failed_at >= RECOVERED_AFTER:
            self._full_told = False
            log.info("writes to the database %s succeed again", self.path)

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
        try:
            await self._read_conn.backup(dest)
        finally:
            await dest.close()
        os.replace(tmp, target)


def json_columns(count: int, start: int = 0) -> str:
    """SQL for items ``start .. start+count-1`` of each array of ``json_each(?)``.

    Many rows go to SQLite as one JSON parameter of one statement
    (``INSERT ... SELECT {json_columns(n)} FROM json_each(?)``): one trip to
    the database thread, and atomic without a transaction around it, so the
    writer is held for one trip instead of three (BEGIN, statement, COMMIT).
    """
    return ", ".join(f"json_extract(value, '$[{i}]')" for i in range(start, start + count))


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
