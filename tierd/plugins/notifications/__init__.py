"""Notifications: route events to people through channels (email, Slack,
Teams, ntfy, webhook, log, Apprise, third-party types), with templates,
grouping, throttling, silences, quiet hours and durable retries.

This module only holds the hook implementations; the work is in the files
named for it (``routing``, ``templates``, ``grouping``, ``silences``,
``store``, ``intake``, ``dispatch``, ``api``, ``cli``, ``channels/``).
"""

from __future__ import annotations

from tierd.core.plugins import hookimpl

from . import store
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
    return {"notifications": store.MIGRATIONS}


@hookimpl
def tierd_startup(daemon):
    from .service import NotificationService

    NotificationService.start(daemon)


@hookimpl
def tierd_event_consumers(daemon):
    from .service import running_service

    service = running_service(daemon)  # None if startup did not run (nothing to consume for)
    return [service.consumer()] if service is not None else []


@hookimpl
async def tierd_config_reloaded(daemon, config):
    from .service import service_of

    await service_of(daemon).reload(config)


@hookimpl
async def tierd_shutdown(daemon):
    from .service import running_service

    service = running_service(daemon)
    if service is not None:
        await service.stop()


@hookimpl
def tierd_routes(daemon):
    from .api import routes

    return routes()


@hookimpl
def tierd_jobs(daemon):
    from tierd.core.scheduler import Job

    from .service import running_service

    service = running_service(daemon)
    return [Job(id="notifications.retention", func=service.purge, interval=3600)] if service is not None else []


@hookimpl
def tierd_cli(cli):
    from .cli import notify

    cli.add_command(notify)
