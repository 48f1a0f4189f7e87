"""SWIFT MT940 (statement) and MT942 (interim report), read with ``mt-940``.

The ``mt940`` library does the field parsing, but it is lenient: it reads
``:61:110101D1x,00`` as an amount of 1 and merges every statement of a file
into one object. So this module first splits the file into statements and
checks each tag against the SWIFT layout itself (naming the line of a bad
one), then lets the library parse each statement on its own, which keeps
opening and closing balances per statement.

The ``:86:`` text is mined for the structured sub-fields German (``?20``..)
and Dutch (``/EREF/``..) banks put in it: counterparty, IBAN, end-to-end id.
German remittance text carries SEPA keywords (``EREF+`` end-to-end id,
``KREF+`` customer reference, ``MREF+`` mandate, ``CRED+`` creditor id,
``SVWZ+`` the remittance itself, ``ABWA+``/``ABWE+`` the ultimate parties).

A payment in another currency shows its original amount as SWIFT's
``/OCMT/USD1000,00/`` (with ``/CHGS/EUR4,62/`` for charges deducted), in the
``:61:`` supplementary details or in ``:86:``; some banks add the rate as
``/EXCH/0,925/``. See :func:`_fill_instructed` for how they become the
line's instructed amount and rate.
"""

from __future__ import annotations

import datetime as dt
import re
from decimal import Decimal

import mt940

from tierd.core.registry import Statement, StatementError, StatementImporter, StatementLine

from .base import clean, decode_text, orient_rate, parse_localized_decimal, parse_rate, rate_between

_TAG = re.compile(r":(\d\d[A-Z]?|NS):(.*)")
#: SWIFT envelope blocks ahead of the text block on the same line: ``{1:...}{2:...}{4:``.
_ENVELOPE = re.compile(r"^(\{\d:[^{}]*(\{[^{}]*\})*\})*\{4:")
_FIELD_61 = re.compile(
    r"(?P<date>\d{6})(?P<entry>\d{4}|\s{4})?(?P<mark>R?[DC])(?P<funds>[A-Z])?(?P<amount>\d{1,15},\d{0,2})"
    r"(?P<type>[NSF][A-Z0-9]{3})(?P<rest>.*)",
    re.S,
)
_BALANCE = re.compile(r"(?P<mark>[DC])(?P<date>\d{6})(?P<ccy>[A-Z]{3})(?P<amount>\d{1,15},\d{0,2})\s*")
_FLOOR = re.compile(r"[A-Z]{3}[DC]?\d{1,15},\d{0,2}\s*")
_SUM = re.compile(r"\d{1,5}[A-Z]{3}\d{1,15},\d{0,2}\s*")
_DATETIME = re.compile(r"\d{10}([+-]\d{4})?\s*")
_BALANCE_TAGS = ("60F", "60M", "62F", "62M", "64", "65", "60", "62")


def _check_date(yymmdd: str, where: str) -> None:
    month, day = int(yymmdd[2:4]), int(yymmdd[4:6])
    if not (1 <= month <= 12 and 1 <= day <= 31):
        raise StatementError(f"bad date {yymmdd!r}", where)


def _fields(text: str) -> list[tuple[str, str, int]]:
    """``(tag, value, line number)`` for every tag; continuation lines join."""
    fields: list[list] = []
    in_banner = True  # before the first tag, or after a "-" separator
    for number, raw in enumerate(text.splitlines(), 1):
        line = _ENVELOPE.sub("", raw.rstrip("\r"), count=1)
        m = _TAG.fullmatch(line)
        if m and m.group(1) != "940":
            fields.append([m.group(1), m.group(2), number])
            in_banner = False
        elif line.strip() == "-" or line.startswith("-}"):
            in_banner = True  # end of a statement; bank banners may follow
        elif not line.strip() or line.startswith("{") or in_banner:
            continue  # blank lines, SWIFT envelope blocks, "940"/BIC banners
        else:
            fields[-1][1] += "\n" + line
    return [tuple(f) for f in fields]


