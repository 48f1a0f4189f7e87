"""Webhooks: deliver each tenant's events to the HTTPS endpoints it subscribed.

Signed per Standard Webhooks, retried on a schedule until they land, with a
full delivery history, replay, recovery and test sends. The event consumer
writes one delivery row per (event, matching endpoint); the dispatcher sends
due rows. The work lives in the files named for it: ``signing``, ``ssrf``,
``retry``, ``store``, ``dispatch``, ``api``, ``cli``, ``config``, and
``event_types`` (the events it publishes, declared).

Python receivers verify what they get with :func:`verify`::

    from tierd.plugins.webhooks import verify
    event = verify(secret, body, headers)
"""

from __future__ import annotations

from tierd.core.plugins import hookimpl

from . import store
from .signing import WebhookVerificationError, sign, verify

__all__ = ["verify", "sign", "WebhookVerificationError"]


@hookimpl
def tierd_config_schema():
    from .config import SCHEMA

    return {"webhooks": SCHEMA}


@hookimpl
def tierd_migrations():
    return {"webhooks": store.MIGRATIONS}


@hookimpl
def tierd_register_event_types(register):
    from .event_types import EVENT_TYPES

    for event_type in EVENT_TYPES:
        register(event_type)


@hookimpl
async def tierd_startup(daemon):
    from .runtime import Webhooks

    await Webhooks.start(daemon)


@hookimpl
async def tierd_shutdown(daemon):
    from . import runtime

    running = runtime.get(daemon)
    if running is not None:
        await running.stop()


@hookimpl
def tierd_config_reloaded(daemon, config):
    from . import runtime

    runtime.of(daemon).dispatcher.configure(config["webhooks"])


@hookimpl
def tierd_event_consumers(daemon):
    from tierd.core.events import Consumer

    from . import runtime

    return [Consumer("webhooks", runtime.of(daemon).consume, batch_size=500)]


@hookimpl
def tierd_routes(daemon):
    from .api import routes

    return routes()


@hookimpl
def tierd_jobs(daemon):
    from tierd.core.scheduler import Job

    from . import runtime

    dispatcher = runtime.of(daemon).dispatcher

    async def wake_due():
        # The dispatcher sleeps at most a second anyway; this is the belt to
        # its braces, so retries that came due are picked up whatever happens.
        dispatcher.wake()

    return [
        Job("webhooks.wake_due", wake_due, interval=10),
        Job("webhooks.disable_failing", dispatcher.disable_failing, interval=60),
        Job("webhooks.retention", dispatcher.prune, interval=3600),
        Job("webhooks.metrics", dispatcher.update_metrics, interval=5),
    ]


@hookimpl
def tierd_cli(cli):
    from .cli import webhooks

    cli.add_command(webhooks)
