"""Deliveries to real aiohttp receivers on loopback that verify signatures themselves."""

import asyncio
import itertools
import json
import time

from aiohttp import web
from webhook_helpers import hook_receiver, local  # noqa: F401 (fixtures)

from tierd import __version__
from tierd.plugins.webhooks import verify
from tierd.testing import eventually


async def setup(local, hook_receiver, **endpoint_fields):
    d = await local()
    await d.tenant("acme")
    r = await hook_receiver()
    ep = await d.endpoint("acme", r.url + "/hook", **endpoint_fields)
    r.secrets = [ep["secret"]]
    return d, r, ep


async def test_success_signed_with_standard_headers(local, hook_receiver):
    d, r, ep = await setup(local, hook_receiver, headers={"X-Team": "billing"})
    assert ep["secret"].startswith("whsec_")
    event = await d.publish("acme", "invoice.paid", {"amount": "12.50"})
    await r.wait_for(1)
    req = r.requests[0]
    assert r.verified == [True]
    h = {k.lower(): v for k, v in req["headers"].items()}
    assert h["content-type"] == "application/json"
    assert h["user-agent"] == f"tierd/{__version__}"
    assert h["x-team"] == "billing"
    assert h["webhook-id"].startswith("msg_")
    assert abs(int(h["webhook-timestamp"]) - time.time()) < 5
    body = json.loads(req["body"])
    assert body == {"type": "invoice.paid", "timestamp": event["created_at"], "data": {"amount": "12.50"}}
    rows = await d.wait_delivery("acme", ep["id"], "succeeded")
    assert rows[0]["id"] == h["webhook-id"] and rows[0]["attempts"] == 1
    status, detail = await d.call("GET", f"/v1/deliveries/{rows[0]['id']}", tenant="acme")
    assert status == 200
    [attempt] = detail["attempts_detail"]
    assert attempt["status_code"] == 200 and attempt["outcome"] == "success"
    assert attempt["response_body"] == "ok" and attempt["latency_ms"] >= 0


async def test_500_then_200_same_id_new_timestamp_and_signature(local, hook_receiver):
    d, r, ep = await setup(local, hook_receiver)
    answers = [web.Response(status=500, text="boom"), web.Response(text="fine")]

    async def responder(request, body):
        return answers.pop(0)

    r.responder = responder
    await d.publish("acme", "invoice.paid", {"n": 1})
    await r.wait_for(2, timeout=10)
    first, second = (({k.lower(): v for k, v in q["headers"].items()}) for q in r.requests)
    assert first["webhook-id"] == second["webhook-id"]
    assert int(second["webhook-timestamp"]) >= int(first["webhook-timestamp"])
    assert r.requests[1]["time"] - r.requests[0]["time"] >= 0.85  # the 1 s step (jitter 10%)
    assert r.verified == [True, True]
    [row] = await d.wait_delivery("acme", ep["id"], "succeeded")
    status, detail = await d.call("GET", f"/v1/deliveries/{row['id']}", tenant="acme")
    assert [a["status_code"] for a in detail["attempts_detail"]] == [500, 200]
    assert detail["attempts_detail"][0]["response_body"] == "boom"
    assert detail["attempts_detail"][0]["error"] == "HTTP 500"


async def test_schedule_spent_means_failed_and_body_is_cut_at_4k(local, hook_receiver):
    d, r, ep = await setup(local, hook_receiver)

    async def responder(request, body):
        return web.Response(status=503, text="x" * 10000)

    r.responder = responder
    await d.publish("acme", "invoice.paid")
    [row] = await d.wait_delivery("acme", ep["id"], "failed", timeout=10)
    assert len(r.requests) == 3 and row["attempts"] == 3
    # Operators hear of it on the bus (notifications routes it to people) ...
    failed = await eventually(
        lambda: d.daemon.bus.list("acme", 0, 100, "webhook.delivery.failed"), what="webhook.delivery.failed"
    )
    assert [(e.data["delivery_id"], e.data["attempts"], e.data["status_code"]) for e in failed] == [(row["id"], 3, 503)]
    # ... but it is never sent as a webhook, not even to an endpoint subscribed to everything:
    # once the consumers have passed that event, the endpoint still has its one delivery.
    await d.settled()
    assert [x["id"] for x in await d.deliveries("acme", ep["id"])] == [row["id"]]
    assert len(r.requests) == 3
    status, detail = await d.call("GET", f"/v1/deliveries/{row['id']}", tenant="acme")
    assert all(len(a["response_body"]) == 4096 for a in detail["attempts_detail"])
    # A manual retry sends a failed delivery again.
    r.responder = None
    status, _ = await d.call("POST", f"/v1/deliveries/{row['id']}/retry", tenant="acme")
    assert status == 202
    await d.wait_delivery("acme", ep["id"], "succeeded")
    assert len(r.requests) == 4


