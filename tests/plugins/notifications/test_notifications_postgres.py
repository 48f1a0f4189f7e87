"""The notifications plugin on a real PostgreSQL (issue 15): its migrations
build the tables, columns, indexes and trigger SQLite's do, every statement of
``store.py`` answers the same on both backends (each store test runs on a
SQLite file and on a PostgreSQL database), and the report source and the
report it ships answer the same rows on both.

One throw-away server for the module (:class:`tierd.testing.PostgresServer`),
a fresh database per test; skipped, saying why, where PostgreSQL is missing.
"""

from __future__ import annotations

import asyncio
import itertools
import sqlite3
from types import SimpleNamespace

import pytest

from tierd.core.dbcopy import copy_database
from tierd.core.pg import PgDatabase
from tierd.core.storage import Database, migrations_for
from tierd.plugins.notifications import store, tierd_migrations
from tierd.plugins.notifications.intake import throttled
from tierd.plugins.notifications.reports import MESSAGES, NOTIFICATION_ACTIVITY
from tierd.plugins.reports import pgread
from tierd.plugins.reports.builder import build_report, stream
from tierd.testing import PostgresServer

pytestmark = pytest.mark.skipif(not PostgresServer.available(), reason=PostgresServer.MISSING)

_names = itertools.count(1)
#: 2027-01-15T08:00:00Z
T0 = 1_800_000_000.0
DAY = 86400.0
TABLES = (
    "notifications",
    "notification_attempts",
    "notification_groups",
    "notification_silences",
    "notification_files",
)
#: SQLite's declared types and the PostgreSQL types that hold the same values.
SAME_TYPE = {"INTEGER": "bigint", "REAL": "double precision", "TEXT": "text", "BLOB": "bytea"}


@pytest.fixture(scope="module")
def pg_server():
    with PostgresServer() as server:
        yield server


async def _open(dialect: str, pg_server, tmp_path):
    if dialect == "postgresql":
        db = await PgDatabase(pg_server.create_database(f"n{next(_names)}"), readers=2).open()
    else:
        db = await Database(str(tmp_path / f"n{next(_names)}.db")).open()
    await db.migrate(migrations_for(tierd_migrations(), dialect))
    return db


@pytest.fixture
async def pg(pg_server, tmp_path):
    """A new database with the plugin's PostgreSQL migrations."""
    db = await _open("postgresql", pg_server, tmp_path)
    yield db
    await db.close()


@pytest.fixture
async def lite(pg_server, tmp_path):
    db = await _open("sqlite", pg_server, tmp_path)
    yield db
    await db.close()


@pytest.fixture(params=["sqlite", "postgresql"])
async def db(request, pg_server, tmp_path):
    """Each store test once per backend: the same calls, the same answers."""
    db = await _open(request.param, pg_server, tmp_path)
    yield db
    await db.close()


def _row(n: str, **more) -> dict:
    """A notification as intake makes it (``n`` makes its id and dedup key)."""
    return {
        "id": f"{store.ID_PREFIX}{n}",
        "tenant_id": "acme",
        "kind": "event",
        "dedup_key": f"evt_{n}|r|journal",
        "event_id": f"evt_{n}",
        "event_type": "invoice.paid",
        "route": "invoices",
        "channel": "journal",
        "status": "pending",
        "next_attempt_at": T0,
        "created_at": T0,
        "events": [{"id": f"evt_{n}", "type": "invoice.paid"}],
        **more,
    }


async def _insert(db, *rows: dict) -> None:
    async with db.transaction() as tx:
        for row in rows:
            assert await store.insert_notification(tx, row)


def _outcome(notification_id: str, attempt: int, at: float, status: str, **more) -> dict:
    return {
        "id": notification_id,
        "attempt": attempt,
        "at": at,
        "outcome": status,
        "detail": "",
        "duration_ms": 12.5,
        "status": status,
        "next_attempt_at": None,
        "last_error": "",
        "sent_at": at if status == "delivered" else None,
        **more,
    }


# --- migrations ------------------------------------------------------------------------------


