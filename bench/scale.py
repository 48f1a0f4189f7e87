"""Benchmark of issue #16: cost that stays flat as the data grows.

One tenant ("acme") grows through three stages (about 15k, 250k and 1M events
by default; ``--scale`` shrinks them), a second one ("globex") has a little
data (one event in 200) mixed in. At each stage, median of several runs, in ms:

- the first page and a middle page of every cursor-paged list:
  ``GET /v1/events?limit=50`` (all, ``type=webhook.endpoint.*``, an exact
  type, and globex's), the deliveries of one endpoint
  (``GET /v1/webhooks/{id}/deliveries``, all, ``status=succeeded``,
  ``status=failed`` which matches nothing) and the notification history
  (``GET /v1/notifications``, a route sends the "vip" customer events to the
  log channel); the middle page's cursor is found by following next_cursor
  with ``limit=500`` (the time of that walk is printed too);
- ``GET /v1/webhooks/{id}/stats``;
- the daemon's peak RSS (VmHWM).

The same lists are measured once more after the prune (column "after
prune"; its middle page is a quarter of the rows made, about the middle of
what is left).

How the data is made. Everything that can go through the real path does:
events are POSTed to ``/v1/events`` by concurrent clients, the deliveries
(one endpoint subscribed to ``invoice.*``, half the events, so 500k at 1M) go
out through the dispatcher to a local aiohttp receiver that answers 200, the
``webhook.endpoint.*`` audit trail is made by ``PUT /v1/webhooks/{id}``
every 500 events, notifications by the notifications module. What the API
cannot make is done by direct SQL on the stopped daemon's SQLite file (the
output says so): the API stamps every row "now", so to put half of the data
past retention (30 days for events and for webhooks, the defaults; webhooks
refuses a retention under 1 h) the older half of events, deliveries and
attempts is aged by 40 days with UPDATEs.

Then, at the last stage, intake latency (p50/p99/max of ``POST /v1/events``
at a steady ``--rate``) is measured three times on the same database:
without reads (the baseline), during heavy reads (a loop polling the
endpoint's stats, a report-sized read paging through the whole event log with
``limit=500``, and the retention prune of half the data running), and after
the prune without reads. The ratio loaded/baseline is printed.

The retention jobs run hourly; the bench runs them now as an operator does,
with ``POST /v1/admin/jobs/{id}/run`` (``tierd jobs run ID``). To time them,
the daemon is started through a small launcher (``python -c`` LAUNCHER below,
no change to tierd) that wraps ``tierd.core.daemon.apply_jobs`` and writes
when each retention job started and ended. If a change in tierd makes that
impossible, the prune is reported as not timed.

Disk: file size, page_count and freelist_count (and auto_vacuum) before and
after the prune, and after ``tierd db compact`` when this tree has it.

    .venv/bin/python bench/scale.py               # full size: 15k, 250k, 1M events
    .venv/bin/python bench/scale.py --scale 0.1   # 1.5k, 25k, 100k
    .venv/bin/python bench/scale.py --quick       # smoke run, about 2 minutes
    .venv/bin/python bench/scale.py --json        # the figures as JSON on stdout, the table on stderr

To measure a committed tree while others edit the working one, run it on a
copy: ``git archive HEAD | tar -x -C /tmp/t && PYTHONPATH=/tmp/t .venv/bin/python bench/scale.py``
(the daemon subprocesses import tierd from there too).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import multiprocessing
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any, BinaryIO

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import aiohttp  # noqa: E402
import yaml  # noqa: E402
from _common import free_port, median, pct, rss_mb, third_party_plugins  # noqa: E402

ADMIN = "bench-admin-token"
DAY = 86400.0
#: The older half of the data is aged by this much: past the default retentions (30 days).
AGE_BY = 40 * DAY
#: One webhook.endpoint.updated event (a PUT) every this many acme events.
AUDIT_EVERY = 500
#: One globex event every this many acme events.
GLOBEX_EVERY = 200
#: One "vip" customer event (a notification) every this many acme events.
VIP_EVERY = 500
#: Width of the tables' first column.
W = 50
PRUNE_JOBS = ("core.prune_events", "webhooks.retention", "notifications.retention")

# The daemon, started as `tierd run` is, with one addition for the prune (see
# the module docstring): a timing record of each retention job's runs in a
# JSON-lines file.
LAUNCHER = """
import asyncio, dataclasses, json, sys, time
config_path, job_log, prune_ids = sys.argv[1], sys.argv[2], sys.argv[3].split(",")
state = {}

def note(entry):
    try:
        with open(job_log, "a") as f:
            f.write(json.dumps(entry) + "\\n")
    except OSError:
        pass  # a record lost must not fail the job it times

def timed(job):
    async def run():
        start = time.time()
        try:
            result = await job.func()
        except BaseException as exc:
            note({"job": job.id, "start": start, "end": time.time(), "error": repr(exc)})
            raise
        note({"job": job.id, "start": start, "end": time.time(), "result": result})
        return result
    return run

