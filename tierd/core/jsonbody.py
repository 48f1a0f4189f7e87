"""Strict JSON for what comes in from outside (request bodies, uploaded files).

``json.loads`` accepts more than JSON, and more than tierd can store:

* bytes are decoded with ``surrogatepass``, so an encoded lone surrogate
  (``ED A0 80``) passes, and so does the escape ``"\\ud800"`` in any text;
  SQLite stores such a string as invalid UTF-8 that no later read decodes;
* ``NaN``, ``Infinity`` and ``-Infinity`` (and numbers such as ``1e999``, read
  as infinity) are not JSON, and what is built from them cannot be answered
  as JSON again;
* nesting is limited only by the interpreter's recursion limit, and a deep
  body costs every later walk over it.

:func:`loads` refuses all of these with a :class:`JsonError` naming the
problem. It stays nearly as fast as ``json.loads`` for ordinary bodies: the
walk over the decoded value is done only when cheap scans of the text (at C
speed) say it may be needed.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any, Never

from tierd.core.schema import unicode_problem

#: Deepest nesting of objects and arrays accepted.
MAX_DEPTH = 64

# A \u escape of a surrogate (D800-DFFF), high or low: the only way a decoded
# string can hold one once the text itself is strict UTF-8. A pair is joined
# by the decoder; only a lone one remains in the result, which the walk finds.
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89abcdefABCDEF]")


class JsonError(ValueError):
    """The text is not JSON that tierd accepts; the message says why."""


def _refuse_constant(name: str) -> Never:
    raise JsonError(f"{name} is not a JSON number")


def _finite_float(text: str) -> float:
    value = float(text)
    if math.isinf(value):
        raise JsonError(f"the number {text[:40]}{'...' if len(text) > 40 else ''} is too large")
    return value


# One decoder made once: json.loads(..., parse_constant=...) would build a new
# one (and its scanner) for every call.
_DECODER = json.JSONDecoder(parse_constant=_refuse_constant, parse_float=_finite_float)


def loads(raw: bytes | str) -> Any:
    """Decode ``raw`` (strict UTF-8 when bytes) as JSON; :class:`JsonError` if it
    is not valid UTF-8 or JSON, holds NaN or Infinity or a number too large, is
    nested deeper than :data:`MAX_DEPTH`, or has a lone surrogate in a key or
    value."""
    if isinstance(raw, str):
        text = raw
        problem = unicode_problem(text)
        if problem:
            raise JsonError(problem)
    else:
        if raw[:3] == b"\xef\xbb\xbf":
            raw = raw[3:]  # a byte order mark may be ignored (RFC 8259), as json.loads did
        try:
            text = str(raw, "utf-8")
        except UnicodeDecodeError as exc:
            raise JsonError(f"not valid UTF-8 (byte {exc.start})") from None
    try:
        value = _DECODER.decode(text)
    except RecursionError:
        raise JsonError(f"nested deeper than {MAX_DEPTH} levels") from None
    except JsonError:
        raise
    except ValueError as exc:
        raise JsonError(str(exc)) from None
    if text.count("[") + text.count("{") > MAX_DEPTH:
        _check_depth(value)
    if _SURROGATE_ESCAPE.search(text):
        _check_strings(value)
    return value


def _check_depth(value: Any) -> None:
    """Refuse nesting deeper than MAX_DEPTH: a walk one level at a time,
    over the containers only (without recursion)."""
    level = [value] if value.__class__ in (dict, list) else []
    depth = 0
    while level:
        depth += 1
        if depth > MAX_DEPTH:
            raise JsonError(f"nested deeper than {MAX_DEPTH} levels")
        below = []
        for item in level:
            for child in item.values() if item.__class__ is dict else item:
                if child.__class__ is dict or child.__class__ is list:
                    below.append(child)
        level = below


def _check_strings(value: Any) -> None:
    """Refuse a lone surrogate in any key or string value."""
    stack = [value]
    while stack:
        item = stack.pop()
        if item.__class__ is dict:
            for key in item:
                _check_text(key)
            stack.extend(item.values())
        elif item.__class__ is list:
            stack.extend(item)
        elif item.__class__ is str:
            _check_text(item)


def _check_text(text: str) -> None:
    problem = unicode_problem(text)
    if problem:
        raise JsonError(f"a key or string value is {problem}")
