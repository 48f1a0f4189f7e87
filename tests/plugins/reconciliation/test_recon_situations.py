"""What real books look like (issue 13): the situations an accountant meets every week.

A German business: customers written as they please ("Müller Bau GmbH & Co.
KG", "MUELLER BAU GMBH U. CO. KG"), payment runs paying invoices of the past
weeks without naming them, instalments months apart, fees deducted, dozens
of subscribers paying the same price on the same days, and payers learned
from earlier matches. Each situation is run through the pure engine with
the default rules, its negative side too (where a wrong match would be
worse than none); one end-to-end test sends a semicolon, cp1252,
decimal-comma bank CSV and a ledger through the real daemon.
"""

import datetime as dt
import json
from decimal import Decimal
from pathlib import Path

import pytest
import yaml

from tierd.core.schema import validate
from tierd.plugins.reconciliation.config import RULE, SCHEMA, engine_config
from tierd.plugins.reconciliation.matching import DEFAULT_RULES, BankLine, EngineConfig, LedgerEntry, reconcile
from tierd.plugins.reconciliation.matching.model import KnownPayer
from tierd.plugins.reconciliation.matching.text import name_similarity, norm_name, payer_keys, short_keys

EXAMPLE = Path(__file__).parents[3] / "tierd" / "plugins" / "reconciliation" / "config.example.yaml"
PAY_DAY = dt.date(2026, 3, 20)


def before(days: int) -> dt.date:
    return PAY_DAY - dt.timedelta(days=days)


def bank(id, amount, name="", remit="", days_before=0, iban=""):
    return BankLine(
        id=id,
        date=before(days_before),
        amount=Decimal(amount),
        currency="EUR",
        counterparty=name,
        remittance=remit,
        counterparty_account=iban,
    )


def ledger(id, amount, name, ref="", days_before=0):
    return LedgerEntry(
        id=id, date=before(days_before), amount=Decimal(amount), currency="EUR", counterparty=name, reference=ref
    )


def matched(result) -> dict:
    """ledger ids -> (bank ids, match) of the automatic matches."""
    return {m.ledger_ids: (m.bank_ids, m) for m in result.matches}


def learned(iban: str, label: str, customer: str, times: int = 4) -> KnownPayer:
    return KnownPayer(payer_keys(iban, label)[0], label, norm_name(customer), customer, times)


# --- names ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "variant",
    [
        "MUELLER BAU GMBH U. CO. KG",
        "Müller-Bau GmbH + Co. KG",
        "Mueller Bau G.m.b.H. & Co KG",
        "müller bau gmbh&co.kg",
        "Müller Bau Kommanditgesellschaft",
        "Müller Bau",
    ],
)
def test_name_variants_of_one_customer_are_one_name(variant):
    assert norm_name(variant) == norm_name("Müller Bau GmbH & Co. KG") == "mueller bau"


def test_names_cut_by_the_bank_and_near_namesakes():
    # SEPA cuts at 27 (or 70) characters, inside a word or the legal form.
    full = "Nordsee Maschinenbau Hübner GmbH"
    cut = full.upper()[:27]  # "NORDSEE MASCHINENBAU HÜBNER"[:27]
    assert name_similarity(norm_name(cut), norm_name(full), "", "") == 1.0
    assert norm_name("LANG & WEISS GESELLSCHAFT M") == norm_name("Lang & Weiß GmbH") == "lang weiss"
    # A bank that drops umlauts stays close; a namesake with another vowel does not look identical.
    assert 0.9 < name_similarity(norm_name("MULLER BAU"), norm_name("Müller Bau")) < 1.0
    assert name_similarity(norm_name("Mayer Bau GmbH"), norm_name("Meyer Bau GmbH")) < 0.92
    assert norm_name("Weiß e.K.") == norm_name("WEISS E. K.") == "weiss"
    assert norm_name("Öztürk UG (haftungsbeschränkt)") == "oeztuerk"


