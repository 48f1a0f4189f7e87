"""The harness's own promises (``tierd.testing``) that tests on both backends rely on:
SQL straight on a test daemon's database reads and writes what the daemon
serves, whichever backend the tests run on (``TIERD_TEST_STORAGE``)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tierd.testing import LocalDaemon, PostgresServer, eventually, on_postgresql, open_test_database, run_sql


async def test_sql_on_a_local_daemon_sees_and_changes_what_its_api_serves(tmp_path):
    async with LocalDaemon(tmp_path, {"plugins": {"disabled": ["webhooks", "notifications", "reconciliation"]}}) as d:
        assert d.daemon is not None and d.daemon.db.dialect == ("postgresql" if on_postgresql() else "sqlite")
        token = await d.tenant("acme")
        await d.publish("acme", "order.placed", {"n": 1})
        # SQLite's placeholders, on either backend.
        assert await d.sql("SELECT type FROM events WHERE tenant_id = ?", ("acme",)) == [("order.placed",)]
        assert await d.sql("SELECT COUNT(*) FROM events WHERE tenant_id = :t", {"t": "acme"}) == [(1,)]
        # A write (many rows at once) is committed at once: the API shows it.
        rows = [(100 + i, f"evt_h{i}", "acme", "order.sql", "{}", 1000.0 + i) for i in range(3)]
        assert (
            await d.sql(
                "INSERT INTO events(seq, id, tenant_id, type, data, created_at) VALUES (?,?,?,?,?,?)", rows, many=True
            )
            == []
        )
        status, body = await d.call("GET", "/v1/events", token=token, params={"type": "order.sql"})
        assert status == 200 and sorted(e["id"] for e in body["data"]) == ["evt_h0", "evt_h1", "evt_h2"]
        # The synchronous form works inside a running loop too (in a thread of its own).
        assert run_sql(d.config["storage"], "SELECT COUNT(*) FROM events") == [(4,)]


def test_sql_on_a_daemon_process_reads_its_database_running_or_stopped(tierd_daemon):
    d = tierd_daemon({"plugins": {"disabled": ["webhooks", "notifications", "reconciliation"]}})
    token = d.create_tenant("acme")
    assert d.request("POST", "/v1/events", {"type": "a.b"}, token=token)[0] == 202
    assert d.sql("SELECT tenant_id, type FROM events") == [("acme", "a.b")]
    d.terminate()
    d.sql("UPDATE events SET type = ? WHERE tenant_id = ?", ("a.changed", "acme"))
    d.start()
    status, body = d.request("GET", "/v1/events", token=token)
    assert status == 200 and [e["type"] for e in body["data"]] == ["a.changed"]


async def test_a_test_database_is_the_one_a_daemon_of_that_folder_opens(tmp_path):
    """open_test_database(folder): the backend the tests run on, and the same database a
    daemon in that folder then finds (its PostgreSQL database, or the SQLite file)."""
    db = await open_test_database(tmp_path)
    try:
        assert db.dialect == ("postgresql" if on_postgresql() else "sqlite")
        await db.execute("CREATE TABLE harness_mark (x TEXT)")
        await db.execute("INSERT INTO harness_mark VALUES (?)", ("here",))
    finally:
        await db.close()
    async with LocalDaemon(tmp_path, {"plugins": {"disabled": ["webhooks", "notifications", "reconciliation"]}}) as d:
        assert await d.sql("SELECT x FROM harness_mark") == [("here",)]


async def test_a_killed_test_run_leaves_no_postgresql_running(tmp_path):
    """The throw-away server goes with the process that started it, even after kill -9."""
    if not PostgresServer.available():
        pytest.skip(PostgresServer.MISSING)
    code = "from tierd.testing import PostgresServer; print(PostgresServer().start().dir, flush=True); input()"
    run = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert run.stdout is not None
    folder = run.stdout.readline().strip()
    assert os.path.isdir(folder)
    run.kill()
    run.wait()

    def server_gone():
        running = subprocess.run(["pgrep", "-f", f"postgres -D {folder}/data"], capture_output=True).returncode == 0
        return not running and not os.path.exists(folder)

    await eventually(server_gone, timeout=20, what="the server stopped and its folder removed")
