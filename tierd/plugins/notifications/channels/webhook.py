"""A generic JSON POST with a templated body and headers.

Without a ``body`` template the payload is::

    {"id", "subject", "body", "severity", "events": [...]}

With one, the template (Jinja2, sandboxed) must render JSON; the context has
``id``, ``subject``, ``body``, ``severity``, ``events``, ``event`` and the
``json`` filter for quoting. A template that fails to render or renders
invalid JSON is logged and the default payload is sent instead.
"""

from __future__ import annotations

import json
import logging

from tierd.core.registry import Channel, Message, SendResult
from tierd.core.schema import Duration, Enum, Map, Obj, Str, Url

from ..templates import check_template, render_string
from .http_post import post

log = logging.getLogger("tierd.notifications.webhook")


def default_payload(message: Message) -> dict:
    return {
        "id": message.id,
        "subject": message.subject,
        "body": message.body,
        "severity": message.severity,
        "events": message.events,
    }


def _check(value: dict) -> list:
    errors: list[tuple[tuple, str]] = []
    for key in ("body",):
        if value.get(key) and (err := check_template(value[key])):
            errors.append(((key,), err))
    for name, tpl in (value.get("headers") or {}).items():
        if err := check_template(tpl):
            errors.append((("headers", name), err))
    return errors


class WebhookChannel(Channel):
    """POST a JSON document to any HTTP endpoint."""

    type_name = "webhook"
    schema = Obj(
        {
            "url": Url(required=True, doc="Where to POST"),
            "method": Enum(["POST", "PUT"], default="POST"),
            "headers": Map(Str(), default={}, doc="HTTP headers; values are templates (e.g. a token from ${VAR})"),
            "body": Str(default="", doc="Template rendering the JSON body; empty: the default payload"),
            "timeout": Duration(default="15s"),
        },
        check=_check,
    )

    def payload(self, message: Message) -> tuple[bytes, dict, str]:
        """(body bytes, headers, note) for ``message``; note says what fell back."""
        ctx = {
            "id": message.id,
            "subject": message.subject,
            "body": message.body,
            "severity": message.severity,
            "events": message.events,
            "event": message.events[0] if message.events else {},
        }
        note = ""
        headers = {"Content-Type": "application/json"}
        try:
            headers.update({k: render_string(v, ctx) for k, v in (self.config.get("headers") or {}).items()})
        except Exception as exc:
            note = f"header template failed ({exc}); "
            headers.update(self.config.get("headers") or {})
        template = self.config.get("body")
        if template:
            try:
                text = render_string(template, ctx)
                json.loads(text)  # a receiver expecting JSON must get JSON
                return text.encode(), headers, note
            except Exception as exc:
                note += f"body template failed ({type(exc).__name__}: {exc}); sent the default payload"
                log.warning("channel %s: %s", self.name, note)
        return json.dumps(default_payload(message), default=str, ensure_ascii=False).encode(), headers, note

    async def send(self, message: Message) -> SendResult:
        data, headers, note = self.payload(message)
        result = await post(
            self.http,
            self.config["url"],
            data=data,
            headers=headers,
            method=self.config.get("method", "POST"),
            timeout=self.config.get("timeout", 15.0),
        )
        if note:
            result.detail = f"{result.detail} ({note})"
        return result
