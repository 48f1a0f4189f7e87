"""Webhooks: deliver each tenant's events to the HTTPS endpoints it subscribed.

Signed per Standard Webhooks, retried on a schedule until they land, with a
full delivery history, replay, recovery and test sends. The event consumer
writes one delivery row per (event, matching endpoint); the dispatcher sends
due rows. The files, by role:

* ``config.py`` - the ``webhooks`` section's schema
* ``service.py`` - the running object (core's service slot): consumer, replay, endpoint changes
* a delivery's stages: ``fanout.py`` (prepare rows), ``dispatch.py`` (claim, run),
  ``slots.py`` (in-flight caps, token buckets), ``attempt.py`` (make the call),
  ``outcome.py`` (handle success and failure), ``recorder.py`` (the batched writer)
* jobs: ``disabling.py`` (failing endpoints), ``retention.py``, ``metrics.py``;
  ``purge.py`` (the history of deleted endpoints, in the background)
* ``endpoints.py`` - endpoints in memory; ``signing.py``; ``ssrf.py``
* ``migrations.py``, ``store.py`` (every SQL statement), ``records.py`` (what the stages pass on),
  ``present.py`` (rows as the API shows them)
* ``api.py``, ``cli.py``; ``event_types.py`` - the events it publishes, declared
* ``console.py`` - its pages of the web console; ``portal.py`` - the portal a tenant
  hands to its customers (links, sessions, pages); their templates in ``templates/``

Python receivers verify what they get with :func:`verify`::

    from tierd.plugins.webhooks import verify
    event = verify(secret, body, headers)
"""

from __future__ import annotations

from tierd.core.plugins import hookimpl

from . import migrations
from .signing import WebhookVerificationError, sign, verify

__all__ = ["verify", "sign", "WebhookVerificationError"]


@hookimpl
def tierd_config_schema():
    from .config import SCHEMA

    return {"webhooks": SCHEMA}


@hookimpl
def tierd_migrations():
    # Per dialect, numbered alike (migrations.py): SQLite's list is the one
    # existing databases have applied; PostgreSQL's builds the same tables.
    return {"webhooks": {"sqlite": migrations.MIGRATIONS, "postgresql": migrations.POSTGRESQL_MIGRATIONS}}


@hookimpl
def tierd_register_event_types(register):
    from .event_types import EVENT_TYPES

    for event_type in EVENT_TYPES:
        register(event_type)


@hookimpl
def tierd_services(daemon):
    from .service import WebhooksService

    return WebhooksService(daemon)


@hookimpl
def tierd_event_consumers(daemon):
    from tierd.core.events import Consumer

    from .service import WebhooksService

    return [Consumer("webhooks", WebhooksService.of(daemon).consume, batch_size=500)]


@hookimpl
def tierd_routes(daemon):
    from . import portal
    from .api import routes

    return routes() + portal.routes()


@hookimpl
def tierd_ui(daemon):
    from . import console, portal

    return [console.section(daemon), portal.section(daemon)]


@hookimpl
def tierd_jobs(daemon):
    from tierd.core.scheduler import Job

    from .service import WebhooksService

    service = WebhooksService.of(daemon)
    dispatcher = service.dispatcher

    async def wake_due():
        # The dispatcher sleeps at most a second anyway; this is the belt to
        # its braces, so retries that came due are picked up whatever happens.
        dispatcher.wake()

    from .dispatch import TAKEOVER_INTERVAL
    from .store import FOLD_INTERVAL

    several_nodes = []
    if daemon.db.dialect == "postgresql":
        # Deliveries in flight on a node that is gone: every node looks (the pass
        # takes each row once); on SQLite the pass at startup is enough.
        several_nodes = [Job("webhooks.takeover", dispatcher.take_over, interval=TAKEOVER_INTERVAL, scope="node")]
        # The counters' changes (migration 8), folded by one node of the cluster.
        several_nodes.append(Job("webhooks.fold", service.store.fold_counts, interval=FOLD_INTERVAL))
    return several_nodes + [
        Job("webhooks.wake_due", wake_due, interval=10, scope="node"),  # this node's dispatcher
        Job("webhooks.disable_failing", service.disabler.disable_failing, interval=60),
        Job("webhooks.retention", service.retention.prune, interval=3600),
        Job("webhooks.metrics", service.update_metrics, interval=5, scope="node"),  # this node's /metrics
    ]


@hookimpl
def tierd_cli(cli):
    from .cli import webhooks

    cli.add_command(webhooks)


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
