"""Several tierd nodes on one PostgreSQL database: one event log numbered
without gaps or repeats whichever node takes the event, idempotency keys
shared, each consumer run by one node at a time and taken over when that
node is killed, and consumers woken by another node's events.

The nodes are real daemon processes on one throw-away PostgreSQL server.
"""

from __future__ import annotations

import asyncio
import textwrap
import time

from tierd.core.clock import Clock
from tierd.core.events import Consumer, Event, EventBus
from tierd.core.pg import PgDatabase
from tierd.core.storage import CORE, migrations_for
from tierd.testing import DaemonProcess, eventually

BUILTINS = ["webhooks", "notifications", "reconciliation", "reports"]

#: A consumer that writes down which node handled which event.
WITNESS = '''
import os

from tierd.core.events import Consumer
from tierd.core.plugins import hookimpl

TABLE = """CREATE TABLE witness (event_seq BIGINT NOT NULL, node TEXT NOT NULL, at DOUBLE PRECISION NOT NULL)"""


@hookimpl
def tierd_migrations():
    return {"witness": {"sqlite": [TABLE], "postgresql": [TABLE]}}


@hookimpl
def tierd_event_consumers(daemon):
    async def handle(events):
        node = os.environ["NODE"]
        async with daemon.db.transaction() as tx:
            await tx.executemany(
                "INSERT INTO witness(event_seq, node, at) VALUES (?, ?, ?)",
                [(e.seq, node, daemon.clock.time()) for e in events],
            )

    return [Consumer("witness", handle, batch_size=50)]
'''


def nodes(tmp_path, url: str, count: int, witness: bool = False) -> list[DaemonProcess]:
    extra = {}
    if witness:
        folder = tmp_path / "witness-plugin"
        folder.mkdir(exist_ok=True)
        (folder / "witness.py").write_text(textwrap.dedent(WITNESS))
        extra = {"plugins": ["witness"], "pythonpath": [folder]}
    out = []
    for i in range(count):
        workdir = tmp_path / f"node{i}"
        workdir.mkdir()
        config = {"storage": {"url": url}, "plugins": {"disabled": BUILTINS}}
        out.append(DaemonProcess(workdir, config, env={"NODE": f"node{i}"}, **extra))
    return out


async def post_all(node: DaemonProcess, token: str, bodies: list[dict]) -> list[tuple[int, dict]]:
    return list(await asyncio.gather(*[node.arequest("POST", "/v1/events", b, token=token) for b in bodies]))


def test_nodes_share_one_log_numbered_once_and_one_set_of_keys(pg, tmp_path):
    a, b, c = nodes(tmp_path, pg.create_database("shared_log"), 3)
    for n in (a, b, c):
        n.start()
    try:
        token = a.create_tenant("acme")

        async def burst():
            # The same 60 keys sent to every node at once, each twice (so that
            # a node's batch holds repeats too): each key makes one event.
            bodies = [{"type": "order.created", "id": f"key-{i % 60}", "data": {"i": i % 60}} for i in range(120)]
            return await asyncio.gather(*[post_all(n, token, bodies) for n in (a, b, c)])

        answers = [r for per_node in asyncio.run(burst()) for r in per_node]
        assert {s for s, _ in answers} <= {200, 202}
        assert sum(1 for s, _ in answers if s == 202) == 60
        by_key: dict[str, set[str]] = {}
        for (_, event), i in zip(answers, list(range(120)) * 3, strict=True):
            by_key.setdefault(f"key-{i % 60}", set()).add(event["id"])
        assert all(len(ids) == 1 for ids in by_key.values())  # every node answered the same event

        events, cursor = [], None
        while True:
            query = "/v1/events?limit=500" + (f"&cursor={cursor}" if cursor else "")
            status, page = b.request("GET", query, token=token)
            events += page["data"]
            cursor = page["next_cursor"]
            if not cursor:
                break
        assert [e["seq"] for e in events] == list(range(1, 61))  # no gap, no repeat
    finally:
        for n in (a, b, c):
            n.stop()


