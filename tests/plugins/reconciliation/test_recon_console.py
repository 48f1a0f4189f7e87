"""The reconciliation pages of the web console, through the real daemon and a
browser-like session: what a person sees and what their clicks change
(checked through the API).

One account, a CSV statement and a ledger built so that one run leaves each
kind of thing: a match by reference, a suggestion (two equal cash lines for
one entry), an item open over the tolerance, and a line whose entry is in
another currency.
"""

from __future__ import annotations

import re

import pytest

from tierd.testing import ADMIN_TOKEN, ConsoleSession, DaemonProcess

BASE = "/v1/reconciliation/accounts/main-eur"
PAGE = "/ui/reconciliation/main-eur"
COLUMNS = ("booking_date", "amount", "currency", "counterparty_name", "remittance", "bank_reference")

CONFIG = {
    "plugins": {"disabled": ["webhooks", "notifications"]},
    "reconciliation": {
        "csv_formats": {"plain": {"columns": {c: c for c in COLUMNS}}},
        "accounts": [
            {
                "id": "main-eur",
                "name": "Main account",
                "tenant": "acme",
                "currency": "EUR",
                "csv_format": "plain",
                "rules": [
                    {"rule": "reference"},
                    {"rule": "amount_date", "window_days": 14},
                    {"rule": "tolerance", "absolute": "5.00", "percent": 0, "window_days": 5},
                ],
            }
        ],
    },
}

#: bank_reference -> (booking date, amount, counterparty, remittance).
LINES = {
    "BK-REF": ("2026-11-12", "75.00", "Kappa Papier", "INV-7001"),  # matched by reference
    "BK-CASH1": ("2026-11-20", "20.00", "Kasse", "Bareinzahlung"),  # two equal lines, one entry: suggested
    "BK-CASH2": ("2026-11-20", "20.00", "Kasse", "Bareinzahlung"),
    "BK-TOL": ("2026-11-10", "112.40", "Mueller Bau", "INV-5001"),  # 12.40 over its entry
    "BK-USD": ("2026-11-15", "92.00", "Omega Inc", "Order 42"),  # its entry is in USD
}
LEDGER = [
    {
        "external_id": "E-REF",
        "date": "2026-11-12",
        "amount": "75.00",
        "counterparty": "Kappa Papier",
        "reference": "INV-7001",
    },
    {"external_id": "E-CASH", "date": "2026-11-20", "amount": "20.00", "counterparty": "Kasse"},
    {
        "external_id": "E-TOL",
        "date": "2026-11-10",
        "amount": "100.00",
        "counterparty": "Mueller Bau",
        "reference": "INV-5001",
    },
    {"external_id": "E-USD", "date": "2026-11-15", "amount": "100.00", "currency": "USD", "counterparty": "Omega Inc"},
]


def statement() -> bytes:
    """The CSV statement file, as a bank's export would be."""
    rows = [",".join(COLUMNS)]
    rows += [f"{d},{amount},EUR,{name},{remittance},{ref}" for ref, (d, amount, name, remittance) in LINES.items()]
    return ("\n".join(rows) + "\n").encode()


@pytest.fixture(scope="module")
def recon(tmp_path_factory):
    """A daemon with the account imported, its ledger posted, one run: (daemon, token, line ids, entry ids)."""
    d = DaemonProcess(tmp_path_factory.mktemp("recon_console"), CONFIG)
    d.start()
    try:
        token = d.create_tenant("acme")
        status, body = d.request(
            "POST",
            f"{BASE}/statements?format=csv&filename=nov.csv",
            data=statement(),
            token=token,
            headers={"Content-Type": "application/octet-stream"},
        )
        assert status == 201 and body["new"] == len(LINES), body
        status, body = d.request("POST", f"{BASE}/ledger", {"entries": LEDGER}, token=token)
        assert status == 200 and body["new"] == len(LEDGER), body
        status, run = d.request("POST", f"{BASE}/runs", token=token)
        assert status == 201 and run["status"] == "completed", run
        status, items = d.request("GET", f"{BASE}/open-items", token=token)
        lines = {ln["bank_reference"]: ln["id"] for ln in items["statement_lines"]}
        entries = {e["external_id"]: e["id"] for e in items["ledger_entries"]}
        status, matches = d.request("GET", f"{BASE}/matches", token=token)
        [ref] = matches["data"]
        lines["BK-REF"], entries["E-REF"] = ref["statement_lines"][0]["id"], ref["ledger_entries"][0]["id"]
        yield d, token, lines, entries
    finally:
        d.close()


