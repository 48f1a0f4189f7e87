"""Multi-currency: payments instructed in another currency, and accounts in CHF, USD, JPY.

Engine-level cases first (the fx rule's evidence and limits), then the real
daemon: a CAMT.053 statement whose USD payment was booked in EUR with the
bank's rate matches a USD invoice of the books; manual matches of foreign
entries; and accounts in other currencies reconcile exactly as EUR does.
"""

import datetime as dt
import json
from decimal import Decimal

import pytest

from tierd.plugins.reconciliation.matching import BankLine, EngineConfig, LedgerEntry, reconcile

D = Decimal
BASE = "/v1/reconciliation/accounts"


def usd_payment(bank_id="b1", booked="921.30", instructed="1000.00", rate="0.9213", name="ACME Corp", remit="US-7781"):
    return BankLine(
        bank_id,
        dt.date(2026, 11, 10),
        D(booked),
        "EUR",
        name,
        remit,
        counterparty_account="US64SVBKUS6S3300958879",
        instructed_amount=D(instructed),
        instructed_currency="USD",
        exchange_rate=D(rate) if rate else None,
    )


def usd_invoice(entry_id="l1", amount="1000.00", name="Acme Corporation", ref="US-7781", day=20):
    return LedgerEntry(entry_id, dt.date(2026, 10, day), D(amount), "USD", name, ref)


def test_an_instructed_usd_payment_matches_the_usd_invoice_at_the_banks_rate():
    [m] = reconcile([usd_payment()], [usd_invoice()]).matches
    assert (m.rule, m.bank_ids, m.ledger_ids) == ("fx", ("b1",), ("l1",))
    assert m.exchange_rate == D("0.9213") and m.adjustment == 0
    assert "instructed USD 1,000.00" in m.explanation and "the bank's rate 0.9213" in m.explanation
    assert "reference US-7781 in remittance" in m.explanation


def test_the_banks_spread_is_kept_as_an_exchange_adjustment():
    # The bank booked 919.00 where 1000 x 0.9213 = 921.30: 0.25 % off, within the default 0.5 %.
    [m] = reconcile([usd_payment(booked="919.00")], [usd_invoice()]).matches
    assert m.adjustment == D("-2.30") and m.exchange_rate == D("0.9213")
    assert "exchange difference -2.30 kept as an adjustment" in m.explanation
    # The invariant the store relies on: booked == ledger x rate + adjustment.
    assert D("919.00") == (D("1000.00") * m.exchange_rate).quantize(D("0.01")) + m.adjustment


def test_a_rate_tolerance_can_be_tightened_and_a_bank_disagreeing_with_itself_is_not_matched():
    strict = EngineConfig(rules=[{"rule": "fx", "rate_tolerance": 0.1}])
    assert reconcile([usd_payment(booked="919.00")], [usd_invoice()], strict).matches == []
    # Booked 880 at a stated 0.9213 is 4.5 % off: not an exchange difference any more.
    assert reconcile([usd_payment(booked="880.00")], [usd_invoice()]).matches == []


def test_without_a_rate_the_booked_amount_implies_it():
    [m] = reconcile([usd_payment(rate="")], [usd_invoice()]).matches
    assert m.exchange_rate == D("0.9213") and m.adjustment == 0
    assert "the rate the booked amount implies 0.9213" in m.explanation


def test_an_equal_foreign_amount_alone_is_only_a_suggestion():
    line = usd_payment(name="", remit="thank you")
    result = reconcile([line], [usd_invoice(name="Somebody Else LLC")])
    assert result.matches == []
    [s] = result.suggestions
    assert s.rule == "fx" and s.exchange_rate == D("0.9213")


def test_entries_in_the_accounts_own_currency_are_not_converted():
    eur = LedgerEntry("l2", dt.date(2026, 11, 9), D("1000.00"), "EUR", "Acme Corporation", "US-7781")
    result = reconcile([usd_payment()], [eur])
    assert all(m.rule != "fx" for m in result.matches + result.suggestions)


# --- through the daemon ------------------------------------------------------------------------

PLAIN = {
    "delimiter": ",",
    "encoding": "utf-8",
    "decimal": ".",
    "date_format": "%Y-%m-%d",
    "columns": {
        "booking_date": "date",
        "amount": "amount",
        "currency": "currency",
        "counterparty_name": "name",
        "remittance": "text",
    },
}

#: A bank export with the payer's instructed amount, its currency and the rate in columns of their own.
FXCSV = {
    **PLAIN,
    "delimiter": ";",
    "decimal": ",",
    "columns": {
        **PLAIN["columns"],
        "instructed_amount": "orig amount",
        "instructed_currency": "orig ccy",
        "exchange_rate": "rate",
    },
}