def test_only_a_name_of_the_length_banks_cut_at_counts_as_cut():
    books = [ledger("l1", "1190.00", "Hoffmann Kältetechnik GmbH", "RE-2026-84473", 30)]
    # Another firm whose name starts like the customer's: not the customer, whatever the amount.
    r = reconcile([bank("b1", "1190.00", "Hoffmann Kaeltetechnik Neckar GmbH", "Abschlag")], books)
    assert r.matches == []
    # The customer's name cut by the bank at 27 characters is the customer.
    books = [ledger("l1", "1190.00", "Hoffmann Kältetechnik Neckar GmbH", "RE-2026-84473", 30)]
    cut = "HOFFMANN KAELTETECHNIK NECKAR GMBH"[:27]
    r = reconcile([bank("b1", "1190.00", cut, "Zahlung")], books)
    [m] = r.matches
    assert "counterparty names 100% alike" in m.explanation


def test_an_invoice_number_is_found_by_its_serial():
    assert short_keys("RE-2026-10431") == {"10431", "202610431"}
    assert short_keys("INV-1043") == set()  # too short to stand alone
    r = reconcile(
        [bank("b1", "1190.00", "Schröder Elektro GmbH", "Rg.Nr. 10431 Kd-Nr. D20017")],
        [ledger("l1", "1190.00", "Schröder Elektro GmbH", "RE-2026-10431", 9)],
    )
    [m] = r.matches
    assert m.rule == "reference" and m.explanation.startswith("reference RE-2026-10431 (as 10431) in remittance")


# --- batch payments -------------------------------------------------------------------------------------


def _mueller_books():
    """Müller Bau's open invoices over six weeks, and another customer's that would fit the sum too."""
    return [
        ledger("l-a", "1500.00", "Müller Bau GmbH & Co. KG", "RE-2026-10101", 38),
        ledger("l-b", "2187.50", "Müller Bau GmbH & Co. KG", "RE-2026-10233", 25),
        ledger("l-c", "625.00", "Müller Bau GmbH & Co. KG", "RE-2026-10377", 12),
        ledger("l-d", "980.00", "Müller Bau GmbH & Co. KG", "RE-2026-10400", 5),  # not in this run
        ledger("l-x", "2812.50", "Schneider Logistik GmbH", "RE-2026-10378", 10),  # 1500 + 2812.50 = 4312.50
    ]


def test_batch_over_weeks_naming_no_invoice_is_matched_with_its_reasons():
    r = reconcile([bank("b1", "4312.50", "MUELLER BAU GMBH U. CO. KG", "Sammelzahlung")], _mueller_books())
    bank_ids, m = matched(r)[("l-a", "l-b", "l-c")]
    assert bank_ids == ("b1",) and m.rule == "batch" and m.score >= 0.85
    assert m.explanation.startswith(
        "3 open items of Müller Bau GmbH & Co. KG issued 12 to 38 days before add up to the bank amount 4312.50;"
        " no other combination of its open items does"
    )
    assert [s for s in r.suggestions if "b1" in s.bank_ids] == []


def test_batch_where_two_combinations_fit_is_left_to_a_person():
    books = [
        ledger("l-a", "100.00", "Weber Druck GmbH", "RE-2026-20001", 30),
        ledger("l-b", "200.00", "Weber Druck GmbH", "RE-2026-20002", 20),
        ledger("l-c", "300.00", "Weber Druck GmbH", "RE-2026-20003", 10),
        ledger("l-d", "350.00", "Weber Druck GmbH", "RE-2026-20004", 8),
        ledger("l-e", "250.00", "Weber Druck GmbH", "RE-2026-20005", 6),
    ]
    r = reconcile([bank("b1", "600.00", "WEBER DRUCK GMBH", "Payment run 2026-03")], books)
    assert r.matches == []
    suggested = {s.ledger_ids for s in r.suggestions if s.rule == "batch"}
    assert suggested == {("l-a", "l-b", "l-c"), ("l-d", "l-e")}
    first = next(s for s in r.suggestions if s.ledger_ids == ("l-a", "l-b", "l-c"))
    assert "other combinations add up too (" in first.explanation and "RE-2026-20004" in first.explanation
    assert first.explanation.endswith("a person chooses; another candidate for the same items is about as good")


def test_batch_naming_some_invoices_is_completed_by_the_others():
    books = [
        ledger("l-a", "100.00", "Weber Druck GmbH", "RE-2026-20001", 30),
        ledger("l-b", "200.00", "Weber Druck GmbH", "RE-2026-20002", 20),
        ledger("l-c", "300.00", "Weber Druck GmbH", "RE-2026-20003", 10),
        ledger("l-d", "350.00", "Weber Druck GmbH", "RE-2026-20004", 8),
        ledger("l-e", "250.00", "Weber Druck GmbH", "RE-2026-20005", 6),
    ]
    # Alone, 600.00 fits two combinations; naming RE-2026-20005 (written as its serial) settles it.
    r = reconcile([bank("b1", "600.00", "WEBER DRUCK GMBH", "Rg.Nr. 20005 u.a.")], books)
    [m] = r.matches
    assert (m.rule, m.ledger_ids) == ("batch", ("l-d", "l-e"))
    assert "RE-2026-20005 in remittance" in m.explanation