async def test_timeout_then_success(local, hook_receiver):
    d, r, ep = await setup(local, hook_receiver)
    calls = []

    async def responder(request, body):
        calls.append(1)
        if len(calls) == 1:
            await asyncio.sleep(5)  # beyond the 2 s timeout of the test config
        return web.Response(text="ok")

    r.responder = responder
    await d.publish("acme", "invoice.paid")
    [row] = await d.wait_delivery("acme", ep["id"], "succeeded", timeout=15)
    status, detail = await d.call("GET", f"/v1/deliveries/{row['id']}", tenant="acme")
    first = detail["attempts_detail"][0]
    assert first["outcome"] == "timeout" and first["status_code"] is None
    assert 1900 <= first["latency_ms"] < 4000


async def test_connection_refused_is_retried_then_failed(local):
    from conftest import free_port

    d = await local()
    await d.tenant("acme")
    ep = await d.endpoint("acme", f"http://127.0.0.1:{free_port()}/nobody")
    await d.publish("acme", "invoice.paid")
    [row] = await d.wait_delivery("acme", ep["id"], "failed", timeout=10)
    status, detail = await d.call("GET", f"/v1/deliveries/{row['id']}", tenant="acme")
    assert [a["outcome"] for a in detail["attempts_detail"]] == ["connect_error"] * 3
    assert "connect" in detail["attempts_detail"][0]["error"].lower()


async def test_410_disables_endpoint_and_publishes_event(local, hook_receiver):
    d, r, ep = await setup(local, hook_receiver)

    async def responder(request, body):
        return web.Response(status=410)

    r.responder = responder
    await d.publish("acme", "invoice.paid")
    [row] = await d.wait_delivery("acme", ep["id"], "failed", timeout=10)
    assert len(r.requests) == 1 and row["attempts"] == 1
    status, body = await d.call("GET", f"/v1/webhooks/{ep['id']}", tenant="acme")
    assert body["enabled"] is False and "410" in body["disabled_reason"]
    events = await d.daemon.bus.list("acme", 0, 100, "webhook.endpoint.disabled")
    assert [e.data["endpoint_id"] for e in events] == [ep["id"]]


async def test_429_retry_after_is_honoured_within_bounds(local, hook_receiver):
    d, r, ep = await setup(local, hook_receiver)
    answers = [web.Response(status=429, headers={"Retry-After": "60"}), web.Response(text="ok")]

    async def responder(request, body):
        return answers.pop(0)

    r.responder = responder
    await d.publish("acme", "invoice.paid")
    await r.wait_for(2, timeout=10)
    gap = r.requests[1]["time"] - r.requests[0]["time"]
    # Scheduled 1 s; Retry-After 60 is clamped to twice the scheduled delay.
    assert 1.8 <= gap <= 3.0, gap


async def test_wildcard_and_exact_filters(local, hook_receiver):
    d = await local()
    await d.tenant("acme")
    r_inv, r_exact, r_all = await hook_receiver(), await hook_receiver(), await hook_receiver()
    inv = await d.endpoint("acme", r_inv.url, event_types=["invoice.*"])
    exact = await d.endpoint("acme", r_exact.url, event_types=["customer.created"])
    await d.endpoint("acme", r_all.url, event_types=[])
    for t in ("invoice.paid", "invoice.line.added", "customer.created", "customer.deleted", "invoices.x"):
        await d.publish("acme", t)
    await r_all.wait_for(5)
    await r_inv.wait_for(2)
    await r_exact.wait_for(1)
    await d.settled()  # every event is fanned out: the filtered endpoints have all they will get
    assert sorted(x["event_type"] for x in await d.deliveries("acme", inv["id"])) == [
        "invoice.line.added",
        "invoice.paid",
    ]
    assert [x["event_type"] for x in await d.deliveries("acme", exact["id"])] == ["customer.created"]
    assert sorted(b["type"] for b in r_inv.json_bodies()) == ["invoice.line.added", "invoice.paid"]
    assert [b["type"] for b in r_exact.json_bodies()] == ["customer.created"]
    assert len(r_all.requests) == 5


