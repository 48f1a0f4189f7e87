"""Why is this item still open? (issue 13): an open item's closest candidates, each
with the reason it was not taken, through the real daemon (API and CLI).

One account with four rule passes whose parameters the reasons must name
(tolerance 5.00, amount_date window 14, fuzzy_counterparty 85), a statement
and ledger built so that each item stays open for one known reason, one run.
"""

from __future__ import annotations

import datetime as dt
import json
import re
from decimal import Decimal

import pytest

from tierd.plugins.reconciliation.matching import BankLine, EngineConfig, LedgerEntry
from tierd.plugins.reconciliation.matching.model import KnownPayer
from tierd.plugins.reconciliation.matching.why import why
from tierd.testing import DaemonProcess

BASE = "/v1/reconciliation/accounts"
COLUMNS = ("booking_date", "amount", "currency", "counterparty_name", "remittance", "bank_reference")

CONFIG = {
    "plugins": {"disabled": ["webhooks", "notifications"]},
    "reconciliation": {
        "csv_formats": {"plain": {"columns": {c: c for c in COLUMNS}}},
        "accounts": [
            {
                "id": "main-eur",
                "tenant": "acme",
                "currency": "EUR",
                "csv_format": "plain",
                "rules": [
                    {"rule": "reference"},
                    {"rule": "amount_date", "window_days": 14},
                    {"rule": "fuzzy_counterparty", "min_similarity": 85, "window_days": 5},
                    {"rule": "tolerance", "absolute": "5.00", "percent": 0, "window_days": 5},
                ],
            }
        ],
    },
}

#: bank_reference -> the statement line (booking date, amount, counterparty, remittance).
LINES = {
    "BK-TOL": ("2026-11-10", "112.40", "Mueller Bau", "INV-5001"),  # 12.40 more than its entry
    "BK-DATE": ("2026-11-01", "250.00", "Schmidt Logistik", "Lieferung"),  # its entry 19 days later
    "BK-NAME": ("2026-11-05", "333.00", "Zeta Handels", "Ware"),  # its entry's name only 62% alike
    "BK-TOOK": ("2026-11-12", "75.00", "Kappa Papier", "INV-7001"),  # matched by reference
    "BK-LATE": ("2026-11-13", "75.00", "Kappa Papier", "Zahlung"),  # the same amount, a day late
    "BK-CASH1": ("2026-11-20", "20.00", "Kasse", "Bareinzahlung"),  # two equal lines, one entry
    "BK-CASH2": ("2026-11-20", "20.00", "Kasse", "Bareinzahlung"),
}

LEDGER = [
    {
        "external_id": "E-TOL",
        "date": "2026-11-10",
        "amount": "100.00",
        "counterparty": "Mueller Bau",
        "reference": "INV-5001",
    },
    {"external_id": "E-DATE", "date": "2026-11-20", "amount": "250.00", "counterparty": "Schmidt Logistik"},
    {"external_id": "E-NAME", "date": "2026-11-05", "amount": "333.00", "counterparty": "Zeta Hundle Services"},
    {
        "external_id": "E-TOOK",
        "date": "2026-11-12",
        "amount": "75.00",
        "counterparty": "Kappa Papier",
        "reference": "INV-7001",
    },
    {"external_id": "E-CASH", "date": "2026-11-20", "amount": "20.00", "counterparty": "Kasse"},
]


def statement() -> bytes:
    rows = [",".join(COLUMNS)]
    rows += [f"{d},{amount},EUR,{name},{remittance},{ref}" for ref, (d, amount, name, remittance) in LINES.items()]
    return "\n".join(rows).encode()


