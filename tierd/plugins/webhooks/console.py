"""The webhooks pages of the web console (``/ui/webhooks``, ``/ui/deliveries``).

Pages read and act through the control API (``ctx.api``), so tenant scoping,
validation, audit and error codes are the API's: another tenant's endpoint or
delivery is the API's 404, shown as core's 404 page. A refusal of an action
(a POST) comes back to the page it was made from as an error flash.

Two things the API has no route for are read from the plugin's tables here,
scoped by the session's tenant: the hourly health chart of an endpoint (the
stats route answers totals, not a series) and the overview panel (counts
across all of a tenant's endpoints, or every tenant's for the admin).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from aiohttp import web

from tierd.core.clock import iso
from tierd.core.ui import UiApiError, UiContext, UiPage, UiSection

from .migrations import LATENCY_BOUNDS_MS
from .records import DELIVERY_STATUSES
from .service import WebhooksService
from .store import dialect_sql, latency_percentile

TEMPLATES = Path(__file__).parent / "templates" / "console"
#: Rows per page: endpoints, and deliveries in an endpoint's log.
PAGE = 25
#: The health chart: this many hourly points, ending with the current hour.
HOURS = 24
#: Longest response body excerpt shown for an attempt.
EXCERPT = 500
#: Overview: how many rows of each list (failed deliveries, disabled and blocked endpoints).
OVERVIEW_ROWS = 5


def section(daemon) -> UiSection:
    return UiSection(
        "webhooks",
        TEMPLATES,
        pages=[
            UiPage("GET", "/webhooks", list_endpoints),
            # Before /webhooks/{id}, which would take "portal-links" for an id.
            UiPage("GET", "/webhooks/portal-links", portal_links),
            UiPage("POST", "/webhooks/portal-links", _refusals(create_portal_link)),
            UiPage("POST", "/webhooks/portal-links/{id}/revoke", _refusals(revoke_portal_link)),
            UiPage("GET", "/webhooks/{id}", endpoint_page),
            UiPage("POST", "/webhooks/{id}/test", send_test),
            UiPage("POST", "/webhooks/{id}/enabled", set_enabled),
            UiPage("POST", "/webhooks/{id}/recover", recover),
            UiPage("GET", "/deliveries/{id}", delivery_page),
            UiPage("POST", "/deliveries/{id}/retry", retry),
        ],
        nav=[("Webhooks", "/webhooks")],
        overview=overview,
    )


# --- helpers -------------------------------------------------------------------------


def link(ctx: UiContext, path: str, tenant: str | None) -> str:
    """A link to a page of a row of ``tenant``: it names the tenant when the
    admin views all tenants (the API needs one), else it keeps the session's."""
    return ctx.url(path, tenant=tenant if ctx.tenant is None else None)


def store(ctx: UiContext):
    return WebhooksService.of(ctx.daemon).store


def _text(form: dict[str, str], name: str) -> str | None:
    """A posted field, None when empty (an HTML form sends every field)."""
    value = form.get(name, "").strip()
    return value or None


async def _act(ctx: UiContext, back: str, method: str, path: str, body: Any = None) -> Any:
    """Call the API for an action from a POST page; a refusal redirects to ``back``
    with an error flash (raised as ``_Refused``, answered by ``_refusals``).

    A 404 (another tenant's object, or a missing one) is left to core's 404 page."""
    try:
        return await ctx.api(method, path, body=body)
    except UiApiError as exc:
        if exc.status == 404:
            raise
        raise _Refused(ctx.redirect(back, error=f"Refused: {exc.message} ({exc.code})")) from None


class _Refused(Exception):
    """An action the API refused: the redirect back with the error flash."""

    def __init__(self, response: web.Response) -> None:
        super().__init__("refused")
        self.response = response


def _refusals(handler):
    """Answer ``_Refused``'s redirect instead of an error page."""

    async def wrapped(ctx: UiContext) -> web.StreamResponse:
        try:
            return await handler(ctx)
        except _Refused as refused:
            return refused.response

    wrapped.__name__ = handler.__name__
    wrapped.__doc__ = handler.__doc__
    return wrapped


# --- endpoints -----------------------------------------------------------------------