def test_both_dialects_are_declared_numbered_alike():
    declared = tierd_migrations()["notifications"]
    assert declared["sqlite"] is store.MIGRATIONS  # existing databases applied it: unchanged
    assert len(declared["postgresql"]) == len(declared["sqlite"]) == 4


async def test_postgresql_migrations_build_the_tables_columns_indexes_and_trigger_of_sqlite(pg, lite):
    for table in TABLES:
        pg_columns = [
            (r["column_name"], r["data_type"])
            for r in await pg.fetchall(
                "SELECT column_name, data_type FROM information_schema.columns WHERE table_name=?"
                " ORDER BY ordinal_position",
                (table,),
            )
        ]
        lite_columns = [
            (r["name"], SAME_TYPE[r["type"]])
            for r in await lite.fetchall(f"SELECT * FROM pragma_table_info('{table}')")
        ]
        assert pg_columns == lite_columns, table
    pg_indexes = {
        r["indexname"] for r in await pg.fetchall("SELECT indexname FROM pg_indexes WHERE schemaname='public'")
    }
    lite_indexes = {
        r["name"]
        for r in await lite.fetchall("SELECT name FROM sqlite_master WHERE type='index'")
        if not r["name"].startswith("sqlite_autoindex")
    }
    assert len(lite_indexes) == 11 and lite_indexes <= pg_indexes
    # The partial indexes stay partial.
    due = await pg.fetchone("SELECT indexdef FROM pg_indexes WHERE indexname='notifications_due'")
    assert "WHERE (status = 'pending'::text)" in due["indexdef"]
    triggers = await pg.fetchall("SELECT tgname FROM pg_trigger WHERE NOT tgisinternal")
    assert [r["tgname"] for r in triggers] == ["notifications_delete_attempts"]
    status = await pg.migration_status(migrations_for(tierd_migrations(), "postgresql"))
    assert status == [{"namespace": "notifications", "applied": 4, "available": 4, "pending": 0}]


async def test_identity_values_are_never_handed_out_twice(pg):
    """A group closed and opened again gets a new id (digests' dedup keys hold it),
    as SQLite's AUTOINCREMENT; a copied row's own id is taken as given."""
    times = SimpleNamespace(next_flush_at=None, last_flush_at=None, expires_at=T0)
    async with pg.transaction() as tx:
        first = await store.save_group(tx, None, "k", "acme", "r", "journal", {}, times, T0)
    await store.delete_expired_groups(pg, T0)
    async with pg.transaction() as tx:
        again = await store.save_group(tx, None, "k", "acme", "r", "journal", {}, times, T0)
    assert isinstance(first, int) and again > first
    await pg.execute(
        "INSERT INTO notification_groups(id, group_key, tenant_id, route, channel, labels, created_at)"
        " VALUES (?,?,?,?,?,?,?)",
        (1000, "copied", "acme", "r", "journal", "{}", T0),
    )
    assert (await store.get_group(pg, "copied"))["id"] == 1000


# --- several writers at once (PostgreSQL's, where SQLite has one) ----------------------------------


async def _due_group(pg) -> int:
    due = SimpleNamespace(next_flush_at=T0, last_flush_at=None, expires_at=None)
    async with pg.transaction() as tx:
        group = await store.save_group(tx, None, "g", "acme", "payments", "chat", {}, due, T0 - 30)
        assert await store.insert_notification(tx, _row("first", status="grouped", group_id=group))
    return group


async def _flush(pg, group: int) -> list[str] | None:
    """What Dispatcher._flush does to the rows: lock the group if due, take its
    items, mark them and close the group; the ids flushed (None: not due)."""
    async with pg.transaction() as tx:
        if await store.lock_due_group(tx, group, T0, "postgresql") is None:
            return None
        items = [i["id"] for i in await store.group_items(tx, group)]
        await store.mark_digested(tx, items, "ntf_digest", T0)
        closed = SimpleNamespace(next_flush_at=None, last_flush_at=T0, expires_at=T0 + 3600)
        await store.set_group_times(tx, group, closed, flushed=True)
        return items