CONFIG = {
    "plugins": {"disabled": ["webhooks", "notifications"]},
    "reconciliation": {
        "csv_formats": {"plain": PLAIN, "fxcsv": FXCSV},
        "accounts": [
            {"id": "eur", "tenant": "acme", "currency": "EUR", "iban": "DE89370400440532013000"},
            {"id": "eur-csv", "tenant": "acme", "currency": "EUR", "csv_format": "fxcsv"},
            {"id": "chf", "tenant": "acme", "currency": "CHF", "csv_format": "plain"},
            {"id": "usd", "tenant": "acme", "currency": "USD", "csv_format": "plain"},
            {"id": "jpy", "tenant": "acme", "currency": "JPY", "csv_format": "plain"},
        ],
    },
}

CAMT = """<?xml version="1.0" encoding="UTF-8"?>
<Document xmlns="urn:iso:std:iso:20022:tech:xsd:camt.053.001.02">
 <BkToCstmrStmt>
  <GrpHdr><MsgId>FX-1</MsgId><CreDtTm>2026-11-11T06:00:00</CreDtTm></GrpHdr>
  <Stmt>
   <Id>FX-1-1</Id>
   <CreDtTm>2026-11-11T06:00:00</CreDtTm>
   <Acct><Id><IBAN>DE89370400440532013000</IBAN></Id><Ccy>EUR</Ccy></Acct>
   <Ntry>
    <Amt Ccy="EUR">921.30</Amt>
    <CdtDbtInd>CRDT</CdtDbtInd>
    <Sts>BOOK</Sts>
    <BookgDt><Dt>2026-11-10</Dt></BookgDt>
    <ValDt><Dt>2026-11-10</Dt></ValDt>
    <BkTxCd/>
    <NtryDtls>
     <TxDtls>
      <Refs><EndToEndId>NOTPROVIDED</EndToEndId></Refs>
      <AmtDtls>
       <InstdAmt><Amt Ccy="USD">1000.00</Amt></InstdAmt>
       <TxAmt>
        <Amt Ccy="EUR">921.30</Amt>
        <CcyXchg><SrcCcy>USD</SrcCcy><TrgtCcy>EUR</TrgtCcy><UnitCcy>USD</UnitCcy><XchgRate>0.9213</XchgRate></CcyXchg>
       </TxAmt>
      </AmtDtls>
      <RltdPties><Dbtr><Nm>ACME Corp</Nm></Dbtr></RltdPties>
      <RmtInf><Ustrd>Invoice US-7781</Ustrd></RmtInf>
     </TxDtls>
    </NtryDtls>
   </Ntry>
   <Ntry>
    <Amt Ccy="EUR">450.00</Amt>
    <CdtDbtInd>CRDT</CdtDbtInd>
    <Sts>BOOK</Sts>
    <BookgDt><Dt>2026-11-10</Dt></BookgDt>
    <ValDt><Dt>2026-11-10</Dt></ValDt>
    <BkTxCd/>
    <NtryDtls>
     <TxDtls>
      <AmtDtls><InstdAmt><Amt Ccy="GBP">390.00</Amt></InstdAmt></AmtDtls>
      <RltdPties><Dbtr><Nm>Brit Ltd</Nm></Dbtr></RltdPties>
      <RmtInf><Ustrd>payment</Ustrd></RmtInf>
     </TxDtls>
    </NtryDtls>
   </Ntry>
  </Stmt>
 </BkToCstmrStmt>
</Document>
"""


@pytest.fixture
def fx(tierd_daemon):
    d = tierd_daemon(json.loads(json.dumps(CONFIG)))
    token = d.create_tenant("acme")

    def call(method, path, body=None, data=None, headers=None):
        return d.request(method, path, json_body=body, data=data, token=token, headers=headers)

    return d, call


def _import(call, account, data: bytes, fmt: str):
    status, body = call(
        "POST", f"{BASE}/{account}/statements?format={fmt}", data=data, headers={"Content-Type": "text/plain"}
    )
    assert status == 201, body
    return body


