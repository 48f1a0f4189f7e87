"""Benchmark of issue #12 (section 8): reports over a large table, side by side in one run.

1. aggregate: the shipped ``webhook_deliveries`` report (per endpoint: counts,
   sums, a success rate, p50/p95 of the last attempt's latency) over every
   delivery of the tenant (1,000,000 by default), format json (a few rows):
   the time of ``POST /v1/reports/webhook_deliveries/runs`` with ``wait``
   until it answers with the run delivered (polling the run if it takes longer
   than the 60 s ``wait`` allows), against the floor: the same compiled SQL and
   parameters (from ``POST /v1/reports/webhook_deliveries/explain``) run
   directly through Python's ``sqlite3`` on the same file, read-only, all rows
   fetched. The SQL calls tierd's Python aggregates (``tierd_p50``,
   ``tierd_p95``): the floor registers the same ones by importing
   ``tierd.plugins.reports.builder.prepare_connection`` (what ``Report.prepare``
   calls). Rounds alternate report and floor; medians and their ratio (target:
   at most 1.5x).
2. delivery latency while a large report runs: a local aiohttp receiver (its
   own process) answers 200 and notes when each event's first attempt
   arrives (the bench numbers each event in its data); events are posted at
   ``--rate`` (200/s) for ``--seconds`` (20 s) to an endpoint of their own.
   Latency from the event accepted (its timestamp, stamped by the daemon when it
   takes the event) to the first attempt received, p50/p99/max; also from the
   bench's send of the POST. Once with no report running (the baseline), once
   while XLSX runs of one endpoint's deliveries (250,000 rows at full size) are
   made back to back (``reports.concurrency`` is 1: one more is always queued,
   so the next starts as the last ends); the output says how much of the
   window the runs covered. Target: p99 under 100 ms.
3. the daemon's peak RSS (VmHWM of /proc/PID/status) at start, before the
   XLSX runs, after them, and after the aggregate rounds.

How the data is made. One tenant ("bench"), four endpoints pointing at the
receiver. ``--api-events`` events go through the real path (POSTed, fanned out,
delivered to the receiver, attempts recorded). The bulk (the rest up to
``--rows``) is written by direct SQL on the stopped daemon's file (the output
says so): one row per delivery in ``webhook_deliveries`` (spread over the last
six days, 95% succeeded with one attempt, 5% failed after three attempts
answered 500) and its attempts in ``webhook_attempts``, inserted with the
schema's triggers in force, so the endpoints' delivery counters
(``webhook_delivery_counts``) and attempt minutes (``webhook_attempt_minutes``)
are kept as the daemon keeps them. The attempts carry no ``next_status``: the
delivery rows are written in their final state.

    .venv/bin/python bench/reports.py            # 1M deliveries, about 5-10 minutes
    .venv/bin/python bench/reports.py --quick    # 100k deliveries, 8 s phases: about 2 minutes

Figures, never timed asserts. To measure a committed tree while others edit
the working one: ``git archive HEAD | tar -x -C /tmp/t && PYTHONPATH=/tmp/t
.venv/bin/python bench/reports.py`` (the daemon inherits PYTHONPATH).
"""

from __future__ import annotations

import argparse
import ast
import asyncio
import datetime as dt
import json
import multiprocessing
import re
import signal
import sqlite3
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(1, str(Path(__file__).resolve().parent.parent))

import aiohttp  # noqa: E402
from _common import ADMIN, BenchDaemon, blast, free_port, median, pct, rss_mb  # noqa: E402

TENANT = "bench"
ENDPOINTS = 4
#: The report of issue 12's first figure, shipped by the webhooks plugin.
AGGREGATE = "webhook_deliveries"
#: A row report written in the bench's configuration: one endpoint's deliveries.
ROWS_REPORT = "bench_delivery_rows"
ROWS_DEFINITION = {
    "title": "Deliveries of one endpoint",
    "description": "Every delivery of an endpoint, one row each (the bench's large XLSX)",
    "source": "webhooks.deliveries",
    "parameters": {"endpoint": {"type": "text", "required": True, "description": "The endpoint's id"}},
    "filters": ["endpoint_id = :endpoint"],
    "columns": [
        "delivery_id",
        "created_at",
        "event_id",
        "event_type",
        "status",
        "attempts",
        "last_attempt_at",
        "last_status_code",
        "last_latency_ms",
        "finished_at",
    ],
    "order_by": ["created_at", "delivery_id"],
}
DAY = 86400.0


