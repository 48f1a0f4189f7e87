"""``tierd db copy --to postgresql://...``: a stopped node's SQLite database,
with data in every built-in plugin, moved into an empty PostgreSQL database
that a daemon then serves the same answers from; and the refusals (a daemon
running, a target not empty, a bad URL, a value PostgreSQL cannot take: the
target is left empty)."""

from __future__ import annotations

import asyncio
import json
import sqlite3
import time

import pytest
from conftest import sqlite_only_plugin

from tierd.core.dbcopy import CopyRefused, check_versions
from tierd.testing import TEST_STORAGE_ENV, DaemonProcess, PostgresServer, eventually

BUILTINS = ["webhooks", "notifications", "reconciliation", "reports"]
BASE = "/v1/reconciliation/accounts/main-eur"
COLUMNS = ("booking_date", "amount", "currency", "counterparty_name", "remittance", "bank_reference")


@pytest.fixture(autouse=True)
def on_sqlite(monkeypatch):
    """The source daemons run on SQLite whatever ``TIERD_TEST_STORAGE`` says."""
    monkeypatch.delenv(TEST_STORAGE_ENV, raising=False)


def config(tmp_path, receiver_url: str | None = None) -> dict:
    """Every built-in plugin with something to do."""
    return {
        "webhooks": {"allow_http": True, "allow_destinations": ["127.0.0.1/32"], "retry_schedule": ["0s", "1s"]},
        "notifications": {
            "channels": {"audit": {"type": "log"}},
            "routes": [{"name": "audit", "match": {"type": "invoice.*"}, "channels": ["audit"]}],
        },
        "reconciliation": {
            "csv_formats": {"plain": {"columns": {c: c for c in COLUMNS}}},
            "accounts": [
                {
                    "id": "main-eur",
                    "tenant": "acme",
                    "currency": "EUR",
                    "csv_format": "plain",
                    "rules": [{"rule": "reference"}],
                }
            ],
        },
        "reports": {
            "definitions": {
                "events_by_type": {
                    "title": "Events by type",
                    "source": "core.events",
                    "columns": ["type", {"name": "events", "expr": "count()"}],
                    "group_by": ["type"],
                    "order_by": ["type"],
                }
            }
        },
    }


def copy(d: DaemonProcess, url: str, *args: str):
    return d.cli("db", "copy", "--to", url, *args)


def tables_in(pg: PostgresServer, name: str) -> str:
    return pg.psql(
        "SELECT string_agg(tablename, ',') FROM pg_tables WHERE schemaname = 'public'", database=name
    ).strip()


async def fill(d: DaemonProcess, hook_url: str) -> dict:
    """Data in every plugin, through the API; what was made, for the comparison."""
    token = await asyncio.to_thread(d.create_tenant, "acme")

    async def call(method, path, body=None, **kwargs):
        status, answer = await d.arequest(method, path, body, token=token, **kwargs)
        assert status < 300, (status, answer)
        return answer

    endpoint = await call("POST", "/v1/webhooks", {"url": hook_url, "event_types": ["invoice.*"]})
    events = [
        await call("POST", "/v1/events", {"type": "invoice.paid", "id": f"k{i}", "data": {"i": i}}) for i in range(5)
    ]
    statement = "\n".join(
        [",".join(COLUMNS), "2026-11-10,100.00,EUR,Mueller Bau,INV-1,BK-1", "2026-11-11,75.00,EUR,Kappa,INV-2,BK-2"]
    ).encode()
    await call(
        "POST",
        f"{BASE}/statements?format=csv&filename=nov.csv",
        data=statement,
        headers={"Content-Type": "application/octet-stream"},
    )
    await call(
        "POST",
        f"{BASE}/ledger",
        {"entries": [{"external_id": "E-1", "date": "2026-11-10", "amount": "100.00", "reference": "INV-1"}]},
    )
    await call("POST", f"{BASE}/runs")
    run = await call("POST", "/v1/reports/events_by_type/runs", {"format": "csv"})

    async def settled():
        stats = await call("GET", f"/v1/webhooks/{endpoint['id']}/stats")
        report = await call("GET", f"/v1/reports/runs/{run['id']}")
        sent = await call("GET", "/v1/notifications?limit=100")
        done = stats["deliveries"].get("succeeded") == 5 and report["status"] == "delivered"
        return done and len(sent["data"]) == 5

    await eventually(settled, 30, what="deliveries, the report run and notifications")
    return {"token": token, "endpoint": endpoint, "events": events, "run": run}


