"""Deleting an endpoint answers at once; its history goes afterwards, in slices.

The endpoint row goes in the request (and with it everything the API shows
of it); its deliveries, attempts and attempt counts are removed by the
webhooks service's purge task, which goes on after a restart or a kill -9.
Other endpoints, of the same tenant or another, keep all of theirs.
"""

from __future__ import annotations

import logging
import re
import sqlite3
import time

from webhook_helpers import TEST_WEBHOOKS, LocalDaemon, hook_receiver, local, raw_sql  # noqa: F401 - fixtures

from tierd.plugins.webhooks.records import Outcome
from tierd.testing import assert_index_walk, eventually, on_postgresql

CONFIG = {"webhooks": TEST_WEBHOOKS}

#: The tables that hold an endpoint's history, and the column naming the endpoint.
HISTORY = ("webhook_deliveries", "webhook_attempts", "webhook_attempt_minutes", "webhook_delivery_counts")

# Thousands of deliveries through the API would take minutes: the history is
# inserted straight into the tables with SQL (through their triggers, so the
# counters and attempt minutes are kept as the daemon keeps them). Pending rows
# are due in ten days, so the dispatcher leaves them alone until a test says.
_DELIVERIES = (
    "INSERT INTO webhook_deliveries(id, tenant_id, endpoint_id, event_id, event_type, payload, status, attempts,"
    " due_at, created_at, finished_at) VALUES (?, ?, ?, ?, 'invoice.paid', '{\"x\": 1}', ?, ?, ?, ?, ?)"
)
_ATTEMPTS = (
    "INSERT INTO webhook_attempts(delivery_seq, tenant_id, endpoint_id, attempted_at, status_code, latency_ms,"
    " outcome) SELECT seq, tenant_id, endpoint_id, created_at + k, CASE WHEN status='failed' THEN 500 ELSE 200 END,"
    " 10.0 + k * (seq % 97), CASE WHEN status='failed' THEN 'http_error' ELSE 'success' END"
    " FROM webhook_deliveries, (SELECT 1 AS k UNION ALL SELECT 2) AS ks WHERE endpoint_id=? AND event_id LIKE 'hist_%'"
)


def history_rows(endpoint_id: str, tenant: str, n: int, now: float) -> list[tuple]:
    """``n`` deliveries of the last hour: succeeded, failed and (every tenth) pending."""
    rows = []
    for i in range(n):
        status = "pending" if i % 10 == 0 else "failed" if i % 10 == 1 else "succeeded"
        created = now - 3600 + i * 3600 / n
        due = now + 10 * 86400 if status == "pending" else None
        finished = None if status == "pending" else created + 2
        rows.append((f"msg_{endpoint_id}_{i}", tenant, endpoint_id, f"hist_{i}", status, 2, due, created, finished))
    return rows


async def rows_of(daemon, endpoint_id: str) -> dict[str, int]:
    """The endpoint's rows in each history table, read straight from the daemon's database
    (on PostgreSQL with the counters' changes folded first: its migration 8)."""
    if on_postgresql():
        await raw_sql(daemon, "SELECT webhook_counts_fold()")
    counts = {}
    for table in (*HISTORY, "webhook_purges"):
        [(counts[table],)] = await raw_sql(daemon, f"SELECT COUNT(*) FROM {table} WHERE endpoint_id=?", (endpoint_id,))
    return counts


async def purged(daemon, endpoint_id: str) -> bool:
    """Nothing of the endpoint is left in any history table."""
    return not any((await rows_of(daemon, endpoint_id)).values())


def purged_line(logs: str, endpoint_id: str) -> re.Match | None:
    return re.search(
        rf"removed the history of deleted endpoint {endpoint_id}: (\d+) rows"
        r" \((\d+) deliveries, (\d+) attempts, (\d+) attempt counts\)",
        logs,
    )


async def insert_history(db, histories: list[tuple[str, str, int]], now: float) -> None:
    """``(endpoint_id, tenant, n)``: n deliveries each with two attempts (see above)."""
    async with db.transaction() as tx:
        for endpoint_id, tenant, n in histories:
            await tx.executemany(_DELIVERIES, history_rows(endpoint_id, tenant, n, now))
            await tx.execute(_ATTEMPTS, (endpoint_id,))


