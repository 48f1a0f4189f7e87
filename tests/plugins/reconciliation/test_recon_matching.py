"""Unit tests of the pure matching engine: each rule, conflicts, determinism."""

import datetime as dt
import random
from decimal import Decimal

import pytest

from tierd.plugins.reconciliation.matching import BankLine, EngineConfig, LedgerEntry, RuleConfigError, reconcile
from tierd.plugins.reconciliation.matching.subsets import subsets_summing_to
from tierd.plugins.reconciliation.matching.text import norm_name, norm_ref, ref_grams

D0 = dt.date(2026, 11, 2)


def day(n: int) -> dt.date:
    return D0 + dt.timedelta(days=n)


def bank(id, amount, d=0, name="", remit="", e2e="", ccy="EUR"):
    return BankLine(
        id=id, date=day(d), amount=Decimal(amount), currency=ccy, counterparty=name, remittance=remit, end_to_end_id=e2e
    )


def ledger(id, amount, d=0, name="", ref="", ccy="EUR", ext=""):
    return LedgerEntry(
        id=id,
        date=day(d),
        amount=Decimal(amount),
        currency=ccy,
        counterparty=name,
        reference=ref,
        external_id=ext or id,
    )


def pairs(result):
    return {(m.bank_ids, m.ledger_ids) for m in result.matches}


# --- text normalisation ------------------------------------------------------------


def test_reference_normalisation_finds_split_references():
    assert norm_ref("inv-1043 ") == "INV1043"
    grams = ref_grams("Payment for INV 1043 and Rechnung Nr. 77-12")
    assert {"INV1043", "1043", "7712"} <= grams
    assert "PAYMENT" not in grams  # no digit: a word, not a reference
    # Umlauts transliterated as Germans write them without: "Müller" is "Mueller" (a bank's "MULLER" stays close).
    assert norm_name("Müller G.m.b.H.") == norm_name("MUELLER GmbH") == "mueller"
    assert norm_name("MULLER GmbH") == "muller"


def test_subset_sum_is_bounded_and_exact():
    assert subsets_summing_to([100, 120, 80, 55], 300, 2, 5) == [(0, 1, 2)]
    assert subsets_summing_to([100, 100, 100], 200, 2, 2, limit=5) == [(0, 1), (0, 2), (1, 2)]
    assert subsets_summing_to([10, 20], 30, 3, 5) == []


# --- the rules -----------------------------------------------------------------------------


def test_reference_rule_with_explanation():
    r = reconcile(
        [bank("b1", "150.00", 2, "Müller GmbH", "Invoice INV-1043")],
        [ledger("l1", "150.00", 0, "Mueller GmbH", "INV-1043"), ledger("l2", "150.00", 1, "Other", "INV-9999")],
    )
    [m] = r.matches
    assert (m.rule, m.bank_ids, m.ledger_ids) == ("reference", ("b1",), ("l1",))
    assert m.explanation == "reference INV-1043 in remittance; amounts equal; booked 2 days apart"
    assert m.score >= 0.9


def test_end_to_end_id_is_an_exact_key():
    r = reconcile([bank("b1", "99.00", 0, remit="thanks", e2e="E2E-555")], [ledger("l1", "99.00", 1, ref="E2E-555")])
    assert r.matches[0].explanation.startswith("reference E2E-555 in end-to-end id")


def test_amount_date_unique_candidate_and_window():
    r = reconcile(
        [bank("b1", "77.10", 0), bank("b2", "12.00", 0)], [ledger("l1", "77.10", 0), ledger("l2", "12.00", 9)]
    )  # l2 outside the window
    assert pairs(r) == {(("b1",), ("l1",))}
    assert r.matches[0].rule == "amount_date"


