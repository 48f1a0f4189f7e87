"""The statement variants banks really send, and the amount a payer instructed.

Each fixture is a small file written in the style of one bank's export (an
Australian bank's OFX 1.02 with CDATA names, an OFX with an empty CURDEF, a
CAMT.053 with a USD payment booked in EUR, an MT940 with /OCMT/ and /CHGS/,
a German MT940 with ?-subfields). The expected values are written out here;
bad variants are derived from the fixtures and must name where they fail.
"""

import datetime as dt
from decimal import Decimal

import pytest
from test_recon_importers import read  # a fixture file, as the importer tests read it

from tierd.core.registry import StatementError
from tierd.plugins.reconciliation.importers import (
    Camt053Importer,
    Mt940Importer,
    OfxImporter,
    builtin_importers,
    detect_format,
)
from tierd.plugins.reconciliation.imports import check_balances
from tierd.plugins.reconciliation.matching.text import norm_ref, ref_grams

D = dt.date


def fields(line, *names):
    return tuple(getattr(line, n) for n in names)


FX = ("instructed_amount", "instructed_currency", "exchange_rate")


# --- OFX ---------------------------------------------------------------------------------------


def test_ofx_australian_sgml_with_cdata_names_and_empty_tags():
    data = read("ofx1_au_cdata.ofx")
    assert data.startswith(b"\r\n\r\nOFXHEADER:100\r\n")  # leading blank lines, CRLF
    importers = {i.format_name: i for i in builtin_importers()}
    assert detect_format(data, importers, "statement.ofx") == "ofx"
    [stmt] = OfxImporter().parse(data)
    assert (stmt.account, stmt.currency, stmt.closing_balance) == ("12345678", "AUD", Decimal("4871.73"))
    pay, shop, aws, cash = stmt.lines
    # CDATA content is text: "&" and "<PTY>" are not markup.
    assert fields(pay, "counterparty_name", "remittance", "amount", "booking_date") == (
        "SMITH & JONES <PTY> LTD",
        "INV-7001 & INV-7002",
        Decimal("1320.00"),
        D(2026, 11, 2),
    )
    assert pay.location == "line 42 <STMTTRN>" and "<NAME>SMITH &amp; JONES &lt;PTY&gt; LTD</NAME>" in pay.raw
    # A CDATA name closed by </NAME>, then an empty <MEMO> right before </STMTTRN>.
    assert fields(shop, "counterparty_name", "remittance", "amount") == (
        "EFTPOS WOOLWORTHS 1234 SYDNEY",
        "",
        Decimal("-45.90"),
    )
    # <NAME></NAME> and an empty <MEMO> followed by the next tag: FITID is still the transaction's.
    assert fields(cash, "counterparty_name", "remittance", "bank_reference", "amount") == (
        "",
        "",
        "202611050001",
        Decimal("250.00"),
    )
    assert fields(pay, *FX) == (None, "", None)


def test_ofx_origcurrency_gives_the_instructed_amount_and_rate():
    [stmt] = OfxImporter().parse(read("ofx1_au_cdata.ofx"))
    aws = stmt.lines[2]
    # TRNAMT is in CURDEF (AUD), converted from USD at 1.5237 AUD per USD.
    assert (aws.amount, aws.currency) == (Decimal("-152.37"), "AUD")
    assert fields(aws, *FX) == (Decimal("-100.00"), "USD", Decimal("1.5237"))
    assert aws.remittance == "AWS invoice 99-1234"


def test_ofx_currency_aggregate_converts_into_curdef():
    text = read("ofx1_au_cdata.ofx").decode()
    text = text.replace(
        "<ORIGCURRENCY>\r\n<CURRATE>1.5237\r\n<CURSYM>USD\r\n</ORIGCURRENCY>",
        "<CURRENCY>\r\n<CURRATE>1.5237\r\n<CURSYM>USD\r\n</CURRENCY>",
    ).replace("<TRNAMT>-152.37", "<TRNAMT>-100")
    aws = OfxImporter().parse(text.encode())[0].lines[2]
    # TRNAMT is in CURSYM: the account moved by 100 × 1.5237 AUD.
    assert (aws.amount, aws.currency) == (Decimal("-152.37"), "AUD")
    assert fields(aws, *FX) == (Decimal("-100"), "USD", Decimal("1.5237"))


