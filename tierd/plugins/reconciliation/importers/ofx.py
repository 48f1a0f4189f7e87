"""OFX/QFX statements: 1.x (SGML, leaf tags left open) and 2.x (XML).

One small tag reader handles both: a start tag followed by text is a leaf
(its closing tag is optional, as SGML allows), a start tag followed by
another tag opens an aggregate, and a closing tag must close an open
aggregate. An element left open with nothing in it (``<MEMO>`` right before
the next tag) was an empty leaf: when its parent closes, whatever was read
into it goes back to the parent. Text may hold ``<![CDATA[...]]>`` sections
(some banks wrap every name in one); their content is taken as it is, markup
and ``&`` included. Written here rather than taken from ofxtools, which is
GPLv3.

Currencies (OFX section 5.2): ``CURDEF`` is the statement's currency. A
transaction may carry ``CURRENCY`` (its amount is in ``CURSYM``) or
``ORIGCURRENCY`` (its amount is already in ``CURDEF``, converted from
``CURSYM``); in both, ``CURRATE`` is "the ratio of CURDEF currency to CURSYM
currency", read here, as OFX writers do, as CURDEF units per one CURSYM unit:
``amount in CURDEF = amount in CURSYM × CURRATE``. That is the direction of
:attr:`StatementLine.exchange_rate`, so the rate is kept as the bank gave it.
"""

from __future__ import annotations

import datetime as dt
import html
import re
from dataclasses import dataclass, field
from decimal import Decimal

from tierd.core.registry import Statement, StatementError, StatementImporter, StatementLine

from .base import clean, decode_text, parse_rate, reject_xml_declarations, tidy, to_minor_units

_TAG = re.compile(r"<(/?)([A-Za-z0-9_.]+)>")
_CDATA_OPEN, _CDATA_CLOSE = "<![CDATA[", "]]>"
#: Comments and processing instructions are dropped (line breaks kept, for
#: line numbers); CDATA sections are matched first so that a "<!--" inside
#: one stays text.
_IGNORED = re.compile(r"<!\[CDATA\[.*?\]\]>|<!--.*?-->|<\?.*?\?>", re.S)
_OFX_START = re.compile(r"<OFX>", re.I)
_SPACE = re.compile(r"\s*")
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
    m = re.search(r"CHARSET:\s*([\w-]+)", head, re.I)
    if m and m.group(1).isdigit():
        return "cp" + m.group(1)  # OFX 1.x names Windows code pages by number: 1252
    if m and m.group(1).upper() not in ("NONE", "USASCII"):
        return m.group(1)  # e.g. ISO-8859-1
    return "utf-8"


class _Reader:
    """Walks the body of an OFX document, counting lines as it goes."""

    def __init__(self, body: str, first_line: int) -> None:
        self.body = body
        self.pos = 0
        self._line = first_line
        self._line_pos = 0

    def line(self, pos: int | None = None) -> int:
        """The line number of ``pos`` (default: the current position); positions only grow."""
        pos = self.pos if pos is None else pos
        self._line += self.body.count("\n", self._line_pos, pos)
        self._line_pos = pos
        return self._line

    def text(self) -> str | None:
        """The text after a start tag, CDATA sections included, up to the next tag.

        None when there is no text (only whitespace): the tag opens an aggregate.
        """
        parts: list[str] = []
        has_cdata = False
        while True:
            lt = self.body.find("<", self.pos)
            end = len(self.body) if lt < 0 else lt
            parts.append(html.unescape(self.body[self.pos : end]))
            self.pos = end
            if lt < 0 or not self.body.startswith(_CDATA_OPEN, lt):
                break
            close = self.body.find(_CDATA_CLOSE, lt)
            if close < 0:
                raise StatementError("a <![CDATA[ section is never closed (missing ]]>)", f"line {self.line(lt)}")
            parts.append(self.body[lt + len(_CDATA_OPEN) : close])
            has_cdata = True
            self.pos = close + len(_CDATA_CLOSE)
        text = "".join(parts)
        return text.strip() if has_cdata or text.strip() else None


