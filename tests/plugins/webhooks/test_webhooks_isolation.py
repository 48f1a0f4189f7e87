"""One bad endpoint must not slow the others; a big backlog must not starve new events."""

import asyncio
import json

from aiohttp import web
from webhook_helpers import fail_500, hook_receiver, local  # noqa: F401 (fixtures)

LIMITS = {"max_in_flight": 20, "endpoint_max_in_flight": 4, "timeout": "2s", "retry_schedule": ["0s", "1s", "1s"]}


async def test_hanging_and_failing_endpoints_do_not_slow_a_healthy_one(local, hook_receiver):
    # The hanging endpoint answers nothing until the test is over and the
    # attempt timeout is longer than the test: whatever waits behind it waits
    # for good, so the healthy endpoint is served beside it or not at all (no
    # wall-clock threshold to pass by luck or fail on a busy machine).
    d = await local(webhooks=LIMITS | {"timeout": "60s"})
    await d.tenant("acme")
    healthy, hanging, failing = await hook_receiver(), await hook_receiver(), await hook_receiver()
    release = asyncio.Event()

    async def hang(request, body):
        await release.wait()
        return web.Response()

    hanging.responder, failing.responder = hang, fail_500
    for r in (healthy, hanging, failing):
        await d.endpoint("acme", r.url)
    try:
        for i in range(60):
            await d.publish("acme", "invoice.paid", {"i": i})
        await healthy.wait_for(60, timeout=20)
        await failing.wait_for(60, timeout=20)  # and the failing one keeps being tried
        # All the while the hanging endpoint holds its 4 slots, and no more.
        assert len(hanging.requests) == LIMITS["endpoint_max_in_flight"]
        assert d.webhooks.dispatcher.slots.in_flight <= LIMITS["max_in_flight"]
        assert sorted(json.loads(q["body"])["data"]["i"] for q in healthy.requests) == list(range(60))
    finally:
        release.set()


async def test_backlog_drains_in_bounded_batches_and_new_events_are_not_starved(local, hook_receiver):
    d = await local(webhooks=LIMITS)
    await d.tenant("acme")
    slow, fresh = await hook_receiver(), await hook_receiver()
    stuck = asyncio.Event()

    async def slowly(request, body):
        # The first 20 are served (the order of service is checked below),
        # then the backlog's endpoint hangs: 19,980 due rows stay ahead of the new event.
        if len(slow.requests) > 20:
            await stuck.wait()
        await asyncio.sleep(0.05)
        return web.Response()

    slow.responder = slowly
    backlog_ep = await d.endpoint("acme", slow.url, event_types=["backlog.*"])
    await d.endpoint("acme", fresh.url, event_types=["fresh.*"])
    # 20,000 due deliveries for one endpoint, written straight to the table.
    now = d.clock.time()
    rows = [
        (
            f"msg_backlog{i:06d}",
            "acme",
            backlog_ep["id"],
            f"evt_b{i}",
            "backlog.item",
            '{"type":"backlog.item"}',
            now - 600 + i * 0.001,
            now - 600,
        )
        for i in range(20_000)
    ]
    async with d.daemon.db.transaction() as tx:
        await tx.executemany(
            "INSERT INTO webhook_deliveries(id, tenant_id, endpoint_id, event_id, event_type, payload, status,"
            " due_at, created_at) VALUES (?,?,?,?,?,?,'pending',?,?)",
            rows,
        )
    d.webhooks.dispatcher.wake()
    try:
        await slow.wait_for(21 + LIMITS["endpoint_max_in_flight"] - 1)  # served 20, now its slots hang
        # A new event for another endpoint goes out although 20,000 older rows are due before it.
        await d.publish("acme", "fresh.one")
        await fresh.wait_for(1, timeout=10)
        dispatcher = d.webhooks.dispatcher
        assert dispatcher.slots.in_flight <= LIMITS["endpoint_max_in_flight"] + 1
        assert len(dispatcher.tasks) <= LIMITS["max_in_flight"]
        # The backlog is served oldest first (ids were numbered in due order).
        ids = [r["headers"]["webhook-id"] for r in slow.requests[:8]]
        assert max(ids) <= "msg_backlog000015", ids
    finally:
        stuck.set()


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
