"""What route handlers need: the Route record, JSON errors, bodies, pages.

Plugins import from here; the application itself is built in ``web_app.py``.

A route declares its JSON body with the :mod:`tierd.core.schema` fields
(``Route(..., body=Obj({...}))``): core reads and validates it before the
handler runs, and the handler takes the clean value (defaults filled in)
with :func:`body_of`. A body that breaks the declaration is answered 422
``invalid_body`` listing every error with its path; one that is not JSON,
400 ``invalid_json``. The OpenAPI ``requestBody`` is written from the same
declaration. A POST or PUT that takes no body says so with ``body=NO_BODY``.
"""

from __future__ import annotations

import base64
import dataclasses
import json
from collections.abc import Awaitable, Callable, Iterable
from typing import TYPE_CHECKING, Any

from aiohttp import web

from tierd.core import jsonbody
from tierd.core.clock import parse_iso
from tierd.core.schema import INT64_MAX, Field, SchemaError, format_path, validate

if TYPE_CHECKING:
    from tierd.core.daemon import Daemon

#: Where the running Daemon sits in the aiohttp application.
# (Typed by annotation: daemon.py imports this module, so the class is not at hand.)
DAEMON_KEY: web.AppKey[Daemon] = web.AppKey("tierd_daemon")
MAX_BODY_KEY = web.AppKey("tierd_max_body", int)
#: Set on every authenticated request (see :func:`caller`).
CALLER_KEY: web.RequestKey[Caller] = web.RequestKey("tierd_caller")
#: The validated body of a route that declares one (see :func:`body_of`).
BODY_KEY = web.RequestKey("tierd_body", object)
#: Set by the console on a request it makes in-process (see ``tierd.core.ui.dispatch``):
#: the caller is its session's and the body a value, not bytes to read.
INTERNAL_CALL_KEY = web.RequestKey("tierd_internal_call", object)
#: Longer than any cursor this API makes (decoded).
MAX_CURSOR = 200


@dataclasses.dataclass(frozen=True)
class Caller:
    """Who is calling: the admin token (acting for ``tenant`` or for none) or a tenant token."""

    admin: bool
    tenant: str | None
    token_id: str | None = None
    #: Free text from the ``Tierd-Actor`` header: the person behind the token, for audit trails.
    on_behalf_of: str = ""

    @property
    def actor(self) -> str:
        """For audit logs: ``admin``, ``acme/tok_1a2b`` and ``... for alice@example.com``."""
        base = "admin" if self.admin else f"{self.tenant}/{self.token_id}"
        return f"{base} for {self.on_behalf_of}" if self.on_behalf_of else base


@dataclasses.dataclass(frozen=True)
class InternalCall:
    """What the console puts under :data:`INTERNAL_CALL_KEY`: who calls, and the body."""

    caller: Caller
    body: Any = None


def daemon_of(request: web.Request) -> Daemon:
    """The running :class:`tierd.core.daemon.Daemon`."""
    return request.app[DAEMON_KEY]


def caller(request: web.Request) -> Caller:
    return request.get(CALLER_KEY) or Caller(admin=False, tenant=None)


def actor_of(request: web.Request) -> str:
    return caller(request).actor


class _NoBody:
    def __repr__(self) -> str:
        return "NO_BODY"


#: ``Route(..., body=NO_BODY)``: this POST/PUT takes no body (e.g. "retry now"), said
#: explicitly, so that a route that forgot its declaration stands out in the document.
NO_BODY: Any = _NoBody()

#: The query parameters of a paged list (see :func:`page_params`): ``params=PAGED | {...}``.
PAGED = {"limit": "page size, 1..500 (default 50)", "cursor": "next_cursor of the previous page"}
#: The answer of a paged list (see :func:`page`), for ``Route(response=...)``.
PAGE_RESPONSE = {
    "type": "object",
    "required": ["data", "next_cursor"],
    "properties": {
        "data": {"type": "array", "items": {}},
        "next_cursor": {"type": "string", "nullable": True, "description": "null on the last page"},
    },
}


