"""One bad endpoint must not slow the others; a big backlog must not starve new events."""

import asyncio
import json
import time

from aiohttp import web

from webhook_helpers import fail_500, hook_receiver, local  # noqa: F401 (fixtures)

LIMITS = {"max_in_flight": 20, "endpoint_max_in_flight": 4, "timeout": "2s", "retry_schedule": ["0s", "1s", "1s"]}


async def test_hanging_and_failing_endpoints_do_not_slow_a_healthy_one(local, hook_receiver):
    d = await local(webhooks=LIMITS)
    await d.tenant("acme")
    healthy, hanging, failing = await hook_receiver(), await hook_receiver(), await hook_receiver()

    async def hang(request, body):
        await asyncio.sleep(10)  # until our 2 s timeout, every time
        return web.Response()

    hanging.responder, failing.responder = hang, fail_500
    for r in (healthy, hanging, failing):
        await d.endpoint("acme", r.url)
    latencies = []
    for i in range(60):
        sent = time.time()
        await d.publish("acme", "invoice.paid", {"i": i, "sent": sent})
        await asyncio.sleep(0.03)
    await healthy.wait_for(60, timeout=20)
    for req in healthy.requests:
        latencies.append(req["time"] - json.loads(req["body"])["data"]["sent"])
    latencies.sort()
    # Meanwhile the hanging endpoint held its 4 slots and the failing one retried.
    assert len(hanging.requests) >= 4 and len(failing.requests) >= 60
    assert d.webhooks.dispatcher.in_flight <= LIMITS["max_in_flight"]
    p95 = latencies[int(len(latencies) * 0.95)]
    assert p95 < 0.5, latencies
    assert latencies[-1] < 1.5, latencies


async def test_backlog_drains_in_bounded_batches_and_new_events_are_not_starved(local, hook_receiver):
    d = await local(webhooks=LIMITS)
    await d.tenant("acme")
    slow, fresh = await hook_receiver(), await hook_receiver()

    async def slowly(request, body):
        await asyncio.sleep(0.05)
        return web.Response()

    slow.responder = slowly
    backlog_ep = await d.endpoint("acme", slow.url, event_types=["backlog.*"])
    await d.endpoint("acme", fresh.url, event_types=["fresh.*"])
    # 20,000 due deliveries for one endpoint, written straight to the table.
    now = d.clock.time()
    rows = [(f"msg_backlog{i:06d}", "acme", backlog_ep["id"], f"evt_b{i}", "backlog.item", '{"type":"backlog.item"}',
             now - 600 + i * 0.001, now - 600) for i in range(20_000)]
    async with d.daemon.db.transaction() as tx:
        await tx.executemany(
            "INSERT INTO webhook_deliveries(id, tenant_id, endpoint_id, event_id, event_type, payload, status,"
            " due_at, created_at) VALUES (?,?,?,?,?,?,'pending',?,?)", rows)
    d.webhooks.dispatcher.wake()
    await slow.wait_for(20)
    # A new event for another endpoint goes out at once despite 20,000 older due rows.
    started = time.monotonic()
    await d.publish("acme", "fresh.one")
    await fresh.wait_for(1, timeout=5)
    assert time.monotonic() - started < 0.5
    dispatcher = d.webhooks.dispatcher
    assert dispatcher.in_flight <= LIMITS["endpoint_max_in_flight"] + 1
    assert len(dispatcher.tasks) <= LIMITS["max_in_flight"]
    # The backlog is served oldest first (ids were numbered in due order).
    ids = [r["headers"]["webhook-id"] for r in slow.requests[:8]]
    assert max(ids) <= "msg_backlog000015", ids


async def test_new_events_respect_the_endpoint_cap(local, hook_receiver):
    """New deliveries go out straight from the consumer when there is room;
    never more than ``endpoint_max_in_flight`` at once, the rest after them."""
    d = await local(webhooks=LIMITS)
    await d.tenant("acme")
    r = await hook_receiver()
    concurrent = {"now": 0, "max": 0}

    async def slowly(request, body):
        concurrent["now"] += 1
        concurrent["max"] = max(concurrent["max"], concurrent["now"])
        await asyncio.sleep(0.1)
        concurrent["now"] -= 1
        return web.Response()

    r.responder = slowly
    await d.endpoint("acme", r.url)
    await asyncio.gather(*(d.publish("acme", "invoice.paid", {"i": i}) for i in range(30)))
    await r.wait_for(30, timeout=20)
    assert concurrent["max"] == LIMITS["endpoint_max_in_flight"]
    assert sorted(json.loads(q["body"])["data"]["i"] for q in r.requests) == list(range(30))