@pytest.fixture(scope="module")
def account(tmp_path_factory):
    """A daemon with the account imported and run once: (daemon, call, line ids, entry ids, run)."""
    d = DaemonProcess(tmp_path_factory.mktemp("why"), CONFIG)
    d.start()
    try:
        token = d.create_tenant("acme")

        def call(method, path, body=None, data=None, headers=None, token_=token):
            return d.request(method, path, json_body=body, data=data, token=token_, headers=headers)

        status, body = call(
            "POST",
            f"{BASE}/main-eur/statements?format=csv&filename=nov.csv",
            data=statement(),
            headers={"Content-Type": "application/octet-stream"},
        )
        assert status == 201 and body["new"] == len(LINES), body
        status, body = call("POST", f"{BASE}/main-eur/ledger", {"entries": LEDGER})
        assert status == 200 and body["new"] == len(LEDGER), body
        status, run = call("POST", f"{BASE}/main-eur/runs")
        assert status == 201 and run["status"] == "completed", run
        status, items = call("GET", f"{BASE}/main-eur/open-items")
        lines = {ln["bank_reference"]: ln["id"] for ln in items["statement_lines"]}
        entries = {e["external_id"]: e["id"] for e in items["ledger_entries"]}
        status, matches = call("GET", f"{BASE}/main-eur/matches")
        [took] = matches["data"]
        lines["BK-TOOK"] = took["statement_lines"][0]["id"]
        entries["E-TOOK"] = took["ledger_entries"][0]["id"]
        yield d, call, lines, entries, took
    finally:
        d.close()


def candidates(call, item: int, side: str = "bank", **params) -> dict:
    query = "&".join(f"{k}={v}" for k, v in {"side": side, **params}.items())
    status, body = call("GET", f"{BASE}/main-eur/open-items/{item}/candidates?{query}")
    assert status == 200, body
    return body


def candidate_of(answer: dict, item_id: int) -> dict:
    """The candidate naming exactly this one item of the other side."""
    [found] = [c for c in answer["candidates"] if [i["id"] for i in c["items"]] == [item_id]]
    return found


def test_amount_over_the_tolerance_names_the_difference_and_the_tolerance(account):
    _, call, lines, entries, _ = account
    answer = candidates(call, lines["BK-TOL"])
    assert answer["status"] == "open" and answer["item"]["id"] == lines["BK-TOL"] and answer["side"] == "bank"
    assert answer["would_match"] is None
    best = answer["candidates"][0]
    assert [i["id"] for i in best["items"]] == [entries["E-TOL"]] and best["items"][0]["side"] == "ledger"
    assert best["reasons_not_taken"][0] == "amount differs by 12.40, over the tolerance of 5.00 (rule tolerance)"
    assert best["rule"] == "tolerance" and best["score"] is None and best["outcome"] == "not_proposed"
    assert best["facts"] == {
        "amount_difference": "12.40",
        "currency": "EUR",
        "days_apart": 0,
        "name_similarity": 100,
        "reference_found": True,
        "known_payer": False,
    }
    # Every rule's reason is there too, each naming its rule.
    assert (
        "amount differs by 12.40, the rule needs equal amounts (rules reference, amount_date, fuzzy_counterparty)"
        in best["reasons_not_taken"]
    )
    assert best["by_rule"][0] == {"rule": "tolerance", "unmet": ["amount differs by 12.40, over the tolerance of 5.00"]}


def test_dates_beyond_the_window_say_how_far_apart_and_the_window(account):
    _, call, lines, entries, _ = account
    best = candidates(call, lines["BK-DATE"])["candidates"][0]
    assert [i["id"] for i in best["items"]] == [entries["E-DATE"]]
    assert best["reasons_not_taken"][0] == "date 19 days apart, rule window 14 (rule amount_date)"
    assert "date 19 days apart, rule window 5 (rule fuzzy_counterparty)" in best["reasons_not_taken"]
    assert best["facts"]["days_apart"] == 19 and best["facts"]["amount_difference"] == "0.00"
    # Asked from the ledger side, the same pair says the same.
    answer = candidates(call, entries["E-DATE"], side="ledger")
    assert answer["item"]["external_id"] == "E-DATE" and answer["side"] == "ledger"
    best = answer["candidates"][0]
    assert [i["id"] for i in best["items"]] == [lines["BK-DATE"]] and best["items"][0]["side"] == "bank"
    assert best["reasons_not_taken"][0] == "date 19 days apart, rule window 14 (rule amount_date)"


