"""Webhooks on PostgreSQL (issue 15): its migrations and every statement of its
store against a real server, and the same answers as SQLite's.

One throw-away PostgreSQL for the module (:class:`tierd.testing.PostgresServer`),
a fresh database per test; skipped where PostgreSQL is not installed. Most
tests run the same scenario on both backends (the ``backend`` fixture), so a
difference between them shows as a failure of one.
"""

from __future__ import annotations

import asyncio
import itertools
import time

import pytest

from tierd.core.pg import PgDatabase
from tierd.core.storage import Database, migrations_for
from tierd.plugins.webhooks import tierd_migrations
from tierd.plugins.webhooks.console import overview_numbers
from tierd.plugins.webhooks.migrations import MIGRATIONS, POSTGRESQL_MIGRATIONS
from tierd.plugins.webhooks.records import Outcome
from tierd.plugins.webhooks.reports import SOURCES
from tierd.plugins.webhooks.store import Store, TakenBack, for_postgresql
from tierd.testing import PostgresServer

needs_pg = pytest.mark.skipif(not PostgresServer.available(), reason=PostgresServer.MISSING)
pytestmark = needs_pg

_names = itertools.count(1)
NOW = 1_790_000_000.0  # a fixed time: minutes and hours fall alike on both backends


@pytest.fixture(scope="module")
def pg_server():
    with PostgresServer() as server:
        yield server


async def open_store(kind: str, tmp_path, pg_server) -> Store:
    """A migrated, empty webhooks store on ``kind`` with four endpoints of
    tenant acme (ep_3 disabled) and one of tenant other."""
    if kind == "sqlite":
        db = await Database(tmp_path / f"t{next(_names)}.db").open()
    else:
        db = await PgDatabase(pg_server.create_database(f"w{next(_names)}"), readers=2).open()
    await db.migrate(migrations_for(tierd_migrations(), db.dialect))
    for j, tenant in ((0, "acme"), (1, "acme"), (2, "acme"), (3, "acme"), (4, "other")):
        await db.execute(
            "INSERT INTO webhook_endpoints(id, tenant_id, url, secret, enabled, created_at, updated_at)"
            " VALUES (?,?,?,?,?,?,?)",
            (f"ep_{j}", tenant, "https://example.com", "whsec_x", int(j != 3), NOW, NOW),
        )
    return Store(db)


@pytest.fixture
async def stores(tmp_path, pg_server):
    """Factory of stores (closed at the end): ``await stores("postgresql")``."""
    made: list[Store] = []

    async def factory(kind: str) -> Store:
        store = await open_store(kind, tmp_path, pg_server)
        made.append(store)
        return store

    yield factory
    for store in made:
        await store.db.close()


@pytest.fixture(params=["sqlite", "postgresql"])
async def store(request, stores):
    return await stores(request.param)


def rows(count, now=NOW, endpoints=4, inflight=False, types=("invoice.paid",)):
    return [
        (
            f"msg_{i:06d}",
            "acme",
            f"ep_{i % endpoints}",
            f"evt_{i}",
            types[i % len(types)],
            "{}",
            now + i * 1e-3,
            now + i * 1e-3,
            inflight,
        )
        for i in range(count)
    ]


def outcome(row, at, kind="success", latency=12.0, next_status="succeeded", due=None):
    code = {"success": 200, "http_error": 500}.get(kind)
    return Outcome(row["seq"], "acme", row["endpoint_id"], at, kind, code, latency, None, "ok", next_status, due)


# --- the migrations -----------------------------------------------------------------------


