"""End to end through the real daemon process: import, ledger, run, review, undo.

One scenario, told in order, against ``tierd run`` in a subprocess (the
``tierd_daemon`` fixture of tests/conftest.py), plus the CLI against it.
"""

import datetime as dt
import json
import re
from pathlib import Path

import pytest
from test_recon_importers import MYBANK  # the bank's CSV layout, as the importer tests read it

from tierd.core.clock import iso, parse_iso

FIXTURES = Path(__file__).parent / "fixtures"
BASE = "/v1/reconciliation/accounts"

CONFIG = {
    "reconciliation": {
        "csv_formats": {"mybank": MYBANK},
        "accounts": [
            {
                "id": "main-eur",
                "tenant": "acme",
                "name": "Main EUR",
                "currency": "EUR",
                "iban": "DE89370400440532013000",
                "csv_format": "mybank",
                "exceptions": {"max_age_days": 30, "min_amount": "400"},
            },
        ],
    },
}

LEDGER = [
    {
        "external_id": "L-1",
        "date": "2026-11-01",
        "amount": "150.00",
        "counterparty": "Mueller GmbH",
        "reference": "INV-1043",
    },
    {
        "external_id": "L-2",
        "date": "2026-11-03",
        "amount": "100.00",
        "counterparty": "Alpha AG",
        "reference": "INV-2001",
    },
    {
        "external_id": "L-3",
        "date": "2026-11-03",
        "amount": "120.00",
        "counterparty": "Beta KG",
        "reference": "INV-2002",
    },
    {
        "external_id": "L-4",
        "date": "2026-11-02",
        "amount": "80.00",
        "counterparty": "Gamma e.K.",
        "reference": "INV-2003",
    },
    {"external_id": "L-5", "date": "2026-11-04", "amount": "-45.50", "counterparty": "Stadtwerke", "reference": ""},
    {
        "external_id": "L-6",
        "date": "2026-10-01",
        "amount": "500.00",
        "counterparty": "Nobody Ltd",
        "reference": "INV-9999",
    },
    {"external_id": "L-7", "date": "2026-11-04", "amount": "20.00", "counterparty": "Kasse", "description": "cash"},
]


#: The other built-in modules play no part here; disabling them keeps these
#: tests about reconciliation alone (and shows it works without them).
OTHER_MODULES = ["webhooks", "notifications"]


def daemon_config() -> dict:
    config = json.loads(json.dumps(CONFIG))
    config["plugins"] = {"disabled": OTHER_MODULES}
    return config


@pytest.fixture
def recon(tierd_daemon):
    d = tierd_daemon(daemon_config())
    token = d.create_tenant("acme")

    def call(method, path, body=None, data=None, headers=None, token_=token):
        return d.request(method, path, json_body=body, data=data, token=token_, headers=headers)

    return d, call


def ndjson(entries) -> bytes:
    return "\n".join(json.dumps(e) for e in entries).encode()


