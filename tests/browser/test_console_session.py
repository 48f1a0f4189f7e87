"""Signing in and out of the console, and forms that do not come from it.

What a person sees in Chromium: the sign-in form, the session cookie's
flags, sign-out ending the session on the server (the old cookie no longer
opens a page), and a form posted without its CSRF token, or from another
site, refused with nothing changed.
"""

from __future__ import annotations

import pytest

from tierd.testing import ADMIN_TOKEN

from .conftest import sign_in

#: Browser tests check the console's HTML and scripts, which do not depend on the storage:
#: they run in the SQLite pass only.
pytestmark = pytest.mark.sqlite_only("browser tests check HTML, not storage")


def test_sign_in_shows_the_overview_and_sign_out_ends_the_session(page, daemon):
    token = daemon.create_tenant("acme")
    page.goto(daemon.url + "/ui/")
    assert page.url == daemon.url + "/ui/login"  # no session: the sign-in page

    page.fill("input[name=token]", "not-a-token")
    with page.expect_navigation() as refused:
        page.click("button:has-text('Sign in')")
    assert refused.value.status == 401, page.inner_text("body")[:500]
    assert "That token is not valid" in page.inner_text("main")

    sign_in(page, daemon, token)
    assert page.inner_text("h1").startswith("Overview")
    assert page.inner_text(".who .badge") == "tenant: acme"
    (cookie,) = [c for c in page.context.cookies() if c["name"] == "tierd_session"]
    # Out of scripts' reach, never sent by another site's page; Secure is for TLS only.
    assert cookie["httpOnly"] and cookie["sameSite"] == "Strict" and cookie["path"] == "/ui"

    page.click("button:has-text('Sign out')")
    page.wait_for_url(daemon.url + "/ui/login")
    page.goto(daemon.url + "/ui/")
    assert page.url == daemon.url + "/ui/login"

    # The session ended on the server: the old cookie, put back, opens nothing.
    page.context.add_cookies([cookie])
    page.goto(daemon.url + "/ui/")
    assert page.url == daemon.url + "/ui/login"


def test_a_form_without_its_csrf_token_is_refused_and_changes_nothing(page, daemon):
    sign_in(page, daemon, ADMIN_TOKEN)
    # The sign-out form, its hidden token taken out as a forged form would lack it.
    page.evaluate("document.querySelector('form[action=\"/ui/logout\"] input[name=csrf]').remove()")
    page.click("button:has-text('Sign out')")
    assert "403" in page.inner_text("h1") and "csrf_failed" in page.inner_text("h1")
    assert "CSRF token is missing" in page.inner_text("main")

    page.goto(daemon.url + "/ui/")
    assert page.url == daemon.url + "/ui/" and page.inner_text(".who .badge") == "admin"  # still signed in


def test_a_post_from_another_site_is_refused(page, daemon):
    sign_in(page, daemon, ADMIN_TOKEN)
    token = page.get_attribute("form[action='/ui/logout'] input[name=csrf]", "value")
    assert token

    # A page of another site whose form posts to the console: Chromium sends
    # that site as the Origin (and no SameSite=Strict cookie); the daemon refuses.
    evil = "http://evil.example/"
    form = (
        f'<form method="post" action="{daemon.url}/ui/logout">'
        f'<input type="hidden" name="csrf" value="{token}"><button>Win a prize</button></form>'
    )
    page.route(evil, lambda route: route.fulfill(status=200, content_type="text/html", body=form))
    page.goto(evil)
    with page.expect_response(daemon.url + "/ui/logout") as answer:
        page.click("button:has-text('Win a prize')")
    assert answer.value.status == 403
    assert "origin_not_allowed" in page.content()

    # The same through a script-less client carrying the session's cookie and token:
    # another site's Origin, or a browser saying the request is cross-site.
    foreign = page.request.post(
        daemon.url + "/ui/logout", form={"csrf": token}, headers={"Origin": "https://evil.example"}
    )
    assert foreign.status == 403 and "origin_not_allowed" in foreign.text()
    cross_site = page.request.post(
        daemon.url + "/ui/logout", form={"csrf": token}, headers={"Sec-Fetch-Site": "cross-site"}
    )
    assert cross_site.status == 403 and "csrf_failed" in cross_site.text()

    page.goto(daemon.url + "/ui/")
    assert page.url == daemon.url + "/ui/" and page.inner_text(".who .badge") == "admin"  # still signed in
