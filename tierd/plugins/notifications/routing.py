"""The routing tree: which routes, and so which channels, an event reaches.

It works like Alertmanager's: an implicit root holds the configured
``routes``; an event walks down the tree; at each level the children are
tried in order and the first that matches wins, unless it says
``continue: true``, in which case its next siblings are tried too. A node
that matches but none of whose children match is a result. Children inherit
every setting their parent has and they do not set (channels, grouping,
throttle, time intervals, templates, severity), and refine ``match``: a
child only sees events its parent matched.

``match`` has three optional parts, all of which must hold::

    match:
      type: "invoice.*"             # or a list; * and prefix.* wildcards
      tenant: acme                  # or a list
      data:                         # conditions on data fields (dotted paths)
        amount: {gt: 1000}          # gt gte lt lte eq ne (numeric when both sides are numbers)
        currency: EUR               # a scalar means eq
        customer.country: {in: [DE, AT]}
        reference: {regex: "INV-[0-9]+"}   # full match
        note: {exists: true}

This module is pure (no I/O): the consumer and ``tierd notify routes test``
both call :meth:`RoutingTree.evaluate`.
"""

from __future__ import annotations

import dataclasses
import decimal
from collections.abc import Sequence
from typing import Any

import re2

from tierd.core.events import type_matches
from tierd.core.schema import Any as AnyField
from tierd.core.schema import Bool, Duration, Enum, Int, List, Map, Obj, OneOf, Str, did_you_mean, validate

from .templates import check_template

#: Settings a child inherits from its parent when it does not set them.
INHERITED = (
    "channels",
    "group_by",
    "group_wait",
    "group_interval",
    "repeat_interval",
    "throttle",
    "mute_time_intervals",
    "active_time_intervals",
    "subject",
    "body",
    "html",
    "severity",
)

#: The implicit root's settings: what a route gets when no ancestor set them.
ROOT_DEFAULTS = {
    "channels": [],
    "group_by": [],
    "group_wait": 30.0,
    "group_interval": 300.0,
    "repeat_interval": 4 * 3600.0,
    "throttle": None,
    "mute_time_intervals": [],
    "active_time_intervals": [],
    "subject": "",
    "body": "",
    "html": "",
    "severity": "",
}

OPERATORS = ("eq", "ne", "gt", "gte", "lt", "lte", "in", "not_in", "regex", "exists")

_STR_OR_LIST = OneOf(Str(), List(Str()), default=None)

MATCH_SCHEMA = Obj(
    {
        "type": _STR_OR_LIST,
        "tenant": _STR_OR_LIST,
        "data": Map(AnyField(), default={}, doc="field path -> value or {op: operand}"),
    },
    default={},
)

#: One route. ``None`` means "not set here: inherit". Children (``routes``)
#: are validated by :func:`route_errors` recursively, so that docs generated
#: from this schema stay finite.
ROUTE_SCHEMA = Obj(
    {
        "name": Str(default="", doc="Stable id of the route (history, grouping); default: its position"),
        "match": MATCH_SCHEMA,
        "channels": List(Str(), default=None, doc="Channel names; inherited when absent"),
        "group_by": List(Str(), default=None, doc="type, tenant or data.PATH; non-empty: digest grouping"),
        "group_wait": Duration(default=None, doc="Wait this long for more events before the first digest"),
        "group_interval": Duration(default=None, doc="Minimum time between two digests of a group"),
        "repeat_interval": Duration(
            default=None, doc="A group quiet this long is closed; the next event opens a new one"
        ),
        "throttle": Obj(
            {"max": Int(min=1, required=True), "per": Duration(required=True)},
            default=None,
            doc="At most max notifications per channel in a sliding window; the rest are 'throttled'",
        ),
        "continue": Bool(default=False, doc="Also try the next sibling routes after this one matched"),
        "mute_time_intervals": List(Str(), default=None, doc="Names of time_intervals when this route is muted"),
        "active_time_intervals": List(Str(), default=None, doc="Names of time_intervals outside which it is muted"),
        "subject": Str(default=None, doc="Subject template (Jinja2)"),
        "body": Str(default=None, doc="Body template (Jinja2)"),
        "html": Str(default=None, doc="HTML body template for email (Jinja2)"),
        "severity": Enum(["info", "warning", "critical"], default=None),
        "routes": List(AnyField(), default=[], doc="Child routes (same keys); they inherit and refine"),
    }
)


# --- matching -----------------------------------------------------------------


def _number(value) -> decimal.Decimal | None:
    if isinstance(value, bool) or value is None:
        return None
    try:
        number = decimal.Decimal(str(value).strip())
    except (decimal.InvalidOperation, ValueError):
        return None
    return number if number.is_finite() else None


def _equal(a, b) -> bool:
    if a == b:
        return True
    na, nb = _number(a), _number(b)  # money is often a string: "1000.00" equals 1000
    return na is not None and nb is not None and na == nb


_MISSING = object()


