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
import logging
import math
from typing import TYPE_CHECKING

from tierd.core.events import type_matches

from .signing import signature_header, signing_secrets
from .transform import Transform, transform_of

if TYPE_CHECKING:
    from .store import Store

log = logging.getLogger("tierd.webhooks")

#: (tenant, event type) pairs whose matching endpoints are remembered.
MATCH_CACHE_SIZE = 10_000
#: The highest ``rate_limit`` (requests per second) an endpoint may have.
MAX_RATE_LIMIT = 10_000


def usable_rate_limit(value) -> float | None:
    """A stored ``rate_limit`` as the dispatcher applies it: None (no limit),
    or a rate within (0, MAX_RATE_LIMIT]; ValueError for anything else.

    The API refuses rates out of range; rows written before it did (or by
    hand) may hold any number: a rate above the maximum acts as the maximum.
    """
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or math.isnan(value) or value <= 0:
        raise ValueError(f"rate_limit {value!r} is not a positive number")
    return float(min(value, MAX_RATE_LIMIT))


def endpoint_matches(event_types: list[str], event_type: str) -> bool:
    """An empty filter means every event type."""
    return not event_types or any(type_matches(p, event_type) for p in event_types)


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
    #: What reshapes its deliveries (``transform.py``), None for none.
    transform: Transform | None = dataclasses.field(default=None, kw_only=True)
    #: ``ordering: fifo``: one delivery in flight at a time, in event order (``ordering.py``).
    fifo: bool = False

    @classmethod
    def from_row(cls, row) -> EndpointInfo:
        headers, event_types = json.loads(row["headers"]), json.loads(row["event_types"])
        if not isinstance(headers, dict) or not isinstance(event_types, list):
            raise ValueError("headers or event_types are not an object and a list")
        try:
            signature_header([row["secret"]], "msg_check", 0, b"")  # what every attempt will do
        except Exception:
            raise ValueError("the stored signing secret cannot sign") from None  # never the secret itself
        return cls(
            row["id"],
            row["tenant_id"],
            row["url"],
            headers,
            event_types,
            bool(row["enabled"]),
            usable_rate_limit(row["rate_limit"]),
            row["secret"],
            row["previous_secret"],
            row["previous_secret_until"],
            row["ordering"] == "fifo",
        )

    def secrets(self, now: float) -> list[str]:
        return signing_secrets(self.secret, self.previous_secret, self.previous_secret_until, now)


class EndpointCache:
    def __init__(self, store: Store):
        self.store = store
        self.by_id: dict[str, EndpointInfo] = {}
        self.by_tenant: dict[str, list[EndpointInfo]] = {}
        self._dirty: set[str] = set()
        #: Endpoints whose stored row cannot be used (id -> why): no delivery
        #: is made or sent for them until the API changes them; the others go on.
        self.unusable: dict[str, str] = {}
        self._loaded = False
        self._matches: dict[tuple[str, str], list[EndpointInfo]] = {}
        self._lock = asyncio.Lock()
        #: Ids of the fifo endpoints: the dispatcher claims their heads
        #: apart (empty: the unordered paths pay nothing for ordering).
        self.fifo: frozenset[str] = frozenset()

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
            self.unusable = {}
            self.by_id = self._infos(await self.store.load_endpoints())
            self._loaded = True
        elif self._dirty:
            ids, self._dirty = self._dirty, set()
            for endpoint_id in ids:
                self.unusable.pop(endpoint_id, None)
            found = self._infos(await self.store.load_endpoints(sorted(ids)))
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
        self.fifo = frozenset(e.id for e in self.by_id.values() if e.fifo)

    def _infos(self, rows) -> dict[str, EndpointInfo]:
        """The usable endpoints of ``rows``; the others are logged and kept in :attr:`unusable`."""
        infos = {}
        for row in rows:
            try:
                infos[row["id"]] = info = EndpointInfo.from_row(row)
                info.transform = transform_of(row)  # a template that no longer compiles: unusable
            except Exception as exc:  # one bad row must not stop every tenant's webhooks
                self.unusable[row["id"]] = why = f"{type(exc).__name__}: {exc}"
                log.error(
                    "webhook endpoint %s of tenant %s cannot be used, its deliveries wait until it is "
                    "changed through the API: %s",
                    row["id"],
                    row["tenant_id"],
                    why,
                )
        return infos

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
            found = self._matches[key] = [
                e for e in self.by_tenant.get(tenant, ()) if e.enabled and endpoint_matches(e.event_types, event_type)
            ]
        return found

    def is_rate_limited(self, endpoint_id: str) -> bool:
        endpoint = self.by_id.get(endpoint_id)
        return bool(endpoint and endpoint.rate_limit)

    def rate_limited(self) -> list[EndpointInfo]:
        return [e for e in self.by_id.values() if e.enabled and e.rate_limit and e.id not in self.unusable]
