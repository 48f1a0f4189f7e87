"""PostgreSQL storage (issue 15, the foundation): :class:`PgDatabase` offers
what plugins call on :class:`tierd.core.storage.Database`, on asyncpg.

Not wired into the daemon yet: ``storage.url: postgresql://...`` comes with
the rest of issue 15 (see ``docs/postgresql.md``). What there is:

- the same calls: ``execute``, ``executemany``, ``fetchall``, ``fetchone``,
  ``transaction()``, ``lookups``, ``budget``, ``migrate``,
  ``migration_status``, ``delete_in_slices``, ``space``, ``full``;
- SQLite's placeholders (``?`` and ``:name``) translated to PostgreSQL's
  ``$1..$n`` once per distinct statement (:func:`translate`), so a plugin's
  SQL that is otherwise portable runs unchanged;
- rows are asyncpg Records: ``row["col"]``, ``row[0]``, ``dict(row)`` and
  ``tuple(row)`` as with ``sqlite3.Row``.

Connections: a pool of writers (PostgreSQL takes concurrent writers, unlike
SQLite, so no lock serialises them), a pool of read-only readers (reads run
side by side and honour :meth:`Database.budget`), one connection for the
hot path's point lookups, so a long report never holds up intake, and one for
intake's own call (:meth:`PgDatabase.intake_fetchall`).

Differences a plugin author meets (see also ``docs/postgresql.md``):

- ``execute`` answers a :class:`Result` with ``rowcount`` (from PostgreSQL's
  command tag) but no ``lastrowid``, which is SQLite's: use ``RETURNING``.
- Parameter types are strict where SQLite converts: asyncpg refuses a ``str``
  for a ``BIGINT`` or ``DOUBLE PRECISION`` column; an ``int`` (or ``Decimal``)
  for a ``DOUBLE PRECISION`` is fine; a ``float`` for a ``BIGINT`` is
  *truncated* silently (2.7 is stored as 2). A parameter whose type nothing
  in the statement tells (``SELECT ? AS n``) is text: cast it (``?::bigint``).
  Times are ``DOUBLE PRECISION`` seconds, money ``TEXT``, JSON ``TEXT``,
  booleans ``BIGINT`` 0/1, as on SQLite.
- A failed statement inside a transaction aborts the whole transaction (on
  SQLite only the statement fails): catch-and-go-on needs a ``SAVEPOINT``.
- ``write_fetchall``: the rows of one statement that writes, in autocommit on a
  writer (``fetchall`` runs on the read-only readers), e.g. a call of a
  PL/pgSQL function that takes a lock and writes in one round trip.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import time
from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Mapping
from functools import lru_cache
from typing import Any, NamedTuple

import asyncpg

from tierd.core.storage import (
    DEFAULT_READERS,
    NODE_NAME_MAX,
    SLICE_BUDGET,
    SLICE_PAUSE,
    Database,
    Params,
    QueryTimeout,
    SpaceWatch,
    _deadline,
    node_name,
    safe_url,
)

log = logging.getLogger("tierd.storage.pg")

#: Writer connections (``execute`` and transactions take one each while they run).
DEFAULT_WRITERS = 4
#: The key of the advisory lock that lets one node at a time migrate.
MIGRATION_LOCK = 0x7469_6572_64  # "tierd"


# --- placeholders ---------------------------------------------------------------


class Translated(NamedTuple):
    """A statement in PostgreSQL's placeholders, and what fills them."""

    sql: str
    #: Positional: how many ``?`` there were. Named: None (see ``names``).
    positional: int | None
    #: Named: the parameter of each ``$n`` in order (a name used twice is one ``$n``).
    names: tuple[str, ...]

    def args(self, params: Params) -> list[Any]:
        """``params`` (a sequence for ``?``, a mapping for ``:name``) as asyncpg's arguments."""
        if self.names:
            if not isinstance(params, Mapping):
                raise TypeError(
                    f"named parameters (:{', :'.join(self.names)}) need a mapping, got {type(params).__name__}"
                )
            missing = [n for n in self.names if n not in params]
            if missing:
                raise KeyError(f"no value for the parameter(s) :{', :'.join(missing)}")
            # Extra keys are left out, as sqlite3 does (delete_in_slices' callers rely on it).
            return [params[n] for n in self.names]
        if isinstance(params, Mapping):
            if self.positional:
                raise TypeError("positional parameters (?) need a sequence, got a mapping")
            return []
        if len(params) != (self.positional or 0):
            raise TypeError(f"the statement takes {self.positional or 0} parameter(s), {len(params)} given")
        return list(params)


