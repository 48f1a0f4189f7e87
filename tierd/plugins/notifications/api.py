"""Control API: notification history, test and manual sends, silences.

A tenant token sees only notifications caused by its own events and only
its own silences; the admin token sees everything (or one tenant with
``Tierd-Tenant``). Sending (test, manual) is admin-only: channels belong to
the operator.
"""

from __future__ import annotations

import json

from tierd.core.api import (
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
    tenant_scope,
)
from tierd.core.clock import iso_or_none
from tierd.core.ids import new_id
from tierd.core.schema import Bool, Enum, Instant, Obj, SchemaError, Str

from . import store
from .dispatch import INLINE_LEASE
from .service import NotificationsService
from .silences import SILENCE_MATCHERS_SCHEMA

STATUSES = ("pending", "delivered", "failed", "muted", "throttled", "grouped", "digested")
_SEVERITIES = ("info", "warning", "critical")
MAX_COMMENT = 1000


def _time(ts: float | None) -> str | None:
    """:func:`tierd.core.clock.iso_or_none`, and None for a time it cannot show."""
    try:
        return iso_or_none(ts)
    except (ValueError, OverflowError, OSError):
        # A time stored before such times were refused (a silence ending in
        # year 10000): shown as unknown rather than failing the whole list.
        return None


def notification_json(row, attempts=(), full: bool = False) -> dict:
    events = json.loads(row["events"])
    out = {
        "id": row["id"],
        "tenant": row["tenant_id"],
        "kind": row["kind"],
        "status": row["status"],
        "reason": row["reason"],
        "channel": row["channel"],
        "route": row["route"],
        "event_id": row["event_id"],
        "event_type": row["event_type"],
        "event_ids": [e.get("id") for e in events],
        "event_count": row["event_count"],
        "digest_id": row["digest_id"],
        "severity": row["severity"],
        "subject": row["subject"],
        "attempt_count": row["attempts"],
        "next_attempt_at": _time(row["next_attempt_at"]) if row["status"] == "pending" else None,
        "last_error": row["last_error"],
        "created_at": _time(row["created_at"]),
        "sent_at": _time(row["sent_at"]),
        "attempts": [
            {
                "attempt": a["attempt"],
                "at": _time(a["at"]),
                "outcome": a["outcome"],
                "detail": a["detail"],
                "duration_ms": a["duration_ms"],
            }
            for a in attempts
        ],
    }
    if full:
        out.update(body=row["body"], html=row["html"], events=events)
    return out


async def list_notifications(request):
    daemon = daemon_of(request)
    limit, cursor = page_params(request)
    status = query_choice(request, "status", STATUSES)
    before = int_cursor(cursor)
    rows = await store.history(
        daemon.db,
        tenant=tenant_scope(request),
        channel=request.query.get("channel"),
        status=status,
        event=request.query.get("event"),
        route=request.query.get("route"),
        kind=request.query.get("kind"),
        since=iso_time(request.query.get("since") or None, "since"),
        until=iso_time(request.query.get("until") or None, "until"),
        before_seq=before,
        limit=limit + 1,
    )
    attempts = await store.attempts_of(daemon.db, [r["id"] for r in rows[:limit]])
    items = [dict(notification_json(r, attempts.get(r["id"], [])), _seq=r["seq"]) for r in rows]
    result = page(items, limit, cursor_of=lambda item: item["_seq"])
    for item in result["data"]:
        item.pop("_seq")
    return json_response(result)


async def get_notification(request):
    daemon = daemon_of(request)
    row = await store.get(daemon.db, request.match_info["id"], tenant_scope(request))
    if row is None:
        raise ApiError(404, "not_found", f"no notification {request.match_info['id']}")
    attempts = await store.attempts_of(daemon.db, [row["id"]])
    return json_response(notification_json(row, attempts.get(row["id"], []), full=True))


def _message_body(subject: str | None, text: str) -> Obj:
    """The body of an operator send; ``subject`` None: the caller must give one."""
    return Obj(
        {
            "channel": Str(required=True, doc="a configured channel's name (GET /v1/notifications/channels)"),
            "subject": Str(required=True) if subject is None else Str(default=subject),
            "body": Str(default=text),
            "severity": Enum(_SEVERITIES, default="info"),
            "wait": Bool(default=True, doc="wait for the first attempt (false: answer 202 at once)"),
        }
    )


TEST_BODY = _message_body(
    "tierd test notification", "This is a test message from tierd. If you can read it, the channel works."
)
SEND_BODY = _message_body(None, "")


async def _send_now(request, kind: str):
    """Insert a durable row for an operator send and attempt it right away."""
    daemon = daemon_of(request)
    service = NotificationsService.of(daemon)
    body = body_of(request)
    channel = body["channel"]
    channels = service.current.channels
    if channel not in channels:
        raise ApiError(
            404,
            "unknown_channel",
            f"no channel {channel!r} (configured: {', '.join(sorted(channels)) or 'none'})",
        )
    subject, text, severity, wait = body["subject"], body["body"], body["severity"], body["wait"]
    now = daemon.clock.time()
    # Sent inline: the row is due only after a lease, so the dispatcher does not
    # send it too; if we crash mid-send, the dispatcher retries it after the lease.
    due = now + INLINE_LEASE if wait else now
    row = {
        "id": new_id(store.ID_PREFIX),
        "tenant_id": "",
        "kind": kind,
        "channel": channel,
        "status": "pending",
        "subject": subject,
        "body": text,
        "severity": severity,
        "next_attempt_at": due,
        "created_at": now,
    }
    if wait and service.dispatcher.claims:
        # Several nodes: claimed by this one, so that if it dies mid-send another
        # takes it over within seconds rather than after the lease.
        row.update(claimed_by=service.dispatcher.node, claimed_at=now)
    async with daemon.db.transaction() as tx:
        await store.insert_notification(tx, row)
    if wait:
        await service.dispatcher.send_inline(await store.get(daemon.db, row["id"]))
    else:
        service.dispatcher.wake()
    stored = await store.get(daemon.db, row["id"])
    attempts = await store.attempts_of(daemon.db, [row["id"]])
    return json_response(notification_json(stored, attempts.get(row["id"], []), full=True), status=200 if wait else 202)


