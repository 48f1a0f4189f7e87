"""ntfy (https://ntfy.sh or self-hosted): publish to a topic with priority
and tags.

Uses JSON publishing (POST to the server root with ``topic`` in the body,
https://docs.ntfy.sh/publish/#publish-as-json), which carries UTF-8 titles
that HTTP headers cannot.
"""

from __future__ import annotations

import base64
from collections.abc import Sequence

from tierd.core.registry import Channel, Message, SendResult
from tierd.core.schema import Duration, Int, List, Map, Obj, Str, Url

from .http_post import post, with_optional

#: ntfy priorities: 1 min, 2 low, 3 default, 4 high, 5 max/urgent.
_PRIORITY = {"info": 3, "warning": 4, "critical": 5}
_TAG = {"info": "information_source", "warning": "warning", "critical": "rotating_light"}


def ntfy_payload(message: Message, topic: str, priority: int = 0, tags: Sequence[str] = (), click: str = "") -> dict:
    return with_optional(
        {
            "topic": topic,
            "title": message.subject,
            "message": message.body or message.subject,
            "priority": priority or _PRIORITY.get(message.severity, 3),
            "tags": [_TAG.get(message.severity, "bell"), *tags],
        },
        click=click,
    )


class NtfyChannel(Channel):
    """Publish a message to an ntfy topic."""

    type_name = "ntfy"
    schema = Obj(
        {
            "url": Url(default="https://ntfy.sh", doc="ntfy server base URL"),
            "topic": Str(required=True, doc="Topic to publish to"),
            "priority": Int(default=0, min=0, max=5, doc="1..5; 0 maps severity (info 3, warning 4, critical 5)"),
            "tags": List(Str(), default=[], doc="Extra tags (emoji short codes)"),
            "click": Str(default="", doc="URL opened when the notification is tapped"),
            "token": Str(default="", doc="Access token (Bearer)"),
            "username": Str(default=""),
            "password": Str(default=""),
            "headers": Map(Str(), default={}, doc="Extra HTTP headers"),
            "timeout": Duration(default="15s"),
        }
    )

    def headers(self) -> dict:
        cfg = self.config
        headers = dict(cfg.get("headers") or {})
        if cfg.get("token"):
            headers["Authorization"] = f"Bearer {cfg['token']}"
        elif cfg.get("username"):
            cred = base64.b64encode(f"{cfg['username']}:{cfg.get('password', '')}".encode()).decode()
            headers["Authorization"] = f"Basic {cred}"
        return headers

    async def send(self, message: Message) -> SendResult:
        cfg = self.config
        payload = ntfy_payload(message, cfg["topic"], cfg.get("priority", 0), cfg.get("tags", []), cfg.get("click", ""))
        return await post(
            self.http,
            cfg.get("url", "https://ntfy.sh").rstrip("/") + "/",
            payload=payload,
            headers=self.headers(),
            timeout=cfg.get("timeout", 15.0),
        )
