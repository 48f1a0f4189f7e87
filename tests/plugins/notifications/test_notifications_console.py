"""The notifications pages of the web console, against a real daemon process
and real HTTP receivers as channels (one answers 200, one refuses with 400).

- the history shows a delivered and a failed message; the message page shows
  the failed attempt's error; another tenant's message is a 404 page;
- a silence added through the form mutes the next matching notification (seen
  through the API) and not the others; expiring it lets them through again;
- a matcher the API refuses (a bad regex) or the form cannot read shows the
  error with the form kept, and nothing is created;
- a POST without the CSRF token is refused with 403.
"""

from __future__ import annotations

import asyncio
import html as htmllib
import re

import pytest
from aiohttp import web
from conftest import until

from tierd.plugins.notifications.console import format_matchers, parse_matchers
from tierd.testing import ADMIN_TOKEN, ConsoleSession


@pytest.fixture
async def setup(tierd_daemon, receiver):
    """A daemon whose invoice.* events go to a good and a refusing webhook; tenants acme and globex."""
    good, bad = await receiver(), await receiver()

    async def refuse(request, body):
        return web.Response(status=400, text="bad hook token")

    bad.responder = refuse
    config = {
        "notifications": {
            "channels": {"good": {"type": "webhook", "url": good.url}, "bad": {"type": "webhook", "url": bad.url}},
            "routes": [{"name": "invoices", "match": {"type": "invoice.*"}, "channels": ["good", "bad"]}],
            "retry": {"max_attempts": 1, "backoff": "100ms", "max_backoff": "1s"},
        }
    }
    d = await asyncio.to_thread(tierd_daemon, config)
    d.tokens = {name: await asyncio.to_thread(d.create_tenant, name) for name in ("acme", "globex")}
    return d


async def publish(d, tenant: str, data: dict) -> str:
    status, body = await d.arequest(
        "POST", "/v1/events", {"type": "invoice.paid", "data": data}, token=d.tokens[tenant]
    )
    assert status == 202, body
    return body["id"]


async def outcomes(d, tenant: str, event_id: str, count: int = 2) -> dict[str, dict]:
    """The event's notifications by channel, once ``count`` of them are no longer pending."""

    async def settled():
        status, body = await d.arequest("GET", f"/v1/notifications?event={event_id}", token=d.tokens[tenant])
        assert status == 200, body
        done = [n for n in body["data"] if n["status"] != "pending"]
        return {n["channel"]: n for n in done} if len(done) == count else None

    return await until(settled, what=f"notifications of {event_id}")


async def test_the_history_shows_delivered_and_failed_messages_with_the_error(setup):
    d = setup
    event = await publish(d, "acme", {"amount": 5})
    sent = await outcomes(d, "acme", event)
    assert (sent["good"]["status"], sent["bad"]["status"]) == ("delivered", "failed")
    failed = sent["bad"]

    async with ConsoleSession(d.url) as ui:
        await ui.sign_in(d.tokens["acme"])
        status, page = await ui.get("/ui/notifications")
        assert status == 200
        rows = dict(re.findall(r'<tr data-notification="([^"]+)">(.*?)</tr>', page, re.S))
        assert set(rows) == {sent["good"]["id"], failed["id"]}
        assert 's-delivered">delivered' in rows[sent["good"]["id"]]
        assert 's-failed">failed' in rows[failed["id"]] and "invoice.paid" in rows[failed["id"]]
        assert f'href="/ui/notifications/{failed["id"]}"' in rows[failed["id"]]

        # The API's filters, as a GET form.
        status, page = await ui.get("/ui/notifications?status=failed")
        assert re.findall(r'data-notification="([^"]+)"', page) == [failed["id"]]
        status, page = await ui.get("/ui/notifications?channel=good&status=failed")
        assert "data-notification" not in page and "No notifications match" in page

        # The message page: its attempt and the channel's answer.
        status, page = await ui.get(f"/ui/notifications/{failed['id']}")
        assert status == 200
        detail = failed["attempts"][0]["detail"]
        assert "bad hook token" in detail and htmllib.escape(detail) in page
        assert 's-failed">failed' in page and "invoices" in page

    async with ConsoleSession(d.url) as ui:
        await ui.sign_in(d.tokens["globex"])
        status, page = await ui.get("/ui/notifications")
        assert status == 200 and "data-notification" not in page
        status, page = await ui.get(f"/ui/notifications/{failed['id']}")
        assert status == 404 and "not_found" in page

    async with ConsoleSession(d.url) as ui:
        # The admin sees every tenant's, with the tenant; the overview counts the failure.
        await ui.sign_in(ADMIN_TOKEN)
        status, page = await ui.get("/ui/notifications")
        assert failed["id"] in page and "<td>acme</td>" in page
        status, page = await ui.get("/ui/notifications?tenant=globex")
        assert "data-notification" not in page
        status, page = await ui.get("/ui/")
        assert status == 200
        panel = page[page.index('<h2><a href="/ui/notifications">') :]
        assert re.search(r'<p class="big">1</p>\s*<p class="muted">failed in the last 24 h', panel)
        assert f'href="/ui/notifications/{failed["id"]}"' in panel


