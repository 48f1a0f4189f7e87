"""Logging: readable text by default, JSON lines as an option, secrets masked."""

from __future__ import annotations

import json
import logging
import re
import sys
import time
from collections.abc import Callable

from aiohttp.abc import AbstractAccessLogger
from aiohttp.web import BaseRequest, StreamResponse

#: The logger of the API's access log (``logging.access_log``).
ACCESS_LOGGER = "tierd.access"

# Bearer tokens, tierd tokens, webhook secrets and signatures never reach a log.
# A tierd token is ``tierd_`` (or ``tierd_admin_``) and 43 random url-safe
# characters, some upper case or digits: hook and metric names (lower case,
# ``tierd_register_channels``) are not tokens and stay readable.
_SECRET_RE = re.compile(
    r"(tierd_(?:admin_)?(?=[a-z_-]*[A-Z0-9])[A-Za-z0-9_-]{40,}"
    r"|whsec_[A-Za-z0-9+/=]{8,}|v1,[A-Za-z0-9+/=]{20,}"
    r"|(?i:bearer)\s+[A-Za-z0-9._~+/=-]{8,})"
)


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
    # aiohttp's own access log stays quiet; tierd's (logging.access_log) is written
    # whatever the level, since turning it on is asking for it.
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
    logging.getLogger(ACCESS_LOGGER).setLevel(logging.INFO)
    logging.getLogger("apscheduler").setLevel(logging.WARNING)
    logging.getLogger("aiosqlite").setLevel(logging.INFO)  # at DEBUG, two lines per query drown tierd's own


# Query parameters whose values may be credentials; their values are never logged.
_SECRET_PARAM = re.compile(r"(^|&)([^=&]*(?:token|secret|key|pass|auth|sig|cred)[^=&]*)=[^&]*", re.I)


def access_log_class(enabled: Callable[[], bool]) -> type[AbstractAccessLogger]:
    """An aiohttp access logger writing one line per request while ``enabled()``
    (read at every request, so a reload turns it on or off).

    The line holds client, method, path, status, response size and time: never a
    header (so never the Authorization token), and query values that may be
    secrets are masked.
    """

    class AccessLog(AbstractAccessLogger):
        @property
        def enabled(self) -> bool:  # per connection; log() checks again per request
            return enabled()

        def log(self, request: BaseRequest, response: StreamResponse, time: float) -> None:
            if not enabled():
                return
            target = request.rel_url.raw_path
            if request.rel_url.raw_query_string:
                target += "?" + _SECRET_PARAM.sub(r"\1\2=***", request.rel_url.raw_query_string)
            self.logger.info(
                "%s %s %s %d %dB %.1fms",
                request.remote or "-",
                request.method,
                target,
                response.status,
                response.body_length,
                time * 1000,
            )

    return AccessLog
