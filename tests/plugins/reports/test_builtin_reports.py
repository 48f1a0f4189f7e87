"""The six built-in reports, compiled by the builder and run against data made
through the real API of a running daemon (webhooks delivered to real receivers,
notifications sent, statements imported and reconciled): the figures are
checked, decimals are exact, and a tenant's report never shows another's rows."""

from __future__ import annotations

import datetime as dt
import sqlite3
from decimal import Decimal

import pytest
from aiohttp import web

from tierd.plugins.reports import core_source, pgread
from tierd.plugins.reports.builder import load_reports, stream
from tierd.testing import ADMIN_TOKEN, LocalDaemon, Receiver, eventually

TODAY = dt.datetime.now(dt.UTC).date()


def day(n: int) -> str:
    return (TODAY - dt.timedelta(days=n)).isoformat()


CSV_FORMAT = {
    "columns": {
        "booking_date": "date",
        "amount": "amount",
        "currency": "currency",
        "counterparty_name": "name",
        "remittance": "ref",
    }
}
STATEMENT = [
    (day(3), "100.00", "Alpha AG", "INV-1"),
    (day(3), "0.10", "Beta", "R-2"),
    (day(5), "0.20", "Gamma", "R-3"),
    (day(20), "50.05", "Delta", "R-4"),
    (day(45), "33.33", "Epsilon", "R-5"),
    (day(75), "12.34", "Zeta", "R-6"),
    (day(200), "1000000.01", "Eta", "R-7"),
]
LEDGER = [
    {"external_id": "E1", "date": day(3), "amount": "100.00", "counterparty": "Alpha AG", "reference": "INV-1"},
    {"external_id": "E4", "date": day(100), "amount": "50.00", "counterparty": "Nobody", "reference": "Q-9"},
    {"external_id": "E8", "date": day(10), "amount": "7.77", "counterparty": "Theta", "reference": "LX"},
]


def csv(rows) -> bytes:
    return ("date,amount,currency,name,ref\n" + "".join(f"{d},{a},EUR,{n},{r}\n" for d, a, n, r in rows)).encode()


def config(chat_ok: str, chat_down: str) -> dict:
    return {
        # The builder is what is tested: the reports plugin's own half is not needed here.
        "plugins": {"disabled": ["reports"]},
        "webhooks": {
            "retry_schedule": ["0s", "1s"],
            "allow_http": True,
            "allow_destinations": ["127.0.0.1/32"],
            "timeout": "2s",
        },
        "notifications": {
            "channels": {
                "chat-ok": {"type": "slack", "url": chat_ok},
                "chat-down": {"type": "slack", "url": chat_down},
                "logbook": {"type": "log"},
            },
            "routes": [
                {
                    "name": "paid",
                    "match": {"type": "invoice.paid"},
                    "channels": ["chat-ok", "chat-down"],
                    "continue": True,
                },
                {"name": "all", "match": {"type": "invoice.*"}, "channels": ["logbook"]},
            ],
            "retry": {"max_attempts": 2, "backoff": "200ms", "max_backoff": "200ms"},
        },
        "reconciliation": {"csv_formats": {"simple": CSV_FORMAT}},
    }


async def fail(request, body):
    return web.Response(status=500, text="down")


@pytest.fixture
async def world(tmp_path):
    ok, flaky, down, ok2, chat_ok, chat_down = [await Receiver().start() for _ in range(6)]
    down.responder = chat_down.responder = fail

    async def flaky_once(request, body):
        return web.Response(status=500 if len(flaky.requests) == 1 else 200)

    flaky.responder = flaky_once
    d = LocalDaemon(tmp_path, config(chat_ok.url, chat_down.url))
    await d.start()
    try:
        await d.tenant("acme")
        await d.tenant("globex")
        endpoints = {}
        for name, receiver, tenant in (("ok", ok, "acme"), ("flaky", flaky, "acme"), ("down", down, "acme"),
                                       ("ok2", ok2, "globex")):  # fmt: skip
            status, body = await d.call(
                "POST", "/v1/webhooks", {"url": receiver.url + "/" + name, "event_types": ["invoice.*"]}, tenant=tenant
            )
            assert status == 201, body
            endpoints[name] = body["id"]
        ends = (dt.datetime.now(dt.UTC) + dt.timedelta(hours=1)).isoformat()
        status, body = await d.call(
            "POST", "/v1/notifications/silences", {"matchers": {"type": "invoice.sent"}, "ends_at": ends}, tenant="acme"
        )
        assert status == 201, body
        for _ in range(2):
            await d.publish("acme", "invoice.paid", {"amount": "10.00"})
        await d.publish("acme", "invoice.sent", {"amount": "1.00"})
        await d.publish("globex", "invoice.paid", {"amount": "99.00"})
        await d.publish("globex", "globex.secret", {})

        async def done():
            row = await d.daemon.db.fetchone(
                "SELECT (SELECT COUNT(*) FROM webhook_deliveries WHERE status IN ('pending', 'inflight'))"
                " + (SELECT COUNT(*) FROM notifications WHERE status IN ('pending', 'grouped')) AS n"
            )
            return row["n"] == 0

        await d.settled()
        await eventually(done, timeout=30, what="deliveries and notifications to be done")
        await reconcile(d)
        yield d, endpoints
    finally:
        await d.stop()
        for r in (ok, flaky, down, ok2, chat_ok, chat_down):
            await r.close()