def test_ofx_origcurrency_in_yen_rounds_to_whole_yen():
    text = read("ofx1_au_cdata.ofx").decode()
    text = text.replace("<CURRATE>1.5237\r\n<CURSYM>USD", "<CURRATE>0.0103\r\n<CURSYM>JPY")
    aws = OfxImporter().parse(text.encode())[0].lines[2]
    assert fields(aws, *FX) == (Decimal("-14793"), "JPY", Decimal("0.0103"))


def test_ofx_empty_curdef_takes_each_transactions_currency():
    [stmt] = OfxImporter().parse(read("ofx1_curdef_empty.ofx"))
    assert (stmt.currency, stmt.account, stmt.closing_balance) == ("EUR", "DE89370400440532013000", Decimal("298.00"))
    a, b = stmt.lines
    assert fields(a, "amount", "currency", "counterparty_name", "remittance") == (
        Decimal("310.00"),
        "EUR",
        "Kunde AG",
        "RE-2026-118",
    )
    assert (b.amount, b.currency) == (Decimal("-12.00"), "EUR")
    assert fields(a, *FX) == (None, "", None)  # no conversion: the rate 1.0 names the same currency
    # The same with CURDEF left open (SGML) and the header on one line with odd spacing.
    text = read("ofx1_curdef_empty.ofx").decode().replace("<CURDEF></CURDEF>", "<CURDEF>")
    header, body = text.split("\n\n", 1)
    one_line = "  " + "  ".join(h.replace(":", ": ") for h in header.split("\n")) + "\n" + body
    [again] = OfxImporter().parse(one_line.encode())
    assert [(ln.amount, ln.currency, ln.bank_reference) for ln in again.lines] == [
        (Decimal("310.00"), "EUR", "EU-1"),
        (Decimal("-12.00"), "EUR", "EU-2"),
    ]
    assert again.account == "DE89370400440532013000"


def test_ofx_lowercase_tags_and_cr_only_line_ends():
    text = read("ofx1_curdef_empty.ofx").decode().replace("\n", "\r")
    text = text.replace("<OFX>", "<ofx>").replace("</OFX>", "</ofx>")
    [stmt] = OfxImporter().parse(text.encode())
    assert [ln.amount for ln in stmt.lines] == [Decimal("310.00"), Decimal("-12.00")]
    assert stmt.lines[1].location == "line 17 <STMTTRN>"


@pytest.mark.parametrize(
    "name, old, new, message, where",
    [
        (
            "ofx1_au_cdata.ofx",
            "<MEMO><![CDATA[AWS invoice 99-1234]]></MEMO>",
            "<MEMO><![CDATA[AWS invoice 99-1234</MEMO>",
            "a <![CDATA[ section is never closed",
            "line 64",
        ),
        (
            "ofx1_curdef_empty.ofx",
            "<CURRENCY><CURSYM>EUR</CURSYM><CURRATE>1.0</CURRATE></CURRENCY>",
            "",
            "no currency: <CURDEF> of the statement at line 13 is empty",
            "line 16 <STMTTRN>",
        ),
        (
            "ofx1_au_cdata.ofx",
            "<CURRATE>1.5237",
            "<CURRATE>0",
            "bad exchange rate '0'",
            "line 58 <STMTTRN> <ORIGCURRENCY> CURRATE",
        ),
        (
            "ofx1_au_cdata.ofx",
            "<CURRATE>1.5237",
            "<CURRATE>about 1.5",
            "bad exchange rate 'about 1.5'",
            "line 58 <STMTTRN> <ORIGCURRENCY> CURRATE",
        ),
        ("ofx1_au_cdata.ofx", "<CURSYM>USD", "<CURSYM>US$", "bad or missing CURSYM 'US$'", "line 58"),
        (
            "ofx1_curdef_empty.ofx",
            "<CURRENCY><CURSYM>EUR</CURSYM><CURRATE>1.0</CURRATE></CURRENCY>",
            "<ORIGCURRENCY><CURRATE>1.1<CURSYM>USD</ORIGCURRENCY>",
            "ORIGCURRENCY only says what the amount was converted from",
            "line 16 <STMTTRN>",
        ),
    ],
    ids=["cdata-unclosed", "no-currency", "zero-rate", "text-rate", "bad-cursym", "origcurrency-without-curdef"],
)
def test_ofx_bad_variants_name_where(name, old, new, message, where):
    text = read(name).decode()
    assert old in text
    with pytest.raises(StatementError) as err:
        OfxImporter().parse(text.replace(old, new, 1).encode())
    assert message in str(err.value) and str(err.value).startswith(where), str(err.value)


