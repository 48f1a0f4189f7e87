"""The reports plugin on a real PostgreSQL (issue 15): its migrations build the
tables SQLite's do, every statement of ``store.py`` works there, and a report
compiled for PostgreSQL answers the rows the same report answers on SQLite
(same data in both), read through ``pgread`` as a run reads them.

One throw-away server for the module (:class:`tierd.testing.PostgresServer`),
a fresh database per test; skipped, saying why, where PostgreSQL is missing.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import itertools
import sqlite3
from decimal import Decimal

import pytest

from tierd.core.pg import PgDatabase
from tierd.core.registry import Column, ReportSource
from tierd.core.storage import Database, QueryTimeout, migrations_for
from tierd.plugins.reports import pgread, store, tierd_migrations
from tierd.plugins.reports.builder import ReportTooLarge, build_report, stream
from tierd.testing import PostgresServer

pytestmark = pytest.mark.skipif(not PostgresServer.available(), reason=PostgresServer.MISSING)

_names = itertools.count(1)
#: 2026-11-10T00:00:00Z
T0 = dt.datetime(2026, 11, 10, tzinfo=dt.UTC).timestamp()
DAY = 86400.0
NOW = T0 + 10 * DAY + 3600


@pytest.fixture(scope="module")
def pg_server():
    with PostgresServer() as server:
        yield server


@pytest.fixture
async def pg(pg_server):
    """A new empty database with the reports plugin's PostgreSQL migrations."""
    db = await PgDatabase(pg_server.create_database(f"r{next(_names)}"), readers=2).open()
    await db.migrate(migrations_for(tierd_migrations(), "postgresql"))
    yield db
    await db.close()


@pytest.fixture
async def lite(tmp_path):
    db = await Database(str(tmp_path / "tierd.db")).open()
    await db.migrate(migrations_for(tierd_migrations(), "sqlite"))
    yield db
    await db.close()


# --- migrations ------------------------------------------------------------------------


def test_both_dialects_are_declared_numbered_alike():
    declared = tierd_migrations()["reports"]
    assert declared["sqlite"] is store.MIGRATIONS  # existing databases applied it: unchanged
    assert len(declared["postgresql"]) == len(declared["sqlite"])


async def test_postgresql_migrations_build_the_tables_columns_and_indexes_of_sqlite(pg, lite):
    for table in ("report_runs", "report_schedules", "report_files"):
        pg_columns = [
            r["column_name"]
            for r in await pg.fetchall(
                "SELECT column_name FROM information_schema.columns WHERE table_name=? ORDER BY ordinal_position",
                (table,),
            )
        ]
        lite_columns = [r["name"] for r in await lite.fetchall(f"SELECT name FROM pragma_table_info('{table}')")]
        assert pg_columns == lite_columns
    pg_indexes = {
        r["indexname"] for r in await pg.fetchall("SELECT indexname FROM pg_indexes WHERE tablename='report_runs'")
    }
    lite_indexes = {
        r["name"]
        for r in await lite.fetchall("SELECT name FROM sqlite_master WHERE type='index' AND tbl_name='report_runs'")
        if not r["name"].startswith("sqlite_autoindex")
    }
    assert lite_indexes <= pg_indexes
    status = await pg.migration_status(migrations_for(tierd_migrations(), "postgresql"))
    assert status == [{"namespace": "reports", "applied": 2, "available": 2, "pending": 0}]


# --- several nodes ------------------------------------------------------------------------


async def test_a_node_makes_again_only_the_runs_of_nodes_that_are_gone(pg, pg_server):
    """At start (and every few seconds) a node takes over the running runs of nodes
    that are gone and of its own name, never those of a node still connected."""
    other = await PgDatabase(pg.url, readers=1, node="live-node:1").open()
    try:
        for run_id in ("rpt_mine", "rpt_live", "rpt_dead"):
            assert await store.insert_run(pg, _run(run_id))
        assert await store.claim(pg, "rpt_mine", T0)
        assert await store.claim(other, "rpt_live", T0)
        assert await store.claim(pg, "rpt_dead", T0)
        await pg.execute("UPDATE report_runs SET claimed_by='dead-node:2' WHERE id='rpt_dead'")
        # Every few seconds: a gone node's run only, once its grace is over.
        assert await store.recover(pg, 2, T0 + 1, own=False, grace=3) == (0, 0)
        assert await store.recover(pg, 2, T0 + 5, own=False, grace=3) == (1, 0)
        assert (await store.get(pg, "rpt_dead"))["status"] == "pending"
        assert (await store.get(pg, "rpt_mine"))["status"] == "running"
        # At start: this node's own name too; the live node's run is left alone.
        assert await store.recover(pg, 2, T0 + 5) == (1, 0)
        statuses = {r["id"]: r["status"] for r in await store.page(pg, None, None, 10)}
        assert statuses == {"rpt_mine": "pending", "rpt_live": "running", "rpt_dead": "pending"}
    finally:
        await other.close()