def _validate(tag: str, value: str, where: str) -> None:
    """Check a tag's value against its SWIFT layout before the library sees it."""
    first = value.split("\n", 1)[0]
    if tag == "61":
        m = _FIELD_61.fullmatch(value)
        if not m:
            raise StatementError(f"bad :61: statement line {first!r}", where)
        _check_date(m.group("date"), where)
    elif tag in _BALANCE_TAGS:
        m = _BALANCE.fullmatch(first)
        if not m:
            raise StatementError(f"bad :{tag}: balance {first!r}", where)
        _check_date(m.group("date"), where)
    elif tag == "34F" and not _FLOOR.fullmatch(first):
        raise StatementError(f"bad :34F: floor limit {first!r}", where)
    elif tag in ("90D", "90C") and not _SUM.fullmatch(first):
        raise StatementError(f"bad :{tag}: sum of entries {first!r}", where)
    elif tag == "13D" and not _DATETIME.fullmatch(first):
        raise StatementError(f"bad :13D: date-time {first!r}", where)


#: The SEPA keywords of German remittance text ("EREF+..."), as the DK
#: (Deutsche Kreditwirtschaft) format writes them.
_SEPA_KEYWORD = re.compile(r"(EREF|KREF|MREF|CRED|DEBT|COAM|OAMT|SVWZ|ABWA|ABWE|IBAN|BIC)\+")
#: The codes of Dutch (and SWIFT-structured) ``:86:`` text: /CODE/value.
_SLASH_CODES = (
    "EREF NAME REMI IBAN CNTP ORDP BENM ID CSID MARF TRTP ADDR BIC RTRN SVCL ULTC ULTD PREF OCMT CHGS EXCH ISDT"
).split()
_SLASH_CODE = re.compile(r"/(" + "|".join(_SLASH_CODES) + r")/")


def _structured_details(details: str) -> dict:
    """Counterparty, IBAN, end-to-end id and remittance from ``:86:`` text."""
    flat = details.replace("\n", "")
    if re.match(r"^\d{3}\?", flat) or flat.startswith("?"):
        return _german_details(flat)
    if _SLASH_CODE.search(flat):
        return _slash_details(flat)
    return {"name": "", "account": "", "e2e": "", "remittance": _without_fx_codes(details)}


#: The width of a German ``:86:`` subfield.
_SUBFIELD_WIDTH = 27


def _german_details(flat: str) -> dict:
    """The German "Mehrzweckfeld": ``?00`` posting text, ``?20``..``?29`` and
    ``?60``..``?63`` remittance, ``?30`` BIC, ``?31`` IBAN, ``?32``/``?33`` name.

    A full subfield (27 characters) was cut wherever the width fell, mid-word
    included, so it joins the next one directly; a shorter one ended a line of
    text, so a space follows it ("Miete November" + "Wohnung 3").
    """
    parts: dict[str, list[str]] = {}
    for code, text in re.findall(r"\?(\d\d)([^?]*)", flat):
        parts.setdefault(code, []).append(text)

    def joined(*codes: int) -> str:
        pieces = [piece for c in codes for piece in parts.get(f"{c:02d}", [])]
        return "".join(p + ("" if len(p) >= _SUBFIELD_WIDTH else " ") for p in pieces)

    remit = joined(*range(20, 30), *range(60, 64))
    sepa = _sepa_keywords(remit)
    e2e = sepa.get("EREF", "")
    name = clean(joined(32, 33)) or sepa.get("ABWA", "")
    if sepa:
        # The remittance is SVWZ+, and free text around the identifiers.
        remittance = clean(" ".join(p for p in (sepa.get("", ""), sepa.get("SVWZ", "")) if p))
    else:
        remittance = clean(remit)
    return {
        "name": name,
        "account": clean(joined(31)),
        "e2e": "" if e2e.upper() == "NOTPROVIDED" else e2e,
        "remittance": remittance or clean(joined(0)),
    }


#: Keywords whose value is one identifier: words after it are free text.
_SEPA_IDENTIFIERS = {"EREF", "KREF", "MREF", "CRED", "DEBT", "IBAN", "BIC"}


def _sepa_keywords(remit: str) -> dict[str, str]:
    """``{"EREF": "...", "SVWZ": "...", "": free text}``; empty without keywords.

    Free text is what stands before the first keyword or after an
    identifier's value ("EREF+X Miete" when a bank puts no SVWZ+).
    """
    matches = list(_SEPA_KEYWORD.finditer(remit))
    if not matches:
        return {}
    out: dict[str, str] = {}
    free = [remit[: matches[0].start()]]
    for m, following in zip(matches, [*matches[1:], None], strict=True):
        value = clean(remit[m.end() : following.start() if following else len(remit)])
        if m.group(1) in _SEPA_IDENTIFIERS:
            value, _, rest = value.partition(" ")
            free.append(rest)
        out.setdefault(m.group(1), value)
    out[""] = clean(" ".join(free))
    return out


