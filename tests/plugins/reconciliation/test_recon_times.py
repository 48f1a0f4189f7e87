"""One time convention: reconciliation's instants are REAL unix seconds, answered as ISO-8601 UTC.

A database holding rows as the code before migration 3 wrote them (times as
core's ISO text) is migrated: every instant becomes the unix seconds of its
text, everything else is kept, and the API answers the very strings it
answered before.
"""

import sqlite3

import pytest

from tierd.core.clock import iso, parse_iso
from tierd.core.storage import Database
from tierd.plugins.reconciliation import migrations

BASE = "/v1/reconciliation/accounts"
A = "old-eur"
RUN = "run_0192f3a4b5c6d7e8f901234567"
M_ACTIVE, M_UNDONE = "m_0192f3a4b5c6d7e8f901234568", "m_0192f3a4b5c6d7e8f901234569"
S_OPEN, S_STALE = "s_0192f3a4b5c6d7e8f90123456a", "s_0192f3a4b5c6d7e8f90123456b"
IMP = "imp_0192f3a4b5c6d7e8f90123456c"

#: The times the old code wrote (core's clock.iso), one per moment of the story.
T = {
    name: text
    for name, text in [
        ("account_created", "2026-11-01T08:00:00.000000Z"),
        ("account_updated", "2026-11-02T09:30:15.250000Z"),
        ("imported", "2026-11-28T12:00:00.123456Z"),
        ("ledger_created", "2026-11-28T12:00:01.000001Z"),
        ("ledger_updated", "2026-11-28T12:05:59.999999Z"),
        ("run_started", "2026-11-28T12:10:00.500000Z"),
        ("run_finished", "2026-11-28T12:10:02.654321Z"),
        ("matched", "2026-11-28T12:10:02.654321Z"),
        ("undone", "2026-11-29T07:45:30.000500Z"),
        ("stale", "2026-11-29T07:45:30.000500Z"),
        ("audit_1", "2026-11-01T08:00:00.000000Z"),
        ("audit_2", "2026-11-28T12:00:00.123456Z"),
        ("audit_3", "2026-11-29T07:45:30.000500Z"),
    ]
}

