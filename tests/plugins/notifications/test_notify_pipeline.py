"""Intake, groups, throttling, muting and retries on a real SQLite file (or a
PostgreSQL database of the tests' shared server under
``TIERD_TEST_STORAGE=postgresql``), with a fake clock: time moves only when
the test says so (no sleeps)."""

import json
import os
import uuid

import aiohttp
import prometheus_client
import pytest
from aiohttp import web

from tierd.core.clock import FakeClock
from tierd.core.pg import PgDatabase
from tierd.core.plugins import make_plugin_manager
from tierd.core.registry import Channel, collect_registries
from tierd.core.retry import exponential_schedule, next_delay
from tierd.core.schema import validate
from tierd.core.storage import CORE, Database, migrations_for
from tierd.plugins.notifications import store, tierd_migrations
from tierd.plugins.notifications.channels import BUILTIN
from tierd.plugins.notifications.compiled import Compiled
from tierd.plugins.notifications.config import make_schema
from tierd.plugins.notifications.dispatch import Dispatcher, Metrics
from tierd.plugins.notifications.intake import ingest
from tierd.testing import TEST_STORAGE_ENV, shared_postgres


class Exploding(Channel):
    type_name = "exploding"

    async def send(self, message):
        raise RuntimeError("bug in a third-party channel")


class Regs:
    channels = {c.type_name: c for c in BUILTIN} | {"exploding": Exploding}
    event_types = collect_registries(make_plugin_manager(load_entrypoints=False)).event_types


class Harness:
    """One daemon's notification machinery without the daemon."""

    def __init__(self, db, clock, http):
        self.db, self.clock, self.http = db, clock, http
        self.registry = prometheus_client.CollectorRegistry()
        self.metrics = Metrics(self.registry)
        self.compiled = None
        self.dispatcher = None
        self.n = 0

    def configure(self, raw: dict) -> "Harness":
        section, errors = validate(make_schema(Regs), raw)
        assert not errors, errors
        self.compiled = Compiled(section, Regs, self.http)
        self.dispatcher = Dispatcher(self.db, self.clock, self.metrics, lambda: self.compiled)
        return self

    def event(self, type_="invoice.paid", tenant="acme", **data) -> dict:
        self.n += 1
        return {
            "id": f"evt_{self.n}",
            "tenant": tenant,
            "type": type_,
            "data": data,
            "created_at": f"2026-11-28T12:00:{self.n % 60:02d}Z",
        }

    async def ingest(self, *events):
        return await ingest(self.db, self.compiled, list(events), self.clock.time())

    async def tick(self, advance: float = 0.0) -> int:
        self.clock.advance(advance)
        return await self.dispatcher.tick()

    async def digests_after(self, r, seconds: float, digests: int = 1) -> None:
        """Group digests reach ``r`` once ``seconds`` have passed, and not a second earlier."""
        sent = len(r.requests)
        await self.tick(seconds - 1)
        assert len(r.requests) == sent, "a digest went out before its time"
        await self.tick(1)
        assert len(r.requests) == sent + digests

    async def rows(self, **where):
        rows = await self.db.fetchall("SELECT * FROM notifications ORDER BY seq")
        return [r for r in rows if all(r[k] == v for k, v in where.items())]

    def metric(self, name, channel):
        """A counter's value for ``channel`` (0 if never counted); fails on a counter that does not exist,
        so that a renamed or missing metric cannot pass for zero."""
        family = f"tierd_notifications_{name}"
        assert family in {m.name for m in self.registry.collect()}, f"no counter {family}"
        return self.registry.get_sample_value(f"{family}_total", {"channel": channel}) or 0


#: The PostgreSQL database standing for each SQLite path (reopened after a "crash").
_pg_databases: dict[str, str] = {}


async def open_db(path):
    """The database at ``path``, migrated: SQLite's file, or under
    ``TIERD_TEST_STORAGE=postgresql`` a database of the shared server (the
    same one each time ``path`` is opened)."""
    if os.environ.get(TEST_STORAGE_ENV, "sqlite") == "postgresql":
        if str(path) not in _pg_databases:
            _pg_databases[str(path)] = shared_postgres().create_database(f"np_{uuid.uuid4().hex[:16]}")
        db = await PgDatabase(_pg_databases[str(path)]).open()
    else:
        db = await Database(path).open()
    await db.migrate(migrations_for({"core": CORE, **tierd_migrations()}, db.dialect))
    return db


@pytest.fixture
async def harness(tmp_path):
    db = await open_db(tmp_path / "tierd.db")
    async with aiohttp.ClientSession() as http:
        yield Harness(db, FakeClock(), http)
    await db.close()


