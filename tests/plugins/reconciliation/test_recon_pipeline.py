"""The pure parts of the plugin: config schema, import planning, ledger input."""

import datetime as dt
from decimal import Decimal
from pathlib import Path

import pytest
import yaml

from tierd.core.registry import StatementError, StatementLine
from tierd.core.schema import Invalid
from tierd.plugins.reconciliation import ledger
from tierd.plugins.reconciliation.config import SCHEMA, engine_config
from tierd.plugins.reconciliation.importers import builtin_importers
from tierd.plugins.reconciliation.imports import AccountMismatch, dedup_keys, plan_import

HERE = Path(__file__).parent
FIXTURES = HERE / "fixtures"
EXAMPLE = HERE.parents[2] / "tierd" / "plugins" / "reconciliation" / "config.example.yaml"
IMPORTERS = {i.format_name: i for i in builtin_importers()}
ACCOUNT = {"id": "main-eur", "currency": "EUR", "iban": "DE89370400440532013000", "account_number": ""}


# --- configuration -----------------------------------------------------------------------------------


def test_example_config_is_valid_and_complete():
    section = SCHEMA.validate(yaml.safe_load(EXAMPLE.read_text())["reconciliation"])
    [acct] = section["accounts"]
    cfg = engine_config(acct)
    assert [r["rule"] for r in cfg.rules] == [
        "reference",
        "fx",
        "amount_date",
        "fuzzy_counterparty",
        "fuzzy_counterparty",
        "tolerance",
        "partial",
        "batch",
    ]
    tolerance = next(r for r in cfg.rules if r["rule"] == "tolerance")
    assert tolerance["absolute"] == "15.00" and "max_items" not in cfg.rules[0]
    assert (cfg.auto_threshold, cfg.min_margin) == (0.85, 0.05)


@pytest.mark.parametrize(
    "section, message",
    [
        (
            {"accounts": [{"id": "a", "tenant": "t", "currency": "EUR", "rules": [{"rule": "magic"}]}]},
            "accounts[0].rules[0].rule",
        ),
        (
            {"accounts": [{"id": "a", "tenant": "t", "currency": "EUR", "csv_format": "nope"}]},
            "no csv_formats entry named 'nope'",
        ),
        ({"accounts": [{"id": "a", "tenant": "t", "currency": "euro"}]}, "ISO 4217"),
        (
            {
                "accounts": [
                    {"id": "a", "tenant": "t", "currency": "EUR"},
                    {"id": "a", "tenant": "t", "currency": "EUR"},
                ]
            },
            "appears twice",
        ),
        (
            {"accounts": [{"id": "a", "tenant": "t", "currency": "EUR", "schedule": "every day"}]},
            "accounts[0].schedule",
        ),
        (
            {"csv_formats": {"x": {"columns": {"booking_date": "D", "amount": "A", "debit": "S"}}}},
            "either columns.amount",
        ),
        ({"csv_formats": {"x": {"columns": {"amount": "A"}}}}, "booking_date is required"),
    ],
)
def test_config_errors_name_the_key(section, message):
    with pytest.raises(Invalid) as err:
        SCHEMA.validate(section)
    assert message in str(err.value)


# --- import planning -----------------------------------------------------------------------------------


def line(amount="10.00", day=1, ref="", remit="x"):
    return StatementLine(
        booking_date=dt.date(2026, 11, day),
        amount=Decimal(amount),
        currency="EUR",
        bank_reference=ref,
        remittance=remit,
    )


def test_dedup_keys_keep_identical_genuine_lines_apart():
    keys = dedup_keys([line(), line(), line(ref="R1"), line(amount="11.00")])
    assert len(set(keys)) == 4
    assert keys[0].endswith("#0") and keys[1].endswith("#1") and keys[2] == "ref:R1#0"
    # The same lines in another file give the same keys: re-imports add nothing.
    assert dedup_keys([line(), line()]) == keys[:2]


def test_overlapping_statements_share_keys():
    first = plan_import((FIXTURES / "mt940_two_statements.sta").read_bytes(), IMPORTERS, ACCOUNT, None)
    # A later MT940 repeats the 3 Nov line and adds a new one.
    later = b""":20:NEXT
:25:37040044/0532013000
:28C:00003/001
:60F:C261102EUR1150,00
:61:2611031103D45,50NDDTNONREF//BANKREF-2
:86:105?00LASTSCHRIFT?20SVWZ+Strom 11/2026?32Stadtwerke
:61:2611051105C5,00NTRFNONREF//BANKREF-7
:86:166?20SVWZ+tip
:62F:C261105EUR1109,50
-
"""
    second = plan_import(later, IMPORTERS, ACCOUNT, None)
    overlap = {ln["dedup_key"] for ln in first.lines} & {ln["dedup_key"] for ln in second.lines}
    assert overlap == {"ref:BANKREF-2#0"}
    assert [b["ok"] for b in second.balances] == [True]


def test_balance_mismatch_is_reported_not_fatal():
    data = (FIXTURES / "camt053_v2_batch.xml").read_bytes().replace(b"1404.50", b"1400.00")
    plan = plan_import(data, IMPORTERS, ACCOUNT, None)
    [check] = plan.balances
    assert check["ok"] is False and check["computed_closing"] == "1404.50" and check["closing"] == "1400.00"
    assert len(plan.lines) == 5


