"""The report builder: a definition in YAML (``reports.definitions.NAME``, or a
plugin's :class:`~tierd.core.registry.ReportDefinition`) compiled to one
parameterized SELECT over a report source.

A definition::

    title: Deliveries per endpoint
    description: ...
    source: webhooks.deliveries
    parameters:
      from: {type: date, default: last_30_days}
      to: {type: date, default: today}
      endpoint: {type: text, description: one endpoint id}
    filters:                      # each a boolean expression; one naming a
      - created_at >= :from       # parameter left empty is left out
      - created_at <= :to
      - endpoint_id = :endpoint
    columns:                      # a source column, or {name, expr, description}
      - endpoint_id
      - {name: deliveries, expr: count()}
      - {name: failed, expr: "count(status = 'failed')"}
    group_by: [endpoint_id]
    order_by: [-deliveries]       # output columns, "-" for descending, or expressions
    limit: 100
    chart: {type: bar, x: endpoint_id, y: [deliveries]}

Expressions are a small language parsed here (never ``eval``, never SQL
pasted from the definition): source columns by name, ``:param``, numbers,
``'text'``, ``true``/``false``/``null``; ``+ - * /``; ``= != < <= > >=``,
``and``/``or``/``not``, ``in (...)``, ``is [not] null``, ``between``;
``case when ... then ... else ... end``; the functions of :data:`FUNCTIONS`
and the aggregates of :data:`AGGREGATES`. Every identifier in the SQL comes
from the source's declared columns (or the definition's own output names,
checked to be lowercase identifiers); every value is a bound parameter.

Types follow the sources' (:data:`tierd.core.registry.COLUMN_TYPES`):
decimals stay exact (on SQLite, Python functions registered on the connection
by :meth:`Report.prepare` sum, compare and compute them as ``Decimal``; on
PostgreSQL the SQL casts them to ``NUMERIC``);
comparing an ``instant`` with a ``date`` compares with that day's bounds in
the report's time zone (``created_at <= :to`` includes the whole day ``to``).

Functions: ``date(x)``/``day(x)`` (an instant's day in the report's time zone),
``week(x)`` (its Monday), ``month(x)``, ``year(x)`` (their first day),
``age_days(x)`` (whole days from an instant or a date to now), ``coalesce``,
``round(x[, digits])``, ``abs``, ``lower``, ``upper``. Aggregates: ``count()``,
``count(x)`` (rows where x is not null; where x is a condition, rows where it
holds: ``count(status = 'failed')``), ``count_distinct``, ``sum`` (of a
condition: how many hold), ``avg``, ``min``, ``max``, ``p50``, ``p95`` (nearest
rank: a value of the data). Relative periods for dates: :data:`RELATIVE_PERIODS`,
resolved to the period's first day, or its last for a parameter named ``to``.

One definition compiles for either backend (``dialect``: ``"sqlite"`` or
``"postgresql"``, the daemon's ``db.dialect``); the parsing and checking are
the same, only the emitted SQL differs (see :class:`_Emitter`). On PostgreSQL
every bound value carries a cast (asyncpg is strict about parameter types and
reads an uncast ``$n`` in a SELECT list as text), a source's boolean column
(``BIGINT`` 0/1) is read as ``x <> 0``, and a few results differ in form only:
an average or quotient of decimals is written without trailing zeros
(``1.5``, where SQLite's Python ``Decimal`` writes ``1.50``), and a decimal
quotient has 20 digits after the point rather than 28 significant ones.
``lower``/``upper`` change ASCII letters only on both. Text is ordered and
compared by the PostgreSQL database's collation (byte order, as SQLite's, under
``C`` or ``C.UTF-8``; an ``en_US`` database orders ``b`` before ``C``).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import math
import re
import sqlite3
import time
from collections.abc import Callable, Iterator, Mapping
from decimal import Decimal, InvalidOperation
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from tierd.core.registry import COLUMN_TYPES, REPORT_NAME_RE, Column, ReportSource
from tierd.core.schema import did_you_mean, unicode_problem

Path = tuple[Any, ...]

#: Names the compiled SQL binds itself: no parameter may take them.
RESERVED_PARAMS = ("tenant", "now", "today", "tz", "max_rows", "limit")
PARAM_TYPES = ("text", "integer", "decimal", "date", "boolean")
RELATIVE_PERIODS = (
    "today",
    "yesterday",
    "last_week",
    "last_month",
    "month_to_date",
    "last_7_days",
    "last_30_days",
)
AGGREGATES = ("count", "count_distinct", "sum", "avg", "min", "max", "p50", "p95")
FUNCTIONS = (
    "date",
    "day",
    "week",
    "month",
    "year",
    "age_days",
    "coalesce",
    "round",
    "abs",
    "lower",
    "upper",
)
SPEC_KEYS = (
    "title",
    "description",
    "source",
    "parameters",
    "filters",
    "columns",
    "group_by",
    "order_by",
    "limit",
    "chart",
)
PARAM_KEYS = ("type", "default", "required", "choices", "description")
COLUMN_KEYS = ("name", "expr", "description")
NAME_RE = re.compile(r"[a-z_][a-z0-9_]{0,62}")
MAX_EXPR = 2000
MAX_TOKENS = 400
MAX_DEPTH = 16
#: Levels of SQL an expression may nest into (SQLite's parser has a bounded stack).
MAX_LEVELS = 12
#: Operations of one decimal call (SQLite limits a function's arguments).
CHAIN_ARGS = 50
MAX_TEXT_PARAM = 1000
MAX_LIMIT = 10_000_000


class DefinitionError(Exception):
    """A definition that cannot be compiled: ``path`` is its key path (inside
    the definition), ``where`` names it (``reports.definitions.NAME`` or the
    plugin that ships it)."""

    def __init__(self, path: Path, message: str, where: str = "") -> None:
        self.path = tuple(path)
        self.message = message
        self.where = where
        #: Every error found in the definition (this one first).
        self.errors: list[DefinitionError] = [self]
        super().__init__(str(self))

    def __str__(self) -> str:
        key = _format_path(self.path)
        prefix = f"{self.where}: " if self.where else ""
        return f"{prefix}{key}: {self.message}" if key else f"{prefix}{self.message}"


class ParamError(ValueError):
    """A parameter value the report refuses (``param`` names it)."""

    def __init__(self, param: str, message: str) -> None:
        self.param = param
        self.message = message
        super().__init__(f"parameter {param!r}: {message}")


class ReportTooLarge(Exception):
    """The report has more rows than it may return."""

    def __init__(self, max_rows: int) -> None:
        self.max_rows = max_rows
        super().__init__(f"the report has more than {max_rows} rows (reports.max_rows): narrow it with its parameters")


def _format_path(path: Path) -> str:
    text = ""
    for part in path:
        if isinstance(part, int) and not isinstance(part, bool):
            text += f"[{part}]"
        else:
            text += f".{part}" if text else str(part)
    return text


# --- parameters -----------------------------------------------------------------------------


@dataclasses.dataclass
class Parameter:
    name: str
    type: str
    default: Any = None
    required: bool = False
    choices: list | None = None
    description: str = ""

    def to_dict(self) -> dict[str, Any]:
        default = self.default.isoformat() if isinstance(self.default, dt.date) else self.default
        if isinstance(default, Decimal):
            default = str(default)
        return {
            "name": self.name,
            "type": self.type,
            "default": default,
            "required": self.required,
            "choices": self.choices,
            "description": self.description,
        }


def resolve_period(word: str, end: bool, today: dt.date) -> dt.date:
    """The first (or with ``end`` the last) day of a relative period."""
    if word == "today":
        return today
    if word == "yesterday":
        return today - dt.timedelta(days=1)
    if word == "last_week":
        monday = today - dt.timedelta(days=today.weekday() + 7)
        return monday + dt.timedelta(days=6) if end else monday
    if word == "last_month":
        last = today.replace(day=1) - dt.timedelta(days=1)
        return last if end else last.replace(day=1)
    if word == "month_to_date":
        return today if end else today.replace(day=1)
    if word == "last_7_days":
        return today if end else today - dt.timedelta(days=6)
    if word == "last_30_days":
        return today if end else today - dt.timedelta(days=29)
    raise ValueError(word)


def _is_end(name: str) -> bool:
    return name in ("to", "until", "end") or name.endswith("_to")


def convert_value(param: Parameter, value: Any, today: dt.date) -> Any:
    """The typed value of one parameter, or ValueError saying why not."""
    kind = param.type
    if isinstance(value, str):
        if problem := unicode_problem(value):
            raise ValueError(problem)
        if len(value) > MAX_TEXT_PARAM:
            raise ValueError(f"longer than {MAX_TEXT_PARAM} characters")
    if kind == "text":
        if isinstance(value, bool) or not isinstance(value, (str, int)):
            raise ValueError(f"expected text, got {type(value).__name__}")
        return str(value)
    if kind == "integer":
        if isinstance(value, bool):
            raise ValueError("expected an integer, got a boolean")
        if isinstance(value, str) and re.fullmatch(r"[+-]?[0-9]{1,19}", value.strip()):
            value = int(value.strip())
        if not isinstance(value, int):
            raise ValueError(f"expected an integer, got {value!r:.60}")
        if not -(2**63) <= value < 2**63:
            raise ValueError("out of range")
        return value
    if kind == "decimal":
        if isinstance(value, bool) or not isinstance(value, (str, int, Decimal)):
            raise ValueError("expected a decimal number written as text (e.g. '12.50')")
        try:
            number = Decimal(str(value).strip())
        except InvalidOperation:
            raise ValueError(f"not a decimal number: {value!r:.60}") from None
        if not number.is_finite() or abs(number.adjusted()) > 30:
            raise ValueError("not a finite decimal number of reasonable size")
        return number
    if kind == "boolean":
        if isinstance(value, bool):
            return value
        if isinstance(value, int) and value in (0, 1):
            return bool(value)
        if isinstance(value, str) and value.strip().lower() in ("true", "false", "1", "0", "yes", "no"):
            return value.strip().lower() in ("true", "1", "yes")
        raise ValueError(f"expected true or false, got {value!r:.60}")
    if kind == "date":
        if isinstance(value, dt.datetime):
            raise ValueError("expected a date, not a date and time")
        if isinstance(value, dt.date):
            return value
        if not isinstance(value, str):
            raise ValueError(f"expected a date (YYYY-MM-DD or {', '.join(RELATIVE_PERIODS)})")
        text = value.strip()
        if text in RELATIVE_PERIODS:
            return resolve_period(text, _is_end(param.name), today)
        if re.fullmatch(r"[0-9]{4}-[0-9]{2}-[0-9]{2}", text):
            try:
                return dt.date.fromisoformat(text)
            except ValueError:
                pass
        raise ValueError(
            f"not a date: {value!r:.60} (use YYYY-MM-DD or one of {', '.join(RELATIVE_PERIODS)})"
            + did_you_mean(text, RELATIVE_PERIODS)
        )
    raise ValueError(f"unknown type {kind!r}")  # pragma: no cover - checked at load


def _parse_parameter(name: Any, spec: Any, path: Path) -> Parameter:
    if not isinstance(name, str) or not NAME_RE.fullmatch(name):
        raise DefinitionError(path, "a parameter name is a lowercase identifier (e.g. endpoint)")
    if name in RESERVED_PARAMS:
        raise DefinitionError(path, f"{name!r} is reserved (the report binds it itself)")
    if isinstance(spec, str):
        spec = {"type": spec}
    if not isinstance(spec, dict):
        raise DefinitionError(path, "expected a mapping (type, default, required, choices, description)")
    for key in spec:
        if key not in PARAM_KEYS:
            raise DefinitionError(path + (key,), f"unknown key {key!r}{did_you_mean(key, PARAM_KEYS)}")
    kind = spec.get("type", "text")
    if kind not in PARAM_TYPES:
        raise DefinitionError(
            path + ("type",),
            f"unknown type {kind!r} (one of {', '.join(PARAM_TYPES)}){did_you_mean(kind, PARAM_TYPES)}",
        )
    param = Parameter(
        name=name,
        type=kind,
        required=bool(spec.get("required", False)),
        description=str(spec.get("description", "")),
    )
    if not isinstance(spec.get("required", False), bool):
        raise DefinitionError(path + ("required",), "expected true or false")
    today = dt.date(2000, 1, 1)
    if "choices" in spec:
        choices = spec["choices"]
        if not isinstance(choices, list) or not choices:
            raise DefinitionError(path + ("choices",), "expected a list of values")
        clean = []
        for i, choice in enumerate(choices):
            try:
                clean.append(convert_value(param, choice, today))
            except ValueError as exc:
                raise DefinitionError(path + ("choices", i), str(exc)) from None
        param.choices = clean
    if spec.get("default") is not None:
        default = spec["default"]
        try:
            typed = convert_value(param, default, today)
        except ValueError as exc:
            raise DefinitionError(path + ("default",), str(exc)) from None
        if param.choices is not None and typed not in param.choices:
            raise DefinitionError(path + ("default",), "not one of the choices")
        # A relative period stays a word: it is resolved when the report runs.
        param.default = default if isinstance(default, str) and default in RELATIVE_PERIODS else typed
    return param


# --- expressions: tokens and syntax tree ----------------------------------------------------

_TOKEN = re.compile(
    r"\s*(?:"
    r"(?P<number>[0-9]+(?:\.[0-9]+)?)"
    r"|(?P<string>'(?:[^']|'')*')"
    r"|(?P<param>:[a-z_][a-z0-9_]*)"
    r"|(?P<name>[A-Za-z_][A-Za-z0-9_]*)"
    r"|(?P<op>==|!=|<>|<=|>=|[-+*/(),<>=])"
    r")"
)
_KEYWORDS = {
    "and",
    "or",
    "not",
    "in",
    "is",
    "null",
    "true",
    "false",
    "case",
    "when",
    "then",
    "else",
    "end",
    "between",
}


def _tokens(text: str) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    pos = 0
    text = text.rstrip()
    while pos < len(text):
        found = _TOKEN.match(text, pos)
        if found is None or found.end() == pos:
            raise ValueError(f"unexpected character {text[pos:].lstrip()[:1]!r} at {pos + 1}")
        kind = found.lastgroup
        assert kind is not None
        value = found.group(kind)
        if kind == "name" and value.lower() in _KEYWORDS:
            kind, value = "kw", value.lower()
        out.append((kind, value))
        pos = found.end()
    out.append(("eof", ""))
    return out


@dataclasses.dataclass
class Node:
    kind: str  # col, lit, param, unary, binary, cmp, logic, not, isnull, in, case, func, agg
    value: Any = None
    args: list[Node] = dataclasses.field(default_factory=list)
    type: str = "text"
    agg: bool = False
    params: frozenset[str] = frozenset()
    #: How deeply its SQL nests (a chain of one operator is written flat).
    level: int = 0

    def __post_init__(self) -> None:
        if not self.args:
            return
        if self.kind in ("arith", "logic"):
            left, right = self.args
            if self.kind == "logic":
                same = left.kind == "logic" and left.value == self.value
            else:
                group = ("+", "-") if self.value in ("+", "-") else ("*", "/")
                same = (
                    left.kind == "arith"
                    and left.value in group
                    and (left.type == "decimal") == (self.type == "decimal")
                )
            self.level = max(left.level + (0 if same else 1), right.level + 1)
        else:
            self.level = 1 + max(a.level for a in self.args)


class _Parser:
    def __init__(self, text: str, columns: Mapping[str, Column], params: Mapping[str, Parameter]) -> None:
        self.toks = _tokens(text)
        if len(self.toks) > MAX_TOKENS:
            raise ValueError(f"too long: at most {MAX_TOKENS} names, values and signs")
        self.i = 0
        self.depth = 0
        self.columns = columns
        self.params = params

    def peek(self, offset: int = 0) -> tuple[str, str]:
        return self.toks[min(self.i + offset, len(self.toks) - 1)]

    def take(self) -> tuple[str, str]:
        tok = self.toks[self.i]
        self.i += 1
        return tok

    def accept(self, kind: str, value: str | None = None) -> bool:
        k, v = self.peek()
        if k == kind and (value is None or v == value):
            self.i += 1
            return True
        return False

    def expect(self, kind: str, value: str) -> None:
        if not self.accept(kind, value):
            got = self.peek()[1] or "the end"
            raise ValueError(f"expected {value!r}, got {got!r}")

    def parse(self) -> Node:
        node = self.expr()
        if self.peek()[0] != "eof":
            raise ValueError(f"unexpected {self.peek()[1]!r}")
        return node

    def expr(self) -> Node:
        # Every nesting (parentheses, a call, case, not) goes through here.
        self.depth += 1
        if self.depth > MAX_DEPTH:
            raise ValueError(f"nested too deeply (at most {MAX_DEPTH} levels)")
        try:
            return self._or()
        finally:
            self.depth -= 1

    def _or(self) -> Node:
        node = self.and_()
        while self.accept("kw", "or"):
            node = _logic("or", node, self.and_())
        return node

    def and_(self) -> Node:
        node = self.not_()
        while self.accept("kw", "and"):
            node = _logic("and", node, self.not_())
        return node

    def not_(self) -> Node:
        if self.accept("kw", "not"):
            if self.peek() == ("kw", "not"):
                raise ValueError("'not not' says nothing")
            inner = self.not_()
            _want_bool(inner, "not")
            return Node("not", args=[inner], type="boolean", agg=inner.agg, params=inner.params)
        return self.cmp()

    def cmp(self) -> Node:
        left = self.add()
        kind, value = self.peek()
        if kind == "op" and value in ("=", "==", "!=", "<>", "<", "<=", ">", ">="):
            self.take()
            op = {"==": "=", "<>": "!="}.get(value, value)
            return _compare(op, left, self.add())
        if self.accept("kw", "is"):
            negate = self.accept("kw", "not")
            self.expect("kw", "null")
            return Node("isnull", value=negate, args=[left], type="boolean", agg=left.agg, params=left.params)
        negate = False
        if kind == "kw" and value == "not" and self.peek(1) in (("kw", "in"), ("kw", "between")):
            self.take()
            negate = True
        if self.accept("kw", "between"):
            low = self.add()
            self.expect("kw", "and")
            high = self.add()
            node = _logic("and", _compare(">=", left, low), _compare("<=", left, high))
            return Node("not", args=[node], type="boolean", agg=node.agg, params=node.params) if negate else node
        if self.accept("kw", "in"):
            self.expect("op", "(")
            items = [self.add()]
            while self.accept("op", ","):
                items.append(self.add())
            self.expect("op", ")")
            if len(items) > 100:
                raise ValueError("at most 100 values in an in (...) list")
            for item in items:
                if {left.type, item.type} == {"instant", "date"}:
                    raise ValueError("in (...): an instant is compared with dates by >= and <=, or use date(...)")
                _compatible(left, item, "in")
                if item.kind not in ("lit", "param"):
                    raise ValueError("in (...) takes values and parameters only")
            return Node(
                "in",
                value=negate,
                args=[left, *items],
                type="boolean",
                agg=left.agg,
                params=left.params.union(*(i.params for i in items)),
            )
        return left

    def add(self) -> Node:
        node = self.mul()
        while self.peek() in (("op", "+"), ("op", "-")):
            op = self.take()[1]
            node = _arith(op, node, self.mul())
        return node

    def mul(self) -> Node:
        node = self.unary()
        while self.peek() in (("op", "*"), ("op", "/")):
            op = self.take()[1]
            node = _arith(op, node, self.unary())
        return node

    def unary(self) -> Node:
        if self.accept("op", "-"):
            if self.peek() == ("op", "-"):
                raise ValueError("'- -' says nothing (and '--' is no comment here)")
            inner = self.unary()
            if inner.kind == "lit" and isinstance(inner.value, (int, Decimal)):
                return Node("lit", value=-inner.value, type=inner.type)
            return _arith("-", Node("lit", value=0, type="integer"), inner)
        return self.primary()

    def primary(self) -> Node:
        kind, value = self.take()
        if kind == "number":
            if "." in value:
                return Node("lit", value=Decimal(value), type="decimal")
            number = int(value)
            if number >= 2**63:
                raise ValueError("number out of range")
            return Node("lit", value=number, type="integer")
        if kind == "string":
            text = value[1:-1].replace("''", "'")
            return Node("lit", value=text, type="date" if _looks_date(text) else "text")
        if kind == "param":
            name = value[1:]
            param = self.params.get(name)
            if param is None:
                raise ValueError(
                    f"unknown parameter ':{name}' (declare it under parameters){did_you_mean(name, self.params)}"
                )
            return Node("param", value=name, type=param.type, params=frozenset([name]))
        if kind == "kw":
            if value in ("true", "false"):
                return Node("lit", value=value == "true", type="boolean")
            if value == "null":
                return Node("lit", value=None, type="null")
            if value == "case":
                return self.case()
            raise ValueError(f"unexpected {value!r}")
        if kind == "op" and value == "(":
            node = self.expr()
            self.expect("op", ")")
            return node
        if kind == "name":
            if self.accept("op", "("):
                args: list[Node] = []
                star = False
                if self.accept("op", "*"):
                    star = True
                elif not self.accept("op", ")"):
                    args.append(self.expr())
                    while self.accept("op", ","):
                        args.append(self.expr())
                    self.expect("op", ")")
                    return _call(value.lower(), args)
                if star:
                    self.expect("op", ")")
                return _call(value.lower(), args)
            column = self.columns.get(value)
            if column is None:
                raise ValueError(f"unknown column {value!r}{did_you_mean(value, self.columns)}")
            return Node("col", value=value, type=column.type)
        raise ValueError(f"unexpected {value or 'end'!r}")

    def case(self) -> Node:
        branches: list[Node] = []
        while self.accept("kw", "when"):
            cond = self.expr()
            _want_bool(cond, "case when")
            self.expect("kw", "then")
            branches += [cond, self.expr()]
        if not branches:
            raise ValueError("case needs at least one 'when ... then ...'")
        other = self.expr() if self.accept("kw", "else") else Node("lit", value=None, type="null")
        self.expect("kw", "end")
        results = [*branches[1::2], other]
        types = {r.type for r in results} - {"null"}
        numeric = {"integer", "real", "decimal"}
        if len(types) > 1 and not types <= numeric:
            raise ValueError(f"case branches have different types ({', '.join(sorted(types))})")
        kind = "decimal" if "decimal" in types else "real" if "real" in types else (types.pop() if types else "null")
        args = [*branches, other]
        return Node(
            "case",
            args=args,
            type=kind,
            agg=any(a.agg for a in args),
            params=frozenset().union(*(a.params for a in args)),
        )


def _looks_date(text: str) -> bool:
    if not re.fullmatch(r"[0-9]{4}-[0-9]{2}-[0-9]{2}", text):
        return False
    try:
        dt.date.fromisoformat(text)
    except ValueError:
        return False
    return True


_NUMERIC = ("integer", "real", "decimal")


def _want_bool(node: Node, where: str) -> None:
    if node.type not in ("boolean", "null"):
        raise ValueError(f"{where} needs a condition (true or false), got a {node.type}")


def _logic(op: str, left: Node, right: Node) -> Node:
    _want_bool(left, op)
    _want_bool(right, op)
    return Node(
        "logic",
        value=op,
        args=[left, right],
        type="boolean",
        agg=left.agg or right.agg,
        params=left.params | right.params,
    )


def _compatible(left: Node, right: Node, op: str) -> None:
    a, b = left.type, right.type
    if "null" in (a, b) or a == b:
        return
    if a in _NUMERIC and b in _NUMERIC:
        return
    if {a, b} == {"instant", "date"}:
        date_side = right if b == "date" else left
        if date_side.kind not in ("param", "lit"):
            raise ValueError(f"{op}: compare an instant with a date parameter or a 'YYYY-MM-DD' value, or date(...)")
        return
    if {a, b} <= {"text", "date"}:
        return
    if {a, b} == {"boolean", "integer"}:
        return
    raise ValueError(f"{op}: cannot compare a {a} with a {b}")


def _compare(op: str, left: Node, right: Node) -> Node:
    _compatible(left, right, op)
    return Node(
        "cmp",
        value=op,
        args=[left, right],
        type="boolean",
        agg=left.agg or right.agg,
        params=left.params | right.params,
    )


def _arith(op: str, left: Node, right: Node) -> Node:
    for side in (left, right):
        if side.type not in (*_NUMERIC, "null"):
            raise ValueError(f"'{op}' works on numbers, not on a {side.type}")
    types = {left.type, right.type}
    kind = "decimal" if "decimal" in types else "real" if ("real" in types or op == "/") else "integer"
    return Node(
        "arith", value=op, args=[left, right], type=kind, agg=left.agg or right.agg, params=left.params | right.params
    )


def _call(name: str, args: list[Node]) -> Node:
    params = frozenset().union(*(a.params for a in args)) if args else frozenset()
    if name in AGGREGATES:
        if any(a.agg for a in args):
            raise ValueError(f"{name}(): an aggregate inside an aggregate")
        if name == "count":
            if len(args) > 1:
                raise ValueError("count() takes at most one argument")
            return Node("agg", value=name, args=args, type="integer", agg=True, params=params)
        if len(args) != 1:
            raise ValueError(f"{name}() takes one argument")
        arg = args[0]
        if name == "count_distinct":
            kind = "integer"
        elif name == "sum":
            if arg.type not in (*_NUMERIC, "boolean"):
                raise ValueError(f"sum() works on numbers, not on a {arg.type}")
            kind = "integer" if arg.type == "boolean" else arg.type
        elif name == "avg":
            if arg.type not in (*_NUMERIC, "boolean"):
                raise ValueError(f"avg() works on numbers and conditions (the share that holds), not on a {arg.type}")
            kind = "decimal" if arg.type == "decimal" else "real"
        elif name in ("min", "max"):
            kind = arg.type
        else:  # p50, p95
            if arg.type not in (*_NUMERIC, "instant"):
                raise ValueError(f"{name}() works on numbers and instants, not on a {arg.type}")
            kind = arg.type if arg.type in ("decimal", "instant") else "real"
        return Node("agg", value=name, args=args, type=kind, agg=True, params=params)
    if name not in FUNCTIONS:
        raise ValueError(
            f"unknown function {name}() (functions: {', '.join(FUNCTIONS)}; aggregates: {', '.join(AGGREGATES)})"
            + did_you_mean(name, (*FUNCTIONS, *AGGREGATES))
        )
    agg = any(a.agg for a in args)
    if name in ("date", "day", "week", "month", "year", "age_days"):
        if len(args) != 1:
            raise ValueError(f"{name}() takes one argument")
        if args[0].type not in ("instant", "date", "null"):
            raise ValueError(f"{name}() takes an instant or a date, not a {args[0].type}")
        kind = "integer" if name == "age_days" else "date"
        return Node("func", value=name, args=args, type=kind, agg=agg, params=params)
    if name == "coalesce":
        if len(args) < 2:
            raise ValueError("coalesce() takes two or more arguments")
        types = {a.type for a in args} - {"null"}
        if len(types) > 1 and not types <= set(_NUMERIC):
            raise ValueError(f"coalesce(): arguments of different types ({', '.join(sorted(types))})")
        kind = "decimal" if "decimal" in types else "real" if "real" in types else (types.pop() if types else "null")
        return Node("func", value=name, args=args, type=kind, agg=agg, params=params)
    if name == "round":
        if len(args) not in (1, 2) or args[0].type not in (*_NUMERIC, "null"):
            raise ValueError("round(number[, digits]) takes a number and optionally a whole number of digits")
        if len(args) == 2 and not (args[1].kind == "lit" and args[1].type == "integer" and 0 <= args[1].value <= 12):
            raise ValueError("round(): digits is a whole number from 0 to 12")
        kind = "integer" if len(args) == 1 and args[0].type == "integer" else args[0].type
        return Node("func", value=name, args=args, type=kind, agg=agg, params=params)
    if name == "abs":
        if len(args) != 1 or args[0].type not in (*_NUMERIC, "null"):
            raise ValueError("abs() takes one number")
        return Node("func", value=name, args=args, type=args[0].type, agg=agg, params=params)
    # lower, upper
    if len(args) != 1 or args[0].type not in ("text", "null"):
        raise ValueError(f"{name}() takes one text")
    return Node("func", value=name, args=args, type="text", agg=agg, params=params)


def parse_expression(text: Any, columns: Mapping[str, Column], params: Mapping[str, Parameter]) -> Node:
    """The syntax tree of an expression, or ValueError saying what is wrong."""
    if isinstance(text, bool) or not isinstance(text, (str, int)):
        raise ValueError("expected an expression (text)")
    text = str(text)
    if len(text) > MAX_EXPR:
        raise ValueError(f"longer than {MAX_EXPR} characters")
    if problem := unicode_problem(text):
        raise ValueError(problem)
    node = _Parser(text, columns, params).parse()
    if node.level > MAX_LEVELS:
        raise ValueError(f"nested too deeply ({node.level} levels of functions and operations, at most {MAX_LEVELS})")
    return node


# --- SQL emission ---------------------------------------------------------------------------


_ASCII_UPPER = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
#: Bound values' SQL types on PostgreSQL, by their Python type (after :meth:`_Emitter.bind`'s conversion).
_PG_TYPES: dict[type, str] = {bool: "BOOLEAN", int: "BIGINT", float: "DOUBLE PRECISION", str: "TEXT"}


class _Emitter:
    """Writes one query's SQL: every value becomes a bound parameter.

    ``dialect`` picks the SQL: SQLite's (Python functions for decimals and
    local dates, see :func:`prepare_connection`) or PostgreSQL's (NUMERIC casts,
    ``timezone()`` and ``to_char``, typed parameters).
    """

    def __init__(self, values: Mapping[str, Any], tz: str, now: float, dialect: str = "sqlite") -> None:
        if dialect not in ("sqlite", "postgresql"):
            raise ValueError(f"unknown SQL dialect {dialect!r}")
        self.pg = dialect == "postgresql"
        self.values = values
        self.tz = tz
        self.utc = tz in ("UTC", "Etc/UTC", "Z")
        self.zone = ZoneInfo(tz)
        self.now = now
        self.bound: dict[str, Any] = {}
        self.count = 0
        self.done: dict[int, str] = {}

    def bind(self, value: Any) -> str:
        if isinstance(value, Decimal):
            value = str(value)
        elif isinstance(value, dt.date):
            value = value.isoformat()
        elif isinstance(value, bool) and not self.pg:
            value = int(value)
        key = f"v{self.count}"
        self.count += 1
        self.bound[key] = value
        if self.pg:
            # Typed: asyncpg refuses a value of another type than PostgreSQL
            # infers, and infers text for a parameter nothing around it types.
            return f"CAST(:{key} AS {_PG_TYPES[type(value)]})"
        return f":{key}"

    def num(self, node: Node) -> str:
        """PostgreSQL: a value as NUMERIC (decimals are stored as text)."""
        return f"CAST({self.sql(node)} AS NUMERIC)"

    def as_type(self, node: Node, kind: str) -> str:
        """PostgreSQL: a branch of a CASE or COALESCE in the type of the whole
        (a decimal is text there, and text does not mix with numbers)."""
        if kind == "decimal" and node.type not in ("decimal", "null"):
            return f"CAST({self.sql(node)} AS TEXT)"
        return self.sql(node)

    def day_start(self, day: dt.date) -> float:
        return dt.datetime(day.year, day.month, day.day, tzinfo=self.zone).timestamp()

    def value_of(self, node: Node) -> Any:
        return self.values[node.value] if node.kind == "param" else node.value

    def sql(self, node: Node) -> str:
        # One node is one piece of SQL (a group key written once in SELECT and GROUP BY alike).
        done = self.done.get(id(node))
        if done is None:
            method: Callable[[Node], str] = getattr(self, "_" + node.kind)
            done = self.done[id(node)] = method(node)
        return done

    def _col(self, node: Node) -> str:
        if self.pg and node.type == "boolean":
            # A condition: PostgreSQL has no truth in BIGINT 0/1 (and a source may give a real boolean).
            return f'(CAST(src."{node.value}" AS INTEGER) <> 0)'
        return f'src."{node.value}"'

    def _lit(self, node: Node) -> str:
        return "NULL" if node.value is None else self.bind(node.value)

    def _param(self, node: Node) -> str:
        value = self.values[node.value]
        return "NULL" if value is None else self.bind(value)

    def _not(self, node: Node) -> str:
        return f"(NOT {self.sql(node.args[0])})"

    def _logic(self, node: Node) -> str:
        # a AND b AND c flat, not nested: SQLite's parser has a bounded stack.
        terms, cur = [], node
        while cur.kind == "logic" and cur.value == node.value:
            terms.append(cur.args[1])
            cur = cur.args[0]
        terms.append(cur)
        return "(" + f" {node.value.upper()} ".join(self.sql(t) for t in reversed(terms)) + ")"

    def _isnull(self, node: Node) -> str:
        return f"({self.sql(node.args[0])} IS {'NOT ' if node.value else ''}NULL)"

    def _in(self, node: Node) -> str:
        left, *items = node.args
        if self.pg and (left.type == "decimal" or any(i.type == "decimal" for i in items)):
            parts = " OR ".join(f"{self.num(left)} = {self.num(i)}" for i in items)
            return f"({'NOT ' if node.value else ''}COALESCE({parts}, FALSE))"
        if self.pg and {left.type, *(i.type for i in items)} - {"null"} == {"boolean", "integer"}:
            # As in _cmp: PostgreSQL compares no boolean with a number.
            a, *b = (f"CAST({self.sql(n)} AS INTEGER)" if n.type == "boolean" else self.sql(n) for n in node.args)
            return f"({a} {'NOT ' if node.value else ''}IN ({', '.join(b)}))"
        if left.type == "decimal" or any(i.type == "decimal" for i in items):
            parts = " OR ".join(f"tierd_dcmp({self.sql(left)}, {self.sql(i)}) = 0" for i in items)
            return f"({'NOT ' if node.value else ''}COALESCE({parts}, 0))"
        return f"({self.sql(left)} {'NOT ' if node.value else ''}IN ({', '.join(self.sql(i) for i in items)}))"

    def _cmp(self, node: Node) -> str:
        op = node.value
        left, right = node.args
        if {left.type, right.type} == {"instant", "date"}:
            flip = left.type == "date"
            inst, day_node = (right, left) if flip else (left, right)
            if flip:
                op = {"<": ">", "<=": ">=", ">": "<", ">=": "<="}.get(op, op)
            day = self.value_of(day_node)
            if day is None:
                return "NULL"
            if isinstance(day, str):
                day = dt.date.fromisoformat(day)
            col = self.sql(inst)
            start, end = self.day_start(day), self.day_start(day + dt.timedelta(days=1))
            if op == ">=":
                return f"({col} >= {self.bind(start)})"
            if op == ">":
                return f"({col} >= {self.bind(end)})"
            if op == "<":
                return f"({col} < {self.bind(start)})"
            if op == "<=":
                return f"({col} < {self.bind(end)})"
            if op == "=":
                return f"({col} >= {self.bind(start)} AND {col} < {self.bind(end)})"
            return f"({col} < {self.bind(start)} OR {col} >= {self.bind(end)})"
        if "decimal" in (left.type, right.type):
            if self.pg:
                return f"({self.num(left)} {op} {self.num(right)})"
            return f"(tierd_dcmp({self.sql(left)}, {self.sql(right)}) {op} 0)"
        if self.pg and {left.type, right.type} == {"boolean", "integer"}:
            # PostgreSQL compares no boolean with a number: the condition as 0/1.
            a, b = (f"CAST({self.sql(n)} AS INTEGER)" if n.type == "boolean" else self.sql(n) for n in (left, right))
            return f"({a} {op} {b})"
        return f"({self.sql(left)} {op} {self.sql(right)})"

    def _arith(self, node: Node) -> str:
        # A chain of one precedence (a + b - c) is written flat, not nested:
        # SQLite's parser has a bounded stack, and a function may take only so many arguments.
        group = ("+", "-") if node.value in ("+", "-") else ("*", "/")
        decimal = node.type == "decimal"
        ops: list[str] = []
        operands: list[Node] = []
        cur = node
        while cur.kind == "arith" and cur.value in group and (cur.type == "decimal") == decimal:
            ops.append(cur.value)
            operands.append(cur.args[1])
            cur = cur.args[0]
        operands.append(cur)
        ops.reverse()
        operands.reverse()
        parts = [self.sql(o) for o in operands]
        if self.pg:
            return self._pg_arith(ops, operands, decimal)
        if decimal:
            text = parts[0]
            for start in range(0, len(ops), CHAIN_ARGS):
                chunk = ops[start : start + CHAIN_ARGS]
                more = parts[start + 1 : start + 1 + len(chunk)]
                text = f"tierd_dchain({self.bind(''.join(chunk))}, {text}, {', '.join(more)})"
            return text
        text = parts[0]
        for op, part in zip(ops, parts[1:], strict=True):
            text += f" {op} " + (f"CAST({part} AS REAL)" if op == "/" else part)
        return f"({text})"

    def _pg_arith(self, ops: list[str], operands: list[Node], decimal: bool) -> str:
        """PostgreSQL's flat chain: decimals in NUMERIC (back to text), a division
        by zero NULL as on SQLite (PostgreSQL would raise), ``/`` in floating point."""
        parts = [self.num(o) if decimal else self.sql(o) for o in operands]
        text = parts[0]
        for op, part in zip(ops, parts[1:], strict=True):
            if op == "/":
                part = f"NULLIF({part if decimal else f'CAST({part} AS DOUBLE PRECISION)'}, 0)"
            text += f" {op} {part}"
        if not decimal:
            return f"({text})"
        # A quotient has 16 or more digits after the point: keep the significant ones.
        return f"CAST(trim_scale({text}) AS TEXT)" if "/" in ops else f"CAST(({text}) AS TEXT)"

    def _case(self, node: Node) -> str:
        *branches, other = node.args
        parts = " ".join(
            f"WHEN {self.sql(branches[i])} THEN {self.branch(branches[i + 1], node.type)}"
            for i in range(0, len(branches), 2)
        )
        return f"(CASE {parts} ELSE {self.branch(other, node.type)} END)"

    def branch(self, node: Node, kind: str) -> str:
        return self.as_type(node, kind) if self.pg else self.sql(node)

    def _pg_day(self, arg: Node) -> str:
        """PostgreSQL: the local day of an instant (or a date's day) as a DATE."""
        inner = self.sql(arg)
        if arg.type == "date":
            return f"CAST({inner} AS DATE)"
        return f"CAST(timezone({self.bind(self.tz)}, to_timestamp({inner})) AS DATE)"

    def _pg_func(self, node: Node) -> str | None:
        """PostgreSQL's form of the functions whose SQLite form differs (None: the same)."""
        name, args = node.value, node.args
        if name in ("date", "day"):
            return f"to_char({self._pg_day(args[0])}, 'YYYY-MM-DD')"
        if name == "week":
            return f"to_char(date_trunc('week', {self._pg_day(args[0])}), 'YYYY-MM-DD')"
        if name == "month":
            return f"to_char({self._pg_day(args[0])}, 'YYYY-MM-01')"
        if name == "year":
            return f"to_char({self._pg_day(args[0])}, 'YYYY-01-01')"
        if name == "age_days":
            if args[0].type == "instant":
                # Truncated toward zero, as SQLite's CAST(... AS INTEGER) (PostgreSQL's would round).
                return f"CAST(TRUNC(({self.bind(float(self.now))} - {self.sql(args[0])}) / 86400) AS BIGINT)"
            today = dt.datetime.fromtimestamp(self.now, self.zone).date()
            return f"(CAST({self.bind(today)} AS DATE) - CAST({self.sql(args[0])} AS DATE))"
        if name == "coalesce":
            return f"COALESCE({', '.join(self.as_type(a, node.type) for a in args)})"
        if name == "round":
            digits = int(args[1].value) if len(args) == 2 else 0
            if args[0].type == "decimal":
                # Half to even, as Python's Decimal.quantize on SQLite (PostgreSQL's ROUND goes
                # half away from zero): a tie with an even digit before it is truncated.
                x = self.num(args[0])
                return (
                    f"CAST(CASE WHEN MOD(ABS({x}) * {10**digits}, 2) = 0.5 THEN TRUNC({x}, {digits})"
                    f" ELSE ROUND({x}, {digits}) END AS TEXT)"
                )
            if args[0].type == "integer":
                return self.sql(args[0])
            # PostgreSQL rounds to digits only in NUMERIC.
            return f"CAST(ROUND(CAST({self.sql(args[0])} AS NUMERIC), {digits}) AS DOUBLE PRECISION)"
        if name == "abs" and args[0].type == "decimal":
            return f"CAST(ABS({self.num(args[0])}) AS TEXT)"
        if name in ("lower", "upper"):
            # ASCII letters only, as SQLite's: the same report groups alike on both
            # backends, whatever the PostgreSQL database's locale makes of 'Ç'.
            cases = (_ASCII_UPPER, _ASCII_UPPER.lower())
            source, target = cases if name == "lower" else cases[::-1]
            return f"translate({self.sql(args[0])}, '{source}', '{target}')"
        return None

    def _local_date(self, arg: Node) -> str:
        inner = self.sql(arg)
        if arg.type == "date":
            return f"date({inner})"
        if self.utc:
            return f"date({inner}, 'unixepoch')"
        return f"tierd_local_date({inner}, {self.bind(self.tz)})"

    def _func(self, node: Node) -> str:
        name = node.value
        args = node.args
        if self.pg and (pg := self._pg_func(node)) is not None:
            return pg
        if name in ("date", "day"):
            return self._local_date(args[0])
        if name == "week":
            return f"date({self._local_date(args[0])}, '-6 days', 'weekday 1')"
        if name == "month":
            return f"strftime('%Y-%m-01', {self._local_date(args[0])})"
        if name == "year":
            return f"strftime('%Y-01-01', {self._local_date(args[0])})"
        if name == "age_days":
            if args[0].type == "instant":
                return f"CAST(({self.bind(self.now)} - {self.sql(args[0])}) / 86400 AS INTEGER)"
            today = dt.datetime.fromtimestamp(self.now, self.zone).date()
            return f"CAST(julianday({self.bind(today)}) - julianday({self.sql(args[0])}) AS INTEGER)"
        if name == "coalesce":
            return f"COALESCE({', '.join(self.sql(a) for a in args)})"
        if name == "round":
            digits = args[1].value if len(args) == 2 else 0
            if args[0].type == "decimal":
                return f"tierd_dround({self.sql(args[0])}, {int(digits)})"
            if len(args) == 1 and args[0].type == "integer":
                return self.sql(args[0])
            return f"ROUND({self.sql(args[0])}, {int(digits)})"
        if name == "abs":
            if args[0].type == "decimal":
                return f"tierd_dabs({self.sql(args[0])})"
            return f"ABS({self.sql(args[0])})"
        return f"{name.upper()}({self.sql(args[0])})"

    def _agg(self, node: Node) -> str:
        name = node.value
        if not node.args:
            return "COUNT(*)"
        if self.pg:
            return self._pg_agg(node)
        arg = node.args[0]
        inner = self.sql(arg)
        if name in ("count", "sum") and arg.type == "boolean":
            return f"COALESCE(SUM(CASE WHEN {inner} THEN 1 ELSE 0 END), 0)"
        if name == "avg" and arg.type == "boolean":
            return f"AVG(CASE WHEN {inner} THEN 1.0 WHEN NOT {inner} THEN 0.0 END)"
        if name == "count":
            return f"COUNT({inner})"
        if name == "count_distinct":
            return f"COUNT(DISTINCT {inner})"
        if arg.type == "decimal":
            return {
                "sum": "tierd_dsum",
                "avg": "tierd_davg",
                "min": "tierd_dmin",
                "max": "tierd_dmax",
                "p50": "tierd_p50",
                "p95": "tierd_p95",
            }[name] + f"({inner})"
        if name in ("p50", "p95"):
            return f"tierd_{name}({inner})"
        return f"{name.upper()}({inner})"

    def _pg_agg(self, node: Node) -> str:
        """PostgreSQL's aggregates: NUMERIC for decimals (back to text), nearest-rank
        percentiles as ``percentile_disc``, results in the types SQLite gives
        (PostgreSQL's SUM of BIGINT and AVG are NUMERIC)."""
        name, arg = node.value, node.args[0]
        inner = self.sql(arg)
        if name in ("count", "sum") and arg.type == "boolean":
            return f"COALESCE(SUM(CASE WHEN {inner} THEN 1 ELSE 0 END), 0)"
        if name == "avg" and arg.type == "boolean":
            return f"CAST(AVG(CASE WHEN {inner} THEN 1.0 WHEN NOT {inner} THEN 0.0 END) AS DOUBLE PRECISION)"
        if name == "count":
            return f"COUNT({inner})"
        if name == "count_distinct":
            return f"COUNT(DISTINCT {inner})"
        if name in ("p50", "p95"):
            value = self.num(arg) if arg.type == "decimal" else inner
            fraction = "0.5" if name == "p50" else "0.95"
            # percentile_disc is nearest rank: the first value at or past the fraction.
            found = f"percentile_disc({fraction}) WITHIN GROUP (ORDER BY {value})"
            return f"CAST({found} AS TEXT)" if arg.type == "decimal" else found
        if arg.type == "decimal":
            if name == "avg":
                return f"CAST(trim_scale(AVG({self.num(arg)})) AS TEXT)"
            return f"CAST({name.upper()}({self.num(arg)}) AS TEXT)"
        if name in ("min", "max") and arg.type == "boolean":
            return f"{'bool_and' if name == 'min' else 'bool_or'}({inner})"
        if name == "sum" and arg.type == "integer":
            return f"CAST(SUM({inner}) AS BIGINT)"
        if name == "avg":
            return f"CAST(AVG({inner}) AS DOUBLE PRECISION)"
        return f"{name.upper()}({inner})"


# --- SQLite functions (registered by Report.prepare) ----------------------------------------


def _dec(value: Any) -> Decimal | None:
    if value is None:
        return None
    if isinstance(value, float):
        return Decimal(repr(value))
    try:
        return Decimal(str(value))
    except InvalidOperation:
        return None


def _dtext(value: Decimal | None) -> str | None:
    return None if value is None else str(value)


class _DecimalSum:
    def __init__(self) -> None:
        self.total: Decimal | None = None

    def step(self, value: Any) -> None:
        number = _dec(value)
        if number is not None:
            self.total = number if self.total is None else self.total + number

    def finalize(self) -> str | None:
        return _dtext(self.total)


class _DecimalAvg:
    def __init__(self) -> None:
        self.total = Decimal(0)
        self.n = 0

    def step(self, value: Any) -> None:
        number = _dec(value)
        if number is not None:
            self.total += number
            self.n += 1

    def finalize(self) -> str | None:
        return _dtext(self.total / self.n) if self.n else None


class _DecimalMin:
    better = staticmethod(lambda new, old: new < old)

    def __init__(self) -> None:
        self.best: Decimal | None = None

    def step(self, value: Any) -> None:
        number = _dec(value)
        if number is not None and (self.best is None or self.better(number, self.best)):
            self.best = number

    def finalize(self) -> str | None:
        return _dtext(self.best)


class _DecimalMax(_DecimalMin):
    better = staticmethod(lambda new, old: new > old)


def _percentile(fraction: float) -> type:
    class Percentile:
        """Nearest rank: the smallest value with at least ``fraction`` of the values at or below it."""

        def __init__(self) -> None:
            self.values: list[Any] = []
            self.decimal = False

        def step(self, value: Any) -> None:
            if value is None:
                return
            if isinstance(value, str):
                number = _dec(value)
                if number is None:
                    return
                self.decimal = True
                self.values.append(number)
            else:
                self.values.append(value)

        def finalize(self) -> Any:
            if not self.values:
                return None
            self.values.sort()
            rank = max(1, math.ceil(fraction * len(self.values)))
            best = self.values[rank - 1]
            return str(best) if self.decimal else best

    return Percentile


_DECIMAL_OPS: dict[str, Callable[[Decimal, Decimal], Decimal]] = {
    "+": lambda x, y: x + y,
    "-": lambda x, y: x - y,
    "*": lambda x, y: x * y,
    "/": lambda x, y: x / y,
}


def _dchain(ops: str, *values: Any) -> str | None:
    """``values[0] ops[0] values[1] ops[1] ...`` left to right, in Decimal (NULL if any is)."""
    numbers = [_dec(v) for v in values]
    if any(n is None for n in numbers) or len(ops) != len(numbers) - 1:
        return None
    total = numbers[0]
    assert total is not None
    try:
        for op, number in zip(ops, numbers[1:], strict=True):
            assert number is not None
            total = _DECIMAL_OPS[op](total, number)
    except (ArithmeticError, InvalidOperation, KeyError):  # division by zero: NULL, as SQL does
        return None
    return str(total)


def _dcmp(a: Any, b: Any) -> int | None:
    x, y = _dec(a), _dec(b)
    if x is None or y is None:
        return None
    return (x > y) - (x < y)


def _dround(a: Any, digits: int) -> str | None:
    x = _dec(a)
    return None if x is None else str(x.quantize(Decimal(1).scaleb(-int(digits))))


def _dabs(a: Any) -> str | None:
    x = _dec(a)
    return None if x is None else str(abs(x))


_ZONES: dict[str, ZoneInfo] = {}


def _local_date(instant: Any, tz: str) -> str | None:
    if instant is None:
        return None
    zone = _ZONES.get(tz)
    if zone is None:
        zone = _ZONES[tz] = ZoneInfo(tz)
    return dt.datetime.fromtimestamp(float(instant), zone).date().isoformat()


def prepare_connection(conn: sqlite3.Connection) -> None:
    """Register the functions compiled reports call on ``conn``."""
    conn.create_aggregate("tierd_dsum", 1, _DecimalSum)  # type: ignore[arg-type]
    conn.create_aggregate("tierd_davg", 1, _DecimalAvg)  # type: ignore[arg-type]
    conn.create_aggregate("tierd_dmin", 1, _DecimalMin)  # type: ignore[arg-type]
    conn.create_aggregate("tierd_dmax", 1, _DecimalMax)  # type: ignore[arg-type]
    conn.create_aggregate("tierd_p50", 1, _percentile(0.50))
    conn.create_aggregate("tierd_p95", 1, _percentile(0.95))
    conn.create_function("tierd_dchain", -1, _dchain, deterministic=True)
    conn.create_function("tierd_dcmp", 2, _dcmp, deterministic=True)
    conn.create_function("tierd_dround", 2, _dround, deterministic=True)
    conn.create_function("tierd_dabs", 1, _dabs, deterministic=True)
    conn.create_function("tierd_local_date", 2, _local_date, deterministic=True)


# --- reports --------------------------------------------------------------------------------


@dataclasses.dataclass
class CompiledQuery:
    sql: str
    params: dict
    columns: list[Column]
    #: More rows than this is :class:`ReportTooLarge` (None: no check).
    max_rows: int | None = None


@dataclasses.dataclass
class _OutColumn:
    name: str
    node: Node
    description: str

    @property
    def out_type(self) -> str:
        t = self.node.type
        return "decimal" if t == "real" else "text" if t == "null" else t


class Report:
    """A checked definition, ready to compile for a tenant and parameters."""

    def __init__(self, name: str, spec: Mapping[str, Any], source: ReportSource, origin: str) -> None:
        self.name = name
        self.origin = origin
        self.source = source.name
        self._source = source
        self.spec = dict(spec)
        self.title = str(spec.get("title") or name)
        self.description = str(spec.get("description") or "")
        self.parameters: dict[str, Parameter] = {}
        self.chart: dict | None = None
        self._build(spec)

    # Each part of the definition is checked where it is (errors carry its key path).
    def _build(self, spec: Mapping[str, Any]) -> None:
        """Check and parse the definition in three stages (parameters; filters and
        columns; grouping, order, limit and chart), each reporting every error it
        finds (:attr:`DefinitionError.errors`): a later stage would only repeat
        an earlier one's mistakes."""
        columns = {c.name: c for c in self._source.columns}
        if "tenant" not in columns:
            columns["tenant"] = Column("tenant", "text", "The tenant the row belongs to")
        self._columns = columns
        errors: list[DefinitionError] = []

        def check(fn: Callable[..., Any], *args: Any) -> Any:
            try:
                return fn(*args)
            except DefinitionError as exc:
                errors.append(exc)
                return None

        def stage_done() -> None:
            if errors:
                first = errors[0]
                first.errors = list(errors)
                raise first

        params = spec.get("parameters") or {}
        if not isinstance(params, dict):
            raise DefinitionError(("parameters",), "expected a mapping of parameter names to their types")
        for pname, pspec in params.items():
            param = check(_parse_parameter, pname, pspec, ("parameters", pname))
            if param is not None:
                self.parameters[param.name] = param
        stage_done()

        self._filters: list[Node] = []
        filters = spec.get("filters") or []
        if isinstance(filters, str):
            filters = [filters]
        if not isinstance(filters, list):
            errors.append(DefinitionError(("filters",), "expected a list of conditions"))
            filters = []
        for i, text in enumerate(filters):
            node = check(self._filter, text, ("filters", i))
            if node is not None:
                self._filters.append(node)

        self._out: list[_OutColumn] = []
        raw_columns = spec.get("columns")
        if raw_columns is None:
            raw_columns = [c.name for c in self._source.columns]
        if not isinstance(raw_columns, list) or not raw_columns:
            errors.append(DefinitionError(("columns",), "expected a list of columns"))
            raw_columns = []
        seen: set[str] = set()
        for i, item in enumerate(raw_columns):
            out = check(self._column, item, ("columns", i))
            if out is None:
                continue
            if out.name in seen:
                errors.append(DefinitionError(("columns", i), f"column {out.name!r} is listed twice"))
            seen.add(out.name)
            self._out.append(out)
        stage_done()
        by_name = {o.name: o for o in self._out}

        self._group: list[Node] = []
        group_by = spec.get("group_by") or []
        if isinstance(group_by, str):
            group_by = [group_by]
        if not isinstance(group_by, list):
            errors.append(DefinitionError(("group_by",), "expected a list of column names"))
            group_by = []
        group_names: set[str] = set()
        for i, key in enumerate(group_by):
            node = check(self._group_key, key, ("group_by", i), by_name)
            if node is not None:
                group_names.add(key)
                self._group.append(node)
        grouped = bool(self._group) or any(o.node.agg for o in self._out)
        self._grouped = grouped
        if grouped and not errors:
            # A row-level expression over grouped columns only is one value per group.
            grouped_columns = {g.value for g in self._group if g.kind == "col"}
            for i, out in enumerate(self._out):
                if not out.node.agg and out.name not in group_names and not _column_refs(out.node) <= grouped_columns:
                    errors.append(
                        DefinitionError(
                            ("columns", i),
                            f"column {out.name!r} is neither in group_by nor an aggregate (count, sum, ...)",
                        )
                    )

        self._order: list[tuple[Node | str, bool]] = []
        order_by = spec.get("order_by") or []
        if isinstance(order_by, str):
            order_by = [order_by]
        if not isinstance(order_by, list):
            errors.append(DefinitionError(("order_by",), "expected a list of columns (prefix '-' for descending)"))
            order_by = []
        for i, item in enumerate(order_by):
            order = check(self._order_item, item, ("order_by", i), by_name, grouped)
            if order is not None:
                self._order.append(order)

        limit = spec.get("limit")
        if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= MAX_LIMIT):
            errors.append(DefinitionError(("limit",), f"expected a whole number from 1 to {MAX_LIMIT}"))
        self.limit: int | None = limit

        chart = spec.get("chart")
        if chart is not None:
            self.chart = check(self._chart, chart, by_name)
        stage_done()

    def _filter(self, text: Any, path: Path) -> Node:
        node = self._expr(text, path)
        if node.agg:
            raise DefinitionError(path, "a filter cannot use an aggregate (it selects rows)")
        if node.type != "boolean":
            raise DefinitionError(path, f"a filter is a condition (true or false), got a {node.type}")
        return node

    def _group_key(self, key: Any, path: Path, by_name: Mapping[str, _OutColumn]) -> Node:
        if isinstance(key, str) and key in by_name:
            node = by_name[key].node
        elif isinstance(key, str) and key in self._columns:
            node = Node("col", value=key, type=self._columns[key].type)
        else:
            raise DefinitionError(
                path,
                f"unknown column {key!r}: group by an output column or a source column"
                + did_you_mean(key, [*by_name, *self._columns]),
            )
        if node.agg:
            raise DefinitionError(path, f"cannot group by the aggregate {key!r}")
        return node

    def _order_item(
        self, item: Any, path: Path, by_name: Mapping[str, _OutColumn], grouped: bool
    ) -> tuple[Node | str, bool]:
        if not isinstance(item, str):
            raise DefinitionError(path, "expected a column name or an expression")
        text, desc = item.strip(), False
        if text.startswith("-"):
            text, desc = text[1:].strip(), True
        lowered = text.lower()
        if lowered.endswith(" desc") or lowered.endswith(" asc"):
            desc = lowered.endswith(" desc")
            text = text.rsplit(" ", 1)[0].strip()
        if text in by_name:
            return text, desc
        node = self._expr(text, path)
        if grouped and not node.agg and not any(_same(node, g) for g in self._group):
            raise DefinitionError(path, "order a grouped report by its columns or by an aggregate")
        return node, desc

    def _expr(self, text: Any, path: Path) -> Node:
        try:
            return parse_expression(text, self._columns, self.parameters)
        except ValueError as exc:
            raise DefinitionError(path, str(exc)) from None

    def _column(self, item: Any, path: Path) -> _OutColumn:
        if isinstance(item, str):
            if NAME_RE.fullmatch(item) and item in self._columns:
                col = self._columns[item]
                return _OutColumn(item, Node("col", value=item, type=col.type), col.description)
            raise DefinitionError(
                path,
                f"unknown column {item!r} of source {self.source!r}"
                + did_you_mean(item, self._columns)
                + " (a computed column is a mapping: {name: ..., expr: ...})",
            )
        if not isinstance(item, dict):
            raise DefinitionError(path, "expected a source column's name or a mapping {name, expr, description}")
        for key in item:
            if key not in COLUMN_KEYS:
                raise DefinitionError(path + (key,), f"unknown key {key!r}{did_you_mean(key, COLUMN_KEYS)}")
        name = item.get("name")
        if not isinstance(name, str) or not NAME_RE.fullmatch(name):
            raise DefinitionError(path + ("name",), "a column name is a lowercase identifier (e.g. deliveries)")
        expr = item.get("expr", name)
        node = self._expr(expr, path + ("expr",))
        description = item.get("description")
        if description is None:
            description = self._columns[name].description if node.kind == "col" and name in self._columns else ""
        return _OutColumn(name, node, str(description))

    def _chart(self, chart: Any, by_name: Mapping[str, _OutColumn]) -> dict:
        if not isinstance(chart, dict):
            raise DefinitionError(("chart",), "expected a mapping {type, x, y}")
        for key in chart:
            if key not in ("type", "x", "y", "title"):
                raise DefinitionError(("chart", key), f"unknown key {key!r}{did_you_mean(key, ('type', 'x', 'y'))}")
        kind = chart.get("type", "line")
        if kind not in ("line", "bar"):
            raise DefinitionError(("chart", "type"), f"expected line or bar, got {kind!r}")
        x = chart.get("x")
        if not isinstance(x, str) or x not in by_name:
            raise DefinitionError(("chart", "x"), f"unknown column {x!r}{did_you_mean(x, by_name)}")
        ys = chart.get("y")
        if isinstance(ys, str):
            ys = [ys]
        if not isinstance(ys, list) or not ys:
            raise DefinitionError(("chart", "y"), "expected a list of columns")
        for i, y in enumerate(ys):
            if not isinstance(y, str) or y not in by_name:
                raise DefinitionError(("chart", "y", i), f"unknown column {y!r}{did_you_mean(y, by_name)}")
            if by_name[y].out_type not in ("integer", "decimal"):
                raise DefinitionError(("chart", "y", i), f"column {y!r} is not a number")
        out = {"type": kind, "x": x, "y": list(ys)}
        if "title" in chart:
            out["title"] = str(chart["title"])
        return out

    # --- running ---------------------------------------------------------------------------

    @property
    def columns(self) -> list[Column]:
        return [Column(o.name, o.out_type, o.description) for o in self._out]

    def parse_params(
        self, raw: Mapping[str, Any], timezone: str = "UTC", today: dt.date | None = None
    ) -> dict[str, Any]:
        """Typed values of every parameter (defaults filled in, relative periods
        resolved in ``timezone``); :class:`ParamError` on a bad one."""
        try:
            zone = ZoneInfo(timezone)
        except (ZoneInfoNotFoundError, ValueError, TypeError):
            raise ParamError("timezone", f"unknown time zone {timezone!r:.60}") from None
        if today is None:
            today = dt.datetime.now(zone).date()
        if not isinstance(raw, Mapping):
            raise ParamError("params", "expected a mapping of parameter names to values")
        for key in raw:
            if key not in self.parameters:
                shown = key if isinstance(key, str) and not unicode_problem(key) else repr(key)
                raise ParamError(
                    str(shown)[:60],
                    f"report {self.name!r} has no such parameter"
                    + (f" (it has: {', '.join(self.parameters)})" if self.parameters else "")
                    + did_you_mean(key, self.parameters),
                )
        values: dict[str, Any] = {}
        for name, param in self.parameters.items():
            value = raw.get(name)
            if value is None or value == "":
                value = param.default
            if value is None:
                if param.required:
                    raise ParamError(name, "required")
                values[name] = None
                continue
            try:
                typed = convert_value(param, value, today)
            except ValueError as exc:
                raise ParamError(name, str(exc)) from None
            if param.choices is not None and typed not in param.choices:
                raise ParamError(name, f"must be one of {', '.join(map(str, param.choices))}")
            values[name] = typed
        return values

    def compile(
        self,
        tenant: str | None,
        params: dict,
        max_rows: int,
        timezone: str = "UTC",
        now: float | None = None,
        dialect: str = "sqlite",
    ) -> CompiledQuery:
        """The SELECT for ``tenant`` (None: across tenants, for the admin) with
        typed ``params`` (from :meth:`parse_params`), in the SQL of ``dialect``
        (the database's ``db.dialect``)."""
        values = {name: params.get(name) for name in self.parameters}
        for name, param in self.parameters.items():
            value = values[name]
            if value is None:
                continue
            # Typed values only (parse_params made them): anything else is refused, not pasted.
            expected = {
                "text": str,
                "integer": int,
                "decimal": Decimal,
                "date": dt.date,
                "boolean": bool,
            }[param.type]
            if not isinstance(value, expected) or (param.type == "integer" and isinstance(value, bool)):
                raise ParamError(name, f"expected a {param.type} value (use parse_params)")
        try:
            emit = _Emitter(values, timezone, time.time() if now is None else now, dialect)
        except (ZoneInfoNotFoundError, ValueError):
            raise ParamError("timezone", f"unknown time zone {timezone!r}") from None
        select = []
        for out in self._out:
            select.append(f'{emit.sql(out.node)} AS "{out.name}"')
        where = []
        if tenant is not None:
            emit.bound["tenant"] = tenant
            where.append("src.tenant = :tenant")
        for node in self._filters:
            if any(values.get(p) is None for p in node.params):
                continue  # an optional parameter left empty: its filter is left out
            where.append(emit.sql(node))
        sql = f"SELECT {', '.join(select)}\nFROM ({self._source.sql.strip().rstrip(';')}) AS src"
        if where:
            sql += "\nWHERE " + "\n  AND ".join(where)
        if self._group:
            sql += "\nGROUP BY " + ", ".join(emit.sql(g) for g in self._group)
        if self._order:
            parts = []
            for item, desc in self._order:
                if not isinstance(item, str):
                    # A group key written again is the group key's SQL (the same bound
                    # parameters): PostgreSQL knows it for the key only so.
                    item = next((g for g in self._group if _same(item, g)), item)
                target = f'"{item}"' if isinstance(item, str) else emit.sql(item)
                parts.append(f"{target}{' DESC' if desc else ''}")
            sql += "\nORDER BY " + ", ".join(parts)
        limit = self.limit
        checked: int | None = None
        if max_rows is not None and (limit is None or limit > max_rows):
            limit, checked = max_rows + 1, max_rows
        if limit is not None:
            emit.bound["limit"] = int(limit)
            sql += "\nLIMIT :limit"
        return CompiledQuery(sql=sql, params=dict(emit.bound), columns=self.columns, max_rows=checked)

    def prepare(self, conn: Any) -> None:
        """Register on ``conn`` the functions the compiled SQL calls (SQLite's;
        PostgreSQL's SQL needs none)."""
        if isinstance(conn, sqlite3.Connection):
            prepare_connection(conn)

    def explain(
        self,
        tenant: str | None,
        params: dict,
        max_rows: int = 100_000,
        timezone: str = "UTC",
        dialect: str = "sqlite",
    ) -> str:
        """The compiled SQL and its parameters, for people."""
        query = self.compile(tenant, params, max_rows, timezone=timezone, dialect=dialect)
        lines = [f"-- report {self.name} ({self.origin}), source {self.source}", query.sql + ";", "-- parameters:"]
        lines += [f"--   :{k} = {v!r}" for k, v in query.params.items()] or ["--   (none)"]
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "title": self.title,
            "description": self.description,
            "source": self.source,
            "origin": self.origin,
            "parameters": [p.to_dict() for p in self.parameters.values()],
            "columns": [dataclasses.asdict(c) for c in self.columns],
            "chart": self.chart,
        }


