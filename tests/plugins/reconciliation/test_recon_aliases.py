"""Learning from the reviewer (issue 13): a match teaches which bank payer (IBAN,
else name) pays for which ledger counterparty; undoing it forgets that; the
next run scores on what was learned and says so; ``tierd recon aliases``
lists and removes what was learned. Against the real daemon, through the API
and the CLI.
"""

from __future__ import annotations

import base64
import contextlib
import json
import re

import pytest

from tierd.core.clock import iso, parse_iso
from tierd.testing import ADMIN_TOKEN, LocalDaemon, assert_index_walk, recorded_reads

BASE = "/v1/reconciliation/accounts"
ACME = f"{BASE}/main-eur"

#: A plain UTF-8 CSV export: one signed amount column, the payer's IBAN and name.
PLAIN = {
    "delimiter": ";",
    "columns": {
        "booking_date": "date",
        "amount": "amount",
        "currency": "currency",
        "counterparty_name": "name",
        "counterparty_account": "iban",
        "remittance": "text",
    },
}

CONFIG = {
    "plugins": {"disabled": ["webhooks", "notifications"]},
    "reconciliation": {
        "csv_formats": {"plain": PLAIN},
        # Two tenants with an account of the same id: the wall is the tenant.
        "accounts": [
            {"id": "main-eur", "tenant": tenant, "currency": "EUR", "csv_format": "plain"}
            for tenant in ("acme", "globex")
        ],
    },
}

#: A trustee pays the invoices of Müller Bau GmbH: its name says nothing about whom it pays for.
TREUHAND = "DE12 5001 0517 0648 4898 90"
#: ... as the importer keeps it (and the alias shows it).
TREUHAND_IBAN = TREUHAND.replace(" ", "")
MUELLER = "Müller Bau GmbH"


class Account:
    """One account of one tenant, through the API as a front end would use it."""

    def __init__(self, d, tenant: str):
        self.d, self.tenant = d, tenant
        self.token = d.create_tenant(tenant)

    def call(self, method: str, path: str, body=None, data=None, headers=None, expect=None):
        status, answer = self.d.request(
            method, ACME + path, json_body=body, data=data, token=self.token, headers=headers
        )
        if expect is not None:
            assert status == expect, (method, path, status, answer)
        return status, answer

    def statement(self, *lines: tuple[str, str, str, str, str]) -> None:
        """Import statement lines (date, amount, name, IBAN, text)."""
        rows = ["date;amount;currency;name;iban;text"] + [f"{d};{a};EUR;{n};{i};{t}" for d, a, n, i, t in lines]
        _, body = self.call(
            "POST",
            "/statements?format=csv",
            data="\n".join(rows).encode(),
            headers={"Content-Type": "application/octet-stream"},
            expect=201,
        )
        assert body["new"] == len(lines), body

    def ledger(self, *entries: tuple[str, str, str, str, str]) -> None:
        """Upsert ledger entries (external id, date, amount, counterparty, reference)."""
        keys = ("external_id", "date", "amount", "counterparty", "reference")
        self.call("POST", "/ledger", {"entries": [dict(zip(keys, e, strict=True)) for e in entries]}, expect=200)

    def open_ids(self) -> tuple[dict[str, int], dict[str, int]]:
        """Open statement lines by amount, ledger entries by external id."""
        _, items = self.call("GET", "/open-items", expect=200)
        return (
            {ln["amount"]: ln["id"] for ln in items["statement_lines"]},
            {e["external_id"]: e["id"] for e in items["ledger_entries"]},
        )

    def match(self, line: int, entry: int) -> dict:
        """Match one statement line with one ledger entry by hand."""
        body = {"statement_line_ids": [line], "ledger_entry_ids": [entry]}
        return self.call("POST", "/matches", body, expect=201)[1]

    def aliases(self) -> list[dict]:
        """The first page of what the account learnt (a page holds them all here)."""
        _, page = self.call("GET", "/aliases", expect=200)
        return page["data"]

    def audit(self, action: str) -> list[dict]:
        _, page = self.call("GET", "/audit?limit=500", expect=200)
        return [a for a in page["data"] if a["action"] == action]


