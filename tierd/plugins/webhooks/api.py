"""Control API routes: endpoints, secrets, deliveries, recovery and test sends.

Every handler acts for one tenant (``require_tenant``) and every query is
filtered on it, so another tenant's id is answered 404 like a missing one.
"""

from __future__ import annotations

import ipaddress
import math
import re
from urllib.parse import urlsplit

from tierd.core.api import (
    ApiError, Route, actor_of, daemon_of, int_cursor, iso_time, json_response, page, page_params, query_choice,
    read_json, require_tenant,
)
from tierd.core.clock import iso
from tierd.core.schema import Reject, parse_duration

from . import runtime
from .signing import SIGNING_SCHEMES, check_secret, new_secret, signing_of, verification_key
from .store import DELIVERY_STATUSES, MAX_RATE_LIMIT, payload_of, signing_secrets

TAG = "webhooks"
#: Validation patterns: always used with fullmatch (``$`` would let a trailing newline through).
_PATTERN = re.compile(r"\*|[a-z0-9_-]+(\.[a-z0-9_-]+)*(\.\*)?")
_HEADER_NAME = re.compile(r"[A-Za-z0-9!#$%&'*+.^_`|~-]{1,256}")
#: One label of a host name as it is resolved (after IDNA): no empty label, no
#: leading or trailing hyphen, at most 63 characters (underscores occur in internal names).
_DNS_LABEL = re.compile(r"[a-z0-9_]([a-z0-9_-]{0,61}[a-z0-9_])?")
MAX_HEADERS = 50
#: Longest ``/stats?window=``: ten years (time arithmetic stays within the calendar).
MAX_WINDOW = 3650 * 86400
#: Headers a tenant may not set: they are the signature scheme's or HTTP's own.
RESERVED_HEADERS = frozenset({
    "webhook-id", "webhook-timestamp", "webhook-signature", "content-type", "content-length", "user-agent",
    "host", "transfer-encoding", "connection", "te", "upgrade", "trailer", "keep-alive", "proxy-authorization",
})
FIELDS = {"url", "event_types", "description", "enabled", "headers", "rate_limit", "metadata", "secret", "signing"}


def _public(endpoint: dict) -> dict:
    return {k: v for k, v in endpoint.items() if not k.startswith("_")}


def _keys(secret: str) -> dict:
    """What an API answer shows of a secret: the ``whsec_`` secret receivers
    share, or only the public key of an ed25519 signing key (which never leaves tierd)."""
    return {"secret" if signing_of(secret) == "hmac-sha256" else "public_key": verification_key(secret)}


def _signing_choice(body: dict, errors: list[str]) -> str | None:
    signing = body.get("signing")
    if signing is not None and signing not in SIGNING_SCHEMES:
        errors.append(f"signing must be one of {', '.join(SIGNING_SCHEMES)}")
        return None
    return signing


def _invalid(errors: list[str]):
    return ApiError(400, "invalid_webhook", "; ".join(errors), details=errors)


def check_fields(body: dict, settings: dict, policy, creating: bool) -> dict:
    """Validate an endpoint body; return the clean fields or raise 400 listing every error."""
    errors: list[str] = []
    unknown = set(body) - FIELDS
    if unknown:
        errors.append(f"unknown field(s): {', '.join(sorted(unknown))}")
    if not creating and ("secret" in body or "signing" in body):
        errors.append("secret and signing cannot be changed here; use POST /v1/webhooks/{id}/rotate-secret")
    clean: dict = {}
    if "url" in body or creating:
        url = body.get("url")
        problem = _url_problem(url, settings, policy)
        if problem:
            errors.append(problem)
        clean["url"] = url
    if "event_types" in body:
        types = body["event_types"]
        if not isinstance(types, list) or not all(isinstance(t, str) and _PATTERN.fullmatch(t) for t in types):
            errors.append("event_types must be a list of event types such as 'invoice.paid' or "
                          "wildcards such as 'invoice.*' (empty: every event)")
        elif len(types) > 200:
            errors.append("event_types holds at most 200 entries")
        clean["event_types"] = types
    if "description" in body:
        if not isinstance(body["description"], str) or len(body["description"]) > 1000:
            errors.append("description must be a string of at most 1000 characters")
        clean["description"] = body["description"]
    if "enabled" in body:
        if not isinstance(body["enabled"], bool):
            errors.append("enabled must be true or false")
        clean["enabled"] = body["enabled"]
    if "headers" in body:
        errors += _header_problems(body["headers"])
        clean["headers"] = body["headers"]
    if "rate_limit" in body:
        rate = body["rate_limit"]
        if rate is not None and (isinstance(rate, bool) or not isinstance(rate, (int, float))
                                 or not (isinstance(rate, int) or math.isfinite(rate)) or not 0 < rate <= MAX_RATE_LIMIT):
            errors.append(f"rate_limit must be null or a number of requests per second above 0 and at most "
                          f"{MAX_RATE_LIMIT}")
        else:
            clean["rate_limit"] = None if rate is None else float(rate)
    if "metadata" in body:
        if not isinstance(body["metadata"], dict):
            errors.append("metadata must be a JSON object")
        clean["metadata"] = body["metadata"]
    if creating:
        signing = _signing_choice(body, errors)
        if body.get("secret") is not None:
            problem = check_secret(body["secret"])
            if problem:
                errors.append(problem)
            elif signing and signing_of(body["secret"]) != signing:
                errors.append(f"secret is not a {signing} key")
            clean["secret"] = body["secret"]
        clean["signing"] = signing
    if errors:
        raise _invalid(errors)
    return clean


