"""The reconciliation plugin on PostgreSQL (issue 15): its migrations and its SQL on a real server.

One throw-away PostgreSQL for the module (:class:`tierd.testing.PostgresServer`)
and a fresh database per test; the PostgreSQL cases skip, saying why, where it
is not installed. Tests taking ``backend`` run on both SQLite and PostgreSQL
with the same assertions: the SQL the plugin shares between them must answer
alike. The store's own tests (``test_recon_store.py``) run here once more on
PostgreSQL: they are imported below, and pytest gives them this module's
``db`` fixture.
"""

from __future__ import annotations

import itertools
import json
import re
import sqlite3
from decimal import Decimal
from types import SimpleNamespace

import pytest
from test_recon_store import (  # noqa: F401 (collected again here, on PostgreSQL)
    NOW,
    auto,
    by_hand,
    entry,
    line,
    seed,
    test_a_conflicting_manual_match_changes_nothing,
    test_a_new_match_makes_rival_suggestions_stale,
    test_another_tenants_items_cannot_be_matched_or_seen,
    test_bulk_matches_skip_items_matched_meanwhile_and_undo_frees_only_their_items,
)

from tierd.core.clock import parse_iso
from tierd.core.pg import PgDatabase
from tierd.core.storage import Database, migrations_for
from tierd.plugins.reconciliation import aliases, console, reports, store, tierd_migrations
from tierd.testing import PostgresServer

_names = itertools.count(1)


@pytest.fixture(scope="module")
def pg_server():
    if not PostgresServer.available():
        pytest.skip(PostgresServer.MISSING)
    with PostgresServer() as server:
        yield server


def pg_migrations(upto: int | None = None) -> dict[str, list[str]]:
    """The plugin's PostgreSQL migrations as the daemon picks them (the first ``upto``)."""
    return {"reconciliation": migrations_for(tierd_migrations(), "postgresql")["reconciliation"][:upto]}


def sqlite_migrations(upto: int | None = None) -> dict[str, list[str]]:
    return {"reconciliation": migrations_for(tierd_migrations(), "sqlite")["reconciliation"][:upto]}


async def open_db(kind: str, request, tmp_path, upto: int | None = None):
    """A new database of ``kind`` with the first ``upto`` migrations (all by default)."""
    if kind == "sqlite":
        database = await Database(tmp_path / f"recon{next(_names)}.db").open()
        await database.migrate(sqlite_migrations(upto))
        return database
    server = request.getfixturevalue("pg_server")
    database = await PgDatabase(server.create_database(f"recon{next(_names)}"), readers=2).open()
    await database.migrate(pg_migrations(upto))
    return database


@pytest.fixture
async def db(request, tmp_path):
    """A PostgreSQL database with every migration (the store's tests imported above take it)."""
    database = await open_db("postgresql", request, tmp_path)
    yield database
    await database.close()


@pytest.fixture(params=["sqlite", "postgresql"])
async def backend(request, tmp_path):
    """A database of each backend with every migration."""
    database = await open_db(request.param, request, tmp_path)
    yield database
    await database.close()


# --- migrations ---------------------------------------------------------------------------------

#: What each SQLite column type is on PostgreSQL (docs/postgresql.md).
PG_TYPE = {"TEXT": "text", "INTEGER": "bigint", "REAL": "double precision"}


def test_both_dialects_have_as_many_migrations_and_postgresql_keeps_to_its_types():
    declared = tierd_migrations()["reconciliation"]
    assert len(declared["sqlite"]) == len(declared["postgresql"]) == 6
    for script in declared["postgresql"]:
        code = re.sub(r"--[^\n]*", "", script)  # comments may say what SQLite calls things
        assert not re.search(r"\b(INTEGER|REAL|AUTOINCREMENT|GLOB|strftime|julianday|json_extract)\b", code), code


