"""The daemon as a real process: systemd protocol, API, reload, shutdown, durability."""

import os
import signal
import sqlite3
import stat
import subprocess
import sys
import time

import pytest
from conftest import ADMIN_TOKEN

from tierd.testing import on_postgresql


def count_events(daemon) -> int:
    return daemon.sql("SELECT COUNT(*) FROM events")[0][0]


def test_lifecycle_ready_reload_and_sigterm(tierd_daemon):
    d = tierd_daemon()
    assert d.notify.wait_for("READY=1")
    assert d.request("GET", "/healthz", token="") == (200, {"status": "ok"})
    assert d.request("GET", "/readyz", token="")[0] == 200

    # A good config change is applied on SIGHUP: RELOADING=1 then READY=1 again.
    before = len(d.notify.drain())
    d.write_config(d.config | {"logging": {"level": "DEBUG"}})
    d.proc.send_signal(signal.SIGHUP)
    reloading = d.notify.wait_for("RELOADING=1", start=before)
    assert "MONOTONIC_USEC=" in reloading
    d.notify.wait_for("READY=1", start=before + 1)
    deadline = time.monotonic() + 10
    while "configuration reloaded" not in d.logs() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert "configuration reloaded" in d.logs()

    # A bad config is refused with its errors logged; the daemon keeps serving.
    d.write_config("server:\n  listen: 127.0.0.1:1\nwebhookz: {}\n")
    d.proc.send_signal(signal.SIGHUP)
    deadline = time.monotonic() + 10
    while "reload refused" not in d.logs() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert "reload refused" in d.logs() and "webhookz" in d.logs()
    assert d.request("GET", "/healthz", token="")[0] == 200
    status, body = d.request("POST", "/v1/admin/reload", {})
    assert status == 422 and body["error"]["code"] == "config_invalid"
    assert any("webhookz" in e for e in body["error"]["details"])

    assert d.terminate() == 0
    assert any("STOPPING=1" in m for m in d.notify.drain())


def test_events_are_durable_idempotent_and_walled(tierd_daemon):
    d = tierd_daemon()
    acme = d.create_tenant("acme")
    other = d.create_tenant("other")

    status, first = d.request("POST", "/v1/events", {"type": "invoice.paid", "data": {"n": 1}, "id": "k1"}, token=acme)
    assert status == 202 and first["id"].startswith("evt_") and first["tenant"] == "acme"
    status, again = d.request("POST", "/v1/events", {"type": "invoice.paid", "data": {"n": 2}, "id": "k1"}, token=acme)
    assert status == 200 and again["id"] == first["id"] and again["data"] == {"n": 1}
    # The same key from another tenant is another event.
    status, theirs = d.request("POST", "/v1/events", {"type": "invoice.paid", "id": "k1"}, token=other)
    assert status == 202 and theirs["id"] != first["id"]

    assert d.request("GET", f"/v1/events/{first['id']}", token=acme)[0] == 200
    status, body = d.request("GET", f"/v1/events/{first['id']}", token=other)
    assert status == 404 and body["error"]["code"] == "not_found"
    status, listed = d.request("GET", "/v1/events", token=other)
    assert [e["id"] for e in listed["data"]] == [theirs["id"]]

    # kill -9 right after the 202s: every acknowledged event is still there.
    acked = [
        d.request("POST", "/v1/events", {"type": "order.created", "data": {"i": i}}, token=acme)[1]["id"]
        for i in range(50)
    ]
    d.kill9()
    d.start()
    status, listed = d.request("GET", "/v1/events?limit=500", token=acme)
    assert set(acked) <= {e["id"] for e in listed["data"]}


@pytest.mark.parametrize(
    "case",
    [
        ("no token", {}, None, "", 401, "unauthorized"),
        ("wrong token", {"type": "a.b"}, None, "tierd_wrong", 401, "unauthorized"),
        ("malformed json", None, b"{not json", "acme", 400, "invalid_json"),
        ("json array", None, b"[1,2]", "acme", 422, "invalid_body"),
        ("bad type", {"type": "Invoice Paid"}, None, "acme", 422, "invalid_body"),
        ("data not object", {"type": "a.b", "data": [1]}, None, "acme", 422, "invalid_body"),
        ("unknown field", {"type": "a.b", "tenant": "x"}, None, "acme", 422, "invalid_body"),
        ("empty body", None, b"", "acme", 422, "invalid_body"),
        ("oversized", None, b'{"type":"a.b","data":{"x":"' + b"x" * 300_000 + b'"}}', "acme", 413, "body_too_large"),
    ],
    ids=lambda c: c[0],
)
def test_bad_requests_get_json_errors_and_change_nothing(tierd_daemon, case):
    _, body, raw, who, status, code = case
    d = tierd_daemon()
    token = d.create_tenant("acme") if who == "acme" else who
    before = count_events(d)
    got_status, got = d.request("POST", "/v1/events", body, token=token, data=raw)
    assert got_status == status, got
    assert got["error"]["code"] == code and got["error"]["message"]
    assert count_events(d) == before


