"""Control API routes: endpoints, secrets, deliveries, recovery and test sends.

Every handler acts for one tenant (``require_tenant``) and every query is
filtered on it, so another tenant's id is answered 404 like a missing one.
"""

from __future__ import annotations

import ipaddress
import json
import math
import re
from urllib.parse import urlsplit

from tierd.core.api import (
    NO_BODY,
    PAGED,
    ApiError,
    Route,
    actor_of,
    body_of,
    daemon_of,
    int_cursor,
    iso_time,
    json_response,
    page,
    page_params,
    query_choice,
    require_tenant,
)
from tierd.core.clock import iso
from tierd.core.schema import (
    Bool,
    Enum,
    Float,
    Instant,
    List,
    Map,
    Obj,
    Reject,
    SchemaError,
    Str,
    parse_duration,
)

from .endpoints import MAX_RATE_LIMIT
from .fanout import payload_of
from .ordering import ORDERINGS
from .records import DELIVERY_STATUSES
from .service import WebhooksService
from .signing import SIGNING_SCHEMES, check_secret, new_secret, signing_of, signing_secrets, verification_key
from .transform import MAX_HEADER_VALUE, MAX_SOURCE, TransformError, compile_transform, sample_event, validate

TAG = "webhooks"
#: Validation patterns: always used with fullmatch (``$`` would let a trailing newline through).
_PATTERN = re.compile(r"\*|[a-z0-9_-]+(\.[a-z0-9_-]+)*(\.\*)?")
_HEADER_NAME = re.compile(r"[A-Za-z0-9!#$%&'*+.^_`|~-]{1,256}")
#: One label of a host name as it is resolved (after IDNA): no empty label, no
#: leading or trailing hyphen, at most 63 characters (underscores occur in internal names).
_DNS_LABEL = re.compile(r"[a-z0-9_]([a-z0-9_-]{0,61}[a-z0-9_])?")
MAX_HEADERS = 50
#: A tenant's customer id (an endpoint's ``owner``, a portal link's ``customer``).
CUSTOMER = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:@+-]{0,199}")
CUSTOMER_DOC = "a customer id such as cust_42 (letters, digits and . _ : @ + -, at most 200)"
#: Longest ``/stats?window=``: ten years (time arithmetic stays within the calendar).
MAX_WINDOW = 3650 * 86400
#: Headers a tenant may not set: they are the signature scheme's or HTTP's own.
RESERVED_HEADERS = frozenset(
    {
        "webhook-id",
        "webhook-timestamp",
        "webhook-signature",
        "content-type",
        "content-length",
        "user-agent",
        "host",
        "transfer-encoding",
        "connection",
        "te",
        "upgrade",
        "trailer",
        "keep-alive",
        "proxy-authorization",
    }
)


def _public(endpoint: dict) -> dict:
    return {k: v for k, v in endpoint.items() if not k.startswith("_")}


def _keys(secret: str) -> dict:
    """What an API answer shows of a secret: the ``whsec_`` secret receivers
    share, or only the public key of an ed25519 signing key (which never leaves tierd)."""
    return {"secret" if signing_of(secret) == "hmac-sha256" else "public_key": verification_key(secret)}


# --- request bodies --------------------------------------------------------------------------
# Declared with core's schema fields: core validates them before a handler runs
# and writes them into the OpenAPI document. What depends on the running
# configuration (http:// allowed, refused destinations) is the routes' body_check.


class _EndpointUrl(Str):
    """An absolute http(s) URL to a host, without credentials, spaces or control characters."""

    def parse(self, value):
        value = super().parse(value)
        problem = _url_problem(value)
        if problem:
            raise Reject(problem)
        return value


class _HeaderName(Str):
    """A header name (an RFC 9110 token) that neither the signature scheme nor HTTP sets itself."""

    def parse(self, value):
        value = super().parse(value)
        if value.lower() in RESERVED_HEADERS:
            raise Reject(f"header {value!r} is set by tierd and cannot be overridden")
        return value


