"""The daemon: config, plugins, storage, bus, scheduler and API in one loop.

Lifecycle (``tierd run``): load and validate the configuration, build the
plugin manager, open and migrate the database, start the plugins' services
(``tierd_services``, then ``tierd_startup``), consumers, jobs and routes,
listen, then tell systemd READY=1. SIGHUP reloads; SIGTERM/SIGINT stop
gracefully.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import socket
from collections.abc import Coroutine, Mapping
from pathlib import Path
from typing import Any, cast

import pluggy
import prometheus_client
from aiohttp import web

from tierd import __version__
from tierd.core import systemd
from tierd.core.clock import Clock
from tierd.core.config import Config, ConfigError, load_config, peek_disabled_plugins
from tierd.core.events import EventBus
from tierd.core.logs import ACCESS_LOGGER, access_log_class
from tierd.core.plugins import call_async, make_plugin_manager
from tierd.core.registry import Registries, collect_registries
from tierd.core.scheduler import Job, apply_jobs, make_scheduler
from tierd.core.schema import Field
from tierd.core.service import PluginService, ServiceNotRunning
from tierd.core.storage import CORE, Database, claim, describe_storage, migrations_for, open_database, release
from tierd.core.tenants import local_admin_token
from tierd.core.web_app import ApiRunner, Authenticator, build_app

log = logging.getLogger("tierd")

#: A consumer that has events to handle and has not advanced for this long
#: (seconds) makes the daemon not ready (/readyz 503, tierd_consumer_stalled).
CONSUMER_STALL_AFTER = 60.0


def prepare(
    config_path: Path | None, env: Mapping[str, str] | None = None, plugins: tuple | list = ()
) -> tuple[pluggy.PluginManager, Registries, Config]:
    """Plugin manager, registries and validated config for ``config_path``.

    Raises ConfigError. Plugins listed in ``plugins.disabled`` are never
    imported. ``plugins``: more plugin modules to load (see make_plugin_manager).
    """
    pm = make_plugin_manager(peek_disabled_plugins(config_path), plugins=plugins)
    registries = collect_registries(pm)
    schemas = plugin_schemas(pm, registries)
    config = load_config(config_path, schemas) if env is None else load_config(config_path, schemas, env=env)
    return pm, registries, config


def plugin_schemas(pm: pluggy.PluginManager, registries: Registries) -> dict[str, Field]:
    schemas: dict[str, Field] = {}
    for result in pm.hook.tierd_config_schema(registries=registries):
        schemas.update(result or {})
    return schemas


def all_migrations(pm: pluggy.PluginManager, dialect: str = "sqlite") -> dict[str, list[str]]:
    """Core's and every plugin's migrations for the backend's ``dialect``
    (:class:`tierd.core.storage.UnsupportedBackend` for a plugin without them)."""
    declared: dict[str, Any] = {"core": CORE}
    for result in reversed(pm.hook.tierd_migrations()):
        declared.update(result or {})
    return migrations_for(declared, dialect)


class Daemon:
    def __init__(
        self,
        pm: pluggy.PluginManager,
        registries: Registries,
        config: Config,
        clock: Clock | None = None,
        consumer_stall_after: float = CONSUMER_STALL_AFTER,
    ) -> None:
        self.pm = pm
        self.registries = registries
        self.config = config
        self.config_path = config.path
        self.clock = clock or Clock()
        self.metrics = prometheus_client.CollectorRegistry()
        prometheus_client.ProcessCollector(registry=self.metrics)
        self._db: Database | None = None
        self._db_claim: int | None = None
        self._bus: EventBus | None = None
        self.scheduler = make_scheduler()
        self.stopping = asyncio.Event()
        #: Whether this node runs the cluster's timers (always, on SQLite).
        self.timer_leader = False
        #: Started and not stopping (see readiness() for the whole answer).
        self.ready = False
        self.not_ready_reason = "starting"
        self.consumer_stall_after = consumer_stall_after
        #: Consumers that have work and have not advanced (name -> seconds), as of the last metrics update.
        self.stalled: dict[str, float] = {}
        self.url: str | None = None
        self.openapi: dict = {}
        self.authenticator: Authenticator | None = None
        #: The plugins' running objects (``tierd_services``), by service name, in start order.
        self.services: dict[str, PluginService] = {}
        #: Free-form per-daemon objects of plugins that keep state without a service
        #: (kept for third parties written before services; prefer a PluginService).
        self.state: dict = {}
        self._tasks: set[asyncio.Task] = set()
        self._runner: web.AppRunner | None = None
        self._tenants: set[str] = set()
        self._reload_lock = asyncio.Lock()
        self._events_accepted = prometheus_client.Counter(
            "tierd_events_accepted", "Events accepted through the API or published by plugins", registry=self.metrics
        )
        self._consumer_lag = prometheus_client.Gauge(
            "tierd_consumer_lag_events",
            "Events not yet processed by each consumer",
            ["consumer"],
            registry=self.metrics,
        )
        self._consumer_errors = prometheus_client.Counter(
            "tierd_consumer_errors",
            "Failures of each consumer (each one retried after a pause)",
            ["consumer"],
            registry=self.metrics,
        )
        self._consumer_stalled = prometheus_client.Gauge(
            "tierd_consumer_stalled",
            f"1 while a consumer has events to handle and has not advanced for {consumer_stall_after:g}s",
            ["consumer"],
            registry=self.metrics,
        )
        self._storage_full_errors = prometheus_client.Counter(
            "tierd_storage_full_errors", "Writes refused for lack of disk space", registry=self.metrics
        )
        prometheus_client.Gauge(
            "tierd_storage_full",
            "1 while writes fail for lack of disk space",
            registry=self.metrics,
        ).set_function(lambda: float(self._db is not None and self._db.full))
        self._db_bytes = prometheus_client.Gauge(
            "tierd_database_bytes",
            "Size of the database file by its pages: all of them, and those free for reuse",
            ["pages"],
            registry=self.metrics,
        )

    @property
    def db(self) -> Database:
        """The database (open from start() to stop()); RuntimeError before it is opened."""
        if self._db is None:
            raise RuntimeError("the daemon has not opened its database yet")
        return self._db

    @property
    def bus(self) -> EventBus:
        """The event bus (from start()); RuntimeError before the daemon started."""
        if self._bus is None:
            raise RuntimeError("the daemon has not started its event bus yet")
        return self._bus

    # --- helpers for plugins --------------------------------------------------------

    def spawn(self, coro: Coroutine[Any, Any, Any], name: str | None = None) -> asyncio.Task[Any]:
        """Run ``coro`` in the background; cancelled after the grace period on shutdown."""
        task = asyncio.get_running_loop().create_task(coro, name=name)
        self._tasks.add(task)

        def done(t: asyncio.Task[Any]) -> None:
            self._tasks.discard(t)
            if not t.cancelled() and t.exception() is not None:
                log.error("background task %s crashed", t.get_name(), exc_info=t.exception())

        task.add_done_callback(done)
        return task

    def service(self, name: str) -> PluginService:
        """The running service ``name`` (see :mod:`tierd.core.service`); ServiceNotRunning if none."""
        try:
            return self.services[name]
        except KeyError:
            raise ServiceNotRunning(f"no service {name!r} is running in this daemon") from None

    def readiness(self) -> tuple[bool, str]:
        """(ready, why not): started, storage not full, no consumer stalled."""
        if not self.ready:
            return False, self.not_ready_reason
        if self.db.full:
            return False, "storage full: writes fail for lack of disk space"
        if self.stalled:
            return False, "; ".join(
                f"consumer {name} has events to handle and has not advanced for {seconds:.0f}s"
                for name, seconds in sorted(self.stalled.items())
            )
        return True, ""

    async def tenant_exists(self, tenant: str) -> bool:
        if tenant in self._tenants:
            return True
        if await self.db.lookups.fetchone("SELECT 1 FROM tenants WHERE id=?", (tenant,)):
            self._tenants.add(tenant)
            return True
        return False

    # --- lifecycle ---------------------------------------------------------------------

    async def start(self) -> None:
        storage = self.config["storage"]
        _check_can_listen(self.config["server"]["listen"])  # before anything is created on disk
        # Every plugin's migrations must exist for the backend, before anything is opened.
        migrations = all_migrations(self.pm, "postgresql" if storage.get("url") else "sqlite")
        if not storage.get("url"):
            # One daemon per SQLite file: a second one would deliver everything twice.
            self._db_claim = claim(storage["path"])
        self.config["server"]["admin_token"] = local_admin_token(self.config, create=True)
        self._db = await open_database(storage)
        self.db.on_full = self._storage_full_errors.inc
        self.not_ready_reason = "migrating"
        await self.db.migrate(migrations)
        self._bus = EventBus(
            self.db,
            self.clock,
            on_publish=self._events_accepted.inc,
            on_consumer_error=lambda name: self._consumer_errors.labels(name).inc(),
        )
        await self._bus.listen()  # another node's events wake this node's consumers
        self.not_ready_reason = "starting plugins"
        await self._start_services()
        await call_async(self.pm.hook.tierd_startup, daemon=self)
        for consumers in self.pm.hook.tierd_event_consumers(daemon=self):
            for consumer in consumers or []:
                self.spawn(self.bus.run_consumer(consumer, self.stopping), name=f"consumer:{consumer.name}")
        # SQLite has one node: it runs every timer. Nodes sharing PostgreSQL elect one.
        self.timer_leader = self.db.dialect == "sqlite"
        if not self.timer_leader:
            self.spawn(self._lead_timers(), name="timers")
        self._apply_jobs()
        self.scheduler.start()
        routes = [r for result in self.pm.hook.tierd_routes(daemon=self) for r in (result or [])]
        self._runner = ApiRunner(
            build_app(self, routes),
            access_log=logging.getLogger(ACCESS_LOGGER),
            access_log_class=access_log_class(lambda: self.config["logging"]["access_log"]),
            shutdown_timeout=self.config["server"]["shutdown_grace"],
        )
        await self._runner.setup()
        await self._listen(self.config["server"]["listen"])
        interval = systemd.watchdog_interval()
        if interval:
            self.spawn(self._watchdog(interval), name="watchdog")
        self.ready = True
        self.not_ready_reason = ""
        log.info("tierd %s ready on %s (database %s)", __version__, self.url, describe_storage(storage))
        systemd.notify(f"READY=1\nSTATUS=listening on {self.url}")

    async def _start_services(self) -> None:
        """Make every plugin's services and start them, in plugin registration order."""
        made: list[PluginService] = []
        # pluggy calls the last registered plugin first: reversed, built-ins come first.
        for result in reversed(self.pm.hook.tierd_services(daemon=self)):
            for service in result if isinstance(result, (list, tuple)) else [result] if result else []:
                if not isinstance(service, PluginService):
                    raise TypeError(
                        f"tierd_services returned {service!r} ({type(service).__module__}), "
                        "not a tierd.core.service.PluginService"
                    )
                if not service.name:
                    raise TypeError(f"{type(service).__module__}.{type(service).__name__} has no name")
                if service.name in self.services or any(s.name == service.name for s in made):
                    raise ValueError(f"two plugins declare the service {service.name!r}")
                made.append(service)
        for service in made:
            # In the slot before start(): what start() spawns may look it up, and
            # a start() that fails half-way is stopped with the others.
            self.services[service.name] = service
            await service.start()

    async def _stop_services(self) -> None:
        """Stop the started services, the last started first; one that fails does not keep the others running."""
        for name, service in reversed(list(self.services.items())):
            try:
                await service.stop()
            except Exception:
                log.exception("stopping the %s service failed", name)

    async def _listen(self, listen: str) -> None:
        assert self._runner is not None, "start() sets the runner up before it listens"
        site: web.BaseSite
        if listen.startswith("unix:"):
            path = listen[len("unix:") :]
            Path(path).parent.mkdir(parents=True, exist_ok=True)
            site = web.UnixSite(self._runner, path)
            self.url = listen
        else:
            host, _, port = listen.rpartition(":")
            host = host.strip("[]") or "127.0.0.1"
            site = web.TCPSite(self._runner, host, int(port))
        await site.start()
        if not listen.startswith("unix:"):
            server = cast(asyncio.Server, site._server)  # set by start()
            sock = server.sockets[0]  # the real port when 0 was asked for
            real_host, real_port = sock.getsockname()[:2]
            self.url = f"http://{'[' + real_host + ']' if ':' in real_host else real_host}:{real_port}"

    def _apply_jobs(self) -> None:
        jobs = [Job("core.metrics", self._update_metrics, interval=5, scope="node")]
        if self.config["storage"]["event_retention"]:
            jobs.append(Job("core.prune_events", self._prune_events, interval=3600))
        for result in self.pm.hook.tierd_jobs(daemon=self):
            jobs.extend(result or [])
        # The cluster's timers are on the leading node's scheduler only (GET /v1/admin/jobs
        # on another node lists its own): a retention or a report schedule fires once.
        apply_jobs(self.scheduler, [j for j in jobs if j.scope == "node" or self.timer_leader])

    #: The lock of the node that runs the cluster's timers (see Job.scope).
    TIMERS_LOCK = "tierd.timers"

    async def _lead_timers(self) -> None:
        """Wait to lead the cluster's timers, then run them until the node stops
        (a node that dies lets go of the lock with its connection)."""
        async with self.db.exclusive(self.TIMERS_LOCK, until=self.stopping) as held:
            if held:
                self.timer_leader = True
                log.info("this node runs the cluster's timers (retention, schedules, auto-disabling)")
                self._apply_jobs()
                await self.stopping.wait()

    async def nodes(self) -> list[dict]:
        """The nodes on this database and the consumers and timers each runs."""
        locks = [self.TIMERS_LOCK] + [f"tierd.consumer.{name}" for name in sorted(self.bus.declared)]
        found = await self.db.nodes(locks)
        for node in found:
            node["holds"] = [
                h.removeprefix("tierd.consumer.").replace(self.TIMERS_LOCK, "timers") for h in node["holds"]
            ]
        return found

    async def _prune_events(self) -> None:
        removed = await self.bus.prune(self.clock.time() - self.config["storage"]["event_retention"])
        if removed:
            log.info(
                "event retention: deleted %d events older than %s",
                removed,
                _days(self.config["storage"]["event_retention"]),
            )

    async def _update_metrics(self) -> None:
        space = await self.db.space()
        self._db_bytes.labels("all").set(space["page_count"] * space["page_size"])
        self._db_bytes.labels("free").set(space["freelist_count"] * space["page_size"])
        lags = await self.bus.lag()
        for name, lag in lags.items():
            self._consumer_lag.labels(name).set(lag)
        stalled = self.bus.stalled(lags, self.consumer_stall_after)
        for name in stalled.keys() - self.stalled.keys():
            log.error(
                "consumer %s has %s events to handle and has not advanced for %.0fs: not ready",
                name,
                lags.get(name, "unknown"),
                stalled[name],
            )
        for name in self.stalled.keys() - stalled.keys():
            log.info("consumer %s advances again", name)
        for name in self.bus.progress.keys() | self.stalled.keys():
            self._consumer_stalled.labels(name).set(1 if name in stalled else 0)
        self.stalled = stalled

    async def _watchdog(self, interval: float) -> None:
        # Pinged from the loop itself: a blocked loop stops the pings.
        while not self.stopping.is_set():
            systemd.notify("WATCHDOG=1")
            await asyncio.sleep(interval)

    async def stop(self) -> None:
        log.info("stopping")
        systemd.notify("STOPPING=1")
        self.ready = False
        self.not_ready_reason = "stopping"
        if self._runner is not None:
            await self._runner.cleanup()  # stops accepting, lets in-flight requests finish
        self.stopping.set()
        if self.scheduler.running:
            self.scheduler.shutdown(wait=False)
        await call_async(self.pm.hook.tierd_shutdown, daemon=self)
        await self._stop_services()
        if self._tasks:
            _, pending = await asyncio.wait(list(self._tasks), timeout=self.config["server"]["shutdown_grace"])
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
        if self._db is not None:
            await self._db.close()
        release(self._db_claim)
        self._db_claim = None
        log.info("stopped")

    async def reload(self) -> tuple[bool, list[str]]:
        """Validate the config file again and switch to it; keep the old one on error.

        The file is parsed and validated in a worker thread: a large file
        (up to a MiB) takes a second or more, and the API keeps answering.
        """
        async with self._reload_lock:
            systemd.reloading()
            try:
                try:
                    schemas = plugin_schemas(self.pm, self.registries)  # hooks run on the loop
                    config = await asyncio.to_thread(load_config, self.config_path, schemas)
                except ConfigError as exc:
                    for error in exc.errors:
                        log.error("reload refused: %s", error)
                    return False, list(exc.errors)
                if config["plugins"]["disabled"] != self.config["plugins"]["disabled"]:
                    log.warning("plugins.disabled changed: restart tierd to apply it")
                config["server"]["admin_token"] = local_admin_token(config, create=True)
                self.config = config
                for name, service in self.services.items():
                    try:
                        await service.reload(config)
                    except Exception:  # the others still apply it; this one keeps what it had
                        log.exception("the %s service could not apply the reloaded configuration", name)
                await call_async(self.pm.hook.tierd_config_reloaded, daemon=self, config=config)
                self._apply_jobs()
                log.info("configuration reloaded from %s", self.config_path or "<defaults>")
                return True, []
            finally:
                systemd.notify("READY=1")