def test_batch_does_not_reach_invoices_after_the_payment_or_a_quarter_back():
    books = [
        ledger("l-a", "400.00", "Koch Haustechnik e.K.", "RE-2026-30001", 95),  # beyond 90 days
        ledger("l-b", "600.00", "Koch Haustechnik e.K.", "RE-2026-30002", 40),
        ledger("l-c", "400.00", "Koch Haustechnik e.K.", "RE-2026-30003", -9),  # issued 9 days after the payment
    ]
    r = reconcile([bank("b1", "1000.00", "KOCH HAUSTECHNIK EK", "Sammelueberweisung")], books)
    assert r.matches == [] and r.suggestions == []


def test_batch_of_a_customer_another_firm_pays_for_is_found_through_the_learned_payer():
    iban = "DE89370400440532013000"
    books = _mueller_books()
    payer = learned(iban, "BAU HOLDING AG", "Müller Bau GmbH & Co. KG")
    r = reconcile(
        [bank("b1", "4312.50", "Bau Holding AG", "Regulierung", iban=iban)], books, EngineConfig(known_payers=[payer])
    )
    _, m = matched(r)[("l-a", "l-b", "l-c")]
    assert "IBAN DE89…3000 paid Müller Bau GmbH & Co. KG 4 times before" in m.explanation


def test_a_customer_with_many_open_items_is_searched_in_a_time_box():
    # Twenty open invoices of one customer; several combinations of them add up to the payment.
    amounts = [1000 + 37 * i * i % 997 for i in range(20)]
    books = [
        ledger(f"l{i:02d}", Decimal(a).scaleb(-2), "Krause Logistik GmbH", f"RE-2026-{60000 + i}", 40 - i)
        for i, a in enumerate(amounts)
    ]
    target = Decimal(sum(sorted(amounts, reverse=True)[:3])).scaleb(-2)
    line = [bank("b1", target, "KRAUSE LOGISTIK GMBH", "Sammelzahlung")]
    # With room to look, it finds that three combinations fit: people choose.
    r = reconcile(line, books)
    assert r.matches == [] and len([s for s in r.suggestions if s.rule == "batch"]) == 3
    # With a budget too small to rule the others out, the one it found is only suggested.
    r = reconcile(line, books, EngineConfig(rules=[{"rule": "batch", "budget": 100}]))
    [s] = r.suggestions
    assert r.matches == [] and "the search stopped before it could rule out other combinations" in s.explanation


# --- instalments ------------------------------------------------------------------------------------------


def test_instalments_two_months_apart_are_matched_by_the_invoice_they_name():
    books = [ledger("l1", "3600.00", "Fischer Metallbau GmbH", "RE-2026-40417", 70)]
    parts = [
        bank("b1", "1200.00", "FISCHER METALLBAU GMBH", "1. Rate RE-2026-40417", 66),
        bank("b2", "1200.00", "Fischer-Metallbau GmbH", "Rate 2/3 RE 2026 40417", 35),
        bank("b3", "1200.00", "FISCHER METALLBAU G.M.B.H.", "Teilzahlung Rg.Nr. 40417", 4),
    ]
    r = reconcile(parts, books)
    bank_ids, m = matched(r)[("l1",)]
    assert bank_ids == ("b1", "b2", "b3") and m.rule == "partial"
    assert m.explanation.startswith(
        "3 bank lines add up to the ledger amount 3600.00 from Fischer Metallbau GmbH; each names RE-2026-40417;"
        " paid 4 to 66 days after it"
    )


def test_an_instalment_with_swapped_digits_is_completed_by_the_same_customer():
    books = [ledger("l1", "1000.00", "Sanitär Krause GmbH", "RE-2026-12992", 60)]
    parts = [
        bank("b1", "600.00", "SANITAER KRAUSE GMBH", "1. Rate RE-2026-12992", 55),
        bank("b2", "400.00", "Sanitaer Krause GmbH", "Rate 2/2 RE 2026 21992", 20),  # mistyped number
    ]
    r = reconcile(parts, books)
    bank_ids, m = matched(r)[("l1",)]
    assert bank_ids == ("b1", "b2") and "1 of them names RE-2026-12992" in m.explanation