def test_names_too_different_give_the_similarity_and_the_threshold(account):
    _, call, lines, entries, _ = account
    best = candidates(call, lines["BK-NAME"])["candidates"][0]
    assert [i["id"] for i in best["items"]] == [entries["E-NAME"]]
    sim = best["facts"]["name_similarity"]
    assert 50 < sim < 70
    assert best["reasons_not_taken"][0] == f"name similarity {sim} < 85 (rule fuzzy_counterparty)"
    assert any(
        r.startswith(f"counterparty names {sim}% alike, under 70%") and r.endswith("(rule amount_date)")
        for r in best["reasons_not_taken"]
    )


def test_an_entry_another_line_took_names_that_match_and_its_score(account):
    _, call, lines, entries, took = account
    answer = candidates(call, lines["BK-LATE"])
    found = candidate_of(answer, entries["E-TOOK"])
    assert found["outcome"] == "taken"
    assert found["reasons_not_taken"][0] == (
        f"another line took it, score {took['score']:g} (match {took['id']}, rule reference,"
        f" statement line {lines['BK-TOOK']})"
    )
    assert found["match"] == {"id": took["id"], "rule": "reference", "score": took["score"]}
    assert found["facts"]["amount_difference"] == "0.00" and found["facts"]["days_apart"] == 1


def test_a_candidate_with_an_equally_good_rival_says_so(account):
    _, call, lines, entries, _ = account
    answer = candidates(call, lines["BK-CASH1"])
    best = answer["candidates"][0]
    assert [i["id"] for i in best["items"]] == [entries["E-CASH"]]
    assert best["outcome"] == "suggested" and best["rule"] == "amount_date" and best["score"] > 0.85
    rival = lines["BK-CASH2"]
    assert best["reasons_not_taken"] == [
        "another candidate for the same items is about as good: statement line"
        f" {rival} with ledger entry {entries['E-CASH']}, score {best['score']:g} (rule amount_date)"
    ]
    assert best["explanation"].startswith("amounts equal; booked the same day")


def test_limit_and_bad_requests(account):
    _, call, lines, entries, took = account
    assert len(candidates(call, lines["BK-TOL"], limit=1)["candidates"]) == 1
    assert len(candidates(call, lines["BK-TOL"], limit=20)["candidates"]) > 1
    path = f"{BASE}/main-eur/open-items"
    for query, code in (("side=both", "invalid_parameter"), ("limit=21", "invalid_parameter"), ("limit=x", None)):
        status, body = call("GET", f"{path}/{lines['BK-TOL']}/candidates?{query}")
        assert status == 400 and body["error"]["code"] == (code or "invalid_parameter"), body
    for item in ("999999", "abc", "0", "-1", "1e3", "99999999999999999999999", "%C2%B9"):
        status, body = call("GET", f"{path}/{item}/candidates")
        assert status == 404 and body["error"]["code"] == "not_found", (item, body)
    status, body = call("GET", f"{path}/abc/candidates")
    assert body["error"]["message"] == "no statement line 'abc' in this account"
    # Item ids are per side: an entry's id asked as a line names the side it looked on.
    status, body = call("GET", f"{path}/999999/candidates?side=ledger")
    assert status == 404 and body["error"]["message"] == "no ledger entry 999999 in this account"
    # A matched item is not open: 409 naming its match.
    status, body = call("GET", f"{path}/{lines['BK-TOOK']}/candidates")
    assert status == 409 and body["error"]["code"] == "item_not_open"
    assert took["id"] in body["error"]["message"] and body["error"]["details"]["match_id"] == took["id"]
    status, body = call("GET", f"{path}/{entries['E-TOOK']}/candidates?side=ledger")
    assert status == 409 and body["error"]["details"]["match_id"] == took["id"]
    status, body = call("GET", f"{BASE}/nope/open-items/{lines['BK-TOL']}/candidates")
    assert status == 404 and body["error"]["code"] == "not_found"