# --- the receiver (a process of its own) -------------------------------------------------


def _receiver(port: int) -> None:
    """Answers 200 to every POST. Counts distinct deliveries (webhook-id); for
    the "live.*" events, notes when the first attempt of each (data.n) arrived
    and the event's timestamp (when the daemon accepted it)."""
    from aiohttp import web

    ids: set[str] = set()
    arrivals: dict[int, tuple[float, str]] = {}

    async def receive(request):
        body = await request.read()
        now = time.time()
        ids.add(request.headers.get("webhook-id", ""))
        if request.path == "/live":
            event = json.loads(body)
            n = int(event["data"]["n"])
            if n not in arrivals:
                arrivals[n] = (now, event["timestamp"])
        return web.Response(text="ok")

    async def stats(request):
        return web.json_response({"unique": len(ids), "live": len(arrivals)})

    async def live(request):
        lo, hi = int(request.query["from"]), int(request.query["to"])
        return web.json_response({str(n): v for n, v in arrivals.items() if lo <= n < hi})

    app = web.Application()
    app.router.add_get("/stats", stats)
    app.router.add_get("/live", live)
    app.router.add_post("/{tail:.*}", receive)
    web.run_app(app, host="127.0.0.1", port=port, print=None, access_log=None)


# --- HTTP helpers ------------------------------------------------------------------------


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


async def api(http: aiohttp.ClientSession, daemon: BenchDaemon, method: str, path: str, body: Any = None) -> Any:
    headers = {"Authorization": f"Bearer {ADMIN}", "Tierd-Tenant": TENANT}
    async with http.request(method, daemon.url + path, json=body, headers=headers) as resp:
        data = await resp.json(content_type=None)
        if resp.status >= 300:
            raise SystemExit(f"{method} {path}: {resp.status} {data}")
        return data


async def get(http: aiohttp.ClientSession, url: str) -> Any:
    async with http.get(url) as resp:
        return await resp.json()


async def wait_up(http: aiohttp.ClientSession, url: str) -> None:
    for _ in range(300):
        try:
            await get(http, url)
            return
        except aiohttp.ClientError:
            await asyncio.sleep(0.05)
    raise SystemExit(f"{url} did not come up")


def parse_time(text: str | None) -> float | None:
    return None if text is None else dt.datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


# --- building the data -------------------------------------------------------------------


async def through_api(http, daemon: BenchDaemon, token: str, receiver: str, count: int) -> dict:
    """``count`` events for the bulk endpoints, posted and delivered through the real path."""
    before = (await get(http, receiver + "/stats"))["unique"]
    t0 = time.perf_counter()
    _, statuses, _ = await blast(
        daemon.url + "/v1/events",
        token,
        count,
        32,
        body_of=lambda i: {"type": f"bulk{i % ENDPOINTS}.paid", "data": {"invoice": f"INV-{i}", "amount": "12.50"}},
    )
    deadline = time.monotonic() + max(60, count / 50)
    while (await get(http, receiver + "/stats"))["unique"] - before < count and time.monotonic() < deadline:
        await asyncio.sleep(0.1)
    delivered = (await get(http, receiver + "/stats"))["unique"] - before
    return {"events": count, "delivered": delivered, "seconds": time.perf_counter() - t0, "statuses": statuses}


