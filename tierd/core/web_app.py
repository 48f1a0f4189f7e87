"""The control API application: middlewares, authentication, core routes, and
the runner that serves it.

Every answer is JSON; every error is ``{"error": {"code", "message"}}`` with a
stable code. Handlers never leak a stack trace: an unexpected exception is
logged and answered as ``internal_error``; a write refused for lack of disk
space is answered 503 ``storage_full`` (nothing was stored; try again).
"""

from __future__ import annotations

import asyncio
import functools
import hmac
import logging
import re
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import unquote_to_bytes

import prometheus_client
from aiohttp import web
from aiohttp.typedefs import Handler, Middleware
from aiohttp.web_protocol import RequestHandler

from tierd.core import tenants
from tierd.core.api import (
    BODY_KEY,
    CALLER_KEY,
    DAEMON_KEY,
    INTERNAL_CALL_KEY,
    MAX_BODY_KEY,
    NO_BODY,
    PAGED,
    ApiError,
    Caller,
    InternalCall,
    Route,
    body_of,
    check_body,
    int_cursor,
    json_response,
    page,
    page_params,
    read_body,
    require_tenant,
    tenant_scope,
)
from tierd.core.clock import iso
from tierd.core.event_types import catalogue
from tierd.core.events import TYPE_RE
from tierd.core.openapi import build_openapi
from tierd.core.plugins import get_plugins
from tierd.core.scheduler import describe_jobs, run_now
from tierd.core.schema import Field, Obj, Str
from tierd.core.storage import Database, QueryTimeout, is_storage_full

if TYPE_CHECKING:
    from tierd.core.daemon import Daemon

T = TypeVar("T")

log = logging.getLogger("tierd.api")

#: Seconds a client is asked to wait (Retry-After) when the disk is full.
STORAGE_FULL_RETRY_AFTER = 30
#: The server's header timeout, in seconds, read at each connection (so a reload applies it).
HEADER_TIMEOUT_KEY: web.AppKey[Callable[[], float]] = web.AppKey("tierd_header_timeout")

_HTTP_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    413: "body_too_large",
    415: "unsupported_media_type",
}


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        # Every read the request makes shares one time budget: a heavy read
        # is stopped instead of holding a reader (and the client) for minutes.
        with Database.budget(request.app[DAEMON_KEY].config["server"]["query_timeout"]):
            return await handler(request)
    except ApiError as exc:
        return exc.to_response()
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        code = _HTTP_CODES.get(exc.status, "http_error")
        message = exc.reason if exc.status != 404 else f"no route {request.method} {request.path}"
        if exc.status == 413:
            message = f"body exceeds {request.app[MAX_BODY_KEY]} bytes"
        return ApiError(exc.status, code, message).to_response()
    except QueryTimeout as exc:
        log.warning("%s %s: %s", request.method, request.path, exc)
        return ApiError(
            503, "query_timeout", f"{exc}; ask for less (a narrower window, a filter, a smaller page)"
        ).to_response()
    except Exception as exc:
        if is_storage_full(exc):
            db = request.app[DAEMON_KEY].db
            if db is None or not db.full:  # else the database has logged it (once for the episode)
                log.warning("%s %s: no space left on the disk: %s", request.method, request.path, exc)
            response = ApiError(
                503, "storage_full", "no space left on the server's disk: nothing was stored; try again later"
            ).to_response()
            response.headers["Retry-After"] = str(STORAGE_FULL_RETRY_AFTER)
            return response
        log.exception("unhandled error in %s %s", request.method, request.path)
        return ApiError(500, "internal_error", "internal error; see the daemon log").to_response()


def _check_encoding(request: web.Request) -> None:
    """Refuse a request whose target or header values are not Unicode text, before any
    of it reaches a handler or SQLite: a lone surrogate stored in SQLite is invalid
    UTF-8 that no later read decodes. Percent-escapes that are not UTF-8 are refused
    too, instead of being read as U+FFFD (the query) or left undecoded (the path).

    Header values are checked as received (aiohttp decodes bytes that are not
    UTF-8 with surrogateescape: \xff would arrive as \udcff); an ASCII value,
    nearly every one, costs one C-speed scan.
    """
    target = request.raw_path
    if not target.isascii() or ("%" in target and not _is_utf8(unquote_to_bytes(target))):
        raise ApiError(400, "invalid_encoding", "the request target is not UTF-8 once percent-decoded")
    for name, value in request.raw_headers:
        if not value.isascii() and not _is_utf8(value):
            raise ApiError(400, "invalid_encoding", f"the {name.decode('latin-1')} header is not UTF-8 text")


