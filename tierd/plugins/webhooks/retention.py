"""Retention: attempts and finished deliveries older than ``webhooks.retention``
are deleted (the hourly job), in slices that leave the writer to intake
(see ``Store.prune``)."""

from __future__ import annotations

import logging
from collections.abc import Callable

from .store import Store

log = logging.getLogger("tierd.webhooks")


class Retention:
    def __init__(self, store: Store, clock, settings: Callable[[], dict]):
        self.store = store
        self.clock = clock
        self.settings = settings

    async def prune(self) -> int:
        removed = await self.store.prune(self.clock.time() - self.settings()["retention"])
        if removed:
            log.info("webhooks retention: pruned %d old attempts and finished deliveries", removed)
        return removed
