"""The running reports of one daemon: the loaded reports, the runner, the schedules.

Made by ``tierd_services`` and kept in core's service slot; routes, jobs and the
CLI's requests reach it with ``ReportsService.of(daemon)``.
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import TYPE_CHECKING, Any

from tierd.core.ids import new_id
from tierd.core.service import PluginService

from . import store
from .config import files_directory
from .runs import MAX_ATTEMPTS, Runner

if TYPE_CHECKING:
    from tierd.core.daemon import Daemon

log = logging.getLogger("tierd.reports")


class ParamsRefused(ValueError):
    """A run's parameters were refused; ``param`` names the one at fault (or None)."""

    def __init__(self, report: str, param: str | None, message: str) -> None:
        super().__init__(message)
        self.report = report
        self.param = param
        self.message = message


def _jsonable(value: Any) -> Any:
    """Parsed parameters as JSON keeps them (dates as ISO text, Decimal as text)."""
    return json.loads(json.dumps(value, default=lambda v: v.isoformat() if hasattr(v, "isoformat") else str(v)))


class ReportsService(PluginService):
    name = "reports"

    def __init__(self, daemon: Daemon) -> None:
        super().__init__(daemon)
        self.section = daemon.config["reports"]
        #: name -> builder Report (shipped by plugins and defined in the configuration).
        self.reports: dict[str, Any] = {}
        self.runner = Runner(self)
        self.task: asyncio.Task | None = None

    def _load(self, section: dict) -> dict[str, Any]:
        from .builder import load_reports

        return dict(load_reports(self.daemon.registries, section.get("definitions") or {}))

    async def start(self) -> None:
        self.reports = self._load(self.section)
        files_directory(self.daemon.config).mkdir(parents=True, exist_ok=True, mode=0o700)
        retried, failed = await store.recover(self.daemon.db, MAX_ATTEMPTS, self.daemon.clock.time())
        if retried or failed:
            log.warning(
                "reports: %d run(s) interrupted by a stop of the daemon made again, %d failed (interrupted twice)",
                retried,
                failed,
            )
        self._check_channels()
        for name in self.section["schedules"]:
            await self.make_due_run(name)
        self.task = self.daemon.spawn(self.runner.run(self.daemon.stopping), name="reports:runner")
        log.info("reports: %d report(s), %d schedule(s)", len(self.reports), len(self.section["schedules"]))

    async def reload(self, config: dict) -> None:
        self.reports = self._load(config["reports"])
        self.section = config["reports"]
        for name in self.section["schedules"]:
            await store.schedule_known_since(self.daemon.db, name, self.daemon.clock.time())
        self._check_channels()
        self.runner.wake()

    def _check_channels(self) -> None:
        """Warn about schedules sending to channels that notifications does not have
        (the configuration check sees only this section; such a run fails saying so)."""
        notifications = self.daemon.services.get("notifications")
        compiled = getattr(notifications, "compiled", None)
        channels = set(getattr(compiled, "channels", None) or {})
        for name, schedule in self.section["schedules"].items():
            missing = [c for c in schedule["to"] if c not in channels]
            if missing:
                log.warning(
                    "reports: schedule %s sends to %s, which notifications.channels does not define%s",
                    name,
                    ", ".join(missing),
                    "" if notifications is not None else " (the notifications plugin is not running)",
                )

    async def stop(self) -> None:
        await self.runner.stop(float(self.daemon.config["server"].get("shutdown_grace", 10)))
        if self.task is not None and not self.task.done():
            await asyncio.wait([self.task], timeout=5)

    # --- runs ------------------------------------------------------------------------------

    def parse(self, name: str, raw: dict, timezone: str = "UTC", today: Any = None) -> dict:
        """A report's parameters checked and completed (defaults), as stored in the run."""
        report = self.reports[name]
        try:
            parsed = report.parse_params(raw or {}, timezone=timezone, today=today)
        except Exception as exc:
            param = getattr(exc, "param", None)
            message = getattr(exc, "message", None) or str(exc)
            if type(exc).__name__ != "ParamError":
                log.debug("report %s: parameters refused", name, exc_info=True)
            raise ParamsRefused(name, param, message) from None
        return dict(_jsonable(parsed))

    async def create_run(
        self,
        tenant: str | None,
        reports: dict[str, dict],
        format_name: str,
        trigger: str,
        *,
        actor: str = "",
        schedule: str | None = None,
        deliver: dict | None = None,
        dedup_key: str | None = None,
        due_at: float | None = None,
        timezone: str = "UTC",
    ) -> tuple[str, bool]:
        """A pending run of ``reports`` (name -> parsed parameters); (its id, whether new)."""
        run_id = new_id(store.ID_PREFIX)
        inserted = await store.insert_run(
            self.daemon.db,
            {
                "id": run_id,
                "tenant_id": tenant or "",
                "reports": list(reports),
                "params": reports,
                "format": format_name,
                "timezone": timezone,
                "trigger": trigger,
                "schedule": schedule,
                "deliver": deliver,
                "dedup_key": dedup_key,
                "due_at": due_at,
                "actor": actor,
                "created_at": self.daemon.clock.time(),
            },
        )
        if inserted:
            self.runner.wake()
        return run_id, inserted

    async def purge(self) -> None:
        """Delete runs finished before ``reports.retention`` and their files."""
        cutoff = self.daemon.clock.time() - float(self.section["retention"])
        total = 0
        while True:
            rows = await store.expired(self.daemon.db, cutoff)
            if not rows:
                break
            paths = [r["file_path"] for r in rows if r["file_path"]]
            await asyncio.to_thread(_unlink_all, paths)
            total += await store.delete_runs(self.daemon.db, [r["id"] for r in rows])
            await asyncio.sleep(0)
        if total:
            log.info("reports: deleted %d run(s) past retention with their files", total)

    # --- schedules -----------------------------------------------------------------------------

    async def make_due_run(self, name: str, now: float | None = None) -> str | None:
        """The run of schedule ``name`` due most recently (within its grace, and not
        before the schedule was known), made once however often this is called;
        its id, or None if nothing is due."""
        from .schedules import latest_due

        schedule = self.section["schedules"].get(name)
        if schedule is None:
            return None
        now = self.daemon.clock.time() if now is None else now
        known = await store.schedule_known_since(self.daemon.db, name, now)
        due = latest_due(schedule["cron"], schedule["timezone"], max(known, now - schedule["grace"]), now)
        if due is None:
            return None
        return await self.schedule_run(name, due_at=due, trigger="schedule", dedup_key=f"schedule:{name}:{due:.0f}")

    async def schedule_run(
        self, name: str, *, due_at: float, trigger: str, dedup_key: str | None = None, actor: str = "scheduler"
    ) -> str | None:
        """Make a run of schedule ``name`` as of ``due_at``; its id (None if it was made
        before). Parameters the report refuses are kept as given: the run fails saying why."""
        from .schedules import schedule_params

        schedule = self.section["schedules"][name]
        reports = {}
        for report, raw, today in schedule_params(schedule, due_at):
            try:
                reports[report] = self.parse(report, raw, schedule["timezone"], today)
            except (ParamsRefused, KeyError):
                reports[report] = raw  # kept as given: the run fails saying what is wrong
        run_id, inserted = await self.create_run(
            schedule["tenant"],
            reports,
            schedule["format"],
            trigger,
            actor=actor,
            schedule=name,
            deliver={
                "to": schedule["to"],
                "directory": schedule["directory"],
                "only_if_rows": schedule["only_if_rows"],
                "timezone": schedule["timezone"],
            },
            dedup_key=dedup_key,
            due_at=due_at,
            timezone=schedule["timezone"],
        )
        return run_id if inserted else None

    def schedule_job(self, name: str):
        async def job() -> None:
            try:
                await self.make_due_run(name)
            except Exception:  # logged here: the scheduler only knows the job failed
                log.exception("reports: the run of schedule %s could not be made", name)

        return job


def _unlink_all(paths: list[str]) -> None:
    import os

    for path in paths:
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass
        except OSError as exc:
            log.warning("reports: cannot delete %s: %s", path, exc)
