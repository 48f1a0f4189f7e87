"""API behaviour: tenant walls, history filters and pages, recovery, test
sends, SSRF refusals with the default config, disabling, retention, metrics."""

import asyncio
import json

from aiohttp import web
from webhook_helpers import fail_500, hook_receiver, local  # noqa: F401 (fixtures)

from tierd.core.clock import iso, parse_iso
from tierd.testing import eventually


async def test_tenant_walls(local, hook_receiver):
    d = await local()
    acme_token = await d.tenant("acme")
    globex_token = await d.tenant("globex")
    r = await hook_receiver()
    ep = await d.endpoint("acme", r.url)
    await d.publish("acme", "invoice.paid")
    [delivery] = await d.wait_delivery("acme", ep["id"], "succeeded")
    # The owner sees it with its own token...
    status, _ = await d.call("GET", f"/v1/webhooks/{ep['id']}", token=acme_token)
    assert status == 200
    # ...another tenant gets 404 for every route, as if it did not exist.
    for method, path, body in [
        ("GET", f"/v1/webhooks/{ep['id']}", None),
        ("PUT", f"/v1/webhooks/{ep['id']}", {"enabled": False}),
        ("DELETE", f"/v1/webhooks/{ep['id']}", None),
        ("GET", f"/v1/webhooks/{ep['id']}/secret", None),
        ("POST", f"/v1/webhooks/{ep['id']}/rotate-secret", {}),
        ("GET", f"/v1/webhooks/{ep['id']}/deliveries", None),
        ("POST", f"/v1/webhooks/{ep['id']}/recover", {"since": "2020-01-01T00:00:00Z"}),
        ("POST", f"/v1/webhooks/{ep['id']}/replay", {"since": "2020-01-01T00:00:00Z"}),
        ("GET", f"/v1/webhooks/{ep['id']}/stats", None),
        ("POST", f"/v1/webhooks/{ep['id']}/test", {}),
        ("GET", f"/v1/deliveries/{delivery['id']}", None),
        ("POST", f"/v1/deliveries/{delivery['id']}/retry", {}),
    ]:
        status, answer = await d.call(method, path, body, token=globex_token)
        assert status == 404 and answer["error"]["code"] == "not_found", (method, path, answer)
    status, answer = await d.call("GET", "/v1/webhooks", token=globex_token)
    assert answer["data"] == []
    # globex's events never reach acme's endpoint. A later acme event is the
    # sentinel: once it is delivered, globex's (before it in the log) was handled.
    stray = await d.publish("globex", "invoice.paid")
    sentinel = await d.publish("acme", "invoice.paid")
    rows = await d.wait_delivery("acme", ep["id"], "succeeded", count=2)
    assert sorted(x["event_id"] for x in rows) == sorted([delivery["event_id"], sentinel["id"]])
    status, answer = await d.call("GET", "/v1/deliveries", token=globex_token, params={"event_id": stray["id"]})
    assert status == 200 and answer["data"] == []
    assert len(r.requests) == 2
    status, answer = await d.call("GET", f"/v1/webhooks/{ep['id']}", token=acme_token)
    assert answer["enabled"] is True


async def test_endpoint_crud_and_secret_not_in_listing(local):
    d = await local()
    await d.tenant("acme")
    ep = await d.endpoint(
        "acme",
        "https://example.com/a",
        description="A",
        event_types=["invoice.*"],
        metadata={"team": "billing"},
        rate_limit=5,
    )
    for _ in range(3):
        await d.endpoint("acme", "https://example.com/b")
    status, first = await d.call("GET", "/v1/webhooks", tenant="acme", params={"limit": 2})
    status, second = await d.call(
        "GET", "/v1/webhooks", tenant="acme", params={"limit": 2, "cursor": first["next_cursor"]}
    )
    assert len(first["data"]) == 2 and len(second["data"]) == 2 and second["next_cursor"] is None
    assert all("secret" not in e for e in first["data"] + second["data"])
    status, updated = await d.call(
        "PUT", f"/v1/webhooks/{ep['id']}", {"enabled": False, "event_types": ["invoice.paid"]}, tenant="acme"
    )
    assert status == 200 and updated["enabled"] is False and updated["event_types"] == ["invoice.paid"]
    assert updated["metadata"] == {"team": "billing"} and updated["rate_limit"] == 5
    status, _ = await d.call("DELETE", f"/v1/webhooks/{ep['id']}", tenant="acme")
    assert status == 200
    status, _ = await d.call("GET", f"/v1/webhooks/{ep['id']}", tenant="acme")
    assert status == 404


