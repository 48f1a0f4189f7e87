"""CSV exports, read through a named column mapping from the configuration.

Every bank's CSV is different, so nothing is guessed: the layout
(``reconciliation.csv_formats.NAME``) says the delimiter, the encoding, the
decimal mark, the date format, how many banner rows to skip before the header,
and which header names hold which field. Amounts come either from one signed
column (``amount``) or from two unsigned ones (``debit`` and ``credit``).
"""

from __future__ import annotations

from decimal import Decimal

from tierd.core.registry import Statement, StatementError, StatementImporter, StatementLine

from .base import CURRENCY_RE, clean, csv_rows, decode_text, parse_date_format, parse_localized_decimal, parse_rate

#: Fields a layout may map, in the order of :class:`StatementLine`.
FIELDS = (
    "booking_date",
    "value_date",
    "amount",
    "debit",
    "credit",
    "currency",
    "counterparty_name",
    "counterparty_account",
    "remittance",
    "end_to_end_id",
    "bank_reference",
    "instructed_amount",
    "instructed_currency",
    "exchange_rate",
)

DEFAULT_LAYOUT = {
    "delimiter": ",",
    "quotechar": '"',
    "encoding": "utf-8",
    "decimal": ".",
    "date_format": "%Y-%m-%d",
    "skip_rows": 0,
    "columns": {},
}


def layout_problems(layout: dict) -> list[str]:
    """What is wrong with a layout (empty when it is usable); for config checks."""
    # A validated config fills unmapped fields with None: only mapped ones count.
    cols = {k: v for k, v in (layout.get("columns") or {}).items() if v}
    problems = [f"unknown field {name!r} in columns" for name in cols if name not in FIELDS]
    if "booking_date" not in cols:
        problems.append("columns.booking_date is required")
    has_amount, has_split = "amount" in cols, ("debit" in cols or "credit" in cols)
    if has_amount == has_split:
        problems.append("map either columns.amount or columns.debit and columns.credit")
    if has_split and not ("debit" in cols and "credit" in cols):
        problems.append("columns.debit and columns.credit go together")
    if ("instructed_amount" in cols) != ("instructed_currency" in cols):
        problems.append("columns.instructed_amount and columns.instructed_currency go together")
    if "exchange_rate" in cols and "instructed_amount" not in cols:
        problems.append("columns.exchange_rate needs columns.instructed_amount")
    return problems


class CsvImporter(StatementImporter):
    format_name = "csv"
    description = "CSV export read through a configured column mapping (reconciliation.csv_formats)"

    def detect(self, head: bytes, filename: str = "") -> bool:
        # CSV has no signature: it is chosen by name, or by the account's
        # configured layout when no other format recognises the file.
        return filename.lower().endswith((".csv", ".txt")) and b"<" not in head[:200]

    def parse(self, data: bytes, options: dict | None = None) -> list[Statement]:
        options = options or {}
        layout = {**DEFAULT_LAYOUT, **(options.get("csv_format") or {})}
        problems = layout_problems(layout)
        if problems:
            raise StatementError("CSV layout: " + "; ".join(problems))
        text = decode_text(data, layout["encoding"])
        rows = csv_rows(text, layout["delimiter"], layout["quotechar"])
        skip = int(layout["skip_rows"] or 0)
        header: list[str] | None = None
        lines: list[StatementLine] = []
        default_currency = options.get("currency", "")
        for index, (number, row) in enumerate(rows):
            if index < skip or not any(cell.strip() for cell in row):
                continue
            if header is None:
                header = [h.strip() for h in row]
                positions = self._positions(layout["columns"], header, number)
                continue
            if len(row) < len(header) or any(cell.strip() for cell in row[len(header) :]):
                raise StatementError(f"{len(row)} columns, the header has {len(header)}", f"line {number}")
            lines.append(self._line(row, positions, layout, default_currency, number))
        if header is None:
            raise StatementError("no header row", f"line {skip + 1}")
        return [Statement(lines=lines, currency=default_currency)]

    @staticmethod
    def _positions(columns: dict, header: list[str], number: int) -> dict[str, int]:
        positions = {}
        for field_name, column in columns.items():
            if not column:
                continue
            if column not in header:
                raise StatementError(
                    f"column {column!r} (for {field_name}) is not in the header {header}", f"line {number}"
                )
            positions[field_name] = header.index(column)
        return positions

    @staticmethod
    def _line(row: list[str], pos: dict[str, int], layout: dict, currency: str, number: int) -> StatementLine:
        where = f"line {number}"

        def cell(name: str) -> str:
            return row[pos[name]].strip() if name in pos else ""

        dec = layout["decimal"]
        if "amount" in pos:
            amount = parse_localized_decimal(cell("amount"), dec, where + " amount")
        else:
            debit_text, credit_text = cell("debit"), cell("credit")
            debit = parse_localized_decimal(debit_text, dec, where + " debit") if debit_text else Decimal(0)
            credit = parse_localized_decimal(credit_text, dec, where + " credit") if credit_text else Decimal(0)
            if bool(debit_text) == bool(credit_text):
                # Exactly one side per row: two filled cells usually mean the
                # row was split at a wrong delimiter.
                raise StatementError("exactly one of debit and credit must have an amount", where)
            # Some banks write debits as negative numbers, others as positive:
            # a debit always lowers the balance.
            amount = credit - abs(debit)
        fmt = layout["date_format"]
        booking = parse_date_format(cell("booking_date"), fmt, where + " booking date")
        value_text = cell("value_date")
        instructed_text, rate_text = cell("instructed_amount"), cell("exchange_rate")
        instructed = (
            parse_localized_decimal(instructed_text, dec, where + " instructed amount") if instructed_text else None
        )
        if instructed is not None and instructed.copy_abs() and (instructed < 0) != (amount < 0):
            # Some exports write the instructed amount unsigned: it takes the line's sign.
            instructed = -instructed
        instructed_ccy = cell("instructed_currency").upper()
        if instructed is not None and not CURRENCY_RE.fullmatch(instructed_ccy):
            raise StatementError(f"bad instructed currency {instructed_ccy!r} (an ISO 4217 code)", where)
        return StatementLine(
            booking_date=booking,
            value_date=parse_date_format(value_text, fmt, where + " value date") if value_text else None,
            amount=amount,
            currency=cell("currency") or currency,
            counterparty_name=clean(cell("counterparty_name")),
            counterparty_account=cell("counterparty_account").replace(" ", ""),
            remittance=clean(cell("remittance")),
            end_to_end_id=cell("end_to_end_id"),
            bank_reference=cell("bank_reference"),
            instructed_amount=instructed,
            instructed_currency=instructed_ccy if instructed is not None else "",
            exchange_rate=parse_rate(rate_text, where + " exchange rate")
            if instructed is not None and rate_text
            else None,
            raw=layout["delimiter"].join(row),
            location=where,
        )