def test_tenants_are_walls(account):
    d, call, lines, _, _ = account
    other = d.create_tenant("globex")
    status, body = call("GET", f"{BASE}/main-eur/open-items/{lines['BK-TOL']}/candidates", token_=other)
    assert status == 404 and body["error"]["code"] == "not_found"
    # An account of the same name in the other tenant does not hold tenant A's items either.
    status, _ = call("POST", BASE, {"id": "main-eur", "currency": "EUR"}, token_=other)
    assert status == 201
    status, body = call("GET", f"{BASE}/main-eur/open-items/{lines['BK-TOL']}/candidates", token_=other)
    assert status == 404 and body["error"]["code"] == "not_found" and "statement line" in body["error"]["message"]


def test_cli_text_and_json(account):
    d, _, lines, entries, _ = account
    args = ("recon", "why", "--tenant", "acme", "--account", "main-eur")
    result = d.cli(*args, "--line", str(lines["BK-TOL"]))
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert out.startswith(f"statement line {lines['BK-TOL']}  2026-11-10  112.40 EUR  Mueller Bau  INV-5001")
    assert f"1. ledger entry {entries['E-TOL']} (E-TOL)  2026-11-10  100.00 EUR  Mueller Bau  INV-5001" in out
    assert "   - amount differs by 12.40, over the tolerance of 5.00 (rule tolerance)" in out
    assert "facts: amount difference 12.40 EUR, 0 days apart, names 100% alike, reference found" in out
    result = d.cli(*args, "--entry", str(entries["E-DATE"]), "--limit", "1", "--json")
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert len(data["candidates"]) == 1 and data["side"] == "ledger"
    assert data["candidates"][0]["reasons_not_taken"][0] == "date 19 days apart, rule window 14 (rule amount_date)"
    result = d.cli(*args)
    assert result.returncode == 2 and "--line N or --entry N" in result.stderr
    result = d.cli(*args, "--line", "999999")
    assert result.returncode != 0 and "not_found" in result.stderr


def test_an_item_a_run_would_match_now_says_so(account):
    _, call, lines, _, _ = account
    # A new entry of the same amount and party, two days from the line: the next run would take it.
    entry = {"external_id": "E-NEW", "date": "2026-11-03", "amount": "250.00", "counterparty": "Schmidt Logistik"}
    status, _ = call("POST", f"{BASE}/main-eur/ledger", {"entries": [entry]})
    assert status == 200
    answer = candidates(call, lines["BK-DATE"])
    would = answer["would_match"]
    assert would["rule"] == "amount_date" and [i["external_id"] for i in would["items"]] == ["E-NEW"]
    assert re.fullmatch(
        r"would be matched now by rule amount_date, score [0-9.]+: run the account again", would["reason"]
    )
    assert answer["candidates"][0]["outcome"] == "would_match"


# --- the pure part, on the engine's own items ---------------------------------------------------------------


def test_foreign_currency_reasons_name_the_instructed_amount_and_the_window():
    day = dt.date(2026, 11, 10)
    config = EngineConfig(
        rules=[{"rule": "fx", "window_days": 60, "rate_tolerance": 0.5}, {"rule": "amount_date", "window_days": 3}]
    )
    line = BankLine(
        "1",
        day,
        Decimal("921.30"),
        "EUR",
        "Globex Inc",
        remittance="Payment",
        instructed_amount=Decimal("1000.00"),
        instructed_currency="USD",
        exchange_rate=Decimal("0.9213"),
    )
    off = LedgerEntry("10", day, Decimal("1012.40"), "USD", "Globex Inc", reference="INV-1")
    late = LedgerEntry("11", day + dt.timedelta(days=80), Decimal("1000.00"), "USD", "Globex Inc", reference="INV-2")
    answer = why(line, [off, late], [], config)
    by_id = {c.items[0].id: c for c in answer.candidates}
    assert by_id["10"].reasons[0] == "instructed amount differs from the entry's by 12.40 USD (rule fx)"
    assert by_id["10"].facts["amount_difference"] == "-12.40" and by_id["10"].facts["currency"] == "USD"
    assert by_id["11"].reasons[0] == "date 80 days apart, rule window 60 (rule fx)"
    assert (
        "currency USD, the line is in EUR (instructed 1000.00 USD): only the fx rule converts (rule amount_date)"
        in by_id["11"].reasons
    )
    # A line that names no instructed amount cannot be compared with a foreign entry at all.
    plain = BankLine("2", day, Decimal("500.00"), "EUR", "Globex Inc")
    answer = why(plain, [LedgerEntry("12", day, Decimal("500.00"), "USD", "Globex Inc")], [], config)
    assert answer.candidates[0].reasons[0] == (
        "currency USD, the line is in EUR and names no instructed amount (rules fx, amount_date)"
    )
    assert answer.candidates[0].facts["amount_difference"] is None