async def _shape(db) -> dict[str, set]:
    """Tables with their columns, and index names, of the webhooks tables."""
    if db.dialect == "sqlite":
        tables = [
            r["name"] for r in await db.fetchall("SELECT name FROM sqlite_master WHERE type IN ('table', 'view')")
        ]
        shape = {t: {r["name"] for r in await db.fetchall(f"PRAGMA table_info({t})")} for t in tables}
        indexes = await db.fetchall("SELECT name FROM sqlite_master WHERE type='index' AND sql IS NOT NULL")
    else:
        columns = await db.fetchall(
            "SELECT table_name AS t, column_name AS c FROM information_schema.columns WHERE table_schema='public'"
        )
        shape = {}
        for r in columns:
            shape.setdefault(r["t"], set()).add(r["c"])
        indexes = await db.fetchall(
            "SELECT indexname AS name FROM pg_indexes WHERE schemaname='public' AND indexname NOT LIKE '%pkey'"
            " AND indexname NOT LIKE '%key'"
        )
    shape = {t: cols for t, cols in shape.items() if t.startswith("webhook_")}
    shape["indexes"] = {r["name"] for r in indexes if r["name"].startswith("webhook_")}
    return shape


#: PostgreSQL's own: the counters' changes, appended instead of updating one
#: row per endpoint (its migration 8).
PG_ONLY_TABLES = {"webhook_delivery_count_changes", "webhook_attempt_minute_changes"}
PG_ONLY_INDEXES = {"webhook_delivery_count_changes_endpoint", "webhook_attempt_minute_changes_endpoint"}


async def test_postgresql_migrations_build_the_tables_of_sqlites(stores):
    assert len(POSTGRESQL_MIGRATIONS) == len(MIGRATIONS)
    sqlite, pg = await stores("sqlite"), await stores("postgresql")
    pg_shape = await _shape(pg.db)
    assert PG_ONLY_TABLES <= pg_shape.keys() and PG_ONLY_INDEXES <= pg_shape["indexes"]
    pg_shape = {t: cols for t, cols in pg_shape.items() if t not in PG_ONLY_TABLES}
    pg_shape["indexes"] -= PG_ONLY_INDEXES
    assert pg_shape == await _shape(sqlite.db)
    status = await pg.db.migration_status(migrations_for(tierd_migrations(), "postgresql"))
    assert [(s["namespace"], s["applied"], s["pending"]) for s in status] == [("webhooks", len(MIGRATIONS), 0)]


def test_planner_hints_are_taken_out_for_postgresql():
    sql = (
        "SELECT d.* FROM webhook_endpoints e INDEXED BY webhook_endpoints_list CROSS JOIN webhook_deliveries d"
        " ON d.endpoint_id=e.id CROSS JOIN LATERAL (SELECT 1) x"
    )
    assert for_postgresql(sql) == (
        "SELECT d.* FROM webhook_endpoints e JOIN webhook_deliveries d ON d.endpoint_id=e.id"
        " CROSS JOIN LATERAL (SELECT 1) x"
    )


# --- creating and claiming ------------------------------------------------------------------


async def test_create_is_idempotent_and_answers_the_stored_seqs(store):
    created = await store.create_deliveries(rows(6, endpoints=2, inflight=True)[:3] + rows(6, endpoints=2)[3:], NOW)
    assert list(created) == [f"msg_{i:06d}" for i in range(6)]
    assert list(created.values()) == sorted(created.values())  # numbered in the rows' order (event order)
    stored = await store.db.fetchall("SELECT id, seq, status FROM webhook_deliveries")
    assert created == {r["id"]: r["seq"] for r in stored}
    assert sorted(r["status"] for r in stored) == ["inflight"] * 3 + ["pending"] * 3
    # Seen before: not made again; new ones answered with their seqs.
    again = await store.create_deliveries(rows(8, endpoints=2), NOW)
    assert list(again) == ["msg_000006", "msg_000007"]
    assert again["msg_000006"] < again["msg_000007"]
    # Many rows of one batch, some of an endpoint that does not exist: the seqs still follow the rows.
    many = [(f"b{r[0]}", *r[1:3], f"b{r[3]}", *r[4:]) for r in rows(3000, endpoints=6)]
    batch = await store.create_deliveries(many, NOW)
    assert len(batch) == 2500 and list(batch.values()) == sorted(batch.values())
    # An endpoint that does not exist (deleted meanwhile): its rows are not made.
    gone = [("msg_x", "acme", "ep_gone", "evt_x", "invoice.paid", "{}", NOW, NOW, False)]
    assert await store.create_deliveries(gone, NOW) == {}
    seq = await store.create_test_delivery("acme", "ep_0", "{}", NOW)
    assert (await store.claimed_row(seq))["event_type"] == "webhook.test"


