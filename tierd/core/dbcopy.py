"""``tierd db copy``: a stopped node's SQLite database into an empty PostgreSQL one.

The whole copy is **one PostgreSQL transaction**: the migrations that build
the schema, every table's rows, the identity sequences. If anything fails
(a value PostgreSQL refuses, the connection dropping, Ctrl-C) the target is
left exactly as it was, empty, so the operator fixes the cause and runs the
command again, instead of finding half a copy that the "target is not empty"
check then refuses. PostgreSQL keeps no undo log that a long transaction
could overflow (rolled back rows are just dead tuples), so one transaction
costs nothing that several would not.

Rows go over with asyncpg's binary ``COPY`` (``copy_records_to_table``) in
batches, each value converted to what its PostgreSQL column's type takes
(SQLite's type affinity lets an INTEGER column hold ``2.0`` or ``'7'``;
asyncpg's encoders refuse or truncate those). Triggers are off while the
rows go in: counters tables are copied as they are, not counted again.
The SQLite file is only read.
"""

from __future__ import annotations

import asyncio
import graphlib
import sqlite3
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import asyncpg

from tierd.core.pg import MIGRATION_LOCK, PgDatabase, ensure_migrations_table
from tierd.core.storage import safe_url

#: Rows per COPY: large enough that a round trip is amortised, small enough
#: that a batch of wide rows stays a few MB in memory.
BATCH = 5000

#: ``progress(table, rows copied so far, rows in the table)``, called after each batch.
Progress = Callable[[str, int, int], None]


class CopyRefused(Exception):
    """The copy cannot be made (or was not made); the message says why and what to do."""


@dataclass
class TableCount:
    """One table's rows on each side after the copy."""

    table: str
    sqlite: int
    postgresql: int

    @property
    def ok(self) -> bool:
        return self.sqlite == self.postgresql


@dataclass
class CopyResult:
    tables: list[TableCount]
    seconds: float
    #: Text values that were not UTF-8 (stored before intake refused lone
    #: surrogates): copied with U+FFFD in place of the bad bytes.
    not_utf8: int

    @property
    def ok(self) -> bool:
        return all(t.ok for t in self.tables)

    def as_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "seconds": round(self.seconds, 1),
            "not_utf8": self.not_utf8,
            "tables": [asdict(t) | {"ok": t.ok} for t in self.tables],
        }


# --- the SQLite side ----------------------------------------------------------------


class _Source:
    """The SQLite database, read-only, its text decoded leniently (and counted)."""

    def __init__(self, path: str | Path) -> None:
        if not Path(path).is_file():
            raise CopyRefused(f"{path}: no such database")
        self.not_utf8 = 0
        self.conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, check_same_thread=False)
        self.conn.text_factory = self._text

    def _text(self, raw: bytes) -> str:
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            self.not_utf8 += 1
            return raw.decode("utf-8", "replace")

    def close(self) -> None:
        self.conn.close()

    def tables(self) -> list[str]:
        rows = self.conn.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite\\_%' ESCAPE '\\'"
            " AND name <> 'schema_migrations' ORDER BY name"
        ).fetchall()
        return [r[0] for r in rows]

    def versions(self) -> dict[str, int]:
        try:
            rows = self.conn.execute("SELECT namespace, MAX(version) FROM schema_migrations GROUP BY namespace")
        except sqlite3.OperationalError:  # no such table: never migrated
            return {}
        return {ns: v for ns, v in rows.fetchall()}

    def count(self, table: str) -> int:
        return int(self.conn.execute(f'SELECT COUNT(*) FROM "{table}"').fetchone()[0])

    def last_id(self, table: str) -> int | None:
        """The largest id AUTOINCREMENT ever gave in ``table`` (deleted rows
        included), or None: an id is never given twice, and a consumer's
        cursor may stand past the largest id left (a tenant's newest events deleted)."""
        try:
            row = self.conn.execute("SELECT seq FROM sqlite_sequence WHERE name = ?", (table,)).fetchone()
        except sqlite3.OperationalError:  # no such table: no AUTOINCREMENT anywhere
            return None
        return int(row[0]) if row else None

    def columns(self, table: str) -> tuple[list[str], list[str]]:
        """(stored columns, primary-key columns in key order); generated columns
        are hidden from table_info, as they should be: PostgreSQL computes its own."""
        info = self.conn.execute(f'PRAGMA table_info("{table}")').fetchall()
        key = [name for _, name, _, _, _, pk in sorted(info, key=lambda r: r[5]) if pk]
        return [r[1] for r in info], key

    def batches(self, table: str, columns: list[str], key: list[str]) -> Iterator[list[tuple]]:
        """The rows in primary-key order (PostgreSQL's heap then starts in index order)."""
        cols = ", ".join(f'"{c}"' for c in columns)
        order = f" ORDER BY {', '.join(chr(34) + k + chr(34) for k in key)}" if key else ""
        cursor = self.conn.execute(f'SELECT {cols} FROM "{table}"{order}')
        while batch := cursor.fetchmany(BATCH):
            yield batch