async def test_endpoint_changes_are_events_naming_who_made_them(local, hook_receiver):
    d = await local()
    token = await d.tenant("acme")
    r = await hook_receiver()
    everything = await d.endpoint("acme", r.url)  # subscribed to every type
    ep = await d.endpoint("acme", "https://example.com/a", description="billing")
    await d.call(
        "PUT",
        f"/v1/webhooks/{ep['id']}",
        {"url": "https://example.net/b", "enabled": False},
        token=token,
        headers={"Tierd-Actor": "alice@example.com"},
    )
    status, rotated = await d.call("POST", f"/v1/webhooks/{ep['id']}/rotate-secret", {}, tenant="acme")
    await d.call("DELETE", f"/v1/webhooks/{ep['id']}", tenant="acme")
    status, page = await d.call("GET", "/v1/events", tenant="acme", params={"type": "webhook.endpoint.*"})
    changes = [(e["type"], e["data"]["endpoint_id"]) for e in page["data"]]
    assert changes == [
        ("webhook.endpoint.created", everything["id"]),
        ("webhook.endpoint.created", ep["id"]),
        ("webhook.endpoint.updated", ep["id"]),
        ("webhook.endpoint.secret_rotated", ep["id"]),
        ("webhook.endpoint.deleted", ep["id"]),
    ]
    updated = page["data"][2]["data"]
    assert updated["url"] == "https://example.net/b" and updated["previous_url"] == "https://example.com/a"
    assert updated["fields"] == ["enabled", "url"] and updated["description"] == "billing"
    assert updated["actor"].startswith("acme/tok_") and updated["actor"].endswith("for alice@example.com")
    assert page["data"][0]["data"]["actor"] == "admin"
    # No secret in any of them, and none is sent as a webhook (not even to an endpoint taking everything).
    text = json.dumps(page)
    assert everything["secret"] not in text and ep["secret"] not in text and rotated["secret"] not in text
    await d.publish("acme", "invoice.paid")  # the sentinel: after every change above in the log
    await d.wait_delivery("acme", everything["id"], "succeeded")
    assert [x["event_type"] for x in await d.deliveries("acme", everything["id"])] == ["invoice.paid"]
    assert [b["type"] for b in r.json_bodies()] == ["invoice.paid"]


async def test_ssrf_refused_with_default_config(local, hook_receiver):
    d = await local(webhooks={"allow_destinations": []})
    await d.tenant("acme")
    r = await hook_receiver()
    # Literal non-public addresses are refused when the endpoint is created...
    for url in (
        "http://127.0.0.1/x",
        "http://[::1]/x",
        "http://169.254.169.254/latest/meta-data",
        "http://[::ffff:7f00:1]/x",
        "http://10.1.2.3/x",
    ):
        status, answer = await d.call("POST", "/v1/webhooks", {"url": url}, tenant="acme")
        assert status == 422 and "refused" in answer["error"]["message"], (url, answer)
    # ...and names are checked on the addresses they resolve to, at every attempt.
    ep = await d.endpoint("acme", r.url.replace("127.0.0.1", "localhost"))
    await d.publish("acme", "invoice.paid")
    [row] = await d.wait_delivery("acme", ep["id"], "failed", timeout=10)
    status, detail = await d.call("GET", f"/v1/deliveries/{row['id']}", tenant="acme")
    assert {a["outcome"] for a in detail["attempts_detail"]} == {"refused"}
    assert "loopback" in detail["attempts_detail"][0]["error"]
    assert r.requests == []