def _hoist(node: Node, parent: Node) -> None:
    """``node`` was left open: it was an empty leaf, and what it holds is its parent's.

    It is the parent's last child, so its children go back right after it.
    """
    node.text = ""
    parent.children.extend(node.children)
    node.children = []


def parse_tree(text: str) -> Node:
    """Read the ``<OFX>`` element of an OFX document into a :class:`Node` tree."""
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    start_match = _OFX_START.search(text)
    if start_match is None:
        raise StatementError("no <OFX> element", "line 1")
    start = start_match.start()

    def keep_lines(m: re.Match) -> str:
        found = m.group(0)
        return found if found.startswith(_CDATA_OPEN) else "\n" * found.count("\n")

    reader = _Reader(_IGNORED.sub(keep_lines, text[start:]), text.count("\n", 0, start) + 1)
    body = reader.body
    root = Node("ROOT", 0)
    stack = [root]
    while True:
        reader.pos = _SPACE.match(body, reader.pos).end()  # type: ignore[union-attr]
        if reader.pos >= len(body):
            break
        m = _TAG.match(body, reader.pos)
        if not m:
            raise StatementError(f"unreadable markup {body[reader.pos : reader.pos + 20]!r}", f"line {reader.line()}")
        line = reader.line(m.start())
        reader.pos = m.end()
        tag = m.group(2).upper()
        if m.group(1):
            _close(stack, tag, line)
            reader.text()  # text after an end tag belongs to nothing; SGML readers skip it
            continue
        value = reader.text()
        node = Node(tag, line, value)
        stack[-1].children.append(node)
        if value is None:
            stack.append(node)
    open_tags = [n for n in stack[1:] if n.tag in _AGGREGATES_THAT_MUST_CLOSE]
    if open_tags:
        raise StatementError(f"<{open_tags[-1].tag}> is never closed (truncated file?)", f"line {open_tags[-1].line}")
    while len(stack) > 1:
        left_open = stack.pop()
        _hoist(left_open, stack[-1])
    ofx = root.find("OFX")
    if ofx is None:
        raise StatementError("no <OFX> element", "line 1")
    return ofx


def _close(stack: list[Node], tag: str, line: int) -> None:
    """Handle ``</tag>``: the optional end of a leaf, or the end of an open aggregate."""
    last = stack[-1].children[-1] if stack[-1].children else None
    if last is not None and last.tag == tag and last.text is not None:
        return  # the optional end tag of the leaf just read
    if not any(n.tag == tag for n in stack[1:]):
        raise StatementError(f"</{tag}> closes nothing that is open", f"line {line}")
    # Closing an aggregate also closes elements left open inside it (SGML
    # allows that for leaves), but never a required aggregate.
    while stack[-1].tag != tag:
        left_open = stack.pop()
        if left_open.tag in _AGGREGATES_THAT_MUST_CLOSE:
            raise StatementError(f"<{left_open.tag}> is not closed before </{tag}>", f"line {left_open.line}")
        _hoist(left_open, stack[-1])
    stack.pop()


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
        statements = [self._statement(rs) for rs in list(ofx.iter("STMTRS")) + list(ofx.iter("CCSTMTRS"))]
        if not statements:
            raise _no_statement(ofx)
        return statements

    def _statement(self, rs: Node) -> Statement:
        currency = rs.value("CURDEF")
        account = rs.value("BANKACCTFROM/ACCTID") or rs.value("CCACCTFROM/ACCTID")
        stmt = Statement(lines=[], account=account, currency=currency)
        tranlist = rs.find("BANKTRANLIST")
        if tranlist is not None:
            stmt.statement_id = f"{tranlist.value('DTSTART')}-{tranlist.value('DTEND')}"
            for trn in tranlist.findall("STMTTRN"):
                stmt.lines.append(self._line(trn, currency, rs))
        # Without CURDEF, the transactions' own CURRENCY names the statement's.
        stmt.currency = currency or next((ln.currency for ln in stmt.lines), "")
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
    def _line(trn: Node, curdef: str, rs: Node) -> StatementLine:
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
        line = StatementLine(
            booking_date=parse_ofx_date(posted, where + " DTPOSTED"),
            value_date=parse_ofx_date(user_date, where + " DTUSER") if user_date else None,
            amount=parse_ofx_amount(amount_text, where + " TRNAMT"),
            currency=curdef,
            counterparty_name=clean(name),
            counterparty_account=trn.value("BANKACCTTO/ACCTID") or trn.value("CCACCTTO/ACCTID"),
            remittance=remittance,
            end_to_end_id=trn.value("REFNUM"),
            bank_reference=trn.value("FITID"),
            raw=_raw(trn),
            location=where,
        )
        _apply_currency(line, trn, curdef, rs)
        return line


