"""Cost that stays flat as the data grows: reads never stall intake, a page of
the event log reads its own rows, a heavy read is stopped at its budget,
retention deletes in slices and the file shrinks after."""

from __future__ import annotations

import asyncio
import contextlib
import json
import sqlite3
import threading
import types

import pytest
from aiohttp import web

from tierd.core.api import NO_BODY, Route, daemon_of, json_response
from tierd.core.events import MERGE_ARMS
from tierd.core.plugins import hookimpl
from tierd.core.storage import CORE_MIGRATIONS, Database, DatabaseInUse, QueryTimeout, claim, release
from tierd.testing import LocalDaemon, StepClock, assert_index_walk, eventually, on_postgresql, recorded_reads

#: A read that runs until it is interrupted (SQLite counts to a billion).
ENDLESS = "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i+1 FROM n WHERE i<1000000000) SELECT MAX(i) FROM n"


def heavy_reads_plugin():
    """A plugin whose route runs one endless read (the stand-in for a report)."""

    @hookimpl
    def tierd_routes(daemon):
        async def endless(request: web.Request) -> web.Response:
            row = await daemon_of(request).db.fetchone(ENDLESS)
            return json_response({"max": row[0] if row else None})

        return [Route("POST", "/v1/endless", endless, auth="admin", summary="Read for ever", body=NO_BODY)]

    return types.SimpleNamespace(tierd_routes=tierd_routes, __name__="heavy_reads_plugin")


async def store_events(db: Database, tenant: str, types_: list[str], count: int, start: int = 1) -> None:
    """``count`` events of ``tenant`` cycling through ``types_``, straight into the log."""
    rows = [
        (seq, f"evt_{tenant}_{seq}", tenant, types_[seq % len(types_)], "{}", None, 1000.0 + seq)
        for seq in range(start, start + count)
    ]
    async with db.transaction() as tx:
        await tx.executemany(
            "INSERT INTO events(seq, id, tenant_id, type, data, idempotency_key, created_at) VALUES (?,?,?,?,?,?,?)",
            rows,
        )


async def cursors_stored(local: LocalDaemon, seq: int) -> None:
    """Wait until every consumer has stored a cursor at ``seq`` or later (what retention goes by)."""
    db = local.daemon.db

    async def stored() -> bool:
        rows = await db.fetchall("SELECT last_seq FROM consumer_cursors")
        return len(rows) >= len(local.daemon.bus.progress) and min(r["last_seq"] for r in rows) >= seq

    await eventually(stored, what=f"every consumer to store its cursor at event {seq}")


async def all_pages(local: LocalDaemon, params: dict, tenant: str | None = None, token: str | None = None) -> list:
    seen, cursor = [], None
    while True:
        status, body = await local.call(
            "GET", "/v1/events", params=params | ({"cursor": cursor} if cursor else {}), token=token, tenant=tenant
        )
        assert status == 200, body
        seen += body["data"]
        cursor = body.get("next_cursor")
        if not cursor:
            return seen


async def test_every_page_of_the_event_log_walks_an_index_and_matches_the_filter(tmp_path):
    """Each statement behind GET /v1/events reads along an index in seq order (no sort of
    the tenant's log), for a tenant and for the admin, with an exact type, a pattern
    (merged from the types it matches) and a pattern matching too many types to merge;
    and every page holds exactly the events the filter selects, in order."""
    local = LocalDaemon(tmp_path, {"plugins": {"disabled": ["webhooks", "notifications", "reconciliation"]}})
    async with local:
        token = await local.tenant("acme")
        await local.tenant("globex")
        db = local.daemon.db
        kinds = ["invoice.paid", "invoice.sent", "invoice.sent.late", "order.created", "invoicex.other"]
        await store_events(db, "acme", kinds, 600)
        await store_events(db, "globex", ["invoice.paid", "order.created"], 200, start=601)
        many = [f"bulk.t{i:03d}" for i in range(MERGE_ARMS + 5)]
        await store_events(db, "acme", many, 400, start=801)
        log = [dict(r) for r in await db.fetchall("SELECT seq, tenant_id, type FROM events ORDER BY seq")]

        def expected(tenant: str | None, pattern: str | None) -> list[int]:
            def selected(row: dict) -> bool:
                if tenant is not None and row["tenant_id"] != tenant:
                    return False
                if pattern is None:
                    return True
                if pattern.endswith(".*"):
                    return row["type"].startswith(pattern[:-1])
                return row["type"] == pattern

            return [r["seq"] for r in log if selected(r)]

        cases = [
            ("acme", None),
            ("acme", "invoice.paid"),
            ("acme", "invoice.*"),
            ("acme", "bulk.*"),
            ("acme", "nothing.*"),
            (None, None),
            (None, "order.created"),
            (None, "invoice.*"),
        ]
        # The statements run, for SQLite's plans below (PostgreSQL's reads are not traced).
        recording = contextlib.nullcontext([]) if on_postgresql() else recorded_reads(db)
        async with recording as statements:
            for tenant, pattern in cases:
                params = {"limit": "37"} | ({"type": pattern} if pattern else {})
                if tenant is not None:
                    items = await all_pages(local, params, token=token)
                else:
                    items = await all_pages(local, params)
                assert [e["seq"] for e in items] == expected(tenant, pattern), (tenant, pattern)
        if on_postgresql():
            return  # the pages are right; the plans below are SQLite's (EXPLAIN QUERY PLAN)
        reads = [s for s in statements if "FROM events" in s and "ORDER BY" in s]
        assert len(reads) >= 40
        plans = [assert_index_walk(db.path, sql) for sql in reads]
        # The pattern pages were merged from per-type walks, not read and sorted.
        assert any(any("MERGE" in line for line in plan) for plan in plans)


