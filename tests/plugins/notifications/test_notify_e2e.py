"""End to end: the daemon as a subprocess with a YAML routing tree, a real
SMTP server, chat receivers and a third-party channel package."""

import asyncio
import datetime as dt
import json

import pytest
from aiohttp import web
from conftest import example_plugin, until
from notify_helpers import PASSWORD, Certs, SmtpServer


@pytest.fixture(scope="module")
def example_channel():
    """tierd_daemon() arguments loading the example channel package by path (not installed)."""
    return {"plugins": ["tierd_example_channel"], "pythonpath": [example_plugin("tierd-example-channel")]}


@pytest.fixture
def smtp(tmp_path):
    certs = Certs(tmp_path)
    server = SmtpServer(certs, "starttls").start()
    server.ca_file = certs.ca_file
    yield server
    server.stop()


def notifications_config(smtp, audit_path):
    return {
        "channels": {
            "ops-mail": smtp.channel_config(smtp.ca_file, password="${SMTP_PASSWORD}"),
            "team-chat": {"type": "slack", "url": "${SLACK_WEBHOOK_URL}"},
            "audit": {"type": "jsonl", "path": str(audit_path)},
        },
        "operator_alerts": "ops-mail",
        "operator_group_wait": "1s",
        "routes": [
            {
                "name": "big-invoices",
                "match": {"type": "invoice.*", "tenant": "acme", "data": {"amount": {"gt": 1000}}},
                "channels": ["ops-mail", "team-chat"],
                "continue": True,
                "subject": "Big invoice {{ data.number }}: {{ data.amount }} {{ data.currency }}",
            },
            {
                "name": "payment-bursts",
                "match": {"type": "payment.failed"},
                "channels": ["team-chat"],
                "group_by": ["type"],
                "group_wait": "3s",
                "group_interval": "1m",
            },
            {"name": "audit", "match": {"type": "*"}, "channels": ["audit"]},
        ],
        "retry": {"max_attempts": 10, "backoff": "300ms", "max_backoff": "1s"},
    }


