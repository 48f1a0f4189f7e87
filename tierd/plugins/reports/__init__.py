"""Reports: built-in and YAML-defined reports over the sources each plugin
declares, exported in any registered format, on demand or on a schedule.

This module only holds the hook implementations; the work is in the files
named for it:

* ``config.py`` - the ``reports`` section's schema (``definitions`` from ``definitions.py``)
* ``builder.py`` - reports compiled from definitions; ``core_source.py`` - the ``core.events`` source
* ``exporters/`` - the built-in formats (csv, json, jsonl, xlsx, pdf, html); ``chart.py``
* ``service.py`` - the running object (core's service slot): loaded reports, runner, schedules
* ``runs.py`` - making a run: query off the loop, file, delivery, events;
  ``pgread.py`` - its rows read from PostgreSQL in a worker thread
* ``schedules.py`` and ``periods.py`` - when a schedule's run is due, relative periods
* ``store.py`` - the tables (SQLite's and PostgreSQL's migrations) and every SQL
  statement; ``api.py`` / ``cli.py`` - the interfaces
* ``console.py`` - its pages of the web console (reports, runs, downloads, schedules);
  their templates in ``templates/console/``
"""

from __future__ import annotations

from tierd.core.plugins import hookimpl
from tierd.core.registry import EventType, object_schema

from . import store
from .runs import EVENT_FAILED, EVENT_GENERATED

_STR = {"type": "string"}
_NAMES = {"type": "array", "items": _STR, "description": "the reports of the run"}
_RUN: dict[str, dict] = {
    "run_id": _STR,
    "reports": _NAMES,
    "format": _STR,
    "trigger": {"type": "string", "enum": list(store.TRIGGERS)},
    "schedule": {"type": "string", "nullable": True, "description": "the schedule that made it, if any"},
}

EVENT_TYPES = [
    EventType(
        EVENT_GENERATED,
        "A report run made its file (and, for a schedule, sent it where the schedule says).",
        data_schema=object_schema(
            ["run_id", "reports", "format", "rows", "size", "status"],
            **_RUN,
            rows={"type": "integer", "description": "rows of every report of the file"},
            size={"type": "integer", "description": "bytes"},
            file_name=_STR,
            status={"type": "string", "enum": ["delivered", "skipped"]},
        ),
        subject="Report {{ data.reports | join(', ') }} ready",
        body="Report run {{ data.run_id }} ({{ data.reports | join(', ') }}, {{ data.format }}) "
        "for {{ tenant or 'all tenants' }}: {{ data.rows }} row(s), {{ data.file_name }}.",
    ),
    EventType(
        EVENT_FAILED,
        "A report run failed (too many rows, too long, an exporter or a destination failed).",
        data_schema=object_schema(["run_id", "reports", "format", "error"], **_RUN, error=_STR),
        subject="Report {{ data.reports | join(', ') }} failed",
        body="Report run {{ data.run_id }} ({{ data.reports | join(', ') }}, {{ data.format }}"
        "{% if data.schedule %}, schedule {{ data.schedule }}{% endif %}) failed: {{ data.error }}",
        severity="warning",
        operator_alert=True,
    ),
]


@hookimpl
def tierd_register_event_types(register):
    for event_type in EVENT_TYPES:
        register(event_type)


@hookimpl
def tierd_register_report_sources(register):
    from .core_source import SOURCES

    for source in SOURCES:
        register(source)


@hookimpl
def tierd_register_reports(register):
    # Core's own report (events per tenant, type and day); the other plugins
    # ship theirs next to their data.
    from .core_source import REPORTS

    for report in REPORTS:
        register(report)


@hookimpl
def tierd_register_report_exporters(register):
    from .exporters import BUILTIN

    for exporter in BUILTIN:
        register(exporter)


@hookimpl
def tierd_config_schema(registries):
    from .config import make_schema

    return {"reports": make_schema(registries)}


@hookimpl
def tierd_migrations():
    return {"reports": {"sqlite": store.MIGRATIONS, "postgresql": store.POSTGRESQL_MIGRATIONS}}


@hookimpl
def tierd_services(daemon):
    from .service import ReportsService

    return ReportsService(daemon)


@hookimpl
def tierd_routes(daemon):
    from .api import routes

    return routes()


@hookimpl
def tierd_ui(daemon):
    from .console import section

    return section(daemon)


@hookimpl
def tierd_jobs(daemon):
    from tierd.core.scheduler import Job

    from .service import ReportsService

    service = ReportsService.of(daemon)
    jobs = [Job(id="reports.retention", func=service.purge, interval=3600)]
    for name, schedule in daemon.config["reports"]["schedules"].items():
        jobs.append(
            Job(
                id=f"reports.schedule.{name}",
                func=service.schedule_job(name),
                cron=schedule["cron"],
                timezone=schedule["timezone"],
            )
        )
    return jobs


@hookimpl
def tierd_cli(cli):
    from .cli import reports

    cli.add_command(reports)
