"""Subjects and bodies: Jinja2 in a sandbox, with a default per event type.

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

import jinja2
from jinja2.sandbox import SandboxedEnvironment

log = logging.getLogger("tierd.notifications.templates")

# trim_blocks: admins write block tags on lines of their own in YAML. It also
# eats a newline right after a block tag, so the defaults below never put one there.
_env = SandboxedEnvironment(autoescape=False, trim_blocks=True, lstrip_blocks=True,
                            keep_trailing_newline=False)
_env.filters["json"] = lambda v, indent=None: json.dumps(v, indent=indent, default=str, ensure_ascii=False)


#: Built-in (subject, body) per event type. ``None`` type: any other event.
DEFAULTS: dict[str, tuple[str, str]] = {
    "webhook.endpoint.disabled": (
        "Webhook endpoint disabled: {{ data.url or data.endpoint_id or data.id }}",
        "tierd disabled the webhook endpoint {{ data.endpoint_id or data.id }} of tenant "
        "{{ tenant or '-' }}{% if data.url %} ({{ data.url }}){% endif %}"
        "{% if data.reason %} because {{ data.reason }}{% endif %}.\n"
        "{% if data.failures %}Consecutive failures: {{ data.failures }}.\n{% endif %}"
        "Deliveries to it are paused until it is enabled again.",
    ),
    "webhook.delivery.failed": (
        "Webhook delivery failed: {{ data.url or data.endpoint_id }}",
        "A webhook delivery for tenant {{ tenant or '-' }} failed"
        "{% if data.attempts %} after {{ data.attempts }} attempt(s){% endif %}.\n"
        "{% if data.url %}Endpoint: {{ data.url }}\n{% endif %}"
        "{% if data.event_type %}Event: {{ data.event_type }} {{ data.event_id }}\n{% endif %}"
        "{% if data.error or data.last_error %}Last error: {{ data.error or data.last_error }}\n{% endif %}",
    ),
    # Changes made to webhook endpoints through the API (webhooks' runtime.changed).
    "webhook.endpoint.created": (
        "Webhook endpoint added: {{ data.url or data.endpoint_id }}",
        "{{ data.actor or 'Someone' }} added the webhook endpoint {{ data.endpoint_id }} for tenant "
        "{{ tenant or '-' }}{% if data.url %}: {{ data.url }}{% endif %}.",
    ),
    "webhook.endpoint.updated": (
        "Webhook endpoint changed: {{ data.url or data.endpoint_id }}",
        "{{ data.actor or 'Someone' }} changed {{ (data.fields or ['the settings']) | join(', ') }} of the webhook "
        "endpoint {{ data.endpoint_id }} of tenant {{ tenant or '-' }}."
        "{{ ('\nIts URL was ' ~ data.previous_url ~ ' and is now ' ~ data.url ~ ': events go there from now on.')"
        " if data.previous_url else '' }}",
    ),
    "webhook.endpoint.secret_rotated": (
        "Webhook secret rotated: {{ data.url or data.endpoint_id }}",
        "{{ data.actor or 'Someone' }} rotated the signing secret of the webhook endpoint {{ data.endpoint_id }} "
        "of tenant {{ tenant or '-' }}{% if data.previous_secret_valid_until %}; the previous secret also signs "
        "until {{ data.previous_secret_valid_until }}{% endif %}.",
    ),
    "webhook.endpoint.deleted": (
        "Webhook endpoint deleted: {{ data.url or data.endpoint_id }}",
        "{{ data.actor or 'Someone' }} deleted the webhook endpoint {{ data.endpoint_id }} of tenant "
        "{{ tenant or '-' }}{% if data.url %} ({{ data.url }}){% endif %} with its delivery history.",
    ),
    # Field names follow what the reconciliation module publishes (runs.py, imports.py).
    "reconciliation.exceptions": (
        "Reconciliation: {{ data.count if data.count is defined else 'new' }} exception(s)"
        "{% if data.account %} on {{ data.account }}{% endif %}",
        "Reconciliation{% if data.run_id %} run {{ data.run_id }}{% endif %} for tenant {{ tenant or '-' }} "
        "left {{ data.count if data.count is defined else 'some' }} item(s) open past the limits"
        "{% if data.account %} on account {{ data.account }}{% endif %}"
        "{% if data.max_age_days %} (older than {{ data.max_age_days }} days"
        "{{ (' or at least ' ~ data.min_amount) if data.min_amount else '' }}){% endif %}.\n"
        "{% for item in (data.get('items') or [])[:20] %}- {{ item.side ~ ' ' if item.side else '' }}"
        "{{ item.date ~ ' ' if item.date else '' }}{{ item.reference or item.description or item.id }}"
        "{{ (' ' ~ item.amount ~ (' ' ~ item.currency if item.currency else '')) if item.amount is defined else '' }}"
        "{{ (', ' ~ item.age_days ~ ' days') if item.age_days is defined else '' }}\n{% endfor %}"
        "{{ ('... and ' ~ (data.count - 20) ~ ' more') if data.count is defined and data.count > 20 else '' }}",
    ),
    "reconciliation.run.completed": (
        "Reconciliation run completed{% if data.account %} for {{ data.account }}{% endif %}",
        "{% set c = data.get('counts') or {} %}"
        "Reconciliation{% if data.run_id %} run {{ data.run_id }}{% endif %} for tenant {{ tenant or '-' }}"
        "{% if data.account %} on account {{ data.account }}{% endif %} completed:"
        " {{ c.get('matches', '?') }} match(es), {{ c.get('suggestions', 0) }} suggestion(s) to review;"
        " {{ c.get('bank_lines_open', '?') }} bank line(s) and {{ c.get('ledger_entries_open', '?') }}"
        " ledger entr(ies) still open.",
    ),
    "reconciliation.statement.imported": (
        "Statement imported{% if data.account %} for {{ data.account }}{% endif %}",
        "A bank statement{% if data.format %} ({{ data.format }}){% endif %}"
        "{% if data.filename %} from {{ data.filename }}{% endif %} was imported for tenant {{ tenant or '-' }}"
        "{{ (': ' ~ data.new ~ ' new line(s), ' ~ data.get('duplicates', 0) ~ ' duplicate(s), '"
        " ~ data.get('rejected', 0) ~ ' rejected') if data.new is defined else '' }}."
        "{{ ('\nWarning: ' ~ data.balance_mismatches ~ ' balance mismatch(es).') if data.balance_mismatches else '' }}",
    ),
}
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

#: Event types whose default severity is not "info".
DEFAULT_SEVERITY = {
    "webhook.endpoint.disabled": "warning",
    "webhook.delivery.failed": "warning",
    "reconciliation.exceptions": "warning",
}


@dataclasses.dataclass(frozen=True)
class TemplateSpec:
    """The templates configured for one (route, channel); empty: use defaults."""

    subject: str = ""
    body: str = ""
    html: str = ""

    @classmethod
    def pick(cls, *sources: dict | None) -> "TemplateSpec":
        """First non-empty value of each key, in the order given (most specific first)."""
        values = {}
        for key in ("subject", "body", "html"):
            values[key] = next((s[key] for s in sources if s and s.get(key)), "")
        return cls(**values)


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


def context_for(events: list[dict], labels: dict | None = None, route: str = "", channel: str = "",
                count: int | None = None) -> dict:
    """The template context; ``count`` is the digest's size when ``events`` holds only its first part."""
    first = events[0] if events else {"id": "", "tenant": "", "type": "", "data": {}, "created_at": ""}
    return {
        "event": first, "events": events, "count": len(events) if count is None else count,
        "data": first.get("data") or {}, "tenant": first.get("tenant", ""), "type": first.get("type", ""),
        "labels": labels or {}, "route": route, "channel": channel,
    }


