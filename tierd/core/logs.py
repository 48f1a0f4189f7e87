"""Logging: readable text by default, JSON lines as an option, secrets masked."""

from __future__ import annotations

import json
import logging
import re
import sys
import time

# Bearer tokens, tierd tokens, webhook secrets and signatures never reach a log.
_SECRET_RE = re.compile(r"(tierd_[A-Za-z0-9_-]{8,}|whsec_[A-Za-z0-9+/=]{8,}|v1,[A-Za-z0-9+/=]{20,}"
                        r"|(?i:bearer)\s+[A-Za-z0-9._~+/=-]{8,})")


def redact(text: str) -> str:
    return _SECRET_RE.sub(lambda m: m.group(0)[:6] + "***", text)


class RedactingFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        clean = redact(message)
        if clean != message:
            record.msg, record.args = clean, None
        return True


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            entry["exception"] = redact(self.formatException(record.exc_info))
        return json.dumps(entry)


def setup_logging(level: str = "INFO", fmt: str = "text") -> None:
    root = logging.getLogger()
    for handler in list(root.handlers):
        root.removeHandler(handler)
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(RedactingFilter())
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)-7s %(name)s: %(message)s"))
    root.addHandler(handler)
    root.setLevel(level)
    # aiohttp's access log is one line per request: too loud for a daemon log.
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
    logging.getLogger("apscheduler").setLevel(logging.WARNING)
