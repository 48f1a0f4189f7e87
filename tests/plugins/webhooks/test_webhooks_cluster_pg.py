"""Webhooks with several tierd nodes on one PostgreSQL database (issue 15).

Real daemon processes on one throw-away PostgreSQL server, real receivers in
the test's loop. What a user of a cluster would notice:

* ``kill -9`` of one of three nodes under load loses no acknowledged event,
  sends no delivery again that was already marked delivered, sends every due
  one, keeps a fifo endpoint's order, and the killed node's deliveries in
  flight are taken over by the others within seconds (not at its restart);
* a node starting up leaves the deliveries another live node is sending alone;
* an endpoint's in-flight cap holds for the cluster, not per node;
* an endpoint disabled through one node stops deliveries on the others.
"""

from __future__ import annotations

import asyncio
import random
import socket
import time

from aiohttp import web
from webhook_helpers import TEST_WEBHOOKS, raw_sql

from tierd.testing import DaemonProcess, Receiver, eventually

#: The other built-in plugins stay off: the nodes do webhooks only (two cores).
OTHERS = ["notifications", "reconciliation", "reports"]


def make_nodes(tmp_path, url: str, count: int, webhooks: dict | None = None, each=None) -> list[DaemonProcess]:
    """``count`` nodes on ``url``; ``each``: settings of each node (a list) over ``webhooks``."""
    out = []
    for i in range(count):
        settings = TEST_WEBHOOKS | {"timeout": "10s"} | (webhooks or {}) | (each[i] if each else {})
        workdir = tmp_path / f"node{i}"
        workdir.mkdir()
        config = {"storage": {"url": url}, "plugins": {"disabled": OTHERS}, "webhooks": settings}
        out.append(DaemonProcess(workdir, config, env={"NODE": f"node{i}"}))
    return out


def node_name(node: DaemonProcess) -> str:
    """The node's name on the database (``Database.node``: host:pid)."""
    return f"{socket.gethostname()}:{node.process.pid}"[:57]


class CountingReceiver(Receiver):
    """Answers 200 after ``delay`` seconds (a number, or a function giving one);
    records each request's ``webhook-id`` and counts the requests it is
    answering at once (``most``)."""

    def __init__(self, delay=0.0):
        super().__init__()
        self.delay = delay
        self.ids: list[str] = []
        self.now = self.most = 0

    async def _handle(self, request: web.Request):
        await request.read()  # kept for the record (a killed sender's request ends here)
        self.ids.append(request.headers["webhook-id"])
        self.now += 1
        self.most = max(self.most, self.now)
        try:
            await asyncio.sleep(self.delay() if callable(self.delay) else self.delay)
            return await super()._handle(request)
        finally:
            self.now -= 1


async def sql(node: DaemonProcess, statement: str, params=()) -> list[tuple]:
    return await raw_sql(node, statement, params)


async def endpoint(node: DaemonProcess, token: str, url: str, **fields) -> str:
    status, body = await node.arequest("POST", "/v1/webhooks", {"url": url, **fields}, token=token)
    assert status == 201, body
    return body["id"]


def stop_all(nodes: list[DaemonProcess]) -> None:
    for n in nodes:
        n.stop()


# --- a. the acceptance test ---------------------------------------------------------