def bulk_insert(db_path: Path, endpoint_ids: list[str], count: int) -> dict:
    """Direct SQL on the stopped daemon's file: ``count`` deliveries (and their
    attempts) over the last six days, through the tables' triggers."""
    t0 = time.perf_counter()
    now = time.time()
    start = now - 6 * DAY
    span = 6 * DAY - 600  # the last ten minutes are left to the live phases
    attempts = 0
    with sqlite3.connect(db_path) as conn:
        conn.execute("PRAGMA journal_mode=WAL")
        first = conn.execute("SELECT COALESCE(MAX(seq), 0) + 1 FROM webhook_deliveries").fetchone()[0]
        chunk = 50_000
        for lo in range(0, count, chunk):
            deliveries, tries = [], []
            for i in range(lo, min(count, lo + chunk)):
                seq = first + i
                created = start + i * span / count
                endpoint = endpoint_ids[i % len(endpoint_ids)]
                event_type = f"bulk{i % len(endpoint_ids)}.paid"
                failed = i % 20 == 7
                latency = 5 + (i * 7919 % 1000) / 10
                payload = json.dumps(
                    {
                        "type": event_type,
                        "timestamp": dt.datetime.fromtimestamp(created, dt.UTC).isoformat(),
                        "data": {"invoice": f"INV-B{i}", "amount": "12.50"},
                    },
                    separators=(",", ":"),
                )
                times = [created + 0.01] if not failed else [created + 0.01, created + 30, created + 330]
                for t in times:
                    tries.append(
                        (
                            seq,
                            TENANT,
                            endpoint,
                            t,
                            500 if failed else 200,
                            latency,
                            "http_error" if failed else "success",
                            "HTTP 500" if failed else None,
                        )
                    )
                deliveries.append(
                    (
                        seq,
                        f"msg_bk{i:08d}",
                        TENANT,
                        endpoint,
                        f"evt_bk{i:08d}",
                        event_type,
                        payload,
                        "failed" if failed else "succeeded",
                        len(times),
                        created,
                        times[-1],
                        500 if failed else 200,
                        "HTTP 500" if failed else None,
                        times[-1],
                    )
                )
            conn.executemany(
                "INSERT INTO webhook_deliveries(seq, id, tenant_id, endpoint_id, event_id, event_type, payload,"
                " status, attempts, created_at, last_attempt_at, last_status_code, last_error, finished_at)"
                " VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                deliveries,
            )
            conn.executemany(
                "INSERT INTO webhook_attempts(delivery_seq, tenant_id, endpoint_id, attempted_at, status_code,"
                " latency_ms, outcome, error) VALUES (?,?,?,?,?,?,?,?)",
                tries,
            )
            conn.commit()
            attempts += len(tries)
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        counts = conn.execute(
            "SELECT SUM(pending), SUM(inflight), SUM(succeeded), SUM(failed) FROM webhook_delivery_counts"
        ).fetchone()
        total = conn.execute("SELECT COUNT(*) FROM webhook_deliveries").fetchone()[0]
    conn.close()
    return {
        "deliveries": count,
        "attempts": attempts,
        "seconds": time.perf_counter() - t0,
        "table_rows": total,
        "counters": dict(zip(("pending", "inflight", "succeeded", "failed"), counts, strict=True)),
        "file_mb": db_path.stat().st_size / 2**20,
    }


# --- 1. the aggregate report against the floor ----------------------------------------------


def parse_explain(text: str) -> tuple[str, dict]:
    """The SQL and the bound parameters of ``explain``'s text."""
    sql_lines, params, in_params = [], {}, False
    for line in text.splitlines():
        if line.startswith("-- parameters:"):
            in_params = True
            continue
        if in_params:
            m = re.match(r"--\s+:(\w+) = (.*)$", line)
            if m:
                params[m.group(1)] = ast.literal_eval(m.group(2))
            continue
        if line.startswith("-- report "):
            continue
        sql_lines.append(line)
    return "\n".join(sql_lines).rstrip().rstrip(";"), params


