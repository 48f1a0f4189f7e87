"""The ``/ui`` application: sessions, CSRF, HTML errors, sign-in, the overview.

Mounted under the control API's application, so the API's own checks come
first (Host and Origin against DNS rebinding, UTF-8 only, the read budget).
Every page then passes through :meth:`Console.page_handler`:

1. its session is read from its audience's cookie (``tierd_session`` for the
   console, ``tierd_portal`` for the portal) and checked against what it rests
   on (see :mod:`tierd.core.ui.sessions`); a console page without one sends
   the browser to the sign-in page;
2. a POST must carry the session's CSRF token in its ``csrf`` field (a page
   without a session: the token of the ``tierd_csrf`` cookie it was given), and
   a browser's ``Sec-Fetch-Site`` must not say it comes from another site;
3. an error becomes an HTML page with the API's code and message, never a
   traceback; every answer is ``no-store`` with a strict Content-Security-Policy.
"""

from __future__ import annotations

import hmac
import logging
import secrets
import time
import urllib.parse
from pathlib import Path
from typing import TYPE_CHECKING, Any

import jinja2
from aiohttp import web
from aiohttp.typedefs import Handler
from markupsafe import Markup

from tierd import __version__
from tierd.core import tenants
from tierd.core.api import ApiError, Caller
from tierd.core.clock import iso
from tierd.core.plugins import get_plugins
from tierd.core.storage import QueryTimeout, is_storage_full
from tierd.core.ui import sessions
from tierd.core.ui.dispatch import call_api
from tierd.core.ui.pages import Principal, UiApiError, UiContext, UiPage, UiSection

if TYPE_CHECKING:
    from tierd.core.daemon import Daemon

log = logging.getLogger("tierd.ui")

HERE = Path(__file__).parent
COOKIES = {"console": "tierd_session", "portal": "tierd_portal"}
CSRF_COOKIE = "tierd_csrf"
#: Failed sign-ins allowed from one address within FAILURE_WINDOW seconds.
MAX_FAILURES = 10
FAILURE_WINDOW = 300
FLASH_COOKIE = "tierd_flash"
#: What a tenant name looks like in ``?tenant=`` (an admin's pick).
_TENANT = tenants.NAME_RE
HEADERS = {
    # Everything the console loads comes from the daemon itself; no inline script.
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; "
    "frame-ancestors 'none'; form-action 'self'; base-uri 'none'",
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    # A portal link carries its token in the path: never hand it on to another
    # site as a Referer. (Not no-referrer: with it, a browser's own form posts
    # say Origin: null, which the Origin check refuses.)
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}