async def test_deliveries_filters_pages_and_recover(local, hook_receiver):
    d = await local()
    await d.tenant("acme")
    r = await hook_receiver()
    r.responder = fail_500
    ep = await d.endpoint("acme", r.url)
    for i in range(3):
        await d.publish("acme", "invoice.paid", {"i": i})
    await d.publish("acme", "customer.created")
    await d.wait_delivery("acme", ep["id"], "failed", count=4, timeout=10)
    assert len(await d.deliveries("acme", ep["id"], event_type="invoice.*")) == 3
    assert len(await d.deliveries("acme", ep["id"], event_type="customer.created")) == 1
    assert await d.deliveries("acme", ep["id"], status="succeeded") == []
    assert await d.deliveries("acme", ep["id"], since=iso(d.clock.time() + 60)) == []
    # cursor pages, newest first
    status, page1 = await d.call("GET", f"/v1/webhooks/{ep['id']}/deliveries", tenant="acme", params={"limit": 3})
    status, page2 = await d.call(
        "GET", f"/v1/webhooks/{ep['id']}/deliveries", tenant="acme", params={"limit": 3, "cursor": page1["next_cursor"]}
    )
    ids = [x["id"] for x in page1["data"] + page2["data"]]
    assert len(ids) == 4 == len(set(ids)) and page2["next_cursor"] is None
    assert page1["data"][0]["event_type"] == "customer.created"
    status, answer = await d.call(
        "GET", f"/v1/webhooks/{ep['id']}/deliveries", tenant="acme", params={"status": "bogus"}
    )
    assert status == 400
    # The receiver is fixed: recover everything that failed since an hour ago.
    r.responder = None
    status, answer = await d.call(
        "POST", f"/v1/webhooks/{ep['id']}/recover", {"since": iso(d.clock.time() - 3600)}, tenant="acme"
    )
    assert status == 202 and answer["requeued"] == 4
    await d.wait_delivery("acme", ep["id"], "succeeded", count=4)
    status, answer = await d.call("POST", f"/v1/webhooks/{ep['id']}/recover", {"since": "yesterday"}, tenant="acme")
    assert status == 422 and answer["error"]["details"][0]["path"] == "since"


async def test_test_send_answers_the_attempt(local, hook_receiver):
    d = await local()
    await d.tenant("acme")
    r = await hook_receiver()
    ep = await d.endpoint("acme", r.url)
    r.secrets = [ep["secret"]]
    status, result = await d.call("POST", f"/v1/webhooks/{ep['id']}/test", {}, tenant="acme")
    assert status == 200 and result["outcome"] == "success" and result["status_code"] == 200
    assert r.verified == [True] and r.json_bodies()[0]["type"] == "webhook.test"

    async def teapot(request, body):
        return web.Response(status=418, text="short and stout")

    r.responder = teapot
    status, result = await d.call("POST", f"/v1/webhooks/{ep['id']}/test", {"data": {"x": 1}}, tenant="acme")
    assert result["outcome"] == "http_error" and result["status_code"] == 418
    assert result["response_body"] == "short and stout"
    assert r.json_bodies()[1]["data"] == {"x": 1}


async def test_endpoint_failing_for_disable_after_is_disabled(local, hook_receiver):
    d = await local(webhooks={"disable_after": "5d"})
    await d.tenant("acme")
    r = await hook_receiver()
    r.responder = fail_500
    ep = await d.endpoint("acme", r.url)
    await d.publish("acme", "invoice.paid")
    await d.wait_delivery("acme", ep["id"], "failed", timeout=10)
    disabler = d.webhooks.disabler
    assert await disabler.disable_failing() == 0  # failing, but not for 5 days yet
    d.clock.advance(5 * 86400 + 10)
    assert await disabler.disable_failing() == 1
    status, body = await d.call("GET", f"/v1/webhooks/{ep['id']}", tenant="acme")
    assert body["enabled"] is False and "failed" in body["disabled_reason"]
    [event] = await d.daemon.bus.list("acme", 0, 10, "webhook.endpoint.disabled")
    assert event.data["endpoint_id"] == ep["id"]
    # Re-enabling starts a new window; one success clears it.
    r.responder = None
    await d.call("PUT", f"/v1/webhooks/{ep['id']}", {"enabled": True}, tenant="acme")
    await d.publish("acme", "invoice.paid")
    await d.wait_delivery("acme", ep["id"], "succeeded")

    async def window_closed():
        status, body = await d.call("GET", f"/v1/webhooks/{ep['id']}", tenant="acme")
        return body["failing_since"] is None

    await eventually(window_closed, what="the success to end the failure window")
    d.clock.advance(10 * 86400)
    assert await disabler.disable_failing() == 0