async def reconcile(d):
    base = "/v1/reconciliation/accounts"
    for tenant in ("acme", "globex"):
        status, body = await d.call(
            "POST", base, {"id": "main", "currency": "EUR", "csv_format": "simple"}, tenant=tenant
        )
        assert status == 201, body
    d.recon = {}
    for tenant, lines in (("acme", STATEMENT), ("globex", [(day(1), "999.99", "Secret", "G-1")])):
        headers = {"Authorization": f"Bearer {ADMIN_TOKEN}", "Tierd-Tenant": tenant, "Content-Type": "text/csv"}
        async with d.session.post(
            d.url + base + "/main/statements?filename=s.csv", data=csv(lines), headers=headers
        ) as resp:
            assert resp.status in (200, 201), await resp.text()
    status, body = await d.call("POST", base + "/main/ledger", {"entries": LEDGER}, tenant="acme")
    assert status in (200, 201), body
    status, run = await d.call("POST", base + "/main/runs", tenant="acme")
    assert status in (200, 201), run
    d.recon["run"] = run
    status, items = await d.call("GET", base + "/main/open-items", tenant="acme")
    line4 = next(x for x in items["statement_lines"] if x["amount"] == "50.05")
    entry4 = next(x for x in items["ledger_entries"] if x["external_id"] == "E4")
    status, match = await d.call(
        "POST",
        base + "/main/matches",
        {"statement_line_ids": [line4["id"]], "ledger_entry_ids": [entry4["id"]], "adjustment": "0.05"},
        tenant="acme",
    )
    assert status == 201, match
    status, items = await d.call("GET", base + "/main/open-items", tenant="acme")
    d.recon["open"] = items
    status, run2 = await d.call("POST", base + "/main/runs", tenant="globex")
    assert status in (200, 201), run2


def registries(d):
    regs = d.daemon.registries
    for source in core_source.SOURCES:
        regs.report_sources.setdefault(source.name, source)
    regs.reports.setdefault("event_volume", core_source.EVENT_VOLUME)
    return regs


async def run(d, name: str, tenant: str | None, raw=None, timezone: str = "UTC") -> list[dict]:
    report = load_reports(registries(d), {})[name]
    params = report.parse_params(raw or {}, timezone=timezone)
    db = d.daemon.db
    query = report.compile(tenant, params, 10_000, timezone=timezone, dialect=db.dialect)

    def read(conn: sqlite3.Connection | pgread.PgReader) -> list[tuple]:
        return list(stream(conn, report, query))

    # As a run reads them, on the backend the daemon runs on (TIERD_TEST_STORAGE).
    if db.dialect == "sqlite":
        rows = await db.read_in_thread(read, budget=30)
    else:
        rows = await pgread.read_in_thread(db, read, budget=30)
    names = [c.name for c in query.columns]
    return [dict(zip(names, row, strict=True)) for row in rows]


