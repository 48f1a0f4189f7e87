"""Make the call: one signed POST of a delivery, and what came of it.

No decision here (``outcome.py`` decides what follows) and no database:
this file changes only when how we talk HTTP to receivers changes.
"""

from __future__ import annotations

import dataclasses
import time

import aiohttp

from tierd import __version__
from tierd.core.http import tls_context

from .records import Claimed
from .signing import signature_header
from .ssrf import AddressPolicy, find_refusal, make_connector
from .transform import TransformError

#: How much of a response body each attempt keeps.
BODY_LIMIT = 4096


@dataclasses.dataclass
class Response:
    """What one attempt got: its kind (success, gone, http_error, timeout,
    connect_error, refused) and what the receiver said."""

    kind: str
    status: int | None
    latency: float
    error: str | None
    snippet: str | None
    retry_after: str | None


class Sender:
    """The HTTP client of the dispatcher: one session, the address policy, TLS and the timeout."""

    def __init__(self, settings: dict):
        self.policy = AddressPolicy()
        self.session: aiohttp.ClientSession | None = None
        self.configure(settings)

    def configure(self, settings: dict) -> None:
        """Apply (re)loaded settings; requests in flight keep theirs."""
        self.timeout_seconds = settings["timeout"]
        self.timeout = aiohttp.ClientTimeout(total=settings["timeout"])
        # Per request, so a reload that changes ca_file applies to new connections.
        self.tls = tls_context(settings["ca_file"] or None)
        # The resolver and socket factory hold this very object: new
        # connections see the new allowlist at once.
        self.policy.allow = list(settings["allow_destinations"])

    def open(self) -> None:
        # The connector limit is the dispatcher's to enforce (per endpoint, not per host): 0 = none.
        self.session = aiohttp.ClientSession(
            connector=make_connector(self.policy, limit=0), cookie_jar=aiohttp.DummyCookieJar(), auto_decompress=False
        )  # user-agent: set on each request, with the signature headers

    async def close(self) -> None:
        if self.session is not None:
            await self.session.close()

    async def send(self, delivery: Claimed, now: float) -> Response:
        """POST ``delivery`` once, signed for ``now``."""
        timestamp = int(now)
        body = delivery.payload.encode()
        # Static headers first: ours win, a tenant cannot forge a signature header.
        headers = dict(delivery.headers)
        if delivery.transform is not None:  # reshaped before it is signed: the signature covers what is sent
            try:
                body, extra = delivery.transform.render_payload(delivery.payload, delivery.id, delivery.tenant_id)
            except TransformError as exc:
                return Response("transform_error", None, 0.0, str(exc), None, None)
            headers.update(extra)
        headers.update(
            {
                "webhook-id": delivery.id,
                "webhook-timestamp": str(timestamp),
                "webhook-signature": signature_header(delivery.secrets, delivery.id, timestamp, body),
                "content-type": "application/json",
                "user-agent": f"tierd/{__version__}",
            }
        )
        session = self.session
        if session is None:
            raise RuntimeError("Sender.send() before open()")
        status = retry_after = error = snippet = None
        started = time.monotonic()
        try:
            async with session.post(
                delivery.url, data=body, headers=headers, allow_redirects=False, timeout=self.timeout, ssl=self.tls
            ) as resp:
                status = resp.status
                retry_after = resp.headers.get("Retry-After")
                snippet = await _read_head(resp, BODY_LIMIT)
            kind = "success" if 200 <= status < 300 else "gone" if status == 410 else "http_error"
            if kind != "success":
                error = f"HTTP {status}" + (" (redirects are not followed)" if 300 <= status < 400 else "")
        except TimeoutError:
            kind, error = "timeout", f"no complete answer within {self.timeout_seconds:g}s"
        except (aiohttp.ClientError, OSError) as exc:
            refusal = find_refusal(exc)
            if refusal is not None:
                kind, error = "refused", str(refusal)
            elif isinstance(exc, aiohttp.ClientConnectorError):
                kind, error = "connect_error", f"cannot connect: {exc.os_error or exc}"
            else:
                kind, error = (
                    "connect_error" if isinstance(exc, OSError) else "http_error",
                    f"{type(exc).__name__}: {exc}",
                )
        except ValueError as exc:
            # What the client refuses to send: a host name that is no DNS name
            # (an endpoint stored before such URLs were refused), a bad header.
            kind, error = "connect_error", f"invalid request: {exc}"
        return Response(kind, status, time.monotonic() - started, error, snippet, retry_after)


async def _read_head(resp: aiohttp.ClientResponse, limit: int) -> str:
    """The first ``limit`` bytes of a response body, as text."""
    chunks, size = [], 0
    while size < limit and not resp.content.at_eof():
        chunk = await resp.content.read(limit - size)
        if not chunk:
            break
        chunks.append(chunk)
        size += len(chunk)
    return b"".join(chunks).decode("utf-8", "replace")
