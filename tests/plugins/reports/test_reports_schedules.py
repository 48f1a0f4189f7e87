"""Report schedules with real parts: a real SMTP server (aiosmtpd) gets the email
with the file attached, a directory gets its copy, a run due while the daemon was
down is made once at start, a run made again after a crash sends nothing twice.
"""

from __future__ import annotations

import datetime as dt
import io
import json
import sys
import time
import zoneinfo
from pathlib import Path

import pytest
from aiohttp import web
from test_reports_runs import DEFINITIONS, check_file, download, finished

from tierd.core.config import ConfigError, load_config
from tierd.core.daemon import plugin_schemas
from tierd.core.plugins import make_plugin_manager
from tierd.core.registry import collect_registries
from tierd.plugins.reports.schedules import latest_due, schedule_params
from tierd.testing import DaemonProcess, LocalDaemon, Receiver, StepClock, eventually

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "notifications"))
from notify_helpers import SmtpServer  # noqa: E402


@pytest.fixture
def smtp():
    server = SmtpServer(None, "plain").start()
    yield server
    server.stop()


def schedule_config(tmp_path: Path, smtp: SmtpServer | None, schedules: dict) -> dict:
    config: dict = {"reports": {"definitions": DEFINITIONS, "schedules": schedules}}
    if smtp is not None:
        config["notifications"] = {"channels": {"mail": smtp.channel_config(), "journal": {"type": "log"}}}
    return config


async def seed(local: LocalDaemon) -> None:
    await local.tenant("acme")
    await local.tenant("globex")
    for i in range(3):
        await local.publish("acme", "invoice.paid", {"i": i})
    await local.publish("acme", "invoice.sent", {})


async def test_a_schedule_sends_the_file_by_email_and_copies_it_to_a_directory(tmp_path, smtp):
    openpyxl = pytest.importorskip("openpyxl")
    target = tmp_path / "out"
    schedules = {
        "weekly": {
            "reports": ["events_by_type", "event_list"],
            "tenant": "acme",
            "cron": "0 6 * * 1",
            "timezone": "Europe/Zurich",
            "format": "xlsx",
            "to": ["mail"],
            "directory": str(target) + "/{tenant}/{name}-{date}.xlsx",
        },
        "empty": {
            "reports": {"events_by_type": {"type": "nothing.here"}},
            "tenant": "acme",
            "cron": "0 6 * * 1",
            "format": "csv",
            "to": ["mail"],
            "only_if_rows": True,
        },
    }
    async with LocalDaemon(tmp_path, schedule_config(tmp_path, smtp, schedules)) as local:
        await seed(local)
        status, run = await local.call("POST", "/v1/reports/schedules/weekly/run", {})
        assert status == 202 and run["schedule"] == "weekly" and run["tenant"] == "acme", run
        done = await finished(local, run["id"])
        assert done["status"] == "delivered", done
        today = dt.datetime.now(zoneinfo.ZoneInfo("Europe/Zurich")).date().isoformat()
        copy = target / "acme" / f"weekly-{today}.xlsx"
        assert done["delivery"]["directory"] == str(copy) and copy.exists()
        assert set(done["delivery"]["notifications"]) == {"mail"}

        await eventually(lambda: smtp.messages, 20, what="the report's email")
        (mail,) = smtp.messages
        assert "Events by type" in mail["Subject"] or "2 reports" in mail["Subject"]
        text = mail.get_body(("plain",)).get_content()
        assert "Events by type: 2 rows" in text and "type=invoice.paid, events=3" in text, text
        (attachment,) = list(mail.iter_attachments())
        assert attachment.get_filename() == done["file_name"] and done["file_name"].endswith(".xlsx")
        book = openpyxl.load_workbook(io.BytesIO(attachment.get_content()))
        assert list(book["Events by type"].iter_rows(values_only=True))[1] == ("invoice.paid", 3)
        assert copy.read_bytes() == attachment.get_content()

        # only_if_rows: an empty report is made, and sent to nobody.
        status, run = await local.call("POST", "/v1/reports/schedules/empty/run", {})
        skipped = await finished(local, run["id"])
        assert skipped["status"] == "skipped" and skipped["rows"] == 0, skipped
        assert "only_if_rows" in json.dumps(skipped["delivery"])

        # The schedule API: next run, last run; a tenant sees its own schedules only.
        status, body = await local.call("GET", "/v1/reports/schedules")
        by_name = {s["name"]: s for s in body["data"]}
        assert by_name["weekly"]["last_run"]["id"] == done["id"] and by_name["weekly"]["next_run_at"]
        globex = await local.tenant("globex")
        status, body = await local.call("GET", "/v1/reports/schedules", token=globex)
        assert status == 200 and body["data"] == []
        status, body = await local.call("POST", "/v1/reports/schedules/weekly/run", {}, token=globex)
        assert status == 404 and body["error"]["code"] == "unknown_schedule"
        status, body = await local.call("GET", f"/v1/reports/runs/{done['id']}", token=globex)
        assert status == 404
        # Another mail only when another run is made: nothing was sent twice.
        assert len(smtp.messages) == 1


