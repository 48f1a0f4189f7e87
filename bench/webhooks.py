"""Benchmark: webhook deliveries end to end, against a bare relay in the same run.

Three figures for tierd (daemon subprocess, receivers in their own process):

1. throughput: N events posted to ``/v1/events`` -> N signed deliveries
   received; deliveries/s from the first event posted to the last delivery
   received. Every delivery is a durable row (and every attempt too).
2. latency at a steady rate (default 200 events/s): p50/p99 from event
   accepted to first delivery attempt (read from tierd's own tables).
3. backlog: B deliveries due at once (written to the table while the daemon
   is stopped, as a crash or an outage would leave them); drain rate, peak
   RSS, and how long a fresh event for another endpoint waits meanwhile.

4. stats (``--stats N``): N deliveries of one endpoint, each with one
   attempt, spread over the last 24 h (written while the daemon is stopped,
   through the tables' triggers if the schema has them), then the median
   time of ``GET /v1/webhooks/{id}/stats`` (a dashboard polling it).

The same N events are also pushed through a bare aiohttp relay (answers 202
at once and forwards each event signed, keeping nothing), alternating with
tierd round by round, and the median of the rounds' ratios tierd/relay is
printed. A figure, never a timed assert.

    .venv/bin/python bench/webhooks.py                # full run (100k backlog)
    .venv/bin/python bench/webhooks.py --quick        # ~30 s
    .venv/bin/python bench/webhooks.py --stats 500000 --stats-only   # the stats read alone

To compare with other code, put it first on the path: the daemon is started
with ``python -m tierd`` and inherits ``PYTHONPATH``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import signal
import sqlite3
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import aiohttp  # noqa: E402
from _common import BenchDaemon, blast, free_port, median, pct, rss_mb  # noqa: E402

SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"


# --- processes -----------------------------------------------------------------------


def _receiver(port: int) -> None:
    """Answers 200 to every POST; GET /stats gives count, unique ids and first/last arrival."""
    from aiohttp import web

    state = {"n": 0, "ids": set(), "first": None, "last": None}

    async def receive(request):
        await request.read()
        now = time.time()
        state["n"] += 1
        state["ids"].add(request.headers.get("webhook-id"))
        state["first"] = state["first"] or now
        state["last"] = now
        return web.Response(text="ok")

    async def stats(request):
        return web.json_response(
            {"n": state["n"], "unique": len(state["ids"]), "first": state["first"], "last": state["last"]}
        )

    async def reset(request):
        state.update(n=0, ids=set(), first=None, last=None)
        return web.json_response({})

    app = web.Application()
    app.router.add_get("/stats", stats)
    app.router.add_post("/reset", reset)
    app.router.add_post("/{tail:.*}", receive)
    web.run_app(app, host="127.0.0.1", port=port, print=None, access_log=None)


def _relay(port: int, target: str) -> None:
    """The baseline: accept an event (202 at once), forward it signed, keep nothing."""
    import secrets as _secrets

    from aiohttp import web

    from tierd.plugins.webhooks.signing import sign

    tasks = set()

    async def startup(app):
        app["http"] = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=200))

    async def cleanup(app):
        await app["http"].close()

    async def forward(http, event):
        msg_id = "msg_" + _secrets.token_hex(12)
        body = json.dumps(
            {"type": event["type"], "timestamp": "", "data": event.get("data", {})}, separators=(",", ":")
        ).encode()
        ts = int(time.time())
        headers = {
            "webhook-id": msg_id,
            "webhook-timestamp": str(ts),
            "content-type": "application/json",
            "webhook-signature": sign(SECRET, msg_id, ts, body),
        }
        for _ in range(3):
            try:
                async with http.post(target, data=body, headers=headers) as resp:
                    await resp.read()
                    return
            except aiohttp.ClientError:
                await asyncio.sleep(0.1)

    async def accept(request):
        event = await request.json()
        task = asyncio.get_running_loop().create_task(forward(request.app["http"], event))
        tasks.add(task)
        task.add_done_callback(tasks.discard)
        return web.json_response({"accepted": True}, status=202)

    app = web.Application()
    app.on_startup.append(startup)
    app.on_cleanup.append(cleanup)
    app.router.add_post("/v1/events", accept)
    web.run_app(app, host="127.0.0.1", port=port, print=None, access_log=None)


def _spawn(target, *args) -> multiprocessing.Process:
    proc = multiprocessing.Process(target=target, args=args, daemon=True)
    proc.start()
    return proc


# --- helpers -----------------------------------------------------------------------------


async def _get(http, url):
    async with http.get(url) as resp:
        return await resp.json()


async def _wait_up(http, url):
    for _ in range(300):
        try:
            return await _get(http, url)
        except aiohttp.ClientError:
            await asyncio.sleep(0.05)
    raise SystemExit(f"{url} did not come up")


async def _wait_count(http, stats_url, count, timeout):
    deadline = time.monotonic() + timeout
    while True:
        stats = await _get(http, stats_url)
        if stats["unique"] >= count or time.monotonic() > deadline:
            return stats
        await asyncio.sleep(0.02)


async def _api(http, daemon, method, path, body, tenant="bench"):
    headers = {"Authorization": "Bearer bench-admin-token", "Tierd-Tenant": tenant}
    async with http.request(method, daemon.url + path, json=body, headers=headers) as resp:
        data = await resp.json()
        if resp.status >= 300:
            raise SystemExit(f"{method} {path}: {resp.status} {data}")
        return data


def _first_attempt_delays(db_path: Path, event_type: str) -> list[float]:
    with sqlite3.connect(db_path) as conn:
        rows = conn.execute(
            "SELECT MIN(a.attempted_at) - d.created_at FROM webhook_deliveries d"
            " JOIN webhook_attempts a ON a.delivery_seq=d.seq WHERE d.event_type=? GROUP BY d.seq",
            (event_type,),
        ).fetchall()
    return [r[0] for r in rows if r[0] is not None]


# --- phases ------------------------------------------------------------------------------


async def throughput(http, daemon, token, stats_url, reset_url, events, concurrency, endpoints):
    await http.post(reset_url)
    started = time.time()
    seconds, statuses, _ = await blast(
        daemon.url + "/v1/events",
        token,
        events,
        concurrency,
        body_of=lambda i: {"type": f"t{i % endpoints}.throughput", "data": {"i": i}},
    )
    stats = await _wait_count(http, stats_url, events, timeout=max(60, events / 50))
    elapsed = stats["last"] - started
    return {
        "events": events,
        "accepted_per_s": events / seconds,
        "delivered": stats["unique"],
        "deliveries_per_s": stats["unique"] / elapsed,
        "statuses": statuses,
    }


async def relay_throughput(http, relay_url, stats_url, reset_url, events, concurrency):
    await http.post(reset_url)
    started = time.time()
    await blast(
        relay_url + "/v1/events",
        "none",
        events,
        concurrency,
        body_of=lambda i: {"type": "bench.throughput", "data": {"i": i}},
    )
    stats = await _wait_count(http, stats_url, events, timeout=max(60, events / 50))
    return {"delivered": stats["unique"], "deliveries_per_s": stats["unique"] / (stats["last"] - started)}


async def steady_latency(http, daemon, token, stats_url, reset_url, rate, seconds, endpoints):
    await http.post(reset_url)
    headers = {"Authorization": f"Bearer {token}"}
    count = int(rate * seconds)
    start = time.monotonic()
    pending = []
    for i in range(count):
        delay = start + i / rate - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        pending.append(
            asyncio.ensure_future(
                http.post(
                    daemon.url + "/v1/events",
                    headers=headers,
                    json={"type": f"t{i % endpoints}.steady", "data": {"i": i}},
                )
            )
        )
    for resp in await asyncio.gather(*pending):
        resp.release()
    await _wait_count(http, stats_url, count, timeout=60)
    delays = [x for j in range(endpoints) for x in _first_attempt_delays(daemon.dir / "tierd.db", f"t{j}.steady")]
    return {"events": count, "rate": rate, "p50_ms": pct(delays, 50) * 1000, "p99_ms": pct(delays, 99) * 1000}


async def backlog(http, daemon, endpoint_ids, fresh_stats_url, stats_url, reset_url, size):
    """Stop the daemon, leave ``size`` due deliveries in the table, start it, drain."""
    daemon.stop()
    now = time.time()
    payload = json.dumps({"type": "bench.backlog", "timestamp": "", "data": {"filler": "x" * 200}})
    with sqlite3.connect(daemon.dir / "tierd.db") as conn:
        conn.executemany(
            "INSERT INTO webhook_deliveries(id, tenant_id, endpoint_id, event_id, event_type, payload, status,"
            " due_at, created_at) VALUES (?,?,?,?,?,?,'pending',?,?)",
            (
                (
                    f"msg_bl{i:08d}",
                    "bench",
                    endpoint_ids[i % len(endpoint_ids)],
                    f"evt_bl{i}",
                    "t0.backlog",
                    payload,
                    now + i * 1e-6,
                    now,
                )
                for i in range(size)
            ),
        )
    await http.post(reset_url)
    daemon.start()
    started = time.time()
    # A fresh event for another endpoint while the backlog drains: it must not wait behind it.
    await asyncio.sleep(0.5)
    token_headers = {"Authorization": "Bearer bench-admin-token", "Tierd-Tenant": "bench"}
    sent = time.time()
    async with http.post(
        daemon.url + "/v1/events", headers=token_headers, json={"type": "fresh.event", "data": {}}
    ) as resp:
        await resp.read()
    fresh = await _wait_count(http, fresh_stats_url, 1, timeout=30)
    fresh_wait = (fresh["last"] - sent) if fresh["last"] else float("nan")
    peak = 0.0
    deadline = time.monotonic() + max(120, size / 100)
    while True:
        peak = max(peak, rss_mb(daemon.proc.pid))
        stats = await _get(http, stats_url)
        if stats["unique"] >= size or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.2)
    peak = max(peak, rss_mb(daemon.proc.pid))
    return {
        "size": size,
        "drained": stats["unique"],
        "drain_per_s": stats["unique"] / (stats["last"] - started),
        "peak_rss_mb": peak,
        "fresh_event_ms": fresh_wait * 1000,
    }


async def stats_latency(http, daemon, endpoint_id, size, calls=30):
    """Stop the daemon, give one endpoint ``size`` deliveries with an attempt
    each over the last 24 h, start it, and time the stats read."""
    daemon.stop()
    now = time.time()
    started = time.monotonic()
    with sqlite3.connect(daemon.dir / "tierd.db") as conn:
        first = conn.execute("SELECT COALESCE(MAX(seq), 0) + 1 FROM webhook_deliveries").fetchone()[0]
        for chunk in range(0, size, 50_000):
            rows = range(chunk, min(size, chunk + 50_000))
            conn.executemany(
                "INSERT INTO webhook_deliveries(seq, id, tenant_id, endpoint_id, event_id, event_type, payload,"
                " status, attempts, created_at, finished_at) VALUES (?,?,?,?,?,?,'{}',?,1,?,?)",
                (
                    (
                        first + i,
                        f"msg_st{i:08d}",
                        "bench",
                        endpoint_id,
                        f"evt_st{i}",
                        "t0.stats",
                        "failed" if i % 20 == 0 else "succeeded",
                        now - 86400 + i * 86400 / size,
                        now - 86400 + i * 86400 / size,
                    )
                    for i in rows
                ),
            )
            conn.executemany(
                "INSERT INTO webhook_attempts(delivery_seq, tenant_id, endpoint_id, attempted_at, status_code,"
                " latency_ms, outcome) VALUES (?,?,?,?,?,?,?)",
                (
                    (
                        first + i,
                        "bench",
                        endpoint_id,
                        now - 86400 + i * 86400 / size + 0.01,
                        500 if i % 20 == 0 else 200,
                        5 + (i * 7919 % 1000) / 10,
                        "http_error" if i % 20 == 0 else "success",
                    )
                    for i in rows
                ),
            )
            conn.commit()
    written = time.monotonic() - started
    daemon.start()
    times, answer = [], None
    for _ in range(calls):
        t0 = time.perf_counter()
        answer = await _api(http, daemon, "GET", f"/v1/webhooks/{endpoint_id}/stats", None)
        times.append(time.perf_counter() - t0)
    return {
        "size": size,
        "write_s": written,
        "p50_ms": pct(times, 50) * 1000,
        "max_ms": max(times) * 1000,
        "answer": answer,
    }


async def main(args) -> None:
    receiver_port, fresh_port, relay_port = free_port(), free_port(), free_port()
    procs = [_spawn(_receiver, receiver_port), _spawn(_receiver, fresh_port)]
    receiver = f"http://127.0.0.1:{receiver_port}"
    fresh_receiver = f"http://127.0.0.1:{fresh_port}"
    procs.append(_spawn(_relay, relay_port, receiver + "/relay"))
    relay_url = f"http://127.0.0.1:{relay_port}"
    daemon = BenchDaemon(
        {
            "webhooks": {
                "allow_http": True,
                "allow_destinations": ["127.0.0.1/32"],
                "max_in_flight": args.max_in_flight,
                "endpoint_max_in_flight": args.endpoint_max_in_flight,
            }
        }
    ).start()
    try:
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=300)) as http:
            await _wait_up(http, receiver + "/stats")
            await _wait_up(http, fresh_receiver + "/stats")
            token = daemon.tenant_token("bench")
            # Several endpoints (as a real tenant base has): the per-endpoint cap
            # (endpoint_max_in_flight) is not what the figure measures.
            endpoints = [
                await _api(
                    http,
                    daemon,
                    "POST",
                    "/v1/webhooks",
                    {"url": f"{receiver}/hook{j}", "event_types": [f"t{j}.*"], "secret": SECRET},
                )
                for j in range(args.endpoints)
            ]
            await _api(
                http, daemon, "POST", "/v1/webhooks", {"url": fresh_receiver + "/fresh", "event_types": ["fresh.*"]}
            )
            if args.stats_only:
                st = await stats_latency(http, daemon, endpoints[0]["id"], args.stats)
                print(
                    f"webhooks stats: {st['size']} deliveries and attempts of one endpoint in 24 h "
                    f"(written in {st['write_s']:.1f} s): GET /stats p50 {st['p50_ms']:.1f} ms, "
                    f"max {st['max_ms']:.1f} ms; answer {json.dumps(st['answer']['attempts'])}"
                )
                return
            # One unmeasured round of each first: connections, caches and the
            # receiver warm up (the relay's first round is markedly slower).
            await relay_throughput(http, relay_url, receiver + "/stats", receiver + "/reset", 2000, args.concurrency)
            await throughput(
                http, daemon, token, receiver + "/stats", receiver + "/reset", 2000, args.concurrency, args.endpoints
            )
            # Alternate the two, --repeat rounds: the machine's load drifts
            # during a run, so each round's ratio compares neighbours; the
            # medians are reported.
            relays, tierds = [], []
            for _ in range(args.repeat):
                relays.append(
                    await relay_throughput(
                        http, relay_url, receiver + "/stats", receiver + "/reset", args.events, args.concurrency
                    )
                )
                tierds.append(
                    await throughput(
                        http,
                        daemon,
                        token,
                        receiver + "/stats",
                        receiver + "/reset",
                        args.events,
                        args.concurrency,
                        args.endpoints,
                    )
                )
            steady = await steady_latency(
                http, daemon, token, receiver + "/stats", receiver + "/reset", args.rate, args.seconds, args.endpoints
            )
            rss_run = rss_mb(daemon.proc.pid)
            await http.post(fresh_receiver + "/reset")
            bl = (
                await backlog(
                    http,
                    daemon,
                    [e["id"] for e in endpoints],
                    fresh_receiver + "/stats",
                    receiver + "/stats",
                    receiver + "/reset",
                    args.backlog,
                )
                if args.backlog
                else None
            )
    finally:
        daemon.stop()
        for proc in procs:
            proc.terminate()

    tierd_rates = [t["deliveries_per_s"] for t in tierds]
    relay_rates = [r["deliveries_per_s"] for r in relays]
    ratios = [t / r for t, r in zip(tierd_rates, relay_rates, strict=True)]
    print(
        f"webhooks bench ({args.events} events over {args.endpoints} endpoints, median of {args.repeat} rounds, "
        f"concurrency {args.concurrency}, "
        f"max_in_flight {args.max_in_flight}, endpoint_max_in_flight {args.endpoint_max_in_flight})"
    )
    print(
        f"  tierd end to end:   {median(tierd_rates):8.0f} deliveries/s "
        f"(rounds: {', '.join(f'{x:.0f}' for x in tierd_rates)}; every event delivered: "
        f"{all(t['delivered'] == t['events'] for t in tierds)}; intake "
        f"{median([t['accepted_per_s'] for t in tierds]):.0f} events/s; statuses {tierds[-1]['statuses']})"
    )
    print(
        f"  bare aiohttp relay: {median(relay_rates):8.0f} deliveries/s "
        f"(rounds: {', '.join(f'{x:.0f}' for x in relay_rates)}; nothing durable)"
    )
    print(
        f"  ratio tierd/relay:  {median(ratios):8.2f}  (median of the rounds' ratios: "
        f"{', '.join(f'{x:.2f}' for x in ratios)}; target >= 0.5)"
    )
    print(
        f"  at {steady['rate']:.0f} events/s for {args.seconds:g} s: event accepted -> first attempt "
        f"p50 {steady['p50_ms']:.1f} ms, p99 {steady['p99_ms']:.1f} ms  (target p99 < 100 ms)"
    )
    print(f"  peak RSS after the runs above: {rss_run:.0f} MB")
    if bl:
        print(
            f"  backlog of {bl['size']} due deliveries: drained {bl['drained']} at {bl['drain_per_s']:.0f}/s, "
            f"peak RSS {bl['peak_rss_mb']:.0f} MB (target < 200 MB); a fresh event for another endpoint "
            f"arrived after {bl['fresh_event_ms']:.0f} ms"
        )


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=10000, help="events for the throughput run")
    parser.add_argument("--concurrency", type=int, default=50, help="concurrent event posters")
    parser.add_argument("--rate", type=float, default=200, help="events/s of the steady latency run")
    parser.add_argument("--seconds", type=float, default=15, help="length of the steady latency run")
    parser.add_argument("--backlog", type=int, default=100_000, help="due deliveries of the backlog run (0: skip)")
    parser.add_argument("--max-in-flight", type=int, default=200)
    parser.add_argument("--endpoint-max-in-flight", type=int, default=10, help="the config default")
    parser.add_argument("--endpoints", type=int, default=10, help="endpoints the events are spread over")
    parser.add_argument("--repeat", type=int, default=5, help="rounds of both throughput runs (medians reported)")
    parser.add_argument("--quick", action="store_true", help="2000 events once, 5 s steady, 20k backlog")
    parser.add_argument("--stats", type=int, default=500_000, help="deliveries (one attempt each) for the stats read")
    parser.add_argument("--stats-only", action="store_true", help="only the stats read (skip the other runs)")
    args = parser.parse_args(argv)
    if args.quick:
        args.events, args.seconds, args.backlog, args.repeat = 2000, 5, 20_000, 1
    return args


if __name__ == "__main__":
    signal.signal(signal.SIGINT, signal.default_int_handler)
    asyncio.run(main(parse_args()))