def config(url, **route):
    return {
        "channels": {"hook": {"type": "webhook", "url": url}},
        "routes": [{"match": {"type": "invoice.*"}, "channels": ["hook"], **route}],
        "retry": {"max_attempts": 4, "backoff": "10s", "max_backoff": "1m"},
    }


async def test_event_to_delivered_with_attempt_and_metric(harness, receiver):
    r = await receiver()
    h = harness.configure(config(r.url))
    result = await h.ingest(h.event(amount=5))
    assert result.pending == 1
    assert await h.tick() == 2  # one send started, one outcome recorded
    (row,) = await h.rows()
    assert (row["status"], row["attempts"], row["kind"]) == ("delivered", 1, "event")
    body = json.loads(r.requests[0]["body"])
    assert body["id"] == row["id"] and body["subject"] == "invoice.paid (acme)"
    attempts = await store.attempts_of(h.db, [row["id"]])
    assert [a["outcome"] for a in attempts[row["id"]]] == ["delivered"]
    assert h.metric("sent", "hook") == 1
    # Unrouted events leave no trace.
    assert (await h.ingest(h.event("payment.received"))).pending == 0


async def test_intake_is_idempotent(harness, receiver):
    r = await receiver()
    h = harness.configure(config(r.url))
    e = h.event()
    await h.ingest(e)
    await h.ingest(e)  # the bus re-delivered it after a crash
    await h.tick()
    await h.ingest(e)  # even after it was sent
    await h.tick()
    assert len(await h.rows()) == 1 and len(r.requests) == 1
    await h.ingest(e, h.event(), e)  # a re-delivered batch that also holds a new event
    await h.tick()
    assert len(await h.rows()) == 2 and len(r.requests) == 2


async def test_burst_becomes_one_digest_and_group_timers(harness, receiver):
    r = await receiver()
    h = harness.configure(config(r.url, group_by=["type"], group_wait="30s", group_interval="5m", repeat_interval="1h"))
    await h.ingest(*[h.event(n=i) for i in range(50)])
    assert len(await h.rows(status="grouped")) == 50
    await h.digests_after(r, 30)  # group_wait: waiting for the burst to end
    (digest,) = await h.rows(kind="digest")
    assert digest["status"] == "delivered"
    payload = json.loads(r.requests[0]["body"])
    assert payload["subject"] == "50 × invoice.paid (acme)" and len(payload["events"]) == 50
    assert {x["digest_id"] for x in await h.rows(kind="event")} == {digest["id"]}
    assert all(x["status"] == "digested" for x in await h.rows(kind="event"))

    # A late event waits for group_interval after the last digest, not group_wait.
    await h.ingest(h.event(n=99))
    await h.digests_after(r, 300)
    # One event alone is rendered like a single notification, not as "1 × ...".
    assert json.loads(r.requests[1]["body"])["subject"] == "invoice.paid (acme)"

    # After repeat_interval of quiet the group is closed; a new one waits group_wait again.
    await h.tick(3600)
    assert (await h.db.fetchone("SELECT COUNT(*) AS n FROM notification_groups"))["n"] == 0
    await h.ingest(h.event(n=100))
    await h.digests_after(r, 30)


async def test_a_huge_burst_is_still_one_digest(harness, receiver):
    r = await receiver()
    h = harness.configure(config(r.url, group_by=["type"], group_wait="10s"))
    await h.ingest(*[h.event(n=i) for i in range(250)])
    await h.digests_after(r, 10)
    (digest,) = await h.rows(kind="digest")
    assert digest["event_count"] == 250 and len(json.loads(digest["events"])) == 200
    (payload,) = r.json_bodies()
    assert payload["subject"] == "250 × invoice.paid (acme)" and len(payload["events"]) == 200
    assert "... and 200 more" in payload["body"]
    assert len(await h.rows(digest_id=digest["id"])) == 250


async def test_groups_are_per_tenant_and_label(harness, receiver):
    r = await receiver()
    h = harness.configure(config(r.url, group_by=["data.account"], group_wait="10s"))
    await h.ingest(
        h.event(account="A"), h.event(account="A"), h.event(account="B"), h.event(tenant="other", account="A")
    )
    await h.digests_after(r, 10, digests=3)
    digests = {(d["tenant_id"], len(json.loads(d["events"]))) for d in await h.rows(status="delivered")}
    assert digests == {("acme", 2), ("acme", 1), ("other", 1)}


async def test_groups_survive_a_crash_during_group_wait(tmp_path, receiver):
    r = await receiver()
    clock = FakeClock()
    db = await open_db(tmp_path / "crash.db")
    async with aiohttp.ClientSession() as http:
        h = Harness(db, clock, http).configure(config(r.url, group_by=["type"], group_wait="30s"))
        await h.ingest(*[h.event() for _ in range(5)])
    await db.close()  # the process dies here: nothing in memory survives

    db = await open_db(tmp_path / "crash.db")  # a restart: migrations already applied
    async with aiohttp.ClientSession() as http:
        h = Harness(db, clock, http).configure(config(r.url, group_by=["type"], group_wait="30s"))
        await h.digests_after(r, 30)  # the group's timer survived too
    await db.close()
    assert len(r.json_bodies()[0]["events"]) == 5