#: The reports the plugins ship (``origin`` not ``config``).
SHIPPED = [
    "event_volume",
    "notification_activity",
    "open_items_aging",
    "reconciliation_summary",
    "webhook_deliveries",
    "webhook_failures",
]


async def test_a_schedule_in_every_format_delivers_files_that_open(tmp_path):
    """A schedule per format, run now: xlsx takes the six shipped reports in one
    workbook, the other formats one shipped report each (each report at least once);
    each delivered file is opened and checked by its format."""
    target = tmp_path / "out"
    single = ["csv", "csv-excel", "json", "jsonl", "pdf", "html"]
    # Each shipped report once; the reconciliation ones (no statements here: no rows)
    # where the title is what is checked.
    rotation = [
        "event_volume",
        "webhook_deliveries",
        "open_items_aging",
        "webhook_failures",
        "reconciliation_summary",
        "notification_activity",
    ]
    schedules = {
        f"every-{fmt}": {
            "reports": [name],
            "tenant": "acme",
            "cron": "0 6 * * *",
            "format": fmt,
            "directory": str(target) + "/{tenant}/{schedule}-{date}.{ext}",
        }
        for fmt, name in zip(single, rotation, strict=True)
    }
    schedules["every-xlsx"] = {
        "reports": SHIPPED,
        "tenant": "acme",
        "cron": "0 6 * * *",
        "format": "xlsx",
        "directory": str(target) + "/{tenant}/{schedule}-{date}.{ext}",
    }
    config = schedule_config(tmp_path, None, schedules)
    # Rows for the shipped reports too: notifications through a log channel, and a
    # webhook endpoint that answers 500 (deliveries, failures).
    config["notifications"] = {
        "channels": {"logbook": {"type": "log"}},
        "routes": [{"name": "all", "match": {"type": "invoice.*"}, "channels": ["logbook"]}],
    }
    config["webhooks"] = {
        "retry_schedule": ["0s"],
        "allow_http": True,
        "allow_destinations": ["127.0.0.1/32"],
        "timeout": "2s",
    }
    receiver = await Receiver().start()

    async def down(request, body):
        return web.Response(status=500, text="down")

    receiver.responder = down
    async with LocalDaemon(tmp_path, config) as local:
        await local.tenant("acme")
        status, body = await local.call(
            "POST", "/v1/webhooks", {"url": receiver.url + "/hook", "event_types": ["invoice.*"]}, tenant="acme"
        )
        assert status == 201, body
        await seed(local)

        async def delivered():
            row = await local.daemon.db.fetchone(
                "SELECT (SELECT COUNT(*) FROM webhook_deliveries WHERE status IN ('pending', 'inflight'))"
                " + (SELECT COUNT(*) FROM notifications WHERE status IN ('pending', 'grouped')) AS n"
            )
            return row["n"] == 0

        await local.settled()
        await eventually(delivered, 30, what="deliveries and notifications to be done")
        status, listed = await local.call("GET", "/v1/reports")
        assert sorted(r["name"] for r in listed["data"] if r["origin"] != "config") == SHIPPED
        reports = {r["name"]: r for r in listed["data"]}
        status, formats = await local.call("GET", "/v1/reports/formats")
        assert {f["format"] for f in formats["data"]} == {*single, "xlsx"}
        runs, made = {}, {}
        for name in schedules:
            status, run = await local.call("POST", f"/v1/reports/schedules/{name}/run", {})
            assert status == 202 and run["schedule"] == name and run["tenant"] == "acme", run
            runs[name] = run["id"]
        for name, run_id in runs.items():
            done = await finished(local, run_id, timeout=60)
            schedule = schedules[name]
            assert done["status"] == "delivered", (name, done)
            assert done["reports"] == schedule["reports"], (name, done)
            path = Path(done["delivery"]["directory"])
            assert path.parent == target / "acme" and path.name.startswith(f"{name}-"), (name, path)
            assert path.exists() and path.stat().st_size == done["size"], (name, done)
            wanted = [reports[r] for r in schedule["reports"]]
            check_file(schedule["format"], path.read_bytes(), wanted if len(wanted) > 1 else wanted[0], done)
            made[name] = done
            # The run's download is the same file as the directory's copy.
            status, _, body = await download(local, run_id, tenant="acme")
            assert status == 200 and body == path.read_bytes(), (name, status)
    await receiver.close()
    # The files had rows to check: the workbook has every report's, and events,
    # notifications and webhooks each gave some.
    rows = {name: run["rows"] for name, run in made.items()}
    assert all(rows[f"every-{fmt}"] > 0 for fmt in ("csv", "csv-excel", "jsonl", "html", "xlsx")), rows