async def test_postgresql_builds_the_tables_sqlite_has(pg_server, tmp_path):
    """Same tables, columns in the same order (``tierd db copy`` moves rows table by table),
    PostgreSQL's type for each SQLite type, the same indexes on the same columns."""
    lite = await Database(tmp_path / "recon.db").open()
    await lite.migrate(sqlite_migrations())
    await lite.close()
    conn = sqlite3.connect(tmp_path / "recon.db")
    tables = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table' AND name LIKE 'recon%'")]
    pg = await PgDatabase(pg_server.create_database("schema"), readers=1).open()
    try:
        await pg.migrate(pg_migrations())
        pg_tables = await pg.fetchall(
            "SELECT table_name FROM information_schema.tables WHERE table_schema='public' AND table_name LIKE 'recon%'"
        )
        assert sorted(r["table_name"] for r in pg_tables) == sorted(tables)
        for table in tables:
            expected = [(r[1], PG_TYPE[r[2]]) for r in conn.execute(f"PRAGMA table_info({table})")]
            got = await pg.fetchall(
                "SELECT column_name, data_type FROM information_schema.columns WHERE table_name=?"
                " ORDER BY ordinal_position",
                (table,),
            )
            assert [(r["column_name"], r["data_type"]) for r in got] == expected, table
            lite_indexes = {
                name: [c[2] for c in conn.execute(f"PRAGMA index_info({name})")]
                for (name,) in conn.execute(
                    "SELECT name FROM sqlite_master WHERE type='index' AND tbl_name=? AND sql IS NOT NULL", (table,)
                )
            }
            # Indexes of CREATE INDEX (those behind PRIMARY KEY and UNIQUE are the constraints').
            rows = await pg.fetchall(
                "SELECT indexname, indexdef FROM pg_indexes i WHERE tablename=?"
                " AND NOT EXISTS (SELECT 1 FROM pg_constraint c WHERE c.conname = i.indexname)",
                (table,),
            )
            pg_indexes = {r["indexname"]: re.search(r"\((.*)\)$", r["indexdef"])[1].split(", ") for r in rows}
            assert pg_indexes == lite_indexes, table
    finally:
        conn.close()
        await pg.close()


async def test_times_of_migration_1_become_unix_seconds_on_postgresql(request, tmp_path):
    """As on SQLite (test_recon_store): migration 1's ISO text, in its oldest form too, goes
    through 2 (core's form) and 3 (seconds); PostgreSQL's 3 changes the types in place."""
    pg = await open_db("postgresql", request, tmp_path, upto=1)
    try:
        await pg.execute(
            "INSERT INTO recon_bank_lines (tenant_id, account_id, import_id, booking_date, amount, currency,"
            " dedup_key, created_at) VALUES ('acme', 'acct', 'imp_1', '2026-11-28', '10', 'EUR', 'A', ?)",
            ("2026-11-28T12:00:00+00:00",),
        )
        await pg.execute(
            "INSERT INTO recon_runs (id, tenant_id, account_id, status, trigger, started_at, finished_at)"
            " VALUES ('run_1', 'acme', 'acct', 'completed', 'api', ?, NULL)",
            ("2026-11-28T12:00:00.250000Z",),
        )
        await pg.migrate(pg_migrations())
        assert (await pg.fetchone("SELECT created_at FROM recon_bank_lines"))[0] == parse_iso("2026-11-28T12:00:00Z")
        run = await pg.fetchone("SELECT started_at, finished_at FROM recon_runs")
        assert (run["started_at"], run["finished_at"]) == (parse_iso("2026-11-28T12:00:00.25Z"), None)
        # Ids go on from where they were (an identity column, as SQLite's AUTOINCREMENT).
        async with pg.transaction() as tx:
            await store.insert_lines(tx, "acme", "acct", "imp_2", [line("B", "20")], NOW)
        assert [r["id"] for r in await pg.fetchall("SELECT id FROM recon_bank_lines ORDER BY id")] == [1, 2]
    finally:
        await pg.close()


