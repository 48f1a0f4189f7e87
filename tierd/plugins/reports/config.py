"""The ``reports`` config section: definitions, schedules, where files go, limits.

``definitions`` is the builder's (``definitions.py``); this file adds the
schedules and the runner's settings, and checks what only the whole section
knows: a schedule's reports exist (here or shipped by a plugin), its format is
an installed exporter that takes that many reports, its ``to`` channels'
names are well formed, its period is one that :mod:`.periods` knows.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from tierd.core.schema import Any as AnyValue
from tierd.core.schema import (
    Bool,
    Cron,
    Duration,
    Int,
    List,
    Map,
    Obj,
    OneOf,
    Str,
    TimeZone,
    did_you_mean,
)

from .periods import PERIODS

#: ``{tenant}``, ``{name}``, ... of a schedule's ``directory`` template.
PATH_FIELDS = ("tenant", "name", "schedule", "date", "time", "run", "ext")

SCHEDULE = Obj(
    {
        "reports": OneOf(
            List(Str(min_len=1), min_len=1, unique=True),
            Map(Map(AnyValue(), nullable=True)),
            required=True,
            doc="Report names, or name -> its own parameters (several: one file if the format takes many)",
        ),
        "params": Map(AnyValue(), default={}, doc="Parameters of every report; period: last_week and the like"),
        "tenant": Str(default=None, doc="Whose rows; absent: across tenants"),
        "cron": Cron(required=True, doc="When (5 fields), in timezone"),
        "timezone": TimeZone(default="UTC", doc="Of cron and of relative periods"),
        "format": Str(default="xlsx", doc="An exporter's format name (tierd reports formats)"),
        "to": List(Str(min_len=1), default=[], unique=True, doc="Notification channels to send it to"),
        "directory": Str(
            default="", doc="Path template to copy the file to, e.g. /srv/reports/{tenant}/{name}-{date}.xlsx"
        ),
        "only_if_rows": Bool(default=False, doc="Skip (send nothing) when the reports have no rows"),
        "grace": Duration(default="6h", doc="A run due while the daemon was down is made at start if this recent"),
    }
)


def schedule_reports(schedule: dict) -> dict[str, dict]:
    """A schedule's reports as name -> its own parameters."""
    reports = schedule["reports"]
    if isinstance(reports, list):
        return {name: {} for name in reports}
    return {name: dict(params or {}) for name, params in reports.items()}


def _definitions_field(registries: Any):
    try:
        from .definitions import definitions_field
    except ImportError:  # pragma: no cover - the builder's half of the plugin is missing
        return Map(Obj({}, extra=True), default={}, doc="Reports written in YAML (see the builder)")
    return definitions_field(registries)


def make_schema(registries: Any) -> Obj:
    def check(value: dict) -> list:
        errors: list = []
        exporters = getattr(registries, "report_exporters", {}) or {}
        shipped = set(getattr(registries, "reports", {}) or {})
        names = shipped | set(value.get("definitions") or {})
        for name, schedule in (value.get("schedules") or {}).items():
            path = ("schedules", name)
            reports = schedule_reports(schedule)
            if not reports:
                errors.append((path + ("reports",), "names no report"))
            for report in reports:
                if report not in names:
                    errors.append((path + ("reports",), f"unknown report {report!r}{did_you_mean(report, names)}"))
            exporter = exporters.get(schedule["format"])
            if exporter is None:
                known = ", ".join(sorted(exporters)) or "none"
                errors.append((path + ("format",), f"unknown format {schedule['format']!r} (installed: {known})"))
            elif len(reports) > 1 and not exporter.many:
                many = ", ".join(sorted(f for f, e in exporters.items() if e.many)) or "none"
                errors.append(
                    (path + ("reports",), f"{schedule['format']} takes one report per file (several: {many})")
                )
            for where, params in [(("params",), schedule["params"])] + [
                (("reports", r, "period"), p) for r, p in reports.items()
            ]:
                period = params.get("period")
                if period is not None and period not in PERIODS:
                    sub = where if where[-1] == "period" else where + ("period",)
                    errors.append((path + sub, f"unknown period {period!r}{did_you_mean(period, PERIODS)}"))
            template = schedule["directory"]
            if template:
                if not template.startswith("/"):
                    errors.append((path + ("directory",), "must be an absolute path template"))
                try:
                    template.format(**{f: "x" for f in PATH_FIELDS})
                except (KeyError, IndexError, ValueError) as exc:
                    errors.append((path + ("directory",), f"bad template ({exc}); fields: {', '.join(PATH_FIELDS)}"))
            if not schedule["to"] and not template:
                errors.append((path, "says nowhere to send the report: give to (channels) and/or directory"))
        return errors

    return Obj(
        {
            "definitions": _definitions_field(registries),
            "schedules": Map(SCHEDULE, default={}, doc="Reports made and sent on a timetable"),
            "directory": Str(default="", doc="Generated files; empty: a reports folder beside the database"),
            "retention": Duration(default="30d", doc="Runs and their files older than this are deleted"),
            "max_rows": Int(default=1_000_000, min=1, max=100_000_000, doc="A report with more rows fails"),
            "timeout": Duration(default="300s", min="1s", doc="A run taking longer is stopped and fails"),
            "concurrency": Int(default=1, min=1, max=16, doc="Runs made at the same time"),
        },
        check=check,
    )


def files_directory(config: dict) -> Path:
    """Where generated files go: ``reports.directory``, else ``reports/`` beside the database."""
    directory = config["reports"]["directory"]
    if directory:
        return Path(os.path.expanduser(directory))
    db = str(config["storage"]["path"])
    base = Path(db).resolve().parent if db != ":memory:" else Path.cwd()
    return base / "reports"
