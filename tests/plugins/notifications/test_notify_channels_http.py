"""HTTP channels against local receivers that check each service's payload shape."""

import asyncio
import json

import aiohttp
import pytest
from aiohttp import web

from tierd.core.http import parse_retry_after
from tierd.core.registry import Message
from tierd.core.schema import validate
from tierd.plugins.notifications.channels import NtfyChannel, SlackChannel, TeamsChannel, WebhookChannel
from tierd.plugins.notifications.channels.http_post import classify

MSG = Message(
    subject="3 invoices paid",
    body="*acme*: 3 × invoice.paid",
    severity="warning",
    events=[{"id": "evt_1", "type": "invoice.paid", "tenant": "acme", "data": {"amount": "5.00"}}],
    id="ntf_abc",
)


def make(cls, config, http):
    clean, errors = validate(cls.schema, config)
    assert not errors, errors
    return cls("test", clean, http)


@pytest.fixture
async def http():
    async with aiohttp.ClientSession() as session:
        yield session


async def test_slack_block_kit(receiver, http):
    r = await receiver()
    result = await make(SlackChannel, {"url": r.url + "/services/T0/B0/x", "username": "tierd"}, http).send(MSG)
    assert result.outcome == "delivered"
    req = r.requests[0]
    assert req["method"] == "POST" and req["path"] == "/services/T0/B0/x"
    assert req["headers"]["Content-Type"] == "application/json"
    payload = json.loads(req["body"])
    assert payload["text"] == "3 invoices paid" and payload["username"] == "tierd"
    assert "icon_emoji" not in payload  # not configured: the webhook's own icon stays
    header, section, context = payload["blocks"]
    assert header == {"type": "header", "text": {"type": "plain_text", "text": "3 invoices paid", "emoji": True}}
    assert section == {"type": "section", "text": {"type": "mrkdwn", "text": "*acme*: 3 × invoice.paid"}}
    assert context["type"] == "context" and context["elements"][0]["type"] == "mrkdwn"
    assert "warning" in context["elements"][0]["text"]


async def test_slack_clips_to_block_limits(receiver, http):
    r = await receiver()
    long = Message(subject="s" * 400, body="b" * 5000)
    await make(SlackChannel, {"url": r.url}, http).send(long)
    blocks = json.loads(r.requests[0]["body"])["blocks"]
    assert len(blocks[0]["text"]["text"]) == 150 and len(blocks[1]["text"]["text"]) == 3000


async def test_teams_adaptive_card(receiver, http):
    r = await receiver()
    r.responder = lambda req, body: _respond(202, "")  # Workflows answers 202 Accepted
    result = await make(TeamsChannel, {"url": r.url + "/workflows/abc"}, http).send(MSG)
    assert result.outcome == "delivered"
    payload = json.loads(r.requests[0]["body"])
    assert payload["type"] == "message"
    (attachment,) = payload["attachments"]
    assert attachment["contentType"] == "application/vnd.microsoft.card.adaptive"
    card = attachment["content"]
    assert card["type"] == "AdaptiveCard" and card["version"] == "1.4"
    assert card["$schema"] == "http://adaptivecards.io/schemas/adaptive-card.json"
    title, text, facts = card["body"]
    assert title["type"] == "TextBlock" and title["text"] == "3 invoices paid" and title["color"] == "Warning"
    assert text["text"] == MSG.body and text["wrap"] is True
    assert {"title": "Notification", "value": "ntf_abc"} in facts["facts"]


async def test_ntfy_json_publish(receiver, http):
    r = await receiver()
    channel = make(NtfyChannel, {"url": r.url, "topic": "tierd-ops", "tags": ["moneybag"], "token": "tk_1"}, http)
    assert (await channel.send(MSG)).outcome == "delivered"
    req = r.requests[0]
    assert req["path"] == "/" and req["headers"]["Authorization"] == "Bearer tk_1"
    assert json.loads(req["body"]) == {
        "topic": "tierd-ops",
        "title": "3 invoices paid",
        "message": MSG.body,
        "priority": 4,
        "tags": ["warning", "moneybag"],
    }
    fixed = make(
        NtfyChannel,
        {
            "url": r.url,
            "topic": "t",
            "priority": 1,
            "username": "u",
            "password": "p",
            "click": "https://erp.example.com/invoices",
        },
        http,
    )
    await fixed.send(MSG)
    assert json.loads(r.requests[1]["body"])["priority"] == 1
    assert json.loads(r.requests[1]["body"])["click"] == "https://erp.example.com/invoices"
    assert r.requests[1]["headers"]["Authorization"] == "Basic dTpw"


