"""Durable event intake vs. a bare aiohttp handler, in the same run.

    python bench/events.py [--count 20000] [--concurrency 32] [--rounds 3]

The daemon acknowledges an event (202) only after its row is committed; the
bare handler answers 202 without storing anything. Both are driven by the
same single local client; the ratio is what durability costs.
"""

from __future__ import annotations

import argparse
import asyncio
import subprocess
import sys
import textwrap
import time

sys.path.insert(0, __import__("os").path.dirname(__file__))
from _common import BenchDaemon, blast, free_port, median, pct, rss_mb  # noqa: E402

BARE = textwrap.dedent("""
    import sys
    from aiohttp import web
    async def handle(request):
        await request.json()
        return web.json_response({"id": "evt_x"}, status=202)
    app = web.Application()
    app.router.add_post("/v1/events", handle)
    web.run_app(app, host="127.0.0.1", port=int(sys.argv[1]), access_log=None, print=None)
""")


def run_bare(count, concurrency):
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-c", BARE, str(port)])
    time.sleep(1.0)
    try:
        return asyncio.run(blast(f"http://127.0.0.1:{port}/v1/events", "x", count, concurrency))
    finally:
        proc.terminate()
        proc.wait()


def run_tierd(count, concurrency):
    daemon = BenchDaemon().start()
    try:
        token = daemon.tenant_token()
        result = asyncio.run(blast(f"{daemon.url}/v1/events", token, count, concurrency))
        return result, rss_mb(daemon.proc.pid)
    finally:
        daemon.stop()


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=20000)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    bare_rates, tierd_rates, p99s, rss = [], [], [], []
    for round_ in range(args.rounds):
        seconds, statuses, _ = run_bare(args.count, args.concurrency)
        bare_rates.append(args.count / seconds)
        (seconds, statuses, lat), peak = run_tierd(args.count, args.concurrency)
        assert statuses.get(202) == args.count, statuses
        tierd_rates.append(args.count / seconds)
        p99s.append(pct(lat, 99) * 1000)
        rss.append(peak)
        print(
            f"round {round_ + 1}: bare {bare_rates[-1]:,.0f} ev/s   tierd {tierd_rates[-1]:,.0f} ev/s"
            f"   ratio {tierd_rates[-1] / bare_rates[-1]:.2f}   tierd p99 {p99s[-1]:.1f} ms   peak RSS {peak:.0f} MB"
        )
    print(f"\nmedian of {args.rounds} rounds, {args.count} events, {args.concurrency} concurrent requests, one client:")
    print(f"  bare aiohttp 202 (stores nothing): {median(bare_rates):,.0f} events/s")
    print(f"  tierd (durable, 202 after commit): {median(tierd_rates):,.0f} events/s")
    print(
        f"  ratio: {median(tierd_rates) / median(bare_rates):.2f}   p99 latency {median(p99s):.1f} ms"
        f"   peak RSS {median(rss):.0f} MB"
    )


if __name__ == "__main__":
    main()
