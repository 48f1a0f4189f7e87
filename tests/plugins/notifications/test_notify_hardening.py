"""Silence times that cannot be represented, bad silence fields and operator
sends with invalid text are refused (422 invalid_body, or 400 invalid_json for
text JSON cannot hold) and store nothing; a stored
silence with such a time does not break listing (issue 10 items 6 and 7)."""

import sqlite3

from conftest import until

from tierd.core.pg import PgDatabase

CONFIG = {
    "notifications": {
        "channels": {"journal": {"type": "log"}},
        "routes": [{"match": {"type": "*"}, "channels": ["journal"]}],
    }
}
FUTURE = "2999-01-01T00:00:00Z"


async def _silences(d, **who):
    status, body = await d.arequest("GET", "/v1/notifications/silences?all=1", **who)
    assert status == 200, body
    return body["data"]


async def test_unrepresentable_or_missing_times_are_refused(tierd_daemon):
    d = tierd_daemon(CONFIG)
    acme = d.create_tenant("acme")
    for body in (
        {"matchers": {}, "ends_at": "9999-12-31T23:59:59-14:00"},  # year 10000 in UTC
        {"matchers": {}, "starts_at": "0001-01-01T00:00:00+14:00", "ends_at": FUTURE},  # year 0 in UTC
        {"matchers": {}, "ends_at": None},
        {"matchers": {}},
        {"matchers": {}, "ends_at": 4102444800},
        {"matchers": {}, "ends_at": ["2999-01-01T00:00:00Z"]},
        {"matchers": {}, "ends_at": {"at": FUTURE}},
        {"matchers": {}, "ends_at": True},
        {"matchers": {}, "starts_at": 0, "ends_at": FUTURE},
        {"matchers": {}, "starts_at": "soon", "ends_at": FUTURE},
        {"matchers": {}, "ends_at": FUTURE, "comment": {"a": 1}},
        {"matchers": {}, "ends_at": FUTURE, "comment": "x" * 1001},
    ):
        for who in ({"token": acme}, {"tenant": None}):
            status, answer = await d.arequest("POST", "/v1/notifications/silences", body, **who)
            assert status == 422, (body, answer)
            assert answer["error"]["code"] == "invalid_body", answer
    # Nothing stored, and listing works for the tenant and for the admin.
    assert await _silences(d, token=acme) == []
    assert await _silences(d) == []

    # The latest time that is representable is fine.
    status, silence = await d.arequest(
        "POST", "/v1/notifications/silences", {"matchers": {}, "ends_at": "9999-12-31T23:59:59+14:00"}, token=acme
    )
    assert status == 201 and silence["ends_at"] == "9999-12-31T09:59:59.000000Z", silence


async def test_a_stored_silence_with_an_unrepresentable_time_does_not_break_listing(tierd_daemon):
    d = tierd_daemon(CONFIG)
    acme = d.create_tenant("acme")
    status, silence = await d.arequest(
        "POST", "/v1/notifications/silences", {"matchers": {"type": "a.b"}, "ends_at": FUTURE}, token=acme
    )
    assert status == 201
    d.terminate()
    # As an older tierd stored it: ends in year 10000 (on the backend the daemon runs on).
    stored = "UPDATE notification_silences SET ends_at=253402300800.5 WHERE id=?"
    if d.config["storage"].get("url"):
        async with PgDatabase(d.config["storage"]["url"]) as db:
            await db.execute(stored, (silence["id"],))
    else:
        with sqlite3.connect(d.config["storage"]["path"]) as conn:
            conn.execute(stored, (silence["id"],))
    d.start()
    for who in ({"token": acme}, {}):
        [listed] = await _silences(d, **who)
        assert listed["id"] == silence["id"] and listed["ends_at"] is None
    status, active = await d.arequest("GET", "/v1/notifications/silences", token=acme)
    assert status == 200 and [s["id"] for s in active["data"]] == [silence["id"]]
    # It still mutes, and events still flow.
    status, _ = await d.arequest("POST", "/v1/events", {"type": "a.b", "data": {}}, token=acme)
    assert status == 202
    status, _ = await d.arequest("DELETE", f"/v1/notifications/silences/{silence['id']}", token=acme)
    assert status == 200


async def test_operator_sends_refuse_invalid_text(tierd_daemon):
    d = tierd_daemon(CONFIG)
    for raw in (
        '{"channel": "journal", "subject": "hi \\ud800", "body": "b"}',
        '{"channel": "journal", "subject": "s", "body": "\\udfff tail"}',
        '{"channel": "journal", "subject": "s", "body": "b", "wait": "no"}',
    ):
        status, body = await d.arequest(
            "POST", "/v1/notifications/send", data=raw.encode(), headers={"Content-Type": "application/json"}
        )
        assert status == (422 if "wait" in raw else 400), (raw, body)
    status, history = await d.arequest("GET", "/v1/notifications?kind=manual")
    assert status == 200 and history["data"] == []
    status, sent = await d.arequest(
        "POST", "/v1/notifications/send", {"channel": "journal", "subject": "s \U0001f600", "body": "b"}
    )
    assert status == 200 and sent["status"] == "delivered", sent


async def test_a_tenants_backtracking_regex_cannot_stall_notifications_of_others(tierd_daemon):
    """Silence regexes run on RE2 (linear time): ``(a+)+`` against 40 a's and a
    '!' would take a backtracking engine hours, inside the intake every tenant shares."""
    d = tierd_daemon(CONFIG)
    acme, globex = d.create_tenant("acme"), d.create_tenant("globex")
    status, answer = await d.arequest(
        "POST",
        "/v1/notifications/silences",
        {"matchers": {"data": {"ref": {"regex": "(?<=x)y"}}}, "ends_at": FUTURE},
        token=acme,
    )
    assert status == 422 and "RE2" in answer["error"]["message"], answer
    status, answer = await d.arequest(
        "POST",
        "/v1/notifications/silences",
        {"matchers": {"data": {"ref": {"regex": "(a+)+"}}}, "ends_at": FUTURE},
        token=acme,
    )
    assert status == 201, answer
    for token, ref in ((acme, "a" * 40 + "!"), (acme, "aaaa"), (globex, "g-1")):
        status, _ = await d.arequest("POST", "/v1/events", {"type": "order.placed", "data": {"ref": ref}}, token=token)
        assert status == 202

    async def globex_notified():
        status, page = await d.arequest("GET", "/v1/notifications", token=globex)
        return status == 200 and any(n["status"] == "delivered" for n in page["data"])

    await until(globex_notified, what="globex's notification (its intake was not held up by acme's regex)")
    # acme's own events: the one the regex matches is muted, the other delivered.
    status, page = await d.arequest("GET", "/v1/notifications", token=acme)
    assert status == 200
    assert sorted(n["status"] for n in page["data"]) == ["delivered", "muted"], page