#: What the old store's INSERTs wrote (column lists as in its SQL).
OLD_ROWS = [
    (
        "INSERT INTO recon_accounts (tenant_id, id, name, currency, iban, account_number, csv_format, ledger_format,"
        " source, created_at, updated_at) VALUES ('acme', ?, 'Old EUR', 'EUR', 'DE89370400440532013000', '', NULL,"
        " NULL,"
        " 'api', ?, ?)",
        (A, T["account_created"], T["account_updated"]),
    ),
    (
        "INSERT INTO recon_imports (id, tenant_id, account_id, filename, format, sha256, new_lines, duplicate_lines,"
        " rejected_lines, report, created_at, created_by) VALUES (?, 'acme', ?, 'nov.xml', 'camt053', 'ab', 3, 0, 0,"
        ' \'{"balances": [], "rejected": [], "statements": 1}\', ?, \'acme/tok_1\')',
        (IMP, A, T["imported"]),
    ),
    *[
        (
            "INSERT INTO recon_bank_lines (tenant_id, account_id, import_id, booking_date, value_date, amount,"
            " currency,"
            " counterparty_name, counterparty_account, remittance, end_to_end_id, bank_reference, dedup_key, raw,"
            " location,"
            " created_at) VALUES ('acme', ?, ?, '2026-11-02', NULL, ?, 'EUR', 'Mueller GmbH', '', ?, '', ?, ?, '', '',"
            " ?)",
            (A, IMP, amount, f"INV-{n}", f"REF-{n}", f"k{n}", T["imported"]),
        )
        for n, amount in ((1, "150.00"), (2, "80.00"), (3, "99.99"))
    ],
    *[
        (
            "INSERT INTO recon_ledger_entries (tenant_id, account_id, external_id, date, amount, currency,"
            " counterparty,"
            " reference, description, created_at, updated_at) VALUES ('acme', ?, ?, '2026-11-01', ?, 'EUR', 'Mueller"
            " GmbH',"
            " ?, '', ?, ?)",
            (A, f"L-{n}", amount, f"INV-{n}", T["ledger_created"], T["ledger_updated"]),
        )
        for n, amount in ((1, "150.00"), (2, "80.00"), (3, "12.00"))
    ],
    (
        "INSERT INTO recon_runs (id, tenant_id, account_id, status, trigger, started_at, finished_at, counts, error)"
        " VALUES (?, 'acme', ?, 'completed', 'api', ?, ?, '{\"matches\": 2}', NULL)",
        (RUN, A, T["run_started"], T["run_finished"]),
    ),
    (
        "INSERT INTO recon_matches (id, tenant_id, account_id, run_id, kind, rule, score, explanation, adjustment,"
        " status,"
        " created_at, created_by, undone_at, undone_by) VALUES (?, 'acme', ?, ?, 'auto', 'reference', 0.97, 'INV-1',"
        " '0',"
        " 'active', ?, 'acme/tok_1', NULL, NULL)",
        (M_ACTIVE, A, RUN, T["matched"]),
    ),
    (
        "INSERT INTO recon_matches (id, tenant_id, account_id, run_id, kind, rule, score, explanation, adjustment,"
        " status,"
        " created_at, created_by, undone_at, undone_by) VALUES (?, 'acme', ?, ?, 'auto', 'amount_date', 0.91, 'same"
        " day',"
        " '0', 'undone', ?, 'acme/tok_1', ?, 'alice')",
        (M_UNDONE, A, RUN, T["matched"], T["undone"]),
    ),
    (
        "INSERT INTO recon_match_items (match_id, tenant_id, side, item_id) VALUES (?, 'acme', 'bank', 1), "
        "(?, 'acme', 'ledger', 1), (?, 'acme', 'bank', 2), (?, 'acme', 'ledger', 2)",
        (M_ACTIVE, M_ACTIVE, M_UNDONE, M_UNDONE),
    ),
    ("UPDATE recon_bank_lines SET match_id=? WHERE id=1", (M_ACTIVE,)),
    ("UPDATE recon_ledger_entries SET match_id=? WHERE id=1", (M_ACTIVE,)),
    (
        "INSERT INTO recon_suggestions (id, tenant_id, account_id, run_id, rule, score, explanation, adjustment,"
        " bank_ids,"
        " ledger_ids, status, created_at, decided_at, decided_by) VALUES (?, 'acme', ?, ?, 'fuzzy', 0.6, 'close call',"
        " '0',"
        " '[3]', '[3]', 'open', ?, NULL, NULL)",
        (S_OPEN, A, RUN, T["run_finished"]),
    ),
    (
        "INSERT INTO recon_suggestions (id, tenant_id, account_id, run_id, rule, score, explanation, adjustment,"
        " bank_ids,"
        " ledger_ids, status, created_at, decided_at, decided_by) VALUES (?, 'acme', ?, ?, 'fuzzy', 0.5, 'rival', '0',"
        " '[2]', '[2]', 'stale', ?, ?, 'alice')",
        (S_STALE, A, RUN, T["run_finished"], T["stale"]),
    ),
    *[
        (
            "INSERT INTO recon_audit (tenant_id, account_id, at, actor, action, object_id, details)"
            " VALUES ('acme', ?, ?, 'alice', ?, '', '{}')",
            (A, T[f"audit_{n}"], action),
        )
        for n, action in ((1, "account.created"), (2, "statement.imported"), (3, "match.undone"), (3, "removed"))
    ],
    # The last audit row is gone (AUTOINCREMENT remembers id 4: it must never be given again).
    ("DELETE FROM recon_audit WHERE id = 4", ()),
]

TABLES = [
    "recon_accounts",
    "recon_imports",
    "recon_bank_lines",
    "recon_ledger_entries",
    "recon_runs",
    "recon_matches",
    "recon_match_items",
    "recon_suggestions",
    "recon_audit",
]
INSTANTS = {"created_at", "updated_at", "started_at", "finished_at", "undone_at", "decided_at", "at"}