async def answers(d: DaemonProcess, made: dict) -> dict:
    """What the API says about the data, on either backend."""
    token = made["token"]

    async def get(path):
        status, body = await d.arequest("GET", path, token=token)
        assert status == 200, (path, body)
        return body

    stats = await get(f"/v1/webhooks/{made['endpoint']['id']}/stats")
    return {
        "events": await get("/v1/events?limit=100"),
        "deliveries": await get(f"/v1/webhooks/{made['endpoint']['id']}/deliveries?limit=100"),
        "stats": {"deliveries": stats["deliveries"], "attempts": stats["attempts"]["by_outcome"]},
        "notifications": await get("/v1/notifications?limit=100"),
        "matches": await get(f"{BASE}/matches"),
        "open": await get(f"{BASE}/open-items"),
        "run": await get(f"/v1/reports/runs/{made['run']['id']}"),
    }


async def test_a_copy_serves_the_same_data_from_postgresql(pg, tmp_path, receiver):
    hooks = await receiver()
    d = DaemonProcess(tmp_path, config(tmp_path))
    d.start()
    try:
        made = await fill(d, hooks.url + "/hook")
        before = await answers(d, made)
    finally:
        await asyncio.to_thread(d.stop)
    sqlite_file = tmp_path / "tierd.db"
    con = sqlite3.connect(sqlite_file)
    with con:  # as if the newest audit rows were deleted: AUTOINCREMENT never gives their ids again
        con.execute("UPDATE sqlite_sequence SET seq = seq + 100 WHERE name = 'recon_audit'")
    [[audit_seq]] = con.execute("SELECT seq FROM sqlite_sequence WHERE name = 'recon_audit'").fetchall()
    con.close()
    unchanged = sqlite_file.read_bytes()

    url = pg.create_database("moved")
    out = await asyncio.to_thread(copy, d, url, "--json")
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout)
    assert result["ok"] and result["not_utf8"] == 0
    counts = {t["table"]: (t["sqlite"], t["postgresql"]) for t in result["tables"]}
    con = sqlite3.connect(sqlite_file)
    for table, (on_sqlite, on_pg) in counts.items():
        assert on_sqlite == on_pg == con.execute(f'SELECT COUNT(*) FROM "{table}"').fetchone()[0], table
    con.close()
    # Every plugin's tables came along, with their rows (the counters as they were, not counted again).
    assert counts["webhook_deliveries"][1] == counts["webhook_attempts"][1] == counts["notifications"][1] == 5
    assert counts["webhook_delivery_counts"][1] == 1 and counts["tenants"][1] == 1
    assert counts["recon_bank_lines"][1] == 2 and counts["recon_matches"][1] == 1 and counts["report_runs"][1] == 1
    assert sqlite_file.read_bytes() == unchanged  # only read
    # Identity sequences go past the largest id ever given (nor does the copy give one again).
    next_audit = "SELECT nextval(pg_get_serial_sequence('recon_audit', 'id'))"
    assert pg.psql(next_audit, database="moved").strip() == str(audit_seq + 1)
    next_delivery = "SELECT nextval(pg_get_serial_sequence('webhook_deliveries', 'seq'))"
    assert pg.psql(next_delivery, database="moved").strip() == "6"

    (tmp_path / "pg").mkdir()
    on_pg = DaemonProcess(tmp_path / "pg", config(tmp_path) | {"storage": {"url": url}})
    on_pg.start()
    try:
        after = await answers(on_pg, made)
        assert after == before
        token = made["token"]
        # The idempotency key of an old event answers 200 with that event.
        status, again = await on_pg.arequest("POST", "/v1/events", {"type": "invoice.paid", "id": "k2"}, token=token)
        assert status == 200 and again == made["events"][2]
        # New rows take ids after the copied ones (the sequences were moved on) and are delivered.
        status, new = await on_pg.arequest("POST", "/v1/events", {"type": "invoice.paid", "data": {}}, token=token)
        assert status == 202 and new["seq"] == max(e["seq"] for e in before["events"]["data"]) + 1
        await hooks.wait_for(6)
        stats_path = f"/v1/webhooks/{made['endpoint']['id']}/stats"

        async def six():
            status, stats = await on_pg.arequest("GET", stats_path, token=token)
            return stats["deliveries"].get("succeeded") == 6

        await eventually(six, 20, what="the new event's delivery")
    finally:
        await asyncio.to_thread(on_pg.stop)


