"""The daemon on PostgreSQL (``storage.url``): core's tables, intake and its
idempotency keys, surviving kill -9, the operator's commands, and a plugin
whose migrations are SQLite's only refused by name.

The plugins' own tests run on PostgreSQL with ``TIERD_TEST_STORAGE=postgresql``
(see docs/postgresql.md); these tests need no such switch.
"""

from __future__ import annotations

import time

from conftest import sqlite_only_plugin

from tierd.testing import DaemonProcess

BUILTINS = ["webhooks", "notifications", "reconciliation", "reports"]


def on_pg(tmp_path, url: str, **kwargs) -> DaemonProcess:
    return DaemonProcess(tmp_path, {"storage": {"url": url}, "plugins": {"disabled": BUILTINS}}, **kwargs)


def test_events_and_their_keys_live_in_postgresql_and_survive_kill_9(pg, tmp_path):
    url = pg.create_database("intake")
    d = on_pg(tmp_path, url).start()
    try:
        assert f"(database PostgreSQL at {url})" in d.logs()
        assert not (tmp_path / "tierd.db").exists()  # nothing went to SQLite
        token = d.create_tenant("acme")
        statuses = [
            d.request("POST", "/v1/events", {"type": "order.created", "id": f"k{i % 3}", "data": {"i": i}}, token=token)
            for i in range(6)
        ]
        assert [s for s, _ in statuses] == [202, 202, 202, 200, 200, 200]
        assert [b["id"] for _, b in statuses[3:]] == [b["id"] for _, b in statuses[:3]]  # the first event's answer

        d.kill9()
        d.start()
        status, page = d.request("GET", "/v1/events?limit=10", token=token)
        assert [e["data"]["i"] for e in page["data"]] == [0, 1, 2]
        # A retried request after the restart still finds its first event.
        assert d.request("POST", "/v1/events", {"type": "order.created", "id": "k1"}, token=token)[1] == statuses[1][1]
        assert d.request("POST", "/v1/events", {"type": "order.created"}, token=token)[1]["seq"] == 4
    finally:
        d.stop()


def test_operator_commands_say_what_they_do_on_postgresql(pg, tmp_path):
    url = pg.create_database("operator")
    d = on_pg(tmp_path, url)
    migrated = d.cli("migrate")
    assert migrated.returncode == 0 and "applied core 4" in migrated.stdout
    status = d.cli("db", "status")
    assert status.returncode == 0 and f"database: PostgreSQL at {url}" in status.stdout
    assert "core       4        4          0" in status.stdout
    backup = d.cli("db", "backup", str(tmp_path / "b.dump"))
    assert backup.returncode == 1 and "pg_dump --format=custom" in backup.stderr
    assert not (tmp_path / "b.dump").exists()
    compact = d.cli("db", "compact")
    assert compact.returncode == 1 and "VACUUM" in compact.stderr


def test_a_password_in_the_url_is_never_shown(pg, tmp_path):
    url = pg.create_database("secret").replace("postgres@", "postgres:hunter2@")  # trust auth ignores it
    d = on_pg(tmp_path, url).start()
    try:
        status = d.cli("db", "status")
        assert status.returncode == 0 and ":***@" in status.stdout
        assert "hunter2" not in status.stdout + d.logs()
    finally:
        d.stop()


def test_a_plugin_without_postgresql_migrations_is_refused_by_name(pg, tmp_path):
    url = pg.create_database("refused")
    d = on_pg(tmp_path, url, **sqlite_only_plugin(tmp_path))
    d.start(wait=False)
    deadline = time.monotonic() + 20
    while d.process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.1)
    assert d.process.returncode == 1
    assert "'olden' has no postgresql migrations" in d.logs()
    assert "disable the plugin that provides it (plugins.disabled)" in d.logs()
    status = d.cli("db", "status")
    assert status.returncode == 1 and "'olden' has no postgresql migrations" in status.stderr
