"""``tierd webhooks``: list, add, update, rm, secret, rotate-secret, stats,
deliveries, event, show, retry, recover, replay, test, preview; portal-link,
portal-links, portal-revoke (the portal a tenant hands to its customers).

Every command talks to the running daemon's control API (admin token,
acting for ``--tenant``), so the CLI and the API can never disagree.
"""

from __future__ import annotations

import functools
import json
import sys

import click

from tierd.core.cli_helpers import count_of, tenant_command

from .ordering import ORDERINGS
from .records import DELIVERY_STATUSES
from .signing import SIGNING_SCHEMES


@click.group("webhooks")
def webhooks():
    """Webhook endpoints: subscribe URLs, read delivery history, retry, recover, test."""


#: ``--ordering`` of add and update (the API's ``ordering``).
ORDERING = click.option(
    "--ordering",
    type=click.Choice(ORDERINGS),
    default=None,
    help="fifo: deliveries in event order, one at a time (a failing one holds back the rest); "
    "unordered (default): as fast as the limits allow.",
)


def command(name: str, argument: str | None = None, as_json: bool = True):
    """A ``tierd webhooks NAME`` command (core's tenant_command) with an optional id argument."""
    return tenant_command(webhooks, name, argument=argument, as_json=as_json)


@command("list")
@click.option("--owner", default=None, help="Only the endpoints of this customer (see portal-link).")
def list_(cli, tenant, owner, as_json):
    """List the tenant's endpoints."""
    rows = cli.api.get_all("/v1/webhooks", tenant=tenant, params={"owner": owner} if owner else None)
    columns = ["id", "url", "event_types", "enabled", "signing", "failing_since", "disabled_reason", "description"]
    columns[4:4] = ["ordering", "blocked_since", "blocked_by"]
    cli.output(rows, columns=columns, as_json=as_json)


@command("add", "url")
@click.option(
    "--event-type",
    "event_types",
    multiple=True,
    help="Event type or wildcard (invoice.*); repeat for several; none means every event.",
)
@click.option("--description", default="")
@click.option("--header", "headers", multiple=True, metavar="NAME:VALUE", help="Static header sent with each request.")
@click.option("--rate-limit", type=float, default=None, help="At most this many requests per second.")
@click.option("--disabled", is_flag=True, help="Create it disabled.")
@click.option("--owner", default=None, help="The tenant's customer it belongs to (their portal link shows it).")
@ORDERING
@click.option(
    "--signing",
    type=click.Choice(SIGNING_SCHEMES),
    default="hmac-sha256",
    show_default=True,
    help="hmac-sha256: a shared whsec_ secret (v1); ed25519: receivers get a whpk_ public key (v1a).",
)
def add(cli, tenant, url, event_types, description, headers, rate_limit, disabled, owner, signing, ordering, as_json):
    """Subscribe URL to the tenant's events; prints the endpoint and its signing secret."""
    parsed = {}
    for header in headers:
        name, sep, value = header.partition(":")
        if not sep:
            raise click.BadParameter(f"{header!r} is not NAME:VALUE", param_hint="--header")
        parsed[name.strip()] = value.strip()
    body = {
        "url": url,
        "event_types": list(event_types),
        "description": description,
        "headers": parsed,
        "enabled": not disabled,
        "signing": signing,
    }
    if rate_limit is not None:
        body["rate_limit"] = rate_limit
    if ordering is not None:
        body["ordering"] = ordering
    if owner is not None:
        body["owner"] = owner
    created = cli.api.post("/v1/webhooks", json=body, tenant=tenant)
    shown = ("id", "url", "event_types", "enabled", "ordering", "signing", "secret", "public_key")
    cli.output(created if as_json else {k: created[k] for k in shown if k in created}, as_json=as_json)