async def test_intake_goes_on_while_every_reader_is_busy_and_a_heavy_read_is_stopped_at_its_budget(tmp_path):
    """Long reads that hold every connection of the pool do not hold up intake (the
    token check and the idempotency lookup have a connection of their own); a read
    past server.query_timeout is interrupted and answered 503 query_timeout, and the
    pool is whole again afterwards."""
    local = LocalDaemon(
        tmp_path,
        {
            "server": {"query_timeout": "2s"},
            "storage": {"readers": 2},
            "plugins": {"disabled": ["webhooks", "notifications", "reconciliation"]},
        },
        plugins=[heavy_reads_plugin()],
    )
    async with local:
        token = await local.tenant("acme")
        heavy = [asyncio.create_task(local.call("POST", "/v1/endless")) for _ in range(2)]
        await asyncio.sleep(0.3)  # both readers are now inside the endless read
        assert not any(t.done() for t in heavy)
        for i in range(5):
            status, body = await local.call(
                "POST", "/v1/events", {"type": "invoice.paid", "data": {"i": i}, "id": f"k{i % 2}"}, token=token
            )
            assert status in (200, 202), body
        # Intake answered while the heavy reads still held both readers.
        assert not any(t.done() for t in heavy)
        for status, body in await asyncio.gather(*heavy):
            assert status == 503 and body["error"]["code"] == "query_timeout", body
            assert "2 s" in body["error"]["message"]
        status, body = await local.call("GET", "/v1/events", token=token)
        assert status == 200 and len(body["data"]) == 2  # two keys: two events


@pytest.mark.sqlite_only("the SQLite writer's statements and the file's pages (autovacuum's on PostgreSQL)")
async def test_retention_deletes_in_slices_and_the_file_shrinks(tmp_path):
    """A prune of most of the log deletes exactly the old events, in many small
    statements, and the pages it freed go back to the file system."""
    clock = StepClock()
    local = LocalDaemon(tmp_path, {"storage": {"event_retention": "1d"}}, clock=clock)
    async with local:
        db = local.daemon.db
        await local.tenant("acme")
        blob = json.dumps({"pad": "x" * 2000})
        now = clock.time()
        async with db.transaction() as tx:
            await tx.executemany(
                "INSERT INTO events(id, tenant_id, type, data, created_at) VALUES (?,?,?,?,?)",
                [(f"evt_{i}", "acme", "invoice.paid", blob, now - 10 * 86400 + i) for i in range(3000)],
            )
        await local.publish("acme", "invoice.paid", {"fresh": True})

        await cursors_stored(local, 3001)
        before = await db.space()
        deletes: list[str] = []
        await db._write_conn.set_trace_callback(lambda sql: deletes.append(sql) if sql.startswith("DELETE") else None)
        removed = await local.daemon.bus.prune(clock.time() - 86400)
        await db._write_conn.set_trace_callback(None)
        after = await db.space()
        assert removed == 3000
        assert len(deletes) > 3  # sliced, not one statement
        rows = await db.fetchall("SELECT data FROM events")
        assert [json.loads(r["data"]) for r in rows] == [{"fresh": True}]
        assert before["auto_vacuum"] == 2
        assert after["page_count"] < before["page_count"] / 3 and after["freelist_count"] == 0
        # What an operator's dashboard sees: the file's size, and none of it free.
        await local.daemon._update_metrics()
        async with local.session.get(local.url + "/metrics") as resp:  # type: ignore[union-attr]
            metrics = await resp.text()
        assert f'tierd_database_bytes{{pages="all"}} {float(after["page_count"] * after["page_size"])}' in metrics
        assert 'tierd_database_bytes{pages="free"} 0.0' in metrics


