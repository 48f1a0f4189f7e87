"""The portal a tenant hands to its customers, as they use it: the real daemon
(a subprocess), real receivers that verify signatures, and a browser-like
session (``tierd.testing.ConsoleSession``) that follows a portal link, reads
pages and posts their forms. What an action did is checked through the API or
at the receiver."""

from __future__ import annotations

import asyncio
import json
import re
import time

from aiohttp import web
from webhook_helpers import TEST_WEBHOOKS, fail_500, raw_sql

from tierd.plugins.webhooks import verify
from tierd.testing import ConsoleSession, eventually

CONFIG = {"webhooks": TEST_WEBHOOKS}
SECRET = re.compile(r'<p class="secret">([^<]+)</p>')


async def _ok(request, body):
    return web.Response(text="thanks")


async def new_link(d, tenant: str, customer: str, **fields) -> dict:
    status, link = await d.arequest("POST", "/v1/portal/links", {"customer": customer, **fields}, tenant=tenant)
    assert status == 201, link
    return link


def path_of(link: dict) -> str:
    """The path of a link's URL (``/ui/portal/enter/<token>``)."""
    return "/" + link["url"].split("/", 3)[3]


async def enter(ui: ConsoleSession, link: dict) -> tuple[int, str]:
    """Follow a portal link as its customer does: open it, press "Open the portal"."""
    path = path_of(link)
    status, html = await ui.get(path)
    assert status == 200 and "Open the portal" in html, html
    status, html = await ui.post(path)
    assert status == 200 and ui.last_path == "/ui/portal/", (status, ui.last_path, html)
    return status, html


async def link_state(d, tenant: str, link_id: str) -> str:
    status, page = await d.arequest("GET", "/v1/portal/links", tenant=tenant)
    assert status == 200, page
    return next(link["state"] for link in page["data"] if link["id"] == link_id)


async def test_customer_adds_an_endpoint_sees_its_secret_once_and_rotates_it(tierd_daemon, receiver):
    r = await receiver()
    d = tierd_daemon(CONFIG)
    d.create_tenant("acme")
    link = await new_link(d, "acme", "cust_42")
    assert link["url"].startswith(d.url + "/ui/portal/enter/") and link["endpoints"] == "own"

    async with ConsoleSession(d.url) as ui, ConsoleSession(d.url) as other:
        # Opening the link (what a chat's link preview does) does not use it up.
        status, html = await ui.get(path_of(link))
        assert status == 200 and "cust_42" in html
        status, html = await other.get(path_of(link))
        assert status == 200 and "Open the portal" in html
        assert await link_state(d, "acme", link["id"]) == "active"

        status, html = await enter(ui, link)
        assert status == 200 and ui.last_path == "/ui/portal/", html
        assert "portal: cust_42" in html and "No endpoint yet" in html
        assert await link_state(d, "acme", link["id"]) == "redeemed"
        # The other browser pressing the button too: refused, nothing opened.
        status, html = await other.post(path_of(link))
        assert status == 410 and "already used" in html
        status, html = await other.get("/ui/portal/")
        assert status == 401

        # Add an endpoint: its secret is on the answer's page, once.
        status, html = await ui.post(
            "/ui/portal/endpoints/new",
            {"url": r.url + "/hook", "description": "orders", "event_types": "order.*, invoice.paid"},
        )
        assert status == 200, html
        secret = SECRET.search(html).group(1)
        assert secret.startswith("whsec_")
        status, page = await d.arequest("GET", "/v1/webhooks?owner=cust_42", tenant="acme")
        [endpoint] = page["data"]
        assert endpoint["owner"] == "cust_42" and endpoint["event_types"] == ["order.*", "invoice.paid"]
        assert endpoint["description"] == "orders"

        # The tenant's events reach it, signed with that secret.
        await d.arequest("POST", "/v1/events", {"type": "order.created", "data": {"n": 1}}, tenant="acme")
        [sent] = await r.wait_for(1)
        assert verify(secret, sent["body"], sent["headers"])["data"] == {"n": 1}

        # The list and the endpoint's page show it and its delivery, never the secret again.
        status, html = await ui.get("/ui/portal/")
        assert f'data-endpoint="{endpoint["id"]}"' in html and r.url in html
        page_path = f"/ui/portal/endpoints/{endpoint['id']}"

        async def delivered():
            status, html = await ui.get(page_path)
            return html if "s-succeeded" in html else None

        html = await eventually(delivered, what="the delivery to show as succeeded")
        assert 'data-delivery="msg_' in html and secret not in html and 'class="secret"' not in html

        # Rotate: the new secret is shown once, and signs what is sent next.
        status, html = await ui.post(page_path + "/rotate")
        assert status == 200, html
        rotated = SECRET.search(html).group(1)
        assert rotated.startswith("whsec_") and rotated != secret
        status, html = await ui.get(page_path)
        assert rotated not in html and 'class="secret"' not in html
        await d.arequest("POST", "/v1/events", {"type": "invoice.paid", "data": {"n": 2}}, tenant="acme")
        sent = (await r.wait_for(2))[1]
        assert verify(rotated, sent["body"], sent["headers"])["data"] == {"n": 2}

        # Settings, disable, delete: each through the API, which says so.
        status, html = await ui.post(page_path, {"url": r.url + "/v2", "description": "", "event_types": ""})
        assert status == 200 and "Saved." in html, html
        status, shown = await d.arequest("GET", f"/v1/webhooks/{endpoint['id']}", tenant="acme")
        assert (shown["url"], shown["description"], shown["event_types"]) == (r.url + "/v2", "", [])
        assert shown["owner"] == "cust_42"
        status, html = await ui.post(page_path + "/enabled", {"enabled": "0"})
        assert "Disabled." in html
        status, shown = await d.arequest("GET", f"/v1/webhooks/{endpoint['id']}", tenant="acme")
        assert shown["enabled"] is False

        # A refused change is a message on the page, nothing changed.
        status, html = await ui.post(page_path, {"url": "ftp://nope", "description": "x", "event_types": ""})
        assert status == 200 and 'class="flash error"' in html and "https://" in html, html
        status, shown = await d.arequest("GET", f"/v1/webhooks/{endpoint['id']}", tenant="acme")
        assert shown["url"] == r.url + "/v2" and shown["description"] == ""
        status, html = await ui.post("/ui/portal/endpoints/new", {"url": "", "description": "no url"})
        assert status == 422 and "url" in html and "no url" in html

        status, html = await ui.post(page_path + "/delete")
        assert ui.last_path == "/ui/portal/" and "deleted" in html
        status, _ = await d.arequest("GET", f"/v1/webhooks/{endpoint['id']}", tenant="acme")
        assert status == 404

    # Opened again later: it says it was used.
    async with ConsoleSession(d.url) as later:
        status, html = await later.get(path_of(link))
        assert status == 410 and "already used" in html
    assert "portal link " + link["id"] in d.logs() and "redeemed by customer cust_42" in d.logs()