def _column_refs(node: Node) -> set[str]:
    """The source columns an expression reads outside aggregates."""
    if node.kind == "col":
        return {node.value}
    if node.kind == "agg":
        return set()
    return set().union(*(_column_refs(a) for a in node.args)) if node.args else set()


def _same(a: Node, b: Node) -> bool:
    return (
        a.kind == b.kind
        and a.value == b.value
        and len(a.args) == len(b.args)
        and all(_same(x, y) for x, y in zip(a.args, b.args, strict=True))
    )


# --- loading --------------------------------------------------------------------------------


def build_report(name: str, spec: Any, sources: Mapping[str, ReportSource], origin: str = "config") -> Report:
    """One report from its definition; :class:`DefinitionError` (path inside the spec) if wrong."""
    if not isinstance(name, str) or not REPORT_NAME_RE.fullmatch(name):
        raise DefinitionError((), "a report name is lowercase words (e.g. weekly_failures)")
    if not isinstance(spec, Mapping):
        raise DefinitionError((), "expected a mapping (title, source, columns, ...)")
    for key in spec:
        if key not in SPEC_KEYS:
            raise DefinitionError((key,), f"unknown key {key!r}{did_you_mean(key, SPEC_KEYS)}")
    for key in ("title", "description"):
        if key in spec and not isinstance(spec[key], str):
            raise DefinitionError((key,), "expected text")
    source_name = spec.get("source")
    if not isinstance(source_name, str) or not source_name:
        raise DefinitionError(("source",), "required: the source the report reads (see `tierd reports sources`)")
    source = sources.get(source_name)
    if source is None:
        raise DefinitionError(
            ("source",),
            f"unknown source {source_name!r}{did_you_mean(source_name, sources)}"
            + (f" (sources: {', '.join(sorted(sources))})" if sources else ""),
        )
    return Report(name, spec, source, origin)