async def test_kill_9_of_one_of_three_nodes_under_load_loses_nothing_and_sends_nothing_delivered_again(pg, tmp_path):
    url = pg.create_database("wh_kill")
    nodes = make_nodes(tmp_path, url, 3, {"endpoint_max_in_flight": 12, "max_in_flight": 60})
    for n in nodes:
        await asyncio.to_thread(n.start)
    receiver = await CountingReceiver(delay=lambda: random.uniform(0.02, 0.12)).start()
    try:
        a = nodes[0]
        token = await asyncio.to_thread(a.create_tenant, "acme")
        unordered = await endpoint(a, token, f"{receiver.url}/all")
        fifo = await endpoint(a, token, f"{receiver.url}/fifo", event_types=["order.created"], ordering="fifo")

        alive = list(nodes)
        acked: dict[str, str] = {}  # event id -> type, every event answered 202
        fifo_order: list[str] = []  # fifo events, in the order they were accepted (one at a time)
        stop = asyncio.Event()

        async def post(node: DaemonProcess, body: dict) -> str | None:
            try:
                status, event = await node.arequest("POST", "/v1/events", body, token=token)
            except Exception:  # the killed node: not acknowledged
                return None
            if status != 202:
                return None
            acked[event["id"]] = body["type"]
            return event["id"]

        async def load(worker: int) -> None:
            for i in range(100):
                node = alive[(worker + i) % len(alive)]
                await post(node, {"type": "invoice.paid", "data": {"w": worker, "i": i}})

        async def ordered() -> None:
            i = 0
            while not stop.is_set() and i < 80:
                node = alive[i % len(alive)]
                event_id = await post(node, {"type": "order.created", "data": {"i": i}})
                if event_id is not None:
                    fifo_order.append(event_id)
                i += 1

        workers = [asyncio.create_task(load(w)) for w in range(4)]
        fifo_task = asyncio.create_task(ordered())

        # Mid-load: the node with the most deliveries in flight is killed.
        async def busiest():
            if len(acked) < 120:
                return None
            rows = await sql(
                a,
                "SELECT claimed_by, COUNT(*) FROM webhook_deliveries WHERE status='inflight' GROUP BY claimed_by"
                " ORDER BY COUNT(*) DESC",
            )
            names = {node_name(n): n for n in nodes}
            return next((names[r[0]] for r in rows if r[0] in names and r[1] >= 2), None)

        victim = await eventually(busiest, timeout=60, what="a node with deliveries in flight")
        delivered_before = {r[0] for r in await sql(a, "SELECT id FROM webhook_deliveries WHERE status='succeeded'")}
        alive.remove(victim)
        victim.kill9()
        killed_at = time.monotonic()
        left = await sql(
            alive[0],
            "SELECT id FROM webhook_deliveries WHERE status='inflight' AND claimed_by=?",
            (node_name(victim),),
        )
        assert left, "the killed node had deliveries in flight"

        # Its deliveries in flight are taken over by the others within seconds.
        async def taken_over():
            rows = await sql(
                alive[0],
                "SELECT COUNT(*) FROM webhook_deliveries WHERE status='inflight' AND claimed_by=?",
                (node_name(victim),),
            )
            return rows[0][0] == 0

        await eventually(taken_over, timeout=30, what="the killed node's deliveries taken over")
        takeover_seconds = time.monotonic() - killed_at
        assert takeover_seconds < 15, takeover_seconds

        await asyncio.gather(*workers)
        stop.set()
        await fifo_task

        # Every acknowledged event is delivered to each endpoint it matches; every due delivery succeeds.
        expected = len(acked) + sum(1 for t in acked.values() if t == "order.created")

        # (An event the killed node stored without answering may be delivered too: it is not counted.)
        async def all_delivered():
            rows = await sql(alive[0], "SELECT event_id, status FROM webhook_deliveries", ())
            made = [event_id for event_id, _ in rows if event_id in acked]
            return len(made) == expected and all(status == "succeeded" for _, status in rows)

        try:
            await eventually(all_delivered, timeout=120, what=f"{expected} deliveries succeeded")
        except AssertionError as exc:
            states = await sql(
                alive[0],
                "SELECT endpoint_id, status, claimed_by, COUNT(*), MIN(due_at), MAX(attempts) FROM webhook_deliveries"
                " GROUP BY endpoint_id, status, claimed_by",
            )
            errors = [line for n in alive for line in n.logs().splitlines() if "ERROR" in line or "gone" in line]
            raise AssertionError(f"{exc}: {states}; {len(acked)} acked; {errors[-20:]}") from None
        rows = await sql(alive[0], "SELECT id, event_id, endpoint_id FROM webhook_deliveries")
        by_event: dict[str, set[str]] = {}
        for _, event_id, endpoint_id in rows:
            by_event.setdefault(event_id, set()).add(endpoint_id)
        assert set(by_event) >= set(acked)  # no acknowledged event lost
        for event_id, event_type in acked.items():
            assert by_event[event_id] == ({unordered, fifo} if event_type == "order.created" else {unordered})
        received = set(receiver.ids)
        assert {r[0] for r in rows} <= received  # every delivery reached the receiver

        # Nothing marked delivered before the kill was sent again.
        sent_twice = {i for i in delivered_before if receiver.ids.count(i) > 1}
        assert not sent_twice, sent_twice

        # The fifo endpoint got its deliveries in event order (a head resent after the takeover comes first again).
        fifo_ids = dict(
            await sql(
                alive[0],
                "SELECT event_id, id FROM webhook_deliveries WHERE endpoint_id=?",
                (fifo,),
            )
        )
        firsts: list[str] = []
        for delivery_id in receiver.ids:
            if delivery_id not in firsts:
                firsts.append(delivery_id)
        wanted = [fifo_ids[e] for e in fifo_order]
        assert [d for d in firsts if d in set(wanted)] == wanted

        # Each endpoint's counters (the stats route's, migration 8's changes folded
        # by one node or not yet) agree with its rows, after three nodes' inserts,
        # claims and records, and a kill.
        counted = await sql(
            alive[0], "SELECT endpoint_id, pending, inflight, succeeded, failed FROM webhook_delivery_counts_now"
        )
        made_rows = await sql(alive[0], "SELECT endpoint_id, COUNT(*) FROM webhook_deliveries GROUP BY endpoint_id")
        assert sorted(counted) == sorted((ep, 0, 0, n, 0) for ep, n in made_rows)

        # The survivors said so; no statement waited on another's counters into a deadlock.
        logs = "".join(n.logs() for n in alive)
        assert f"in flight on node {node_name(victim)}, which is gone" in logs, logs[-3000:]
        assert "deadlock" not in logs, [line for line in logs.splitlines() if "deadlock" in line]
        print(
            f"\n{len(acked)} events acknowledged, {expected} deliveries, {len(receiver.ids)} requests "
            f"({len(receiver.ids) - len(received)} repeated), {len(left)} in flight on the killed node, "
            f"taken over in {takeover_seconds:.1f} s"
        )
    finally:
        await receiver.close()
        stop_all(nodes)