def test_ofx_without_a_statement_says_so():
    text = read("ofx1_curdef_empty.ofx").decode()
    signon_only = text[: text.index("<BANKMSGSRSV1>")] + "</OFX>\n"
    with pytest.raises(StatementError, match="no STMTRS or CCSTMTRS statement") as err:
        OfxImporter().parse(signon_only.encode())
    assert err.value.location == "line 11"
    # A bank that answers with an error says why, in its own words.
    refused = signon_only.replace(
        "</OFX>",
        "<BANKMSGSRSV1><STMTTRNRS><TRNUID>0<STATUS><CODE>2003<SEVERITY>ERROR<MESSAGE>Account not found</STATUS>"
        "</STMTTRNRS></BANKMSGSRSV1></OFX>",
    )
    with pytest.raises(StatementError, match="the bank answered with error 2003: Account not found"):
        OfxImporter().parse(refused.encode())


def test_ofx_statement_without_transactions_is_an_empty_statement():
    text = read("ofx1_curdef_empty.ofx").decode()
    start, end = text.index("<STMTTRN>"), text.index("</BANKTRANLIST>")
    [stmt] = OfxImporter().parse((text[:start] + text[end:]).encode())
    assert stmt.lines == [] and stmt.closing_balance == Decimal("298.00")


# --- CAMT.053 ----------------------------------------------------------------------------------


def test_camt053_payments_in_other_currencies_keep_what_was_instructed():
    [stmt] = Camt053Importer().parse(read("camt053_v8_fx.xml"))
    assert (stmt.account, stmt.currency, stmt.opening_balance, stmt.closing_balance) == (
        "DE89370400440532013000",
        "EUR",
        Decimal("10000.00"),
        Decimal("10493.75"),
    )
    usd, gbp, chf, eur, fee, sek = stmt.lines
    # 1000 USD at 0.9250 EUR per USD (UnitCcy USD), less 4.62 EUR charges.
    assert fields(usd, "amount", "currency", *FX) == (
        Decimal("920.38"),
        "EUR",
        Decimal("1000.00"),
        "USD",
        Decimal("0.925"),
    )
    assert fields(usd, "counterparty_name", "counterparty_account", "end_to_end_id") == (
        "Globex Corporation",
        "026009593-4471",
        "GLOBEX-PAY-88121",
    )
    # The structured creditor reference, printed with spaces, is one reference,
    # which the matcher finds for a ledger entry that writes it with spaces.
    assert usd.remittance == "RF18539007547034"
    assert norm_ref("RF18 5390 0754 7034") in ref_grams(usd.remittance, usd.end_to_end_id)
    # A payment out in GBP: UnitCcy EUR, 0.8538 GBP per EUR, so 1/0.8538 EUR per GBP.
    assert fields(gbp, "amount", *FX) == (Decimal("-1171.23"), Decimal("-1000.00"), "GBP", Decimal("1.1712344811"))
    assert fields(gbp, "counterparty_name", "remittance") == ("Acme Supplies Ltd", "PO 4471 October delivery")
    # In a batch, each transaction has its own; without UnitCcy the amounts tell the direction.
    assert fields(chf, "amount", *FX) == (Decimal("180.00"), Decimal("170.00"), "CHF", Decimal("1.0588"))
    assert chf.location == "Stmt[1]/Ntry[3]/NtryDtls/TxDtls[1]" and chf.counterparty_name == "Helvetia Uhren AG"
    assert fields(eur, "amount", "end_to_end_id", *FX) == (Decimal("120.00"), "E2E-B-120", None, "", None)
    # An entry with nothing but AddtlNtryInf.
    assert fields(fee, "amount", "remittance", "counterparty_name") == (
        Decimal("-7.50"),
        "Entgelt Auslandszahlungen 10/2026",
        "",
    )
    # TxAmt in SEK, the rate on CntrValAmt with UnitCcy EUR (11.0595 SEK per EUR).
    assert fields(sek, "amount", *FX) == (Decimal("452.10"), Decimal("5000.00"), "SEK", Decimal("0.0904200009"))
    for line in stmt.lines:
        if line.exchange_rate is not None:
            # amount ≈ instructed amount × rate (charges aside)
            assert abs(line.instructed_amount * line.exchange_rate - line.amount) < Decimal("5")