def test_an_instalment_equal_to_another_open_invoice_of_the_customer_pays_the_one_it_names():
    books = [
        ledger("l-small", "595.00", "Isar Holzbau Meyer", "RE-2026-40987", 38),
        ledger("l-big", "1785.00", "Isar Holzbau Meyer", "RE-2026-46206", 35),
    ]
    parts = [
        bank("b1", "595.00", "ISAR HOLZBAU MEYER", "1. Rate RE-2026-46206", 0),
        bank("b2", "595.00", "Isar Holzbau Meyer", "2. Rate RE 2026 46206", 30),
    ]
    r = reconcile(parts, books)
    # Only two of three parts are in: nothing is matched, and the first part is not taken for the small invoice.
    assert r.matches == []
    small = [s for s in r.suggestions if s.ledger_ids == ("l-small",)]
    assert small and all("but the remittance names another open item, RE-2026-46206" in s.explanation for s in small)
    parts.append(bank("b3", "595.00", "Isar Holzbau Meyer", "Rate 3/3 RE-2026-46206", 15))
    r = reconcile(parts, books)
    assert {m.ledger_ids: m.bank_ids for m in r.matches} == {("l-big",): ("b1", "b2", "b3")}


def test_parts_that_do_not_yet_add_up_stay_open():
    books = [ledger("l1", "3600.00", "Fischer Metallbau GmbH", "RE-2026-40417", 70)]
    parts = [bank("b1", "1200.00", "FISCHER METALLBAU", "1. Rate RE-2026-40417", 66)]
    r = reconcile(parts, books)
    assert r.matches == []


# --- fees deducted --------------------------------------------------------------------------------------------


def test_fee_deducted_with_reference_and_same_customer_is_kept_as_adjustment():
    r = reconcile(
        [bank("b1", "1177.50", "BECK-ELEKTRO KG", "RE2026/11959 Kd-Nr. D20112", 0)],
        [ledger("l1", "1190.00", "Beck Elektro KG", "RE-2026-11959", 8)],
    )
    [m] = r.matches
    assert m.rule == "tolerance" and m.adjustment == Decimal("-12.50")
    assert "reference RE-2026-11959 in remittance" in m.explanation
    assert "by -12.50, within the tolerance of 15.00 (reference and counterparty agree)" in m.explanation


def test_a_percent_fee_on_a_large_amount_and_a_swapped_number():
    r = reconcile(
        [bank("b1", "19820.00", "Isar Kunststofftechnik Schmidt GmbH", "RE 2026 11480", 0)],
        [ledger("l1", "20000.00", "Isar Kunststofftechnik Schmidt GmbH", "RE-2026-14180", 9)],
    )
    [m] = r.matches
    assert m.adjustment == Decimal("-180.00") and "with two digits swapped" in m.explanation


def test_fee_over_the_tolerance_or_with_one_piece_of_evidence_is_not_matched():
    # 15.01 short of 500.00: more than 15.00 and more than 1%.
    r = reconcile(
        [bank("b1", "484.99", "Beck Elektro KG", "RE-2026-11959")],
        [ledger("l1", "500.00", "Beck Elektro KG", "RE-2026-11959", 3)],
    )
    assert r.matches == []
    # Another customer quotes the number: the reference alone forgives only 2.50.
    r = reconcile(
        [bank("b1", "495.00", "Stadtwerke Köln", "RE-2026-11959")],
        [ledger("l1", "500.00", "Beck Elektro KG", "RE-2026-11959", 3)],
    )
    assert r.matches == []


# --- look-alike subscriptions -----------------------------------------------------------------------------------

