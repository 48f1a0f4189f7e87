"""Every endpoint in memory, for the hot paths (matching events, sending).

The consumer matches each event against the tenant's enabled endpoints and
the dispatcher needs each endpoint's URL, headers, secrets and limits for
every request. Reading them from SQLite for every batch costs a round trip
to the database thread each time; endpoints are few and change only through
this module's API (which calls :meth:`EndpointCache.forget`), so one process
can keep them all and reload only what changed.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json

from .store import Store, endpoint_matches, signing_secrets

#: (tenant, event type) pairs whose matching endpoints are remembered.
MATCH_CACHE_SIZE = 10_000


@dataclasses.dataclass
class EndpointInfo:
    id: str
    tenant_id: str
    url: str
    headers: dict
    event_types: list[str]
    enabled: bool
    rate_limit: float | None
    secret: str
    previous_secret: str | None
    previous_secret_until: float | None

    @classmethod
    def from_row(cls, row) -> "EndpointInfo":
        return cls(row["id"], row["tenant_id"], row["url"], json.loads(row["headers"]),
                   json.loads(row["event_types"]), bool(row["enabled"]), row["rate_limit"], row["secret"],
                   row["previous_secret"], row["previous_secret_until"])

    def secrets(self, now: float) -> list[str]:
        return signing_secrets(self.secret, self.previous_secret, self.previous_secret_until, now)


class EndpointCache:
    def __init__(self, store: Store):
        self.store = store
        self.by_id: dict[str, EndpointInfo] = {}
        self.by_tenant: dict[str, list[EndpointInfo]] = {}
        self._dirty: set[str] = set()
        self._loaded = False
        self._matches: dict[tuple[str, str], list[EndpointInfo]] = {}
        self._lock = asyncio.Lock()

    def forget(self, endpoint_id: str) -> None:
        """An endpoint was created, changed or deleted: reload it before its next use."""
        self._dirty.add(endpoint_id)

    async def refresh(self) -> None:
        """Load what changed since the last refresh; on return, every endpoint
        marked by :meth:`forget` before the call is current."""
        if self._loaded and not self._dirty and not self._lock.locked():
            return  # the hot path: nothing changed, nobody is loading
        # One refresh at a time: a caller that came while another was loading
        # must wait for it (its marks were taken by that one), else it would
        # match events against endpoints that are not loaded yet.
        async with self._lock:
            await self._refresh()

    async def _refresh(self) -> None:
        if not self._loaded:
            # Forget marks made while loading stay for the next refresh.
            self._dirty = set()
            rows = await self.store.load_endpoints()
            self.by_id = {row["id"]: EndpointInfo.from_row(row) for row in rows}
            self._loaded = True
        elif self._dirty:
            ids, self._dirty = self._dirty, set()
            found = {row["id"]: EndpointInfo.from_row(row) for row in await self.store.load_endpoints(sorted(ids))}
            for endpoint_id in ids:
                if endpoint_id in found:
                    self.by_id[endpoint_id] = found[endpoint_id]
                else:
                    self.by_id.pop(endpoint_id, None)
        else:
            return
        self.by_tenant = {}
        for info in self.by_id.values():
            self.by_tenant.setdefault(info.tenant_id, []).append(info)
        self._matches = {}

    def matching(self, tenant: str, event_type: str) -> list[EndpointInfo]:
        """Enabled endpoints of ``tenant`` subscribed to ``event_type``.

        Remembered per (tenant, type) until the endpoints change: a tenant
        sends few distinct types, and may have many endpoints to test.
        """
        key = (tenant, event_type)
        found = self._matches.get(key)
        if found is None:
            if len(self._matches) >= MATCH_CACHE_SIZE:
                self._matches.clear()
            found = self._matches[key] = [e for e in self.by_tenant.get(tenant, ())
                                          if e.enabled and endpoint_matches(e.event_types, event_type)]
        return found

    def is_rate_limited(self, endpoint_id: str) -> bool:
        endpoint = self.by_id.get(endpoint_id)
        return bool(endpoint and endpoint.rate_limit)

    def rate_limited(self) -> list[EndpointInfo]:
        return [e for e in self.by_id.values() if e.enabled and e.rate_limit]
