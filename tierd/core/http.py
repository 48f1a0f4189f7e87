"""Small HTTP facts that several modules need when they talk to the outside."""

from __future__ import annotations

import email.utils
import ssl
import time


def tls_context(ca_file: str | None = None) -> ssl.SSLContext:
    """A client TLS context that verifies certificates and host names: the
    system's CAs, plus those of ``ca_file`` (PEM) when given, for receivers
    behind an internal CA. Raises OSError or ssl.SSLError when the file cannot
    be read as certificates."""
    context = ssl.create_default_context()
    if ca_file:
        context.load_verify_locations(cafile=ca_file)
    return context


def tls_file_problem(ca_file: str) -> str | None:
    """Why ``ca_file`` cannot serve :func:`tls_context`; None when it can."""
    try:
        tls_context(ca_file)
    except ssl.SSLError as exc:
        return f"{ca_file!r} holds no readable PEM certificate ({exc.reason or exc})"
    except OSError as exc:
        return f"cannot read CA certificates from {ca_file!r}: {exc.strerror or exc}"
    return None


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """``Retry-After`` as seconds to wait (delta-seconds or an HTTP date); None if absent or unreadable."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when is None:
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))