def apply_jobs(scheduler, jobs):
    jobs = [dataclasses.replace(j, func=timed(j)) if j.id in prune_ids else j for j in jobs]
    original(scheduler, jobs)
    state.update(scheduler=scheduler, loop=asyncio.get_running_loop())
    state["ids"] = [j.id for j in jobs if j.id in prune_ids]
    note({"jobs": state["ids"]})

try:
    from tierd.core import daemon as _daemon
    original = _daemon.apply_jobs
    _daemon.apply_jobs = apply_jobs
    note({"patched": True})
except (ImportError, AttributeError) as exc:
    note({"patched": False, "why": repr(exc)})
sys.argv = ["tierd", "--config", config_path, "run"]
from tierd.core.cli import main
main()
"""


# --- the daemon and the receiver ---------------------------------------------------------


class Daemon:
    """``tierd run`` (through LAUNCHER) on a config and database in ``workdir``."""

    def __init__(self, workdir: Path):
        self.dir = workdir
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.db_path = workdir / "tierd.db"
        self.config_path = workdir / "tierd.yaml"
        self.job_log = workdir / "jobs.jsonl"
        self.config = {
            "server": {"listen": f"127.0.0.1:{self.port}", "admin_token": ADMIN},
            "storage": {"path": str(self.db_path)},
            "logging": {"level": "WARNING"},
            # tierd's own modules only (as the other benches).
            "plugins": {"disabled": third_party_plugins()},
            "webhooks": {"allow_http": True, "allow_destinations": ["127.0.0.1/32"]},
            "notifications": {
                "channels": {"journal": {"type": "log"}},
                "operator_alerts": "journal",
                "routes": [
                    {
                        "name": "vip-customers",
                        "match": {"type": "customer.updated", "data": {"vip": True}},
                        "channels": ["journal"],
                    }
                ],
            },
        }
        self.config_path.write_text(yaml.safe_dump(self.config, sort_keys=False))
        self.proc: subprocess.Popen | None = None
        self._log: BinaryIO | None = None

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def start(self, timeout: float = 300) -> Daemon:
        self.job_log.unlink(missing_ok=True)
        self._log = open(self.dir / "daemon.log", "ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-c", LAUNCHER, str(self.config_path), str(self.job_log), ",".join(PRUNE_JOBS)],
            cwd=self.dir,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise SystemExit(f"daemon exited with {self.proc.returncode}:\n{self.logs()}")
            try:
                with urllib.request.urlopen(self.url + "/readyz", timeout=2):
                    return self
            except (OSError, urllib.error.HTTPError):
                time.sleep(0.1)
        raise SystemExit(f"daemon not ready after {timeout:.0f}s:\n{self.logs()}")

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(120)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        if self._log:
            self._log.close()
            self._log = None

    def logs(self) -> str:
        path = self.dir / "daemon.log"
        return path.read_text(errors="replace")[-5000:] if path.exists() else ""

    def jobs(self) -> list[dict]:
        if not self.job_log.exists():
            return []
        return [json.loads(line) for line in self.job_log.read_text().splitlines() if line.strip()]

    def can_prune_now(self) -> bool:
        entries = self.jobs()
        return any(e.get("patched") for e in entries) and any(e.get("jobs") for e in entries)

    def prune_now(self) -> bool:
        """Run the retention jobs now through the admin API; False if they cannot be timed."""
        if not self.can_prune_now():
            return False
        for job_id in PRUNE_JOBS:
            request = urllib.request.Request(
                f"{self.url}/v1/admin/jobs/{job_id}/run", method="POST", headers={"Authorization": f"Bearer {ADMIN}"}
            )
            with urllib.request.urlopen(request, timeout=10):
                pass
        return True

    def peak_rss_mb(self) -> float:
        return rss_mb(self.pid) if self.proc and self.proc.poll() is None else float("nan")

    def cli(self, *args: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "-m", "tierd", "--config", str(self.config_path), *args],
            cwd=self.dir,
            capture_output=True,
            text=True,
            timeout=3600,
        )


def _receiver(port: int) -> None:
    """Answers 200 to every POST; GET /stats gives the count of distinct webhook-ids."""
    from aiohttp import web

    ids: set[str] = set()

    async def receive(request):
        await request.read()
        ids.add(request.headers.get("webhook-id", ""))
        return web.Response(text="ok")

    async def stats(request):
        return web.json_response({"unique": len(ids)})

    app = web.Application()
    app.router.add_get("/stats", stats)
    app.router.add_post("/{tail:.*}", receive)
    web.run_app(app, host="127.0.0.1", port=port, print=None, access_log=None)


# --- HTTP helpers ----------------------------------------------------------------------


def auth(token: str) -> dict:
    return {"Authorization": f"Bearer {token}"}


async def call(http: aiohttp.ClientSession, method: str, url: str, token: str, body=None, tenant: str | None = None):
    headers = auth(token) | ({"Tierd-Tenant": tenant} if tenant else {})
    async with http.request(method, url, json=body, headers=headers) as resp:
        data = await resp.json(content_type=None)
        if resp.status >= 300:
            raise SystemExit(f"{method} {url}: {resp.status} {data}")
        return data


async def timed_get(http: aiohttp.ClientSession, url: str, token: str, params: dict) -> tuple[float, dict]:
    t0 = time.perf_counter()
    async with http.get(url, params=params, headers=auth(token)) as resp:
        raw = await resp.read()
        elapsed = time.perf_counter() - t0
        if resp.status != 200:
            raise SystemExit(f"GET {url} {params}: {resp.status} {raw[:300]!r}")
    return elapsed * 1000, json.loads(raw)


async def median_ms(http, url: str, token: str, params: dict, runs: int) -> tuple[float, dict]:
    """Median time of ``runs`` GETs (after one unmeasured), and the last answer."""
    _, body = await timed_get(http, url, token, params)
    times = []
    for _ in range(runs):
        ms, body = await timed_get(http, url, token, params)
        times.append(ms)
    return median(times), body


async def walk(http, url: str, token: str, params: dict, want: int) -> tuple[str | None, int, float]:
    """Follow next_cursor with limit=500 until ``want`` items are behind;
    return (the cursor there or None if the list is shorter, items read, seconds)."""
    seen, cursor, t0 = 0, None, time.perf_counter()
    while seen < want:
        _, body = await timed_get(http, url, token, params | {"limit": "500"} | ({"cursor": cursor} if cursor else {}))
        seen += len(body["data"])
        cursor = body["next_cursor"]
        if cursor is None:
            return None, seen, time.perf_counter() - t0
    return cursor, seen, time.perf_counter() - t0


async def metric(http, daemon: Daemon, name: str) -> dict[str, float]:
    """Samples of one Prometheus metric: {labels: value}."""
    async with http.get(daemon.url + "/metrics", headers=auth(ADMIN)) as resp:
        text = await resp.text()
    out = {}
    for line in text.splitlines():
        if line.startswith(name):
            key, _, value = line.rpartition(" ")
            out[key[len(name) :]] = float(value)
    return out


# --- building the data -------------------------------------------------------------------


def event_body(i: int) -> dict:
    """Acme's mix: invoice.paid 50% (webhooks), order.created 30%, customer.updated 20%."""
    kind = i % 10
    if kind % 2 == 0:
        return {"type": "invoice.paid", "data": {"invoice": f"INV-{i}", "amount": f"{i % 5000}.00", "currency": "EUR"}}
    if kind in (1, 3, 5):
        return {"type": "order.created", "data": {"order": f"ORD-{i}", "lines": i % 7 + 1, "total": f"{i % 900}.50"}}
    return {"type": "customer.updated", "data": {"customer": f"cus_{i:08d}", "vip": i % VIP_EVERY == 7, "tier": "b"}}


