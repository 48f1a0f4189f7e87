"""The webhooks portal in Chromium, as a tenant's customer uses it: a link
from the API opened once, an endpoint added, its secret shown once (and it is
the one that signs), a failed delivery retried, and nothing of the tenant's
beyond the customer's own endpoints; and a link made on the console's page
for them, then revoked there, which ends the customer's session.
"""

from __future__ import annotations

import pytest

from tierd.plugins.webhooks import verify

from .conftest import api, publish, reload_until, sign_in, wait_until

#: Browser tests check the console's HTML and scripts, which do not depend on the storage:
#: they run in the SQLite pass only.
pytestmark = pytest.mark.sqlite_only("browser tests check HTML, not storage")


def test_a_customer_adds_an_endpoint_through_a_portal_link(page, new_page, daemon, receiver):
    token = daemon.create_tenant("acme")
    tenants_own = api(daemon, "POST", "/v1/webhooks", {"url": receiver.url + "/acme"}, token=token)
    link = api(
        daemon, "POST", "/v1/portal/links", {"customer": "c1", "endpoints": "own", "expires_in": "1h"}, token=token
    )
    assert link["url"].startswith(daemon.url + "/ui/portal/enter/")

    # Opening the link shows what it is for; only the button redeems it.
    page.goto(link["url"])
    assert "c1" in page.inner_text("main")
    page.click("button:has-text('Open the portal')")
    assert page.url == daemon.url + "/ui/portal/"
    assert page.locator("tr[data-endpoint]").count() == 0  # the tenant's own endpoint is not c1's

    page.click("a:has-text('Add an endpoint')")
    page.fill("input[name=url]", receiver.url + "/c1")
    page.fill("input[name=description]", "c1's billing")
    page.fill("input[name=event_types]", "invoice.*")
    page.click("button:has-text('Add')")
    secret = page.inner_text(".secret").strip()
    assert secret.startswith("whsec_")
    owned = api(daemon, "GET", "/v1/webhooks?owner=c1", token=token)["data"]
    assert [(e["url"], e["event_types"]) for e in owned] == [(receiver.url + "/c1", ["invoice.*"])]
    endpoint_id = owned[0]["id"]
    assert endpoint_id in page.inner_text("main")

    # Shown once: the endpoint's page, opened again from the list, does not show it.
    page.goto(daemon.url + "/ui/portal/")
    page.click(f"tr[data-endpoint='{endpoint_id}'] a")
    assert page.locator(".secret").count() == 0 and secret not in page.content()

    # "Rotate secret" shows the new one once; it is the one that signs from now on.
    page.click("button:has-text('Rotate secret')")
    rotated = page.inner_text(".secret").strip()
    assert rotated.startswith("whsec_") and rotated != secret
    secret = rotated
    page.goto(daemon.url + "/ui/portal/")
    page.click(f"tr[data-endpoint='{endpoint_id}'] a")
    assert page.locator(".secret").count() == 0

    # A delivery fails against the customer's receiver, then Retry delivers it,
    # signed with the secret the page showed.
    receiver.status = 500
    publish(daemon, token, "invoice.paid", number=7)
    reload_until(page, lambda: page.locator("tr[data-delivery] .status:has-text('failed')").count() == 1, "failed")
    receiver.status = 200
    page.click("tr[data-delivery] button:has-text('Retry')")
    reload_until(page, lambda: page.locator("tr[data-delivery] .status:has-text('succeeded')").count() == 1, "retried")
    delivered = wait_until(lambda: [r for r in receiver.requests if r["path"] == "/c1" and r["status"] == 200])
    body = verify(secret, delivered[-1]["body"], delivered[-1]["headers"])
    assert isinstance(body, dict) and body["type"] == "invoice.paid" and body["data"] == {"number": 7}

    # The tenant's other endpoint is out of the customer's reach, as is the console.
    answer = page.goto(daemon.url + f"/ui/portal/endpoints/{tenants_own['id']}")
    assert answer is not None and answer.status == 404
    assert tenants_own["url"] not in page.content()
    page.goto(daemon.url + "/ui/webhooks")
    assert page.url == daemon.url + "/ui/login"

    # Signing out ends the portal session.
    page.goto(daemon.url + "/ui/portal/")
    page.click("button:has-text('Sign out')")
    answer = page.goto(daemon.url + "/ui/portal/")
    assert answer is not None and answer.status == 401

    # The link opened the portal once: in another browser it is refused.
    other = new_page()
    answer = other.goto(link["url"])
    assert answer is not None and answer.status == 410
    assert "already used" in other.inner_text("main")
    assert other.locator("button:has-text('Open the portal')").count() == 0


def test_a_tenant_makes_a_link_in_the_console_and_revoking_it_ends_the_portal_session(page, new_page, daemon):
    token = daemon.create_tenant("acme")
    sign_in(page, daemon, token)
    page.click("header nav a:has-text('Webhooks')")
    page.click("a:has-text('Portal links')")
    page.fill("input[name=customer]", "c2")
    page.click("button:has-text('Make a link')")
    url = page.inner_text("#portal-link-url").strip()
    assert url.startswith(daemon.url + "/ui/portal/enter/")

    # The customer, in a browser of its own.
    customer = new_page()
    customer.goto(url)
    customer.click("button:has-text('Open the portal')")
    assert customer.url == daemon.url + "/ui/portal/"

    # The tenant sees the link used, and revokes it: the customer's next page is refused.
    page.goto(daemon.url + "/ui/webhooks/portal-links")
    (row,) = page.locator("tr[data-link]").all()
    assert "c2" in row.inner_text() and "redeemed" in row.inner_text()
    row.locator("button:has-text('Revoke')").click()
    assert "revoked" in page.locator("tr[data-link]").first.inner_text()
    answer = customer.goto(daemon.url + "/ui/portal/")
    assert answer is not None and answer.status == 401
    assert url not in page.content()  # the URL was shown once, when it was made
