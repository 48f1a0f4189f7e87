"""Costs that stay flat as the history grows (issue 16): stats from counters kept
by triggers, delivery pages along one index per filter, retention in slices.

The stats are checked against the history itself (counts exact, latency
percentiles in the bucket of the exact value), after real deliveries to a real
receiver, a restart, a prune and an upgrade of a database made by the old
schema; every list of the API is checked to walk an index in its order.
"""

from __future__ import annotations

import asyncio
import base64
import bisect
import json
import random
import re
import sqlite3
import time
from pathlib import Path

import pytest
from aiohttp import web
from webhook_helpers import LocalDaemon, hook_receiver, local, raw_sql, sqlite_only  # noqa: F401 - fixtures

from tierd import testing
from tierd.core.clock import parse_iso
from tierd.core.storage import Database
from tierd.plugins.webhooks.migrations import LATENCY_BOUNDS_MS, MIGRATIONS, latency_bucket_sql
from tierd.plugins.webhooks.records import DELIVERY_STATUSES, Outcome
from tierd.plugins.webhooks.store import Store, latency_percentile

# --- helpers ---------------------------------------------------------------------------------


def bucket_of(latency_ms: float | None) -> int:
    """The histogram bucket of a latency, computed apart from the SQL of migration 3."""
    if latency_ms is None:
        return -1
    return bisect.bisect_right(LATENCY_BOUNDS_MS, latency_ms)


def exact_percentile(values: list[float], p: int) -> float | None:
    """What the stats answered before migration 3: the value at that rank of a sort."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, len(ordered) * p // 100)]


_BY_STATUS = "SELECT status, COUNT(*) FROM webhook_deliveries WHERE endpoint_id=? GROUP BY status"
_ATTEMPTS_SINCE = "SELECT outcome, latency_ms FROM webhook_attempts WHERE endpoint_id=? AND attempted_at>=?"


def expected_stats(conn: sqlite3.Connection, endpoint_id: str, since: float) -> dict:
    """Deliveries by status and attempts since ``since`` counted from the history."""
    return _counted(
        conn.execute(_BY_STATUS, (endpoint_id,)).fetchall(),
        conn.execute(_ATTEMPTS_SINCE, (endpoint_id, since)).fetchall(),
    )


async def expected_stats_of(daemon, endpoint_id: str, since: float) -> dict:
    """:func:`expected_stats` of a test daemon's database (SQLite or PostgreSQL)."""
    return _counted(
        await raw_sql(daemon, _BY_STATUS, (endpoint_id,)),
        await raw_sql(daemon, _ATTEMPTS_SINCE, (endpoint_id, since)),
    )


def _counted(statuses: list[tuple], rows: list[tuple]) -> dict:
    by_status = dict.fromkeys(DELIVERY_STATUSES, 0)
    for status, n in statuses:
        by_status[status] = n
    by_outcome: dict[str, int] = {}
    for outcome, _ in rows:
        by_outcome[outcome] = by_outcome.get(outcome, 0) + 1
    latencies = [latency for _, latency in rows if latency is not None]
    return {"deliveries": by_status, "by_outcome": by_outcome, "latencies": latencies, "total": len(rows)}


def assert_stats_match(answer: dict, expected: dict) -> None:
    assert answer["deliveries"] == expected["deliveries"]
    attempts = answer["attempts"]
    assert attempts["total"] == expected["total"] and attempts["by_outcome"] == expected["by_outcome"]
    for p in (50, 99):
        exact = exact_percentile(expected["latencies"], p)
        estimate = attempts[f"latency_ms_p{p}"]
        if exact is None:
            assert estimate is None
        else:
            # The estimate lies in the bucket of the exact value.
            assert bucket_of(estimate) == bucket_of(exact), (p, estimate, exact)


