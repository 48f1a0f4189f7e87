"""PgDatabase, tierd's PostgreSQL storage (issue 15's foundation), against a real server.

One throw-away PostgreSQL for the module (:class:`tierd.testing.PostgresServer`)
and a fresh empty database per test. The placeholder translator's tests need no
server and always run.
"""

from __future__ import annotations

import asyncio
import itertools
import time

import asyncpg
import pytest

from tierd.core.pg import MigrationFailed, PgDatabase, translate
from tierd.core.storage import Database, QueryTimeout
from tierd.testing import PostgresServer

needs_pg = pytest.mark.skipif(not PostgresServer.available(), reason=PostgresServer.MISSING)

_names = itertools.count(1)


@pytest.fixture(scope="module")
def pg_server():
    with PostgresServer() as server:
        yield server


@pytest.fixture
def pg_url(pg_server):
    """The URL of a new empty database, for this test alone."""
    return pg_server.create_database(f"t{next(_names)}")


@pytest.fixture
async def db(pg_url):
    database = await PgDatabase(pg_url, readers=2).open()
    yield database
    await database.close()


# --- the placeholder translator ---------------------------------------------------------


def test_question_marks_become_numbered():
    t = translate("SELECT * FROM t WHERE a=? AND b IN (?, ?)")
    assert t.sql == "SELECT * FROM t WHERE a=$1 AND b IN ($2, $3)"
    assert t.args((1, "x", 2.5)) == [1, "x", 2.5]


def test_names_repeated_share_one_number_and_extra_keys_are_ignored():
    t = translate("UPDATE t SET a=:a WHERE a<:a OR b=:b")
    assert t.sql == "UPDATE t SET a=$1 WHERE a<$1 OR b=$2"
    assert t.args({"b": 2, "a": 1, "unused": 3}) == [1, 2]
    with pytest.raises(KeyError, match=":b"):
        t.args({"a": 1})


def test_literals_identifiers_comments_and_casts_are_left_alone():
    sql = (
        "SELECT 'it''s ? or :x', \"odd ? :col\", a::text, '{}'::jsonb -- what? :no\n"
        "FROM t /* :nor ? */ WHERE b=? AND c=$$ a ? :b $$"
    )
    t = translate(sql)
    assert t.sql == sql.replace("b=?", "b=$1")
    assert t.positional == 1


def test_numbered_question_marks_and_mixing_refused():
    assert translate("SELECT ?2, ?1").sql == "SELECT $2, $1"
    assert translate("SELECT ?2, ?1").positional == 2
    with pytest.raises(ValueError, match="either"):
        translate("SELECT ? , :a")


def test_wrong_parameters_are_named():
    with pytest.raises(TypeError, match="takes 2"):
        translate("SELECT ?, ?").args((1,))
    with pytest.raises(TypeError, match="mapping"):
        translate("SELECT :a").args((1,))


# --- against a real server ------------------------------------------------------------------


async def _table(db: PgDatabase) -> None:
    await db.execute("CREATE TABLE items (id BIGINT PRIMARY KEY, name TEXT NOT NULL, amount TEXT, at DOUBLE PRECISION)")


@needs_pg
async def test_statements_with_both_kinds_of_parameters(db):
    await _table(db)
    result = await db.execute("INSERT INTO items VALUES (?, ?, ?, ?)", (1, "one", "10.50", 1.5))
    assert result.rowcount == 1
    await db.execute(
        "INSERT INTO items VALUES (:id, :name, :amount, :at)", {"id": 2, "name": "two", "amount": None, "at": 3}
    )
    updated = await db.execute("UPDATE items SET name=name || '?' WHERE id>=:low", {"low": 1})
    assert updated.rowcount == 2
    rows = await db.fetchall("SELECT id, name FROM items WHERE name LIKE ? ORDER BY id", ("%?",))
    assert [tuple(r) for r in rows] == [(1, "one?"), (2, "two?")]
    assert (await db.fetchone("SELECT name FROM items WHERE id=:id", {"id": 3})) is None
    with pytest.raises(AttributeError, match="RETURNING"):
        _ = result.lastrowid


