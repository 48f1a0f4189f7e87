"""Golden tests of the statement importers on the project's own fixtures.

Each fixture is a small file in its real format; the expected values are
written out by hand here. Malformed variants are derived from the fixtures
so that every error names the line or element and nothing is returned.
"""

import datetime as dt
from decimal import Decimal
from pathlib import Path

import pytest

from tierd.core.registry import StatementError
from tierd.plugins.reconciliation.importers import (
    Camt053Importer,
    CsvImporter,
    Mt940Importer,
    OfxImporter,
    builtin_importers,
    detect_format,
)

FIXTURES = Path(__file__).parent / "fixtures"
D = dt.date


def read(name: str) -> bytes:
    return (FIXTURES / name).read_bytes()


# --- CAMT.053 -----------------------------------------------------------------


def test_camt053_v2_batch_entries_are_split_and_balances_read():
    [stmt] = Camt053Importer().parse(read("camt053_v2_batch.xml"))
    assert stmt.account == "DE89370400440532013000"
    assert stmt.currency == "EUR"
    assert stmt.statement_id == "STMT-V2-2026-11"
    assert (stmt.opening_balance, stmt.closing_balance) == (Decimal("1000.00"), Decimal("1404.50"))
    assert (stmt.opening_date, stmt.closing_date) == (D(2026, 11, 1), D(2026, 11, 4))
    # 1 single + 3 from the batch + 1 debit; the pending entry is left out.
    assert [ln.amount for ln in stmt.lines] == [Decimal(x) for x in ("150.00", "100.00", "120.00", "80.00", "-45.50")]
    first = stmt.lines[0]
    assert first.booking_date == first.value_date == D(2026, 11, 2)
    assert first.counterparty_name == "Müller GmbH"
    assert first.counterparty_account == "DE02120300000000202051"
    assert first.remittance == "Invoice INV-1043"
    assert first.end_to_end_id == "E2E-1043"
    assert first.bank_reference == "BREF-0001"
    assert "<Ntry>" in first.raw
    batch = stmt.lines[1:4]
    assert [ln.bank_reference for ln in batch] == ["BREF-0002/1", "BREF-0002/2", "BREF-0002/3"]
    assert [ln.counterparty_name for ln in batch] == ["Alpha AG", "Beta KG", "Gamma e.K."]
    assert [ln.end_to_end_id for ln in batch] == ["E2E-2001", "E2E-2002", ""]  # NOTPROVIDED is no id
    assert batch[2].location == "Stmt[1]/Ntry[2]/NtryDtls/TxDtls[3]"
    assert stmt.lines[4].counterparty_name == "Stadtwerke"  # creditor on a debit
    assert stmt.opening_balance + sum(ln.amount for ln in stmt.lines) == stmt.closing_balance


def test_camt053_v8_party_and_structured_reference():
    [stmt] = Camt053Importer().parse(read("camt053_v8_batch.xml"))
    assert stmt.account == "0532013000"
    assert (stmt.opening_balance, stmt.closing_balance) == (Decimal("500.00"), Decimal("1500.00"))
    a, b, c = stmt.lines
    assert (a.amount, a.counterparty_name, a.end_to_end_id, a.bank_reference) == (
        Decimal("700.00"),
        "Delta SA",
        "E2E-V8-1",
        "V8-REF-1-A",
    )
    assert a.remittance == "RF18539007547034"
    assert a.booking_date == D(2026, 11, 2) and a.value_date == D(2026, 11, 3)
    assert (b.amount, b.counterparty_name, b.remittance, b.bank_reference) == (
        Decimal("500.00"),
        "Epsilon Ltd",
        "Payment INV-3001",
        "V8-REF-1-B",
    )
    assert (c.amount, c.counterparty_name, c.end_to_end_id) == (Decimal("-200.00"), "Office Supplies Ltd", "PO-778")


