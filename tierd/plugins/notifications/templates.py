"""Subjects and bodies: Jinja2 in a sandbox, with a default per event type.

The defaults of an event type are declared by the plugin that publishes it
(``EventType.subject``/``body`` in ``daemon.registries.event_types``);
notifications renders them, and knows no other plugin's events.

Admins write templates in YAML (per route or per channel: ``subject``,
``body``, ``html``). They run in :class:`jinja2.sandbox.SandboxedEnvironment`
because the config may be edited by people who must not get code execution
in the daemon. A syntax error is a config error (``check_template``); an error
while rendering (a bad filter argument, a division by zero, a sandbox
violation) is logged and the message falls back to a plain default, so a
notification is never dropped because of its template.

The context of every template:

``event``   the (first) event: ``id``, ``tenant``, ``type``, ``data``, ``created_at``
``data``    ``event.data``;   ``tenant``, ``type``: of the event
``events``  all events of the message (one, or many for a digest); ``count``
``labels``  the group's ``group_by`` values (empty when not grouped)
``route``, ``channel``  names of the route and channel
"""

from __future__ import annotations

import dataclasses
import functools
import html as html_lib
import json
import logging
from collections.abc import Mapping

import jinja2
from jinja2.sandbox import SandboxedEnvironment

from tierd.core.registry import EventType

log = logging.getLogger("tierd.notifications.templates")

# trim_blocks: admins write block tags on lines of their own in YAML. It also
# eats a newline right after a block tag, so default texts (below, and those event
# types declare) never put one there.
_env = SandboxedEnvironment(autoescape=False, trim_blocks=True, lstrip_blocks=True, keep_trailing_newline=False)
_env.filters["json"] = lambda v, indent=None: json.dumps(v, indent=indent, default=str, ensure_ascii=False)


#: The default (subject, body) of an event type whose plugin declares none (a
#: tenant's own ``invoice.paid``, say); a declared type's are its own (see
#: :class:`tierd.core.registry.EventType`).
GENERIC = (
    "{{ type }}{% if tenant %} ({{ tenant }}){% endif %}",
    "Event {{ event.id }} of type {{ type }}{% if tenant %} for tenant {{ tenant }}{% endif %}"
    " at {{ event.created_at }}.\n\n{{ data | json(2) }}",
)
DIGEST = (
    "{{ count }} × {{ labels.type or type }}{% if tenant %} ({{ tenant }}){% endif %}",
    "{{ count }} events{% for k, v in labels.items() %}{% if k != 'type' %}, {{ k }}={{ v }}{% endif %}{% endfor %}"
    " from {{ events[0].created_at }} to {{ events[-1].created_at }}:\n"
    "{% for e in events[:50] %}- {{ e.created_at }} {{ e.type }} {{ e.id }}"
    "{{ (': ' ~ e.data.summary) if e.data.summary else '' }}\n{% endfor %}"
    "{% if count > events[:50] | length %}... and {{ count - events[:50] | length }} more"
    " (see `tierd notify history`)\n{% endif %}",
)


@dataclasses.dataclass(frozen=True)
class TemplateSpec:
    """The templates configured for one (route, channel); empty: the defaults
    that ``event_types`` (the declared types, by name) give, else generic ones."""

    subject: str = ""
    body: str = ""
    html: str = ""
    event_types: Mapping[str, EventType] = dataclasses.field(default_factory=dict, compare=False)

    @classmethod
    def pick(cls, *sources: dict | None, event_types: Mapping[str, EventType] | None = None) -> TemplateSpec:
        """First non-empty value of each key, in the order given (most specific first)."""
        values = {}
        for key in ("subject", "body", "html"):
            values[key] = next((s[key] for s in sources if s and s.get(key)), "")
        return cls(**values, event_types=event_types or {})


@dataclasses.dataclass
class Rendered:
    subject: str
    body: str
    html: str | None
    #: The render error that made us fall back, if any (recorded on the attempt).
    error: str = ""


@functools.lru_cache(maxsize=512)
def _compile(source: str) -> jinja2.Template:
    return _env.from_string(source)


def check_template(source: str) -> str | None:
    """A syntax error in ``source`` as a message, or ``None`` if it compiles."""
    try:
        _compile(source)
    except jinja2.TemplateSyntaxError as exc:
        return f"template syntax error on line {exc.lineno}: {exc.message}"
    return None


def render_string(source: str, context: dict) -> str:
    """Render one template (raises on error; callers decide how to fall back)."""
    return _compile(source).render(context)


def context_for(
    events: list[dict], labels: dict | None = None, route: str = "", channel: str = "", count: int | None = None
) -> dict:
    """The template context; ``count`` is the digest's size when ``events`` holds only its first part."""
    first = events[0] if events else {"id": "", "tenant": "", "type": "", "data": {}, "created_at": ""}
    return {
        "event": first,
        "events": events,
        "count": len(events) if count is None else count,
        "data": first.get("data") or {},
        "tenant": first.get("tenant", ""),
        "type": first.get("type", ""),
        "labels": labels or {},
        "route": route,
        "channel": channel,
    }


def default_templates(declared: EventType | None, count: int) -> tuple[str, str]:
    """(subject, body) when none is configured: a digest's, the declared type's, or generic ones."""
    if count > 1:
        return DIGEST
    if declared is None:
        return GENERIC
    return declared.subject or GENERIC[0], declared.body or GENERIC[1]


def plain_fallback(ctx: dict) -> tuple[str, str]:
    """A message built without Jinja at all: it cannot fail."""
    types = sorted({e.get("type", "") for e in ctx["events"]}) or [ctx["type"]]
    subject = f"{ctx['count']} × {', '.join(types)}" if ctx["count"] > 1 else f"{ctx['type']}"
    if ctx["tenant"]:
        subject += f" ({ctx['tenant']})"
    lines = [
        f"- {e.get('created_at', '')} {e.get('type', '')} {e.get('id', '')}: "
        f"{json.dumps(e.get('data'), default=str, ensure_ascii=False)[:500]}"
        for e in ctx["events"][:50]
    ]
    return subject, "\n".join(lines)


def html_from_text(subject: str, body: str) -> str:
    """A minimal HTML part for mail clients, from the text body."""
    return (
        "<html><body><h3>"
        + html_lib.escape(subject)
        + '</h3><pre style="font-family:inherit;white-space:pre-wrap">'
        + html_lib.escape(body)
        + "</pre></body></html>"
    )


def render(spec: TemplateSpec, ctx: dict) -> Rendered:
    """Render subject, body and HTML; fall back to plain text on any error."""
    default_subject, default_body = default_templates(spec.event_types.get(ctx["type"]), ctx["count"])
    try:
        subject = render_string(spec.subject or default_subject, ctx).strip()
        body = render_string(spec.body or default_body, ctx).strip()
        # Without an html template the email channel derives HTML from the text.
        html = render_string(spec.html, ctx) if spec.html else None
        return Rendered(" ".join(subject.split()), body, html)
    except Exception as exc:  # any template failure: never drop the notification
        error = f"template render error ({type(exc).__name__}: {exc}); sent the plain default"
        log.warning(
            "%s; route=%s channel=%s event=%s", error, ctx.get("route"), ctx.get("channel"), ctx["event"].get("id")
        )
        subject, body = plain_fallback(ctx)
        return Rendered(subject, body, None, error)
