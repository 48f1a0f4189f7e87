"""The portal a tenant hands to its own customers (``/ui/portal``).

Svix's "App Portal", self-hosted: a tenant asks ``POST /v1/portal/links`` for a
one-time URL and gives it to one of its customers, who then manages their own
endpoints (add, edit, see the secret once, rotate it, enable, delete), reads
their delivery log and retries, and sees nothing else of the tenant.

* A **link** (``webhook_portal_links``) names the customer and its scope:
  ``own`` (only endpoints whose ``owner`` is the customer) or ``all`` (every
  endpoint of the tenant). Only its token's hash is stored; the token is shown
  once, in the URL. It expires (1 minute to 7 days) and can be revoked.
* **Redeeming** is a POST (link previewers only GET, so they do not burn it),
  allowed once: it opens a portal session that lasts as long as the link, and
  ends when the link is revoked or expires (:func:`resolve`, core checks it at
  every request).
* **Pages** act through the control API as the tenant, the link's token id and
  customer as the actor (the audit trail says ``acme/plk_... for portal cust_42``),
  and check every endpoint and delivery against the link's scope first: one out
  of scope is a 404 like a missing one.
"""

from __future__ import annotations

import functools
import logging
import re
import secrets
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from aiohttp import web

from tierd.core.api import (
    PAGED,
    ApiError,
    Caller,
    Route,
    actor_of,
    body_of,
    caller,
    daemon_of,
    json_response,
    page,
    page_params,
    require_tenant,
)
from tierd.core.clock import iso, iso_or_none
from tierd.core.ids import new_id
from tierd.core.schema import Duration, Enum, Obj, Reject, Str
from tierd.core.tenants import hash_token
from tierd.core.ui import Principal, UiApiError, UiContext, UiPage, UiSection, sessions

from .api import CUSTOMER, CUSTOMER_DOC
from .records import DELIVERY_STATUSES

log = logging.getLogger("tierd.webhooks.portal")

TEMPLATES = Path(__file__).parent / "templates" / "portal"
TAG = "webhooks portal"
LINK_ID = "plk_"
#: The session kind core keeps for a redeemed link (its subject: the link's id).
KIND = "portal"
#: What a link shows: the customer's own endpoints, or every endpoint of the tenant.
SCOPES = ("own", "all")
MAX_LIFE = 7 * 86400
#: An id in a portal page's path, before it goes into an API path (no dots, no slashes).
_ID = re.compile(r"[A-Za-z0-9_-]{1,100}")
#: A link's token as made by ``secrets.token_urlsafe(32)`` (43 characters).
_TOKEN = re.compile(r"[A-Za-z0-9_-]{20,100}")
#: Deliveries shown per page of an endpoint.
DELIVERIES_PER_PAGE = 25


class _Lifetime(Duration):
    """How long a link (and the session it opens) lasts: 1 minute to 7 days."""

    def parse(self, value: Any) -> Any:
        seconds = super().parse(value)
        if seconds > MAX_LIFE:
            raise Reject(f"must be at most 7d, got {value!r}")
        return seconds


LINK_BODY = Obj(
    {
        "customer": Str(
            required=True,
            pattern=CUSTOMER,
            pattern_doc=CUSTOMER_DOC,
            doc="the tenant's customer the portal is for (endpoints it adds get this owner)",
        ),
        "endpoints": Enum(
            SCOPES, default="own", doc="own: only the customer's endpoints (owner); all: every endpoint of the tenant"
        ),
        "expires_in": _Lifetime(
            default="1h", min="1m", doc="how long the link, and the session it opens, lasts (1m to 7d)"
        ),
    }
)


# --- links (SQL) ----------------------------------------------------------------------


def _state(row, now: float) -> str:
    if row["revoked_at"] is not None:
        return "revoked"
    if row["expires_at"] <= now:
        return "expired"
    return "redeemed" if row["redeemed_at"] is not None else "active"


def _link_of(row, now: float) -> dict:
    """A link as the API shows it (never its token, which is not stored)."""
    return {
        "id": row["id"],
        "customer": row["customer"],
        "endpoints": row["scope"],
        "state": _state(row, now),
        "created_at": iso(row["created_at"]),
        "expires_at": iso(row["expires_at"]),
        "redeemed_at": iso_or_none(row["redeemed_at"]),
        "revoked_at": iso_or_none(row["revoked_at"]),
        "created_by": row["created_by"],
    }


