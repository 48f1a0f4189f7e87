"""The event bus in-process: group commit, idempotency, durable cursors."""

import asyncio

from tierd.core.clock import Clock
from tierd.core.events import Consumer, EventBus, type_matches
from tierd.core.storage import CORE, migrations_for
from tierd.testing import open_test_database


def test_type_patterns():
    assert type_matches("*", "invoice.paid")
    assert type_matches("invoice.*", "invoice.paid") and type_matches("invoice.*", "invoice.line.added")
    assert not type_matches("invoice.*", "invoices.paid") and not type_matches("invoice.*", "invoice")
    assert type_matches("invoice.paid", "invoice.paid") and not type_matches("invoice.paid", "invoice.void")


async def open_db(path):
    """The database of the backend the tests run on: the SQLite file ``path``, or
    (TIERD_TEST_STORAGE=postgresql) a PostgreSQL database of its folder; migrated."""
    db = await open_test_database(path.parent, path.name)
    await db.migrate(migrations_for({"core": CORE}, db.dialect))
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


async def test_retention_deletes_old_events_every_running_consumer_has_handled(tmp_path):
    from tierd.core.clock import FakeClock

    db = await open_db(tmp_path / "t.db")
    clock = FakeClock()
    bus = EventBus(db, clock)
    for i in range(6):
        await bus.publish("acme", "invoice.paid", {"i": i})
    clock.advance(40 * 86400)
    await bus.publish("acme", "invoice.paid", {"i": 6})  # recent: kept
    month_ago = clock.time() - 30 * 86400
    assert await bus.prune(month_ago) == 0  # no consumer has run: nothing is known handled

    handled, gate = [], asyncio.Event()

    async def fast(events):
        handled.extend(e.data["i"] for e in events)

    async def slow(events):
        await gate.wait()

    stopping = asyncio.Event()
    tasks = [
        asyncio.create_task(bus.run_consumer(Consumer("fast", fast), stopping)),
        asyncio.create_task(bus.run_consumer(Consumer("slow", slow, batch_size=3), stopping)),
    ]
    try:
        for _ in range(100):
            if len(handled) == 7:
                break
            await asyncio.sleep(0.02)
        bus.CURSOR_INTERVAL = 0  # "fast" stores its cursor at once
        await bus.publish("acme", "invoice.paid", {"i": 7})
        for _ in range(100):
            if len(handled) == 8:
                break
            await asyncio.sleep(0.02)
        # "slow" is still in its first batch and has stored no cursor: all is kept.
        assert await bus.prune(month_ago) == 0
        gate.set()
        for _ in range(100):  # "slow" catches up and stores its cursor
            row = await db.fetchone("SELECT last_seq FROM consumer_cursors WHERE name='slow'")
            if row and row["last_seq"] == 8:
                break
            await asyncio.sleep(0.02)
        assert await bus.prune(month_ago) == 6
        left = await db.fetchall("SELECT seq FROM events")
        assert [r["seq"] for r in left] == [7, 8]
    finally:
        gate.set()
        stopping.set()
        await asyncio.gather(*tasks)
    await db.close()


async def test_span_pages_a_tenants_events_of_a_time_span_along_the_index(tmp_path):
    class Frozen(Clock):
        now = 1_000.0

        def time(self):
            return self.now

    clock = Frozen()
    db = await open_db(tmp_path / "t.db")
    bus = EventBus(db, clock)
    for i in range(7):
        clock.now = 1_000.0 + i // 2  # pairs of events share a time: pages must not skip or repeat them
        await bus.publish("acme", "a.b", {"i": i})
        await bus.publish("globex", "a.b", {"i": i})
    pages = [page async for page in bus.span("acme", 1_001.0, 1_003.0, page=1)]
    assert [[e.data["i"] for e in page] for page in pages] == [[2], [3], [4], [5]]  # until is exclusive
    assert {e.tenant for page in pages for e in page} == {"acme"}
    # The plan of each query span() really sends (recorded on its way to the
    # database): along the index, no sort of the span.
    sent = []
    fetchall = db.fetchall

    async def recording(sql, params=()):
        sent.append((sql, params))
        return await fetchall(sql, params)

    db.fetchall = recording
    pages = [page async for page in bus.span("acme", 0, page=3)]
    db.fetchall = fetchall
    assert [[e.data["i"] for e in page] for page in pages] == [[0, 1, 2], [3, 4, 5], [6]]
    assert len(sent) == 4  # three pages and the empty answer that ends them
    for sql, params in sent if db.dialect == "sqlite" else []:  # SQLite's plans
        plan = [r["detail"] for r in await db.fetchall("EXPLAIN QUERY PLAN " + sql, params)]
        assert any("events_tenant_time" in step for step in plan) and not any("TEMP B-TREE" in s for s in plan), (
            sql,
            plan,
        )
    await db.close()