_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_DOLLAR_TAG = re.compile(r"\$([A-Za-z_][A-Za-z0-9_]*)?\$")
#: A run of characters none of which can start a literal, comment, cast or placeholder.
_PLAIN = re.compile(r"[^'\"\-/$:?]+")
_DIGITS = re.compile(r"\d+")


@lru_cache(maxsize=4096)
def translate(sql: str) -> Translated:
    """SQLite-style placeholders (``?``, ``?NNN``, ``:name``) to ``$1..$n``.

    Text that is not SQL code stays as it is: single-quoted literals (``'it''s
    ?'``), double-quoted identifiers, ``--`` and ``/* */`` comments,
    dollar-quoted bodies (``$$ ... $$``, a PL/pgSQL function's), and
    PostgreSQL's ``::`` casts. Mixing ``?`` and ``:name`` in one statement is
    refused, as sqlite3 does. Cached: a plugin has a few hundred distinct
    statements at most, each translated once.

    PostgreSQL's JSONB operators ``?``, ``?|`` and ``?&`` would be read as
    placeholders: write ``jsonb_exists(...)`` and friends instead.
    """
    out: list[str] = []
    names: list[str] = []
    count = 0
    i, n = 0, len(sql)
    while i < n:
        c = sql[i]
        if c in "'\"":
            # A quoted literal or identifier; a doubled quote is an escaped one.
            j = i + 1
            while j < n:
                if sql[j] == c:
                    if j + 1 < n and sql[j + 1] == c:
                        j += 2
                        continue
                    break
                j += 1
            out.append(sql[i : j + 1])
            i = j + 1
        elif sql.startswith("--", i):
            j = sql.find("\n", i)
            j = n if j < 0 else j
            out.append(sql[i:j])
            i = j
        elif sql.startswith("/*", i):
            j = sql.find("*/", i + 2)
            j = n if j < 0 else j + 2
            out.append(sql[i:j])
            i = j
        elif c == "$" and (tag := _DOLLAR_TAG.match(sql, i)) and not sql[i + 1 : i + 2].isdigit():
            end = sql.find(tag.group(0), tag.end())
            j = n if end < 0 else end + len(tag.group(0))
            out.append(sql[i:j])
            i = j
        elif sql.startswith("::", i):
            out.append("::")
            i += 2
        elif c == ":" and (name := _NAME.match(sql, i + 1)):
            if count:
                raise ValueError("a statement takes either ? or :name parameters, not both")
            if name.group(0) not in names:
                names.append(name.group(0))
            out.append(f"${names.index(name.group(0)) + 1}")
            i = name.end()
        elif c == "?":
            if names:
                raise ValueError("a statement takes either ? or :name parameters, not both")
            number = _DIGITS.match(sql, i + 1)
            if number:  # ?NNN: that parameter, as in SQLite
                count = max(count, int(number.group(0)))
                out.append(f"${number.group(0)}")
                i += 1 + len(number.group(0))
            else:
                count += 1
                out.append(f"${count}")
                i += 1
        else:
            # Plain text up to the next character that may start something above.
            m = _PLAIN.match(sql, i)
            j = m.end() if m else i + 1
            out.append(sql[i:j])
            i = j
    return Translated("".join(out), None if names else count, tuple(names))


# --- results and handles ----------------------------------------------------------