async def test_builtin_reports(world):
    d, endpoints = world

    # 1. webhook_deliveries: per endpoint.
    rows = {r["endpoint_id"]: r for r in await run(d, "webhook_deliveries", "acme")}
    assert set(rows) == {endpoints["ok"], endpoints["flaky"], endpoints["down"]}
    ok, flaky, down = rows[endpoints["ok"]], rows[endpoints["flaky"]], rows[endpoints["down"]]
    figures = ("deliveries", "attempts", "succeeded", "failed", "waiting", "failed_attempts", "success_rate", "state")
    assert [ok[k] for k in figures] == [3, 3, 3, 0, 0, 0, "1", "healthy"]
    assert [flaky[k] for k in figures] == [3, 4, 3, 0, 0, 1, "1", "healthy"]
    assert [down[k] for k in figures] == [3, 6, 0, 3, 0, 6, "0", "failing"]
    assert ok["failing_since"] is None and isinstance(down["failing_since"], float)
    assert ok["latency_p50_ms"] is not None and Decimal(ok["latency_p95_ms"]) >= Decimal(ok["latency_p50_ms"])
    assert ok["url"].endswith("/ok")
    # One endpoint only, by parameter.
    only = await run(d, "webhook_deliveries", "acme", {"endpoint": endpoints["down"]})
    assert [r["endpoint_id"] for r in only] == [endpoints["down"]]
    # Another tenant's endpoint as the parameter: nothing.
    assert await run(d, "webhook_deliveries", "acme", {"endpoint": endpoints["ok2"]}) == []
    # The admin sees every tenant's.
    assert {r["endpoint_id"] for r in await run(d, "webhook_deliveries", None)} == set(endpoints.values())

    # 2. webhook_failures: each delivery that gave up.
    failures = await run(d, "webhook_failures", "acme")
    assert len(failures) == 3
    for row in failures:
        assert row["endpoint_id"] == endpoints["down"] and row["state"] == "gave_up"
        assert row["attempts"] == 2 and row["last_status_code"] == 500 and row["event_type"].startswith("invoice.")
        assert row["last_error"] and row["next_retry_at"] is None
    assert await run(d, "webhook_failures", "acme", {"state": "retrying"}) == []
    assert await run(d, "webhook_failures", "globex") == []

    # 3. notification_activity: per channel and route.
    activity = {(r["channel"], r["route"]): r for r in await run(d, "notification_activity", "acme")}
    keys = ("notifications", "sent", "failed", "muted", "digested", "retried")
    assert {k: [v[f] for f in keys] for k, v in activity.items()} == {
        ("chat-down", "paid"): [2, 0, 2, 0, 0, 2],
        ("chat-ok", "paid"): [2, 2, 0, 0, 0, 0],
        ("logbook", "all"): [3, 2, 0, 1, 0, 0],
    }
    globex = {(r["channel"], r["route"]): r["notifications"] for r in await run(d, "notification_activity", "globex")}
    assert globex == {("chat-down", "paid"): 1, ("chat-ok", "paid"): 1, ("logbook", "all"): 1}
    only = await run(d, "notification_activity", "acme", {"channel": "chat-ok"})
    assert [(r["channel"], r["sent"]) for r in only] == [("chat-ok", 2)]

    # 4. reconciliation_summary: per account and run, matched by hand until the next run.
    run1 = d.recon["run"]
    counts = run1["counts"]
    [summary] = await run(d, "reconciliation_summary", "acme")
    assert summary["account"] == "main" and summary["run_id"] == run1["id"]
    assert summary["lines_imported"] == len(STATEMENT)
    assert summary["auto_matched"] == counts["matches"] >= 1
    assert summary["matched_by_hand"] == 1
    assert summary["suggestions"] == counts["suggestions"]
    assert summary["lines_open"] == counts["bank_lines_open"]
    assert summary["entries_open"] == counts["ledger_entries_open"]
    assert Decimal(summary["match_rate"]) == round(
        Decimal(counts["bank_lines_matched"]) / Decimal(counts["bank_lines_open_before"]), 4
    )
    assert summary["adjustments_total"] == "0.05"  # "0" of the automatic match + "0.05" by hand, exactly
    globex_summary = await run(d, "reconciliation_summary", "globex")
    assert [r["lines_imported"] for r in globex_summary] == [1]

    # 5. open_items_aging: open items of both sides by age, amounts exact.
    expected: dict[tuple, list] = {}
    for side, key, date_key in (("statement", "statement_lines", "booking_date"), ("ledger", "ledger_entries", "date")):
        for item in d.recon["open"][key]:
            age = (TODAY - dt.date.fromisoformat(item[date_key])).days
            bucket = next(b for limit, b in ((7, "0-7"), (30, "8-30"), (60, "31-60"), (90, "61-90")) if age <= limit) \
                if age <= 90 else ">90"  # fmt: skip
            entry = expected.setdefault((side, item["currency"], bucket), [0, Decimal(0)])
            entry[0] += 1
            entry[1] += Decimal(item["amount"])
    aging = await run(d, "open_items_aging", "acme")
    got = {(r["side"], r["currency"], r["age"]): [r["items"], Decimal(r["amount"])] for r in aging}
    assert got == expected
    assert got[("statement", "EUR", "0-7")] == [2, Decimal("0.30")]
    assert [r["amount"] for r in aging if r["age"] == ">90"] == ["1000000.01"]
    assert ("statement", "EUR", "8-30") not in got  # matched by hand
    assert all(r["amount"] != "999.99" for r in aging)
    assert {r["age"] for r in await run(d, "open_items_aging", "globex")} == {"0-7"}

    # 6. event_volume: events per tenant, type and day.
    volume = await run(d, "event_volume", "acme")
    assert {r["tenant"] for r in volume} == {"acme"}
    per_type = {r["type"]: r["events"] for r in volume}
    assert per_type["invoice.paid"] == 2 and per_type["invoice.sent"] == 1
    assert "globex.secret" not in per_type
    counted = await d.daemon.db.fetchall("SELECT type, COUNT(*) AS n FROM events WHERE tenant_id='acme' GROUP BY type")
    truth = {r["type"]: r["n"] for r in counted}
    assert per_type == truth
    assert {r["day"] for r in volume} == {TODAY.isoformat()}
    everyone = await run(d, "event_volume", None)
    assert {r["tenant"] for r in everyone} == {"acme", "globex"}
    assert await run(d, "event_volume", "acme", {"type": "globex.secret"}) == []
