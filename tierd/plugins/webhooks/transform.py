"""Payload transformations: an endpoint may reshape the body it receives and add headers.

A transformation is stored on its endpoint (``webhook_endpoints.transformation``,
migration 5) as the JSON ``{"body": TEMPLATE, "headers": {NAME: TEMPLATE}}``.
``body`` renders the JSON that is POSTed instead of tierd's own envelope;
``headers`` (optional) render extra header values. The receiver gets the
rendered body, signed as any other (the Standard Webhooks signature covers the
bytes sent, so it is computed after the transformation).

Why Jinja2 and not JMESPath: JMESPath selects and re-shapes values but cannot
put text around them ("Invoice INV-7 paid: 120.00 EUR"), which is what a Slack
incoming webhook or a legacy system wants; Jinja2 is already a dependency
(notification templates) and has a sandbox.

What a template sees (the same when saved, previewed and sent):

- ``event``: ``type``, ``timestamp`` (ISO-8601) and ``data`` (the event's data),
- ``webhook_id``: the delivery's id (the ``webhook-id`` header; ``msg_preview`` in a preview),
- ``tenant``: the tenant's id,
- ``endpoint``: ``id``, ``description`` and ``metadata`` of the endpoint.

Values are inserted into the JSON with the ``json`` filter, which writes a JSON
literal (a string quoted and escaped, a number, an object...):
``{"text": {{ ("Invoice " ~ event.data.number ~ " paid") | json }}}``.

The rules, and why:

- The sandbox is Jinja2's ``ImmutableSandboxedEnvironment`` (no attribute
  starting with ``_``, no mutation of lists or dicts), narrowed further: only a
  short list of filters and of methods of strings, dicts and lists (none that
  can build a large value from a small one), and no global but ``range`` and
  ``dict``. A template cannot read the daemon, other tenants or files.
- A missing field is an error when sending (``StrictUndefined``): a body sent
  with a hole would be worse than a clear failure. When a transformation is
  saved it is rendered against a sample event that cannot know the tenant's
  fields, so there a missing field renders as ``null``.
- Limits: :data:`MAX_SOURCE` characters of template, :data:`MAX_OUTPUT` bytes of
  rendered body, :data:`RENDER_BUDGET` seconds of rendering. Jinja2 cannot be
  interrupted from outside, so the budget is checked inside: at each loop
  iteration, call, attribute or item access, operator and output chunk; and
  operators (``*``, ``**``, ``+``, ``%``, ``~``) refuse results over the output
  size before building them.
- A template that fails when sending fails that attempt with the error; the
  delivery is not retried (the same template would fail the same way): it is
  marked failed at once, and is sent again by a retry or recover once the
  transformation is fixed. On a fifo endpoint it is a failing head like any
  other instead: it holds the ones after it, and goes on once fixed.
"""

from __future__ import annotations

import contextvars
import dataclasses
import json
import time
import traceback
from typing import Any

from jinja2 import ChainableUndefined, StrictUndefined, TemplateSyntaxError, Undefined, nodes
from jinja2.exceptions import SecurityError
from jinja2.sandbox import ImmutableSandboxedEnvironment

from tierd.core.jsonbody import JsonError, loads
from tierd.core.schema import unicode_problem

#: Longest template (body or one header), in characters.
MAX_SOURCE = 64 * 1024
#: Largest rendered body, in bytes (UTF-8), and largest intermediate string or list.
MAX_OUTPUT = 256 * 1024
#: Longest rendering of one body with its headers, in seconds.
RENDER_BUDGET = 0.1
#: Longest rendered header value, in characters.
MAX_HEADER_VALUE = 4096
#: The template name errors give (``body``, or ``header NAME``).
_BODY = "body"

_deadline: contextvars.ContextVar[float] = contextvars.ContextVar("tierd_transform_deadline", default=0.0)


class TransformError(ValueError):
    """A transformation that cannot be compiled or rendered; the message says where and why."""


# --- the sandbox -------------------------------------------------------------------------


def _check_time() -> None:
    if time.monotonic() > _deadline.get():
        raise SecurityError(f"rendering took longer than {RENDER_BUDGET * 1000:g} ms")


def _size(value: Any) -> int:
    return len(value) if isinstance(value, (str, list, tuple, dict)) else 0