async def test_a_customer_retries_its_failed_delivery(tierd_daemon, receiver):
    r = await receiver()
    r.responder = fail_500
    d = tierd_daemon(CONFIG)
    d.create_tenant("acme")
    status, endpoint = await d.arequest(
        "POST", "/v1/webhooks", {"url": r.url + "/hook", "owner": "cust_42"}, tenant="acme"
    )
    assert status == 201 and endpoint["owner"] == "cust_42", endpoint
    await d.arequest("POST", "/v1/events", {"type": "order.created", "data": {}}, tenant="acme")

    async def gave_up():
        status, page = await d.arequest("GET", f"/v1/webhooks/{endpoint['id']}/deliveries?status=failed", tenant="acme")
        return page["data"][0] if page["data"] else None

    delivery = await eventually(gave_up, what="the delivery to give up")
    r.responder = _ok
    async with ConsoleSession(d.url) as ui:
        await enter(ui, await new_link(d, "acme", "cust_42"))
        status, html = await ui.get(f"/ui/portal/endpoints/{endpoint['id']}")
        assert f'data-delivery="{delivery["id"]}"' in html and "s-failed" in html and "Retry" in html
        status, html = await ui.get(f"/ui/portal/deliveries/{delivery['id']}")
        attempts = len(TEST_WEBHOOKS["retry_schedule"])
        assert status == 200 and html.count('<td class="num">500</td>') == attempts, html
        status, html = await ui.post(f"/ui/portal/deliveries/{delivery['id']}/retry")
        assert status == 200 and "queued to be sent again" in html

        async def succeeded():
            status, shown = await d.arequest("GET", f"/v1/deliveries/{delivery['id']}", tenant="acme")
            return shown if shown["status"] == "succeeded" else None

        await eventually(succeeded, what="the retried delivery to succeed")
        # What a customer changes is in the audit trail: the tenant, through the link, for the customer.
        await ui.post(f"/ui/portal/endpoints/{endpoint['id']}", {"url": r.url + "/new", "description": "x"})
        status, events = await d.arequest("GET", "/v1/events?type=webhook.endpoint.updated", tenant="acme")
        assert status == 200 and events["data"], events
        assert re.fullmatch(r"acme/plk_[0-9a-f]+ for portal cust_42", events["data"][0]["data"]["actor"])