def load_reports(registries: Any, definitions: Mapping[str, Mapping] | None) -> dict[str, Report]:
    """The shipped reports (``registries.reports``) and the configured ones
    (``reports.definitions``); :class:`DefinitionError` naming the plugin or key."""
    sources = registries.report_sources
    reports: dict[str, Report] = {}
    for name, definition in registries.reports.items():
        plugin = registries.origins.get("reports:" + name, "?")
        try:
            reports[name] = build_report(name, definition.spec, sources, origin=plugin)
        except DefinitionError as exc:
            for error in exc.errors:
                error.where = f"report {name!r} shipped by plugin {plugin!r}"
            raise
    for name, spec in (definitions or {}).items():
        where = f"reports.definitions.{name}"
        if name in reports:
            raise DefinitionError((), f"a report {name!r} is shipped by plugin {reports[name].origin!r}", where)
        try:
            reports[name] = build_report(name, spec, sources, origin="config")
        except DefinitionError as exc:
            for error in exc.errors:
                error.where = where
            raise
    return reports


# --- reading --------------------------------------------------------------------------------


def _converter(kind: str) -> Callable[[Any], Any]:
    if kind == "decimal":

        def decimal(value: Any) -> Any:
            if value is None or isinstance(value, str):
                return value
            if isinstance(value, Decimal):  # PostgreSQL's NUMERIC, should a source give one
                return str(value) if value.is_finite() else None
            if isinstance(value, float):
                if not math.isfinite(value):
                    return None
                return format(Decimal(repr(round(value, 6))).normalize(), "f")
            return str(value)

        return decimal
    if kind == "integer":
        return lambda v: int(v) if isinstance(v, (float, Decimal)) and math.isfinite(v) else v
    if kind == "boolean":
        return lambda v: None if v is None else int(bool(v))
    if kind == "instant":
        return lambda v: float(v) if isinstance(v, int) else v
    return lambda v: v


