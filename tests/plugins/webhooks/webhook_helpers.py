"""Test support for webhooks: the daemon in this test's event loop, and
receivers that verify signatures themselves.

Not a conftest (tests have no packages): test modules import from it. The
subprocess daemon of ``tests/conftest.py`` is used for kill -9 and the CLI;
the in-process one here lets a test swap the clock and call jobs directly.
"""

from __future__ import annotations

import asyncio
import json
import time

import pytest
import yaml
from aiohttp import ClientSession, web

from conftest import ADMIN_TOKEN, Receiver, deep_merge, free_port
from tierd.core.clock import Clock
from tierd.plugins.webhooks import WebhookVerificationError, verify

#: Short schedule and loopback allowed: what every delivery test runs with.
TEST_WEBHOOKS = {"retry_schedule": ["0s", "1s", "1s"], "allow_http": True,
                 "allow_destinations": ["127.0.0.1/32"], "timeout": "2s"}


class StepClock(Clock):
    """Real time plus an offset a test can move forward (disable_after, retention)."""

    def __init__(self):
        self.offset = 0.0

    def time(self) -> float:
        return time.time() + self.offset

    def advance(self, seconds: float) -> None:
        self.offset += seconds


class LocalDaemon:
    """``tierd`` started in the test's own loop (real SQLite file, real API socket)."""

    def __init__(self, tmp_path, webhooks: dict | None = None, extra: dict | None = None):
        self.tmp_path = tmp_path
        self.port = free_port()
        self.clock = StepClock()
        config = deep_merge({
            "server": {"listen": f"127.0.0.1:{self.port}", "admin_token": ADMIN_TOKEN, "shutdown_grace": "3s"},
            "storage": {"path": str(tmp_path / "tierd.db")},
            "webhooks": TEST_WEBHOOKS | (webhooks or {}),
        }, extra or {})
        self.config_path = tmp_path / "tierd.yaml"
        self.config_path.write_text(yaml.safe_dump(config))
        self.url = f"http://127.0.0.1:{self.port}"
        self.daemon = None
        self.session: ClientSession | None = None

    async def start(self) -> "LocalDaemon":
        from tierd.core.daemon import Daemon, prepare

        pm, registries, config = prepare(self.config_path)
        self.daemon = Daemon(pm, registries, config, clock=self.clock)
        await self.daemon.start()
        self.session = ClientSession()
        return self

    async def stop(self) -> None:
        if self.session:
            await self.session.close()
        if self.daemon:
            await self.daemon.stop()

    @property
    def webhooks(self):
        from tierd.plugins.webhooks import runtime

        return runtime.of(self.daemon)

    async def call(self, method: str, path: str, body=None, tenant: str | None = None, token: str | None = None,
                   params=None, headers: dict | None = None):
        headers = {"Authorization": f"Bearer {token or ADMIN_TOKEN}"} | (headers or {})
        if tenant:
            headers["Tierd-Tenant"] = tenant
        async with self.session.request(method, self.url + path, json=body, headers=headers, params=params) as resp:
            raw = await resp.read()
            return resp.status, (json.loads(raw) if raw else None)

    async def tenant(self, name: str) -> str:
        """Create a tenant; return a token of its own."""
        status, body = await self.call("POST", "/v1/admin/tenants", {"name": name})
        assert status in (201, 409), body
        status, body = await self.call("POST", f"/v1/admin/tenants/{name}/tokens", {})
        assert status == 201, body
        return body["token"]

    async def endpoint(self, tenant: str, url: str, **fields) -> dict:
        status, body = await self.call("POST", "/v1/webhooks", {"url": url, **fields}, tenant=tenant)
        assert status == 201, body
        return body

    async def publish(self, tenant: str, type_: str, data: dict | None = None) -> dict:
        status, body = await self.call("POST", "/v1/events", {"type": type_, "data": data or {}}, tenant=tenant)
        assert status == 202, body
        return body

    async def deliveries(self, tenant: str, endpoint_id: str, **params) -> list[dict]:
        status, body = await self.call("GET", f"/v1/webhooks/{endpoint_id}/deliveries", tenant=tenant,
                                       params={k: v for k, v in params.items() if v is not None})
        assert status == 200, body
        return body["data"]

    async def wait_delivery(self, tenant: str, delivery_or_endpoint: str, status: str, timeout: float = 15.0,
                            count: int = 1) -> list[dict]:
        """Wait until ``count`` deliveries of an endpoint have ``status``."""
        deadline = time.monotonic() + timeout
        while True:
            rows = await self.deliveries(tenant, delivery_or_endpoint, status=status, limit=500)
            if len(rows) >= count:
                return rows
            if time.monotonic() > deadline:
                everything = await self.deliveries(tenant, delivery_or_endpoint, limit=500)
                raise AssertionError(f"{len(rows)} deliveries {status}, expected {count}: {everything}")
            await asyncio.sleep(0.05)


async def fail_500(request, body):
    """A receiver responder that answers every request 500."""
    return web.Response(status=500)


class VerifyingReceiver(Receiver):
    """A Receiver that checks each request's Standard Webhooks signature itself."""

    def __init__(self, secrets: list[str] | None = None):
        super().__init__()
        self.secrets = secrets or []
        self.verified: list[bool] = []

    async def _handle(self, request):
        body = await request.read()
        ok = True
        try:
            verify(self.secrets, body, request.headers)
        except WebhookVerificationError:
            ok = False
        self.verified.append(ok)
        return await super()._handle(request)  # read() is cached: the body is recorded as sent


# --- fixtures (import them into a test module to use them) ---------------------------


@pytest.fixture
async def local(tmp_path):
    made = []

    async def factory(**kwargs) -> LocalDaemon:
        workdir = tmp_path / f"d{len(made)}"
        workdir.mkdir()
        d = await LocalDaemon(workdir, **kwargs).start()
        made.append(d)
        return d

    yield factory
    for d in made:
        await d.stop()


@pytest.fixture
async def hook_receiver():
    made = []

    async def factory() -> VerifyingReceiver:
        r = await VerifyingReceiver().start()
        made.append(r)
        return r

    yield factory
    for r in made:
        await r.close()