def floor_run(db_path: Path, sql: str, params: dict) -> tuple[float, int]:
    """The floor: the compiled SQL through sqlite3 on the same file (read-only
    connection, tierd's aggregates registered), every row fetched."""
    from tierd.plugins.reports.builder import prepare_connection

    t0 = time.perf_counter()
    conn = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True)
    try:
        prepare_connection(conn)
        rows = conn.execute(sql, params).fetchall()
    finally:
        conn.close()
    return time.perf_counter() - t0, len(rows)


async def run_report(http, daemon: BenchDaemon, name: str, params: dict, fmt: str, wait: str = "60s") -> dict:
    """POST a run with ``wait``; if it is not done by then, poll it until it is."""
    run = await api(http, daemon, "POST", f"/v1/reports/{name}/runs", {"params": params, "format": fmt, "wait": wait})
    while run["status"] in ("pending", "running"):
        await asyncio.sleep(0.05)
        run = await api(http, daemon, "GET", f"/v1/reports/runs/{run['id']}")
    if run["status"] != "delivered":
        raise SystemExit(f"run of {name} ended {run['status']}: {run['error']}")
    return run


async def aggregate(http, daemon: BenchDaemon, rounds: int) -> dict:
    today = dt.datetime.now(dt.UTC).date()
    params = {"from": (today - dt.timedelta(days=8)).isoformat(), "to": today.isoformat()}
    explained = await api(http, daemon, "POST", f"/v1/reports/{AGGREGATE}/explain", {"params": params})
    sql, bound = parse_explain(explained["explain"])
    functions = sorted(set(re.findall(r"\b(tierd_\w+)\(", sql)))
    db_path = daemon.dir / "tierd.db"
    # One unmeasured run of each: the file in the page cache for both.
    run = await run_report(http, daemon, AGGREGATE, params, "json")
    await asyncio.to_thread(floor_run, db_path, sql, bound)
    report_s, floor_s, ratios = [], [], []
    floor_rows = 0
    for r in range(rounds):
        t0 = time.perf_counter()
        run = await run_report(http, daemon, AGGREGATE, params, "json")
        report_s.append(time.perf_counter() - t0)
        seconds, floor_rows = await asyncio.to_thread(floor_run, db_path, sql, bound)
        floor_s.append(seconds)
        ratios.append(report_s[-1] / seconds)
        log(f"  round {r + 1}: report {report_s[-1]:.2f} s, floor {seconds:.2f} s")
    # What the report says it read: its JSON file, summed.
    async with http.get(
        daemon.url + run["download"], headers={"Authorization": f"Bearer {ADMIN}", "Tierd-Tenant": TENANT}
    ) as resp:
        content = await resp.read()
    return {
        "params": params,
        "functions": functions,
        "sql_chars": len(sql),
        "report_s": report_s,
        "floor_s": floor_s,
        "report_median_s": median(report_s),
        "floor_median_s": median(floor_s),
        "ratio": median(report_s) / median(floor_s),
        "ratio_of_rounds": median(ratios),
        "rows": run["rows"],
        "floor_rows": floor_rows,
        "deliveries_counted": deliveries_in(content),
        "file_bytes": len(content),
    }


def deliveries_in(content: bytes) -> int | None:
    """The sum of the ``deliveries`` column of the report's JSON file, whatever its shape."""
    try:
        doc = json.loads(content)
    except ValueError:
        return None
    total = 0

    def walk(node: Any) -> None:
        nonlocal total
        if isinstance(node, dict):
            if isinstance(node.get("deliveries"), int) and "endpoint_id" in node:
                total += node["deliveries"]
            else:
                for value in node.values():
                    walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(doc)
    return total or None


# --- 2. delivery latency, with and without a large report ------------------------------------