SUBSCRIBERS = [
    "Müller Bau GmbH & Co. KG",
    "Schröder Elektro GmbH",
    "Weiß Haustechnik e.K.",
    "Bäckerei Öztürk UG (haftungsbeschränkt)",
    "Krüger Logistik AG",
    "Hoffmann Druck GmbH",
    "Köhler & Söhne KG",
    "Neumann Software GmbH",
    "Schmitz Gartenbau GbR",
    "Zimmermann Fensterbau GmbH",
    "Groß Transporte OHG",
    "Jäger Reinigung GmbH",
]
BANK_SPELLING = [
    "MUELLER BAU GMBH U. CO. KG",
    "SCHROEDER ELEKTRO G.M.B.H.",
    "WEISS HAUSTECHNIK E. K.",
    "BAECKEREI OEZTUERK UG (HAFTUNGSBESCHR.)",
    "Krüger Logistik Aktiengesellschaft",
    "HOFFMANN-DRUCK GMBH",
    "Koehler u. Soehne KG",
    "NEUMANN SOFTWARE",
    "SCHMITZ GARTENBAU GBR",
    "ZIMMERMANN FENSTERBAU GMBH",
    "GROSS TRANSPORTE OHG",
    "JAEGER REINIGUNG GMBH",
]


def _crowd():
    """Twelve subscribers invoiced 49.00 on the first of the month; each pays it within days, no reference."""
    books = [ledger(f"l{i:02d}", "49.00", name, f"RE-2026-5{i:04d}", 19) for i, name in enumerate(SUBSCRIBERS)]
    lines = [bank(f"b{i:02d}", "49.00", name, "Monatsbeitrag", 19 - i % 4) for i, name in enumerate(BANK_SPELLING)]
    return lines, books


def test_a_crowd_of_equal_amounts_is_settled_by_name_variants():
    lines, books = _crowd()
    r = reconcile(lines, books)
    assert {m.ledger_ids[0]: m.bank_ids[0] for m in r.matches} == {f"l{i:02d}": f"b{i:02d}" for i in range(12)}
    assert all("counterparty names 100% alike" in m.explanation for m in r.matches)


def test_near_namesakes_in_a_crowd_are_not_matched_automatically():
    lines, books = _crowd()
    books += [
        ledger("l-mayer", "49.00", "Mayer Bau GmbH", "RE-2026-59001", 19),
        ledger("l-meyer", "49.00", "Meyer Bau GmbH", "RE-2026-59002", 19),
    ]
    lines.append(bank("b-maier", "49.00", "MAIER BAU GMBH", "Abo März", 18))
    r = reconcile(lines, books)
    assert not [m for m in r.matches if "b-maier" in m.bank_ids]
    assert {s.ledger_ids for s in r.suggestions if "b-maier" in s.bank_ids} == {("l-mayer",), ("l-meyer",)}
    assert len(r.matches) == 12  # the others are still matched


def test_a_learned_payer_decides_a_look_alike():
    iban = "DE02120300000000202051"
    lines, books = _crowd()
    books += [
        ledger("l-mayer", "49.00", "Mayer Bau GmbH", "RE-2026-59001", 19),
        ledger("l-meyer", "49.00", "Meyer Bau GmbH", "RE-2026-59002", 19),
    ]
    # The owner's private account pays, under his own name: only the IBAN tells whose invoice it is.
    lines.append(bank("b-owner", "49.00", "Hans Meyer", "Dauerauftrag", 18, iban=iban))
    config = EngineConfig(known_payers=[learned(iban, "HANS MEYER", "Meyer Bau GmbH", 3)])
    r = reconcile(lines, books, config)
    bank_ids, m = matched(r)[("l-meyer",)]
    assert bank_ids == ("b-owner",)
    assert "IBAN DE02…2051 paid Meyer Bau GmbH 3 times before" in m.explanation
    # Unlearned, the same line is nobody's.
    r = reconcile(lines, books)
    assert not [m for m in r.matches if "b-owner" in m.bank_ids]


def test_a_learned_payer_with_an_unrelated_name_enters_a_crowd():
    iban = "DE75512108001245126199"
    lines, books = _crowd()
    # A Treuhand pays the subscription of one of the twelve: its name shares nothing with any of them.
    lines.append(bank("b-treuhand", "49.00", "Treuhandkonto RA Vogel", "Ausgleich offener Posten", 17, iban=iban))
    books.append(ledger("l-vogt", "49.00", "Vogt Elektro GmbH", "RE-2026-59100", 19))
    r = reconcile(lines, books, EngineConfig(known_payers=[learned(iban, iban, "Vogt Elektro GmbH", 2)]))
    bank_ids, m = matched(r)[("l-vogt",)]
    assert bank_ids == ("b-treuhand",) and "IBAN DE75…6199 paid Vogt Elektro GmbH twice before" in m.explanation
    assert len(r.matches) == 13


