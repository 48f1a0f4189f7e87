"""``tierd notify``: send, test, history, routes test, silences, channels."""

from __future__ import annotations

import datetime as dt
import json
import sys

import click

from tierd.core.cli_helpers import json_option, pass_cli


@click.group("notify")
def notify():
    """Notifications: send and test messages, read history, try routes."""


def _show_result(cli, row: dict, as_json: bool) -> None:
    cli.output(
        row
        if as_json
        else {k: row[k] for k in ("id", "channel", "status", "attempt_count", "last_error")}
        | {"detail": row["attempts"][-1]["detail"] if row["attempts"] else ""},
        as_json=as_json,
    )
    if row["status"] == "failed":
        sys.exit(1)


@notify.command("send")
@click.option("--channel", required=True, help="Configured channel name")
@click.option("--subject", required=True)
@click.option("--body", default="", help="Message text ('-' reads standard input)")
@click.option("--severity", type=click.Choice(["info", "warning", "critical"]), default="info")
@json_option
@pass_cli
def send(cli, channel, subject, body, severity, as_json):
    """Send a message through a channel now (recorded in history; retried if it fails transiently)."""
    if body == "-":
        body = sys.stdin.read()
    row = cli.api.post(
        "/v1/notifications/send", json={"channel": channel, "subject": subject, "body": body, "severity": severity}
    )
    _show_result(cli, row, as_json)


@notify.command("test")
@click.option("--channel", required=True, help="Configured channel name")
@json_option
@pass_cli
def test(cli, channel, as_json):
    """Send a test message through a channel and show the outcome."""
    _show_result(cli, cli.api.post("/v1/notifications/test", json={"channel": channel}), as_json)


@notify.command("history")
@click.option("--channel")
@click.option(
    "--status", type=click.Choice(["pending", "delivered", "failed", "muted", "throttled", "grouped", "digested"])
)
@click.option("--event", help="Event id")
@click.option("--tenant", help="Only this tenant's notifications")
@click.option("--since", help="ISO-8601 time")
@click.option("--limit", type=int, default=50, show_default=True)
@json_option
@pass_cli
def history(cli, channel, status, event, tenant, since, limit, as_json):
    """Notifications, newest first, with their last outcome."""
    params = {
        k: v
        for k, v in {"channel": channel, "status": status, "event": event, "since": since, "limit": limit}.items()
        if v is not None
    }
    data = cli.api.get("/v1/notifications", tenant=tenant, params=params)["data"]
    if as_json:
        cli.output(data, as_json=True)
        return
    rows = [{**r, "events": r["event_count"], "error": r["last_error"] or r["reason"]} for r in data]
    cli.output(rows, columns=["created_at", "id", "kind", "channel", "route", "status", "events", "subject", "error"])


@notify.command("channels")
@json_option
@pass_cli
def channels(cli, as_json):
    """Configured channels of the running daemon."""
    cli.output(cli.api.get("/v1/notifications/channels")["data"], columns=["name", "type"], as_json=as_json)


# --- routes -----------------------------------------------------------------------------


@notify.group("routes")
def routes():
    """The routing tree."""


def explain(section: dict, event: dict, event_types: dict, when: dt.datetime | None = None) -> list[dict]:
    """What the routing tree does with ``event`` (pure; used by `routes test`)."""
    from .compiled import build_tree
    from .grouping import group_labels
    from .silences import TimeIntervals

    when = when or dt.datetime.now(dt.UTC)
    intervals = TimeIntervals(section.get("time_intervals"))
    out = []
    for match in build_tree(section, event_types).evaluate(event):
        s = match.route.settings
        out.append(
            {
                "route": match.id,
                "path": " > ".join(match.path),
                "channels": match.channels,
                "grouped_by": group_labels(event, s["group_by"]) if s["group_by"] else None,
                "group_wait": s["group_wait"] if s["group_by"] else None,
                "throttle": s["throttle"],
                "muted_now": intervals.mute_reason(s, when),
            }
        )
    return out


