"""A plugin's running state: one object per plugin and daemon, in one slot.

A plugin that keeps anything while the daemon runs (a dispatcher, an HTTP
session, a compiled configuration, its metrics) gives it to core as a
:class:`PluginService` from the ``tierd_services`` hook. Core keeps it in
``daemon.services[name]`` and calls it in lifecycle order:

- ``await start()`` after the database is migrated and the bus is open,
  before consumers, jobs and routes are asked for (so they can use it) and
  before the API listens;
- ``await reload(config)`` after a reloaded configuration became ``daemon.config``;
- ``await stop()`` on shutdown, after the API stopped taking requests and
  before the database closes, in the reverse order of the starts.

Routes, jobs, consumers and tests reach it the same way in every plugin::

    WebhooksService.of(daemon)      # typed; LookupError if it is not running
    daemon.service("webhooks")      # the same object, untyped

Several daemons may run in one process (tests): nothing here is global.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar, TypeVar

if TYPE_CHECKING:
    from tierd.core.daemon import Daemon

S = TypeVar("S", bound="PluginService")


class ServiceNotRunning(LookupError):
    """A service was asked for that this daemon does not run (its plugin is
    disabled, or the daemon has not started it)."""


class PluginService:
    """Base class of a plugin's running object.

    Subclasses set :attr:`name` (the key in ``daemon.services``, usually the
    plugin's config section) and override the lifecycle methods they need;
    the defaults do nothing. The constructor runs in the daemon's event loop
    with ``daemon.db`` and ``daemon.bus`` open, and should only build objects:
    work that may fail or take time belongs in :meth:`start`.
    """

    #: The key in ``daemon.services``; unique among the plugins of a daemon.
    name: ClassVar[str] = ""

    def __init__(self, daemon: Daemon) -> None:
        self.daemon = daemon

    async def start(self) -> None:
        """Start background work (spawn tasks with ``daemon.spawn``). An exception stops the daemon's startup."""

    async def reload(self, config: dict) -> None:
        """Apply a reloaded, validated configuration (``config`` is the new
        ``daemon.config``); work in flight keeps going."""

    async def stop(self) -> None:
        """Finish or hand back work in flight and release what :meth:`start` took."""

    @classmethod
    def of(cls: type[S], daemon: Daemon) -> S:
        """The running service of this class in ``daemon``; :class:`ServiceNotRunning` if there is none."""
        service = daemon.services.get(cls.name)
        if not isinstance(service, cls):
            raise ServiceNotRunning(f"the {cls.name or cls.__name__} service is not running in this daemon")
        return service

    @classmethod
    def running(cls: type[S], daemon: Daemon) -> S | None:
        """The running service of this class in ``daemon``, or None."""
        service = daemon.services.get(cls.name)
        return service if isinstance(service, cls) else None