@pytest.mark.parametrize("kind", ["sqlite", "postgresql"])
async def test_migration_6_copies_the_figures_of_runs_made_before_it(kind, request, tmp_path):
    database = await open_db(kind, request, tmp_path, upto=5)
    try:
        counts = {"bank_lines_open_before": 7, "matches": 3, "suggestions": 1, "by_rule": {"reference": 3}}
        await database.execute(
            "INSERT INTO recon_runs (id, tenant_id, account_id, status, trigger, started_at, counts)"
            " VALUES (?, 'acme', 'acct', 'completed', 'api', ?, ?), (?, 'acme', 'acct', 'running', 'api', ?, '{}')",
            ("run_1", NOW, json.dumps(counts), "run_2", NOW + 1),
        )
        await database.migrate((sqlite_migrations if kind == "sqlite" else pg_migrations)())
        rows = await database.fetchall(
            "SELECT id, lines_considered, auto_matches, suggestions, lines_open FROM recon_runs ORDER BY id"
        )
        assert [tuple(r) for r in rows] == [("run_1", 7, 3, 1, None), ("run_2", None, None, None, None)]
    finally:
        await database.close()


# --- the SQL on both backends ----------------------------------------------------------------------


async def a_reconciled_account(db) -> dict:
    """Three lines and entries; a run matched A and B, then a person matched C; an import before."""
    lines, entries = await seed(db, "acme")
    async with db.transaction() as tx:
        await store.insert_import(
            tx,
            "acme",
            "acct",
            {
                "id": "imp_1",
                "filename": "s.sta",
                "format": "mt940",
                "sha256": "x",
                "new": 3,
                "duplicates": 0,
                "rejected": 0,
                "report": {},
                "created_at": NOW - 60,
                "created_by": "alice",
            },
        )
    run_id = await store.start_run(db, "acme", "acct", "api", NOW)
    async with db.transaction() as tx:
        made = [auto([lines[0]], [entries[0]]), auto([lines[1]], [entries[1]]) | {"score": 0.87654}]
        created, _ = await store.create_matches_bulk(tx, "acme", "acct", made, run_id=run_id, actor="s", now=NOW)
        counts = {
            "bank_lines_open_before": 3,
            "ledger_entries_open_before": 3,
            "matches": 2,
            "suggestions": 0,
            "bank_lines_matched": 2,
            "ledger_entries_matched": 2,
            "bank_lines_open": 1,
            "ledger_entries_open": 1,
            "by_rule": {"amount_date": 2},
        }
        await store.finish_run(tx, "acme", run_id, "completed", counts, NOW + 1)
    async with db.transaction() as tx:
        manual = await by_hand(tx, "acme", [lines[2]], [entries[2]])
    return {"lines": lines, "entries": entries, "run_id": run_id, "auto": [m["id"] for m in created], "manual": manual}


async def source_rows(db, source) -> list[dict]:
    """A report source's rows as the reports plugin reads them: its SELECT as a subquery."""
    return [dict(r) for r in await db.fetchall(f"SELECT * FROM ({source.sql}) AS s WHERE s.tenant = ?", ("acme",))]


async def test_report_sources_answer_alike(backend):
    acct = await a_reconciled_account(backend)
    lines = {r["line_id"]: r for r in await source_rows(backend, reports.LINES)}
    assert sorted(lines) == acct["lines"] and {r["matched"] for r in lines.values()} == {1}
    assert {r["amount"] for r in lines.values()} == {"10", "20", "30"}
    ledger = await source_rows(backend, reports.LEDGER)
    assert [r["matched"] for r in ledger] == [1, 1, 1]
    assert await source_rows(backend, reports.OPEN_ITEMS) == []
    matches = {r["match_id"]: r for r in await source_rows(backend, reports.MATCHES)}
    scores = {Decimal(matches[m]["score"]) for m in acct["auto"]}
    assert scores == {Decimal("0.9"), Decimal("0.8765")}
    assert (matches[acct["manual"]]["statement_lines"], matches[acct["manual"]]["ledger_entries"]) == (1, 1)
    [run] = await source_rows(backend, reports.RUNS)
    assert run["run_id"] == acct["run_id"] and run["status"] == "completed"
    figures = ("lines_imported", "lines_considered", "auto_matches", "lines_matched", "suggestions", "lines_open")
    assert [run[k] for k in figures] == [3, 3, 2, 2, 0, 1]
    assert float(run["started_at"]) == NOW
    by_match = {r["match_id"]: r["match_kind"] for r in await source_rows(backend, reports.RUN_MATCHES)}
    assert by_match == {acct["auto"][0]: "auto", acct["auto"][1]: "auto", acct["manual"]: "manual"}
    # An item opened again by an undo is open in the reports.
    async with backend.transaction() as tx:
        await store.undo_match(tx, "acme", "acct", acct["manual"], "bob", NOW + 2)
    open_items = await source_rows(backend, reports.OPEN_ITEMS)
    assert sorted((r["side"], r["item_id"]) for r in open_items) == [
        ("ledger", acct["entries"][2]),
        ("statement", acct["lines"][2]),
    ]


