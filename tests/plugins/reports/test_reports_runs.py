"""Report runs with real parts: the daemon in the test's loop (and as a process for
``kill -9`` and the CLI), real SQLite, files read back.

- a report runs through the API in csv, json and xlsx (read back with openpyxl), and
  through the CLI (waits, then downloads);
- tenants are walls: a tenant's run covers its rows only, another tenant gets 404;
  the admin runs across tenants or for one (``Tierd-Tenant``);
- bad parameters, formats and reports answer JSON errors (never 500);
- ``max_rows``, ``timeout`` and an exporter that raises fail their own run with a
  clear error while intake keeps answering;
- a run survives ``kill -9``: made again at the next start.
"""

from __future__ import annotations

import asyncio
import csv
import html.parser
import io
import json
import textwrap
import time
import types
from pathlib import Path

import pytest

from tierd.testing import DaemonProcess, LocalDaemon, eventually

DEFINITIONS = {
    "events_by_type": {
        "title": "Events by type",
        "description": "How many events of each type",
        "source": "core.events",
        "parameters": {
            "from": {"type": "date", "description": "First day"},
            "to": {"type": "date", "description": "Last day"},
            "type": {"type": "text", "description": "One type"},
        },
        "filters": ["created_at >= :from", "created_at <= :to", "type = :type"],
        "columns": ["type", {"name": "events", "expr": "count()"}],
        "group_by": ["type"],
        "order_by": ["type"],
    },
    "event_list": {
        "title": "Every event",
        "source": "core.events",
        "columns": ["seq", "type", "created_at"],
        "order_by": ["seq"],
    },
}

#: A plugin for the limits: a source that takes long to read (a recursive count,
#: ``ROWS`` rows) and an exporter that raises.
PLUGIN = """
    from tierd.core.plugins import hookimpl
    from tierd.core.registry import Column, ReportDefinition, ReportExporter, ReportSource

    ROWS = {rows}

    class Broken(ReportExporter):
        format_name = "broken"
        description = "raises half-way"
        media_type = "text/plain"
        extension = "txt"

        def export(self, reports, out):
            for report in reports:
                for _row in report.rows:
                    out.write(b"x")
                    raise RuntimeError("the disk of the pretend printer is full")

    @hookimpl
    def tierd_register_report_sources(register):
        register(ReportSource(
            name="slow.numbers",
            description="Numbers counted one by one",
            sql="WITH RECURSIVE c(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM c WHERE n < %d) "
                "SELECT 'acme' AS tenant, n FROM c" % ROWS,
            columns=(Column("n", "integer", "a number"),),
        ))

    @hookimpl
    def tierd_register_reports(register):
        register(ReportDefinition("slow_total", {{
            "title": "Slow total", "source": "slow.numbers",
            "columns": [{{"name": "numbers", "expr": "count()"}}, {{"name": "total", "expr": "sum(n)"}}],
        }}))

    @hookimpl
    def tierd_register_report_exporters(register):
        register(Broken())
"""


def limits_plugin(tmp_path: Path, rows: int, name: str = "reports_limits") -> tuple[Path, str]:
    """Write the plugin into a folder of its own; (folder, module name)."""
    folder = tmp_path / f"plugin-{name}"
    folder.mkdir(exist_ok=True)
    (folder / f"{name}.py").write_text(textwrap.dedent(PLUGIN.format(rows=rows)))
    return folder, name


def limits_module(tmp_path: Path, rows: int) -> types.ModuleType:
    folder, name = limits_plugin(tmp_path, rows, f"reports_limits_{abs(hash(str(tmp_path)))}")
    module = types.ModuleType(name)
    exec(compile((folder / f"{name}.py").read_text(), str(folder / f"{name}.py"), "exec"), module.__dict__)
    return module


def config(extra: dict | None = None) -> dict:
    base = {"reports": {"definitions": DEFINITIONS}}
    for key, value in (extra or {}).items():
        base["reports"][key] = value
    return base


async def finished(local: LocalDaemon, run_id: str, tenant=None, token=None, timeout: float = 30) -> dict:
    async def done():
        status, body = await local.call("GET", f"/v1/reports/runs/{run_id}", tenant=tenant, token=token)
        assert status == 200, body
        return body if body["status"] not in ("pending", "running") else None

    return await eventually(done, timeout, what=f"report run {run_id} to finish")


