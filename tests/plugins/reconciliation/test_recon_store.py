"""The SQL layer on a real SQLite file: matching writes, conflicts, undo, tenant walls."""

from decimal import Decimal

import pytest

from tierd.core.clock import parse_iso
from tierd.core.storage import Database
from tierd.plugins.reconciliation import migrations, store

NOW = parse_iso("2026-11-28T12:00:00.000000Z")


@pytest.fixture
async def db(tmp_path):
    database = await Database(tmp_path / "recon.db").open()
    await database.migrate({"reconciliation": migrations.MIGRATIONS})
    yield database
    await database.close()


def line(key: str, amount: str) -> dict:
    return {
        "booking_date": "2026-11-02",
        "value_date": None,
        "amount": amount,
        "currency": "EUR",
        "counterparty_name": "",
        "counterparty_account": "",
        "remittance": "",
        "end_to_end_id": "",
        "bank_reference": key,
        "dedup_key": key,
        "raw": "",
        "location": "",
    }


def entry(ext: str, amount: str) -> dict:
    return {
        "external_id": ext,
        "date": "2026-11-02",
        "amount": amount,
        "currency": "EUR",
        "counterparty": "",
        "reference": "",
        "description": "",
    }


async def seed(db, tenant: str) -> tuple[list[int], list[int]]:
    async with db.transaction() as tx:
        await store.insert_lines(tx, tenant, "acct", "imp_1", [line("A", "10"), line("B", "20"), line("C", "30")], NOW)
        await store.insert_entries(tx, tenant, "acct", [entry("E1", "10"), entry("E2", "20"), entry("E3", "30")], NOW)
    lines = [r["id"] for r in await store.open_lines(db, tenant, "acct")]
    entries = [r["id"] for r in await store.open_entries(db, tenant, "acct")]
    return lines, entries


def auto(bank_ids, ledger_ids) -> dict:
    return {
        "rule": "amount_date",
        "score": 0.9,
        "explanation": "x",
        "adjustment": Decimal(0),
        "bank_ids": bank_ids,
        "ledger_ids": ledger_ids,
    }


async def by_hand(tx, tenant: str, bank_ids, ledger_ids, actor: str = "a", explanation: str = "") -> str:
    """A manual match of these items, as ``manual.py`` writes one."""
    return await store.create_match(
        tx,
        tenant,
        "acct",
        run_id=None,
        kind="manual",
        rule="manual",
        score=1.0,
        explanation=explanation,
        adjustment=Decimal(0),
        bank_ids=bank_ids,
        ledger_ids=ledger_ids,
        actor=actor,
        now=NOW,
    )


async def test_bulk_matches_skip_items_matched_meanwhile_and_undo_frees_only_their_items(db):
    lines, entries = await seed(db, "acme")
    # A person matched line A meanwhile.
    async with db.transaction() as tx:
        manual = await by_hand(tx, "acme", [lines[0]], [entries[0]], actor="alice", explanation="by hand")
    async with db.transaction() as tx:
        created, skipped = await store.create_matches_bulk(
            tx,
            "acme",
            "acct",
            [auto([lines[0]], [entries[1]]), auto([lines[1]], [entries[1]]), auto([lines[2]], [entries[2]])],
            run_id="run_1",
            actor="scheduler",
            now=NOW,
        )
    assert (len(created), skipped) == (2, 1)
    assert await store.open_lines(db, "acme", "acct") == []
    # Undo one automatic match: exactly its two items come back.
    async with db.transaction() as tx:
        assert await store.undo_match(tx, "acme", "acct", created[0]["id"], "bob", NOW)
        assert not await store.undo_match(tx, "acme", "acct", created[0]["id"], "bob", NOW)  # only once
    assert [r["id"] for r in await store.open_lines(db, "acme", "acct")] == [lines[1]]
    assert [r["id"] for r in await store.open_entries(db, "acme", "acct")] == [entries[1]]
    match = await store.get_match(db, "acme", "acct", manual)
    assert [x["bank_reference"] for x in match["statement_lines"]] == ["A"]
    assert [x["external_id"] for x in match["ledger_entries"]] == ["E1"]