def _is_utf8(raw: bytes) -> bool:
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


# Host[:port] as a Host header or an Origin's authority holds it: a name or
# IPv4 address, or an IPv6 address in brackets, then digits only for the port.
_HOST = re.compile(r"(\[[0-9a-f:.]+\]|[a-z0-9._-]+)(?::[0-9]{1,5})?")


def request_guard(allowed_hosts: list[str], check_host: bool) -> Middleware:
    """Refuse what no handler may see, in one middleware (each layer costs every
    request): a target or header that is not UTF-8 text, and, over TCP, a foreign
    Host or Origin (DNS rebinding from a browser).

    ``host[:port]`` is parsed strictly (anything else, such as ``[::1]evil.com``
    or ``127.0.0.1:80@evil.com``, is foreign), and a request without a Host is
    refused: aiohttp would put the machine's own name in its place.
    """
    allowed = {h.lower() for h in allowed_hosts}

    def host_ok(value: str) -> bool:
        found = _HOST.fullmatch(value.lower())
        return found is not None and found.group(1) in allowed

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        _check_encoding(request)
        if check_host:
            host = request.headers.get("Host", "")
            if not host_ok(host):
                raise ApiError(403, "host_not_allowed", f"Host {host!r} is not in server.allowed_hosts")
            origin = request.headers.get("Origin")
            if origin == "null" or (origin and not host_ok(origin.split("://", 1)[-1])):
                raise ApiError(403, "origin_not_allowed", "cross-origin requests are refused")
        return await handler(request)

    return middleware


class Authenticator:
    """Bearer tokens: the admin token from the config, or a tenant token (hashed in the DB)."""

    CACHE_SECONDS = 5.0  # a revoked token stops working within this time, in every process

    def __init__(self, daemon: Daemon) -> None:
        self.daemon = daemon
        self._cache: dict[str, tuple[tuple[str, str] | None, float]] = {}

    def forget(self) -> None:
        self._cache.clear()

    async def identify(self, request: web.Request) -> tuple[bool, tuple[str, str] | None]:
        header = request.headers.get("Authorization", "")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise ApiError(401, "unauthorized", "an Authorization: Bearer token is required")
        token = token.strip()
        admin = self.daemon.config["server"].get("admin_token")
        if admin and hmac.compare_digest(token.encode(), admin.encode()):
            return True, None
        now = time.monotonic()
        cached = self._cache.get(token)
        if cached and cached[1] > now:
            found = cached[0]
        else:
            found = await tenants.tenant_for_token(self.daemon.db, token)
            if len(self._cache) > 10_000:
                self._cache.clear()
            self._cache[token] = (found, now + self.CACHE_SECONDS)
        if found is None:
            raise ApiError(401, "unauthorized", "the token is not valid")
        return False, found


def with_auth(route: Route, auth: Authenticator) -> Handler:
    """The route's handler behind its authentication and, for a route that
    declares its body, the body's validation (``request[BODY_KEY]``)."""
    handler = route.handler
    schema = route.body if isinstance(route.body, Field) else None

    @functools.wraps(handler)
    async def wrapped(request: web.Request) -> web.StreamResponse:
        internal = request.get(INTERNAL_CALL_KEY)
        if isinstance(internal, InternalCall):
            # The console calling in-process as its session's caller: authenticated already.
            if route.auth == "admin" and not internal.caller.admin:
                raise ApiError(403, "admin_only", "this route needs the admin token")
            request[CALLER_KEY] = internal.caller
            if schema is not None:
                request[BODY_KEY] = check_body(request, schema, route.body_check, internal.body or {})
            return await handler(request)
        if route.auth != "public":
            is_admin, found = await auth.identify(request)
            if route.auth == "admin" and not is_admin:
                raise ApiError(403, "admin_only", "this route needs the admin token")
            on_behalf_of = request.headers.get("Tierd-Actor", "").strip()[:100]
            if is_admin:
                tenant = request.headers.get("Tierd-Tenant") or request.query.get("tenant") or None
                request[CALLER_KEY] = Caller(True, tenant, None, on_behalf_of)
            elif found is not None:  # identify() found the token's tenant, or raised
                request[CALLER_KEY] = Caller(False, found[0], found[1], on_behalf_of)
        if schema is not None:
            # After authentication: a caller without a valid token learns nothing about the body.
            request[BODY_KEY] = await read_body(request, schema, route.body_check)
        return await handler(request)

    return wrapped