async def test_claim_respects_room_cap_limit_and_disabled_endpoints(store):
    assert len(await store.create_deliveries(rows(400), NOW)) == 400
    claimed = await store.claim(NOW + 1, limit=100, cap=10, room={"ep_1": 3, "ep_2": 0}, claim_id=1)
    by_endpoint: dict[str, int] = {}
    for row in claimed:
        by_endpoint[row["endpoint_id"]] = by_endpoint.get(row["endpoint_id"], 0) + 1
    assert by_endpoint == {"ep_0": 10, "ep_1": 3}
    assert [r["id"] for r in claimed if r["endpoint_id"] == "ep_0"] == [f"msg_{i:06d}" for i in range(0, 40, 4)]
    again = await store.claim(NOW + 1, limit=5, cap=10, room={}, claim_id=2)
    assert len(again) == 5 and not {r["seq"] for r in again} & {r["seq"] for r in claimed}
    assert await store.claim(NOW - 10, limit=100, cap=10, room={}, claim_id=3) == []
    assert await store.requeue_inflight() == len(claimed) + 5


async def test_two_nodes_claiming_at_once_never_get_the_same_delivery(stores, pg_server):
    """Two PgDatabase objects on one database (two nodes) claim side by side,
    many times: every delivery is claimed once (FOR UPDATE SKIP LOCKED)."""
    first = await stores("postgresql")
    second = Store(await PgDatabase(first.db.url, readers=1).open())
    try:
        await first.create_deliveries(rows(600, endpoints=3), NOW)
        taken: list[int] = []
        for claim_id in range(40):
            a, b = await asyncio.gather(
                first.claim(NOW + 10, limit=20, cap=1000, room={}, claim_id=claim_id),
                second.claim(NOW + 10, limit=20, cap=1000, room={}, claim_id=claim_id),
            )
            taken += [r["seq"] for r in a] + [r["seq"] for r in b]
        assert len(taken) == len(set(taken)) == 600
    finally:
        await second.db.close()


async def test_an_endpoints_cap_holds_across_nodes_claiming_at_once(stores):
    """Two nodes claim side by side with a cap of 7 per endpoint: the rows in
    flight of an endpoint, all nodes together, never pass 7, and new rows the
    consumer would hand over at once are stored pending while it is full."""
    first = await stores("postgresql")
    second = Store(await PgDatabase(first.db.url, readers=1).open())
    try:
        await first.create_deliveries(rows(300, endpoints=3), NOW)
        for claim_id in range(10):
            await asyncio.gather(
                first.claim(NOW + 10, limit=50, cap=7, room={}, claim_id=claim_id),
                second.claim(NOW + 10, limit=50, cap=7, room={}, claim_id=claim_id),
            )
        in_flight = await first.db.fetchall(
            "SELECT endpoint_id, COUNT(*) AS n FROM webhook_deliveries WHERE status='inflight' GROUP BY endpoint_id"
        )
        assert {r["endpoint_id"]: r["n"] for r in in_flight} == {"ep_0": 7, "ep_1": 7, "ep_2": 7}

        # ep_0 is full: rows for it that would go at once are stored pending; ep_3 has room.
        new = [
            [f"msg_new{i}", "acme", ep, f"evt_new{i}", "invoice.paid", "{}", NOW, NOW, True]
            for i, ep in enumerate(["ep_0", "ep_0", "ep_1", "ep_3", "ep_3"])
        ]
        made = await second.create_deliveries(new, NOW, cap=7)
        assert len(made) == 5
        assert [row[8] for row in new] == [False, False, False, True, True]
        status = dict(await first.db.fetchall("SELECT id, status FROM webhook_deliveries WHERE id LIKE 'msg_new%'"))
        assert status == {
            "msg_new0": "pending",
            "msg_new1": "pending",
            "msg_new2": "pending",
            "msg_new3": "inflight",
            "msg_new4": "inflight",
        }
    finally:
        await second.db.close()