async def start_run(local, name, body, tenant=None, token=None) -> dict:
    status, run = await local.call("POST", f"/v1/reports/{name}/runs", body, tenant=tenant, token=token)
    assert status == 202, run
    assert run["status"] in ("pending", "running", "delivered")
    return run


async def download(local, run_id, tenant=None, token=None) -> tuple[int, dict, bytes]:
    headers = {"Authorization": f"Bearer {token or 'test-admin-token-0123456789'}"}
    if tenant:
        headers["Tierd-Tenant"] = tenant
    async with local.session.get(f"{local.url}/v1/reports/runs/{run_id}/download", headers=headers) as resp:
        return resp.status, dict(resp.headers), await resp.read()


def column_names(report: dict) -> list[str]:
    return [c if isinstance(c, str) else c["name"] for c in report["columns"]]


class _Tables(html.parser.HTMLParser):
    """The headers and the number of body rows of each <table> in a page."""

    def __init__(self):
        super().__init__()
        self.tables: list[dict] = []
        self._cell: list[str] | None = None
        self._part = ""

    def handle_starttag(self, tag, attrs):
        if tag == "table":
            self.tables.append({"headers": [], "rows": 0})
        elif tag in ("thead", "tbody"):
            self._part = tag
        elif tag == "tr" and self.tables and self._part == "tbody":
            self.tables[-1]["rows"] += 1
        elif tag == "th" and self.tables:
            self._cell = []

    def handle_endtag(self, tag):
        if tag == "th" and self._cell is not None:
            self.tables[-1]["headers"].append("".join(self._cell).strip())
            self._cell = None

    def handle_data(self, data):
        if self._cell is not None:
            self._cell.append(data)


def check_file(fmt: str, body: bytes, report: dict | list[dict], run: dict) -> None:
    """Open a report's file by its format and check it against the report(s) (as
    ``GET /v1/reports/{name}`` shows them: title, columns) and the run (``rows``)."""
    reports = report if isinstance(report, list) else [report]
    where = (fmt, [r["name"] for r in reports], run["id"])
    if fmt in ("csv", "csv-excel"):
        (one,) = reports
        excel = fmt == "csv-excel"
        assert body.startswith(b"\xef\xbb\xbf") == excel, where
        rows = list(csv.reader(io.StringIO(body.decode("utf-8-sig"), newline=""), delimiter=";" if excel else ","))
        assert rows[0] == column_names(one), (where, rows[0])
        assert len(rows) - 1 == run["rows"], (where, len(rows) - 1)
    elif fmt == "json":
        (one,) = reports
        doc = json.loads(body)
        assert doc["name"] == one["name"] and doc["title"] == one["title"], where
        assert [c["name"] for c in doc["columns"]] == column_names(one), where
        assert doc["row_count"] == len(doc["rows"]) == run["rows"], (where, doc["row_count"])
        assert all(list(r) == column_names(one) for r in doc["rows"]), where
    elif fmt == "jsonl":
        (one,) = reports
        lines = body.decode().splitlines()
        assert len(lines) == run["rows"], (where, len(lines))
        for line in lines:
            assert list(json.loads(line)) == column_names(one), (where, line)
    elif fmt == "xlsx":
        openpyxl = pytest.importorskip("openpyxl")
        book = openpyxl.load_workbook(io.BytesIO(body), read_only=True)
        sheets = {name: list(book[name].iter_rows(values_only=True)) for name in book.sheetnames}
        book.close()
        counted = 0
        for one in reports:
            wanted = tuple(column_names(one))
            found = [rows for rows in sheets.values() if rows and rows[0] == wanted]
            assert found, (where, one["name"], {name: rows[:1] for name, rows in sheets.items()})
            counted += len(found[0]) - 1
        assert counted == run["rows"], (where, counted)
    elif fmt == "pdf":
        pypdf = pytest.importorskip("pypdf")
        pdf = pypdf.PdfReader(io.BytesIO(body))
        text = " ".join(" ".join((page.extract_text() or "").split()) for page in pdf.pages)
        (one,) = reports
        assert one["title"] in text, (where, text[:500])
    elif fmt == "html":
        (one,) = reports
        parser = _Tables()
        parser.feed(body.decode())
        parser.close()
        assert [t["headers"] for t in parser.tables] == [column_names(one)], (where, parser.tables)
        assert parser.tables[0]["rows"] == run["rows"], (where, parser.tables)
    else:
        raise AssertionError(f"no check for the format {fmt!r}")