def lookup(data: Any, path: str):
    """``data["a"]["b"]`` for ``a.b``; ``_MISSING`` when any step is absent."""
    current = data
    for part in path.split("."):
        if isinstance(current, dict) and part in current:
            current = current[part]
        elif isinstance(current, list) and part.isdigit() and int(part) < len(current):
            current = current[int(part)]
        else:
            return _MISSING
    return current


def _is_ops(cond) -> bool:
    return isinstance(cond, dict) and bool(cond) and all(k in OPERATORS for k in cond)


def _flatten(conditions: dict, prefix: str = "") -> dict:
    """``{customer: {country: DE}}`` -> ``{"customer.country": "DE"}``; op dicts stay whole.

    A mapping whose keys are all operators is a condition; one with no
    operator keys is a nested field; one mixing both is kept whole so that
    :func:`condition_errors` reports it (most likely a misspelt operator).
    """
    flat = {}
    for key, cond in conditions.items():
        path = f"{prefix}{key}"
        if isinstance(cond, dict) and cond and not any(k in OPERATORS for k in cond):
            flat.update(_flatten(cond, path + "."))
        else:
            flat[path] = cond
    return flat


_RE2_OPTIONS = re2.Options()
_RE2_OPTIONS.log_errors = False  # an invalid pattern is our error to report, not a line on stderr


def compile_regex(pattern: str):
    """A ``regex`` operand, compiled with RE2: matching takes time linear in
    the text whatever the pattern, so a silence a tenant writes (``(a+)+``)
    cannot stall notification intake for every tenant, as a backtracking
    engine would. RE2 is also what Alertmanager's matchers use; it has no
    backreferences or lookarounds."""
    return re2.compile(pattern, _RE2_OPTIONS)


def _re2_message(exc: Exception) -> str:
    text = exc.args[0] if exc.args else exc
    return text.decode(errors="replace") if isinstance(text, bytes) else str(text)


class Condition:
    """One data-field condition, compiled once (regexes, numbers)."""

    def __init__(self, path: str, spec):
        self.path = path
        self.ops = dict(spec) if _is_ops(spec) else {"eq": spec}
        self.regex = compile_regex(str(self.ops["regex"])) if "regex" in self.ops else None

    def holds(self, data: dict) -> bool:
        value = lookup(data, self.path)
        for op, operand in self.ops.items():
            if op == "exists":
                if (value is not _MISSING) != bool(operand):
                    return False
                continue
            if value is _MISSING:
                return False
            if op == "eq" and not _equal(value, operand):
                return False
            if op == "ne" and _equal(value, operand):
                return False
            if op == "in" and not any(_equal(value, o) for o in operand):
                return False
            if op == "not_in" and any(_equal(value, o) for o in operand):
                return False
            if op == "regex" and not (
                isinstance(value, (str, int, float)) and self.regex is not None and self.regex.fullmatch(str(value))
            ):
                return False
            if op in ("gt", "gte", "lt", "lte"):
                left, right = _number(value), _number(operand)
                if left is None or right is None:
                    return False
                ok = {"gt": left > right, "gte": left >= right, "lt": left < right, "lte": left <= right}[op]
                if not ok:
                    return False
        return True


def condition_errors(conditions: dict) -> list[tuple[tuple, str]]:
    """Config errors in a ``data`` match (unknown operators, bad regexes, operands)."""
    errors: list[tuple[tuple, str]] = []
    for path, spec in _flatten(conditions or {}).items():
        if isinstance(spec, dict) and not _is_ops(spec) and spec:
            unknown = next(k for k in spec if k not in OPERATORS)
            errors.append(
                (
                    (path,),
                    f"unknown operator {unknown!r}{did_you_mean(unknown, OPERATORS)}"
                    f" (operators: {', '.join(OPERATORS)})",
                )
            )
            continue
        if not _is_ops(spec):
            continue
        for op, operand in spec.items():
            if op == "regex":
                try:
                    compile_regex(str(operand))
                except re2.error as exc:
                    errors.append(((path, op), f"invalid regex (RE2 syntax): {_re2_message(exc)}"))
            elif op in ("in", "not_in") and not isinstance(operand, list):
                errors.append(((path, op), "expects a list"))
            elif op in ("gt", "gte", "lt", "lte") and _number(operand) is None:
                errors.append(((path, op), f"expects a number, got {operand!r}"))
    return errors


class Matcher:
    """The ``match`` of a route (also used by silences)."""

    def __init__(self, spec: dict | None):
        spec = spec or {}
        self.types = _as_list(spec.get("type"))
        self.tenants = _as_list(spec.get("tenant"))
        self.conditions = [Condition(p, c) for p, c in _flatten(spec.get("data") or {}).items()]

    def matches(self, event: dict) -> bool:
        if self.types and not any(type_matches(p, event.get("type", "")) for p in self.types):
            return False
        if self.tenants and event.get("tenant", "") not in self.tenants and "*" not in self.tenants:
            return False
        data = event.get("data") or {}
        return all(c.holds(data) for c in self.conditions)


