"""Signatures against the published Standard Webhooks vectors (copied here so
the suite runs without ../shared), and the receiver-side verify()."""

import pytest

from tierd.plugins.webhooks import WebhookVerificationError, verify
from tierd.plugins.webhooks.signing import check_secret, new_secret, secret_key, sign, signature_header

SIGN_VECTORS = [
    (
        "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
        "msg_p5jXN8AQM9LWM0D4loKWxJek",
        1614265330,
        '{"test": 2432232314}',
        "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=",
    ),
    (
        "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD",
        "msg_27UH4WbU6Z5A5EzD8u03UvzRbpk",
        1649367553,
        '{"email":"test@example.com","username":"test_user"}',
        "v1,tZ1I4/hDygAJgO5TYxiSd6Sd0kDW6hPenDe+bTa3Kkw=",
    ),
]
MUST_NOT_VERIFY_SECOND = [
    "v1,R3PTzyfHASBKHH98a7yexTwaJ4yNIcGhFQc1yuN+BPU=",
    "v1,",
    "v1,tZ1I4/hDygAJgO5TYxiSd6Sd0kDW6hPenDe+bTa3",
]
MULTI_HEADER_FIRST = (
    "v1,Ceo5qEr07ixe2NLpvHk3FH9bwy/WavXrAFQ/9tdO6mc= v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE= v2,ignored"
)
BAD_TIMESTAMPS = ["161426533.0", "-161426533", "invalid timestamp"]


def headers(msg_id, ts, sig):
    return {"webhook-id": msg_id, "webhook-timestamp": str(ts), "webhook-signature": sig}


@pytest.mark.parametrize("secret,msg_id,ts,body,expected", SIGN_VECTORS)
def test_sign_matches_vectors(secret, msg_id, ts, body, expected):
    assert sign(secret, msg_id, ts, body) == expected
    assert sign(secret, msg_id, str(ts), body.encode()) == expected


@pytest.mark.parametrize("secret,msg_id,ts,body,expected", SIGN_VECTORS)
def test_verify_accepts_vectors(secret, msg_id, ts, body, expected):
    import json

    assert verify(secret, body, headers(msg_id, ts, expected), now=ts + 10) == json.loads(body)
    # header names in any case
    upper = {k.upper(): v for k, v in headers(msg_id, ts, expected).items()}
    assert verify(secret, body.encode(), upper, now=ts)


@pytest.mark.parametrize("bad", MUST_NOT_VERIFY_SECOND)
def test_verify_refuses_bad_signatures(bad):
    secret, msg_id, ts, body, _ = SIGN_VECTORS[1]
    with pytest.raises(WebhookVerificationError):
        verify(secret, body, headers(msg_id, ts, bad), now=ts)


def test_multi_signature_header_verifies():
    secret, msg_id, ts, body, _ = SIGN_VECTORS[0]
    assert verify(secret, body, headers(msg_id, ts, MULTI_HEADER_FIRST), now=ts)


@pytest.mark.parametrize("ts", BAD_TIMESTAMPS)
def test_sign_refuses_bad_timestamps(ts):
    secret, msg_id, _, body, _ = SIGN_VECTORS[0]
    with pytest.raises(ValueError):
        sign(secret, msg_id, ts, body)


def test_verify_refuses_tampering_and_other_secret():
    secret, msg_id, ts, body, sig = SIGN_VECTORS[0]
    with pytest.raises(WebhookVerificationError):
        verify(secret, body + " ", headers(msg_id, ts, sig), now=ts)
    with pytest.raises(WebhookVerificationError):
        verify(secret, body, headers(msg_id + "x", ts, sig), now=ts)
    with pytest.raises(WebhookVerificationError):
        verify(new_secret(), body, headers(msg_id, ts, sig), now=ts)


def test_verify_timestamp_tolerance_is_five_minutes():
    secret, msg_id, ts, body, sig = SIGN_VECTORS[0]
    assert verify(secret, body, headers(msg_id, ts, sig), now=ts + 300)
    assert verify(secret, body, headers(msg_id, ts, sig), now=ts - 300)
    for now in (ts + 301, ts - 301):
        with pytest.raises(WebhookVerificationError, match="tolerance"):
            verify(secret, body, headers(msg_id, ts, sig), now=now)