async def seed(local: LocalDaemon) -> tuple[str, str]:
    acme = await local.tenant("acme")
    globex = await local.tenant("globex")
    for i in range(3):
        await local.publish("acme", "invoice.paid", {"i": i})
    await local.publish("acme", "invoice.sent", {})
    await local.publish("globex", "order.placed", {})
    return acme, globex


async def test_a_report_runs_through_the_api_in_csv_json_and_xlsx(tmp_path):
    openpyxl = pytest.importorskip("openpyxl")
    async with LocalDaemon(tmp_path, config()) as local:
        acme, _ = await seed(local)
        status, listed = await local.call("GET", "/v1/reports", token=acme)
        assert status == 200
        by_name = {r["name"]: r for r in listed["data"]}
        assert {p["name"] for p in by_name["events_by_type"]["parameters"]} == {"from", "to", "type"}
        status, sources = await local.call("GET", "/v1/reports/sources", token=acme)
        assert status == 200 and "core.events" in {s["name"] for s in sources["data"]}

        run = await start_run(local, "events_by_type", {"format": "csv"}, token=acme)
        done = await finished(local, run["id"], token=acme)
        assert done["status"] == "delivered" and done["rows"] == 2 and done["tenant"] == "acme", done
        assert done["trigger"] == "api" and done["download"] == f"/v1/reports/runs/{run['id']}/download"
        status, headers, body = await download(local, run["id"], token=acme)
        assert status == 200
        assert headers["Content-Type"].startswith("text/csv")
        assert headers["Content-Disposition"] == f'attachment; filename="{done["file_name"]}"'
        assert done["file_name"].startswith("events_by_type-") and done["file_name"].endswith(".csv")
        rows = list(csv.reader(io.StringIO(body.decode())))
        assert rows == [["type", "events"], ["invoice.paid", "3"], ["invoice.sent", "1"]]

        # The file is the tenant's, 0600, under its own folder (SQLite's one node);
        # on PostgreSQL it is in the database, where any node finds it, and no node keeps it.
        path = Path(local.daemon.config["storage"]["path"]).parent / "reports" / "acme" / f"{run['id']}.csv"
        if local.daemon.db.dialect == "sqlite":
            assert path.exists() and (path.stat().st_mode & 0o777) == 0o600
        else:
            assert not path.exists() and await _stored_parts(local, run["id"]) == 1

        run = await start_run(
            local, "events_by_type", {"format": "json", "params": {"type": "invoice.paid"}}, token=acme
        )
        done = await finished(local, run["id"], token=acme)
        assert done["status"] == "delivered" and done["params"]["events_by_type"]["type"] == "invoice.paid"
        status, headers, body = await download(local, run["id"], token=acme)
        assert status == 200 and headers["Content-Type"].startswith("application/json")
        assert "invoice.paid" in body.decode() and "invoice.sent" not in body.decode()

        # Two reports in one workbook, one sheet each, typed cells.
        run = await start_run(local, "events_by_type", {"format": "xlsx", "reports": ["event_list"]}, token=acme)
        done = await finished(local, run["id"], token=acme)
        assert done["status"] == "delivered" and done["reports"] == ["events_by_type", "event_list"], done
        status, headers, body = await download(local, run["id"], token=acme)
        assert status == 200 and "spreadsheetml" in headers["Content-Type"]
        book = openpyxl.load_workbook(io.BytesIO(body))
        assert {"Events by type", "Every event"} <= set(book.sheetnames), book.sheetnames
        first = [[c.value for c in row] for row in book["Events by type"].iter_rows()]
        assert first[0] == ["type", "events"] and first[1] == ["invoice.paid", 3] and isinstance(first[1][1], int)
        second = list(book["Every event"].iter_rows(values_only=True))
        assert second[0][:2] == ("seq", "type")
        assert [r[1] for r in second[1:5]] == ["invoice.paid"] * 3 + ["invoice.sent"]  # then report.generated

        # A small run answers at once when asked to wait.
        status, quick = await local.call("POST", "/v1/reports/event_list/runs", {"wait": "10s"}, token=acme)
        assert status == 200 and quick["status"] == "delivered" and quick["download"], quick

        status, page = await local.call("GET", "/v1/reports/runs", token=acme, params={"limit": 2})
        assert status == 200 and len(page["data"]) == 2 and page["next_cursor"]
        status, rest = await local.call("GET", "/v1/reports/runs", token=acme, params={"cursor": page["next_cursor"]})
        assert [r["id"] for r in rest["data"]] and not set(r["id"] for r in rest["data"]) & {
            r["id"] for r in page["data"]
        }


