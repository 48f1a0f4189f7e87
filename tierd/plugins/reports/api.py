"""Control API: reports, sources, runs (made, listed, downloaded) and schedules.

Tenants are walls: a tenant token runs reports over its own rows only and sees
only its own runs (another tenant's answer 404). The admin token runs a report
across tenants, or for one with ``Tierd-Tenant``; its bare token sees every run.
"""

from __future__ import annotations

import json
import os
from typing import Any

from aiohttp import web

from tierd.core.api import (
    PAGED,
    ApiError,
    Route,
    actor_of,
    body_of,
    daemon_of,
    int_cursor,
    json_response,
    page,
    page_params,
    query_choice,
    tenant_scope,
)
from tierd.core.clock import iso_or_none
from tierd.core.registry import REPORT_NAME_RE
from tierd.core.schema import Any as AnyValue
from tierd.core.schema import Duration, Enum, List, Map, Obj, OneOf, Str, TimeZone

from . import store
from .config import schedule_reports
from .schedules import next_due
from .service import ParamsRefused, ReportsService

#: The longest list of reports in one run (one workbook).
MAX_REPORTS = 20
#: The longest a request waits for its run (``wait``).
MAX_WAIT = 60.0


def _time(ts: float | None) -> str | None:
    return iso_or_none(ts)


def report_json(report: Any) -> dict:
    """A report as the API shows it: title, source, parameters (type, default,
    required, choices), columns, chart."""
    return dict(json.loads(json.dumps(report.to_dict(), default=str)))


def has_file(row) -> bool:
    """Whether a run has a file to download: it finished and made one (a schedule's run
    whose delivery failed has its file; one that failed before has none)."""
    return row["status"] in store.FINAL_STATUSES and bool(row["file_path"])


def run_json(row) -> dict:
    ready = has_file(row)
    return {
        "id": row["id"],
        "tenant": row["tenant_id"] or None,
        "reports": json.loads(row["reports"]),
        "params": json.loads(row["params"]),
        "format": row["format"],
        "status": row["status"],
        "error": row["error"],
        "rows": row["rows"],
        "size": row["size"],
        "file_name": row["file_name"],
        "media_type": row["media_type"],
        "download": f"/v1/reports/runs/{row['id']}/download" if ready else None,
        "trigger": row["trigger"],
        "schedule": row["schedule"],
        "delivery": json.loads(row["delivery"]) if row["delivery"] else None,
        "attempts": row["attempts"],
        "actor": row["actor"],
        "created_at": _time(row["created_at"]),
        "due_at": _time(row["due_at"]),
        "started_at": _time(row["started_at"]),
        "finished_at": _time(row["finished_at"]),
    }


def _service(request: web.Request) -> ReportsService:
    return ReportsService.of(daemon_of(request))


def _report(service: ReportsService, name: str) -> Any:
    report = service.reports.get(name)
    if report is None:
        raise ApiError(404, "unknown_report", f"no report {name!r} (GET /v1/reports lists them)")
    return report


async def list_reports(request: web.Request) -> web.Response:
    # Every report runs for a tenant over its own rows, and for the admin across tenants too.
    service = _service(request)
    return json_response({"data": [report_json(r) for _, r in sorted(service.reports.items())]})


async def get_report(request: web.Request) -> web.Response:
    service = _service(request)
    return json_response(report_json(_report(service, request.match_info["name"])))


async def explain_report(request: web.Request) -> web.Response:
    service = _service(request)
    name = request.match_info["name"]
    report = _report(service, name)
    body = body_of(request)
    params = _parse(service, name, body["params"], body["timezone"])
    tenant = tenant_scope(request)
    try:
        # The SQL the daemon's backend would run (it differs between SQLite and PostgreSQL).
        text = report.explain(tenant, report.parse_params(params), dialect=daemon_of(request).db.dialect)
    except ValueError as exc:
        raise ApiError(422, "invalid_params", str(exc)) from None
    return json_response({"report": name, "tenant": tenant, "params": params, "explain": text})


async def list_sources(request: web.Request) -> web.Response:
    sources = daemon_of(request).registries.report_sources
    origins = daemon_of(request).registries.origins
    return json_response(
        {
            "data": [
                {
                    "name": s.name,
                    "description": s.description,
                    "origin": origins.get(f"report_sources:{s.name}"),
                    "columns": [{"name": c.name, "type": c.type, "description": c.description} for c in s.columns],
                }
                for _, s in sorted(sources.items())
            ]
        }
    )


async def list_formats(request: web.Request) -> web.Response:
    registries = daemon_of(request).registries
    return json_response(
        {
            "data": [
                {
                    "format": name,
                    "description": e.description,
                    "media_type": e.media_type,
                    "extension": e.extension,
                    "many": e.many,
                    "origin": registries.origins.get(f"report_exporters:{name}"),
                }
                for name, e in sorted(registries.report_exporters.items())
            ]
        }
    )


def _parse(service: ReportsService, name: str, raw: dict, timezone: str = "UTC") -> dict:
    try:
        return service.parse(name, raw, timezone)
    except ParamsRefused as exc:
        where = f"{exc.report}.{exc.param}" if exc.param else exc.report
        raise ApiError(
            422,
            "invalid_params",
            f"{where}: {exc.message}",
            details={"report": exc.report, "param": exc.param},
        ) from None


