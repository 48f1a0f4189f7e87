"""Webhook rows as the API shows them (times as ISO-8601, JSON decoded).

Keys starting with ``_`` are internal (the owner, the secrets, the sequence
number) and stripped by the API before it answers.
"""

from __future__ import annotations

import json

from tierd.core.clock import iso, iso_or_none

from .endpoints import usable_rate_limit
from .signing import signing_of


def endpoint_of(row) -> dict:
    return {
        "id": row["id"],
        "url": row["url"],
        "description": row["description"],
        "event_types": _stored_json(row["event_types"], []),
        "headers": _stored_json(row["headers"], {}),
        "metadata": _stored_json(row["metadata"], {}),
        # {"body": TEMPLATE, "headers": {NAME: TEMPLATE}} or None (transform.py).
        "transformation": _stored_json(row["transformation"], {}) or None,
        "rate_limit": _shown_rate_limit(row["rate_limit"]),
        "enabled": bool(row["enabled"]),
        "signing": signing_of(row["secret"]),
        "disabled_reason": row["disabled_reason"],
        "disabled_at": iso_or_none(row["disabled_at"]),
        # Start of the current run of failed attempts (None after a success);
        # the endpoint is disabled once it is older than webhooks.disable_after.
        "failing_since": iso_or_none(row["failing_since"]),
        # "fifo": one delivery in flight at a time, in event order; blocked_since is
        # when its head delivery started failing (None while it flows), blocked_by
        # that delivery's id (filled by Store.with_heads).
        "ordering": row["ordering"],
        "blocked_since": iso_or_none(row["blocked_since"]),
        "blocked_by": None,
        "created_at": iso(row["created_at"]),
        "updated_at": iso(row["updated_at"]),
        # The tenant's customer it belongs to (a portal link shows it), None: the tenant's own.
        "owner": row["owner"],
        # Internal (stripped by the API): owner and secrets.
        "_tenant_id": row["tenant_id"],
        "_secret": row["secret"],
        "_previous_secret": row["previous_secret"],
        "_previous_secret_until": row["previous_secret_until"],
    }


def delivery_of(row) -> dict:
    return {
        "id": row["id"],
        "endpoint_id": row["endpoint_id"],
        "event_id": row["event_id"],
        "event_type": row["event_type"],
        "status": row["status"],
        "attempts": row["attempts"],
        "created_at": iso_or_none(row["created_at"]),
        "next_attempt_at": iso_or_none(row["due_at"]) if row["status"] == "pending" else None,
        "last_attempt_at": iso_or_none(row["last_attempt_at"]),
        "last_status_code": row["last_status_code"],
        "last_error": row["last_error"],
        "finished_at": iso_or_none(row["finished_at"]),
        "payload": json.loads(row["payload"]),
        "_seq": row["seq"],
        "_created_at": row["created_at"],
    }


def attempt_of(row) -> dict:
    return {
        "attempted_at": iso_or_none(row["attempted_at"]),
        "outcome": row["outcome"],
        "status_code": row["status_code"],
        "latency_ms": row["latency_ms"],
        "error": row["error"],
        "response_body": row["response_body"],
    }


def _stored_json(text, default):
    """A JSON column, or ``default`` for a row the API never wrote (one bad row must not fail a list)."""
    try:
        value = json.loads(text)
    except (TypeError, ValueError):
        return default
    return value if isinstance(value, type(default)) else default


def _shown_rate_limit(value) -> float | None:
    """The rate the dispatcher applies (a row it cannot use shows none: the log says why)."""
    try:
        return usable_rate_limit(value)
    except ValueError:
        return None
