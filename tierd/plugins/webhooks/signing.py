"""Standard Webhooks signatures: make them (sender) and check them (receiver).

The signed content is ``"{webhook-id}.{webhook-timestamp}.{body}"``. Two schemes:

* ``v1``, symmetric: HMAC-SHA256 keyed with the base64-decoded part of a
  ``whsec_`` secret, which sender and receiver share;
* ``v1a``, asymmetric: an Ed25519 signature made with a ``whsk_`` signing key
  (base64 of its 32-byte seed) that never leaves tierd; receivers verify with
  its ``whpk_`` public key, so a leaked receiver config cannot forge events.

The signature header holds space-separated ``<scheme>,<base64>`` entries
(several during a key rotation). See https://www.standardwebhooks.com/.

``verify()`` is public API for Python receivers::

    from tierd.plugins.webhooks import verify
    payload = verify(secret_or_public_key, request_body, request_headers)   # raises on failure
"""

from __future__ import annotations

import base64
import binascii
import functools
import hashlib
import hmac
import json
import os
import time
from collections.abc import Iterable, Mapping

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

SECRET_PREFIX = "whsec_"
SIGNING_KEY_PREFIX = "whsk_"
PUBLIC_KEY_PREFIX = "whpk_"
#: An endpoint's ``signing`` choices: HMAC-SHA256 signs ``v1``, Ed25519 ``v1a``.
SIGNING_SCHEMES = ("hmac-sha256", "ed25519")
#: Secrets we generate carry 24 random bytes (the minimum the issue asks for).
SECRET_BYTES = 24
MIN_SECRET_BYTES = 24
MAX_SECRET_BYTES = 64
#: A receiver refuses messages whose timestamp is further than this from now.
DEFAULT_TOLERANCE = 5 * 60


class WebhookVerificationError(Exception):
    """The message is not authentic or too old/new (receiver side)."""


def new_secret(signing: str = "hmac-sha256") -> str:
    """A fresh random endpoint secret: ``whsec_`` + base64 of 24 random bytes,
    or for ``ed25519`` a ``whsk_`` signing key (base64 of a 32-byte seed)."""
    if signing == "ed25519":
        return SIGNING_KEY_PREFIX + base64.b64encode(os.urandom(32)).decode()
    return SECRET_PREFIX + base64.b64encode(os.urandom(SECRET_BYTES)).decode()


def signing_of(secret: str) -> str:
    """The ``signing`` scheme name of an endpoint secret."""
    return "ed25519" if secret.startswith(SIGNING_KEY_PREFIX) else "hmac-sha256"


@functools.lru_cache(maxsize=4096)
def _ed25519_key(secret: str) -> Ed25519PrivateKey:
    try:
        seed = base64.b64decode(secret[len(SIGNING_KEY_PREFIX) :], validate=True)
        return Ed25519PrivateKey.from_private_bytes(seed)
    except (binascii.Error, ValueError) as exc:
        raise ValueError("signing key must be whsk_ + base64 of 32 bytes") from exc


def public_key(secret: str) -> str:
    """The ``whpk_`` public key receivers verify a ``whsk_`` signing key's signatures with."""
    raw = _ed25519_key(secret).public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    return PUBLIC_KEY_PREFIX + base64.b64encode(raw).decode()


def verification_key(secret: str) -> str:
    """What a receiver needs: the shared ``whsec_`` secret itself, or the public key of a ``whsk_`` one."""
    return public_key(secret) if secret.startswith(SIGNING_KEY_PREFIX) else secret