async def test_a_run_made_again_after_a_crash_sends_nothing_twice(tmp_path, smtp):
    schedules = {
        "daily": {"reports": ["events_by_type"], "tenant": "acme", "cron": "0 6 * * *", "format": "csv", "to": ["mail"]}
    }
    config = schedule_config(tmp_path, smtp, schedules)
    async with LocalDaemon(tmp_path, config) as local:
        await seed(local)
        status, run = await local.call("POST", "/v1/reports/schedules/daily/run", {})
        assert (await finished(local, run["id"]))["status"] == "delivered"
        await eventually(lambda: len(smtp.messages) == 1, 20, what="the first email")
        # As if the daemon died after queuing the email, before marking the run done.
        await local.daemon.db.execute(
            "UPDATE report_runs SET status='running', finished_at=NULL, attempts=1 WHERE id=?", (run["id"],)
        )
    async with LocalDaemon(tmp_path, config) as local:
        again = await finished(local, run["id"])
        assert again["status"] == "delivered" and again["attempts"] == 2, again
        # A later run's email is the sentinel: by then a second email of the first would be there.
        status, later = await local.call("POST", "/v1/reports/schedules/daily/run", {})
        assert (await finished(local, later["id"]))["status"] == "delivered"
        await eventually(lambda: len(smtp.messages) >= 2, 20, what="the second run's email")
        await local.daemon.service("notifications").dispatcher.tick()
        assert len(smtp.messages) == 2, [m["Subject"] for m in smtp.messages]
        rows = await local.daemon.db.fetchall("SELECT status FROM notifications WHERE kind='message'")
        assert [r["status"] for r in rows] == ["delivered", "delivered"]