# --- checks -------------------------------------------------------------------------


def check_versions(applied: dict[str, int], migrations: dict[str, list[str]]) -> None:
    """Refuse unless the SQLite database has exactly the code's migrations:
    PostgreSQL's version N builds what SQLite's version N built, so the
    tables match only when both stand at the same versions."""
    behind = [f"{ns} {applied.get(ns, 0)} < {len(s)}" for ns, s in migrations.items() if applied.get(ns, 0) < len(s)]
    if behind:
        raise CopyRefused(
            f"the SQLite database is behind this tierd ({', '.join(behind)}): run `tierd migrate` first "
            "(daemon stopped), then copy"
        )
    ahead = [
        f"{ns} {v} > {len(migrations[ns])}" for ns, v in applied.items() if ns in migrations and v > len(migrations[ns])
    ]
    if ahead:
        raise CopyRefused(f"the SQLite database was migrated by a newer tierd ({', '.join(ahead)}): copy with that one")
    unknown = sorted(ns for ns in applied if ns not in migrations)
    if unknown:
        raise CopyRefused(
            f"the SQLite database has tables of {', '.join(unknown)}, which no loaded plugin provides: "
            "enable the plugin (if it has PostgreSQL migrations) so that its tables come along"
        )


def _convert(pg_type: str) -> Callable[[Any], Any]:
    """A converter from what SQLite stored to what asyncpg's encoder of ``pg_type`` takes."""
    if pg_type in ("bigint", "integer", "smallint"):

        def to_int(v: Any) -> Any:
            if isinstance(v, float) and not v.is_integer():
                raise ValueError("not an integer")  # asyncpg would truncate it silently
            return int(v) if isinstance(v, (float, str, bool)) else v

        return to_int
    if pg_type in ("double precision", "real"):
        return lambda v: float(v) if isinstance(v, (int, str)) else v
    if pg_type == "numeric":
        return lambda v: Decimal(str(v))
    if pg_type == "boolean":
        return bool
    if pg_type == "bytea":
        return lambda v: v.encode() if isinstance(v, str) else bytes(v)
    return lambda v: v if isinstance(v, str) else (v.decode("utf-8", "replace") if isinstance(v, bytes) else str(v))


def _converted(table: str, columns: list[str], converters: list[Callable[[Any], Any]], rows: list[tuple]) -> list:
    try:
        return [tuple(None if v is None else f(v) for f, v in zip(converters, row, strict=True)) for row in rows]
    except (ValueError, TypeError, ArithmeticError):
        pass
    for row in rows:  # name the value PostgreSQL could not take
        for column, f, v in zip(columns, converters, row, strict=True):
            try:
                None if v is None else f(v)
            except (ValueError, TypeError, ArithmeticError) as exc:
                raise CopyRefused(f"{table}.{column}: the stored value {v!r} does not fit PostgreSQL ({exc})") from None
    raise AssertionError("unreachable")  # pragma: no cover


# --- the copy -----------------------------------------------------------------------


async def _connect(url: str) -> asyncpg.Connection:
    if not url.startswith(("postgresql://", "postgres://")):
        raise CopyRefused(f"--to takes a PostgreSQL URL (postgresql://user@host/db), not {safe_url(url)!r}")
    try:
        return await asyncpg.connect(url)
    except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, ValueError) as exc:
        raise CopyRefused(f"cannot connect to {safe_url(url)}: {exc}") from None