def test_camt053_v2_names_and_entry_level_amount_details():
    text = read("camt053_v8_fx.xml").decode().replace("camt.053.001.08", "camt.053.001.02")
    # v2 writes a party's name without the Pty level.
    text = text.replace(
        "<Dbtr><Pty><Nm>Globex Corporation</Nm></Pty></Dbtr>", "<Dbtr><Nm>Globex Corporation</Nm></Dbtr>"
    )
    # AmtDtls of an entry, outside its TxDtls.
    start, end = text.index("<AmtDtls>"), text.index("</AmtDtls>") + len("</AmtDtls>")
    details = text[start:end]
    text = text[:start] + text[end:]
    text = text.replace("<AcctSvcrRef>FX-0001</AcctSvcrRef>", "<AcctSvcrRef>FX-0001</AcctSvcrRef>" + details, 1)
    usd = Camt053Importer().parse(text.encode())[0].lines[0]
    assert fields(usd, "counterparty_name", *FX) == ("Globex Corporation", Decimal("1000.00"), "USD", Decimal("0.925"))


def test_camt053_rate_from_the_counter_value_when_the_bank_gives_none():
    text = read("camt053_v8_fx.xml").decode()
    start = text.index("<CcyXchg>")
    text = text[:start] + text[text.index("</CcyXchg>", start) + len("</CcyXchg>") :]
    usd = Camt053Importer().parse(text.encode())[0].lines[0]
    # TxAmt 925.00 EUR for InstdAmt 1000.00 USD.
    assert fields(usd, *FX) == (Decimal("1000.00"), "USD", Decimal("0.925"))


def test_camt053_rate_about_other_currencies_is_not_taken():
    text = read("camt053_v8_fx.xml").decode().replace("<UnitCcy>USD</UnitCcy>", "<UnitCcy>JPY</UnitCcy>")
    usd = Camt053Importer().parse(text.encode())[0].lines[0]
    assert fields(usd, *FX) == (Decimal("1000.00"), "USD", None)


def test_camt053_same_currency_instructed_amount_shows_deducted_charges():
    text = read("camt053_v8_fx.xml").decode()
    text = text.replace('<Amt Ccy="USD">1000.00</Amt>', '<Amt Ccy="EUR">925.00</Amt>').replace(
        '<TxAmt><Amt Ccy="EUR">925.00</Amt></TxAmt>', ""
    )
    usd = Camt053Importer().parse(text.encode())[0].lines[0]
    assert fields(usd, "amount", *FX) == (Decimal("920.38"), Decimal("925.00"), "EUR", None)


@pytest.mark.parametrize(
    "old, new, message",
    [
        ("<XchgRate>0.9250</XchgRate>", "<XchgRate>0</XchgRate>", "bad exchange rate '0'"),
        ("<XchgRate>0.9250</XchgRate>", "<XchgRate>0.92.50</XchgRate>", "bad exchange rate '0.92.50'"),
        ("<XchgRate>0.9250</XchgRate>", "<XchgRate>-0.925</XchgRate>", "bad exchange rate '-0.925'"),
        ("<XchgRate>0.9250</XchgRate>", "<XchgRate/>", "bad exchange rate ''"),
    ],
    ids=["zero", "not-a-number", "negative", "empty"],
)
def test_camt053_bad_exchange_rate_names_the_element(old, new, message):
    text = read("camt053_v8_fx.xml").decode()
    with pytest.raises(StatementError) as err:
        Camt053Importer().parse(text.replace(old, new).encode())
    assert err.value.location == "Stmt[1]/Ntry[1]/NtryDtls/TxDtls[1]/AmtDtls/InstdAmt/CcyXchg/XchgRate"
    assert message in str(err.value)