@functools.lru_cache(maxsize=4096)  # every request signs with one of a few secrets
def secret_key(secret: str) -> bytes:
    """The HMAC key of a secret (``whsec_`` stripped, base64-decoded).

    Raises ValueError when the secret is not valid base64.
    """
    raw = secret[len(SECRET_PREFIX) :] if secret.startswith(SECRET_PREFIX) else secret
    try:
        return base64.b64decode(raw, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ValueError("webhook secret is not valid base64") from exc


def check_secret(secret: object) -> str | None:
    """Why a caller-supplied secret is unacceptable, or None when it is fine."""
    if isinstance(secret, str) and secret.startswith(SIGNING_KEY_PREFIX):
        try:
            _ed25519_key(secret)
        except ValueError as exc:
            return str(exc)
        return None
    if not isinstance(secret, str) or not secret.startswith(SECRET_PREFIX):
        return f"secret must be a string starting with {SECRET_PREFIX!r} (or {SIGNING_KEY_PREFIX!r} for ed25519)"
    try:
        key = secret_key(secret)
    except ValueError as exc:
        return str(exc)
    if not MIN_SECRET_BYTES <= len(key) <= MAX_SECRET_BYTES:
        return f"secret must decode to {MIN_SECRET_BYTES}..{MAX_SECRET_BYTES} bytes, not {len(key)}"
    return None


def _timestamp_text(timestamp: int | str) -> str:
    """Canonical decimal unix seconds; refuses floats, negatives and junk."""
    if isinstance(timestamp, bool):
        raise ValueError("invalid timestamp")
    if isinstance(timestamp, int):
        if timestamp < 0:
            raise ValueError("invalid timestamp")
        return str(timestamp)
    if isinstance(timestamp, str) and timestamp.isascii() and timestamp.isdigit():
        return str(int(timestamp))
    raise ValueError(f"invalid timestamp {timestamp!r}")


def _as_bytes(body: bytes | str) -> bytes:
    return body.encode() if isinstance(body, str) else bytes(body)


def _content(msg_id: str, timestamp: int | str, body: bytes | str) -> bytes:
    return f"{msg_id}.{_timestamp_text(timestamp)}.".encode() + _as_bytes(body)


def sign(secret: str, msg_id: str, timestamp: int | str, body: bytes | str) -> str:
    """One signature of ``body`` for ``msg_id`` at ``timestamp``: ``v1,<base64>``
    with a ``whsec_`` secret, ``v1a,<base64>`` with a ``whsk_`` signing key."""
    content = _content(msg_id, timestamp, body)
    if secret.startswith(SIGNING_KEY_PREFIX):
        return "v1a," + base64.b64encode(_ed25519_key(secret).sign(content)).decode()
    digest = hmac.new(secret_key(secret), content, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


def signature_header(secrets: Iterable[str], msg_id: str, timestamp: int | str, body: bytes | str) -> str:
    """The ``webhook-signature`` value: one signature per secret, space-separated.

    During a rotation grace period the sender passes the new and the old
    secret, so receivers that still hold either one accept the message.
    """
    return " ".join(sign(s, msg_id, timestamp, body) for s in secrets)


def _header(headers: Mapping[str, str], name: str) -> str:
    # Receivers hand us dicts with arbitrary case; look up case-insensitively.
    value = headers.get(name)
    if value is None:
        for key, val in headers.items():
            if key.lower() == name:
                value = val
                break
    if value is None:
        raise WebhookVerificationError(f"missing header {name}")
    return value


def verify(
    secret: str | Iterable[str],
    body: bytes | str,
    headers: Mapping[str, str],
    *,
    tolerance: float = DEFAULT_TOLERANCE,
    now: float | None = None,
) -> object:
    """Check a received webhook and return its parsed JSON body.

    ``secret`` is the endpoint's ``whsec_`` secret or ``whpk_`` public key
    (or several, while you roll one out); ``headers`` the request headers
    (any mapping, case-insensitive lookup). Raises
    :class:`WebhookVerificationError` when a header is missing, the
    timestamp is more than ``tolerance`` seconds away from ``now`` (replay
    protection), or no ``v1`` (HMAC) or ``v1a`` (Ed25519) signature in the
    header matches one of the keys.
    """
    msg_id = _header(headers, "webhook-id")
    ts_text = _header(headers, "webhook-timestamp")
    sig_header = _header(headers, "webhook-signature")
    try:
        ts_text = _timestamp_text(ts_text)
    except ValueError as exc:
        raise WebhookVerificationError("invalid webhook-timestamp") from exc
    current = time.time() if now is None else now
    if abs(current - int(ts_text)) > tolerance:
        raise WebhookVerificationError("webhook-timestamp outside the tolerance window")
    keys = [secret] if isinstance(secret, str) else list(secret)
    asymmetric = [k for k in keys if k.startswith((PUBLIC_KEY_PREFIX, SIGNING_KEY_PREFIX))]
    public = [_public_key_object(k) for k in asymmetric]
    expected = [sign(k, msg_id, ts_text, body).encode() for k in keys if k not in asymmetric]
    content = _content(msg_id, ts_text, body)
    for entry in sig_header.split():
        version, _, value = entry.partition(",")
        if not value:
            continue
        if version == "v1":
            if any(hmac.compare_digest(candidate, f"v1,{value}".encode()) for candidate in expected):
                return json.loads(_as_bytes(body))
        elif version == "v1a" and public:
            try:
                signature = base64.b64decode(value, validate=True)
            except (binascii.Error, ValueError):
                continue
            for key in public:
                try:
                    key.verify(signature, content)
                    return json.loads(_as_bytes(body))
                except InvalidSignature:
                    pass
        # other schemes (v2, ...) are not ours to judge
    raise WebhookVerificationError("no matching signature")


def _public_key_object(key: str) -> Ed25519PublicKey:
    if key.startswith(SIGNING_KEY_PREFIX):
        return _ed25519_key(key).public_key()
    try:
        return Ed25519PublicKey.from_public_bytes(base64.b64decode(key[len(PUBLIC_KEY_PREFIX) :], validate=True))
    except (binascii.Error, ValueError) as exc:
        raise ValueError("public key must be whpk_ + base64 of 32 bytes") from exc


def signing_secrets(secret: str, previous: str | None, previous_until: float | None, now: float) -> list[str]:
    """The secrets that sign now: the current one, and the previous during its grace."""
    if previous and (previous_until or 0) > now:
        return [secret, previous]
    return [secret]