async def test_retention_prunes_old_attempts_and_finished_deliveries(local, hook_receiver):
    d = await local(webhooks={"retention": "30d"})
    await d.tenant("acme")
    r = await hook_receiver()
    ep = await d.endpoint("acme", r.url)
    await d.publish("acme", "invoice.paid")
    await d.wait_delivery("acme", ep["id"], "succeeded")
    # A pending delivery whose endpoint is gone (deleted while its event was fanned out).
    await d.daemon.db.execute(
        "INSERT INTO webhook_deliveries(id, tenant_id, endpoint_id, event_id, event_type, payload, status, due_at,"
        " created_at) VALUES ('msg_orphan', 'acme', 'ep_gone', 'evt_x', 'invoice.paid', '{}', 'pending', ?, ?)",
        (d.clock.time(), d.clock.time()),
    )
    assert await d.webhooks.retention.prune() == 0
    d.clock.advance(31 * 86400)
    assert await d.webhooks.retention.prune() == 3  # one attempt, one delivery, the orphan
    assert await d.deliveries("acme", ep["id"]) == []
    rows = await d.daemon.db.fetchall("SELECT id FROM webhook_deliveries")
    assert rows == []


async def test_metrics(local, hook_receiver):
    d = await local()
    await d.tenant("acme")
    r = await hook_receiver()
    ep = await d.endpoint("acme", r.url)
    await d.endpoint("acme", r.url, enabled=False)  # so the disabled gauge shows update_metrics() ran
    await d.publish("acme", "invoice.paid")
    await d.wait_delivery("acme", ep["id"], "succeeded")
    await d.webhooks.update_metrics()
    async with d.session.get(d.url + "/metrics") as resp:
        text = await resp.text()
    for name in (
        'tierd_webhook_attempts_total{outcome="success"} 1.0',
        "tierd_webhook_attempt_duration_seconds_count 1.0",
        "tierd_webhook_first_attempt_delay_seconds_count 1.0",
        "tierd_webhook_deliveries_due 0.0",
        "tierd_webhook_oldest_due_age_seconds 0.0",
        "tierd_webhook_endpoints_disabled 1.0",
    ):
        assert name in text, name


async def test_due_gauges_show_deliveries_waiting_for_a_slot(local, hook_receiver):
    d = await local(webhooks={"max_in_flight": 1, "endpoint_max_in_flight": 1})
    await d.tenant("acme")
    r = await hook_receiver()
    release = asyncio.Event()

    async def hold(request, body):
        await release.wait()
        return web.Response()

    r.responder = hold
    ep = await d.endpoint("acme", r.url)
    for i in range(3):
        await d.publish("acme", "invoice.paid", {"i": i})
    await r.wait_for(1)
    await asyncio.sleep(0.2)  # the other two wait, due, for the one slot
    await d.webhooks.update_metrics()
    async with d.session.get(d.url + "/metrics") as resp:
        gauges = dict(
            line.rsplit(" ", 1)
            for line in (await resp.text()).splitlines()
            if line.startswith(("tierd_webhook_deliveries_due ", "tierd_webhook_oldest_due_age_seconds "))
        )
    assert float(gauges["tierd_webhook_deliveries_due"]) == 2
    assert float(gauges["tierd_webhook_oldest_due_age_seconds"]) >= 0.2
    release.set()
    await d.wait_delivery("acme", ep["id"], "succeeded", count=3)


async def test_consumer_is_idempotent(local):
    d = await local()
    await d.tenant("acme")
    ep = await d.endpoint("acme", "http://127.0.0.1:9/x")
    from tierd.core.events import Event

    events = [Event(0, f"evt_same{i}", "acme", "invoice.paid", {}, "2026-11-28T12:00:00.000000Z") for i in range(3)]
    await d.webhooks.consume(events)
    await d.webhooks.consume(events)  # the bus re-delivers a batch after a crash
    assert len(await d.deliveries("acme", ep["id"])) == 3


