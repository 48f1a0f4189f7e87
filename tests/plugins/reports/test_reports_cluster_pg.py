"""Reports on several tierd nodes sharing one PostgreSQL database (issue 15).

Real daemon processes on one throw-away PostgreSQL server:

* a run made on one node is downloaded from another, byte for byte (its file
  is kept in the database, not in the folder of the node that made it);
* a schedule's email, queued by the node that made the run, is sent by another
  with the file attached (notifications keeps the bytes in the database);
* a schedule due every minute makes one run per due time across three nodes,
  and still fires after the node running the cluster's timers is killed.
"""

from __future__ import annotations

import asyncio
import collections
import socket
import sys
import time
from pathlib import Path

import aiohttp
from test_reports_runs import DEFINITIONS

from tierd.testing import DaemonProcess, eventually

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "notifications"))
from notify_helpers import SmtpServer  # noqa: E402

OTHERS = ["webhooks", "notifications", "reconciliation"]


def make_nodes(tmp_path, url: str, count: int, reports: dict | None = None) -> list[DaemonProcess]:
    out = []
    for i in range(count):
        workdir = tmp_path / f"node{i}"
        workdir.mkdir()
        config = {
            "storage": {"url": url},
            "plugins": {"disabled": OTHERS},
            "reports": {"definitions": DEFINITIONS, **(reports or {})},
        }
        out.append(DaemonProcess(workdir, config, env={"NODE": f"node{i}"}))
    return out


async def download(node: DaemonProcess, run_id: str, token: str) -> bytes:
    async with (
        aiohttp.ClientSession() as session,
        session.get(
            f"{node.url}/v1/reports/runs/{run_id}/download", headers={"Authorization": f"Bearer {token}"}
        ) as resp,
    ):
        body = await resp.read()
        assert resp.status == 200, body
        return body


async def test_a_run_made_on_one_node_is_downloaded_from_another_byte_for_byte(pg, tmp_path):
    a, b = make_nodes(tmp_path, pg.create_database("reports_files"), 2)
    await asyncio.gather(asyncio.to_thread(a.start), asyncio.to_thread(b.start))
    try:
        token = await asyncio.to_thread(a.create_tenant, "acme")
        for i in range(40):
            status, _ = await a.arequest(
                "POST", "/v1/events", {"type": f"order.t{i % 4}", "data": {"i": i}}, token=token
            )
            assert status == 202
        for fmt in ("csv", "xlsx"):
            status, run = await a.arequest(
                "POST", "/v1/reports/event_list/runs", {"format": fmt, "wait": "20s"}, token=token
            )
            assert status == 200 and run["status"] == "delivered", run
            on_b = await download(b, run["id"], token)
            on_a = await download(a, run["id"], token)
            assert on_b == on_a and len(on_b) == run["size"] > 0
            if fmt == "csv":
                assert on_b.decode().count("order.t") == 40
            else:
                assert on_b[:2] == b"PK"  # a workbook (a zip)
            # No node keeps a copy in its folder: retention on any node removes it all.
            assert not [p for p in (tmp_path / "node0").rglob(f"{run['id']}.*")]
        # A run made by node B is seen finished, and downloadable, by A.
        status, run = await b.arequest("POST", "/v1/reports/events_by_type/runs", {"wait": "20s"}, token=token)
        assert status == 200 and run["status"] == "delivered"
        lines = (await download(a, run["id"], token)).decode().splitlines()
        assert [line for line in lines if line.startswith("order.")] == [f"order.t{i},10" for i in range(4)]
    finally:
        a.stop()
        b.stop()