async def test_a_node_takes_back_the_claims_of_gone_nodes_never_a_live_ones(stores, pg_server):
    """Rows in flight on a node with no session (gone) go back to pending once
    their claim is older than the grace; a live node's (a session named
    ``tierd <node>``) and this node's own stay, unless at startup (own)."""
    import asyncpg

    store = await stores("postgresql")
    await store.create_deliveries(rows(8, endpoints=2), NOW)
    claimed = await store.claim(NOW + 1, limit=8, cap=10, room={}, claim_id=1)
    assert {r["seq"] for r in claimed} == set(range(1, 9))
    now = time.time()
    live = await asyncpg.connect(store.db.url, server_settings={"application_name": "tierd live-host:42"})
    try:
        for seqs, node, at in (
            ((1, 2), "gone-host:7", NOW),  # long ago
            ((3,), "gone-host:7", now),  # just now: within the grace
            ((4, 5), "live-host:42", NOW),
        ):
            for seq in seqs:
                await store.db.execute(
                    "UPDATE webhook_deliveries SET claimed_by=?, claimed_at=? WHERE seq=?", (node, at, seq)
                )
        assert await store.take_back(now=now, grace=3.0) == [TakenBack("gone-host:7", 2)]
        assert await store.take_back(now=now, grace=3.0) == []  # taken once
        status = dict(await store.db.fetchall("SELECT seq, status FROM webhook_deliveries ORDER BY seq"))
        assert status == {1: "pending", 2: "pending"} | dict.fromkeys(range(3, 9), "inflight")
        # Later, the grace past: the last one of the gone node too.
        assert await store.take_back(now=now + 5, grace=3.0) == [TakenBack("gone-host:7", 1)]
        # At startup this node takes back its own name's (a restart), still not the live node's.
        assert await store.take_back(own=True, now=now, grace=3.0) == [TakenBack(store.db.node, 3)]
        left = await store.db.fetchall("SELECT seq, claimed_by FROM webhook_deliveries WHERE status='inflight'")
        assert sorted(tuple(r) for r in left) == [(4, "live-host:42"), (5, "live-host:42")]
    finally:
        await live.close()
    # The live node is gone now: its rows go too.
    assert await store.take_back(now=now, grace=3.0) == [TakenBack("live-host:42", 2)]


async def test_fifo_heads_are_claimed_one_at_a_time_in_event_order(store):
    await store.db.execute("UPDATE webhook_endpoints SET ordering='fifo' WHERE id='ep_0'")
    created = await store.create_deliveries(rows(6, endpoints=2), NOW)
    heads = await store.claim_heads(NOW + 1, ["ep_0", "ep_1"], limit=10, claim_id=1)
    assert sorted(r["id"] for r in heads) == ["msg_000000", "msg_000001"]
    # In flight: nothing more of those endpoints until it is recorded.
    assert await store.claim_heads(NOW + 1, ["ep_0", "ep_1"], limit=10, claim_id=2) == []
    head = await store.head_of("ep_0")
    assert (head["id"], head["status"]) == ("msg_000000", "inflight")
    await store.record([outcome(r, NOW + 2) for r in heads])
    assert [r["id"] for r in await store.claim_heads(NOW + 3, ["ep_0"], 10, 3)] == ["msg_000002"]
    assert created["msg_000002"] == (await store.head_of("ep_0"))["seq"]
    blocked = await store.set_blocked("ep_0", True, NOW + 4)
    assert blocked is not None and blocked["blocked_since"] is not None
    assert await store.set_blocked("ep_0", True, NOW + 5) is None  # announced once
    assert await store.count_blocked() == 1


# --- recording, counters and stats ---------------------------------------------------------------


