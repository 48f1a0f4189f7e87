"""What mutes a notification: runtime silences and configured time intervals.

A muted notification is still recorded (status ``muted``, with the reason),
so history shows what was not sent and why.

Time intervals (config ``notifications.time_intervals``)::

    time_intervals:
      business-hours:
        - weekdays: ["monday:friday"]   # names, 3-letter names, ranges with : or -
          hours: ["09:00-17:30"]        # HH:MM-HH:MM, end exclusive; 22:00-06:00 wraps midnight
          timezone: Europe/Berlin       # default UTC
      weekend:
        - weekdays: [saturday, sunday]

A route with ``mute_time_intervals: [weekend]`` is muted inside any of them;
one with ``active_time_intervals: [business-hours]`` is muted outside all.

Silences (``POST /v1/notifications/silences``) match like a route's
``match`` (type, tenant, data) plus optional ``channel`` and ``route``, and
hold from ``starts_at`` (default now) until ``ends_at``. A silence created
by a tenant token only ever matches that tenant's events.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import re
import zoneinfo

from tierd.core.schema import Field, List, Obj, OneOf, Reject, Str, TimeZone

from .routing import MATCH_SCHEMA, Matcher, condition_errors

DAYS = ["monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday"]
_HOURS_RE = re.compile(r"(\d{1,2}):(\d{2})\s*-\s*(\d{1,2}):(\d{2})")


def _day(name: str) -> int:
    name = name.strip().lower()
    for i, day in enumerate(DAYS):
        if name == day or (len(name) >= 3 and day.startswith(name)):
            return i
    raise Reject(f"unknown weekday {name!r} (use monday..sunday or mon..sun)")


def parse_weekdays(spec: str) -> set[int]:
    """``monday:friday``, ``mon-fri`` or ``sunday`` -> weekday numbers (Monday 0)."""
    parts = re.split(r"[:\-]", spec)
    if len(parts) == 1:
        return {_day(parts[0])}
    if len(parts) != 2:
        raise Reject(f"invalid weekday range {spec!r} (use e.g. monday:friday)")
    start, end = _day(parts[0]), _day(parts[1])
    days, d = {start}, start
    while d != end:  # a range may wrap: saturday:monday
        d = (d + 1) % 7
        days.add(d)
    return days


def parse_hours(spec: str) -> list[tuple[int, int]]:
    """``09:00-17:30`` -> minute ranges ``[(540, 1050)]``; wrapping ranges split in two."""
    m = _HOURS_RE.fullmatch(spec.strip())
    if not m:
        raise Reject(f"invalid hours {spec!r} (use HH:MM-HH:MM, e.g. 09:00-17:00)")
    h1, m1, h2, m2 = map(int, m.groups())
    start, end = h1 * 60 + m1, h2 * 60 + m2
    if h1 > 23 or m1 > 59 or m2 > 59 or end > 24 * 60:
        raise Reject(f"invalid hours {spec!r}: times run from 00:00 to 24:00")
    if start == end:
        raise Reject(f"invalid hours {spec!r}: an empty range")
    return [(start, end)] if start < end else [(start, 24 * 60), (0, end)]


class _Weekdays(Field):
    type_name = "weekday or weekday range"

    def parse(self, value):
        if not isinstance(value, str):
            raise self.mismatch(value)
        parse_weekdays(value)
        return value


class _Hours(Field):
    type_name = "time range"

    def parse(self, value):
        if not isinstance(value, str):
            raise self.mismatch(value)
        parse_hours(value)
        return value


INTERVAL_SCHEMA = Obj(
    {
        "weekdays": List(_Weekdays(), default=[], doc="Empty: every day"),
        "hours": List(_Hours(), default=[], doc="Empty: all day"),
        "timezone": TimeZone(default="UTC"),
    }
)
TIME_INTERVALS_SCHEMA = OneOf(List(INTERVAL_SCHEMA), INTERVAL_SCHEMA)


@dataclasses.dataclass
class TimeInterval:
    """One ``weekdays`` x ``hours`` window in a time zone."""

    weekdays: set[int]
    minutes: list[tuple[int, int]]
    tz: dt.tzinfo

    @classmethod
    def from_config(cls, spec: dict) -> TimeInterval:
        days: set[int] = set()
        for w in spec.get("weekdays") or []:
            days |= parse_weekdays(w)
        minutes = [r for h in spec.get("hours") or [] for r in parse_hours(h)]
        return cls(days, minutes, zoneinfo.ZoneInfo(spec.get("timezone") or "UTC"))

    def contains(self, when: dt.datetime) -> bool:
        local = when.astimezone(self.tz)
        if self.weekdays and local.weekday() not in self.weekdays:
            return False
        minute = local.hour * 60 + local.minute
        return not self.minutes or any(a <= minute < b for a, b in self.minutes)


class TimeIntervals:
    """The named intervals of the config."""

    def __init__(self, config: dict | None):
        self.named: dict[str, list[TimeInterval]] = {}
        for name, specs in (config or {}).items():
            specs = specs if isinstance(specs, list) else [specs]
            self.named[name] = [TimeInterval.from_config(s) for s in specs]

    def inside(self, name: str, when: dt.datetime) -> bool:
        return any(i.contains(when) for i in self.named.get(name, []))

    def mute_reason(self, settings: dict, when: dt.datetime) -> str | None:
        """Why a route with these settings is muted at ``when``, or ``None``."""
        for name in settings.get("mute_time_intervals") or []:
            if self.inside(name, when):
                return f"mute_time_interval {name}"
        active = settings.get("active_time_intervals") or []
        if active and not any(self.inside(name, when) for name in active):
            return f"outside active_time_intervals {', '.join(active)}"
        return None


# --- silences ------------------------------------------------------------------------

SILENCE_MATCHERS_SCHEMA = Obj(
    {
        **MATCH_SCHEMA.fields,
        "channel": Str(default=None, doc="Only this channel"),
        "route": Str(default=None, doc="Only this route (name or position)"),
    },
    check=lambda v: [(("data",) + sub, msg) for sub, msg in condition_errors(v.get("data") or {})],
)


@dataclasses.dataclass
class Silence:
    id: str
    tenant: str | None  # None: created by the admin for every tenant
    matchers: dict
    starts_at: float
    ends_at: float
    comment: str = ""

    def __post_init__(self):
        self._matcher = Matcher(self.matchers)

    def active(self, now: float) -> bool:
        return self.starts_at <= now < self.ends_at

    def mutes(self, event: dict, route: str, channel: str, now: float) -> bool:
        if not self.active(now):
            return False
        if self.tenant is not None and event.get("tenant", "") != self.tenant:
            return False
        if self.matchers.get("channel") and self.matchers["channel"] != channel:
            return False
        if self.matchers.get("route") and self.matchers["route"] != route:
            return False
        return self._matcher.matches(event)


def silenced_by(silences: list[Silence], event: dict, route: str, channel: str, now: float) -> Silence | None:
    return next((s for s in silences if s.mutes(event, route, channel, now)), None)