@command("update", "endpoint_id")
@click.option("--url", default=None, help="New URL.")
@click.option(
    "--event-type",
    "event_types",
    multiple=True,
    help="Replaces the subscribed types (repeat for several); --all-events subscribes to every type.",
)
@click.option("--all-events", is_flag=True, help="Subscribe to every event type.")
@click.option("--description", default=None)
@click.option("--rate-limit", type=float, default=None, help="Requests per second; 0 removes the limit.")
@click.option(
    "--enable/--disable",
    "enabled",
    default=None,
    help="Enable (e.g. after tierd disabled a failing endpoint; a fresh failure window) or disable.",
)
@ORDERING
@click.option(
    "--transformation",
    "transformation_file",
    type=click.File("r"),
    default=None,
    help='JSON file {"body": TEMPLATE, "headers": {NAME: TEMPLATE}} reshaping what is sent; - for standard input.',
)
@click.option("--no-transformation", is_flag=True, help="Remove the transformation: the raw event is sent again.")
def update(
    cli,
    tenant,
    endpoint_id,
    url,
    event_types,
    all_events,
    description,
    rate_limit,
    enabled,
    ordering,
    transformation_file,
    no_transformation,
    as_json,
):
    """Change an endpoint: only the options given."""
    if event_types and all_events:
        raise click.UsageError("--event-type and --all-events exclude each other")
    body = {
        "url": url,
        "description": description,
        "enabled": enabled,
        "event_types": [] if all_events else list(event_types) or None,
        "ordering": ordering,
    }
    body = {k: v for k, v in body.items() if v is not None}
    if rate_limit is not None:
        body["rate_limit"] = rate_limit or None
    if transformation_file is not None and no_transformation:
        raise click.UsageError("--transformation and --no-transformation exclude each other")
    if transformation_file is not None or no_transformation:
        body["transformation"] = None if no_transformation else _json_file(transformation_file)
    if not body:
        raise click.UsageError("nothing to change: give at least one option")
    updated = cli.api.put(f"/v1/webhooks/{endpoint_id}", json=body, tenant=tenant)
    cli.output(
        updated
        if as_json
        else {
            k: updated[k]
            for k in ("id", "url", "event_types", "enabled", "rate_limit", "ordering", "blocked_since", "description")
        },
        as_json=as_json,
    )


@command("secret", "endpoint_id")
def secret(cli, tenant, endpoint_id, as_json):
    """Print the endpoint's signing secret (and until when the previous one still signs)."""
    cli.output(cli.api.get(f"/v1/webhooks/{endpoint_id}/secret", tenant=tenant), as_json=as_json)


@command("rotate-secret", "endpoint_id")
@click.option(
    "--signing",
    type=click.Choice(SIGNING_SCHEMES),
    default=None,
    help="Move to this scheme (default: keep the endpoint's).",
)
def rotate_secret(cli, tenant, endpoint_id, signing, as_json):
    """Make a new signing secret or key; the old one also signs during webhooks.rotation_grace."""
    body = {"signing": signing} if signing else {}
    cli.output(cli.api.post(f"/v1/webhooks/{endpoint_id}/rotate-secret", json=body, tenant=tenant), as_json=as_json)


@command("rm", "endpoint_id", as_json=False)
def rm(cli, tenant, endpoint_id):
    """Delete an endpoint with its delivery history."""
    cli.api.delete(f"/v1/webhooks/{endpoint_id}", tenant=tenant)
    click.echo(f"deleted {endpoint_id}")


@command("deliveries", "endpoint_id")
@click.option("--status", type=click.Choice(DELIVERY_STATUSES))
@click.option("--event-type", default=None, help="Exact type or wildcard (invoice.*).")
@click.option("--since", default=None, help="ISO-8601 time.")
@click.option("--until", default=None, help="ISO-8601 time.")
@click.option("--limit", type=int, default=50, show_default=True)
def deliveries(cli, tenant, endpoint_id, status, event_type, since, until, limit, as_json):
    """Deliveries of an endpoint, newest first."""
    data = cli.api.get(
        f"/v1/webhooks/{endpoint_id}/deliveries",
        tenant=tenant,
        params={"status": status, "event_type": event_type, "since": since, "until": until, "limit": limit},
    )
    cli.output(
        data["data"],
        columns=["id", "event_type", "status", "attempts", "last_status_code", "last_error", "created_at"],
        as_json=as_json,
    )