class _HeaderValue(Str):
    def parse(self, value):
        value = super().parse(value)
        # Tab is the one control character a header value may hold (RFC 9110).
        if not value.replace("\t", " ").isprintable():
            raise Reject("must be a single line of printable characters")
        return value


class _Secret(Str):
    def parse(self, value):
        value = super().parse(value)
        problem = check_secret(value)
        if problem:
            raise Reject(problem)
        return value


def _secret_matches_signing(body: dict) -> list[tuple[tuple, str]]:
    secret, signing = body.get("secret"), body.get("signing")
    if secret and signing and signing_of(secret) != signing:
        return [(("secret",), f"is not a {signing} key")]
    return []


class _UpdateBody(Obj):
    def unknown_key_message(self, key) -> str:
        if key in _SIGNING:
            return "secret and signing cannot be changed here; use POST /v1/webhooks/{id}/rotate-secret"
        return super().unknown_key_message(key)


def _url(required: bool) -> _EndpointUrl:
    return _EndpointUrl(
        min_len=1,
        max_len=2000,
        required=required,
        doc="where deliveries are POSTed, e.g. https://hooks.example.com/tierd",
    )


#: A transformation (``transform.py``): the templates of the body and of extra headers.
_TRANSFORMATION = {
    "body": Str(
        min_len=1,
        max_len=MAX_SOURCE,
        required=True,
        doc="Jinja2 template of the JSON body sent (event, webhook_id, tenant, endpoint); insert values with | json",
    ),
    "headers": Map(
        Str(max_len=MAX_HEADER_VALUE),
        key=_HeaderName(pattern=_HEADER_NAME, pattern_doc="a header name"),
        max_len=MAX_HEADERS,
        default={},
        doc="extra headers: name -> template of its value",
    ),
}
# No defaults (sparse): a PUT changes the fields it gives; the store fills what a
# creation leaves out (every event type, enabled, no headers, no rate limit).
_ENDPOINT_FIELDS = {
    "url": _url(required=False),
    "event_types": List(
        Str(pattern=_PATTERN, pattern_doc="an event type such as 'invoice.paid' or a wildcard such as 'invoice.*'"),
        max_len=200,
        doc="the event types sent (empty or absent: every event)",
    ),
    "description": Str(max_len=1000),
    "enabled": Bool(),
    "headers": Map(
        _HeaderValue(max_len=4096),
        key=_HeaderName(pattern=_HEADER_NAME, pattern_doc="a header name"),
        max_len=MAX_HEADERS,
        doc="extra headers sent with every delivery",
    ),
    "rate_limit": Float(above=0, max=MAX_RATE_LIMIT, nullable=True, doc="requests per second; null: none"),
    "metadata": Obj({}, extra=True, doc="any JSON object, kept with the endpoint"),
    "transformation": Obj(
        _TRANSFORMATION,
        nullable=True,
        doc="reshapes each delivery's body (and adds headers) before it is signed; null removes it",
    ),
    "owner": Str(
        pattern=CUSTOMER,
        pattern_doc=CUSTOMER_DOC,
        nullable=True,
        doc="the tenant's customer this endpoint belongs to (their portal link shows it); null: the tenant's own",
    ),
    "ordering": Enum(
        ORDERINGS,
        doc="unordered (default): as fast as the limits allow; fifo: in event order, one in flight at a time,"
        " a failing delivery holds back the ones after it (blocked_since, blocked_by)",
    ),
}
_SIGNING = {
    "signing": Enum(
        SIGNING_SCHEMES, nullable=True, doc="the scheme of a new secret (default: the given secret's, else hmac-sha256)"
    ),
    "secret": _Secret(
        secret=True, nullable=True, doc="whsec_... (HMAC) or whsk_... (ed25519 key); made for you when absent"
    ),
}
CREATE_BODY = Obj(
    _ENDPOINT_FIELDS | {"url": _url(required=True)} | _SIGNING, sparse=True, check=_secret_matches_signing
)
UPDATE_BODY = _UpdateBody(_ENDPOINT_FIELDS, sparse=True)
ROTATE_BODY = Obj(_SIGNING, sparse=True, check=_secret_matches_signing)