@needs_pg
async def test_parameter_types_are_strict(db):
    """What asyncpg takes for each column type (see tierd.core.pg's docstring)."""
    await _table(db)
    await db.execute("INSERT INTO items VALUES (?, ?, ?, ?)", (1, "x", "1", 2))  # an int for a double: fine
    with pytest.raises(asyncpg.DataError):
        await db.execute("INSERT INTO items VALUES (?, ?, ?, ?)", ("2", "x", "1", 2.0))  # a str for a bigint
    with pytest.raises(asyncpg.DataError):
        await db.execute("INSERT INTO items VALUES (?, ?, ?, ?)", (2, "x", "1", "2.0"))  # a str for a double
    # Beware: a float for a BIGINT is truncated without a word (asyncpg's int encoder).
    await db.execute("INSERT INTO items VALUES (?, ?, ?, ?)", (2.7, "x", "1", 2.0))
    assert (await db.fetchone("SELECT MAX(id) AS id FROM items"))["id"] == 2
    # A parameter whose type nothing tells (a bare SELECT ?) is text: cast it.
    with pytest.raises(asyncpg.DataError):
        await db.fetchone("SELECT ? AS n", (1,))
    assert (await db.fetchone("SELECT ?::bigint AS n", (1,)))["n"] == 1


@needs_pg
async def test_rows_behave_like_sqlite_rows(db):
    row = await db.fetchone("SELECT 1 AS x, 'a' AS y")
    assert row["x"] == 1 and row[0] == 1 and row[1] == "a"
    assert dict(row) == {"x": 1, "y": "a"}
    assert tuple(row) == (1, "a")
    assert list(row.keys()) == ["x", "y"]


@needs_pg
async def test_transaction_commits_and_rolls_back(db):
    await _table(db)
    async with db.transaction() as tx:
        await tx.execute("INSERT INTO items(id, name) VALUES (?, ?)", (1, "kept"))
        await tx.executemany("INSERT INTO items(id, name) VALUES (?, ?)", [(2, "b"), (3, "c")])
        assert (await tx.fetchone("SELECT COUNT(*) AS n FROM items"))["n"] == 3
    with pytest.raises(RuntimeError, match="boom"):
        async with db.transaction() as tx:
            await tx.execute("INSERT INTO items(id, name) VALUES (?, ?)", (4, "lost"))
            await tx.execute("UPDATE items SET name='changed' WHERE id=1")
            raise RuntimeError("boom")
    rows = await db.fetchall("SELECT id, name FROM items ORDER BY id")
    assert [tuple(r) for r in rows] == [(1, "kept"), (2, "b"), (3, "c")]
    # A failing statement rolls back the statements before it too.
    with pytest.raises(asyncpg.UniqueViolationError):
        async with db.transaction() as tx:
            await tx.execute("INSERT INTO items(id, name) VALUES (5, 'lost')")
            await tx.execute("INSERT INTO items(id, name) VALUES (1, 'dup')")
    assert (await db.fetchone("SELECT COUNT(*) AS n FROM items"))["n"] == 3


@needs_pg
async def test_readers_refuse_writes(db):
    await _table(db)
    with pytest.raises(asyncpg.ReadOnlySQLTransactionError):
        await db.fetchall("INSERT INTO items(id, name) VALUES (1, 'x') RETURNING id")


MIGRATIONS = [
    "CREATE TABLE a (id BIGINT PRIMARY KEY, note TEXT); CREATE INDEX a_note ON a(note);",
    "ALTER TABLE a ADD COLUMN at DOUBLE PRECISION; INSERT INTO a(id, note, at) VALUES (1, 'seeded', 0);",
]


