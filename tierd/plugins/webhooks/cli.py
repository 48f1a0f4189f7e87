"""``tierd webhooks``: list, add, rm, deliveries, retry, recover, test.

Every command talks to the running daemon's control API (admin token,
acting for ``--tenant``), so the CLI and the API can never disagree.
"""

from __future__ import annotations

import sys

import click

from tierd.core.cli_helpers import json_option, pass_cli

tenant_option = click.option("--tenant", required=True, help="Tenant the endpoints belong to.")


@click.group("webhooks")
def webhooks():
    """Webhook endpoints: subscribe URLs, read delivery history, retry, recover, test."""


@webhooks.command("list")
@tenant_option
@json_option
@pass_cli
def list_(cli, tenant, as_json):
    """List the tenant's endpoints."""
    rows, cursor = [], None
    while True:
        data = cli.api.get("/v1/webhooks", tenant=tenant, params={"limit": 500, "cursor": cursor})
        rows += data["data"]
        cursor = data["next_cursor"]
        if not cursor:
            break
    cli.output(rows, columns=["id", "url", "event_types", "enabled", "disabled_reason", "description"],
               as_json=as_json)


@webhooks.command("add")
@tenant_option
@click.argument("url")
@click.option("--event-type", "event_types", multiple=True,
              help="Event type or wildcard (invoice.*); repeat for several; none means every event.")
@click.option("--description", default="")
@click.option("--header", "headers", multiple=True, metavar="NAME:VALUE", help="Static header sent with each request.")
@click.option("--rate-limit", type=float, default=None, help="At most this many requests per second.")
@click.option("--disabled", is_flag=True, help="Create it disabled.")
@json_option
@pass_cli
def add(cli, tenant, url, event_types, description, headers, rate_limit, disabled, as_json):
    """Subscribe URL to the tenant's events; prints the endpoint and its signing secret."""
    parsed = {}
    for header in headers:
        name, sep, value = header.partition(":")
        if not sep:
            raise click.BadParameter(f"{header!r} is not NAME:VALUE", param_hint="--header")
        parsed[name.strip()] = value.strip()
    body = {"url": url, "event_types": list(event_types), "description": description, "headers": parsed,
            "enabled": not disabled}
    if rate_limit is not None:
        body["rate_limit"] = rate_limit
    created = cli.api.post("/v1/webhooks", json=body, tenant=tenant)
    cli.output(created if as_json else {k: created[k] for k in ("id", "url", "event_types", "enabled", "secret")},
               as_json=as_json)


@webhooks.command("rm")
@tenant_option
@click.argument("endpoint_id")
@pass_cli
def rm(cli, tenant, endpoint_id):
    """Delete an endpoint with its delivery history."""
    cli.api.delete(f"/v1/webhooks/{endpoint_id}", tenant=tenant)
    click.echo(f"deleted {endpoint_id}")


@webhooks.command("deliveries")
@tenant_option
@click.argument("endpoint_id")
@click.option("--status", type=click.Choice(["pending", "inflight", "succeeded", "failed"]))
@click.option("--event-type", default=None, help="Exact type or wildcard (invoice.*).")
@click.option("--since", default=None, help="ISO-8601 time.")
@click.option("--until", default=None, help="ISO-8601 time.")
@click.option("--limit", type=int, default=50, show_default=True)
@json_option
@pass_cli
def deliveries(cli, tenant, endpoint_id, status, event_type, since, until, limit, as_json):
    """Deliveries of an endpoint, newest first."""
    data = cli.api.get(f"/v1/webhooks/{endpoint_id}/deliveries", tenant=tenant,
                       params={"status": status, "event_type": event_type, "since": since, "until": until,
                               "limit": limit})
    cli.output(data["data"], columns=["id", "event_type", "status", "attempts", "last_status_code",
                                      "last_error", "created_at"], as_json=as_json)


@webhooks.command("retry")
@tenant_option
@click.argument("delivery_id")
@pass_cli
def retry(cli, tenant, delivery_id):
    """Send a delivery again now (failed ones too)."""
    cli.api.post(f"/v1/deliveries/{delivery_id}/retry", tenant=tenant)
    click.echo(f"{delivery_id} queued")


@webhooks.command("recover")
@tenant_option
@click.argument("endpoint_id")
@click.option("--since", required=True, help="ISO-8601 time: re-queue failed deliveries created since then.")
@pass_cli
def recover(cli, tenant, endpoint_id, since):
    """Re-queue every failed delivery of an endpoint since a time."""
    data = cli.api.post(f"/v1/webhooks/{endpoint_id}/recover", json={"since": since}, tenant=tenant)
    click.echo(f"{data['requeued']} deliveries queued")


@webhooks.command("test")
@tenant_option
@click.argument("endpoint_id")
@json_option
@pass_cli
def test(cli, tenant, endpoint_id, as_json):
    """Send a webhook.test event now and show the result (exit 1 if it failed)."""
    data = cli.api.post(f"/v1/webhooks/{endpoint_id}/test", tenant=tenant)
    cli.output(data, as_json=as_json)
    if data["outcome"] != "success":
        sys.exit(1)