def silence_rows(page: str) -> dict[str, str]:
    return dict(re.findall(r'<tr data-silence="([^"]+)">(.*?)</tr>', page, re.S))


async def test_a_silence_added_in_the_form_mutes_then_expiring_it_lets_through(setup):
    d = setup
    async with ConsoleSession(d.url) as ui:
        await ui.sign_in(d.tokens["acme"])
        await ui.get("/ui/notifications/silences")
        status, page = await ui.post(
            "/ui/notifications/silences",
            {"matchers": "type=invoice.*\namount>1000\n", "duration": "1h", "comment": "month-end run"},
        )
        assert status == 200 and ui.last_path == "/ui/notifications/silences"
        assert "created until" in page
        (silence_id, row), *more = silence_rows(page).items()
        assert not more
        assert "<code>type=invoice.*</code>" in row and "<code>amount&gt;1000</code>" in row
        assert "month-end run" in row and 's-active">active' in row

        # A big invoice is muted on both channels; a small one goes out.
        big = await outcomes(d, "acme", await publish(d, "acme", {"amount": "5000.00"}))
        assert {n["status"] for n in big.values()} == {"muted"}
        assert silence_id in big["good"]["reason"]
        small = await outcomes(d, "acme", await publish(d, "acme", {"amount": 10}))
        assert small["good"]["status"] == "delivered"
        status, page = await ui.get("/ui/notifications?status=muted")
        assert set(re.findall(r'data-notification="([^"]+)"', page)) == {n["id"] for n in big.values()}

        # Another tenant can neither see nor expire it.
        async with ConsoleSession(d.url) as other:
            await other.sign_in(d.tokens["globex"])
            status, page = await other.get("/ui/notifications/silences")
            assert silence_id not in page
            status, page = await other.post(f"/ui/notifications/silences/{silence_id}/expire")
            assert status == 200 and 'class="flash error"' in page and f"no silence {silence_id}" in page
        status, body = await d.arequest("GET", "/v1/notifications/silences", token=d.tokens["acme"])
        assert [s["id"] for s in body["data"]] == [silence_id]

        # Expired: gone from the list, and the next big invoice goes out.
        await ui.get("/ui/notifications/silences")
        status, page = await ui.post(f"/ui/notifications/silences/{silence_id}/expire")
        assert status == 200 and f"Silence {silence_id} expired" in page
        assert silence_id not in silence_rows(page)
        status, body = await d.arequest("GET", "/v1/notifications/silences", token=d.tokens["acme"])
        assert body["data"] == []
        again = await outcomes(d, "acme", await publish(d, "acme", {"amount": "7000.00"}))
        assert again["good"]["status"] == "delivered"


async def test_a_bad_matcher_shows_the_error_and_creates_nothing(setup):
    d = setup
    async with ConsoleSession(d.url) as ui:
        await ui.sign_in(d.tokens["acme"])
        await ui.get("/ui/notifications/silences")

        # The API refuses the regex: its message, the form kept, nothing made.
        status, page = await ui.post(
            "/ui/notifications/silences", {"matchers": "reference=~INV-[0-9", "duration": "1h", "comment": "keep me"}
        )
        assert status == 422 and 'class="flash error"' in page
        assert "invalid regex" in page and "reference" in page
        assert ">reference=~INV-[0-9</textarea>" in page and 'value="keep me"' in page

        # Lines the form cannot read, and times the API refuses.
        for fields, message in (
            ({"matchers": "just words", "duration": "1h"}, "is not name=value"),
            ({"matchers": "channel=~ops", "duration": "1h"}, "channel takes only ="),
            ({"matchers": "type=x", "duration": "soon"}, "invalid duration"),
            ({"matchers": "type=x", "ends_at": "2001-01-01T00:00:00Z"}, "must be in the future"),
            ({"matchers": "type=x", "ends_at": "tomorrow"}, "ISO-8601"),
        ):
            status, page = await ui.post("/ui/notifications/silences", fields)
            assert status in (400, 422) and message in page, (fields, status)
        status, body = await d.arequest("GET", "/v1/notifications/silences?all=1", token=d.tokens["acme"])
        assert body["data"] == []

        # No CSRF token: refused before anything happens.
        status, page = await ui.post("/ui/notifications/silences", {"matchers": "type=x", "duration": "1h"}, csrf=False)
        assert status == 403 and "csrf_failed" in page
        status, body = await d.arequest("GET", "/v1/notifications/silences?all=1", token=d.tokens["acme"])
        assert body["data"] == []


def test_matcher_lines_read_into_the_api_body_and_back():
    text = (
        "type=invoice.*\ntype=payment.failed\n# a comment\n\ntenant=acme\nchannel=ops\n"
        "amount>=1000\ncurrency!=USD\nref=~INV-.*\ndata.note=x"
    )
    matchers = parse_matchers(text)
    assert matchers == {
        "type": ["invoice.*", "payment.failed"],
        "tenant": ["acme"],
        "channel": "ops",
        "data": {"amount": {"gte": "1000"}, "currency": {"ne": "USD"}, "ref": {"regex": "INV-.*"}, "note": "x"},
    }
    assert parse_matchers("\n".join(format_matchers(matchers))) == matchers