async def visible(d: LocalDaemon, tenant: str, endpoint_id: str) -> dict:
    """What the API shows of one endpoint: its deliveries (every page) and stats."""
    status, stats = await d.call("GET", f"/v1/webhooks/{endpoint_id}/stats", tenant=tenant)
    assert status == 200, stats
    ids, cursor = [], None
    while True:
        params = {"limit": "500"} | ({"cursor": cursor} if cursor else {})
        status, page = await d.call("GET", f"/v1/webhooks/{endpoint_id}/deliveries", tenant=tenant, params=params)
        assert status == 200, page
        ids += [x["id"] for x in page["data"]]
        cursor = page["next_cursor"]
        if not cursor:
            break
    return {
        "deliveries": ids,
        "by_status": stats["deliveries"],
        "attempts": (stats["attempts"]["total"], stats["attempts"]["by_outcome"]),
    }


async def test_delete_answers_at_once_and_the_history_goes_in_the_background(local, hook_receiver, caplog):  # noqa: F811
    caplog.set_level(logging.INFO, logger="tierd.webhooks")
    d = await local()
    await d.tenant("acme")
    await d.tenant("globex")
    r = await hook_receiver()
    big = (await d.endpoint("acme", r.url + "/big"))["id"]
    other = (await d.endpoint("acme", r.url + "/other"))["id"]
    theirs = (await d.endpoint("globex", r.url + "/theirs"))["id"]
    # Real deliveries too: one event of acme to both its endpoints, one of globex.
    event = await d.publish("acme", "invoice.paid", {"n": 1})
    await d.publish("globex", "invoice.paid", {"n": 2})
    for tenant, endpoint_id in (("acme", big), ("acme", other), ("globex", theirs)):
        await d.wait_delivery(tenant, endpoint_id, "succeeded")
    real = (await d.deliveries("acme", big))[0]
    now = d.clock.time()
    await insert_history(d.daemon.db, [(big, "acme", 3000), (other, "acme", 300), (theirs, "globex", 300)], now)
    target = d
    store = d.webhooks.store
    before = {ep: await rows_of(target, ep) for ep in (big, other, theirs)}
    assert before[big]["webhook_deliveries"] == 3001 and before[big]["webhook_attempts"] == 6001
    shown = {ep: await visible(d, tenant, ep) for tenant, ep in (("acme", other), ("globex", theirs))}
    assert len(shown[other]["deliveries"]) == 301 and shown[other]["attempts"][0] == 601

    # The purge waits (so that what follows sees the rows still there); the API answers as before.
    await d.webhooks.purger.stop()
    started = time.monotonic()
    status, body = await d.call("DELETE", f"/v1/webhooks/{big}", tenant="acme")
    took = time.monotonic() - started
    assert status == 200 and body == {"deleted": big}
    assert took < 2.0, took
    left = await rows_of(target, big)
    # Its history is all there still (queued), only the endpoint and its one counters row are gone.
    assert left["webhook_deliveries"] == 3001 and left["webhook_attempts"] == 6001
    assert left["webhook_attempt_minutes"] > 0 and left["webhook_delivery_counts"] == 0
    assert left["webhook_purges"] == 1

    # Nothing of it through the API.
    hist = f"msg_{big}_5"
    for method, path, payload in (
        ("GET", f"/v1/webhooks/{big}", None),
        ("GET", f"/v1/webhooks/{big}/deliveries", None),
        ("GET", f"/v1/webhooks/{big}/stats", None),
        ("POST", f"/v1/webhooks/{big}/recover", {"since": "2020-01-01T00:00:00Z"}),
        ("POST", f"/v1/webhooks/{big}/replay", {"since": "2020-01-01T00:00:00Z"}),
        ("POST", f"/v1/webhooks/{big}/test", {}),
        ("DELETE", f"/v1/webhooks/{big}", None),
        ("GET", f"/v1/deliveries/{real['id']}", None),
        ("GET", f"/v1/deliveries/{hist}", None),
        ("POST", f"/v1/deliveries/{real['id']}/retry", None),
        ("POST", f"/v1/deliveries/{hist}/retry", None),
    ):
        status, answer = await d.call(method, path, payload, tenant="acme")
        assert status == 404, (method, path, status, answer)
    status, answer = await d.call("GET", "/v1/deliveries", tenant="acme", params={"event_id": event["id"]})
    assert status == 200 and [x["endpoint_id"] for x in answer["data"]] == [other]
    status, answer = await d.call("GET", "/v1/webhooks", tenant="acme")
    assert [x["id"] for x in answer["data"]] == [other]
    # ... nor in the store's own paths: its pending rows come due and are not claimed,
    assert await store.get_delivery("acme", hist) is None
    assert not await store.requeue("acme", hist, now)
    assert await store.recover("acme", big, 0, now) == 0
    await d.daemon.db.execute(
        "UPDATE webhook_deliveries SET due_at=? WHERE endpoint_id=? AND status='pending'", (now, big)
    )
    assert await store.claim(now + 1, 100, 10, {}, 987654) == []
    # a fan-out that raced the deletion makes no delivery, and a request that was in
    # flight records no attempt (nor a minute of one).
    race = [f"msg_race_{big}", "acme", big, "evt_race", "invoice.paid", "{}", now, now, False]
    assert await store.create_deliveries([race], now) == {}
    seq = (await d.daemon.db.fetchone("SELECT seq FROM webhook_deliveries WHERE id=?", (hist,)))["seq"]
    await store.record([Outcome(seq, "acme", big, now, "success", 200, 5.0, None, "ok", "succeeded", None)])
    assert await rows_of(target, big) == left

    # The purge task removes it all, and logs it once with the count.
    d.webhooks.purger.start()
    await eventually(lambda: purged(target, big), what="the deleted endpoint's history removed")
    line = await eventually(lambda: purged_line(caplog.text, big), what="the purge's log line")
    total, deliveries, attempts, minutes = map(int, line.groups())
    assert (deliveries, attempts) == (3001, 6001)
    assert minutes == left["webhook_attempt_minutes"] and total == deliveries + attempts + minutes
    assert len(re.findall(rf"deleted endpoint {big}:", caplog.text)) == 1

    # The other endpoint of acme and globex's keep every row, and show the same.
    for ep in (other, theirs):
        assert await rows_of(target, ep) == before[ep]
    assert await visible(d, "acme", other) == shown[other]
    assert await visible(d, "globex", theirs) == shown[theirs]
    # And deliveries go on for them.
    await d.publish("acme", "invoice.paid", {"n": 3})
    succeeded = shown[other]["by_status"]["succeeded"]
    await d.wait_delivery("acme", other, "succeeded", count=succeeded + 1)