# --- configuration ------------------------------------------------------------------------------------------


def test_the_example_configuration_lists_exactly_the_default_rules():
    section = SCHEMA.validate(yaml.safe_load(EXAMPLE.read_text())["reconciliation"])
    [acct] = section["accounts"]
    assert engine_config(acct).rules == [dict(r) for r in DEFAULT_RULES]
    assert engine_config({**acct, "rules": None}).rules == [dict(r) for r in DEFAULT_RULES]


@pytest.mark.parametrize(
    "rule, path, message",
    [
        ({"rule": "amount_date", "absolute": "2.50"}, ("absolute",), "not a parameter of rule 'amount_date'"),
        ({"rule": "batch", "ref_window_days": 30}, ("ref_window_days",), "it takes: budget, days_after"),
        (
            {"rule": "tolerance", "absolute": "5", "single_absolute": "10"},
            ("single_absolute",),
            "must not exceed absolute (5)",
        ),
        ({"rule": "tolerance", "percent": 1, "single_percent": 2}, ("single_percent",), "must not exceed percent"),
        ({"rule": "batch", "days_after": -1}, ("days_after",), "at least 0"),
        ({"rule": "batch", "budget": 10}, ("budget",), "at least 100"),
        ({"rule": "partial", "ref_window_days": 400}, ("ref_window_days",), "at most 366"),
    ],
)
def test_rule_parameters_are_validated_with_clear_errors(rule, path, message):
    _, errors = validate(RULE, rule)
    assert [e.path for e in errors] == [path] and message in errors[0].message


# --- end to end through the daemon -----------------------------------------------------------------------------

BASE = "/v1/reconciliation/accounts"

#: The bank's export: semicolons, cp1252, decimal commas, German dates, names as the bank writes them.
STATEMENT = """Buchungstag;Valuta;Name;IBAN;Verwendungszweck;EREF;Betrag;Waehrung;Referenz
20.03.2026;20.03.2026;MUELLER BAU GMBH U. CO. KG;DE11520513735120710131;Sammelzahlung;NOTPROVIDED;4.312,50;EUR;B-001
13.01.2026;13.01.2026;FISCHER METALLBAU GMBH;DE44500105175407324931;1. Rate RE-2026-40417;;1.200,00;EUR;B-002
13.02.2026;13.02.2026;Fischer-Metallbau GmbH;DE44500105175407324931;Rate 2/3 RE 2026 40417;;1.200,00;EUR;B-003
16.03.2026;16.03.2026;FISCHER METALLBAU G.M.B.H.;DE44500105175407324931;Teilzahlung Rg.Nr. 40417;;1.200,00;EUR;B-004
18.03.2026;18.03.2026;BECK-ELEKTRO KG;DE27100777770209299700;RE2026/11959 Kd-Nr. D20112;;1.177,50;EUR;B-005
02.03.2026;02.03.2026;SCHRÖDER ELEKTRO G.M.B.H.;DE75512108001245126199;Monatsbeitrag März;;49,00;EUR;B-006
03.03.2026;03.03.2026;WEISS HAUSTECHNIK E. K.;DE91100000000123456789;Abo März;;49,00;EUR;B-007
02.03.2026;02.03.2026;Köhler u. Söhne KG;DE12500105170648489890;Dauerauftrag;;49,00;EUR;B-008
"""

#: The books: (invoice number, date, amount, customer).
LEDGER = [
    ("RE-2026-10101", "2026-02-10", "1500.00", "Müller Bau GmbH & Co. KG"),
    ("RE-2026-10233", "2026-02-23", "2187.50", "Müller Bau GmbH & Co. KG"),
    ("RE-2026-10377", "2026-03-08", "625.00", "Müller Bau GmbH & Co. KG"),
    ("RE-2026-10378", "2026-03-10", "2812.50", "Schneider Logistik GmbH"),
    ("RE-2026-40417", "2026-01-09", "3600.00", "Fischer Metallbau GmbH"),
    ("RE-2026-11959", "2026-03-10", "1190.00", "Beck Elektro KG"),
    ("RE-2026-50001", "2026-03-01", "49.00", "Schröder Elektro GmbH"),
    ("RE-2026-50002", "2026-03-01", "49.00", "Weiß Haustechnik e.K."),
    ("RE-2026-50003", "2026-03-01", "49.00", "Köhler & Söhne KG"),
    ("RE-2026-50004", "2026-03-01", "49.00", "Krüger Logistik AG"),
]