async def test_buses_of_two_nodes_publishing_at_once_number_each_event_once_in_commit_order(pg):
    """Intake's batches from two nodes at once (two EventBuses, each on a
    PgDatabase of its own, as two daemons): every new event has its own seq,
    the seqs have no gap and commit in their order (a reader following the log
    by ``seq > cursor`` while they are written skips none; the NOTIFYs come in
    seq order), and a key, whether repeated on the other node, in a later
    batch or in the same batch, answers its first event (created False)."""
    url = pg.create_database("two_buses")
    a, b = PgDatabase(url, readers=1, node="node-a"), PgDatabase(url, readers=1, node="node-b")
    async with a, b:
        await a.migrate(migrations_for({"core": CORE}, a.dialect))
        notified: list[int] = []
        await a.listen("tierd_events", lambda payload: notified.append(int(payload)))
        buses = [EventBus(a, Clock()), EventBus(b, Clock())]

        followed: list[int] = []
        done = asyncio.Event()

        async def follow() -> None:
            cursor = 0
            while True:
                last = done.is_set()  # one more read after the publishers are done
                for row in await a.fetchall("SELECT seq FROM events WHERE seq > ? ORDER BY seq", (cursor,)):
                    followed.append(row["seq"])
                    cursor = row["seq"]
                if last:
                    return

        async def publish(bus: EventBus, node: str) -> list[tuple[str, str | None, Event, bool]]:
            out = []
            for wave in range(15):
                # A batch of 20 keys of the wave, each twice; 10 events without
                # a key; a key of the first wave; a key of another tenant.
                calls = [
                    (t, k, {"node": node, "wave": wave, "n": n})
                    for n, (t, k) in enumerate(
                        [("acme", f"w{wave}-{i % 20}") for i in range(40)]
                        + [("acme", None)] * 10
                        + [("acme", "w0-0"), ("other", f"w{wave}-0")]
                    )
                ]
                answers = await asyncio.gather(*(bus.publish_ex(t, "order.created", d, key=k) for t, k, d in calls))
                out += [(t, k, event, created) for (t, k, _), (event, created) in zip(calls, answers, strict=True)]
                # And a batch without any key (the function's other path).
                plain = await asyncio.gather(*(bus.publish_ex("acme", "order.noted", {"n": n}) for n in range(10)))
                out += [("acme", None, event, created) for event, created in plain]
            return out

        follower = asyncio.create_task(follow())
        results = await asyncio.gather(publish(buses[0], "a"), publish(buses[1], "b"))
        done.set()
        await follower

        answers = [r for per_node in results for r in per_node]
        new = [event for _, _, event, created in answers if created]
        total = 2 * 15 * 20 + 15 * 20 + 15  # keyless + keys of acme + keys of other
        assert sorted(e.seq for e in new) == list(range(1, total + 1))  # each once, no gap
        assert len({e.id for e in new}) == total
        assert followed == list(range(1, total + 1))  # committed in seq order: none skipped
        deadline = time.monotonic() + 10
        while (not notified or notified[-1] != total) and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        assert notified == sorted(set(notified)) and notified[-1] == total

        firsts: dict[tuple[str, str], Event] = {}
        for tenant, key, event, created in answers:
            if key is not None and created:
                assert (tenant, key) not in firsts
                firsts[(tenant, key)] = event
        assert len(firsts) == 15 * 20 + 15
        for tenant, key, event, _created in answers:
            if key is not None:
                assert event == firsts[(tenant, key)]  # the same event, on either node
                assert event.tenant == tenant
        repeats = [(event, created) for _, key, event, created in answers if key is not None]
        assert sum(1 for _, created in repeats if not created) == len(repeats) - len(firsts)

        # What each bus answered is what is stored (a repeat read back from the log).
        stored = {e.seq: e for e in await buses[1].list(None, 0, total + 1)}
        assert len(stored) == total
        for event in new:
            assert stored[event.seq] == event


async def test_a_consumer_gets_every_nodes_events_once_in_order_even_without_their_notify(pg):
    """A node's consumer reads its own events from its memory and the other
    node's from the log, when their NOTIFY says they are there: every event
    once, in seq order, the two nodes' batches interleaved (the node's own
    events stop at the other's, which it has not seen). A node that hears no
    NOTIFY (its listening connection lost) still reads the log now and then:
    the other node's events reach its consumer, later."""
    url = pg.create_database("consumers")
    a = PgDatabase(url, readers=1, node="node-a")
    b = PgDatabase(url, readers=1, node="node-b")
    deaf = PgDatabase(url, readers=1, node="node-deaf")
    async with a, b, deaf:
        await a.migrate(migrations_for({"core": CORE}, a.dialect))
        bus_a, bus_b, bus_deaf = EventBus(a, Clock()), EventBus(b, Clock()), EventBus(deaf, Clock())
        await bus_b.listen()  # the deaf node does not listen
        seen: dict[str, list[int]] = {"b": [], "deaf": []}
        stopping = asyncio.Event()

        def consumer(name: str) -> Consumer:
            async def handle(events: list[Event]) -> None:
                seen[name] += [e.seq for e in events]

            return Consumer(f"c-{name}", handle, batch_size=7)

        running = [
            asyncio.create_task(bus_b.run_consumer(consumer("b"), stopping)),
            asyncio.create_task(bus_deaf.run_consumer(consumer("deaf"), stopping)),
        ]
        try:
            for wave in range(12):
                await asyncio.gather(
                    *(bus_a.publish("acme", "order.created", {"wave": wave, "n": n}) for n in range(5)),
                    *(bus_b.publish("acme", "order.created", {"wave": wave, "n": n}) for n in range(3)),
                )
            total = 12 * 8

            async def all_seen() -> bool:
                return len(seen["b"]) >= total and len(seen["deaf"]) >= total

            await eventually(all_seen, timeout=20, what=f"{total} events seen by both consumers")
            assert seen["b"] == list(range(1, total + 1))
            assert seen["deaf"] == list(range(1, total + 1))
        finally:
            stopping.set()
            await asyncio.gather(*running)