class Console:
    """The console of one daemon: its sections, templates and pages."""

    def __init__(self, daemon: Daemon, root: web.Application, sections: list[UiSection]) -> None:
        self.daemon = daemon
        self.root = root
        self.sections = sections
        self.session_kinds = {k: fn for s in sections for k, fn in s.session_kinds.items()}
        #: Failed sign-ins by peer address (monotonic times within FAILURE_WINDOW).
        self._failures: dict[str, list[float]] = {}
        self.env = jinja2.Environment(
            loader=jinja2.ChoiceLoader(
                [
                    jinja2.FileSystemLoader(HERE / "templates"),
                    jinja2.PrefixLoader({s.name: jinja2.FileSystemLoader(s.templates) for s in sections}),
                ]
            ),
            autoescape=True,
            undefined=jinja2.StrictUndefined,
        )
        self.env.filters["when"] = _when
        self.env.filters["ago"] = _ago
        self.env.filters["money"] = _money
        self.env.filters["sparkline"] = sparkline

    # --- the application -------------------------------------------------------

    def app(self) -> web.Application:
        app = web.Application(middlewares=[self._errors])
        app.router.add_static("/static", HERE / "static", append_version=False)
        core = [
            UiPage("GET", "/", self.overview),
            UiPage("GET", "/login", self.login_form, audience="public"),
            UiPage("POST", "/login", self.login, audience="public"),
            UiPage("POST", "/logout", self.logout),
        ]
        for page in core + [p for s in self.sections for p in s.pages]:
            app.router.add_route(page.method, page.path, self.page_handler(page))
        return app

    def page_handler(self, page: UiPage) -> Handler:
        async def handle(request: web.Request) -> web.StreamResponse:
            principal = await self.principal(request, page.audience)
            if principal is None and page.audience != "public":
                if page.audience == "console":
                    return web.Response(status=303, headers={"Location": "/ui/login"})
                return self.error_page(request, None, 401, "not_signed_in", "this portal link has ended or was revoked")
            session = request.get("tierd_session")
            csrf = session.csrf if session else request.cookies.get(CSRF_COOKIE) or ""
            new_csrf = not csrf
            csrf = csrf or secrets.token_urlsafe(24)
            ctx = UiContext(self, request, principal, csrf)
            if principal is not None and principal.kind == "admin":
                ctx.tenants = [t["id"] for t in await tenants.list_tenants(self.daemon.db)]
            if request.method == "POST":
                refusal = await self._csrf_refusal(ctx, new_csrf)
                if refusal:
                    log.warning("console: %s %s refused: %s", request.method, request.path, refusal)
                    return self.error_page(request, principal, 403, "csrf_failed", refusal)
            response = await page.handler(ctx)
            if new_csrf:
                response.set_cookie(CSRF_COOKIE, csrf, **self.cookie_options(request))
            return response

        return handle

    async def _csrf_refusal(self, ctx: UiContext, new_csrf: bool) -> str | None:
        if ctx.request.headers.get("Sec-Fetch-Site", "same-origin") not in ("same-origin", "none"):
            return "a form of another site may not post here"
        if new_csrf:
            return "the form is stale or came from elsewhere (no CSRF cookie); reload the page and try again"
        posted = (await ctx.form()).get("csrf", "")
        if not hmac.compare_digest(posted.encode(), ctx.csrf.encode()):
            return "the form's CSRF token is missing or wrong; reload the page and try again"
        return None

    @web.middleware
    async def _errors(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        if not self.daemon.config["server"]["ui"]:
            # Off (read at each request, so a reload turns it off and on): as if there were no /ui.
            return ApiError(
                404, "not_found", f"no route {request.method} {request.path} (server.ui is off)"
            ).to_response()
        try:
            response = await handler(request)
        except web.HTTPException as exc:
            if exc.status < 400:
                raise
            code = "not_found" if exc.status == 404 else "method_not_allowed" if exc.status == 405 else "bad_request"
            response = self.error_page(request, None, exc.status, code, exc.reason)
        except UiApiError as exc:
            response = self.error_page(request, None, exc.status, exc.code, exc.message)
        except QueryTimeout as exc:
            response = self.error_page(request, None, 503, "query_timeout", str(exc))
        except Exception as exc:
            if not is_storage_full(exc):
                log.exception("console: unhandled error in %s %s", request.method, request.path)
                response = self.error_page(request, None, 500, "internal_error", "internal error; see the daemon log")
            else:
                response = self.error_page(request, None, 503, "storage_full", "no space left on the server's disk")
        for name, value in HEADERS.items():
            response.headers.setdefault(name, value)
        return response

    # --- sessions --------------------------------------------------------------

    async def principal(self, request: web.Request, audience: str) -> Principal | None:
        """The live session of this page's audience, as the caller it acts as."""
        if audience == "public":
            # A public page (sign-in) still knows a console session, to offer the way back.
            audience = "console"
        cookie = request.cookies.get(COOKIES[audience])
        session = await sessions.find(self.daemon.db, cookie) if cookie else None
        if session is None:
            return None
        principal = await self._resolve(session.kind, session.subject, session.label, request)
        if principal is None or principal.audience != audience:
            return None
        request["tierd_session"] = session
        return principal

    async def _resolve(self, kind: str, subject: str, label: str, request: web.Request) -> Principal | None:
        if kind == "admin":
            admin = self.daemon.config["server"].get("admin_token") or ""
            if not admin or not hmac.compare_digest(subject, tenants.hash_token(admin)):
                return None
            picked = request.query.get("tenant") or None
            if picked is not None and not _TENANT.fullmatch(picked):
                picked = None
            return Principal("admin", Caller(True, picked, None, "web console"), "admin")
        if kind == "tenant":
            row = await self.daemon.db.lookups.fetchone(
                "SELECT tenant_id, id FROM tokens WHERE token_hash=? AND revoked_at IS NULL", (subject,)
            )
            if row is None:
                return None
            return Principal("tenant", Caller(False, row["tenant_id"], row["id"], "web console"), label)
        resolver = self.session_kinds.get(kind)
        return await resolver(self.daemon, subject) if resolver else None

    def cookie_options(self, request: web.Request) -> dict[str, Any]:
        # Secure when the browser reached us over TLS (directly or through a proxy that says so).
        secure = request.secure or request.headers.get("X-Forwarded-Proto", "").lower() == "https"
        return {"path": "/ui", "httponly": True, "samesite": "Strict", "secure": secure}

    async def sign_in(
        self, ctx: UiContext, kind: str, subject: str, label: str, lifetime: float, to: str
    ) -> web.Response:
        """Start a session of ``kind`` on ``subject`` and send the browser to ``to``."""
        cookie, _ = await sessions.create(self.daemon.db, kind, subject, label, lifetime)
        response = web.Response(status=303, headers={"Location": to})
        audience = "console" if kind in ("admin", "tenant") else "portal"
        response.set_cookie(COOKIES[audience], cookie, max_age=int(lifetime), **self.cookie_options(ctx.request))
        return response

    async def sign_out(self, ctx: UiContext, to: str) -> web.Response:
        session = ctx.request.get("tierd_session")
        if session is not None:
            await sessions.end(self.daemon.db, session.id_hash)
        response = web.Response(status=303, headers={"Location": to})
        audience = ctx.principal.audience if ctx.principal else "console"
        response.del_cookie(COOKIES[audience], path="/ui")
        return response

    # --- rendering -------------------------------------------------------------

    def render(self, ctx: UiContext, template: str, status: int, values: dict[str, Any]) -> web.Response:
        flash = _read_flash(ctx.request)
        page = self.env.get_template(template).render(
            ctx=ctx,
            principal=ctx.principal,
            csrf=ctx.csrf,
            nav=self.nav(ctx),
            flash=flash,
            version=__version__,
            **values,
        )
        response = web.Response(text=page, status=status, content_type="text/html")
        if flash:
            response.del_cookie(FLASH_COOKIE, path="/ui")
        return response

    def nav(self, ctx: UiContext) -> list[tuple[str, str]]:
        if ctx.principal is None or ctx.principal.audience != "console":
            return []
        return [("Overview", ctx.url("/"))] + [(label, ctx.url(path)) for s in self.sections for label, path in s.nav]

    def set_flash(self, response: web.StreamResponse, message: str) -> None:
        response.set_cookie(
            FLASH_COOKIE, urllib.parse.quote(message[:500]), path="/ui", httponly=True, samesite="Strict"
        )

    def error_page(
        self, request: web.Request, principal: Principal | None, status: int, code: str, message: str
    ) -> web.Response:
        ctx = UiContext(self, request, principal, "")
        page = self.env.get_template("error.html").render(
            ctx=ctx,
            principal=principal,
            csrf="",
            nav=[],
            flash=None,
            version=__version__,
            status=status,
            code=code,
            message=message,
        )
        return web.Response(text=page, status=status, content_type="text/html")

    async def dispatch(self, ctx: UiContext, caller: Caller, method: str, path: str, query: Any, body: Any) -> Any:
        status, answer = await call_api(self.root, ctx.request, caller, method, path, query, body)
        if status >= 400:
            error = answer["error"] if isinstance(answer, dict) and "error" in answer else {}
            message = error.get("message", "refused")
            details = error.get("details")
            if isinstance(details, list) and details and isinstance(details[0], dict):
                message = "; ".join(f"{d.get('path') or 'body'}: {d.get('message')}" for d in details[:5])
            raise UiApiError(status, error.get("code", "error"), message, details)
        return answer

    # --- core pages --------------------------------------------------------------

    async def login_form(self, ctx: UiContext) -> web.StreamResponse:
        return ctx.render("login.html", error=None)

    async def login(self, ctx: UiContext) -> web.StreamResponse:
        token = (await ctx.form()).get("token", "").strip()
        admin = self.daemon.config["server"].get("admin_token") or ""
        peer = ctx.request.remote or "unix socket"
        now = time.monotonic()
        recent = [t for t in self._failures.get(peer, []) if now - t < FAILURE_WINDOW]
        if len(recent) >= MAX_FAILURES:
            # Guessing tokens from one address is slowed to a crawl (an admin token may be a weak one).
            log.warning(
                "console: sign-in from %s refused: %d failed attempts in %ds", peer, len(recent), FAILURE_WINDOW
            )
            return ctx.render(
                "login.html", status=429, error="Too many failed sign-ins from your address; wait a few minutes."
            )
        if token and admin and hmac.compare_digest(token.encode(), admin.encode()):
            log.info("console: admin signed in from %s", peer)
            return await self.sign_in(ctx, "admin", tenants.hash_token(token), "admin", self.lifetime, "/ui/")
        found = await tenants.tenant_for_token(self.daemon.db, token) if token else None
        if found is None:
            if len(self._failures) > 10_000:
                self._failures.clear()
            self._failures[peer] = recent + [now]
            log.warning("console: a sign-in from %s was refused: the token is not valid", peer)
            return ctx.render("login.html", status=401, error="That token is not valid (or was revoked).")
        tenant, token_id = found
        log.info("console: tenant %s signed in with token %s from %s", tenant, token_id, peer)
        return await self.sign_in(ctx, "tenant", tenants.hash_token(token), tenant, self.lifetime, "/ui/")

    async def logout(self, ctx: UiContext) -> web.StreamResponse:
        log.info("console: %s signed out", ctx.caller.actor)
        return await self.sign_out(ctx, "/ui/login")

    @property
    def lifetime(self) -> float:
        return float(self.daemon.config["server"]["ui_session"])

    async def overview(self, ctx: UiContext) -> web.StreamResponse:
        panels = [await self._panel(ctx, s) for s in self.sections if s.overview is not None]
        return ctx.render(
            "overview.html",
            plugins=get_plugins(self.daemon.pm) if ctx.caller.admin else [],
            rate=await self.event_rate(ctx.tenant, ctx.tenants),
            panels=panels,
        )

    async def _panel(self, ctx: UiContext, section: UiSection) -> Markup:
        # One plugin's broken panel costs its card, not the overview.
        assert section.overview is not None
        try:
            return Markup(await section.overview(ctx))
        except UiApiError as exc:
            problem = f"{exc.code}: {exc.message}"
        except Exception:
            log.exception("console: the %s panel of the overview failed", section.name)
            problem = "this panel failed; see the daemon log"
        return Markup('<section class="card"><h2>{}</h2><p class="flash error">{}</p></section>').format(
            section.name.capitalize(), problem
        )

    async def event_rate(self, tenant: str | None, all_tenants: list[str]) -> dict[str, Any]:
        """Events accepted per minute over the last hour (the tenant's, or everyone's)."""
        now = time.time()
        start = (int(now) // 60 - 59) * 60
        per_minute = [0] * 60
        # The minute of the hour: SQLite's CAST truncates (the floor, the values
        # being >= 0), PostgreSQL's would round half of each minute into the next.
        minute = (
            "CAST((created_at - ?) / 60 AS INTEGER)"
            if self.daemon.db.dialect == "sqlite"
            else "FLOOR((created_at - ?) / 60)::bigint"
        )
        for one in [tenant] if tenant else all_tenants:
            # One range of the (tenant_id, created_at) index per tenant.
            rows = await self.daemon.db.fetchall(
                f"SELECT {minute} AS m, COUNT(*) AS n FROM events WHERE tenant_id=? AND created_at >= ? GROUP BY m",
                (start, one, start),
            )
            for row in rows:
                if 0 <= row["m"] < 60:
                    per_minute[row["m"]] += row["n"]
        return {"per_minute": per_minute, "last_hour": sum(per_minute), "since": iso(start)}


def build_console(daemon: Daemon, root: web.Application, sections: list[object]) -> web.Application:
    """The ``/ui`` sub-application for the sections plugins returned from ``tierd_ui``."""
    names: set[str] = set()
    for section in sections:
        if not isinstance(section, UiSection):
            raise TypeError(f"tierd_ui returned {section!r}, not a tierd.core.ui.UiSection")
        if section.name in names:
            raise ValueError(f"two plugins add a console section named {section.name!r}")
        names.add(section.name)
    return Console(daemon, root, sections).app()  # type: ignore[arg-type]


# --- filters ----------------------------------------------------------------------


def _read_flash(request: web.Request) -> tuple[str, str] | None:
    raw = request.cookies.get(FLASH_COOKIE)
    if not raw:
        return None
    kind, _, text = urllib.parse.unquote(raw).partition(":")
    return ("error" if kind == "error" else "ok", text)


def _when(value: Any) -> str:
    """An API time (ISO-8601 text) as ``2026-12-01 22:40:05`` (UTC)."""
    if not value:
        return "—"
    text = str(value)
    return text.replace("T", " ").replace("Z", "")[:19] if "T" in text else text


def _ago(value: Any) -> str:
    """An API time as "3 min ago"."""
    from tierd.core.clock import parse_iso

    if not value:
        return "—"
    try:
        seconds = time.time() - parse_iso(str(value))
    except ValueError:
        return str(value)
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if abs(seconds) >= size:
            return f"{int(seconds // size)} {unit} ago"
    return f"{int(seconds)} s ago"


def _money(value: Any) -> str:
    return "—" if value is None else str(value)


def sparkline(values: list[float | int | None], width: int = 240, height: int = 40, title: str = "") -> Markup:
    """A small line chart of ``values`` as inline SVG (a gap where a value is None)."""
    points = [v for v in values if v is not None]
    if not points:
        return Markup('<svg class="spark" width="%d" height="%d" role="img"><title>no data</title></svg>') % (
            width,
            height,
        )
    top = max(points) or 1
    step = width / max(len(values) - 1, 1)
    segments: list[list[str]] = [[]]
    for i, v in enumerate(values):
        if v is None:
            segments.append([])
            continue
        segments[-1].append(f"{i * step:.1f},{height - 2 - (v / top) * (height - 4):.1f}")
    # A point with gaps on both sides is a dot: a line needs two.
    lines = "".join(
        f'<polyline points="{" ".join(s)}"/>'
        if len(s) > 1
        else '<circle cx="{}" cy="{}" r="2"/>'.format(*s[0].split(","))
        for s in segments
        if s
    )
    return Markup(
        f'<svg class="spark" viewBox="0 0 {width} {height}" width="{width}" height="{height}" role="img">'
        f"<title>{Markup.escape(title)} (max {top:g})</title>{lines}</svg>"
    )