async def test_pages_of_a_run_and_of_a_status(backend):
    acct = await a_reconciled_account(backend)
    by_run = await store.list_matches(
        backend, "acme", "acct", run_id=acct["run_id"], status="active", limit=10, after=None
    )
    assert [m["id"] for m in by_run] == acct["auto"]
    assert [x["bank_reference"] for x in by_run[0]["statement_lines"]] == ["A"]
    everything = await store.list_matches(backend, "acme", "acct", run_id=None, status=None, limit=10, after=None)
    assert len(everything) == 3
    after = await store.list_matches(
        backend, "acme", "acct", run_id=None, status="active", limit=10, after=everything[0]["id"]
    )
    assert [m["id"] for m in after] == [m["id"] for m in everything[1:]]
    run = await store.get_run(backend, "acme", "acct", acct["run_id"])
    assert run["counts"]["by_rule"] == {"amount_date": 2}


def payer(line_id: int, iban: str, name: str) -> dict:
    return {"id": line_id, "counterparty_account": iban, "counterparty_name": name}


async def test_aliases_are_learned_counted_and_forgotten(backend):
    # A payer by its IBAN, another known only by its name.
    bank = [payer(1, "DE89370400440532013000", "Mueller Bau"), payer(2, "", "M. Mueller")]
    ledger = [{"id": 1, "counterparty": "Müller Bau GmbH"}]
    async with backend.transaction() as tx:
        assert await aliases.learn(tx, "acme", "acct", "m_1", bank, ledger, NOW) == 2
        await aliases.learn(tx, "acme", "acct", "m_2", bank, ledger, NOW + 1)
    page = await aliases.list_aliases(backend, "acme", "acct", 1, None)
    assert [(a["bank_key"], a["times"]) for a in page] == [("iban:DE89370400440532013000", 2)]
    rest = await aliases.list_aliases(backend, "acme", "acct", 10, aliases.cursor_of(page[0]))
    assert [(a["bank_label"], a["times"]) for a in rest] == [("M. Mueller", 2)]
    known = await aliases.known_payers(backend, "acme", "acct")
    assert {k.ledger_name for k in known} == {"Müller Bau GmbH"}
    async with backend.transaction() as tx:
        assert await aliases.forget(tx, "acme", "acct", "m_1", dialect=backend.dialect) == []  # taught by m_2 too
        removed = await aliases.forget(tx, "acme", "acct", "m_2", dialect=backend.dialect)
    assert sorted(a["bank_label"] for a in removed) == ["DE89370400440532013000", "M. Mueller"]
    assert await aliases.list_aliases(backend, "acme", "acct", 10, None) == []
    assert await backend.fetchall("SELECT * FROM recon_alias_sources") == []


async def test_the_consoles_counts_per_account(backend):
    await store.upsert_config_account(
        backend,
        {
            "tenant": "acme",
            "id": "acct",
            "name": "Main",
            "currency": "EUR",
            "iban": "",
            "account_number": "",
            "csv_format": None,
            "ledger_format": None,
        },
        NOW,
    )
    acct = await a_reconciled_account(backend)
    ctx = SimpleNamespace(tenant="acme", caller=SimpleNamespace(admin=False), daemon=SimpleNamespace(db=backend))
    [row] = await console.account_stats(ctx)  # type: ignore[arg-type]
    assert (row["open_bank"], row["open_ledger"], row["suggestions"]) == (0, 0, 0)
    assert row["last_import"] == "2026-11-28T11:59:00.000000Z"
    assert row["last_run"] == {"id": acct["run_id"], "status": "completed", "started_at": "2026-11-28T12:00:00.000000Z"}