async def _link_by_token(daemon, token: str):
    if not _TOKEN.fullmatch(token):
        return None
    return await daemon.db.fetchone("SELECT * FROM webhook_portal_links WHERE token_hash=?", (hash_token(token),))


async def resolve(daemon, link_id: str) -> Principal | None:
    """The session kind ``portal``: who a redeemed link's session is now (None once
    the link was revoked or expired: core then ends the page with a 401)."""
    row = await daemon.db.lookups.fetchone(
        "SELECT tenant_id, customer, scope, expires_at, revoked_at FROM webhook_portal_links WHERE id=?", (link_id,)
    )
    if row is None or row["revoked_at"] is not None or row["expires_at"] <= daemon.clock.time():
        return None
    customer = row["customer"]
    return Principal(
        KIND,
        Caller(False, row["tenant_id"], link_id, f"portal {customer}"),
        customer,
        {"customer": customer, "endpoints": row["scope"]},
    )


# --- API routes -------------------------------------------------------------------------


def _not_from_portal(request) -> None:
    """A portal session acts as the tenant; it must never hand out or revoke links."""
    if (caller(request).token_id or "").startswith(LINK_ID):
        raise ApiError(403, "forbidden", "a portal session cannot manage portal links")


def _link_url(request, token: str) -> str:
    base = daemon_of(request).config["server"].get("public_url") or f"{request.scheme}://{request.host}"
    return base.rstrip("/") + "/ui/portal/enter/" + token


def routes() -> list[Route]:
    async def create_link(request):
        tenant = require_tenant(request)
        _not_from_portal(request)
        daemon = daemon_of(request)
        if not daemon.config["server"]["ui"]:
            raise ApiError(
                409,
                "ui_disabled",
                "the portal is part of the web console, which is off (server.ui: false); "
                "turn it on to hand out portal links",
            )
        body = body_of(request)
        token = secrets.token_urlsafe(32)
        link_id = new_id(LINK_ID)
        now = daemon.clock.time()
        expires_at = now + body["expires_in"]
        actor = actor_of(request)
        await daemon.db.execute(
            "INSERT INTO webhook_portal_links(id, tenant_id, customer, scope, token_hash, created_at, expires_at,"
            " created_by) VALUES (?,?,?,?,?,?,?,?)",
            (link_id, tenant, body["customer"], body["endpoints"], hash_token(token), now, expires_at, actor),
        )
        log.info(
            "portal link %s created by %s for customer %s of tenant %s (endpoints: %s), valid until %s",
            link_id,
            actor,
            body["customer"],
            tenant,
            body["endpoints"],
            iso(expires_at),
        )
        return json_response(
            {
                "id": link_id,
                "url": _link_url(request, token),
                "customer": body["customer"],
                "endpoints": body["endpoints"],
                "expires_at": iso(expires_at),
            },
            status=201,
        )

    async def list_links(request):
        tenant = require_tenant(request)
        _not_from_portal(request)
        daemon = daemon_of(request)
        limit, cursor = page_params(request)
        # Newest first, along (tenant_id, id): ids rise with creation time.
        rows = await daemon.db.fetchall(
            "SELECT * FROM webhook_portal_links WHERE tenant_id=?"
            + (" AND id<?" if cursor else "")
            + " ORDER BY id DESC LIMIT ?",
            (tenant, cursor, limit + 1) if cursor else (tenant, limit + 1),
        )
        now = daemon.clock.time()
        return json_response(page([_link_of(r, now) for r in rows], limit, lambda link: link["id"]))

    async def revoke_link(request):
        tenant = require_tenant(request)
        _not_from_portal(request)
        daemon = daemon_of(request)
        link_id = request.match_info["id"]
        row = await daemon.db.fetchone(
            "SELECT * FROM webhook_portal_links WHERE tenant_id=? AND id=?", (tenant, link_id)
        )
        if row is None:
            raise ApiError(404, "not_found", f"no portal link {link_id}")
        now = daemon.clock.time()
        await daemon.db.execute(
            "UPDATE webhook_portal_links SET revoked_at=? WHERE tenant_id=? AND id=? AND revoked_at IS NULL",
            (now, tenant, link_id),
        )
        ended = await sessions.end_all(daemon.db, KIND, link_id)
        log.info(
            "portal link %s of tenant %s (customer %s) revoked by %s; %d open session(s) ended",
            link_id,
            tenant,
            row["customer"],
            actor_of(request),
            ended,
        )
        row = await daemon.db.fetchone("SELECT * FROM webhook_portal_links WHERE id=?", (link_id,))
        return json_response(_link_of(row, now) | {"sessions_ended": ended})

    return [
        Route(
            "POST",
            "/v1/portal/links",
            create_link,
            summary="A one-time link to the webhooks portal for one of the tenant's customers (answers its URL once)",
            tag=TAG,
            body=LINK_BODY,
            statuses=(201,),
        ),
        Route(
            "GET",
            "/v1/portal/links",
            list_links,
            summary="Portal links, newest first, with their state (active, redeemed, expired, revoked)",
            tag=TAG,
            params=PAGED,
        ),
        Route(
            "DELETE",
            "/v1/portal/links/{id}",
            revoke_link,
            summary="Revoke a portal link and end the session it opened",
            tag=TAG,
        ),
    ]