@dataclasses.dataclass
class Route:
    """One control API route contributed by core or a plugin.

    ``auth``: ``"tenant"`` (a tenant token, or the admin token acting for a
    tenant), ``"admin"`` (the admin token only) or ``"public"``.
    ``body``: the JSON body as a :mod:`tierd.core.schema` field (usually an
    ``Obj``), validated by core before the handler runs (see :func:`body_of`);
    :data:`NO_BODY` for a POST/PUT that takes none; None (undeclared) for
    a GET or DELETE. ``body_check(request, value) -> [SchemaError]`` finds
    what only the running configuration refuses (a destination, a layout
    name); core runs it with the schema, so that every error comes in one
    answer. ``response`` is an optional JSON-schema fragment for the
    OpenAPI document; ``params`` describes query parameters ``{name: description}``
    (a paged list adds :data:`PAGED`); ``statuses`` are the success statuses
    the document declares.
    """

    method: str
    path: str
    handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    auth: str = "tenant"
    summary: str = ""
    body: Field | None = None
    body_check: Callable[[web.Request, Any], list[SchemaError]] | None = None
    response: dict | None = None
    params: dict[str, str] = dataclasses.field(default_factory=dict)
    tag: str = ""
    #: The success statuses it answers (201 for a creation, 202 for work queued).
    statuses: tuple[int, ...] = (200,)
    #: For a body that is not (only) JSON and that the handler reads itself:
    #: media type -> JSON schema for the document, e.g. a file upload as
    #: ``application/octet-stream`` and ``multipart/form-data``.
    body_content: dict[str, dict] | None = None

    def __post_init__(self) -> None:
        if not (self.body is None or self.body is NO_BODY or isinstance(self.body, Field)):
            raise TypeError(
                f"{self.method} {self.path}: Route.body takes a tierd.core.schema field such as "
                "Obj({...}) (core validates it), or NO_BODY; a body the handler reads itself "
                "is described with body_content"
            )