def _example_layout() -> dict:
    """The ``mybank`` layout exactly as config.example.yaml configures it."""
    return yaml.safe_load(EXAMPLE.read_text())["reconciliation"]["csv_formats"]["mybank"]


@pytest.fixture
def recon(tierd_daemon):
    config = {
        "plugins": {"disabled": ["webhooks", "notifications"]},
        "reconciliation": {
            "csv_formats": {"mybank": _example_layout()},
            "accounts": [{"id": "giro", "tenant": "acme", "currency": "EUR", "csv_format": "mybank"}],
        },
    }
    d = tierd_daemon(config)
    token = d.create_tenant("acme")

    def call(method, path, body=None, data=None, headers=None):
        return d.request(method, path, json_body=body, data=data, token=token, headers=headers)

    return call


def test_a_month_of_a_german_business_through_the_daemon(recon):
    call = recon
    raw = {"Content-Type": "application/octet-stream"}
    csv = STATEMENT.encode("cp1252")
    status, body = call("POST", f"{BASE}/giro/statements?filename=umsaetze.csv", data=csv, headers=raw)
    assert status == 201 and (body["format"], body["new"], body["rejected"]) == ("csv", 8, 0), body
    entries = [
        {"external_id": ref, "date": date, "amount": amount, "counterparty": name, "reference": ref}
        for ref, date, amount, name in LEDGER
    ]
    ndjson = "\n".join(json.dumps(e) for e in entries).encode()
    status, body = call("POST", f"{BASE}/giro/ledger", data=ndjson, headers={"Content-Type": "application/x-ndjson"})
    assert (status, body["new"]) == (200, len(LEDGER)), body

    status, run = call("POST", f"{BASE}/giro/runs")
    assert status == 201 and run["status"] == "completed", run
    status, page = call("GET", f"{BASE}/giro/runs/{run['id']}/matches")
    assert status == 200
    by_refs = {tuple(sorted(e["external_id"] for e in m["ledger_entries"])): m for m in page["data"]}
    assert set(by_refs) == {
        ("RE-2026-10101", "RE-2026-10233", "RE-2026-10377"),
        ("RE-2026-40417",),
        ("RE-2026-11959",),
        ("RE-2026-50001",),
        ("RE-2026-50002",),
        ("RE-2026-50003",),
    }

    batch = by_refs[("RE-2026-10101", "RE-2026-10233", "RE-2026-10377")]
    assert batch["rule"] == "batch" and [ln["bank_reference"] for ln in batch["statement_lines"]] == ["B-001"]
    assert batch["explanation"].startswith(
        "3 open items of Müller Bau GmbH & Co. KG issued 12 to 38 days before add up to the bank amount 4312.50;"
        " no other combination of its open items does"
    )

    parts = by_refs[("RE-2026-40417",)]
    assert parts["rule"] == "partial"
    assert sorted(ln["bank_reference"] for ln in parts["statement_lines"]) == ["B-002", "B-003", "B-004"]
    assert parts["explanation"].startswith(
        "3 bank lines add up to the ledger amount 3600.00 from Fischer Metallbau GmbH; each names RE-2026-40417"
    )
    assert "paid 4 to 66 days after it was booked" in parts["explanation"]

    fee = by_refs[("RE-2026-11959",)]
    assert fee["rule"] == "tolerance" and Decimal(fee["adjustment"]) == Decimal("-12.50")
    assert (
        "within the tolerance of 15.00 (reference and counterparty agree), kept as an adjustment" in fee["explanation"]
    )

    for ref, line in (("RE-2026-50001", "B-006"), ("RE-2026-50002", "B-007"), ("RE-2026-50003", "B-008")):
        m = by_refs[(ref,)]
        assert [ln["bank_reference"] for ln in m["statement_lines"]] == [line]
        assert "counterparty names 100% alike" in m["explanation"] and "amounts equal" in m["explanation"]

    # The subscriber who has not paid, and the other customer's invoice that would have fitted the batch, stay open.
    status, items = call("GET", f"{BASE}/giro/open-items?side=ledger")
    assert sorted(e["external_id"] for e in items["ledger_entries"]) == ["RE-2026-10378", "RE-2026-50004"]