@pytest.fixture
def daemon(tierd_daemon):
    return tierd_daemon(json.loads(json.dumps(CONFIG)))


@pytest.fixture
def acme(daemon) -> Account:
    return Account(daemon, "acme")


def mueller_payments(acct: Account) -> tuple[dict[str, int], dict[str, int]]:
    """Three payments of the trustee for three invoices of Müller Bau, no reference anywhere."""
    acct.statement(
        ("2026-11-02", "1200.00", "Treuhand Nord GmbH", TREUHAND, "Zahlung"),
        ("2026-11-16", "300.00", "Treuhand Nord GmbH", TREUHAND, "Zahlung"),
        ("2026-12-01", "870.00", "Treuhand Nord GmbH", TREUHAND, "Zahlung"),
    )
    acct.ledger(
        ("L-1", "2026-11-02", "1200.00", MUELLER, ""),
        ("L-2", "2026-11-16", "300.00", MUELLER, ""),
        ("L-3", "2026-12-01", "870.00", MUELLER, ""),
    )
    return acct.open_ids()


def test_manual_matches_teach_and_undoing_them_forgets(acme):
    lines, entries = mueller_payments(acme)
    assert acme.aliases() == []

    first = acme.match(lines["1200.00"], entries["L-1"])
    [alias] = acme.aliases()
    assert (alias["kind"], alias["bank_label"], alias["ledger_name"], alias["times"]) == (
        "iban",
        TREUHAND_IBAN,
        MUELLER,
        1,
    )
    # Times are written as everywhere in the API.
    assert all(iso(parse_iso(alias[k])) == alias[k] for k in ("first_at", "last_at"))

    second = acme.match(lines["300.00"], entries["L-2"])
    [alias2] = acme.aliases()
    assert (alias2["id"], alias2["times"], alias2["first_at"]) == (alias["id"], 2, alias["first_at"])
    assert alias2["last_at"] >= alias["last_at"]

    # Undoing one forgets its share; undoing the other forgets the alias.
    acme.call("DELETE", f"/matches/{first['id']}", expect=200)
    assert [(a["id"], a["times"]) for a in acme.aliases()] == [(alias["id"], 1)]
    acme.call("DELETE", f"/matches/{second['id']}", headers={"Tierd-Actor": "alice"}, expect=200)
    assert acme.aliases() == []
    [removed] = acme.audit("alias.removed")
    assert removed["object_id"] == str(alias["id"]) and removed["actor"].endswith(" for alice")
    assert removed["details"] | {"match_undone": second["id"]} == removed["details"]
    assert (removed["details"]["bank_label"], removed["details"]["ledger_name"]) == (TREUHAND_IBAN, MUELLER)

    # Matched again, the pair is learnt afresh.
    acme.match(lines["1200.00"], entries["L-1"])
    [again] = acme.aliases()
    assert again["times"] == 1 and again["id"] != alias["id"]


def test_what_teaches_nothing(acme):
    acme.statement(
        # No IBAN, and the name is the ledger's own: the name already says it all.
        ("2026-11-03", "40.00", "Kiosk Beta", "", "Zahlung"),
        # No IBAN, another name: learnt by the name.
        ("2026-11-04", "55.00", "Hausverwaltung Ost", "", "Miete"),
        # Neither IBAN nor name.
        ("2026-11-05", "60.00", "", "", "Bareinzahlung"),
        # A payer whose two lines settle one invoice teaches once.
        ("2026-11-06", "10.00", "Gamma", "DE02120300000000202051", "Teil 1"),
        ("2026-11-06", "15.00", "Gamma", "DE02 1203 0000 0000 2020 51", "Teil 2"),
    )
    acme.ledger(
        ("K-1", "2026-11-03", "40.00", "Kiosk Beta e.K.", ""),
        ("K-2", "2026-11-04", "55.00", "Immo Schmidt KG", ""),
        ("K-3", "2026-11-05", "60.00", "", ""),
        ("K-4", "2026-11-06", "25.00", "Gamma Handel AG", ""),
    )
    lines, entries = acme.open_ids()
    for amount, entry in (("40.00", "K-1"), ("55.00", "K-2"), ("60.00", "K-3")):
        acme.match(lines[amount], entries[entry])
    acme.call(
        "POST",
        "/matches",
        {"statement_line_ids": [lines["10.00"], lines["15.00"]], "ledger_entry_ids": [entries["K-4"]]},
        expect=201,
    )
    taught = {(a["kind"], a["bank_label"], a["ledger_name"], a["times"]) for a in acme.aliases()}
    assert len(taught) == 2 and ("name", "Hausverwaltung Ost", "Immo Schmidt KG", 1) in taught
    [gamma] = [a for a in taught if a[0] == "iban"]
    assert gamma[1:] == ("DE02120300000000202051", "Gamma Handel AG", 1)


