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

from tierd.testing import DaemonProcess

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
            # The same 60 keys sent to every node at once: each key makes one event.
            bodies = [{"type": "order.created", "id": f"key-{i}", "data": {"i": i}} for i in range(60)]
            return await asyncio.gather(*[post_all(n, token, bodies) for n in (a, b, c)])

        answers = [r for per_node in asyncio.run(burst()) for r in per_node]
        assert {s for s, _ in answers} <= {200, 202}
        assert sum(1 for s, _ in answers if s == 202) == 60
        by_key: dict[str, set[str]] = {}
        for (_, event), i in zip(answers, list(range(60)) * 3, strict=True):
            by_key.setdefault(f"key-{i}", set()).add(event["id"])
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