def _apply_currency(line: StatementLine, trn: Node, curdef: str, rs: Node) -> None:
    """Set the line's currency, and what it was converted from, from CURDEF and CURRENCY/ORIGCURRENCY.

    * ``ORIGCURRENCY``: TRNAMT is already in CURDEF; the payment was made in
      CURSYM, for ``TRNAMT / CURRATE`` (rounded to CURSYM's minor unit).
    * ``CURRENCY``: TRNAMT is in CURSYM; the account moved by
      ``TRNAMT × CURRATE`` in CURDEF, which becomes the line's amount. With no
      CURDEF (some banks leave it empty), CURSYM is simply the line's currency.
    """
    where = line.location
    currency, original = trn.find("CURRENCY"), trn.find("ORIGCURRENCY")
    if currency is not None and original is not None:
        raise StatementError("a transaction has both CURRENCY and ORIGCURRENCY; OFX allows one", where)
    aggregate = currency if currency is not None else original
    if aggregate is None:
        if not curdef:
            raise StatementError(
                f"no currency: <CURDEF> of the statement at line {rs.line} is empty and the transaction has "
                "no <CURRENCY>",
                where,
            )
        return
    agg_where = f"{where} <{aggregate.tag}>"
    symbol = aggregate.value("CURSYM").upper()
    if not re.fullmatch(r"[A-Z]{3}", symbol):
        raise StatementError(f"bad or missing CURSYM {symbol!r} (a three-letter ISO 4217 code)", agg_where)
    if aggregate is currency and not curdef:
        line.currency = symbol
        return
    if not curdef:
        raise StatementError(
            f"no currency: <CURDEF> of the statement at line {rs.line} is empty, and ORIGCURRENCY only says "
            "what the amount was converted from",
            where,
        )
    if symbol == curdef:
        return
    rate = tidy(parse_rate(aggregate.value("CURRATE"), agg_where + " CURRATE"))
    line.exchange_rate = rate
    line.instructed_currency = symbol
    if aggregate is original:
        line.instructed_amount = to_minor_units(line.amount / rate, symbol)
    else:
        line.instructed_amount = line.amount
        line.amount = to_minor_units(line.amount * rate, curdef)


def _no_statement(ofx: Node) -> StatementError:
    """The error for a file without a statement; the bank's own error when it sent one."""
    for status in ofx.iter("STATUS"):
        code = status.value("CODE")
        if code and code != "0":
            message = status.value("MESSAGE")
            detail = f": {message}" if message else ""
            return StatementError(
                f"the bank answered with error {code}{detail}; the file holds no statement", f"line {status.line}"
            )
    return StatementError("no STMTRS or CCSTMTRS statement: the file holds no account statement", f"line {ofx.line}")


def _raw(node: Node) -> str:
    """The element written back as OFX 2 XML (what the bank said, readably)."""
    if node.text is not None:
        return f"<{node.tag}>{html.escape(node.text, quote=False)}</{node.tag}>"
    return f"<{node.tag}>" + "".join(_raw(c) for c in node.children) + f"</{node.tag}>"
