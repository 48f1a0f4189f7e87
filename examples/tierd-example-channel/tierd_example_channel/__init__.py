"""Example third-party channel type for tierd: ``jsonl`` appends messages to a file.

Registered through the ``tierd`` entry point group (see setup.cfg), exactly
as the built-in channel types are.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

from tierd.core.plugins import hookimpl
from tierd.core.registry import Channel, Message, SendResult
from tierd.core.schema import Bool, Obj, Str


class JsonlChannel(Channel):
    """Append each message as one JSON object per line."""

    type_name = "jsonl"
    schema = Obj(
        {
            "path": Str(required=True, min_len=1, doc="File to append to (created if missing)"),
            "include_events": Bool(default=True, doc="Also write the events the message is about"),
        }
    )

    def _append(self, line: str) -> None:
        path = Path(self.config["path"])
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("a", encoding="utf-8") as f:
            f.write(line + "\n")

    async def send(self, message: Message) -> SendResult:
        record = {
            "channel": self.name,
            "id": message.id,
            "subject": message.subject,
            "body": message.body,
            "severity": message.severity,
        }
        if self.config.get("include_events", True):
            record["events"] = message.events
        try:
            # File I/O off the event loop: a slow disk must not stall the daemon.
            await asyncio.to_thread(self._append, json.dumps(record, default=str))
        except OSError as exc:
            return SendResult.retry(f"cannot write {self.config['path']}: {exc}")
        return SendResult.delivered(f"appended to {self.config['path']}")


@hookimpl
def tierd_register_channels(register):
    register(JsonlChannel)
