"""Golden tests on the public sample statements in ../shared (skipped when absent).

The values each original project expects (``*.json`` for CAMT.053 from
genkgo/camt, ``*.yml`` for MT940 from wolph/mt940) are read here and compared
with what the importers return. The files are used where they lie, never
copied into this repository.
"""

import datetime as dt
import json
from decimal import Decimal

import pytest
import yaml

from tierd.core.registry import StatementError
from tierd.plugins.reconciliation.importers import (
    Camt053Importer,
    Mt940Importer,
    OfxImporter,
    builtin_importers,
    detect_format,
)
from tierd.plugins.reconciliation.imports import check_balances


class _PickleFreeLoader(yaml.SafeLoader):
    """Reads the mt940 project's python-tagged YAML into plain values, executing nothing."""


def _python_tag(loader, suffix, node):
    # A generator, as PyYAML wants for recursive nodes (transactions point back at their parent).
    if isinstance(node, yaml.MappingNode):
        data = {}
        yield data
        data.update(loader.construct_mapping(node))
        return
    args = (
        loader.construct_sequence(node, deep=True)
        if isinstance(node, yaml.SequenceNode)
        else [loader.construct_scalar(node)]
    )
    if suffix.endswith("decimal.Decimal"):
        yield Decimal(args[0])
    elif suffix.endswith("mt940.models.Date"):
        raw = args[0]
        yield dt.date(raw[0] * 256 + raw[1], raw[2], raw[3])
    else:
        yield None  # compiled regexes and the like: not values


_PickleFreeLoader.add_multi_constructor("tag:yaml.org,2002:python/", _python_tag)


# --- CAMT.053 ----------------------------------------------------------------------------------


def _camt_cases(shared):
    return sorted((shared / "camt053").glob("*.xml"))


def test_camt053_samples_match_expected_values(shared_statements):
    files = _camt_cases(shared_statements)
    assert files
    for xml in files:
        expected = json.loads(xml.with_suffix(".json").read_text())
        statements = Camt053Importer().parse(xml.read_bytes())
        assert len(statements) == len(expected["getRecords"]), xml.name
        by_id = {stmt.statement_id: stmt for stmt in statements}
        assert expected["getEntries"], xml.name
        for entry in expected["getEntries"]:
            # The original lists the last record's entries, each with its record and index.
            stmt = by_id[entry["getRecord"]["getId"]]
            line = stmt.lines[entry["getIndex"]]
            assert stmt.account == entry["getRecord"]["getAccount"]["getIdentification"]
            # The original keeps money in minor units (cents).
            assert line.amount == Decimal(entry["getAmount"]["getAmount"]) / 100, xml.name
            assert line.currency == entry["getAmount"]["getCurrency"]["getCode"]
            assert line.booking_date.isoformat() == entry["getBookingDate"]["0"][:10]
            assert line.value_date.isoformat() == entry["getValueDate"]["0"][:10]
            assert line.bank_reference == (entry["getAccountServicerReference"] or "")


def test_camt053_samples_balances_are_checked(shared_statements):
    # minimal.xml opens at 18.15 EUR and books 8.85: its CLBD is in SEK, so
    # only the opening balance is comparable and no check is claimed.
    xml = (shared_statements / "camt053" / "camt053.v2.minimal.xml").read_text()
    [stmt] = Camt053Importer().parse(xml.encode())
    assert stmt.opening_balance == Decimal("18.15") and sum(ln.amount for ln in stmt.lines) == Decimal("8.85")
    assert check_balances(stmt, 1) is None
    # The same statement closing in its own currency is checked: right at
    # 27.00 EUR credit, wrong at a cent off (and an import then says so).
    closing = '<Amt Ccy="SEK">27.00</Amt>\n                <CdtDbtInd>DBIT</CdtDbtInd>'
    assert closing in xml
    for amount, ok in (("27.00", True), ("27.01", False)):
        own = xml.replace(closing, f'<Amt Ccy="EUR">{amount}</Amt>\n                <CdtDbtInd>CRDT</CdtDbtInd>')
        [stmt] = Camt053Importer().parse(own.encode())
        check = check_balances(stmt, 1)
        assert check["ok"] is ok and check["computed_closing"] == "27.00" and check["closing"] == amount, check


# --- MT940 -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["generic", "abnamro", "rabobank"])
def test_mt940_samples_match_expected_values(shared_statements, name):
    sta = shared_statements / "mt940" / f"{name}.sta"
    expected = yaml.load((shared_statements / "mt940" / f"{name}.yml").read_text(), Loader=_PickleFreeLoader)
    statements = Mt940Importer().parse(sta.read_bytes())
    lines = [ln for s in statements for ln in s.lines]
    want = [t["data"] for t in expected["transactions"]]
    assert [ln.amount for ln in lines] == [w["amount"]["amount"] for w in want]
    assert [ln.value_date for ln in lines] == [w["date"] for w in want]
    # The library merges all statements into one object; ours keeps each one's balances.
    closing = expected["data"]["final_closing_balance"]["amount"]["amount"]
    assert closing in [s.closing_balance for s in statements]


# --- OFX ---------------------------------------------------------------------------------------------------


def test_ofx_samples(shared_statements):
    folder = shared_statements / "ofx"
    [stmt] = OfxImporter().parse((folder / "bank_medium.ofx").read_bytes())
    assert stmt.currency == "CAD" and len(stmt.lines) == 3
    assert stmt.lines[0].amount == Decimal("-6.60") and stmt.lines[0].booking_date == dt.date(2009, 4, 1)
    assert stmt.lines[0].bank_reference == "0000123456782009040100001"
    accounts = OfxImporter().parse((folder / "multiple_accounts.ofx").read_bytes())
    assert [s.account for s in accounts] == ["9100", "9200"]
    assert [s.closing_balance for s in accounts] == [Decimal("111"), Decimal("222")]


def test_ofx_malformed_sample_is_rejected(shared_statements):
    data = (shared_statements / "ofx" / "malformed_decimal_error.ofx").read_bytes()
    importers = {i.format_name: i for i in builtin_importers()}
    assert detect_format(data, importers, "malformed_decimal_error.ofx") == "ofx"
    with pytest.raises(StatementError) as err:
        OfxImporter().parse(data)
    assert err.value.location.startswith("line ")