@needs_pg
async def test_migrations_apply_in_order_once_and_are_recorded(db):
    assert await db.migration_status({"core": MIGRATIONS}) == [
        {"namespace": "core", "applied": 0, "available": 2, "pending": 2}
    ]
    assert await db.migrate({"core": MIGRATIONS[:1]}) == [("core", 1)]
    assert await db.migrate({"core": MIGRATIONS, "other": ["CREATE TABLE b (x TEXT)"]}) == [
        ("core", 2),
        ("other", 1),
    ]
    assert await db.migrate({"core": MIGRATIONS, "other": ["CREATE TABLE b (x TEXT)"]}) == []
    assert dict(await db.fetchone("SELECT id, note, at FROM a")) == {"id": 1, "note": "seeded", "at": 0.0}
    versions = await db.fetchall("SELECT namespace, version, applied_at FROM schema_migrations ORDER BY 1, 2")
    assert [(r["namespace"], r["version"]) for r in versions] == [("core", 1), ("core", 2), ("other", 1)]
    assert all(abs(r["applied_at"] - time.time()) < 60 for r in versions)
    status = await db.migration_status({"core": MIGRATIONS, "other": ["CREATE TABLE b (x TEXT)"]})
    assert [s["pending"] for s in status] == [0, 0]


@needs_pg
async def test_failing_migration_leaves_nothing_and_is_reported(db):
    broken = ["CREATE TABLE a (id BIGINT); CREATE TABLE half (x TEXT); CREATE INDEX no_such ON nowhere(x);"]
    await db.migrate({"core": MIGRATIONS[:1]})
    with pytest.raises(MigrationFailed, match="migration plug 1 failed") as failed:
        await db.migrate({"core": MIGRATIONS[:1], "plug": broken})
    assert (failed.value.namespace, failed.value.version) == ("plug", 1)
    tables = await db.fetchall("SELECT tablename FROM pg_tables WHERE schemaname='public' ORDER BY 1")
    assert [r[0] for r in tables] == ["a", "schema_migrations"]  # no "half"
    status = await db.migration_status({"core": MIGRATIONS[:1], "plug": broken})
    assert [(s["namespace"], s["applied"]) for s in status] == [("core", 1), ("plug", 0)]


@needs_pg
async def test_nodes_migrating_together_apply_each_migration_once(pg_url):
    nodes = [await PgDatabase(pg_url, readers=1).open() for _ in range(3)]
    try:
        applied = await asyncio.gather(*(n.migrate({"core": MIGRATIONS}) for n in nodes))
        assert sorted(len(a) for a in applied) == [0, 0, 2]
    finally:
        for n in nodes:
            await n.close()


@needs_pg
async def test_read_past_its_budget_raises_and_the_pool_is_whole(db):
    started = time.monotonic()
    with pytest.raises(QueryTimeout) as timeout, db.budget(0.3):
        await db.fetchall("SELECT pg_sleep(30)")
    assert timeout.value.budget == 0.3
    assert time.monotonic() - started < 10  # not the 30 s of the sleep
    # Every reader answers at once afterwards: none is left busy with the sleep.
    answers = await asyncio.wait_for(asyncio.gather(*(db.fetchone("SELECT ?::bigint AS n", (i,)) for i in range(6))), 3)
    assert [a["n"] for a in answers] == list(range(6))
    # Stopped on the server too, not only given up on here.
    sleeping = await db.lookups.fetchone(
        "SELECT COUNT(*) AS n FROM pg_stat_activity WHERE state='active' AND query LIKE 'SELECT pg_sleep%'"
    )
    assert sleeping["n"] == 0
    # A read within its budget is unaffected.
    with db.budget(5):
        assert (await db.fetchone("SELECT 1 AS one"))["one"] == 1


@needs_pg
async def test_waiting_for_a_reader_counts_against_the_budget(db):
    long_reads = [asyncio.ensure_future(db.fetchall("SELECT pg_sleep(30)")) for _ in range(db.readers)]
    await asyncio.sleep(0.3)
    with pytest.raises(QueryTimeout), db.budget(0.3):
        await db.fetchall("SELECT 1")
    assert not any(r.done() for r in long_reads)  # the budget ran out while every reader was busy
    for r in long_reads:
        r.cancel()
    await asyncio.gather(*long_reads, return_exceptions=True)
    assert (await db.fetchone("SELECT 1 AS one"))["one"] == 1


