"""Bench helpers: a daemon in a temp dir, a load generator, RSS readings."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import aiohttp
import yaml

ADMIN = "bench-admin-token"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rss_mb(pid: int) -> float:
    """Peak resident set size (VmHWM) of a process, in MB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def cpu_seconds(pid: int, children: bool = False) -> float:
    """CPU time (user + system) a process has used so far, in seconds; with
    ``children``, also that of its children it has waited for (a server's
    finished workers). 0 for a process that is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    # After the command: state is field 3, utime 14, stime 15, cutime 16, cstime 17.
    ticks = int(fields[11]) + int(fields[12])
    if children:
        ticks += int(fields[13]) + int(fields[14])
    return ticks / os.sysconf("SC_CLK_TCK")


def process_tree(pid: int) -> list[int]:
    """``pid`` and its live descendants (e.g. a PostgreSQL server and its backends)."""
    found, todo = [], [pid]
    while todo:
        p = todo.pop()
        found.append(p)
        try:
            for task in Path(f"/proc/{p}/task").iterdir():
                todo += [int(c) for c in (task / "children").read_text().split()]
        except OSError:
            continue
    return found


def pss_mb(pids: Sequence[int]) -> float:
    """Proportional set size of several processes together, in MB: memory they
    share (a PostgreSQL server's shared buffers) counted once, not once each."""
    total = 0
    for pid in pids:
        try:
            for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
                if line.startswith("Pss:"):
                    total += int(line.split()[1])
        except OSError:
            continue
    return total / 1024


def third_party_plugins() -> list[str]:
    """Names of the tierd plugins installed through entry points."""
    from importlib.metadata import entry_points

    return sorted(ep.name for ep in entry_points(group="tierd"))


class BenchDaemon:
    def __init__(self, config: dict | None = None):
        self.dir = Path(tempfile.mkdtemp(prefix="tierd-bench-"))
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        base = {
            "server": {"listen": f"127.0.0.1:{self.port}", "admin_token": ADMIN},
            "storage": {"path": str(self.dir / "tierd.db")},
            "logging": {"level": "WARNING"},
            # tierd's own modules only: a plugin installed in this venv (the
            # tests install the examples) would add its own work to the figures.
            "plugins": {"disabled": third_party_plugins()},
        }
        for key, value in (config or {}).items():
            base[key] = base.get(key, {}) | value if isinstance(value, dict) else value
        (self.dir / "tierd.yaml").write_text(yaml.safe_dump(base))
        self.proc = None

    def start(self):
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tierd", "--config", str(self.dir / "tierd.yaml"), "run"],
            cwd=self.dir,
            stdout=subprocess.DEVNULL,
            stderr=open(self.dir / "log", "wb"),
        )
        deadline = time.monotonic() + 30
        import urllib.request

        while time.monotonic() < deadline:
            try:
                urllib.request.urlopen(self.url + "/readyz", timeout=1)
                return self
            except OSError:
                time.sleep(0.05)
        raise SystemExit("daemon did not start:\n" + (self.dir / "log").read_text())

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(30)

    def tenant_token(self, name: str = "bench") -> str:
        import json
        import urllib.request

        def post(path, body):
            req = urllib.request.Request(
                self.url + path,
                json.dumps(body).encode(),
                method="POST",
                headers={"Authorization": f"Bearer {ADMIN}", "Content-Type": "application/json"},
            )
            with urllib.request.urlopen(req) as r:
                return json.loads(r.read())

        post("/v1/admin/tenants", {"name": name})
        return post(f"/v1/admin/tenants/{name}/tokens", {})["token"]


async def blast(
    url: str | Sequence[str],
    token: str,
    count: int,
    concurrency: int,
    body_of=lambda i: {"type": "bench.event", "data": {"i": i}},
):
    """POST ``count`` events with ``concurrency`` workers; return (seconds, statuses, latencies).

    ``url`` may be a list (several nodes): request ``i`` goes to ``url[i % len(url)]``,
    a client that round-robins over the nodes."""
    urls = [url] if isinstance(url, str) else list(url)
    statuses: dict[int, int] = {}
    latencies: list[float] = []
    counter = iter(range(count))
    headers = {"Authorization": f"Bearer {token}"}
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector, headers=headers) as session:

        async def worker():
            for i in counter:
                t0 = time.perf_counter()
                async with session.post(urls[i % len(urls)], json=body_of(i)) as resp:
                    await resp.read()
                    statuses[resp.status] = statuses.get(resp.status, 0) + 1
                latencies.append(time.perf_counter() - t0)

        start = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        return time.perf_counter() - start, statuses, latencies


def pct(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    values = sorted(values)
    return values[min(len(values) - 1, int(round(p / 100 * (len(values) - 1))))]


def median(values):
    return statistics.median(values)
