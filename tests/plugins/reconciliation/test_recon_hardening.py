"""Hostile input on the reconciliation API (issue 10 item 7) and the log lines
operators need, through the real daemon process.

Every refusal is a 4xx with a stable code and imports nothing: the open items
and the import history stay as they were.
"""

import re
from pathlib import Path

import pytest

FIXTURES = Path(__file__).parent / "fixtures"
BASE = "/v1/reconciliation/accounts/main"
RAW = {"Content-Type": "application/octet-stream"}
CONFIG = {
    "plugins": {"disabled": ["webhooks", "notifications"]},
    "reconciliation": {
        "csv_formats": {
            "plain": {
                "columns": {"booking_date": "date", "amount": "amount", "remittance": "text", "bank_reference": "ref"}
            }
        },
        "accounts": [{"id": "main", "tenant": "acme", "currency": "EUR", "csv_format": "plain"}],
    },
}
STATEMENT = b"date,amount,text,ref\n2026-11-02,150.00,INV-1043,B-1\n2026-11-03,-45.50,power,B-2\n"
LEDGER = b"external_id,date,amount,reference\nL-1,2026-11-01,150.00,INV-1043\n"


@pytest.fixture
def recon(tierd_daemon):
    d = tierd_daemon(CONFIG)
    token = d.create_tenant("acme")

    def call(method, path, body=None, data=None, headers=None, query=""):
        return d.request(method, BASE + path + query, json_body=body, data=data, token=token, headers=headers)

    status, body = call("POST", "/statements?filename=good.csv", data=STATEMENT, headers=RAW)
    assert (status, body.get("new")) == (201, 2), body
    status, body = call("POST", "/ledger?format=csv", data=LEDGER, headers={"Content-Type": "text/csv"})
    assert (status, body.get("new")) == (200, 1), body
    return d, call


def unchanged(call) -> None:
    """The state the fixture made: 2 statement lines, 1 ledger entry, 1 import, no match."""
    status, items = call("GET", "/open-items")
    assert status == 200, items
    assert (items["statement_lines_total"], items["ledger_entries_total"]) == (2, 1), items
    status, imports = call("GET", "/imports")
    assert status == 200 and len(imports["data"]) == 1, imports
    status, matches = call("GET", "/matches")
    assert status == 200 and matches["data"] == [], matches


def multipart(filename_header: bytes, content: bytes, boundary: bytes = b"xx") -> tuple[bytes, dict]:
    body = (
        b"--" + boundary + b'\r\nContent-Disposition: form-data; name="file"' + filename_header + b"\r\n"
        b"Content-Type: text/csv\r\n\r\n" + content + b"\r\n--" + boundary + b"--\r\n"
    )
    return body, {"Content-Type": "multipart/form-data; boundary=" + boundary.decode()}


def test_item_ids_are_bounded(recon):
    d, call = recon
    status, items = call("GET", "/open-items")
    line_id = items["statement_lines"][0]["id"]
    for ids in ([10**20], [-(10**20)], [0], [-1], [2**63], [1.5], ["1"], [True], list(range(1, 1002))):
        for side in ("statement_line_ids", "ledger_entry_ids"):
            status, body = call("POST", "/matches", {side: ids, "adjustment": "0"})
            assert status == 422 and body["error"]["code"] == "invalid_body", (side, ids[:3], body)
    # The largest id SQLite holds is a valid id, just not one of this account.
    status, body = call("POST", "/matches", {"statement_line_ids": [line_id, 2**63 - 1], "adjustment": "150.00"})
    assert (
        status == 404 and body["error"]["code"] == "item_not_found" and body["error"]["details"]["ids"] == [2**63 - 1]
    )
    unchanged(call)


def test_multipart_bodies_that_cannot_be_read(recon):
    d, call = recon
    good, headers = multipart(b'; filename="a.csv"', STATEMENT)
    for path in ("/statements", "/ledger?format=csv"):
        for data, content_type in (
            (good, "multipart/form-data"),  # no boundary
            (good, "multipart/form-data; boundary="),
            (b"no parts here", "multipart/form-data; boundary=xx"),
            (
                b'--xx\r\nContent-Disposition: form-data; name="file"; filename="a\x01b.csv"\r\n\r\nx\r\n--xx--\r\n',
                "multipart/form-data; boundary=xx",
            ),  # a control character in a part header
        ):
            status, body = call("POST", path, data=data, headers={"Content-Type": content_type})
            assert status == 400, (path, content_type, data[:60], body)
            assert body["error"]["code"] in ("invalid_multipart", "file_required"), body
        # A nested multipart is no file.
        nested = b"--xx\r\nContent-Type: multipart/mixed; boundary=yy\r\n\r\n--yy\r\n\r\nz\r\n--yy--\r\n--xx--\r\n"
        status, body = call("POST", path, data=nested, headers={"Content-Type": "multipart/mixed; boundary=xx"})
        assert status == 400 and body["error"]["code"] == "file_required", body
    unchanged(call)
    # A well-formed upload still works (the same lines again: duplicates).
    status, body = call("POST", "/statements", data=good, headers=headers)
    assert status == 201 and (body["filename"], body["new"], body["duplicates"]) == ("a.csv", 0, 2), body


