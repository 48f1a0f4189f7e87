"""Write notifications to the daemon's log (journald under systemd).

Useful as a catch-all route, for trying a routing tree out, and in tests.
"""

from __future__ import annotations

import logging

from tierd.core.registry import Channel, Message, SendResult
from tierd.core.schema import Enum, Obj, Str

_LEVELS = {"info": logging.INFO, "warning": logging.WARNING, "critical": logging.CRITICAL}


class LogChannel(Channel):
    """Log each message on the ``tierd.notifications.log`` logger (or another)."""

    type_name = "log"
    schema = Obj(
        {
            "logger": Str(default="tierd.notifications.log", doc="Logger name"),
            "level": Enum(
                ["severity", "debug", "info", "warning", "error", "critical"],
                default="severity",
                doc="Fixed level, or 'severity' to follow the message",
            ),
        }
    )

    async def send(self, message: Message) -> SendResult:
        level_name = self.config.get("level", "severity")
        level = (
            _LEVELS.get(message.severity, logging.INFO)
            if level_name == "severity"
            else logging.getLevelName(level_name.upper())
        )
        logging.getLogger(self.config.get("logger", "tierd.notifications.log")).log(
            level, "[%s] %s: %s\n%s", self.name, message.id or "-", message.subject, message.body
        )
        return SendResult.delivered("logged")