class World:
    """What was made so far, to know the lists' lengths."""

    def __init__(self) -> None:
        self.acme = 0  # acme events POSTed
        self.by_type: dict[str, int] = {}
        self.globex = 0
        self.audit = 0  # webhook.endpoint.* events of acme
        self.vip = 0
        self.invoices = 0  # deliveries expected
        self.tokens: dict[str, str] = {}
        self.endpoint = ""
        self.audit_endpoint = ""


def fill_jobs(world: World, start: int, end: int) -> Iterator[tuple[str, dict | None]]:
    for i in range(start, end):
        body = event_body(i)
        world.by_type[body["type"]] = world.by_type.get(body["type"], 0) + 1
        world.invoices += body["type"] == "invoice.paid"
        world.vip += bool(body["data"].get("vip"))
        world.acme += 1
        yield "acme", body
        if i % GLOBEX_EVERY == 0:
            world.globex += 1
            yield "globex", {"type": "order.created", "data": {"order": f"G-{i}", "lines": 1, "total": "1.00"}}
        if i % AUDIT_EVERY == AUDIT_EVERY // 2:
            world.audit += 1
            yield "audit", {"description": f"audit trail entry {i}"}


async def fill(http, daemon: Daemon, world: World, receiver: str, end: int, concurrency: int) -> dict:
    """POST acme's events up to ``end`` (and globex's, and endpoint PUTs); wait for every delivery."""
    start = world.acme
    jobs = fill_jobs(world, start, end)
    statuses: dict[int, int] = {}
    events_url, audit_url = daemon.url + "/v1/events", f"{daemon.url}/v1/webhooks/{world.audit_endpoint}"

    async def worker():
        for who, body in jobs:
            if who == "audit":
                req = http.put(audit_url, json=body, headers=auth(world.tokens["acme"]))
            else:
                req = http.post(events_url, json=body, headers=auth(world.tokens[who]))
            async with req as resp:
                await resp.read()
                statuses[resp.status] = statuses.get(resp.status, 0) + 1

    t0 = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    posted = time.perf_counter() - t0
    bad = {s: n for s, n in statuses.items() if s not in (200, 202)}
    if bad:
        raise SystemExit(f"fill: unexpected statuses {statuses}")
    # Every delivery received and recorded, every consumer caught up.
    deadline = time.monotonic() + max(600, (end - start) / 50)
    stats_url = f"{daemon.url}/v1/webhooks/{world.endpoint}/stats"
    while True:
        async with http.get(receiver + "/stats") as resp:
            got = (await resp.json())["unique"]
        recorded = (await call(http, "GET", stats_url, world.tokens["acme"]))["deliveries"].get("succeeded", 0)
        lag = await metric(http, daemon, "tierd_consumer_lag_events")
        if got >= world.invoices and recorded >= world.invoices and not any(lag.values()):
            break
        if time.monotonic() > deadline:
            raise SystemExit(f"fill: {got}/{recorded} of {world.invoices} deliveries; consumer lag {lag}")
        await asyncio.sleep(0.2)
    done = time.perf_counter() - t0
    n = end - start
    return {
        "events": n,
        "post_s": posted,
        "events_per_s": n / posted if posted else float("nan"),
        "all_delivered_s": done,
        "deliveries_per_s": (n / 2) / done if done else float("nan"),
    }