def _slash_details(flat: str) -> dict:
    """Dutch banks (ING, Rabobank, ABN AMRO SEPA) and SWIFT's structured
    ``:86:``: ``/CODE/value/CODE/value``; a party is ``/NAME/`` (or the
    ``/ORDP//NAME/`` or ``/BENM//NAME/`` group)."""
    tokens = _SLASH_CODE.split("/" + flat)
    pairs: dict[str, str] = {}
    for code, value in zip(tokens[1::2], tokens[2::2], strict=True):
        pairs.setdefault(code, value.strip("/ "))
    e2e = pairs.get("EREF", "")
    return {
        "name": clean(pairs.get("NAME", "")),
        "account": clean(pairs.get("IBAN", "")),
        "e2e": "" if e2e.upper() in ("", "NOTPROVIDED") else e2e,
        "remittance": clean(pairs["REMI"]) if pairs.get("REMI") else _without_fx_codes(flat),
    }


_SWIFT_AMOUNT = re.compile(r"([A-Z]{3})(\d{1,15},\d*)")
_SWIFT_FX_CODES = re.compile(r"/(OCMT|CHGS|EXCH)/[^/\n]*/?")


def _without_fx_codes(text: str) -> str:
    """``text`` without its /OCMT/, /CHGS/ and /EXCH/ codes (read separately)."""
    return clean(_SWIFT_FX_CODES.sub(" ", text))


def _swift_code(text: str, code: str) -> str | None:
    """The value of ``/CODE/value/`` in ``text`` (None when absent)."""
    m = re.search(rf"/{code}/([^/\n]*)", text)
    return m.group(1).strip() if m else None


def _swift_amount(text: str, code: str, where: str) -> tuple[str, Decimal] | None:
    """``/OCMT/USD1000,00/`` -> ("USD", 1000.00); a malformed one is an error."""
    value = _swift_code(text, code)
    if value is None:
        return None
    m = _SWIFT_AMOUNT.fullmatch(value)
    if not m:
        raise StatementError(
            f"bad /{code}/ amount {value!r} (expected a currency and an amount, e.g. USD1000,00)", where
        )
    return m.group(1), parse_localized_decimal(m.group(2), ",", where, f"/{code}/ amount")


def _fill_instructed(line: StatementLine, text: str, where: str) -> None:
    """The original amount (``/OCMT/``) and the rate, from the ``:61:``
    supplementary details and ``:86:`` text in ``text``.

    The original amount carries the line's sign, and is kept when it is in
    another currency, or in the same one but different (charges deducted).
    The rate is ``/EXCH/`` when the bank gives one (its direction is not
    standard, so the one that turns the original amount into the booked one
    is taken); otherwise it is derived as what the original amount was worth
    before charges in the booked currency: (booked + charges) / original for
    a credit, (booked − charges) / original for a debit, to ten decimals.
    """
    original = _swift_amount(text, "OCMT", where)
    charges = _swift_amount(text, "CHGS", where)
    exch_text = _swift_code(text, "EXCH")
    exch = parse_rate(exch_text, where + " /EXCH/") if exch_text is not None else None
    if original is None:
        return
    currency, value = original
    booked = abs(line.amount)
    if currency == line.currency and value == booked:
        return
    line.instructed_currency = currency
    line.instructed_amount = value if line.amount >= 0 else -value
    if currency == line.currency or value == 0:
        return
    if exch is not None:
        line.exchange_rate = orient_rate(exch, value, line.amount)
        return
    fee = charges[1] if charges and charges[0] == line.currency else Decimal(0)
    gross = booked + fee if line.amount >= 0 else booked - fee
    line.exchange_rate = rate_between(gross, value) if gross > 0 else None