async def test_the_purge_goes_on_after_a_restart(tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="tierd.webhooks")
    d = await LocalDaemon(tmp_path).start()
    try:
        await d.tenant("acme")
        big = (await d.endpoint("acme", "http://127.0.0.1:9/big", enabled=False))["id"]
        other = (await d.endpoint("acme", "http://127.0.0.1:9/other", enabled=False))["id"]
        await insert_history(d.daemon.db, [(big, "acme", 2000), (other, "acme", 100)], d.clock.time())
        target = d
        await d.webhooks.purger.stop()
        status, _ = await d.call("DELETE", f"/v1/webhooks/{big}", tenant="acme")
        assert status == 200
        # Half-way: the first slices of the purge, then a stop.
        sql, params = d.webhooks.store.purge_statements(big)[0]
        for _ in range(2):
            await d.daemon.db.execute(sql, params | {"slice": 500})
        left = await rows_of(target, big)
        assert left["webhook_deliveries"] == 1000 and left["webhook_attempts"] == 2000 and left["webhook_purges"] == 1
    finally:
        await d.stop()
    assert purged_line(caplog.text, big) is None

    d = await LocalDaemon(tmp_path).start()
    try:
        await eventually(lambda: purged(target, big), what="the purge to go on after the restart")
        line = await eventually(lambda: purged_line(caplog.text, big), what="the purge's log line")
        # Counted across the restart: the queue row keeps the count.
        assert tuple(map(int, line.groups()))[1:3] == (2000, 4000)
        assert (await rows_of(target, other))["webhook_deliveries"] == 100
        status, _ = await d.call("GET", f"/v1/webhooks/{other}/stats", tenant="acme")
        assert status == 200
    finally:
        await d.stop()


