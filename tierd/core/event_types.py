"""The event-type catalogue (``GET /v1/event-types``, ``tierd events types``).

It lists the types plugins declare (``tierd_register_event_types``), with
their description, severity, flags and data schema, as Svix's event-type
catalogue does; and, for a tenant, its own free-form types (``invoice.paid``)
as seen in its events. Those need no declaration: they are found by reading
the tenant's latest :data:`SEEN_WINDOW` events along the (tenant, time) index,
a bounded read that costs publishing nothing (no table kept up to date at
intake). A type the tenant has not used within its latest events is not listed.
"""

from __future__ import annotations

from tierd.core.clock import iso
from tierd.core.registry import EventType, Registries
from tierd.core.storage import Database

#: How many of a tenant's latest events the "as seen" types are read from.
SEEN_WINDOW = 10_000

#: A tenant's types among its latest events, with when each was last seen.
#: Walks the events_tenant_time index backwards from the newest, LIMIT rows at most.
SEEN_SQL = (
    "SELECT type, MAX(created_at) AS last_seen FROM "
    "(SELECT type, created_at FROM events WHERE tenant_id=? ORDER BY created_at DESC LIMIT ?) GROUP BY type"
)


def declared_entry(event_type: EventType, plugin: str | None) -> dict:
    """A declared type as the catalogue shows it."""
    return {
        "name": event_type.name,
        "description": event_type.description,
        "declared": True,
        "plugin": plugin,
        "severity": event_type.severity,
        "operator_alert": event_type.operator_alert,
        "webhook": event_type.webhook,
        "data_schema": event_type.data_schema,
        "last_seen_at": None,
    }


def seen_entry(name: str) -> dict:
    """A tenant's own type: nothing declared, sent as webhooks, notified as info."""
    return {
        "name": name,
        "description": "",
        "declared": False,
        "plugin": None,
        "severity": "info",
        "operator_alert": False,
        "webhook": True,
        "data_schema": None,
        "last_seen_at": None,
    }


async def seen_types(db: Database, tenant: str, window: int = SEEN_WINDOW) -> dict[str, float]:
    """Type -> unix time last seen, among the tenant's latest ``window`` events."""
    rows = await db.fetchall(SEEN_SQL, (tenant, window))
    return {row["type"]: row["last_seen"] for row in rows}


async def catalogue(registries: Registries, db: Database, tenant: str | None) -> list[dict]:
    """Every declared type, and ``tenant``'s own as seen (none for None), by name."""
    entries = {
        name: declared_entry(t, registries.origins.get(f"event_types:{name}"))
        for name, t in registries.event_types.items()
    }
    if tenant is not None:
        for name, last_seen in (await seen_types(db, tenant)).items():
            entry = entries.get(name) or entries.setdefault(name, seen_entry(name))
            entry["last_seen_at"] = iso(last_seen)
    return [entries[name] for name in sorted(entries)]