def test_the_text_output_shows_counts_and_the_config_to_use(pg, tmp_path):
    d = DaemonProcess(tmp_path, {"plugins": {"disabled": BUILTINS}})
    with d:
        d.create_tenant("acme")
    url = pg.create_database("text")
    out = copy(d, url.replace("postgres@", "postgres:hunter2@"))  # trust authentication ignores the password
    assert out.returncode == 0, out.stderr
    assert "tenants" in out.stdout and "ok" in out.stdout and "MISMATCH" not in out.stdout
    assert "url: ${file:/run/credentials/tierd.service/db-url}" in out.stdout
    assert "left untouched" in out.stdout
    assert "tenants: 1 of 1 rows" in out.stderr
    assert "hunter2" not in out.stdout + out.stderr and ":***@" in out.stderr


def test_refused_while_a_daemon_runs_and_into_a_database_not_empty(pg, tmp_path):
    url = pg.create_database("busy")
    d = DaemonProcess(tmp_path, {"plugins": {"disabled": BUILTINS}})
    with d:
        out = copy(d, url)
        assert out.returncode == 1 and "in use" in out.stderr and "stop it first" in out.stderr
    assert tables_in(pg, "busy") == ""
    assert copy(d, url).returncode == 0
    out = copy(d, url)
    assert out.returncode == 1 and "not empty" in out.stderr and "tenants" in out.stderr
    assert "schema_migrations" in out.stderr


def test_a_bad_url_is_refused_with_the_reason(pg, tmp_path):
    d = DaemonProcess(tmp_path, {"plugins": {"disabled": BUILTINS}})
    with d:
        pass
    out = copy(d, "sqlite:///tmp/x.db")
    assert out.returncode == 1 and "PostgreSQL URL" in out.stderr
    out = copy(d, pg.database_url("no_such_database"))
    assert out.returncode == 1 and "cannot connect" in out.stderr and "no_such_database" in out.stderr
    out = copy(d, "postgresql://postgres:pw@127.0.0.1:1/x")
    assert out.returncode == 1 and "cannot connect" in out.stderr and "pw@" not in out.stderr


def test_a_plugin_without_postgresql_migrations_is_named(pg, tmp_path):
    d = DaemonProcess(tmp_path, {"plugins": {"disabled": BUILTINS}}, **sqlite_only_plugin(tmp_path))
    with d:
        pass
    out = copy(d, pg.create_database("olden"))
    assert out.returncode == 1 and "'olden' has no postgresql migrations" in out.stderr
    assert "disable the plugin that provides it" in out.stderr
    assert tables_in(pg, "olden") == ""