async def old_database(path) -> None:
    """A database as the code before migration 3 left it: migrations 1 and 2, rows with ISO text times."""
    db = await Database(path).open()
    try:
        await db.migrate({"reconciliation": migrations.MIGRATIONS[:2]})
        async with db.transaction() as tx:
            for sql, params in OLD_ROWS:
                await tx.execute(sql, params)
    finally:
        await db.close()


def snapshot(path) -> dict:
    """Every row of every table (rowid order), the index names and the AUTOINCREMENT counters."""
    con = sqlite3.connect(path)
    try:
        out = {}
        for t in TABLES:
            cur = con.execute(f"SELECT * FROM {t} ORDER BY rowid")
            out[t] = [tuple(zip([c[0] for c in cur.description], row, strict=True)) for row in cur.fetchall()]
        out["indexes"] = sorted(
            con.execute(
                "SELECT name, tbl_name FROM sqlite_master WHERE type='index' AND name LIKE 'recon_%'"
            ).fetchall()
        )
        out["sequence"] = sorted(con.execute("SELECT name, seq FROM sqlite_sequence").fetchall())
        out["types"] = {
            (t, col): {r[0] for r in con.execute(f"SELECT DISTINCT typeof({col}) FROM {t}")}
            for t in TABLES
            for _, col, *_ in con.execute(f"PRAGMA table_info({t})")
            if col in INSTANTS
        }
        return out
    finally:
        con.close()


@pytest.mark.sqlite_only("a SQLite migration of rows an older tierd wrote")
async def test_rows_written_by_the_old_code_become_unix_seconds_and_nothing_else_changes(tmp_path):
    path = tmp_path / "old.db"
    await old_database(path)
    before = snapshot(path)
    assert before["types"][("recon_runs", "started_at")] == {"text"}  # the old form, to begin with

    db = await Database(path).open()
    try:
        assert await db.migrate({"reconciliation": migrations.MIGRATIONS[:3]}) == [("reconciliation", 3)]
    finally:
        await db.close()
    after = snapshot(path)

    instants_seen = 0
    for table in TABLES:
        assert len(after[table]) == len(before[table]), table
        for old_row, new_row in zip(before[table], after[table], strict=True):
            for (col, old), (new_col, new) in zip(old_row, new_row, strict=True):
                assert col == new_col
                if col in INSTANTS and old is not None:
                    # Exactly what core parses from the text, so iso() shows the same text again.
                    assert isinstance(new, float) and new == parse_iso(old) and iso(new) == old, (table, col, old, new)
                    instants_seen += 1
                else:
                    assert new == old, (table, col)  # NULL times stay NULL; money, dates, ids untouched
    assert instants_seen == 23  # every non-NULL instant of the rows above
    # Every instant column is REAL now (or NULL where the moment has not come), indexes and counters kept.
    assert all(kinds <= {"real", "null"} for kinds in after["types"].values()), after["types"]
    assert after["types"][("recon_matches", "undone_at")] == {"real", "null"}
    assert after["indexes"] == before["indexes"] and len(after["indexes"]) == 8
    assert after["sequence"] == before["sequence"] and ("recon_audit", 4) in after["sequence"]
    con = sqlite3.connect(path)
    try:
        con.execute(
            "INSERT INTO recon_audit (tenant_id, account_id, at, actor, action) VALUES ('acme', ?, 0, 'x', 'y')", (A,)
        )
        assert con.execute("SELECT max(id) FROM recon_audit").fetchone()[0] == 5  # id 4 is not given again
        # A REAL column keeps a REAL (a TEXT column would have stored the text of the number).
        assert con.execute("SELECT typeof(at) FROM recon_audit WHERE id = 5").fetchone()[0] == "real"
    finally:
        con.close()


