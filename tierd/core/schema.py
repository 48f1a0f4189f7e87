"""A small declarative validator for configuration sections.

Core and every plugin describe their config section with these field classes::

    SCHEMA = Obj({
        "timeout": Duration(default="15s", doc="Per attempt"),
        "retry_schedule": List(Duration(), default=["0s", "5s", "5m"]),
    })
    value, errors = validate(SCHEMA, raw)

The same fields declare the JSON request bodies of the control API: core
validates a body with them before the handler runs, and :meth:`Field.json_schema`
writes the body's schema (OpenAPI 3.0 dialect) for the API document.

Validation never stops at the first problem: every error is collected as a
:class:`SchemaError` carrying the key path, so that an admin fixes a file in
one pass. Clean values are plain Python (dicts, lists, str, int, float,
``decimal.Decimal``, ``ipaddress`` networks) with defaults filled in.

Writing a field: subclass :class:`Field`, set ``type_name`` and implement
``parse(value)`` returning the clean value or raising :class:`Reject`.
Containers override ``convert(value, path, errors)`` instead. A message
quotes the value it rejects through :func:`show`, :func:`quote` or
``Field.shown`` only, so that it stays short and a secret stays hidden.
A field also implements ``json_type()``: the JSON-schema keywords of what
it accepts (``Field.json_schema`` adds the common ones: doc, null, default).

Hostile input is refused here, for config files and request bodies alike:
strings that are not valid Unicode (lone surrogates, e.g. from a ``"\\ud800"``
escape or undecodable bytes in an environment variable) wherever text is
accepted; NaN and infinities; integers outside SQLite's 64-bit range (the
default bounds of :class:`Int`); decimals of 10**18 or more; durations over
1000 years. Floats are only required to be finite: give ``min``/``max``.
"""

from __future__ import annotations

import copy
import dataclasses
import decimal
import difflib
import ipaddress
import math
import re
import zoneinfo
from collections.abc import Callable, Iterable
from typing import Any as AnyType
from urllib.parse import urlsplit

from apscheduler.triggers.cron import CronTrigger

from tierd.core.clock import parse_iso
from tierd.core.http import tls_file_problem

__all__ = [
    "MISSING",
    "SchemaError",
    "Invalid",
    "Reject",
    "Field",
    "Str",
    "CaFile",
    "Int",
    "Float",
    "Bool",
    "Decimal",
    "Duration",
    "Instant",
    "Enum",
    "Cidr",
    "Url",
    "TimeZone",
    "Cron",
    "Any",
    "List",
    "Map",
    "Obj",
    "OneOf",
    "validate",
    "describe",
    "format_path",
    "show",
    "quote",
    "did_you_mean",
    "parse_duration",
    "unicode_problem",
]

Path = tuple  # of str keys and int list indexes


class _Missing:
    """Marks "no default": distinct from None, which is a legitimate default."""

    def __repr__(self) -> str:
        return "MISSING"


MISSING: AnyType = _Missing()


def format_path(path: Path) -> str:
    """Render a key path the way an admin reads it: ``webhooks.retry_schedule[2]``.

    A key that is not valid Unicode is shown escaped (``\\ud800``), so that
    the error about it can be printed and logged.
    """
    text = ""
    for part in path:
        if isinstance(part, int) and not isinstance(part, bool):
            text += f"[{part}]"
        else:
            part = str(part).encode("utf-8", "backslashreplace").decode()
            text += f".{part}" if text else part
    return text


@dataclasses.dataclass(frozen=True)
class SchemaError:
    """One problem found in a value: where (key path) and what."""

    path: Path
    message: str

    def __str__(self) -> str:
        where = format_path(self.path)
        return f"{where}: {self.message}" if where else self.message


class Invalid(Exception):
    """Raised by :meth:`Field.validate`; ``.errors`` lists every problem found."""

    def __init__(self, errors: list[SchemaError]) -> None:
        super().__init__("\n".join(map(str, errors)))
        self.errors = errors


class Reject(Exception):
    """Raised by a field's ``parse()``: the value is wrong, the message says why."""