async def test_end_to_end(tierd_daemon, receiver, smtp, tmp_path, example_channel):
    slack = await receiver()
    audit = tmp_path / "audit.jsonl"
    teams, ntfy = await receiver(), await receiver()
    cfg = notifications_config(smtp, audit)
    cfg["channels"] |= {
        "teams-ops": {"type": "teams", "url": teams.url + "/workflows/1"},
        "phone": {"type": "ntfy", "url": ntfy.url, "topic": "tierd-ops"},
    }
    cfg["routes"][0]["channels"] += ["teams-ops", "phone"]
    d = tierd_daemon(
        {"notifications": cfg},
        env={"SMTP_PASSWORD": PASSWORD, "SLACK_WEBHOOK_URL": slack.url + "/services/T/B/X"},
        **example_channel,
    )
    acme = await asyncio.to_thread(d.create_tenant, "acme")
    other = await asyncio.to_thread(d.create_tenant, "other")

    async def post(type_, data, token=acme):
        status, body = await d.arequest("POST", "/v1/events", {"type": type_, "data": data}, token=token)
        assert status == 202, body
        return body

    async def history(token=None, **params):
        query = "&".join(f"{k}={v}" for k, v in params.items())
        status, body = await d.arequest("GET", f"/v1/notifications?{query}", token=token)
        assert status == 200, body
        return body["data"]

    # 1. A big invoice reaches mail and chat (and, by continue, the audit file); a small one only the audit.
    big = await post("invoice.paid", {"number": "INV-7", "amount": "5000.00", "currency": "EUR"})
    await post("invoice.paid", {"number": "INV-8", "amount": "10.00", "currency": "EUR"})
    await until(lambda: len(smtp.messages) == 1 and len(slack.requests) == 1, what="mail and chat")
    assert smtp.messages[0]["Subject"] == "Big invoice INV-7: 5000.00 EUR"
    assert "INV-7" in smtp.messages[0].get_body(("plain",)).get_content()
    assert "INV-7" in smtp.messages[0].get_body(("html",)).get_content()
    chat = slack.json_bodies()[0]
    assert chat["text"] == "Big invoice INV-7: 5000.00 EUR" and chat["blocks"][0]["type"] == "header"
    await until(lambda: teams.requests and ntfy.requests, what="teams and ntfy")
    card = teams.json_bodies()[0]["attachments"][0]
    assert card["contentType"] == "application/vnd.microsoft.card.adaptive"
    assert card["content"]["body"][0]["text"] == "Big invoice INV-7: 5000.00 EUR"
    push = ntfy.json_bodies()[0]
    assert (push["topic"], push["title"], push["priority"]) == ("tierd-ops", "Big invoice INV-7: 5000.00 EUR", 3)
    await until(lambda: audit.exists() and len(audit.read_text().splitlines()) == 2, what="third-party channel")
    assert [json.loads(line)["events"][0]["data"]["number"] for line in audit.read_text().splitlines()] == [
        "INV-7",
        "INV-8",
    ]
    rows = await until(lambda: _rows_for(history, big["id"], 5, status="delivered"), what="recorded outcomes")
    assert sorted((r["channel"], r["status"], r["route"]) for r in rows) == [
        ("audit", "delivered", "audit"),
        ("ops-mail", "delivered", "big-invoices"),
        ("phone", "delivered", "big-invoices"),
        ("team-chat", "delivered", "big-invoices"),
        ("teams-ops", "delivered", "big-invoices"),
    ]
    assert all(r["attempts"][0]["outcome"] == "delivered" for r in rows)

    # 2. A burst of 50 similar events arrives as one digest.
    await asyncio.gather(*(post("payment.failed", {"payment": f"p{i}"}) for i in range(50)))
    await until(lambda: len(slack.requests) == 2, what="the digest")
    digest = slack.json_bodies()[1]
    assert digest["text"] == "50 × payment.failed (acme)"
    await asyncio.sleep(0.5)
    assert len(slack.requests) == 2
    (digest_row,) = await history(kind="digest")
    assert digest_row["event_count"] == 50 and len(digest_row["event_ids"]) == 50
    assert digest_row["status"] == "delivered"

    # 3. A silence created by the tenant mutes its notifications; they are recorded as muted.
    ends = (dt.datetime.now(dt.UTC) + dt.timedelta(hours=1)).isoformat()
    status, silence = await d.arequest(
        "POST",
        "/v1/notifications/silences",
        {"matchers": {"type": "invoice.*"}, "ends_at": ends, "comment": "month end"},
        token=acme,
    )
    assert status == 201 and silence["tenant"] == "acme"
    muted = await post("invoice.paid", {"number": "INV-9", "amount": "9000", "currency": "EUR"})
    rows = await until(lambda: _rows_for(history, muted["id"], 5), what="muted rows")
    assert {r["status"] for r in rows} == {"muted"} and rows[0]["reason"] == f"silence {silence['id']}"
    assert len(smtp.messages) == 1
    status, listed = await d.arequest("GET", "/v1/notifications/silences", token=other)
    assert listed["data"] == []  # another tenant does not see it
    status, _ = await d.arequest("DELETE", f"/v1/notifications/silences/{silence['id']}", token=other)
    assert status == 404
    status, _ = await d.arequest("DELETE", f"/v1/notifications/silences/{silence['id']}", token=acme)
    assert status == 200

    # 4. Operator alerts: the daemon's own events go to the ops mailbox.
    await post(
        "webhook.endpoint.disabled", {"endpoint_id": "we_1", "url": "https://x.example/hook", "reason": "410 Gone"}
    )
    await until(lambda: len(smtp.messages) == 2, what="the operator alert mail")
    assert smtp.messages[1]["Subject"] == "Webhook endpoint disabled: https://x.example/hook"

    # 5. Tenants see only notifications caused by their own events; the admin sees all.
    await post("invoice.paid", {"number": "O-1", "amount": "1"}, token=other)
    await until(lambda: _count(history, 1, token=other), what="other's notification")
    mine = await history(token=acme, limit=500)
    assert mine and {r["tenant"] for r in mine} == {"acme"}
    theirs = await history(token=other)
    assert [r["tenant"] for r in theirs] == ["other"]
    status, _ = await d.arequest("GET", f"/v1/notifications/{mine[0]['id']}", token=other)
    assert status == 404
    page1 = await history(limit=2)
    status, body = await d.arequest("GET", "/v1/notifications?limit=2")
    status, body2 = await d.arequest("GET", f"/v1/notifications?limit=2&cursor={body['next_cursor']}")
    assert [r["id"] for r in body["data"]] == [r["id"] for r in page1]
    assert not {r["id"] for r in body2["data"]} & {r["id"] for r in page1}

    # 6. Test sends answer with the result; the CLI sends, shows history and explains routes.
    status, result = await d.arequest("POST", "/v1/notifications/test", {"channel": "team-chat"})
    assert status == 200 and result["status"] == "delivered" and result["kind"] == "test"
    assert slack.json_bodies()[-1]["text"] == "tierd test notification"
    status, body = await d.arequest("POST", "/v1/notifications/test", {"channel": "nope"})
    assert status == 404 and body["error"]["code"] == "unknown_channel"
    status, _ = await d.arequest("POST", "/v1/notifications/test", {"channel": "team-chat"}, token=acme)
    assert status == 403
    out = await asyncio.to_thread(
        d.cli, "notify", "send", "--channel", "ops-mail", "--subject", "Hello ops", "--body", "from the CLI"
    )
    assert out.returncode == 0 and "delivered" in out.stdout, out.stderr
    assert smtp.messages[-1]["Subject"] == "Hello ops"
    out = await asyncio.to_thread(d.cli, "notify", "history", "--channel", "ops-mail", "--json")
    assert out.returncode == 0, out.stderr
    assert {r["channel"] for r in json.loads(out.stdout)} == {"ops-mail"}
    event_file = tmp_path / "event.json"
    event_file.write_text(json.dumps({"type": "invoice.paid", "tenant": "acme", "data": {"amount": 2000}}))
    out = await asyncio.to_thread(d.cli, "notify", "routes", "test", "--event", str(event_file), "--json")
    assert out.returncode == 0, out.stderr
    assert [(r["route"], r["channels"]) for r in json.loads(out.stdout)["routes"]] == [
        ("big-invoices", ["ops-mail", "team-chat", "teams-ops", "phone"]),
        ("audit", ["audit"]),
    ]
    out = await asyncio.to_thread(d.cli, "notify", "routes", "test", "--event", str(event_file))
    assert "route big-invoices (big-invoices) -> ops-mail, team-chat, teams-ops, phone" in out.stdout

    # 7. Metrics by channel.
    status, text = await d.arequest("GET", "/metrics")
    assert 'tierd_notifications_sent_total{channel="team-chat"}' in text
    assert 'tierd_notifications_muted_total{channel="ops-mail"} 1.0' in text

    # 8. A reload switches the routing tree without a restart.
    cfg["routes"].insert(
        0,
        {
            "name": "reloaded",
            "match": {"type": "invoice.voided"},
            "channels": ["team-chat"],
            "subject": "voided {{ data.number }}",
        },
    )
    d.write_config(d.config | {"notifications": cfg})
    status, body = await d.arequest("POST", "/v1/admin/reload", {})
    assert status == 200, body
    await post("invoice.voided", {"number": "INV-1"})
    await until(lambda: slack.json_bodies()[-1]["text"] == "voided INV-1", what="the reloaded route")