EXPLAIN_BODY = Obj(
    {
        "params": Map(AnyValue(), default={}, max_len=100, doc="The report's parameters (GET /v1/reports)"),
        "timezone": TimeZone(default="UTC", doc="Of relative dates in params"),
    }
)

RUN_BODY = Obj(
    {
        "params": Map(AnyValue(), default={}, max_len=100, doc="The report's parameters (GET /v1/reports)"),
        "format": Str(default="csv", max_len=50, doc="An exporter's format (GET /v1/reports/formats)"),
        "reports": List(
            OneOf(
                Str(pattern=REPORT_NAME_RE, pattern_doc="a report name"),
                Obj(
                    {
                        "name": Str(required=True, pattern=REPORT_NAME_RE, pattern_doc="a report name"),
                        "params": Map(AnyValue(), default={}, max_len=100),
                    }
                ),
            ),
            default=None,
            max_len=MAX_REPORTS,
            doc="More reports in the same file (a workbook, one sheet each), with params of their own or the run's",
        ),
        "timezone": TimeZone(default="UTC", doc="Of relative dates in params"),
        "trigger": Enum(("api", "cli"), default="api", doc="Who asked (the CLI says cli)"),
        "wait": Duration(
            default="0s", doc="Answer 200 with the finished run if it is done within this time, at most 60s (else 202)"
        ),
    }
)


async def create_run(request: web.Request) -> web.Response:
    daemon = daemon_of(request)
    service = _service(request)
    body = body_of(request)
    name = request.match_info["name"]
    _report(service, name)
    wanted: dict[str, dict] = {name: body["params"]}
    for extra in body["reports"] or []:
        extra_name, extra_params = (
            (extra, body["params"]) if isinstance(extra, str) else (extra["name"], extra["params"])
        )
        _report(service, extra_name)
        if extra_name in wanted:
            raise ApiError(422, "invalid_body", f"the report {extra_name!r} is named twice")
        wanted[extra_name] = extra_params
    exporters = daemon.registries.report_exporters
    exporter = exporters.get(body["format"])
    if exporter is None:
        raise ApiError(
            422,
            "unknown_format",
            f"no format {body['format']!r} (installed: {', '.join(sorted(exporters)) or 'none'})",
            details={"formats": sorted(exporters)},
        )
    if len(wanted) > 1 and not exporter.many:
        many = sorted(f for f, e in exporters.items() if e.many)
        raise ApiError(
            422,
            "format_takes_one_report",
            f"{body['format']} holds one report per file; for several use {', '.join(many) or 'no installed format'}",
            details={"formats": many},
        )
    tenant = tenant_scope(request)
    if tenant is not None and not await daemon.tenant_exists(tenant):
        raise ApiError(404, "tenant_not_found", f"no tenant {tenant!r}")
    parsed = {n: _parse(service, n, p, body["timezone"]) for n, p in wanted.items()}
    run_id, _ = await service.create_run(
        tenant, parsed, body["format"], body["trigger"], actor=actor_of(request), timezone=body["timezone"]
    )
    finished = body["wait"] > 0 and await service.runner.wait(run_id, min(body["wait"], MAX_WAIT))
    row = await store.get(daemon.db, run_id)
    return json_response(
        run_json(row), status=200 if finished else 202, headers={"Location": f"/v1/reports/runs/{run_id}"}
    )


async def list_runs(request: web.Request) -> web.Response:
    daemon = daemon_of(request)
    limit, cursor = page_params(request)
    status = query_choice(request, "status", store.STATUSES)
    rows = await store.page(daemon.db, tenant_scope(request), int_cursor(cursor), limit + 1, status)
    items = [dict(run_json(r), _seq=r["seq"]) for r in rows]
    result = page(items, limit, cursor_of=lambda item: item["_seq"])
    for item in result["data"]:
        item.pop("_seq")
    return json_response(result)


async def _run_row(request: web.Request):
    row = await store.get(daemon_of(request).db, request.match_info["run"], tenant_scope(request))
    if row is None:
        raise ApiError(404, "not_found", f"no report run {request.match_info['run']}")
    return row


async def get_run(request: web.Request) -> web.Response:
    return json_response(run_json(await _run_row(request)))


async def download_run(request: web.Request) -> web.StreamResponse:
    row = await _run_row(request)
    if not has_file(row):
        what = row["error"] if row["status"] == "failed" else f"it is {row['status']}"
        raise ApiError(
            409, "not_ready", f"report run {row['id']} has no file: {what}", details={"status": row["status"]}
        )
    path = row["file_path"]
    name = row["file_name"] or os.path.basename(path)
    if daemon_of(request).db.dialect == "postgresql":
        # Kept in the database: whichever node made it, any node answers.
        first = await store.file_part(daemon_of(request).db, row["id"], 0)
        if first is not None:
            return await _stream_parts(request, row, name, first)
    if not os.path.isfile(path):
        raise ApiError(410, "file_gone", f"the file of report run {row['id']} was deleted (reports.retention)")
    return web.FileResponse(
        path,
        headers={
            "Content-Type": row["media_type"] or "application/octet-stream",
            "Content-Disposition": f'attachment; filename="{name}"',
        },
    )


