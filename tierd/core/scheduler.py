"""Timers. One APScheduler AsyncIOScheduler, memory job store only.

A job only wakes code up; the database says what work there is. Jobs are
rebuilt from the configuration at every start and reload, with stable ids.
"""

from __future__ import annotations

import dataclasses
import datetime
import logging
from collections.abc import Awaitable, Callable

from apscheduler.events import EVENT_JOB_ERROR, EVENT_JOB_MISSED, JobExecutionEvent
from apscheduler.schedulers.asyncio import AsyncIOScheduler
from apscheduler.triggers.base import BaseTrigger
from apscheduler.triggers.cron import CronTrigger
from apscheduler.triggers.interval import IntervalTrigger

log = logging.getLogger("tierd.scheduler")


@dataclasses.dataclass
class Job:
    """An interval (seconds) or cron (5 fields) timer calling an async function."""

    id: str
    func: Callable[[], Awaitable[None]]
    interval: float | None = None
    cron: str | None = None
    timezone: str = "UTC"
    #: ``cluster``: where several nodes share a PostgreSQL database, one of them
    #: (the one holding the timers' lock) runs it: a retention, a report
    #: schedule fires once, not once per node. ``node``: every node runs it
    #: (it wakes this process's own work, or reads this node's metrics).
    scope: str = "cluster"

    def trigger(self) -> BaseTrigger:
        if self.cron:
            return CronTrigger.from_crontab(self.cron, timezone=self.timezone)
        if self.interval:
            return IntervalTrigger(seconds=self.interval)
        raise ValueError(f"job {self.id!r} needs interval or cron")


def make_scheduler() -> AsyncIOScheduler:
    # The default misfire grace of 1 s silently drops late runs on a busy
    # loop; coalescing keeps a long-missed job from running many times.
    scheduler = AsyncIOScheduler(
        timezone="UTC",
        job_defaults={"misfire_grace_time": 300, "coalesce": True, "max_instances": 1},
    )

    def listener(event: JobExecutionEvent) -> None:
        if event.code == EVENT_JOB_MISSED:
            log.warning("scheduled job %s missed its run at %s", event.job_id, event.scheduled_run_time)
        elif event.exception is not None:
            log.error("scheduled job %s failed: %r", event.job_id, event.exception)

    scheduler.add_listener(listener, EVENT_JOB_MISSED | EVENT_JOB_ERROR)
    return scheduler


def apply_jobs(scheduler: AsyncIOScheduler, jobs: list[Job]) -> None:
    """Make the scheduler's jobs exactly ``jobs`` (add, replace, remove)."""
    wanted = {job.id for job in jobs}
    for existing in scheduler.get_jobs():
        if existing.id not in wanted:
            existing.remove()
    for job in jobs:
        scheduler.add_job(job.func, job.trigger(), id=job.id, name=job.id, replace_existing=True)


def describe_jobs(scheduler: AsyncIOScheduler) -> list[dict]:
    """Each job: its id, when it runs (its trigger) and its next run (unix seconds)."""
    return [
        {
            "id": job.id,
            "trigger": str(job.trigger),
            "next_run_at": job.next_run_time.timestamp() if job.next_run_time else None,
        }
        for job in sorted(scheduler.get_jobs(), key=lambda j: j.id)
    ]


def run_now(scheduler: AsyncIOScheduler, job_id: str) -> bool:
    """Make a job's next run now (its schedule goes on after); False if there is none.

    For an operator who lowered a retention, or wants a schedule's work
    without waiting for its hour.
    """
    job = scheduler.get_job(job_id)
    if job is None:
        return False
    job.modify(next_run_time=datetime.datetime.now(datetime.UTC))
    scheduler.wakeup()
    return True