# --- measuring the lists -------------------------------------------------------------------


def list_specs(daemon: Daemon, world: World) -> list[dict]:
    """Every cursor-paged list measured: name, url, token, params, length (for the middle)."""
    ep = f"{daemon.url}/v1/webhooks/{world.endpoint}"
    acme, globex = world.tokens["acme"], world.tokens["globex"]
    return [
        {"name": "events", "url": daemon.url + "/v1/events", "token": acme, "params": {}, "n": world.acme},
        {
            "name": "events type=webhook.endpoint.*",
            "url": daemon.url + "/v1/events",
            "token": acme,
            "params": {"type": "webhook.endpoint.*"},
            "n": world.audit,
        },
        {
            "name": "events type=customer.updated",
            "url": daemon.url + "/v1/events",
            "token": acme,
            "params": {"type": "customer.updated"},
            "n": world.by_type.get("customer.updated", 0),
        },
        {"name": "events (globex)", "url": daemon.url + "/v1/events", "token": globex, "params": {}, "n": world.globex},
        {"name": "deliveries", "url": ep + "/deliveries", "token": acme, "params": {}, "n": world.invoices},
        {
            "name": "deliveries status=succeeded",
            "url": ep + "/deliveries",
            "token": acme,
            "params": {"status": "succeeded"},
            "n": world.invoices,
        },
        {
            "name": "deliveries status=failed (none)",
            "url": ep + "/deliveries",
            "token": acme,
            "params": {"status": "failed"},
            "n": 0,
        },
        {
            "name": "notifications",
            "url": daemon.url + "/v1/notifications",
            "token": acme,
            "params": {},
            "n": world.vip,
        },
    ]


async def measure_lists(http, daemon: Daemon, world: World, runs: int, middle: float = 0.5) -> dict:
    """First and middle page of every list; the middle is ``middle`` of the rows made
    (a quarter after the prune took the older half)."""
    out: dict[str, Any] = {}
    for spec in list_specs(daemon, world):
        first, body = await median_ms(http, spec["url"], spec["token"], spec["params"] | {"limit": "50"}, runs)
        row: dict[str, Any] = {"first_ms": first, "first_rows": len(body["data"]), "length": spec["n"]}
        if spec["n"] * middle > 50:
            want = int(spec["n"] * middle)
            cursor, seen, seconds = await walk(http, spec["url"], spec["token"], spec["params"], want)
            row["walk_rows"], row["walk_s"] = seen, seconds
            if cursor:
                params = spec["params"] | {"limit": "50", "cursor": cursor}
                row["middle_ms"], body = await median_ms(http, spec["url"], spec["token"], params, runs)
                row["middle_at"] = seen
        out[spec["name"]] = row
    stats_ms, _ = await median_ms(
        http, f"{daemon.url}/v1/webhooks/{world.endpoint}/stats", world.tokens["acme"], {}, runs
    )
    out["endpoint stats"] = {"first_ms": stats_ms, "length": world.invoices}
    return out


# --- intake under reads --------------------------------------------------------------------


