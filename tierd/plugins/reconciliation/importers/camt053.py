"""ISO 20022 CAMT.053 (bank-to-customer statement), versions 001.02 and later.

The versions differ in small ways this reader absorbs by looking for each
value in every place it has lived:

* a party's name is ``Dbtr/Nm`` up to v5 and ``Dbtr/Pty/Nm`` from v6;
* a transaction's amount is ``AmtDtls/TxAmt/Amt`` in v2 and ``Amt`` from v3;
* an entry's status is text in v2 (``<Sts>BOOK</Sts>``) and ``Sts/Cd`` later.

A batch entry (one ``Ntry`` with several ``TxDtls``) is split into one line
per transaction, so that each customer's payment can be matched on its own.

A payment made in another currency than the account's says so in
``AmtDtls``: ``InstdAmt`` (what the payer ordered, before charges), ``TxAmt``
and ``CntrValAmt``, each an ``Amt`` with an optional ``CcyXchg``. The first of
them in another currency than the booked one is the instructed amount; the
first ``CcyXchg`` gives the bank's rate (see :func:`_rate_per_instructed_unit`
for its direction). A structured creditor reference (``Strd/CdtrRefInf/Ref``,
e.g. an ISO 11649 "RF" reference) joins the remittance without its spaces, so
that the matcher finds it as one reference.
"""

from __future__ import annotations

import datetime as dt
import re
import xml.etree.ElementTree as ET
from decimal import Decimal

from tierd.core.registry import Statement, StatementError, StatementImporter, StatementLine

from .base import (
    clean,
    invert_rate,
    orient_rate,
    parse_decimal,
    parse_iso_date,
    parse_rate,
    rate_between,
    reject_xml_declarations,
    tidy,
)

_NAMESPACE = re.compile(rb"urn:iso:std:iso:20022:tech:xsd:camt\.053\.001\.(\d\d)")
#: Versions this reader was written against; later ones are read the same way.
MIN_VERSION = 2

OPENING_CODES = ("OPBD", "PRCD")
CLOSING_CODES = ("CLBD",)


def _strip_namespaces(root: ET.Element) -> None:
    """Drop ``{urn:...}`` prefixes so paths read the same in every version."""
    for el in root.iter():
        if isinstance(el.tag, str) and "}" in el.tag:
            el.tag = el.tag.split("}", 1)[1]


def _text(el: ET.Element | None, path: str) -> str:
    """Stripped text at ``path`` under ``el``, or "" when absent."""
    if el is None:
        return ""
    found = el.find(path)
    return (found.text or "").strip() if found is not None else ""


def _first(el: ET.Element | None, *paths: str) -> str:
    for path in paths:
        value = _text(el, path)
        if value:
            return value
    return ""


def _date(el: ET.Element | None, where: str) -> dt.date | None:
    """A ``Dt`` or ``DtTm`` child (both appear for booking and value dates)."""
    if el is None:
        return None
    value = _first(el, "Dt", "DtTm")
    return parse_iso_date(value, where) if value else None


def _signed(amount: Decimal, indicator: str, where: str) -> Decimal:
    if indicator == "CRDT":
        return amount
    if indicator == "DBIT":
        return -amount
    raise StatementError(f"bad CdtDbtInd {indicator!r}", where)


def _amount(el: ET.Element | None, where: str) -> tuple[Decimal, str] | None:
    """``(amount, currency)`` of an ``Amt`` element, None when absent."""
    if el is None:
        return None
    return parse_decimal(el.text or "", where), el.get("Ccy", "")