def test_a_known_payer_is_a_fact_and_the_search_reaches_its_entries():
    day = dt.date(2026, 11, 10)
    payer = KnownPayer("iban:DE02120300000000202051", "DE02120300000000202051", "zeta", "Zeta", 3)
    config = EngineConfig(rules=[{"rule": "amount_date", "window_days": 3}], known_payers=[payer])
    iban = "DE02 1203 0000 0000 2020 51"
    line = BankLine("1", day, Decimal("480.00"), "EUR", "Holding Ost", counterparty_account=iban)
    entry = LedgerEntry("10", day + dt.timedelta(days=9), Decimal("480.00"), "EUR", "Zeta GmbH")
    [found] = why(line, [entry], [], config).candidates
    assert found.facts["known_payer"] is True and found.facts["name_similarity"] < 50
    assert found.reasons[0] == "date 9 days apart, rule window 3 (rule amount_date)"


def test_a_traced_run_matches_exactly_as_an_untraced_one():
    from tierd.plugins.reconciliation.matching import reconcile
    from tierd.plugins.reconciliation.matching.engine import Trace

    day = dt.date(2026, 11, 10)
    banks = [
        BankLine("1", day, Decimal("150.00"), "EUR", "Mueller GmbH", remittance="INV-1043"),
        BankLine("2", day, Decimal("20.00"), "EUR", "Kasse"),
        BankLine("3", day, Decimal("20.00"), "EUR", "Kasse"),
        BankLine("4", day, Decimal("97.50"), "EUR", "Beta KG", remittance="INV-2002"),
    ]
    ledgers = [
        LedgerEntry("10", day, Decimal("150.00"), "EUR", "Mueller GmbH", reference="INV-1043"),
        LedgerEntry("11", day, Decimal("20.00"), "EUR", "Kasse"),
        LedgerEntry("12", day, Decimal("100.00"), "EUR", "Beta KG", reference="INV-2002"),
    ]
    trace = Trace()
    plain, traced = reconcile(banks, ledgers), reconcile(banks, ledgers, trace=trace)
    assert plain == traced and plain.matches and plain.suggestions
    assert [p.rule for p in trace.passes] == [r["rule"] for r in EngineConfig().rules][: len(trace.passes)]
    # Every candidate is recorded with the reasons its rule gave, before resolve asked a person.
    first = trace.passes[0]
    assert first.rule == "reference" and first.auto and first.reasons[0][0].startswith("reference INV-1043")
    [amount_date] = [p for p in trace.passes if p.rule == "amount_date"]
    cash = [c for c in amount_date.suggested if c.ledger_ids == ("11",)]
    assert len(cash) == 2 and cash[0].reasons[-1] == "another candidate for the same items is about as good"