async def test_tenants_are_walls_and_the_admin_runs_across_tenants(tmp_path):
    async with LocalDaemon(tmp_path, config()) as local:
        acme, globex = await seed(local)
        mine = await finished(local, (await start_run(local, "events_by_type", {}, token=acme))["id"], token=acme)
        theirs = await finished(local, (await start_run(local, "events_by_type", {}, token=globex))["id"], token=globex)
        assert mine["rows"] == 2 and theirs["rows"] == 1
        # Another tenant's run is not there at all.
        for path in (f"/v1/reports/runs/{mine['id']}", f"/v1/reports/runs/{mine['id']}/download"):
            status, body = await local.call("GET", path, token=globex)
            assert status == 404 and body["error"]["code"] == "not_found", body
        status, page = await local.call("GET", "/v1/reports/runs", token=globex)
        assert [r["id"] for r in page["data"]] == [theirs["id"]]
        # The admin: across tenants (its own folder), or for one.
        across = await finished(local, (await start_run(local, "events_by_type", {"format": "json"}))["id"])
        # (each run publishes report.generated in its tenant's log: a type more each)
        assert across["tenant"] is None and across["rows"] >= 3
        status, _, body = await download(local, across["id"])
        assert status == 200 and "order.placed" in body.decode() and "invoice.paid" in body.decode()
        one = await finished(local, (await start_run(local, "events_by_type", {}, tenant="globex"))["id"])
        assert one["tenant"] == "globex" and one["rows"] == 2  # order.placed, report.generated
        status, page = await local.call("GET", "/v1/reports/runs")
        assert {r["id"] for r in page["data"]} == {mine["id"], theirs["id"], across["id"], one["id"]}
        status, _ = await local.call("GET", f"/v1/reports/runs/{across['id']}", token=acme)
        assert status == 404
        status, body = await local.call("POST", "/v1/reports/events_by_type/runs", {}, tenant="nobody")
        assert status == 404 and body["error"]["code"] == "tenant_not_found"


async def test_bad_parameters_formats_and_reports_are_json_errors(tmp_path):
    async with LocalDaemon(tmp_path, config()) as local:
        acme, _ = await seed(local)
        cases = [
            ({"params": {"from": "yesterday-ish"}}, 422, "invalid_params", "from"),
            ({"params": {"colour": "red"}}, 422, "invalid_params", "colour"),
            ({"params": {"from": "2026-13-45"}}, 422, "invalid_params", "from"),
            ({"params": {"type": "x'; DROP TABLE events; --"}}, 202, None, None),
            ({"format": "docx"}, 422, "unknown_format", "csv"),
            ({"format": "csv", "reports": ["event_list"]}, 422, "format_takes_one_report", "xlsx"),
            ({"reports": ["no_such_report"], "format": "xlsx"}, 404, "unknown_report", "no_such_report"),
            ({"params": "not a mapping"}, 422, "invalid_body", "params"),
            ({"params": {"from": {"nested": [1, 2]}}}, 422, "invalid_params", "from"),
            ({"reports": ["events_by_type"], "format": "xlsx"}, 422, "invalid_body", "twice"),
        ]
        for body, status_wanted, code, word in cases:
            status, answer = await local.call("POST", "/v1/reports/events_by_type/runs", body, token=acme)
            assert status == status_wanted, (body, answer)
            if code:
                assert answer["error"]["code"] == code, (body, answer)
                assert word in json.dumps(answer["error"]), (body, answer)
        status, answer = await local.call("POST", "/v1/reports/nope/runs", {}, token=acme)
        assert status == 404 and answer["error"]["code"] == "unknown_report"
        status, answer = await local.call("GET", "/v1/reports/runs/rpt_nope", token=acme)
        assert status == 404 and answer["error"]["code"] == "not_found"
        status, answer = await local.call("GET", "/v1/reports/runs", token=acme, params={"status": "bogus"})
        assert status == 400
        status, answer = await local.call(
            "POST", "/v1/reports/events_by_type/explain", {"params": {"from": "2026-11-01"}}, token=acme
        )
        assert status == 200 and ":tenant" in answer["explain"] and answer["params"]["from"] == "2026-11-01"
        assert "acme" not in answer["explain"].split("-- parameters:")[0]  # bound, never pasted
        # The hostile value ran as a value: the table is still there.
        await local.publish("acme", "invoice.paid", {})