def default_templates(event_type: str, count: int) -> tuple[str, str]:
    if count > 1:
        return DIGEST
    return DEFAULTS.get(event_type, GENERIC)


def plain_fallback(ctx: dict) -> tuple[str, str]:
    """A message built without Jinja at all: it cannot fail."""
    types = sorted({e.get("type", "") for e in ctx["events"]}) or [ctx["type"]]
    subject = f"{ctx['count']} × {', '.join(types)}" if ctx["count"] > 1 else f"{ctx['type']}"
    if ctx["tenant"]:
        subject += f" ({ctx['tenant']})"
    lines = [f"- {e.get('created_at', '')} {e.get('type', '')} {e.get('id', '')}: "
             f"{json.dumps(e.get('data'), default=str, ensure_ascii=False)[:500]}" for e in ctx["events"][:50]]
    return subject, "\n".join(lines)


def html_from_text(subject: str, body: str) -> str:
    """A minimal HTML part for mail clients, from the text body."""
    return ("<html><body><h3>" + html_lib.escape(subject) + "</h3><pre style=\"font-family:inherit;white-space:pre-wrap\">"
            + html_lib.escape(body) + "</pre></body></html>")


def render(spec: TemplateSpec, ctx: dict) -> Rendered:
    """Render subject, body and HTML; fall back to plain text on any error."""
    default_subject, default_body = default_templates(ctx["type"], ctx["count"])
    try:
        subject = render_string(spec.subject or default_subject, ctx).strip()
        body = render_string(spec.body or default_body, ctx).strip()
        # Without an html template the email channel derives HTML from the text.
        html = render_string(spec.html, ctx) if spec.html else None
        return Rendered(" ".join(subject.split()), body, html)
    except Exception as exc:  # any template failure: never drop the notification
        error = f"template render error ({type(exc).__name__}: {exc}); sent the plain default"
        log.warning("%s; route=%s channel=%s event=%s", error, ctx.get("route"), ctx.get("channel"),
                    ctx["event"].get("id"))
        subject, body = plain_fallback(ctx)
        return Rendered(subject, body, None, error)