def api(recon, method: str, path: str, body=None):
    d, token, _, _ = recon
    status, answer = d.request(method, BASE + path, body, token=token)
    assert status < 400, answer
    return answer


def open_ids(recon) -> tuple[set[int], set[int]]:
    items = api(recon, "GET", "/open-items")
    return {x["id"] for x in items["statement_lines"]}, {x["id"] for x in items["ledger_entries"]}


def row(html: str, attr: str, value) -> str:
    """The HTML of the table row ``<tr data-attr="value">``."""
    found = re.search(rf'<tr data-{attr}="{value}">(.*?)</tr>', html, re.S)
    assert found, f"no row data-{attr}={value}"
    return found.group(1)


async def signed_in(recon, token: str | None = None) -> ConsoleSession:
    ui = ConsoleSession(recon[0].url)
    status, _ = await ui.sign_in(token or recon[1])
    assert status == 200
    return ui


async def test_accounts_list_and_overview_show_the_counts(recon):
    async with await signed_in(recon) as ui:
        status, html = await ui.get("/ui/reconciliation")
        assert status == 200
        account = row(html, "account", "main-eur")
        assert 'href="/ui/reconciliation/main-eur"' in account and "Main account" in account and "EUR" in account
        status, html = await ui.get("/ui/")
        assert status == 200 and "Reconciliation" in html and 'data-account="main-eur"' in html


async def test_account_page_shows_open_items_and_matches_with_explanations(recon):
    _, _, lines, entries = recon
    async with await signed_in(recon) as ui:
        status, html = await ui.get(PAGE)
        assert status == 200 and "Run matching now" in html
        line = row(html, "line", lines["BK-TOL"])
        assert "112.40 EUR" in line and "Mueller Bau" in line
        assert f'href="/ui/reconciliation/main-eur/why/bank/{lines["BK-TOL"]}"' in line
        status, html = await ui.get(PAGE + "?view=ledger")
        entry = row(html, "entry", entries["E-USD"])
        assert "100.00 USD" in entry and f"/why/ledger/{entries['E-USD']}" in entry
        status, html = await ui.get(PAGE + "?view=matches")
        [match] = [m for m in api(recon, "GET", "/matches")["data"] if m["rule"] == "reference"]
        shown = row(html, "match", match["id"])
        assert match["explanation"] in shown and "reference" in shown and "Unmatch" in shown
        assert "data-confirm=" in shown and "75.00 EUR" in shown
        status, html = await ui.get(PAGE + "?view=suggestions")
        suggestion = api(recon, "GET", "/suggestions")["data"][0]
        shown = row(html, "suggestion", suggestion["id"])
        assert suggestion["explanation"] in shown and f"{suggestion['score']:.2f}" in shown and "Accept" in shown