async def _history(store: Store) -> dict:
    """Deliveries claimed, failed, retried, succeeded, requeued and deleted; what
    the stats, the counters and the overview show then (times made comparable)."""
    await store.create_deliveries(rows(40, endpoints=3, types=("invoice.paid", "invoice.voided", "user.made")), NOW)
    claimed = await store.claim(NOW + 1, limit=100, cap=100, room={}, claim_id=1)
    latencies = [0.4, 3.0, 12.0, 80.0, 450.0, 2500.0, 70000.0, None]
    results = []
    for i, row in enumerate(claimed):
        at = NOW + 1 + i * 7  # across several minutes
        if i % 3 == 0:
            results.append(outcome(row, at, "http_error", latencies[i % 8], "pending", NOW + 500))
        elif i % 5 == 0:
            results.append(outcome(row, at, "http_error", latencies[i % 8], "failed"))
        else:
            results.append(outcome(row, at, "success", latencies[i % 8]))
    await store.record(results)
    retried = await store.claim(NOW + 600, limit=5, cap=100, room={}, claim_id=2)
    await store.record([outcome(r, NOW + 601, "success", 5.0) for r in retried])
    failed = await store.list_deliveries(
        "acme", "ep_1", limit=50, before=None, status="failed", event_type=None, since=None, until=None
    )
    if failed:
        assert await store.requeue("acme", failed[0]["id"], NOW + 700)
    assert await store.recover("acme", "ep_2", NOW - 10, NOW + 700) >= 0
    # The stats read the counters' views; the changes PostgreSQL appended are
    # folded after them, and the tables then hold the same counts as SQLite's.
    stats = {ep: await store.endpoint_stats("acme", ep, NOW) for ep in ("ep_0", "ep_1", "ep_2")}
    now_view = await store.db.fetchall("SELECT * FROM webhook_delivery_counts_now ORDER BY endpoint_id")
    await store.fold_counts()
    counts = await store.db.fetchall("SELECT * FROM webhook_delivery_counts ORDER BY endpoint_id")
    assert [dict(r) for r in now_view] == [dict(r) for r in counts]
    minutes = await store.db.fetchall(
        "SELECT * FROM webhook_attempt_minutes ORDER BY endpoint_id, minute, outcome, bucket"
    )
    endpoints = await store.db.fetchall("SELECT id, failing_since FROM webhook_endpoints ORDER BY id")
    overview = await overview_numbers(store.db, "acme", NOW + 800)
    overview_all = await overview_numbers(store.db, None, NOW + 800)
    return {
        "stats": stats,
        "counts": [dict(r) for r in counts],
        "minutes": [dict(r) for r in minutes],
        "failing": [(r["id"], r["failing_since"]) for r in endpoints],
        "overview": {k: v for k, v in overview.items() if k != "latest_failed"},
        "overview_failed": [r["id"] for r in overview["latest_failed"]],
        "overview_all": overview_all["failed_24h"],
        "deliveries": [
            (d["id"], d["status"], d["attempts"], d["last_status_code"])
            for ep in ("ep_0", "ep_1", "ep_2")
            for d in await store.list_deliveries(
                "acme", ep, limit=100, before=None, status=None, event_type=None, since=None, until=None
            )
        ],
    }


async def test_stats_counters_and_overview_on_postgresql_equal_sqlites(stores):
    """The same deliveries and attempts on both backends: the triggers' counters,
    the per-minute attempt counts, the failure windows, the stats route's numbers
    and the console's overview are the same."""
    sqlite = await _history(await stores("sqlite"))
    pg = await _history(await stores("postgresql"))
    assert sqlite["stats"]["ep_0"]["attempts"]["total"] > 0  # the scenario did something
    assert pg == sqlite


