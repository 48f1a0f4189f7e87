"""The OpenAPI document of a real daemon: valid, complete, and true to what the API does.

Every POST and PUT declares its request body (or is declared body-less), every
list that answers pages declares ``limit`` and ``cursor``, and a body is
validated by core from the same declaration the document shows: an invalid one
is answered 422 ``invalid_body`` with every error and its path, before the
handler runs and changes anything.
"""

from __future__ import annotations

import re

import pytest
from openapi_spec_validator import validate

from tierd.core.api import NO_BODY, Route
from tierd.core.schema import Obj, Str

CONFIG = {
    "webhooks": {"allow_http": True, "allow_destinations": ["127.0.0.1/32"], "retry_schedule": ["0s"]},
    "notifications": {"channels": {"journal": {"type": "log"}}},
}


@pytest.fixture
def daemon(tierd_daemon):
    d = tierd_daemon(CONFIG)
    d.create_tenant("acme")
    return d


def operations(doc: dict):
    for path, methods in doc["paths"].items():
        for method, op in methods.items():
            yield method.upper(), path, op


def test_the_document_is_valid_openapi(daemon):
    status, doc = daemon.request("GET", "/v1/openapi.json", token="")
    assert status == 200
    validate(doc)  # raises, naming the first problem
    assert doc["openapi"].startswith("3.0")


def test_every_post_and_put_declares_its_body(daemon):
    _, doc = daemon.request("GET", "/v1/openapi.json", token="")
    missing, loose = [], []
    for method, path, op in operations(doc):
        if method not in ("POST", "PUT") or op.get("x-tierd-no-body"):
            continue
        content = op.get("requestBody", {}).get("content", {})
        if not content:
            missing.append(f"{method} {path}")
        schema = content.get("application/json", {}).get("schema", {})
        # A JSON body lists its fields (an empty object schema describes nothing).
        if "application/json" in content and not schema.get("properties"):
            loose.append(f"{method} {path}")
    assert missing == [], f"POST/PUT without a request body schema nor body=NO_BODY: {missing}"
    assert loose == [], f"JSON bodies without their fields: {loose}"
    # The routes that take no body say so; those that read one do not.
    no_body = {f"{m} {p}" for m, p, op in operations(doc) if op.get("x-tierd-no-body")}
    assert {"POST /v1/admin/reload", "POST /v1/deliveries/{id}/retry"} <= no_body
    assert "POST /v1/events" not in no_body and "PUT /v1/webhooks/{id}" not in no_body


def _seed(d) -> dict:
    """One object of each kind a list route's path needs, for tenant acme."""
    status, endpoint = d.request("POST", "/v1/webhooks", {"url": "http://127.0.0.1:9/hook"}, tenant="acme")
    assert status == 201, endpoint
    status, event = d.request("POST", "/v1/events", {"type": "invoice.paid", "data": {"n": 1}}, tenant="acme")
    assert status == 202, event
    status, account = d.request("POST", "/v1/reconciliation/accounts", {"id": "main", "currency": "EUR"}, tenant="acme")
    assert status == 201, account
    status, run = d.request("POST", "/v1/reconciliation/accounts/main/runs", tenant="acme")
    assert status == 201, run
    return {"id": endpoint["id"], "account": "main", "run": run["id"], "tenant": "acme", "event_id": event["id"]}


def test_every_list_that_pages_declares_limit_and_cursor(daemon):
    """A list is found by what it answers (``next_cursor``), not by what it declares:
    each GET route that ends in a collection is called, and its paging and its
    declaration must agree."""
    seeded = _seed(daemon)
    _, doc = daemon.request("GET", "/v1/openapi.json", token="")
    undeclared, untrue, checked = [], [], []
    for method, path, op in operations(doc):
        if (
            method != "GET"
            or path.endswith("}")
            or path in ("/metrics",)
            or path.endswith(("/download", "/candidates"))
        ):
            continue  # one object, or not JSON
        target = re.sub(r"{([^}]+)}", lambda m: seeded[m.group(1)], path)
        params = {p["name"] for p in op.get("parameters", []) if p["in"] == "query"}
        query = "?event_id=" + seeded["event_id"] if "event_id" in params else ""
        status, answer = daemon.request("GET", target + query, tenant="acme")
        assert status == 200, (path, answer)
        checked.append(path)
        pages = isinstance(answer, dict) and "next_cursor" in answer
        declared = {"limit", "cursor"} <= params
        if pages and not declared:
            undeclared.append(path)
        if declared and not pages:
            untrue.append(path)
    assert undeclared == [], f"lists that page without declaring limit and cursor: {undeclared}"
    assert untrue == [], f"routes declaring limit and cursor that answer no page: {untrue}"
    # The walk reached the lists of every module.
    assert {
        "/v1/events",
        "/v1/webhooks",
        "/v1/webhooks/{id}/deliveries",
        "/v1/notifications",
        "/v1/reconciliation/accounts/{account}/audit",
    } <= set(checked)


