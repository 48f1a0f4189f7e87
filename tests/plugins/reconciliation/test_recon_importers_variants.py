"""The statement variants banks really send, and the amount a payer instructed.

Each fixture is a small file written in the style of one bank's export (an
Australian bank's OFX 1.02 with CDATA names, an OFX with an empty CURDEF, a
CAMT.053 with a USD payment booked in EUR, an MT940 with /OCMT/ and /CHGS/,
a German MT940 with ?-subfields). The expected values are written out here;
bad variants are derived from the fixtures and must name where they fail.
"""

import datetime as dt
from decimal import Decimal
from pathlib import Path

import pytest

from tierd.core.registry import StatementError
from tierd.plugins.reconciliation.importers import (
    OfxImporter,
    builtin_importers,
    detect_format,
)

FIXTURES = Path(__file__).parent / "fixtures"
D = dt.date


def read(name: str) -> bytes:
    return (FIXTURES / name).read_bytes()


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
