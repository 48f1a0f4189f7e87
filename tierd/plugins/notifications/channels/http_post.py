"""One HTTP POST, classified the way every HTTP channel needs it.

Slack, Teams, ntfy and the generic webhook differ only in the payload they
build; what a response *means* for delivery is the same for all of them:

* 2xx                -> delivered
* 429                -> retry, honouring ``Retry-After`` (seconds or HTTP date)
* 408, 425, 5xx      -> retry (the service may recover)
* any other 4xx      -> failed (our request is wrong; retrying will not help)
* timeout, refused, reset, DNS error -> retry
"""

from __future__ import annotations

import json

import aiohttp

from tierd.core.http import parse_retry_after
from tierd.core.registry import SendResult

#: Statuses that are worth retrying although they are 4xx.
_RETRYABLE_4XX = {408, 425, 429}
#: How much of a response body goes into the attempt's detail.
_DETAIL_CHARS = 300


def classify(status: int, body: str, retry_after: str | None = None) -> SendResult:
    """Map an HTTP status (and body) to a :class:`SendResult`."""
    detail = f"HTTP {status}"
    snippet = body.strip()[:_DETAIL_CHARS]
    if snippet:
        detail += f": {snippet}"
    if 200 <= status < 300:
        return SendResult.delivered(detail)
    if status in _RETRYABLE_4XX or status >= 500:
        return SendResult.retry(detail, parse_retry_after(retry_after) if status in (429, 503) else None)
    return SendResult.failed(detail)


def with_optional(payload: dict, **fields) -> dict:
    """``payload`` plus those of ``fields`` that are set: an optional key left
    empty in the config is left out of the payload, not sent blank."""
    payload.update((key, value) for key, value in fields.items() if value)
    return payload


async def post(
    http: aiohttp.ClientSession | None,
    url: str,
    *,
    payload: object | None = None,
    data: bytes | str | None = None,
    headers: dict | None = None,
    timeout: float = 15.0,
    method: str = "POST",
) -> SendResult:
    """Send ``payload`` as JSON (or raw ``data``) and classify the outcome."""
    if http is None:
        # Channels get the service's session; one built without it (to check a config) cannot send.
        raise RuntimeError("this channel was built without an HTTP session and cannot send")
    headers = dict(headers or {})
    if payload is not None:
        data = json.dumps(payload, ensure_ascii=False, default=str).encode()
        headers.setdefault("Content-Type", "application/json")
    try:
        async with http.request(
            method,
            url,
            data=data,
            headers=headers,
            timeout=aiohttp.ClientTimeout(total=timeout),
            allow_redirects=False,
        ) as resp:
            body = await resp.text(errors="replace")
            return classify(resp.status, body, resp.headers.get("Retry-After"))
    except TimeoutError:
        return SendResult.retry(f"timeout after {timeout:g}s")
    except aiohttp.InvalidURL as exc:
        return SendResult.failed(f"invalid URL: {exc}")
    except aiohttp.ClientError as exc:
        return SendResult.retry(f"{type(exc).__name__}: {exc}")
