"""The webhooks pages of the console in Chromium: a failed delivery retried by
a click and delivered, each tenant seeing only its own endpoints, an admin
acting on a tenant's endpoint, and a forged form refused.

Data is made through the API (as an integration would); what is checked is
what the pages show and, after a click, what the API and the receiver saw.
"""

from __future__ import annotations

import pytest

from tierd.testing import ADMIN_TOKEN

from .conftest import api, publish, reload_until, sign_in, wait_until

#: Browser tests check the console's HTML and scripts, which do not depend on the storage:
#: they run in the SQLite pass only.
pytestmark = pytest.mark.sqlite_only("browser tests check HTML, not storage")


def statuses(page) -> dict[str, str]:
    """The delivery log as the page shows it: delivery id -> its status badge."""
    rows = page.eval_on_selector_all(
        "table.deliveries tr[data-delivery]",
        "rows => rows.map(r => [r.dataset.delivery, r.querySelector('.status').textContent.trim()])",
    )
    return dict(rows)


def test_a_failed_delivery_retried_from_the_console_is_delivered(page, daemon, receiver):
    token = daemon.create_tenant("acme")
    receiver.status = 500
    endpoint = api(daemon, "POST", "/v1/webhooks", {"url": receiver.url + "/hook"}, token=token)
    publish(daemon, token, number=1)
    publish(daemon, token, number=2)

    sign_in(page, daemon, token)
    page.click("header nav a:has-text('Webhooks')")
    page.click(f"tr[data-endpoint='{endpoint['id']}'] a")
    endpoint_page = daemon.url + f"/ui/webhooks/{endpoint['id']}"
    assert page.url == endpoint_page
    assert page.locator("svg.spark").count() >= 1  # the health chart
    # Both deliveries fail through the retry schedule (500 each time).
    shown = reload_until(
        page, lambda: (s := statuses(page)) and len(s) == 2 and set(s.values()) == {"failed"} and s, "two failed"
    )
    first, second = sorted(shown)
    assert not receiver.answered(200)

    # The receiver is fixed; "Retry" on the first row sends it again.
    receiver.status = 200
    page.click(f"tr[data-delivery='{first}'] button:has-text('Retry')")
    assert page.url.split("?")[0] == endpoint_page
    reload_until(page, lambda: statuses(page).get(first) == "succeeded", f"{first} succeeded")
    assert statuses(page)[second] == "failed"
    assert first in receiver.answered(200)

    # The second from its own page: "Retry now", and its status shows the outcome.
    page.click(f"tr[data-delivery='{second}'] a")
    assert page.url.split("?")[0] == daemon.url + f"/ui/deliveries/{second}"
    assert page.inner_text("#delivery-status") == "failed"
    page.click("button:has-text('Retry now')")
    reload_until(page, lambda: page.inner_text("#delivery-status") == "succeeded", f"{second} succeeded")
    assert second in receiver.answered(200)
    delivered = api(daemon, "GET", f"/v1/webhooks/{endpoint['id']}/deliveries?status=succeeded", token=token)
    assert {d["id"] for d in delivered["data"]} == {first, second}


