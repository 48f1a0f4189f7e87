"""Hostile input at the door (issue 10, items 1, 7 and 8): JSON bodies, request
targets and headers that are not Unicode text, unbounded cursors, validation
that a trailing newline slipped through, the Host guard, clients that never
finish their headers, and the log lines of tenant and token changes."""

from __future__ import annotations

import base64
import json
import socket
import time

import pytest
from conftest import ADMIN_TOKEN

from tierd.core.jsonbody import MAX_DEPTH, JsonError, loads


def count_events(d) -> int:
    return d.sql("SELECT COUNT(*) FROM events")[0][0]


def raw_request(d, head: bytes, timeout: float = 10.0) -> tuple[int, dict | str]:
    """Send ``head`` (a request line and headers, exactly these bytes) and read the answer."""
    with socket.create_connection(("127.0.0.1", d.port), timeout=timeout) as sock:
        sock.sendall(head)
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    status_line, _, rest = data.partition(b"\r\n")
    body = rest.partition(b"\r\n\r\n")[2]
    try:
        return int(status_line.split()[1]), json.loads(body)
    except ValueError:
        return int(status_line.split()[1]), body.decode(errors="replace")


def get(path: bytes, extra: bytes = b"") -> bytes:
    """A GET with the admin token; ``extra`` header lines as raw bytes."""
    return (
        b"GET " + path + b" HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n"
        b"Authorization: Bearer " + ADMIN_TOKEN.encode() + b"\r\n" + extra + b"\r\n"
    )


# --- JSON bodies -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "raw, problem",
    [
        (b'{"type":"a.b","id":"\\ud800"}', "lone surrogate"),
        (b'{"type":"a.b","data":{"\\udfff":1}}', "lone surrogate"),
        (b'{"type":"a.b","data":{"x":["ok","\\uDC00x"]}}', "lone surrogate"),
        (b'{"type":"a.b","data":{"x":"\xed\xa0\x80"}}', "not valid UTF-8"),  # a surrogate, UTF-8-encoded
        (b'{"type":"a.b","data":{"x":"\xff"}}', "not valid UTF-8"),
        (b'{"type":"a.b","data":{"x":NaN}}', "NaN is not a JSON number"),
        (b'{"type":"a.b","data":{"x":Infinity}}', "Infinity is not a JSON number"),
        (b'{"type":"a.b","data":{"x":-Infinity}}', "-Infinity is not a JSON number"),
        (b'{"type":"a.b","data":{"x":1e999}}', "too large"),
        (b'{"type":"a.b","data":' + b"[" * 1000 + b"]" * 1000 + b"}", "nested deeper than 64"),
        (b'{"type":"a.b","data":' + b"[" * 100_000 + b"]" * 100_000 + b"}", "nested deeper than 64"),
        (
            b'{"type":"a.b","data":{"x":' + b'{"a":' * MAX_DEPTH + b"1" + b"}" * MAX_DEPTH + b"}}",
            "nested deeper than 64",
        ),
    ],
    ids=[
        "lone-id",
        "lone-key",
        "lone-in-list",
        "utf8-surrogate",
        "ff-byte",
        "nan",
        "inf",
        "-inf",
        "1e999",
        "deep-1000",
        "deep-100000",
        "deep-65",
    ],
)
def test_json_bodies_that_tierd_cannot_store_are_refused_and_change_nothing(tierd_daemon, raw, problem):
    d = tierd_daemon()
    acme = d.create_tenant("acme")
    status, body = d.request("POST", "/v1/events", data=raw, token=acme)
    assert status == 400 and body["error"]["code"] == "invalid_json", body
    assert problem in body["error"]["message"]
    assert count_events(d) == 0
    # The same on a plugin's route (every JSON route decodes through core).
    status, body = d.request(
        "POST", "/v1/webhooks", data=raw.replace(b'"type":"a.b"', b'"url":"https://x.example"'), token=acme
    )
    assert status == 400 and body["error"]["code"] == "invalid_json", body
    # The shared reader is not affected: a new tenant and its token work at once.
    token = d.create_tenant("later")
    assert d.request("POST", "/v1/events", {"type": "a.b"}, token=token)[0] == 202


def test_json_that_is_valid_passes_unchanged(tierd_daemon):
    d = tierd_daemon()
    acme = d.create_tenant("acme")
    data = {
        "emoji": "\U0001f600",
        "escaped": "\\ud800 is six characters",
        "deep": json.loads("[" * 60 + "]" * 60),
        "big": 1.5e300,
        "text": "caf\u00e9 [{[{",
    }
    status, event = d.request("POST", "/v1/events", {"type": "a.b", "data": data}, token=acme)
    assert status == 202 and event["data"] == data
    # A byte order mark may be ignored (RFC 8259); json.loads did, so clients may rely on it.
    status, _ = d.request("POST", "/v1/events", data=b'\xef\xbb\xbf{"type":"a.b"}', token=acme)
    assert status == 202
    status, got = d.request("GET", f"/v1/events/{event['id']}", token=acme)
    assert got["data"] == data