async def test_accept_a_suggestion_then_an_api_refusal_is_a_flash(recon):
    suggestion = api(recon, "GET", "/suggestions")["data"][0]
    async with await signed_in(recon) as ui:
        await ui.get(PAGE + "?view=suggestions")
        status, html = await ui.post(f"{PAGE}/suggestions/{suggestion['id']}/accept")
        assert status == 200 and ui.last_path == PAGE + "?view=matches"
        assert "Suggestion accepted" in html
        matches = api(recon, "GET", "/matches")["data"]
        [accepted] = [m for m in matches if m["kind"] == "accepted"]
        assert [x["id"] for x in accepted["ledger_entries"]] == suggestion["ledger_ids"]
        assert f'data-match="{accepted["id"]}"' in html
        # Accepting it again: the API refuses, the page says why.
        status, html = await ui.post(f"{PAGE}/suggestions/{suggestion['id']}/accept")
        assert status == 200 and 'class="flash error"' in html and "suggestion_not_open" in html


async def test_unmatch_opens_the_items_again(recon):
    _, _, lines, entries = recon
    [match] = [m for m in api(recon, "GET", "/matches")["data"] if m["rule"] == "reference"]
    async with await signed_in(recon) as ui:
        await ui.get(PAGE + "?view=matches")
        status, html = await ui.post(f"{PAGE}/matches/{match['id']}/undo")
        assert status == 200 and f"Match {match['id']} undone" in html
    bank, ledger = open_ids(recon)
    assert lines["BK-REF"] in bank and entries["E-REF"] in ledger
    assert api(recon, "GET", f"/matches/{match['id']}")["status"] == "undone"


async def test_why_page_lists_a_candidate_with_its_reason_and_matches_it_by_hand(recon):
    _, _, lines, entries = recon
    async with await signed_in(recon) as ui:
        status, html = await ui.get(f"{PAGE}/why/bank/{lines['BK-TOL']}")
        assert status == 200
        assert "amount differs by 12.40, over the tolerance of 5.00 (rule tolerance)" in html
        assert "amount difference" in html and "12.40 EUR" in html and "days apart" in html
        assert "Match these" in html and 'name="adjustment" value="12.40"' in html
        status, html = await ui.post(
            f"{PAGE}/match",
            {
                "statement_line_ids": str(lines["BK-TOL"]),
                "ledger_entry_ids": str(entries["E-TOL"]),
                "adjustment": "12.40",
                "note": "fee",
                "back": f"/reconciliation/main-eur/why/bank/{lines['BK-TOL']}",
            },
        )
        assert status == 200 and "Matched by hand" in html and ui.last_path == PAGE + "?view=matches"
    bank, ledger = open_ids(recon)
    assert lines["BK-TOL"] not in bank and entries["E-TOL"] not in ledger
    [manual] = [m for m in api(recon, "GET", "/matches")["data"] if m["kind"] == "manual"]
    assert manual["adjustment"] == "12.40" and "note: fee" in manual["explanation"]


async def test_a_foreign_entry_asks_for_the_exchange_rate(recon):
    _, _, lines, entries = recon
    why = f"{PAGE}/why/bank/{lines['BK-USD']}"
    fields = {
        "statement_line_ids": str(lines["BK-USD"]),
        "ledger_entry_ids": str(entries["E-USD"]),
        "back": why.removeprefix("/ui"),
    }
    async with await signed_in(recon) as ui:
        status, html = await ui.get(why)
        assert status == 200 and "100.00 USD" in html
        status, html = await ui.post(f"{PAGE}/match", fields)
        assert status == 200 and ui.last_path.startswith(why + "?")
        assert "exchange_rate_required" in html and 'name="exchange_rate"' in html
        assert entries["E-USD"] in open_ids(recon)[1]
        status, html = await ui.post(f"{PAGE}/match", fields | {"exchange_rate": "0.92"})
        assert status == 200 and "Matched by hand" in html
    assert entries["E-USD"] not in open_ids(recon)[1]


async def test_a_post_without_csrf_is_refused_and_changes_nothing(recon):
    [match] = api(recon, "GET", "/matches")["data"][:1]
    async with await signed_in(recon) as ui:
        await ui.get(PAGE + "?view=matches")
        status, html = await ui.post(f"{PAGE}/matches/{match['id']}/undo", csrf=False)
        assert status == 403 and "csrf_failed" in html
        status, _ = await ui.post(f"{PAGE}/run", {"csrf": "forged"}, csrf=False)
        assert status == 403
    assert api(recon, "GET", f"/matches/{match['id']}")["status"] == "active"