async def test_a_conflicting_manual_match_changes_nothing(db):
    lines, entries = await seed(db, "acme")
    async with db.transaction() as tx:
        await by_hand(tx, "acme", [lines[0]], [entries[0]])
    # The conflict is caught inside the transaction, which then commits (as a
    # run goes on with its other matches): only the savepoint can undo line B.
    async with db.transaction() as tx:
        with pytest.raises(store.Conflict):
            await by_hand(tx, "acme", [lines[1]], [entries[0]])
    # Line B was not left half-matched.
    assert lines[1] in [r["id"] for r in await store.open_lines(db, "acme", "acct")]


async def test_another_tenants_items_cannot_be_matched_or_seen(db):
    acme_lines, acme_entries = await seed(db, "acme")
    globex_lines, _ = await seed(db, "globex")
    with pytest.raises(store.Conflict):
        async with db.transaction() as tx:
            await by_hand(tx, "globex", [acme_lines[0]], [], actor="mallory")
    async with db.transaction() as tx:
        created, skipped = await store.create_matches_bulk(
            tx, "globex", "acct", [auto([acme_lines[1]], [acme_entries[1]])], run_id="run_x", actor="x", now=NOW
        )
    assert (created, skipped) == ([], 1)
    assert len(await store.open_lines(db, "acme", "acct")) == 3
    assert await store.items_by_id(db, "globex", "acct", "bank", acme_lines) == {}
    assert set(await store.items_by_id(db, "globex", "acct", "bank", globex_lines)) == set(globex_lines)


async def test_a_new_match_makes_rival_suggestions_stale(db):
    lines, entries = await seed(db, "acme")
    async with db.transaction() as tx:
        # Two close calls compete for entry E2; a third is about other items.
        await store.replace_suggestions(
            tx,
            "acme",
            "acct",
            "run_1",
            [auto([lines[1]], [entries[1]]), auto([lines[2]], [entries[1]]), auto([lines[0]], [entries[0]])],
            NOW,
        )
    async with db.transaction() as tx:
        await store.stale_rivals(tx, "acme", "acct", [lines[1]], [entries[1]], "carol", NOW, dialect=db.dialect)
    rows = await db.fetchall("SELECT bank_ids, ledger_ids, status FROM recon_suggestions ORDER BY bank_ids")
    status = {(r["bank_ids"], r["ledger_ids"]): r["status"] for r in rows}
    assert status[(f"[{lines[1]}]", f"[{entries[1]}]")] == "stale"
    assert status[(f"[{lines[2]}]", f"[{entries[1]}]")] == "stale"
    assert status[(f"[{lines[0]}]", f"[{entries[0]}]")] == "open"


async def test_times_written_in_the_oldest_form_become_unix_seconds(tmp_path):
    """Times of migration 1's days ("+00:00", no fraction when it was 0) go through 2 (core's ISO form) and 3 (REAL)."""
    database = await Database(tmp_path / "old.db").open()
    try:
        await database.migrate({"reconciliation": migrations.MIGRATIONS[:1]})
        async with database.transaction() as tx:
            # Migration 1's columns only: today's insert_lines writes columns added later.
            await tx.execute(
                "INSERT INTO recon_bank_lines (tenant_id, account_id, import_id, booking_date, amount, currency,"
                " dedup_key, created_at) VALUES ('acme', 'acct', 'imp_1', '2026-11-28', '10', 'EUR', 'A', ?)",
                ("2026-11-28T12:00:00+00:00",),
            )
            await store.insert_entries(tx, "acme", "acct", [entry("E1", "10")], "2026-11-28T12:00:00.250000+00:00")
        await database.migrate({"reconciliation": migrations.MIGRATIONS})
        rows = await database.fetchall(
            "SELECT created_at FROM recon_bank_lines UNION ALL SELECT updated_at FROM recon_ledger_entries"
        )
        assert [r["created_at"] for r in rows] == [
            parse_iso("2026-11-28T12:00:00Z"),
            parse_iso("2026-11-28T12:00:00.25Z"),
        ]
    finally:
        await database.close()