async def test_not_ready_runs_answer_409(tmp_path):
    async with LocalDaemon(tmp_path, config()) as local:
        acme, _ = await seed(local)
        service = local.daemon.service("reports")
        run_id, _ = await service.create_run("acme", {"events_by_type": {}}, "csv", "api")
        # Not picked up yet or running: either way no file.
        status, body = await local.call("GET", f"/v1/reports/runs/{run_id}/download", token=acme)
        assert status in (200, 409), body
        if status == 409:
            assert body["error"]["code"] == "not_ready"
        await finished(local, run_id, token=acme)


async def test_max_rows_timeout_and_a_broken_exporter_fail_their_own_run(tmp_path):
    plugin = limits_module(tmp_path, rows=300_000_000)
    async with LocalDaemon(tmp_path, config({"max_rows": 3, "timeout": "1s"}), plugins=[plugin]) as local:
        acme, _ = await seed(local)
        too_many = await finished(local, (await start_run(local, "event_list", {}, token=acme))["id"], token=acme)
        assert too_many["status"] == "failed" and "more than 3 rows" in too_many["error"], too_many
        assert "reports.max_rows" in too_many["error"] and too_many["download"] is None
        status, body = await local.call("GET", f"/v1/reports/runs/{too_many['id']}/download", token=acme)
        assert status == 409 and body["error"]["code"] == "not_ready" and "max_rows" in body["error"]["message"]
        # No partial file left behind.
        folder = Path(local.daemon.config["storage"]["path"]).parent / "reports" / "acme"
        assert not [p for p in folder.iterdir() if too_many["id"] in p.name]

        # A query that would run for minutes stops at the timeout; intake answers meanwhile.
        run = await start_run(local, "slow_total", {}, token=acme)
        latencies = []
        started = time.monotonic()
        while time.monotonic() - started < 0.8:
            t0 = time.monotonic()
            await local.publish("acme", "invoice.paid", {"during": "report"})
            latencies.append(time.monotonic() - t0)
            await asyncio.sleep(0.05)
        slow = await finished(local, run["id"], token=acme)
        assert slow["status"] == "failed" and "longer than 1 s (reports.timeout)" in slow["error"], slow
        assert max(latencies) < 0.5, latencies
        status, body = await local.call("GET", "/v1/events", token=acme, params={"limit": 500})
        assert status == 200

        broken = await finished(
            local, (await start_run(local, "events_by_type", {"format": "broken"}, token=acme))["id"], token=acme
        )
        assert broken["status"] == "failed", broken
        assert "broken exporter" in broken["error"] and "pretend printer" in broken["error"], broken
        assert "reports_limits" in broken["error"]  # the plugin that registered it is named
        # The daemon and the next run are fine.
        ok = await finished(local, (await start_run(local, "events_by_type", {}, token=acme))["id"], token=acme)
        assert ok["status"] == "delivered"
        async with local.session.get(local.url + "/metrics") as resp:
            metrics = await resp.text()
        assert 'tierd_report_runs_total{status="failed"} 3.0' in metrics, metrics
        assert 'tierd_report_runs_total{status="delivered"}' in metrics
        # report.failed events were published for each (a tenant's own log).
        await local.settled()
        status, body = await local.call("GET", "/v1/events", token=acme, params={"type": "report.*", "limit": 500})
        types_ = [e["type"] for e in body["data"]]
        assert types_.count("report.failed") == 3 and "report.generated" in types_