@needs_pg
async def test_lookups_answer_while_long_reads_hold_every_reader(db):
    long_reads = [asyncio.ensure_future(db.fetchall("SELECT pg_sleep(30)")) for _ in range(db.readers)]
    await asyncio.sleep(0.3)  # the readers are taken (asserted below: they are not done)
    row = await db.lookups.fetchone("SELECT ? AS k", ("token",))
    assert row["k"] == "token"
    assert not any(r.done() for r in long_reads)  # answered while every reader was busy
    for r in long_reads:
        r.cancel()
    await asyncio.gather(*long_reads, return_exceptions=True)


@needs_pg
async def test_connections_go_back_without_a_reset_and_keep_nothing_of_a_transaction(db):
    """Pooled connections are released without asyncpg's reset query (one round
    trip fewer per statement: the last assertion, which held the other way
    before). What a transaction leaves is gone without it: a failed one's writes
    and its SET LOCAL (``db.transaction`` rolls back whatever the pool does; this
    guards that the writers still work after it). intake_fetchall answers a
    writing statement's rows, committed on its own."""
    await _table(db)
    rows = await db.intake_fetchall("INSERT INTO items(id, name) VALUES (?, ?) RETURNING id", (1, "one"))
    assert [r["id"] for r in rows] == [1]
    assert (await db.fetchone("SELECT name FROM items WHERE id=1"))["name"] == "one"  # committed
    await db.execute("INSERT INTO items(id, name) VALUES (2, 'two')")
    with pytest.raises(RuntimeError):
        async with db.transaction() as tx:
            await tx.execute("SET LOCAL statement_timeout = 7")
            await tx.execute("INSERT INTO items(id, name) VALUES (3, 'three')")
            raise RuntimeError("rolled back")
    # Every writer, taken at once (so each is a different connection).
    timeouts = await asyncio.gather(*(db.write_fetchall("SHOW statement_timeout") for _ in range(db.writers)))
    assert all(r[0]["statement_timeout"] != "7ms" for r in timeouts)
    assert [r["id"] for r in await db.fetchall("SELECT id FROM items ORDER BY id")] == [1, 2]
    last = await db.fetchall(
        "SELECT query FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()"
        " AND state = 'idle'"
    )
    queries = [r["query"] for r in last]
    assert any(q.startswith("INSERT INTO items(id, name) VALUES ($1, $2) RETURNING id") for q in queries)
    assert not any("RESET ALL" in q for q in queries), queries


@needs_pg
async def test_two_nodes_see_each_others_commits(pg_url):
    a, b = PgDatabase(pg_url, readers=1), PgDatabase(pg_url, readers=1)
    async with a, b:
        await _table(a)
        await a.execute("INSERT INTO items(id, name) VALUES (1, 'from a')")
        async with b.transaction() as tx:
            await tx.execute("INSERT INTO items(id, name) VALUES (2, 'from b')")
        assert [r["name"] for r in await b.fetchall("SELECT name FROM items ORDER BY id")] == ["from a", "from b"]
        assert (await a.lookups.fetchone("SELECT name FROM items WHERE id=2"))["name"] == "from b"


@needs_pg
async def test_claims_of_a_node_that_disconnected_are_gone_and_of_a_live_node_are_not(pg_url):
    a, b = PgDatabase(pg_url, readers=1, node="node-a"), PgDatabase(pg_url, readers=1, node="node-b")
    async with a:
        await a.execute("CREATE TABLE claims(id BIGINT, node TEXT)")
        await a.execute("INSERT INTO claims VALUES (1, 'node-a'), (2, 'node-b'), (3, NULL), (4, 'node-c')")
        gone = f"SELECT id FROM claims WHERE {a.gone('node')} ORDER BY id"
        async with b:
            await b.listen("x", lambda _payload: None)  # a connection held, as a daemon's
            assert [r["id"] for r in await a.fetchall(gone)] == [3, 4]
        # b closed its connections (as kill -9 would): its claims are to take over now
        assert [r["id"] for r in await a.fetchall(gone)] == [2, 3, 4]


@needs_pg
async def test_the_server_probes_a_nodes_idle_connections_so_a_vanished_host_is_gone_within_a_minute(db):
    # Every pool and the LISTEN/lock connections share these settings.
    assert (await db.fetchone("SHOW tcp_keepalives_idle"))[0] == "30"
    assert (await db.lookups.fetchone("SHOW tcp_keepalives_count"))[0] == "3"