def test_a_body_is_validated_by_core_with_every_error_and_its_path(daemon):
    # Several errors at once, each with its path, in one answer; nothing stored.
    status, answer = daemon.request(
        "POST",
        "/v1/webhooks",
        {
            "url": 5,
            "event_types": ["invoice.paid", "Invoice Paid"],
            "headers": {"Webhook-Id": "x"},
            "rate_limit": 0,
            "colour": "blue",
        },
        tenant="acme",
    )
    assert status == 422 and answer["error"]["code"] == "invalid_body", answer
    paths = {e["path"]: e["message"] for e in answer["error"]["details"]}
    assert set(paths) == {"url", "event_types[1]", "headers.Webhook-Id", "rate_limit", "colour"}, paths
    assert "set by tierd" in paths["headers.Webhook-Id"] and "above 0" in paths["rate_limit"]
    assert "url: expected a string" in answer["error"]["message"]
    assert daemon.request("GET", "/v1/webhooks", tenant="acme")[1]["data"] == []
    # What the running configuration refuses comes in the same answer as the schema's errors.
    status, answer = daemon.request(
        "POST", "/v1/webhooks", {"url": "http://10.0.0.1/x", "rate_limit": 0}, tenant="acme"
    )
    assert status == 422 and [e["path"] for e in answer["error"]["details"]] == ["rate_limit", "url"], answer
    assert "refused destination" in answer["error"]["message"]
    # Text that is not JSON stays 400 invalid_json; a missing required key is named.
    status, answer = daemon.request("POST", "/v1/notifications/silences", data=b"{nope", tenant="acme")
    assert (status, answer["error"]["code"]) == (400, "invalid_json")
    status, answer = daemon.request("POST", "/v1/notifications/silences", data=b"", tenant="acme")
    assert status == 422 and [e["path"] for e in answer["error"]["details"]] == ["ends_at"], answer
    # The handler gets the clean value with its defaults filled in.
    status, silence = daemon.request(
        "POST", "/v1/notifications/silences", {"ends_at": "2999-01-01T00:00:00+01:00"}, tenant="acme"
    )
    assert status == 201 and silence["comment"] == "" and silence["ends_at"] == "2998-12-31T23:00:00.000000Z"
    status, event = daemon.request("POST", "/v1/events", {"type": "a.b"}, tenant="acme")
    assert status == 202 and event["data"] == {}


def test_every_declared_body_is_checked_before_its_handler(daemon):
    """Each route whose document says "no other fields" refuses one with 422,
    even for an object that does not exist: core validates before the handler."""
    _, doc = daemon.request("GET", "/v1/openapi.json", token="")
    refused = []
    for method, path, op in operations(doc):
        schema = op.get("requestBody", {}).get("content", {}).get("application/json", {}).get("schema", {})
        if schema.get("additionalProperties") is not False:
            continue
        target = re.sub(r"{[^}]+}", "nope", path)
        status, answer = daemon.request(method, target, {"x-unknown": 1}, tenant="acme")
        assert status == 422 and answer["error"]["code"] == "invalid_body", (method, path, answer)
        assert {"path": "x-unknown", "message": "unknown key 'x-unknown'"} in answer["error"]["details"], answer
        refused.append(f"{method} {path}")
    assert len(refused) >= 14, refused  # every converted route of core, webhooks, notifications, reconciliation


def test_a_route_body_is_a_schema_field_or_no_body():
    async def handler(request):
        raise AssertionError

    Route("POST", "/v1/things", handler, body=Obj({"name": Str(required=True)}))
    Route("POST", "/v1/things/{id}/go", handler, body=NO_BODY)
    with pytest.raises(TypeError, match="tierd.core.schema field"):
        Route("POST", "/v1/things", handler, body={"type": "object"})