async def test_throttle(harness, receiver):
    r = await receiver()
    h = harness.configure(config(r.url, throttle={"max": 3, "per": "1h"}))
    assert (await h.ingest(h.event(), h.event())).throttled == {}
    result = await h.ingest(*[h.event() for _ in range(3)])  # the window spans batches
    assert [x["status"] for x in await h.rows()] == ["pending"] * 3 + ["throttled"] * 2
    assert "throttle" in (await h.rows(status="throttled"))[0]["reason"]
    # Intake reports what it throttled per channel (the service adds it to the
    # counter); the dispatcher counts only what it throttles itself, digests.
    assert result.throttled == {"hook": 2}
    assert h.metric("throttled", "hook") == 0
    await h.tick(3601)
    await h.ingest(h.event())
    assert (await h.rows())[-1]["status"] == "pending"  # the window moved on


async def test_muted_by_time_interval_and_silence(harness, receiver):
    r = await receiver()
    raw = config(r.url, mute_time_intervals=["always"])
    raw["time_intervals"] = {"always": [{"weekdays": ["monday:sunday"]}]}
    h = harness.configure(raw)
    await h.ingest(h.event())
    await h.tick()
    (row,) = await h.rows()
    assert row["status"] == "muted" and row["reason"] == "mute_time_interval always" and r.requests == []

    h.configure(config(r.url))
    now = h.clock.time()
    await store.insert_silence(
        h.db,
        {
            "id": "sil_x",
            "tenant_id": "acme",
            "matchers": {"type": "invoice.*"},
            "starts_at": now,
            "ends_at": now + 60,
            "comment": "",
            "created_by": "t",
            "created_at": now,
        },
    )
    await h.ingest(h.event(), h.event(tenant="other"))
    rows = await h.rows()
    assert [(x["tenant_id"], x["status"], x["reason"]) for x in rows[1:]] == [
        ("acme", "muted", "silence sil_x"),
        ("other", "pending", ""),
    ]
    await h.tick(60)
    await h.ingest(h.event())  # the silence ended
    assert (await h.rows())[-1]["status"] == "pending"


async def test_transient_failures_retry_with_backoff_then_deliver(harness, receiver):
    r = await receiver()
    replies = [(500, {}), (429, {"Retry-After": "25"}), (200, {})]

    async def respond(request, body):
        status, headers = replies.pop(0)
        return web.Response(status=status, text="x", headers=headers)

    r.responder = respond
    h = harness.configure(config(r.url))
    await h.ingest(h.event())
    await h.tick()
    (row,) = await h.rows()
    assert row["status"] == "pending" and row["next_attempt_at"] == h.clock.time() + 10
    assert await h.tick(9) == 0  # not due yet
    await h.tick(1)
    (row,) = await h.rows()
    assert row["next_attempt_at"] == h.clock.time() + 25  # Retry-After wins over backoff
    await h.tick(25)
    (row,) = await h.rows()
    assert row["status"] == "delivered" and row["attempts"] == 3
    outcomes = [(a["outcome"], a["detail"][:8]) for a in (await store.attempts_of(h.db, [row["id"]]))[row["id"]]]
    assert outcomes == [("retry", "HTTP 500"), ("retry", "HTTP 429"), ("delivered", "HTTP 200")]
    assert h.metric("retried", "hook") == 2 and h.metric("sent", "hook") == 1


async def test_permanent_failure_is_not_retried_and_retries_give_up(harness, receiver):
    r = await receiver()
    status = {"code": 404}
    r.responder = lambda req, body: _respond(status["code"])
    h = harness.configure(config(r.url))
    await h.ingest(h.event())
    await h.tick()
    (row,) = await h.rows()
    assert row["status"] == "failed" and row["attempts"] == 1 and "HTTP 404" in row["last_error"]
    status["code"] = 503
    await h.ingest(h.event())
    for _ in range(4):
        await h.tick(60)
    row = (await h.rows())[-1]
    assert row["status"] == "failed" and row["attempts"] == 4
    assert row["last_error"].startswith("gave up after 4 attempts: HTTP 503")
    assert h.metric("failed", "hook") == 2


async def _respond(status):
    return web.Response(status=status, text="x")


async def test_render_error_still_notifies(harness, receiver):
    r = await receiver()
    h = harness.configure(config(r.url, subject="{{ data.amount / 0 }}"))
    await h.ingest(h.event(amount=5))
    await h.tick()
    (row,) = await h.rows()
    assert row["status"] == "delivered" and row["reason"].startswith("template render error")
    assert json.loads(r.requests[0]["body"])["subject"] == "invoice.paid (acme)"


