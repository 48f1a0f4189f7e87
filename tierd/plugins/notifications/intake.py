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

from tierd.core.ids import new_id

from . import grouping, store
from .compiled import Compiled
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
    return [
        Silence(r["id"], r["tenant_id"], json.loads(r["matchers"]), r["starts_at"], r["ends_at"], r["comment"])
        for r in rows
    ]


async def ingest(db, compiled: Compiled, events: list[dict], now: float) -> IntakeResult:
    """Turn ``events`` (dicts as ``Event.to_json()``) into rows; idempotent."""
    result = IntakeResult()
    reached = [
        (event, match, channel)
        for event in events
        for match in compiled.tree.evaluate(event)
        for channel in match.channels
    ]
    if not reached:
        return result  # most events reach nobody: no read, no write transaction
    batch = _Batch(compiled, now, await active_silences(db, now), result, db.dialect)
    async with db.transaction() as tx:
        keys = [f"{event['id']}|{match.id}|{channel}" for event, match, channel in reached]
        seen = await store.existing_dedup_keys(tx, keys, db.dialect)
        for (event, match, channel), dedup in zip(reached, keys, strict=True):
            if dedup in seen:
                continue  # seen before: the bus re-delivered this event
            seen.add(dedup)
            await batch.add(tx, event, match.id, match.route.settings, channel, dedup)
    return result


class _Batch:
    """One intake transaction: what it read once (silences, groups, throttle
    counts) is kept for the rest of the batch instead of read per row."""

    def __init__(self, compiled: Compiled, now: float, silences: list[Silence], result: IntakeResult, dialect: str):
        self.compiled, self.now, self.silences, self.result = compiled, now, silences, result
        self.dialect = dialect  # the database's: a transaction does not say
        self.when = dt.datetime.fromtimestamp(now, dt.UTC)
        self.groups: dict[str, tuple[int, grouping.GroupTimes]] = {}  # group key -> (id, timers)
        self.recent: dict[tuple[str, str], int] = {}  # (route, channel) -> rows counting for its throttle

    async def add(self, tx, event: dict, route: str, settings: dict, channel: str, dedup: str) -> None:
        compiled, now, result = self.compiled, self.now, self.result
        # Rendered for every row, even those not sent: history shows what a muted,
        # throttled or grouped notification said.
        rendered = render(compiled.templates(settings, channel), context_for([event], {}, route, channel))
        row = {
            "subject": rendered.subject,
            "body": rendered.body,
            "html": rendered.html,
            "id": new_id(store.ID_PREFIX),
            "tenant_id": event.get("tenant", ""),
            "kind": "event",
            "dedup_key": dedup,
            "event_id": event["id"],
            "event_type": event["type"],
            "route": route,
            "channel": channel,
            "events": [event],
            "created_at": now,
            "severity": compiled.severity(settings, event["type"]),
        }
        reason = compiled.intervals.mute_reason(settings, self.when)
        if reason is None:
            silence = silenced_by(self.silences, event, route, channel, now)
            reason = f"silence {silence.id}" if silence else None
        if reason is not None:
            await store.insert_notification(tx, {**row, "status": "muted", "reason": reason})
            result.muted[channel] = result.muted.get(channel, 0) + 1
            return
        if settings["group_by"]:
            group_id = await self._join_group(tx, event, route, channel, row["tenant_id"], settings)
            await store.insert_notification(tx, {**row, "status": "grouped", "group_id": group_id})
            result.grouped += 1
            return
        if await self._throttled(tx, settings, route, channel):
            await store.insert_notification(tx, {**row, "status": "throttled", "reason": throttle_reason(settings)})
            result.throttled[channel] = result.throttled.get(channel, 0) + 1
            return
        await store.insert_notification(
            tx, {**row, "status": "pending", "next_attempt_at": now, "reason": rendered.error}
        )
        if (route, channel) in self.recent:
            self.recent[route, channel] += 1
        result.pending += 1

    async def _join_group(self, tx, event: dict, route: str, channel: str, tenant: str, settings: dict) -> int:
        """The id of the group ``event`` joins, its timers moved on (written only when they change)."""
        labels = grouping.group_labels(event, settings["group_by"])
        key = grouping.group_key(route, channel, tenant, labels)
        group_id: int | None
        old: grouping.GroupTimes | None
        if key in self.groups:
            group_id, old = self.groups[key]
        else:
            existing = await store.get_group(tx, key, self.dialect)
            group_id, old = (
                (None, None)
                if existing is None
                else (
                    existing["id"],
                    grouping.GroupTimes(existing["next_flush_at"], existing["last_flush_at"], existing["expires_at"]),
                )
            )
        times = grouping.on_event(old, self.now, settings)
        if group_id is None or times != old:  # a new group (old is None too) or new timers
            group_id = await store.save_group(tx, group_id, key, tenant, route, channel, labels, times, self.now)
        self.groups[key] = (group_id, times)
        return group_id

    async def _throttled(self, tx, settings: dict, route: str, channel: str) -> bool:
        """:func:`throttled`, counting the window once per batch and then the rows this batch adds."""
        throttle = settings.get("throttle")
        if not throttle:
            return False
        if (route, channel) not in self.recent:
            await store.lock_throttle(tx, route, channel, self.dialect)
            self.recent[route, channel] = await store.count_recent(tx, route, channel, self.now - throttle["per"])
        return self.recent[route, channel] >= throttle["max"]


async def throttled(tx, settings: dict, route: str, channel: str, now: float, dialect: str = "sqlite") -> bool:
    """True when (route, channel) already sent ``throttle.max`` within ``throttle.per``
    (counted under the throttle's lock on PostgreSQL: see ``store.lock_throttle``)."""
    throttle = settings.get("throttle")
    if not throttle:
        return False
    await store.lock_throttle(tx, route, channel, dialect)
    return await store.count_recent(tx, route, channel, now - throttle["per"]) >= throttle["max"]


def throttle_reason(settings: dict) -> str:
    t = settings["throttle"]
    return f"throttle: more than {t['max']} per {t['per']:g}s"