async def test_pending_retries_survive_a_restart(tmp_path, hook_receiver):
    from webhook_helpers import LocalDaemon

    r = await hook_receiver()
    answers = [web.Response(status=503)]

    async def responder(request, body):
        return answers.pop(0) if answers else web.Response(text="ok")

    r.responder = responder
    d = await LocalDaemon(tmp_path, webhooks={"retry_schedule": ["0s", "2s"]}).start()
    try:
        await d.tenant("acme")
        ep = await d.endpoint("acme", r.url)
        await d.publish("acme", "invoice.paid")
        await r.wait_for(1)
        [row] = await d.wait_delivery("acme", ep["id"], "pending")
        assert row["attempts"] == 1 and row["next_attempt_at"]
    finally:
        await d.stop()
    d = await LocalDaemon(tmp_path, webhooks={"retry_schedule": ["0s", "2s"]}).start()
    try:
        await r.wait_for(2, timeout=10)
        await d.wait_delivery("acme", ep["id"], "succeeded")
        assert r.requests[0]["headers"]["webhook-id"] == r.requests[1]["headers"]["webhook-id"]
    finally:
        await d.stop()


async def test_a_delivery_claimed_while_stopping_waits_for_the_next_start(tmp_path, hook_receiver, caplog):
    from webhook_helpers import LocalDaemon

    from tierd.plugins.webhooks.records import Claimed

    r = await hook_receiver()
    d = await LocalDaemon(tmp_path).start()
    try:
        await d.tenant("acme")
        ep = await d.endpoint("acme", r.url)
        dispatcher = d.webhooks.dispatcher
        await dispatcher.stop(grace=1)
        # A claim that was under way when the stop came: its row is in flight.
        seq = await d.webhooks.store.create_test_delivery("acme", ep["id"], '{"type":"late"}', d.clock.time())
        row = await d.webhooks.store.claimed_row(seq)
        dispatcher.slots.take(ep["id"])
        dispatcher.launch(
            Claimed(
                row["seq"],
                row["id"],
                "acme",
                ep["id"],
                "late",
                row["payload"],
                0,
                row["created_at"],
                r.url,
                {},
                [ep["secret"]],
            )
        )
        # Whatever launch() started has ended (a send would have reached r by then).
        await eventually(lambda: dispatcher.slots.in_flight == 0 and not dispatcher.tasks, what="the launch to settle")
        assert r.requests == []
        assert "crashed" not in caplog.text  # no attempt on a closed session
    finally:
        await d.stop()
    d = await LocalDaemon(tmp_path).start()
    try:
        await r.wait_for(1, timeout=10)
        assert r.requests[0]["headers"]["webhook-id"] == row["id"]
    finally:
        await d.stop()


async def test_reload_applies_new_allowlist(local, hook_receiver):
    import yaml

    d = await local(webhooks={"allow_destinations": []})
    await d.tenant("acme")
    r = await hook_receiver()
    ep = await d.endpoint("acme", r.url.replace("127.0.0.1", "localhost"))
    status, result = await d.call("POST", f"/v1/webhooks/{ep['id']}/test", {}, tenant="acme")
    assert result["outcome"] == "refused"
    config = yaml.safe_load(d.config_path.read_text())
    config["webhooks"]["allow_destinations"] = ["127.0.0.0/8", "::1/128"]
    d.config_path.write_text(yaml.safe_dump(config))
    ok, errors = await d.daemon.reload()
    assert ok, errors
    status, result = await d.call("POST", f"/v1/webhooks/{ep['id']}/test", {}, tenant="acme")
    assert result["outcome"] == "success", result