def _check_size(size: int) -> None:
    if size > MAX_OUTPUT:
        raise SecurityError(f"a value of {size} characters or items is larger than {MAX_OUTPUT} allowed")


def _json_filter(value: Any) -> str:
    """``{{ value | json }}``: the value as a JSON literal (an undefined sample value as null)."""
    if isinstance(value, Undefined):
        if isinstance(value, StrictUndefined):
            value._fail_with_undefined_error()
        return "null"
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def _join(items: Any, separator: str = "") -> str:
    """``join``, its result's size checked before it is built."""
    texts = [str(i) for i in items]
    _check_size(sum(map(len, texts)) + len(separator) * len(texts))
    return separator.join(texts)


def _replace(value: Any, old: str, new: str, count: int | None = None) -> str:
    text = str(value)
    hits = text.count(old) if old else len(text) + 1
    _check_size(len(text) + hits * max(0, len(new) - len(old)))
    return text.replace(old, new) if count is None else text.replace(old, new, count)


def _checked_filter(fn):
    """A builtin filter that checks the time budget and refuses an oversized result."""

    def filter_(*args, **kwargs):
        _check_time()
        result = fn(*args, **kwargs)
        _check_size(_size(result))
        return result

    filter_.__dict__.update(getattr(fn, "__dict__", {}))  # keeps pass_context/pass_environment marks
    return filter_


#: Builtin filters a transformation may use: none that builds a large value from small arguments.
_FILTERS = (
    "abs capitalize count d default dictsort first float int items last length list lower map max min reject "
    "rejectattr reverse round select selectattr sort string sum title trim truncate unique upper urlencode "
    "wordcount striptags groupby attr"
).split()
#: Methods a template may call, by the type of their object: none grows a value.
_METHODS = {
    str: frozenset(
        "lower upper strip lstrip rstrip split rsplit startswith endswith title capitalize isdigit isalpha "
        "isalnum isspace islower isupper find rfind count splitlines casefold removeprefix removesuffix".split()
    ),
    dict: frozenset({"items", "keys", "values", "get"}),
    list: frozenset({"index", "count"}),
}


class _Sandbox(ImmutableSandboxedEnvironment):
    """Jinja2's immutable sandbox, narrowed and held to the time budget (see the module's docstring)."""

    intercepted_binops = frozenset({"*", "**", "+", "%", "//"})

    def __init__(self, undefined: type[Undefined]):
        super().__init__(autoescape=False, undefined=undefined, keep_trailing_newline=True)
        self.filters = {name: _checked_filter(self.filters[name]) for name in _FILTERS}
        self.filters.update(json=_json_filter, tojson=_json_filter, join=_join, replace=_replace)
        self.globals = {"range": self.globals["range"], "dict": dict}

    # Every loop iterates through this, and every ``~`` joins through it (see _parse).
    def bounded_iter(self, iterable: Any):
        for item in iterable:
            _check_time()
            yield item

    def bounded_concat(self, parts: Any) -> str:
        _check_time()
        texts = [str(p) for p in parts]
        _check_size(sum(map(len, texts)))
        return "".join(texts)

    def _parse(self, source, name, filename):
        tree = super()._parse(source, name, filename)
        for loop in tree.find_all(nodes.For):
            loop.iter = nodes.Call(nodes.EnvironmentAttribute("bounded_iter"), [loop.iter], [], None, None)
        for concat in tree.find_all(nodes.Concat):
            concat.nodes = [
                nodes.Call(nodes.EnvironmentAttribute("bounded_concat"), [nodes.List(concat.nodes)], [], None, None)
            ]
        return tree

    def is_safe_attribute(self, obj: Any, attr: str, value: Any) -> bool:
        if not super().is_safe_attribute(obj, attr, value):
            return False
        if not callable(value) or isinstance(obj, type):
            return not isinstance(obj, type)
        return any(isinstance(obj, kind) and attr in names for kind, names in _METHODS.items())

    def wrap_str_format(self, value: Any) -> Any:
        # str.format can pad to any width: refused like %-formatting.
        if super().wrap_str_format(value) is not None:
            raise SecurityError("str.format is not available; build text with ~")
        return None

    def getattr(self, obj: Any, attribute: str) -> Any:
        _check_time()
        return super().getattr(obj, attribute)

    def getitem(self, obj: Any, argument: Any) -> Any:
        _check_time()
        return super().getitem(obj, argument)

    def call(__self, __context, __obj, *args, **kwargs):  # noqa: N805 - Jinja2's signature
        _check_time()
        return super().call(__context, __obj, *args, **kwargs)

    def call_binop(self, context, operator: str, left: Any, right: Any) -> Any:
        _check_time()
        if operator == "*":
            counts = [v for v in (left, right) if isinstance(v, int)]
            sized = [v for v in (left, right) if _size(v)]
            if counts and sized:
                _check_size(_size(sized[0]) * max(0, counts[0]))
        elif operator == "**" and isinstance(left, int) and isinstance(right, int):
            if abs(left) > 1 and right * max(1, abs(left).bit_length()) > 8 * MAX_OUTPUT:
                raise SecurityError("the power is too large")
        elif operator == "+":
            _check_size(_size(left) + _size(right))
        elif operator == "%" and isinstance(left, str):
            raise SecurityError("%-formatting is not available; build text with ~")
        return super().call_binop(context, operator, left, right)