async def test_a_run_due_while_down_is_made_once_at_start(tmp_path):
    schedules = {
        "hourly": {
            "reports": {"events_by_type": {"period": "last_month"}},
            "tenant": "acme",
            "cron": "0 * * * *",
            "timezone": "Pacific/Auckland",
            "format": "json",
            "directory": str(tmp_path / "out" / "{name}-{date}-{time}.json"),
            "grace": "2h",
        }
    }
    clock = StepClock()
    config = schedule_config(tmp_path, None, schedules)

    async def schedule_runs(local):
        status, body = await local.call("GET", "/v1/reports/runs", params={"limit": 500})
        return [r for r in body["data"] if r["schedule"] == "hourly"]

    async with LocalDaemon(tmp_path, config, clock=clock) as local:
        await seed(local)
        # Known from now on: nothing due before it is made.
        assert await schedule_runs(local) == []
        assert await local.daemon.service("reports").make_due_run("hourly") is None
    clock.advance(3 * 3600)  # down for three hours
    async with LocalDaemon(tmp_path, config, clock=clock) as local:
        now = clock.time()
        (run,) = await schedule_runs(local)
        due = latest_due("0 * * * *", "Pacific/Auckland", now - 2 * 3600, now)
        assert run["due_at"] == dt.datetime.fromtimestamp(due, dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        assert run["trigger"] == "schedule"
        # Relative period on the schedule's calendar, kept in the run.
        day = dt.datetime.fromtimestamp(due, zoneinfo.ZoneInfo("Pacific/Auckland")).date()
        last = day.replace(day=1) - dt.timedelta(days=1)
        assert run["params"]["events_by_type"]["from"] == last.replace(day=1).isoformat()
        assert run["params"]["events_by_type"]["to"] == last.isoformat()
        done = await finished(local, run["id"])
        assert done["status"] == "delivered", done
        assert Path(done["delivery"]["directory"]).exists()
        # The timer firing again for the same due time makes nothing more.
        service = local.daemon.service("reports")
        assert await service.make_due_run("hourly", now=now) is None
        assert await service.make_due_run("hourly", now=now) is None
    async with LocalDaemon(tmp_path, config, clock=clock) as local:  # a restart at once: nothing new
        assert len(await schedule_runs(local)) == 1


def test_latest_due_and_schedule_params():
    def ts(text: str) -> float:
        return dt.datetime.fromisoformat(text).timestamp()

    # Daily at 06:00 in Zurich (05:00 UTC in winter).
    assert latest_due(
        "0 6 * * *", "Europe/Zurich", ts("2027-01-15T00:00:00+00:00"), ts("2027-01-15T07:00:00+00:00")
    ) == ts("2027-01-15T05:00:00+00:00")
    # Not yet due, or due before the window: nothing.
    assert (
        latest_due("0 6 * * *", "Europe/Zurich", ts("2027-01-15T00:00:00+00:00"), ts("2027-01-15T04:59:00+00:00"))
        is None
    )
    assert (
        latest_due("0 6 * * *", "Europe/Zurich", ts("2027-01-15T05:00:00+00:00"), ts("2027-01-15T23:00:00+00:00"))
        is None
    )
    # Several missed: the latest only.
    assert latest_due("0 * * * *", "UTC", ts("2027-01-15T00:30:00+00:00"), ts("2027-01-15T03:10:00+00:00")) == ts(
        "2027-01-15T03:00:00+00:00"
    )
    schedule = {
        "reports": {"a": {}, "b": {"period": "yesterday"}},
        "params": {"period": "last_week", "x": 1},
        "timezone": "Pacific/Auckland",
    }
    # 2027-01-15T12:00Z is already the 16th in Auckland.
    got = {name: (params, today) for name, params, today in schedule_params(schedule, ts("2027-01-15T12:00:00+00:00"))}
    assert got["a"] == ({"x": 1, "from": "last_week", "to": "last_week"}, dt.date(2027, 1, 16))
    assert got["b"][0] == {"x": 1, "from": "yesterday", "to": "yesterday"}


def test_schedule_mistakes_are_config_errors_with_their_key(tmp_path):
    pm = make_plugin_manager(load_entrypoints=False)
    schemas = plugin_schemas(pm, collect_registries(pm))
    path = tmp_path / "tierd.yaml"
    path.write_text(
        json.dumps(
            {
                "reports": {
                    "definitions": DEFINITIONS,
                    "schedules": {
                        "a": {"reports": ["events_by_tipe"], "cron": "0 6 * * *", "to": ["mail"]},
                        "b": {
                            "reports": ["events_by_type", "event_list"],
                            "cron": "0 6 * * *",
                            "format": "csv",
                            "directory": "/srv/x.csv",
                        },
                        "c": {"reports": ["events_by_type"], "cron": "0 6 * * *", "format": "docx", "to": ["m"]},
                        "d": {
                            "reports": ["events_by_type"],
                            "cron": "0 6 * * *",
                            "params": {"period": "last_fortnight"},
                            "to": ["m"],
                        },
                        "e": {"reports": ["events_by_type"], "cron": "0 6 * * *", "directory": "out/{nme}.csv"},
                        "f": {"reports": ["events_by_type"], "cron": "0 6 * * *"},
                    },
                }
            }
        )
    )
    with pytest.raises(ConfigError) as err:
        load_config(path, schemas, env={})
    text = str(err.value)
    for expected in (
        "reports.schedules.a.reports: unknown report 'events_by_tipe' (did you mean 'events_by_type'?)",
        "reports.schedules.b.reports: csv takes one report per file",
        "reports.schedules.c.format: unknown format 'docx'",
        "reports.schedules.d.params.period: unknown period 'last_fortnight'",
        "reports.schedules.e.directory: must be an absolute path template",
        "reports.schedules.f: says nowhere to send the report",
    ):
        assert expected in text, (expected, text)
    # Fields of their own type are checked first (the cross checks need valid fields).
    bad = {"reports": ["events_by_type"], "cron": "61 6 * * *", "to": ["m"], "timezone": "Mars/Base"}
    path.write_text(json.dumps({"reports": {"definitions": DEFINITIONS, "schedules": {"g": bad}}}))
    with pytest.raises(ConfigError) as err:
        load_config(path, schemas, env={})
    assert "reports.schedules.g.cron: invalid cron" in str(err.value)
    assert "reports.schedules.g.timezone: unknown time zone 'Mars/Base'" in str(err.value)


def test_the_cli_lists_schedules_and_runs_one(tmp_path):
    workdir = tmp_path / "d"
    workdir.mkdir()
    schedules = {
        "daily": {
            "reports": ["events_by_type"],
            "tenant": "acme",
            "cron": "0 6 * * *",
            "format": "csv",
            "directory": str(tmp_path / "out" / "{tenant}-{date}.csv"),
        }
    }
    with DaemonProcess(workdir, schedule_config(tmp_path, None, schedules)) as d:
        d.create_tenant("acme")
        result = d.cli("reports", "schedules", "--json")
        assert result.returncode == 0, result.stderr
        (listed,) = json.loads(result.stdout)
        assert listed["name"] == "daily" and listed["next_run_at"] and listed["last_run"] is None
        result = d.cli("reports", "schedule-run", "daily", "--json")
        assert result.returncode == 0, result.stderr
        run = json.loads(result.stdout)
        assert run["trigger"] == "cli" and run["schedule"] == "daily"
        for _ in range(200):
            status, body = d.request("GET", f"/v1/reports/runs/{run['id']}")
            if body["status"] not in ("pending", "running"):
                break
            time.sleep(0.05)
        assert body["status"] == "delivered", body
        assert list((tmp_path / "out").glob("acme-*.csv"))


async def test_a_message_with_attachments_through_notifications(tmp_path, smtp):
    """What notifications offers any plugin: a durable message, idempotent by key, whose
    files are read when it is sent (email attaches them, a log channel sends the text);
    a file gone by then fails the message, saying which."""
    config = schedule_config(tmp_path, smtp, {})
    config["notifications"]["channels"]["chat"] = {"type": "log"}
    async with LocalDaemon(tmp_path, config) as local:
        notifications = local.daemon.service("notifications")
        report = tmp_path / "r.csv"
        report.write_bytes(b"a,b\r\n1,2\r\n")
        files = [{"filename": "r.csv", "path": str(report), "media_type": "text/csv"}]
        first = await notifications.send("mail", "Subject", "Body", attachments=files, key="k1")
        assert await notifications.send("mail", "Subject", "Body", attachments=files, key="k1") == first
        chat = await notifications.send("chat", "Subject", "Body", attachments=files)
        gone = await notifications.send(
            "mail", "Gone", "Body", attachments=[{"filename": "x.csv", "path": str(tmp_path / "x.csv")}]
        )
        with pytest.raises(LookupError, match="no notification channel 'nope'"):
            await notifications.send("nope", "s", "b")

        async def settled():
            # The daemon's own dispatcher runs too: a row it has in flight is skipped by
            # this tick and still pending, so tick until every row has its outcome.
            await notifications.dispatcher.tick()
            rows = {r["id"]: r for r in await local.daemon.db.fetchall("SELECT * FROM notifications")}
            return rows if all(r["status"] in ("delivered", "failed") for r in rows.values()) else None

        rows = await eventually(settled, what="every message sent or failed")
        assert len(rows) == 3
        assert rows[first]["status"] == "delivered" and rows[chat]["status"] == "delivered"
        assert rows[gone]["status"] == "failed" and "'x.csv' cannot be read" in rows[gone]["last_error"]
        (mail,) = smtp.messages
        (attachment,) = list(mail.iter_attachments())
        assert attachment.get_filename() == "r.csv" and attachment.get_content() == "a,b\r\n1,2\r\n"
