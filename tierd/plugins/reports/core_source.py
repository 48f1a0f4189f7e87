"""``core.events``: core's event log as a report source.

Core never imports a plugin, so the reports plugin declares core's table for
it (the shell registers :data:`EVENTS` through ``tierd_register_report_sources``).
"""

from __future__ import annotations

from tierd.core.registry import Column, ReportDefinition, ReportSource

EVENTS = ReportSource(
    name="core.events",
    description="Every event published, one row each (the event log)",
    sql=(
        "SELECT e.tenant_id AS tenant, e.seq AS seq, e.id AS event_id, e.type AS type,"
        " e.idempotency_key AS idempotency_key, e.created_at AS created_at FROM events e"
    ),
    columns=(
        Column("seq", "integer", "Position in the event log"),
        Column("event_id", "text", "The event's id"),
        Column("type", "text", "The event type (e.g. invoice.paid)"),
        Column("idempotency_key", "text", "The key the publisher gave to make it idempotent, if any"),
        Column("created_at", "instant", "When the event was accepted"),
    ),
)

SOURCES = (EVENTS,)

EVENT_VOLUME_SPEC = {
    "title": "Event volume",
    "description": "Events accepted per tenant, type and day (the admin's: across tenants)",
    "source": "core.events",
    "parameters": {
        "from": {"type": "date", "default": "last_30_days", "description": "First day"},
        "to": {"type": "date", "default": "today", "description": "Last day (included)"},
        "type": {"type": "text", "description": "Only this event type"},
    },
    "filters": ["created_at >= :from", "created_at <= :to", "type = :type"],
    "columns": [
        "tenant",
        "type",
        {"name": "day", "expr": "day(created_at)", "description": "The day (in the report's time zone)"},
        {"name": "events", "expr": "count()", "description": "Events accepted"},
    ],
    "group_by": ["tenant", "type", "day"],
    "order_by": ["day", "tenant", "type"],
    "chart": {"type": "line", "x": "day", "y": ["events"]},
}

EVENT_VOLUME = ReportDefinition(name="event_volume", spec=EVENT_VOLUME_SPEC)

#: What the reports plugin registers for core (core never imports a plugin).
REPORTS = (EVENT_VOLUME,)
