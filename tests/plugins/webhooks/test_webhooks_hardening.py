"""Hostile input on the webhooks API, a stored endpoint the dispatcher cannot
use, and the log lines operators need (issue 10 items 2, 7, 8 and the log).

All through the real daemon (a subprocess) and a real receiver.
"""

import json
import re

from aiohttp import web
from conftest import until
from webhook_helpers import ON_POSTGRESQL, TEST_WEBHOOKS, raw_sql

CONFIG = {"webhooks": TEST_WEBHOOKS}


async def _endpoints(d, tenant):
    status, page = await d.arequest("GET", "/v1/webhooks", tenant=tenant)
    assert status == 200, page
    return page["data"]


async def _raw(d, method, path, text, tenant="acme"):
    """A request with a body written by hand (JSON that json.dumps would never write)."""
    return await d.arequest(
        method,
        path,
        data=text.encode("utf-8", "surrogatepass"),
        tenant=tenant,
        headers={"Content-Type": "application/json"},
    )


async def _deliveries(d, endpoint_id, tenant, status=None):
    query = f"?status={status}" if status else ""
    code, page = await d.arequest("GET", f"/v1/webhooks/{endpoint_id}/deliveries{query}", tenant=tenant)
    assert code == 200, page
    return page["data"]


async def test_rate_limit_is_bounded(tierd_daemon, receiver):
    r = await receiver()
    d = tierd_daemon(CONFIG)
    d.create_tenant("acme")
    url = json.dumps(r.url + "/hook")
    for bad in ("1e999", "9" * 400, "-1", "0", "NaN", "true", '"5"', "10001", "1e300", "[5]"):
        status, body = await _raw(d, "POST", "/v1/webhooks", f'{{"url": {url}, "rate_limit": {bad}}}')
        # Not JSON (1e999, NaN) is 400 invalid_json; JSON that is no valid rate, 422 invalid_body.
        assert (status, body["error"]["code"]) in ((400, "invalid_json"), (422, "invalid_body")), (bad, body)
    assert await _endpoints(d, "acme") == []  # nothing stored

    status, ep = await d.arequest("POST", "/v1/webhooks", {"url": r.url + "/hook", "rate_limit": 10000}, tenant="acme")
    assert status == 201 and ep["rate_limit"] == 10000, ep
    status, body = await _raw(d, "PUT", f"/v1/webhooks/{ep['id']}", '{"rate_limit": 1e999}')
    assert status == 400, body
    status, body = await _raw(d, "PUT", f"/v1/webhooks/{ep['id']}", '{"rate_limit": ' + "1" * 400 + "}")
    assert status == 422 and body["error"]["details"][0]["path"] == "rate_limit", body
    status, again = await d.arequest("GET", f"/v1/webhooks/{ep['id']}", tenant="acme")
    assert again["rate_limit"] == 10000  # unchanged

    # The endpoint still receives what is published.
    status, _ = await d.arequest("POST", "/v1/events", {"type": "a.b", "data": {}}, tenant="acme")
    assert status == 202
    await r.wait_for(1)


async def test_stats_window_is_bounded(tierd_daemon, receiver):
    r = await receiver()
    d = tierd_daemon(CONFIG)
    d.create_tenant("acme")
    status, ep = await d.arequest("POST", "/v1/webhooks", {"url": r.url + "/hook"}, tenant="acme")
    assert status == 201
    for bad in ("5000000d", "9" * 30 + "d", "3651d", "0s", "1e999d", "-1d"):
        status, body = await d.arequest("GET", f"/v1/webhooks/{ep['id']}/stats?window={bad}", tenant="acme")
        assert status == 400, (bad, body)
        assert body["error"]["code"] == "invalid_parameter"
    status, stats = await d.arequest("GET", f"/v1/webhooks/{ep['id']}/stats?window=3650d", tenant="acme")
    assert status == 200 and stats["attempts"]["total"] == 0, stats