class Camt053Importer(StatementImporter):
    format_name = "camt053"
    description = "ISO 20022 CAMT.053 bank-to-customer statement (XML, 001.02 and later)"

    def detect(self, head: bytes, filename: str = "") -> bool:
        return bool(_NAMESPACE.search(head)) or b"<BkToCstmrStmt" in head

    def parse(self, data: bytes, options: dict | None = None) -> list[Statement]:
        reject_xml_declarations(data)
        match = _NAMESPACE.search(data[:4096])
        if match and int(match.group(1)) < MIN_VERSION:
            raise StatementError(f"camt.053.001.{match.group(1).decode()} is not supported", "Document")
        try:
            root = ET.fromstring(data)
        except ET.ParseError as exc:
            line, column = exc.position
            raise StatementError(f"malformed XML ({exc})", f"line {line}, column {column}") from None
        _strip_namespaces(root)
        report = root if root.tag == "BkToCstmrStmt" else root.find("BkToCstmrStmt")
        if report is None:
            raise StatementError("no BkToCstmrStmt element: not a CAMT.053 statement", root.tag)
        stmts = report.findall("Stmt")
        if not stmts:
            raise StatementError("no Stmt element", "BkToCstmrStmt")
        return [self._statement(stmt, f"Stmt[{i}]") for i, stmt in enumerate(stmts, 1)]

    # --- one statement -------------------------------------------------------

    def _statement(self, stmt: ET.Element, where: str) -> Statement:
        account = _first(stmt, "Acct/Id/IBAN", "Acct/Id/Othr/Id")
        # Acct/Ccy is optional; the entries (or balances) then say the currency.
        first_amt = stmt.find("Ntry/Amt") if stmt.find("Ntry/Amt") is not None else stmt.find("Bal/Amt")
        currency = _text(stmt, "Acct/Ccy") or (first_amt.get("Ccy", "") if first_amt is not None else "")
        result = Statement(lines=[], account=account, currency=currency, statement_id=_text(stmt, "Id"))
        self._balances(stmt, result, where)
        for n, entry in enumerate(stmt.findall("Ntry"), 1):
            result.lines.extend(self._entry(entry, f"{where}/Ntry[{n}]", currency))
        return result

    def _balances(self, stmt: ET.Element, result: Statement, where: str) -> None:
        for n, bal in enumerate(stmt.findall("Bal"), 1):
            bwhere = f"{where}/Bal[{n}]"
            code = _first(bal, "Tp/CdOrPrtry/Cd", "Tp/CdOrPrtry/Prtry")
            amt = _amount(bal.find("Amt"), bwhere + "/Amt")
            if amt is None:
                raise StatementError("balance without Amt", bwhere)
            value = _signed(amt[0], _text(bal, "CdtDbtInd"), bwhere + "/CdtDbtInd")
            # A balance in another currency than the account cannot be checked
            # against the lines; it is ignored rather than reported as wrong.
            if result.currency and amt[1] and amt[1] != result.currency:
                continue
            if code in OPENING_CODES and result.opening_balance is None:
                result.opening_balance = value
                result.opening_date = _date(bal.find("Dt"), bwhere + "/Dt")
            elif code in CLOSING_CODES and result.closing_balance is None:
                result.closing_balance = value
                result.closing_date = _date(bal.find("Dt"), bwhere + "/Dt")

    # --- one entry, possibly a batch -----------------------------------------

    def _entry(self, entry: ET.Element, where: str, stmt_currency: str) -> list[StatementLine]:
        amt = _amount(entry.find("Amt"), where + "/Amt")
        if amt is None:
            raise StatementError("entry without Amt", where)
        indicator = _text(entry, "CdtDbtInd")
        # A reversal (RvslInd) is already expressed by its CdtDbtInd: a reversed
        # credit is booked as a debit, so nothing is flipped here.
        amount = _signed(amt[0], indicator, where + "/CdtDbtInd")
        currency = amt[1] or stmt_currency
        booking = _date(entry.find("BookgDt"), where + "/BookgDt")
        value = _date(entry.find("ValDt"), where + "/ValDt")
        if booking is None:
            booking = value
        if booking is None:
            raise StatementError("entry without BookgDt or ValDt", where)
        status = _first(entry, "Sts/Cd", "Sts")
        if status and status != "BOOK":
            # Pending and informational entries are not on the account yet
            # (the closing balance leaves them out too): not statement lines.
            return []
        entry_ref = _first(entry, "AcctSvcrRef", "NtryRef")
        info = clean(_text(entry, "AddtlNtryInf"))
        txs = [tx for details in entry.findall("NtryDtls") for tx in details.findall("TxDtls")]

        if len(txs) <= 1:
            line = StatementLine(
                booking_date=booking,
                value_date=value,
                currency=currency,
                amount=amount,
                bank_reference=entry_ref,
                raw=ET.tostring(entry, encoding="unicode"),
                location=where,
            )
            details, dwhere = entry.find("AmtDtls"), where + "/AmtDtls"
            if txs:
                self._fill_from_tx(line, txs[0], amount > 0)
                line.bank_reference = entry_ref or _text(txs[0], "Refs/AcctSvcrRef")
                if txs[0].find("AmtDtls") is not None:
                    details, dwhere = txs[0].find("AmtDtls"), where + "/NtryDtls/TxDtls[1]/AmtDtls"
            _fill_instructed(line, details, dwhere)
            if not line.remittance:
                line.remittance = info
            return [line]

        lines = []
        for i, tx in enumerate(txs, 1):
            twhere = f"{where}/NtryDtls/TxDtls[{i}]"
            tamt = _booked_amount(tx, twhere, currency)
            tind = _text(tx, "CdtDbtInd") or indicator
            tx_ref = _text(tx, "Refs/AcctSvcrRef")
            line = StatementLine(
                booking_date=booking,
                value_date=value,
                currency=currency,
                amount=_signed(tamt[0], tind, twhere + "/CdtDbtInd"),
                # Split lines share the entry's reference, so the index keeps
                # them apart (and stable when the same file comes again).
                bank_reference=tx_ref or (f"{entry_ref}/{i}" if entry_ref else ""),
                raw=ET.tostring(tx, encoding="unicode"),
                location=twhere,
            )
            self._fill_from_tx(line, tx, line.amount > 0)
            _fill_instructed(line, tx.find("AmtDtls"), twhere + "/AmtDtls")
            lines.append(line)
        total = sum((ln.amount for ln in lines), Decimal(0))
        if total != amount:
            raise StatementError(f"batch transactions add up to {total}, the entry says {amount}", where)
        return lines

    @staticmethod
    def _fill_from_tx(line: StatementLine, tx: ET.Element, credit: bool) -> None:
        """Counterparty, references and remittance of one ``TxDtls``."""
        # On a credit the other party is the debtor; on a debit, the creditor.
        party, acct = ("Dbtr", "DbtrAcct") if credit else ("Cdtr", "CdtrAcct")
        parties = tx.find("RltdPties")
        line.counterparty_name = clean(
            _first(parties, f"{party}/Nm", f"{party}/Pty/Nm", f"Ultmt{party}/Nm", f"Ultmt{party}/Pty/Nm")
        )
        line.counterparty_account = _first(parties, f"{acct}/Id/IBAN", f"{acct}/Id/Othr/Id")
        e2e = _text(tx, "Refs/EndToEndId")
        line.end_to_end_id = "" if e2e.upper() == "NOTPROVIDED" else e2e
        rmt = tx.find("RmtInf")
        parts = []
        if rmt is not None:
            parts += [clean(u.text) for u in rmt.findall("Ustrd") if u.text]
            # A structured reference has no meaningful spaces ("RF18 5390 0754 7034" is printed form).
            parts += ["".join(r.text.split()) for r in rmt.findall("Strd/CdtrRefInf/Ref") if r.text]
            parts += [clean(r.text) for r in rmt.findall("Strd/RfrdDocInf/Nb") if r.text]
        extra = clean(_text(tx, "AddtlTxInf"))
        if extra:
            parts.append(extra)
        line.remittance = " ".join(p for p in parts if p)


