"""OFX/QFX statements: 1.x (SGML, leaf tags left open) and 2.x (XML).

One small tag reader handles both: a start tag followed by text is a leaf
(its closing tag is optional, as SGML allows), a start tag followed by
another tag opens an aggregate, and a closing tag must close an open
aggregate. Written here rather than taken from ofxtools, which is GPLv3.
"""

from __future__ import annotations

import datetime as dt
import html
import re
from dataclasses import dataclass, field
from decimal import Decimal

from tierd.core.registry import Statement, StatementError, StatementImporter, StatementLine

from .base import clean, decode_text, reject_xml_declarations

_TOKEN = re.compile(r"<(/?)([A-Za-z0-9_.]+)>([^<]*)")
_OFX_DATE = re.compile(r"(\d{4})(\d{2})(\d{2})(\d{6}(\.\d+)?)?(\[[^\]]*\])?")
_AMOUNT = re.compile(r"[+-]?(\d+([.,]\d*)?|[.,]\d+)")


@dataclass
class Node:
    """One OFX element: an aggregate (children) or a leaf (text)."""

    tag: str
    line: int
    text: str | None = None
    children: list[Node] = field(default_factory=list)

    def find(self, path: str) -> Node | None:
        node: Node | None = self
        for part in path.split("/"):
            node = next((c for c in node.children if c.tag == part), None) if node else None
        return node

    def findall(self, tag: str) -> list[Node]:
        return [c for c in self.children if c.tag == tag]

    def iter(self, tag: str):
        for child in self.children:
            if child.tag == tag:
                yield child
            yield from child.iter(tag)

    def value(self, path: str) -> str:
        node = self.find(path)
        return (node.text or "").strip() if node is not None else ""


def _encoding(data: bytes) -> str:
    """The charset an OFX header or XML declaration names (default UTF-8)."""
    head = data[:1024].decode("latin-1")
    m = re.search(r'encoding="([^"]+)"', head)
    if m:
        return m.group(1)
    if re.search(r"ENCODING:\s*UTF-8", head, re.I):
        return "utf-8"
    m = re.search(r"CHARSET:\s*([\w-]+)", head)
    if m and m.group(1).isdigit():
        return "cp" + m.group(1)  # OFX 1.x names Windows code pages by number: 1252
    if m and m.group(1).upper() not in ("NONE", "USASCII"):
        return m.group(1)  # e.g. ISO-8859-1
    return "utf-8"


def parse_tree(text: str) -> Node:
    """Read the ``<OFX>`` element of an OFX document into a :class:`Node` tree."""
    start = text.find("<OFX>")
    if start < 0:
        raise StatementError("no <OFX> element", "line 1")
    body = re.sub(r"<!--.*?-->|<\?.*?\?>", lambda m: "\n" * m.group(0).count("\n"), text[start:], flags=re.S)
    line_base = text.count("\n", 0, start) + 1
    root = Node("ROOT", 0)
    stack = [root]
    pos = 0
    while pos < len(body):
        m = _TOKEN.match(body, pos)
        if not m:
            if body[pos:].strip():
                line = line_base + body.count("\n", 0, pos)
                raise StatementError(f"unreadable markup {body[pos : pos + 20]!r}", f"line {line}")
            break
        closing, tag, text_after = m.group(1), m.group(2).upper(), m.group(3)
        line = line_base + body.count("\n", 0, m.start())
        if closing:
            if stack[-1].children and stack[-1].children[-1].tag == tag and stack[-1].children[-1].text is not None:
                pass  # the optional end tag of the leaf just read
            elif any(n.tag == tag for n in stack[1:]):
                # Closing an aggregate also closes elements left open inside it
                # (SGML allows that for leaves), but never a required aggregate.
                while stack[-1].tag != tag:
                    left_open = stack.pop()
                    if left_open.tag in _AGGREGATES_THAT_MUST_CLOSE:
                        raise StatementError(
                            f"<{left_open.tag}> is not closed before </{tag}>", f"line {left_open.line}"
                        )
                stack.pop()
            else:
                raise StatementError(f"</{tag}> closes nothing that is open", f"line {line}")
        elif text_after.strip():
            stack[-1].children.append(Node(tag, line, html.unescape(text_after.strip())))
        else:
            node = Node(tag, line)
            stack[-1].children.append(node)
            stack.append(node)
        pos = m.end()
    if len(stack) > 1:
        open_tags = [n for n in stack[1:] if n.tag in _AGGREGATES_THAT_MUST_CLOSE]
        if open_tags:
            raise StatementError(
                f"<{open_tags[-1].tag}> is never closed (truncated file?)", f"line {open_tags[-1].line}"
            )
    ofx = root.find("OFX")
    if ofx is None:
        raise StatementError("no <OFX> element", "line 1")
    return ofx