def test_statement_for_another_account_is_refused():
    with pytest.raises(AccountMismatch):
        plan_import(
            (FIXTURES / "camt053_v2_batch.xml").read_bytes(),
            IMPORTERS,
            {**ACCOUNT, "iban": "FR7630006000011234567890189"},
            None,
        )


def test_lines_in_another_currency_are_rejected_and_counted():
    plan = plan_import(
        (FIXTURES / "ofx1_sgml.ofx").read_bytes(), IMPORTERS, {**ACCOUNT, "iban": "", "account_number": ""}, None
    )
    assert plan.lines == [] and len(plan.rejected) == 3 and "currency USD" in plan.rejected[0]["reason"]


def test_unknown_format_without_layout_is_an_error():
    with pytest.raises(StatementError):
        plan_import(b"just some text", IMPORTERS, ACCOUNT, None, filename="notes")


# --- ledger input -------------------------------------------------------------------------------------------


def test_ledger_json_forms_and_validation():
    one = b'{"external_id": "A", "date": "2026-11-01", "amount": "12.50"}'
    assert ledger.parse_json_entries(one)[0][1]["external_id"] == "A"
    lines = one + b"\n" + b'{"external_id": "B", "date": "2026-11-02", "amount": -3}'
    entries = ledger.validate_entries(ledger.parse_json_entries(lines), "EUR")
    assert [(e["external_id"], e["amount"], e["currency"]) for e in entries] == [
        ("A", "12.50", "EUR"),
        ("B", "-3", "EUR"),
    ]
    # JSON numbers with a fraction stay exact (parsed as Decimal, never float).
    [(_, e)] = ledger.parse_json_entries(b'[{"external_id": "C", "date": "2026-11-02", "amount": 0.1}]')
    assert ledger.validate_entries([("x", e)], "EUR")[0]["amount"] == "0.1"


@pytest.mark.parametrize(
    "entry, problem",
    [
        ({"date": "2026-11-01", "amount": "1"}, "external_id is required"),
        ({"external_id": "A", "date": "01.11.2026", "amount": "1"}, "date must be YYYY-MM-DD"),
        ({"external_id": "A", "date": "2026-11-01", "amount": "1,5"}, "amount must be a decimal string"),
        ({"external_id": "A", "date": "2026-11-01", "amount": "NaN"}, "amount must be a decimal string"),
        ({"external_id": "A", "date": "2026-11-01", "amount": "1", "currency": "usd"}, "ISO 4217 code such as EUR"),
        ({"external_id": "A", "date": "2026-11-01", "amount": "1", "currency": 840}, "got 840"),
        ({"external_id": "A", "date": "2026-11-01", "amount": "1", "colour": "red"}, "unknown field"),
    ],
)
def test_ledger_bad_entries(entry, problem):
    with pytest.raises(ledger.LedgerError) as err:
        ledger.validate_entries([("entries[0]", entry)], "EUR")
    assert problem in err.value.problems[0] and err.value.problems[0].startswith("entries[0]")


def test_ledger_duplicate_external_id_in_one_upload():
    e = {"external_id": "A", "date": "2026-11-01", "amount": "1"}
    with pytest.raises(ledger.LedgerError) as err:
        ledger.validate_entries([("line 1", e), ("line 2", e)], "EUR")
    assert "already appears at line 1" in err.value.problems[0]


def test_ledger_csv_with_layout():
    layout = {
        "delimiter": ";",
        "quotechar": '"',
        "encoding": "cp1252",
        "decimal": ",",
        "date_format": "%d.%m.%Y",
        "skip_rows": 0,
        "columns": {
            "external_id": "Beleg",
            "date": "Datum",
            "amount": "Betrag",
            "counterparty": "Kunde",
            "reference": "Rechnung",
            "description": None,
            "currency": None,
        },
    }
    raw = "Beleg;Datum;Betrag;Kunde;Rechnung\nB-1;02.11.2026;1.150,00;Müller GmbH;INV-1043\n".encode("cp1252")
    [entry] = ledger.validate_entries(ledger.parse_csv_entries(raw, layout), "EUR")
    assert entry == {
        "external_id": "B-1",
        "date": "2026-11-02",
        "amount": "1150.00",
        "currency": "EUR",
        "counterparty": "Müller GmbH",
        "reference": "INV-1043",
        "description": "",
    }
    with pytest.raises(ledger.LedgerError) as err:
        ledger.parse_csv_entries(raw.replace(b"1.150,00", b"1.15,00"), layout)
    assert err.value.problems[0].startswith("line 2")


def test_csv_needs_a_layout_and_a_crashing_importer_is_a_clean_error():
    with pytest.raises(StatementError, match="no CSV layout"):
        plan_import(b"a;b\n", IMPORTERS, ACCOUNT, None, fmt="csv")

    class Broken:
        format_name = "broken"

        def detect(self, head, filename=""):
            return True

        def parse(self, data, options=None):
            raise KeyError("oops")

    with pytest.raises(StatementError, match="broken importer could not read this file"):
        plan_import(b"x", {"broken": Broken()}, ACCOUNT, None)