async def _rows_for(history, event_id, n, status=None):
    rows = await history(event=event_id)
    ok = len(rows) == n and (status is None or all(r["status"] == status for r in rows))
    return rows if ok else None


async def _count(history, n, **kw):
    return len(await history(**kw)) >= n


async def test_kill_9_loses_nothing(tierd_daemon, receiver, smtp, tmp_path, example_channel):
    """Groups waiting in group_wait and sends waiting for a retry survive kill -9."""
    slack = await receiver()
    state = {"up": False}
    accepted = []  # texts the receiver answered 200 to

    async def respond(request, body):
        if state["up"]:
            accepted.append(json.loads(body)["text"])
            return web.Response(text="ok")
        return web.Response(status=503, text="down for maintenance")

    slack.responder = respond
    config = notifications_config(smtp, tmp_path / "audit.jsonl")
    # Long enough for the 20 events below to arrive before the kill on a busy
    # machine (with 3s, a loaded one flushed the group first).
    config["routes"][1]["group_wait"] = "10s"
    d = tierd_daemon(
        {"notifications": config},
        env={"SMTP_PASSWORD": PASSWORD, "SLACK_WEBHOOK_URL": slack.url},
        **example_channel,
    )
    acme = await asyncio.to_thread(d.create_tenant, "acme")
    for i in range(3):  # chat is down: these are retried
        await d.arequest(
            "POST", "/v1/events", {"type": "invoice.paid", "data": {"number": f"K{i}", "amount": 2000 + i}}, token=acme
        )
    await until(lambda: len(slack.requests) >= 3, what="first failing attempts")
    for i in range(20):  # waiting in group_wait when the process dies
        await d.arequest("POST", "/v1/events", {"type": "payment.failed", "data": {"n": i}}, token=acme)
    d.kill9()

    state["up"] = True
    await asyncio.to_thread(d.start)

    async def delivered():
        status, body = await d.arequest("GET", "/v1/notifications?channel=team-chat&limit=500")
        rows = [r for r in body["data"] if r["kind"] in ("event", "digest") and r["status"] != "digested"]
        return rows if rows and all(r["status"] == "delivered" for r in rows) and len(rows) == 4 else None

    rows = await until(delivered, timeout=30, what="everything delivered after restart")
    # Each notification delivered exactly once after the restart: nothing lost, nothing doubled.
    assert sorted(accepted) == [
        "20 × payment.failed (acme)",
        "Big invoice K0: 2000",
        "Big invoice K1: 2001",
        "Big invoice K2: 2002",
    ]
    (digest,) = [r for r in rows if r["kind"] == "digest"]
    assert len(digest["event_ids"]) == 20
    big = [r for r in rows if r["kind"] == "event"]
    assert all(r["attempt_count"] >= 2 and r["attempts"][0]["outcome"] == "retry" for r in big)
    assert "HTTP 503: down for maintenance" in big[0]["attempts"][0]["detail"]