def test_same_amount_decoys_are_settled_by_name_or_left_to_people():
    banks = [bank("b1", "100.00", 0, "Acme Corp")]
    ledgers = [ledger("l1", "100.00", 1, "ACME Corporation"), ledger("l2", "100.00", 0, "Zeta Widgets")]
    r = reconcile(banks, ledgers)
    assert pairs(r) == {(("b1",), ("l1",))}
    # With no names at all the two are equally good: only suggestions.
    r = reconcile([bank("b1", "100.00", 0)], [ledger("l1", "100.00", 1), ledger("l2", "100.00", 1)])
    assert r.matches == [] and {s.ledger_ids for s in r.suggestions} == {("l1",), ("l2",)}
    assert r.suggestions[0].explanation.endswith("another candidate for the same items is about as good")


def test_fuzzy_counterparty_with_typo_reference():
    r = reconcile(
        [bank("b1", "410.00", 1, "Globex Intl", "INV-20417 thx")],
        [ledger("l1", "410.00", 0, "Globex International Ltd", "INV-20471")],
        EngineConfig(rules=[{"rule": "fuzzy_counterparty", "min_similarity": 60}]),
    )
    assert r.matches and r.matches[0].rule == "fuzzy_counterparty"
    assert "counterparty names" in r.matches[0].explanation


def test_batch_deposit_one_bank_line_many_ledger_entries():
    r = reconcile(
        [bank("b1", "300.00", 0, "Alpha AG", "collective")],
        [
            ledger("l1", "100.00", 0, "Alpha AG"),
            ledger("l2", "120.00", 1, "Alpha AG"),
            ledger("l3", "80.00", 0, "Alpha AG"),
            ledger("l4", "80.00", 0, "Beta KG"),
        ],
    )
    [m] = r.matches
    assert (m.rule, m.bank_ids, m.ledger_ids) == ("batch", ("b1",), ("l1", "l2", "l3"))
    assert m.explanation.startswith(
        "3 open items of Alpha AG issued the same day to 1 day after add up to the bank amount 300.00;"
        " no other combination of its open items does"
    )


def test_batch_by_references_in_remittance():
    r = reconcile(
        [bank("b1", "300.00", 0, "Payments Hub", "INV-2001 INV-2002 INV-2003")],
        [
            ledger("l1", "100.00", 0, "A", "INV-2001"),
            ledger("l2", "120.00", 0, "B", "INV-2002"),
            ledger("l3", "80.00", 0, "C", "INV-2003"),
        ],
    )
    [m] = r.matches
    assert m.ledger_ids == ("l1", "l2", "l3") and "references INV-2001, INV-2002, INV-2003" in m.explanation


def test_partial_payments_many_bank_lines_one_ledger_entry():
    r = reconcile(
        [bank("b1", "400.00", 0, "Initech", "INV-7001 part 1"), bank("b2", "600.00", 9, "Initech", "INV-7001 rest")],
        [ledger("l1", "1000.00", 0, "Initech LLC", "INV-7001")],
    )
    [m] = r.matches
    assert (m.rule, m.bank_ids, m.ledger_ids) == ("partial", ("b1", "b2"), ("l1",))
    assert "2 bank lines add up to the ledger amount 1000.00" in m.explanation


def test_tolerance_records_fee_as_adjustment():
    r = reconcile(
        [bank("b1", "97.50", 1, "Umbrella", "INV-8080")], [ledger("l1", "100.00", 0, "Umbrella Corp", "INV-8080")]
    )
    [m] = r.matches
    assert m.rule == "tolerance" and m.adjustment == Decimal("-2.50")
    assert "differs from ledger amount 100.00 by -2.50" in m.explanation
    # With the reference and the same counterparty, a fee up to 15.00 is forgiven ...
    r = reconcile(
        [bank("b1", "90.00", 1, "Umbrella", "INV-8080")], [ledger("l1", "100.00", 0, "Umbrella Corp", "INV-8080")]
    )
    assert [m.adjustment for m in r.matches] == [Decimal("-10.00")]
    assert "(reference and counterparty agree)" in r.matches[0].explanation
    # ... beyond it nothing is matched ...
    r = reconcile(
        [bank("b1", "84.99", 1, "Umbrella", "INV-8080")], [ledger("l1", "100.00", 0, "Umbrella Corp", "INV-8080")]
    )
    assert r.matches == []
    # ... and with the reference alone (no name on the bank line) only 2.50.
    r = reconcile([bank("b1", "90.00", 1, "", "INV-8080")], [ledger("l1", "100.00", 0, "Umbrella Corp", "INV-8080")])
    assert r.matches == []