def test_file_names_must_be_valid_text(recon):
    d, call = recon
    for header in (
        b'; filename="a\xed\xa0\x80.csv"',  # an encoded surrogate: not UTF-8
        b'; filename="a\xff.csv"',
        b'; filename="' + b"a" * 300 + b'.csv"',
    ):
        data, headers = multipart(header, STATEMENT)
        status, body = call("POST", "/statements", data=data, headers=headers)
        assert status == 400 and body["error"]["code"] == "invalid_filename", (header[:30], body)
    for query in ("?filename=a%0Ab.csv", "?filename=" + "a" * 300):
        status, body = call("POST", "/statements", data=STATEMENT, headers=RAW, query=query)
        assert status == 400, (query, body)
    unchanged(call)


def test_a_csv_field_over_the_csv_module_limit_names_its_line(recon):
    d, call = recon
    huge = "x" * 140_000
    status, body = call(
        "POST",
        "/ledger?format=csv",
        headers={"Content-Type": "text/csv"},
        data=f"external_id,date,amount,reference\nL-9,2026-11-01,1.00,ok\nL-10,2026-11-01,2.00,{huge}\n".encode(),
    )
    assert status == 422 and body["error"]["code"] == "ledger_invalid", body
    assert re.search(r"line 3: unreadable CSV: field larger than field limit", body["error"]["message"]), body
    status, body = call(
        "POST",
        "/statements?filename=big.csv",
        headers=RAW,
        data=f"date,amount,text,ref\n2026-11-04,1.00,ok,B-3\n2026-11-05,1.00,{huge},B-4\n".encode(),
    )
    assert status == 422 and body["error"]["code"] == "statement_invalid", body
    assert body["error"]["details"]["location"] == "line 3", body
    unchanged(call)


def test_files_with_text_that_is_not_unicode(recon):
    d, call = recon
    surrogate = b"\xed\xa0\x80"  # U+D800 as UTF-8 would write it: no valid UTF-8
    cases = [
        (
            "/statements?filename=s.csv",
            RAW,
            b"date,amount,text,ref\n2026-11-04,1.00,a" + surrogate + b",B-3\n",
            "statement_invalid",
        ),
        ("/statements?filename=s.csv", RAW, b"date,amount,text,ref\n2026-11-04,1.00,a\xff,B-3\n", "statement_invalid"),
        (
            "/ledger?format=csv",
            {"Content-Type": "text/csv"},
            b"external_id,date,amount,reference\nL-9,2026-11-01,1.00,a" + surrogate + b"\n",
            "ledger_invalid",
        ),
        (
            "/ledger",
            {"Content-Type": "application/json"},
            b'[{"external_id": "L-9", "date": "2026-11-01", "amount": "1", "reference": "a\\ud800"}]',
            "ledger_invalid",
        ),
        (
            "/ledger",
            {"Content-Type": "application/json"},
            b'{"external_id": "L-\\udfff", "date": "2026-11-01", "amount": "1"}',
            "ledger_invalid",
        ),
        ("/ledger", {"Content-Type": "application/json"}, b"[" * 100_000, "ledger_invalid"),
        (
            "/ledger",
            {"Content-Type": "application/x-ndjson"},
            b'{"external_id": "L-9", "date": "2026-11-01", "amount": "1"}\n' + b"[" * 100_000,
            "ledger_invalid",
        ),
        (
            "/ledger",
            {"Content-Type": "application/json"},
            b'[{"external_id": "L-9", "date": "2026-11-01", "amount": NaN}]',
            "ledger_invalid",
        ),
    ]
    camt = (FIXTURES / "camt053_v2_batch.xml").read_bytes().replace(b"DE89370400440532013000", b"")
    cases.append(
        (
            "/statements?format=camt053",
            RAW,
            camt.replace(b"<MsgId>TIERD-V2-0001</MsgId>", b"<MsgId>&#xD800;</MsgId>"),
            "statement_invalid",
        )
    )
    for path, headers, data, code in cases:
        status, body = call("POST", path, data=data, headers=headers)
        assert status == 422 and body["error"]["code"] == code, (path, data[:80], body)
    unchanged(call)


def test_operators_see_imports_and_runs_in_the_log(recon):
    d, call = recon
    status, run = call("POST", "/runs")
    assert status == 201 and run["counts"]["matches"] == 1, run
    logs = d.logs()
    assert re.search(
        r"INFO +tierd\.reconciliation\.imports: statement imported for tenant acme, account main: "
        r"format csv, 2 new line\(s\), 0 duplicate\(s\), 0 rejected, 0 balance mismatch\(es\) "
        r"\(import imp_\w+, file 'good.csv', by acme/tok_\w+\)",
        logs,
    ), logs[-3000:]
    assert re.search(
        r"INFO +tierd\.reconciliation\.ledger: ledger entries upserted for tenant acme, account main: "
        r"1 new, 0 updated, 0 unchanged, 0 conflict\(s\)",
        logs,
    ), logs[-3000:]
    assert re.search(
        rf"INFO +tierd\.reconciliation\.runs: reconciliation run {run['id']} for tenant acme, "
        r"account main \(api\) finished: 1 matched, 0 suggested, 1 statement line\(s\) and "
        r"0 ledger entr\(ies\) open",
        logs,
    ), logs[-3000:]
    # Never the content of a file.
    assert "INV-1043" not in logs and "power" not in logs
