"""Grouping: many similar events, one digest message.

A grouped route (non-empty ``group_by``) does not notify per event; each
(route, channel, tenant, group_by values) has a durable group row, and each
event joins it as a ``grouped`` notification row. The timers, as in
Alertmanager:

* ``group_wait``: a new group waits this long for more events before its
  first digest, so a burst becomes one message;
* ``group_interval``: after a digest, events joining the group wait until
  this long after the previous digest;
* ``repeat_interval``: a group that stays quiet this long after its last
  digest is closed, so the next event opens a new group (and waits only
  ``group_wait``). Events are facts, not ongoing alerts: a quiet group sends
  nothing again.

The tenant is always part of the key, so a digest never mixes tenants (a
tenant may read its digests through the API).

This module decides *when*; ``store.py`` keeps the rows and ``dispatch.py``
flushes due groups. Everything takes ``now`` so tests drive a fake clock.
"""

from __future__ import annotations

import dataclasses
import json

from .routing import _MISSING, lookup


def group_labels(event: dict, group_by: list[str]) -> dict[str, str]:
    """The values of ``group_by`` for ``event``: ``type``, ``tenant`` or a data path."""
    labels = {}
    for key in group_by:
        if key == "type":
            value = event.get("type", "")
        elif key == "tenant":
            value = event.get("tenant", "")
        else:
            path = key[5:] if key.startswith("data.") else key
            value = lookup(event.get("data") or {}, path)
            value = "" if value is _MISSING else value
        labels[key] = value if isinstance(value, str) else json.dumps(value, sort_keys=True, default=str)
    return labels


def group_key(route: str, channel: str, tenant: str, labels: dict) -> str:
    """Stable, readable identity of a group (UNIQUE in the groups table)."""
    return f"{route}|{channel}|{tenant}|{json.dumps(labels, sort_keys=True, separators=(',', ':'))}"


@dataclasses.dataclass
class GroupTimes:
    """The timer columns of a group row."""

    next_flush_at: float | None = None
    last_flush_at: float | None = None
    expires_at: float | None = None

    def is_open(self, now: float) -> bool:
        """True while events join this group's current life; False: start it afresh."""
        if self.next_flush_at is not None:
            return True  # a digest is scheduled: join it
        return self.last_flush_at is not None and (self.expires_at is None or now < self.expires_at)


def on_event(times: GroupTimes | None, now: float, settings: dict) -> GroupTimes:
    """The group's timers after an event joined it at ``now``."""
    if times is None or not times.is_open(now):
        # A new group (or a closed one starting over): wait for the burst.
        return GroupTimes(next_flush_at=now + settings["group_wait"])
    if times.next_flush_at is not None:
        return times  # already scheduled; the event rides along
    return dataclasses.replace(times, next_flush_at=max(now, times.last_flush_at + settings["group_interval"]))


def on_flush(now: float, repeat_interval: float) -> GroupTimes:
    """The group's timers right after a digest was made at ``now``."""
    return GroupTimes(next_flush_at=None, last_flush_at=now, expires_at=now + repeat_interval)
