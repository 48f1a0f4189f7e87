"""The running webhooks of one daemon: store, endpoint cache, dispatcher, jobs, consumer.

Made by ``tierd_services`` and kept in core's service slot; hook
implementations in ``__init__`` and route handlers in ``api`` reach it with
``WebhooksService.of(daemon)``.
"""

from __future__ import annotations

from tierd.core.events import Event
from tierd.core.service import PluginService

from .disabling import Disabler
from .dispatch import Dispatcher
from .endpoints import EndpointCache, endpoint_matches
from .event_types import DELIVERY_FAILED, ENDPOINT_DISABLED
from .fanout import delivery_rows
from .metrics import WebhookMetrics
from .outcome import FollowUps
from .purge import Purger
from .records import Claimed
from .retention import Retention
from .store import ENDPOINTS_CHANNEL, Store

#: Events read from the log per statement when replaying.
REPLAY_PAGE = 1000


class WebhooksService(PluginService):
    name = "webhooks"

    def __init__(self, daemon):
        super().__init__(daemon)
        self.store = Store(daemon.db)
        self.endpoints = EndpointCache(self.store)
        self.metrics = WebhookMetrics(daemon.metrics)
        self.metrics.unusable.set_function(lambda: len(self.endpoints.unusable))  # read at each scrape
        self.disabler = Disabler(
            self.store, self.endpoints, daemon.clock, lambda: self.settings, on_disabled=self._disabled
        )
        follow_ups = FollowUps(
            self.disabler.disable, on_failed=self._failed, on_error=self.metrics.dispatch_errors.labels("follow_up").inc
        )
        self.dispatcher = Dispatcher(daemon, self.store, self.endpoints, self.metrics, self.settings, follow_ups)
        self.retention = Retention(self.store, daemon.clock, lambda: self.settings)
        #: Removes the history of deleted endpoints in the background (``purge.py``).
        self.purger = Purger(daemon, self.store)
        #: Never sent as webhooks: the event types their plugins declare so
        #: (ours: the tenant's own API calls, and failures that would feed on themselves).
        self.never_sent = frozenset(t.name for t in daemon.registries.event_types.values() if not t.webhook)

    @property
    def settings(self) -> dict:
        return self.daemon.config["webhooks"]

    async def start(self) -> None:
        # Other nodes' changes to endpoints (PostgreSQL's NOTIFY; nothing on SQLite).
        await self.daemon.db.listen(ENDPOINTS_CHANNEL, self._changed_elsewhere)
        await self.dispatcher.start()
        self.purger.start()  # goes on with what a stop or crash cut short

    async def reload(self, config: dict) -> None:
        self.dispatcher.configure(config["webhooks"])

    async def stop(self) -> None:
        await self.purger.stop()
        grace = max(0.5, self.daemon.config["server"]["shutdown_grace"] - 1)
        await self.dispatcher.stop(grace=min(grace, self.settings["timeout"]))

    async def update_metrics(self) -> None:
        await self.metrics.update(self.store, self.daemon.clock.time())

    async def consume(self, events: list[Event]) -> None:
        """The bus consumer: one delivery per (event, matching enabled endpoint).

        Deliveries the dispatcher has room for are stored already claimed and
        sent at once; the others are stored pending (see ``Dispatcher.reserve``).
        """
        await self.endpoints.refresh()
        now = self.daemon.clock.time()
        due_at = now + self.settings["retry_schedule"][0]
        matched = []
        for event in events:
            if event.type in self.never_sent:
                continue
            endpoints = self.endpoints.matching(event.tenant, event.type)
            if endpoints:
                matched.append((event, endpoints))
        rows, targets = delivery_rows(matched, due_at)
        if not rows:
            return
        dispatcher = self.dispatcher
        granted = dispatcher.reserve([row[2] for row in rows]) if due_at <= now else [False] * len(rows)
        for row, send_now in zip(rows, granted, strict=True):
            row[8] = send_now
        try:
            # On PostgreSQL the store may make a granted row pending after all
            # (its endpoint's cap is reached across the nodes): row[8] says.
            inserted = await self.store.create_deliveries(rows, now, cap=dispatcher.slots.cap)
        except BaseException:
            for row, send_now in zip(rows, granted, strict=True):
                if send_now:
                    dispatcher.release(row[2])
            raise
        for row, endpoint, send_now in zip(rows, targets, granted, strict=True):
            if not row[8]:
                if send_now:
                    dispatcher.release(row[2])
                continue
            seq = inserted.get(row[0])
            if seq is None:  # a duplicate of a delivery made before: not sent again
                dispatcher.release(row[2])
                continue
            dispatcher.launch(
                Claimed(
                    seq,
                    row[0],
                    row[1],
                    row[2],
                    row[4],
                    row[5],
                    0,
                    row[7],
                    endpoint.url,
                    endpoint.headers,
                    endpoint.secrets(now),
                    transform=endpoint.transform,
                )
            )
        if len(inserted) > sum(1 for row in rows if row[8]):
            self.dispatcher.wake()  # pending rows for the loop to claim

    async def replay(self, endpoint: dict, since: float, until: float | None) -> dict:
        """Deliveries for the events of ``[since, until)`` that ``endpoint`` subscribes to and never got.

        For an endpoint created after the events, or one that was disabled
        while they happened (no delivery is made for a disabled endpoint).
        Events it already has a delivery for are skipped by the store's
        UNIQUE(endpoint_id, event_id): nothing is sent twice. Walks the event
        log (kept for ``storage.event_retention``) a page at a time, one insert
        per page; the rows are pending and due now, so the dispatcher sends
        them within the endpoint's limits.
        """
        self.endpoints.forget(endpoint["id"])  # as stored now (made or changed through another node a moment ago)
        await self.endpoints.refresh()
        info = self.endpoints.by_id[endpoint["id"]]
        scanned = queued = 0
        async for events in self.daemon.bus.span(endpoint["_tenant_id"], since, until, page=REPLAY_PAGE):
            scanned += len(events)
            wanted = [
                (e, [info])
                for e in events
                if e.type not in self.never_sent and endpoint_matches(info.event_types, e.type)
            ]
            now = self.daemon.clock.time()
            rows, _ = delivery_rows(wanted, now)
            queued += len(await self.store.create_deliveries(rows, now))
        if queued:
            self.dispatcher.wake()
        return {"events_scanned": scanned, "queued": queued}

    async def changed(self, endpoint: dict, change: str, actor: str, **details) -> None:
        """The API created, updated or deleted ``endpoint`` or rotated its secret.

        Reloads it, and publishes ``webhook.endpoint.<change>`` naming who did
        it: the event log keeps the audit trail, notifications can route it
        (a URL that changes is where events would leak to). Never a secret.
        """
        self.endpoints.forget(endpoint["id"])
        await self.store.announce_endpoint(endpoint["id"])  # the other nodes' caches
        self.dispatcher.wake()  # e.g. re-enabled: its pending deliveries are due
        if change == "deleted":
            self.purger.wake()  # its history is queued
        await self.daemon.bus.publish(
            endpoint["_tenant_id"],
            f"webhook.endpoint.{change}",
            {
                "endpoint_id": endpoint["id"],
                "url": endpoint["url"],
                "description": endpoint["description"],
                "actor": actor,
            }
            | details,
        )

    def _changed_elsewhere(self, endpoint_id: str) -> None:
        """Another node (or this one) changed an endpoint: reload it before its next use."""
        self.endpoints.forget(endpoint_id)
        self.dispatcher.wake()

    async def _failed(self, o) -> None:
        """Tell operators (through notifications) that a delivery gave up."""
        endpoint = await self.store.get_endpoint(o.tenant_id, o.endpoint_id)
        await self.daemon.bus.publish(
            o.tenant_id,
            DELIVERY_FAILED,
            {
                "delivery_id": o.delivery_id,
                "endpoint_id": o.endpoint_id,
                "url": endpoint["url"] if endpoint else None,
                "event_type": o.event_type,
                "attempts": o.attempts,
                "status_code": o.status_code,
                "error": o.error,
                "last_error": o.error,
            },
        )

    async def _disabled(self, endpoint: dict, reason: str) -> None:
        await self.daemon.bus.publish(
            endpoint["_tenant_id"],
            ENDPOINT_DISABLED,
            {
                "endpoint_id": endpoint["id"],
                "url": endpoint["url"],
                "reason": reason,
                "description": endpoint["description"],
            },
        )