async def test_a_schedules_email_is_sent_by_another_node_with_the_file_attached(pg, tmp_path):
    """Node A makes the run and queues its email; A's mail server never answers
    (a socket that accepts and stays silent), so the email reaches the real one
    through node B: claimed by B at once, or taken over from A once A is killed.
    The attachment is the run's file, which A no longer has in its folder."""
    smtp = SmtpServer(None, "plain").start()
    silent = socket.create_server(("127.0.0.1", 0))
    url = pg.create_database("reports_mail")
    nodes: list[DaemonProcess] = []
    try:
        schedules = {
            "weekly": {
                "reports": ["events_by_type"],
                "tenant": "acme",
                "cron": "0 6 * * 1",
                "format": "csv",
                "to": ["mail"],
            }
        }
        for name, port in (("a", silent.getsockname()[1]), ("b", smtp.port)):
            workdir = tmp_path / name
            workdir.mkdir()
            config = {
                "storage": {"url": url},
                "plugins": {"disabled": ["webhooks", "reconciliation"]},
                "reports": {"definitions": DEFINITIONS, "schedules": schedules},
                "notifications": {"channels": {"mail": smtp.channel_config(port=port, timeout="60s")}},
            }
            nodes.append(DaemonProcess(workdir, config))
        a, b = nodes
        await asyncio.gather(asyncio.to_thread(a.start), asyncio.to_thread(b.start))
        token = await asyncio.to_thread(a.create_tenant, "acme")
        for i in range(6):
            status, _ = await a.arequest("POST", "/v1/events", {"type": f"order.t{i % 2}"}, token=token)
            assert status == 202
        status, run = await a.arequest("POST", "/v1/reports/schedules/weekly/run", {})
        assert status == 202, run

        async def made():
            status, body = await a.arequest("GET", f"/v1/reports/runs/{run['id']}")
            return body if body["status"] in ("delivered", "failed") else None

        done = await eventually(made, 30, what="the run made")
        assert done["status"] == "delivered", done
        assert f"report run {run['id']}" in a.logs()  # made by A
        assert not list((tmp_path / "a").rglob(f"{run['id']}.*"))
        try:
            await eventually(lambda: smtp.messages, 5, what="the email through B")
        except AssertionError:
            a.kill9()  # A claimed it and hangs on its silent server: B takes it over
            await eventually(lambda: smtp.messages, 30, what="the email taken over by B")
        (mail,) = smtp.messages
        (attachment,) = list(mail.iter_attachments())
        assert attachment.get_filename() == done["file_name"]
        assert attachment.get_content().encode() == await download(b, run["id"], token)
        assert "order.t0,3" in attachment.get_content()
    finally:
        for n in nodes:
            n.stop()
        silent.close()
        smtp.stop()


def runs_of(node: DaemonProcess) -> list[dict]:
    status, page = node.request("GET", "/v1/reports/runs?limit=200")
    assert status == 200
    return [r for r in page["data"] if r["schedule"] == "minutely"]


def wait_for_due_times(node: DaemonProcess, count: int, timeout: float) -> list[dict]:
    deadline = time.monotonic() + timeout
    while True:
        runs = runs_of(node)
        finished = [r for r in runs if r["status"] in ("delivered", "failed", "skipped")]
        if len({r["due_at"] for r in finished}) >= count:
            return runs
        if time.monotonic() > deadline:
            raise AssertionError(f"{len(runs)} run(s) of the schedule after {timeout}s: {runs}")
        time.sleep(0.5)


def test_a_schedule_fires_once_across_three_nodes_and_after_its_timer_node_is_killed(pg, tmp_path):
    schedules = {
        "minutely": {
            "reports": ["events_by_type"],
            "tenant": "acme",
            "cron": "* * * * *",
            "format": "csv",
            "directory": str(tmp_path / "out" / "{date}-{time}.csv"),
        }
    }
    nodes = make_nodes(tmp_path, pg.create_database("reports_schedule"), 3, {"schedules": schedules})
    for n in nodes:
        n.start()
    try:
        nodes[0].create_tenant("acme")
        runs = wait_for_due_times(nodes[1], 1, timeout=90)
        time.sleep(3)  # a second node's run of the same due time would be here by now
        runs = runs_of(nodes[2])
        per_due = collections.Counter(r["due_at"] for r in runs)
        assert set(per_due.values()) == {1}, runs  # one run per due time, not three
        assert all(r["status"] == "delivered" for r in runs), runs

        (leader,) = [n for n in nodes if "this node runs the cluster's timers" in n.logs()]
        leader.kill9()
        survivors = [n for n in nodes if n is not leader]
        seen = len(per_due)
        runs = wait_for_due_times(survivors[0], seen + 1, timeout=90)
        time.sleep(3)
        runs = runs_of(survivors[1])
        per_due = collections.Counter(r["due_at"] for r in runs)
        assert len(per_due) >= seen + 1 and set(per_due.values()) == {1}, runs
        assert sum("this node runs the cluster's timers" in n.logs() for n in survivors) == 1
        # One file per due time in the schedule's directory.
        assert len(list((tmp_path / "out").glob("*.csv"))) == len(per_due)
    finally:
        for n in nodes:
            n.stop()