async def test_a_file_is_kept_in_parts_and_read_back_whole(pg):
    content = bytes(range(256)) * (store.FILE_PART * 5 // 2 // 256)  # 2.5 parts

    async def parts(data: bytes):
        for at in range(0, len(data), store.FILE_PART):
            yield data[at : at + store.FILE_PART]

    assert await store.insert_run(pg, _run("rpt_f"))
    assert await store.store_file(pg, "rpt_f", parts(b"an older attempt")) == 1
    assert await store.store_file(pg, "rpt_f", parts(content)) == 3  # made again: replaced
    back, part = b"", 0
    while (chunk := await store.file_part(pg, "rpt_f", part)) is not None:
        back, part = back + chunk, part + 1
    assert back == content
    assert await store.store_file(pg, "rpt_f", parts(b"")) == 1  # an empty file is a file
    assert await store.file_part(pg, "rpt_f", 0) == b""
    assert await store.delete_runs(pg, ["rpt_f"]) == 1
    assert await store.file_part(pg, "rpt_f", 0) is None  # gone with its run


# --- store.py ----------------------------------------------------------------------------


def _run(run_id: str, tenant: str = "acme", **more) -> dict:
    return {
        "id": run_id,
        "tenant_id": tenant,
        "reports": ["event_volume"],
        "params": {"event_volume": {"from": "2026-11-01"}},
        "format": "csv",
        "trigger": "api",
        "created_at": T0,
        **more,
    }


async def test_store_runs_through_their_life_on_postgresql(pg):
    assert await store.insert_run(pg, _run("rpt_1"))
    assert await store.insert_run(pg, _run("rpt_2", "globex"))
    due = {"schedule": "weekly", "dedup_key": "schedule:weekly:1", "due_at": T0, "trigger": "schedule"}
    assert await store.insert_run(pg, _run("rpt_3", **due, deliver={"to": ["ops"]}))
    # A schedule's run is made once, however many timers fire (ON CONFLICT DO NOTHING).
    assert not await store.insert_run(pg, _run("rpt_4", **due))
    assert await store.get(pg, "rpt_4") is None

    row = await store.get(pg, "rpt_1", tenant="acme")
    assert row["status"] == "pending" and row["reports"] == '["event_volume"]' and row["attempts"] == 0
    assert await store.get(pg, "rpt_2", tenant="acme") is None  # another tenant's

    assert [r["id"] for r in await store.page(pg, None, None, 10)] == ["rpt_3", "rpt_2", "rpt_1"]
    assert [r["id"] for r in await store.page(pg, "acme", None, 10)] == ["rpt_3", "rpt_1"]
    newest = (await store.page(pg, "acme", None, 1))[0]
    assert [r["id"] for r in await store.page(pg, "acme", newest["seq"], 10)] == ["rpt_1"]
    assert [r["id"] for r in await store.waiting(pg, 2)] == ["rpt_1", "rpt_2"]

    assert await store.claim(pg, "rpt_1", T0 + 1)
    assert not await store.claim(pg, "rpt_1", T0 + 2)  # taken already
    assert [r["id"] for r in await store.page(pg, None, None, 10, status="running")] == ["rpt_1"]
    await store.release(pg, "rpt_1")  # a shutdown: pending again, the attempt not counted
    row = await store.get(pg, "rpt_1")
    assert (row["status"], row["attempts"], row["started_at"]) == ("pending", 0, None)

    assert await store.claim(pg, "rpt_1", T0 + 3)
    await store.set_file(pg, "rpt_1", file_path="/tmp/x.csv", file_name="x.csv", media_type="text/csv", size=12, rows=2)
    await store.finish(pg, "rpt_1", "delivered", T0 + 4, error="", delivery={"directory": "/srv"}, size=12, rows=2)
    row = await store.get(pg, "rpt_1")
    assert (row["status"], row["size"], row["rows"], row["finished_at"]) == ("delivered", 12, 2, T0 + 4)
    assert row["delivery"] == '{"directory":"/srv"}'

    # A crash: runs left running go back to pending while they have attempts left, else fail.
    assert await store.claim(pg, "rpt_2", T0 + 5)
    assert await store.claim(pg, "rpt_3", T0 + 5)
    await pg.execute("UPDATE report_runs SET attempts=2 WHERE id='rpt_3'")
    assert await store.recover(pg, 2, T0 + 6) == (1, 1)
    assert (await store.get(pg, "rpt_2"))["status"] == "pending"
    failed = await store.get(pg, "rpt_3")
    assert failed["status"] == "failed" and "2 times" in failed["error"]
    assert (await store.last_of_schedule(pg, "weekly"))["id"] == "rpt_3"

    old = await store.expired(pg, T0 + 100)
    assert [r["id"] for r in old] == ["rpt_1", "rpt_3"]
    assert await store.delete_runs(pg, [r["id"] for r in old]) == 2
    assert await store.delete_runs(pg, []) == 0
    assert [r["id"] for r in await store.page(pg, None, None, 10)] == ["rpt_2"]


async def test_schedule_known_since_is_recorded_once_on_postgresql(pg):
    assert await store.schedule_known_since(pg, "weekly", T0) == T0
    assert await store.schedule_known_since(pg, "weekly", T0 + 50) == T0


# --- the builder: the same report, the same rows on both backends -------------------------

TABLE = """
CREATE TABLE rpt_test_rows (
    tenant_id TEXT NOT NULL, name TEXT, amount TEXT, n {int}, ok {int}, at {real}, day TEXT
)
"""
SOURCE = ReportSource(
    name="test.rows",
    description="rows of every type",
    sql="SELECT tenant_id AS tenant, name, amount, n, ok, at, day FROM rpt_test_rows",
    columns=(
        Column("name", "text", ""),
        Column("amount", "decimal", ""),
        Column("n", "integer", ""),
        Column("ok", "boolean", ""),
        Column("at", "instant", ""),
        Column("day", "date", ""),
    ),
)
ROWS = [
    ("acme", "a", "10.00", 3, 1, T0 + 10, "2026-11-10"),
    ("acme", "a", "0.125", 0, 0, T0 + DAY - 1800, "2026-11-11"),  # 23:30 UTC: the 11th in Zurich
    ("acme", "b", "2.345", 7, 1, T0 + 8 * DAY, "2026-11-16"),
    ("acme", "b", "-2.355", None, 0, T0 + 9 * DAY + 5, None),
    ("acme", "c", None, 5, 1, None, "2026-10-31"),
    ("acme", "Ç", "1000000000000.01", 2, 0, T0 - 40 * DAY, "2026-09-30"),
    ("globex", "a", "777.77", 9, 1, T0 + 20, "2026-11-10"),
]
#: Each a definition's changes over "every row's name" (the report's parts under test).
DEFINITIONS = {
    "decimals": {
        "columns": [
            "name",
            {"name": "total", "expr": "sum(amount)"},
            {"name": "lowest", "expr": "min(amount)"},
            {"name": "highest", "expr": "max(amount)"},
            {"name": "median", "expr": "p50(amount)"},
            {"name": "p95", "expr": "p95(amount)"},
            {"name": "rows", "expr": "count()"},
            {"name": "priced", "expr": "count(amount)"},
        ],
        "group_by": ["name"],
        "order_by": ["name"],
    },
    "decimal_arithmetic": {
        "columns": [
            "name",
            "amount",
            {"name": "gross", "expr": "amount * 1.2 + 1 - n"},
            {"name": "rounded", "expr": "round(amount, 2)"},
            {"name": "whole", "expr": "round(amount)"},
            {"name": "size", "expr": "abs(amount)"},
            {"name": "big", "expr": "amount > 5"},
            {"name": "known", "expr": "amount in (10, 2.345)"},
            {"name": "either", "expr": "coalesce(amount, n, 0)"},
            {"name": "band", "expr": "case when amount >= 10 then amount else 0 end"},
        ],
        "filters": ["amount between -100 and :cap"],
        "parameters": {"cap": {"type": "decimal", "default": "100000000000000"}},
        "order_by": ["name", "amount"],
    },
    "numbers": {
        "columns": [
            "name",
            {"name": "total", "expr": "sum(n)"},
            {"name": "mean", "expr": "avg(n)"},
            {"name": "half", "expr": "sum(n) / 2"},
            {"name": "by_zero", "expr": "sum(n) / 0"},
            {"name": "p50", "expr": "p50(n)"},
            {"name": "kinds", "expr": "count_distinct(ok)"},
            {"name": "r", "expr": "round(avg(n), 1)"},
        ],
        "group_by": ["name"],
        "order_by": ["-total", "name"],
    },
    "conditions": {
        "columns": [
            "name",
            {"name": "oks", "expr": "count(ok)"},
            {"name": "true_oks", "expr": "sum(ok = true)"},
            {"name": "share", "expr": "avg(ok)"},
            {"name": "all_ok", "expr": "min(ok)"},
            {"name": "any_ok", "expr": "max(ok)"},
            {"name": "ones", "expr": "count(ok = 1)"},
            {"name": "listed", "expr": "count(ok in (1))"},
            {"name": "unlisted", "expr": "count(ok not in (1, null))"},
        ],
        "filters": ["not (name = 'zzz') or ok", "n is not null or n is null"],
        "group_by": ["name"],
        "order_by": ["name"],
    },
    "days_in_zurich": {
        "columns": [
            {"name": "d", "expr": "day(at)"},
            {"name": "w", "expr": "week(at)"},
            {"name": "m", "expr": "month(at)"},
            {"name": "y", "expr": "year(day)"},
            {"name": "rows", "expr": "count()"},
        ],
        "parameters": {"from": {"type": "date"}, "to": {"type": "date"}},
        "filters": ["at >= :from", "at <= :to"],
        "group_by": ["d", "w", "m", "y"],
        "order_by": ["day(at)", "-rows"],
    },
    "ages": {
        "columns": [
            "name",
            {"name": "since", "expr": "age_days(at)"},
            {"name": "dated", "expr": "age_days(day)"},
            {"name": "late", "expr": "day > '2026-11-10'"},
            {"name": "label", "expr": "lower(name)"},
            {"name": "shout", "expr": "upper(coalesce(name, 'none'))"},
        ],
        "filters": ["name in ('a', 'b', 'c', :who)"],
        "parameters": {"who": {"type": "text", "default": "Ç"}},
        "order_by": ["name", "since"],
    },
}


def _same(value):
    """A cell as compared across backends: numbers by value (a decimal quotient's
    digits differ in number, see the builder's docstring), floats to 9 places."""
    if isinstance(value, str):
        try:
            return ("n", round(Decimal(value), 12))
        except ArithmeticError:
            return value
    if isinstance(value, float):
        return ("n", round(Decimal(repr(value)), 9))
    if isinstance(value, int) and not isinstance(value, bool):
        return ("n", Decimal(value))
    return value


@pytest.fixture
async def both(pg, tmp_path):
    """SQLite and PostgreSQL with the same rows in ``rpt_test_rows``."""
    path = tmp_path / "rows.db"
    conn = sqlite3.connect(path)
    with conn:
        conn.execute(TABLE.format(int="INTEGER", real="REAL"))
        conn.executemany("INSERT INTO rpt_test_rows VALUES (?,?,?,?,?,?,?)", ROWS)
    conn.close()
    await pg.execute(TABLE.format(int="BIGINT", real="DOUBLE PRECISION"))
    await pg.executemany("INSERT INTO rpt_test_rows VALUES (?,?,?,?,?,?,?)", ROWS)
    return path, pg


async def _read_pg(pg, report, query, budget=30.0):
    return await pgread.read_in_thread(pg, lambda reader: list(stream(reader, report, query)), budget=budget)


def _read_sqlite(path, report, query):
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        return list(stream(conn, report, query))
    finally:
        conn.close()


def _report(name: str, changes: dict):
    spec = {"source": "test.rows", "columns": ["name"], **changes}
    return build_report(name, spec, {"test.rows": SOURCE})


@pytest.mark.parametrize("name", sorted(DEFINITIONS))
@pytest.mark.parametrize("tenant", ["acme", None])
async def test_a_report_answers_the_same_rows_on_both_backends(both, name, tenant):
    path, pg = both
    report = _report(name, DEFINITIONS[name])
    zone = "Europe/Zurich" if name == "days_in_zurich" else "UTC"
    raw = {"from": "2026-11-10", "to": "2026-11-18"} if name == "days_in_zurich" else {}
    params = report.parse_params(raw, timezone=zone, today=dt.date(2026, 11, 20))
    on_pg = await _read_pg(pg, report, report.compile(tenant, params, 1000, zone, NOW, dialect="postgresql"))
    on_lite = _read_sqlite(path, report, report.compile(tenant, params, 1000, zone, NOW))
    assert on_lite, "the definition selects rows"
    assert [[_same(v) for v in row] for row in on_pg] == [[_same(v) for v in row] for row in on_lite]


async def test_postgresql_values_come_in_the_columns_forms(both):
    """Decimals as exact text, counts as ints, conditions as 0/1, local days as ISO text."""
    _, pg = both
    report = _report(
        "forms",
        {
            "columns": [
                "name",
                {"name": "total", "expr": "sum(amount)"},
                {"name": "rows", "expr": "count()"},
                {"name": "some_ok", "expr": "max(ok)"},
                {"name": "first", "expr": "min(day(at))"},
                {"name": "rounded", "expr": "round(sum(amount), 2)"},
            ],
            "group_by": ["name"],
            "order_by": ["name"],
        },
    )
    query = report.compile("acme", report.parse_params({}), 1000, "Europe/Zurich", NOW, dialect="postgresql")
    assert await _read_pg(pg, report, query) == [
        ("a", "10.125", 2, 1, "2026-11-10", "10.12"),  # 10.125 to even: 10.12, as Python's Decimal
        ("b", "-0.010", 2, 1, "2026-11-18", "-0.01"),
        ("c", None, 1, 1, None, None),
        ("Ç", "1000000000000.01", 1, 0, "2026-10-01", "1000000000000.01"),
    ]


async def test_hostile_parameters_are_values_on_postgresql(both):
    _, pg = both
    report = _report(
        "hostile",
        {"parameters": {"who": {"type": "text"}}, "filters": ["name = :who"], "columns": ["name", "amount"]},
    )
    for value in ["'", "x' OR '1'='1", "'; DROP TABLE rpt_test_rows; --", "a') OR 1=1 --", "$1", ":who", "?"]:
        query = report.compile("acme", report.parse_params({"who": value}), 1000, dialect="postgresql")
        assert await _read_pg(pg, report, query) == []
    assert len(await pg.fetchall("SELECT * FROM rpt_test_rows")) == len(ROWS)


async def test_too_many_rows_and_the_budget_on_postgresql(both):
    _, pg = both
    report = _report("all", {"columns": ["name"]})
    query = report.compile(None, report.parse_params({}), 3, dialect="postgresql")
    with pytest.raises(ReportTooLarge):
        await _read_pg(pg, report, query)
    slow = ReportSource(
        name="test.slow",
        description="a query that takes its time",
        sql="SELECT 'acme' AS tenant, 'x' AS name FROM pg_sleep(20)",
        columns=(Column("name", "text", ""),),
    )
    report = build_report("slow", {"source": "test.slow", "columns": ["name"]}, {"test.slow": slow})
    query = report.compile("acme", report.parse_params({}), 10, dialect="postgresql")
    started = asyncio.get_running_loop().time()
    with pytest.raises(QueryTimeout):
        await _read_pg(pg, report, query, budget=0.5)
    assert asyncio.get_running_loop().time() - started < 10  # cancelled on the server, not waited for


async def test_explain_shows_the_postgresql_sql(both):
    report = _report("decimals", DEFINITIONS["decimals"])
    text = report.explain("acme", report.parse_params({}), dialect="postgresql")
    assert 'CAST(src."amount" AS NUMERIC)' in text and "tierd_" not in text
    assert "tierd_dsum" in report.explain("acme", report.parse_params({}))


# --- the store's reads walk an index on PostgreSQL too ------------------------------------


class _Recording:
    """A database that notes each statement ``store.py`` runs (and runs it)."""

    def __init__(self, db) -> None:
        self.db = db
        self.dialect = db.dialect
        self.node = db.node
        self.statements: list[tuple[str, object]] = []

    @contextlib.asynccontextmanager
    async def transaction(self):
        async with self.db.transaction() as tx:
            yield _RecordingTx(tx, self.statements)

    async def fetchall(self, sql, params=()):
        self.statements.append((sql, params))
        return await self.db.fetchall(sql, params)

    async def fetchone(self, sql, params=()):
        self.statements.append((sql, params))
        return await self.db.fetchone(sql, params)

    async def execute(self, sql, params=()):
        self.statements.append((sql, params))
        return await self.db.execute(sql, params)


class _RecordingTx:
    def __init__(self, tx, statements) -> None:
        self.tx, self.statements = tx, statements

    async def execute(self, sql, params=()):
        self.statements.append((sql, params))
        return await self.tx.execute(sql, params)


async def test_the_store_reads_and_updates_through_indexes_on_postgresql(pg):
    """The counterpart of the SQLite plan check in test_reports_runs.py: with
    sequential scans and sorts priced out, every statement of a list, a claim or
    the retention still plans without either, so an index serves it."""
    for i in range(30):
        due = {"schedule": "daily", "dedup_key": f"schedule:daily:{i}"} if i % 3 == 0 else {}
        await store.insert_run(pg, _run(f"rpt_{i:02}", "acme" if i % 2 else "globex", **due))
    recording = _Recording(pg)
    await store.page(recording, "acme", None, 5)
    await store.page(recording, "acme", 20, 5, status="failed")
    await store.page(recording, None, None, 5)
    await store.page(recording, None, 20, 5, status="delivered")
    await store.waiting(recording, 5)
    await store.last_of_schedule(recording, "daily")
    await store.expired(recording, T0)
    await store.get(recording, "rpt_03", "acme")
    await store.claim(recording, "rpt_05", T0)
    await store.delete_runs(recording, ["rpt_07", "rpt_08"])
    assert len(recording.statements) == 11  # delete_runs: the runs and their files
    async with pg.transaction() as tx:
        await tx.execute("SET LOCAL enable_seqscan = off")
        await tx.execute("SET LOCAL enable_sort = off")
        for sql, params in recording.statements:
            plan = "\n".join(r[0] for r in await tx.fetchall("EXPLAIN " + sql, params))
            assert "Seq Scan" not in plan and "Sort" not in plan, f"{sql}\n{plan}"
            assert "Index" in plan, f"{sql}\n{plan}"


async def test_a_cancelled_read_ends_its_query_on_the_server(both):
    """A run stopped (shutdown, or its exporter stuck past the grace) cuts its
    connection: the query does not go on on the server."""
    _, pg = both
    slow = ReportSource(
        name="test.slow",
        description="a query that takes its time",
        sql="SELECT 'acme' AS tenant, 'x' AS name FROM pg_sleep(30)",
        columns=(Column("name", "text", ""),),
    )
    report = build_report("slow", {"source": "test.slow", "columns": ["name"]}, {"test.slow": slow})
    query = report.compile("acme", report.parse_params({}), 10, dialect="postgresql")
    reading = asyncio.ensure_future(_read_pg(pg, report, query, budget=None))

    async def sessions() -> int:
        row = await pg.fetchone(
            "SELECT COUNT(*) AS n FROM pg_stat_activity WHERE application_name = 'tierd/reports' AND state = 'active'"
        )
        return int(row["n"])

    for _ in range(100):
        if await sessions() == 1:
            break
        await asyncio.sleep(0.05)
    assert await sessions() == 1  # the report's query runs
    reading.cancel()
    with pytest.raises(asyncio.CancelledError):
        await reading
    for _ in range(100):
        if await sessions() == 0:
            break
        await asyncio.sleep(0.05)
    assert await sessions() == 0