async def test_secret_rotation_sends_both_signatures_during_grace(local, hook_receiver):
    d, r, ep = await setup(local, hook_receiver)
    old = ep["secret"]
    status, rotated = await d.call("POST", f"/v1/webhooks/{ep['id']}/rotate-secret", tenant="acme")
    assert status == 200 and rotated["secret"] != old and rotated["secret"].startswith("whsec_")
    status, current = await d.call("GET", f"/v1/webhooks/{ep['id']}/secret", tenant="acme")
    assert current["secret"] == rotated["secret"] and current["previous_secret_valid_until"]
    await d.publish("acme", "invoice.paid")
    await r.wait_for(1)
    req = r.requests[0]
    assert len(req["headers"]["webhook-signature"].split()) == 2
    verify(old, req["body"], req["headers"])  # a receiver still on the old secret
    verify(rotated["secret"], req["body"], req["headers"])  # and one already on the new
    # After the grace period only the new secret signs.
    d.clock.advance(24 * 3600 + 1)
    await d.publish("acme", "invoice.paid")
    await r.wait_for(2)
    assert len(r.requests[1]["headers"]["webhook-signature"].split()) == 1


async def test_ed25519_endpoints_sign_v1a_and_never_show_their_signing_key(local, hook_receiver):
    d = await local()
    await d.tenant("acme")
    r = await hook_receiver()
    ep = await d.endpoint("acme", r.url + "/hook", signing="ed25519")
    assert ep["signing"] == "ed25519" and ep["public_key"].startswith("whpk_") and "secret" not in ep
    r.secrets = [ep["public_key"]]
    await d.publish("acme", "invoice.paid")
    await r.wait_for(1)
    assert r.verified == [True]
    assert r.requests[0]["headers"]["webhook-signature"].startswith("v1a,")
    # Move to a new key pair: during the grace both keys sign, then the new one only.
    status, rotated = await d.call("POST", f"/v1/webhooks/{ep['id']}/rotate-secret", {}, tenant="acme")
    assert status == 200 and rotated["signing"] == "ed25519" and rotated["public_key"] != ep["public_key"]
    await d.publish("acme", "invoice.paid")
    await r.wait_for(2)
    verify(ep["public_key"], r.requests[1]["body"], r.requests[1]["headers"])
    verify(rotated["public_key"], r.requests[1]["body"], r.requests[1]["headers"])
    # The signing key is in no answer, no event and no log line.
    answers = [ep, rotated]
    for path in (f"/v1/webhooks/{ep['id']}", f"/v1/webhooks/{ep['id']}/secret", "/v1/webhooks", "/v1/events"):
        status, answer = await d.call("GET", path, tenant="acme")
        assert status == 200
        answers.append(answer)
    assert "whsk_" not in json.dumps(answers)
    assert answers[3]["public_key"] == rotated["public_key"] and answers[3]["previous_secret_valid_until"]


async def test_an_hmac_endpoint_moves_to_ed25519_with_both_signatures_meanwhile(local, hook_receiver):
    d, r, ep = await setup(local, hook_receiver)
    status, rotated = await d.call(
        "POST", f"/v1/webhooks/{ep['id']}/rotate-secret", {"signing": "ed25519"}, tenant="acme"
    )
    assert status == 200 and rotated["signing"] == "ed25519" and "secret" not in rotated
    await d.publish("acme", "invoice.paid")
    await r.wait_for(1)
    schemes = [s.partition(",")[0] for s in r.requests[0]["headers"]["webhook-signature"].split()]
    assert schemes == ["v1a", "v1"]
    verify(ep["secret"], r.requests[0]["body"], r.requests[0]["headers"])  # receivers not moved yet
    verify(rotated["public_key"], r.requests[0]["body"], r.requests[0]["headers"])  # and those that did
    status, endpoint = await d.call("GET", f"/v1/webhooks/{ep['id']}", tenant="acme")
    assert endpoint["signing"] == "ed25519"
    for path, body in [
        ("/v1/webhooks", {"url": r.url, "signing": "rsa"}),
        ("/v1/webhooks", {"url": r.url, "signing": "ed25519", "secret": ep["secret"]}),
        (f"/v1/webhooks/{ep['id']}/rotate-secret", {"signing": "md5"}),
    ]:
        status, answer = await d.call("POST", path, body, tenant="acme")
        assert status == 422 and answer["error"]["code"] == "invalid_body", (body, answer)
    status, answer = await d.call("PUT", f"/v1/webhooks/{ep['id']}", {"signing": "hmac-sha256"}, tenant="acme")
    assert status == 422 and "rotate-secret" in answer["error"]["message"]