async def list_endpoints(ctx: UiContext) -> web.StreamResponse:
    """The endpoints: the tenant's (paged by the API), or every tenant's for the
    admin viewing all tenants (tenant by tenant, ``?after=`` the last one shown)."""
    if ctx.tenant is not None:
        answer = await ctx.api("GET", "/v1/webhooks", {"limit": PAGE, "cursor": ctx.query.get("cursor")})
        rows = [(ctx.tenant, e) for e in answer["data"]]
        return ctx.render("webhooks/endpoints.html", rows=rows, answer=answer, more=[], after=None, link=link)
    after = ctx.query.get("after", "")
    rows, more, last = [], [], None
    for tenant in sorted(t for t in ctx.tenants if t > after):
        if len(rows) >= PAGE:
            break
        answer = await ctx.api("GET", "/v1/webhooks", {"limit": PAGE}, tenant=tenant)
        rows += [(tenant, e) for e in answer["data"]]
        if answer["next_cursor"]:
            more.append(tenant)
        last = tenant
    following = last if last is not None and any(t > last for t in ctx.tenants) else None
    return ctx.render(
        "webhooks/endpoints.html", rows=rows, answer={"next_cursor": None}, more=more, after=following, link=link
    )


# --- portal links -------------------------------------------------------------------


async def portal_links(ctx: UiContext, created: dict | None = None, status: int = 200) -> web.StreamResponse:
    """The tenant's portal links (the portal a customer manages its endpoints in),
    a form to make one, and the one just made with its URL (shown this once)."""
    if ctx.tenant is None:
        return ctx.render("webhooks/portal_links.html", answer=None, created=None)
    answer = await ctx.api("GET", "/v1/portal/links", {"limit": PAGE, "cursor": ctx.query.get("cursor")})
    return ctx.render("webhooks/portal_links.html", status=status, answer=answer, created=created)


async def create_portal_link(ctx: UiContext) -> web.StreamResponse:
    form = await ctx.form()
    body = {"customer": form.get("customer", "").strip(), "endpoints": form.get("endpoints") or "own"}
    if _text(form, "expires_in"):
        body["expires_in"] = form["expires_in"].strip()
    created = await _act(ctx, "/webhooks/portal-links", "POST", "/v1/portal/links", body)
    # The URL carries a token that is never shown again: answered here, not after a redirect.
    return await portal_links(ctx, created=created, status=201)


async def revoke_portal_link(ctx: UiContext) -> web.StreamResponse:
    link_id = ctx.match["id"]
    await _act(ctx, "/webhooks/portal-links", "DELETE", f"/v1/portal/links/{link_id}")
    return ctx.redirect("/webhooks/portal-links", flash=f"Link {link_id} revoked; its session has ended")


async def endpoint_page(ctx: UiContext) -> web.StreamResponse:
    """One endpoint: settings, health over 24 h, actions and its delivery log."""
    endpoint_id = ctx.match["id"]
    endpoint = await ctx.api("GET", f"/v1/webhooks/{endpoint_id}")
    stats = await ctx.api("GET", f"/v1/webhooks/{endpoint_id}/stats", {"window": "24h"})
    status = ctx.query.get("status") or None
    deliveries = await ctx.api(
        "GET",
        f"/v1/webhooks/{endpoint_id}/deliveries",
        {"limit": PAGE, "cursor": ctx.query.get("cursor"), "status": status},
    )
    now = ctx.daemon.clock.time()
    return ctx.render(
        "webhooks/endpoint.html",
        endpoint=endpoint,
        stats=stats,
        hourly=await hourly_health(ctx, endpoint_id, now),
        deliveries=deliveries,
        status_filter=status,  # not `status`: render's own argument (the HTTP status)
        statuses=DELIVERY_STATUSES,
        recover_since=iso(now - 86400)[:16],  # a datetime-local input's value (UTC)
    )