def build_app(daemon: Daemon, plugin_routes: list[Route]) -> web.Application:
    server = daemon.config["server"]
    max_body = server["max_body"]
    on_unix = str(server["listen"]).startswith("unix:")
    app = web.Application(
        client_max_size=max_body,
        middlewares=[error_middleware, request_guard(server["allowed_hosts"], check_host=not on_unix)],
    )
    app[DAEMON_KEY] = daemon
    app[MAX_BODY_KEY] = max_body
    app[HEADER_TIMEOUT_KEY] = lambda: daemon.config["server"]["header_timeout"]
    auth = daemon.authenticator = Authenticator(daemon)
    routes = core_routes(daemon, auth) + plugin_routes
    seen = set()
    for route in routes:
        key = (route.method.upper(), route.path)
        if key in seen:
            raise ValueError(f"two plugins define {route.method} {route.path}")
        seen.add(key)
        app.router.add_route(route.method.upper(), route.path, with_auth(route, auth))
    daemon.openapi = build_openapi(routes)
    # Mounted whatever server.ui says: the console reads it at each request, so a reload applies it.
    from tierd.core.ui.app import build_console

    sections = [s for r in daemon.pm.hook.tierd_ui(daemon=daemon) for s in (r if isinstance(r, list) else [r]) if s]
    app.add_subapp("/ui", build_console(daemon, app, sections))
    return app


# --- core routes ---------------------------------------------------------------

EVENT_BODY = Obj(
    {
        "type": Str(
            required=True, max_len=200, pattern=TYPE_RE, pattern_doc="a dotted lowercase name such as 'invoice.paid'"
        ),
        "data": Obj({}, extra=True, default={}, doc="any JSON object"),
        "id": Str(
            min_len=1,
            max_len=200,
            default=None,
            doc="idempotency key: an event with an id already seen is not published again",
        ),
    }
)
TENANT_BODY = Obj(
    {
        "name": Str(
            required=True,
            pattern=tenants.NAME_RE,
            pattern_doc="1-63 lowercase letters, digits, '-' or '_', starting with a letter or digit",
        )
    }
)
TOKEN_BODY = Obj(
    {"description": Str(max_len=tenants.MAX_DESCRIPTION, default="", doc="what the token is for (shown in lists)")}
)