async def test_webhook_default_and_templated(receiver, http):
    r = await receiver()
    plain = make(WebhookChannel, {"url": r.url + "/in"}, http)
    assert (await plain.send(MSG)).outcome == "delivered"
    assert json.loads(r.requests[0]["body"]) == {
        "id": "ntf_abc",
        "subject": MSG.subject,
        "body": MSG.body,
        "severity": "warning",
        "events": MSG.events,
    }
    templated = make(
        WebhookChannel,
        {
            "url": r.url + "/in",
            "method": "PUT",
            "headers": {"X-Token": "secret-{{ severity }}", "X-Event": "{{ event.id }}"},
            "body": '{"text": {{ subject | json }}, "n": {{ events | length }},'
            ' "amount": {{ event.data.amount | json }}}',
        },
        http,
    )
    assert (await templated.send(MSG)).outcome == "delivered"
    req = r.requests[1]
    assert req["method"] == "PUT"
    assert req["headers"]["X-Token"] == "secret-warning" and req["headers"]["X-Event"] == "evt_1"
    assert json.loads(req["body"]) == {"text": "3 invoices paid", "n": 1, "amount": "5.00"}


async def test_webhook_bad_body_template_sends_default(receiver, http):
    r = await receiver()
    channel = make(WebhookChannel, {"url": r.url, "body": "{{ subject }} is not json"}, http)
    result = await channel.send(MSG)
    assert result.outcome == "delivered" and "sent the default payload" in result.detail
    assert json.loads(r.requests[0]["body"])["id"] == "ntf_abc"


def test_webhook_template_syntax_error_is_a_config_error():
    _, errors = validate(WebhookChannel.schema, {"url": "http://x", "body": "{{ oops", "headers": {"A": "{% if %}"}})
    assert [e.path for e in errors] == [("body",), ("headers", "A")]


async def _respond(status, text, headers=None):
    return web.Response(status=status, text=text, headers=headers)


@pytest.mark.parametrize(
    "status,headers,outcome,retry_after",
    [
        (200, None, "delivered", None),
        (204, None, "delivered", None),
        (500, None, "retry", None),
        (503, {"Retry-After": "120"}, "retry", 120.0),
        (429, {"Retry-After": "7"}, "retry", 7.0),
        (429, None, "retry", None),
        (408, None, "retry", None),
        (400, None, "failed", None),
        (404, None, "failed", None),
        (410, None, "failed", None),
    ],
)
async def test_status_classification(receiver, http, status, headers, outcome, retry_after):
    r = await receiver()
    r.responder = lambda req, body: _respond(status, "" if status == 204 else "nope", headers)
    result = await make(SlackChannel, {"url": r.url}, http).send(MSG)
    assert (result.outcome, result.retry_after) == (outcome, retry_after)
    assert f"HTTP {status}" in result.detail


async def test_timeout_and_refused_are_transient(receiver, http):
    r = await receiver()

    async def slow(req, body):
        await asyncio.sleep(2)
        return web.Response(text="late")

    r.responder = slow
    result = await make(WebhookChannel, {"url": r.url, "timeout": "200ms"}, http).send(MSG)
    assert result.outcome == "retry" and "timeout" in result.detail
    from conftest import free_port

    refused = await make(WebhookChannel, {"url": f"http://127.0.0.1:{free_port()}"}, http).send(MSG)
    assert refused.outcome == "retry" and "ClientConnectorError" in refused.detail


def test_retry_after_http_date():
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT", now=1445412470.0) == 10.0
    assert parse_retry_after("garbage") is None
    assert classify(302, "").outcome == "failed"  # redirects are not followed: a misconfigured URL


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
async def test_apprise_json_to_receiver(receiver):
    pytest.importorskip("apprise")
    from tierd.plugins.notifications.channels import AppriseChannel

    r = await receiver()
    channel = make(AppriseChannel, {"urls": [r.url.replace("http://", "json://") + "/apprise"]}, None)
    assert (await channel.send(MSG)).outcome == "delivered"
    body = json.loads(r.requests[0]["body"])
    assert body["title"] == "3 invoices paid" and body["message"] == MSG.body and body["type"] == "warning"
    r.responder = lambda req, body: _respond(500, "x")
    assert (await channel.send(MSG)).outcome == "retry"