async def test_endpoint_stats_failure_window_and_recover_until(local, hook_receiver):
    d = await local()
    await d.tenant("acme")
    r = await hook_receiver()
    r.responder = fail_500
    ep = await d.endpoint("acme", r.url)
    assert ep["failing_since"] is None
    for i in range(2):
        await d.publish("acme", "invoice.paid", {"i": i})
    await d.wait_delivery("acme", ep["id"], "failed", count=2, timeout=10)
    d.clock.advance(7200)  # two hours later the endpoint still fails
    await d.publish("acme", "invoice.paid", {"i": 2})
    await d.wait_delivery("acme", ep["id"], "failed", count=3, timeout=10)

    status, stats = await d.call("GET", f"/v1/webhooks/{ep['id']}/stats", tenant="acme", params={"window": "7d"})
    assert status == 200, stats
    assert stats["deliveries"] == {"pending": 0, "inflight": 0, "succeeded": 0, "failed": 3}
    assert stats["attempts"]["total"] == 9 and stats["attempts"]["by_outcome"] == {"http_error": 9}
    assert stats["attempts"]["success_rate"] == 0.0 and stats["attempts"]["latency_ms_p50"] is not None
    assert stats["failing_since"] is not None
    status, hour = await d.call("GET", f"/v1/webhooks/{ep['id']}/stats", tenant="acme", params={"window": "1h"})
    assert hour["attempts"]["total"] == 3  # only the last event's attempts are within the last hour

    # The receiver is fixed; re-queue only what failed in the first hour of the outage.
    r.responder = None
    now = d.clock.time()
    status, answer = await d.call(
        "POST",
        f"/v1/webhooks/{ep['id']}/recover",
        {"since": iso(now - 3 * 3600), "until": iso(now - 3600)},
        tenant="acme",
    )
    assert status == 202 and answer["requeued"] == 2
    await d.wait_delivery("acme", ep["id"], "succeeded", count=2)
    [still_failed] = await d.deliveries("acme", ep["id"], status="failed")
    assert still_failed["payload"]["data"] == {"i": 2}
    status, stats = await d.call("GET", f"/v1/webhooks/{ep['id']}/stats", tenant="acme")
    assert stats["deliveries"]["succeeded"] == 2 and stats["deliveries"]["failed"] == 1
    assert stats["attempts"]["by_outcome"]["success"] == 2
    assert stats["failing_since"] is None  # a success ends the failure window
    status, endpoint = await d.call("GET", f"/v1/webhooks/{ep['id']}", tenant="acme")
    assert endpoint["failing_since"] is None and endpoint["disabled_at"] is None

    # Bad input: a clear 422 naming the field, and nothing re-queued.
    for body, path in (
        ({"since": iso(now), "until": iso(now - 60)}, "until"),
        ({"since": iso(now - 60), "until": "soon"}, "until"),
        ({"since": iso(now - 60), "status": "failed"}, "status"),
        ({"since": 12}, "since"),
        ({}, "since"),
    ):
        status, answer = await d.call("POST", f"/v1/webhooks/{ep['id']}/recover", body, tenant="acme")
        assert status == 422 and answer["error"]["code"] == "invalid_body", (body, answer)
        assert [e["path"] for e in answer["error"]["details"]] == [path], answer
    for window in ("bogus", "0s", "-1h"):
        status, answer = await d.call("GET", f"/v1/webhooks/{ep['id']}/stats", tenant="acme", params={"window": window})
        assert status == 400 and answer["error"]["code"] == "invalid_parameter", (window, answer)
    assert len(await d.deliveries("acme", ep["id"], status="failed")) == 1