async def test_a_crashing_channel_is_retried(harness):
    h = harness.configure(
        {"channels": {"boom": {"type": "exploding"}}, "routes": [{"match": {"type": "*"}, "channels": ["boom"]}]}
    )
    await h.ingest(h.event())
    await h.tick()
    (row,) = await h.rows()
    assert row["status"] == "pending" and "RuntimeError: bug in a third-party channel" in row["last_error"]


def test_backoff_doubles_up_to_max():
    # What notifications' retry settings compile into, through core's retry policy.
    schedule = exponential_schedule(10.0, 60.0, 6)
    assert [next_delay(schedule, n, stretch=None, cap=60.0) for n in range(1, 7)] == [10, 20, 40, 60, 60, None]
    # A channel's Retry-After: honoured up to max_backoff, never sooner than planned.
    assert next_delay(schedule, 1, retry_after=3600, stretch=None, cap=60.0) == 60.0
    assert next_delay(schedule, 2, retry_after=1, stretch=None, cap=60.0) == 20.0
    assert next_delay(schedule, 1, retry_after=30, stretch=None, cap=60.0) == 30.0


async def test_run_loop_does_not_wait_for_a_slow_channel(harness, receiver):
    """The daemon's loop: a hanging channel holds at most its per-channel share
    of the slots, the others keep flowing, and stopping waits for the sends in
    flight and records them."""
    import asyncio

    slow, fast = await receiver(), await receiver()
    release = asyncio.Event()

    async def hang(request, body):
        await release.wait()
        return web.Response(text="late")

    slow.responder = hang
    h = harness.configure(
        {
            "channels": {
                "slow": {"type": "webhook", "url": slow.url, "timeout": "30s"},
                "fast": {"type": "webhook", "url": fast.url},
            },
            "routes": [
                {"match": {"type": "slow.*"}, "channels": ["slow"]},
                {"match": {"type": "fast.*"}, "channels": ["fast"]},
            ],
        }
    )
    h.dispatcher.max_in_flight, h.dispatcher.max_per_channel = 4, 2
    stopping = asyncio.Event()
    task = asyncio.create_task(h.dispatcher.run(stopping))
    await h.ingest(*[h.event("slow.one") for _ in range(5)])
    h.dispatcher.wake()
    await slow.wait_for(2)
    await h.ingest(*[h.event("fast.one") for _ in range(6)])
    h.dispatcher.wake()
    await fast.wait_for(6, timeout=5)
    for _ in range(100):
        if len(await h.rows(status="delivered")) == 6:
            break
        await asyncio.sleep(0.02)
    assert [r["channel"] for r in await h.rows(status="delivered")] == ["fast"] * 6
    assert len(slow.requests) == 2  # its share, not every slot
    stopping.set()
    await asyncio.sleep(0.05)
    release.set()
    await asyncio.wait_for(task, 5)  # drains: the two slow sends are recorded before the loop ends
    assert len(await h.rows(status="delivered", channel="slow")) == 2
    assert len(await h.rows(status="pending", channel="slow")) == 3  # still queued, for the next start


async def test_smtp_4xx_is_retried_then_delivered_and_5xx_fails(harness, tmp_path):
    from notify_helpers import Certs, SmtpServer

    certs = Certs(tmp_path)
    server = SmtpServer(certs, "starttls").start()
    try:
        h = harness.configure(
            {
                "channels": {"mail": server.channel_config(certs.ca_file)},
                "routes": [{"match": {"type": "*"}, "channels": ["mail"]}],
                "retry": {"max_attempts": 5, "backoff": "30s", "max_backoff": "10m"},
            }
        )
        server.handler.rcpt_replies = ["451 4.7.1 Greylisted"]
        await h.ingest(h.event("webhook.endpoint.disabled", endpoint_id="we_1"))
        await h.tick()
        (row,) = await h.rows()
        assert row["status"] == "pending" and "SMTP 451" in row["last_error"]
        await h.tick(30)  # the backoff
        (row,) = await h.rows()
        assert row["status"] == "delivered" and row["attempts"] == 2
        assert server.messages[0]["Subject"] == "Webhook endpoint disabled: we_1"

        server.handler.rcpt_replies = ["550 5.1.1 No such user"]
        await h.ingest(h.event("webhook.endpoint.disabled", endpoint_id="we_2"))
        await h.tick()
        row = (await h.rows())[-1]
        assert row["status"] == "failed" and row["attempts"] == 1 and "SMTP 550" in row["last_error"]
        await h.tick(3600)
        assert (await h.rows())[-1]["attempts"] == 1 and len(server.messages) == 1  # never retried
    finally:
        server.stop()