async def test_a_link_shows_its_customer_only_or_the_whole_account(tierd_daemon, receiver):
    r = await receiver()
    d = tierd_daemon(CONFIG)
    d.create_tenant("acme")
    d.create_tenant("other")

    async def endpoint(tenant, path, **fields):
        status, body = await d.arequest("POST", "/v1/webhooks", {"url": r.url + path, **fields}, tenant=tenant)
        assert status == 201, body
        return body

    mine = await endpoint("acme", "/a", owner="cust_a")
    theirs = await endpoint("acme", "/b", owner="cust_b")
    tenants_own = await endpoint("acme", "/own")
    elsewhere = await endpoint("other", "/x", owner="cust_a")
    await d.arequest("POST", "/v1/events", {"type": "order.created", "data": {}}, tenant="acme")
    await r.wait_for(3)

    async def delivery_of(endpoint_id):
        async def one():
            status, page = await d.arequest("GET", f"/v1/webhooks/{endpoint_id}/deliveries", tenant="acme")
            return page["data"][0]["id"] if page["data"] else None

        return await eventually(one, what="a delivery")

    # The API's owner filter.
    status, page = await d.arequest("GET", "/v1/webhooks?owner=cust_b", tenant="acme")
    assert [e["id"] for e in page["data"]] == [theirs["id"]]
    status, page = await d.arequest("GET", "/v1/webhooks", tenant="acme")
    assert {e["id"] for e in page["data"]} == {mine["id"], theirs["id"], tenants_own["id"]}
    assert tenants_own["owner"] is None
    status, answer = await d.arequest("GET", "/v1/webhooks?owner=a%20b", tenant="acme")
    assert status == 400 and answer["error"]["code"] == "invalid_parameter"
    status, answer = await d.arequest("POST", "/v1/webhooks", {"url": r.url, "owner": "bad\nname"}, tenant="acme")
    assert status == 422 and answer["error"]["details"][0]["path"] == "owner", answer

    async with ConsoleSession(d.url) as ui:
        await enter(ui, await new_link(d, "acme", "cust_a"))
        status, html = await ui.get("/ui/portal/")
        assert f'data-endpoint="{mine["id"]}"' in html
        assert theirs["id"] not in html and tenants_own["id"] not in html
        for other in (theirs, tenants_own, elsewhere):
            status, html = await ui.get(f"/ui/portal/endpoints/{other['id']}")
            assert status == 404 and "no webhook endpoint" in html
            status, html = await ui.post(f"/ui/portal/endpoints/{other['id']}/delete")
            assert status == 404
        for other in (theirs, tenants_own):
            dlv = await delivery_of(other["id"])
            status, html = await ui.get(f"/ui/portal/deliveries/{dlv}")
            assert status == 404 and "no delivery" in html
            status, html = await ui.post(f"/ui/portal/deliveries/{dlv}/retry")
            assert status == 404
        status, html = await ui.get(f"/ui/portal/deliveries/{await delivery_of(mine['id'])}")
        assert status == 200
        for bad in ("ep_x%3Fowner=cust_b", "ep_x%2F..%2F..", "a.b"):
            status, html = await ui.get(f"/ui/portal/endpoints/{bad}")
            assert status == 404, (bad, html)
        # Nothing of them changed.
        status, page = await d.arequest("GET", "/v1/webhooks", tenant="acme")
        assert len(page["data"]) == 3
        # The tenant hands one of its own endpoints to the customer, and takes it back.
        status, moved = await d.arequest("PUT", f"/v1/webhooks/{tenants_own['id']}", {"owner": "cust_a"}, tenant="acme")
        assert status == 200 and moved["owner"] == "cust_a", moved
        status, html = await ui.get(f"/ui/portal/endpoints/{tenants_own['id']}")
        assert status == 200
        status, moved = await d.arequest("PUT", f"/v1/webhooks/{tenants_own['id']}", {"owner": None}, tenant="acme")
        assert status == 200 and moved["owner"] is None, moved
        status, html = await ui.get(f"/ui/portal/endpoints/{tenants_own['id']}")
        assert status == 404

    async with ConsoleSession(d.url) as ui:
        await enter(ui, await new_link(d, "acme", "cust_a", endpoints="all"))
        status, html = await ui.get("/ui/portal/")
        for shown in (mine, theirs, tenants_own):
            assert f'data-endpoint="{shown["id"]}"' in html
        assert elsewhere["id"] not in html
        status, html = await ui.get(f"/ui/portal/endpoints/{tenants_own['id']}")
        assert status == 200
        status, html = await ui.get(f"/ui/portal/endpoints/{elsewhere['id']}")
        assert status == 404

        # A long delivery log comes in pages.
        for n in range(30):
            await d.arequest("POST", "/v1/events", {"type": "order.created", "data": {"n": n}}, tenant="acme")
        await r.wait_for(3 + 3 * 30)
        status, html = await ui.get(f"/ui/portal/endpoints/{mine['id']}")
        first = set(re.findall(r'data-delivery="([^"]+)"', html))
        found = re.search(r'<p class="pager"><a href="([^"]+)">', html)
        assert len(first) == 25 and found, html
        status, html = await ui.get(found.group(1).replace("&amp;", "&"))
        rest = set(re.findall(r'data-delivery="([^"]+)"', html))
        assert status == 200 and len(rest) == 6 and not rest & first