def _as_list(value) -> list:
    if value is None:
        return []
    return [value] if isinstance(value, str) else list(value)


# --- the tree -------------------------------------------------------------------------


@dataclasses.dataclass
class RouteNode:
    id: str
    matcher: Matcher
    settings: dict  # resolved: own values, else the parent's
    continue_: bool = False
    children: list[RouteNode] = dataclasses.field(default_factory=list)

    @property
    def channels(self) -> list[str]:
        return self.settings["channels"]

    @property
    def grouped(self) -> bool:
        return bool(self.settings["group_by"])


def build_node(spec: dict, parent_settings: dict, route_id: str) -> RouteNode:
    """A node from a *validated* route dict, resolving inheritance."""
    settings = {k: (spec.get(k) if spec.get(k) is not None else parent_settings[k]) for k in INHERITED}
    node = RouteNode(spec.get("name") or route_id, Matcher(spec.get("match")), settings, bool(spec.get("continue")))
    for i, child in enumerate(spec.get("routes") or []):
        clean, errors = validate(ROUTE_SCHEMA, child)
        if errors:  # check-config reports these; a tree is only built from a valid config
            raise ValueError("; ".join(map(str, errors)))
        node.children.append(build_node(clean, settings, f"{route_id}.{i}"))
    return node


@dataclasses.dataclass
class RouteMatch:
    """One route an event reached, with its resolved settings."""

    route: RouteNode
    path: list[str]  # ids from the top-level route down

    @property
    def id(self) -> str:
        return self.route.id

    @property
    def channels(self) -> list[str]:
        return self.route.channels


class RoutingTree:
    """The routes of a ``notifications`` section, ready to evaluate events."""

    def __init__(self, routes: list[dict], root_settings: dict | None = None, first: Sequence[dict] = ()):
        """``first``: named routes tried before ``routes`` (the operator-alert route),
        which leave the positional ids of ``routes`` unchanged."""
        self.root = RouteNode("root", Matcher(None), {**ROOT_DEFAULTS, **(root_settings or {})})
        for i, spec in enumerate(first):
            self.root.children.append(build_node(spec, self.root.settings, f"first{i}"))
        for i, spec in enumerate(routes):
            self.root.children.append(build_node(spec, self.root.settings, str(i)))
        self.by_id: dict[str, RouteNode] = {}
        self._index(self.root)

    def _index(self, node: RouteNode) -> None:
        self.by_id[node.id] = node
        for child in node.children:
            self._index(child)

    def evaluate(self, event: dict) -> list[RouteMatch]:
        """Every route ``event`` reaches (an empty list: no route, nobody notified)."""
        return [m for m in self._walk(self.root, event, []) if m.route is not self.root]

    def _walk(self, node: RouteNode, event: dict, path: list[str]) -> list[RouteMatch]:
        if not node.matcher.matches(event):
            return []
        here = path + ([node.id] if node is not self.root else [])
        found: list[RouteMatch] = []
        for child in node.children:
            sub = self._walk(child, event, here)
            if sub:
                found.extend(sub)
                if not child.continue_:
                    break
        return found or [RouteMatch(node, here)]


def route_errors(
    routes: list, channel_names: set[str], interval_names: set[str], path: tuple = ("routes",)
) -> list[tuple[tuple, str]]:
    """Every problem in a list of routes (recursively), as (subpath, message)."""
    errors: list[tuple[tuple, str]] = []
    ids: dict[str, tuple] = {}
    _route_errors(routes, channel_names, interval_names, path, errors, ids, is_raw=False)
    return errors


def _route_errors(routes, channel_names, interval_names, path, errors, ids, is_raw):
    for i, spec in enumerate(routes or []):
        here = path + (i,)
        if is_raw:
            spec, schema_errors = validate(ROUTE_SCHEMA, spec, here)
            if schema_errors:
                errors.extend((e.path, e.message) for e in schema_errors)
                continue
        for name in spec.get("channels") or []:
            if name not in channel_names:
                errors.append(
                    (
                        here + ("channels",),
                        f"unknown channel {name!r} (configured: {', '.join(sorted(channel_names)) or 'none'})",
                    )
                )
        for key in ("mute_time_intervals", "active_time_intervals"):
            for name in spec.get(key) or []:
                if name not in interval_names:
                    errors.append((here + (key,), f"unknown time interval {name!r}"))
        for key in ("subject", "body", "html"):
            if spec.get(key) and (err := check_template(spec[key])):
                errors.append((here + (key,), err))
        errors.extend(
            (here + ("match", "data") + sub, msg)
            for sub, msg in condition_errors((spec.get("match") or {}).get("data") or {})
        )
        if spec.get("name"):
            if spec["name"] in ids:
                errors.append((here + ("name",), f"duplicate route name {spec['name']!r}"))
            ids[spec["name"]] = here
        _route_errors(spec.get("routes"), channel_names, interval_names, here + ("routes",), errors, ids, True)
