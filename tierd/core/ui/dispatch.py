"""The console calls the control API in-process, as its session's caller.

A page never reads another way round the API's rules: the request is
routed by the API's own router to the same handler, with the same tenant
scoping, body validation, audit actor and error codes, only without HTTP
and without a token (the session was checked instead). JSON answers come
back decoded; a file answer (a report's download) comes back as it is.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from aiohttp import web
from yarl import URL

from tierd.core.api import INTERNAL_CALL_KEY, ApiError, Caller, InternalCall


async def call_api(
    root: web.Application,
    request: web.Request,
    caller: Caller,
    method: str,
    path: str,
    query: Mapping[str, Any] | None = None,
    body: Any = None,
) -> tuple[int, Any]:
    """(status, decoded JSON or the response itself) of ``method path`` as ``caller``.

    An API refusal is returned as its status and ``{"error": ...}``, as a
    client would read it."""
    pairs = {k: str(v) for k, v in (query or {}).items() if v is not None and v != ""}
    # aiohttp refuses to clone a request whose body was read, and a POST page's
    # form was (for its CSRF check). The clone never reads that body: its own
    # comes with the InternalCall (see tierd.core.api._read_raw).
    read, request._read_bytes = request._read_bytes, None
    try:
        sub = request.clone(method=method.upper(), rel_url=URL(path).with_query(pairs))
    finally:
        request._read_bytes = read
    sub[INTERNAL_CALL_KEY] = InternalCall(caller, body)
    match = await root.router.resolve(sub)
    if match.http_exception is not None:
        raise match.http_exception
    match.add_app(root)
    match.freeze()
    # What aiohttp's Application._handle does before it calls a handler: there is
    # no public way to give a request its match (the API's handlers read it).
    sub._match_info = match
    try:
        response = await match.handler(sub)
    except ApiError as exc:
        return exc.status, {"error": {"code": exc.code, "message": exc.message, "details": exc.details}}
    if isinstance(response, web.Response) and response.content_type == "application/json":
        raw = response.body if isinstance(response.body, bytes) else (response.text or "").encode()
        return response.status, json.loads(raw)
    return response.status, response