async def test_a_portal_session_ends_with_its_link_and_stays_in_the_portal(tierd_daemon):
    d = tierd_daemon(CONFIG)
    token = d.create_tenant("acme")

    # Revoking the link ends the session at its next page.
    link = await new_link(d, "acme", "cust_42")
    async with ConsoleSession(d.url) as ui:
        await enter(ui, link)
        status, html = await ui.get("/ui/portal/")
        assert status == 200
        # Not a console session: console pages send it to the sign-in page.
        status, html = await ui.get("/ui/webhooks")
        assert ui.last_path == "/ui/login"
        # A form without its CSRF token is refused.
        status, html = await ui.post("/ui/portal/endpoints/new", {"url": "https://example.com/"}, csrf=False)
        assert status == 403
        status, answer = await d.arequest("DELETE", f"/v1/portal/links/{link['id']}", tenant="acme")
        assert status == 200 and answer["state"] == "revoked" and answer["sessions_ended"] == 1, answer
        status, html = await ui.get("/ui/portal/")
        assert status == 401
    assert f"portal link {link['id']} of tenant acme (customer cust_42) revoked" in d.logs()

    # A revoked link, not yet used, cannot be used.
    link = await new_link(d, "acme", "cust_42")
    await d.arequest("DELETE", f"/v1/portal/links/{link['id']}", tenant="acme")
    async with ConsoleSession(d.url) as ui:
        status, html = await ui.get(path_of(link))
        assert status == 410 and "revoked" in html

    # An expired link is refused; a session outlives nothing of its link.
    link = await new_link(d, "acme", "cust_42", expires_in="1m")
    used = await new_link(d, "acme", "cust_42", expires_in="1m")
    async with ConsoleSession(d.url) as ui, ConsoleSession(d.url) as opened:
        await enter(opened, used)
        status, html = await ui.get(path_of(link))
        assert status == 200
        await raw_sql(
            d.config,
            "UPDATE webhook_portal_links SET expires_at=? WHERE id IN (?,?)",
            (time.time() - 1, link["id"], used["id"]),
        )
        status, html = await ui.post(path_of(link))
        assert status == 410 and "expired" in html
        assert await link_state(d, "acme", link["id"]) == "expired"
        status, html = await opened.get("/ui/portal/")
        assert status == 401
    assert "refused" in d.logs()

    # Two browsers pressing "Open the portal" at once: one gets in.
    link = await new_link(d, "acme", "cust_42")
    async with ConsoleSession(d.url) as one, ConsoleSession(d.url) as two:
        for browser in (one, two):
            await browser.get(path_of(link))
        answers = await asyncio.gather(one.post(path_of(link)), two.post(path_of(link)))
        assert sorted(status for status, _ in answers) == [200, 410]

    # An unknown token is a 404.
    async with ConsoleSession(d.url) as ui:
        status, html = await ui.get("/ui/portal/enter/" + "x" * 43)
        assert status == 404 and "not valid" in html

    # A console session is not a portal session; signing out of the portal ends it.
    async with ConsoleSession(d.url) as ui:
        await ui.sign_in(token)
        status, html = await ui.get("/ui/portal/")
        assert status == 401
        await enter(ui, await new_link(d, "acme", "cust_42"))
        status, html = await ui.post("/ui/portal/logout")
        assert ui.last_path == "/ui/portal/signed-out" and "Signed out" in html
        status, html = await ui.get("/ui/portal/")
        assert status == 401
        status, html = await ui.get("/ui/")  # the console session is untouched
        assert status == 200 and ui.last_path == "/ui/"


