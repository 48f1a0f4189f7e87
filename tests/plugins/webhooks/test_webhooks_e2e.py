"""The daemon as a subprocess: kill -9 while deliveries are in flight loses
nothing acknowledged and never resends a delivery recorded as succeeded; and
the ``tierd webhooks`` CLI."""

import asyncio
import json

from aiohttp import web
from webhook_helpers import TEST_WEBHOOKS, fail_500, raw_sql

CONFIG = {"webhooks": TEST_WEBHOOKS | {"endpoint_max_in_flight": 5, "max_in_flight": 50}}


async def test_kill9_loses_no_acknowledged_event(tierd_daemon, receiver):
    r = await receiver()

    async def slow(request, body):
        await asyncio.sleep(0.05)  # keep deliveries in flight when the kill comes
        return web.Response(text="ok")

    r.responder = slow
    d = tierd_daemon(CONFIG)
    d.create_tenant("acme")
    status, ep = await d.arequest("POST", "/v1/webhooks", {"url": r.url + "/hook"}, tenant="acme")
    assert status == 201, ep

    acked = set()

    async def publish(i):
        status, event = await d.arequest(
            "POST", "/v1/events", {"type": "order.created", "data": {"i": i}}, tenant="acme"
        )
        if status == 202:
            acked.add(i)

    await asyncio.gather(*(publish(i) for i in range(400)))
    assert len(acked) == 400
    await r.wait_for(60, timeout=20)
    d.kill9()
    # What the database says succeeded at the moment of the kill must never be sent again.
    succeeded = {
        row[0] for row in await raw_sql(d.config, "SELECT id FROM webhook_deliveries WHERE status='succeeded'")
    }
    [(in_flight,)] = await raw_sql(d.config, "SELECT COUNT(*) FROM webhook_deliveries WHERE status='inflight'")
    assert succeeded and in_flight > 0, (len(succeeded), in_flight)
    before_restart = len(r.requests)

    d.start()
    deadline = asyncio.get_running_loop().time() + 40
    while True:
        ids = {req["headers"]["webhook-id"] for req in r.requests}
        got = {json.loads(req["body"])["data"]["i"] for req in r.requests}
        if got >= acked or asyncio.get_running_loop().time() > deadline:
            break
        await asyncio.sleep(0.1)
    assert got >= acked, f"missing events: {sorted(acked - got)[:20]}"
    assert len(ids) == 400  # one delivery (one webhook-id) per acknowledged event
    resent = [
        req["headers"]["webhook-id"] for req in r.requests[before_restart:] if req["headers"]["webhook-id"] in succeeded
    ]
    assert resent == []
    for _ in range(100):  # the last results are recorded a moment after the receiver answered
        status, page = await d.arequest(
            "GET", f"/v1/webhooks/{ep['id']}/deliveries?status=succeeded&limit=500", tenant="acme"
        )
        if len(page["data"]) == 400:
            break
        await asyncio.sleep(0.1)
    assert len(page["data"]) == 400