def _cte_names(sql: str) -> set[str]:
    """The names of the statement's CTEs and of its subqueries' results
    (``(SELECT ...) AS w``: PostgreSQL wants the alias, SQLite then scans ``w``)."""
    ctes = re.findall(r"(?:WITH RECURSIVE|WITH|,)\s+(\w+)\s*\([^)]*\)\s+AS\s*\(", sql, re.IGNORECASE)
    return set(ctes) | set(re.findall(r"\)\s+AS\s+(\w+)", sql, re.IGNORECASE))


def assert_index_walk(db_path: Path, sql: str) -> list[str]:
    """The harness's :func:`tierd.testing.assert_index_walk` (no sort for ORDER
    BY, no full scan of a table), and stricter: no full scan of an index
    either, and no sort of the right part of an ORDER BY. A scan of a CTE, a
    subquery's result or a constant row is no scan of the data. The plan."""
    plan = testing.assert_index_walk(db_path, sql)
    ctes = _cte_names(sql)
    for line in plan:
        # Also "FOR RIGHT PART OF ORDER BY": a sort all the same.
        assert not ("TEMP B-TREE" in line and "ORDER BY" in line), (sql, plan)
        match = re.match(r"SCAN (\w+)", line)
        if match and line != "SCAN CONSTANT ROW":
            assert match.group(1) in ctes, (sql, plan)
    return plan


# --- buckets and percentiles -------------------------------------------------------------------


async def test_latency_bucket_sql_agrees_with_the_bounds_and_percentiles_stay_in_their_bucket(tmp_path):
    values = [0.0, 0.2, 0.999, 1.0, 1.4, 1.41, 59999.0, 60000.0, 120000.0] + list(LATENCY_BOUNDS_MS)
    values += [b * 0.999 for b in LATENCY_BOUNDS_MS] + [random.uniform(0, 70000) for _ in range(500)]
    with sqlite3.connect(tmp_path / "b.db") as conn:
        conn.execute("CREATE TABLE v(x REAL)")
        conn.executemany("INSERT INTO v VALUES (?)", [(x,) for x in values] + [(None,)])
        got = conn.execute(f"SELECT x, {latency_bucket_sql('x')} FROM v").fetchall()
    assert [b for _, b in got] == [bucket_of(x) for x, _ in got]

    rng = random.Random(16)
    for _ in range(200):
        sample = [rng.lognormvariate(rng.uniform(0, 6), rng.uniform(0.1, 2)) for _ in range(rng.randint(1, 300))]
        histogram = [0] * (len(LATENCY_BOUNDS_MS) + 1)
        for x in sample:
            histogram[bucket_of(x)] += 1
        for p in (50, 99):
            exact = exact_percentile(sample, p)
            assert exact is not None
            assert bucket_of(latency_percentile(histogram, p)) == bucket_of(exact)
    assert latency_percentile([0] * 34, 50) is None


# --- stats from real deliveries ------------------------------------------------------------------


async def slow_or_failing(request, body):
    """A responder: event i answers after (i % 7) * 15 ms, 500 for every third event."""
    i = json.loads(body)["data"]["i"]
    await asyncio.sleep((i % 7) * 0.015)
    return web.Response(status=500 if i % 3 == 0 else 200)


async def stats_of(d: LocalDaemon, endpoint_id: str, window: str = "3650d") -> dict:
    status, body = await d.call("GET", f"/v1/webhooks/{endpoint_id}/stats", tenant="acme", params={"window": window})
    assert status == 200, body
    return body