def test_a_usd_payment_booked_in_eur_matches_the_usd_invoice_and_keeps_the_rate(fx):
    d, call = fx
    _import(call, "eur", CAMT.encode(), "camt053")
    status, items = call("GET", f"{BASE}/eur/open-items?side=bank")
    first = next(x for x in items["statement_lines"] if x["amount"] == "921.30")
    assert (first["instructed_amount"], first["instructed_currency"], first["exchange_rate"]) == (
        "1000.00",
        "USD",
        "0.9213",
    )
    ledger = [
        {"external_id": "US-7781", "date": "2026-10-20", "amount": "1000.00", "currency": "USD",
         "counterparty": "Acme Corporation", "reference": "US-7781"},
        {"external_id": "UK-12", "date": "2026-10-25", "amount": "390.00", "currency": "GBP",
         "counterparty": "Brit Limited", "reference": "UK-12"},
        {"external_id": "BAD", "date": "2026-10-25", "amount": "1.00", "currency": "usd"},
    ]  # fmt: skip
    status, body = call("POST", f"{BASE}/eur/ledger", body={"entries": ledger})
    assert status == 422 and "entries[2]: currency must be an ISO 4217 code" in body["error"]["details"][0]
    status, body = call("POST", f"{BASE}/eur/ledger", body={"entries": ledger[:2]})
    assert (status, body["new"]) == (200, 2), body

    status, run = call("POST", f"{BASE}/eur/runs")
    assert status == 201 and run["counts"]["matches"] == 2, run
    status, matches = call("GET", f"{BASE}/eur/matches")
    by_ref = {m["ledger_entries"][0]["external_id"]: m for m in matches["data"]}
    usd = by_ref["US-7781"]
    assert (usd["rule"], usd["exchange_rate"], usd["adjustment"]) == ("fx", "0.9213", "0.00")
    assert "instructed USD 1,000.00" in usd["explanation"] and "reference US-7781" in usd["explanation"]
    # No rate from the bank: the one its amounts imply (450 / 390), and the names agree.
    gbp = by_ref["UK-12"]
    assert gbp["rule"] == "fx" and Decimal(gbp["exchange_rate"]) == (D(450) / D(390)).quantize(D("1e-10"))
    assert "the rate the booked amount implies" in gbp["explanation"]

    # Undone, the GBP pair is matched by hand at a rate the reviewer names; without a rate
    # where the line names no GBP amount, the API says what is missing.
    status, _ = call("DELETE", f"{BASE}/eur/matches/{gbp['id']}")
    assert status == 200
    line_id = gbp["statement_lines"][0]["id"]
    entry_id = gbp["ledger_entries"][0]["id"]
    body = {"statement_line_ids": [line_id], "ledger_entry_ids": [entry_id], "exchange_rate": "1.15"}
    status, err = call("POST", f"{BASE}/eur/matches", body=body)
    # 390 x 1.15 = 448.50: the reviewer must say where the 1.50 goes.
    assert status == 422 and err["error"]["code"] == "amounts_unbalanced"
    assert err["error"]["details"] == {"bank_total": "450.00", "ledger_total": "448.50", "difference": "1.50"}
    # From the CLI, as a reviewer would.
    args = ("recon", "match", "--tenant", "acme", "--account", "eur", "--line", str(line_id), "--entry", str(entry_id))
    result = d.cli(*args, "--exchange-rate", "1.15", "--adjustment", "1.50", "--json")
    assert result.returncode == 0, result.stderr
    m = json.loads(result.stdout)
    assert m["exchange_rate"] == "1.15" and "valued at 1.15 EUR per unit" in m["explanation"]


def test_a_foreign_entry_matched_by_hand_needs_a_rate_when_the_line_names_none(fx):
    d, call = fx
    csv = b"date,amount,currency,name,text\n2026-11-02,99.50,CHF,Keller AG,R-1\n"
    _import(call, "chf", csv, "csv")
    entries = [
        {"external_id": "E1", "date": "2026-11-01", "amount": "100.00", "currency": "EUR"},
        {"external_id": "U1", "date": "2026-11-01", "amount": "1.00", "currency": "USD"},
    ]
    call("POST", f"{BASE}/chf/ledger", body={"entries": entries})
    _, items = call("GET", f"{BASE}/chf/open-items")
    line = items["statement_lines"][0]["id"]
    ids = {e["external_id"]: e["id"] for e in items["ledger_entries"]}
    status, err = call(
        "POST", f"{BASE}/chf/matches", body={"statement_line_ids": [line], "ledger_entry_ids": [ids["E1"]]}
    )
    assert status == 422 and err["error"]["code"] == "exchange_rate_required" and "EUR" in err["error"]["message"]
    both = {"statement_line_ids": [line], "ledger_entry_ids": sorted(ids.values()), "exchange_rate": "1"}
    status, err = call("POST", f"{BASE}/chf/matches", body=both)
    assert status == 422 and err["error"]["code"] == "mixed_currencies"
    # Nothing was matched by the refused requests.
    _, items = call("GET", f"{BASE}/chf/open-items")
    assert len(items["statement_lines"]) == 1 and len(items["ledger_entries"]) == 2


