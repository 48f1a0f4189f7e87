"""The hook API of tierd: every hook a plugin can implement, in one place.

Built-in modules (``tierd.plugins.*``) and third-party packages (entry point
group ``tierd``) implement these hooks in exactly the same way::

    from tierd.core.plugins import hookimpl

    @hookimpl
    def tierd_routes(daemon):
        return [Route("GET", "/v1/hello", hello, auth="tenant")]

Rules:

* Implementations may be plain or ``async def``; core awaits whatever is
  awaitable.
* An implementation may accept any subset of a hook's arguments.
* The API grows only by adding arguments; removing or renaming is a breaking
  change for third parties.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

import pluggy

if TYPE_CHECKING:
    import click

    from tierd.core.api import Route
    from tierd.core.config import Config
    from tierd.core.daemon import Daemon
    from tierd.core.events import Consumer
    from tierd.core.registry import (
        Channel,
        EventType,
        Registries,
        ReportDefinition,
        ReportExporter,
        ReportSource,
        StatementImporter,
    )
    from tierd.core.scheduler import Job
    from tierd.core.schema import Field
    from tierd.core.service import PluginService
    from tierd.core.ui import UiSection

hookspec = pluggy.HookspecMarker("tierd")


# --- configuration ----------------------------------------------------------


@hookspec
def tierd_config_schema(registries: Registries) -> dict[str, Field] | None:
    """Declare the configuration sections this plugin owns.

    Called when a configuration file is loaded or reloaded (by ``tierd run``,
    ``tierd check-config`` and on SIGHUP), before anything starts.
    ``registries`` is the :class:`tierd.core.registry.Registries` collected
    from all plugins (channel types, importers, ...), so a section can validate
    names that other plugins contribute.

    Return a dict ``{section_name: schema}`` where each schema is built from
    :mod:`tierd.core.schema` (``Obj``, ``Str``, ``Duration``, ...). Core
    validates the section, fills in defaults and reports every error with
    file, line and key path. The validated section is then
    ``daemon.config[section_name]``.
    """


@hookspec
def tierd_config_reloaded(daemon: Daemon, config: Config) -> Awaitable[None] | None:
    """React to a configuration that was reloaded and validated.

    Called after SIGHUP or ``POST /v1/admin/reload`` once the new
    configuration passed validation and became ``daemon.config``. ``config``
    is the new configuration (a dict). Work in flight must not be
    interrupted: rebuild only what depends on the changed keys. May be async.
    Return value ignored.
    """


# --- storage ----------------------------------------------------------------


@hookspec
def tierd_migrations() -> dict[str, list[str]] | None:
    """Declare this plugin's database migrations.

    Called at startup and by ``tierd migrate`` / ``tierd db status``, before
    plugins start. Return a dict ``{namespace: [sql, sql, ...]}``: migration
    number N of a namespace is the N-th script of its list (1-based). Core
    applies the scripts not yet recorded, each inside one transaction, and
    records them in ``schema_migrations``. Never edit a released script;
    append a new one.
    """


# --- lifecycle --------------------------------------------------------------


@hookspec
def tierd_services(daemon: Daemon) -> PluginService | list[PluginService] | None:
    """Give core this plugin's running object(s), to keep, start, reload and stop.

    Called once per process, in the daemon's event loop, after the
    configuration is validated, the database is migrated and the bus is
    open, and before ``tierd_startup``, consumers, jobs and routes are asked
    for. Return a :class:`tierd.core.service.PluginService` (or a list of
    them) built with ``daemon``. Core keeps each in
    ``daemon.services[service.name]`` and awaits ``start()`` in plugin
    registration order, ``reload(config)`` after each configuration reload
    (before ``tierd_config_reloaded``), and ``stop()`` on shutdown (after
    ``tierd_shutdown``, the last started first, before the database closes).
    Routes, jobs and consumers find it with ``MyService.of(daemon)``. Core
    refuses to start when a result is not a PluginService or when two
    services share a name. A plugin with nothing running need not implement
    it; ``tierd_startup``, ``tierd_shutdown`` and ``tierd_config_reloaded``
    keep working for plugins written as plain functions.
    """


@hookspec
def tierd_startup(daemon: Daemon) -> Awaitable[None] | None:
    """Start this plugin's long-running work.

    Called once per process after the configuration is validated, the
    database is migrated and the registries are collected, and before the
    control API accepts requests and READY=1 is sent, after the services of
    ``tierd_services`` started. ``daemon`` is the
    :class:`tierd.core.daemon.Daemon` (``config``, ``db``, ``bus``,
    ``scheduler``, ``metrics``, ``registries``, ``services``, ``spawn()``).
    May be async. Return value ignored. Running state belongs in a service
    (``tierd_services``), which core also reloads and stops.
    """


@hookspec
def tierd_shutdown(daemon: Daemon) -> Awaitable[None] | None:
    """Stop this plugin's work before the process exits.

    Called on SIGTERM/SIGINT after the control API stopped accepting
    requests, and before the database closes. Let in-flight work finish (the
    daemon gives a grace period, then cancels tasks it spawned). May be async.
    Return value ignored.
    """


# --- control API ------------------------------------------------------------


@hookspec
def tierd_routes(daemon: Daemon) -> list[Route] | None:
    """Contribute HTTP routes to the control API.

    Called once at startup, before the API listens. Return a list of
    :class:`tierd.core.api.Route` (method, path, async handler, ``auth`` one
    of ``"tenant"``, ``"admin"``, ``"public"``, summary, request and response
    descriptions for the OpenAPI document). Core adds authentication, JSON
    errors and the OpenAPI entry; handlers read ``request["tenant"]``.
    """


@hookspec
def tierd_ui(daemon: Daemon) -> UiSection | list[UiSection] | None:
    """Add pages to the web console (``/ui``).

    Called once at startup when ``server.ui`` is on. Return a
    :class:`tierd.core.ui.UiSection`: its pages (:class:`tierd.core.ui.UiPage`,
    each an ``async def handler(ctx)`` taking a :class:`tierd.core.ui.UiContext`),
    the folder of its Jinja2 templates (rendered as ``<name>/<file>``, extending
    core's ``base.html``), its entries in the top navigation, an optional panel
    for the overview, and any kinds of session it issues (the webhooks portal's).
    Core signs people in, checks CSRF on every POST and renders errors; a page
    reads and acts through ``ctx.api(...)``, the control API called in-process
    as the session's caller, so it shows and does exactly what that caller may.
    """


# --- command line -----------------------------------------------------------


@hookspec
def tierd_cli(cli: click.Group) -> None:
    """Add command groups to the ``tierd`` command line.

    Called when the CLI starts, with the root :class:`click.Group`. Add
    commands with ``cli.add_command(...)``. Commands get a
    :class:`tierd.core.cli_helpers.CliContext` through
    ``@pass_cli`` (configuration, ``--json`` output, a client for the running
    daemon's API). Return value ignored.
    """


# --- scheduler --------------------------------------------------------------


@hookspec
def tierd_jobs(daemon: Daemon) -> list[Job] | None:
    """Declare timers: interval or cron jobs run by the daemon's scheduler.

    Called at startup and again after every configuration reload (jobs are
    rebuilt from the configuration; ids must be stable). Return a list of
    :class:`tierd.core.scheduler.Job`. A job only wakes code up: work that
    must survive a crash is a database row the job picks up.
    """


# --- event bus --------------------------------------------------------------


@hookspec
def tierd_event_consumers(daemon: Daemon) -> list[Consumer] | None:
    """Subscribe to the event bus.

    Called once at startup. Return a list of
    :class:`tierd.core.events.Consumer` (a stable ``name``, an async
    ``handle(events)`` taking a list of :class:`tierd.core.events.Event`,
    optional ``types`` patterns). Each consumer has a durable cursor: it sees
    every event at least once, in order, across crashes; an event is
    re-delivered if ``handle`` raised or the process died before the cursor
    moved, so ``handle`` must be idempotent.
    """


# --- registries third parties extend -----------------------------------------


@hookspec
def tierd_register_event_types(register: Callable[[EventType], None]) -> None:
    """Declare the event types this plugin publishes on the bus.

    Called once when the plugin manager is built. Call ``register(event_type)``
    for each :class:`tierd.core.registry.EventType` (``name``, a one-line
    ``description``, optional ``data_schema`` (JSON Schema of ``data``),
    default notification ``subject``/``body`` (Jinja2), ``severity``,
    ``operator_alert``, ``webhook``). Core refuses, and the daemon does not
    start, when a name is not a dotted lowercase event type, when two plugins
    declare the same name, or when a field is malformed. A plugin declares
    only what it publishes itself; other plugins read the declarations in
    ``daemon.registries.event_types`` (notifications' default texts, severities
    and operator alerts; webhooks' ``webhook`` flag), and
    ``GET /v1/event-types`` lists them. Tenants' own event types need no
    declaration. Return value ignored.
    """


@hookspec
def tierd_register_channels(register: Callable[[type[Channel]], None]) -> None:
    """Register notification channel types.

    Called once when the plugin manager is built. Call
    ``register(cls)`` for each :class:`tierd.core.registry.Channel` subclass
    (``type_name``, ``schema`` of its config, ``async send(message)`` that
    returns a :class:`tierd.core.registry.SendResult`). Return value ignored.
    """


@hookspec
def tierd_register_statement_importers(register: Callable[[StatementImporter], None]) -> None:
    """Register bank statement importers.

    Called once when the plugin manager is built. Call ``register(importer)``
    for each :class:`tierd.core.registry.StatementImporter` (``format_name``,
    ``detect(head: bytes) -> bool``, ``parse(data: bytes, options)`` returning
    statements and lines or raising ``StatementError`` that names the line or
    element). Return value ignored.
    """


@hookspec
def tierd_register_report_sources(register: Callable[[ReportSource], None]) -> None:
    """Declare the rows this plugin offers to reports.

    Called once when the plugin manager is built. Call ``register(source)``
    for each :class:`tierd.core.registry.ReportSource`: a dotted ``name``
    (``webhooks.deliveries``), a one-line ``description``, the ``sql`` (one
    SELECT over the plugin's own tables, with a ``tenant`` column) and its
    typed ``columns`` (:class:`tierd.core.registry.Column`, each with a
    one-line description). Reports are written over sources, never over a
    plugin's tables, so a plugin may change its tables without breaking
    anyone's report. ``tierd reports sources`` and ``GET /v1/reports/sources``
    list them. Return value ignored.
    """


@hookspec
def tierd_register_reports(register: Callable[[ReportDefinition], None]) -> None:
    """Ship reports with this plugin, next to the data they describe.

    Called once when the plugin manager is built. Call ``register(report)``
    for each :class:`tierd.core.registry.ReportDefinition`: a ``name`` and a
    ``spec`` written as ``reports.definitions.NAME`` of the configuration is
    (the reports plugin checks and compiles it the same way, and refuses to
    start on a malformed one, naming the plugin). Return value ignored.
    """


@hookspec
def tierd_register_report_exporters(register: Callable[[ReportExporter], None]) -> None:
    """Register report exporters (output formats such as CSV or PDF).

    Called once when the plugin manager is built. Call ``register(exporter)``
    for each :class:`tierd.core.registry.ReportExporter` (``format_name``,
    ``media_type``, ``extension``, ``many`` and ``export(reports, out)``,
    called in a worker thread with :class:`tierd.core.registry.ReportData`
    whose rows stream from the database). Return value ignored.
    """