async def test_malformed_urls_and_names_are_refused(tierd_daemon, receiver):
    r = await receiver()
    d = tierd_daemon(CONFIG)
    d.create_tenant("acme")
    bad_urls = [
        "https://a..b/x",
        "https://-a.example/x",
        "https://a-.example/x",
        "https://" + "a" * 64 + ".b/x",
        "https://./x",
        "https://a b.example/x",
        "https://a.example/x y",
        "https://a.example/x\u0000",
        "https://a.example/\u2028",
        "https://a.example/x\t",
        "https://ex\u200bample.com/x",
        "https://a.example/" + "x" * 2000,
    ]
    for url in bad_urls:
        status, body = await d.arequest("POST", "/v1/webhooks", {"url": url}, tenant="acme")
        assert status == 422, (url, body)
        assert body["error"]["code"] == "invalid_body" and body["error"]["details"][0]["path"] == "url", body
    # A lone surrogate, as raw JSON (the core decoder or the URL check refuses it).
    status, body = await _raw(d, "POST", "/v1/webhooks", '{"url": "https://a.example/x\\ud800"}')
    assert status == 400, body
    # A trailing newline is no event type, a header name is a token, a value one printable line.
    for fields in (
        {"event_types": ["a.b\n"]},
        {"event_types": ["a.b\n.c"]},
        {"headers": {"X-A\n": "v"}},
        {"headers": {"X-A": "v\u0000"}},
        {"headers": {"X-A": "v\r\nX-B: w"}},
        {"headers": {f"X-{i}": "v" for i in range(51)}},
    ):
        status, body = await d.arequest("POST", "/v1/webhooks", {"url": r.url + "/hook", **fields}, tenant="acme")
        assert status == 422, (fields, body)
    assert await _endpoints(d, "acme") == []

    # What is fine stays fine: an IDN host, a trailing dot, an underscore, a tab in a header value.
    for url in ("https://bücher.example/x", "https://hooks.example./x", "https://in_ternal.example/x"):
        status, body = await d.arequest("POST", "/v1/webhooks", {"url": url}, tenant="acme")
        assert status == 201, (url, body)
    status, ep = await d.arequest(
        "POST",
        "/v1/webhooks",
        {"url": r.url + "/hook", "event_types": ["a.*"], "headers": {"X-Env": "a\tb"}},
        tenant="acme",
    )
    assert status == 201, ep
    status, body = await d.arequest("PUT", f"/v1/webhooks/{ep['id']}", {"url": "https://a..b/x"}, tenant="acme")
    assert status == 422, body
    status, same = await d.arequest("GET", f"/v1/webhooks/{ep['id']}", tenant="acme")
    assert same["url"] == r.url + "/hook"


