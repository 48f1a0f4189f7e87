"""Disabling endpoints: one that answered 410 Gone, or whose deliveries have
all failed for ``webhooks.disable_after`` (the minute job)."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

from .endpoints import EndpointCache
from .store import Store

log = logging.getLogger("tierd.webhooks")


class Disabler:
    def __init__(
        self,
        store: Store,
        endpoints: EndpointCache,
        clock,
        settings: Callable[[], dict],
        on_disabled: Callable[[dict, str], Awaitable[None]] | None = None,
    ):
        self.store = store
        self.endpoints = endpoints
        self.clock = clock
        self.settings = settings
        #: Called as ``await on_disabled(endpoint, reason)`` after an endpoint was disabled.
        self.on_disabled = on_disabled

    async def disable(self, endpoint_id: str, reason: str) -> bool:
        """Disable an endpoint and tell the bus; False if it was not enabled."""
        endpoint = await self.store.disable_endpoint(endpoint_id, reason, self.clock.time())
        self.endpoints.forget(endpoint_id)
        if endpoint is None:
            return False
        log.warning("webhook endpoint %s of tenant %s disabled: %s", endpoint_id, endpoint["_tenant_id"], reason)
        if self.on_disabled is not None:
            await self.on_disabled(endpoint, reason)
        await self.store.announce_endpoint(endpoint_id)  # the other nodes' caches
        return True

    async def disable_failing(self) -> int:
        """Disable endpoints whose deliveries have all failed for ``disable_after``."""
        disable_after = self.settings()["disable_after"]
        reason = f"every delivery failed for more than {disable_after / 86400:g} days"
        count = 0
        for endpoint_id in await self.store.endpoints_failing_since(self.clock.time() - disable_after):
            count += await self.disable(endpoint_id, reason)
        return count