@command("stats", "endpoint_id")
@click.option("--window", default="24h", show_default=True, help="Attempts of this recent span (1h, 7d, ...).")
def stats(cli, tenant, endpoint_id, window, as_json):
    """Health of an endpoint: deliveries by status, success rate and latency of recent attempts."""
    data = cli.api.get(f"/v1/webhooks/{endpoint_id}/stats", tenant=tenant, params={"window": window})
    if as_json:
        cli.output(data, as_json=True)
        return
    a = data["attempts"]
    rate = "-" if a["success_rate"] is None else f"{a['success_rate']:.1%}"
    latency = "-"
    if a["latency_ms_p50"] is not None:
        # Estimates from a histogram of buckets 1.41x wide (see the API's stats).
        latency = f"p50 ~{a['latency_ms_p50']:g} ms, p99 ~{a['latency_ms_p99']:g} ms"
    cli.output(
        {
            "endpoint": data["endpoint_id"] + ("" if data["enabled"] else "  (disabled)"),
            "deliveries": ", ".join(f"{n} {status}" for status, n in data["deliveries"].items()),
            f"attempts ({window})": f"{a['total']}, {rate} succeeded"
            + "".join(f", {n} {o}" for o, n in sorted(a["by_outcome"].items()) if o != "success"),
            "latency": latency,
            "failing since": data["failing_since"] or "-",
        }
    )


@command("event", "event_id")
def event(cli, tenant, event_id, as_json):
    """Where one event went: its delivery to each endpoint, with its state."""
    data = cli.api.get("/v1/deliveries", tenant=tenant, params={"event_id": event_id})["data"]
    if not data and not as_json:
        click.echo(f"{event_id}: no endpoint subscribed to it; nothing was sent")
        return
    cli.output(
        data,
        columns=[
            "id",
            "endpoint_id",
            "endpoint_url",
            "status",
            "attempts",
            "last_status_code",
            "last_error",
            "next_attempt_at",
        ],
        as_json=as_json,
    )


@command("show", "delivery_id")
def show(cli, tenant, delivery_id, as_json):
    """One delivery: its state, its payload and every attempt, oldest first."""
    data = cli.api.get(f"/v1/deliveries/{delivery_id}", tenant=tenant)
    if as_json:
        cli.output(data, as_json=True)
        return
    attempts = data.pop("attempts_detail")
    cli.output(data)
    click.echo("")
    if not attempts:
        click.echo("no attempt yet")
        return
    cli.output(attempts, columns=["attempted_at", "outcome", "status_code", "latency_ms", "error", "response_body"])


@command("retry", "delivery_id", as_json=False)
def retry(cli, tenant, delivery_id):
    """Send a delivery again now (failed ones too)."""
    cli.api.post(f"/v1/deliveries/{delivery_id}/retry", tenant=tenant)
    click.echo(f"{delivery_id} queued")


def time_window(what: str):
    """--since (required) and --until, given to the command as ``window``, the API's body."""

    def decorate(fn):
        @functools.wraps(fn)
        def wrapper(*args, since, until, **kwargs):
            return fn(*args, window={"since": since} | ({"until": until} if until else {}), **kwargs)

        wrapper = click.option("--until", default=None, help="ISO-8601 time: only those created before it.")(wrapper)
        return click.option("--since", required=True, help=f"ISO-8601 time: {what} created since then.")(wrapper)

    return decorate


@command("recover", "endpoint_id", as_json=False)
@time_window("failed deliveries")
def recover(cli, tenant, endpoint_id, window):
    """Re-queue every failed delivery of an endpoint since a time (e.g. after the receiver's outage)."""
    data = cli.api.post(f"/v1/webhooks/{endpoint_id}/recover", json=window, tenant=tenant)
    click.echo(f"{count_of(data['requeued'], 'delivery', 'deliveries')} queued")