def test_accepted_suggestions_and_automatic_matches_teach(acme):
    acme.statement(
        # Two open invoices of one customer, equally near: the engine asks a person.
        ("2026-11-04", "50.00", "Kiosk Beta", "DE44500105175407324931", "Danke"),
        # An invoice number in the remittance: matched automatically.
        ("2026-11-05", "99.00", "Alpha Holding", "DE75512108001245126199", "INV-4711"),
    )
    acme.ledger(
        ("B-1", "2026-11-03", "50.00", "Kiosk Beta", ""),
        ("B-2", "2026-11-05", "50.00", "Kiosk Beta", ""),
        ("A-1", "2026-11-05", "99.00", "Alpha AG", "INV-4711"),
    )
    _, run = acme.call("POST", "/runs", expect=201)
    assert run["counts"]["matches"] == 1, run
    _, page = acme.call("GET", f"/runs/{run['id']}/matches", expect=200)
    [auto] = page["data"]
    assert [a["ledger_name"] for a in acme.aliases()] == ["Alpha AG"]  # taught by the run

    _, page = acme.call("GET", "/suggestions", expect=200)
    suggestion = next(s for s in page["data"] if s["ledger_entries"][0]["external_id"] == "B-1")
    acme.call("POST", f"/suggestions/{suggestion['id']}/accept", expect=201)
    taught = {a["bank_label"]: (a["ledger_name"], a["times"]) for a in acme.aliases()}
    assert taught == {"DE44500105175407324931": ("Kiosk Beta", 1), "DE75512108001245126199": ("Alpha AG", 1)}

    # Undoing the run's match forgets what it taught.
    acme.call("DELETE", f"/matches/{auto['id']}", expect=200)
    assert [a["ledger_name"] for a in acme.aliases()] == ["Kiosk Beta"]