def _url_problem(url, settings: dict, policy) -> str | None:
    if not isinstance(url, str) or not url or len(url) > 2000:
        return "url must be a string of at most 2000 characters"
    if not url.isprintable() or any(ch.isspace() for ch in url):
        return "url must not contain spaces or control characters (percent-encode them)"
    try:
        parts = urlsplit(url)
        host = parts.hostname
        parts.port  # noqa: B018 - raises ValueError on a bad port
    except ValueError:
        return f"url {url!r} is not a valid URL"
    schemes = ("https", "http") if settings["allow_http"] else ("https",)
    if parts.scheme not in schemes:
        return ("url must start with https:// (http:// is allowed only with webhooks.allow_http)"
                if parts.scheme == "http" else "url must start with https://")
    if not host:
        return f"url {url!r} has no host"
    if parts.username or parts.password:
        return "url must not carry credentials; use headers"
    try:
        ipaddress.ip_address(host)
    except ValueError:
        # A name: its addresses are checked on every attempt, after resolution.
        return _host_name_problem(host)
    why = policy.refusal(host)
    return f"url points at a refused destination: {why} (see webhooks.allow_destinations)" if why else None


def _host_name_problem(host: str) -> str | None:
    """Why ``host`` (lowercase, as urlsplit gives it) cannot be a DNS name, or None."""
    try:
        ascii_host = host.encode("idna").decode("ascii")
    except UnicodeError:
        ascii_host = ""
    labels = ascii_host.removesuffix(".").split(".")
    if not ascii_host or len(ascii_host) > 253 or not all(_DNS_LABEL.fullmatch(label) for label in labels):
        return (f"url host {host!r} is not a valid host name (labels of letters, digits and hyphens, "
                "each 1 to 63 characters, separated by single dots)")
    return None


def _header_problems(headers) -> list[str]:
    if not isinstance(headers, dict):
        return ["headers must be an object of header names to string values"]
    if len(headers) > MAX_HEADERS:
        return [f"headers holds at most {MAX_HEADERS} entries"]
    problems = []
    for name, value in headers.items():
        if not _HEADER_NAME.fullmatch(name):
            problems.append(f"header name {name!r} is not valid")
        elif name.lower() in RESERVED_HEADERS:
            problems.append(f"header {name!r} is set by tierd and cannot be overridden")
        # Tab is the one control character a header value may hold (RFC 9110).
        if not isinstance(value, str) or len(value) > 4096 or not value.replace("\t", " ").isprintable():
            problems.append(f"header {name!r} must be a single-line string of printable characters")
    return problems


def _time_window(body: dict) -> tuple[float, float | None]:
    """``{"since": ISO, "until": ISO (optional)}`` of recover and replay, as unix seconds."""
    unknown = set(body) - {"since", "until"}
    if unknown:
        raise ApiError(400, "invalid_parameter", f"unknown field(s): {', '.join(sorted(unknown))}")
    since = iso_time(body.get("since"), "since", required=True)
    until = iso_time(body.get("until"), "until")
    if until is not None and until <= since:
        raise ApiError(400, "invalid_parameter", "until must be later than since")
    return since, until


