"""What the ``notifications`` section compiles into: the routing tree, channel
instances, time intervals, templates and the retry schedule. Rebuilt on
reload (the service swaps it whole); pure except for channel objects.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

from tierd.core.registry import EventType
from tierd.core.retry import exponential_schedule
from tierd.core.schema import validate

from .config import validate_channel
from .routing import ROUTE_SCHEMA, RoutingTree
from .silences import TimeIntervals
from .templates import TemplateSpec

log = logging.getLogger("tierd.notifications")

OPERATOR_ROUTE = "operator_alerts"


def operator_route(section: dict, event_types: Mapping[str, EventType]) -> dict | None:
    """The route ``operator_alerts: CHANNEL(S)`` stands for, or None when off.

    It takes the event types their plugins declare as operator alerts.
    """
    target = section.get("operator_alerts")
    alerts = sorted(name for name, t in event_types.items() if t.operator_alert)
    if not target or not alerts:
        return None
    channels = [target] if isinstance(target, str) else list(target)
    clean, errors = validate(
        ROUTE_SCHEMA,
        {
            "name": OPERATOR_ROUTE,
            "match": {"type": alerts},
            "channels": channels,
            # A storm of delivery failures becomes one message per type and tenant.
            "group_by": ["type"],
            "group_wait": section.get("operator_group_wait", 30.0),
            "group_interval": 300.0,
            "repeat_interval": 4 * 3600.0,
            # Operator alerts never take events away from the admin's own routes.
            "continue": True,
        },
    )
    assert not errors, errors
    return clean


def build_tree(section: dict, event_types: Mapping[str, EventType]) -> RoutingTree:
    """The routing tree of ``section``; ``event_types``: the declared ones, by name."""
    op = operator_route(section, event_types)
    return RoutingTree(section.get("routes") or [], first=[op] if op else [])


class Compiled:
    """The configured notification setup, ready to route and send."""

    def __init__(self, section: dict, registries, http=None):
        self.section = section
        self.event_types = registries.event_types
        self.tree = build_tree(section, self.event_types)
        self.intervals = TimeIntervals(section.get("time_intervals"))
        self.retry = section.get("retry") or {"max_attempts": 8, "backoff": 10.0, "max_backoff": 3600.0}
        #: Delay before each attempt (core's retry policy): at once, then ``backoff`` doubled up to ``max_backoff``.
        self.retry_schedule = exponential_schedule(
            self.retry["backoff"], self.retry["max_backoff"], self.retry["max_attempts"]
        )
        self.channels = {}
        self.channel_templates = {}
        for name, instance in (section.get("channels") or {}).items():
            clean, errors = validate_channel(registries, name, instance)
            if errors:  # the config was validated already; this is a programming error
                raise ValueError(f"channel {name}: {errors}")
            cls = registries.channels[instance["type"]]
            self.channels[name] = cls(name, clean, http)
            self.channel_templates[name] = {k: instance.get(k) for k in ("subject", "body", "html")}

    def templates(self, route_settings: dict | None, channel: str) -> TemplateSpec:
        """Route templates win over channel templates, which win over the event type's defaults."""
        return TemplateSpec.pick(route_settings, self.channel_templates.get(channel), event_types=self.event_types)

    def severity(self, route_settings: dict | None, event_type: str) -> str:
        """The route's severity, else the one the event type is declared with."""
        declared = self.event_types.get(event_type)
        return (route_settings or {}).get("severity") or (declared.severity if declared else "info")

    async def close(self) -> None:
        for channel in self.channels.values():
            try:
                await channel.close()
            except Exception:  # a third-party close() must not stop shutdown
                log.exception("closing channel %s failed", channel.name)
