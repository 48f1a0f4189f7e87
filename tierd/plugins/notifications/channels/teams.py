"""Microsoft Teams through a Workflows (Power Automate) or legacy incoming
webhook, as an Adaptive Card.

The Workflows "Post to a channel when a webhook request is received"
template expects ``{"type": "message", "attachments": [{"contentType":
"application/vnd.microsoft.card.adaptive", "content": <AdaptiveCard>}]}``;
legacy Office 365 connectors accept the same envelope.
"""

from __future__ import annotations

from tierd.core.registry import Channel, Message, SendResult
from tierd.core.schema import Duration, Obj, Url

from .http_post import post

_COLOR = {"info": "Default", "warning": "Warning", "critical": "Attention"}


def adaptive_card(message: Message) -> dict:
    """The message envelope holding one Adaptive Card 1.4."""
    card = {
        "$schema": "http://adaptivecards.io/schemas/adaptive-card.json",
        "type": "AdaptiveCard",
        "version": "1.4",
        "body": [
            {
                "type": "TextBlock",
                "text": message.subject,
                "weight": "Bolder",
                "size": "Medium",
                "wrap": True,
                "color": _COLOR.get(message.severity, "Default"),
            },
            {"type": "TextBlock", "text": message.body or " ", "wrap": True},
            {
                "type": "FactSet",
                "facts": [
                    {"title": "Severity", "value": message.severity},
                    *([{"title": "Notification", "value": message.id}] if message.id else []),
                ],
            },
        ],
    }
    return {
        "type": "message",
        "attachments": [
            {
                "contentType": "application/vnd.microsoft.card.adaptive",
                "contentUrl": None,
                "content": card,
            }
        ],
    }


class TeamsChannel(Channel):
    """Post an Adaptive Card to a Teams channel."""

    type_name = "teams"
    schema = Obj(
        {
            "url": Url(required=True, doc="Workflows or incoming webhook URL (a secret)"),
            "timeout": Duration(default="15s"),
        }
    )

    async def send(self, message: Message) -> SendResult:
        return await post(
            self.http, self.config["url"], payload=adaptive_card(message), timeout=self.config.get("timeout", 15.0)
        )