def test_verify_refuses_missing_headers_and_bad_timestamp():
    secret, msg_id, ts, body, sig = SIGN_VECTORS[0]
    for missing in ("webhook-id", "webhook-timestamp", "webhook-signature"):
        h = headers(msg_id, ts, sig)
        del h[missing]
        with pytest.raises(WebhookVerificationError, match=missing):
            verify(secret, body, h, now=ts)
    with pytest.raises(WebhookVerificationError, match="timestamp"):
        verify(secret, body, headers(msg_id, "1614265330.5", sig), now=ts)


def test_rotation_header_verifies_with_either_secret():
    old, new = new_secret(), new_secret()
    header = signature_header([new, old], "msg_1", 1700000000, b"{}")
    assert len(header.split()) == 2
    for secret in (old, new):
        assert verify(secret, b"{}", headers("msg_1", 1700000000, header), now=1700000000) == {}
    with pytest.raises(WebhookVerificationError):
        verify(new_secret(), b"{}", headers("msg_1", 1700000000, header), now=1700000000)


def test_new_secret_shape():
    secret = new_secret()
    assert secret.startswith("whsec_")
    assert len(secret_key(secret)) >= 24
    assert check_secret(secret) is None
    assert new_secret() != secret


@pytest.mark.parametrize("bad", ["MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", "whsec_not base64!", "whsec_c2hvcnQ=", 42, None])
def test_check_secret_refuses(bad):
    assert check_secret(bad) is not None


# Ed25519 (v1a): the sign vector of the Standard Webhooks reference libraries'
# asymmetric test suite (a 32-byte seed, base64), and what verify() refuses.
V1A_SEED = "VEVTVFNJR05JTkdLRVlET05PVFVTRVRISVNGT1JBTlk="
V1A_SIGNATURE = "v1a,tQ9V2XOqn7jL/DQenEFpqIugdBVtiMmER5mhSkXBNwM0mkATuDe6KYYUuxqtaiHeYGb7KaaBRdM5WqyeFiL8Ag=="
V1A_ARGS = ("msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, '{"test": 2432232314}')


def test_v1a_sign_matches_the_reference_vector():
    from tierd.plugins.webhooks.signing import public_key, signing_of, verification_key

    key = "whsk_" + V1A_SEED
    assert sign(key, *V1A_ARGS) == V1A_SIGNATURE
    assert signing_of(key) == "ed25519" and verification_key(key) == public_key(key)
    assert public_key(key).startswith("whpk_")


def test_v1a_verifies_with_the_public_key_only_and_refuses_the_rest():
    from tierd.plugins.webhooks.signing import public_key

    key = "whsk_" + V1A_SEED
    msg_id, ts, body = V1A_ARGS
    pub = public_key(key)
    assert verify(pub, body, headers(msg_id, ts, V1A_SIGNATURE), now=ts) == {"test": 2432232314}
    assert verify(key, body, headers(msg_id, ts, V1A_SIGNATURE), now=ts)  # the signer can check too
    other = public_key(new_secret("ed25519"))
    for pub_key, sig, content in [
        (other, V1A_SIGNATURE, body),  # another endpoint's key
        (pub, V1A_SIGNATURE, '{"test": 2432232315}'),  # tampered body
        (pub, "v1a,", body),
        (pub, "v1a,not*base64", body),  # empty, garbage
        (pub, "v1a," + V1A_SIGNATURE[4:40], body),  # cut short
        (pub, V1A_SIGNATURE.replace("v1a,", "v1,"), body),  # a v1a value is no v1 signature
        ("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", V1A_SIGNATURE, body),  # an HMAC secret checks v1 only
    ]:
        with pytest.raises(WebhookVerificationError):
            verify(pub_key, content, headers(msg_id, ts, sig), now=ts)
    # A rotation from HMAC to Ed25519 sends both: a receiver holding either key accepts.
    hmac_secret = SIGN_VECTORS[0][0]
    both = signature_header([key, hmac_secret], msg_id, ts, body)
    assert both == V1A_SIGNATURE + " " + SIGN_VECTORS[0][4]
    assert verify(pub, body, headers(msg_id, ts, both), now=ts)
    assert verify(hmac_secret, body, headers(msg_id, ts, both), now=ts)


@pytest.mark.parametrize("bad", ["whsk_", "whsk_c2hvcnQ=", "whsk_not base64!"])
def test_check_secret_refuses_bad_signing_keys(bad):
    assert check_secret(bad) is not None