class Mt940Importer(StatementImporter):
    format_name = "mt940"
    description = "SWIFT MT940 statement and MT942 interim report"

    def detect(self, head: bytes, filename: str = "") -> bool:
        text = head.decode("latin-1")
        return bool(re.search(r"(^|\n):20:", text)) and bool(re.search(r"\n:(25|28C?|61|60F):", text))

    def parse(self, data: bytes, options: dict | None = None) -> list[Statement]:
        encoding = (options or {}).get("encoding")
        if encoding is None:
            # SWIFT's character set is a subset of ASCII, but bank exports
            # carry names in UTF-8 or Latin-1: try UTF-8, which rarely
            # decodes Latin-1 text by accident, then fall back.
            try:
                data.decode("utf-8")
                encoding = "utf-8"
            except UnicodeDecodeError:
                encoding = "latin-1"
        text = decode_text(data, encoding)
        fields = _fields(text)
        if not fields:
            raise StatementError("no MT940 tags found", "line 1")
        # Split at every :20: (transaction reference number), one per statement.
        blocks: list[list[tuple[str, str, int]]] = []
        for field in fields:
            if field[0] == "20" or not blocks:
                blocks.append([])
            blocks[-1].append(field)
        return [self._statement(block) for block in blocks]

    def _statement(self, block: list[tuple[str, str, int]]) -> Statement:
        for tag, value, number in block:
            _validate(tag, value, f"line {number}")
        if block[0][0] != "20":
            raise StatementError("statement does not start with :20:", f"line {block[0][2]}")
        source = "\n".join(f":{tag}:{value}" for tag, value, _ in block) + "\n-"
        parsed = mt940.models.Transactions()
        try:
            parsed.parse(source)
        except Exception as exc:  # the library raises ValueError/KeyError/... on bad input
            raise StatementError(f"unreadable statement ({exc})", f"line {block[0][2]}") from None
        d = parsed.data
        stmt = Statement(
            lines=[],
            account=str(d.get("account_identification") or ""),
            statement_id=str(d.get("transaction_reference") or ""),
        )
        # A statement split over several messages has intermediate (M)
        # balances instead of final (F) ones; either checks the lines.
        opening = d.get("final_opening_balance") or d.get("intermediate_opening_balance") or d.get("opening_balance")
        closing = d.get("final_closing_balance") or d.get("intermediate_closing_balance") or d.get("closing_balance")
        if opening is not None:
            stmt.opening_balance, stmt.opening_date = opening.amount.amount, opening.date
            stmt.currency = opening.amount.currency
        if closing is not None:
            stmt.closing_balance, stmt.closing_date = closing.amount.amount, closing.date
            stmt.currency = stmt.currency or closing.amount.currency
        stmt.currency = stmt.currency or str(d.get("currency") or "")

        # Pair each library transaction with the source lines it came from.
        tx_fields: list[list[tuple[str, str, int]]] = []
        for tag, value, number in block:
            if tag == "61":
                tx_fields.append([(tag, value, number)])
            elif tag == "86" and tx_fields:
                tx_fields[-1].append((tag, value, number))
        if len(tx_fields) != len(parsed.transactions):
            raise StatementError("statement lines could not be read", f"line {block[0][2]}")
        for tx, src in zip(parsed.transactions, tx_fields, strict=True):
            stmt.lines.append(self._line(tx.data, src, stmt.currency))
        return stmt

    @staticmethod
    def _line(data: dict, src: list[tuple[str, str, int]], currency: str) -> StatementLine:
        details = "\n".join(v for t, v, _ in src if t == "86") or str(data.get("transaction_details") or "")
        info = _structured_details(details)
        amount = data["amount"].amount
        bank_ref = str(data.get("bank_reference") or "").strip()
        # The library appends what it reads from :86: (a German KREF+) to the
        # :61: customer reference; only the :61: one is meant here.
        customer_ref = str(data.get("customer_reference") or "").split("\n", 1)[0].strip()
        # :61: "//" bank reference is the bank's own; NONREF means none.
        if bank_ref.upper() == "NONREF":
            bank_ref = ""
        remittance = info["remittance"]
        if customer_ref and customer_ref.upper() != "NONREF" and customer_ref not in remittance:
            remittance = (remittance + " " + customer_ref).strip()
        entry_date = data.get("entry_date") or data.get("date")
        line = StatementLine(
            booking_date=_as_date(entry_date),
            value_date=_as_date(data.get("date")),
            amount=amount,
            currency=data["amount"].currency or currency,
            counterparty_name=info["name"] or _without_fx_codes(str(data.get("extra_details") or "")),
            counterparty_account=info["account"],
            remittance=remittance,
            end_to_end_id=info["e2e"],
            bank_reference=bank_ref,
            raw="\n".join(f":{t}:{v}" for t, v, _ in src),
            location=f"line {src[0][2]}",
        )
        supplementary = src[0][1].split("\n", 1)[1] if "\n" in src[0][1] else ""
        _fill_instructed(line, supplementary + "\n" + details.replace("\n", ""), line.location)
        return line


def _as_date(value):
    """``mt940.models.Date`` is a ``datetime.date`` subclass; return a plain date."""
    if value is None:
        return None
    return dt.date(value.year, value.month, value.day)