@command("replay", "endpoint_id")
@time_window("events")
def replay(cli, tenant, endpoint_id, window, as_json):
    """Deliver the events of a span that the endpoint subscribes to and never got
    (it was created later, or disabled meanwhile); nothing is sent twice."""
    data = cli.api.post(f"/v1/webhooks/{endpoint_id}/replay", json=window, tenant=tenant)
    if as_json:
        cli.output(data, as_json=True)
        return
    click.echo(
        f"{count_of(data['queued'], 'delivery', 'deliveries')} queued ({data['events_scanned']} events read)"
        + ("" if data["endpoint_enabled"] else "; the endpoint is disabled: they go out once it is enabled")
    )


@command("test", "endpoint_id")
def test(cli, tenant, endpoint_id, as_json):
    """Send a webhook.test event now and show the result (exit 1 if it failed)."""
    data = cli.api.post(f"/v1/webhooks/{endpoint_id}/test", tenant=tenant)
    cli.output(data, as_json=as_json)
    if data["outcome"] != "success":
        sys.exit(1)


@command("preview", "endpoint_id")
@click.option(
    "--event",
    "event_file",
    required=True,
    type=click.File("r"),
    help='JSON file of a sample event {"type": ..., "data": {...}}; - for standard input.',
)
@click.option(
    "--transformation",
    "transformation_file",
    type=click.File("r"),
    default=None,
    help="JSON file of a transformation to try instead of the saved one.",
)
def preview(cli, tenant, endpoint_id, event_file, transformation_file, as_json):
    """Show the body and headers the endpoint's transformation renders for a sample event; sends nothing."""
    body = {"event": _json_file(event_file)}
    if transformation_file is not None:
        body["transformation"] = _json_file(transformation_file)
    data = cli.api.post(f"/v1/webhooks/{endpoint_id}/transformation/preview", json=body, tenant=tenant)
    if as_json:
        cli.output(data, as_json=True)
        return
    for name, value in data["headers"].items():
        click.echo(f"{name}: {value}")
    if not data["transformed"]:
        click.echo("(no transformation: the event is sent as it is)")
    click.echo(json.dumps(data["body"], indent=2, ensure_ascii=False))


# --- the portal (portal.py) -------------------------------------------------------------


@command("portal-link")
@click.option("--customer", required=True, help="The tenant's customer the portal is for, e.g. cust_42.")
@click.option(
    "--endpoints",
    type=click.Choice(("own", "all")),
    default="own",
    show_default=True,
    help="own: only the customer's endpoints; all: every endpoint of the tenant.",
)
@click.option("--expires-in", default="1h", show_default=True, help="How long the link lasts (1m to 7d).")
def portal_link(cli, tenant, customer, endpoints, expires_in, as_json):
    """Make a one-time link to the webhooks portal for a customer; prints its URL (shown once)."""
    body = {"customer": customer, "endpoints": endpoints, "expires_in": expires_in}
    link = cli.api.post("/v1/portal/links", json=body, tenant=tenant)
    if as_json:
        cli.output(link, as_json=True)
        return
    click.echo(link["url"])
    click.echo(
        f"{link['id']}: for {link['customer']} ({link['endpoints']} endpoints), until {link['expires_at']}", err=True
    )


@command("portal-links")
def portal_links(cli, tenant, as_json):
    """List the tenant's portal links, newest first, with their state."""
    rows = cli.api.get_all("/v1/portal/links", tenant=tenant)
    columns = ["id", "customer", "endpoints", "state", "created_at", "expires_at", "redeemed_at", "created_by"]
    cli.output(rows, columns=columns, as_json=as_json)


@command("portal-revoke", "link_id", as_json=False)
def portal_revoke(cli, tenant, link_id):
    """Revoke a portal link and end the session it opened."""
    revoked = cli.api.delete(f"/v1/portal/links/{link_id}", tenant=tenant)
    click.echo(f"revoked {link_id} ({revoked['sessions_ended']} session(s) ended)")


def _json_file(file) -> dict:
    """The JSON object in ``file`` (an event or a transformation), or the error naming the file."""
    try:
        value = json.load(file)
    except ValueError as exc:
        raise click.ClickException(f"{file.name}: not valid JSON: {exc}") from exc
    if not isinstance(value, dict):
        raise click.ClickException(f"{file.name}: expected a JSON object")
    return value