async def test_a_flush_waits_for_the_events_joining_its_group(pg):
    """Without the lock a flush could read the items before an event's row
    commits, then close the group: the event would wait in it for no timer."""
    group = await _due_group(pg)
    async with pg.transaction() as intake:
        joined = await store.get_group(intake, "g", "postgresql")  # intake's read: locks the group
        assert joined["next_flush_at"] == T0  # scheduled: the event rides along, timers unchanged
        flush = asyncio.create_task(_flush(pg, group))
        await asyncio.sleep(0.3)
        assert not flush.done(), "the flush did not wait for intake"
        assert await store.insert_notification(intake, _row("second", status="grouped", group_id=group))
    assert await flush == [f"{store.ID_PREFIX}first", f"{store.ID_PREFIX}second"]


async def test_of_two_flushes_of_one_group_one_makes_the_digest(pg):
    """Two nodes (or two ticks) flushing the group at once: the second finds it done."""
    group = await _due_group(pg)
    results = await asyncio.gather(_flush(pg, group), _flush(pg, group))
    assert sorted(results, key=repr) == [None, [f"{store.ID_PREFIX}first"]]
    assert (await store.get_group(pg, "g"))["flushes"] == 1


# --- store.py, on both backends ------------------------------------------------------------------


async def test_claims_of_several_nodes(pg):
    """Due rows claimed by one node are not due for another; a claim is taken over
    only from a node that is gone (and after its grace), never from a connected
    one; an outcome is written only by the row's claimant; a node starting again
    takes back its own name's claims; a purged row's files go with it."""
    live = await PgDatabase(pg.url, readers=1, node="live-node:1").open()
    try:
        await _insert(pg, *[_row(n) for n in ("n1", "n2", "n3")])
        lease = T0 + 360

        def first(k):
            return lambda rows: list(rows)[:k]

        taken = await store.claim_due(live, T0, 10, (), first(1), live.node, lease)
        assert [r["id"] for r in taken] == ["ntf_n1"]
        taken = await store.claim_due(pg, T0, 10, (), first(5), pg.node, lease)
        assert [r["id"] for r in taken] == ["ntf_n2", "ntf_n3"]  # n1 is the other node's
        assert await store.claim_due(live, T0 + 300, 10, (), first(5), live.node, lease) == []
        await pg.execute("UPDATE notifications SET claimed_by='dead-node:2' WHERE id='ntf_n3'")

        assert await store.take_over(pg, T0 + 2, 3.0) == {}  # claimed 2s ago: within the grace
        assert await store.take_over(live, T0 + 10, 3.0) == {"dead-node:2": 1}
        rows = {r["id"]: r for r in await pg.fetchall("SELECT * FROM notifications")}
        assert (rows["ntf_n3"]["claimed_by"], rows["ntf_n3"]["next_attempt_at"]) == (None, T0 + 10)
        assert rows["ntf_n1"]["claimed_by"] == live.node and rows["ntf_n2"]["claimed_by"] == pg.node

        # The live node's outcome for pg's row is not written; pg's own is, and clears the claim.
        async with live.transaction() as tx:
            await store.record_attempts(tx, [_outcome("ntf_n2", 1, T0 + 11, "delivered")], live.node)
        assert (await store.get(pg, "ntf_n2"))["status"] == "pending"
        async with pg.transaction() as tx:
            await store.record_attempts(tx, [_outcome("ntf_n1", 1, T0 + 11, "delivered")], pg.node)
        assert (await store.get(pg, "ntf_n1"))["status"] == "pending"  # n1 is live's
        async with live.transaction() as tx:
            await store.record_attempts(tx, [_outcome("ntf_n1", 1, T0 + 11, "delivered")], live.node)
        n1 = await store.get(pg, "ntf_n1")
        assert (n1["status"], n1["claimed_by"]) == ("delivered", None)

        assert await store.take_back(pg, pg.node, T0 + 12) == 1  # n2: a restart under the same name
        assert (await store.get(pg, "ntf_n2"))["claimed_by"] is None

        async with pg.transaction() as tx:
            await store.store_files(tx, "ntf_n1", [b"\x00bytes", b""])
        assert await store.files_of(pg, "ntf_n1") == {0: b"\x00bytes", 1: b""}
        assert await store.purge(pg, T0 + 1) == 1  # n1, delivered
        assert await store.files_of(pg, "ntf_n1") == {}
    finally:
        await live.close()