def test_reconciliation_end_to_end(recon):
    d, call = recon
    raw = {"Content-Type": "application/octet-stream"}

    # The account from the config file is there.
    status, body = call("GET", BASE)
    assert status == 200 and [a["id"] for a in body["data"]] == ["main-eur"]

    # Import a CAMT.053 statement: batch entry split, balances checked.
    camt = (FIXTURES / "camt053_v2_batch.xml").read_bytes()
    status, body = call("POST", f"{BASE}/main-eur/statements?filename=nov.xml", data=camt, headers=raw)
    assert status == 201, body
    assert (body["format"], body["new"], body["duplicates"], body["rejected"]) == ("camt053", 5, 0, 0)
    assert body["balances"][0]["ok"] is True and body["balance_mismatches"] == 0

    # The same file again adds nothing; an overlapping MT940 of the same days neither.
    status, body = call("POST", f"{BASE}/main-eur/statements", data=camt, headers=raw)
    assert (status, body["new"], body["duplicates"]) == (201, 0, 5)

    # A malformed file names the element and imports nothing.
    status, body = call("POST", f"{BASE}/main-eur/statements?format=camt053", data=camt[:900], headers=raw)
    assert status == 422 and body["error"]["code"] == "statement_invalid"
    assert "line" in body["error"]["details"]["location"]
    bad_amount = camt.replace(b'<Amt Ccy="EUR">45.50</Amt>', b'<Amt Ccy="EUR">4x.50</Amt>')
    status, body = call("POST", f"{BASE}/main-eur/statements", data=bad_amount, headers=raw)
    assert status == 422 and body["error"]["details"]["location"] == "Stmt[1]/Ntry[3]/Amt"
    status, items = call("GET", f"{BASE}/main-eur/open-items?side=bank")
    assert len(items["statement_lines"]) == 5

    # A CSV in cp1252 with debit/credit columns, through the account's layout (auto-detected as CSV).
    csv = (FIXTURES / "csv_cp1252_debit_credit.csv").read_bytes()
    status, body = call("POST", f"{BASE}/main-eur/statements?filename=export.csv", data=csv, headers=raw)
    assert status == 201 and (body["format"], body["new"]) == ("csv", 4)  # both identical cash lines kept

    # Ledger entries as JSON lines; sending them again is idempotent; bad ones change nothing.
    status, body = call(
        "POST", f"{BASE}/main-eur/ledger", data=ndjson(LEDGER), headers={"Content-Type": "application/x-ndjson"}
    )
    assert (status, body["new"]) == (200, 7), body
    status, body = call("POST", f"{BASE}/main-eur/ledger", body={"entries": LEDGER})
    assert (status, body["new"], body["unchanged"]) == (200, 0, 7)
    status, body = call(
        "POST",
        f"{BASE}/main-eur/ledger",
        body={"entries": [{"external_id": "L-7", "date": "2026-11-31", "amount": "1"}]},
    )
    assert (
        status == 422
        and body["error"]["code"] == "ledger_invalid"
        and "entries[0]: date" in body["error"]["details"][0]
    )

    # Run the rules.
    status, run = call("POST", f"{BASE}/main-eur/runs")
    assert status == 201 and run["status"] == "completed", run
    # Times are written as everywhere in the API (core's clock.iso: a Z, microseconds).
    assert all(iso(parse_iso(run[k])) == run[k] for k in ("started_at", "finished_at"))
    assert run["counts"]["matches"] == 5 and run["counts"]["by_rule"] == {"reference": 4, "amount_date": 1}
    status, page = call("GET", f"{BASE}/main-eur/runs/{run['id']}/matches")
    by_entry = {m["ledger_entries"][0]["external_id"]: m for m in page["data"]}
    m1 = by_entry["L-1"]
    assert m1["rule"] == "reference" and m1["score"] >= 0.9
    assert m1["explanation"].startswith("reference INV-1043 in remittance; amounts equal; booked 1 day apart")
    assert [ln["bank_reference"] for ln in m1["statement_lines"]] == ["BREF-0001"]

    assert by_entry["L-5"]["explanation"] == "amounts equal; booked the same day; counterparty names 100% alike"

    # Two identical cash deposits of 20.00 and one ledger entry: either line
    # could be it, so the engine only suggests, and a person decides.
    status, items = call("GET", f"{BASE}/main-eur/open-items?side=ledger")
    l7_id = next(e["id"] for e in items["ledger_entries"] if e["external_id"] == "L-7")
    status, page = call("GET", f"{BASE}/main-eur/runs/{run['id']}/suggestions")
    l7 = [s for s in page["data"] if s["ledger_ids"] == [l7_id]]
    assert len(l7) == 2 and l7[0]["bank_ids"] != l7[1]["bank_ids"]
    assert [e["external_id"] for e in l7[0]["ledger_entries"]] == ["L-7"]
    assert l7[0]["statement_lines"][0]["remittance"] == "Bareinzahlung"
    status, accepted = call(
        "POST", f"{BASE}/main-eur/suggestions/{l7[0]['id']}/accept", headers={"Tierd-Actor": "carol"}
    )
    assert status == 201 and accepted["kind"] == "accepted" and accepted["explanation"].endswith("for carol")
    # The audit names the token that did it and the person it spoke for.
    assert re.search(r"accepted by acme/tok_\w+ for carol$", accepted["explanation"])
    assert [e["external_id"] for e in accepted["ledger_entries"]] == ["L-7"]
    # Its rival for the same entry went stale at once: it cannot be accepted any more.
    status, body = call("POST", f"{BASE}/main-eur/suggestions/{l7[1]['id']}/accept")
    assert status == 409 and body["error"]["code"] == "suggestion_not_open" and "stale" in body["error"]["message"]
    status, page = call("GET", f"{BASE}/main-eur/suggestions?status=stale")
    assert l7[1]["id"] in [s["id"] for s in page["data"]]
    status, body = call("GET", f"{BASE}/main-eur/suggestions?status=closed")
    assert (
        status == 400
        and body["error"]["code"] == "invalid_parameter"
        and "open, accepted, stale" in body["error"]["message"]
    )

    # Open items on both sides, with age; the old unpaid invoice is still there.
    status, items = call("GET", f"{BASE}/main-eur/open-items")
    assert [e["external_id"] for e in items["ledger_entries"]] == ["L-6"]
    assert items["ledger_entries"][0]["age_days"] > 30
    as_of = dt.date.fromisoformat(items["as_of"])
    assert items["statement_lines"] and [ln["age_days"] for ln in items["statement_lines"]] == [
        (as_of - dt.date.fromisoformat(ln["booking_date"])).days for ln in items["statement_lines"]
    ]

    # Undo a match: exactly its items are open again.
    status, undone = call("DELETE", f"{BASE}/main-eur/matches/{m1['id']}", headers={"Tierd-Actor": "alice"})
    assert status == 200 and undone["status"] == "undone" and undone["undone_by"].endswith(" for alice")
    status, items = call("GET", f"{BASE}/main-eur/open-items")
    assert sorted(e["external_id"] for e in items["ledger_entries"]) == ["L-1", "L-6"]
    line_id = m1["statement_lines"][0]["id"]
    entry_id = m1["ledger_entries"][0]["id"]

    # A manual match must balance, or name the difference as an adjustment.
    l6 = items["ledger_entries"][[e["external_id"] for e in items["ledger_entries"]].index("L-6")]["id"]
    status, body = call("POST", f"{BASE}/main-eur/matches", {"statement_line_ids": [line_id], "ledger_entry_ids": [l6]})
    assert status == 422 and body["error"]["code"] == "amounts_unbalanced"
    status, manual = call(
        "POST",
        f"{BASE}/main-eur/matches",
        {"statement_line_ids": [line_id], "ledger_entry_ids": [entry_id], "note": "checked"},
        headers={"Tierd-Actor": "bob"},
    )
    assert status == 201 and manual["rule"] == "manual" and "for bob" in manual["explanation"]
    status, body = call("POST", f"{BASE}/main-eur/matches", {"statement_line_ids": [line_id], "ledger_entry_ids": []})
    assert status == 409 and body["error"]["code"] == "item_not_open"

    # Everything is audited with who and when.
    status, audit = call("GET", f"{BASE}/main-eur/audit?limit=100")
    actions = [(a["action"], a["actor"]) for a in audit["data"]]
    assert any(a == "match.undone" and who.endswith(" for alice") for a, who in actions)
    assert any(a == "match.created" and who.endswith(" for bob") for a, who in actions)

    # Events on the bus.
    status, events = d.request("GET", "/v1/events?type=reconciliation.*&limit=100", tenant="acme")
    types = [e["type"] for e in events["data"]]
    assert "reconciliation.statement.imported" in types and "reconciliation.run.completed" in types
    exceptions = [e for e in events["data"] if e["type"] == "reconciliation.exceptions"]
    assert exceptions and any(i["reference"] == "L-6" for i in exceptions[0]["data"]["items"])

    # Metrics on the daemon's /metrics.
    import urllib.request

    with urllib.request.urlopen(d.url + "/metrics") as resp:
        metrics_text = resp.read().decode()
    assert 'tierd_reconciliation_statement_lines_imported_total{format="camt053"} 5.0' in metrics_text
    assert 'tierd_reconciliation_matches_total{rule="reference"} 4.0' in metrics_text

    # Tenants are walls: another tenant does not see the account at all.
    other = d.create_tenant("globex")
    status, body = call("GET", f"{BASE}/main-eur/open-items", token_=other)
    assert status == 404 and body["error"]["code"] == "not_found"
    status, body = call("GET", BASE, token_=other)
    assert body["data"] == []


