"""The claim query: per-endpoint room, bounded work on a big backlog, idempotent inserts."""

import json
import time

import pytest

from tierd.core.storage import Database
from tierd.plugins.webhooks.migrations import MIGRATIONS
from tierd.plugins.webhooks.records import Outcome
from tierd.plugins.webhooks.store import Store


@pytest.fixture
async def store(tmp_path):
    db = await Database(tmp_path / "t.db").open()
    await db.migrate({"webhooks": MIGRATIONS})
    for j in range(4):
        await db.execute(
            "INSERT INTO webhook_endpoints(id, tenant_id, url, secret, enabled, created_at, updated_at)"
            " VALUES (?,?,?,?,?,0,0)",
            (f"ep_{j}", "acme", "https://example.com", "whsec_x", int(j != 3)),
        )
    yield Store(db)
    await db.close()


def rows(count, now, endpoints=4, inflight=False):
    return [
        (f"msg_{i:06d}", "acme", f"ep_{i % endpoints}", f"evt_{i}", "invoice.paid", "{}", now + i * 1e-6, now, inflight)
        for i in range(count)
    ]


async def test_claim_respects_room_cap_limit_and_disabled_endpoints(store):
    now = time.time()
    assert len(await store.create_deliveries(rows(400, now), now)) == 400
    assert await store.create_deliveries(rows(400, now), now) == {}  # idempotent
    claimed = await store.claim(now + 1, limit=100, cap=10, room={"ep_1": 3, "ep_2": 0}, claim_id=1)
    by_endpoint = {}
    for row in claimed:
        by_endpoint[row["endpoint_id"]] = by_endpoint.get(row["endpoint_id"], 0) + 1
    assert by_endpoint == {"ep_0": 10, "ep_1": 3}  # ep_2 has no room, ep_3 is disabled
    assert [r["id"] for r in claimed if r["endpoint_id"] == "ep_0"] == [f"msg_{i:06d}" for i in range(0, 40, 4)]
    # Nothing is claimed twice; the global limit holds.
    again = await store.claim(now + 1, limit=5, cap=10, room={}, claim_id=2)
    assert len(again) == 5 and not {r["seq"] for r in again} & {r["seq"] for r in claimed}
    # Not due yet: nothing.
    assert await store.claim(now - 10, limit=100, cap=10, room={}, claim_id=3) == []


async def test_claim_plan_seeks_per_endpoint_instead_of_scanning_deliveries(store):
    sql_plan = await store.db.fetchall(
        "EXPLAIN QUERY PLAN SELECT d.seq FROM webhook_endpoints e CROSS JOIN webhook_deliveries d ON d.seq IN ("
        " SELECT x.seq FROM webhook_deliveries x WHERE x.endpoint_id=e.id AND x.status='pending'"
        " AND x.due_at<=? ORDER BY x.due_at LIMIT ?) WHERE e.enabled=1",
        (0, 10),
    )
    details = [r["detail"] for r in sql_plan]
    assert "SCAN e" in details and not any(d.startswith("SCAN d") for d in details), details
    now = time.time()
    await store.create_deliveries(rows(50_000, now), now)
    claimed = await store.claim(now + 1, limit=200, cap=10, room={}, claim_id=9)
    assert len(claimed) == 30


async def test_record_moves_delivery_and_failure_window(store):
    now = time.time()
    await store.create_deliveries(rows(2, now, endpoints=1), now)
    a, b = await store.claim(now + 1, limit=10, cap=10, room={}, claim_id=1)
    await store.record(
        [
            Outcome(a["seq"], "acme", "ep_0", now + 1, "http_error", 500, 3.0, "HTTP 500", "boom", "pending", now + 5),
            Outcome(b["seq"], "acme", "ep_0", now + 1, "success", 200, 2.0, None, "ok", "succeeded", None),
        ]
    )
    first = await store.get_delivery("acme", a["id"])
    second = await store.get_delivery("acme", b["id"])
    assert (first["status"], first["attempts"], first["last_status_code"]) == ("pending", 1, 500)
    assert (second["status"], second["attempts"]) == ("succeeded", 1) and second["finished_at"]
    endpoint = await store.db.fetchone("SELECT failing_since FROM webhook_endpoints WHERE id='ep_0'")
    assert endpoint["failing_since"] is None  # the success came after the failure
    attempts = await store.attempts_of(a["seq"])
    assert attempts[0]["response_body"] == "boom" and json.dumps(attempts)


async def test_deliveries_created_claimed_are_not_claimed_again_and_requeued_after_a_crash(store):
    """The consumer's fast path stores rows already claimed: the claim query must
    not hand them out a second time, and a restart must send them again."""
    now = time.time()
    created = await store.create_deliveries(
        rows(6, now, endpoints=2, inflight=True)[:3] + rows(6, now, endpoints=2)[3:], now
    )
    assert list(created) == [f"msg_{i:06d}" for i in range(6)]
    # The seq of each row, as stored (the dispatcher records attempts by it).
    stored = await store.db.fetchall("SELECT id, seq FROM webhook_deliveries")
    assert created == {r["id"]: r["seq"] for r in stored}
    claimed = await store.claim(now + 1, limit=100, cap=10, room={}, claim_id=1)
    assert sorted(r["id"] for r in claimed) == ["msg_000003", "msg_000004", "msg_000005"]
    row = await store.db.fetchone("SELECT status, claimed_at FROM webhook_deliveries WHERE id='msg_000000'")
    assert row["status"] == "inflight" and row["claimed_at"] == pytest.approx(now)
    assert await store.requeue_inflight() == 6  # the three handed over and the three claimed
    # Some rows new, some seen before: the seqs of the new ones only.
    again = await store.create_deliveries(rows(8, now, endpoints=2), now)
    assert list(again) == ["msg_000006", "msg_000007"]
    stored = await store.db.fetchall("SELECT id, seq FROM webhook_deliveries WHERE id IN ('msg_000006', 'msg_000007')")
    assert again == {r["id"]: r["seq"] for r in stored}


async def test_endpoint_cache_refresh_waits_for_one_in_progress():
    """A caller that refreshes while another refresh is loading must not go on
    with the endpoints of before: an event consumed then would miss the new
    endpoint (seen as a delivery missing in one run of many)."""
    import asyncio
    import json

    from tierd.plugins.webhooks.endpoints import EndpointCache

    class GatedStore:
        def __init__(self):
            self.rows, self.gate = {}, asyncio.Event()

        async def load_endpoints(self, ids=None):
            await self.gate.wait()
            return [row for key, row in self.rows.items() if ids is None or key in ids]

    def row(endpoint_id):
        return {
            "id": endpoint_id,
            "tenant_id": "acme",
            "url": "https://example.com/",
            "headers": "{}",
            "event_types": json.dumps([]),
            "enabled": 1,
            "rate_limit": None,
            "secret": "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
            "previous_secret": None,
            "previous_secret_until": None,
            "ordering": "unordered",
        }

    store = GatedStore()
    cache = EndpointCache(store)
    store.gate.set()
    await cache.refresh()
    assert cache.matching("acme", "invoice.paid") == []
    store.gate.clear()
    store.rows["ep_new"] = row("ep_new")
    cache.forget("ep_new")
    first = asyncio.ensure_future(cache.refresh())  # takes the mark, waits on the database
    await asyncio.sleep(0.01)
    second = asyncio.ensure_future(cache.refresh())  # comes while the first is loading
    await asyncio.sleep(0.01)
    assert not second.done()
    store.gate.set()
    await second
    assert [e.id for e in cache.matching("acme", "invoice.paid")] == ["ep_new"]
    await first