def test_currency_must_agree():
    r = reconcile([bank("b1", "50.00", 0, remit="INV-1111", ccy="USD")], [ledger("l1", "50.00", 0, ref="INV-1111")])
    assert r.matches == []


# --- global settlement and determinism ----------------------------------------------------------


def test_conflicts_are_settled_globally_one_to_one():
    # Each bank line could take either entry (same amount, within the window);
    # the near-references decide, whichever pair is closer in date.
    banks = [bank("b1", "100.00", 1, remit="INV 1001"), bank("b2", "100.00", 2, remit="INV 2002")]
    ledgers = [ledger("l1", "100.00", 0, ref="INV-1001"), ledger("l2", "100.00", 3, ref="INV-2002")]
    r = reconcile(banks, ledgers, EngineConfig(rules=[{"rule": "amount_date", "window_days": 3}]))
    assert pairs(r) == {(("b1",), ("l1",)), (("b2",), ("l2",))}
    used = [i for m in r.matches for i in m.bank_ids + m.ledger_ids]
    assert len(used) == len(set(used))  # every item at most once


def test_a_nearer_date_alone_does_not_decide():
    # Same customer, same amount, two open invoices: which one was paid is a
    # question for a person, even though one is booked closer in time.
    r = reconcile(
        [bank("b1", "250.00", 2, "Acme")], [ledger("l1", "250.00", 2, "Acme"), ledger("l2", "250.00", 0, "Acme")]
    )
    assert r.matches == [] and {s.ledger_ids for s in r.suggestions} == {("l1",), ("l2",)}


def test_result_does_not_depend_on_input_order():
    rng = random.Random(7)
    banks, ledgers = [], []
    for i in range(120):
        amount = f"{rng.choice([100, 250, rng.randint(10, 999)])}.{rng.randint(0, 99):02d}"
        name = rng.choice(["Acme", "Globex", "Initech", "Umbrella", "Hooli", ""])
        ref = f"INV-{rng.randint(1000, 1200)}"
        banks.append(bank(f"b{i:03d}", amount, rng.randint(0, 10), name, ref if rng.random() < 0.6 else "misc"))
        ledgers.append(ledger(f"l{i:03d}", amount, rng.randint(0, 10), name, ref))
    first = reconcile(banks, ledgers)
    assert first.matches and first.suggestions  # something to compare
    for _ in range(3):
        rng.shuffle(banks)
        rng.shuffle(ledgers)
        again = reconcile(banks, ledgers)
        assert again.matches == first.matches
        assert again.suggestions == first.suggestions


def test_threshold_and_rule_that_only_suggests():
    cfg = EngineConfig(rules=[{"rule": "amount_date", "auto": False}])
    r = reconcile([bank("b1", "10.00")], [ledger("l1", "10.00")], cfg)
    assert r.matches == [] and len(r.suggestions) == 1 and r.suggestions[0].rule == "amount_date"
    assert r.suggestions[0].explanation.endswith("this rule only suggests")
    r = reconcile([bank("b1", "10.00", 2)], [ledger("l1", "10.00")])  # no names, two days apart: 0.73
    assert r.matches == [] and r.suggestions[0].explanation.endswith("below the automatic threshold of 0.85")


def test_unknown_rule_is_an_error():
    with pytest.raises(RuleConfigError):
        reconcile([], [], EngineConfig(rules=[{"rule": "magic"}]))