async def steady_intake(http, daemon: Daemon, token: str, rate: float, seconds: float, until: asyncio.Event | None):
    """POST events at ``rate``/s for at least ``seconds`` (and until ``until`` is set);
    return [(send time, latency s, status)]."""
    results: list[tuple[float, float, int]] = []
    url = daemon.url + "/v1/events"
    headers = auth(token)

    async def one(i: int) -> None:
        t0 = time.time()
        p0 = time.perf_counter()
        try:
            async with http.post(url, json=event_body(i), headers=headers) as resp:
                await resp.read()
                status = resp.status
        except aiohttp.ClientError:
            status = 0
        results.append((t0, time.perf_counter() - p0, status))

    tasks = []
    start = time.monotonic()
    i = 0
    while True:
        elapsed = time.monotonic() - start
        if elapsed >= seconds and (until is None or until.is_set()):
            break
        delay = start + i / rate - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.ensure_future(one(10_000_000 + i)))
        i += 1
    await asyncio.gather(*tasks)
    return results


def latency_summary(results: list[tuple[float, float, int]]) -> dict:
    lat = [r[1] for r in results]
    return {
        "requests": len(results),
        "errors": sum(1 for r in results if r[2] not in (200, 202)),
        "p50_ms": pct(lat, 50) * 1000,
        "p99_ms": pct(lat, 99) * 1000,
        "max_ms": max(lat) * 1000 if lat else float("nan"),
    }


async def stats_loop(http, daemon: Daemon, world: World, stop: asyncio.Event) -> dict:
    url = f"{daemon.url}/v1/webhooks/{world.endpoint}/stats"
    times = []
    while not stop.is_set():
        ms, _ = await timed_get(http, url, world.tokens["acme"], {})
        times.append(ms)
    return {"polls": len(times), "p50_ms": pct(times, 50), "p99_ms": pct(times, 99)}


async def report_read(http, daemon: Daemon, world: World, at: int = 0, then=None) -> dict:
    """The whole event log of acme, 500 a page, following next_cursor; ``then()``
    is called once ``at`` rows are read."""
    url, token = daemon.url + "/v1/events", world.tokens["acme"]
    rows, pages, cursor, times = 0, 0, None, []
    t0 = time.perf_counter()
    while True:
        if then is not None and rows >= at:
            then()
            then = None
        ms, body = await timed_get(http, url, token, {"limit": "500"} | ({"cursor": cursor} if cursor else {}))
        times.append(ms)
        rows += len(body["data"])
        pages += 1
        cursor = body["next_cursor"]
        if cursor is None:
            break
    seconds = time.perf_counter() - t0
    return {
        "rows": rows,
        "pages": pages,
        "seconds": seconds,
        "rows_per_s": rows / seconds,
        "page_p50_ms": pct(times, 50),
        "page_p99_ms": pct(times, 99),
    }


async def loaded_intake(http, daemon: Daemon, world: World, rate: float, seconds: float, prune_at: int) -> dict:
    """Intake at ``rate`` while the stats loop, the report read and the prune run.

    The prune starts when the report read has passed ``prune_at`` rows (the
    aged half): the read sees the whole log, and the prune deletes behind it.
    """
    stop = asyncio.Event()
    intake = asyncio.ensure_future(steady_intake(http, daemon, world.tokens["acme"], rate, seconds, stop))
    await asyncio.sleep(0.5)
    poller = asyncio.ensure_future(stats_loop(http, daemon, world, stop))
    prune = {"triggered": False}

    def start_prune() -> None:
        prune["triggered"] = daemon.prune_now()

    report_result = await report_read(http, daemon, world, prune_at, start_prune)
    triggered = prune["triggered"]
    prune_runs: list[dict] = []
    if triggered:
        deadline = time.monotonic() + 3600
        while time.monotonic() < deadline:
            prune_runs = [e for e in daemon.jobs() if "end" in e]
            if {e["job"] for e in prune_runs} >= set(next(e["jobs"] for e in daemon.jobs() if "jobs" in e)):
                break
            await asyncio.sleep(0.2)
    stop.set()
    results = await intake
    polls = await poller
    out = {
        "intake": latency_summary(results),
        "report_read": report_result,
        "stats_loop": polls,
        "prune_triggered": triggered,
        "prune_jobs": prune_runs,
    }
    if prune_runs:
        p0, p1 = min(e["start"] for e in prune_runs), max(e["end"] for e in prune_runs)
        out["prune_s"] = p1 - p0
        out["intake_while_prune"] = latency_summary([r for r in results if p0 <= r[0] <= p1])
    return out


# --- disk ---------------------------------------------------------------------------------


def disk(db_path: Path) -> dict:
    """File sizes and page counts of the (stopped) daemon's database."""
    wal = db_path.with_name(db_path.name + "-wal")
    with sqlite3.connect(db_path) as conn:

        def one(sql: str):
            return conn.execute(sql).fetchone()[0]

        out = {
            "file_mb": db_path.stat().st_size / 2**20,
            "wal_mb": wal.stat().st_size / 2**20 if wal.exists() else 0.0,
            "page_size": one("PRAGMA page_size"),
            "page_count": one("PRAGMA page_count"),
            "freelist_count": one("PRAGMA freelist_count"),
            "auto_vacuum": {0: "none", 1: "full", 2: "incremental"}.get(one("PRAGMA auto_vacuum"), "?"),
        }
        for table in ("events", "webhook_deliveries", "webhook_attempts"):
            out[table] = one(f"SELECT COUNT(*) FROM {table}")
    conn.close()
    return out