_COUNTING = frozenset({"INSERT", "UPDATE", "DELETE", "MERGE"})


class Result:
    """What ``execute`` answers: ``rowcount`` from PostgreSQL's command tag
    (``UPDATE 3`` → 3; -1 for a statement that counts no rows, as sqlite3).

    There is no ``lastrowid`` (SQLite's rowid of the last insert): ask with
    ``INSERT ... RETURNING id`` through ``fetchone`` instead.
    """

    __slots__ = ("status", "rowcount")

    def __init__(self, status: str) -> None:
        self.status = status
        command, _, rest = status.partition(" ")
        last = rest.rsplit(" ", 1)[-1]
        # INSERT 0 5, UPDATE 3, DELETE 2, MERGE 1 count rows; a SELECT's count
        # is not sqlite3's rowcount (-1 there too), nor is CREATE TABLE's nothing.
        self.rowcount = int(last) if last.isdigit() and command in _COUNTING else -1

    @property
    def lastrowid(self) -> int:
        raise AttributeError("lastrowid is SQLite's: on PostgreSQL use INSERT ... RETURNING")


async def _execute(conn: asyncpg.Connection, sql: str, params: Params) -> Result:
    t = translate(sql)
    args = t.args(params)
    # Without arguments asyncpg uses the simple protocol, which also runs
    # several statements in one call (a migration script).
    return Result(await conn.execute(t.sql, *args) if args else await conn.execute(t.sql))


async def _executemany(conn: asyncpg.Connection, sql: str, seq: Iterable[Params]) -> Result:
    t = translate(sql)
    rows = [t.args(p) for p in seq]
    await conn.executemany(t.sql, rows)
    # asyncpg does not add up the command tags of the rows: unknown, as for a SELECT.
    return Result("EXECUTEMANY")


async def _fetch(conn: asyncpg.Connection, sql: str, params: Params, timeout: float | None = None) -> list[Any]:
    t = translate(sql)
    return list(await conn.fetch(t.sql, *t.args(params), timeout=timeout))


class PgTransaction:
    """The handle given inside ``async with db.transaction()`` (as :class:`tierd.core.storage.Transaction`)."""

    def __init__(self, conn: asyncpg.Connection) -> None:
        self._conn = conn

    async def execute(self, sql: str, params: Params = ()) -> Result:
        return await _execute(self._conn, sql, params)

    async def executemany(self, sql: str, seq: Iterable[Params]) -> Result:
        return await _executemany(self._conn, sql, seq)

    async def fetchall(self, sql: str, params: Params = ()) -> list[Any]:
        return await _fetch(self._conn, sql, params)

    async def fetchone(self, sql: str, params: Params = ()) -> Any:
        rows = await _fetch(self._conn, sql, params)
        return rows[0] if rows else None


