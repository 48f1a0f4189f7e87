"""The ``notifications`` config section: its schema and cross-field checks.

Each channel instance is validated by its type's own ``schema`` (a third
party's channel type included), templates are compiled so that a syntax
error is a config error, and route references (channels, time intervals)
must exist. See ``config.example.yaml`` for a commented example.
"""

from __future__ import annotations

from tierd.core.schema import Duration, Int, List, Map, Obj, OneOf, Str, validate

from .routing import ROUTE_SCHEMA, route_errors
from .silences import TIME_INTERVALS_SCHEMA
from .templates import check_template

#: Keys every channel instance may have, besides its type's own.
COMMON_CHANNEL_KEYS = ("type", "subject", "body", "html")

#: Out of the box the daemon's own alerts go to its log, as config/tierd.yaml says: the default
#: channels are this one, and operator_alerts left out means it whenever a channel has its name.
JOURNAL = "journal"
DEFAULT_CHANNELS = {JOURNAL: {"type": "log"}}


def channel_type_config(instance: dict) -> dict:
    """An instance's config without the keys that belong to tierd, not its type."""
    return {k: v for k, v in instance.items() if k not in COMMON_CHANNEL_KEYS}


def validate_channel(registries, name: str, instance: dict, path: tuple = ()):
    """(clean type config, errors as (subpath, message)) of one channel instance."""
    errors = []
    type_name = instance.get("type")
    cls = registries.channels.get(type_name) if registries is not None else None
    if cls is None:
        known = ", ".join(sorted(registries.channels)) if registries is not None else ""
        return None, [(path + ("type",), f"unknown channel type {type_name!r} (known: {known})")]
    clean, schema_errors = ({}, []) if cls.schema is None else validate(cls.schema, channel_type_config(instance), path)
    errors += [(e.path, e.message) for e in schema_errors]
    for key in ("subject", "body", "html"):
        if instance.get(key):
            if not isinstance(instance[key], str):
                errors.append((path + (key,), "expected a string (a Jinja2 template)"))
            elif err := check_template(instance[key]):
                errors.append((path + (key,), err))
    return clean, errors


class _Section(Obj):
    """The section; ``operator_alerts`` left out means the ``journal`` channel, if there is one."""

    def convert(self, value, path, errors):
        if isinstance(value, dict) and "operator_alerts" not in value:
            channels = value.get("channels", DEFAULT_CHANNELS)
            if isinstance(channels, dict) and JOURNAL in channels:
                value = {**value, "operator_alerts": JOURNAL}
        return super().convert(value, path, errors)


def make_schema(registries) -> Obj:
    """The section schema; ``registries`` gives the channel types to validate against."""

    def check(value: dict) -> list:
        errors = []
        channels = value.get("channels") or {}
        for name, instance in channels.items():
            errors += validate_channel(registries, name, instance, ("channels", name))[1]
        names = set(channels)
        errors += route_errors(value.get("routes") or [], names, set(value.get("time_intervals") or {}))
        op = value.get("operator_alerts")
        for name in [op] if isinstance(op, str) else op or []:
            if name not in names:
                errors.append((("operator_alerts",), f"unknown channel {name!r}"))
        return errors

    return _Section(
        {
            "channels": Map(
                Obj(
                    {"type": Str(required=True, doc="Channel type (email, slack, teams, ntfy, webhook, log, ...)")},
                    extra=True,
                ),
                default=DEFAULT_CHANNELS,
                doc="Named channel instances",
            ),
            "routes": List(ROUTE_SCHEMA, default=[], doc="The routing tree (first match wins unless continue)"),
            "time_intervals": Map(TIME_INTERVALS_SCHEMA, default={}, doc="Named weekday/hour windows"),
            "operator_alerts": OneOf(
                Str(),
                List(Str()),
                default=None,
                doc="Channel(s) receiving the daemon's own alerts (the event types their"
                " plugins declare as operator alerts: `tierd events types`); default:"
                " journal if defined, [] for none",
            ),
            "operator_group_wait": Duration(default="30s", doc="Group window of operator alerts"),
            "retry": Obj(
                {
                    "max_attempts": Int(default=8, min=1, doc="Attempts before a notification is failed"),
                    "backoff": Duration(default="10s", doc="First retry delay, doubled each attempt"),
                    "max_backoff": Duration(default="1h", doc="Upper bound of a retry delay"),
                }
            ),
            "max_in_flight": Int(default=50, min=1, doc="Concurrent sends"),
            "max_in_flight_per_channel": Int(
                default=10, min=1, doc="Concurrent sends to one channel (a slow one cannot take every slot)"
            ),
            "poll_interval": Duration(default="1s", min="10ms", doc="Dispatcher tick when idle"),
            "retention": Duration(default="30d", doc="Finished notifications older than this are deleted"),
        },
        check=check,
    )
