"""Schedules: when a run is due, and with which parameters.

Each ``reports.schedules.NAME`` is a cron timer (``reports.schedule.NAME``) that
only makes the run's row; the runner makes the run. The row is keyed by the
schedule and the time it was due, so a timer that fires twice makes one run, and
at start each schedule's latest due time within its ``grace`` is made too (once)
if the daemon was down then: a run is never lost, and never made twice.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator

from apscheduler.triggers.cron import CronTrigger

from .config import schedule_reports
from .periods import apply_period, local_day

#: The most due times looked at when catching up (a cron every minute over a long grace).
MAX_STEPS = 100_000


def latest_due(cron: str, timezone: str, after: float, now: float) -> float | None:
    """The latest time ``cron`` (in ``timezone``) fired after ``after`` and at or
    before ``now`` (unix seconds), or None."""
    trigger = CronTrigger.from_crontab(cron, timezone=timezone)
    start = dt.datetime.fromtimestamp(after, dt.UTC) + dt.timedelta(microseconds=1)
    end = dt.datetime.fromtimestamp(now, dt.UTC)
    latest = None
    fire = trigger.get_next_fire_time(None, start)
    for _ in range(MAX_STEPS):
        if fire is None or fire > end:
            break
        latest = fire
        fire = trigger.get_next_fire_time(fire, fire + dt.timedelta(seconds=1))
    return None if latest is None else latest.timestamp()


def next_due(cron: str, timezone: str, now: float) -> float | None:
    """When ``cron`` next fires after ``now``."""
    trigger = CronTrigger.from_crontab(cron, timezone=timezone)
    fire = trigger.get_next_fire_time(None, dt.datetime.fromtimestamp(now, dt.UTC) + dt.timedelta(seconds=1))
    return None if fire is None else fire.timestamp()


def schedule_params(schedule: dict, due_at: float) -> Iterator[tuple[str, dict, dt.date]]:
    """(report, its parameters, the due day) for each report of a schedule: the
    schedule's ``params``, then the report's own, relative periods resolved on the
    calendar of the schedule's time zone at ``due_at``."""
    today = local_day(due_at, schedule["timezone"])
    for report, own in schedule_reports(schedule).items():
        params = {**(schedule.get("params") or {}), **own}
        if "period" in own:  # the report's own period wins over the schedule's dates
            params.pop("from", None)
            params.pop("to", None)
        yield report, apply_period(params), today