def test_remove_pages_and_tenant_walls(daemon, acme):
    globex = Account(daemon, "globex")
    lines, entries = mueller_payments(acme)
    acme.statement(
        ("2026-11-07", "11.00", "Payer A", "DE11111111111111111111", ""),
        ("2026-11-07", "12.00", "Payer B", "", ""),
    )
    acme.ledger(("P-1", "2026-11-07", "11.00", "Client A", ""), ("P-2", "2026-11-07", "12.00", "Client B", ""))
    lines, entries = acme.open_ids()
    match = acme.match(lines["1200.00"], entries["L-1"])
    acme.match(lines["11.00"], entries["P-1"])
    acme.match(lines["12.00"], entries["P-2"])

    # Pages walk the aliases by payer; every alias comes once.
    _, first = acme.call("GET", "/aliases?limit=2", expect=200)
    assert len(first["data"]) == 2 and first["next_cursor"]
    _, rest = acme.call("GET", f"/aliases?limit=2&cursor={first['next_cursor']}", expect=200)
    assert len(rest["data"]) == 1 and rest["next_cursor"] is None
    listed = first["data"] + rest["data"]
    assert [(a["kind"], a["ledger_name"]) for a in listed] == [
        ("iban", "Client A"),
        ("iban", MUELLER),
        ("name", "Client B"),
    ]
    status, body = acme.call("GET", "/aliases?cursor=bm90LW1pbmU")
    assert status == 400 and body["error"]["code"] == "invalid_cursor"

    # Another tenant sees none of them and cannot remove them, even with an account of the same id.
    mueller = listed[1]
    assert globex.aliases() == []
    status, body = globex.call("DELETE", f"/aliases/{mueller['id']}")
    assert status == 404 and body["error"]["code"] == "not_found"
    assert len(acme.aliases()) == 3

    # A person removes one; the page goes on from where it was.
    _, removed = acme.call("DELETE", f"/aliases/{mueller['id']}", headers={"Tierd-Actor": "bob"}, expect=200)
    assert removed == mueller
    [entry] = acme.audit("alias.removed")
    assert entry["object_id"] == str(mueller["id"]) and entry["actor"].endswith(" for bob")
    _, page = acme.call("GET", f"/aliases?limit=2&cursor={first['next_cursor']}", expect=200)
    assert [a["ledger_name"] for a in page["data"]] == ["Client B"]
    # Its match undone later takes nothing more away; a new match teaches it again.
    acme.call("DELETE", f"/matches/{match['id']}", expect=200)
    assert len(acme.aliases()) == 2
    acme.match(lines["300.00"], entries["L-2"])
    assert sorted(a["times"] for a in acme.aliases()) == [1, 1, 1]

    # Ids that are no alias of this account answer 404, never 500.
    for bad in (str(mueller["id"]), "abc", "-1", "0", "1.5", "99999999999999999999999", "%F0%9F%98%80"):
        status, body = acme.call("DELETE", f"/aliases/{bad}")
        assert status == 404 and body["error"]["code"] == "not_found", (bad, status, body)
    status, body = acme.d.request("GET", f"{BASE}/nope/aliases", token=acme.token)
    assert status == 404


def test_cli_lists_and_removes(daemon, acme):
    lines, entries = mueller_payments(acme)
    acme.match(lines["1200.00"], entries["L-1"])
    acme.match(lines["300.00"], entries["L-2"])

    result = daemon.cli("recon", "aliases", "--account", "main-eur", "--tenant", "acme")
    assert result.returncode == 0, result.stderr
    header, row = result.stdout.splitlines()[:2]
    assert header.split() == ["ID", "KIND", "BANK_LABEL", "LEDGER_NAME", "TIMES", "LAST_AT"]
    assert TREUHAND_IBAN in row and MUELLER in row and re.search(r"\b2\b", row)

    result = daemon.cli("recon", "aliases", "--account", "main-eur", "--tenant", "acme", "--json")
    [alias] = json.loads(result.stdout)
    assert (alias["bank_label"], alias["ledger_name"], alias["times"]) == (TREUHAND_IBAN, MUELLER, 2)

    result = daemon.cli("recon", "aliases", "--account", "main-eur", "--tenant", "acme", "--remove", str(alias["id"]))
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"alias {alias['id']} removed: {TREUHAND_IBAN} paid {MUELLER} (2 matches taught it)"
    result = daemon.cli("recon", "aliases", "--account", "main-eur", "--tenant", "acme")
    assert result.returncode == 0 and result.stdout.strip() == "(none)"

    result = daemon.cli(
        "recon", "aliases", "--account", "main-eur", "--tenant", "acme", "--remove", str(alias["id"]), "--json"
    )
    assert result.returncode != 0 and "not_found" in result.stderr