async def live_phase(http, daemon: BenchDaemon, token: str, receiver: str, rate: float, seconds: float, base: int):
    """Events at ``rate`` for ``seconds``, numbered from ``base``; latencies in ms."""
    headers = {"Authorization": f"Bearer {token}"}
    count = int(rate * seconds)
    sent: dict[int, float] = {}
    intake: list[float] = []
    errors = 0

    async def post(n: int) -> None:
        nonlocal errors
        sent[n] = time.time()
        t0 = time.perf_counter()
        try:
            async with http.post(
                daemon.url + "/v1/events", headers=headers, json={"type": "live.tick", "data": {"n": n}}
            ) as resp:
                await resp.read()
                if resp.status != 202:
                    errors += 1
        except aiohttp.ClientError:
            errors += 1
        intake.append(time.perf_counter() - t0)

    start = time.monotonic()
    window_start = time.time()
    tasks = []
    for i in range(count):
        delay = start + i / rate - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.ensure_future(post(base + i)))
    await asyncio.gather(*tasks)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        arrivals = await get(http, f"{receiver}/live?from={base}&to={base + count}")
        if len(arrivals) >= count:
            break
        await asyncio.sleep(0.1)
    accepted_ms, sent_ms = [], []
    for key, (arrived, stamp) in arrivals.items():
        accepted = parse_time(stamp)
        assert accepted is not None
        accepted_ms.append((arrived - accepted) * 1000)
        sent_ms.append((arrived - sent[int(key)]) * 1000)
    last = max((a for a, _ in arrivals.values()), default=time.time())
    return {
        "events": count,
        "received": len(arrivals),
        "errors": errors,
        "window": (window_start, last),
        "p50_ms": pct(accepted_ms, 50),
        "p99_ms": pct(accepted_ms, 99),
        "max_ms": max(accepted_ms, default=float("nan")),
        "sent_p50_ms": pct(sent_ms, 50),
        "sent_p99_ms": pct(sent_ms, 99),
        "intake_p99_ms": pct(intake, 99) * 1000,
    }


async def live_under_xlsx(http, daemon, token, receiver, rate, seconds, base, endpoint_id) -> dict:
    """The live phase while XLSX runs of one endpoint's deliveries are made back to back."""
    params = {"endpoint": endpoint_id}
    body = {"params": params, "format": "xlsx"}
    runs: list[str] = []
    for _ in range(2):
        runs.append((await api(http, daemon, "POST", f"/v1/reports/{ROWS_REPORT}/runs", body))["id"])
    # Posting starts once the first run is reading.
    while (await api(http, daemon, "GET", f"/v1/reports/runs/{runs[0]}"))["status"] == "pending":
        await asyncio.sleep(0.05)
    stop = asyncio.Event()

    async def keep_one_queued() -> None:
        while not stop.is_set():
            waiting = 0
            for run_id in runs:
                row = await api(http, daemon, "GET", f"/v1/reports/runs/{run_id}")
                waiting += row["status"] == "pending"
            if waiting == 0:
                runs.append((await api(http, daemon, "POST", f"/v1/reports/{ROWS_REPORT}/runs", body))["id"])
            await asyncio.sleep(0.25)

    keeper = asyncio.ensure_future(keep_one_queued())
    try:
        result = await live_phase(http, daemon, token, receiver, rate, seconds, base)
    finally:
        stop.set()
        await keeper
    # Every run made (the queued ones too): the RSS after counts them all.
    done = []
    for run_id in runs:
        while True:
            row = await api(http, daemon, "GET", f"/v1/reports/runs/{run_id}")
            if row["status"] not in ("pending", "running"):
                break
            await asyncio.sleep(0.2)
        done.append(row)
    failed = [r for r in done if r["status"] != "delivered"]
    if failed:
        raise SystemExit(f"XLSX runs failed: {[(r['id'], r['status'], r['error']) for r in failed]}")
    intervals = sorted((parse_time(r["started_at"]) or 0.0, parse_time(r["finished_at"]) or 0.0) for r in done)
    w0, w1 = result["window"]
    covered, cursor = 0.0, w0
    for a, b in intervals:
        a, b = max(a, cursor), min(b, w1)
        if b > a:
            covered += b - a
            cursor = b
    result["xlsx"] = {
        "runs": len(done),
        "rows": done[0]["rows"],
        "size_mb": done[0]["size"] / 2**20,
        "run_s": [b - a for a, b in intervals],
        "covered": covered / (w1 - w0),
        "first_start_before_window_s": w0 - intervals[0][0],
    }
    return result