async def test_another_tenant_gets_404_and_changes_nothing(recon):
    d, _, lines, _ = recon
    other = d.create_tenant("globex")
    [match] = api(recon, "GET", "/matches")["data"][:1]
    async with await signed_in(recon, other) as ui:
        status, html = await ui.get("/ui/reconciliation")
        assert status == 200 and "main-eur" not in html
        for path in (PAGE, f"{PAGE}?view=matches", f"{PAGE}/why/bank/{lines['BK-CASH1']}"):
            status, html = await ui.get(path)
            assert status == 404 and "not_found" in html, path
        await ui.get("/ui/reconciliation")
        status, _ = await ui.post(f"{PAGE}/matches/{match['id']}/undo")
        assert status == 404
        status, _ = await ui.post(f"{PAGE}/run")
        assert status == 404
    assert api(recon, "GET", f"/matches/{match['id']}")["status"] == "active"


async def test_the_admin_sees_every_tenant_and_follows_a_link_into_one(recon):
    async with await signed_in(recon, ADMIN_TOKEN) as ui:
        status, html = await ui.get("/ui/reconciliation")
        account = row(html, "account", "main-eur")
        assert "acme" in account and 'href="/ui/reconciliation/main-eur?tenant=acme"' in account
        status, html = await ui.get(PAGE + "?tenant=acme&view=bank")
        assert status == 200 and "data-line=" in html
        status, html = await ui.get(f"{PAGE}/why/side/1?tenant=acme")
        assert status == 404
        # Without a tenant picked, an account's page goes to the tenant that has it.
        status, html = await ui.get(PAGE + "?view=ledger")
        assert status == 200 and ui.last_path == PAGE + "?view=ledger&tenant=acme" and "data-entry=" in html
        status, html = await ui.get("/ui/reconciliation/nope")
        assert status == 404


async def test_run_matching_now_from_the_account_page(recon):
    async with await signed_in(recon) as ui:
        await ui.get(PAGE)
        status, html = await ui.post(f"{PAGE}/run")
        assert status == 200 and ui.last_path == PAGE
        found = re.search(r"Run (run_\w+) completed: (\d+) matched, (\d+) suggested", html)
        assert found, html
    run = api(recon, "GET", f"/runs/{found.group(1)}")
    assert run["status"] == "completed" and run["counts"]["matches"] == int(found.group(2))


async def test_bad_match_forms_are_flashes_not_errors(recon):
    [held] = api(recon, "GET", "/matches")["data"][:1]
    taken = held["statement_lines"][0]["id"] if held["statement_lines"] else held["ledger_entries"][0]["id"]
    side = "statement_line_ids" if held["statement_lines"] else "ledger_entry_ids"
    async with await signed_in(recon) as ui:
        await ui.get(PAGE)
        status, html = await ui.post(f"{PAGE}/match", {"statement_line_ids": "1, x"})
        assert status == 200 and "whole numbers" in html and ui.last_path == PAGE + "?view=bank"
        status, html = await ui.post(f"{PAGE}/match", {side: str(taken)})
        assert status == 200 and "item_not_open" in html
        status, html = await ui.post(f"{PAGE}/match", {})
        assert status == 200 and 'class="flash error"' in html and "at least one" in html
        status, html = await ui.post(f"{PAGE}/suggestions/s_nope/accept")
        assert status == 200 and "no suggestion s_nope" in html
        status, html = await ui.get(f"{PAGE}/why/bank/{taken if side == 'statement_line_ids' else 999999}")
        assert status in (404, 409) and "<h1>" in html
    assert api(recon, "GET", f"/matches/{held['id']}")["status"] == "active"
