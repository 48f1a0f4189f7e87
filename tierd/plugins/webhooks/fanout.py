"""Prepare: events into delivery rows, one per (event, subscribed endpoint).

The body of a delivery is built here once, so every retry sends the very
same bytes (its signature changes with the timestamp, the body never).
"""

from __future__ import annotations

import json

from tierd.core.clock import parse_iso
from tierd.core.events import Event
from tierd.core.ids import new_ids

from .endpoints import EndpointInfo
from .store import DELIVERY_ID


def payload_of(event_type: str, timestamp: str, data: dict) -> str:
    """The request body, built once: retries send the very same bytes."""
    return json.dumps({"type": event_type, "timestamp": timestamp, "data": data}, separators=(",", ":"))


def delivery_rows(matched: list[tuple[Event, list[EndpointInfo]]], due_at: float) -> tuple[list, list]:
    """Rows for :meth:`Store.create_deliveries` (not claimed), one per (event,
    endpoint), and the endpoint of each row."""
    ids = iter(new_ids(DELIVERY_ID, sum(len(endpoints) for _, endpoints in matched)))
    rows, targets = [], []
    for event, endpoints in matched:
        # Built once per event, shared by its deliveries.
        payload, created_at = payload_of(event.type, event.created_at, event.data), parse_iso(event.created_at)
        for endpoint in endpoints:
            rows.append(
                [next(ids), event.tenant, endpoint.id, event.id, event.type, payload, due_at, created_at, False]
            )
            targets.append(endpoint)
    return rows, targets