async def test_channel(request):
    return await _send_now(request, "test")


async def send_message(request):
    return await _send_now(request, "manual")


async def list_channels(request):
    service = NotificationsService.of(daemon_of(request))
    return json_response(
        {"data": [{"name": name, "type": ch.type_name} for name, ch in sorted(service.compiled.channels.items())]}
    )


# --- silences -------------------------------------------------------------------------


def silence_json(row) -> dict:
    return {
        "id": row["id"],
        "tenant": row["tenant_id"],
        "matchers": json.loads(row["matchers"]),
        "starts_at": _time(row["starts_at"]),
        "ends_at": _time(row["ends_at"]),
        "comment": row["comment"],
        "created_by": row["created_by"],
        "created_at": _time(row["created_at"]),
    }


SILENCE_BODY = Obj(
    {
        "matchers": SILENCE_MATCHERS_SCHEMA,
        "starts_at": Instant(default=None, doc="default: now"),
        "ends_at": Instant(required=True),
        "comment": Str(max_len=MAX_COMMENT, default=""),
    }
)


def _silence_times(request, body: dict) -> list[SchemaError]:
    """The body_check of a silence: it must end in the future (the daemon's clock) and after it starts."""
    if body["ends_at"] is None:
        return []
    now = daemon_of(request).clock.time()
    if body["ends_at"] <= max(body["starts_at"] or now, now):
        return [SchemaError(("ends_at",), "must be in the future and after starts_at")]
    return []


async def create_silence(request):
    daemon = daemon_of(request)
    body = body_of(request)
    now = daemon.clock.time()
    starts = now if body["starts_at"] is None else body["starts_at"]
    ends = body["ends_at"]
    row = {
        "id": new_id("sil_"),
        "tenant_id": tenant_scope(request),
        "matchers": {k: v for k, v in body["matchers"].items() if v not in (None, {}, [])},
        "starts_at": starts,
        "ends_at": ends,
        "comment": body["comment"],
        "created_by": actor_of(request),
        "created_at": now,
    }
    await store.insert_silence(daemon.db, row)
    return json_response(silence_json(await store.get_silence(daemon.db, row["id"])), status=201)


async def list_silences(request):
    daemon = daemon_of(request)
    show_all = query_choice(request, "all", ("1", "true", "0", "false")) in ("1", "true")
    rows = await store.silences(
        daemon.db, tenant=tenant_scope(request), active_at=None if show_all else daemon.clock.time()
    )
    return json_response({"data": [silence_json(r) for r in rows]})


async def delete_silence(request):
    daemon = daemon_of(request)
    if not await store.delete_silence(daemon.db, request.match_info["id"], tenant_scope(request)):
        raise ApiError(404, "not_found", f"no silence {request.match_info['id']}")
    return json_response({"deleted": request.match_info["id"]})


def routes() -> list[Route]:
    tag = "notifications"
    # Static paths before /v1/notifications/{id}: aiohttp matches in order.
    return [
        Route(
            "GET",
            "/v1/notifications",
            list_notifications,
            auth="tenant",
            tag=tag,
            summary="Notification history (newest first) with every attempt",
            params=PAGED
            | {
                "channel": "channel name",
                "status": "|".join(STATUSES),
                "event": "event id",
                "route": "route name",
                "kind": "event|digest|test|manual|message (sent by a plugin, e.g. a report schedule)",
                "since": "ISO-8601",
                "until": "ISO-8601",
            },
        ),
        Route(
            "POST",
            "/v1/notifications/test",
            test_channel,
            auth="admin",
            tag=tag,
            summary="Send a test message to a channel now and answer with the result",
            body=TEST_BODY,
            statuses=(200, 202),
        ),
        Route(
            "POST",
            "/v1/notifications/send",
            send_message,
            auth="admin",
            tag=tag,
            summary="Send a message to a channel (durably; waits for the first attempt unless wait=false)",
            body=SEND_BODY,
            statuses=(200, 202),
        ),
        Route(
            "GET",
            "/v1/notifications/channels",
            list_channels,
            auth="admin",
            tag=tag,
            summary="Configured channels and their types",
        ),
        Route(
            "GET",
            "/v1/notifications/silences",
            list_silences,
            auth="tenant",
            tag=tag,
            summary="Silences not yet ended (?all=1: also ended ones)",
            params={"all": "1|true: also ended silences"},
        ),
        Route(
            "POST",
            "/v1/notifications/silences",
            create_silence,
            auth="tenant",
            tag=tag,
            summary="Mute notifications matching matchers until ends_at",
            statuses=(201,),
            body=SILENCE_BODY,
            body_check=_silence_times,
        ),
        Route(
            "DELETE",
            "/v1/notifications/silences/{id}",
            delete_silence,
            auth="tenant",
            tag=tag,
            summary="Delete a silence",
        ),
        Route(
            "GET",
            "/v1/notifications/{id}",
            get_notification,
            auth="tenant",
            tag=tag,
            summary="One notification with its body, events and attempts",
        ),
    ]
