"""The web console's core, against a real daemon process: signing in and out,
sessions and what ends them, CSRF, the Host/Origin checks, tenant scoping,
the headers every page carries, and ``server.ui``.

The pages plugins add are tested with their plugins; the browser tests in
``tests/browser`` drive the same flows in Chromium.
"""

from __future__ import annotations

import asyncio
import re

import pytest
from aiohttp import ClientSession
from yarl import URL

from tierd.testing import ADMIN_TOKEN, ConsoleSession, DaemonProcess


@pytest.fixture(scope="module")
def daemon(tmp_path_factory):
    d = DaemonProcess(tmp_path_factory.mktemp("console")).start()
    d.tokens = {name: d.create_tenant(name) for name in ("acme", "globex")}
    yield d
    d.stop()


def set_cookie_of(headers, name: str) -> str:
    return next(v for v in headers.getall("Set-Cookie") if v.startswith(name + "="))


async def test_a_console_page_asks_for_sign_in_and_a_token_opens_a_session(daemon):
    async with ConsoleSession(daemon.url) as ui:
        status, html = await ui.get("/ui/")
        assert status == 200 and ui.last_path == "/ui/login" and 'name="token"' in html

        status, html = await ui.sign_in("not-a-token")
        assert status == 401 and "not valid" in html

        status, html = await ui.sign_in(ADMIN_TOKEN)
        assert status == 200 and ui.last_path == "/ui/"
        assert "<h2>Plugins</h2>" in html and "tierd.plugins.webhooks" in html
    assert "a sign-in from 127.0.0.1 was refused" in daemon.logs()
    assert "console: admin signed in from 127.0.0.1" in daemon.logs()


async def test_the_session_cookie_is_httponly_strict_and_secure_behind_tls(daemon):
    async with ClientSession() as http:
        async with http.get(daemon.url + "/ui/login") as resp:
            csrf = resp.cookies["tierd_csrf"].value
        for proto, secure in (("http", False), ("https", True)):
            async with http.post(
                daemon.url + "/ui/login",
                data={"csrf": csrf, "token": daemon.tokens["acme"]},
                headers={"Cookie": f"tierd_csrf={csrf}", "X-Forwarded-Proto": proto},
                allow_redirects=False,
            ) as resp:
                assert resp.status == 303 and resp.headers["Location"] == "/ui/"
                cookie = set_cookie_of(resp.headers, "tierd_session")
                assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and "Path=/ui" in cookie
                assert ("Secure" in cookie) is secure, cookie
                assert daemon.tokens["acme"] not in cookie  # the token itself is never in the cookie


async def test_every_page_carries_a_strict_policy_and_is_not_cached(daemon):
    async with ClientSession() as http:
        for path in ("/ui/login", "/ui/no-such-page"):
            async with http.get(daemon.url + path) as resp:
                assert resp.headers["Content-Security-Policy"].startswith("default-src 'self'")
                assert "script-src 'self'" in resp.headers["Content-Security-Policy"]
                assert resp.headers["X-Frame-Options"] == "DENY"
                assert resp.headers["Cache-Control"] == "no-store"
                assert resp.headers["Referrer-Policy"] == "same-origin"
        async with http.get(daemon.url + "/ui/no-such-page") as resp:
            assert resp.status == 404 and resp.content_type == "text/html"
            assert "not_found" in await resp.text()
        async with http.get(daemon.url + "/ui/static/tierd.css") as resp:
            assert resp.status == 200 and "text/css" in resp.content_type


async def test_a_post_without_the_sessions_csrf_token_is_refused_and_changes_nothing(daemon):
    async with ConsoleSession(daemon.url) as ui:
        await ui.sign_in(daemon.tokens["acme"])
        for fields in ({}, {"csrf": "forged"}):
            status, html = await ui.post("/ui/logout", fields, csrf=False)
            assert status == 403 and "csrf_failed" in html
        status, _ = await ui.get("/ui/")
        assert status == 200 and ui.last_path == "/ui/"  # still signed in

        # A browser says where a form came from: another site may not post here.
        status, html = await ui.post("/ui/logout", headers={"Sec-Fetch-Site": "cross-site"})
        assert status == 403 and "another site" in html
    assert "POST /ui/logout refused" in daemon.logs()


async def test_a_sign_in_form_from_elsewhere_is_refused(daemon):
    # No CSRF cookie: the form was not one the daemon handed out (login CSRF).
    async with ClientSession() as http:
        async with http.post(daemon.url + "/ui/login", data={"csrf": "x", "token": ADMIN_TOKEN}) as resp:
            assert resp.status == 403 and "csrf_failed" in await resp.text()
            assert "tierd_session" not in resp.cookies


async def test_foreign_host_and_origin_are_refused_as_by_the_api(daemon):
    async with ClientSession() as http:
        async with http.get(daemon.url + "/ui/login", headers={"Host": "evil.example"}) as resp:
            assert resp.status == 403 and (await resp.json())["error"]["code"] == "host_not_allowed"
    async with ConsoleSession(daemon.url) as ui:
        await ui.sign_in(ADMIN_TOKEN)
        status, _ = await ui.post("/ui/logout", headers={"Origin": "http://evil.example"})
        assert status == 403
        status, _ = await ui.get("/ui/")
        assert ui.last_path == "/ui/"  # the session survived the forged post