async def test_retention_deletes_old_runs_and_their_files(tmp_path):
    async with LocalDaemon(tmp_path, config({"retention": "1h"})) as local:
        acme, _ = await seed(local)
        done = await finished(local, (await start_run(local, "events_by_type", {}, token=acme))["id"], token=acme)
        path = Path(local.daemon.config["storage"]["path"]).parent / "reports" / "acme" / f"{done['id']}.csv"
        sqlite = local.daemon.db.dialect == "sqlite"

        async def kept() -> bool:  # SQLite: in the folder; PostgreSQL: in the database
            return path.exists() if sqlite else await _stored_parts(local, done["id"]) > 0

        assert await kept()
        service = local.daemon.service("reports")
        await service.purge()
        assert await kept()
        await local.daemon.db.execute("UPDATE report_runs SET finished_at = finished_at - 7200")
        await service.purge()
        assert not await kept()
        status, _ = await local.call("GET", f"/v1/reports/runs/{done['id']}", token=acme)
        assert status == 404


async def _stored_parts(local: LocalDaemon, run_id: str) -> int:
    """Parts of a run's file kept in the database (report_files)."""
    row = await local.daemon.db.fetchone("SELECT COUNT(*) AS n FROM report_files WHERE run_id=?", (run_id,))
    return int(row["n"])


def _wait_process(d: DaemonProcess, run_id: str, statuses, timeout=30.0) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status, body = d.request("GET", f"/v1/reports/runs/{run_id}")
        if status == 200 and body["status"] in statuses:
            return body
        time.sleep(0.05)
    raise AssertionError(f"run {run_id} not {statuses}: {body}\n{d.logs()[-3000:]}")


def test_a_run_survives_kill_9_and_is_made_again_at_start(tmp_path):
    folder, name = limits_plugin(tmp_path, rows=4_000_000)
    workdir = tmp_path / "d"
    workdir.mkdir()
    with DaemonProcess(workdir, config({"timeout": "120s"}), plugins=[name], pythonpath=[folder]) as d:
        d.create_tenant("acme")
        status, run = d.request("POST", "/v1/reports/slow_total/runs", {"format": "json"}, tenant="acme")
        assert status == 202, run
        _wait_process(d, run["id"], ("running",))
        d.kill9()
        d.start()
        done = _wait_process(d, run["id"], ("delivered", "failed"), timeout=90)
        assert done["status"] == "delivered" and done["attempts"] == 2, done
        status, body = d.request("GET", f"/v1/reports/runs/{run['id']}/download", tenant="acme")
        assert status == 200 and body["rows"][0]["numbers"] == 4_000_000, body
        assert "made again" in d.logs()