async def test_replay_delivers_what_an_endpoint_missed_and_nothing_twice(local, hook_receiver):
    d = await local()
    await d.tenant("acme")
    await d.tenant("globex")
    r = await hook_receiver()
    ep = await d.endpoint("acme", r.url + "/main", event_types=["invoice.*"])
    await d.publish("acme", "invoice.paid", {"i": 0})
    await d.wait_delivery("acme", ep["id"], "succeeded")
    # Disabled for a while: the events meanwhile make no delivery for it...
    await d.call("PUT", f"/v1/webhooks/{ep['id']}", {"enabled": False}, tenant="acme")
    events = [await d.publish("acme", "invoice.paid", {"i": i}) for i in (1, 2, 3)]
    await d.publish("acme", "customer.created")  # not subscribed
    await d.publish("globex", "invoice.paid")  # another tenant's
    await d.call("PUT", f"/v1/webhooks/{ep['id']}", {"enabled": True}, tenant="acme")
    await d.settled()  # the consumers have passed every event above, the enabling included
    # ...so enabling it again sends nothing by itself (a send is a delivery row first).
    assert [x["payload"]["data"] for x in await d.deliveries("acme", ep["id"])] == [{"i": 0}]
    assert len(r.requests) == 1

    since = iso(d.clock.time() - 3600)
    status, answer = await d.call("POST", f"/v1/webhooks/{ep['id']}/replay", {"since": since}, tenant="acme")
    assert status == 202, answer
    # Read: acme's 5 events and the endpoint's 3 changes (created, disabled, enabled); globex's are not acme's.
    assert answer == {"events_scanned": 8, "queued": 3, "endpoint_enabled": True}
    await d.wait_delivery("acme", ep["id"], "succeeded", count=4)
    status, answer = await d.call("POST", f"/v1/webhooks/{ep['id']}/replay", {"since": since}, tenant="acme")
    assert answer["queued"] == 0  # everything it has a delivery for is skipped

    # An endpoint created after the events backfills them, a span at a time.
    late = await d.endpoint("acme", r.url + "/late", event_types=["invoice.*"])
    between = iso((parse_iso(events[0]["created_at"]) + parse_iso(events[1]["created_at"])) / 2)
    status, answer = await d.call(
        "POST", f"/v1/webhooks/{late['id']}/replay", {"since": since, "until": between}, tenant="acme"
    )
    assert answer["queued"] == 2  # i=0 and i=1
    status, answer = await d.call("POST", f"/v1/webhooks/{late['id']}/replay", {"since": since}, tenant="acme")
    assert answer["queued"] == 2  # i=2 and i=3
    await d.wait_delivery("acme", late["id"], "succeeded", count=4)
    await d.settled()  # nothing more to come: each endpoint has its 4 deliveries and no other
    assert [len(await d.deliveries("acme", e["id"])) for e in (ep, late)] == [4, 4]
    for path in ("/main", "/late"):
        got = [req for req in r.requests if req["path"].endswith(path)]
        assert sorted(json.loads(req["body"])["data"]["i"] for req in got) == [0, 1, 2, 3], path
    assert len({req["headers"]["webhook-id"] for req in r.requests}) == 8
    # A replayed delivery carries the event's own body: type, its time, its data.
    [first] = [
        json.loads(req["body"])
        for req in r.requests
        if req["path"].endswith("/late") and json.loads(req["body"])["data"] == {"i": 1}
    ]
    assert first["type"] == "invoice.paid" and first["timestamp"] == events[0]["created_at"]

    for body in ({}, {"since": "last week"}, {"since": since, "until": since}, {"since": since, "types": ["x"]}):
        status, answer = await d.call("POST", f"/v1/webhooks/{late['id']}/replay", body, tenant="acme")
        assert status == 422 and answer["error"]["code"] == "invalid_body", (body, answer)


async def test_where_an_event_went(local, hook_receiver):
    d = await local()
    await d.tenant("acme")
    globex = await d.tenant("globex")
    ok, failing = await hook_receiver(), await hook_receiver()
    failing.responder = fail_500
    ep_ok = await d.endpoint("acme", ok.url, event_types=["invoice.*"])
    ep_failing = await d.endpoint("acme", failing.url)
    await d.endpoint("acme", ok.url + "/orders", event_types=["order.*"])  # not subscribed to invoices
    event = await d.publish("acme", "invoice.paid")
    await d.wait_delivery("acme", ep_ok["id"], "succeeded")
    await d.wait_delivery("acme", ep_failing["id"], "failed", timeout=10)
    status, answer = await d.call("GET", "/v1/deliveries", tenant="acme", params={"event_id": event["id"]})
    assert status == 200, answer
    assert [(x["endpoint_id"], x["endpoint_url"], x["status"]) for x in answer["data"]] == [
        (ep_ok["id"], ok.url, "succeeded"),
        (ep_failing["id"], failing.url, "failed"),
    ]
    assert answer["data"][1]["attempts"] == 3 and answer["data"][1]["last_status_code"] == 500
    # An event no endpoint took is an empty list; an unknown one, or another tenant's, is 404.
    unwanted = await d.publish("acme", "customer.created")
    await d.settled()
    status, answer = await d.call("GET", "/v1/deliveries", tenant="acme", params={"event_id": unwanted["id"]})
    assert status == 200 and [x["endpoint_id"] for x in answer["data"]] == [ep_failing["id"]]
    status, answer = await d.call("GET", "/v1/deliveries", token=globex, params={"event_id": event["id"]})
    assert status == 404 and answer["error"]["code"] == "not_found"
    status, answer = await d.call("GET", "/v1/deliveries", tenant="acme", params={"event_id": "evt_nope"})
    assert status == 404
    status, answer = await d.call("GET", "/v1/deliveries", tenant="acme")
    assert status == 400 and answer["error"]["code"] == "invalid_parameter"
    await d.call("DELETE", f"/v1/webhooks/{ep_failing['id']}", tenant="acme")
    status, answer = await d.call("GET", "/v1/deliveries", tenant="acme", params={"event_id": unwanted["id"]})
    assert status == 200 and answer["data"] == []  # the event exists; no endpoint has it now