async def test_links_api_refuses_bad_input(tierd_daemon):
    d = tierd_daemon({**CONFIG, "server": {"public_url": "https://hooks.example.com/tierd/"}})
    d.create_tenant("acme")
    d.create_tenant("other")
    link = await new_link(d, "acme", "cust_42", expires_in="7d")
    assert link["url"].startswith("https://hooks.example.com/tierd/ui/portal/enter/")
    for body, where in [
        ({}, "customer"),
        ({"customer": ""}, "customer"),
        ({"customer": "x", "expires_in": "0s"}, "expires_in"),
        ({"customer": "x", "expires_in": 0}, "expires_in"),
        ({"customer": "x", "expires_in": "30d"}, "expires_in"),
        ({"customer": "x", "endpoints": "some"}, "endpoints"),
        ({"customer": "x", "url": "https://evil"}, "url"),
    ]:
        status, answer = await d.arequest("POST", "/v1/portal/links", body, tenant="acme")
        assert status == 422, (body, answer)
        assert answer["error"]["details"][0]["path"] == where, (body, answer)
    status, answer = await d.arequest("POST", "/v1/portal/links", {"customer": "x"})  # admin, no tenant
    assert status == 400 and answer["error"]["code"] == "tenant_required"

    # Listed without tokens; paged; another tenant's link is not there to revoke.
    for _ in range(2):
        await new_link(d, "acme", "cust_43")
    status, page = await d.arequest("GET", "/v1/portal/links?limit=2", tenant="acme")
    assert status == 200 and len(page["data"]) == 2 and page["next_cursor"]
    assert page["data"][0]["customer"] == "cust_43" and "url" not in page["data"][0]
    status, rest = await d.arequest("GET", f"/v1/portal/links?limit=2&cursor={page['next_cursor']}", tenant="acme")
    assert [x["id"] for x in rest["data"]] == [link["id"]] and rest["next_cursor"] is None
    assert rest["data"][0]["state"] == "active" and rest["data"][0]["created_by"].startswith("admin")
    assert link["url"].rsplit("/", 1)[1] not in json.dumps(page) + json.dumps(rest)
    status, answer = await d.arequest("DELETE", f"/v1/portal/links/{link['id']}", tenant="other")
    assert status == 404
    status, answer = await d.arequest("DELETE", "/v1/portal/links/plk_nope", tenant="acme")
    assert status == 404

    # With the console off, there is no portal to link to.
    off = tierd_daemon({**CONFIG, "server": {"ui": False}}, name="off")
    off.create_tenant("acme")
    status, answer = await off.arequest("POST", "/v1/portal/links", {"customer": "x"}, tenant="acme")
    assert status == 409 and answer["error"]["code"] == "ui_disabled" and "server.ui" in answer["error"]["message"]


async def test_cli(tierd_daemon):
    d = tierd_daemon(CONFIG)
    d.create_tenant("acme")

    async def cli(*args):
        return await asyncio.to_thread(d.cli, "webhooks", *args)

    made = await cli("portal-link", "--tenant", "acme", "--customer", "cust_42", "--expires-in", "2h")
    assert made.returncode == 0, made.stderr
    url = made.stdout.strip()
    assert url.startswith(d.url + "/ui/portal/enter/") and "cust_42" in made.stderr
    made = await cli("portal-link", "--tenant", "acme", "--customer", "cust_7", "--endpoints", "all", "--json")
    second = json.loads(made.stdout)
    assert second["endpoints"] == "all"
    listed = await cli("portal-links", "--tenant", "acme", "--json")
    assert [x["customer"] for x in json.loads(listed.stdout)] == ["cust_7", "cust_42"]
    table = await cli("portal-links", "--tenant", "acme")
    assert "cust_42" in table.stdout and "active" in table.stdout
    revoked = await cli("portal-revoke", second["id"], "--tenant", "acme")
    assert revoked.returncode == 0 and f"revoked {second['id']}" in revoked.stdout
    listed = json.loads((await cli("portal-links", "--tenant", "acme", "--json")).stdout)
    assert listed[0]["state"] == "revoked"
    refused = await cli("portal-link", "--tenant", "acme", "--customer", "cust_42", "--expires-in", "30d")
    assert refused.returncode != 0 and "expires_in" in refused.stderr
    added = await cli("add", "https://example.com/hook", "--owner", "cust_42", "--tenant", "acme", "--json")
    assert json.loads(added.stdout)["owner"] == "cust_42"
    owned = await cli("list", "--owner", "cust_42", "--tenant", "acme", "--json")
    assert len(json.loads(owned.stdout)) == 1
    assert json.loads((await cli("list", "--owner", "cust_7", "--tenant", "acme", "--json")).stdout) == []