async def test_lists_filters_and_pages(store):
    types = ("invoice.paid", "invoice.voided", "invoice.paid.late", "user.made", "invoicex")
    await store.create_deliveries(rows(100, endpoints=2, types=types), NOW)

    async def ids(**kw):
        base = {"limit": 100, "before": None, "status": None, "event_type": None, "since": None, "until": None}
        return [d["id"] for d in await store.list_deliveries("acme", "ep_0", **(base | kw))]

    everything = await ids()
    assert len(everything) == 50 and everything == sorted(everything, reverse=True)
    invoices = await ids(event_type="invoice.*")
    assert len(invoices) == 30  # paid, voided, paid.late; not invoicex nor user.made
    assert await ids(event_type="invoice.voided") == [i for i in everything if int(i[4:]) % 5 == 1]
    assert await ids(status="pending", event_type="invoice.*") == invoices
    assert await ids(status="failed") == []
    page = await store.list_deliveries(
        "acme", "ep_0", limit=10, before=None, status=None, event_type=None, since=None, until=None
    )
    cursor = await store.delivery_cursor("acme", "ep_0", page[-1]["_seq"])
    assert await ids(before=cursor) == everything[10:]
    window = await ids(since=NOW + 0.050, until=NOW + 0.060)
    assert window == ["msg_000058", "msg_000056", "msg_000054", "msg_000052", "msg_000050"]
    of_event = await store.deliveries_of_event("acme", "evt_4")
    assert [(d["id"], d["endpoint_url"]) for d in of_event] == [("msg_000004", "https://example.com")]
    assert await store.deliveries_of_event("other", "evt_4") == []  # another tenant's


async def test_endpoints_crud_and_loading(store):
    made = await store.create_endpoint(
        "acme", {"url": "https://a.example", "event_types": ["x.*"], "rate_limit": 2.5, "owner": "c1"}, "whsec_y", NOW
    )
    assert made["rate_limit"] == 2.5 and made["owner"] == "c1" and made["enabled"] is True
    assert [e["id"] for e in await store.list_endpoints("acme", 10, None, owner="c1")] == [made["id"]]
    assert len(await store.list_endpoints("acme", 10, None)) == 5
    updated = await store.update_endpoint("acme", made["id"], {"enabled": False, "headers": {"a": "b"}}, NOW + 1)
    assert updated["enabled"] is False and updated["headers"] == {"a": "b"}
    assert await store.rotate_secret("acme", made["id"], "whsec_z", NOW + 60, NOW + 2)
    assert [r["id"] for r in await store.load_endpoints([made["id"], "ep_0", "nope"])] == sorted([made["id"], "ep_0"])
    assert await store.disable_endpoint("ep_0", "failing", NOW) is not None
    assert await store.disable_endpoint("ep_0", "failing", NOW) is None
    assert await store.count_disabled() == 3  # ep_3, the new one and ep_0
    assert await store.endpoints_failing_since(NOW) == []
    assert await store.next_due() is None
    assert await store.due_stats(NOW) == (0, None)
    assert await store.get_endpoint("other", made["id"]) is None


# --- deleting: purge and retention --------------------------------------------------------------


async def test_a_deleted_endpoints_history_is_purged_and_old_history_pruned(store):
    await store.create_deliveries(rows(30, endpoints=2), NOW)
    claimed = await store.claim(NOW + 1, limit=100, cap=100, room={}, claim_id=1)
    await store.record([outcome(r, NOW + 2) for r in claimed])
    assert await store.delete_endpoint("acme", "ep_1")
    assert await store.purges() == ["ep_1"]
    # An attempt of the deleted endpoint recorded late is not stored.
    late = next(r for r in claimed if r["endpoint_id"] == "ep_1")
    await store.record([outcome(late, NOW + 3)])
    purged = await store.purge("ep_1")
    assert purged["deliveries"] == 15 and purged["attempts"] == 15 and purged["attempt_minutes"] == 1
    assert await store.purges() == []
    left = await store.db.fetchone("SELECT COUNT(*) AS n FROM webhook_attempts")
    assert left["n"] == 15
    # Retention: everything finished before the cutoff goes, the counters follow.
    assert await store.prune(NOW + 3600) == 30
    counts = await store.db.fetchone("SELECT succeeded FROM webhook_delivery_counts_now WHERE endpoint_id='ep_0'")
    assert counts["succeeded"] == 0
    minutes = await store.db.fetchone("SELECT COUNT(*) AS n FROM webhook_attempt_minutes")
    assert minutes["n"] == 0