def age_older_half(db_path: Path) -> dict:
    """Direct SQL on the stopped daemon's file: the older half of events,
    deliveries and attempts made AGE_BY older (the API stamps rows "now")."""
    t0 = time.perf_counter()
    with sqlite3.connect(db_path) as conn:
        n = conn.execute("SELECT COUNT(*) FROM events").fetchone()[0]
        mid = conn.execute("SELECT seq FROM events ORDER BY seq LIMIT 1 OFFSET ?", (n // 2,)).fetchone()[0]
        events = conn.execute("UPDATE events SET created_at=created_at-? WHERE seq<?", (AGE_BY, mid)).rowcount
        n = conn.execute("SELECT COUNT(*) FROM webhook_deliveries").fetchone()[0]
        mid = conn.execute("SELECT seq FROM webhook_deliveries ORDER BY seq LIMIT 1 OFFSET ?", (n // 2,)).fetchone()[0]
        deliveries = conn.execute(
            "UPDATE webhook_deliveries SET created_at=created_at-?1, finished_at=finished_at-?1,"
            " last_attempt_at=last_attempt_at-?1 WHERE seq<?2",
            (AGE_BY, mid),
        ).rowcount
        attempts = conn.execute(
            "UPDATE webhook_attempts SET attempted_at=attempted_at-? WHERE delivery_seq<?", (AGE_BY, mid)
        ).rowcount
    with sqlite3.connect(db_path) as conn:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()
    return {"events": events, "deliveries": deliveries, "attempts": attempts, "seconds": time.perf_counter() - t0}


# --- the run ------------------------------------------------------------------------------


async def setup(http, daemon: Daemon, world: World, receiver: str) -> None:
    for tenant in ("acme", "globex"):
        await call(http, "POST", daemon.url + "/v1/admin/tenants", ADMIN, {"name": tenant})
        world.tokens[tenant] = (await call(http, "POST", f"{daemon.url}/v1/admin/tenants/{tenant}/tokens", ADMIN, {}))[
            "token"
        ]
    acme = world.tokens["acme"]
    world.endpoint = (
        await call(
            http, "POST", daemon.url + "/v1/webhooks", acme, {"url": receiver + "/hook", "event_types": ["invoice.*"]}
        )
    )["id"]
    # Never matched: its PUTs make the audit trail (webhook.endpoint.updated).
    world.audit_endpoint = (
        await call(
            http, "POST", daemon.url + "/v1/webhooks", acme, {"url": receiver + "/audit", "event_types": ["audit.*"]}
        )
    )["id"]
    world.audit += 2  # the two webhook.endpoint.created
    await call(
        http,
        "POST",
        daemon.url + "/v1/webhooks",
        world.tokens["globex"],
        {"url": receiver + "/globex", "event_types": ["nothing.*"]},
    )


async def run(args) -> dict:
    workdir = Path(tempfile.mkdtemp(prefix="tierd-scale-"))
    port = free_port()
    receiver_proc = multiprocessing.Process(target=_receiver, args=(port,), daemon=True)
    receiver_proc.start()
    receiver = f"http://127.0.0.1:{port}"
    daemon = Daemon(workdir)
    world = World()
    result: dict[str, Any] = {
        "scale": args.scale,
        "runs": args.runs,
        "rate": args.rate,
        "workdir": str(workdir),
        "stages": [],
        "notes": [],
    }
    t_start = time.perf_counter()
    try:
        daemon.start()
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=400)) as http:
            for _ in range(300):
                try:
                    async with http.get(receiver + "/stats") as resp:
                        await resp.read()
                    break
                except aiohttp.ClientError:
                    await asyncio.sleep(0.05)
            await setup(http, daemon, world, receiver)
            for size in args.stages:
                log(f"stage {size:,} events: filling through the API ...")
                filled = await fill(http, daemon, world, receiver, size, args.concurrency)
                log(
                    f"  {filled['events']:,} events at {filled['events_per_s']:,.0f}/s, every delivery after "
                    f"{filled['all_delivered_s']:.0f} s; measuring the lists ..."
                )
                lists = await measure_lists(http, daemon, world, args.runs)
                result["stages"].append(
                    {
                        "acme_events": world.acme,
                        "globex_events": world.globex,
                        "deliveries": world.invoices,
                        "audit_events": world.audit,
                        "notifications": world.vip,
                        "fill": filled,
                        "lists": lists,
                        "peak_rss_mb": daemon.peak_rss_mb(),
                    }
                )
            log(f"intake baseline: {args.rate:g} events/s for {args.seconds:g} s, no reads ...")
            baseline = latency_summary(
                await steady_intake(http, daemon, world.tokens["acme"], args.rate, args.seconds, None)
            )
        result["peak_rss_fill_mb"] = daemon.peak_rss_mb()
        daemon.stop()
        result["disk_built"] = disk(daemon.db_path)
        log("ageing the older half of the data by direct SQL on the stopped daemon's file ...")
        result["aged"] = age_older_half(daemon.db_path)
        result["notes"].append(
            f"direct SQL on the stopped daemon's file: the older half of events ({result['aged']['events']:,}), "
            f"deliveries ({result['aged']['deliveries']:,}) and attempts ({result['aged']['attempts']:,}) "
            f"aged by {AGE_BY / DAY:g} days (past the default 30-day retentions), in {result['aged']['seconds']:.1f} s"
        )
        result["disk_before_prune"] = disk(daemon.db_path)
        daemon.start()
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=400)) as http:
            # The restarted daemon's caches warm up on a short unmeasured read of each list.
            await measure_lists(http, daemon, world, 1)
            log(f"intake during reads and prune: {args.rate:g} events/s ...")
            loaded = await loaded_intake(http, daemon, world, args.rate, args.seconds, result["aged"]["events"])
            if not loaded["prune_triggered"]:
                result["notes"].append(
                    "the prune was NOT triggered: the launcher could not wrap tierd.core.daemon.apply_jobs "
                    f"({daemon.jobs()[:2]}); the loaded figure has no prune in it"
                )
            log(f"intake after the prune: {args.rate:g} events/s for {args.seconds:g} s, no reads ...")
            after = latency_summary(
                await steady_intake(http, daemon, world.tokens["acme"], args.rate, args.seconds, None)
            )
            after_lists = await measure_lists(http, daemon, world, args.runs, middle=0.25)
        result["peak_rss_loaded_mb"] = daemon.peak_rss_mb()
        daemon.stop()
        result["intake"] = {"baseline": baseline, "loaded": loaded, "after_prune": after}
        result["lists_after_prune"] = after_lists
        result["disk_after_prune"] = disk(daemon.db_path)
        db_help = daemon.cli("db", "--help").stdout
        if "compact" in db_help:
            log("tierd db compact ...")
            t0 = time.perf_counter()
            done = daemon.cli("db", "compact")
            result["compact"] = {
                "returncode": done.returncode,
                "seconds": time.perf_counter() - t0,
                "output": (done.stdout + done.stderr).strip()[-500:],
            }
            result["disk_after_compact"] = disk(daemon.db_path)
        else:
            result["notes"].append("no `tierd db compact` in this tree: not measured")
    finally:
        daemon.stop()
        receiver_proc.terminate()
        receiver_proc.join(5)
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)
    result["run_seconds"] = time.perf_counter() - t_start
    return result


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# --- output -------------------------------------------------------------------------------