#: Aggregates whose end tag is required by every OFX version; a missing one
#: means the file was cut short.
_AGGREGATES_THAT_MUST_CLOSE = {"OFX", "STMTRS", "CCSTMTRS", "BANKTRANLIST", "STMTTRN"}


def parse_ofx_date(text: str, where: str) -> dt.date:
    m = _OFX_DATE.fullmatch(text.strip())
    if not m:
        raise StatementError(f"bad date {text.strip()!r}", where)
    try:
        return dt.date(int(m.group(1)), int(m.group(2)), int(m.group(3)))
    except ValueError:
        raise StatementError(f"bad date {text.strip()!r}", where) from None


def parse_ofx_amount(text: str, where: str) -> Decimal:
    value = text.strip()
    if not _AMOUNT.fullmatch(value):
        raise StatementError(f"bad amount {value!r}", where)
    # OFX allows a comma as the decimal mark (section 3.2.9.1 of the spec).
    return Decimal(value.replace(",", "."))


class OfxImporter(StatementImporter):
    format_name = "ofx"
    description = "OFX/QFX statement, 1.x SGML and 2.x XML (bank and credit card)"

    def detect(self, head: bytes, filename: str = "") -> bool:
        upper = head.upper()
        return b"OFXHEADER" in upper or b"<OFX>" in upper

    def parse(self, data: bytes, options: dict | None = None) -> list[Statement]:
        reject_xml_declarations(data)
        text = decode_text(data, _encoding(data))
        ofx = parse_tree(text)
        statements = []
        for rs in list(ofx.iter("STMTRS")) + list(ofx.iter("CCSTMTRS")):
            statements.append(self._statement(rs))
        if not statements:
            raise StatementError("no STMTRS or CCSTMTRS statement", f"line {ofx.line}")
        return statements

    def _statement(self, rs: Node) -> Statement:
        currency = rs.value("CURDEF")
        account = rs.value("BANKACCTFROM/ACCTID") or rs.value("CCACCTFROM/ACCTID")
        stmt = Statement(lines=[], account=account, currency=currency)
        tranlist = rs.find("BANKTRANLIST")
        if tranlist is not None:
            stmt.statement_id = f"{tranlist.value('DTSTART')}-{tranlist.value('DTEND')}"
            for trn in tranlist.findall("STMTTRN"):
                stmt.lines.append(self._line(trn, currency))
        ledger = rs.find("LEDGERBAL")
        if ledger is not None and ledger.value("BALAMT"):
            where = f"line {ledger.line} <LEDGERBAL>"
            stmt.closing_balance = parse_ofx_amount(ledger.value("BALAMT"), where)
            if ledger.value("DTASOF"):
                stmt.closing_date = parse_ofx_date(ledger.value("DTASOF"), where)
        # OFX carries no opening balance, so the lines cannot be checked
        # against the balances: only the closing balance is kept.
        return stmt

    @staticmethod
    def _line(trn: Node, currency: str) -> StatementLine:
        where = f"line {trn.line} <STMTTRN>"
        posted = trn.value("DTPOSTED")
        if not posted:
            raise StatementError("transaction without DTPOSTED", where)
        amount_text = trn.value("TRNAMT")
        if not amount_text:
            raise StatementError("transaction without TRNAMT", where)
        user_date = trn.value("DTUSER")
        memo = trn.value("MEMO")
        name = trn.value("NAME") or trn.value("PAYEE/NAME")
        checknum = trn.value("CHECKNUM")
        remittance = clean(
            " ".join(p for p in (memo, f"check {checknum}" if checknum and checknum != "0" else "") if p)
        )
        return StatementLine(
            booking_date=parse_ofx_date(posted, where + " DTPOSTED"),
            value_date=parse_ofx_date(user_date, where + " DTUSER") if user_date else None,
            amount=parse_ofx_amount(amount_text, where + " TRNAMT"),
            currency=trn.value("CURRENCY/CURSYM") or trn.value("ORIGCURRENCY/CURSYM") or currency,
            counterparty_name=clean(name),
            counterparty_account=trn.value("BANKACCTTO/ACCTID"),
            remittance=remittance,
            end_to_end_id=trn.value("REFNUM"),
            bank_reference=trn.value("FITID"),
            raw=_raw(trn),
            location=where,
        )


def _raw(node: Node) -> str:
    """The element written back as OFX 2 XML (what the bank said, readably)."""
    if node.text is not None:
        return f"<{node.tag}>{html.escape(node.text, quote=False)}</{node.tag}>"
    return f"<{node.tag}>" + "".join(_raw(c) for c in node.children) + f"</{node.tag}>"