async def test_a_throttle_counts_what_another_writer_let_through(pg):
    """Two writers (two nodes' flushes) each let one through a throttle of one: the
    second counts under the throttle's lock, so it waits for the first to commit
    and sees its row."""
    settings = {"throttle": {"max": 1, "per": 3600.0}}
    first_counted, go_on = asyncio.Event(), asyncio.Event()

    async def writer(n: str, hold: bool) -> bool:
        async with pg.transaction() as tx:
            if await throttled(tx, settings, "invoices", "journal", T0, "postgresql"):
                return False
            if hold:
                first_counted.set()
                await go_on.wait()
            assert await store.insert_notification(tx, _row(n))
            return True

    first = asyncio.ensure_future(writer("a", hold=True))
    await first_counted.wait()
    second = asyncio.ensure_future(writer("b", hold=False))
    try:
        await asyncio.sleep(0.3)
        waited = not second.done()  # waiting for the throttle's lock
    finally:
        go_on.set()
    assert await first and not await second
    assert waited


async def test_intake_is_idempotent_and_reads_what_it_wrote(db):
    async with db.transaction() as tx:
        assert await store.insert_notification(tx, _row("1"))
        # The same dedup key again (the bus re-delivered the event): nothing inserted.
        assert not await store.insert_notification(tx, _row("1", id=f"{store.ID_PREFIX}other"))
        assert await store.id_by_dedup_key(tx, "evt_1|r|journal") == f"{store.ID_PREFIX}1"
        assert await store.id_by_dedup_key(tx, "nope") is None
        assert await store.insert_notification(tx, _row("2", status="delivered", created_at=T0 - 10))
        assert await store.insert_notification(tx, _row("3", status="muted"))
        assert await store.insert_notification(tx, _row("4", route="payments"))
        # A batch's keys are one parameter, however many (SQLite's limit on parameters).
        keys = [f"evt_{n}|r|journal" for n in range(40_000)]
        assert await store.existing_dedup_keys(tx, keys, db.dialect) == {f"evt_{n}|r|journal" for n in (1, 2, 3, 4)}
        assert await store.existing_dedup_keys(tx, [], db.dialect) == set()
        # Throttling counts the sending rows of its route and channel since a time.
        assert await store.count_recent(tx, "invoices", "journal", T0 - 60) == 2
        assert await store.count_recent(tx, "invoices", "journal", T0 - 5) == 1
    row = await store.get(db, f"{store.ID_PREFIX}1")
    assert (row["event_count"], row["attempts"], row["events"], row["attachments"]) == (
        1,
        0,
        '[{"id":"evt_1","type":"invoice.paid"}]',
        None,
    )
    assert row["created_at"] == row["updated_at"] == T0 and isinstance(row["seq"], int)
    assert await store.get(db, f"{store.ID_PREFIX}1", tenant="globex") is None
    assert (await store.get(db, f"{store.ID_PREFIX}1", tenant="acme"))["id"] == row["id"]
    await _insert(db, _row("5", kind="message", attachments=[{"filename": "a.csv", "path": "/x", "media_type": "t"}]))
    assert (await store.get(db, f"{store.ID_PREFIX}5"))["attachments"].startswith('[{"filename":"a.csv"')