def test_the_decoder_used_by_core_and_plugins():
    assert loads(b'{"a":[1,2.5,"\\ud83d\\ude00"]}') == {"a": [1, 2.5, "\U0001f600"]}
    assert loads('{"a":"caf\u00e9"}') == {"a": "caf\u00e9"}
    for bad in ('{"a":"\ud800"}', b'{"a":"\\ud800"', "[NaN]", b"[" * 65 + b"]" * 65, b"{} x"):
        with pytest.raises(JsonError):
            loads(bad)
    assert isinstance(JsonError("x"), ValueError)  # callers catching ValueError keep working


# --- request targets and headers ------------------------------------------------------------


@pytest.mark.parametrize(
    "head",
    [
        get(b"/v1/events?type=%ED%A0%80"),  # a lone surrogate, percent-encoded
        get(b"/v1/events?type=%FF"),
        get(b"/v1/events/%ED%A0%80"),
        get(b"/v1/events/evt%FF"),
        get(b"/v1/events", extra=b"Tierd-Actor: \xed\xa0\x80\r\n"),
        get(b"/v1/events", extra=b"Tierd-Tenant: acme\xff\r\n"),
        get(b"/v1/events", extra=b"X-Anything: \xc3\r\n"),
    ],
    ids=["query-surrogate", "query-ff", "path-surrogate", "path-ff", "actor-header", "tenant-header", "other-header"],
)
def test_targets_and_headers_that_are_not_unicode_are_refused(tierd_daemon, head):
    d = tierd_daemon()
    status, body = raw_request(d, head)
    assert status == 400 and body["error"]["code"] == "invalid_encoding", body


def test_unicode_in_targets_and_headers_is_fine(tierd_daemon):
    d = tierd_daemon()
    acme = d.create_tenant("acme")
    status, body = d.request("GET", "/v1/events?type=caf%C3%A9", token=acme)
    assert status == 200 and body["data"] == []
    status, body = raw_request(
        d, get(b"/v1/events?tenant=acme&type=caf%C3%A9", extra="Tierd-Actor: Zo\u00eb\r\n".encode())
    )
    assert status == 200 and body["data"] == []


# --- validation ---------------------------------------------------------------------------


def test_trailing_newlines_non_strings_and_unknown_fields_are_refused(tierd_daemon):
    d = tierd_daemon()
    acme = d.create_tenant("acme")
    for body, status_code in [
        ({"type": "a.b\n"}, (422, "invalid_body")),
        ({"type": "a.b\n", "data": {}}, (422, "invalid_body")),
        ({"type": "a.b", "data": {"x": 1}, "id": "\ud800"}, (400, "invalid_json")),
    ]:
        raw = json.dumps(body).encode()
        status, answer = d.request("POST", "/v1/events", data=raw, token=acme)
        assert (status, answer["error"]["code"]) == status_code, (body, answer)
    for name in ["nl\n", "acme2\n", 5, None, ["a"], {"a": 1}, "", "A", "-a", "a" * 64]:
        status, answer = d.request("POST", "/v1/admin/tenants", {"name": name})
        assert status == 422 and answer["error"]["code"] == "invalid_body", (name, answer)
        assert [e["path"] for e in answer["error"]["details"]] == ["name"], answer
    for body in [{"description": 5}, {"description": {"a": 1}}, {"description": "x" * 1001}, {"descr": "x"}]:
        status, answer = d.request("POST", "/v1/admin/tenants/acme/tokens", body)
        assert status == 422 and answer["error"]["code"] == "invalid_body", (body, answer)
        assert [e["path"] for e in answer["error"]["details"]] == list(body), answer
    status, tenants = d.request("GET", "/v1/admin/tenants")
    assert [t["id"] for t in tenants["data"]] == ["acme"] and tenants["data"][0]["active_tokens"] == 1
    assert count_events(d) == 0


def cursor(text: str) -> str:
    return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")


def test_cursors_that_are_not_ones_the_api_made_are_refused(tierd_daemon):
    d = tierd_daemon()
    acme = d.create_tenant("acme")
    assert d.request("POST", "/v1/events", {"type": "a.b"}, token=acme)[0] == 202
    bad = [
        cursor("9" * 30),
        cursor(str(2**63)),
        cursor("\u00b2"),
        cursor("\u0661\u0662"),
        cursor("12\n"),
        cursor("-1"),
        cursor("x" * 300),
        "%25%25%25",
        "%C3%A9",
    ]
    # Core's decoders, on core's route and on a plugin's.
    for path in ["/v1/events", "/v1/notifications"]:
        for c in bad:
            status, body = d.request("GET", f"{path}?cursor={c}", token=acme)
            assert (status, body["error"]["code"]) == (400, "invalid_cursor"), (path, c, body)
    # String cursors (ids) refuse what no id is made of, too.
    status, body = d.request("GET", f"/v1/webhooks?cursor={cursor('caf' + chr(0xE9))}", token=acme)
    assert (status, body["error"]["code"]) == (400, "invalid_cursor")
    # The largest cursor SQLite can hold is an ordinary (empty) page.
    status, body = d.request("GET", f"/v1/events?cursor={cursor(str(2**63 - 1))}", token=acme)
    assert status == 200 and body["data"] == []