def stream(conn: Any, report: Report, query: CompiledQuery) -> Iterator[tuple]:
    """Rows of ``query`` as tuples in ``query.columns``' order, each value in
    its column's form (decimals as ``str(Decimal)`` text). The functions are
    registered on ``conn`` first. :class:`ReportTooLarge` past ``max_rows``.

    ``conn`` is an ``sqlite3.Connection`` or, on PostgreSQL, anything with
    ``execute(sql, params)`` answering a cursor with ``fetchmany(n)`` and
    ``close()`` (``pgread.PgReader``); either is read from a worker thread."""
    report.prepare(conn)
    converters = [_converter(c.type) for c in query.columns]
    cursor = conn.execute(query.sql, query.params)
    try:
        n = 0
        while True:
            rows = cursor.fetchmany(500)
            if not rows:
                return
            for row in rows:
                n += 1
                if query.max_rows is not None and n > query.max_rows:
                    raise ReportTooLarge(query.max_rows)
                yield tuple(f(v) for f, v in zip(converters, row, strict=True))
    finally:
        cursor.close()


__all__ = [
    "AGGREGATES",
    "COLUMN_TYPES",
    "FUNCTIONS",
    "CompiledQuery",
    "DefinitionError",
    "Parameter",
    "ParamError",
    "Report",
    "ReportTooLarge",
    "build_report",
    "load_reports",
    "parse_expression",
    "prepare_connection",
    "resolve_period",
    "stream",
]