@routes.command("test")
@click.option(
    "--event",
    "event_file",
    required=True,
    type=click.File("r"),
    help='JSON file ({"type": ..., "tenant": ..., "data": {...}}); - for standard input',
)
@json_option
@pass_cli
def routes_test(cli, event_file, as_json):
    """Show which routes and channels an event would reach (offline, from the config)."""
    try:
        event = json.load(event_file)
    except ValueError as exc:
        raise click.ClickException(f"{event_file.name}: not valid JSON: {exc}") from exc
    if not isinstance(event, dict) or not isinstance(event.get("type"), str):
        raise click.ClickException(f'{event_file.name}: expected an object with at least a "type"')
    event = {
        "id": event.get("id", "evt_test"),
        "tenant": event.get("tenant", ""),
        "type": event["type"],
        "data": event.get("data") or {},
        "created_at": event.get("created_at", ""),
    }
    _, registries, config = cli.load()
    result = explain(config["notifications"], event, registries.event_types)
    if as_json:
        cli.output({"event": event, "routes": result}, as_json=True)
        return
    if not result:
        click.echo(f"{event['type']}: no route matches; nobody is notified.")
        return
    for r in result:
        line = f"route {r['route']} ({r['path']}) -> {', '.join(r['channels']) or '(no channels)'}"
        if r["grouped_by"] is not None:
            line += f"  grouped by {json.dumps(r['grouped_by'])}, first digest after {r['group_wait']:g}s"
        if r["throttle"]:
            line += f"  throttle {r['throttle']['max']}/{r['throttle']['per']:g}s"
        if r["muted_now"]:
            line += f"  MUTED now ({r['muted_now']})"
        click.echo(line)


# --- silences ------------------------------------------------------------------------------


@notify.group("silences")
def silences():
    """Mute matching notifications for a while."""


@silences.command("list")
@click.option("--tenant")
@click.option("--all", "show_all", is_flag=True, help="Include ended silences")
@json_option
@pass_cli
def silences_list(cli, tenant, show_all, as_json):
    """Silences not yet ended (all tenants for the admin, unless --tenant)."""
    data = cli.api.get("/v1/notifications/silences", tenant=tenant, params={"all": "1"} if show_all else None)
    cli.output(data["data"], columns=["id", "tenant", "matchers", "starts_at", "ends_at", "comment"], as_json=as_json)


@silences.command("add")
@click.option("--type", "type_", help="Event type pattern, e.g. invoice.*")
@click.option("--tenant", help="Only this tenant's events (and scope the silence to it)")
@click.option("--channel")
@click.option("--route")
@click.option("--for", "duration", default="1h", show_default=True, help="How long, e.g. 30m, 2h")
@click.option("--comment", default="")
@json_option
@pass_cli
def silences_add(cli, type_, tenant, channel, route, duration, comment, as_json):
    """Mute matching notifications from now for --for (they are recorded as muted)."""
    from tierd.core.schema import Reject, parse_duration

    try:
        seconds = parse_duration(duration)
    except Reject as exc:
        raise click.BadParameter(str(exc), param_hint="--for") from exc
    ends = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=seconds)
    matchers = {k: v for k, v in {"type": type_, "channel": channel, "route": route}.items() if v}
    data = cli.api.post(
        "/v1/notifications/silences",
        tenant=tenant,
        json={"matchers": matchers, "ends_at": ends.isoformat(), "comment": comment},
    )
    cli.output(data, as_json=as_json)


@silences.command("delete")
@click.argument("silence_id")
@click.option("--tenant")
@pass_cli
def silences_delete(cli, silence_id, tenant):
    """End a silence now."""
    cli.api.delete(f"/v1/notifications/silences/{silence_id}", tenant=tenant)
    click.echo(f"deleted {silence_id}")