# --- the run -------------------------------------------------------------------------------


async def run(args) -> dict:
    receiver_port = free_port()
    receiver_proc = multiprocessing.Process(target=_receiver, args=(receiver_port,), daemon=True)
    receiver_proc.start()
    receiver = f"http://127.0.0.1:{receiver_port}"
    daemon = BenchDaemon(
        {
            "webhooks": {"allow_http": True, "allow_destinations": ["127.0.0.1/32"]},
            "reports": {"definitions": {ROWS_REPORT: ROWS_DEFINITION}},
        }
    )
    result: dict[str, Any] = {"args": vars(args), "dir": str(daemon.dir)}
    t_start = time.perf_counter()
    try:
        daemon.start()
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=300)) as http:
            await wait_up(http, receiver + "/stats")
            token = daemon.tenant_token(TENANT)
            endpoint_ids = [
                (
                    await api(
                        http,
                        daemon,
                        "POST",
                        "/v1/webhooks",
                        {"url": f"{receiver}/bulk{j}", "event_types": [f"bulk{j}.*"]},
                    )
                )["id"]
                for j in range(ENDPOINTS)
            ]
            await api(http, daemon, "POST", "/v1/webhooks", {"url": f"{receiver}/live", "event_types": ["live.*"]})
            log(f"{args.api_events:,} events through the API ...")
            result["api"] = await through_api(http, daemon, token, receiver, args.api_events)
        daemon.stop()
        bulk = args.rows - args.api_events
        log(f"{bulk:,} deliveries by direct SQL on the stopped daemon's file ...")
        result["bulk"] = bulk_insert(daemon.dir / "tierd.db", endpoint_ids, bulk)
        daemon.start()
        pid = daemon.proc.pid
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=300)) as http:
            await asyncio.sleep(1)
            result["rss_start_mb"] = rss_mb(pid)
            log(f"delivery latency, no report: {args.rate:g} events/s for {args.seconds:g} s ...")
            count = int(args.rate * args.seconds)
            result["live_alone"] = await live_phase(http, daemon, token, receiver, args.rate, args.seconds, 0)
            result["rss_before_xlsx_mb"] = rss_mb(pid)
            log("delivery latency while XLSX runs are made ...")
            result["live_xlsx"] = await live_under_xlsx(
                http, daemon, token, receiver, args.rate, args.seconds, count, endpoint_ids[0]
            )
            result["rss_after_xlsx_mb"] = rss_mb(pid)
            log(f"aggregate report over {args.rows:,} deliveries, {args.rounds} rounds against the floor ...")
            result["aggregate"] = await aggregate(http, daemon, args.rounds)
            result["rss_after_aggregate_mb"] = rss_mb(pid)
    finally:
        daemon.stop()
        receiver_proc.terminate()
        receiver_proc.join(5)
    result["run_seconds"] = time.perf_counter() - t_start
    return result