async def hourly_health(ctx: UiContext, endpoint_id: str, now: float) -> dict[str, Any]:
    """Success rate (%) and p50 latency (ms) of each of the last ``HOURS`` hours
    (None: no attempt that hour).

    The stats route answers totals over its window, not a series, so the
    series is read from the per-minute counters (``webhook_attempt_minutes``,
    migration 3): one range of their primary key for this endpoint, joined to
    the endpoint row so it is the session's tenant's (the API has already
    answered it exists for that tenant)."""
    first_hour = int(now // 3600) - HOURS + 1
    rows = await store(ctx).db.fetchall(
        "SELECT m.minute / 60 AS hour, m.outcome = 'success' AS ok, m.bucket, SUM(m.n) AS n"
        " FROM webhook_endpoints e JOIN webhook_attempt_minutes_now m ON m.endpoint_id=e.id AND m.minute>=?"
        " WHERE e.tenant_id=? AND e.id=? GROUP BY 1, 2, 3",
        (first_hour * 60, ctx.tenant, endpoint_id),
    )
    ok = [0] * HOURS
    total = [0] * HOURS
    histograms = [[0] * (len(LATENCY_BOUNDS_MS) + 1) for _ in range(HOURS)]
    for row in rows:
        i = row["hour"] - first_hour
        if not 0 <= i < HOURS:
            continue
        n = int(row["n"])  # PostgreSQL's SUM of a BIGINT is a NUMERIC (a Decimal)
        total[i] += n
        ok[i] += n if row["ok"] else 0
        if row["bucket"] >= 0:
            histograms[i][row["bucket"]] += n
    return {
        "success": [round(100 * o / t, 1) if t else None for o, t in zip(ok, total, strict=True)],
        "latency": [latency_percentile(h, 50) for h in histograms],
        "since": iso(first_hour * 3600),
    }


@_refusals
async def send_test(ctx: UiContext) -> web.StreamResponse:
    """Send a ``webhook.test`` event now and flash what the receiver answered."""
    endpoint_id = ctx.match["id"]
    back = f"/webhooks/{endpoint_id}"
    result = await _act(ctx, back, "POST", f"/v1/webhooks/{endpoint_id}/test", {})
    answered = f"HTTP {result['status_code']}" if result["status_code"] is not None else "no answer"
    latency = f", {result['latency_ms']:.0f} ms" if result["latency_ms"] is not None else ""
    said = f"Test {result['delivery_id']}: {result['outcome']} ({answered}{latency})"
    if result["outcome"] == "success":
        return ctx.redirect(back, flash=said)
    return ctx.redirect(back, error=said + (f": {result['error']}" if result["error"] else ""))


@_refusals
async def set_enabled(ctx: UiContext) -> web.StreamResponse:
    """Enable or disable an endpoint (``enabled`` = ``true`` or ``false``)."""
    endpoint_id = ctx.match["id"]
    back = f"/webhooks/{endpoint_id}"
    wanted = (await ctx.form()).get("enabled")
    if wanted not in ("true", "false"):
        return ctx.redirect(back, error="enabled must be true or false")
    await _act(ctx, back, "PUT", f"/v1/webhooks/{endpoint_id}", {"enabled": wanted == "true"})
    return ctx.redirect(back, flash="Endpoint enabled" if wanted == "true" else "Endpoint disabled")


@_refusals
async def recover(ctx: UiContext) -> web.StreamResponse:
    """Re-queue the endpoint's failed deliveries created since the time given (UTC)."""
    endpoint_id = ctx.match["id"]
    back = f"/webhooks/{endpoint_id}"
    since = _text(await ctx.form(), "since") or iso(ctx.daemon.clock.time() - 86400)
    result = await _act(ctx, back, "POST", f"/v1/webhooks/{endpoint_id}/recover", {"since": since})
    n = result["requeued"]
    return ctx.redirect(back, flash=f"{n} failed deliver{'y' if n == 1 else 'ies'} re-queued")


# --- deliveries ----------------------------------------------------------------------


async def delivery_page(ctx: UiContext) -> web.StreamResponse:
    """One delivery: its event, status, payload and every attempt."""
    delivery = await ctx.api("GET", f"/v1/deliveries/{ctx.match['id']}")
    attempts = [
        a | {"excerpt": (a["response_body"] or "")[:EXCERPT], "cut": len(a["response_body"] or "") > EXCERPT}
        for a in delivery["attempts_detail"]
    ]
    return ctx.render(
        "webhooks/delivery.html",
        delivery=delivery,
        attempts=attempts,
        payload=json.dumps(delivery["payload"], indent=2, ensure_ascii=False),
    )


@_refusals
async def retry(ctx: UiContext) -> web.StreamResponse:
    """Send a delivery again now; back to the delivery page, or to its endpoint's
    log when the button was there (``back=endpoint``)."""
    delivery_id = ctx.match["id"]
    back = f"/deliveries/{delivery_id}"
    if (await ctx.form()).get("back") == "endpoint":
        # Only known pages, never a URL from the form (no open redirect).
        delivery = await ctx.api("GET", f"/v1/deliveries/{delivery_id}")
        back = f"/webhooks/{delivery['endpoint_id']}"
    result = await _act(ctx, back, "POST", f"/v1/deliveries/{delivery_id}/retry")
    waits = f", after {result['waits_for']} (ordered endpoint)" if result.get("waits_for") else ""
    return ctx.redirect(back, flash=f"Queued for delivery{waits}")


def _span(seconds: float) -> str:
    """A wait as people say it: "40 s", "12 min", "3 h"."""
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size:
            return f"{int(seconds // size)} {unit}"
    return f"{int(seconds)} s"


# --- overview ------------------------------------------------------------------------


async def overview(ctx: UiContext) -> str:
    """The webhooks panel of the overview (HTML): queue, recent failures, endpoints
    that do not deliver. Counts across endpoints, which the API has no route for:
    read from the plugin's tables, scoped by the session's tenant (None: all)."""
    now = ctx.daemon.clock.time()
    numbers = await overview_numbers(store(ctx).db, ctx.tenant, now)
    return ctx.fragment("webhooks/overview.html", link=link, now=now, **numbers)


async def overview_numbers(db, tenant: str | None, now: float) -> dict[str, Any]:
    """What the overview panel shows. Each read walks an index of migration 1 or 3:
    the endpoints of the tenant (or all endpoints), then per endpoint its counters
    row, one seek of its pending ``due_at`` index, or a range of its failed index."""
    scope = "e.tenant_id=:tenant" if tenant is not None else "1=1"  # a boolean for PostgreSQL
    params = {"tenant": tenant, "since": now - 86400, "rows": OVERVIEW_ROWS}
    queue = await db.fetchone(
        "SELECT COALESCE(SUM(c.pending), 0) AS pending,"
        " MIN((SELECT MIN(d.due_at) FROM webhook_deliveries d WHERE d.endpoint_id=e.id AND d.status='pending'))"
        " AS oldest_due"
        f" FROM webhook_endpoints e LEFT JOIN webhook_delivery_counts_now c ON c.endpoint_id=e.id"
        f" WHERE e.enabled=1 AND {scope}",
        params,
    )
    # CROSS JOIN keeps the endpoints first: for all tenants SQLite would otherwise
    # walk every failed delivery kept (the whole partial index) to find the recent ones.
    failed_from = dialect_sql(
        db,
        "FROM webhook_endpoints e CROSS JOIN webhook_deliveries d INDEXED BY webhook_deliveries_failed"
        f" ON d.endpoint_id=e.id AND d.status='failed' AND d.created_at>=:since WHERE {scope}",
    )
    failed = await db.fetchone(f"SELECT COUNT(*) AS n {failed_from}", params)
    latest_failed = await db.fetchall(
        "SELECT d.id, d.tenant_id, d.endpoint_id, d.event_type, d.created_at, d.last_status_code"
        f" {failed_from} ORDER BY d.created_at DESC LIMIT :rows",
        params,
    )
    not_delivering = (
        "SELECT e.id, e.tenant_id, e.url, e.disabled_reason, e.disabled_at, e.blocked_since,"
        " COALESCE(c.pending, 0) AS pending, COUNT(*) OVER () AS total"
        " FROM webhook_endpoints e LEFT JOIN webhook_delivery_counts_now c ON c.endpoint_id=e.id"
        " WHERE {where} AND " + scope + " ORDER BY {order} DESC LIMIT :rows"
    )
    disabled = await db.fetchall(not_delivering.format(where="e.enabled=0", order="e.disabled_at"), params)
    blocked = await db.fetchall(
        not_delivering.format(where="e.blocked_since IS NOT NULL", order="e.blocked_since"), params
    )
    oldest = queue["oldest_due"]
    return {
        "pending": int(queue["pending"]),  # a SUM: a Decimal on PostgreSQL
        # How long the longest-waiting due delivery has waited (None: none is due yet).
        "oldest_wait": _span(now - oldest) if oldest is not None and oldest <= now else None,
        "failed_24h": failed["n"],
        "latest_failed": [dict(r) | {"created": iso(r["created_at"])} for r in latest_failed],
        "disabled": [dict(r) | {"since": iso(r["disabled_at"]) if r["disabled_at"] else None} for r in disabled],
        "disabled_total": disabled[0]["total"] if disabled else 0,
        "blocked": [dict(r) | {"since": iso(r["blocked_since"])} for r in blocked],
        "blocked_total": blocked[0]["total"] if blocked else 0,
    }