def test_camt053_batch_transaction_in_a_foreign_currency_is_booked_from_its_counter_value():
    text = read("camt053_v8_fx.xml").decode().replace('<Amt Ccy="EUR">180.00</Amt>', '<Amt Ccy="CHF">170.00</Amt>')
    with_counter_value = text.replace("</InstdAmt>", '</InstdAmt><CntrValAmt><Amt Ccy="EUR">180.00</Amt></CntrValAmt>')
    chf = Camt053Importer().parse(with_counter_value.encode())[0].lines[2]
    assert fields(chf, "amount", "currency", *FX) == (
        Decimal("180.00"),
        "EUR",
        Decimal("170.00"),
        "CHF",
        Decimal("1.0588"),
    )
    # Without an amount in the account's currency the batch cannot be split.
    with pytest.raises(StatementError) as err:
        Camt053Importer().parse(text.encode())
    assert err.value.location == "Stmt[1]/Ntry[3]/NtryDtls/TxDtls[1]"
    assert "batch transaction without an amount in EUR (only CHF)" in str(err.value)


# --- MT940 -------------------------------------------------------------------------------------


def test_mt940_german_subfields_and_sepa_keywords():
    data = read("mt940_german_subfields.sta")
    assert b"\r\n" in data and "Bäckerei".encode("latin-1") in data  # CRLF, Latin-1
    [stmt] = Mt940Importer().parse(data)
    assert (stmt.account, stmt.currency, stmt.opening_balance, stmt.closing_balance) == (
        "10020030/1234567890",
        "EUR",
        Decimal("12000.00"),
        Decimal("13840.10"),
    )
    assert check_balances(stmt, 1)["ok"]
    credit, debit, rent = stmt.lines
    # ?32 name, ?31 IBAN, EREF+ end-to-end id, SVWZ+ remittance joined across full subfields.
    assert fields(
        credit, "amount", "counterparty_name", "counterparty_account", "end_to_end_id", "remittance", "bank_reference"
    ) == (
        Decimal("1500.00"),
        "Muster Handels GmbH",
        "DE44500105175407324931",
        "RE-2026-0815",
        "Rechnung RE-2026-0815 vom 01.11.2026 Kd 4711",
        "9310-1",
    )
    # ?32 + ?33 joined mid-word; EREF+NOTPROVIDED is no id; MREF+ and CRED+ stay out of the remittance.
    assert fields(debit, "amount", "counterparty_name", "end_to_end_id", "remittance") == (
        Decimal("-89.90"),
        "Stadtwerke Musterstadt Versorgung GmbH",
        "",
        "Strom Abschlag 11/2026 Vertrag 100200300",
    )
    # No SEPA keywords: each short subfield is a line of its own.
    assert fields(rent, "counterparty_name", "remittance", "booking_date") == (
        "Bäckerei Müller",
        "Miete November Wohnung 3 OG links",
        D(2026, 11, 6),
    )
    assert all(fields(ln, *FX) == (None, "", None) for ln in stmt.lines)


def test_mt940_free_text_after_an_end_to_end_id_without_svwz():
    text = read("mt940_german_subfields.sta").decode("latin-1").replace("?21KREF+K-99", "?21Anzahlung Projekt 7")
    credit = Mt940Importer().parse(text.encode("latin-1"))[0].lines[0]
    assert credit.end_to_end_id == "RE-2026-0815"
    assert credit.remittance == "Anzahlung Projekt 7 Rechnung RE-2026-0815 vom 01.11.2026 Kd 4711"


def test_mt940_abwa_names_the_payer_when_there_is_no_name():
    text = read("mt940_german_subfields.sta").decode("latin-1")
    text = text.replace("?32Muster Ha\r\nndels GmbH", "")
    credit = Mt940Importer().parse(text.encode("latin-1"))[0].lines[0]
    assert credit.counterparty_name == "Muster Holding AG"