def _span_check(body: dict) -> list[tuple[tuple, str]]:
    if body["until"] is not None and body["until"] <= body["since"]:
        return [(("until",), "must be later than since")]
    return []


#: Recover and replay: a span of time, as unix seconds once validated.
SPAN_BODY = Obj(
    {"since": Instant(required=True), "until": Instant(default=None, doc="default: now")}, check=_span_check
)
PREVIEW_BODY = Obj(
    {
        "event": Obj(
            {
                "type": Str(min_len=1, max_len=200, required=True),
                "timestamp": Str(max_len=64, default=None, doc="default: now"),
                "data": Obj({}, extra=True, default={}),
            },
            required=True,
            doc="a sample event, as the endpoint would get it",
        ),
        "transformation": Obj(
            _TRANSFORMATION,
            default=None,
            doc="a transformation to try instead of the saved one",
        ),
    },
)
TEST_BODY = Obj(
    {"data": Obj({}, extra=True, default={"message": "test event from tierd"}, doc="the test event's data")}
)


def _url_problem(url: str) -> str | None:
    """Why ``url`` cannot be an endpoint's URL whatever the configuration, or None."""
    if not url.isprintable() or any(ch.isspace() for ch in url):
        return "must not contain spaces or control characters (percent-encode them)"
    try:
        parts = urlsplit(url)
        host = parts.hostname
        parts.port  # noqa: B018 - raises ValueError on a bad port
    except ValueError:
        return f"{url!r} is not a valid URL"
    if parts.scheme not in ("https", "http"):
        return "must start with https://"
    if not host:
        return f"{url!r} has no host"
    if parts.username or parts.password:
        return "must not carry credentials; use headers"
    try:
        ipaddress.ip_address(host)
    except ValueError:
        # A name: its addresses are checked on every attempt, after resolution.
        return _host_name_problem(host)
    return None


def _url_refusal(url: str, settings: dict, policy) -> str | None:
    """Why the running configuration refuses ``url`` (a valid endpoint URL), or None."""
    parts = urlsplit(url)
    if parts.scheme == "http" and not settings["allow_http"]:
        return "must start with https:// (http:// is allowed only with webhooks.allow_http)"
    host = parts.hostname
    if host is None:
        return None  # no host: _url_problem says so
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return None  # a name: checked on every attempt
    why = policy.refusal(host)
    return f"points at a refused destination: {why} (see webhooks.allow_destinations)" if why else None


def url_refusals(request, body: dict) -> list[SchemaError]:
    """The body_check of a creation or change: a valid URL the running configuration refuses."""
    if body.get("url") is None:
        return []
    module = WebhooksService.of(daemon_of(request))
    why = _url_refusal(body["url"], module.settings, module.dispatcher.sender.policy)
    return [SchemaError(("url",), why)] if why else []


def _host_name_problem(host: str) -> str | None:
    """Why ``host`` (lowercase, as urlsplit gives it) cannot be a DNS name, or None."""
    try:
        ascii_host = host.encode("idna").decode("ascii")
    except UnicodeError:
        ascii_host = ""
    labels = ascii_host.removesuffix(".").split(".")
    if not ascii_host or len(ascii_host) > 253 or not all(_DNS_LABEL.fullmatch(label) for label in labels):
        return (
            f"host {host!r} is not a valid host name (labels of letters, digits and hyphens, "
            "each 1 to 63 characters, separated by single dots)"
        )
    return None


def _delivery_cursor(cursor: str | None) -> tuple[float, int] | int | None:
    """A delivery list's cursor: ``created_at:seq`` as this API makes it, or the
    bare seq an older version made (resolved by the caller); 400 for anything else."""
    if cursor is None:
        return None
    created, sep, seq = cursor.partition(":")
    if not sep:
        return int_cursor(cursor)
    try:
        created_at = float(created)
    except ValueError:
        created_at = math.nan
    number = int_cursor(seq)  # 400 for anything but a seq
    if number is None or not math.isfinite(created_at):
        raise ApiError(400, "invalid_cursor", "cursor is not one this API returned")
    return created_at, number