class _SampleUndefined(ChainableUndefined):
    """A field the sample event lacks: renders as ``null`` (valid JSON wherever a value goes)."""

    __slots__ = ()

    def __str__(self) -> str:
        return "null"


_STRICT = _Sandbox(StrictUndefined)
_LENIENT = _Sandbox(_SampleUndefined)


# --- compiling and rendering ------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Transform:
    """A compiled transformation of one endpoint, ready to render deliveries."""

    spec: dict
    body: Any
    headers: dict[str, Any]
    endpoint: dict

    def render(self, event: dict, webhook_id: str, tenant: str) -> tuple[bytes, dict[str, str]]:
        """The body to send and the extra headers for ``event`` (type, timestamp, data); TransformError if not."""
        context = {"event": event, "webhook_id": webhook_id, "tenant": tenant, "endpoint": self.endpoint}
        token = _deadline.set(time.monotonic() + RENDER_BUDGET)
        try:
            text = _render(self.body, context, _BODY, MAX_OUTPUT)
            headers = {
                name: _header_value(name, _render(t, context, f"header {name}", MAX_HEADER_VALUE))
                for name, t in self.headers.items()
            }
        finally:
            _deadline.reset(token)
        try:
            body = text.strip().encode()
        except UnicodeEncodeError as exc:  # a lone surrogate, e.g. from "\ud800" in the template
            raise TransformError(f"the body is not valid Unicode text: {exc.reason} at character {exc.start}") from None
        if len(body) > MAX_OUTPUT:
            raise TransformError(f"the body is {len(body)} bytes, more than the {MAX_OUTPUT} allowed")
        try:
            loads(body)
        except JsonError as exc:
            raise TransformError(f"the body is not valid JSON: {exc}") from None
        return body, headers

    def render_payload(self, payload: str, webhook_id: str, tenant: str) -> tuple[bytes, dict[str, str]]:
        """:meth:`render` for a delivery's stored payload (tierd's envelope: type, timestamp, data)."""
        return self.render(json.loads(payload), webhook_id, tenant)


def compile_transform(spec: dict, endpoint: dict, *, sample: bool = False) -> Transform:
    """Compile ``spec`` (``{"body": ..., "headers": {...}}``) for ``endpoint`` (id, description,
    metadata); ``sample``: missing fields render as null (for validating against a sample event)."""
    env = _LENIENT if sample else _STRICT
    if not isinstance(spec, dict) or not isinstance(spec.get("body"), str):
        raise TransformError("a transformation is an object with a 'body' template")
    headers = spec.get("headers") or {}
    if not isinstance(headers, dict) or not all(isinstance(v, str) for v in headers.values()):
        raise TransformError("the transformation's headers are an object of templates")
    return Transform(
        spec,
        _compile(env, spec["body"], _BODY),
        {name: _compile(env, source, f"header {name}") for name, source in headers.items()},
        {
            "id": endpoint.get("id"),
            "description": endpoint.get("description", ""),
            "metadata": endpoint.get("metadata") or {},
        },
    )


def from_column(text: str | None, endpoint: dict) -> Transform | None:
    """The transformation stored in an endpoint row (None when there is none); TransformError if unusable."""
    if text is None:
        return None
    try:
        spec = json.loads(text)
    except ValueError:
        raise TransformError("the stored transformation is not JSON") from None
    return None if spec is None else compile_transform(spec, endpoint)