def test_mt940_swift_envelope_original_amount_charges_and_rate():
    first, second = Mt940Importer().parse(read("mt940_swift_fx.sta"))
    # {1:..}{2:..}{4: blocks and -}{5:..} trailers; :62M:/:60M: intermediate balances.
    assert (first.opening_balance, first.closing_balance) == (Decimal("5000.00"), Decimal("4749.15"))
    assert (second.opening_balance, second.closing_balance) == (Decimal("4749.15"), Decimal("4999.15"))
    assert check_balances(first, 1)["ok"] and check_balances(second, 2)["ok"]
    usd, gbp = first.lines
    # /OCMT/USD1000,00//CHGS/EUR4,62/ in the :61: supplementary details: (920.38 + 4.62) / 1000.
    assert fields(usd, "amount", "currency", *FX) == (
        Decimal("920.38"),
        "EUR",
        Decimal("1000.00"),
        "USD",
        Decimal("0.925"),
    )
    assert fields(usd, "counterparty_name", "end_to_end_id", "bank_reference") == (
        "Globex Corporation",
        "GLOBEX-PAY-88121",
        "FX-0001",
    )
    assert "OCMT" not in usd.remittance and "OCMT" not in usd.counterparty_name
    # /OCMT/ and /EXCH/ in :86:, the rate given as GBP per EUR: turned into EUR per GBP.
    assert fields(gbp, "amount", *FX) == (Decimal("-1171.23"), Decimal("-1000.00"), "GBP", Decimal("1.1712344811"))
    assert gbp.counterparty_name == "Acme Supplies Ltd" and gbp.remittance.startswith("PO 4471")
    # The same currency, less charges: the instructed amount shows them; no rate.
    [gift] = second.lines
    assert fields(gift, "amount", "remittance", "counterparty_name", *FX) == (
        Decimal("250.00"),
        "INV-7003",  # the :NS: field that follows is not remittance
        "Jan de Vries",
        Decimal("251.50"),
        "EUR",
        None,
    )


def test_mt940_funds_code_and_entry_date():
    [stmt] = Mt940Importer().parse(read("mt940_german_subfields.sta"))
    # "2611051105CR1500,00": value date, entry date MMDD, credit, funds code R.
    assert (stmt.lines[0].value_date, stmt.lines[0].booking_date, stmt.lines[0].amount) == (
        D(2026, 11, 5),
        D(2026, 11, 5),
        Decimal("1500.00"),
    )


@pytest.mark.parametrize(
    "old, new, message",
    [
        ("/OCMT/USD1000,00/", "/OCMT/USD1.000,00/", "bad /OCMT/ amount 'USD1.000,00'"),
        ("/OCMT/USD1000,00/", "/OCMT/1000,00/", "bad /OCMT/ amount '1000,00'"),
        ("/CHGS/EUR4,62/", "/CHGS/EUR/", "bad /CHGS/ amount 'EUR'"),
        ("/EXCH/0,8538/", "/EXCH/0/", "bad exchange rate '0'"),
        ("/EXCH/0,8538/", "/EXCH/abc/", "bad exchange rate 'abc'"),
    ],
    ids=["thousands", "no-currency", "no-charge", "zero-rate", "text-rate"],
)
def test_mt940_bad_foreign_amounts_name_the_line(old, new, message):
    text = read("mt940_swift_fx.sta").decode()
    assert old in text
    with pytest.raises(StatementError) as err:
        Mt940Importer().parse(text.replace(old, new).encode())
    assert message in str(err.value) and err.value.location.startswith("line "), str(err.value)
    assert err.value.location in ("line 6", "line 10", "line 10 /EXCH/")


def test_mt940_envelope_on_the_tag_line_and_blank_entry_date():
    text = read("mt940_swift_fx.sta").decode()
    text = text.replace("{4:\r\n:20:", "{4::20:").replace(":61:261105C250,00", ":61:261105    C250,00")
    first, second = Mt940Importer().parse(text.encode())
    assert first.statement_id == "940S261105" and len(first.lines) == 2
    assert second.lines[0].booking_date == D(2026, 11, 5) and second.lines[0].amount == Decimal("250.00")


# --- every public sample ------------------------------------------------------------------------


