"""The webhooks pages of the web console, as a user sees them: the real daemon
(a subprocess), a real receiver that fails then recovers, and a browser-like
session (``tierd.testing.ConsoleSession``) that signs in, reads pages and posts
their forms. What an action did is checked through the API or the receiver."""

from __future__ import annotations

import re

from aiohttp import web
from webhook_helpers import TEST_WEBHOOKS, fail_500

from tierd.testing import ADMIN_TOKEN, ConsoleSession, eventually

CONFIG = {"webhooks": TEST_WEBHOOKS}


async def _ok(request, body):
    return web.Response(text="thanks")


async def failed_delivery(d, r, tenant: str) -> tuple[dict, dict]:
    """An endpoint of ``tenant`` at ``r`` and one delivery to it that gave up
    (every attempt answered 500); the receiver answers 200 afterwards."""
    r.responder = fail_500
    status, endpoint = await d.arequest(
        "POST", "/v1/webhooks", {"url": r.url + "/hook", "description": "orders feed"}, tenant=tenant
    )
    assert status == 201, endpoint
    status, event = await d.arequest("POST", "/v1/events", {"type": "order.created", "data": {"n": 1}}, tenant=tenant)
    assert status == 202, event

    async def gave_up():
        status, page = await d.arequest("GET", f"/v1/webhooks/{endpoint['id']}/deliveries?status=failed", tenant=tenant)
        return page["data"][0] if page["data"] else None

    delivery = await eventually(gave_up, what="the delivery to give up")
    r.responder = _ok
    return endpoint, delivery


def flash(html: str) -> tuple[str, str] | None:
    found = re.search(r'<p class="flash (ok|error)" role="status">([^<]*)</p>', html)
    return (found.group(1), found.group(2)) if found else None


async def test_tenant_sees_health_retries_and_acts(tierd_daemon, receiver):
    r = await receiver()
    d = tierd_daemon(CONFIG)
    token = d.create_tenant("acme")
    endpoint, delivery = await failed_delivery(d, r, "acme")
    ep, dlv = endpoint["id"], delivery["id"]
    attempts = len(TEST_WEBHOOKS["retry_schedule"])

    async with ConsoleSession(d.url) as ui:
        await ui.sign_in(token)

        # The overview counts the failure and links to it.
        status, html = await ui.get("/ui/")
        assert status == 200
        assert '<span id="webhooks-failed">1</span>' in html
        assert f'href="/ui/deliveries/{dlv}"' in html

        # The list shows the endpoint with its URL, types and state, linking to its page.
        status, html = await ui.get("/ui/webhooks")
        assert status == 200
        assert f'<tr data-endpoint="{ep}">' in html
        assert r.url + "/hook" in html and "orders feed" in html
        assert f'href="/ui/webhooks/{ep}"' in html

        # The endpoint page: health numbers, the charts, the failed delivery with a Retry button.
        status, html = await ui.get(f"/ui/webhooks/{ep}")
        assert status == 200
        assert '<span class="num" data-count="failed">1</span>' in html
        assert f'<span id="attempts-total">{attempts}</span>' in html
        assert '<dd id="success-rate">0.0 %</dd>' in html
        assert re.search(r'<dd id="latency-p50">\d+ ms</dd>', html)
        assert html.count('<svg class="spark"') == 2 and ("<polyline" in html or "<circle" in html)
        row = re.search(rf'<tr data-delivery="{dlv}">(.*?)</tr>', html, re.S)
        assert row and "s-failed" in row.group(1) and "order.created" in row.group(1)
        assert f'action="/ui/deliveries/{dlv}/retry"' in row.group(1)

        # The delivery page: status, payload and each attempt with its status code.
        status, html = await ui.get(f"/ui/deliveries/{dlv}")
        assert status == 200
        assert '<span id="delivery-status"><span class="status s-failed">failed</span></span>' in html
        assert "&#34;order.created&#34;" in html or '"order.created"' in html
        assert html.count('<td class="num">500</td>') == attempts

        # Retry from the log: back to the endpoint page with the flash; the receiver gets it.
        status, html = await ui.post(f"/ui/deliveries/{dlv}/retry", {"back": "endpoint"})
        assert status == 200 and ui.last_path == f"/ui/webhooks/{ep}"
        assert flash(html) == ("ok", "Queued for delivery")
        await r.wait_for(attempts + 1)

        async def shown_succeeded():
            _, page = await ui.get(f"/ui/deliveries/{dlv}")
            return '<span id="delivery-status"><span class="status s-succeeded">' in page

        await eventually(shown_succeeded, what="the delivery page to show succeeded")

        # "Retry now" on the delivery page comes back to it, with the flash.
        status, html = await ui.post(f"/ui/deliveries/{dlv}/retry")
        assert status == 200 and ui.last_path == f"/ui/deliveries/{dlv}"
        assert flash(html) == ("ok", "Queued for delivery")

        # Send test: the receiver's answer is flashed, success or not.
        status, html = await ui.post(f"/ui/webhooks/{ep}/test")
        kind, text = flash(html)
        assert kind == "ok" and "success (HTTP 200" in text, text
        r.responder = fail_500
        status, html = await ui.post(f"/ui/webhooks/{ep}/test")
        kind, text = flash(html)
        assert kind == "error" and "http_error (HTTP 500" in text, text
        r.responder = _ok

        # Disable and enable: the API says so, the page shows it.
        status, html = await ui.post(f"/ui/webhooks/{ep}/enabled", {"enabled": "false"})
        assert flash(html) == ("ok", "Endpoint disabled")
        assert 'id="endpoint-state"><span class="status s-disabled">' in html
        _, body = await d.arequest("GET", f"/v1/webhooks/{ep}", tenant="acme")
        assert body["enabled"] is False
        status, html = await ui.post(f"/ui/webhooks/{ep}/enabled", {"enabled": "true"})
        assert flash(html) == ("ok", "Endpoint enabled")
        _, body = await d.arequest("GET", f"/v1/webhooks/{ep}", tenant="acme")
        assert body["enabled"] is True

        # Recover: a valid time re-queues (nothing failed now); a bad one is a flash, not a 500.
        status, html = await ui.post(f"/ui/webhooks/{ep}/recover", {"since": "2020-01-01T00:00"})
        assert status == 200 and flash(html) == ("ok", "0 failed deliveries re-queued")
        status, html = await ui.post(f"/ui/webhooks/{ep}/recover", {"since": "yesterday"})
        assert status == 200 and ui.last_path == f"/ui/webhooks/{ep}"
        assert flash(html)[0] == "error" and "since" in flash(html)[1]

        # The status filter of the log, and a bad one is the API's 400, not a 500.
        status, html = await ui.get(f"/ui/webhooks/{ep}?status=succeeded")
        assert status == 200 and f'<tr data-delivery="{dlv}">' in html
        assert "<option selected>succeeded</option>" in html
        status, html = await ui.get(f"/ui/webhooks/{ep}?status=inflight")
        assert status == 200 and "data-delivery=" not in html and "No deliveries inflight" in html
        status, html = await ui.get(f"/ui/webhooks/{ep}?status=lost")
        assert status == 400