def _booked_amount(tx: ET.Element, where: str, currency: str) -> tuple[Decimal, str]:
    """A batch transaction's amount in the entry's currency.

    ``TxDtls/Amt`` (v3 and later) or ``AmtDtls/TxAmt/Amt`` (v2) normally;
    when the transaction was in another currency, the one of ``Amt``,
    ``TxAmt`` and ``CntrValAmt`` that is in the entry's currency.
    """
    found = []
    for path in ("Amt", "AmtDtls/TxAmt/Amt", "AmtDtls/CntrValAmt/Amt"):
        amt = _amount(tx.find(path), f"{where}/{path}")
        if amt is not None:
            found.append(amt)
            if not currency or amt[1] in ("", currency):
                return amt
    if not found:
        raise StatementError("batch transaction without an amount", where)
    raise StatementError(f"batch transaction without an amount in {currency} (only {found[0][1]})", where)


#: Where AmtDtls may say what was instructed, most telling first.
_INSTRUCTED_PATHS = ("InstdAmt", "TxAmt", "CntrValAmt")


def _fill_instructed(line: StatementLine, details: ET.Element | None, where: str) -> None:
    """The instructed amount and currency, and the bank's rate, from ``AmtDtls``.

    The instructed amount is recorded when it is in another currency than the
    booked one, or in the same currency but different (charges deducted); it
    carries the line's sign. The rate is the first ``CcyXchg``'s; without
    one, the counter value in the booked currency (``TxAmt``/``CntrValAmt``)
    over the instructed amount.
    """
    if details is None:
        return
    amounts = []
    for path in _INSTRUCTED_PATHS:
        holder = details.find(path)
        amt = _amount(holder.find("Amt") if holder is not None else None, f"{where}/{path}/Amt")
        if holder is not None and amt is not None:
            amounts.append((path, holder, amt))
    foreign = [a for a in amounts if a[2][1] and a[2][1] != line.currency]
    chosen = foreign[0] if foreign else next((a for a in amounts if a[0] == "InstdAmt"), None)
    if chosen is None:
        return
    value, currency = chosen[2]
    currency = currency or line.currency
    if currency == line.currency and value == abs(line.amount):
        return  # the booked amount itself: nothing was converted or deducted
    line.instructed_amount = value if line.amount >= 0 else -value
    line.instructed_currency = currency
    if currency == line.currency:
        return
    for path, holder, _ in amounts:
        xchg = holder.find("CcyXchg")
        if xchg is not None:
            line.exchange_rate = _rate_per_instructed_unit(
                xchg, f"{where}/{path}/CcyXchg", currency, line.currency, value, line.amount
            )
            return
    # No CcyXchg: the counter value in the booked currency (before charges)
    # over the instructed amount is the rate the bank applied.
    counter = next((a[2][0] for a in amounts if a[0] != "InstdAmt" and a[2][1] == line.currency), None)
    if counter and value:
        line.exchange_rate = rate_between(counter, value)