def _duration_param(request, name: str, default: float) -> float:
    value = request.query.get(name)
    if value is None:
        return default
    try:
        seconds = parse_duration(value)
    except Reject:
        seconds = 0
    if not 0 < seconds <= MAX_WINDOW:
        raise ApiError(400, "invalid_parameter",
                       f"{name} must be a duration such as 1h or 7d, at most {MAX_WINDOW // 86400}d, got {value!r}")
    return seconds


# --- handlers -----------------------------------------------------------------------------


# Request bodies as the OpenAPI document shows them (the handlers check them).
_SPAN_BODY = {"type": "object", "required": ["since"], "additionalProperties": False, "properties": {
    "since": {"type": "string", "format": "date-time"}, "until": {"type": "string", "format": "date-time"}}}
_ENDPOINT_FIELDS = {
    "url": {"type": "string", "maxLength": 2000, "example": "https://hooks.example.com/tierd"},
    "event_types": {"type": "array", "maxItems": 200, "items": {"type": "string", "example": "invoice.*"}},
    "description": {"type": "string", "maxLength": 1000},
    "enabled": {"type": "boolean"},
    "headers": {"type": "object", "maxProperties": MAX_HEADERS, "additionalProperties": {"type": "string"}},
    "rate_limit": {"type": "number", "nullable": True, "exclusiveMinimum": True, "minimum": 0,
                   "maximum": MAX_RATE_LIMIT, "description": "requests per second"},
    "metadata": {"type": "object"},
}
_SIGNING = {"signing": {"type": "string", "enum": list(SIGNING_SCHEMES)},
            "secret": {"type": "string", "description": "whsec_... or whsk_...; made for you when absent"}}
_CREATE_BODY = {"type": "object", "required": ["url"], "additionalProperties": False,
                "properties": _ENDPOINT_FIELDS | _SIGNING}
_UPDATE_BODY = {"type": "object", "additionalProperties": False, "properties": _ENDPOINT_FIELDS}
_ROTATE_BODY = {"type": "object", "additionalProperties": False, "properties": _SIGNING}
_TEST_BODY = {"type": "object", "additionalProperties": False, "properties": {"data": {"type": "object"}}}