def test_a_value_postgresql_refuses_leaves_the_target_empty(pg, tmp_path):
    d = DaemonProcess(tmp_path, {"plugins": {"disabled": BUILTINS}})
    with d:
        d.create_tenant("acme")
    con = sqlite3.connect(tmp_path / "tierd.db")
    with con:
        con.execute("UPDATE tenants SET created_at = 'yesterday'")  # SQLite's affinity keeps the text
    url = pg.create_database("refused")
    out = copy(d, url)
    assert out.returncode == 1 and "tenants.created_at" in out.stderr and "'yesterday'" in out.stderr
    assert tables_in(pg, "refused") == ""  # one transaction: nothing of the schema either
    with con:  # a NUL character: SQLite keeps it, PostgreSQL's text refuses it
        con.execute("UPDATE tenants SET created_at = 1764633600")
        con.execute("UPDATE tokens SET description = 'a' || char(0) || 'b'")
    out = copy(d, url)
    assert out.returncode == 1 and "tokens: PostgreSQL refused a row" in out.stderr, out.stderr
    assert tables_in(pg, "refused") == ""
    with con:  # bytes that are not UTF-8 (stored by an older tierd) are copied, replaced and counted
        con.execute("UPDATE tokens SET description = CAST(x'41ff42' AS TEXT)")
    con.close()
    out = copy(d, url, "--json")  # run again once the cause is fixed
    assert out.returncode == 0 and json.loads(out.stdout)["not_utf8"] == 1, out.stderr
    assert pg.psql("SELECT description FROM tokens", database="refused").strip() == "A\ufffdB"


def test_a_database_behind_or_ahead_of_the_code_is_refused():
    code = {"core": ["a", "b"], "webhooks": ["a"]}
    check_versions({"core": 2, "webhooks": 1}, code)
    with pytest.raises(CopyRefused, match=r"behind this tierd \(core 1 < 2\): run `tierd migrate` first"):
        check_versions({"core": 1, "webhooks": 1}, code)
    with pytest.raises(CopyRefused, match="newer tierd"):
        check_versions({"core": 3, "webhooks": 1}, code)
    with pytest.raises(CopyRefused, match="tables of legacy, which no loaded plugin provides"):
        check_versions({"core": 2, "webhooks": 1, "legacy": 4}, code)


def test_an_owner_who_is_not_superuser_copies_with_the_tables_triggers_off(pg, tmp_path):
    """Without the right to set ``session_replication_role``, the copy turns
    off each table's own triggers instead: the counters are copied as they
    were (an endpoint's insert trigger would otherwise add a counters row
    before the copied one, and the deliveries would be counted twice)."""
    hooks = {"allow_http": True, "allow_destinations": ["127.0.0.1/32"], "retry_schedule": ["0s", "1h"]}
    d = DaemonProcess(tmp_path, {"plugins": {"disabled": BUILTINS[1:]}, "webhooks": hooks})
    with d:
        token = d.create_tenant("acme")
        status, endpoint = d.request("POST", "/v1/webhooks", {"url": "http://127.0.0.1:9/closed"}, token=token)
        assert status == 201, endpoint
        for i in range(3):
            assert d.request("POST", "/v1/events", {"type": "order.paid", "data": {"i": i}}, token=token)[0] == 202
        time.sleep(1)  # some attempts made, whatever their number
    pg.psql("CREATE ROLE owner LOGIN")
    pg.psql("CREATE DATABASE owned OWNER owner")
    url = pg.database_url("owned").replace("postgres@", "owner@")
    out = copy(d, url)
    assert out.returncode == 0, out.stderr
    con = sqlite3.connect(tmp_path / "tierd.db")
    sql = "SELECT endpoint_id, pending, inflight, succeeded, failed FROM webhook_delivery_counts"
    [counted] = con.execute(sql).fetchall()
    con.close()
    assert sum(counted[1:]) == 3
    assert pg.psql(sql, database="owned").strip() == "|".join(map(str, counted))
    # The triggers are on again for the daemon that runs on the copy.
    enabled = "SELECT DISTINCT tgenabled FROM pg_trigger WHERE NOT tgisinternal"
    assert pg.psql(enabled, database="owned").split() == ["O"]
