"""Test support for webhooks: the daemon in this test's event loop, and
receivers that verify signatures themselves.

Not a conftest (tests have no packages): test modules import from it. The
subprocess daemon of ``tests/conftest.py`` is used for kill -9 and the CLI;
the in-process one here (``tierd.testing.LocalDaemon`` with the webhooks
test settings) lets a test swap the clock and call jobs directly.
"""

from __future__ import annotations

import asyncio
import os
import time

import pytest
import yaml
from aiohttp import web

from tierd import testing
from tierd.plugins.webhooks import WebhookVerificationError, verify
from tierd.testing import Receiver, StepClock, deep_merge

#: The test daemons run on PostgreSQL (``TIERD_TEST_STORAGE=postgresql``, see ``tierd.testing``).
ON_POSTGRESQL = os.environ.get(testing.TEST_STORAGE_ENV, "sqlite") == "postgresql"
#: For a test of SQLite itself (its query plans, its file): skipped on PostgreSQL.
sqlite_only = pytest.mark.skipif(
    ON_POSTGRESQL, reason="SQLite's own (query plans or the file); PostgreSQL's side: test_webhooks_postgres.py"
)


async def raw_sql(daemon, sql: str, params=(), many: bool = False) -> list[tuple]:
    """Run ``sql`` (SQLite's placeholders) straight on a test daemon's database,
    beside it or while it is stopped, committed at once; its rows as tuples.

    ``daemon``: a ``DaemonProcess``, a ``LocalDaemon`` or the config of one: its SQLite file, or
    its PostgreSQL database when the tests run there. ``many``: ``params`` is a
    list of rows.
    """
    if isinstance(daemon, dict):  # a daemon's config itself
        config = daemon
    else:
        config = getattr(daemon, "config", None) or yaml.safe_load(daemon.config_path.read_text())
    return await testing.arun_sql(config["storage"], sql, params, many)


#: Short schedule and loopback allowed: what every delivery test runs with.
TEST_WEBHOOKS = {
    "retry_schedule": ["0s", "1s", "1s"],
    "allow_http": True,
    "allow_destinations": ["127.0.0.1/32"],
    "timeout": "2s",
}


class LocalDaemon(testing.LocalDaemon):
    """``tierd`` started in the test's own loop, with the webhooks test settings
    and a clock the test can move (``tierd.testing.LocalDaemon``)."""

    def __init__(self, tmp_path, webhooks: dict | None = None, extra: dict | None = None):
        # A daemon made again on one folder (a restart) opens the same database,
        # the SQLite file or (TIERD_TEST_STORAGE=postgresql) the folder's database.
        super().__init__(tmp_path, deep_merge({"webhooks": TEST_WEBHOOKS | (webhooks or {})}, extra), clock=StepClock())
        self.tmp_path = tmp_path

    @property
    def webhooks(self):
        from tierd.plugins.webhooks.service import WebhooksService

        return WebhooksService.of(self.daemon)

    async def endpoint(self, tenant: str, url: str, **fields) -> dict:
        status, body = await self.call("POST", "/v1/webhooks", {"url": url, **fields}, tenant=tenant)
        assert status == 201, body
        return body

    async def deliveries(self, tenant: str, endpoint_id: str, **params) -> list[dict]:
        status, body = await self.call(
            "GET",
            f"/v1/webhooks/{endpoint_id}/deliveries",
            tenant=tenant,
            params={k: v for k, v in params.items() if v is not None},
        )
        assert status == 200, body
        return body["data"]

    async def wait_delivery(
        self, tenant: str, delivery_or_endpoint: str, status: str, timeout: float = 15.0, count: int = 1
    ) -> list[dict]:
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