async def test_other_tenants_csrf_and_admin(tierd_daemon, receiver):
    r = await receiver()
    d = tierd_daemon(CONFIG)
    d.create_tenant("acme")
    other = d.create_tenant("globex")
    endpoint, delivery = await failed_delivery(d, r, "acme")
    ep, dlv = endpoint["id"], delivery["id"]
    # globex's endpoint is ordered (fifo) and its receiver fails: it is blocked.
    stuck = await receiver()
    stuck.responder = fail_500
    status, theirs = await d.arequest(
        "POST", "/v1/webhooks", {"url": stuck.url + "/globex", "ordering": "fifo"}, tenant="globex"
    )
    assert status == 201
    await d.arequest("POST", "/v1/events", {"type": "order.created"}, tenant="globex")

    async def blocked():
        _, body = await d.arequest("GET", f"/v1/webhooks/{theirs['id']}", tenant="globex")
        return body["blocked_since"]

    await eventually(blocked, what="the fifo endpoint to be blocked")

    async with ConsoleSession(d.url) as ui:
        await ui.sign_in(other)
        # Another tenant's endpoint and delivery: the 404 page, for reading and acting.
        for path in (f"/ui/webhooks/{ep}", f"/ui/deliveries/{dlv}"):
            status, html = await ui.get(path)
            assert status == 404 and "not_found" in html, path
        status, html = await ui.post(f"/ui/deliveries/{dlv}/retry")
        assert status == 404
        status, html = await ui.post(f"/ui/webhooks/{ep}/enabled", {"enabled": "false"})
        assert status == 404
        status, html = await ui.get("/ui/webhooks")
        assert ep not in html
        row = re.search(rf'<tr data-endpoint="{theirs["id"]}">(.*?)</tr>', html, re.S)
        assert row and "s-blocked" in row.group(1) and "fifo" in row.group(1)
        # Its overview counts only its own failures, and shows its blocked endpoint.
        status, html = await ui.get("/ui/")
        assert '<span id="webhooks-failed">0</span>' in html
        assert "Blocked ordered endpoints (1)" in html and f'href="/ui/webhooks/{theirs["id"]}"' in html

        # A POST without the CSRF token is refused and changes nothing.
        await ui.get(f"/ui/webhooks/{theirs['id']}")
        status, html = await ui.post(f"/ui/webhooks/{theirs['id']}/enabled", {"enabled": "false"}, csrf=False)
        assert status == 403
        _, body = await d.arequest("GET", f"/v1/webhooks/{theirs['id']}", tenant="globex")
        assert body["enabled"] is True

    async with ConsoleSession(d.url) as ui:
        await ui.sign_in(ADMIN_TOKEN)
        # All tenants: every endpoint, each linking with its tenant.
        status, html = await ui.get("/ui/webhooks")
        assert status == 200
        assert f'<tr data-endpoint="{ep}">' in html and f'<tr data-endpoint="{theirs["id"]}">' in html
        assert f'href="/ui/webhooks/{ep}?tenant=acme"' in html
        assert '<span id="webhooks-failed">1</span>' in (await ui.get("/ui/"))[1]
        # Without a tenant the API cannot act: its refusal as a page, not a 500.
        status, html = await ui.get(f"/ui/webhooks/{ep}")
        assert status == 400 and "tenant_required" in html
        # With ?tenant= the admin reads and acts for that tenant.
        status, html = await ui.get(f"/ui/webhooks/{ep}?tenant=acme")
        assert status == 200 and f'data-delivery="{dlv}"' in html
        assert f'action="/ui/webhooks/{ep}/enabled?tenant=acme"' in html
        status, html = await ui.post(f"/ui/webhooks/{ep}/enabled?tenant=acme", {"enabled": "false"})
        assert flash(html) == ("ok", "Endpoint disabled") and ui.last_path == f"/ui/webhooks/{ep}?tenant=acme"
        _, body = await d.arequest("GET", f"/v1/webhooks/{ep}", tenant="acme")
        assert body["enabled"] is False
        # The overview lists the disabled endpoint, linking with its tenant.
        status, html = await ui.get("/ui/")
        assert f'href="/ui/webhooks/{ep}?tenant=acme"' in html
        # Acting for the wrong tenant is that tenant's 404.
        status, html = await ui.post(f"/ui/deliveries/{dlv}/retry?tenant=globex")
        assert status == 404


