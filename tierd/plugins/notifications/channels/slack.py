"""Slack incoming webhook with a Block Kit payload.

https://api.slack.com/messaging/webhooks: POST JSON ``{"text", "blocks"}``;
``text`` is the fallback shown in notifications. Block limits: a header
holds 150 characters, a section 3000.
"""

from __future__ import annotations

from tierd.core.registry import Channel, Message, SendResult
from tierd.core.schema import Duration, Obj, Str, Url

from .http_post import post, with_optional

_EMOJI = {"info": ":information_source:", "warning": ":warning:", "critical": ":rotating_light:"}


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def block_kit(message: Message, username: str = "", icon_emoji: str = "") -> dict:
    """The Block Kit payload for ``message``."""
    blocks = [
        {"type": "header", "text": {"type": "plain_text", "text": _clip(message.subject, 150), "emoji": True}},
        {"type": "section", "text": {"type": "mrkdwn", "text": _clip(message.body or " ", 3000)}},
        {
            "type": "context",
            "elements": [
                {
                    "type": "mrkdwn",
                    "text": f"{_EMOJI.get(message.severity, '')} {message.severity} · tierd"
                    + (f" · {message.id}" if message.id else ""),
                }
            ],
        },
    ]
    return with_optional(
        {"text": _clip(message.subject, 3000), "blocks": blocks}, username=username, icon_emoji=icon_emoji
    )


class SlackChannel(Channel):
    """Post to a Slack channel through an incoming webhook URL."""

    type_name = "slack"
    schema = Obj(
        {
            "url": Url(required=True, doc="Incoming webhook URL (a secret: use ${SLACK_WEBHOOK_URL})"),
            "username": Str(default="", doc="Override the webhook's display name"),
            "icon_emoji": Str(default="", doc="Override the webhook's icon, e.g. :bell:"),
            "timeout": Duration(default="15s"),
        }
    )

    async def send(self, message: Message) -> SendResult:
        payload = block_kit(message, self.config.get("username", ""), self.config.get("icon_emoji", ""))
        return await post(self.http, self.config["url"], payload=payload, timeout=self.config.get("timeout", 15.0))
