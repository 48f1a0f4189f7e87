"""Notifications: route events to people through channels (email, Slack,
Teams, ntfy, webhook, log, Apprise, third-party types), with templates,
grouping, throttling, silences, quiet hours and durable retries.

This module only holds the hook implementations; the work is in the files
named for it:

* ``config.py`` - the ``notifications`` section's schema
* ``compiled.py`` - what the section compiles into (routing tree, channels, retry schedule)
* ``service.py`` - the running object (core's service slot): intake consumer, dispatcher, reload
* ``routing.py``, ``templates.py``, ``grouping.py``, ``silences.py`` - the parts of the pipeline
* ``intake.py`` (events to rows) and ``dispatch.py`` (due rows to channels)
* ``migrations.py`` - the tables, per storage backend (SQLite, PostgreSQL)
* ``store.py`` - every SQL statement; ``api.py`` / ``cli.py`` - the interfaces
* ``channels/`` - the built-in channel types
* ``console.py`` - its pages of the web console (history, a message, silences); templates in ``templates/console/``
"""

from __future__ import annotations

from tierd.core.plugins import hookimpl

from .channels import BUILTIN


@hookimpl
def tierd_register_channels(register):
    for channel_type in BUILTIN:
        register(channel_type)


@hookimpl
def tierd_config_schema(registries):
    from .config import make_schema

    return {"notifications": make_schema(registries)}


@hookimpl
def tierd_migrations():
    from .migrations import POSTGRESQL_MIGRATIONS, SQLITE_MIGRATIONS

    return {"notifications": {"sqlite": SQLITE_MIGRATIONS, "postgresql": POSTGRESQL_MIGRATIONS}}


@hookimpl
def tierd_services(daemon):
    from .service import NotificationsService

    return NotificationsService(daemon)


@hookimpl
def tierd_event_consumers(daemon):
    from .service import NotificationsService

    return [NotificationsService.of(daemon).consumer()]


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

    from .service import NotificationsService

    return [Job(id="notifications.retention", func=NotificationsService.of(daemon).purge, interval=3600)]


@hookimpl
def tierd_cli(cli):
    from .cli import notify

    cli.add_command(notify)


@hookimpl
def tierd_register_report_sources(register):
    from .reports import SOURCES

    for source in SOURCES:
        register(source)


@hookimpl
def tierd_register_reports(register):
    from .reports import REPORTS

    for report in REPORTS:
        register(report)