class PgLookups:
    """The connection kept for the hot path's point lookups (see :class:`tierd.core.storage.Lookups`)."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    async def fetchall(self, sql: str, params: Params = ()) -> list[Any]:
        async with self._pool.acquire() as conn:
            return await _fetch(conn, sql, params)

    async def fetchone(self, sql: str, params: Params = ()) -> Any:
        rows = await self.fetchall(sql, params)
        return rows[0] if rows else None


class MigrationFailed(RuntimeError):
    """A migration script failed; nothing of it was applied (PostgreSQL's DDL is transactional)."""

    def __init__(self, namespace: str, version: int, cause: BaseException) -> None:
        super().__init__(f"migration {namespace} {version} failed and was rolled back: {cause}")
        self.namespace = namespace
        self.version = version


# --- the database -------------------------------------------------------------------


async def ensure_migrations_table(conn: asyncpg.Connection) -> None:
    """The table of applied migrations, as on SQLite (also for ``tierd db copy``)."""
    await conn.execute(
        "CREATE TABLE IF NOT EXISTS schema_migrations ("
        " namespace TEXT NOT NULL, version INTEGER NOT NULL, applied_at DOUBLE PRECISION NOT NULL,"
        " PRIMARY KEY (namespace, version))"
    )


async def _keep_session(conn: asyncpg.Connection) -> None:
    """A pool's reset that sends nothing (see ``PgDatabase.open``)."""


def _signed(key: int) -> int:
    """An advisory lock's 64-bit key, put together from pg_locks' two 32-bit
    halves, as the signed bigint that hashtextextended answered."""
    return key - (1 << 64) if key >= 1 << 63 else key


class PgDatabase(SpaceWatch):
    """A PostgreSQL database with the calls of :class:`tierd.core.storage.Database`.

    ``url`` is libpq's (``postgresql://user@host:port/db``); several objects
    (several tierd nodes) may share one database and see each other's commits.
    """

    #: Which SQL this backend speaks (see ``tierd.core.storage.DIALECTS``).
    dialect = "postgresql"

    #: The same budget as SQLite's: a context manager on the same context variable.
    budget = staticmethod(Database.budget)

    def __init__(
        self, url: str, readers: int = DEFAULT_READERS, writers: int = DEFAULT_WRITERS, node: str = ""
    ) -> None:
        self.url = url
        #: This node's name, on each of its connections (pg_stat_activity's
        #: application_name): what ``nodes()`` lists.
        self.node = (node or node_name())[:NODE_NAME_MAX]
        self._settings = {
            "application_name": f"tierd {self.node}",
            # The server probes an idle connection after 30 s, then every 10 s,
            # and drops it after 3 unanswered probes: a node whose host vanished
            # (power, network) loses its locks and claims within about a minute,
            # not after the operating system's default of two hours.
            "tcp_keepalives_idle": "30",
            "tcp_keepalives_interval": "10",
            "tcp_keepalives_count": "3",
        }
        self.readers = readers
        self.writers = writers
        self._writer_pool: asyncpg.Pool | None = None
        self._reader_pool: asyncpg.Pool | None = None
        self._lookups: PgLookups | None = None
        self._intake_pool: asyncpg.Pool | None = None
        self._listener: asyncpg.Connection | None = None

    def __repr__(self) -> str:
        return f"PgDatabase({safe_url(self.url)!r})"

    def __str__(self) -> str:
        return safe_url(self.url)

    async def open(self) -> PgDatabase:
        # Statements are prepared and cached per connection by asyncpg (its
        # default cache of 100 per connection): a plugin's hot statements are
        # parsed once per connection, as SQLite's statement cache does.
        # asyncpg resets a pool's connection on every release: one more round
        # trip (pg_advisory_unlock_all, CLOSE ALL, UNLISTEN *, RESET ALL) after
        # every statement or transaction. tierd leaves nothing of the kind in a
        # pooled session (LISTEN and session locks have connections of their own,
        # ``listen`` and ``exclusive``; the migrations' lock is released; SET is
        # SET LOCAL; cursors close with their transaction), and the plugin API
        # says so (docs/plugin-api.md), so connections go back as they are.
        # asyncpg still rolls back a transaction left open and drops listeners,
        # and waits for a cancelled statement's cancel first.
        self._writer_pool = await asyncpg.create_pool(
            self.url, min_size=1, max_size=self.writers, server_settings=self._settings, reset=_keep_session
        )
        self._reader_pool = await asyncpg.create_pool(
            self.url,
            min_size=self.readers,
            max_size=self.readers,
            # As SQLite's query_only readers: a write on them is an error, not a surprise.
            server_settings={"default_transaction_read_only": "on"} | self._settings,
            reset=_keep_session,
        )
        lookups = await asyncpg.create_pool(
            self.url,
            min_size=1,
            max_size=1,
            server_settings={"default_transaction_read_only": "on"} | self._settings,
            reset=_keep_session,
        )
        self._lookups = PgLookups(lookups)
        # Intake's statement on a connection of its own: it does not wait
        # behind the writers' work (intake_fetchall).
        self._intake_pool = await asyncpg.create_pool(
            self.url, min_size=1, max_size=1, server_settings=self._settings, reset=_keep_session
        )
        return self

    async def close(self) -> None:
        if self._listener is not None:
            with contextlib.suppress(Exception):
                await self._listener.close()
            self._listener = None
        pools = [
            self._writer_pool,
            self._reader_pool,
            self._lookups._pool if self._lookups else None,
            self._intake_pool,
        ]
        for pool in pools:
            if pool is not None:
                await pool.close()
        self._writer_pool = self._reader_pool = self._lookups = self._intake_pool = None

    # --- several nodes on one database --------------------------------------------

    @contextlib.asynccontextmanager
    async def exclusive(self, name: str, retry: float = 1.0, until: asyncio.Event | None = None) -> AsyncIterator[bool]:
        """Hold the cluster-wide lock ``name`` for the block (True), so that one
        node at a time runs what it guards (an event consumer, a timer's job).
        While another node holds it, ask again every ``retry`` seconds; False
        if ``until`` is set first (the node is stopping).

        A session-level advisory lock on a connection of its own: a node that
        dies loses its connection, and with it the lock, so another node takes
        over without a lease to wait out.
        """
        conn = await asyncpg.connect(self.url, server_settings=self._settings)
        try:
            held = False
            while not (held := await conn.fetchval("SELECT pg_try_advisory_lock(hashtextextended($1, 0))", name)):
                if until is not None and until.is_set():
                    break
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(until.wait() if until else asyncio.sleep(retry), retry)
            yield held
        finally:
            with contextlib.suppress(Exception):
                await conn.close()  # ends the session, and with it the lock

    async def listen(self, channel: str, callback: Callable[[str], object]) -> None:
        """Call ``callback(payload)`` for each ``NOTIFY channel`` from any node,
        on a connection kept for it until :meth:`close`."""
        conn = self._listener or await asyncpg.connect(self.url, server_settings=self._settings)
        self._listener = conn
        await conn.add_listener(channel, lambda _conn, _pid, _channel, payload: callback(payload))

    def gone(self, column: str) -> str:
        """An SQL condition: ``column`` (a claim's node) names no node connected
        to this database now, so its claims are to be taken over.

        A node is live while it has a connection (each keeps one open for
        ``LISTEN``); ``kill -9`` closes its sockets, and PostgreSQL ends its
        sessions at once. A node whose host vanishes is seen gone once the
        server's keepalive probes go unanswered (about a minute, see ``__init__``).
        """
        return (
            f"({column} IS NULL OR {column} NOT IN (SELECT substr(application_name, 7) FROM pg_stat_activity"
            " WHERE datname = current_database() AND application_name LIKE 'tierd %'))"
        )

    async def nodes(self, lock_names: Iterable[str]) -> list[dict]:
        """The live nodes on this database (by their connections' application
        name) and which of ``lock_names`` (consumers, timers) each holds."""
        names = {name: None for name in lock_names}
        keys = await self.fetchall(
            "SELECT name, hashtextextended(name, 0) AS key FROM unnest(?::text[]) AS name", (list(names),)
        )
        by_key = {r["key"]: r["name"] for r in keys}
        rows = await self.fetchall(
            "SELECT a.application_name AS app, MIN(a.backend_start) AS since, COUNT(*) AS connections,"
            " array_remove(array_agg((l.classid::bigint << 32) | l.objid::bigint), NULL) AS locks"
            " FROM pg_stat_activity a LEFT JOIN pg_locks l ON l.pid = a.pid AND l.locktype = 'advisory'"
            " AND l.granted WHERE a.datname = current_database() AND a.application_name LIKE 'tierd %'"
            " GROUP BY a.application_name ORDER BY a.application_name"
        )
        return [
            {
                "node": r["app"].removeprefix("tierd "),
                "connected_since": r["since"].timestamp(),
                "connections": r["connections"],
                "holds": sorted(by_key[k] for k in {_signed(k) for k in r["locks"]} if k in by_key),
                "this": r["app"] == self._settings["application_name"],
            }
            for r in rows
        ]

    async def __aenter__(self) -> PgDatabase:
        return await self.open()

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    @property
    def lookups(self) -> PgLookups:
        """The connection for the hot path's point lookups."""
        if self._lookups is None:
            raise RuntimeError(f"{self!r} is not open")
        return self._lookups

    def _pool(self, pool: asyncpg.Pool | None) -> asyncpg.Pool:
        if pool is None:
            raise RuntimeError(f"{self!r} is not open")
        return pool

    # --- reads -------------------------------------------------------------------

    async def fetchall(self, sql: str, params: Params = ()) -> list[Any]:
        """Rows of a query on a reader of the pool (waiting for a free one).

        Within :meth:`budget` a query still running at the deadline is
        cancelled on the server (asyncpg sends a cancel request and keeps the
        connection) and :class:`QueryTimeout` raised.
        """
        limit = _deadline.get()
        if limit is not None and limit[2] is not asyncio.current_task():
            limit = None  # a task started under a budget has none of its own (as on SQLite)
        loop = asyncio.get_running_loop()
        remaining = None if limit is None else limit[0] - loop.time()
        if limit is not None and remaining is not None and remaining <= 0:
            raise QueryTimeout(limit[1])
        pool = self._pool(self._reader_pool)
        try:
            # Waiting for a free reader counts against the budget too.
            async with pool.acquire(timeout=remaining) as conn:
                if limit is not None:
                    remaining = limit[0] - loop.time()
                    if remaining <= 0:
                        raise QueryTimeout(limit[1])
                return await _fetch(conn, sql, params, timeout=remaining)
        except TimeoutError:
            assert limit is not None  # only a budget sets a timeout
            raise QueryTimeout(limit[1]) from None

    async def fetchone(self, sql: str, params: Params = ()) -> Any:
        rows = await self.fetchall(sql, params)
        return rows[0] if rows else None

    # --- writes -----------------------------------------------------------------

    @contextlib.contextmanager
    def _writing(self) -> Iterator[None]:
        try:
            yield
        except Exception as exc:
            self._write_failed(exc)
            raise
        self._write_succeeded()

    async def execute(self, sql: str, params: Params = ()) -> Result:
        """Run one statement on a writer (atomic on its own: autocommit)."""
        with self._writing():
            async with self._pool(self._writer_pool).acquire() as conn:
                return await _execute(conn, sql, params)

    async def write_fetchall(self, sql: str, params: Params = ()) -> list[Any]:
        """The rows of one statement that writes (``INSERT ... RETURNING``, a
        call of a function that stores), in autocommit on a writer: one round
        trip, atomic on its own (no BEGIN and COMMIT around it); ``fetchall``
        runs on the read-only readers."""
        return await self._write_fetch(self._writer_pool, sql, params)

    async def intake_fetchall(self, sql: str, params: Params = ()) -> list[Any]:
        """:meth:`write_fetchall` on the connection kept for intake's call of
        ``tierd_publish`` (see ``EventBus._insert_shared``), so that a batch of
        events never waits for a writer busy with other work."""
        return await self._write_fetch(self._intake_pool, sql, params)

    async def _write_fetch(self, pool: asyncpg.Pool | None, sql: str, params: Params) -> list[Any]:
        with self._writing():
            async with self._pool(pool).acquire() as conn:
                return await _fetch(conn, sql, params)

    async def executemany(self, sql: str, seq: Iterable[Params]) -> Result:
        """One statement for each parameter set, all in one transaction."""
        with self._writing():
            async with self._pool(self._writer_pool).acquire() as conn, conn.transaction():
                return await _executemany(conn, sql, seq)

    @contextlib.asynccontextmanager
    async def transaction(self) -> AsyncIterator[PgTransaction]:
        """A transaction on a writer of its own: committed at the end of the
        block, rolled back (nothing of it kept) if the block raises.

        Unlike SQLite's ``BEGIN IMMEDIATE`` it does not hold every other
        writer off: two transactions run side by side, and one that touches a
        row the other changed waits for it (READ COMMITTED).
        """
        with self._writing():
            async with self._pool(self._writer_pool).acquire() as conn, conn.transaction():
                yield PgTransaction(conn)

    # --- migrations ----------------------------------------------------------------

    async def migration_status(self, migrations: dict[str, list[str]]) -> list[dict]:
        """For each namespace: applied and available migration numbers (as Database's)."""
        async with self._pool(self._writer_pool).acquire() as conn:
            await ensure_migrations_table(conn)
            return await self._status(conn, migrations)

    async def _status(self, conn: asyncpg.Connection, migrations: dict[str, list[str]]) -> list[dict]:
        rows = await conn.fetch("SELECT namespace, MAX(version) AS v FROM schema_migrations GROUP BY namespace")
        applied = {row["namespace"]: row["v"] for row in rows}
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
        """Apply every migration not yet recorded, each in its own transaction.

        PostgreSQL's DDL is transactional: a script that fails half-way
        leaves nothing behind, and :class:`MigrationFailed` says which one it
        was. Nodes starting together take turns (an advisory lock), so each
        migration is applied once per database.
        """
        done = []
        async with self._pool(self._writer_pool).acquire() as conn:
            await conn.execute("SELECT pg_advisory_lock($1)", MIGRATION_LOCK)
            try:
                await ensure_migrations_table(conn)
                for status in await self._status(conn, migrations):
                    ns = status["namespace"]
                    for version in range(status["applied"] + 1, status["available"] + 1):
                        try:
                            async with conn.transaction():
                                # The script as one simple-protocol call: several statements, no parameters.
                                await conn.execute(migrations[ns][version - 1])
                                await conn.execute(
                                    "INSERT INTO schema_migrations(namespace, version, applied_at) VALUES ($1,$2,$3)",
                                    ns,
                                    version,
                                    time.time(),
                                )
                        except asyncpg.PostgresError as exc:
                            raise MigrationFailed(ns, version, exc) from exc
                        log.info("applied migration %s %d", ns, version)
                        done.append((ns, version))
            finally:
                await conn.execute("SELECT pg_advisory_unlock($1)", MIGRATION_LOCK)
        return done

    # --- pruning and space -----------------------------------------------------------

    async def delete_in_slices(self, sql: str, params: Mapping[str, Any] | None = None) -> int:
        """Run a DELETE a slice at a time until nothing is left; the rows deleted.

        The same contract as :meth:`tierd.core.storage.Database.delete_in_slices`
        (``sql`` deletes at most ``:slice`` rows, e.g. ``... WHERE id IN (SELECT
        id ... ORDER BY id LIMIT :slice)``, which PostgreSQL runs as it is), and
        the same pacing. Space is given back by autovacuum, not here.
        """
        size, removed = 256, 0
        while True:
            started = time.monotonic()
            result = await self.execute(sql, {**(params or {}), "slice": size})
            took = time.monotonic() - started
            removed += result.rowcount
            if result.rowcount < size:
                return removed
            size = max(16, min(size * 2, 50_000, int(size * SLICE_BUDGET / max(took, 1e-4)) or 1))
            await asyncio.sleep(took * SLICE_PAUSE)

    async def space(self) -> dict[str, int]:
        """The database's size, in the keys of Database.space (its pages of
        ``block_size`` bytes; no free-list or auto-vacuum mode to speak of:
        PostgreSQL reuses freed space itself) and in ``bytes``."""
        row = await self.lookups.fetchone(
            "SELECT pg_database_size(current_database()) AS bytes, current_setting('block_size')::int AS page_size"
        )
        assert row is not None  # a SELECT of functions always answers a row
        size, page = int(row["bytes"]), int(row["page_size"])
        return {"page_count": size // page, "freelist_count": 0, "page_size": page, "auto_vacuum": 0, "bytes": size}
