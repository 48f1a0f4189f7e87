"""Time, in one place, so tests can control it instead of sleeping."""

from __future__ import annotations

import datetime as dt
import time


class Clock:
    """Wall-clock time. ``now()`` is an aware UTC datetime."""

    def time(self) -> float:
        return time.time()

    def now(self) -> dt.datetime:
        return dt.datetime.fromtimestamp(self.time(), dt.UTC)


class FakeClock(Clock):
    """A clock that only moves when told to (for tests)."""

    def __init__(self, start: float = 1_800_000_000.0) -> None:
        self._t = start

    def time(self) -> float:
        return self._t

    def advance(self, seconds: float) -> None:
        self._t += seconds


def iso(ts: float) -> str:
    """Unix seconds -> ISO-8601 UTC with a Z, the format of every API time."""
    return dt.datetime.fromtimestamp(ts, dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def iso_or_none(ts: float | None) -> str | None:
    """:func:`iso` of an instant that may not have happened yet (a run not finished): None stays None."""
    return None if ts is None else iso(ts)


def parse_iso(text: str) -> float:
    """ISO-8601 (with Z or offset; naive means UTC) -> unix seconds. ValueError if bad."""
    value = dt.datetime.fromisoformat(text.replace("Z", "+00:00").replace("z", "+00:00"))
    if value.tzinfo is None:
        value = value.replace(tzinfo=dt.UTC)
    try:
        # 9999-12-31T23:59:59-14:00 is in year 10000 in UTC: iso() could never show it.
        return value.astimezone(dt.UTC).timestamp()
    except OverflowError:
        raise ValueError(f"{text!r} is outside the years 1 to 9999 in UTC") from None