async def serve(pm: pluggy.PluginManager, registries: Registries, config: Config) -> int:
    """Run until SIGTERM/SIGINT; SIGHUP reloads. Returns the exit code."""
    loop = asyncio.get_running_loop()
    daemon = Daemon(pm, registries, config)
    stop = asyncio.Event()
    # Handlers go in before READY=1, so an early SIGHUP cannot kill us.
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_signal_handler(signal.SIGINT, stop.set)
    loop.add_signal_handler(signal.SIGHUP, lambda: daemon.spawn(daemon.reload(), name="reload"))
    try:
        await daemon.start()
    except Exception as exc:
        log.error("startup failed: %s", exc, exc_info=not isinstance(exc, OSError))
        await daemon.stop()
        return 1
    await stop.wait()
    await daemon.stop()
    return 0


def _check_can_listen(listen: str) -> None:
    """Raise OSError now if the TCP address is taken (or not ours), so that a second
    `tierd run` fails before creating the database or the admin token."""
    if listen.startswith("unix:"):
        return
    host, _, port = listen.rpartition(":")
    host = host.strip("[]") or "127.0.0.1"
    try:
        for family, kind, proto, _, address in socket.getaddrinfo(
            host, int(port), type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        ):
            with socket.socket(family, kind, proto) as probe:
                probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as asyncio's server does
                if family == socket.AF_INET6:
                    probe.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
                probe.bind(address)
    except OSError as exc:
        raise OSError(f"cannot listen on {listen}: {exc.strerror or exc}") from None


def _days(seconds: float) -> str:
    return f"{seconds / 86400:g} days"