async def test_groups_open_flush_and_expire(db):
    labels = {"type": "payment.failed"}
    opened = SimpleNamespace(next_flush_at=T0 + 30, last_flush_at=None, expires_at=None)
    async with db.transaction() as tx:
        group = await store.save_group(tx, None, "g1", "acme", "payments", "chat", labels, opened, T0)
        other = await store.save_group(tx, None, "g2", "acme", "payments", "chat", labels, opened, T0)
        assert isinstance(group, int) and other != group
        moved = SimpleNamespace(next_flush_at=T0 + 20, last_flush_at=None, expires_at=None)
        assert await store.save_group(tx, group, "g1", "acme", "payments", "chat", labels, moved, T0) == group
        for n in range(3):
            assert await store.insert_notification(tx, _row(f"g{n}", status="grouped", group_id=group))
        saved = await store.get_group(tx, "g1")
    assert (saved["id"], saved["labels"], saved["next_flush_at"], saved["flushes"]) == (
        group,
        '{"type":"payment.failed"}',
        T0 + 20,
        0,
    )
    assert await store.next_group_flush(db) == T0 + 20
    assert await store.due_groups(db, T0 + 19) == []
    assert [g["id"] for g in await store.due_groups(db, T0 + 30)] == [group, other]
    async with db.transaction() as tx:
        items = await store.group_items(tx, group)
        assert [i["id"] for i in items] == [f"{store.ID_PREFIX}g{n}" for n in range(3)]
        await store.mark_digested(tx, [i["id"] for i in items], "ntf_digest", T0 + 20)
        flushed = SimpleNamespace(next_flush_at=None, last_flush_at=T0 + 20, expires_at=T0 + 100)
        await store.set_group_times(tx, group, flushed, flushed=True)
        assert await store.group_items(tx, group) == []
    saved = await store.get_group(db, "g1")
    assert (saved["next_flush_at"], saved["last_flush_at"], saved["flushes"]) == (None, T0 + 20, 1)
    digested = await store.get(db, f"{store.ID_PREFIX}g0")
    assert (digested["status"], digested["digest_id"]) == ("digested", "ntf_digest")
    await store.delete_expired_groups(db, T0 + 99)
    assert await store.get_group(db, "g1") is not None
    await store.delete_expired_groups(db, T0 + 100)
    assert await store.get_group(db, "g1") is None and await store.get_group(db, "g2") is not None


async def test_the_dispatchers_reads_and_recorded_attempts(db):
    await _insert(
        db,
        _row("a", next_attempt_at=T0 + 5),
        _row("b", next_attempt_at=T0 + 1, channel="chat"),
        _row("c", next_attempt_at=T0 + 2),
        _row("late", next_attempt_at=T0 + 500),
        _row("done", status="delivered", next_attempt_at=T0),
    )
    due = await store.due_notifications(db, T0 + 10, 10)
    assert [r["id"][4:] for r in due] == ["b", "c", "a"]
    assert [r["id"][4:] for r in await store.due_notifications(db, T0 + 10, 2)] == ["b", "c"]
    assert [r["id"][4:] for r in await store.due_notifications(db, T0 + 10, 10, ["chat"])] == ["c", "a"]
    assert await store.next_attempt(db) == T0 + 1
    assert await store.next_attempt(db, exclude=[f"{store.ID_PREFIX}b"], exclude_channels=["journal"]) is None
    assert await store.next_attempt(db, exclude=[f"{store.ID_PREFIX}b", f"{store.ID_PREFIX}c"]) == T0 + 5

    async with db.transaction() as tx:
        await store.record_attempts(
            tx,
            [
                _outcome(f"{store.ID_PREFIX}b", 1, T0 + 11, "delivered"),
                _outcome(f"{store.ID_PREFIX}c", 1, T0 + 11, "pending", next_attempt_at=T0 + 71, last_error="503"),
            ],
        )
    async with db.transaction() as tx:
        await store.record_attempts(tx, [_outcome(f"{store.ID_PREFIX}c", 2, T0 + 72, "failed", last_error="503")])
    b, c = await store.get(db, f"{store.ID_PREFIX}b"), await store.get(db, f"{store.ID_PREFIX}c")
    assert (b["status"], b["attempts"], b["sent_at"], b["updated_at"]) == ("delivered", 1, T0 + 11, T0 + 11)
    assert (c["status"], c["attempts"], c["last_error"], c["sent_at"]) == ("failed", 2, "503", None)
    attempts = await store.attempts_of(db, [b["id"], c["id"], "ntf_none"])
    assert {k: [(a["attempt"], a["at"], a["duration_ms"]) for a in v] for k, v in attempts.items()} == {
        b["id"]: [(1, T0 + 11, 12.5)],
        c["id"]: [(1, T0 + 11, 12.5), (2, T0 + 72, 12.5)],
    }
    assert await store.attempts_of(db, []) == {}
    assert [r["id"][4:] for r in await store.due_notifications(db, T0 + 1000, 10)] == ["a", "late"]


