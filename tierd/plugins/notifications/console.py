"""The notifications pages of the web console (``/ui/notifications``).

Everything is read and done through the control API as the session's
caller (``ctx.api``), so a tenant sees only its own messages and silences,
and the API's validation decides what a silence may say. The one thing this
file adds is a plain-text form of a silence's matchers (one per line), turned
into the API's ``matchers`` object by :func:`parse_matchers`.
"""

from __future__ import annotations

import re
import urllib.parse
from pathlib import Path
from typing import Any

from aiohttp import web

from tierd.core.clock import iso, parse_iso
from tierd.core.schema import Reject, parse_duration
from tierd.core.ui import UiApiError, UiContext, UiPage, UiSection

from .api import STATUSES

TEMPLATES = Path(__file__).parent / "templates" / "console"
KINDS = ("event", "digest", "test", "manual", "message")
#: The history's own filters, passed on to ``GET /v1/notifications`` as they are.
FILTERS = ("status", "channel", "route", "kind", "since", "until")
#: How many of the last day's failed messages the overview counts at most (one API page).
OVERVIEW_COUNT = 500
OVERVIEW_LATEST = 5
DEFAULT_DURATION = "2h"

#: Matchers a silence takes as plain values (``name=value``); any other name is a data field.
_PLAIN = ("type", "tenant", "channel", "route")
#: ``name OP value``: the operators the form knows, longest first so ``>=`` is not read as ``>``.
_LINE = re.compile(r"\s*([A-Za-z0-9_.\-]+)\s*(=~|!=|>=|<=|=|>|<)\s*(.*?)\s*")
_OPS = {"=~": "regex", "!=": "ne", ">=": "gte", "<=": "lte", ">": "gt", "<": "lt"}

MATCHERS_HELP = (
    "One per line: type=invoice.* · tenant=acme · channel=ops-mail · route=big-invoices · "
    "a data field: amount>1000, currency=EUR, currency!=USD, reference=~INV-[0-9]+ "
    "(also >=, <, <=). Lines of one name add up (type=a, type=b: either)."
)


class MatcherError(ValueError):
    """A line of the matchers box the form cannot read."""


def parse_matchers(text: str) -> dict[str, Any]:
    """The API's ``matchers`` object from the form's lines (see :data:`MATCHERS_HELP`).

    Only the shape is read here; what the values may be (a valid regex, a
    number after ``>``) is the API's to say, so its message is the one shown.
    """
    matchers: dict[str, Any] = {}
    data: dict[str, Any] = {}
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        found = _LINE.fullmatch(line)
        if found is None:
            raise MatcherError(f"line {number}: {line.strip()!r} is not name=value (or !=, =~, >, >=, <, <=)")
        name, op, value = found.groups()
        if name in _PLAIN:
            if op != "=":
                raise MatcherError(f"line {number}: {name} takes only = (with * wildcards for type)")
            if name in ("type", "tenant"):
                matchers.setdefault(name, []).append(value)
            elif name in matchers:
                raise MatcherError(f"line {number}: a silence names one {name} at most")
            else:
                matchers[name] = value
            continue
        field = name.removeprefix("data.")
        if field in data:
            raise MatcherError(f"line {number}: {field} is already matched on an earlier line")
        data[field] = value if op == "=" else {_OPS[op]: value}
    if data:
        matchers["data"] = data
    return matchers


def format_matchers(matchers: dict[str, Any]) -> list[str]:
    """A silence's matchers as the lines the form takes (to show them the same way)."""
    lines: list[str] = []
    for name in _PLAIN:
        value = matchers.get(name)
        for one in [value] if isinstance(value, str) else value or []:
            lines.append(f"{name}={one}")
    symbols = {op: symbol for symbol, op in _OPS.items()}
    for field, spec in (matchers.get("data") or {}).items():
        if isinstance(spec, dict) and len(spec) == 1 and next(iter(spec)) in symbols:
            op, operand = next(iter(spec.items()))
            lines.append(f"{field}{symbols[op]}{operand}")
        else:
            lines.append(f"{field}={spec}")
    return lines


def _quoted(value: str) -> str:
    """A path parameter put back into an API path (never a way to another path)."""
    return urllib.parse.quote(value, safe="")


# --- pages ---------------------------------------------------------------------------------


async def history(ctx: UiContext) -> web.StreamResponse:
    """The notification history, newest first, with the API's filters."""
    filters = {name: ctx.query.get(name, "") for name in FILTERS}
    query = dict(filters, cursor=ctx.query.get("cursor"), limit=ctx.query.get("limit"))
    answer = await ctx.api("GET", "/v1/notifications", query=query)
    return ctx.render("notifications/history.html", answer=answer, filters=filters, statuses=STATUSES, kinds=KINDS)