# --- b. a node starting up leaves a live node's claims alone ----------------------------------


async def test_a_node_starting_leaves_the_deliveries_a_live_node_is_sending(pg, tmp_path):
    url = pg.create_database("wh_start")
    a, b = make_nodes(tmp_path, url, 2, {"endpoint_max_in_flight": 20})
    await asyncio.to_thread(a.start)
    receiver = await CountingReceiver(delay=6.0).start()  # slow: still sending while B starts and looks
    try:
        token = await asyncio.to_thread(a.create_tenant, "acme")
        await endpoint(a, token, f"{receiver.url}/slow")
        for i in range(10):
            status, _ = await a.arequest("POST", "/v1/events", {"type": "invoice.paid", "data": {"i": i}}, token=token)
            assert status == 202
        await eventually(lambda: receiver.now == 10, what="10 requests in flight on node A")
        await asyncio.to_thread(b.start)  # its startup pass and its takeover job run while A sends

        async def done():
            rows = await sql(a, "SELECT status, attempts FROM webhook_deliveries")
            return len(rows) == 10 and all(r == ("succeeded", 1) for r in rows)

        await eventually(done, timeout=60, what="10 deliveries succeeded at the first attempt")
        assert receiver.now == 0 and len(receiver.ids) == len(set(receiver.ids)) == 10  # nothing sent twice
        assert "which is gone" not in b.logs() and "were in flight" not in b.logs()
    finally:
        await receiver.close()
        stop_all([a, b])


# --- c. an endpoint's cap holds for the cluster ---------------------------------------------------