def test_every_shared_sample_imports_or_says_why(shared_statements):
    importers = {i.format_name: i for i in builtin_importers()}
    files = sorted(p for p in shared_statements.rglob("*") if p.suffix in (".xml", ".sta", ".ofx"))
    assert len(files) >= 10
    for path in files:
        data = path.read_bytes()
        fmt = detect_format(data, importers, path.name)
        assert fmt == {".xml": "camt053", ".sta": "mt940", ".ofx": "ofx"}[path.suffix], path.name
        if path.name.startswith("malformed_"):
            with pytest.raises(StatementError) as err:
                importers[fmt].parse(data)
            assert err.value.location, path.name
            continue
        statements = importers[fmt].parse(data)
        assert statements, path.name
        for stmt in statements:
            assert stmt.currency, path.name
            for line in stmt.lines:
                assert line.currency == stmt.currency and line.booking_date, (path.name, line.location)


# --- through the daemon ---------------------------------------------------------------------------

BASE = "/v1/reconciliation/accounts"
RAW = {"Content-Type": "application/octet-stream"}


def test_instructed_amounts_are_stored_and_listed(tierd_daemon):
    d = tierd_daemon({"reconciliation": {}, "plugins": {"disabled": ["webhooks", "notifications"]}})
    token = d.create_tenant("acme")

    def call(method, path, body=None, data=None, headers=None):
        return d.request(method, path, json_body=body, data=data, token=token, headers=headers)

    for account in (
        {"id": "eur", "currency": "EUR", "iban": "DE89370400440532013000"},
        {"id": "aud", "currency": "AUD", "account_number": "12345678"},
        {"id": "nl", "currency": "EUR", "iban": "NL91ABNA0417164300"},
    ):
        status, body = call("POST", BASE, account)
        assert status == 201, body

    # A CcyXchg with a zero rate names its element and imports nothing.
    camt = read("camt053_v8_fx.xml")
    status, body = call("POST", f"{BASE}/eur/statements", data=camt.replace(b">0.9250<", b">0<"), headers=RAW)
    assert status == 422 and body["error"]["code"] == "statement_invalid", body
    assert (
        body["error"]["details"]["location"] == "Stmt[1]/Ntry[1]/NtryDtls/TxDtls[1]/AmtDtls/InstdAmt/CcyXchg/XchgRate"
    )
    status, items = call("GET", f"{BASE}/eur/open-items?side=bank")
    assert items["statement_lines"] == []

    expected = {
        "eur": ("camt053_v8_fx.xml", "camt053", 6),
        "aud": ("ofx1_au_cdata.ofx", "ofx", 4),
        "nl": ("mt940_swift_fx.sta", "mt940", 3),
    }
    listed = {}
    for account, (name, fmt, count) in expected.items():
        status, body = call("POST", f"{BASE}/{account}/statements?filename={name}", data=read(name), headers=RAW)
        assert status == 201 and (body["format"], body["new"], body["rejected"]) == (fmt, count, 0), body
        status, items = call("GET", f"{BASE}/{account}/open-items?side=bank&limit=100")
        assert status == 200 and len(items["statement_lines"]) == count
        listed[account] = {ln["bank_reference"]: ln for ln in items["statement_lines"]}

    def fx(line):
        return (line["amount"], line["instructed_amount"], line["instructed_currency"], line["exchange_rate"])

    assert fx(listed["eur"]["FX-0001"]) == ("920.38", "1000.00", "USD", "0.925")
    assert fx(listed["eur"]["FX-0002"]) == ("-1171.23", "-1000.00", "GBP", "1.1712344811")
    assert fx(listed["eur"]["FX-0005"]) == ("452.10", "5000.00", "SEK", "0.0904200009")
    assert fx(listed["eur"]["FX-0004"]) == ("-7.50", None, "", None)
    assert listed["eur"]["FX-0001"]["remittance"] == "RF18539007547034"
    aws = listed["aud"]["202611040001"]
    assert fx(aws) == ("-152.37", "-100.00", "USD", "1.5237") and aws["counterparty_name"] == "AMAZON WEB SERVICES"
    assert listed["aud"]["202611020001"]["counterparty_name"] == "SMITH & JONES <PTY> LTD"
    assert fx(listed["nl"]["FX-0001"]) == ("920.38", "1000.00", "USD", "0.925")
    assert fx(listed["nl"]["FX-0003"]) == ("250.00", "251.50", "EUR", None)