def core_routes(daemon: Daemon, auth: Authenticator) -> list[Route]:
    async def healthz(request: web.Request) -> web.Response:
        return json_response({"status": "ok"})

    async def readyz(request: web.Request) -> web.Response:
        ready, reason = daemon.readiness()
        if ready:
            return json_response({"ready": True})
        return json_response({"ready": False, "reason": reason}, status=503)

    async def metrics(request: web.Request) -> web.Response:
        body = prometheus_client.generate_latest(daemon.metrics)
        return web.Response(body=body, headers={"Content-Type": prometheus_client.CONTENT_TYPE_LATEST})

    async def openapi(request: web.Request) -> web.Response:
        return json_response(daemon.openapi)

    async def post_event(request: web.Request) -> web.Response:
        tenant = require_tenant(request)
        body = body_of(request)
        if not await daemon.tenant_exists(tenant):
            raise ApiError(404, "tenant_not_found", f"no tenant {tenant!r}")
        event, created = await daemon.bus.publish_ex(tenant, body["type"], body["data"], body["id"])
        return json_response(event.to_json(), status=202 if created else 200)

    async def list_events(request: web.Request) -> web.Response:
        tenant = tenant_scope(request)
        limit, cursor = page_params(request)
        after = int_cursor(cursor) or 0
        events = await daemon.bus.list(tenant, after, limit + 1, request.query.get("type"))
        return json_response(page([e.to_json() for e in events], limit, lambda e: e["seq"]))

    async def get_event(request: web.Request) -> web.Response:
        event = await daemon.bus.get(tenant_scope(request), request.match_info["id"])
        if event is None:
            raise ApiError(404, "not_found", f"no event {request.match_info['id']}")
        return json_response(event.to_json())

    async def list_event_types(request: web.Request) -> web.Response:
        # Declared types for everyone; a tenant's own as seen (the admin's: ?tenant= or Tierd-Tenant).
        limit, cursor = page_params(request)
        entries = [
            e
            for e in await catalogue(daemon.registries, daemon.db, tenant_scope(request))
            if cursor is None or e["name"] > cursor
        ]
        return json_response(page(entries[: limit + 1], limit, lambda e: e["name"]))

    def tenant_call(fn: Callable[..., Awaitable[T]]) -> Callable[..., Awaitable[T]]:
        async def call(*args: Any) -> T:
            try:
                return await fn(daemon.db, *args)
            except tenants.TenantError as exc:
                status = 404 if exc.code.endswith("not_found") else 409 if exc.code == "tenant_exists" else 400
                raise ApiError(status, exc.code, str(exc)) from exc

        return call

    async def admin_list_tenants(request: web.Request) -> web.Response:
        return json_response({"data": await tenants.list_tenants(daemon.db)})

    async def admin_create_tenant(request: web.Request) -> web.Response:
        return json_response(await tenant_call(tenants.create_tenant)(body_of(request)["name"]), status=201)

    async def admin_create_token(request: web.Request) -> web.Response:
        token = await tenant_call(tenants.create_token)(request.match_info["tenant"], body_of(request)["description"])
        return json_response(token, status=201)

    async def admin_list_tokens(request: web.Request) -> web.Response:
        return json_response({"data": await tenants.list_tokens(daemon.db, request.match_info["tenant"])})

    async def admin_revoke_token(request: web.Request) -> web.Response:
        result = await tenant_call(tenants.revoke_token)(request.match_info["id"])
        auth.forget()  # the revoked token stops working now, in this process
        return json_response(result)

    async def admin_reload(request: web.Request) -> web.Response:
        ok, errors = await daemon.reload()
        if not ok:
            raise ApiError(
                422, "config_invalid", "the new configuration was refused; the old one keeps running", details=errors
            )
        return json_response({"reloaded": True})

    async def admin_plugins(request: web.Request) -> web.Response:
        return json_response({"data": get_plugins(daemon.pm)})

    async def admin_nodes(request: web.Request) -> web.Response:
        nodes = await daemon.nodes()
        return json_response({"data": [n | {"connected_since": iso(n["connected_since"])} for n in nodes]})

    async def admin_jobs(request: web.Request) -> web.Response:
        return json_response({"data": [_job_json(j) for j in describe_jobs(daemon.scheduler)]})

    async def admin_run_job(request: web.Request) -> web.Response:
        job_id = request.match_info["id"]
        if not run_now(daemon.scheduler, job_id):
            raise ApiError(404, "job_not_found", f"no job {job_id!r} (GET /v1/admin/jobs lists them)")
        log.info("job %s runs now, as asked through the API", job_id)
        job = next(j for j in describe_jobs(daemon.scheduler) if j["id"] == job_id)
        return json_response(_job_json(job), status=202)

    tag = "core"
    return [
        Route("GET", "/healthz", healthz, auth="public", summary="Liveness", tag=tag),
        Route("GET", "/readyz", readyz, auth="public", summary="Ready after migrations and plugin startup", tag=tag),
        Route("GET", "/metrics", metrics, auth="public", summary="Prometheus metrics", tag=tag),
        Route("GET", "/v1/openapi.json", openapi, auth="public", summary="This API as OpenAPI 3", tag=tag),
        Route(
            "POST",
            "/v1/events",
            post_event,
            summary="Publish an event (202 new, 200 same id seen)",
            tag="events",
            statuses=(202, 200),
            body=EVENT_BODY,
        ),
        Route(
            "GET",
            "/v1/events",
            list_events,
            summary="List events",
            tag="events",
            params=PAGED | {"type": "type pattern, e.g. invoice.*"},
        ),
        Route("GET", "/v1/events/{id}", get_event, summary="One event", tag="events"),
        Route(
            "GET",
            "/v1/event-types",
            list_event_types,
            tag="events",
            params=PAGED,
            summary="The event types plugins declare (description, severity, flags, data schema), and the "
            "tenant's own as seen in its latest events",
        ),
        Route("GET", "/v1/admin/tenants", admin_list_tenants, auth="admin", summary="List tenants", tag="admin"),
        Route(
            "POST",
            "/v1/admin/tenants",
            admin_create_tenant,
            auth="admin",
            summary="Create a tenant",
            tag="admin",
            statuses=(201,),
            body=TENANT_BODY,
        ),
        Route(
            "GET",
            "/v1/admin/tenants/{tenant}/tokens",
            admin_list_tokens,
            auth="admin",
            summary="List a tenant's tokens",
            tag="admin",
        ),
        Route(
            "POST",
            "/v1/admin/tenants/{tenant}/tokens",
            admin_create_token,
            auth="admin",
            summary="Create a token (shown once)",
            tag="admin",
            statuses=(201,),
            body=TOKEN_BODY,
        ),
        Route(
            "DELETE", "/v1/admin/tokens/{id}", admin_revoke_token, auth="admin", summary="Revoke a token", tag="admin"
        ),
        Route(
            "POST",
            "/v1/admin/reload",
            admin_reload,
            auth="admin",
            summary="Reload the configuration",
            tag="admin",
            body=NO_BODY,
        ),
        Route("GET", "/v1/admin/plugins", admin_plugins, auth="admin", summary="Loaded plugins", tag="admin"),
        Route(
            "GET",
            "/v1/admin/nodes",
            admin_nodes,
            auth="admin",
            summary="The tierd nodes on this database and what each runs (consumers, the cluster's timers)",
            tag="admin",
        ),
        Route("GET", "/v1/admin/jobs", admin_jobs, auth="admin", summary="Timers and their next run", tag="admin"),
        Route(
            "POST",
            "/v1/admin/jobs/{id}/run",
            admin_run_job,
            auth="admin",
            summary="Run a timer's job now (e.g. a retention after lowering it); its schedule goes on",
            tag="admin",
            body=NO_BODY,
            statuses=(202,),
        ),
    ]


