"""The notification service of one daemon: config runtime, intake, dispatcher.

Created at ``tierd_startup`` and kept per daemon (several daemons may run in
one test process), found again by routes, jobs and consumers through
:func:`service_of`.
"""

from __future__ import annotations

import asyncio
import logging

import aiohttp

from tierd import __version__
from tierd.core.events import Consumer, Event

from . import store
from .dispatch import Dispatcher, Metrics
from .intake import ingest
from .runtime import Runtime

log = logging.getLogger("tierd.notifications")

def service_of(daemon) -> "NotificationService":
    return daemon.state["notifications"]


def running_service(daemon) -> "NotificationService | None":
    """The service, or None if startup did not run (e.g. it failed early)."""
    return daemon.state.get("notifications")


class NotificationService:
    def __init__(self, daemon):
        self.daemon = daemon
        self.section = daemon.config["notifications"]
        # One HTTP session for every channel: connection pooling across sends.
        self.http = aiohttp.ClientSession(headers={"User-Agent": f"tierd/{__version__} notifications"})
        self.runtime = Runtime(self.section, daemon.registries, self.http)
        self.metrics = Metrics(daemon.metrics)
        self.dispatcher = Dispatcher(daemon.db, daemon.clock, self.metrics, lambda: self.runtime,
                                     self.section["max_in_flight"], self.section["poll_interval"],
                                     self.section["max_in_flight_per_channel"])

    @classmethod
    def start(cls, daemon) -> "NotificationService":
        service = cls(daemon)
        daemon.state["notifications"] = service
        service.task = daemon.spawn(service.dispatcher.run(daemon.stopping), name="notifications:dispatcher")
        log.info("notifications: %d channel(s), %d top-level route(s)",
                 len(service.runtime.channels), len(service.runtime.tree.root.children))
        return service

    def consumer(self) -> Consumer:
        return Consumer(name="notifications", handle=self.handle, batch_size=500)

    async def handle(self, events: list[Event]) -> None:
        result = await ingest(self.daemon.db, self.runtime, [e.to_json() for e in events], self.daemon.clock.time())
        for channel, n in result.muted.items():
            self.metrics.muted.labels(channel).inc(n)
        for channel, n in result.throttled.items():
            self.metrics.throttled.labels(channel).inc(n)
        if result.pending or result.grouped:
            self.dispatcher.wake()

    async def reload(self, config: dict) -> None:
        """Switch to a new config; rows in flight keep their rendered text."""
        old = self.runtime
        self.section = config["notifications"]
        self.runtime = Runtime(self.section, self.daemon.registries, self.http)
        self.dispatcher.max_in_flight = self.section["max_in_flight"]
        self.dispatcher.max_per_channel = self.section["max_in_flight_per_channel"]
        self.dispatcher.poll_interval = self.section["poll_interval"]
        await old.close()
        self.dispatcher.wake()

    async def purge(self) -> None:
        n = await store.purge(self.daemon.db, self.daemon.clock.time() - self.section["retention"])
        if n:
            log.info("notifications: deleted %d finished notification(s) past retention", n)

    async def stop(self) -> None:
        # daemon.stopping is set: let the dispatcher finish the batch it is
        # sending before the HTTP session goes away (unsent rows stay pending).
        task = getattr(self, "task", None)
        if task is not None and not task.done():
            await asyncio.wait([task], timeout=self.daemon.config["server"].get("shutdown_grace", 10))
        self.daemon.state.pop("notifications", None)
        await self.runtime.close()
        await self.http.close()
