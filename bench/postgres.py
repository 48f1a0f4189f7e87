"""Benchmark: tierd on PostgreSQL against tierd on SQLite, and three nodes against one.

Three set-ups, each started fresh in every round (a new SQLite file or a new
PostgreSQL database), on one throw-away PostgreSQL server started by the
bench (``tierd.testing.PostgresServer``, made durable for the run: ``fsync``
and ``full_page_writes`` on; ``synchronous_commit`` off by default, which is
what SQLite's WAL with ``synchronous=NORMAL`` gives: a commit survives the
daemon's crash, the last moment of commits may not survive a power cut;
``--synchronous-commit on`` for PostgreSQL's strict default):

- ``sqlite``: one node on SQLite (the default storage);
- ``pg1``: one node on PostgreSQL;
- ``pg3``: three nodes on one PostgreSQL database, the client round-robins
  its requests over them, every node delivers.

Each set-up is measured three ways, in this order:

1. webhooks end to end: ``--events`` events spread over ``--endpoints``
   endpoints of a local aiohttp receiver (its own process) ->
   deliveries/s from the first event posted to the last delivery received;
   deliveries received twice are counted;
2. end-to-end latency at a steady ``--rate`` for ``--seconds``: from the
   client posting an event to the receiver getting its delivery, p50/p99;
3. durable intake: ``--count`` events (a type no endpoint takes) with
   ``--concurrency`` concurrent requests: events/s and request latency
   p50/p99 (202 only after the commit).

and, over the whole set-up, peak RSS of each daemon (VmHWM), peak PSS of the
PostgreSQL server (postmaster and backends together, shared buffers counted
once), and CPU time per delivery of the daemons and of PostgreSQL (the
figure that carries over to a machine with more cores).

The set-ups alternate in each round (forwards, then backwards); medians of
the rounds are printed, and ratios PG/SQLite and 3 nodes/1 node as the median
of the rounds' ratios (neighbours in time on a machine whose load drifts).
A figure, never a timed assert.

    .venv/bin/python bench/postgres.py                # 3 rounds, ~15 min on 2 busy cores
    .venv/bin/python bench/postgres.py --quick        # 1 short round, ~2 min
    .venv/bin/python bench/postgres.py --rounds 5 --json > figures.json
    .venv/bin/python bench/postgres.py --from-json figures.json   # its table again
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import shutil
import signal
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import aiohttp  # noqa: E402
from _common import (  # noqa: E402
    ADMIN,
    BenchDaemon,
    blast,
    cpu_seconds,
    free_port,
    median,
    pct,
    process_tree,
    pss_mb,
    rss_mb,
)

from tierd.testing import PostgresServer  # noqa: E402

SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
SETUPS = {"sqlite": ("SQLite, 1 node", 1), "pg1": ("PG, 1 node", 1), "pg3": ("PG, 3 nodes", 3)}


def log(*parts) -> None:
    print(*parts, file=sys.stderr, flush=True)


# --- the receiver ---------------------------------------------------------------------


def _receiver(port: int) -> None:
    """Answers 200 to every POST; keeps, per webhook-id, when it first arrived
    and how long after the client sent the event (the event's data.sent)."""
    from aiohttp import web

    state: dict = {}

    def reset_state():
        state.update(n=0, ids=set(), lat=[], first=None, last=None)

    reset_state()

    async def receive(request):
        body = await request.read()
        now = time.time()
        state["n"] += 1
        msg = request.headers.get("webhook-id")
        if msg not in state["ids"]:
            state["ids"].add(msg)
            state["first"] = state["first"] or now
            state["last"] = now
            try:
                sent = json.loads(body)["data"]["sent"]
                state["lat"].append(now - sent)
            except (ValueError, KeyError, TypeError):
                pass
        return web.Response(text="ok")

    async def stats(request):
        answer = {"n": state["n"], "unique": len(state["ids"]), "first": state["first"], "last": state["last"]}
        if request.query.get("lat"):
            answer["lat"] = state["lat"]
        return web.json_response(answer)

    async def reset(request):
        reset_state()
        return web.json_response({})

    app = web.Application(client_max_size=1 << 20)
    app.router.add_get("/stats", stats)
    app.router.add_post("/reset", reset)
    app.router.add_post("/{tail:.*}", receive)
    web.run_app(app, host="127.0.0.1", port=port, print=None, access_log=None)


class Receiver:
    def __init__(self) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc = multiprocessing.Process(target=_receiver, args=(self.port,), daemon=True)
        self.proc.start()

    async def stats(self, http, lat: bool = False) -> dict:
        async with http.get(self.url + "/stats" + ("?lat=1" if lat else "")) as resp:
            return await resp.json()

    async def reset(self, http) -> None:
        async with http.post(self.url + "/reset") as resp:
            await resp.read()

    async def wait_up(self, http) -> None:
        for _ in range(300):
            try:
                await self.stats(http)
                return
            except aiohttp.ClientError:
                await asyncio.sleep(0.05)
        raise SystemExit("the receiver did not come up")

    async def wait_unique(self, http, count: int, timeout: float) -> dict:
        deadline = time.monotonic() + timeout
        while True:
            stats = await self.stats(http)
            if stats["unique"] >= count or time.monotonic() > deadline:
                return stats
            await asyncio.sleep(0.02)


# --- PostgreSQL ---------------------------------------------------------------------------


class BenchPostgres:
    """The tests' throw-away server, made durable for the figures (the tests
    run it with fsync off) and with PostgreSQL's default shared_buffers."""

    def __init__(self, synchronous_commit: str) -> None:
        self.server = PostgresServer().start()
        try:
            for key, value in {
                "fsync": "on",
                "full_page_writes": "on",
                "synchronous_commit": synchronous_commit,
                "shared_buffers": "128MB",
                "max_connections": "200",
            }.items():
                # One statement per call: ALTER SYSTEM refuses a transaction block.
                self.server.psql(f"ALTER SYSTEM SET {key} = '{value}'")
            data = self.server.dir / "data"
            self.server._run(
                "pg_ctl", "restart", "-w", "-t", "60", "-m", "fast", "-D", str(data),
                "-l", str(self.server.dir / "server.log"), "-o", f"-p {self.server.port}",
            )  # fmt: skip
            self.settings = {
                key: self.server.psql(f"SHOW {key}").strip()
                for key in ("server_version", "fsync", "full_page_writes", "synchronous_commit", "shared_buffers")
            }
        except BaseException:
            self.server.stop()
            raise
        self._databases = 0

    @property
    def pid(self) -> int:
        return int((self.server.dir / "data" / "postmaster.pid").read_text().split()[0])

    def cpu(self) -> float:
        """CPU seconds of the server so far: the postmaster, its finished
        children (waited for) and its live backends."""
        return cpu_seconds(self.pid, children=True) + sum(cpu_seconds(p) for p in process_tree(self.pid)[1:])

    def pss(self) -> float:
        return pss_mb(process_tree(self.pid))

    def database(self) -> tuple[str, str]:
        self._databases += 1
        name = f"bench{self._databases}"
        return name, self.server.create_database(name)

    def drop(self, name: str) -> None:
        self.server.psql(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")

    def stop(self) -> None:
        self.server.stop()


class Sampler(threading.Thread):
    """Peak of a reading taken every 0.2 s (the PostgreSQL server's PSS)."""

    def __init__(self, read) -> None:
        super().__init__(daemon=True)
        self.read, self.peak, self.done = read, 0.0, threading.Event()

    def run(self) -> None:
        while not self.done.wait(0.2):
            try:
                self.peak = max(self.peak, self.read())
            except (OSError, ValueError):
                pass

    def finish(self) -> float:
        self.done.set()
        self.join()
        try:
            self.peak = max(self.peak, self.read())
        except (OSError, ValueError):
            pass
        return self.peak


# --- one set-up ---------------------------------------------------------------------------


async def _api(http, daemon, method, path, body, tenant="bench"):
    headers = {"Authorization": f"Bearer {ADMIN}", "Tierd-Tenant": tenant}
    async with http.request(method, daemon.url + path, json=body, headers=headers) as resp:
        data = await resp.json()
        if resp.status >= 300:
            raise SystemExit(f"{method} {path}: {resp.status} {data}")
        return data


def _cpu(daemons, pg) -> tuple[float, float]:
    return sum(cpu_seconds(d.proc.pid) for d in daemons), (pg.cpu() if pg else 0.0)


async def _deliver(http, urls, token, receiver, count, concurrency, endpoints, tag):
    """``count`` events to the nodes (round-robin), wait for every delivery."""
    await receiver.reset(http)
    started = time.time()
    seconds, statuses, _ = await blast(
        [u + "/v1/events" for u in urls],
        token,
        count,
        concurrency,
        body_of=lambda i: {"type": f"t{i % endpoints}.{tag}", "data": {"i": i, "sent": time.time()}},
    )
    stats = await receiver.wait_unique(http, count, timeout=max(120, count / 20))
    # Late duplicates (a delivery sent twice) arrive after the last first one.
    await asyncio.sleep(0.5)
    stats = await receiver.stats(http)
    return started, stats, statuses, seconds


async def _steady(http, urls, token, receiver, rate, seconds, endpoints):
    await receiver.reset(http)
    headers = {"Authorization": f"Bearer {token}"}
    count = int(rate * seconds)
    start = time.monotonic()
    pending = []
    for i in range(count):
        delay = start + i / rate - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        body = {"type": f"t{i % endpoints}.steady", "data": {"i": i, "sent": time.time()}}
        pending.append(asyncio.ensure_future(http.post(urls[i % len(urls)] + "/v1/events", headers=headers, json=body)))
    for resp in await asyncio.gather(*pending):
        resp.release()
    last_posted = time.time()
    stats = await receiver.wait_unique(http, count, timeout=120)
    lat = (await receiver.stats(http, lat=True))["lat"]
    return {
        "events": count,
        "delivered": stats["unique"],
        "p50_ms": pct(lat, 50) * 1000,
        "p99_ms": pct(lat, 99) * 1000,
        # Kept up with the rate: the last delivery came soon after the last
        # event (otherwise the latencies measure a queue, not the path).
        "behind_s": (stats["last"] or last_posted) - last_posted,
    }


async def run_setup(kind: str, args, pg: BenchPostgres | None, receiver: Receiver, http) -> dict:
    nodes = SETUPS[kind][1]
    database, url = pg.database() if pg else (None, None)
    config = {
        "webhooks": {
            "allow_http": True,
            "allow_destinations": ["127.0.0.1/32"],
            "max_in_flight": args.max_in_flight,
            "endpoint_max_in_flight": args.endpoint_max_in_flight,
        }
    }
    if url:
        config["storage"] = {"url": url}
    daemons = [BenchDaemon(config) for _ in range(nodes)]
    pss = Sampler(pg.pss) if pg else None
    try:
        # The first node applies the migrations; the others find them done.
        for daemon in daemons:
            daemon.start()
        if pss:
            pss.start()
        urls = [d.url for d in daemons]
        token = daemons[0].tenant_token("bench")
        for j in range(args.endpoints):
            await _api(
                http,
                daemons[0],
                "POST",
                "/v1/webhooks",
                {"url": f"{receiver.url}/hook{j}", "event_types": [f"t{j}.*"], "secret": SECRET},
            )
        # Unmeasured: connections, caches, the receiver and PostgreSQL's plans warm up.
        await _deliver(http, urls, token, receiver, args.warmup, args.concurrency, args.endpoints, "warmup")

        cpu0 = _cpu(daemons, pg)
        started, stats, statuses, seconds = await _deliver(
            http, urls, token, receiver, args.events, args.concurrency, args.endpoints, "throughput"
        )
        cpu1 = _cpu(daemons, pg)
        webhooks = {
            "events": args.events,
            "delivered": stats["unique"],
            "duplicates": stats["n"] - stats["unique"],
            "deliveries_per_s": stats["unique"] / (stats["last"] - started),
            "accepted_per_s": args.events / seconds,
            "statuses": statuses,
            "cpu_ms_tierd": (cpu1[0] - cpu0[0]) * 1000 / max(1, stats["unique"]),
            "cpu_ms_postgres": (cpu1[1] - cpu0[1]) * 1000 / max(1, stats["unique"]) if pg else None,
        }
        steady = await _steady(http, urls, token, receiver, args.rate, args.seconds, args.endpoints)

        cpu0 = _cpu(daemons, pg)
        seconds, statuses, lat = await blast(
            [u + "/v1/events" for u in urls],
            token,
            args.count,
            args.concurrency,
            body_of=lambda i: {"type": "bench.intake", "data": {"i": i}},
        )
        cpu1 = _cpu(daemons, pg)
        intake = {
            "events": args.count,
            "accepted": statuses.get(202, 0),
            "statuses": statuses,
            "events_per_s": args.count / seconds,
            "p50_ms": pct(lat, 50) * 1000,
            "p99_ms": pct(lat, 99) * 1000,
            "cpu_ms_tierd": (cpu1[0] - cpu0[0]) * 1000 / args.count,
            "cpu_ms_postgres": (cpu1[1] - cpu0[1]) * 1000 / args.count if pg else None,
        }
        rss = [rss_mb(d.proc.pid) for d in daemons]
    finally:
        for daemon in daemons:
            daemon.stop()
        pg_pss = pss.finish() if pss else None
        for daemon in daemons:
            shutil.rmtree(daemon.dir, ignore_errors=True)
        if pg and database:
            pg.drop(database)
    return {
        "setup": kind,
        "nodes": nodes,
        "webhooks": webhooks,
        "steady": steady,
        "intake": intake,
        "peak_rss_mb": rss,
        "postgres_peak_pss_mb": pg_pss,
    }


# --- figures ------------------------------------------------------------------------------

#: (label, how to read it from a set-up's result, format, higher is better)
ROWS = [
    ("intake, events/s", lambda r: r["intake"]["events_per_s"], "{:,.0f}", True),
    ("intake, request p50 ms", lambda r: r["intake"]["p50_ms"], "{:.1f}", False),
    ("intake, request p99 ms", lambda r: r["intake"]["p99_ms"], "{:.1f}", False),
    ("intake, CPU ms/event tierd", lambda r: r["intake"]["cpu_ms_tierd"], "{:.2f}", False),
    ("intake, CPU ms/event postgres", lambda r: r["intake"]["cpu_ms_postgres"], "{:.2f}", False),
    ("webhooks, deliveries/s", lambda r: r["webhooks"]["deliveries_per_s"], "{:,.0f}", True),
    ("webhooks, CPU ms/delivery tierd", lambda r: r["webhooks"]["cpu_ms_tierd"], "{:.2f}", False),
    ("webhooks, CPU ms/delivery postgres", lambda r: r["webhooks"]["cpu_ms_postgres"], "{:.2f}", False),
    ("end to end p50 ms (steady rate)", lambda r: r["steady"]["p50_ms"], "{:.1f}", False),
    ("end to end p99 ms (steady rate)", lambda r: r["steady"]["p99_ms"], "{:.1f}", False),
    ("peak RSS MB per node (max)", lambda r: max(r["peak_rss_mb"]), "{:.0f}", False),
    ("peak PSS MB postgres server", lambda r: r["postgres_peak_pss_mb"], "{:.0f}", False),
]


def summarise(rounds: list[dict[str, dict]], setups: list[str]) -> dict:
    medians = {
        kind: {
            label: median([read(r[kind]) for r in rounds])
            for label, read, _, _ in ROWS
            if read(rounds[0][kind]) is not None
        }
        for kind in setups
    }
    ratios = {}
    for name, (num, den) in {"pg1/sqlite": ("pg1", "sqlite"), "pg3/pg1": ("pg3", "pg1")}.items():
        if num in setups and den in setups:
            ratios[name] = {
                label: median([read(r[num]) / read(r[den]) for r in rounds])
                for label, read, _, _ in ROWS
                if read(rounds[0][den]) not in (None, 0)
            }
    checks = {
        kind: {
            "every_event_accepted": all(r[kind]["intake"]["accepted"] == r[kind]["intake"]["events"] for r in rounds),
            "every_delivery_received": all(
                r[kind]["webhooks"]["delivered"] == r[kind]["webhooks"]["events"]
                and r[kind]["steady"]["delivered"] == r[kind]["steady"]["events"]
                for r in rounds
            ),
            "deliveries_received_twice": sum(r[kind]["webhooks"]["duplicates"] for r in rounds),
            "kept_up_with_the_steady_rate": all(r[kind]["steady"]["behind_s"] < 1.0 for r in rounds),
        }
        for kind in setups
    }
    return {"medians": medians, "ratios": ratios, "checks": checks}


def table(summary: dict, setups: list[str]) -> str:
    medians, ratios = summary["medians"], summary["ratios"]
    columns = [SETUPS[k][0] for k in setups] + [r.replace("pg1", "PG").replace("sqlite", "SQLite") for r in ratios]
    columns = [c.replace("pg3/PG", "3 nodes/1") for c in columns]
    width = max(len(label) for label, *_ in ROWS)
    lines = [" " * width + "".join(f"{c:>16}" for c in columns)]
    for label, _, fmt, _ in ROWS:
        cells = [fmt.format(medians[k][label]) if label in medians[k] else "-" for k in setups]
        cells += [f"{ratios[r][label]:.2f}" if label in ratios[r] else "-" for r in ratios]
        lines.append(f"{label:<{width}}" + "".join(f"{c:>16}" for c in cells))
    return "\n".join(lines)


def markdown(summary: dict, setups: list[str]) -> str:
    """The table of :func:`table` in Markdown (for the README)."""
    medians, ratios = summary["medians"], summary["ratios"]
    names = {"pg1/sqlite": "PG / SQLite", "pg3/pg1": "3 nodes / 1"}
    head = ["median of the rounds"] + [SETUPS[k][0] for k in setups] + [names.get(r, r) for r in ratios]
    lines = ["| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]
    for label, _, fmt, _ in ROWS:
        cells = [fmt.format(medians[k][label]) if label in medians[k] else "-" for k in setups]
        cells += [f"{ratios[r][label]:.2f}" if label in ratios[r] else "-" for r in ratios]
        lines.append("| " + " | ".join([label] + cells) + " |")
    return "\n".join(lines)


def note(args) -> str:
    cores = os.cpu_count()
    return (
        f"This machine has {cores} cores. Three nodes, PostgreSQL, the receiver and the client all share them,\n"
        "so three nodes cannot add CPU here: the 3-nodes/1 column shows what coordinating costs (the\n"
        "event log's advisory lock, the claims, LISTEN/NOTIFY wake-ups, three connection pools), not\n"
        "scale-out (where one node waits on locks rather than computing, three overlap their waits and\n"
        "may do more). What carries over to bigger machines is the CPU per delivery\n"
        "(tierd's and PostgreSQL's): nodes on machines of their own add tierd's share of it, until\n"
        "PostgreSQL's share (and the event log's one-writer-at-a-time lock) is the limit."
    )


async def main(args) -> dict:
    setups = args.setups
    receiver = Receiver()
    pg = BenchPostgres(args.synchronous_commit) if any(k != "sqlite" for k in setups) else None
    rounds: list[dict[str, dict]] = []
    try:
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=400)) as http:
            await receiver.wait_up(http)
            for n in range(args.rounds):
                order = setups if n % 2 == 0 else setups[::-1]
                results = {}
                for kind in order:
                    r = await run_setup(kind, args, pg if kind != "sqlite" else None, receiver, http)
                    results[kind] = r
                    log(
                        f"round {n + 1} {SETUPS[kind][0]:>15}: intake {r['intake']['events_per_s']:7,.0f} ev/s "
                        f"p99 {r['intake']['p99_ms']:6.1f} ms | webhooks {r['webhooks']['deliveries_per_s']:6,.0f}/s "
                        f"(twice: {r['webhooks']['duplicates']}) | end to end p50 {r['steady']['p50_ms']:5.1f} "
                        f"p99 {r['steady']['p99_ms']:6.1f} ms | RSS {max(r['peak_rss_mb']):.0f} MB"
                        + (f" | postgres PSS {r['postgres_peak_pss_mb']:.0f} MB" if r["postgres_peak_pss_mb"] else "")
                    )
                rounds.append(results)
    finally:
        receiver.proc.terminate()
        if pg:
            pg.stop()
    summary = summarise(rounds, setups)
    return {
        "args": vars(args),
        "cores": os.cpu_count(),
        "postgres": pg.settings if pg else None,
        "rounds": rounds,
        **summary,
    }


def report(result: dict, args) -> str:
    pg = result["postgres"]
    head = (
        f"tierd on PostgreSQL vs SQLite (bench/postgres.py): median of {args.rounds} round(s); "
        f"webhooks: {args.events} events over {args.endpoints} endpoints, concurrency {args.concurrency}; "
        f"steady: {args.rate:g} events/s for {args.seconds:g} s; intake: {args.count} events, "
        f"concurrency {args.concurrency}"
    )
    if pg:
        head += (
            f"\nPostgreSQL {pg['server_version'].split()[0]} on this machine: fsync {pg['fsync']}, "
            f"synchronous_commit {pg['synchronous_commit']}, shared_buffers {pg['shared_buffers']}"
        )
    checks = "\n".join(
        f"{SETUPS[k][0]}: every event accepted {c['every_event_accepted']}, every delivery received "
        f"{c['every_delivery_received']}, received twice {c['deliveries_received_twice']}, kept up with "
        f"{args.rate:g}/s (last delivery < 1 s after the last event) {c.get('kept_up_with_the_steady_rate')}"
        for k, c in result["checks"].items()
    )
    ratio_note = "ratios: rates higher is better (issue target PG/SQLite >= 0.7 for intake and webhooks); times lower"
    return "\n\n".join([head, table(result, args.setups), ratio_note, checks, note(args)])


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3, help="rounds of every set-up (medians reported)")
    parser.add_argument("--count", type=int, default=20000, help="events of the intake run")
    parser.add_argument("--events", type=int, default=6000, help="events of the webhooks throughput run")
    parser.add_argument("--warmup", type=int, default=1000, help="unmeasured events delivered first")
    parser.add_argument("--concurrency", type=int, default=32, help="concurrent requests of the client")
    parser.add_argument("--rate", type=float, default=100, help="events/s of the steady latency run")
    parser.add_argument("--seconds", type=float, default=10, help="length of the steady latency run")
    parser.add_argument("--endpoints", type=int, default=10, help="endpoints the events are spread over")
    parser.add_argument("--max-in-flight", type=int, default=200)
    parser.add_argument("--endpoint-max-in-flight", type=int, default=10, help="the config default")
    parser.add_argument(
        "--synchronous-commit", default="off", choices=["off", "on"], help="PostgreSQL's (off: as SQLite's NORMAL)"
    )
    parser.add_argument(
        "--setups",
        default="sqlite,pg1,pg3",
        type=lambda s: [k for k in s.split(",") if k],
        help="comma-separated: sqlite, pg1, pg3",
    )
    parser.add_argument("--quick", action="store_true", help="one short round (3000 intake, 2000 webhooks, 5 s)")
    parser.add_argument(
        "--json", action="store_true", help="print the figures as JSON (every round); the table goes to stderr"
    )
    parser.add_argument("--from-json", metavar="FILE", help="print the table of figures saved with --json (no run)")
    parser.add_argument("--markdown", action="store_true", help="with --from-json: the table in Markdown")
    args = parser.parse_args(argv)
    if unknown := [k for k in args.setups if k not in SETUPS]:
        parser.error(f"unknown set-up(s): {', '.join(unknown)}")
    if args.quick:
        args.count, args.events, args.warmup, args.seconds, args.rounds = 3000, 2000, 300, 5, 1
    return args


if __name__ == "__main__":
    signal.signal(signal.SIGINT, signal.default_int_handler)
    arguments = parse_args()
    if "pg1" in arguments.setups or "pg3" in arguments.setups:
        if not PostgresServer.available():
            raise SystemExit(PostgresServer.MISSING)
    if arguments.from_json:
        figures = json.loads(Path(arguments.from_json).read_text())
        arguments.__dict__.update(
            {k: v for k, v in figures["args"].items() if k not in ("from_json", "json", "markdown")}
        )
        print(markdown(figures, arguments.setups) if arguments.markdown else report(figures, arguments))
        raise SystemExit(0)
    figures = asyncio.run(main(arguments))
    if arguments.json:
        print(json.dumps(figures, indent=2))
        log(report(figures, arguments))  # the table too, on stderr
    else:
        print(report(figures, arguments))
