"""``tierd reports``: list, show, explain, sources, formats, run, runs, run-info,
download, schedules, schedule-run.

Every command talks to the running daemon's control API with the admin token,
across tenants or, with ``--tenant``, for one, so the CLI and the API can never
disagree.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import click

from tierd.core.cli_helpers import json_option, pass_cli

#: How often ``run`` asks how its run is doing.
POLL = 0.25

tenant_opt = click.option("--tenant", default=None, help="Tenant to act for (default: across tenants, admin).")


@click.group("reports")
def reports():
    """Reports: list them, run them (csv, json, xlsx, ...), download files, schedules."""


def _params(pairs: tuple[str, ...]) -> dict:
    params = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise click.BadParameter(f"{pair!r} is not NAME=VALUE", param_hint="--param")
        params[key.strip()] = value
    return params


param_opt = click.option("--param", "params", multiple=True, metavar="NAME=VALUE", help="A report parameter; repeat.")


@reports.command("list")
@tenant_opt
@json_option
@pass_cli
def list_(cli, tenant, as_json):
    """Reports that can be run, with their parameters."""
    rows = cli.api.get("/v1/reports", tenant=tenant)["data"]
    if as_json:
        cli.output(rows, as_json=True)
        return
    cli.output(
        [{**r, "parameters": ", ".join(_param_names(r["parameters"]))} for r in rows],
        columns=["name", "title", "source", "parameters", "origin"],
    )


def _param_names(parameters) -> list[str]:
    """A report's parameter names, from the API's list of parameters (or names)."""
    return [p["name"] if isinstance(p, dict) else str(p) for p in parameters]


@reports.command("show")
@click.argument("name")
@tenant_opt
@json_option
@pass_cli
def show(cli, name, tenant, as_json):
    """One report: its title, source, parameters and columns."""
    report = cli.api.get(f"/v1/reports/{name}", tenant=tenant)
    if as_json:
        cli.output(report, as_json=True)
        return
    click.echo(f"{report['name']}: {report['title']}")
    if report.get("description"):
        click.echo(f"  {report['description']}")
    click.echo(f"source: {report['source']} (from {report['origin']})")
    click.echo("parameters:")
    for p in report.get("parameters") or []:
        if not isinstance(p, dict):
            click.echo(f"  {p}")
            continue
        if p.get("required"):
            need = "required"
        else:
            need = "optional" if p.get("default") is None else f"default {p['default']}"
        facts = [p["type"], need]
        if p.get("choices"):
            facts.append("one of " + ", ".join(map(str, p["choices"])))
        click.echo(f"  {p['name']} ({'; '.join(facts)}): {p.get('description') or ''}".rstrip(": "))
    click.echo("columns:")
    for c in report.get("columns") or []:
        click.echo(f"  {c['name']} ({c['type']}): {c.get('description') or ''}".rstrip(": "))
    if report.get("chart"):
        chart = report["chart"]
        click.echo(f"chart: {chart['type']} of {', '.join(chart['y'])} by {chart['x']}")


@reports.command("explain")
@click.argument("name")
@tenant_opt
@param_opt
@json_option
@pass_cli
def explain(cli, name, tenant, params, as_json):
    """The SQL a report compiles to, with its parameters."""
    answer = cli.api.post(f"/v1/reports/{name}/explain", json={"params": _params(params)}, tenant=tenant)
    if as_json:
        cli.output(answer, as_json=True)
        return
    click.echo(answer["explain"])


@reports.command("sources")
@json_option
@pass_cli
def sources(cli, as_json):
    """What reports can be written over: each source's typed columns."""
    rows = cli.api.get("/v1/reports/sources")["data"]
    if as_json:
        cli.output(rows, as_json=True)
        return
    for source in rows:
        click.echo(f"{source['name']}  ({source.get('origin') or '-'}): {source['description']}")
        width = max((len(c["name"]) for c in source["columns"]), default=0)
        for c in source["columns"]:
            click.echo(f"  {c['name'].ljust(width)}  {c['type']:<8}  {c['description']}")


@reports.command("formats")
@json_option
@pass_cli
def formats(cli, as_json):
    """Installed export formats."""
    cli.output(
        cli.api.get("/v1/reports/formats")["data"],
        columns=["format", "extension", "many", "media_type", "origin", "description"],
        as_json=as_json,
    )


def _download(cli, run_id: str, tenant: str | None, out: Path) -> int:
    """Write the run's file to ``out`` (renamed into place once whole); its size."""
    return cli.api.download(f"/v1/reports/runs/{run_id}/download", out, tenant=tenant)