@pytest.mark.parametrize(
    "mutate, where",
    [
        (lambda s: s[: len(s) // 2], "line"),  # truncated
        (lambda s: s.replace('<Amt Ccy="EUR">45.50</Amt>', '<Amt Ccy="EUR">45,50</Amt>'), "Stmt[1]/Ntry[3]/Amt"),
        (
            lambda s: s.replace('<Amt Ccy="EUR">150.00</Amt><CdtDbtInd>', '<Amt Ccy="EUR">1e3</Amt><CdtDbtInd>'),
            "Stmt[1]/Ntry[1]/Amt",
        ),
        (
            lambda s: s.replace("<Dt>2026-11-04</Dt></BookgDt>", "<Dt>2026-13-45</Dt></BookgDt>"),
            "Stmt[1]/Ntry[3]/BookgDt",
        ),
        (lambda s: s.replace('<Amt Ccy="EUR">80.00</Amt>', '<Amt Ccy="EUR">81.00</Amt>'), "Stmt[1]/Ntry[2]"),
        (lambda s: s.replace("<Document", '<!DOCTYPE d [<!ENTITY x "y">]><Document'), "line 2"),
        (lambda s: s.replace("<CdtDbtInd>DBIT</CdtDbtInd>", "<CdtDbtInd>DEBIT</CdtDbtInd>"), "CdtDbtInd"),
    ],
    ids=["truncated", "decimal-comma", "exponent", "bad-date", "batch-sum", "doctype", "bad-indicator"],
)
def test_camt053_malformed_files_name_the_element(mutate, where):
    data = mutate(read("camt053_v2_batch.xml").decode()).encode()
    with pytest.raises(StatementError) as err:
        Camt053Importer().parse(data)
    assert where in str(err.value)


# --- MT940 / MT942 ---------------------------------------------------------------


def test_mt940_statements_balances_and_structured_86():
    first, second = Mt940Importer().parse(read("mt940_two_statements.sta"))
    assert first.account == "37040044/0532013000"
    assert (first.opening_balance, first.closing_balance, first.currency) == (
        Decimal("1000.00"),
        Decimal("1104.50"),
        "EUR",
    )
    credit, debit = first.lines
    assert credit.amount == Decimal("150.00") and debit.amount == Decimal("-45.50")
    assert credit.booking_date == D(2026, 11, 2)
    assert credit.counterparty_name == "Mueller GmbH"
    assert credit.counterparty_account == "DE02120300000000202051"
    assert credit.end_to_end_id == "E2E-1043"
    assert credit.remittance == "Invoice INV-1043"
    assert credit.bank_reference == "BANKREF-1"
    assert credit.location == "line 5" and credit.raw.startswith(":61:")
    assert (second.opening_balance, second.closing_balance) == (Decimal("1104.50"), Decimal("1114.50"))
    [gift] = second.lines
    assert (gift.counterparty_name, gift.counterparty_account, gift.remittance, gift.end_to_end_id) == (
        "Jan de Vries",
        "NL91ABNA0417164300",
        "Gift 2026",
        "",
    )


def test_mt942_interim_report_has_lines_and_no_balances():
    [stmt] = Mt940Importer().parse(read("mt942_interim.sta"))
    [line] = stmt.lines
    assert line.amount == Decimal("75.25") and line.counterparty_name == "Omega Ltd" and line.remittance == "INV-1050"
    assert stmt.opening_balance is None and stmt.closing_balance is None


@pytest.mark.parametrize(
    "old, new, where",
    [
        (":61:2611031103D45,50", ":61:2611031103D4x,50", "line 7"),
        (":61:2611021102C150,00", ":61:2613021102C150,00", "line 5"),
        (":60F:C261101EUR1000,00", ":60F:C261101EUR1000.00", "line 4"),
    ],
    ids=["bad-amount", "bad-date", "bad-balance"],
)
def test_mt940_malformed_lines_are_named(old, new, where):
    data = read("mt940_two_statements.sta").decode().replace(old, new).encode()
    with pytest.raises(StatementError) as err:
        Mt940Importer().parse(data)
    assert str(err.value).startswith(where)


# --- OFX ---------------------------------------------------------------------


def test_ofx1_sgml():
    [stmt] = OfxImporter().parse(read("ofx1_sgml.ofx"))
    assert (stmt.account, stmt.currency, stmt.closing_balance) == ("4000123456", "USD", Decimal("5760.01"))
    a, b, c = stmt.lines
    assert (a.booking_date, a.amount, a.counterparty_name, a.remittance, a.bank_reference) == (
        D(2026, 11, 2),
        Decimal("1250.00"),
        "Acme Corp",
        "INV-5001 payment",
        "FIT-0001",
    )
    assert b.counterparty_name == "AT&T" and b.value_date == D(2026, 11, 2) and b.amount == Decimal("-89.99")
    assert c.remittance == "check 1017" and c.amount == Decimal("-400")


def test_ofx2_xml_credit_card():
    [stmt] = OfxImporter().parse(read("ofx2_xml.ofx"))
    assert (stmt.account, stmt.currency, stmt.closing_balance) == ("5500000000000004", "EUR", Decimal("-76.60"))
    a, b = stmt.lines
    assert (a.amount, a.counterparty_name, a.remittance) == (Decimal("-23.40"), "Café Zürich", "Lunch")
    assert (b.amount, b.end_to_end_id, b.bank_reference) == (Decimal("100.00"), "E2E-CC-2", "CC-2")


@pytest.mark.parametrize(
    "old, new, where",
    [
        ("<TRNAMT>-89.99", "<TRNAMT>$89.99", "line 18"),
        ("<DTPOSTED>20261104", "<DTPOSTED>20261304", "line 19"),
        ("</BANKTRANLIST>", "", "line 16"),
    ],
    ids=["bad-amount", "bad-date", "unclosed"],
)
def test_ofx_malformed(old, new, where):
    data = read("ofx1_sgml.ofx").decode().replace(old, new).encode()
    with pytest.raises(StatementError) as err:
        OfxImporter().parse(data)
    assert str(err.value).startswith(where)


def test_ofx_truncated_is_rejected():
    data = read("ofx2_xml.ofx")
    with pytest.raises(StatementError):
        OfxImporter().parse(data[: len(data) // 2])


# --- CSV -------------------------------------------------------------------------

MYBANK = {
    "delimiter": ";",
    "encoding": "cp1252",
    "decimal": ",",
    "date_format": "%d.%m.%Y",
    "skip_rows": 2,
    "columns": {
        "booking_date": "Buchungstag",
        "value_date": "Valuta",
        "debit": "Soll",
        "credit": "Haben",
        "currency": "Waehrung",
        "counterparty_name": "Name",
        "counterparty_account": "IBAN",
        "remittance": "Verwendungszweck",
        "bank_reference": "Referenz",
    },
}


def test_csv_cp1252_debit_credit_decimal_comma():
    [stmt] = CsvImporter().parse(read("csv_cp1252_debit_credit.csv"), {"csv_format": MYBANK, "currency": "EUR"})
    a, b, c, d = stmt.lines
    assert (a.booking_date, a.amount, a.counterparty_name, a.counterparty_account) == (
        D(2026, 11, 2),
        Decimal("1150.00"),
        "Müller GmbH",
        "DE02120300000000202051",
    )
    assert a.remittance == "Rechnung INV-1043 für Oktober"
    assert (b.amount, b.value_date, b.remittance) == (Decimal("-45.50"), D(2026, 11, 4), "Strom 11/2026; Abschlag 50 €")
    assert c.amount == d.amount == Decimal("20.00")  # identical genuine lines both kept
    assert a.location == "line 4"


def test_csv_utf8_bom_signed_amount():
    layout = {
        **MYBANK,
        "skip_rows": 0,
        "encoding": "cp1252",
        "columns": {**{k: v for k, v in MYBANK["columns"].items() if k not in ("debit", "credit")}, "amount": "Betrag"},
    }
    [stmt] = CsvImporter().parse(read("csv_utf8_bom_signed.csv"), {"csv_format": layout})
    assert [ln.amount for ln in stmt.lines] == [Decimal("1150.00"), Decimal("-45.50")]
    assert stmt.lines[0].counterparty_name == "Müller GmbH"  # the BOM wins over cp1252
    assert [ln.bank_reference for ln in stmt.lines] == ["BK-1", "BK-2"]


@pytest.mark.parametrize(
    "old, new, where",
    [
        ("45,50", "45;50", "line 5"),
        ("1.150,00", "1.15,00", "line 4"),
        ("03.11.2026;04", "31.02.2026;04", "line 5"),
        ("Verwendungszweck", "Zweck", "line 3"),
    ],
    ids=["columns", "bad-thousands", "bad-date", "missing-column"],
)
def test_csv_malformed(old, new, where):
    data = read("csv_cp1252_debit_credit.csv").decode("cp1252").replace(old, new, 1).encode("cp1252")
    with pytest.raises(StatementError) as err:
        CsvImporter().parse(data, {"csv_format": MYBANK})
    assert str(err.value).startswith(where)


# --- detection ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "name, fmt",
    [
        ("camt053_v2_batch.xml", "camt053"),
        ("camt053_v8_batch.xml", "camt053"),
        ("mt940_two_statements.sta", "mt940"),
        ("mt942_interim.sta", "mt940"),
        ("ofx1_sgml.ofx", "ofx"),
        ("ofx2_xml.ofx", "ofx"),
        ("csv_cp1252_debit_credit.csv", "csv"),
    ],
)
def test_detect_format(name, fmt):
    importers = {i.format_name: i for i in builtin_importers()}
    assert detect_format(read(name), importers, filename=name) == fmt


def test_detect_unknown_uses_fallback_or_fails():
    importers = {i.format_name: i for i in builtin_importers()}
    assert detect_format(b"a;b\n1;2\n", importers, filename="upload", fallback="csv") == "csv"
    with pytest.raises(StatementError):
        detect_format(b"hello", importers, filename="upload")


@pytest.mark.parametrize("encoding", ["utf-8", "latin-1"])
def test_mt940_names_in_utf8_or_latin1(encoding):
    text = read("mt940_two_statements.sta").decode().replace("Mueller GmbH", "Müller GmbH")
    first, _ = Mt940Importer().parse(text.encode(encoding))
    assert first.lines[0].counterparty_name == "Müller GmbH"


def test_ofx_named_charset():
    text = (
        read("ofx1_sgml.ofx")
        .decode()
        .replace("CHARSET:1252", "CHARSET:ISO-8859-1")
        .replace("Acme Corp", "Société Générale")
    )
    [stmt] = OfxImporter().parse(text.encode("latin-1"))
    assert stmt.lines[0].counterparty_name == "Société Générale"


@pytest.mark.parametrize("version", ["03", "04", "05", "06", "07"])
def test_camt053_versions_between_02_and_08(version):
    data = read("camt053_v8_batch.xml").replace(b"camt.053.001.08", f"camt.053.001.{version}".encode())
    [stmt] = Camt053Importer().parse(data)
    assert [ln.amount for ln in stmt.lines] == [Decimal("700.00"), Decimal("500.00"), Decimal("-200.00")]


def test_camt053_version_01_is_refused():
    data = read("camt053_v2_batch.xml").replace(b"camt.053.001.02", b"camt.053.001.01")
    with pytest.raises(StatementError, match="not supported"):
        Camt053Importer().parse(data)
