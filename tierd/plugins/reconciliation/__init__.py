"""Bank reconciliation: statements and ledger in, explained matches out.

This module is a plugin like any third-party one: everything below is a
hook implementation (see :mod:`tierd.core.hookspecs`). The pieces:

* ``importers/`` - CAMT.053, MT940/MT942, OFX, CSV (registered as statement importers)
* ``matching/`` - the pure matching engine (rules, conflict settlement)
* ``imports.py`` / ``ledger.py`` - getting both sides in, de-duplicated
* ``runs.py`` / ``manual.py`` - automatic runs, and what people decide
* ``aliases.py`` - payers that matches taught (IBAN or name -> ledger counterparty), forgotten on undo
* ``candidates.py`` - why an item is still open: its neighbourhood, explained by ``matching/why.py``
* ``exchange.py`` - ledger entries in another currency, valued for a manual match
* ``event_types.py`` - the events it publishes (imports, runs, exceptions), declared
* ``migrations.py`` - the tables; ``store.py`` - the SQL on them (``aliases.py`` and
  ``candidates.py`` keep their own few statements next to what they do)
* ``api.py`` / ``cli.py`` - the interfaces; ``present.py`` - records as the API shows them
* ``console.py`` - its pages of the web console (accounts, open items, suggestions, matches,
  why an item is open), their templates in ``templates/console/``
* ``config.py`` - the ``reconciliation`` config section's schema and what runs read of it
* ``service.py`` - the running object (core's service slot): metrics, run locks, config accounts
* ``inbox.py`` - folders watched for statement files; ``metrics.py`` - Prometheus
"""

from __future__ import annotations

import logging

from tierd.core.plugins import hookimpl
from tierd.core.scheduler import Job

from . import api, inbox, migrations, runs, store
from .cli import recon_cli
from .config import SCHEMA, section
from .importers import builtin_importers
from .service import ReconciliationService

log = logging.getLogger("tierd.reconciliation")


@hookimpl
def tierd_config_schema(registries):
    return {"reconciliation": SCHEMA}


@hookimpl
def tierd_migrations():
    return {"reconciliation": {"sqlite": migrations.MIGRATIONS, "postgresql": migrations.POSTGRESQL_MIGRATIONS}}


@hookimpl
def tierd_register_statement_importers(register):
    for importer in builtin_importers():
        register(importer)


@hookimpl
def tierd_register_event_types(register):
    from .event_types import EVENT_TYPES

    for event_type in EVENT_TYPES:
        register(event_type)


@hookimpl
def tierd_services(daemon):
    return ReconciliationService(daemon)


@hookimpl
def tierd_routes(daemon):
    return api.routes()


def _scheduled_run(daemon, tenant: str, account_id: str):
    async def job():
        account = await store.get_account(daemon.db, tenant, account_id)
        if account is None:
            return
        try:
            await runs.run_account(daemon, tenant, account, "schedule", "scheduler")
        except Exception:  # logged here: the scheduler only knows the job failed
            log.exception("scheduled reconciliation run of %s/%s failed", tenant, account_id)

    return job


@hookimpl
def tierd_ui(daemon):
    from . import console

    return console.section(daemon)


@hookimpl
def tierd_jobs(daemon):
    cfg = section(daemon.config)
    jobs = [
        Job(
            id=f"reconciliation.run.{a['tenant']}.{a['id']}",
            func=_scheduled_run(daemon, a["tenant"], a["id"]),
            cron=a["schedule"],
        )
        for a in cfg["accounts"]
        if a.get("schedule")
    ]
    if any(a.get("inbox") for a in cfg["accounts"]):

        async def poll_inboxes():
            await inbox.poll(daemon)

        jobs.append(Job(id="reconciliation.inbox", func=poll_inboxes, interval=cfg["inbox_poll_interval"]))
    return jobs


@hookimpl
def tierd_cli(cli):
    cli.add_command(recon_cli)


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