def _wait(cli, run_id: str, tenant: str | None, quiet: bool, timeout: float) -> dict:
    """Poll the run until it is finished, with a spinner and its state on stderr."""
    spinner = "|/-\\"
    started = time.monotonic()
    show = not quiet and sys.stderr.isatty()
    i = 0
    while True:
        run = cli.api.get(f"/v1/reports/runs/{run_id}", tenant=tenant)
        if run["status"] not in ("pending", "running"):
            if show:
                click.echo("\r\033[K", nl=False, err=True)
            return run
        elapsed = time.monotonic() - started
        if elapsed > timeout:
            raise click.ClickException(f"report run {run_id} still {run['status']} after {timeout:g}s")
        if show:
            click.echo(f"\r{spinner[i % 4]} {run_id} {run['status']} {elapsed:5.1f}s", nl=False, err=True)
        elif not quiet and i % 40 == 0:
            click.echo(f"{run_id} {run['status']} ({elapsed:.0f}s)", err=True)
        i += 1
        time.sleep(POLL)


@reports.command("run")
@click.argument("name")
@tenant_opt
@param_opt
@click.option(
    "--format", "format_name", default="csv", show_default=True, help="Export format (tierd reports formats)."
)
@click.option("--also", "also", multiple=True, metavar="REPORT", help="Another report in the same file (xlsx); repeat.")
@click.option(
    "-o", "--output", type=click.Path(dir_okay=False, path_type=Path), help="File to write (default: its name)."
)
@click.option("--no-wait", is_flag=True, help="Only start the run and print it.")
@click.option("--timeout", type=float, default=3600, show_default=True, help="Seconds to wait for the run.")
@json_option
@pass_cli
def run(cli, name, tenant, params, format_name, also, output, no_wait, timeout, as_json):
    """Run a report, wait for it (progress on stderr), then download its file."""
    body = {"params": _params(params), "format": format_name, "trigger": "cli", "wait": "0s" if no_wait else "2s"}
    if also:
        body["reports"] = list(also)
    made = cli.api.post(f"/v1/reports/{name}/runs", json=body, tenant=tenant)
    if no_wait:
        cli.output(made, as_json=as_json)
        return
    finished = _wait(cli, made["id"], tenant, as_json, timeout)
    if finished["status"] == "failed":
        if as_json:
            cli.output(finished, as_json=True)
        raise click.ClickException(f"report run {finished['id']} failed: {finished['error']}")
    out = output or Path(finished["file_name"])
    size = _download(cli, finished["id"], tenant, out)
    if as_json:
        cli.output({**finished, "output": str(out)}, as_json=True)
    else:
        click.echo(f"{out}: {finished['rows']} row(s), {size} bytes (run {finished['id']})", err=True)


@reports.command("download")
@click.argument("run_id")
@tenant_opt
@click.option(
    "-o", "--output", type=click.Path(dir_okay=False, path_type=Path), help="File to write (default: its name)."
)
@pass_cli
def download(cli, run_id, tenant, output):
    """Download the file of a finished run."""
    run_ = cli.api.get(f"/v1/reports/runs/{run_id}", tenant=tenant)
    out = output or Path(run_["file_name"] or f"{run_id}.{run_['format']}")
    size = _download(cli, run_id, tenant, out)
    click.echo(f"{out}: {size} bytes", err=True)


@reports.command("runs")
@tenant_opt
@click.option("--status", default=None, help="pending|running|delivered|skipped|failed")
@click.option("--limit", type=int, default=50, show_default=True)
@json_option
@pass_cli
def runs(cli, tenant, status, limit, as_json):
    """Recent runs, newest first."""
    page = cli.api.get("/v1/reports/runs", tenant=tenant, params={"status": status, "limit": limit})
    rows = [{**r, "reports": ",".join(r["reports"])} for r in page["data"]] if not as_json else page["data"]
    cli.output(
        rows,
        columns=[
            "id",
            "created_at",
            "tenant",
            "reports",
            "format",
            "status",
            "rows",
            "size",
            "trigger",
            "schedule",
            "error",
        ],
        as_json=as_json,
    )


@reports.command("run-info")
@click.argument("run_id")
@tenant_opt
@json_option
@pass_cli
def run_info(cli, run_id, tenant, as_json):
    """One run: status, error, file, delivery."""
    cli.output(cli.api.get(f"/v1/reports/runs/{run_id}", tenant=tenant), as_json=as_json)


@reports.command("schedules")
@tenant_opt
@json_option
@pass_cli
def schedules(cli, tenant, as_json):
    """Schedules with their next run and last run."""
    rows = cli.api.get("/v1/reports/schedules", tenant=tenant)["data"]
    if as_json:
        cli.output(rows, as_json=True)
        return
    cli.output(
        [
            {
                **s,
                "reports": ",".join(s["reports"]),
                "to": ",".join(s["to"]),
                "last": (s["last_run"] or {}).get("status"),
                "last_at": (s["last_run"] or {}).get("created_at"),
            }
            for s in rows
        ],
        columns=[
            "name",
            "reports",
            "tenant",
            "cron",
            "timezone",
            "format",
            "to",
            "directory",
            "next_run_at",
            "last",
            "last_at",
        ],
    )


@reports.command("schedule-run")
@click.argument("name")
@tenant_opt
@json_option
@pass_cli
def schedule_run(cli, name, tenant, as_json):
    """Make a schedule's run now (sent where the schedule says)."""
    cli.output(
        cli.api.post(f"/v1/reports/schedules/{name}/run", json={"trigger": "cli"}, tenant=tenant), as_json=as_json
    )