def test_a_learned_payer_is_matched_automatically_next_time(acme):
    """The trustee's name is nothing like Müller Bau's: equal amounts alone are
    left open. Once a reviewer has matched one of its payments by hand, the
    next run matches the others and says why."""
    lines, entries = mueller_payments(acme)
    _, run = acme.call("POST", "/runs", expect=201)
    assert run["counts"]["matches"] == 0 and run["counts"]["bank_lines_open"] == 3, run

    acme.match(lines["1200.00"], entries["L-1"])
    _, run = acme.call("POST", "/runs", expect=201)
    assert run["counts"]["matches"] == 2, run
    _, page = acme.call("GET", f"/runs/{run['id']}/matches", expect=200)
    assert sorted(m["ledger_entries"][0]["external_id"] for m in page["data"]) == ["L-2", "L-3"]
    # The first match taught once; the explanation names the payer by its IBAN.
    assert all("IBAN DE12…9890 paid Müller Bau GmbH once before" in m["explanation"] for m in page["data"]), [
        m["explanation"] for m in page["data"]
    ]
    # And the run's matches taught in turn.
    [alias] = acme.aliases()
    assert alias["times"] == 3


async def test_pages_walk_the_index_and_survive_long_names(tmp_path):
    """The list reads along the aliases' unique index from the cursor, never a
    sort or a scan, at any size; a counterparty too long to fit a cursor pages
    on by the alias's id."""
    long_name = "Müller Bau GmbH Niederlassung " + " ".join(f"Werk{i}" for i in range(40))
    names = ["Client A", long_name, "Client C", "Client D"]
    async with LocalDaemon(tmp_path, json.loads(json.dumps(CONFIG))) as d:
        assert d.daemon is not None and d.session is not None
        await d.tenant("acme")

        async def call(method: str, path: str, body=None, params=None):
            status, answer = await d.call(method, ACME + path, body, tenant="acme", params=params)
            assert status in (200, 201), (path, answer)
            return answer

        # Payer i pays 10+i for client i.
        csv = "date;amount;currency;name;iban;text\n" + "".join(
            f"2026-11-02;{10 + i}.00;EUR;Payer {i};DE{i:020d};x\n" for i in range(len(names))
        )
        headers = {"Authorization": f"Bearer {ADMIN_TOKEN}", "Tierd-Tenant": "acme"}
        async with d.session.post(d.url + ACME + "/statements?format=csv", data=csv.encode(), headers=headers) as resp:
            assert resp.status == 201, await resp.text()
        entries = [
            {"external_id": f"E-{i}", "date": "2026-11-02", "amount": f"{10 + i}.00", "counterparty": name}
            for i, name in enumerate(names)
        ]
        await call("POST", "/ledger", {"entries": entries})
        items = await call("GET", "/open-items")
        line_of = {ln["amount"]: ln["id"] for ln in items["statement_lines"]}
        for e in items["ledger_entries"]:
            await call(
                "POST", "/matches", {"statement_line_ids": [line_of[e["amount"]]], "ledger_entry_ids": [e["id"]]}
            )

        listed, cursors = [], []
        # The plans are SQLite's (PostgreSQL plans from its statistics: the pages are checked alone).
        sqlite = d.daemon.db.dialect == "sqlite"
        async with recorded_reads(d.daemon.db) if sqlite else contextlib.nullcontext([]) as reads:
            cursor = None
            while True:
                page = await call("GET", "/aliases", params={"limit": "1"} | ({"cursor": cursor} if cursor else {}))
                listed += page["data"]
                cursor = page["next_cursor"]
                if cursor is None:
                    break
                cursors.append(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode())
        assert [a["ledger_name"] for a in listed] == names
        assert cursors[0].startswith("[") and cursors[1].startswith("#")  # the long one pages on by id
        ours = [sql for sql in reads if "recon_aliases" in sql]
        assert len(ours) >= len(names) or not sqlite
        for sql in ours:
            plan = assert_index_walk(d.daemon.db.path, sql)
            assert not [ln for ln in plan if ln.startswith("SCAN ")], plan

        # The alias a long cursor names removed meanwhile: said, not a list cut short.
        await call("DELETE", f"/aliases/{listed[1]['id']}")
        after_long = base64.urlsafe_b64encode(cursors[1].encode()).decode().rstrip("=")
        status, body = await d.call("GET", ACME + "/aliases", tenant="acme", params={"cursor": after_long})
        assert status == 400 and body["error"]["code"] == "invalid_cursor" and "removed" in body["error"]["message"]