def test_cli_against_the_daemon(recon, tmp_path):
    d, call = recon
    result = d.cli(
        "recon", "import", "--tenant", "acme", "--account", "main-eur", str(FIXTURES / "mt940_two_statements.sta")
    )
    assert result.returncode == 0, result.stderr
    assert "mt940, 3 new, 0 duplicate, 0 rejected" in result.stdout
    ledger_file = tmp_path / "ledger.jsonl"
    ledger_file.write_bytes(
        ndjson(
            LEDGER[:1]
            + [{"external_id": "L-9", "date": "2026-11-03", "amount": "-45.50", "counterparty": "Stadtwerke"}]
        )
    )
    result = d.cli("recon", "ledger", "--tenant", "acme", "--account", "main-eur", str(ledger_file))
    assert result.returncode == 0 and "2 new" in result.stdout, result.stderr
    # The same entries as CSV (default layout: the field names as headers) change nothing.
    csv_file = tmp_path / "ledger.csv"
    csv_file.write_text(
        "external_id,date,amount,counterparty,reference\n"
        "L-1,2026-11-01,150.00,Mueller GmbH,INV-1043\nL-9,2026-11-03,-45.50,Stadtwerke,\n"
    )
    result = d.cli("recon", "ledger", "--tenant", "acme", "--account", "main-eur", str(csv_file), "--json")
    assert result.returncode == 0 and json.loads(result.stdout)["unchanged"] == 2, result.stderr + result.stdout
    result = d.cli("recon", "run", "--tenant", "acme", "--account", "main-eur", "--json")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["counts"]["matches"] == 2
    result = d.cli("recon", "matches", "--tenant", "acme", "--account", "main-eur")
    assert result.returncode == 0 and "reference INV-1043" in result.stdout
    result = d.cli("recon", "matches", "--tenant", "acme", "--account", "main-eur", "--suggestions")
    assert result.returncode == 0 and result.stdout.strip() == "(none)"
    match_id = json.loads(d.cli("recon", "matches", "--tenant", "acme", "--account", "main-eur", "--json").stdout)[0][
        "id"
    ]
    result = d.cli("recon", "unmatch", "--tenant", "acme", "--account", "main-eur", match_id)
    assert result.returncode == 0 and "undone" in result.stdout
    result = d.cli("recon", "open-items", "--tenant", "acme", "--account", "main-eur", "--json")
    data = json.loads(result.stdout)
    assert len(data["statement_lines"]) == 2 and len(data["ledger_entries"]) == 1
    # Matched again by hand; an adjustment of zero, however written, is not shown as one.
    [entry] = data["ledger_entries"]
    [line] = [ln for ln in data["statement_lines"] if ln["amount"] == entry["amount"]]
    result = d.cli(
        "recon",
        "match",
        "--tenant",
        "acme",
        "--account",
        "main-eur",
        "--line",
        str(line["id"]),
        "--entry",
        str(entry["id"]),
        "--adjustment",
        "0.000",
    )
    assert result.returncode == 0, result.stderr
    result = d.cli("recon", "matches", "--tenant", "acme", "--account", "main-eur")
    assert result.stdout.count(" <-> ledger ") == 2 and "adjustment" not in result.stdout, result.stdout
    bad = tmp_path / "bad.sta"
    bad.write_text(":20:X\n:25:1\n:28C:1\n:60F:C261101EUR1,00\n:61:2611011101C1x,00NTRFNONREF\n-\n")
    result = d.cli("recon", "import", "--tenant", "acme", "--account", "main-eur", str(bad))
    assert result.returncode != 0 and "statement_invalid" in result.stderr and "line 5" in result.stderr