async def _history_world(db) -> list[dict]:
    """Rows of two tenants, several statuses, channels, routes and kinds, one a
    minute (times rise with seq), and a digest carrying an event; returns them."""
    rows = []
    for n in range(24):
        rows.append(
            _row(
                f"h{n:02d}",
                tenant_id=("acme", "globex")[n % 2],
                status=("delivered", "failed", "pending", "muted")[n % 4],
                channel=("journal", "chat", "mail")[n % 3],
                route=("invoices", "payments")[n // 12],
                created_at=T0 + 60 * n,
            )
        )
    rows.append(_row("test", tenant_id="", kind="test", event_id=None, route=None, created_at=T0 + 60 * 24))
    rows.append(_row("h00d", kind="digest", event_id="evt_h00", dedup_key=None, created_at=T0 + 60 * 25))
    rows[0]["digest_id"] = f"{store.ID_PREFIX}h00d"
    rows[0]["status"] = "digested"
    await _insert(db, *rows)
    return rows


@pytest.mark.parametrize(
    "filters",
    [
        {"tenant": None},
        {"tenant": "acme"},
        {"tenant": None, "status": "failed"},
        {"tenant": "globex", "status": "muted"},
        {"tenant": "acme", "channel": "chat"},
        {"tenant": None, "route": "payments", "channel": "mail"},
        {"tenant": None, "kind": "test"},
        {"tenant": "acme", "kind": "test"},
        {"tenant": None, "event": "evt_h00"},
        {"tenant": "acme", "event": "evt_h00", "kind": "digest"},
        {"tenant": None, "since": T0 + 600, "until": T0 + 1200},
        {"tenant": "acme", "status": "delivered", "since": T0 + 300},
        {"tenant": None, "since": T0 + 10_000},
        {"tenant": None, "until": T0 - 1},
    ],
)
async def test_history_filters_and_pages(db, filters):
    rows = await _history_world(db)

    def wanted(r: dict) -> bool:
        if filters["tenant"] is not None and r["tenant_id"] != filters["tenant"]:
            return False
        if "event" in filters and r["event_id"] != filters["event"]:
            return False
        for key, column in (("status", "status"), ("channel", "channel"), ("route", "route"), ("kind", "kind")):
            if key in filters and r.get(column) != filters[key]:
                return False
        if "since" in filters and r["created_at"] < filters["since"]:
            return False
        return not ("until" in filters and r["created_at"] >= filters["until"])

    expected = [r["id"] for r in reversed(rows) if wanted(r)]
    assert [r["id"] for r in await store.history(db, **filters)] == expected
    # Page by page, two rows a page, each starting before the last seq seen.
    paged, before = [], None
    while True:
        page = await store.history(db, **filters, before_seq=before, limit=2)
        paged += [r["id"] for r in page]
        if len(page) < 2:
            break
        before = page[-1]["seq"]
    assert paged == expected


async def test_since_and_until_find_rows_stamped_out_of_seq_order(db):
    """A row stamped before another writer's row but inserted after it (a higher
    seq, an earlier time) is still in the range its time puts it in."""
    await _insert(
        db,
        _row("early", created_at=T0 - 100),
        _row("b", created_at=T0 + 5),
        _row("a", created_at=T0 + 1),  # stamped first, inserted second
        _row("c", created_at=T0 + 10),
        _row("d", created_at=T0 + 9),
    )
    since = [r["id"][4:] for r in await store.history(db, tenant=None, since=T0)]
    assert since == ["d", "c", "a", "b"]
    until = [r["id"][4:] for r in await store.history(db, tenant=None, until=T0 + 10)]
    assert until == ["d", "a", "b", "early"]
    both = [r["id"][4:] for r in await store.history(db, tenant=None, since=T0 + 2, until=T0 + 10)]
    assert both == ["d", "b"]


async def test_retention_purges_finished_rows_and_their_attempts_in_slices(db):
    old, recent = T0 - 40 * DAY, T0 - DAY
    gone = [_row(f"old{n}", status=("delivered", "failed", "throttled")[n % 3], created_at=old) for n in range(700)]
    kept = [_row(f"pend{n}", created_at=old) for n in range(5)]
    kept += [_row(f"grp{n}", status="grouped", group_id=1, created_at=old) for n in range(5)]
    kept += [_row(f"new{n}", status="delivered", created_at=recent) for n in range(5)]
    await _insert(db, *gone, *kept)
    async with db.transaction() as tx:
        await store.record_attempts(tx, [_outcome(r["id"], 1, r["created_at"], r["status"]) for r in gone + kept])
    assert await store.purge(db, T0 - 30 * DAY) == 700  # more than one slice (256, then larger)
    left = {r["id"] for r in await db.fetchall("SELECT id FROM notifications")}
    assert left == {r["id"] for r in kept}
    # The trigger took the attempts of every purged row, and only theirs.
    attempts = {r["notification_id"] for r in await db.fetchall("SELECT notification_id FROM notification_attempts")}
    assert attempts == left
    assert await store.purge(db, T0 - 30 * DAY) == 0


async def test_silences_are_kept_listed_and_deleted_per_tenant(db):
    for n, tenant, ends in ((1, "acme", T0 + 100), (2, "globex", T0 + 100), (3, "acme", T0 - 1), (4, None, T0 + 5)):
        await store.insert_silence(
            db,
            {
                "id": f"sil_{n}",
                "tenant_id": tenant,
                "matchers": {"type": ["invoice.*"]},
                "starts_at": T0 - 10,
                "ends_at": ends,
                "comment": "maintenance",
                "created_by": "admin",
                "created_at": T0 + n,
            },
        )
    assert [s["id"] for s in await store.silences(db)] == ["sil_1", "sil_2", "sil_3", "sil_4"]
    assert [s["id"] for s in await store.silences(db, tenant="acme")] == ["sil_1", "sil_3"]
    assert [s["id"] for s in await store.silences(db, active_at=T0)] == ["sil_1", "sil_2", "sil_4"]
    assert [s["id"] for s in await store.silences(db, tenant="acme", active_at=T0)] == ["sil_1"]
    silence = await store.get_silence(db, "sil_1")
    assert (silence["matchers"], silence["ends_at"]) == ('{"type":["invoice.*"]}', T0 + 100)
    assert not await store.delete_silence(db, "sil_1", "globex")
    assert await store.delete_silence(db, "sil_1", "acme")
    assert await store.delete_silence(db, "sil_4", None)
    assert await store.get_silence(db, "sil_1") is None
    assert [s["id"] for s in await store.silences(db)] == ["sil_2", "sil_3"]


# --- what reports read ---------------------------------------------------------------------------


async def _same_rows_in(pg, lite) -> None:
    for db in (pg, lite):
        await _history_world(db)
        async with db.transaction() as tx:
            await store.record_attempts(
                tx,
                [
                    _outcome(f"{store.ID_PREFIX}h01", 1, T0 + 70, "pending", next_attempt_at=T0 + 130),
                    _outcome(f"{store.ID_PREFIX}h01", 2, T0 + 130, "failed", last_error="HTTP 500"),
                    _outcome(f"{store.ID_PREFIX}h04", 1, T0 + 250, "delivered"),
                ],
            )


async def test_the_report_source_answers_the_same_rows_on_both_backends(pg, lite):
    await _same_rows_in(pg, lite)
    sql = f"SELECT * FROM ({MESSAGES.sql}) AS m ORDER BY notification_id"
    on_pg = [dict(r) for r in await pg.fetchall(sql)]
    on_lite = [dict(r) for r in await lite.fetchall(sql)]
    assert len(on_pg) == 26 and on_pg == on_lite
    assert list(on_pg[0]) == ["tenant", *(c.name for c in MESSAGES.columns)]
    # next_attempt_at is the pending rows' only.
    assert {r["status"] for r in on_pg if r["next_attempt_at"] is not None} == {"pending"}


@pytest.mark.parametrize("tenant", ["acme", None])
async def test_the_shipped_report_answers_the_same_rows_on_both_backends(pg, lite, tenant):
    await _same_rows_in(pg, lite)
    spec = NOTIFICATION_ACTIVITY.spec
    report = build_report(NOTIFICATION_ACTIVITY.name, spec, {MESSAGES.name: MESSAGES})
    params = report.parse_params({"from": "2027-01-01", "to": "2027-01-31"})

    def read(conn: sqlite3.Connection | pgread.PgReader, query) -> list[tuple]:
        return list(stream(conn, report, query))

    on_pg = await pgread.read_in_thread(
        pg, lambda r: read(r, report.compile(tenant, params, 1000, dialect="postgresql")), budget=30
    )
    on_lite = await lite.read_in_thread(lambda c: read(c, report.compile(tenant, params, 1000)), budget=30)
    # The same rows; their order differs where a key is NULL (a test send has no
    # route): the reports builder's ORDER BY leaves NULLs first on SQLite, last on
    # PostgreSQL (its own concern; reported).
    assert sorted(on_pg, key=repr) == sorted(on_lite, key=repr) and on_pg
    names = [c if isinstance(c, str) else c["name"] for c in spec["columns"]]
    totals = {name: sum(row[names.index(name)] for row in on_pg) for name in ("notifications", "sent", "retried")}
    # acme has the even rows (a fifth of them delivered, none retried) and the digest.
    assert totals == (
        {"notifications": 13, "sent": 5, "retried": 0} if tenant else {"notifications": 26, "sent": 5, "retried": 1}
    )


# --- moving over ----------------------------------------------------------------------------------


async def test_tierd_db_copy_moves_the_tables_and_the_store_carries_on(pg_server, tmp_path):
    """A SQLite database copied by ``tierd db copy`` answers alike on PostgreSQL,
    and new rows there get ids past the copied ones (identities moved on)."""
    path = tmp_path / "old.db"
    lite = await Database(str(path)).open()
    await lite.migrate(migrations_for(tierd_migrations(), "sqlite"))
    await _history_world(lite)
    times = SimpleNamespace(next_flush_at=T0 + 30, last_flush_at=None, expires_at=None)
    async with lite.transaction() as tx:
        await store.record_attempts(tx, [_outcome(f"{store.ID_PREFIX}h04", 1, T0 + 250, "delivered")])
        group = await store.save_group(tx, None, "g", "acme", "payments", "chat", {"type": "x"}, times, T0)
    before = [dict(r) for r in await store.history(lite, tenant=None)]
    await lite.close()

    url = pg_server.create_database(f"n{next(_names)}")
    result = await copy_database(path, url, migrations_for(tierd_migrations(), "postgresql"))
    assert all(t.ok for t in result.tables) and {t.table for t in result.tables} >= set(TABLES)
    async with PgDatabase(url, readers=1) as pg:
        assert [dict(r) for r in await store.history(pg, tenant=None)] == before
        async with pg.transaction() as tx:
            assert await store.save_group(tx, None, "g2", "acme", "payments", "chat", {}, times, T0) > group
            assert await store.insert_notification(tx, _row("after"))
        assert (await store.get(pg, f"{store.ID_PREFIX}after"))["seq"] > max(r["seq"] for r in before)
        assert await store.purge(pg, T0 + 10_000) == sum(r["status"] in store.FINAL_STATUSES for r in before)
        assert await pg.fetchall("SELECT * FROM notification_attempts") == []