class ApiError(Exception):
    """An error answered as ``{"error": {"code", "message", ...}}`` with ``status``."""

    def __init__(self, status: int, code: str, message: str, details: Any = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.details = details

    def to_response(self) -> web.Response:
        error = {"code": self.code, "message": self.message}
        if self.details is not None:
            error["details"] = self.details
        return json_response({"error": error}, status=self.status)


def _default(obj: Any) -> Any:
    # Decimal, dates, paths... are given as strings: JSON has no money type.
    return str(obj)


def dumps(obj: Any) -> str:
    # allow_nan=False: NaN and Infinity are not JSON; refused at intake, and
    # never answered should one come from elsewhere (an error, not bad JSON).
    return json.dumps(obj, default=_default, separators=(",", ":"), allow_nan=False)


def json_response(obj: Any, status: int = 200, headers: dict | None = None) -> web.Response:
    return web.Response(text=dumps(obj), status=status, content_type="application/json", headers=headers)


async def _read_raw(request: web.Request) -> bytes:
    internal = request.get(INTERNAL_CALL_KEY)
    if isinstance(internal, InternalCall):  # the console calling in-process: its body is a value
        return dumps(internal.body).encode() if internal.body is not None else b""
    try:
        return await request.read()
    except web.HTTPRequestEntityTooLarge:
        raise ApiError(413, "body_too_large", f"body exceeds {request.app[MAX_BODY_KEY]} bytes") from None


def _decode(raw: bytes) -> Any:
    try:
        return jsonbody.loads(raw)
    except jsonbody.JsonError as exc:
        raise ApiError(400, "invalid_json", f"body is not valid JSON: {exc}") from None


async def read_json(request: web.Request, required: bool = True) -> dict:
    """The request body as a JSON object, unchecked; 400/413 ApiErrors otherwise.

    For a route without a declared ``body`` (a declared one is read by core:
    use :func:`body_of`)."""
    raw = await _read_raw(request)
    if not raw.strip():
        if required:
            raise ApiError(400, "invalid_json", "a JSON object body is required")
        return {}
    body = _decode(raw)
    if not isinstance(body, dict):
        raise ApiError(400, "invalid_json", "body must be a JSON object")
    return body


async def read_body(
    request: web.Request,
    schema: Field,
    check: Callable[[web.Request, Any], list[SchemaError]] | None = None,
) -> Any:
    """The body validated against ``schema`` (and ``check``, a route's ``body_check``),
    defaults filled in; core calls it for a route that declares its body. An empty
    body reads as ``{}`` (so a missing required key is named). 400 ``invalid_json``
    for text that is not JSON; 422 ``invalid_body`` (:func:`invalid_body`) listing every error."""
    raw = await _read_raw(request)
    return check_body(request, schema, check, _decode(raw) if raw.strip() else {})


def check_body(
    request: web.Request,
    schema: Field,
    check: Callable[[web.Request, Any], list[SchemaError]] | None,
    value: Any,
) -> Any:
    """A decoded body validated as :func:`read_body` does (the console's in-process calls)."""
    clean, errors = validate(schema, value)
    if check is not None and isinstance(clean, dict):
        # With the schema's errors too: what is invalid there is None here.
        errors += check(request, clean)
    if errors:
        raise invalid_body(errors)
    return clean


def invalid_body(errors: list[SchemaError]) -> ApiError:
    """The 422 ``invalid_body`` error for these problems, each ``{"path", "message"}``
    in ``details`` (what core answers for a body that breaks its declaration)."""
    shown = "; ".join(map(str, errors[:5])) + (f"; and {len(errors) - 5} more" if len(errors) > 5 else "")
    return ApiError(
        422,
        "invalid_body",
        f"invalid body: {shown}",
        details=[{"path": format_path(e.path), "message": e.message} for e in errors],
    )


def body_of(request: web.Request) -> Any:
    """The validated body of a route that declares ``body=``: the clean value
    (a dict for an ``Obj``, defaults filled in, times and money converted)."""
    return request[BODY_KEY]


def require_tenant(request: web.Request) -> str:
    """The tenant a request acts for. The admin token names one explicitly."""
    tenant = caller(request).tenant
    if tenant:
        return tenant
    raise ApiError(
        400,
        "tenant_required",
        "the admin token acts for a tenant only when the Tierd-Tenant header or ?tenant= names it",
    )


def tenant_scope(request: web.Request) -> str | None:
    """Tenant to filter on: the caller's tenant, or None (all) for the bare admin token."""
    return caller(request).tenant


def int_param(request: web.Request, name: str, default: int, low: int, high: int) -> int:
    """``?name=`` as an integer within ``[low, high]`` (``default`` when absent); 400 otherwise."""
    raw = request.query.get(name, str(default))
    try:
        value = int(raw)
    except ValueError:
        raise ApiError(400, "invalid_parameter", f"{name} must be an integer, got {raw!r}") from None
    if not low <= value <= high:
        raise ApiError(400, "invalid_parameter", f"{name} must be between {low} and {high}")
    return value


def page_params(request: web.Request, default: int = 50, maximum: int = 500) -> tuple[int, str | None]:
    """``?limit=`` and the decoded ``?cursor=`` (None on the first page)."""
    limit = int_param(request, "limit", default, 1, maximum)
    cursor = request.query.get("cursor")
    if cursor:
        try:
            raw = cursor.encode() + b"=" * (-len(cursor) % 4)
            cursor = base64.b64decode(raw, altchars=b"-_", validate=True).decode("ascii")
        except ValueError:  # binascii.Error and UnicodeDecodeError included
            raise ApiError(400, "invalid_cursor", "cursor is not one this API returned") from None
        # Every cursor this API makes is short printable ASCII (ids, numbers).
        if len(cursor) > MAX_CURSOR or not cursor.isprintable():
            raise ApiError(400, "invalid_cursor", "cursor is not one this API returned")
    return limit, cursor or None


def query_choice(request: web.Request, name: str, choices: Iterable[str]) -> str | None:
    """``?name=`` if it is one of ``choices`` (None if absent); 400 otherwise."""
    value = request.query.get(name)
    if value is not None and value not in choices:
        raise ApiError(400, "invalid_parameter", f"{name} must be one of {', '.join(choices)}")
    return value


def iso_time(value: str | None, name: str, required: bool = False) -> float | None:
    """A time given as ISO-8601 text (a query parameter or a body field) as
    unix seconds; None when absent and not ``required``; 400 otherwise."""
    if value is None and not required:
        return None
    if isinstance(value, str):
        try:
            return parse_iso(value)
        except ValueError:
            pass
    raise ApiError(
        400, "invalid_parameter", f"{name} must be an ISO-8601 time such as 2026-11-28T00:00:00Z, got {value!r}"
    )


def int_cursor(cursor: str | None) -> int | None:
    """A cursor this API made from an integer (a sequence number); 400 for anything else,
    such as a number SQLite cannot hold (over 2**63 - 1)."""
    if cursor is None:
        return None
    if not (cursor.isascii() and cursor.isdigit() and len(cursor) < 20 and int(cursor) <= INT64_MAX):
        raise ApiError(400, "invalid_cursor", "cursor is not one this API returned")
    return int(cursor)


def encode_cursor(value: object) -> str:
    return base64.urlsafe_b64encode(str(value).encode()).decode().rstrip("=")


def page(items: list, limit: int, cursor_of: Callable[[Any], Any]) -> dict:
    """Cut ``items`` (fetched with ``limit + 1``) into a page with ``next_cursor``."""
    more = len(items) > limit
    items = items[:limit]
    return {"data": items, "next_cursor": encode_cursor(cursor_of(items[-1])) if more and items else None}
