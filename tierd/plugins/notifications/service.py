"""The running notifications of one daemon: compiled config, intake, dispatcher.

Made by ``tierd_services`` and kept in core's service slot; routes, jobs and
the consumer reach it with ``NotificationsService.of(daemon)``.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

import aiohttp

from tierd import __version__
from tierd.core.events import Consumer, Event
from tierd.core.ids import new_id
from tierd.core.service import PluginService

from . import store
from .compiled import Compiled
from .dispatch import Dispatcher, Metrics
from .intake import ingest

if TYPE_CHECKING:
    from tierd.core.daemon import Daemon

log = logging.getLogger("tierd.notifications")


class NotificationsService(PluginService):
    name = "notifications"

    def __init__(self, daemon: Daemon) -> None:
        super().__init__(daemon)
        self.section = daemon.config["notifications"]
        self.http: aiohttp.ClientSession | None = None
        self.compiled: Compiled | None = None
        self.metrics = Metrics(daemon.metrics)
        self.dispatcher = Dispatcher(
            daemon.db,
            daemon.clock,
            self.metrics,
            lambda: self.compiled,
            self.section["max_in_flight"],
            self.section["poll_interval"],
            self.section["max_in_flight_per_channel"],
        )
        self.task: asyncio.Task | None = None

    @property
    def current(self) -> Compiled:
        """The compiled section in use: made by start(), before events or requests come."""
        if self.compiled is None:
            raise RuntimeError("the notifications service has not started")
        return self.compiled

    async def start(self) -> None:
        # One HTTP session for every channel: connection pooling across sends.
        self.http = aiohttp.ClientSession(headers={"User-Agent": f"tierd/{__version__} notifications"})
        self.compiled = Compiled(self.section, self.daemon.registries, self.http)
        self.task = self.daemon.spawn(self.dispatcher.run(self.daemon.stopping), name="notifications:dispatcher")
        log.info(
            "notifications: %d channel(s), %d top-level route(s)",
            len(self.compiled.channels),
            len(self.compiled.tree.root.children),
        )

    def consumer(self) -> Consumer:
        return Consumer(name="notifications", handle=self.handle, batch_size=500)

    async def handle(self, events: list[Event]) -> None:
        result = await ingest(self.daemon.db, self.current, [e.to_json() for e in events], self.daemon.clock.time())
        for channel, n in result.muted.items():
            self.metrics.muted.labels(channel).inc(n)
        for channel, n in result.throttled.items():
            self.metrics.throttled.labels(channel).inc(n)
        if result.pending or result.grouped:
            self.dispatcher.wake()

    async def send(
        self,
        channel: str,
        subject: str,
        body: str,
        *,
        tenant: str = "",
        severity: str = "info",
        html: str | None = None,
        attachments: list[dict] | None = None,
        key: str | None = None,
    ) -> str:
        """Queue a message to a configured channel, durably, for another plugin (a
        report's schedule); returns the notification's id.

        ``attachments``: files as ``{"filename", "path", "media_type"}``, read when the
        message is sent (keep them until then; on PostgreSQL, where another node may
        send it, read now and kept in the database with the message): the email channel attaches them, other
        channels send the text alone, so say in ``body`` what the files hold. ``key``
        makes the call idempotent: a second call with the same key queues nothing and
        returns the first message's id. LookupError for a channel that is not configured.
        """
        if channel not in self.current.channels:
            known = ", ".join(sorted(self.current.channels)) or "none"
            raise LookupError(f"no notification channel {channel!r} (configured: {known})")
        now = self.daemon.clock.time()
        contents: list[bytes] = []
        if attachments and self.daemon.db.dialect == "postgresql":
            # Another node may send it: the files' bytes go into the database with
            # the message (SQLite's one node reads them from their paths when it sends).
            attachments, contents = await asyncio.to_thread(_stored_copies, attachments)
        row = {
            "id": new_id(store.ID_PREFIX),
            "tenant_id": tenant,
            "kind": "message",
            "dedup_key": key,
            "channel": channel,
            "status": "pending",
            "subject": subject,
            "body": body,
            "html": html,
            "severity": severity,
            "attachments": attachments or None,
            "next_attempt_at": now,
            "created_at": now,
        }
        async with self.daemon.db.transaction() as tx:
            inserted = await store.insert_notification(tx, row)
            if inserted and contents:
                await store.store_files(tx, str(row["id"]), contents)
            if not inserted and key is not None:
                found = await store.id_by_dedup_key(tx, key)
                if found is not None:
                    return found
        self.dispatcher.wake()
        return str(row["id"])

    async def reload(self, config: dict) -> None:
        """Switch to a new config; rows in flight keep their rendered text."""
        old = self.compiled
        self.section = config["notifications"]
        self.compiled = Compiled(self.section, self.daemon.registries, self.http)
        self.dispatcher.max_in_flight = self.section["max_in_flight"]
        self.dispatcher.max_per_channel = self.section["max_in_flight_per_channel"]
        self.dispatcher.poll_interval = self.section["poll_interval"]
        if old is not None:
            await old.close()
        self.dispatcher.wake()

    async def purge(self) -> None:
        n = await store.purge(self.daemon.db, self.daemon.clock.time() - self.section["retention"])
        if n:
            log.info("notifications: deleted %d finished notification(s) past retention", n)

    async def stop(self) -> None:
        # daemon.stopping is set: let the dispatcher finish the batch it is
        # sending before the HTTP session goes away (unsent rows stay pending).
        if self.task is not None and not self.task.done():
            await asyncio.wait([self.task], timeout=self.daemon.config["server"].get("shutdown_grace", 10))
        if self.compiled is not None:
            await self.compiled.close()
        if self.http is not None:
            await self.http.close()


def _stored_copies(attachments: list[dict]) -> tuple[list[dict], list[bytes]]:
    """The items of ``attachments`` to keep in the message's row (``stored``: the bytes
    are in ``notification_files`` at the item's position) and the bytes; a file that
    cannot be read now keeps its path (the send says it is gone, as on SQLite)."""
    items, contents = [], []
    for item in attachments:
        try:
            with open(item["path"], "rb") as f:
                content = f.read()
        except OSError:
            items.append(item)
            contents.append(b"")
            continue
        items.append({"filename": item["filename"], "media_type": item.get("media_type"), "stored": True})
        contents.append(content)
    return items, contents