def _rate_per_instructed_unit(
    xchg: ET.Element, where: str, instructed: str, booked: str, instructed_amount: Decimal, booked_amount: Decimal
) -> Decimal | None:
    """``CcyXchg/XchgRate`` as booked currency per one unit of the instructed currency.

    ISO 20022 defines ``XchgRate`` as "the ratio between UnitCurrency and
    QuotedCurrency (ExchangeRate = UnitCurrency/QuotedCurrency)", and
    ``UnitCcy`` as the currency of "1GBP = xxxCUR" (GBP): one unit of
    ``UnitCcy`` is worth ``XchgRate`` of the other currency of the pair
    (``SrcCcy``/``TrgtCcy``). So with ``UnitCcy`` the instructed currency the
    rate is ours as it stands; with ``UnitCcy`` the booked currency it is
    inverted. Without ``UnitCcy`` banks differ (source per target or target
    per source), so the direction that turns the instructed amount into the
    booked one is taken. A rate about other currencies is not ours: None.
    """
    rate = parse_rate(_text(xchg, "XchgRate"), where + "/XchgRate")
    pair = {c for c in (_text(xchg, "SrcCcy"), _text(xchg, "TrgtCcy")) if c}
    if pair and not pair <= {instructed, booked}:
        return None
    unit = _text(xchg, "UnitCcy")
    if unit == instructed:
        return tidy(rate)
    if unit == booked:
        return invert_rate(rate)
    if unit:
        return None
    return orient_rate(rate, instructed_amount, booked_amount)