def quote(value: AnyType) -> str:
    """``repr(value)`` for an error message, cut to about 60 characters (a value may be huge)."""
    if isinstance(value, str):
        return repr(value if len(value) <= 60 else value[:57] + "...")
    if isinstance(value, int) and value.bit_length() > 200:  # repr() refuses past 4300 digits
        return f"<a number of about {int(value.bit_length() * math.log10(2)) + 1} digits>"
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def show(value: AnyType) -> str:
    """Name a received value for an error message: its YAML type, and the value if scalar."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return f"boolean {str(value).lower()}"
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, str):
        return f"string {quote(value)}"
    return f"{type(value).__name__} {quote(value)}"


_SURROGATE = re.compile(r"[\ud800-\udfff]")


def unicode_problem(text: str) -> str | None:
    """Why text is not valid Unicode (a lone surrogate), or None. Never quotes the text.

    Such strings cannot be encoded as UTF-8: SQLite would store bytes that no
    later read can decode, and JSON or a log line would fail on them.
    """
    if text.isascii():
        return None
    found = _SURROGATE.search(text)
    if found is None:
        return None
    return (
        f"not valid Unicode text: character {found.start() + 1} is U+{ord(found.group()):04X}, "
        "a lone surrogate (undecodable bytes, or a \\uD800-style escape: write characters "
        "above U+FFFF as \\U0001F600)"
    )


def _check_text(value: AnyType, path: Path, errors: list[SchemaError]) -> None:
    """Report every string (key or value) in a nested value that is not valid Unicode."""
    pending = [(path, value)]
    while pending:  # a loop, not recursion: the value may be nested deeply
        where, item = pending.pop()
        if isinstance(item, str):
            problem = unicode_problem(item)
            if problem:
                errors.append(SchemaError(where, problem))
        elif isinstance(item, dict):
            for key, child in item.items():
                problem = unicode_problem(key) if isinstance(key, str) else None
                if problem:
                    errors.append(SchemaError(where + (key,), f"invalid key: {problem}"))
                pending.append((where + (key,), child))
        elif isinstance(item, list):
            pending.extend((where + (index,), child) for index, child in enumerate(item))


def did_you_mean(word: AnyType, candidates: Iterable) -> str:
    """Return `` (did you mean 'x'?)`` for the closest candidate, or ``""``.

    Case is ignored when comparing, so ``info`` suggests ``INFO``.
    """
    if not isinstance(word, str):
        return ""
    by_lower = {c.lower(): c for c in candidates if isinstance(c, str)}
    match = difflib.get_close_matches(word.lower(), list(by_lower), n=1)
    return f" (did you mean {by_lower[match[0]]!r}?)" if match else ""


def _article(noun: str) -> str:
    return f"an {noun}" if noun[:1] in "aeiou" else f"a {noun}"


def _check_range(
    value: AnyType, low: AnyType, high: AnyType, fmt: Callable[[AnyType], str] = str, got: str | None = None
) -> AnyType:
    """Return value if it lies within [low, high] (either bound optional), else reject.

    ``got`` names the value as received (default: ``fmt(value)``).
    """
    if low is not None and value < low:
        raise Reject(f"must be at least {fmt(low)}, got {got or fmt(value)}")
    if high is not None and value > high:
        raise Reject(f"must be at most {fmt(high)}, got {got or fmt(value)}")
    return value


class Field:
    """Base of all fields.

    ``default``: used when the key is absent (validated like a value from the
    file, so ``Duration(default="10s")`` yields ``10.0``); ``required``: the
    key must be present; ``nullable``: ``null`` is accepted (implied by
    ``default=None``); ``doc``: one line for generated docs; ``secret``: the
    value is never echoed in error messages.
    """

    type_name = "value"

    def __init__(
        self,
        *,
        default: AnyType = MISSING,
        required: bool = False,
        nullable: bool = False,
        doc: str = "",
        secret: bool = False,
    ) -> None:
        self.default = default
        self.required = required
        self.nullable = nullable or default is None
        self.doc = doc
        self.secret = secret

    def validate(self, value: AnyType, path: Path = ()) -> AnyType:
        """Return the clean value, or raise :class:`Invalid` listing every error."""
        errors: list[SchemaError] = []
        clean = self.collect(value, tuple(path), errors)
        if errors:
            raise Invalid(errors)
        return clean

    def collect(self, value: AnyType, path: Path, errors: list[SchemaError]) -> AnyType:
        """Validate value found at path; append errors; return the clean value (None if invalid)."""
        if value is None:
            if not self.nullable:
                errors.append(SchemaError(path, f"expected {_article(self.type_name)}, got null"))
            return None
        return self.convert(value, path, errors)

    def absent(self, path: Path, errors: list[SchemaError]) -> AnyType:
        """Return the value for a key missing from its mapping: the default, or None."""
        if self.required:
            errors.append(SchemaError(path, f"required key is missing ({_article(self.type_name)})"))
            return None
        if self.default is MISSING:
            return None
        # Deep copy: a mutable default must never be shared between configs.
        return self.collect(copy.deepcopy(self.default), path, errors)

    def convert(self, value: AnyType, path: Path, errors: list[SchemaError]) -> AnyType:
        """Validate a non-null value. Scalars implement :meth:`parse` instead."""
        try:
            return self.parse(value)
        except Reject as exc:
            errors.append(SchemaError(path, str(exc)))
            return None

    def parse(self, value: AnyType) -> AnyType:
        """Return the clean form of a non-null scalar or raise :class:`Reject`."""
        raise NotImplementedError

    def shown(self, value: AnyType) -> str:
        """:func:`show` the value, unless it is a secret."""
        return f"{type(value).__name__} (value hidden)" if self.secret else show(value)

    def mismatch(self, value: AnyType) -> Reject:
        """The error for a value of the wrong type."""
        return Reject(f"expected {_article(self.type_name)}, got {self.shown(value)}")

    def children(self) -> list[tuple[str, Field]]:
        """Nested fields as (path suffix, field), for :func:`describe`."""
        return []

    def json_schema(self) -> dict:
        """What this field accepts as a JSON schema (the OpenAPI 3.0 dialect), for the API document."""
        schema = self.json_type()
        if self.doc:
            schema["description"] = self.doc
        if self.nullable and "type" in schema:  # OpenAPI 3.0 adds null to an explicit type only
            schema["nullable"] = True
        if (
            self.default is not MISSING
            and self.default is not None
            and not self.secret
            and isinstance(self.default, (str, int, float, bool, list, dict))
        ):
            schema["default"] = self.default
        return schema

    def json_type(self) -> dict:
        """The JSON-schema keywords of the values this type accepts; every field type implements it."""
        return {}


# --- scalars ----------------------------------------------------------------


class Str(Field):
    """A string, optionally with bounds on its length, a regex (full match) or a set of choices.

    ``pattern_doc`` says in words what the pattern accepts ("a dotted lowercase
    name such as invoice.paid"): the error quotes it instead of the regex.
    """

    type_name = "string"

    def __init__(
        self,
        *,
        min_len: int = 0,
        max_len: int | None = None,
        pattern: str | re.Pattern[str] | None = None,
        pattern_doc: str = "",
        choices: Iterable[str] | None = None,
        **options: AnyType,
    ) -> None:
        super().__init__(**options)
        self.min_len = min_len
        self.max_len = max_len
        self.pattern = re.compile(pattern) if isinstance(pattern, str) else pattern
        self.pattern_doc = pattern_doc
        self.choices = tuple(choices) if choices is not None else None

    def mismatch(self, value: AnyType) -> Reject:
        reject = super().mismatch(value)
        if isinstance(value, (int, float, bool)):  # YAML read `1.0` or `yes` as a non-string
            reject = Reject(f"{reject} (put it in quotes to make it a string)")
        return reject

    def parse(self, value: AnyType) -> AnyType:
        if not isinstance(value, str):
            raise self.mismatch(value)
        _refuse_invalid_unicode(value)
        if len(value) < self.min_len:
            raise Reject(
                "must not be empty" if self.min_len == 1 else f"must be at least {self.min_len} characters long"
            )
        if self.max_len is not None and len(value) > self.max_len:
            raise Reject(f"must be at most {self.max_len} characters long, got {len(value)}")
        if self.pattern is not None and not self.pattern.fullmatch(value):
            if self.pattern_doc:
                raise Reject(f"expected {self.pattern_doc}, got {self.shown(value)}")
            raise Reject(f"{self.shown(value)} does not match the pattern {self.pattern.pattern!r}")
        if self.choices is not None and value not in self.choices:
            raise Reject(
                f"expected one of {', '.join(map(repr, self.choices))}, "
                f"got {self.shown(value)}{did_you_mean(value, self.choices)}"
            )
        return value

    def json_type(self) -> dict:
        schema: dict = {"type": "string"}
        if self.min_len:
            schema["minLength"] = self.min_len
        if self.max_len is not None:
            schema["maxLength"] = self.max_len
        if self.pattern is not None:
            schema["pattern"] = json_pattern(self.pattern)
            if self.pattern_doc and not self.doc:
                schema["description"] = self.pattern_doc
        if self.choices is not None:
            schema["enum"] = list(self.choices)
        return schema


def json_pattern(pattern: re.Pattern) -> str:
    """A pattern used with ``fullmatch`` as a JSON-schema pattern, which searches:
    anchored at both ends (a trailing ``\\Z`` is redundant under fullmatch)."""
    text = pattern.pattern
    if text.endswith("\\Z") and not text.endswith("\\\\Z"):
        text = text[:-2]
    return f"^(?:{text})$"


def _refuse_invalid_unicode(text: str) -> None:
    problem = unicode_problem(text)
    if problem:
        raise Reject(problem)


INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1


class Int(Field):
    """An integer (booleans are not integers here), optionally bounded.

    Without ``min``/``max`` it still lies in SQLite's 64-bit range, so that
    it can be stored and no later conversion overflows; nothing configures
    more. Bound it tighter where it feeds a ``timedelta`` or a sleep.
    """

    type_name = "integer"

    def __init__(self, *, min: int | None = None, max: int | None = None, **options: AnyType) -> None:
        super().__init__(**options)
        self.min, self.max = min, max

    def parse(self, value: AnyType) -> AnyType:
        if isinstance(value, bool) or not isinstance(value, int):
            raise self.mismatch(value)
        return _check_range(
            value, INT64_MIN if self.min is None else self.min, INT64_MAX if self.max is None else self.max, quote
        )

    def json_type(self) -> dict:
        return {
            "type": "integer",
            "minimum": INT64_MIN if self.min is None else self.min,
            "maximum": INT64_MAX if self.max is None else self.max,
        }


class Float(Field):
    """A finite number (an integer is accepted), returned as float, optionally bounded;
    ``above`` is an exclusive lower bound (a rate must be above 0)."""

    type_name = "number"

    def __init__(
        self, *, min: float | None = None, max: float | None = None, above: float | None = None, **options: AnyType
    ) -> None:
        super().__init__(**options)
        self.min, self.max, self.above = min, max, above

    def parse(self, value: AnyType) -> AnyType:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise self.mismatch(value)
        try:
            number = float(value)
        except OverflowError:  # an integer of hundreds of digits (JSON allows it)
            raise Reject(f"must be a finite number, got {quote(value)}") from None
        if not math.isfinite(number):
            raise Reject(f"must be a finite number, got {value}")
        if self.above is not None and not number > self.above:
            raise Reject(f"must be above {self.above}, got {quote(value)}")
        return _check_range(number, self.min, self.max)

    def json_type(self) -> dict:
        schema: dict = {"type": "number"}
        if self.above is not None:
            schema |= {"minimum": self.above, "exclusiveMinimum": True}
        elif self.min is not None:
            schema["minimum"] = self.min
        if self.max is not None:
            schema["maximum"] = self.max
        return schema


class Bool(Field):
    """A YAML boolean (true/false, yes/no); strings and numbers are rejected."""

    type_name = "boolean"

    def parse(self, value: AnyType) -> AnyType:
        if not isinstance(value, bool):
            raise self.mismatch(value)
        return value

    def json_type(self) -> dict:
        return {"type": "boolean"}


_DECIMAL_DIGITS = 18


class Decimal(Field):
    """An exact decimal number for money: returns ``decimal.Decimal``, never a float.

    YAML reads ``0.1`` as a float; it is converted through ``str()`` so the
    result is ``Decimal("0.1")``, not the binary approximation.
    """

    type_name = "decimal number"

    def __init__(self, *, min: AnyType = None, max: AnyType = None, **options: AnyType) -> None:
        super().__init__(**options)
        self.min = None if min is None else decimal.Decimal(str(min))
        self.max = None if max is None else decimal.Decimal(str(max))

    def parse(self, value: AnyType) -> AnyType:
        if isinstance(value, bool) or not isinstance(value, (int, float, str, decimal.Decimal)):
            raise self.mismatch(value)
        try:
            number = decimal.Decimal(str(value).strip())
        except decimal.InvalidOperation:
            raise Reject(f"expected a decimal number such as 12.50, got {self.shown(value)}") from None
        if not number.is_finite():
            raise Reject(f"must be a finite decimal number, got {self.shown(value)}")
        if number and number.adjusted() >= _DECIMAL_DIGITS:  # e.g. 1e999999: overflows when rounded
            raise Reject(
                f"too large: at most {_DECIMAL_DIGITS} digits before the decimal point, got {self.shown(value)}"
            )
        return _check_range(number, self.min, self.max, got=quote(value) if isinstance(value, str) else None)

    def json_type(self) -> dict:
        # Money is text in the API (a JSON number is accepted too, read through its text).
        return {"type": "string", "format": "decimal", "example": "12.50"}


_DURATION = re.compile(r"(?:\d+(?:\.\d+)?(?:ms|s|m|h|d))+")
_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d)")
_UNIT_SECONDS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400}
#: Longer is surely a typo, and dates that far ahead overflow ``datetime`` (year 9999).
MAX_DURATION_DAYS = 365_000


def parse_duration(value: AnyType) -> float:
    """Return the seconds in a duration: a number of seconds, or "500ms", "15s", "1h30m", ...

    At most :data:`MAX_DURATION_DAYS` (1000 years).
    """
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        seconds = float(value)
    elif isinstance(value, str) and re.fullmatch(r"\d+(?:\.\d+)?", value.strip()):
        seconds = float(value)
    elif isinstance(value, str) and _DURATION.fullmatch(value.strip()):
        seconds = sum(float(n) * _UNIT_SECONDS[unit] for n, unit in _DURATION_PART.findall(value))
    else:
        raise Reject(f"invalid duration {quote(value)} (use e.g. 500ms, 15s, 5m, 2h, 1d)")
    if not math.isfinite(seconds) or seconds < 0:
        raise Reject(f"invalid duration {quote(value)}: must be a finite, non-negative time")
    if seconds > MAX_DURATION_DAYS * 86400:
        raise Reject(f"invalid duration {quote(value)}: longer than {MAX_DURATION_DAYS}d (1000 years)")
    return seconds


def _format_seconds(seconds: float) -> str:
    return f"{seconds:g}s"


class Duration(Field):
    """A time span, returned as float seconds; ``min`` is seconds or a duration string."""

    type_name = "duration"

    def __init__(self, *, min: str | float | None = None, **options: AnyType) -> None:
        super().__init__(**options)
        self.min = None if min is None else parse_duration(min)

    def parse(self, value: AnyType) -> AnyType:
        return _check_range(
            parse_duration(value), self.min, None, _format_seconds, got=quote(value) if isinstance(value, str) else None
        )

    def json_type(self) -> dict:
        return {
            "anyOf": [
                {"type": "string", "pattern": f"^{_DURATION.pattern}$", "example": "15s"},
                {"type": "number", "minimum": 0, "description": "seconds"},
            ]
        }


class Instant(Field):
    """A point in time as ISO-8601 text such as ``2026-11-28T00:00:00Z`` (an offset
    or ``Z``; without one, UTC), within the years 1 to 9999 in UTC; returned as unix seconds."""

    type_name = "ISO-8601 time"

    def parse(self, value: AnyType) -> AnyType:
        if isinstance(value, str):
            try:
                return parse_iso(value)
            except ValueError:
                pass
        raise Reject(f"expected an ISO-8601 time such as 2026-11-28T00:00:00Z, got {self.shown(value)}")

    def json_type(self) -> dict:
        return {"type": "string", "format": "date-time"}


class Enum(Field):
    """One of a fixed list of values."""

    def __init__(self, values: Iterable[AnyType], **options: AnyType) -> None:
        super().__init__(**options)
        self.values = tuple(values)
        self.type_name = "one of " + ", ".join(map(repr, self.values))

    def parse(self, value: AnyType) -> AnyType:
        if value in self.values:
            return value
        if isinstance(value, str):
            _refuse_invalid_unicode(value)
        raise Reject(f"expected {self.type_name}, got {self.shown(value)}{did_you_mean(value, self.values)}")

    def json_type(self) -> dict:
        # OpenAPI 3.0: a nullable enum lists null among its values.
        return {"enum": list(self.values) + ([None] if self.nullable else [])}


class Cidr(Field):
    """An IP network such as ``10.0.0.0/8`` (host bits allowed), returned as ``ipaddress`` network."""

    type_name = "CIDR network"

    def parse(self, value: AnyType) -> AnyType:
        if not isinstance(value, str):
            raise self.mismatch(value)
        try:
            return ipaddress.ip_network(value.strip(), strict=False)
        except ValueError:
            raise Reject(f"invalid CIDR network {quote(value)} (use e.g. 10.0.0.0/8 or fd00::/8)") from None

    def json_type(self) -> dict:
        return {"type": "string", "example": "10.0.0.0/8"}


class CaFile(Str):
    """A PEM file of CA certificates to trust besides the system's (see
    :func:`tierd.core.http.tls_context`); "" for none. Checked when the
    config is read, so a missing or unreadable file is a config error."""

    type_name = "CA certificate file"

    def parse(self, value: AnyType) -> AnyType:
        value = super().parse(value)
        problem = value and tls_file_problem(value)
        if problem:
            raise Reject(problem)
        return value


class Url(Field):
    """An absolute URL with one of the given schemes and a host; returned as str."""

    type_name = "URL"

    def __init__(self, *, schemes: Iterable[str] = ("http", "https"), **options: AnyType) -> None:
        super().__init__(**options)
        self.schemes = tuple(schemes)

    def parse(self, value: AnyType) -> AnyType:
        if not isinstance(value, str):
            raise self.mismatch(value)
        _refuse_invalid_unicode(value)
        try:
            parts = urlsplit(value)
            host = parts.hostname
        except ValueError:  # e.g. a malformed IPv6 literal
            host, parts = None, None
        if parts is None or parts.scheme not in self.schemes:
            wanted = " or ".join(f"{scheme}://" for scheme in self.schemes)
            raise Reject(f"invalid URL {quote(value)}: must start with {wanted}")
        if not host:
            raise Reject(f"invalid URL {quote(value)}: no host name")
        return value

    def json_type(self) -> dict:
        return {"type": "string", "format": "uri"}


class TimeZone(Field):
    """An IANA time zone name such as ``Europe/Zurich``; returned as str."""

    type_name = "time zone"

    def parse(self, value: AnyType) -> AnyType:
        if not isinstance(value, str):
            raise self.mismatch(value)
        try:
            zoneinfo.ZoneInfo(value)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError, OSError):
            hint = did_you_mean(value, zoneinfo.available_timezones())
            raise Reject(f"unknown time zone {quote(value)}{hint}") from None
        return value

    def json_type(self) -> dict:
        return {"type": "string", "example": "Europe/Zurich"}


class Cron(Field):
    """A 5-field crontab expression (minute hour day month weekday); returned as str."""

    type_name = "cron expression"

    def parse(self, value: AnyType) -> AnyType:
        if not isinstance(value, str):
            raise self.mismatch(value)
        try:
            # The same parser the scheduler uses, so what passes here runs there.
            CronTrigger.from_crontab(value, timezone="UTC")
        except ValueError as exc:
            raise Reject(
                f"invalid cron expression {quote(value)}: {exc} "
                "(use 5 fields: minute hour day-of-month month day-of-week)"
            ) from None
        return value

    def json_type(self) -> dict:
        return {"type": "string", "example": "0 6 * * *"}


class Any(Field):
    """Anything, unchecked (null included), except text that is not valid Unicode."""

    type_name = "value"

    def __init__(self, **options: AnyType) -> None:
        options.setdefault("nullable", True)
        super().__init__(**options)

    def convert(self, value: AnyType, path: Path, errors: list[SchemaError]) -> AnyType:
        _check_text(value, path, errors)
        return value

    def json_type(self) -> dict:
        return {}


# --- containers -------------------------------------------------------------


class List(Field):
    """A list whose items all match ``item``; ``max_len`` bounds it, ``unique``
    refuses an item given twice."""

    type_name = "list"

    def __init__(
        self, item: Field, *, min_len: int = 0, max_len: int | None = None, unique: bool = False, **options: AnyType
    ) -> None:
        super().__init__(**options)
        self.item = item
        self.min_len = min_len
        self.max_len = max_len
        self.unique = unique

    def convert(self, value: AnyType, path: Path, errors: list[SchemaError]) -> AnyType:
        if not isinstance(value, list):
            errors.append(SchemaError(path, str(self.mismatch(value))))
            return None
        if len(value) < self.min_len:
            errors.append(SchemaError(path, f"needs at least {self.min_len} item(s), got {len(value)}"))
        if self.max_len is not None and len(value) > self.max_len:
            # Not each item's errors too: the list may be huge.
            errors.append(SchemaError(path, f"holds at most {self.max_len} item(s), got {len(value)}"))
            return None
        clean = [self.item.collect(item, path + (i,), errors) for i, item in enumerate(value)]
        if self.unique:
            seen: set = set()
            for i, item in enumerate(clean):
                key = _hashable(item)
                if item is not None and key in seen:
                    errors.append(SchemaError(path + (i,), f"{self.item.shown(item)} is listed twice"))
                seen.add(key)
        return clean

    def children(self) -> list[tuple[str, Field]]:
        return [("[]", self.item)]

    def json_type(self) -> dict:
        schema: dict = {"type": "array", "items": self.item.json_schema()}
        if self.min_len:
            schema["minItems"] = self.min_len
        if self.max_len is not None:
            schema["maxItems"] = self.max_len
        if self.unique:
            schema["uniqueItems"] = True
        return schema


def _hashable(value: AnyType) -> AnyType:
    """A key that compares as ``value`` does (JSON-like values: dicts and lists too)."""
    if isinstance(value, dict):
        return ("{}", tuple(sorted(((str(k), _hashable(v)) for k, v in value.items()), key=repr)))
    if isinstance(value, list):
        return ("[]", tuple(_hashable(v) for v in value))
    return value


class Map(Field):
    """A mapping with arbitrary keys (checked by ``key``) whose values all match ``value``."""

    type_name = "mapping"

    def __init__(
        self, value: Field, *, key: Field | None = None, max_len: int | None = None, **options: AnyType
    ) -> None:
        super().__init__(**options)
        self.value = value
        self.key = key if key is not None else Str()
        self.max_len = max_len

    def convert(self, value: AnyType, path: Path, errors: list[SchemaError]) -> AnyType:
        if not isinstance(value, dict):
            errors.append(SchemaError(path, str(self.mismatch(value))))
            return None
        if self.max_len is not None and len(value) > self.max_len:
            errors.append(SchemaError(path, f"holds at most {self.max_len} entries, got {len(value)}"))
            return None
        result = {}
        for key, item in value.items():
            key_errors: list[SchemaError] = []
            clean_key = self.key.collect(key, path + (key,), key_errors)
            errors.extend(SchemaError(e.path, f"invalid key: {e.message}") for e in key_errors)
            result[key if key_errors else clean_key] = self.value.collect(item, path + (key,), errors)
        return result

    def children(self) -> list[tuple[str, Field]]:
        return [(".<name>", self.value)]

    def json_type(self) -> dict:
        # OpenAPI 3.0 has no propertyNames: the keys' own rules are the field's doc.
        schema: dict = {"type": "object", "additionalProperties": self.value.json_schema()}
        if self.max_len is not None:
            schema["maxProperties"] = self.max_len
        return schema


class Obj(Field):
    """A mapping with known keys, each with its own field.

    Unknown keys are errors (with a "did you mean" suggestion) unless
    ``extra=True``, which keeps them unchecked. Absent keys get their
    field's default; an absent ``Obj`` without a default gets its own
    nested defaults; with ``sparse=True`` a key absent without a default
    stays absent (a request that changes only the fields it gives).
    ``check(value) -> [(subpath, message), ...]`` adds cross-field errors;
    it runs only when every field was valid, so it may rely on clean values.
    """

    type_name = "mapping"

    def __init__(
        self,
        fields: dict[str, Field],
        *,
        extra: bool = False,
        check: Callable[[dict], Iterable[tuple[Iterable, str]]] | None = None,
        sparse: bool = False,
        **options: AnyType,
    ) -> None:
        super().__init__(**options)
        self.fields = dict(fields)
        self.extra = extra
        self.check = check
        self.sparse = sparse

    def convert(self, value: AnyType, path: Path, errors: list[SchemaError]) -> AnyType:
        if not isinstance(value, dict):
            errors.append(SchemaError(path, str(self.mismatch(value))))
            return None
        errors_before = len(errors)
        result = {}
        for key, item in value.items():
            field = self.fields.get(key)
            if field is not None:
                result[key] = field.collect(item, path + (key,), errors)
            elif self.extra:
                result[key] = item
            else:
                errors.append(SchemaError(path + (key,), self.unknown_key_message(key)))
        for name, field in self.fields.items():
            if name not in value and not (self.sparse and field.default is MISSING and not field.required):
                result[name] = field.absent(path + (name,), errors)
        if self.check is not None and len(errors) == errors_before:
            errors.extend(SchemaError(path + tuple(sub), message) for sub, message in self.check(result))
        return result

    def absent(self, path: Path, errors: list[SchemaError]) -> AnyType:
        if self.required or self.default is not MISSING:
            return super().absent(path, errors)
        return self.collect({}, path, errors)

    def unknown_key_message(self, key: AnyType) -> str:
        """The error for a key no field declares; subclasses may word it for their context."""
        return f"unknown key {key!r}{did_you_mean(key, self.fields)}"

    def children(self) -> list[tuple[str, Field]]:
        return [(f".{name}", field) for name, field in self.fields.items()]

    def json_type(self) -> dict:
        schema: dict = {
            "type": "object",
            "properties": {name: field.json_schema() for name, field in self.fields.items()},
        }
        required = [name for name, field in self.fields.items() if field.required]
        if required:
            schema["required"] = required
        if not self.extra:
            schema["additionalProperties"] = False
        return schema


class OneOf(Field):
    """The first of several fields that accepts the value (e.g. a duration or a cron string)."""

    def __init__(self, *fields: Field, **options: AnyType) -> None:
        super().__init__(**options)
        self.fields = fields
        self.type_name = " or ".join(_article(f.type_name) for f in fields)

    def convert(self, value: AnyType, path: Path, errors: list[SchemaError]) -> AnyType:
        attempts = []
        for field in self.fields:
            field_errors: list[SchemaError] = []
            clean = field.collect(value, path, field_errors)
            if not field_errors:
                return clean
            attempts.append(field_errors)
        # When exactly one alternative got past the value's top level (e.g. it
        # is a mapping and only one alternative is an Obj), its nested errors
        # tell the admin more than a generic "expected X or Y".
        shaped = [errs for errs in attempts if all(e.path != path for e in errs)]
        if len(shaped) == 1:
            errors.extend(shaped[0])
        else:
            errors.append(SchemaError(path, f"expected {self.type_name}, got {self.shown(value)}"))
        return None

    def json_type(self) -> dict:
        # anyOf, not oneOf: the first alternative that accepts the value wins.
        return {"anyOf": [field.json_schema() for field in self.fields]}


# --- entry points -----------------------------------------------------------


def validate(schema: Field, value: AnyType, path: Path = ()) -> tuple[AnyType, list[SchemaError]]:
    """Validate value against schema; return (clean value, every error found).

    ``value=MISSING`` stands for an absent key: the schema's defaults are used.
    """
    errors: list[SchemaError] = []
    if value is MISSING:
        clean = schema.absent(tuple(path), errors)
    else:
        clean = schema.collect(value, tuple(path), errors)
    return clean, errors


def describe(schema: Field, prefix: str = "") -> list[tuple[str, str, AnyType, str]]:
    """List ``(dotted_path, type_name, default, doc)`` for every nested field, for docs.

    List items appear as ``name[]`` and map values as ``name.<name>``;
    ``default`` is :data:`MISSING` when there is none.
    """
    rows = []
    for suffix, field in schema.children():
        path = (prefix + suffix).lstrip(".")
        rows.append((path, field.type_name, field.default, field.doc))
        rows.extend(describe(field, path))
    return rows