def test_inbox_folder_imports_and_sorts_files(tierd_daemon, tmp_path):
    import time

    folder = tmp_path / "inbox"
    folder.mkdir()
    config = daemon_config()
    config["reconciliation"]["inbox_poll_interval"] = "0.2s"
    config["reconciliation"]["accounts"][0]["inbox"] = str(folder)
    d = tierd_daemon(config)
    (folder / "nov.xml").write_bytes((FIXTURES / "camt053_v2_batch.xml").read_bytes())
    (folder / "broken.sta").write_text(":20:X\n:25:1\n:28C:1\n:60F:C261101EUR1,00\n:61:2611011101C1x,00NTRFNONREF\n-\n")
    (folder / "upload.part").write_text("still being written")
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline and not (
        (folder / "processed" / "nov.xml").exists() and (folder / "failed" / "broken.sta").exists()
    ):
        time.sleep(0.1)
    assert (folder / "processed" / "nov.xml").exists(), d.logs()
    error = (folder / "failed" / "broken.sta.error.txt").read_text()
    assert error.startswith("line 5: bad :61: statement line")
    assert (folder / "upload.part").exists()  # partial files are left alone
    status, items = d.request("GET", f"{BASE}/main-eur/open-items?side=bank", tenant="acme")
    assert status == 200 and len(items["statement_lines"]) == 5