async def test_kill9_in_the_middle_of_a_purge(tierd_daemon):
    d = tierd_daemon(CONFIG)
    d.create_tenant("acme")
    d.create_tenant("globex")
    endpoints = {}
    for name, tenant in (("big", "acme"), ("other", "acme"), ("theirs", "globex")):
        status, ep = await d.arequest(
            "POST", "/v1/webhooks", {"url": f"http://127.0.0.1:9/{name}", "enabled": False}, tenant=tenant
        )
        assert status == 201, ep
        endpoints[name] = ep["id"]
    big, other, theirs = endpoints["big"], endpoints["other"], endpoints["theirs"]
    target = d
    now = time.time()
    # Straight into the file (see above), beside the running daemon.
    for endpoint_id, tenant, n in ((big, "acme", 20000), (other, "acme", 200), (theirs, "globex", 200)):
        await raw_sql(target, _DELIVERIES, history_rows(endpoint_id, tenant, n, now), many=True)
        await raw_sql(target, _ATTEMPTS, (endpoint_id,))
    before = {ep: await rows_of(target, ep) for ep in (other, theirs)}

    status, body = await d.arequest("DELETE", f"/v1/webhooks/{big}", tenant="acme")
    assert status == 200 and body == {"deleted": big}
    d.kill9()
    left = await rows_of(target, big)
    # A purge of 20k deliveries takes seconds (slices with pauses): the kill cut it short.
    assert left["webhook_deliveries"] > 0 and left["webhook_purges"] == 1, left
    # Whole deliveries went, each with its attempts (a slice is one statement).
    assert left["webhook_attempts"] == 2 * left["webhook_deliveries"], left

    d.start()
    status, _ = await d.arequest("GET", f"/v1/webhooks/{big}/deliveries", tenant="acme")
    assert status == 404
    status, _ = await d.arequest("GET", f"/v1/deliveries/msg_{big}_1", tenant="acme")
    assert status == 404
    await eventually(lambda: purged(target, big), timeout=60, what="the purge to finish after the kill")
    line = await eventually(lambda: purged_line(d.logs(), big), what="the purge's log line")
    assert int(line.group(2)) == 20000 and int(line.group(3)) == 40000
    for ep, tenant in ((other, "acme"), (theirs, "globex")):
        assert await rows_of(target, ep) == before[ep]
        status, stats = await d.arequest("GET", f"/v1/webhooks/{ep}/stats", tenant=tenant)
        assert status == 200 and sum(stats["deliveries"].values()) == 200, stats
        assert stats["attempts"]["total"] == 400, stats


def test_purge_slices_walk_an_index(tmp_path):
    from tierd.core.storage import _split_sql
    from tierd.plugins.webhooks.migrations import MIGRATIONS
    from tierd.plugins.webhooks.store import Store

    db_path = tmp_path / "plan.db"
    with sqlite3.connect(db_path) as conn:
        for migration in MIGRATIONS:
            for statement in _split_sql(migration):
                conn.execute(statement)
        conn.executemany(_DELIVERIES, history_rows("ep_x", "acme", 300, time.time()))
        conn.execute(_ATTEMPTS, ("ep_x",))
        conn.execute("ANALYZE")
    for sql, params in Store(None).purge_statements("ep_x"):
        inlined = sql.replace(":slice", "500").replace(":endpoint", repr(params["endpoint"]))
        plan = assert_index_walk(db_path, inlined)
        assert any(re.search(r"SEARCH webhook_\w+ USING (COVERING INDEX|PRIMARY KEY)", line) for line in plan), plan
    # What the trigger of migration 4 runs per delivery, and the check that guards it.
    for sql in (
        "DELETE FROM webhook_attempts WHERE delivery_seq=5",
        "SELECT 1 FROM webhook_purges WHERE endpoint_id='ep_x'",
        "SELECT 1 FROM webhook_endpoints WHERE id='ep_x'",
    ):
        plan = assert_index_walk(db_path, sql)
        assert all(line.startswith("SEARCH") for line in plan), plan