# --- the Host guard --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "host, allowed",
    [
        (b"127.0.0.1", True),
        (b"127.0.0.1:8765", True),
        (b"LOCALHOST:1", True),
        (b"[::1]:8765", True),
        (b"[::1]evil.com", False),
        (b"[::1]evil.com:80", False),
        (b"127.0.0.1:80@evil.com", False),
        (b"127.0.0.1:8x", False),
        (b"127.0.0.1:", False),
        (b"127.0.0.1 evil.com", False),
        (b"evil.com#127.0.0.1", False),
        (b"127.0.0.1.evil.com", False),
        (b"", False),
    ],
)
def test_host_is_parsed_strictly(tierd_daemon, host, allowed):
    d = tierd_daemon()
    head = b"GET /healthz HTTP/1.1\r\nHost: " + host + b"\r\nConnection: close\r\n\r\n"
    status, body = raw_request(d, head)
    if allowed:
        assert status == 200, body
    else:
        assert status in (400, 403), body
        if status == 403:
            assert body["error"]["code"] == "host_not_allowed"


def test_a_request_without_host_and_foreign_origins_are_refused(tierd_daemon):
    d = tierd_daemon()
    status, body = raw_request(d, b"GET /healthz HTTP/1.0\r\n\r\n")
    assert status == 403 and body["error"]["code"] == "host_not_allowed"
    for origin in ["http://127.0.0.1:80@evil.com", "http://[::1]evil.com", "null", "http://evil.com"]:
        status, body = d.request("GET", "/healthz", token="", headers={"Origin": origin})
        assert status == 403 and body["error"]["code"] == "origin_not_allowed", origin
    assert d.request("GET", "/healthz", token="", headers={"Origin": f"http://127.0.0.1:{d.port}"})[0] == 200


# --- slow clients ------------------------------------------------------------------------------


def test_a_client_that_never_finishes_its_headers_is_disconnected(tierd_daemon):
    d = tierd_daemon({"server": {"header_timeout": "1s"}})
    # A keep-alive client, idle between two requests for longer than the timeout, is not one.
    idle = socket.create_connection(("127.0.0.1", d.port), timeout=10)
    idle.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
    assert idle.recv(4096).startswith(b"HTTP/1.1 200")

    slow = socket.create_connection(("127.0.0.1", d.port), timeout=10)
    silent = socket.create_connection(("127.0.0.1", d.port), timeout=10)
    started = time.monotonic()
    slow.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n")
    closed_after = None
    while closed_after is None and time.monotonic() - started < 8:
        # Others are answered meanwhile.
        assert d.request("GET", "/healthz", token="")[0] == 200
        try:
            slow.sendall(b"X-Slow: 1\r\n")  # a header line now and then, never the end
            slow.settimeout(0.3)
            if slow.recv(4096) == b"":
                closed_after = time.monotonic() - started
        except TimeoutError:
            pass
        except (BrokenPipeError, ConnectionResetError):
            closed_after = time.monotonic() - started
    assert closed_after is not None and 0.9 <= closed_after <= 3.5, closed_after
    silent.settimeout(5)
    assert silent.recv(4096) == b""  # a connection that never sends anything goes too

    idle.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
    assert idle.recv(4096).startswith(b"HTTP/1.1 200")
    for s in (idle, slow, silent):
        s.close()


# --- the log --------------------------------------------------------------------------------------


def test_tenant_and_token_changes_are_logged_at_info_without_the_token(tierd_daemon):
    d = tierd_daemon()
    token = d.create_tenant("acme")
    status, tokens = d.request("GET", "/v1/admin/tenants/acme/tokens")
    token_id = tokens["data"][0]["id"]
    assert d.request("DELETE", f"/v1/admin/tokens/{token_id}")[0] == 200
    deadline = time.monotonic() + 10
    while f"token {token_id} of tenant acme revoked" not in d.logs() and time.monotonic() < deadline:
        time.sleep(0.05)
    logs = d.logs()
    assert "INFO    tierd.tenants: tenant acme created" in logs
    assert f"INFO    tierd.tenants: token {token_id} created for tenant acme" in logs
    assert f"INFO    tierd.tenants: token {token_id} of tenant acme revoked" in logs
    assert token not in logs and token[len("tierd_") :] not in logs