async def _existing(conn: asyncpg.Connection, names: list[str]) -> list[str]:
    rows = await conn.fetch(
        "SELECT table_name FROM information_schema.tables WHERE table_schema = current_schema()"
        " AND table_name = ANY($1::text[]) ORDER BY table_name",
        names,
    )
    return [r[0] for r in rows]


async def _pg_columns(conn: asyncpg.Connection) -> dict[str, dict[str, dict[str, Any]]]:
    """Each table's columns: data type, generated or not, serial/identity or not."""
    rows = await conn.fetch(
        "SELECT table_name, column_name, data_type, is_generated, is_identity, column_default"
        " FROM information_schema.columns WHERE table_schema = current_schema()"
    )
    tables: dict[str, dict[str, dict[str, Any]]] = {}
    for r in rows:
        tables.setdefault(r["table_name"], {})[r["column_name"]] = {
            "type": r["data_type"],
            "generated": r["is_generated"] == "ALWAYS",
            "sequence": r["is_identity"] == "YES" or (r["column_default"] or "").startswith("nextval("),
        }
    return tables


async def _fk_order(conn: asyncpg.Connection, tables: list[str]) -> list[str]:
    """``tables`` with each referenced table before those referencing it:
    without ``session_replication_role`` the foreign keys are checked as rows go in."""
    rows = await conn.fetch(
        "SELECT a.relname AS child, b.relname AS parent FROM pg_constraint c"
        " JOIN pg_class a ON a.oid = c.conrelid JOIN pg_class b ON b.oid = c.confrelid"
        " WHERE c.contype = 'f' AND a.relnamespace = current_schema()::regnamespace"
    )
    graph: dict[str, set[str]] = {t: set() for t in tables}
    for r in rows:
        if r["child"] in graph and r["parent"] in graph and r["child"] != r["parent"]:
            graph[r["child"]].add(r["parent"])
    sorter = graphlib.TopologicalSorter(graph)
    return list(sorter.static_order())


async def _triggers_off(conn: asyncpg.Connection, tables: list[str]) -> list[str]:
    """Stop triggers for this transaction; the tables whose triggers must be
    turned back on before commit (none when the session role did it).

    ``session_replication_role = replica`` needs a superuser (or a GRANT SET
    on it); a database owner who is neither turns off each table's own
    triggers instead (it owns the tables: the migrations just made them).
    Both are undone by a rollback.
    """
    try:
        async with conn.transaction():  # a savepoint: a refusal must not abort the copy
            await conn.execute("SET LOCAL session_replication_role = replica")
        return []
    except asyncpg.InsufficientPrivilegeError:
        pass
    rows = await conn.fetch(
        "SELECT DISTINCT c.relname FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid"
        " WHERE NOT t.tgisinternal AND c.relnamespace = current_schema()::regnamespace AND c.relname = ANY($1::text[])",
        tables,
    )
    with_triggers = sorted(r[0] for r in rows)
    for table in with_triggers:
        await conn.execute(f'ALTER TABLE "{table}" DISABLE TRIGGER USER')
    return with_triggers


async def _copy_table(
    conn: asyncpg.Connection,
    source: _Source,
    table: str,
    pg_cols: dict[str, dict[str, Any]],
    total: int,
    progress: Progress,
) -> None:
    columns, key = source.columns(table)
    missing = [c for c in columns if c not in pg_cols]
    if missing:
        raise CopyRefused(f"{table}: PostgreSQL's table has no column {', '.join(missing)}: the schemas differ")
    columns = [c for c in columns if not pg_cols[c]["generated"]]
    converters = [_convert(pg_cols[c]["type"]) for c in columns]
    # Rows a migration put in (defaults, seeds) give way to SQLite's, which are the truth.
    await conn.execute(f'DELETE FROM "{table}"')
    done = 0
    batches = source.batches(table, columns, key)
    # Read the next batch in a thread while the current one is copied.
    pending = asyncio.ensure_future(asyncio.to_thread(next, batches, None))
    while (rows := await pending) is not None:
        pending = asyncio.ensure_future(asyncio.to_thread(next, batches, None))
        try:
            await conn.copy_records_to_table(
                table, records=_converted(table, columns, converters, rows), columns=columns
            )
        except BaseException:
            pending.cancel()
            await asyncio.gather(pending, return_exceptions=True)  # the thread finishes its read
            raise
        done += len(rows)
        progress(table, done, total)
    if not done:
        progress(table, 0, total)  # a line for an empty table too
    for column, spec in pg_cols.items():
        if spec["sequence"]:  # the next id follows the largest ever given, as on SQLite
            largest = f'COALESCE(GREATEST((SELECT MAX("{column}") FROM "{table}"), $3::bigint), 0)'
            await conn.execute(
                f"SELECT setval(pg_get_serial_sequence($1, $2), {largest} + 1, false)",
                f'"{table}"',
                column,
                source.last_id(table),
            )


