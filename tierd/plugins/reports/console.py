"""The reports pages of the web console (``/ui/reports``).

Everything goes through the control API as the session's caller
(``ctx.api``): the reports and formats it lists, the runs it makes and
lists, the files it hands out (a download is the API's own file response,
passed on as it is), the schedules it shows. A tenant runs reports over its
own rows and sees its own runs; an admin who has not picked a tenant runs
across tenants, as the API does for the bare admin token.
"""

from __future__ import annotations

import urllib.parse
from pathlib import Path
from typing import Any

from aiohttp import web

from tierd.core.ui import UiApiError, UiContext, UiPage, UiSection

from . import store

TEMPLATES = Path(__file__).parent / "templates" / "console"
#: How long a "Run now" waits for its run before showing the runs list (most runs take less).
RUN_WAIT = "2s"
#: A report's parameter arrives in the form as ``param.<name>``.
PARAM = "param."
OVERVIEW_RUNS = 5


def _quoted(value: str) -> str:
    """A path parameter put back into an API path (never a way to another path)."""
    return urllib.parse.quote(value, safe="")


def run_body(form: dict[str, str]) -> dict[str, Any]:
    """The API's run body from the form: empty fields are not given (the report's default holds)."""
    params = {k.removeprefix(PARAM): v.strip() for k, v in form.items() if k.startswith(PARAM) and v.strip()}
    body: dict[str, Any] = {"params": params, "wait": RUN_WAIT}
    for name in ("format", "timezone"):
        if form.get(name, "").strip():
            body[name] = form[name].strip()
    return body


# --- pages ---------------------------------------------------------------------------------


async def reports(ctx: UiContext) -> web.StreamResponse:
    """The reports the caller may run, each with a "Run now" form, and the schedules."""
    listed = await ctx.api("GET", "/v1/reports")
    formats = await ctx.api("GET", "/v1/reports/formats")
    schedules = await ctx.api("GET", "/v1/reports/schedules")
    return ctx.render(
        "reports/reports.html",
        reports=listed["data"],
        formats=[f["format"] for f in formats["data"]],
        schedules=schedules["data"],
    )


async def run_report(ctx: UiContext) -> web.StreamResponse:
    """Run a report now; a refusal (bad parameter, format) comes back as a flash."""
    name = ctx.match["name"]
    try:
        run = await ctx.api("POST", f"/v1/reports/{_quoted(name)}/runs", body=run_body(await ctx.form()))
    except UiApiError as exc:
        if exc.status >= 500:
            raise
        return ctx.redirect("/reports", error=f"{name}: {exc.message}")
    return ctx.redirect("/reports/runs", flash=f"Run {run['id']} of {name} ({run['format']}): {run['status']}")


async def run_schedule(ctx: UiContext) -> web.StreamResponse:
    """Make a schedule's run now, delivered where the schedule says."""
    name = ctx.match["name"]
    try:
        run = await ctx.api("POST", f"/v1/reports/schedules/{_quoted(name)}/run", body={})
    except UiApiError as exc:
        if exc.status >= 500:
            raise
        return ctx.redirect("/reports", error=f"schedule {name}: {exc.message}")
    return ctx.redirect("/reports/runs", flash=f"Run {run['id']} of schedule {name} started")


async def runs(ctx: UiContext) -> web.StreamResponse:
    """Report runs, newest first, with their files to download."""
    status = ctx.query.get("status", "")
    query = {"status": status, "cursor": ctx.query.get("cursor"), "limit": ctx.query.get("limit")}
    answer = await ctx.api("GET", "/v1/reports/runs", query=query)
    return ctx.render("reports/runs.html", answer=answer, picked=status, statuses=store.STATUSES)


async def download(ctx: UiContext) -> web.StreamResponse:
    """A run's file: the API's own response (its type and file name), as it is."""
    response: web.StreamResponse = await ctx.api("GET", f"/v1/reports/runs/{_quoted(ctx.match['run'])}/download")
    return response


async def overview(ctx: UiContext) -> str:
    """The overview's panel: the latest runs with their status."""
    latest = await ctx.api("GET", "/v1/reports/runs", query={"limit": OVERVIEW_RUNS})
    return ctx.fragment("reports/overview.html", runs=latest["data"])


def section(daemon: Any) -> UiSection:
    return UiSection(
        "reports",
        TEMPLATES,
        pages=[
            UiPage("GET", "/reports", reports),
            UiPage("GET", "/reports/runs", runs),
            UiPage("GET", "/reports/runs/{run}/download", download),
            UiPage("POST", "/reports/schedules/{name}/run", run_schedule),
            UiPage("POST", "/reports/{name}/run", run_report),
        ],
        nav=[("Reports", "/reports")],
        overview=overview,
    )
