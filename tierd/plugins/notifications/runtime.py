"""What the config turns into: the routing tree, channel instances, time
intervals and templates. Rebuilt on reload; pure except for channel objects.
"""

from __future__ import annotations

import logging

from tierd.core.schema import validate

from .config import OPERATOR_EVENT_TYPES, validate_channel
from .routing import ROUTE_SCHEMA, RoutingTree
from .silences import TimeIntervals
from .templates import DEFAULT_SEVERITY, TemplateSpec

log = logging.getLogger("tierd.notifications")

OPERATOR_ROUTE = "operator_alerts"


def operator_route(section: dict) -> dict | None:
    """The route ``operator_alerts: CHANNEL(S)`` stands for, or None when off."""
    target = section.get("operator_alerts")
    if not target:
        return None
    channels = [target] if isinstance(target, str) else list(target)
    clean, errors = validate(ROUTE_SCHEMA, {
        "name": OPERATOR_ROUTE,
        "match": {"type": OPERATOR_EVENT_TYPES},
        "channels": channels,
        # A storm of delivery failures becomes one message per type and tenant.
        "group_by": ["type"],
        "group_wait": section.get("operator_group_wait", 30.0),
        "group_interval": 300.0,
        "repeat_interval": 4 * 3600.0,
        # Operator alerts never take events away from the admin's own routes.
        "continue": True,
    })
    assert not errors, errors
    return clean


def build_tree(section: dict) -> RoutingTree:
    op = operator_route(section)
    return RoutingTree(section.get("routes") or [], first=[op] if op else [])


class Runtime:
    """The configured notification setup, ready to route and send."""

    def __init__(self, section: dict, registries, http=None):
        self.section = section
        self.tree = build_tree(section)
        self.intervals = TimeIntervals(section.get("time_intervals"))
        self.retry = section.get("retry") or {"max_attempts": 8, "backoff": 10.0, "max_backoff": 3600.0}
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
        """Route templates win over channel templates, which win over the defaults."""
        return TemplateSpec.pick(route_settings, self.channel_templates.get(channel))

    @staticmethod
    def severity(route_settings: dict | None, event_type: str) -> str:
        return (route_settings or {}).get("severity") or DEFAULT_SEVERITY.get(event_type, "info")

    async def close(self) -> None:
        for channel in self.channels.values():
            try:
                await channel.close()
            except Exception:  # a third-party close() must not stop shutdown
                log.exception("closing channel %s failed", channel.name)
