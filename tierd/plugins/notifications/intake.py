"""From events to notification rows (the ``notifications`` bus consumer).

For each event, every (route, channel) it reaches becomes exactly one row,
written in one transaction per batch before the consumer's cursor moves:

* muted by a silence or a time interval -> ``muted`` (with the reason);
* a grouped route -> ``grouped``, and its group row gets a flush time;
* over the route's throttle -> ``throttled``;
* else -> ``pending``, rendered now, for the dispatcher to send.

``dedup_key = event id | route | channel`` is UNIQUE, so an event delivered
twice by the bus (a crash before the cursor moved) notifies once.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import logging

from . import grouping, store
from .runtime import Runtime
from .silences import Silence, silenced_by
from .templates import context_for, render

log = logging.getLogger("tierd.notifications")


@dataclasses.dataclass
class IntakeResult:
    """What a batch produced (for metrics and to wake the dispatcher)."""

    pending: int = 0
    grouped: int = 0
    muted: dict = dataclasses.field(default_factory=dict)  # channel -> count
    throttled: dict = dataclasses.field(default_factory=dict)


async def active_silences(db, now: float) -> list[Silence]:
    rows = await store.silences(db, active_at=now)
    return [Silence(r["id"], r["tenant_id"], json.loads(r["matchers"]), r["starts_at"], r["ends_at"], r["comment"])
            for r in rows]


async def ingest(db, runtime: Runtime, events: list[dict], now: float) -> IntakeResult:
    """Turn ``events`` (dicts as ``Event.to_json()``) into rows; idempotent."""
    result = IntakeResult()
    matched = [(event, match) for event in events for match in runtime.tree.evaluate(event) if match.channels]
    if not matched:
        return result  # most events reach nobody: no read, no write transaction
    when = dt.datetime.fromtimestamp(now, dt.timezone.utc)
    silences = await active_silences(db, now)
    async with db.transaction() as tx:
        for event, match in matched:
            settings = match.route.settings
            for channel in match.channels:
                await _one(tx, runtime, event, match.id, settings, channel, now, when, silences, result)
    return result


async def _one(tx, runtime, event, route, settings, channel, now, when, silences, result):
    dedup = f"{event['id']}|{route}|{channel}"
    if await tx.fetchone("SELECT 1 FROM notifications WHERE dedup_key=?", (dedup,)):
        return  # seen before: the bus re-delivered this event
    # Rendered for every row, even those not sent: history shows what a muted,
    # throttled or grouped notification said.
    rendered = render(runtime.templates(settings, channel), context_for([event], {}, route, channel))
    row = {
        "subject": rendered.subject, "body": rendered.body, "html": rendered.html,
        "id": store.new_id(), "tenant_id": event.get("tenant", ""), "kind": "event", "dedup_key": dedup,
        "event_id": event["id"], "event_type": event["type"], "route": route, "channel": channel,
        "events": [event], "created_at": now, "severity": runtime.severity(settings, event["type"]),
    }
    reason = runtime.intervals.mute_reason(settings, when)
    if reason is None:
        silence = silenced_by(silences, event, route, channel, now)
        reason = f"silence {silence.id}" if silence else None
    if reason is not None:
        await store.insert_notification(tx, {**row, "status": "muted", "reason": reason})
        result.muted[channel] = result.muted.get(channel, 0) + 1
        return
    if settings["group_by"]:
        labels = grouping.group_labels(event, settings["group_by"])
        key = grouping.group_key(route, channel, row["tenant_id"], labels)
        existing = await store.get_group(tx, key)
        old = None if existing is None else grouping.GroupTimes(
            existing["next_flush_at"], existing["last_flush_at"], existing["expires_at"])
        times = grouping.on_event(old, now, settings)
        group_id = await store.save_group(tx, existing, key, row["tenant_id"], route, channel, labels, times, now)
        await store.insert_notification(tx, {**row, "status": "grouped", "group_id": group_id})
        result.grouped += 1
        return
    if await throttled(tx, settings, route, channel, now):
        await store.insert_notification(tx, {**row, "status": "throttled", "reason": throttle_reason(settings)})
        result.throttled[channel] = result.throttled.get(channel, 0) + 1
        return
    await store.insert_notification(tx, {**row, "status": "pending", "next_attempt_at": now, "reason": rendered.error})
    result.pending += 1


async def throttled(tx, settings: dict, route: str, channel: str, now: float) -> bool:
    """True when (route, channel) already sent ``throttle.max`` within ``throttle.per``."""
    throttle = settings.get("throttle")
    if not throttle:
        return False
    return await store.count_recent(tx, route, channel, now - throttle["per"]) >= throttle["max"]


def throttle_reason(settings: dict) -> str:
    t = settings["throttle"]
    return f"throttle: more than {t['max']} per {t['per']:g}s"
