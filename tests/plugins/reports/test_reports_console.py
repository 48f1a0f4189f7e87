"""The reports pages of the web console, against a real daemon process.

- the reports page lists what can run, each with a "Run now" form (format,
  parameters) and the schedules with their own "Run now";
- a run made from the form shows in the runs list and its file downloads
  through the console (the CSV rows are the tenant's events, no one else's);
- another tenant's run is a 404 page, a bad parameter a flash (no run made),
  a POST without the CSRF token a 403.
"""

from __future__ import annotations

import asyncio
import csv
import io
import json
import re

import pytest
from conftest import until

from tierd.testing import ADMIN_TOKEN, ConsoleSession

DEFINITIONS = {
    "event_list": {
        "title": "Every event",
        "description": "One row per event",
        "source": "core.events",
        "parameters": {"type": {"type": "text", "description": "Only this type"}},
        "filters": ["type = :type"],
        "columns": ["seq", "type"],
        "order_by": ["seq"],
    },
    "events_from": {
        "title": "Events from a day",
        "source": "core.events",
        "parameters": {"from": {"type": "date", "required": True, "description": "First day"}},
        "filters": ["created_at >= :from"],
        "columns": ["type", {"name": "events", "expr": "count()"}],
        "group_by": ["type"],
    },
}


@pytest.fixture
async def daemon(tierd_daemon, tmp_path):
    config = {
        "reports": {
            "definitions": DEFINITIONS,
            "schedules": {
                "yearly": {
                    "reports": ["event_list"],
                    "tenant": "acme",
                    "cron": "0 0 1 1 *",
                    "format": "csv",
                    "directory": str(tmp_path / "out" / "{tenant}-{run}.{ext}"),
                }
            },
        }
    }
    d = await asyncio.to_thread(tierd_daemon, config)
    d.tokens = {name: await asyncio.to_thread(d.create_tenant, name) for name in ("acme", "globex")}
    for tenant, types in (("acme", ["invoice.paid", "invoice.sent", "payment.failed"]), ("globex", ["order.placed"])):
        for type_ in types:
            status, body = await d.arequest("POST", "/v1/events", {"type": type_, "data": {}}, token=d.tokens[tenant])
            assert status == 202, body
    return d


def run_rows(page: str) -> dict[str, str]:
    return dict(re.findall(r'<tr data-run="([^"]+)">(.*?)</tr>', page, re.S))


async def finished_run(ui: ConsoleSession, run_id: str) -> str:
    """The run's row in the runs list, once it is no longer pending or running."""

    async def done():
        status, page = await ui.get("/ui/reports/runs")
        row = run_rows(page).get(run_id, "")
        return row if re.search(r"s-(delivered|failed|skipped)", row) else None

    return await until(done, what=f"run {run_id} finished")


