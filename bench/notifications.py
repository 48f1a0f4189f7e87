"""Benchmark: notifications routed and delivered per second.

tierd's notification path (route evaluation, one durable row per
notification in SQLite, rendering, the dispatcher's concurrent sends with an
attempt row each) delivering to a local webhook receiver, against Apprise's
``json://`` sending the same messages to the same receiver in the same run.

    .venv/bin/python bench/notifications.py [--events 2000] [--concurrency 50]

The receiver runs in its own process so that it does not compete with the
sender for the event loop. Apprise is optional (pip install apprise); without
it only tierd's figure is printed. A figure, never a timed assert.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import socket
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _serve(port: int) -> None:
    """The receiver: answers 200 to every POST and counts them (GET /count)."""
    from aiohttp import web

    count = {"n": 0}

    async def receive(request):
        await request.read()
        count["n"] += 1
        return web.Response(text="ok")

    async def get_count(request):
        return web.json_response(count)

    app = web.Application()
    app.router.add_post("/{tail:.*}", receive)
    app.router.add_get("/count", get_count)
    web.run_app(app, host="127.0.0.1", port=port, print=None, access_log=None)


async def _wait_up(url: str) -> None:
    import aiohttp

    async with aiohttp.ClientSession() as http:
        for _ in range(200):
            try:
                async with http.get(url + "/count"):
                    return
            except aiohttp.ClientError:
                await asyncio.sleep(0.05)
    raise SystemExit("receiver did not start")


def _events(n: int) -> list[dict]:
    return [
        {
            "id": f"evt_{i}",
            "tenant": "acme",
            "type": "invoice.paid",
            "data": {"number": f"INV-{i}", "amount": str(1000 + i), "currency": "EUR"},
            "created_at": "2026-11-28T12:00:00Z",
        }
        for i in range(n)
    ]


async def bench_tierd(url: str, n: int, concurrency: int) -> tuple[float, float]:
    """(events/s routed into rows, events/s routed and delivered end to end)."""
    import aiohttp
    import prometheus_client

    from tierd.core.clock import Clock
    from tierd.core.schema import validate
    from tierd.core.storage import CORE_MIGRATIONS, Database
    from tierd.plugins.notifications import store
    from tierd.plugins.notifications.channels import BUILTIN
    from tierd.plugins.notifications.compiled import Compiled
    from tierd.plugins.notifications.config import make_schema
    from tierd.plugins.notifications.dispatch import Dispatcher, Metrics
    from tierd.plugins.notifications.intake import ingest

    class Regs:
        channels = {c.type_name: c for c in BUILTIN}
        event_types: dict = {}  # no declared types: the bench's events are a tenant's own

    section, errors = validate(
        make_schema(Regs),
        {
            "channels": {"hook": {"type": "webhook", "url": url + "/tierd"}},
            "routes": [
                {"match": {"type": "payment.*"}, "channels": ["hook"]},  # a miss first, as in real trees
                {
                    "match": {"type": "invoice.*", "data": {"amount": {"gt": 100}}},
                    "channels": ["hook"],
                    "subject": "Invoice {{ data.number }}: {{ data.amount }} {{ data.currency }}",
                },
            ],
            "max_in_flight": concurrency,
            "max_in_flight_per_channel": concurrency,
        },
    )
    assert not errors, errors
    with tempfile.TemporaryDirectory() as tmp:
        db = await Database(Path(tmp) / "bench.db").open()
        await db.migrate({"core": CORE_MIGRATIONS, "notifications": store.MIGRATIONS})
        clock = Clock()
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=concurrency)) as http:
            compiled = Compiled(section, Regs, http)
            dispatcher = Dispatcher(
                db,
                clock,
                Metrics(prometheus_client.CollectorRegistry()),
                lambda: compiled,
                max_in_flight=concurrency,
                max_per_channel=concurrency,
            )
            events = _events(n)
            start = time.perf_counter()
            for i in range(0, n, 500):  # the bus hands the consumer batches of 500
                await ingest(db, compiled, events[i : i + 500], clock.time())
            routed = time.perf_counter() - start
            while await dispatcher.tick():
                pass
            total = time.perf_counter() - start
            row = await db.fetchone("SELECT COUNT(*) AS n FROM notifications WHERE status='delivered'")
            assert row["n"] == n, f"only {row['n']} of {n} delivered"
        await db.close()
    return n / routed, n / total


async def bench_apprise(url: str, n: int, concurrency: int) -> float | None:
    try:
        import apprise
    except ImportError:
        return None
    apobj = apprise.Apprise()
    apobj.add(url.replace("http://", "json://") + "/apprise")
    events = _events(n)
    sem = asyncio.Semaphore(concurrency)

    async def one(e):
        async with sem:
            ok = await apobj.async_notify(
                title=f"Invoice {e['data']['number']}: {e['data']['amount']} EUR",
                body=f"invoice.paid for {e['tenant']}",
            )
            assert ok

    start = time.perf_counter()
    await asyncio.gather(*(one(e) for e in events))
    return n / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=50)
    args = parser.parse_args()
    port = _free_port()
    server = multiprocessing.Process(target=_serve, args=(port,), daemon=True)
    server.start()
    url = f"http://127.0.0.1:{port}"
    try:
        asyncio.run(_wait_up(url))
        routed, delivered = asyncio.run(bench_tierd(url, args.events, args.concurrency))
        ap = asyncio.run(bench_apprise(url, args.events, args.concurrency))
    finally:
        server.terminate()
        server.join(5)
    print(f"events: {args.events}, concurrency: {args.concurrency}, receiver: local aiohttp (separate process)")
    print(f"tierd   routed into durable rows:        {routed:10.0f} events/s")
    print(f"tierd   routed + delivered (webhook):    {delivered:10.0f} events/s")
    if ap is None:
        print("apprise not installed (pip install apprise): no comparison")
    else:
        print(f"apprise json:// delivered (no routing, no storage): {ap:10.0f} events/s")
        print(f"ratio tierd / apprise:                   {delivered / ap:10.2f}")


if __name__ == "__main__":
    main()
