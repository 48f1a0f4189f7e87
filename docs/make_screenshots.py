"""Make the README's screenshots of the web console.

    .venv/bin/python docs/make_screenshots.py

Starts tierd in this process on a temporary directory, with a clock it moves
through the last 24 hours so that the charts have a history: two tenants, a
few webhook endpoints, deliveries that succeeded and some that failed (one
receiver has an outage for a few hours), events every few minutes in the last
hour. Then Debian's Chromium, driven by playwright as in the browser tests
(``/usr/bin/chromium``, nothing downloaded), signs in as the admin and saves
``docs/console-overview.png`` and ``docs/console-endpoint.png`` (1280x900).
The data is random but seeded: each run draws much the same pictures.
"""

from __future__ import annotations

import asyncio
import random
import sys
import tempfile
import time
from pathlib import Path

from aiohttp import web

from tierd.core.clock import Clock
from tierd.testing import ADMIN_TOKEN, LocalDaemon, Receiver, eventually

DOCS = Path(__file__).resolve().parent
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking"]
SIZE = {"width": 1280, "height": 900}
#: One attempt per delivery (a failure is final at once), receivers on loopback.
WEBHOOKS = {"retry_schedule": ["0s"], "allow_http": True, "allow_destinations": ["127.0.0.1/32"], "timeout": "2s"}
#: (tenant, path, event types, hours ago during which it answers 500)
ENDPOINTS = [
    ("acme", "/billing", ["invoice.*"], ()),
    ("acme", "/crm", ["customer.*"], ()),
    ("acme", "/audit", [], range(6, 10)),
    ("bolt", "/orders", ["order.*"], ()),
    ("bolt", "/chat", [], range(1, 2)),
]
EVENT_TYPES = {
    "acme": ["invoice.created", "invoice.paid", "customer.updated"],
    "bolt": ["order.created", "order.shipped"],
}


class ShiftedClock(Clock):
    """Real time moved by ``offset`` seconds (negative: in the past)."""

    def __init__(self) -> None:
        self.offset = 0.0

    def time(self) -> float:
        return time.time() + self.offset


async def main() -> None:
    from playwright.async_api import async_playwright

    rng = random.Random(14)
    flaky = random.Random(7)  # the receiver's own, as it answers concurrently
    clock = ShiftedClock()
    receiver = await Receiver().start()
    hours_ago = 24.0
    outages = {path: hours for _, path, _, hours in ENDPOINTS}

    async def answer(request: web.Request, body: bytes) -> web.Response:
        await asyncio.sleep(flaky.uniform(0.01, 0.12))  # a receiver's own work, for the latency chart
        # The outages, a few failures at random on /audit, and its minutes 2 and 3 ago (a Retry in view).
        audit = request.path == "/audit" and (flaky.random() < 0.04 or 2 / 60 <= hours_ago < 4 / 60)
        down = int(hours_ago) in outages[request.path] or audit
        return web.Response(status=500 if down else 200, text="ok")

    receiver.responder = answer
    with tempfile.TemporaryDirectory(prefix="tierd-screenshots-") as workdir:
        async with LocalDaemon(
            Path(workdir), {"webhooks": WEBHOOKS, "logging": {"level": "WARNING"}}, clock=clock
        ) as d:
            clock.offset = -hours_ago * 3600  # the endpoints are a day old
            tokens = {tenant: await d.tenant(tenant) for tenant in EVENT_TYPES}
            ids = {}
            for tenant, path, types, _ in ENDPOINTS:
                status, body = await d.call(
                    "POST",
                    "/v1/webhooks",
                    {"url": receiver.url + path, "event_types": types, "description": f"{tenant} {path[1:]}"},
                    token=tokens[tenant],
                )
                assert status == 201, body
                ids[path] = body["id"]

            # A few events around the middle of each clock hour from 23 to 2 hours ago (the
            # charts count by clock hour), then some every minute in the last hour.
            now = time.time()
            hour = now // 3600 * 3600
            steps = [(now - (hour - h * 3600 + 1800 + rng.uniform(-900, 900))) / 3600 for h in range(23, 1, -1)]
            steps += [m / 60 for m in range(59, -1, -1)]
            expected = 0
            for hours_ago in steps:
                clock.offset = -hours_ago * 3600
                for tenant, types in EVENT_TYPES.items():
                    for _ in range(rng.randint(1, 3) if hours_ago >= 1 else rng.randint(0, 2)):
                        event_type = rng.choice(types)
                        await d.publish(tenant, event_type, {"amount": f"{rng.randint(5, 900)}.00"})
                        expected += sum(
                            1
                            for t, _, patterns, _ in ENDPOINTS
                            if t == tenant and (not patterns or any(event_type.startswith(p[:-1]) for p in patterns))
                        )
                # Every delivery attempted before the clock moves on, so it is recorded at its hour.
                await eventually(lambda n=expected: len(receiver.requests) >= n, 30, what=f"{expected} deliveries")
            clock.offset = 0.0
            await asyncio.sleep(0.5)  # the last outcomes are written a moment after the answers

            async with async_playwright() as pw:
                browser = await pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
                page = await browser.new_page(viewport=SIZE)
                await page.goto(d.url + "/ui/login")
                await page.fill("input[name=token]", ADMIN_TOKEN)
                await page.click("button:has-text('Sign in')")
                await page.wait_for_url(d.url + "/ui/")
                await page.screenshot(path=DOCS / "console-overview.png")
                await page.goto(d.url + f"/ui/webhooks/{ids['/audit']}?tenant=acme")
                await page.screenshot(path=DOCS / "console-endpoint.png")
                await browser.close()
    await receiver.close()
    print(f"wrote {DOCS / 'console-overview.png'} and {DOCS / 'console-endpoint.png'}")


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