# --- pages ------------------------------------------------------------------------------

Handler = Callable[[UiContext], Awaitable[web.StreamResponse]]


def _portal_errors(handler: Handler) -> Handler:
    """An API refusal on a portal page as the portal's own error page (core's
    offers a way back to the console, which a customer has no access to)."""

    @functools.wraps(handler)
    async def wrapped(ctx: UiContext) -> web.StreamResponse:
        try:
            return await handler(ctx)
        except UiApiError as exc:
            return ctx.render(
                "portal/error.html", status=exc.status, http_status=exc.status, code=exc.code, message=exc.message
            )

    return wrapped


def _scope(ctx: UiContext) -> tuple[str, str]:
    """(customer, ``own`` or ``all``) of this portal session."""
    assert ctx.principal is not None  # core opens a portal page only with a portal session
    return ctx.principal.scope["customer"], ctx.principal.scope["endpoints"]


async def _endpoint(ctx: UiContext, endpoint_id: str) -> dict:
    """The endpoint, if this link may see it; a 404 otherwise (as a missing one)."""
    missing = UiApiError(404, "not_found", f"no webhook endpoint {endpoint_id}")
    if not _ID.fullmatch(endpoint_id):
        raise missing
    endpoint = await ctx.api("GET", f"/v1/webhooks/{endpoint_id}")
    customer, scope = _scope(ctx)
    if scope != "all" and endpoint["owner"] != customer:
        raise missing
    return endpoint


async def _delivery(ctx: UiContext, delivery_id: str) -> tuple[dict, dict]:
    """(delivery, its endpoint), if this link may see its endpoint; a 404 otherwise."""
    missing = UiApiError(404, "not_found", f"no delivery {delivery_id}")
    if not _ID.fullmatch(delivery_id):
        raise missing
    delivery = await ctx.api("GET", f"/v1/deliveries/{delivery_id}")
    try:
        endpoint = await _endpoint(ctx, delivery["endpoint_id"])
    except UiApiError as exc:
        raise missing from exc
    return delivery, endpoint


def _settings(form: dict[str, str]) -> dict:
    """The endpoint form's fields as an API body (an empty URL: not given)."""
    body: dict[str, Any] = {
        "description": form.get("description", "").strip(),
        "event_types": [t.strip() for t in form.get("event_types", "").split(",") if t.strip()],
    }
    if form.get("url", "").strip():
        body["url"] = form["url"].strip()
    return body


async def _endpoint_page(ctx: UiContext, endpoint: dict, shown_once: dict | None = None) -> web.Response:
    """An endpoint's page; ``shown_once``: a secret just made (creation, rotation)."""
    status = ctx.query.get("status")
    status = status if status in DELIVERY_STATUSES else None
    deliveries = await ctx.api(
        "GET",
        f"/v1/webhooks/{endpoint['id']}/deliveries",
        query={"limit": DELIVERIES_PER_PAGE, "cursor": ctx.query.get("cursor"), "status": status},
    )
    return ctx.render(
        "portal/endpoint.html",
        endpoint=endpoint,
        deliveries=deliveries,
        status_filter=status,
        statuses=DELIVERY_STATUSES,
        shown_once=shown_once,
    )