async def test_api_validation_and_filters(tierd_daemon):
    d = tierd_daemon(
        {
            "notifications": {
                "channels": {"journal": {"type": "log"}},
                "routes": [{"match": {"type": "*"}, "channels": ["journal"]}],
            }
        }
    )
    acme = await asyncio.to_thread(d.create_tenant, "acme")
    for i in range(3):
        await d.arequest("POST", "/v1/events", {"type": "invoice.paid", "data": {"n": i}}, token=acme)

    async def data(path, token=None):
        status, body = await d.arequest("GET", path, token=token)
        assert status == 200, body
        return body["data"]

    await until(lambda: _count_status(data, 3), what="three delivered")
    assert len(await data("/v1/notifications?channel=journal&status=delivered")) == 3
    assert await data("/v1/notifications?status=failed") == []
    assert await data("/v1/notifications?since=2999-01-01T00:00:00Z") == []
    assert len(await data("/v1/notifications?until=2999-01-01T00:00:00Z", token=acme)) == 3
    one = (await data("/v1/notifications?limit=1"))[0]
    status, full = await d.arequest("GET", f"/v1/notifications/{one['id']}", token=acme)
    assert status == 200 and full["events"][0]["type"] == "invoice.paid" and "body" in full

    for path, code in [
        ("/v1/notifications?status=sent", "invalid_parameter"),
        ("/v1/notifications?since=yesterday", "invalid_parameter"),
        ("/v1/notifications?limit=0", "invalid_parameter"),
    ]:
        status, body = await d.arequest("GET", path)
        assert (status, body["error"]["code"]) == (400, code), path
    for silence, message in [
        ({"matchers": {"type": "x"}}, "ends_at: required key is missing"),
        ({"matchers": {"type": "x"}, "ends_at": "2000-01-01T00:00:00Z"}, "ends_at: must be in the future"),
        ({"matchers": {"typ": "x"}, "ends_at": "2999-01-01T00:00:00Z"}, "matchers.typ: unknown key 'typ'"),
        ({"matchers": {"data": {"a": {"regex": "("}}}, "ends_at": "2999-01-01T00:00:00Z"}, "invalid regex"),
        ({"matchers": {}, "ends_at": "2999-01-01T00:00:00Z", "extra": 1}, "extra: unknown key"),
    ]:
        status, body = await d.arequest("POST", "/v1/notifications/silences", silence, token=acme)
        assert status == 422 and body["error"]["code"] == "invalid_body", body
        assert message in body["error"]["message"], body
    assert await data("/v1/notifications/silences?all=1", token=acme) == []
    status, body = await d.arequest("GET", "/v1/notifications/silences?all=yes", token=acme)
    assert (status, body["error"]["code"]) == (400, "invalid_parameter")  # not silently "active only"
    status, body = await d.arequest("POST", "/v1/notifications/send", {"channel": "journal", "subject": 5})
    assert status == 422 and body["error"]["code"] == "invalid_body"
    assert body["error"]["details"] == [
        {"path": "subject", "message": "expected a string, got int 5 (put it in quotes to make it a string)"}
    ]
    status, body = await d.arequest("GET", "/v1/notifications/channels")
    assert body["data"] == [{"name": "journal", "type": "log"}]


async def _count_status(data, n):
    return len(await data("/v1/notifications?status=delivered")) == n