def transform_of(row) -> Transform | None:
    """The compiled transformation of an endpoint row (None: it has none); TransformError if unusable.

    Compiled once when the endpoint is loaded (``endpoints.py``): sending only renders.
    """
    if row["transformation"] is None:
        return None  # the hot path of most endpoints: nothing more is read
    try:
        metadata = json.loads(row["metadata"])
    except (TypeError, ValueError):
        metadata = {}
    return from_column(
        row["transformation"], {"id": row["id"], "description": row["description"], "metadata": metadata}
    )


def column_of(spec: dict | None) -> str | None:
    """What the endpoint row stores for ``spec`` (NULL for none)."""
    return None if spec is None else json.dumps(spec, separators=(",", ":"))


def validate(spec: dict, endpoint: dict, event: dict) -> None:
    """Refuse (TransformError) a transformation that does not compile or does not render valid
    JSON and headers for the sample ``event`` within the limits."""
    compile_transform(spec, endpoint)  # a syntax error as it will be when sending
    compile_transform(spec, endpoint, sample=True).render(event, "msg_sample", "sample")


def sample_event(event_types: list[str], catalogue: dict, now: str) -> dict:
    """A sample of what the endpoint receives: the first of its types that the catalogue
    describes, with data made from its schema; else a generic event."""
    for name in event_types:
        declared = catalogue.get(name)
        if declared is not None and declared.data_schema:
            return {"type": name, "timestamp": now, "data": _sample_of(declared.data_schema, now)}
    exact = next((t for t in event_types if "*" not in t), "sample.event")
    return {"type": exact, "timestamp": now, "data": {}}


def _sample_of(schema: dict, now: str) -> Any:
    if "enum" in schema:
        return schema["enum"][0]
    kind = schema.get("type")
    kind = next((k for k in kind if k != "null"), "null") if isinstance(kind, list) else kind
    if kind == "object":
        return {name: _sample_of(sub, now) for name, sub in schema.get("properties", {}).items()}
    if kind == "string":
        return now if schema.get("format") == "date-time" else "example"
    return {"integer": 1, "number": 1.5, "boolean": True, "array": []}.get(str(kind))


def _compile(env: _Sandbox, source: str, name: str) -> Any:
    if len(source) > MAX_SOURCE:
        raise TransformError(f"the {name} template is {len(source)} characters, more than the {MAX_SOURCE} allowed")
    try:
        return env.template_class.from_code(env, env.compile(source, filename=name), env.make_globals(None), None)
    except TemplateSyntaxError as exc:
        raise TransformError(f"the {name} template has a syntax error on line {exc.lineno}: {exc.message}") from None


def _render(template: Any, context: dict, name: str, limit: int) -> str:
    """Render within the budget, the output counted chunk by chunk."""
    chunks, size = [], 0
    try:
        for chunk in template.generate(context):
            _check_time()
            size += len(chunk)
            if size > limit:
                raise TransformError(f"the {name} template renders more than {limit} characters")
            chunks.append(chunk)
    except TransformError:
        raise
    except Exception as exc:  # any failure of the tenant's template, said with its line
        line = _template_line(exc, name)
        where = f" on line {line}" if line else ""
        raise TransformError(f"the {name} template failed{where}: {_reason(exc)}") from None
    return "".join(chunks)


def _reason(exc: Exception) -> str:
    if isinstance(exc, RecursionError):
        return "it recurses too deeply"
    if isinstance(exc, MemoryError):
        return "it needs too much memory"
    return str(exc) or type(exc).__name__


def _template_line(exc: BaseException, name: str) -> int | None:
    """The template line an error was raised on (Jinja2 rewrites tracebacks to template lines)."""
    lines = [frame.lineno for frame in traceback.extract_tb(exc.__traceback__) if frame.filename == name]
    return lines[-1] if lines else None


def _header_value(name: str, value: str) -> str:
    value = value.strip()
    if not value.isascii() and unicode_problem(value):
        raise TransformError(f"header {name} is not valid Unicode text")
    # Tab is the one control character a header value may hold (RFC 9110), as for static headers.
    if not value.replace("\t", " ").isprintable():
        raise TransformError(f"header {name} does not render a single line of printable characters")
    return value