async def endpoints_page(ctx: UiContext) -> web.StreamResponse:
    customer, scope = _scope(ctx)
    answer = await ctx.api(
        "GET",
        "/v1/webhooks",
        query={"owner": customer if scope == "own" else None, "limit": 50, "cursor": ctx.query.get("cursor")},
    )
    return ctx.render("portal/endpoints.html", answer=answer, customer=customer, scope=scope)


async def new_form(ctx: UiContext) -> web.StreamResponse:
    return ctx.render("portal/new.html", values={}, error=None)


async def create(ctx: UiContext) -> web.StreamResponse:
    customer, _ = _scope(ctx)
    form = await ctx.form()
    try:
        created = await ctx.api("POST", "/v1/webhooks", body=_settings(form) | {"owner": customer})
    except UiApiError as exc:
        if exc.status >= 500:
            raise
        return ctx.render("portal/new.html", status=exc.status, values=form, error=exc.message)
    secret = {k: created[k] for k in ("secret", "public_key") if k in created}
    # Shown in this answer only: the endpoint's page never shows it again.
    return await _endpoint_page(ctx, created, shown_once=secret)


async def endpoint_page(ctx: UiContext) -> web.StreamResponse:
    return await _endpoint_page(ctx, await _endpoint(ctx, ctx.match["id"]))


async def update(ctx: UiContext) -> web.StreamResponse:
    endpoint = await _endpoint(ctx, ctx.match["id"])
    back = f"/portal/endpoints/{endpoint['id']}"
    try:
        await ctx.api("PUT", f"/v1/webhooks/{endpoint['id']}", body=_settings(await ctx.form()))
    except UiApiError as exc:
        if exc.status >= 500:
            raise
        return ctx.redirect(back, error=f"Not saved: {exc.message}")
    return ctx.redirect(back, flash="Saved.")


async def set_enabled(ctx: UiContext) -> web.StreamResponse:
    endpoint = await _endpoint(ctx, ctx.match["id"])
    enabled = (await ctx.form()).get("enabled") == "1"
    await ctx.api("PUT", f"/v1/webhooks/{endpoint['id']}", body={"enabled": enabled})
    return ctx.redirect(f"/portal/endpoints/{endpoint['id']}", flash="Enabled." if enabled else "Disabled.")


async def rotate(ctx: UiContext) -> web.StreamResponse:
    endpoint = await _endpoint(ctx, ctx.match["id"])
    rotated = await ctx.api("POST", f"/v1/webhooks/{endpoint['id']}/rotate-secret", body={})
    shown = {k: rotated[k] for k in ("secret", "public_key", "previous_secret_valid_until") if k in rotated}
    return await _endpoint_page(ctx, await _endpoint(ctx, endpoint["id"]), shown_once=shown)


async def delete(ctx: UiContext) -> web.StreamResponse:
    endpoint = await _endpoint(ctx, ctx.match["id"])
    await ctx.api("DELETE", f"/v1/webhooks/{endpoint['id']}")
    return ctx.redirect("/portal/", flash=f"Endpoint {endpoint['url']} deleted.")


async def delivery_page(ctx: UiContext) -> web.StreamResponse:
    delivery, endpoint = await _delivery(ctx, ctx.match["id"])
    return ctx.render("portal/delivery.html", delivery=delivery, endpoint=endpoint)


async def retry(ctx: UiContext) -> web.StreamResponse:
    delivery, endpoint = await _delivery(ctx, ctx.match["id"])
    back = f"/portal/endpoints/{endpoint['id']}"
    try:
        await ctx.api("POST", f"/v1/deliveries/{delivery['id']}/retry")
    except UiApiError as exc:
        if exc.status >= 500:
            raise
        return ctx.redirect(back, error=exc.message)
    return ctx.redirect(back, flash=f"Delivery {delivery['id']} is queued to be sent again.")