def test_api_surface(tierd_daemon):
    d = tierd_daemon()
    status, body = d.request("GET", "/v1/nope")
    assert status == 404 and body["error"]["code"] == "not_found"
    status, body = d.request("DELETE", "/healthz")
    assert status == 405 and body["error"]["code"] == "method_not_allowed"
    # A browser on this host, led by a rebinding DNS name, is refused.
    status, body = d.request("GET", "/v1/events", headers={"Host": "evil.example:8765"})
    assert status == 403 and body["error"]["code"] == "host_not_allowed"
    status, body = d.request("GET", "/v1/admin/tenants", headers={"Origin": "http://evil.example"})
    assert status == 403 and body["error"]["code"] == "origin_not_allowed"
    # Tenant tokens cannot use admin routes.
    token = d.create_tenant("acme")
    status, body = d.request("GET", "/v1/admin/tenants", token=token)
    assert status == 403 and body["error"]["code"] == "admin_only"
    # The admin token must name a tenant to act for one.
    status, body = d.request("POST", "/v1/events", {"type": "a.b"})
    assert status == 400 and body["error"]["code"] == "tenant_required"

    status, doc = d.request("GET", "/v1/openapi.json", token="")
    assert status == 200 and doc["openapi"].startswith("3.")
    assert "post" in doc["paths"]["/v1/events"]
    assert "/v1/webhooks" in doc["paths"]  # plugin routes are documented too

    status, body = d.request("GET", "/v1/admin/plugins")
    assert status == 200 and "tierd.plugins.webhooks" in {p["name"] for p in body["data"]}

    status, text = d.request("GET", "/metrics", token="")
    assert status == 200 and "tierd_events_accepted_total" in text

    if not on_postgresql():  # the SQLite file is the daemon's user's alone
        mode = stat.S_IMODE(os.stat(d.config["storage"]["path"]).st_mode)
        assert mode == 0o600
    # Tokens never reach the log.
    assert token not in d.logs() and ADMIN_TOKEN not in d.logs()


def test_cli_tenants_tokens_db_and_config(tierd_daemon, tmp_path):
    d = tierd_daemon(start=False)
    r = d.cli("tenants", "create", "acme")
    assert r.returncode == 0, r.stderr
    r = d.cli("tenants", "create", "acme")
    assert r.returncode != 0 and "tenant_exists" in r.stderr
    r = d.cli("tokens", "create", "--tenant", "acme")
    token = r.stdout.strip()
    assert r.returncode == 0 and token.startswith("tierd_")
    r = d.cli("tokens", "list", "--json")
    assert r.returncode == 0 and token not in r.stdout
    token_id = __import__("json").loads(r.stdout)[0]["id"]

    d.start()
    assert d.request("GET", "/v1/events", token=token)[0] == 200
    r = d.cli("tokens", "revoke", token_id)
    assert r.returncode == 0, r.stderr
    time.sleep(5.5)  # the API caches token lookups for 5 s
    assert d.request("GET", "/v1/events", token=token)[0] == 401

    r = d.cli("db", "status", "--json")
    assert r.returncode == 0 and '"pending": 0' in r.stdout
    backup = tmp_path / "backup.db"
    r = d.cli("db", "backup", str(backup))
    if on_postgresql():  # PostgreSQL's own tools back it up: the command says which
        assert r.returncode != 0 and "pg_dump" in r.stderr and not backup.exists()
    else:
        assert r.returncode == 0, r.stderr
        with sqlite3.connect(backup) as conn:
            assert conn.execute("SELECT id FROM tenants").fetchall() == [("acme",)]

    r = d.cli("plugins")
    assert r.returncode == 0 and "tierd.plugins.webhooks" in r.stdout and "built-in" in r.stdout


def test_check_config_reports_every_error_with_line(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("server:\n  listen: 127.0.0.1:8765\n  admin_tokn: x\nstorage:\n  path: 5\nwebhook: {}\n")
    r = subprocess.run(
        [sys.executable, "-m", "tierd", "--config", str(bad), "check-config"], capture_output=True, text=True
    )
    assert r.returncode == 1
    assert f"{bad}:3" in r.stderr and "admin_token" in r.stderr  # suggestion for the typo
    assert "webhooks" in r.stderr  # did you mean
    assert "Traceback" not in r.stderr
    r = subprocess.run(
        [sys.executable, "-m", "tierd", "--config", str(bad), "run"], capture_output=True, text=True, timeout=30
    )
    assert r.returncode == 1 and "refusing to start" in r.stderr


@pytest.mark.sqlite_only("the built-in defaults are a SQLite file (./var/tierd.db)")
def test_run_without_any_config_file(tmp_path):
    """`tierd run` in an empty directory starts on built-in defaults (./var/tierd.db)."""
    from conftest import NotifySocket

    notify = NotifySocket(tmp_path)
    env = os.environ.copy() | {"NOTIFY_SOCKET": str(notify.path)}
    env.pop("TIERD_CONFIG", None)
    proc = subprocess.Popen(
        [sys.executable, "-m", "tierd", "run"], cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    try:
        notify.wait_for("READY=1", timeout=20)
        assert (tmp_path / "var" / "tierd.db").exists()
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(20) == 0
        notify.close()