def test_the_cli_runs_a_report_and_downloads_it(tmp_path):
    openpyxl = pytest.importorskip("openpyxl")
    workdir = tmp_path / "d"
    workdir.mkdir()
    with DaemonProcess(workdir, config()) as d:
        token = d.create_tenant("acme")
        for i in range(3):
            status, _ = d.request("POST", "/v1/events", {"type": "invoice.paid", "data": {"i": i}}, token=token)
            assert status == 202
        out = tmp_path / "out.xlsx"
        result = d.cli(
            "reports",
            "run",
            "events_by_type",
            "--tenant",
            "acme",
            "--param",
            "from=2020-01-01",
            "--format",
            "xlsx",
            "-o",
            str(out),
        )
        assert result.returncode == 0, result.stderr
        assert "1 row(s)" in result.stderr
        rows = list(openpyxl.load_workbook(out)["Events by type"].iter_rows(values_only=True))
        assert rows == [("type", "events"), ("invoice.paid", 3)]

        result = d.cli(
            "reports",
            "run",
            "event_list",
            "--tenant",
            "acme",
            "--format",
            "json",
            "-o",
            str(tmp_path / "out.json"),
            "--json",
        )
        assert result.returncode == 0, result.stderr
        assert json.loads(result.stdout)["trigger"] == "cli"
        assert json.loads((tmp_path / "out.json").read_text())["row_count"] >= 3  # and report.generated

        result = d.cli("reports", "run", "events_by_type", "--tenant", "acme", "-o", str(tmp_path / "out.csv"))
        assert result.returncode == 0, result.stderr
        assert (tmp_path / "out.csv").read_text().splitlines()[:2] == ["type,events", "invoice.paid,3"]

        result = d.cli("reports", "run", "events_by_type", "--tenant", "acme", "--param", "from=soon")
        assert result.returncode == 1 and "invalid_params" in result.stderr and "from" in result.stderr

        result = d.cli("reports", "list", "--json")
        assert result.returncode == 0 and "events_by_type" in {r["name"] for r in json.loads(result.stdout)}
        result = d.cli("reports", "list")  # the table names each report's parameters
        assert result.returncode == 0, result.stderr
        assert any("event_volume" in line and "from, to" in line for line in result.stdout.splitlines())
        result = d.cli("reports", "runs", "--tenant", "acme", "--json")
        assert result.returncode == 0 and len(json.loads(result.stdout)) == 3
        result = d.cli("reports", "explain", "events_by_type", "--param", "type=invoice.paid")
        assert result.returncode == 0 and "GROUP BY" in result.stdout and "'invoice.paid'" in result.stdout
        result = d.cli("reports", "sources")
        assert result.returncode == 0 and "core.events" in result.stdout
        result = d.cli("reports", "show", "events_by_type")
        assert result.returncode == 0 and "Events by type" in result.stdout
        assert "parameters:" in result.stdout and "columns:" in result.stdout and "{" not in result.stdout


def test_the_cli_runs_every_shipped_report_to_a_csv_file(tmp_path):
    workdir = tmp_path / "d"
    workdir.mkdir()
    with DaemonProcess(workdir, config()) as d:
        token = d.create_tenant("acme")
        status, _ = d.request("POST", "/v1/events", {"type": "invoice.paid", "data": {}}, token=token)
        assert status == 202
        status, listed = d.request("GET", "/v1/reports")
        shipped = [r for r in listed["data"] if r["origin"] != "config"]
        assert len(shipped) == 6, [r["name"] for r in shipped]
        for report in shipped:
            out = tmp_path / f"{report['name']}.csv"
            result = d.cli("reports", "run", report["name"], "--tenant", "acme", "--format", "csv", "-o", str(out))
            assert result.returncode == 0, (report["name"], result.stderr)
            rows = list(csv.reader(io.StringIO(out.read_text(encoding="utf-8"), newline="")))
            assert rows[0] == column_names(report), (report["name"], rows[:1])
            assert f"{len(rows) - 1} row(s)" in result.stderr, (report["name"], result.stderr)


async def test_a_reload_brings_new_definitions_and_schedules(tmp_path):
    import yaml

    async with LocalDaemon(tmp_path, config()) as local:
        acme, _ = await seed(local)
        status, body = await local.call("GET", "/v1/reports", token=acme)
        assert "types_only" not in {r["name"] for r in body["data"]}
        text = yaml.safe_load(local.config_path.read_text())
        text["reports"]["definitions"]["types_only"] = {"source": "core.events", "columns": ["type"]}
        text["reports"]["schedules"] = {
            "nightly": {"reports": ["types_only"], "cron": "0 2 * * *", "directory": str(tmp_path / "x-{date}.csv")}
        }
        local.config_path.write_text(yaml.safe_dump(text))
        ok, errors = await local.daemon.reload()
        assert ok, errors
        status, body = await local.call("GET", "/v1/reports", token=acme)
        assert "types_only" in {r["name"] for r in body["data"]}
        done = await finished(local, (await start_run(local, "types_only", {}, token=acme))["id"], token=acme)
        assert done["status"] == "delivered" and done["rows"] >= 4
        status, body = await local.call("GET", "/v1/reports/schedules")
        assert [s["name"] for s in body["data"]] == ["nightly"]
        assert "reports.schedule.nightly" in {job.id for job in local.daemon.scheduler.get_jobs()}
        # A file with a mistake is refused and the running reports stay.
        text["reports"]["definitions"]["broken"] = {"source": "no.such.source"}
        local.config_path.write_text(yaml.safe_dump(text))
        ok, errors = await local.daemon.reload()
        assert not ok and any("reports.definitions.broken" in e for e in errors), errors
        status, body = await local.call("GET", "/v1/reports", token=acme)
        assert "types_only" in {r["name"] for r in body["data"]}