async def logout(ctx: UiContext) -> web.StreamResponse:
    log.info("portal: %s signed out", ctx.caller.actor)
    return await ctx.console.sign_out(ctx, to="/ui/portal/signed-out")


async def signed_out(ctx: UiContext) -> web.StreamResponse:
    return ctx.render("portal/signed_out.html")


async def _redeemable(ctx: UiContext) -> tuple[Any, web.Response | None]:
    """The link of the path's token, or the page that says why it cannot be used."""
    row = await _link_by_token(ctx.daemon, ctx.match["token"])
    now = ctx.daemon.clock.time()
    why = (
        "This link is not valid. Check that it was copied whole, or ask for a new one."
        if row is None
        else {
            "revoked": "This link was revoked. Ask for a new one.",
            "expired": "This link has expired. Ask for a new one.",
            "redeemed": "This link was already used (each link opens the portal once). Ask for a new one.",
        }.get(_state(row, now))
    )
    if why is None:
        return row, None
    peer = ctx.request.remote or "unix socket"
    described = f"link {row['id']} of tenant {row['tenant_id']} ({_state(row, now)})" if row else "an unknown link"
    log.warning("portal: %s %s from %s refused", ctx.request.method, described, peer)
    return row, ctx.render("portal/gone.html", status=404 if row is None else 410, message=why)


async def enter_form(ctx: UiContext) -> web.StreamResponse:
    # A GET never redeems: chat and mail previewers fetch links, and must not burn them.
    row, refusal = await _redeemable(ctx)
    if refusal is not None:
        return refusal
    return ctx.render("portal/enter.html", customer=row["customer"], expires_at=iso(row["expires_at"]))


async def enter(ctx: UiContext) -> web.StreamResponse:
    row, refusal = await _redeemable(ctx)
    if refusal is not None:
        return refusal
    now = ctx.daemon.clock.time()
    # Once: of two browsers posting at the same time, one UPDATE changes the row (and
    # none if the link was revoked or expired since it was read just above).
    cursor = await ctx.daemon.db.execute(
        "UPDATE webhook_portal_links SET redeemed_at=?"
        " WHERE id=? AND redeemed_at IS NULL AND revoked_at IS NULL AND expires_at>?",
        (now, row["id"], now),
    )
    if cursor.rowcount != 1:
        log.warning(
            "portal: link %s of tenant %s was used, revoked or expired meanwhile; redemption from %s refused",
            row["id"],
            row["tenant_id"],
            ctx.request.remote or "unix socket",
        )
        return ctx.render(
            "portal/gone.html", status=410, message="This link was already used or has ended. Ask for a new one."
        )
    log.info(
        "portal link %s of tenant %s redeemed by customer %s from %s",
        row["id"],
        row["tenant_id"],
        row["customer"],
        ctx.request.remote or "unix socket",
    )
    return await ctx.console.sign_in(
        ctx, KIND, row["id"], row["customer"], lifetime=row["expires_at"] - now, to="/ui/portal/"
    )


def section(daemon) -> UiSection:
    def portal(method: str, path: str, handler: Handler) -> UiPage:
        return UiPage(method, "/portal" + path, _portal_errors(handler), audience="portal")

    return UiSection(
        "portal",
        TEMPLATES,
        pages=[
            UiPage("GET", "/portal/enter/{token}", enter_form, audience="public"),
            UiPage("POST", "/portal/enter/{token}", enter, audience="public"),
            UiPage("GET", "/portal/signed-out", signed_out, audience="public"),
            portal("GET", "/", endpoints_page),
            portal("GET", "/endpoints/new", new_form),
            portal("POST", "/endpoints/new", create),
            portal("GET", "/endpoints/{id}", endpoint_page),
            portal("POST", "/endpoints/{id}", update),
            portal("POST", "/endpoints/{id}/enabled", set_enabled),
            portal("POST", "/endpoints/{id}/rotate", rotate),
            portal("POST", "/endpoints/{id}/delete", delete),
            portal("GET", "/deliveries/{id}", delivery_page),
            portal("POST", "/deliveries/{id}/retry", retry),
            portal("POST", "/logout", logout),
        ],
        session_kinds={KIND: resolve},
    )