@pytest.mark.sqlite_only("a SQLite migration of rows an older tierd wrote")
async def test_times_in_another_form_sqlite_can_read_are_converted_to_the_millisecond(tmp_path):
    db = await Database(tmp_path / "odd.db").open()
    try:
        await db.migrate({"reconciliation": migrations.MIGRATIONS[:2]})
        await db.execute(
            "INSERT INTO recon_audit (tenant_id, account_id, at, actor, action) VALUES"
            " ('acme', 'a', '2026-11-28T13:00:00.25+01:00', 'x', 'y')"
        )
        await db.migrate({"reconciliation": migrations.MIGRATIONS})
        row = await db.fetchone("SELECT at FROM recon_audit")
        assert abs(row["at"] - parse_iso("2026-11-28T12:00:00.250Z")) < 0.001
    finally:
        await db.close()


@pytest.mark.sqlite_only("an old SQLite file migrated by the daemon (PostgreSQL databases start at today's tables)")
async def test_the_api_answers_the_same_times_after_the_migration_and_stores_new_ones_as_reals(tierd_daemon):
    d = tierd_daemon({"plugins": {"disabled": ["webhooks", "notifications"]}}, start=False)
    db_path = d.workdir / "tierd.db"
    await old_database(db_path)
    d.start()  # applies migration 3
    token = d.create_tenant("acme")

    def get(path):
        status, body = d.request("GET", BASE + path, token=token)
        assert status == 200, body
        return body

    # What the old API answered: the stored text, as it was.
    account = get(f"/{A}")
    assert (account["created_at"], account["updated_at"]) == (T["account_created"], T["account_updated"])
    assert get("")["data"][0]["updated_at"] == T["account_updated"]
    assert get(f"/{A}/imports")["data"][0]["created_at"] == T["imported"]
    run = get(f"/{A}/runs/{RUN}")
    assert (run["started_at"], run["finished_at"]) == (T["run_started"], T["run_finished"])
    matches = {m["id"]: m for m in get(f"/{A}/runs/{RUN}/matches")["data"]}
    assert (matches[M_ACTIVE]["created_at"], matches[M_ACTIVE]["undone_at"]) == (T["matched"], None)
    assert (matches[M_UNDONE]["created_at"], matches[M_UNDONE]["undone_at"]) == (T["matched"], T["undone"])
    assert [x["bank_reference"] for x in matches[M_ACTIVE]["statement_lines"]] == ["REF-1"]
    assert get(f"/{A}/matches/{M_UNDONE}")["undone_at"] == T["undone"]
    suggestions = get(f"/{A}/suggestions?status=all")["data"]
    assert [(s["id"], s["created_at"]) for s in suggestions] == [
        (S_OPEN, T["run_finished"]),
        (S_STALE, T["run_finished"]),
    ]
    assert [a["at"] for a in get(f"/{A}/audit")["data"]] == [T["audit_1"], T["audit_2"], T["audit_3"]]

    # New writes on the migrated tables: answered as ISO text, stored as REAL seconds of the same instant.
    status, run = d.request("POST", f"{BASE}/{A}/runs", token=token)
    assert status == 201 and run["status"] == "completed", run
    status, undone = d.request("DELETE", f"{BASE}/{A}/matches/{M_ACTIVE}", token=token)
    assert status == 200 and undone["undone_at"].endswith("Z") and undone["created_at"] == T["matched"], undone
    con = sqlite3.connect(db_path)
    try:
        stored_run = con.execute(
            "SELECT typeof(started_at), started_at, finished_at FROM recon_runs WHERE id = ?", (run["id"],)
        ).fetchone()
        stored_undo = con.execute("SELECT undone_at FROM recon_matches WHERE id = ?", (M_ACTIVE,)).fetchone()
    finally:
        con.close()
    assert stored_run[0] == "real"
    assert (iso(stored_run[1]), iso(stored_run[2])) == (run["started_at"], run["finished_at"])
    assert iso(stored_undo[0]) == undone["undone_at"]
    assert parse_iso(T["undone"]) < stored_undo[0]  # a real clock reading, not a copy of an old value
    assert get(f"/{A}/audit")["data"][-1]["at"] == undone["undone_at"]