# --- what reports read ------------------------------------------------------------------------------


async def test_report_sources_run_and_answer_alike(stores):
    answers = []
    for kind in ("sqlite", "postgresql"):
        store = await stores(kind)
        await store.create_deliveries(rows(8, endpoints=2), NOW)
        claimed = await store.claim(NOW + 1, limit=100, cap=100, room={}, claim_id=1)
        await store.record([outcome(r, NOW + 2, latency=12.6) for r in claimed])
        answer = {}
        for source in SOURCES:
            key = "endpoint_id" if source.name == "webhooks.endpoints" else "delivery_id"
            found = await store.db.fetchall(f"SELECT * FROM ({source.sql}) AS s ORDER BY {key}")
            assert set(found[0].keys()) == {"tenant", *(c.name for c in source.columns)}, source.name
            # Attempt ids are numbered in the order a batch is written, which
            # PostgreSQL's store sorts by endpoint: not compared.
            answer[source.name] = [{k: v for k, v in dict(r).items() if k != "attempt_id"} for r in found]
        answers.append(answer)
    assert answers[0] == answers[1]


# --- plans ------------------------------------------------------------------------------------------


async def test_postgresql_walks_indexes_where_sqlite_was_told_to(stores, monkeypatch):
    """Without SQLite's INDEXED BY hints, PostgreSQL's planner still seeks the
    delivery indexes: no statement of the claims, lists and filters reads the
    whole deliveries table (checked with EXPLAIN on a history of 20k rows, most
    of them succeeded, as in use)."""
    from tierd.core import pg

    store = await stores("postgresql")
    types = ("invoice.paid", "invoice.voided", "user.made", "order.created")
    await store.create_deliveries(rows(20_000, endpoints=3, types=types), NOW)
    await store.db.execute("UPDATE webhook_deliveries SET status='succeeded', due_at=NULL WHERE seq % 50 <> 0")
    await store.db.execute("UPDATE webhook_deliveries SET status='failed', due_at=NULL WHERE seq % 97 = 0")
    await store.db.execute("UPDATE webhook_endpoints SET ordering='fifo' WHERE id='ep_2'")
    await store.db.execute("ANALYZE")

    recorded: list[tuple[str, object]] = []
    real = pg._fetch

    async def recording(conn, sql, params, timeout=None):
        recorded.append((sql, params))
        return await real(conn, sql, params, timeout)

    monkeypatch.setattr(pg, "_fetch", recording)
    assert await store.claim(NOW + 100, limit=50, cap=10, room={"ep_2": 0}, claim_id=1)  # fifo: apart
    assert await store.claim_heads(NOW + 100, ["ep_2"], limit=5, claim_id=2)
    await store.head_of("ep_2")
    for status in (None, "pending", "inflight", "succeeded", "failed"):
        for event_type in (None, "invoice.paid", "invoice.*", "*"):
            page = await store.list_deliveries(
                "acme", "ep_0", limit=50, before=None, status=status, event_type=event_type, since=None, until=None
            )
            if page:
                await store.list_deliveries(
                    "acme",
                    "ep_0",
                    limit=50,
                    before=(page[-1]["_created_at"], page[-1]["_seq"]),
                    status=status,
                    event_type=event_type,
                    since=NOW,
                    until=NOW + 20,
                )
    await store.deliveries_of_event("acme", "evt_5")
    await store.endpoint_stats("acme", "ep_0", NOW)
    monkeypatch.undo()
    assert len(recorded) > 30
    async with store.db.transaction() as tx:
        for sql, params in recorded:
            plan = "\n".join(r[0] for r in await tx.fetchall("EXPLAIN " + sql, params))
            assert "Seq Scan on webhook_deliveries" not in plan, (sql, plan)