async def test_a_tenant_hands_a_portal_link_to_a_customer_and_revokes_it(tierd_daemon):
    d = tierd_daemon(CONFIG)
    token = d.create_tenant("acme")
    async with ConsoleSession(d.url) as ui:
        await ui.sign_in(token)
        status, html = await ui.get("/ui/webhooks")
        assert 'href="/ui/webhooks/portal-links"' in html
        await ui.get("/ui/webhooks/portal-links")

        status, html = await ui.post(
            "/ui/webhooks/portal-links", {"customer": "cust_42", "endpoints": "own", "expires_in": "2h"}
        )
        assert status == 201
        url = re.search(r'<p class="secret" id="portal-link-url">([^<]+)</p>', html).group(1)
        assert url.startswith(d.url + "/ui/portal/enter/")
        [link] = re.findall(r'<tr data-link="([^"]+)">', html)

        # The customer's browser opens it (a session of its own, in the portal).
        async with ConsoleSession(d.url) as customer:
            status, page = await customer.get(url.removeprefix(d.url))
            assert status == 200 and "Open the portal" in page
            await customer.post(url.removeprefix(d.url))
            assert customer.last_path == "/ui/portal/"

            # The URL is never shown again; the list shows the link in use.
            status, html = await ui.get("/ui/webhooks/portal-links")
            assert url not in html and "s-redeemed" in html and "cust_42" in html

            # A bad form is the API's refusal as a flash, and makes no link.
            status, html = await ui.post("/ui/webhooks/portal-links", {"customer": "", "expires_in": "2h"})
            assert flash(html)[0] == "error" and len(re.findall(r"<tr data-link=", html)) == 1

            status, html = await ui.post(f"/ui/webhooks/portal-links/{link}/revoke", csrf=False)
            assert status == 403
            status, html = await ui.post(f"/ui/webhooks/portal-links/{link}/revoke")
            assert flash(html) == ("ok", f"Link {link} revoked; its session has ended") and "s-revoked" in html
            status, _ = await customer.get("/ui/portal/")
            assert status == 401

    async with ConsoleSession(d.url) as admin:
        await admin.sign_in(ADMIN_TOKEN)
        status, html = await admin.get("/ui/webhooks/portal-links")
        assert "Pick a tenant" in html
        status, html = await admin.get("/ui/webhooks/portal-links?tenant=acme")
        assert f'<tr data-link="{link}">' in html