def _duration_param(request, name: str, default: float) -> float:
    value = request.query.get(name)
    if value is None:
        return default
    try:
        seconds = parse_duration(value)
    except Reject:
        seconds = 0
    if not 0 < seconds <= MAX_WINDOW:
        raise ApiError(
            400,
            "invalid_parameter",
            f"{name} must be a duration such as 1h or 7d, at most {MAX_WINDOW // 86400}d, got {value!r}",
        )
    return seconds


# --- handlers -----------------------------------------------------------------------------


def routes() -> list[Route]:
    def context(request):
        tenant = require_tenant(request)
        return tenant, WebhooksService.of(daemon_of(request))

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
            raise ApiError(
                409,
                "endpoint_unusable",
                f"webhook endpoint {endpoint['id']} cannot be used ({why}); change it with PUT",
            )

    def check_transformation(module, endpoint: dict, fields: dict) -> None:
        """422 ``invalid_transformation`` (nothing stored) for a transformation that does not
        compile, or does not render valid JSON and headers for a sample of the endpoint's events."""
        spec = fields.get("transformation")
        if spec is None:
            return
        event_types = fields.get("event_types", endpoint["event_types"])
        sample = sample_event(event_types, module.daemon.registries.event_types, iso(module.daemon.clock.time()))
        try:
            validate(spec, endpoint | fields, sample)
        except TransformError as exc:
            raise ApiError(422, "invalid_transformation", f"transformation refused: {exc}") from None

    async def preview(request):
        tenant, module = context(request)
        endpoint = await endpoint_or_404(request, tenant, module)
        body = body_of(request)
        spec = body["transformation"] if body.get("transformation") is not None else endpoint["transformation"]
        event = body["event"] | {"timestamp": body["event"]["timestamp"] or iso(module.daemon.clock.time())}
        if spec is None:  # what is sent without a transformation
            return json_response({"transformed": False, "body": event, "headers": {}})
        try:
            sent, headers = compile_transform(spec, endpoint).render(event, "msg_preview", tenant)
        except TransformError as exc:
            raise ApiError(422, "invalid_transformation", f"transformation failed: {exc}") from None
        return json_response({"transformed": True, "body": json.loads(sent), "headers": headers})

    async def create(request):
        tenant, module = context(request)
        fields = dict(body_of(request))
        signing = fields.pop("signing", None) or "hmac-sha256"
        secret = fields.pop("secret", None) or new_secret(signing)
        check_transformation(module, {"id": "ep_new", "event_types": []} | fields, fields)
        now = module.daemon.clock.time()
        endpoint = await module.store.create_endpoint(tenant, fields, secret, now)
        await module.changed(endpoint, "created", actor_of(request))
        return json_response(_public(endpoint) | _keys(secret), status=201)

    async def list_endpoints(request):
        tenant, module = context(request)
        limit, cursor = page_params(request)
        owner = request.query.get("owner")
        if owner is not None and not CUSTOMER.fullmatch(owner):
            raise ApiError(400, "invalid_parameter", f"owner must be {CUSTOMER_DOC}")
        items = await module.store.list_endpoints(tenant, limit + 1, cursor, owner=owner)
        return json_response(page([_public(e) for e in items], limit, lambda e: e["id"]))

    async def get_endpoint(request):
        tenant, module = context(request)
        return json_response(_public(await endpoint_or_404(request, tenant, module)))

    async def update_endpoint(request):
        tenant, module = context(request)
        endpoint = await endpoint_or_404(request, tenant, module)
        fields = body_of(request)
        check_transformation(module, endpoint, fields)
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
        in_grace = (
            len(signing_secrets(endpoint["_secret"], endpoint["_previous_secret"], grace, module.daemon.clock.time()))
            > 1
        )
        return json_response(
            {
                "signing": endpoint["signing"],
                **_keys(endpoint["_secret"]),
                "previous_secret_valid_until": iso(grace) if in_grace else None,
            }
        )

    async def rotate_secret(request):
        tenant, module = context(request)
        endpoint = await endpoint_or_404(request, tenant, module)
        body = body_of(request)
        # The same scheme as before, unless the body asks for another (during
        # the grace both sign: receivers can move from HMAC to ed25519).
        signing = body.get("signing") or endpoint["signing"]
        secret = body.get("secret") or new_secret(signing)
        now = module.daemon.clock.time()
        until = now + module.settings["rotation_grace"]
        await module.store.rotate_secret(tenant, endpoint["id"], secret, until, now)
        await module.changed(
            endpoint,
            "secret_rotated",
            actor_of(request),
            signing=signing_of(secret),
            previous_secret_valid_until=iso(until),
        )
        return json_response(
            {"signing": signing_of(secret), **_keys(secret), "previous_secret_valid_until": iso(until)}
        )

    async def list_deliveries(request):
        tenant, module = context(request)
        endpoint = await endpoint_or_404(request, tenant, module)
        limit, cursor = page_params(request)
        before = _delivery_cursor(cursor)
        if isinstance(before, int):
            # A cursor of an older version (seq alone): where that delivery is now.
            before = await module.store.delivery_cursor(tenant, endpoint["id"], before)
            if before is None:
                raise ApiError(400, "invalid_cursor", "cursor is not one this API returned")
        items = await module.store.list_deliveries(
            tenant,
            endpoint["id"],
            limit=limit + 1,
            before=before,
            status=query_choice(request, "status", DELIVERY_STATUSES),
            event_type=request.query.get("event_type"),
            since=iso_time(request.query.get("since"), "since"),
            until=iso_time(request.query.get("until"), "until"),
        )
        result = page(items, limit, lambda d: f"{d['_created_at']!r}:{d['_seq']}")
        result["data"] = [_public(d) for d in result["data"]]
        return json_response(result)

    async def stats(request):
        tenant, module = context(request)
        endpoint = await endpoint_or_404(request, tenant, module)
        window = _duration_param(request, "window", default=86400)
        now = module.daemon.clock.time()
        found = await module.store.endpoint_stats(tenant, endpoint["id"], now - window)
        return json_response(
            {
                "endpoint_id": endpoint["id"],
                "enabled": endpoint["enabled"],
                "failing_since": endpoint["failing_since"],
                "deliveries": found["deliveries"],
                # Counted by whole minutes from the one that holds now - window;
                # latencies estimated from a histogram (Store.endpoint_stats).
                "attempts": found["attempts"] | {"since": iso(found["since"]), "latency_estimated": True},
            }
        )

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
        return json_response(
            {"id": delivery["id"], "status": "pending"} | await waits_for(module, delivery), status=202
        )

    async def waits_for(module, delivery: dict) -> dict:
        """On a fifo endpoint, the delivery a retried one waits for (it never jumps the queue)."""
        if delivery["endpoint_id"] not in module.endpoints.fifo:
            return {}
        head = await module.store.head_of(delivery["endpoint_id"])
        return {"waits_for": head["id"] if head and head["id"] != delivery["id"] else None}

    async def recover(request):
        tenant, module = context(request)
        endpoint = await endpoint_or_404(request, tenant, module)
        span = body_of(request)
        count = await module.store.recover(
            tenant, endpoint["id"], span["since"], module.daemon.clock.time(), until=span["until"]
        )
        module.dispatcher.wake()
        return json_response({"requeued": count}, status=202)

    async def replay(request):
        tenant, module = context(request)
        endpoint = await endpoint_or_404(request, tenant, module)
        span = body_of(request)
        await check_usable(module, endpoint)
        result = await module.replay(endpoint, span["since"], span["until"])
        return json_response(result | {"endpoint_enabled": endpoint["enabled"]}, status=202)

    async def test_send(request):
        tenant, module = context(request)
        endpoint = await endpoint_or_404(request, tenant, module)
        await check_usable(module, endpoint)
        now = module.daemon.clock.time()
        payload = payload_of("webhook.test", iso(now), body_of(request)["data"])
        seq = await module.store.create_test_delivery(tenant, endpoint["id"], payload, now)
        outcome = await module.dispatcher.send_now(seq)
        return json_response(
            {
                "delivery_id": outcome.delivery_id,
                "outcome": outcome.outcome,
                "status_code": outcome.status_code,
                "latency_ms": outcome.latency_ms,
                "error": outcome.error,
                "response_body": outcome.response_body,
                "delivery_status": outcome.next_status,
            }
        )

    one = "/v1/webhooks/{id}"
    return [
        Route(
            "POST",
            "/v1/webhooks",
            create,
            summary="Create a webhook endpoint (answers its secret)",
            tag=TAG,
            body=CREATE_BODY,
            body_check=url_refusals,
            statuses=(201,),
        ),
        Route(
            "GET",
            "/v1/webhooks",
            list_endpoints,
            summary="List webhook endpoints",
            tag=TAG,
            params=PAGED | {"owner": "only the endpoints of this customer (see the portal)"},
        ),
        Route("GET", one, get_endpoint, summary="One webhook endpoint", tag=TAG),
        Route(
            "PUT",
            one,
            update_endpoint,
            summary="Change a webhook endpoint (fields given only)",
            tag=TAG,
            body=UPDATE_BODY,
            body_check=url_refusals,
        ),
        Route("DELETE", one, delete_endpoint, summary="Delete a webhook endpoint and its history", tag=TAG),
        Route("GET", one + "/secret", get_secret, summary="The endpoint's signing secret", tag=TAG),
        Route(
            "POST",
            one + "/rotate-secret",
            rotate_secret,
            summary="New signing secret; the old one also signs during rotation_grace",
            tag=TAG,
            body=ROTATE_BODY,
        ),
        Route(
            "GET",
            one + "/deliveries",
            list_deliveries,
            summary="Deliveries of an endpoint, newest first",
            tag=TAG,
            params=PAGED
            | {
                "status": "pending, inflight, succeeded or failed",
                "event_type": "exact or 'invoice.*'",
                "since": "ISO-8601, created at or after",
                "until": "ISO-8601, created before",
            },
        ),
        Route(
            "POST",
            one + "/recover",
            recover,
            summary="Re-queue failed deliveries created since a time (and before `until`)",
            tag=TAG,
            body=SPAN_BODY,
            statuses=(202,),
        ),
        Route(
            "POST",
            one + "/replay",
            replay,
            summary="Deliver the events of a time span that the endpoint subscribes to and never got "
            "(created later, or disabled meanwhile)",
            tag=TAG,
            body=SPAN_BODY,
            statuses=(202,),
        ),
        Route(
            "POST",
            one + "/test",
            test_send,
            summary="Send a webhook.test event now and answer the result",
            tag=TAG,
            body=TEST_BODY,
        ),
        Route(
            "POST",
            one + "/transformation/preview",
            preview,
            summary="Render the endpoint's transformation (or one given) for a sample event; sends nothing",
            tag=TAG,
            body=PREVIEW_BODY,
        ),
        Route(
            "GET",
            one + "/stats",
            stats,
            summary="Health of an endpoint: deliveries by status, recent attempts (counted by whole minutes;"
            " latency p50/p99 estimated from a histogram of buckets 1.41x wide, within the exact value's bucket)",
            tag=TAG,
            params={
                "window": "attempts of this recent span, from the start of its first minute (e.g. 1h, 7d; default 24h)"
            },
        ),
        Route(
            "GET",
            "/v1/deliveries",
            event_deliveries,
            summary="Where one event went: its delivery to each endpoint",
            tag=TAG,
            params={"event_id": "the event's id (required)"},
        ),
        Route("GET", "/v1/deliveries/{id}", get_delivery, summary="One delivery with its attempts", tag=TAG),
        Route(
            "POST",
            "/v1/deliveries/{id}/retry",
            retry_delivery,
            summary="Send a delivery again now",
            tag=TAG,
            statuses=(202,),
            body=NO_BODY,
        ),
    ]