async def test_a_tenant_sees_its_own_events_and_the_admin_sees_everyones(daemon):
    for tenant, count in (("acme", 3), ("globex", 5)):
        for i in range(count):
            status, _ = daemon.request("POST", "/v1/events", {"type": "order.placed", "data": {"i": i}}, tenant=tenant)
            assert status == 202

    def events_last_hour(html: str) -> int:
        return int(re.search(r'<p class="big">(\d+)</p>\s*<p class="muted">accepted in the last hour', html).group(1))

    async with ConsoleSession(daemon.url) as ui:
        _, html = await ui.sign_in(daemon.tokens["acme"])
        acme = events_last_hour(html)
        assert "<h2>Plugins</h2>" not in html  # the daemon's internals are the admin's
    async with ConsoleSession(daemon.url) as ui:
        _, html = await ui.sign_in(ADMIN_TOKEN)
        everyone = events_last_hour(html)
        _, html = await ui.get("/ui/?tenant=globex")
        globex = events_last_hour(html)
    assert acme >= 3 and globex >= 5 and everyone == acme + globex
    assert acme != globex


async def test_signing_out_and_revoking_the_token_end_the_session(daemon):
    token = daemon.create_tenant("initech")
    async with ConsoleSession(daemon.url) as ui:
        await ui.sign_in(token)
        cookie = ui.session.cookie_jar.filter_cookies(URL(daemon.url + "/ui/"))["tierd_session"].value
        await ui.post("/ui/logout")
        assert ui.last_path == "/ui/login"
    async with ClientSession() as http:  # the old cookie, replayed, opens nothing
        async with http.get(daemon.url + "/ui/", headers={"Cookie": f"tierd_session={cookie}"}) as resp:
            assert resp.url.path == "/ui/login"

    async with ConsoleSession(daemon.url) as ui:
        await ui.sign_in(token)
        status, tokens = daemon.request("GET", "/v1/admin/tenants/initech/tokens")
        for t in tokens["data"]:
            daemon.request("DELETE", f"/v1/admin/tokens/{t['id']}")
        await ui.get("/ui/")
        assert ui.last_path == "/ui/login"


def test_sessions_survive_a_restart_and_server_ui_false_turns_the_console_off(tmp_path):
    d = DaemonProcess(tmp_path).start()
    try:

        async def signed_in() -> tuple[ConsoleSession, str]:
            ui = ConsoleSession(d.url)
            await ui.sign_in(ADMIN_TOKEN)
            return ui, ui.session.cookie_jar.filter_cookies(URL(d.url + "/ui/"))["tierd_session"].value

        async def page_with(cookie: str) -> tuple[int, str]:
            async with ClientSession() as http:
                async with http.get(d.url + "/ui/", headers={"Cookie": f"tierd_session={cookie}"}) as resp:
                    return resp.status, resp.url.path

        async def scenario_start() -> str:
            ui, cookie = await signed_in()
            await ui.session.close()
            return cookie

        cookie = asyncio.run(scenario_start())
        d.restart()
        assert asyncio.run(page_with(cookie)) == (200, "/ui/")

        d.config["server"]["ui"] = False
        d.write_config(d.config)
        assert d.request("POST", "/v1/admin/reload")[0] == 200
        status, body = d.request("GET", "/ui/login")
        assert status == 404 and body["error"]["code"] == "not_found" and "server.ui" in body["error"]["message"]

        d.config["server"]["ui"] = True
        d.write_config(d.config)
        assert d.request("POST", "/v1/admin/reload")[0] == 200
        assert asyncio.run(page_with(cookie)) == (200, "/ui/")
    finally:
        d.stop()


def test_guessing_tokens_from_one_address_is_stopped(tmp_path):
    async def guess() -> list[int]:
        async with ConsoleSession(d.url) as ui:
            statuses = [(await ui.sign_in(f"guess-{i}"))[0] for i in range(11)]
            statuses.append((await ui.sign_in(ADMIN_TOKEN))[0])  # even the right one, for a while
            return statuses

    with DaemonProcess(tmp_path) as d:
        assert asyncio.run(guess()) == [401] * 10 + [429, 429]
        assert "10 failed attempts in 300s" in d.logs()


def test_every_template_and_asset_of_the_console_is_packaged():
    """An installed (not editable) tierd serves the console too: each template
    and asset is matched by a package_data pattern of setup.cfg, relative to the
    package folder that holds it (a pattern's ``*`` does not cross folders)."""
    import configparser
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    config = configparser.ConfigParser()
    config.read(root / "setup.cfg")
    patterns = [p.strip() for p in config["options.package_data"]["*"].split(",")]
    as_regex = [re.compile(re.escape(p).replace(r"\*", "[^/]*") + r"\Z") for p in patterns]
    files = [f for ext in ("html", "css", "js") for f in (root / "tierd").rglob(f"*.{ext}")]
    assert len(files) > 20
    for file in files:
        package = next(p for p in file.parents if (p / "__init__.py").exists())
        relative = file.relative_to(package).as_posix()
        assert any(r.match(relative) for r in as_regex), f"{file.relative_to(root)} is not in the wheel"