async def _stream_parts(request: web.Request, row, name: str, first: bytes) -> web.StreamResponse:
    """A run's file from ``report_files``, a part at a time."""
    db = daemon_of(request).db
    response = web.StreamResponse(
        headers={
            "Content-Type": row["media_type"] or "application/octet-stream",
            "Content-Disposition": f'attachment; filename="{name}"',
        }
    )
    if row["size"] is not None:
        response.content_length = int(row["size"])
    await response.prepare(request)
    part = 0
    content: bytes | None = first
    while content is not None:
        await response.write(content)
        part += 1
        content = await store.file_part(db, row["id"], part)
    await response.write_eof()
    return response


# --- schedules ------------------------------------------------------------------------------


def schedule_json(name: str, schedule: dict, last, now: float) -> dict:
    return {
        "name": name,
        "reports": schedule_reports(schedule),
        "params": schedule["params"],
        "tenant": schedule["tenant"],
        "cron": schedule["cron"],
        "timezone": schedule["timezone"],
        "format": schedule["format"],
        "to": schedule["to"],
        "directory": schedule["directory"] or None,
        "only_if_rows": schedule["only_if_rows"],
        "next_run_at": _time(next_due(schedule["cron"], schedule["timezone"], now)),
        "last_run": run_json(last) if last is not None else None,
    }


def _visible(request: web.Request, schedule: dict) -> bool:
    tenant = tenant_scope(request)
    return tenant is None or schedule["tenant"] == tenant


async def list_schedules(request: web.Request) -> web.Response:
    daemon = daemon_of(request)
    service = _service(request)
    now = daemon.clock.time()
    items = []
    for name, schedule in sorted(service.section["schedules"].items()):
        if _visible(request, schedule):
            items.append(schedule_json(name, schedule, await store.last_of_schedule(daemon.db, name), now))
    return json_response({"data": items})


RUN_SCHEDULE_BODY = Obj({"trigger": Enum(("api", "cli"), default="api", doc="Who asked (the CLI says cli)")})


async def run_schedule(request: web.Request) -> web.Response:
    daemon = daemon_of(request)
    service = _service(request)
    name = request.match_info["name"]
    schedule = service.section["schedules"].get(name)
    if schedule is None or not _visible(request, schedule):
        raise ApiError(404, "unknown_schedule", f"no schedule {name!r}")
    run_id = await service.schedule_run(
        name, due_at=daemon.clock.time(), trigger=body_of(request)["trigger"], actor=actor_of(request)
    )
    row = await store.get(daemon.db, run_id) if run_id else None
    if row is None:  # pragma: no cover - a run without a key is always new
        raise ApiError(409, "not_made", f"schedule {name!r}: the run was not made")
    return json_response(run_json(row), status=202, headers={"Location": f"/v1/reports/runs/{run_id}"})


def routes() -> list[Route]:
    tag = "reports"
    run_response = {"type": "object", "description": "a report run"}
    # Static paths before /v1/reports/{name}: aiohttp matches in order.
    return [
        Route("GET", "/v1/reports", list_reports, tag=tag, summary="Reports the caller may run, with parameters"),
        Route("GET", "/v1/reports/sources", list_sources, tag=tag, summary="Report sources and their typed columns"),
        Route("GET", "/v1/reports/formats", list_formats, tag=tag, summary="Installed export formats"),
        Route(
            "GET",
            "/v1/reports/runs",
            list_runs,
            tag=tag,
            summary="Report runs, newest first",
            params=PAGED | {"status": "|".join(store.STATUSES)},
        ),
        Route("GET", "/v1/reports/runs/{run}", get_run, tag=tag, summary="One report run", response=run_response),
        Route(
            "GET",
            "/v1/reports/runs/{run}/download",
            download_run,
            tag=tag,
            summary="The file of a finished run (409 while it is not ready)",
        ),
        Route("GET", "/v1/reports/schedules", list_schedules, tag=tag, summary="Schedules, next and last runs"),
        Route(
            "POST",
            "/v1/reports/schedules/{name}/run",
            run_schedule,
            tag=tag,
            summary="Make a schedule's run now (delivered as the schedule says)",
            body=RUN_SCHEDULE_BODY,
            statuses=(202,),
        ),
        Route("GET", "/v1/reports/{name}", get_report, tag=tag, summary="One report and its parameters"),
        Route(
            "POST",
            "/v1/reports/{name}/explain",
            explain_report,
            tag=tag,
            summary="The SQL a report compiles to for the caller, with its bound parameters (nothing runs)",
            body=EXPLAIN_BODY,
        ),
        Route(
            "POST",
            "/v1/reports/{name}/runs",
            create_run,
            tag=tag,
            summary="Run a report (202 with the run; GET it until delivered, then download; 200 if done within wait)",
            body=RUN_BODY,
            statuses=(200, 202),
            response=run_response,
        ),
    ]