async def test_caller_supplied_secret_and_validation_errors(local):
    d = await local()
    await d.tenant("acme")
    secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSwMfKQ9r8G"
    ep = await d.endpoint("acme", "http://127.0.0.1:9/x", secret=secret)
    assert ep["secret"] == secret
    bad = [
        {"url": "ftp://example.com"},
        {"url": "https://example.com", "secret": "whsec_c2hvcnQ="},
        {"url": "https://example.com", "event_types": ["Invoice Paid"]},
        {"url": "https://example.com", "headers": {"webhook-signature": "v1,forged"}},
        {"url": "https://example.com", "rate_limit": -1},
        {"url": "https://example.com", "colour": "blue"},
        {"url": "https://10.0.0.5/hook"},
    ]
    for body in bad:
        status, answer = await d.call("POST", "/v1/webhooks", body, tenant="acme")
        assert status == 422 and answer["error"]["code"] == "invalid_body", (body, answer)
    status, answer = await d.call("GET", "/v1/webhooks", tenant="acme")
    assert len(answer["data"]) == 1


async def test_http_needs_allow_http(local):
    d = await local(webhooks={"allow_http": False})
    await d.tenant("acme")
    status, answer = await d.call("POST", "/v1/webhooks", {"url": "http://example.com/h"}, tenant="acme")
    assert status == 422 and "allow_http" in answer["error"]["message"]
    status, answer = await d.call("POST", "/v1/webhooks", {"url": "https://example.com/h"}, tenant="acme")
    assert status == 201


async def test_redirects_are_not_followed(local, hook_receiver):
    d, r, ep = await setup(local, hook_receiver)
    target = await hook_receiver()

    async def redirect(request, body):
        return web.Response(status=307, headers={"Location": target.url + "/elsewhere"})

    r.responder = redirect
    await d.publish("acme", "invoice.paid")
    [row] = await d.wait_delivery("acme", ep["id"], "failed", timeout=10)
    assert row["last_status_code"] == 307 and "redirects are not followed" in row["last_error"]
    assert target.requests == []


async def test_per_endpoint_rate_limit(local, hook_receiver):
    d, r, ep = await setup(local, hook_receiver, rate_limit=5)
    for i in range(15):
        await d.publish("acme", "invoice.paid", {"i": i})
    await r.wait_for(15, timeout=10)
    times = sorted(q["time"] for q in r.requests)
    # A burst of 5, then 5 per second: the last of 15 comes about 2 s after the first.
    assert times[-1] - times[0] >= 1.6, times[-1] - times[0]


async def test_rate_limit_changed_or_lifted_takes_effect(local, hook_receiver):
    d, r, ep = await setup(local, hook_receiver, rate_limit=1)
    for i in range(3):
        await d.publish("acme", "invoice.paid", {"i": i})
    await r.wait_for(3, timeout=10)
    times = [q["time"] for q in r.requests]
    # One per second: each waits about a second for the last (a slow machine only widens the gaps).
    assert min(b - a for a, b in itertools.pairwise(times)) >= 0.8, times
    status, _ = await d.call("PUT", f"/v1/webhooks/{ep['id']}", {"rate_limit": None}, tenant="acme")
    assert status == 200
    for i in range(3, 13):
        await d.publish("acme", "invoice.paid", {"i": i})
    await r.wait_for(13, timeout=3)  # no limit any more: the 12 left go at once


async def test_tls_certificates_are_verified(local, tmp_path):
    import ssl

    import trustme
    from conftest import free_port

    ca = trustme.CA()
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(context)
    hits = []

    async def handle(request):
        hits.append(request)
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_post("/hook", handle)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port, ssl_context=context).start()
    try:
        d = await local()
        await d.tenant("acme")
        ep = await d.endpoint("acme", f"https://127.0.0.1:{port}/hook")
        await d.publish("acme", "invoice.paid")
        [row] = await d.wait_delivery("acme", ep["id"], "failed", timeout=10)
        assert "certificate" in row["last_error"].lower(), row["last_error"]
        assert hits == []  # the receiver with a certificate of an unknown CA never got the event
        # Trusting that CA (webhooks.ca_file, an internal CA) lets it through, certificate still verified.
        ca_file = tmp_path / "internal-ca.pem"
        ca.cert_pem.write_to_path(str(ca_file))
        d2 = await local(webhooks={"ca_file": str(ca_file)})
        await d2.tenant("acme")
        ep = await d2.endpoint("acme", f"https://127.0.0.1:{port}/hook", event_types=["invoice.*"])
        await d2.publish("acme", "invoice.paid")
        await d2.wait_delivery("acme", ep["id"], "succeeded", timeout=10)
        assert len(hits) == 1
        # The name must still match: a certificate for 127.0.0.1 does not do for localhost.
        ep = await d2.endpoint("acme", f"https://localhost:{port}/hook", event_types=["order.*"])
        await d2.publish("acme", "order.created")
        [row] = await d2.wait_delivery("acme", ep["id"], "failed", timeout=10)
        assert "certificate" in row["last_error"].lower() and len(hits) == 1, row["last_error"]
    finally:
        await runner.cleanup()