def test_an_entry_a_better_line_would_take_names_that_line():
    day = dt.date(2026, 11, 10)
    config = EngineConfig(rules=[{"rule": "reference"}, {"rule": "amount_date", "window_days": 3}])
    mine = BankLine("1", day, Decimal("100.00"), "EUR", "Alpha AG", remittance="Zahlung")
    better = BankLine("2", day, Decimal("100.00"), "EUR", "Alpha AG", remittance="Rechnung INV-9001")
    entry = LedgerEntry("10", day, Decimal("100.00"), "EUR", "Alpha AG", reference="INV-9001")
    answer = why(mine, [entry], [better], config)
    [found] = answer.candidates
    assert found.outcome == "lost" and answer.would_match is None
    assert re.fullmatch(
        r"statement line 2 is a better match for it \(rule reference, score [0-9.]+\)", found.reasons[0]
    ), found.reasons
    # Without the better line, the same entry would be matched now.
    answer = why(mine, [entry], [], config)
    assert answer.would_match is answer.candidates[0] and answer.would_match.rule == "amount_date"


def test_a_batch_a_run_would_make_and_the_parts_that_do_not_fit():
    """With the default rules: the two invoices adding up are one candidate; the others say why not."""
    day = dt.date(2026, 11, 10)
    line = BankLine("1", day, Decimal("350.00"), "EUR", "Nordwind Energie GmbH", remittance="Sammelzahlung")

    def invoice(n: int, days_before: int, amount: str) -> LedgerEntry:
        when = day - dt.timedelta(days=days_before)
        return LedgerEntry(str(n), when, Decimal(amount), "EUR", "Nordwind Energie GmbH", reference=f"INV-{n}")

    entries = [
        invoice(10, 20, "100.00"),
        invoice(11, 10, "250.00"),
        invoice(12, 10, "120.00"),
        invoice(13, 100, "230.00"),
    ]
    answer = why(line, entries, [], EngineConfig())
    first, *rest = answer.candidates
    assert answer.would_match is first and first.rule == "batch" and [e.id for e in first.items] == ["10", "11"]
    assert first.facts["amount_difference"] == "0.00" and first.facts["days_apart"] == 20
    assert first.explanation.startswith("2 open items of Nordwind Energie GmbH")
    by_id = {c.items[0].id: c.reasons[0] for c in rest}
    assert by_id["13"] == "the entry is dated 100 days before the line, the rule allows 90 before (rule batch)"
    assert by_id["12"] == "no 2 to 6 open entries of this party with it add up to 350.00 (rule batch)"


def test_a_payer_a_match_taught_is_known_next_time(account):
    _, call, lines, entries, _ = account
    # A reviewer matches the 62%-alike pair by hand: Zeta Handels pays for Zeta Hundle Services.
    status, body = call(
        "POST",
        f"{BASE}/main-eur/matches",
        {"statement_line_ids": [lines["BK-NAME"]], "ledger_entry_ids": [entries["E-NAME"]]},
    )
    assert status == 201, body
    csv = ",".join(COLUMNS) + "\n2026-11-25,90.00,EUR,Zeta Handels,Ware,BK-ZETA2\n"
    status, body = call(
        "POST",
        f"{BASE}/main-eur/statements?format=csv&filename=dec.csv",
        data=csv.encode(),
        headers={"Content-Type": "application/octet-stream"},
    )
    assert status == 201 and body["new"] == 1, body
    entry = {"external_id": "E-ZETA2", "date": "2026-12-20", "amount": "90.00", "counterparty": "Zeta Hundle Services"}
    status, _ = call("POST", f"{BASE}/main-eur/ledger", {"entries": [entry]})
    status, items = call("GET", f"{BASE}/main-eur/open-items")
    line = next(ln["id"] for ln in items["statement_lines"] if ln["bank_reference"] == "BK-ZETA2")
    best = candidates(call, line)["candidates"][0]
    assert [i["external_id"] for i in best["items"]] == ["E-ZETA2"]
    assert best["facts"]["known_payer"] is True and best["facts"]["name_similarity"] < 70
    # The names no longer stand in the way: only the date does.
    assert best["reasons_not_taken"][0] == "date 25 days apart, rule window 14 (rule amount_date)"
    assert not any("alike" in r or "similarity" in r for r in best["reasons_not_taken"])