async def test_stats_match_the_history_after_deliveries_restart_and_prune(tmp_path, hook_receiver):  # noqa: F811
    d = await LocalDaemon(tmp_path, webhooks={"retention": "30d"}).start()
    try:
        await d.tenant("acme")
        r = await hook_receiver()
        r.responder = slow_or_failing
        ep = await d.endpoint("acme", r.url)
        other = await d.endpoint("acme", r.url + "/other", event_types=["order.*"])
        for i in range(24):
            await d.publish("acme", "invoice.paid", {"i": i})
        await d.wait_delivery("acme", ep["id"], "failed", count=8, timeout=30)
        await d.wait_delivery("acme", ep["id"], "succeeded", count=16, timeout=30)
        expected = await expected_stats_of(d, ep["id"], 0)
        assert expected["total"] == 16 + 8 * 3 and expected["deliveries"]["failed"] == 8
        answer = await stats_of(d, ep["id"])
        assert_stats_match(answer, expected)
        assert answer["attempts"]["latency_estimated"] is True
        assert answer["attempts"]["success_rate"] == round(16 / 40, 4)
        # The other endpoint had nothing; a day's window starts at a whole minute.
        empty = await stats_of(d, other["id"])
        assert empty["deliveries"] == dict.fromkeys(DELIVERY_STATUSES, 0) and empty["attempts"]["total"] == 0
        assert empty["attempts"]["latency_ms_p50"] is None and empty["attempts"]["success_rate"] is None
        day = await stats_of(d, ep["id"], "24h")
        since = parse_iso(day["attempts"]["since"])
        assert since % 60 == 0 and d.clock.time() - 86400 - 60 < since <= d.clock.time() - 86400
        assert day["attempts"]["total"] == 40

        # A restart reads the same counters.
        await d.stop()
        await d.start()
        assert_stats_match(await stats_of(d, ep["id"]), expected)

        # A month later, newer deliveries; the prune takes the old ones and their counts.
        d.clock.advance(31 * 86400)
        for i in range(24, 30):
            await d.publish("acme", "invoice.paid", {"i": i})
        await d.wait_delivery("acme", ep["id"], "succeeded", count=20, timeout=30)
        await d.wait_delivery("acme", ep["id"], "failed", count=10, timeout=30)
        removed = await d.webhooks.retention.prune()
        assert removed == 40 + 24  # the old attempts and deliveries
        expected = await expected_stats_of(d, ep["id"], 0)
        [(old_minutes,)] = await raw_sql(
            d,
            "SELECT COUNT(*) FROM webhook_attempt_minutes WHERE minute<?",
            (int((d.clock.time() - 86400) // 60),),
        )
        assert expected["total"] == 4 + 2 * 3 and expected["deliveries"] == {
            "pending": 0,
            "inflight": 0,
            "succeeded": 4,
            "failed": 2,
        }
        assert old_minutes == 0
        assert_stats_match(await stats_of(d, ep["id"]), expected)

        # Deleting the endpoint drops its delivery counters with it; its attempt
        # minutes go with the rest of its history, in the background.
        status, _ = await d.call("DELETE", f"/v1/webhooks/{ep['id']}", tenant="acme")
        assert status == 200
        [(counters,)] = await raw_sql(
            d, "SELECT COUNT(*) FROM webhook_delivery_counts WHERE endpoint_id=?", (ep["id"],)
        )
        assert counters == 0

        async def minutes_left() -> int:
            sql = "SELECT COUNT(*) FROM webhook_attempt_minutes WHERE endpoint_id=?"
            return (await raw_sql(d, sql, (ep["id"],)))[0][0]

        async def no_minutes() -> bool:
            return await minutes_left() == 0

        await testing.eventually(no_minutes, what="the deleted endpoint's attempt minutes purged")
    finally:
        await d.stop()


# --- an upgrade of a database made by the old schema ---------------------------------------------------


async def test_migration_counts_the_history_of_an_old_database(tmp_path):
    db = await Database(tmp_path / "old.db").open()
    try:
        await db.migrate({"webhooks": MIGRATIONS[:2]})
        rng = random.Random(3)
        now = time.time()
        for j in range(3):
            await db.execute(
                "INSERT INTO webhook_endpoints(id, tenant_id, url, secret, created_at, updated_at)"
                " VALUES (?, 'acme', 'https://example.com', 'whsec_x', 0, 0)",
                (f"ep_{j}",),
            )
        deliveries, attempts = [], []
        for seq in range(1, 3001):
            endpoint = f"ep_{seq % 3}" if seq % 50 else "ep_gone"  # a few of an endpoint deleted long ago
            status = rng.choice(DELIVERY_STATUSES)
            created = now - rng.uniform(0, 5 * 86400)
            deliveries.append((seq, f"msg_{seq}", endpoint, f"evt_{seq}", status, created))
            for _ in range(rng.randint(0, 3)):
                latency = None if rng.random() < 0.05 else rng.lognormvariate(4, 1.5)
                outcome = rng.choice(("success", "http_error", "timeout"))
                attempts.append((seq, endpoint, created + rng.uniform(0, 600), latency, outcome))
        async with db.transaction() as tx:
            await tx.executemany(
                "INSERT INTO webhook_deliveries(seq, id, tenant_id, endpoint_id, event_id, event_type, payload,"
                " status, created_at) VALUES (?, ?, 'acme', ?, ?, 'invoice.paid', '{}', ?, ?)",
                deliveries,
            )
            await tx.executemany(
                "INSERT INTO webhook_attempts(delivery_seq, tenant_id, endpoint_id, attempted_at, latency_ms, outcome)"
                " VALUES (?, 'acme', ?, ?, ?, ?)",
                attempts,
            )
        assert await db.migrate({"webhooks": MIGRATIONS}) == [("webhooks", n) for n in range(3, len(MIGRATIONS) + 1)]
        store = Store(db)
        with sqlite3.connect(tmp_path / "old.db") as conn:
            for j in range(3):
                for window in (86400, 2 * 86400, 10 * 86400):
                    # Whole minutes: the expected count starts where the answer says it does.
                    answer = await store.endpoint_stats("acme", f"ep_{j}", now - window)
                    expected = expected_stats(conn, f"ep_{j}", answer["since"])
                    assert_stats_match(answer, expected)
        # Counting goes on from there: a new attempt of ep_0 moves its delivery and its minute.
        row = await db.fetchone("SELECT seq FROM webhook_deliveries WHERE endpoint_id='ep_0' AND status='pending'")
        assert row is not None
        await store.record(
            [Outcome(row["seq"], "acme", "ep_0", now, "success", 200, 12.0, None, "ok", "succeeded", None)]
        )
        answer = await store.endpoint_stats("acme", "ep_0", now - 86400)
        with sqlite3.connect(tmp_path / "old.db") as conn:
            assert_stats_match(answer, expected_stats(conn, "ep_0", answer["since"]))
        # Another tenant asking for ep_0 gets nothing of it.
        other = await store.endpoint_stats("globex", "ep_0", 0)
        assert other["deliveries"] == dict.fromkeys(DELIVERY_STATUSES, 0) and other["attempts"]["total"] == 0
    finally:
        await db.close()


# --- delivery pages ------------------------------------------------------------------------------


TYPES = ("invoice.paid", "invoice.refunded", "invoice.sub.created", "invoices.x", "invoice_x.y", "order.created")


@pytest.fixture
async def filled(tmp_path):
    """A store with 2400 deliveries over two endpoints, of every status and
    type, created in time order, and 200 replayed ones: older created_at, later seq."""
    db = await Database(tmp_path / "t.db").open()
    await db.migrate({"webhooks": MIGRATIONS})
    store = Store(db)
    for j in range(2):
        await db.execute(
            "INSERT INTO webhook_endpoints(id, tenant_id, url, secret, created_at, updated_at)"
            " VALUES (?, 'acme', 'https://example.com', 'whsec_x', 0, 0)",
            (f"ep_{j}",),
        )
    rng = random.Random(7)
    base = 1_700_000_000.0
    rows = []
    for i in range(2600):
        # Several deliveries share a created_at (one event, several rows): seq breaks the tie.
        created = base + (i // 3) if i < 2400 else base + rng.uniform(0, 800)
        event_type = rng.choice(TYPES)
        rows.append([f"msg_{i:05d}", "acme", f"ep_{i % 2}", f"evt_{i}", event_type, "{}", created, created, False])
    await store.create_deliveries(rows, base)
    for seq in range(1, 2601):
        status = rng.choices(DELIVERY_STATUSES, weights=(1, 1, 6, 2))[0]
        await db.execute("UPDATE webhook_deliveries SET status=? WHERE seq=?", (status, seq))
    yield store, tmp_path / "t.db"
    await db.close()


async def all_pages(store: Store, endpoint_id: str, limit: int, **filters) -> list[str]:
    ids: list[str] = []
    before = None
    while True:
        page = await store.list_deliveries("acme", endpoint_id, limit=limit + 1, before=before, **filters)
        ids += [p["id"] for p in page[:limit]]
        if len(page) <= limit:
            return ids
        before = (page[limit - 1]["_created_at"], page[limit - 1]["_seq"])


def _matches(event_type: str | None, value: str) -> bool:
    if event_type in (None, "*"):
        return True
    if event_type.endswith(".*"):
        return value.startswith(event_type[:-1])
    return value == event_type


async def test_delivery_pages_are_a_plain_filter_of_the_history_newest_first(filled):
    store, db_path = filled
    with sqlite3.connect(db_path) as conn:
        conn.row_factory = sqlite3.Row
        everything = conn.execute("SELECT * FROM webhook_deliveries").fetchall()
        counts = {r["endpoint_id"]: dict(r) for r in conn.execute("SELECT * FROM webhook_delivery_counts")}
    base = 1_700_000_000.0
    for endpoint_id in ("ep_0", "ep_1"):
        mine = [r for r in everything if r["endpoint_id"] == endpoint_id]
        assert {s: counts[endpoint_id][s] for s in DELIVERY_STATUSES} == {
            s: sum(r["status"] == s for r in mine) for s in DELIVERY_STATUSES
        }
        for status in (None, *DELIVERY_STATUSES):
            for event_type in (None, "*", "invoice.paid", "invoice.*", "invoice.sub.*", "nothing.*", "order.created"):
                for since, until in ((None, None), (base + 100, None), (None, base + 500), (base + 100, base + 500)):
                    expected = [
                        r["id"]
                        for r in sorted(mine, key=lambda r: (r["created_at"], r["seq"]), reverse=True)
                        if (status is None or r["status"] == status)
                        and _matches(event_type, r["event_type"])
                        and (since is None or r["created_at"] >= since)
                        and (until is None or r["created_at"] < until)
                    ]
                    got = await all_pages(
                        store,
                        endpoint_id,
                        37,
                        status=status,
                        event_type=event_type,
                        since=since,
                        until=until,
                    )
                    assert got == expected, (endpoint_id, status, event_type, since, until)


async def test_prune_slices_walk_an_index(filled):
    store, db_path = filled
    # The check catches what it is for: a sort, a scan of a table or of an index.
    for bad in (
        "SELECT * FROM webhook_deliveries WHERE endpoint_id='ep_0' ORDER BY payload",
        "SELECT * FROM webhook_attempts WHERE latency_ms>3",
        "SELECT id FROM webhook_deliveries INDEXED BY webhook_deliveries_list WHERE event_type='x'",
    ):
        with pytest.raises(AssertionError):
            assert_index_walk(db_path, bad)
    for sql, params in store.prune_statements(1_700_000_500.0):
        inlined = sql.replace(":slice", "500")
        for name, value in params.items():
            inlined = inlined.replace(f":{name}", repr(value))
        plan = assert_index_walk(db_path, inlined)
        assert any("USING INDEX webhook_" in line or "USING COVERING INDEX webhook_" in line for line in plan), plan


# --- every list of the API walks an index --------------------------------------------------------------


@sqlite_only
async def test_every_list_walks_an_index_in_its_order(local, hook_receiver):  # noqa: F811
    d = await local()
    await d.tenant("acme")
    r = await hook_receiver()
    endpoints = [await d.endpoint("acme", f"{r.url}/{j}") for j in range(3)]
    ep = endpoints[0]["id"]
    for i, event_type in enumerate(("invoice.paid", "invoice.refunded", "order.created") * 3):
        await d.publish("acme", event_type, {"i": i})
    rows = await d.wait_delivery("acme", ep, "succeeded", count=9)
    delivery = rows[0]
    status, page = await d.call("GET", f"/v1/webhooks/{ep}/deliveries", tenant="acme", params={"limit": "2"})
    assert status == 200 and page["next_cursor"]
    cursor = page["next_cursor"]
    status, page = await d.call("GET", "/v1/webhooks", tenant="acme", params={"limit": "1"})
    endpoint_cursor = page["next_cursor"]

    calls: list[tuple[str, dict]] = [
        ("/v1/webhooks", {}),
        ("/v1/webhooks", {"cursor": endpoint_cursor, "limit": "1"}),
        (f"/v1/deliveries/{delivery['id']}", {}),
        ("/v1/deliveries", {"event_id": delivery["event_id"]}),
    ]
    filters: list[dict] = [{}, {"cursor": cursor}]
    filters += [{"status": s} for s in DELIVERY_STATUSES]
    filters += [{"event_type": t} for t in ("invoice.paid", "invoice.*", "*", "nothing.*")]
    filters += [{"since": "2020-01-01T00:00:00Z"}, {"until": "2100-01-01T00:00:00Z"}]
    filters += [{"since": "2020-01-01T00:00:00Z", "until": "2100-01-01T00:00:00Z", "cursor": cursor}]
    filters += [{"status": s, "event_type": t} for s in ("failed", "succeeded") for t in ("invoice.paid", "invoice.*")]
    filters += [{"event_type": "invoice.*", "since": "2020-01-01T00:00:00Z", "cursor": cursor}]
    calls += [(f"/v1/webhooks/{ep}/deliveries", f) for f in filters]
    for path, params in calls:
        async with testing.recorded_reads(d.daemon.db) as statements:
            status, body = await d.call("GET", path, tenant="acme", params=params)
        assert status == 200, (path, params, body)
        assert statements, (path, params)
        for sql in statements:
            assert_index_walk(d.daemon.db.path, sql)


async def test_delivery_cursors_of_the_old_form_and_bad_ones(local, hook_receiver):  # noqa: F811
    d = await local()
    await d.tenant("acme")
    r = await hook_receiver()
    ep = (await d.endpoint("acme", r.url))["id"]
    for i in range(3):
        await d.publish("acme", "invoice.paid", {"i": i})
    rows = await d.wait_delivery("acme", ep, "succeeded", count=3)

    def encode(text: str) -> str:
        return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")

    newest = await d.daemon.db.fetchone("SELECT MAX(seq) AS seq FROM webhook_deliveries")
    assert newest is not None
    # A cursor made by the previous version (the seq alone) still pages from that delivery.
    status, page = await d.call(
        "GET", f"/v1/webhooks/{ep}/deliveries", tenant="acme", params={"cursor": encode(str(newest["seq"]))}
    )
    assert status == 200 and [p["id"] for p in page["data"]] == [p["id"] for p in rows[1:]], page
    for bad in ("nan:3", "inf:3", "1.5:x", "1.5:", ":3", "1.5:3:4", "99999999", "1.5:99999999999999999999"):
        params = {"cursor": encode(bad)}
        status, body = await d.call("GET", f"/v1/webhooks/{ep}/deliveries", tenant="acme", params=params)
        assert status == 400 and body["error"]["code"] == "invalid_cursor", (bad, body)