def test_scheduled_runs_and_inbox_become_jobs():
    from types import SimpleNamespace

    from tierd.plugins.reconciliation import tierd_jobs
    from tierd.plugins.reconciliation.config import SCHEMA

    section = SCHEMA.validate(
        {
            "accounts": [
                {"id": "a", "tenant": "acme", "currency": "EUR", "schedule": "0 6 * * *", "inbox": "/tmp/x"},
                {"id": "b", "tenant": "acme", "currency": "EUR"},
            ]
        }
    )
    jobs = tierd_jobs(SimpleNamespace(config={"reconciliation": section}))
    assert sorted((j.id, j.cron, j.interval) for j in jobs) == [
        ("reconciliation.inbox", None, 10.0),
        ("reconciliation.run.acme.a", "0 6 * * *", None),
    ]


def test_bad_input_gets_clear_errors_and_changes_nothing(recon):
    d, call = recon
    raw = {"Content-Type": "application/octet-stream"}
    # Accounts: validation, duplicates, unknown layouts.
    status, body = call("POST", BASE, {"id": "bad id!", "currency": "euro"})
    assert status == 422 and body["error"]["code"] == "invalid_body"
    assert [e["path"] for e in body["error"]["details"]] == ["id", "currency"]
    status, body = call("POST", BASE, {"id": "main-eur", "currency": "EUR"})
    assert status == 409 and body["error"]["code"] == "account_exists"
    status, body = call("POST", BASE, {"id": "usd", "currency": "USD", "csv_format": "nope"})
    assert status == 422 and "csv_formats" in body["error"]["message"]
    status, body = call("POST", BASE, {"id": "usd", "currency": "USD", "name": "Dollar account"})
    assert status == 201 and body["source"] == "api" and body["created_at"].endswith("Z")
    # Statements: unknown format, empty body, another account's file, unknown account.
    status, body = call("POST", f"{BASE}/usd/statements?format=qif", data=b"x", headers=raw)
    assert status == 422 and body["error"]["code"] == "unknown_format"
    status, body = call("POST", f"{BASE}/usd/statements", data=b"", headers=raw)
    assert status == 400 and body["error"]["code"] == "file_required"
    camt = (FIXTURES / "camt053_v2_batch.xml").read_bytes()
    status, body = call(
        "POST", f"{BASE}/main-eur/statements", data=camt.replace(b"DE8937040044", b"DE0000000000"), headers=raw
    )
    assert status == 422 and body["error"]["code"] == "statement_account_mismatch"
    status, body = call("POST", f"{BASE}/nope/statements", data=camt, headers=raw)
    assert status == 404
    # Lines in another currency are counted as rejected, not imported.
    status, body = call("POST", f"{BASE}/usd/statements", data=camt, headers=raw)
    assert status == 201 and (body["new"], body["rejected"]) == (0, 5)
    # A multipart upload works like a raw one.
    boundary = "tierdboundary"
    form = (
        (
            f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="nov.xml"\r\n'
            f"Content-Type: application/xml\r\n\r\n"
        ).encode()
        + camt
        + f"\r\n--{boundary}--\r\n".encode()
    )
    status, body = call(
        "POST",
        f"{BASE}/main-eur/statements",
        data=form,
        headers={"Content-Type": f"multipart/form-data; boundary={boundary}"},
    )
    assert status == 201 and (body["filename"], body["new"]) == ("nov.xml", 5)
    status, imports = call("GET", f"{BASE}/main-eur/imports")
    assert [i["new_lines"] for i in imports["data"]] == [5]
    # Ledger: a CSV layout the configuration lacks, not JSON, bad fields; nothing stored.
    status, body = call(
        "POST",
        f"{BASE}/main-eur/ledger?format=csv&layout=nope",
        data=b"external_id,date,amount\n",
        headers={"Content-Type": "text/csv"},
    )
    assert status == 422 and body["error"]["code"] == "unknown_layout" and "ledger_formats" in body["error"]["message"]
    status, body = call(
        "POST", f"{BASE}/main-eur/ledger", data=b"{not json", headers={"Content-Type": "application/json"}
    )
    assert status == 422 and body["error"]["code"] == "ledger_invalid"
    status, body = call(
        "POST",
        f"{BASE}/main-eur/ledger",
        {
            "entries": [
                {"external_id": "A", "date": "2026-11-01", "amount": "1"},
                {"external_id": "B", "date": "2026-11-01", "amount": 1.5e3},
            ]
        },
    )
    assert status == 200  # JSON numbers are read as exact decimals (json.dumps wrote 1500.0)
    status, items = call("GET", f"{BASE}/main-eur/open-items?side=ledger")
    assert [e["amount"] for e in items["ledger_entries"]] == ["1", "1500.0"] and items["ledger_entries_total"] == 2
    # Manual matches: bad ids, unknown items.
    status, body = call("POST", f"{BASE}/main-eur/matches", {"statement_line_ids": ["x"]})
    assert status == 422 and body["error"]["code"] == "invalid_body"
    status, body = call("POST", f"{BASE}/main-eur/matches", {"statement_line_ids": [999999], "ledger_entry_ids": []})
    assert status == 404 and body["error"]["code"] == "item_not_found"
    status, body = call("DELETE", f"{BASE}/main-eur/matches/m_nope")
    assert status == 404
    status, body = call("GET", f"{BASE}/main-eur/open-items?limit=0")
    assert status == 400 and body["error"]["code"] == "invalid_parameter"