def fmt(value: Any, spec: str = ".1f") -> str:
    return "-" if value is None else format(value, spec)


def print_report(r: dict) -> None:
    stages = r["stages"]
    print(f"\nscale bench (issue #16): median of {r['runs']} runs, ms; scale {r['scale']:g}")
    print("Data made through the API (events POSTed, deliveries sent to a local receiver answering 200,")
    print("audit trail by PUT /v1/webhooks/{id}, notifications by a route); by direct SQL on the stopped")
    print("daemon's file: only the ageing of the older half (see notes).")
    head = f"{'':{W}}" + "".join(f"{s['acme_events']:>14,}" for s in stages) + f"{'after prune':>14}"
    print("\n" + f"{'acme events':{W}}" + head[W:])
    print(f"{'  deliveries of the endpoint':{W}}" + "".join(f"{s['deliveries']:>14,}" for s in stages))
    print(f"{'  fill: events/s through the API':{W}}" + "".join(f"{s['fill']['events_per_s']:>14,.0f}" for s in stages))
    print(
        f"{'  fill: deliveries/s end to end':{W}}" + "".join(f"{s['fill']['deliveries_per_s']:>14,.0f}" for s in stages)
    )
    after = r.get("lists_after_prune", {})
    for name in stages[0]["lists"]:
        for which, label in (("first_ms", "first page"), ("middle_ms", "middle page")):
            cells = [s["lists"][name].get(which) for s in stages] + [after.get(name, {}).get(which)]
            if all(c is None for c in cells):
                continue
            print(f"{name + ' ' + label:{W}}" + "".join(f"{fmt(c):>14}" for c in cells))
    print(
        f"{'walk to the middle, s (events, limit=500)':{W}}"
        + "".join(f"{fmt(s['lists']['events'].get('walk_s'), '.2f'):>14}" for s in stages)
    )
    print(f"{'peak RSS of the daemon, MB (VmHWM)':{W}}" + "".join(f"{s['peak_rss_mb']:>14.0f}" for s in stages))

    intake = r["intake"]
    loaded = intake["loaded"]
    rows = [("no reads (baseline)", intake["baseline"]), ("during reads + prune", loaded["intake"])]
    if "intake_while_prune" in loaded:
        rows.append(("  of which while the prune ran", loaded["intake_while_prune"]))
    rows.append(("after the prune, no reads", intake["after_prune"]))
    print(f"\nintake at {r['rate']:g} events/s, POST /v1/events latency in ms, {stages[-1]['acme_events']:,} events:")
    print(f"{'':{W}}{'requests':>10}{'errors':>8}{'p50':>10}{'p99':>10}{'max':>10}")
    for label, s in rows:
        print(
            f"{label:{W}}{s['requests']:>10}{s['errors']:>8}{s['p50_ms']:>10.1f}{s['p99_ms']:>10.1f}{s['max_ms']:>10.1f}"
        )
    base = intake["baseline"]
    for label, key in (
        ("ratio loaded/baseline", "intake"),
        ("ratio while the prune ran/baseline", "intake_while_prune"),
    ):
        if key in loaded:
            x = loaded[key]
            print(
                f"{label:{W}}{'':18}{x['p50_ms'] / base['p50_ms']:>10.2f}"
                f"{x['p99_ms'] / base['p99_ms']:>10.2f}{x['max_ms'] / base['max_ms']:>10.2f}"
            )
    rr, sl = loaded["report_read"], loaded["stats_loop"]
    print(
        f"  report read: {rr['rows']:,} events in {rr['pages']} pages of 500, {rr['seconds']:.1f} s "
        f"({rr['rows_per_s']:,.0f} rows/s), page p50 {rr['page_p50_ms']:.1f} ms, p99 {rr['page_p99_ms']:.1f} ms"
    )
    print(f"  stats loop: {sl['polls']} polls, p50 {sl['p50_ms']:.1f} ms, p99 {sl['p99_ms']:.1f} ms")
    if loaded["prune_jobs"]:
        jobs = ", ".join(
            f"{e['job']} {e['end'] - e['start']:.1f} s" + (f" ({e['result']} rows)" if e.get("result") else "")
            for e in loaded["prune_jobs"]
        )
        print(f"  prune: {jobs}")
    print(
        f"  peak RSS: {r['peak_rss_fill_mb']:.0f} MB building and reading,"
        f" {r['peak_rss_loaded_mb']:.0f} MB loaded phase"
    )

    print("\ndisk (daemon stopped):")
    print(
        f"{'':26}{'file MB':>9}{'WAL MB':>8}{'pages':>11}{'freelist':>11}{'auto_vacuum':>13}{'events':>11}"
        f"{'deliveries':>12}{'attempts':>11}"
    )
    for key, label in (
        ("disk_built", "as built"),
        ("disk_before_prune", "aged, before the prune"),
        ("disk_after_prune", "after the prune"),
        ("disk_after_compact", "after tierd db compact"),
    ):
        d = r.get(key)
        if d:
            print(
                f"{label:26}{d['file_mb']:>9.1f}{d['wal_mb']:>8.1f}{d['page_count']:>11,}{d['freelist_count']:>11,}"
                f"{d['auto_vacuum']:>13}{d['events']:>11,}{d['webhook_deliveries']:>12,}{d['webhook_attempts']:>11,}"
            )
    if "compact" in r:
        print(f"  tierd db compact: exit {r['compact']['returncode']} in {r['compact']['seconds']:.1f} s")
    for note in r["notes"]:
        print(f"note: {note}")
    print(f"run time {r['run_seconds'] / 60:.1f} min")


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scale", type=float, default=1.0, help="size factor of the stages (1: 15k, 250k, 1M)")
    parser.add_argument("--quick", action="store_true", help="smoke run: --scale 0.1, 5 runs, 8 s intake phases")
    parser.add_argument("--runs", type=int, default=7, help="timed runs of each request (median)")
    parser.add_argument("--rate", type=float, default=300, help="events/s of the intake phases")
    parser.add_argument("--seconds", type=float, default=20, help="least length of each intake phase")
    parser.add_argument("--concurrency", type=int, default=32, help="concurrent posters while filling")
    parser.add_argument("--json", action="store_true", help="the figures as JSON on stdout (the table goes to stderr)")
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory (database, log)")
    args = parser.parse_args(argv)
    if args.quick:
        args.scale, args.runs, args.seconds = 0.1, 5, 8
    args.stages = [max(200, int(n * args.scale)) for n in (15_000, 250_000, 1_000_000)]
    return args


def main() -> None:
    args = parse_args()
    result = asyncio.run(run(args))
    if args.json:
        with contextlib.redirect_stdout(sys.stderr):
            print_report(result)
        print(json.dumps(result, indent=1, default=str))
    else:
        print_report(result)


if __name__ == "__main__":
    signal.signal(signal.SIGINT, signal.default_int_handler)
    main()