def routes() -> list[Route]:
    def context(request):
        tenant = require_tenant(request)
        return tenant, runtime.of(daemon_of(request))

    async def found(request, tenant, get, what: str) -> dict:
        """The object ``{id}`` of the path, via ``get(tenant, id)``; 404 when it is not the tenant's."""
        object_id = request.match_info["id"]
        obj = await get(tenant, object_id)
        if obj is None:
            raise ApiError(404, "not_found", f"no {what} {object_id}")
        return obj

    async def endpoint_or_404(request, tenant, module) -> dict:
        return await found(request, tenant, module.store.get_endpoint, "webhook endpoint")

    async def delivery_or_404(request, tenant, module) -> dict:
        return await found(request, tenant, module.store.get_delivery, "delivery")

    async def check_usable(module, endpoint: dict) -> None:
        """409 for an endpoint whose stored row the dispatcher cannot use (changing it through PUT fixes it)."""
        await module.endpoints.refresh()
        why = module.endpoints.unusable.get(endpoint["id"])
        if why is not None:
            raise ApiError(409, "endpoint_unusable",
                           f"webhook endpoint {endpoint['id']} cannot be used ({why}); change it with PUT")

    async def create(request):
        tenant, module = context(request)
        body = await read_json(request)
        fields = check_fields(body, module.settings, module.dispatcher.policy, creating=True)
        signing = fields.pop("signing") or "hmac-sha256"
        secret = fields.pop("secret", None) or new_secret(signing)
        endpoint = await module.store.create_endpoint(tenant, fields, secret, module.daemon.clock.time())
        await module.changed(endpoint, "created", actor_of(request))
        return json_response(_public(endpoint) | _keys(secret), status=201)

    async def list_endpoints(request):
        tenant, module = context(request)
        limit, cursor = page_params(request)
        items = await module.store.list_endpoints(tenant, limit + 1, cursor)
        return json_response(page([_public(e) for e in items], limit, lambda e: e["id"]))

    async def get_endpoint(request):
        tenant, module = context(request)
        return json_response(_public(await endpoint_or_404(request, tenant, module)))

    async def update_endpoint(request):
        tenant, module = context(request)
        endpoint = await endpoint_or_404(request, tenant, module)
        body = await read_json(request)
        fields = check_fields(body, module.settings, module.dispatcher.policy, creating=False)
        updated = await module.store.update_endpoint(tenant, endpoint["id"], fields, module.daemon.clock.time())
        moved = {"previous_url": endpoint["url"]} if updated["url"] != endpoint["url"] else {}
        await module.changed(updated, "updated", actor_of(request), fields=sorted(fields), **moved)
        return json_response(_public(updated))

    async def delete_endpoint(request):
        tenant, module = context(request)
        endpoint = await endpoint_or_404(request, tenant, module)
        await module.store.delete_endpoint(tenant, endpoint["id"])
        await module.changed(endpoint, "deleted", actor_of(request))
        return json_response({"deleted": endpoint["id"]})

    async def get_secret(request):
        tenant, module = context(request)
        endpoint = await endpoint_or_404(request, tenant, module)
        grace = endpoint["_previous_secret_until"]
        in_grace = len(signing_secrets(endpoint["_secret"], endpoint["_previous_secret"], grace,
                                       module.daemon.clock.time())) > 1
        return json_response({"signing": endpoint["signing"], **_keys(endpoint["_secret"]),
                              "previous_secret_valid_until": iso(grace) if in_grace else None})

    async def rotate_secret(request):
        tenant, module = context(request)
        endpoint = await endpoint_or_404(request, tenant, module)
        body = await read_json(request, required=False)
        errors: list[str] = []
        # The same scheme as before, unless the body asks for another (during
        # the grace both sign: receivers can move from HMAC to ed25519).
        signing = _signing_choice(body, errors) or endpoint["signing"]
        secret = body.get("secret") or new_secret(signing)
        problem = check_secret(secret)
        if problem:
            errors.append(problem)
        if errors:
            raise _invalid(errors)
        now = module.daemon.clock.time()
        until = now + module.settings["rotation_grace"]
        await module.store.rotate_secret(tenant, endpoint["id"], secret, until, now)
        await module.changed(endpoint, "secret_rotated", actor_of(request), signing=signing_of(secret),
                             previous_secret_valid_until=iso(until))
        return json_response({"signing": signing_of(secret), **_keys(secret),
                              "previous_secret_valid_until": iso(until)})

    async def list_deliveries(request):
        tenant, module = context(request)
        endpoint = await endpoint_or_404(request, tenant, module)
        limit, cursor = page_params(request)
        items = await module.store.list_deliveries(
            tenant, endpoint["id"], limit=limit + 1, before_seq=int_cursor(cursor),
            status=query_choice(request, "status", DELIVERY_STATUSES),
            event_type=request.query.get("event_type"), since=iso_time(request.query.get("since"), "since"),
            until=iso_time(request.query.get("until"), "until"))
        result = page(items, limit, lambda d: d["_seq"])
        result["data"] = [_public(d) for d in result["data"]]
        return json_response(result)

    async def stats(request):
        tenant, module = context(request)
        endpoint = await endpoint_or_404(request, tenant, module)
        window = _duration_param(request, "window", default=86400)
        now = module.daemon.clock.time()
        found = await module.store.endpoint_stats(tenant, endpoint["id"], now - window)
        return json_response({"endpoint_id": endpoint["id"], "enabled": endpoint["enabled"],
                              "failing_since": endpoint["failing_since"], "deliveries": found["deliveries"],
                              "attempts": found["attempts"] | {"since": iso(now - window)}})

    async def event_deliveries(request):
        tenant, module = context(request)
        event_id = request.query.get("event_id")
        if not event_id:
            raise ApiError(400, "invalid_parameter", "event_id is required: GET /v1/deliveries?event_id=evt_...")
        items = await module.store.deliveries_of_event(tenant, event_id)
        # No delivery: an event no endpoint subscribed to is an empty list, one
        # the tenant does not have a 404 (the log may have pruned an old one).
        if not items and await module.daemon.bus.get(tenant, event_id) is None:
            raise ApiError(404, "not_found", f"no event {event_id}")
        return json_response({"event_id": event_id, "data": [_public(d) for d in items]})

    async def get_delivery(request):
        tenant, module = context(request)
        delivery = await delivery_or_404(request, tenant, module)
        attempts = await module.store.attempts_of(delivery["_seq"])
        return json_response(_public(delivery) | {"attempts_detail": attempts})

    async def retry_delivery(request):
        tenant, module = context(request)
        delivery = await delivery_or_404(request, tenant, module)
        if not await module.store.requeue(tenant, delivery["id"], module.daemon.clock.time()):
            raise ApiError(409, "in_flight", f"delivery {delivery['id']} is being sent right now")
        module.dispatcher.wake()
        return json_response({"id": delivery["id"], "status": "pending"}, status=202)

    async def recover(request):
        tenant, module = context(request)
        endpoint = await endpoint_or_404(request, tenant, module)
        since_ts, until_ts = _time_window(await read_json(request))
        count = await module.store.recover(tenant, endpoint["id"], since_ts, module.daemon.clock.time(),
                                           until=until_ts)
        module.dispatcher.wake()
        return json_response({"requeued": count}, status=202)

    async def replay(request):
        tenant, module = context(request)
        endpoint = await endpoint_or_404(request, tenant, module)
        since_ts, until_ts = _time_window(await read_json(request))
        await check_usable(module, endpoint)
        result = await module.replay(endpoint, since_ts, until_ts)
        return json_response(result | {"endpoint_enabled": endpoint["enabled"]}, status=202)

    async def test_send(request):
        tenant, module = context(request)
        endpoint = await endpoint_or_404(request, tenant, module)
        body = await read_json(request, required=False)
        data = body.get("data", {"message": "test event from tierd"})
        if not isinstance(data, dict):
            raise ApiError(400, "invalid_parameter", "data must be a JSON object")
        await check_usable(module, endpoint)
        now = module.daemon.clock.time()
        payload = payload_of("webhook.test", iso(now), data)
        seq = await module.store.create_test_delivery(tenant, endpoint["id"], payload, now)
        outcome = await module.dispatcher.send_now(seq)
        return json_response({
            "delivery_id": outcome.delivery_id, "outcome": outcome.outcome, "status_code": outcome.status_code,
            "latency_ms": outcome.latency_ms, "error": outcome.error, "response_body": outcome.response_body,
            "delivery_status": outcome.next_status,
        })

    one = "/v1/webhooks/{id}"
    return [
        Route("POST", "/v1/webhooks", create, summary="Create a webhook endpoint (answers its secret)", tag=TAG,
              body=_CREATE_BODY, statuses=(201,)),
        Route("GET", "/v1/webhooks", list_endpoints, summary="List webhook endpoints", tag=TAG),
        Route("GET", one, get_endpoint, summary="One webhook endpoint", tag=TAG),
        Route("PUT", one, update_endpoint, summary="Change a webhook endpoint (fields given only)", tag=TAG,
              body=_UPDATE_BODY),
        Route("DELETE", one, delete_endpoint, summary="Delete a webhook endpoint and its history", tag=TAG),
        Route("GET", one + "/secret", get_secret, summary="The endpoint's signing secret", tag=TAG),
        Route("POST", one + "/rotate-secret", rotate_secret,
              summary="New signing secret; the old one also signs during rotation_grace", tag=TAG,
              body=_ROTATE_BODY),
        Route("GET", one + "/deliveries", list_deliveries, summary="Deliveries of an endpoint, newest first", tag=TAG,
              params={"status": "pending, inflight, succeeded or failed", "event_type": "exact or 'invoice.*'",
                      "since": "ISO-8601, created at or after", "until": "ISO-8601, created before"}),
        Route("POST", one + "/recover", recover,
              summary="Re-queue failed deliveries created since a time (and before `until`)", tag=TAG,
              body=_SPAN_BODY, statuses=(202,)),
        Route("POST", one + "/replay", replay,
              summary="Deliver the events of a time span that the endpoint subscribes to and never got "
                      "(created later, or disabled meanwhile)", tag=TAG, body=_SPAN_BODY, statuses=(202,)),
        Route("POST", one + "/test", test_send, summary="Send a webhook.test event now and answer the result",
              tag=TAG, body=_TEST_BODY),
        Route("GET", one + "/stats", stats, summary="Health of an endpoint: deliveries by status, recent attempts",
              tag=TAG, params={"window": "attempts of this recent span (e.g. 1h, 7d; default 24h)"}),
        Route("GET", "/v1/deliveries", event_deliveries, summary="Where one event went: its delivery to each endpoint",
              tag=TAG, params={"event_id": "the event's id (required)"}),
        Route("GET", "/v1/deliveries/{id}", get_delivery, summary="One delivery with its attempts", tag=TAG),
        Route("POST", "/v1/deliveries/{id}/retry", retry_delivery, summary="Send a delivery again now", tag=TAG,
              statuses=(202,)),
    ]