def test_a_consumer_runs_on_one_node_and_another_takes_over_when_it_is_killed(pg, tmp_path):
    url = pg.create_database("takeover")
    a, b = nodes(tmp_path, url, 2, witness=True)
    a.start()
    b.start()
    try:
        token = a.create_tenant("acme")

        async def publish(node: DaemonProcess, n: int, start: int) -> None:
            answers = await post_all(node, token, [{"type": "tick", "data": {"i": i}} for i in range(start, start + n)])
            assert all(s == 202 for s, _ in answers)

        # Events taken by either node are handled once, by the node that runs the consumer.
        asyncio.run(publish(a, 20, 0))
        asyncio.run(publish(b, 20, 20))
        handled = wait_for_witness(url, 40)
        assert sorted(seq for seq, _ in handled) == list(range(1, 41))
        [runner] = {node for _, node in handled}

        # The node that runs it dies: the other takes over from the stored cursor.
        (a if runner == "node0" else b).kill9()
        survivor = b if runner == "node0" else a
        asyncio.run(publish(survivor, 10, 40))
        handled = wait_for_witness(url, 50)
        later = [node for seq, node in handled if seq > 40]
        assert sorted({seq for seq, _ in handled}) == list(range(1, 51))  # none lost
        assert set(later) == {survivor.env["NODE"]}
    finally:
        for n in (a, b):
            n.stop()


def wait_for_witness(url: str, count: int, timeout: float = 30.0) -> list[tuple[int, str]]:
    """(event seq, node) rows of the witness table once it has ``count`` distinct events."""
    import asyncpg

    async def read() -> list[tuple[int, str]]:
        conn = await asyncpg.connect(url)
        try:
            return [(r["event_seq"], r["node"]) for r in await conn.fetch("SELECT event_seq, node FROM witness")]
        finally:
            await conn.close()

    deadline = time.monotonic() + timeout
    while True:
        rows = asyncio.run(read())
        if len({seq for seq, _ in rows}) >= count or time.monotonic() > deadline:
            return rows
        time.sleep(0.2)


def test_the_clusters_timers_run_on_one_node_and_the_nodes_say_what_each_runs(pg, tmp_path):
    a, b = nodes(tmp_path, pg.create_database("timers"), 2, witness=True)
    a.start()
    b.start()
    try:

        def jobs(node: DaemonProcess) -> set[str]:
            return {j["id"] for j in node.request("GET", "/v1/admin/jobs")[1]["data"]}

        # The first node up leads the timers; the other has its own node-scoped ones only.
        leader, follower = (a, b) if "core.prune_events" in jobs(a) else (b, a)
        assert "core.prune_events" in jobs(leader) and jobs(follower) == {"core.metrics"}
        assert "this node runs the cluster's timers" in leader.logs()

        status, listed = follower.request("GET", "/v1/admin/nodes")
        assert status == 200
        by_node = {n["node"]: n for n in listed["data"]}
        assert len(by_node) == 2 and sum(n["this"] for n in listed["data"]) == 1
        held = sorted(h for n in listed["data"] for h in n["holds"])
        assert held == ["timers", "witness"]  # each held once, cluster-wide

        shown = follower.cli("nodes")
        assert shown.returncode == 0 and "timers" in shown.stdout and "witness" in shown.stdout
        assert len([line for line in shown.stdout.splitlines()[1:] if line.strip()]) == 2

        leader.kill9()

        def took_over() -> bool:
            return "core.prune_events" in jobs(follower)

        deadline = time.monotonic() + 20
        while not took_over() and time.monotonic() < deadline:
            time.sleep(0.2)
        assert took_over()
        status, listed = follower.request("GET", "/v1/admin/nodes")
        [alone] = listed["data"]
        assert alone["this"] and sorted(alone["holds"]) == ["timers", "witness"]
    finally:
        for n in (a, b):
            n.stop()