@pytest.mark.sqlite_only("`tierd db compact` and the claim of a SQLite file (several nodes share PostgreSQL)")
async def test_compact_converts_an_older_database_and_refuses_while_a_daemon_runs(tmp_path, tierd_daemon):
    """`tierd db compact` turns on incremental auto-vacuum for a database made by an
    older tierd (auto_vacuum off) and shrinks it; with the daemon running it refuses,
    and a second daemon on the same database refuses to start."""
    d = tierd_daemon({"storage": {"event_retention": 0}})
    path = d.workdir / "tierd.db"
    second = tierd_daemon({"storage": {"path": str(path)}}, start=False)
    second.start(wait=False)
    assert second.process.wait(timeout=20) != 0
    assert "in use by another tierd process" in second.logs()
    refused = d.cli("db", "compact")
    assert refused.returncode != 0 and "stop it first" in refused.stderr
    d.stop()
    # What an older tierd left: auto_vacuum off, and many free pages after a prune.
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA auto_vacuum=NONE")
    conn.execute("VACUUM")
    conn.execute("CREATE TABLE old_rows(x)")
    conn.executemany("INSERT INTO old_rows VALUES (?)", [("y" * 1000,) for _ in range(5000)])
    conn.commit()
    conn.execute("DELETE FROM old_rows")
    conn.commit()
    conn.close()
    status = d.cli("db", "status")
    assert "run `tierd db compact` once" in status.stdout
    size = path.stat().st_size
    done = d.cli("db", "compact", "--json")
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["bytes_after"] < result["bytes_before"] / 2
    assert path.stat().st_size < size / 2
    conn = sqlite3.connect(path)
    assert conn.execute("PRAGMA auto_vacuum").fetchone()[0] == 2
    conn.close()
    assert "run `tierd db compact` once" not in d.cli("db", "status").stdout


@pytest.mark.sqlite_only("the claim of a SQLite file")
async def test_claim_is_one_owner_at_a_time(tmp_path):
    path = tmp_path / "t.db"
    held = claim(path)
    try:
        try:
            claim(path)
        except DatabaseInUse as exc:
            assert str(path) in str(exc)
        else:
            raise AssertionError("a second claim succeeded")
    finally:
        release(held)
    release(claim(path))  # free again
    db = await Database(path).open()
    await db.migrate({"core": CORE_MIGRATIONS})
    await db.close()


async def test_an_operator_runs_the_retention_now_instead_of_waiting_for_its_hour(tmp_path):
    """After lowering a retention, `POST /v1/admin/jobs/{id}/run` (`tierd jobs run ID`)
    prunes at once; the job's schedule goes on, and an unknown job is a clear 404."""
    clock = StepClock()
    local = LocalDaemon(tmp_path, {"storage": {"event_retention": "1d"}}, clock=clock)
    async with local:
        token = await local.tenant("acme")
        for i in range(5):
            await local.publish("acme", "invoice.paid", {"i": i})
        await cursors_stored(local, 5)
        clock.advance(2 * 86400)
        status, body = await local.call("GET", "/v1/admin/jobs")
        assert status == 200
        jobs = {j["id"]: j for j in body["data"]}
        assert {"core.prune_events", "webhooks.retention", "notifications.retention"} <= jobs.keys()
        assert "3600" in jobs["core.prune_events"]["trigger"] or "1:00:00" in jobs["core.prune_events"]["trigger"]

        async def log_empty() -> bool:
            status, body = await local.call("GET", "/v1/events", token=token)
            return status == 200 and body["data"] == []

        status, body = await local.call("POST", "/v1/admin/jobs/core.prune_events/run")
        assert status == 202 and body["id"] == "core.prune_events", body
        await eventually(log_empty, what="the retention to prune the old events")
        status, body = await local.call("GET", "/v1/admin/jobs")
        next_run = {j["id"]: j for j in body["data"]}["core.prune_events"]["next_run_at"]
        assert next_run is not None  # scheduled again, an interval on
        status, body = await local.call("POST", "/v1/admin/jobs/no.such.job/run")
        assert status == 404 and body["error"]["code"] == "job_not_found"
        status, body = await local.call("POST", "/v1/admin/jobs/core.prune_events/run", token=token)
        assert status in (401, 403)


@pytest.mark.sqlite_only("Database.read_in_thread on a sqlite3 connection (PostgreSQL's reads: tests/plugins/reports)")
async def test_a_long_read_streams_in_a_thread_of_its_own_and_stops_at_its_budget(tmp_path):
    """read_in_thread (what a report runs on): the rows stream to ``fn`` in a worker
    thread while the pool serves other reads, and a read past its budget is stopped."""
    db = await Database(tmp_path / "t.db", readers=1).open()
    await db.migrate({"core": CORE_MIGRATIONS})
    await store_events(db, "acme", ["a.b"], 2000)
    loop_thread = threading.get_ident()

    def count(conn: sqlite3.Connection) -> tuple[int, bool]:
        n = sum(1 for _ in conn.execute("SELECT seq FROM events ORDER BY seq"))
        return n, threading.get_ident() != loop_thread

    assert await db.read_in_thread(count) == (2000, True)
    endless = asyncio.ensure_future(db.read_in_thread(lambda conn: conn.execute(ENDLESS).fetchall(), budget=0.5))
    # Meanwhile the pool's one reader still answers.
    assert (await db.fetchone("SELECT COUNT(*) AS n FROM events"))["n"] == 2000
    try:
        await endless
    except QueryTimeout as exc:
        assert exc.budget == 0.5
    else:
        raise AssertionError("the endless read was not stopped")
    await db.close()