def _job_json(job: dict) -> dict:
    return job | {"next_run_at": iso(job["next_run_at"]) if job["next_run_at"] is not None else None}


# --- the server ------------------------------------------------------------------


class ApiRunner(web.AppRunner):
    """aiohttp's AppRunner, whose connections are closed when a request's headers
    take longer than ``server.header_timeout`` to arrive.

    aiohttp has no such timeout: a client that sends a request line and never
    ends its headers holds its connection for as long as the keep-alive
    timeout (an hour). This runner serves the same application through the
    same aiohttp server, only with :class:`_HeaderTimeoutHandler` connections.
    """

    async def _make_server(self) -> web.Server:
        server = await super()._make_server()
        return _HeaderTimeoutServer(
            self.app[HEADER_TIMEOUT_KEY],
            server.request_handler,
            request_factory=server.request_factory,
            handler_cancellation=server.handler_cancellation,
            **server._kwargs,
        )


#: How often open connections are checked for headers overdue (seconds): a
#: request whose headers never end is cut within timeout + this.
HEADER_SWEEP_INTERVAL = 1.0


class _HeaderTimeoutServer(web.Server):
    """aiohttp's server, sweeping its connections once a second for requests
    whose headers are overdue: one timer for the whole server rather than one
    per request (a timer per request cost intake a few percent)."""

    def __init__(self, header_timeout: Callable[[], float], *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.header_timeout = header_timeout
        self._sweeper: asyncio.TimerHandle | None = None

    def __call__(self) -> RequestHandler:
        if self._sweeper is None:
            self._sweeper = self._loop.call_later(HEADER_SWEEP_INTERVAL, self._sweep)
        return _HeaderTimeoutHandler(self, loop=self._loop, **self._kwargs)

    def _sweep(self) -> None:
        timeout, now = self.header_timeout(), self._loop.time()
        for handler in list(self._connections):
            if isinstance(handler, _HeaderTimeoutHandler) and handler.headers_overdue(now, timeout):
                log.debug("closed a connection whose request's headers took over %gs", timeout)
                handler.force_close()
        self._sweeper = self._loop.call_later(HEADER_SWEEP_INTERVAL, self._sweep)

    async def shutdown(self, timeout: float | None = None) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None
        await super().shutdown(timeout)


class _HeaderTimeoutHandler(RequestHandler):
    """A connection that the server closes when a request takes longer than the
    header timeout from its first bytes (or from the connection's start) to its
    last header. A client idle between requests is left to the keep-alive timeout.

    Per request this only notes the time the request's first bytes arrived and
    forgets it once its headers are parsed; :class:`_HeaderTimeoutServer` does
    the checking.
    """

    __slots__ = ("_header_since",)
    _header_since: float | None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self._header_since = self._loop.time()

    def data_received(self, data: bytes) -> None:
        if self._header_since is None and self._waiter is not None and not self._waiter.done():
            self._header_since = self._loop.time()  # bytes of a new request, the handler waiting for it
        super().data_received(data)
        if self._messages:  # a request's headers are complete: it is the handler's now
            self._header_since = None

    def headers_overdue(self, now: float, timeout: float) -> bool:
        """Whether a request has been waiting longer than ``timeout`` for the end of its headers."""
        since = self._header_since
        waiting = self._waiter is not None and not self._waiter.done()
        return since is not None and now - since > timeout and waiting and not self._messages