async def test_an_endpoints_in_flight_cap_holds_across_nodes(pg, tmp_path):
    url = pg.create_database("wh_cap")
    # Node 0 may hold 2 of the endpoint's requests, node 1 3: both send (node 0
    # cannot take every slot), and together they hold at most 3, not 2 + 3.
    nodes = make_nodes(tmp_path, url, 2, each=[{"endpoint_max_in_flight": 2}, {"endpoint_max_in_flight": 3}])
    for n in nodes:
        await asyncio.to_thread(n.start)
    receiver = await CountingReceiver(delay=0.3).start()
    try:
        token = await asyncio.to_thread(nodes[0].create_tenant, "acme")
        await endpoint(nodes[0], token, f"{receiver.url}/capped")

        async def post(node: DaemonProcess, i: int) -> int:
            status, _ = await node.arequest(
                "POST", "/v1/events", {"type": "invoice.paid", "data": {"i": i}}, token=token
            )
            return status

        statuses = await asyncio.gather(*[post(nodes[i % 2], i) for i in range(60)])
        assert set(statuses) == {202}

        async def done():
            rows = await sql(nodes[0], "SELECT COUNT(*) FROM webhook_deliveries WHERE status='succeeded'")
            return rows[0][0] == 60

        await eventually(done, timeout=90, what="60 deliveries succeeded")
        senders = await sql(nodes[0], "SELECT DISTINCT claimed_by FROM webhook_deliveries")
        assert len(senders) == 2  # both nodes sent
        assert 2 <= receiver.most <= 3, receiver.most  # never more than the larger cap, both nodes together
    finally:
        await receiver.close()
        stop_all(nodes)


# --- d. endpoint changes reach every node ------------------------------------------------------------


async def consumer_node(nodes: list[DaemonProcess]) -> DaemonProcess:
    """The node that runs the webhooks consumer (it matches events against its endpoint cache)."""

    async def holder():
        status, body = await nodes[0].arequest("GET", "/v1/admin/nodes")
        assert status == 200, body
        names = {n["node"] for n in body["data"] if "webhooks" in n["holds"]}
        return next((n for n in nodes if node_name(n) in names), None)

    return await eventually(holder, what="the node running the webhooks consumer")


async def test_endpoint_changes_through_one_node_reach_the_node_that_matches_events(pg, tmp_path):
    url = pg.create_database("wh_changes")
    nodes = make_nodes(tmp_path, url, 2)
    for n in nodes:
        await asyncio.to_thread(n.start)
    receiver = await CountingReceiver().start()
    try:
        matcher = await consumer_node(nodes)
        [other] = [n for n in nodes if n is not matcher]
        token = await asyncio.to_thread(other.create_tenant, "acme")

        async def publish(count: int) -> None:
            for i in range(count):
                node = nodes[i % 2]
                status, _ = await node.arequest("POST", "/v1/events", {"type": "invoice.paid", "data": {}}, token=token)
                assert status == 202

        # Made through the other node: the consumer's node hears of it and matches events to it.
        first = await endpoint(other, token, f"{receiver.url}/first")
        await publish(2)
        await receiver.wait_for(2, timeout=30)

        # Disabled through the other node: the consumer makes no more deliveries for it.
        status, body = await other.arequest("PUT", f"/v1/webhooks/{first}", {"enabled": False}, token=token)
        assert status == 200, body
        await endpoint(other, token, f"{receiver.url}/second")
        await publish(4)
        # The later endpoint's four deliveries arrive; by then none more went to the disabled one.
        await eventually(lambda: len(receiver.requests) >= 6, timeout=30, what="the second endpoint's deliveries")
        paths = [r["path"] for r in receiver.requests]
        assert paths.count("/first") == 2 and paths.count("/second") == 4, paths
        made = await sql(matcher, "SELECT COUNT(*) FROM webhook_deliveries WHERE endpoint_id=?", (first,))
        assert made[0][0] == 2  # no delivery was even made for it
    finally:
        await receiver.close()
        stop_all(nodes)