async def test_cli(tierd_daemon, receiver):
    r = await receiver()
    d = tierd_daemon(CONFIG)
    d.create_tenant("acme")

    async def cli(*args):
        # The CLI is a blocking subprocess; run it off the loop so the receiver answers.
        return await asyncio.to_thread(d.cli, "webhooks", *args)

    out = await cli(
        "add", "--tenant", "acme", r.url + "/hook", "--event-type", "invoice.*", "--header", "X-Env: test", "--json"
    )
    assert out.returncode == 0, out.stderr
    ep = json.loads(out.stdout)
    assert ep["secret"].startswith("whsec_") and ep["event_types"] == ["invoice.*"]
    out = await cli("list", "--tenant", "acme")
    assert ep["id"] in out.stdout and "invoice.*" in out.stdout and "hmac-sha256" in out.stdout
    assert "FAILING_SINCE" in out.stdout.splitlines()[0]

    out = await cli("test", "--tenant", "acme", ep["id"])
    assert out.returncode == 0 and "success" in out.stdout, out.stdout + out.stderr
    assert r.requests[-1]["headers"]["X-Env"] == "test"
    r.responder = fail_500
    out = await cli("test", "--tenant", "acme", ep["id"])
    assert out.returncode == 1 and "500" in out.stdout
    await d.arequest("POST", "/v1/events", {"type": "invoice.paid", "data": {}}, tenant="acme")
    for _ in range(100):
        out = await cli("deliveries", "--tenant", "acme", ep["id"], "--status", "failed", "--json")
        failed = json.loads(out.stdout)
        if len(failed) == 2:
            break
        await asyncio.sleep(0.1)
    assert len(failed) == 2, failed
    r.responder = None
    paid = next(x for x in failed if x["event_type"] == "invoice.paid")
    out = await cli("event", "--tenant", "acme", paid["event_id"], "--json")
    assert [x["id"] for x in json.loads(out.stdout)] == [paid["id"]], out.stdout + out.stderr
    out = await cli("event", "--tenant", "acme", paid["event_id"])
    assert paid["id"] in out.stdout and "failed" in out.stdout
    out = await cli("retry", "--tenant", "acme", paid["id"])
    assert out.returncode == 0, out.stderr
    out = await cli("recover", "--tenant", "acme", ep["id"], "--since", "2020-01-01T00:00:00Z")
    # The failed test send; the delivery retried just before is pending, not failed.
    assert out.returncode == 0 and out.stdout.startswith("1 delivery queued"), out.stdout + out.stderr
    for _ in range(100):
        out = await cli("deliveries", "--tenant", "acme", ep["id"], "--status", "succeeded", "--json")
        if len(json.loads(out.stdout)) == 3:
            break
        await asyncio.sleep(0.1)
    assert len(json.loads(out.stdout)) == 3
    # One delivery with its attempts: the 500 and the success after the retry.
    out = await cli("show", "--tenant", "acme", paid["id"])
    assert out.returncode == 0, out.stderr
    assert "succeeded" in out.stdout and "http_error" in out.stdout and "success" in out.stdout
    out = await cli("stats", "--tenant", "acme", ep["id"], "--json")
    stats = json.loads(out.stdout)
    assert stats["deliveries"]["succeeded"] == 3 and stats["attempts"]["by_outcome"]["http_error"] >= 2
    out = await cli("stats", "--tenant", "acme", ep["id"])
    assert "3 succeeded" in out.stdout and "failing since" in out.stdout

    # Disable, then enable again (as after tierd disabled a failing endpoint).
    out = await cli("update", "--tenant", "acme", ep["id"], "--disable", "--json")
    assert json.loads(out.stdout)["enabled"] is False
    await d.arequest("POST", "/v1/events", {"type": "order.created", "data": {"while": "disabled"}}, tenant="acme")
    out = await cli(
        "update", "--tenant", "acme", ep["id"], "--enable", "--event-type", "order.*", "--rate-limit", "5", "--json"
    )
    updated = json.loads(out.stdout)
    assert updated["enabled"] is True and updated["event_types"] == ["order.*"] and updated["rate_limit"] == 5
    # The order made while it was disabled made no delivery; replay sends it.
    out = await cli("replay", "--tenant", "acme", ep["id"], "--since", "2020-01-01T00:00:00Z")
    assert out.returncode == 0 and out.stdout.startswith("1 delivery queued"), out.stdout + out.stderr
    for _ in range(100):
        if any(json.loads(req["body"])["data"] == {"while": "disabled"} for req in r.requests):
            break
        await asyncio.sleep(0.1)
    else:
        raise AssertionError("the replayed order never arrived")
    out = await cli("update", "--tenant", "acme", ep["id"])
    assert out.returncode != 0 and "nothing to change" in out.stderr
    out = await cli("update", "--tenant", "acme", ep["id"], "--url", "ftp://example.com/")
    assert out.returncode != 0 and "invalid_body" in out.stderr and "url: must start with https://" in out.stderr

    # Secret rotation: the new one signs, the old one still does during the grace period.
    out = await cli("rotate-secret", "--tenant", "acme", ep["id"], "--json")
    rotated = json.loads(out.stdout)
    assert rotated["secret"].startswith("whsec_") and rotated["secret"] != ep["secret"]
    out = await cli("secret", "--tenant", "acme", ep["id"], "--json")
    shown = json.loads(out.stdout)
    assert shown["secret"] == rotated["secret"] and shown["previous_secret_valid_until"]
    out = await cli("add", "--tenant", "acme", r.url + "/signed", "--signing", "ed25519", "--event-type", "x.*")
    assert out.returncode == 0 and "whpk_" in out.stdout and "whsk_" not in out.stdout, out.stdout + out.stderr
    signed_id = next(line.split()[1] for line in out.stdout.splitlines() if line.startswith("id "))
    assert (await cli("rm", "--tenant", "acme", signed_id)).returncode == 0
    r.requests.clear()
    out = await cli("test", "--tenant", "acme", ep["id"])
    assert out.returncode == 0, out.stdout + out.stderr
    assert len(r.requests[-1]["headers"]["webhook-signature"].split()) == 2

    out = await cli("rm", "--tenant", "acme", ep["id"])
    assert out.returncode == 0
    out = await cli("list", "--tenant", "acme", "--json")
    assert json.loads(out.stdout) == []
    out = await cli("rm", "--tenant", "acme", ep["id"])
    assert out.returncode != 0 and "not_found" in out.stderr
    # Secrets and signatures never appear in the daemon's log.
    assert ep["secret"] not in d.logs() and rotated["secret"] not in d.logs() and "v1," not in d.logs()
    assert "whsk_" not in d.logs()  # nor the ed25519 endpoint's signing key
