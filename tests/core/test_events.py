"""The event bus in-process: group commit, idempotency, durable cursors."""

import asyncio

from tierd.core.clock import Clock
from tierd.core.events import Consumer, EventBus, type_matches
from tierd.core.storage import CORE_MIGRATIONS, Database


def test_type_patterns():
    assert type_matches("*", "invoice.paid")
    assert type_matches("invoice.*", "invoice.paid") and type_matches("invoice.*", "invoice.line.added")
    assert not type_matches("invoice.*", "invoices.paid") and not type_matches("invoice.*", "invoice")
    assert type_matches("invoice.paid", "invoice.paid") and not type_matches("invoice.paid", "invoice.void")


async def open_db(path):
    db = await Database(path).open()
    await db.migrate({"core": CORE_MIGRATIONS})
    return db


async def test_concurrent_publishes_commit_together_and_keys_dedupe(tmp_path):
    db = await open_db(tmp_path / "t.db")
    bus = EventBus(db, Clock())
    results = await asyncio.gather(*(bus.publish_ex("acme", "a.b", {"i": i}, key=f"k{i % 10}") for i in range(100)))
    assert sum(1 for _, created in results if created) == 10
    ids = {e.id for e, _ in results}
    assert len(ids) == 10
    rows = await db.fetchall("SELECT COUNT(*) AS n FROM events")
    assert rows[0]["n"] == 10
    await db.close()


async def test_a_filtered_page_is_full_while_more_events_match(tmp_path):
    db = await open_db(tmp_path / "t.db")
    bus = EventBus(db, Clock())
    for i in range(10):
        await bus.publish("acme", "order.created", {"i": i})
    for i in range(3):
        await bus.publish("acme", "invoice.paid", {"i": i})
    await bus.publish("other", "invoice.paid", {})
    page = await bus.list("acme", 0, 2, "invoice.*")
    assert [(e.type, e.data["i"]) for e in page] == [("invoice.paid", 0), ("invoice.paid", 1)]
    rest = await bus.list("acme", page[-1].seq, 2, "invoice.*")
    assert [e.data["i"] for e in rest] == [2]
    assert [e.type for e in await bus.list("acme", 0, 5, "order.created")] == ["order.created"] * 5
    await db.close()


async def test_consumer_sees_every_event_once_in_order_and_resumes_from_its_cursor(tmp_path):
    db = await open_db(tmp_path / "t.db")
    bus = EventBus(db, Clock())
    for i in range(30):
        await bus.publish("acme", "order.created" if i % 2 else "invoice.paid", {"i": i})

    seen, failed_once = [], []

    async def handle(events):
        if not failed_once:  # the first batch fails: it must be delivered again
            failed_once.append(True)
            raise RuntimeError("boom")
        seen.extend(e.data["i"] for e in events)

    stopping = asyncio.Event()
    task = asyncio.create_task(bus.run_consumer(Consumer("c", handle, types=["invoice.*"], batch_size=7), stopping))
    for _ in range(200):
        if len(seen) == 15:
            break
        await asyncio.sleep(0.05)
    assert seen == list(range(0, 30, 2))

    # Restart: a consumer of the same name starts after what it consumed.
    stopping.set()
    await task
    await bus.publish("acme", "invoice.paid", {"i": 99})
    again = []

    async def handle2(events):
        again.extend(e.data["i"] for e in events)

    stopping = asyncio.Event()
    task = asyncio.create_task(bus.run_consumer(Consumer("c", handle2, types=["invoice.*"]), stopping))
    for _ in range(100):
        if again:
            break
        await asyncio.sleep(0.05)
    stopping.set()
    await task
    assert again == [99]
    await db.close()