def test_a_tenant_sees_only_its_own_endpoints(page, daemon, receiver):
    token_a, token_b = daemon.create_tenant("acme"), daemon.create_tenant("bolt")
    theirs = api(daemon, "POST", "/v1/webhooks", {"url": receiver.url + "/a"}, token=token_a)
    ours = api(daemon, "POST", "/v1/webhooks", {"url": receiver.url + "/b"}, token=token_b)
    publish(daemon, token_a)
    wait_until(lambda: receiver.answered(200), what="acme's delivery")
    (their_delivery,) = receiver.answered(200)

    sign_in(page, daemon, token_b)
    page.goto(daemon.url + "/ui/webhooks")
    rows = page.eval_on_selector_all("tr[data-endpoint]", "rows => rows.map(r => r.dataset.endpoint)")
    assert rows == [ours["id"]]
    assert theirs["id"] not in page.content()

    # acme's endpoint and delivery, opened by address, are not there for bolt.
    for path in (f"/ui/webhooks/{theirs['id']}", f"/ui/deliveries/{their_delivery}"):
        answer = page.goto(daemon.url + path)
        assert answer is not None and answer.status == 404
        assert "404" in page.inner_text("h1") and "not_found" in page.inner_text("h1")
        assert theirs["url"] not in page.content()
    # Nor can bolt act on them, even with a valid form of its own session.
    page.goto(daemon.url + "/ui/webhooks")
    csrf = page.get_attribute("input[name=csrf]", "value")
    refused = page.request.post(
        daemon.url + f"/ui/webhooks/{theirs['id']}/enabled", form={"csrf": csrf, "enabled": "false"}
    )
    assert refused.status == 404
    assert api(daemon, "GET", f"/v1/webhooks/{theirs['id']}", token=token_a)["enabled"] is True


def test_the_admin_disables_a_tenants_endpoint_and_a_forged_form_changes_nothing(page, daemon, receiver):
    token = daemon.create_tenant("acme")
    endpoint = api(daemon, "POST", "/v1/webhooks", {"url": receiver.url + "/hook"}, token=token)

    sign_in(page, daemon, ADMIN_TOKEN)
    page.goto(daemon.url + "/ui/webhooks")  # every tenant's endpoints
    page.click(f"tr[data-endpoint='{endpoint['id']}'] a")

    # "Send test" sends a webhook.test now and says how the receiver answered.
    page.click("button:has-text('Send test')")
    assert "success" in page.inner_text(".flash.ok")
    assert wait_until(lambda: receiver.bodies(), what="the test send")[-1]["type"] == "webhook.test"

    # The Disable form without its hidden CSRF token: refused, the endpoint untouched.
    page.evaluate("document.querySelectorAll('input[name=csrf]').forEach(e => e.remove())")
    page.click("button:has-text('Disable')")
    assert "403" in page.inner_text("h1") and "csrf_failed" in page.inner_text("h1")
    assert api(daemon, "GET", f"/v1/webhooks/{endpoint['id']}", token=token)["enabled"] is True

    # The page as served: Disable (confirmed) works, and the page says so.
    page.go_back()
    page.reload()
    page.click("button:has-text('Disable')")
    assert "disabled" in page.inner_text("#endpoint-state")
    assert api(daemon, "GET", f"/v1/webhooks/{endpoint['id']}", token=token)["enabled"] is False
    page.click("button:has-text('Enable')")
    assert api(daemon, "GET", f"/v1/webhooks/{endpoint['id']}", token=token)["enabled"] is True


def test_the_admin_picks_a_tenant_in_the_top_bar(page, daemon, receiver):
    tokens = {name: daemon.create_tenant(name) for name in ("acme", "bolt")}
    ids = {
        name: api(daemon, "POST", "/v1/webhooks", {"url": receiver.url + "/" + name}, token=token)["id"]
        for name, token in tokens.items()
    }

    sign_in(page, daemon, ADMIN_TOKEN)
    page.goto(daemon.url + "/ui/webhooks")
    listed = page.eval_on_selector_all("tr[data-endpoint]", "rows => rows.map(r => r.dataset.endpoint)")
    assert sorted(listed) == sorted(ids.values())

    # Choosing a tenant sends the picker's form (the console's one script).
    with page.expect_navigation():
        page.select_option("select[name=tenant]", "bolt")
    assert page.url == daemon.url + "/ui/webhooks?tenant=bolt"
    listed = page.eval_on_selector_all("tr[data-endpoint]", "rows => rows.map(r => r.dataset.endpoint)")
    assert listed == [ids["bolt"]]
    # The pick holds as the admin moves around the console.
    page.click("header nav a:has-text('Overview')")
    assert page.url == daemon.url + "/ui/?tenant=bolt" and page.inner_text("h1") == "Overview · bolt"