def test_tenants_are_walls(recon):
    d, call = recon
    raw = {"Content-Type": "application/octet-stream"}
    camt = (FIXTURES / "camt053_v2_batch.xml").read_bytes()
    call("POST", f"{BASE}/main-eur/statements", data=camt, headers=raw)
    call("POST", f"{BASE}/main-eur/ledger", data=ndjson(LEDGER), headers={"Content-Type": "application/x-ndjson"})
    status, run = call("POST", f"{BASE}/main-eur/runs")
    status, page = call("GET", f"{BASE}/main-eur/matches")
    match_id = page["data"][0]["id"]
    other = d.create_tenant("globex")
    # globex may have an account with the same id: it is a different account.
    status, body = call("POST", BASE, {"id": "main-eur", "currency": "EUR"}, token_=other)
    assert status == 201
    for method, path in [
        ("GET", f"{BASE}/main-eur/matches/{match_id}"),
        ("DELETE", f"{BASE}/main-eur/matches/{match_id}"),
        ("GET", f"{BASE}/main-eur/runs/{run['id']}"),
    ]:
        status, body = call(method, path, token_=other)
        assert status == 404, (method, path, body)
    status, items = call("GET", f"{BASE}/main-eur/open-items", token_=other)
    assert items["statement_lines"] == [] and items["ledger_entries"] == []
    # ... and acme's match is untouched.
    status, match = call("GET", f"{BASE}/main-eur/matches/{match_id}")
    assert status == 200 and match["status"] == "active"


def test_reload_adds_accounts_from_the_config(recon):
    d, call = recon
    config = daemon_config()
    config["reconciliation"]["accounts"].append({"id": "usd-ops", "tenant": "acme", "currency": "USD", "name": "Ops"})
    d.write_config(json.loads(json.dumps(d.config | config)))
    status, body = d.request("POST", "/v1/admin/reload", {})
    assert status == 200, body
    status, body = call("GET", BASE)
    assert [a["id"] for a in body["data"]] == ["main-eur", "usd-ops"]


def test_an_api_account_whose_csv_layout_a_reload_removed_gets_a_clear_error(tierd_daemon):
    config = daemon_config()
    config["reconciliation"]["csv_formats"]["old"] = {"columns": {"booking_date": "Date", "amount": "Amount"}}
    d = tierd_daemon(config)
    d.create_tenant("acme")
    status, body = d.request("POST", BASE, {"id": "ops", "currency": "EUR", "csv_format": "old"}, tenant="acme")
    assert status == 201, body
    del config["reconciliation"]["csv_formats"]["old"]
    d.write_config(json.loads(json.dumps(d.config | config)))
    status, body = d.request("POST", "/v1/admin/reload", {})
    assert status == 200, body
    status, body = d.request(
        "POST",
        f"{BASE}/ops/statements?filename=x.csv",
        data=b"Date,Amount\n2026-11-02,1.00\n",
        tenant="acme",
        headers={"Content-Type": "text/csv"},
    )
    assert status == 422 and body["error"]["code"] == "unknown_layout" and "'old'" in body["error"]["message"]
    status, imports = d.request("GET", f"{BASE}/ops/imports", tenant="acme")
    assert imports["data"] == []