def print_report(r: dict) -> None:
    a, bulk, api_ = r["aggregate"], r["bulk"], r["api"]
    live = r["live_alone"]["events"] + r["live_xlsx"]["events"]
    print(
        f"\nreports bench (issue #12): {r['args']['rows']:,} deliveries of one tenant built, {live:,} more from"
        f" the latency phases; the aggregate report counted {a['deliveries_counted'] or 0:,}"
    )
    print(
        f"data: {api_['events']:,} events through the API ({api_['delivered']:,} delivered to the receiver), "
        f"{bulk['deliveries']:,} deliveries and {bulk['attempts']:,} attempts by direct SQL on the stopped "
        f"daemon's file through the schema's triggers ({bulk['seconds']:.0f} s; counters now {bulk['counters']}; "
        f"file {bulk['file_mb']:.0f} MB)"
    )
    print(f"\n1. aggregate {AGGREGATE} (json, {a['rows']} rows), params {a['params']}, {len(a['report_s'])} rounds")
    print(
        f"   floor: the SQL of POST /v1/reports/{AGGREGATE}/explain through sqlite3 on the same file, read-only,"
        f" with tierd's aggregates registered (tierd.plugins.reports.builder.prepare_connection; it calls"
        f" {', '.join(a['functions']) or 'none'}), all rows fetched ({a['floor_rows']} rows)"
    )
    print(f"   report run (POST .../runs with wait, until delivered): median {a['report_median_s']:.2f} s")
    print(f"     rounds: {', '.join(f'{x:.2f}' for x in a['report_s'])}")
    print(f"   floor (sqlite3):                                      median {a['floor_median_s']:.2f} s")
    print(f"     rounds: {', '.join(f'{x:.2f}' for x in a['floor_s'])}")
    print(
        f"   ratio report/floor: {a['ratio']:.2f}x (median of the rounds' ratios {a['ratio_of_rounds']:.2f}x;"
        " target <= 1.5x)"
    )
    alone, loaded = r["live_alone"], r["live_xlsx"]
    x = loaded["xlsx"]
    print(
        f"\n2. event accepted (its timestamp) -> first attempt received, ms, {r['args']['rate']:g} events/s "
        f"for {r['args']['seconds']:g} s:"
    )
    print(f"   {'':34}{'events':>8}{'recv':>8}{'err':>5}{'p50':>8}{'p99':>8}{'max':>8}{'sent->recv p99':>16}")
    for label, s in (("no report (baseline)", alone), ("during XLSX runs", loaded)):
        print(
            f"   {label:34}{s['events']:>8}{s['received']:>8}{s['errors']:>5}{s['p50_ms']:>8.1f}{s['p99_ms']:>8.1f}"
            f"{s['max_ms']:>8.1f}{s['sent_p99_ms']:>16.1f}"
        )
    print(
        f"   ratio p99 during/baseline: {loaded['p99_ms'] / alone['p99_ms']:.2f}x (target: p99 under 100 ms);"
        f" intake POST p99 {alone['intake_p99_ms']:.1f} / {loaded['intake_p99_ms']:.1f} ms"
    )
    print(
        f"   XLSX: {x['runs']} runs of {ROWS_REPORT} ({x['rows']:,} rows, {x['size_mb']:.1f} MB each) back to back,"
        f" each {', '.join(f'{s:.1f}' for s in x['run_s'])} s; they covered {x['covered']:.0%} of the window"
        f" (the first started {x['first_start_before_window_s']:.2f} s before it)"
    )
    print("\n3. daemon peak RSS (VmHWM), MB:")
    print(
        f"   at start {r['rss_start_mb']:.0f}, before the XLSX runs {r['rss_before_xlsx_mb']:.0f}, after them "
        f"{r['rss_after_xlsx_mb']:.0f} (+{r['rss_after_xlsx_mb'] - r['rss_before_xlsx_mb']:.1f}), "
        f"after the aggregate rounds {r['rss_after_aggregate_mb']:.0f}"
    )
    print(f"\nrun time {r['run_seconds'] / 60:.1f} min")


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000, help="deliveries of the tenant")
    parser.add_argument("--api-events", type=int, default=5_000, help="of which through the API")
    parser.add_argument("--rounds", type=int, default=5, help="rounds of report and floor (median)")
    parser.add_argument("--rate", type=float, default=200, help="events/s of the latency phases")
    parser.add_argument("--seconds", type=float, default=20, help="length of each latency phase")
    parser.add_argument("--quick", action="store_true", help="smoke run: 100k deliveries, 3 rounds, 8 s phases")
    parser.add_argument("--json", action="store_true", help="the figures as JSON on stdout too")
    args = parser.parse_args(argv)
    if args.quick:
        args.rows, args.api_events, args.rounds, args.seconds = 100_000, 1_000, 3, 8
    return args


def main() -> None:
    args = parse_args()
    result = asyncio.run(run(args))
    print_report(result)
    if args.json:
        print(json.dumps(result, indent=1, default=str))


if __name__ == "__main__":
    signal.signal(signal.SIGINT, signal.default_int_handler)
    main()