async def copy_database(
    sqlite_path: str | Path, url: str, migrations: dict[str, list[str]], progress: Progress | None = None
) -> CopyResult:
    """Copy the SQLite database at ``sqlite_path`` into the empty PostgreSQL
    database at ``url``, building its schema with ``migrations`` (every
    namespace's PostgreSQL scripts); then count each table's rows on both
    sides. Raises :class:`CopyRefused` when it cannot, leaving the target as
    it found it. The caller makes sure no daemon writes the SQLite file."""
    started = time.monotonic()
    report = progress or (lambda table, done, total: None)
    source = _Source(sqlite_path)
    try:
        check_versions(source.versions(), migrations)
        tables = source.tables()
        counts = {t: source.count(t) for t in tables}
        conn = await _connect(url)
        try:
            await _copy_all(conn, source, tables, counts, migrations, report)
        finally:
            await conn.close()
    finally:
        source.close()
    # Counted afresh, through the backend the daemon will use, after the commit.
    async with PgDatabase(url, readers=1, writers=1) as target:
        pending = [s for s in await target.migration_status(migrations) if s["pending"]]
        if pending:  # pragma: no cover - the migrations were committed with the rows
            raise CopyRefused(f"migrations not recorded on PostgreSQL: {pending}")
        result = []
        for table in tables:
            row = await target.fetchone(f'SELECT COUNT(*) AS n FROM "{table}"')
            result.append(TableCount(table, counts[table], int(row["n"])))
    return CopyResult(result, time.monotonic() - started, source.not_utf8)


async def _copy_all(
    conn: asyncpg.Connection,
    source: _Source,
    tables: list[str],
    counts: dict[str, int],
    migrations: dict[str, list[str]],
    progress: Progress,
) -> None:
    """Schema, rows and sequences in one transaction (see the module's docstring)."""
    async with conn.transaction():
        # A daemon started on the URL meanwhile waits for the schema instead of racing to build it.
        await conn.execute("SELECT pg_advisory_xact_lock($1)", MIGRATION_LOCK)
        present = await _existing(conn, [*tables, "schema_migrations"])
        if present:
            raise CopyRefused(
                f"the PostgreSQL database is not empty: it has tierd's table(s) {', '.join(present)}; "
                "copy into a new database (CREATE DATABASE ...) or drop them first"
            )
        await ensure_migrations_table(conn)
        for namespace, scripts in migrations.items():
            for version, script in enumerate(scripts, 1):
                try:
                    await conn.execute(script)
                except asyncpg.PostgresError as exc:
                    raise CopyRefused(f"PostgreSQL migration {namespace} {version} failed: {exc}") from None
                await conn.execute(
                    "INSERT INTO schema_migrations(namespace, version, applied_at) VALUES ($1, $2, $3)",
                    namespace,
                    version,
                    time.time(),
                )
        columns = await _pg_columns(conn)
        missing = [t for t in tables if t not in columns]
        if missing:
            raise CopyRefused(f"PostgreSQL's migrations build no table {', '.join(missing)}: the schemas differ")
        reenable = await _triggers_off(conn, tables)
        for table in await _fk_order(conn, tables):
            try:
                await _copy_table(conn, source, table, columns[table], counts[table], progress)
            except asyncpg.PostgresError as exc:  # e.g. a NUL character, which PostgreSQL's text refuses
                raise CopyRefused(f"{table}: PostgreSQL refused a row ({type(exc).__name__}: {exc})") from None
        for table in reenable:
            await conn.execute(f'ALTER TABLE "{table}" ENABLE TRIGGER USER')