async def test_every_report_runs_in_every_format(tmp_path):
    """The reports the plugins ship and the configured ones, in each installed format,
    as the admin across tenants and for one tenant: each makes its file, opened and
    checked by its format (header = the report's columns, data rows = the run's rows)."""
    async with LocalDaemon(tmp_path, config()) as local:
        await seed(local)
        status, reports = await local.call("GET", "/v1/reports")
        status, formats = await local.call("GET", "/v1/reports/formats")
        names = [r["name"] for r in reports["data"]]
        assert {"events_by_type", "event_list"} <= set(names)
        by_name = {}
        for name in names:
            status, by_name[name] = await local.call("GET", f"/v1/reports/{name}")
            assert status == 200, by_name[name]
        runs = []
        for report in reports["data"]:
            for fmt in formats["data"]:
                for tenant in (None, "acme"):
                    status, run = await local.call(
                        "POST", f"/v1/reports/{report['name']}/runs", {"format": fmt["format"]}, tenant=tenant
                    )
                    assert status == 202, (report["name"], fmt["format"], run)
                    runs.append((report["name"], fmt, run["id"]))
        for name, fmt, run_id in runs:
            done = await finished(local, run_id, timeout=120)
            assert done["status"] == "delivered", (name, fmt["format"], done)
            assert done["file_name"].endswith("." + fmt["extension"]), done
            assert done["size"] > 0 or (fmt["format"] == "jsonl" and done["rows"] == 0), done
            status, headers, body = await download(local, run_id, tenant=done["tenant"])
            assert status == 200 and headers["Content-Type"].split(";")[0] == fmt["media_type"], (name, headers)
            assert len(body) == done["size"]
            check_file(fmt["format"], body, by_name[name], done)


async def test_a_run_interrupted_twice_fails_saying_so(tmp_path):
    async with LocalDaemon(tmp_path, config()) as local:
        acme, _ = await seed(local)
        service = local.daemon.service("reports")
        run_id, _ = await service.create_run("acme", {"events_by_type": {}}, "csv", "api")
        await finished(local, run_id, token=acme)
        # As if the daemon had died during this run's second attempt.
        await local.daemon.db.execute("UPDATE report_runs SET status='running', attempts=2 WHERE id=?", (run_id,))
    async with LocalDaemon(tmp_path, config()) as local:
        status, run = await local.call("GET", f"/v1/reports/runs/{run_id}")
        assert run["status"] == "failed" and "stopped during this run 2 times" in run["error"], run


async def test_lists_of_runs_and_schedules_walk_an_index(tmp_path):
    from tierd.testing import assert_index_walk, recorded_reads

    schedules = {"daily": {"reports": ["event_list"], "cron": "0 6 * * *", "directory": str(tmp_path / "{date}.csv")}}
    async with LocalDaemon(tmp_path, config({"schedules": schedules, "retention": "1h"})) as local:
        acme, _ = await seed(local)
        for _ in range(3):
            await finished(local, (await start_run(local, "events_by_type", {}, token=acme))["id"], token=acme)
        db = local.daemon.db
        if db.dialect != "sqlite":
            # SQLite's query plans; PostgreSQL's indexes for the same statements are
            # checked in test_reports_postgres.py.
            pytest.skip("the plans checked are SQLite's (EXPLAIN QUERY PLAN)")
        async with recorded_reads(db) as statements:
            for params, token in [
                ({}, acme),
                ({"status": "failed"}, acme),
                ({}, None),
                ({"status": "delivered"}, None),
            ]:
                status, page = await local.call("GET", "/v1/reports/runs", token=token, params={"limit": 2, **params})
                assert status == 200
            await local.call("GET", "/v1/reports/schedules")
            await local.daemon.service("reports").purge()
        reads = [s for s in statements if "report_runs" in s]
        assert len(reads) >= 6, reads
        for sql in reads:
            assert_index_walk(db.path, sql)