async def test_a_report_run_from_the_form_lists_and_downloads_its_csv(daemon):
    d = daemon
    async with ConsoleSession(d.url) as ui:
        await ui.sign_in(d.tokens["acme"])
        status, page = await ui.get("/ui/reports")
        assert status == 200
        assert 'data-report="event_list"' in page and 'data-report="event_volume"' in page
        assert 'action="/ui/reports/event_list/run"' in page and 'name="param.type"' in page
        assert "<option selected>csv</option>" in page and "<option>xlsx</option>" in page
        assert 'data-schedule="yearly"' in page and 'action="/ui/reports/schedules/yearly/run"' in page

        status, page = await ui.post("/ui/reports/event_list/run", {"format": "csv", "param.type": ""})
        assert status == 200 and ui.last_path == "/ui/reports/runs"
        run_id = re.search(r"Run (\S+) of event_list \(csv\)", page).group(1)
        row = await finished_run(ui, run_id)
        assert 's-delivered">delivered' in row and "event_list" in row and "<td>csv</td>" in row
        assert re.search(r'<td class="num">3</td>', row)
        link = f"/ui/reports/runs/{run_id}/download"
        assert f'href="{link}"' in row

        status, text = await ui.get(link)
        assert status == 200
        rows = list(csv.DictReader(io.StringIO(text)))
        assert [r["type"] for r in rows] == ["invoice.paid", "invoice.sent", "payment.failed"]

        # A parameter given in the form reaches the run.
        status, page = await ui.post("/ui/reports/event_list/run", {"format": "json", "param.type": "invoice.sent"})
        typed = re.search(r"Run (\S+) of event_list \(json\)", page).group(1)
        await finished_run(ui, typed)
        status, text = await ui.get(f"/ui/reports/runs/{typed}/download")
        assert status == 200 and json.loads(text)["rows"] == [{"seq": 2, "type": "invoice.sent"}]

    async with ConsoleSession(d.url) as ui:
        # Another tenant: not in its list, and its download is a 404 page.
        await ui.sign_in(d.tokens["globex"])
        status, page = await ui.get("/ui/reports/runs")
        assert status == 200 and run_id not in page
        status, page = await ui.get(f"/ui/reports/runs/{run_id}/download")
        assert status == 404 and "not_found" in page

    async with ConsoleSession(d.url) as ui:
        # The admin sees every tenant's runs, and the overview the latest.
        await ui.sign_in(ADMIN_TOKEN)
        status, page = await ui.get("/ui/reports/runs")
        assert run_id in run_rows(page) and "<td>acme</td>" in run_rows(page)[run_id]
        status, page = await ui.get("/ui/")
        panel = page[page.index('<h2><a href="/ui/reports/runs">') :]
        assert f'data-run="{run_id}"' in panel


async def test_a_schedule_runs_now_from_its_button(daemon, tmp_path):
    d = daemon
    async with ConsoleSession(d.url) as ui:
        await ui.sign_in(d.tokens["acme"])
        await ui.get("/ui/reports")
        status, page = await ui.post("/ui/reports/schedules/yearly/run")
        assert status == 200 and ui.last_path == "/ui/reports/runs"
        run_id = re.search(r"Run (\S+) of schedule yearly started", page).group(1)
        row = await finished_run(ui, run_id)
        assert 's-delivered">delivered' in row and "schedule yearly" in row
        # Delivered where the schedule says.
        (copy,) = (tmp_path / "out").iterdir()
        assert copy.name == f"acme-{run_id}.csv" and "invoice.paid" in copy.read_text()

    async with ConsoleSession(d.url) as ui:
        # The schedule is acme's: globex does not see it, nor can it run it.
        await ui.sign_in(d.tokens["globex"])
        status, page = await ui.get("/ui/reports")
        assert 'data-schedule="yearly"' not in page
        status, page = await ui.post("/ui/reports/schedules/yearly/run")
        assert ui.last_path == "/ui/reports" and 'class="flash error"' in page and "no schedule" in page


async def test_refusals_are_flashes_or_error_pages_and_nothing_runs(daemon):
    d = daemon
    async with ConsoleSession(d.url) as ui:
        await ui.sign_in(d.tokens["acme"])
        await ui.get("/ui/reports")
        for fields, message in (
            ({"format": "csv", "param.from": "the day before"}, "not a date"),
            ({"format": "csv"}, "events_from.from: required"),
            ({"format": "nope", "param.from": "2026-01-01"}, "no format"),
            ({"format": "csv", "param.from": "2026-01-01", "timezone": "Mars/Base"}, "unknown time zone"),
        ):
            status, page = await ui.post("/ui/reports/events_from/run", fields)
            assert status == 200 and ui.last_path == "/ui/reports", fields
            assert 'class="flash error"' in page and message in page, (fields, page[page.find("flash") :][:300])
        status, page = await ui.post("/ui/reports/no_such_report/run", {"format": "csv"})
        assert 'class="flash error"' in page and "no report" in page

        # No CSRF token: 403 before anything runs.
        status, page = await ui.post("/ui/reports/event_list/run", {"format": "csv"}, csrf=False)
        assert status == 403 and "csrf_failed" in page

        status, body = await d.arequest("GET", "/v1/reports/runs", token=d.tokens["acme"])
        assert body["data"] == []
        status, page = await ui.get("/ui/reports/runs/run_nope/download")
        assert status == 404