async def test_an_unusable_stored_endpoint_does_not_stop_other_tenants(tierd_daemon, receiver):
    """Rows written before the API refused them (or by hand): the dispatcher
    skips what it cannot use and every other endpoint is served."""
    r = await receiver()
    d = tierd_daemon(CONFIG)
    tokens = {t: d.create_tenant(t) for t in ("acme", "globex")}
    ids = {}
    for tenant, name in (
        ("acme", "huge"),
        ("acme", "junk"),
        ("acme", "badjson"),
        ("acme", "badsecret"),
        ("globex", "good"),
    ):
        status, ep = await d.arequest(
            "POST", "/v1/webhooks", {"url": f"{r.url}/{name}", "rate_limit": 5}, token=tokens[tenant]
        )
        assert status == 201, ep
        ids[name] = ep["id"]
    d.terminate()
    # Text in a REAL column is SQLite's own; PostgreSQL's column takes numbers only (NaN is junk too).
    huge, junk = ("'Infinity'::float8", "'NaN'::float8") if ON_POSTGRESQL else ("9e999", "'lots'")
    for sql, endpoint in (
        (f"UPDATE webhook_endpoints SET rate_limit={huge} WHERE id=?", "huge"),  # +Infinity
        (f"UPDATE webhook_endpoints SET rate_limit={junk} WHERE id=?", "junk"),
        ("UPDATE webhook_endpoints SET headers='{not json' WHERE id=?", "badjson"),
        ("UPDATE webhook_endpoints SET secret='whsec_!!!' WHERE id=?", "badsecret"),
    ):
        await raw_sql(d.config, sql, (ids[endpoint],))
    d.start()

    for tenant in ("acme", "globex"):
        for i in range(3):
            status, _ = await d.arequest(
                "POST", "/v1/events", {"type": "order.created", "data": {"i": i}}, token=tokens[tenant]
            )
            assert status == 202
    # globex's deliveries go out; so do acme's to the endpoint whose rate acts as the maximum.

    def served():
        paths = [req["path"] for req in r.requests]
        return paths.count("/good") == 3 and paths.count("/huge") == 3

    await until(served, what="3 deliveries to /good and 3 to /huge")
    paths = [req["path"] for req in r.requests]
    assert paths.count("/good") == 3 and paths.count("/huge") == 3, paths
    assert "/junk" not in paths and "/badjson" not in paths and "/badsecret" not in paths

    logs = d.logs()
    for name in ("junk", "badjson", "badsecret"):
        assert re.search(rf"webhook endpoint {ids[name]} of tenant acme cannot be used", logs), logs[-3000:]
    assert "OverflowError" not in logs and "webhook dispatch failed" not in logs and "crashed" not in logs
    assert "whsec_!!!" not in logs

    # The API still lists and shows them; test sends say why they cannot go.
    listed = {e["id"]: e for e in await _endpoints(d, "acme")}
    assert listed[ids["huge"]]["rate_limit"] == 10000 and listed[ids["junk"]]["rate_limit"] is None
    status, body = await d.arequest("POST", f"/v1/webhooks/{ids['junk']}/test", token=tokens["acme"])
    assert status == 409 and body["error"]["code"] == "endpoint_unusable", body
    status, metrics = await d.arequest("GET", "/metrics")
    assert re.search(r"^tierd_webhook_endpoints_unusable 3\.0$", metrics, re.M), metrics

    # Changing it through the API makes it usable again.
    status, body = await d.arequest("PUT", f"/v1/webhooks/{ids['junk']}", {"rate_limit": 5}, token=tokens["acme"])
    assert status == 200, body
    status, _ = await d.arequest(
        "POST", "/v1/events", {"type": "order.created", "data": {"i": 9}}, token=tokens["acme"]
    )
    await r.wait_for(len(r.requests) + 2)  # to /huge and to /junk, now usable
    assert [req["path"] for req in r.requests].count("/junk") == 1


async def test_operators_see_failed_attempts_disabled_endpoints_and_give_ups(tierd_daemon, receiver):
    r = await receiver()

    async def answer(request, body):
        return web.Response(status=410 if request.path == "/gone" else 500, text="no")

    r.responder = answer
    d = tierd_daemon({"webhooks": TEST_WEBHOOKS | {"retry_schedule": ["0s", "1s"]}})
    d.create_tenant("acme")
    eps = {}
    for name in ("down", "gone"):
        status, ep = await d.arequest(
            "POST", "/v1/webhooks", {"url": f"{r.url}/{name}", "event_types": ["a.b"]}, tenant="acme"
        )
        assert status == 201
        eps[name] = ep
    status, event = await d.arequest(
        "POST", "/v1/events", {"type": "a.b", "data": {"marker": "payload-7f3a"}}, tenant="acme"
    )
    assert status == 202
    await r.wait_for(3)  # down twice, gone once
    down = eps["down"]["id"]

    async def settled():
        return (await _deliveries(d, down, "acme", "failed")) and "disabled: the endpoint answered 410" in d.logs()

    await until(settled, timeout=15, what="the delivery to /down given up and /gone disabled")
    [delivery] = await _deliveries(d, down, "acme")
    logs = d.logs()
    assert re.search(
        rf"INFO +tierd.webhooks: webhook attempt 1 of delivery {delivery['id']} \(tenant acme, "
        rf"endpoint {down}\) failed: HTTP 500; next attempt at \d{{4}}-",
        logs,
    ), logs[-3000:]
    assert re.search(
        rf"WARNING +tierd.webhooks: webhook delivery {delivery['id']} \(tenant acme, endpoint {down}\) "
        r"gave up after 2 attempt\(s\): HTTP 500",
        logs,
    ), logs[-3000:]
    assert re.search(
        rf"webhook endpoint {eps['gone']['id']} of tenant acme disabled: the endpoint answered 410", logs
    ), logs[-3000:]
    # Never the payload, the URL or a secret.
    assert "payload-7f3a" not in logs
    assert r.url not in logs
    assert eps["down"]["secret"] not in logs and eps["down"]["secret"][6:20] not in logs