@pytest.mark.parametrize(
    "account, amounts",
    [
        ("chf", ("1250.40", "310.00", "-89.95")),
        ("usd", ("1250.40", "310.00", "-89.95")),
        ("jpy", ("125040", "31000", "-8995")),  # no minor unit
    ],
)
def test_accounts_in_other_currencies_reconcile_as_eur_does(fx, account, amounts):
    d, call = fx
    ccy = account.upper()
    a, b, c = amounts
    csv = (
        "date,amount,currency,name,text\n"
        f"2026-11-02,{a},{ccy},Keller Holding AG,Rechnung INV-501\n"
        f"2026-11-03,{b},{ccy},Mueller Baeckerei GmbH,danke\n"
        f"2026-11-04,{c},{ccy},Swisscom,Abo 11\n"
        f"2026-11-04,5,EUR,Other,wrong currency\n"
    ).encode()
    body = _import(call, account, csv, "csv")
    assert (body["new"], body["rejected"]) == (3, 1)  # the EUR line is refused, named
    entries = [
        {"external_id": "INV-501", "date": "2026-10-28", "amount": a, "counterparty": "Keller Holding",
         "reference": "INV-501"},
        {"external_id": "INV-502", "date": "2026-11-01", "amount": b, "counterparty": "Müller Bäckerei GmbH"},
        {"external_id": "K-9", "date": "2026-11-04", "amount": c, "counterparty": "Swisscom AG"},
    ]  # fmt: skip
    status, _ = call("POST", f"{BASE}/{account}/ledger", body={"entries": entries})
    assert status == 200
    status, run = call("POST", f"{BASE}/{account}/runs")
    assert status == 201 and run["counts"]["matches"] == 3, run
    _, matches = call("GET", f"{BASE}/{account}/matches")
    rules = {m["ledger_entries"][0]["external_id"]: m["rule"] for m in matches["data"]}
    assert rules["INV-501"] == "reference" and set(rules) == {"INV-501", "INV-502", "K-9"}
    assert all(m["adjustment"] in ("0", "0.00") and m["explanation"] for m in matches["data"])


def test_a_csv_export_with_instructed_amount_columns_reconciles_through_the_rate(fx):
    d, call = fx
    header = "date;amount;currency;name;text;orig amount;orig ccy;rate\n"
    bad = header + "2026-11-03;-1.840,00;EUR;Zulieferer;X;2.000,00;dollars;0,92\n"
    status, err = call(
        "POST", f"{BASE}/eur-csv/statements?format=csv", data=bad.encode(), headers={"Content-Type": "text/csv"}
    )
    assert status == 422 and "line 2" in json.dumps(err) and "instructed currency" in err["error"]["message"]
    _, items = call("GET", f"{BASE}/eur-csv/open-items")
    assert items["statement_lines"] == []  # nothing of the refused file
    good = (
        header
        + "2026-11-03;-1.840,00;EUR;Zulieferer Inc;PO-881;2.000,00;usd;0,92\n"  # unsigned, lower case: as exported
        + "2026-11-03;-15,00;EUR;;Gebuehren;;;\n"
    )
    _import(call, "eur-csv", good.encode(), "csv")
    _, items = call("GET", f"{BASE}/eur-csv/open-items?side=bank")
    paid = next(x for x in items["statement_lines"] if x["remittance"] == "PO-881")
    assert (paid["instructed_amount"], paid["instructed_currency"], paid["exchange_rate"]) == (
        "-2000.00",
        "USD",
        "0.92",
    )
    entry = {"external_id": "PO-881", "date": "2026-10-30", "amount": "-2000.00", "currency": "USD",
             "counterparty": "Zulieferer Inc.", "reference": "PO-881"}  # fmt: skip
    call("POST", f"{BASE}/eur-csv/ledger", body={"entries": [entry]})
    status, run = call("POST", f"{BASE}/eur-csv/runs")
    assert run["counts"]["matches"] == 1, run
    _, matches = call("GET", f"{BASE}/eur-csv/matches")
    [m] = matches["data"]
    assert (m["rule"], m["exchange_rate"], m["adjustment"]) == ("fx", "0.92", "0.00")


def test_csv_layouts_map_instructed_columns_together():
    from tierd.plugins.reconciliation.importers.csv import layout_problems

    lone = {"columns": {"booking_date": "d", "amount": "a", "instructed_amount": "o"}}
    assert layout_problems(lone) == ["columns.instructed_amount and columns.instructed_currency go together"]
    rate_only = {"columns": {"booking_date": "d", "amount": "a", "exchange_rate": "r"}}
    assert layout_problems(rate_only) == ["columns.exchange_rate needs columns.instructed_amount"]
