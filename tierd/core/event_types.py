"""The event-type catalogue (``GET /v1/event-types``, ``tierd events types``).

It lists the types plugins declare (``tierd_register_event_types``), with
their description, severity, flags and data schema, as Svix's event-type
catalogue does; and, for a tenant, its own free-form types (``invoice.paid``)
as seen in its events. Those need no declaration: they are found with one
index seek per type (:data:`SEEN_SQL`), a read that costs publishing nothing
(no table kept up to date at intake) and the same at any size of the log.
"""

from __future__ import annotations

from tierd.core.clock import iso
from tierd.core.registry import EventType, Registries
from tierd.core.storage import Database

#: At most this many of a tenant's own types are listed.
SEEN_MOST = 10_000

#: Every type a tenant has in the log, with when it was last seen: a "loose
#: index scan" of events_tenant_type (tenant_id, type, seq), one seek for each
#: next type and one for its newest event, so the cost is the number of types,
#: not of events.
#: (A counter bounds the recursion: PostgreSQL has no LIMIT in a recursive term.)
SEEN_SQL = (
    "WITH RECURSIVE t(type, n) AS ("
    " SELECT (SELECT MIN(type) FROM events WHERE tenant_id=:tenant), 1"
    " UNION ALL"
    " SELECT (SELECT MIN(type) FROM events WHERE tenant_id=:tenant AND type>t.type), t.n + 1"
    " FROM t WHERE t.type IS NOT NULL AND t.n < :most"
    ") SELECT type, (SELECT created_at FROM events WHERE tenant_id=:tenant AND type=t.type"
    " ORDER BY seq DESC LIMIT 1) AS last_seen FROM t WHERE type IS NOT NULL"
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


async def seen_types(db: Database, tenant: str, most: int = SEEN_MOST) -> dict[str, float]:
    """Type -> unix time last seen, of every type in the tenant's log (at most ``most``)."""
    rows = await db.fetchall(SEEN_SQL, {"tenant": tenant, "most": most})
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