async def test_on_sqlite_every_claim_but_this_processs_is_gone(tmp_path):
    db = await Database(tmp_path / "t.db").open()
    try:
        await db.execute("CREATE TABLE claims(id INTEGER, node TEXT)")
        await db.execute("INSERT INTO claims VALUES (1, ?), (2, 'other:1'), (3, NULL)", (db.node,))
        assert [r["id"] for r in await db.fetchall(f"SELECT id FROM claims WHERE {db.gone('node')} ORDER BY id")] == [
            2,
            3,
        ]
    finally:
        await db.close()


@needs_pg
async def test_delete_in_slices_deletes_everything_in_slices(db):
    await _table(db)
    await db.execute("INSERT INTO items(id, name, at) SELECT g, 'n', g FROM generate_series(1, 3000) AS g")
    statements = []
    execute = db.execute

    async def counting(sql, params=()):
        statements.append(params)
        return await execute(sql, params)

    db.execute = counting
    removed = await db.delete_in_slices(
        "DELETE FROM items WHERE id IN (SELECT id FROM items WHERE at<:cutoff ORDER BY id LIMIT :slice)",
        {"cutoff": 2501},
    )
    assert removed == 2500
    assert len(statements) > 2  # in slices, not one statement
    assert all(p["cutoff"] == 2501 for p in statements)
    assert tuple(await db.fetchone("SELECT MIN(id) AS low, COUNT(*) AS n FROM items")) == (2501, 500)


@needs_pg
async def test_space_and_full(db):
    space = await db.space()
    assert space["bytes"] > 1_000_000 and space["page_size"] == 8192
    assert space["page_count"] * space["page_size"] <= space["bytes"]
    assert db.full is False


@needs_pg
async def test_a_write_refused_for_lack_of_space_makes_it_full_until_one_succeeds(db):
    # PostgreSQL's own error for a full disk (SQLSTATE 53100), raised on purpose.
    with pytest.raises(asyncpg.DiskFullError):
        await db.execute("DO $$ BEGIN RAISE EXCEPTION 'no space' USING ERRCODE = 'disk_full'; END $$")
    assert db.full is True
    with pytest.raises(asyncpg.DiskFullError):
        async with db.transaction() as tx:
            await tx.execute("DO $$ BEGIN RAISE EXCEPTION 'no space' USING ERRCODE = 'disk_full'; END $$")
    assert db.full is True
    await db.execute("CREATE TABLE t (x TEXT)")
    assert db.full is False


async def test_bulk_rows_and_value_lists_read_alike_on_both_backends(db, tmp_path):
    """One statement carries many rows (an intake batch) or many values (an IN
    list): json_each on SQLite, unnest of arrays on PostgreSQL, same answers."""
    from tierd.core.storage import Database, bulk_rows, value_list

    lite = await Database(tmp_path / "t.db").open()
    try:
        rows = [(1, "a", 0.5, None), (2, "b'", 1.25, "x"), (3, "ü", 2.0, None)]
        columns = {"n": "bigint", "s": "text", "f": "float8", "o": "text"}
        answers = []
        for backend in (lite, db):
            await backend.execute("CREATE TABLE t (n BIGINT, s TEXT, f DOUBLE PRECISION, o TEXT)")
            source, params = bulk_rows(backend.dialect, columns, rows)
            await backend.execute("INSERT INTO t(n, s, f, o) " + source, params)
            empty, none = bulk_rows(backend.dialect, columns, [])
            await backend.execute("INSERT INTO t(n, s, f, o) " + empty, none)  # nothing, no error
            subquery, param = value_list(backend.dialect, "text", ["a", "ü", "zz"])
            picked = await backend.fetchall(f"SELECT n FROM t WHERE s IN {subquery} ORDER BY n", (param,))
            stored = await backend.fetchall("SELECT n, s, f, o FROM t ORDER BY n")
            answers.append(([tuple(r) for r in stored], [r["n"] for r in picked]))
        assert answers[0] == answers[1] == (rows, [1, 3])
    finally:
        await lite.close()
