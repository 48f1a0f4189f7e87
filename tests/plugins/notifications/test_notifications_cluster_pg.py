"""Notifications on several tierd nodes sharing one PostgreSQL database (issue 15).

Real daemon processes on one throw-away PostgreSQL server, sending to a real
HTTP receiver through the generic webhook channel; each node names itself in
a header (``X-Node: ${NODE}``), so the receiver knows who sent what:

* every notification is sent once, whichever node claims it;
* a node killed (``kill -9``) while its sends hang leaves claims that the
  others take over within seconds, and every notification is delivered;
* a group's digest is made once across the nodes.
"""

from __future__ import annotations

import asyncio
import collections
import json
import time

from aiohttp import web

from tierd.testing import DaemonProcess, Receiver

OTHERS = ["webhooks", "reconciliation", "reports"]


def make_nodes(tmp_path, url: str, receiver: Receiver, count: int, **notifications) -> list[DaemonProcess]:
    section = {
        "channels": {
            "hook": {"type": "webhook", "url": receiver.url, "timeout": "60s", "headers": {"X-Node": "${NODE}"}}
        },
        "routes": [{"match": {"type": "*"}, "channels": ["hook"]}],
        "max_in_flight": 10,
        **notifications,
    }
    out = []
    for i in range(count):
        workdir = tmp_path / f"node{i}"
        workdir.mkdir()
        config = {"storage": {"url": url}, "plugins": {"disabled": OTHERS}, "notifications": section}
        out.append(DaemonProcess(workdir, config, env={"NODE": f"node{i}"}))
    return out


async def start_all(nodes: list[DaemonProcess]) -> None:
    # In threads: the receiver answers on this loop meanwhile.
    await asyncio.gather(*[asyncio.to_thread(n.start) for n in nodes])


async def publish(nodes: list[DaemonProcess], token: str, count: int, type_: str = "order.created") -> None:
    """``count`` events, spread over the nodes."""
    answers = await asyncio.gather(
        *[
            nodes[i % len(nodes)].arequest("POST", "/v1/events", {"type": type_, "data": {"i": i}}, token=token)
            for i in range(count)
        ]
    )
    assert all(status == 202 for status, _ in answers)


def sent(receiver: Receiver) -> list[tuple[str, str]]:
    """(notification id, node) of every request the receiver got."""
    return [(json.loads(r["body"])["id"], r["headers"].get("X-Node", "")) for r in receiver.requests]


async def notifications(node: DaemonProcess) -> list[dict]:
    status, body = await node.arequest("GET", "/v1/notifications?limit=500")
    assert status == 200
    return body["data"]


async def until(predicate, timeout: float, what: str, interval: float = 0.2):
    deadline = time.monotonic() + timeout
    while True:
        result = await predicate()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(interval)


async def test_three_nodes_send_each_notification_once(pg, tmp_path):
    async with Receiver() as receiver:

        async def slowish(request, body):
            await asyncio.sleep(0.2)  # sends overlap, so every node has some to claim
            return web.Response(text="ok")

        receiver.responder = slowish
        nodes = make_nodes(tmp_path, pg.create_database("notify_once"), receiver, 3)
        await start_all(nodes)
        try:
            token = await asyncio.to_thread(nodes[0].create_tenant, "acme")
            await publish(nodes, token, 120)

            async def all_delivered():
                rows = await notifications(nodes[1])
                return len(rows) == 120 and all(r["status"] == "delivered" for r in rows)

            await until(all_delivered, 90, "120 notifications delivered")
            await asyncio.sleep(3)  # anything sent twice would have arrived by now
            ids = [i for i, _ in sent(receiver)]
            assert len(ids) == 120 and len(set(ids)) == 120  # each once
            by_node = collections.Counter(node for _, node in sent(receiver))
            assert len(by_node) >= 2, by_node  # the nodes shared the work
        finally:
            for n in nodes:
                n.stop()


async def test_a_killed_nodes_claims_are_taken_over_within_seconds(pg, tmp_path):
    """Sends hang on the receiver; one node is killed with its sends in flight. The
    others take its rows over (a few seconds: the take-over's round and grace) and
    every notification is delivered. Those the killed node had handed to the
    receiver arrive twice: the at-least-once window is one send, from the hand-over
    to the channel to the commit of its outcome."""
    async with Receiver() as receiver:
        release = asyncio.Event()

        async def hang(request, body):
            await release.wait()
            return web.Response(text="ok")

        receiver.responder = hang
        nodes = make_nodes(tmp_path, pg.create_database("notify_takeover"), receiver, 3)
        await start_all(nodes)
        try:
            token = await asyncio.to_thread(nodes[0].create_tenant, "acme")
            await publish(nodes, token, 30)
            await receiver.wait_for(10, timeout=30)
            await asyncio.sleep(1)  # the others claim what they can meanwhile
            hanging = collections.Counter(node for _, node in sent(receiver))
            victim_name = hanging.most_common(1)[0][0]
            victim = next(n for n in nodes if n.env["NODE"] == victim_name)
            survivors = [n for n in nodes if n is not victim]
            victims_rows = {i for i, node in sent(receiver) if node == victim_name}
            assert victims_rows

            victim.kill9()
            killed_at = time.monotonic()
            release.set()  # the survivors' sends (and any later one) are answered now

            async def all_delivered():
                rows = await notifications(survivors[0])
                return len(rows) == 30 and all(r["status"] == "delivered" for r in rows)

            await until(all_delivered, 30, "every notification delivered after the kill")
            took = time.monotonic() - killed_at
            assert took < 15, f"took {took:.1f}s after the kill"
            # The killed node's rows were sent again by the others; nothing else twice.
            again = collections.Counter(i for i, _ in sent(receiver))
            assert {i for i, n in again.items() if n > 1} == victims_rows
            assert {node for i, node in sent(receiver) if i in victims_rows} - {victim_name}
            assert set(again) == {r["id"] for r in await notifications(survivors[0])}
            logs = "".join(n.logs() for n in survivors)
            assert "claimed by node" in logs and "which is gone" in logs
            print(f"kill -9 -> {len(victims_rows)} claim(s) taken over, all 30 delivered in {took:.1f}s")
        finally:
            release.set()
            for n in nodes:
                n.stop()


async def test_a_groups_digest_is_made_once_across_nodes(pg, tmp_path):
    async with Receiver() as receiver:
        nodes = make_nodes(
            tmp_path,
            pg.create_database("notify_digest"),
            receiver,
            3,
            routes=[{"match": {"type": "*"}, "channels": ["hook"], "group_by": ["type"], "group_wait": "3s"}],
        )
        await start_all(nodes)
        try:
            token = await asyncio.to_thread(nodes[0].create_tenant, "acme")
            await publish(nodes, token, 15, type_="payment.failed")
            await receiver.wait_for(1, timeout=30)
            await asyncio.sleep(4)  # a second digest from another node would be here by now
            assert len(receiver.requests) == 1
            digest = json.loads(receiver.requests[0]["body"])
            assert len(digest["events"]) == 15
            rows = await notifications(nodes[2])
            assert [r["kind"] for r in rows].count("digest") == 1
        finally:
            for n in nodes:
                n.stop()