async def message(ctx: UiContext) -> web.StreamResponse:
    """One message: what it said, where it went, every attempt and its error."""
    item = await ctx.api("GET", f"/v1/notifications/{_quoted(ctx.match['id'])}")
    return ctx.render("notifications/message.html", item=item)


def _state(silence: dict[str, Any], now: float) -> str:
    """active, pending (starts later) or ended, by the daemon's clock."""
    ends = parse_iso(silence["ends_at"]) if silence["ends_at"] else None
    starts = parse_iso(silence["starts_at"]) if silence["starts_at"] else None
    if ends is not None and ends <= now:
        return "ended"
    if starts is not None and starts > now:
        return "pending"
    return "active"


async def _silences_page(
    ctx: UiContext, form: dict[str, str] | None = None, error: str | None = None, status: int = 200
) -> web.Response:
    show_all = ctx.query.get("all") == "1"
    answer = await ctx.api("GET", "/v1/notifications/silences", query={"all": "1" if show_all else None})
    now = ctx.daemon.clock.time()
    rows = [dict(s, state=_state(s, now), lines=format_matchers(s["matchers"])) for s in answer["data"]]
    rows.reverse()  # newest first
    return ctx.render(
        "notifications/silences.html",
        status=status,
        silences=rows,
        show_all=show_all,
        form=form or {"duration": DEFAULT_DURATION},
        error=error,
        help=MATCHERS_HELP,
    )


async def silences(ctx: UiContext) -> web.StreamResponse:
    return await _silences_page(ctx)


def silence_body(form: dict[str, str], now: float) -> dict[str, Any]:
    """The API's silence body from the form; :class:`MatcherError` for what the form cannot read.

    ``ends_at`` wins over ``duration`` (counted from ``starts_at`` or now)."""
    body: dict[str, Any] = {"matchers": parse_matchers(form.get("matchers", "")), "comment": form.get("comment", "")}
    starts = form.get("starts_at", "").strip()
    if starts:
        body["starts_at"] = starts
    ends = form.get("ends_at", "").strip()
    if ends:
        body["ends_at"] = ends
        return body
    duration = form.get("duration", "").strip()
    if not duration:
        raise MatcherError("give a duration (e.g. 2h) or an end time")
    try:
        seconds = parse_duration(duration)
        start = parse_iso(starts) if starts else now
    except (Reject, ValueError) as exc:
        raise MatcherError(str(exc)) from None
    body["ends_at"] = iso(start + seconds)
    return body


async def create_silence(ctx: UiContext) -> web.StreamResponse:
    """Add a silence; a refusal shows the form again with the message, and nothing is created."""
    form = await ctx.form()
    try:
        body = silence_body(form, ctx.daemon.clock.time())
        made = await ctx.api("POST", "/v1/notifications/silences", body=body)
    except MatcherError as exc:
        return await _silences_page(ctx, form, str(exc), status=422)
    except UiApiError as exc:
        if exc.status >= 500:
            raise
        return await _silences_page(ctx, form, exc.message, status=exc.status)
    return ctx.redirect("/notifications/silences", flash=f"Silence {made['id']} created until {made['ends_at']}")


async def expire_silence(ctx: UiContext) -> web.StreamResponse:
    """End a silence now (the API deletes it)."""
    silence_id = ctx.match["id"]
    try:
        await ctx.api("DELETE", f"/v1/notifications/silences/{_quoted(silence_id)}")
    except UiApiError as exc:
        if exc.status >= 500:
            raise
        return ctx.redirect("/notifications/silences", error=exc.message)
    return ctx.redirect("/notifications/silences", flash=f"Silence {silence_id} expired")


async def overview(ctx: UiContext) -> str:
    """The overview's panel: messages failed in the last 24 hours, active silences."""
    since = iso(ctx.daemon.clock.time() - 86400)
    failed = await ctx.api(
        "GET", "/v1/notifications", query={"status": "failed", "since": since, "limit": OVERVIEW_COUNT}
    )
    active = await ctx.api("GET", "/v1/notifications/silences")
    now = ctx.daemon.clock.time()
    return ctx.fragment(
        "notifications/overview.html",
        failed=failed["data"][:OVERVIEW_LATEST],
        failed_count=f"{len(failed['data'])}{'+' if failed.get('next_cursor') else ''}",
        silences=sum(1 for s in active["data"] if _state(s, now) == "active"),
    )


def section(daemon: Any) -> UiSection:
    return UiSection(
        "notifications",
        TEMPLATES,
        pages=[
            UiPage("GET", "/notifications", history),
            # Static paths before /notifications/{id}: aiohttp matches in order.
            UiPage("GET", "/notifications/silences", silences),
            UiPage("POST", "/notifications/silences", create_silence),
            UiPage("POST", "/notifications/silences/{id}/expire", expire_silence),
            UiPage("GET", "/notifications/{id}", message),
        ],
        nav=[("Notifications", "/notifications")],
        overview=overview,
    )
