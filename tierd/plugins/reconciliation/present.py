"""What the API answers for reconciliation records.

The store hands rows out as stored: instants in unix seconds, JSON columns
decoded, statement lines and ledger entries with every column. Here they
take the shape of the API: instants ISO-8601 UTC text (core's
:func:`tierd.core.clock.iso`, as every API time), lines and entries only
their public columns, each tagged with its side.
"""

from __future__ import annotations

from tierd.core.clock import iso_or_none

LINE_FIELDS = (
    "id",
    "booking_date",
    "value_date",
    "amount",
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
ENTRY_FIELDS = ("id", "external_id", "date", "amount", "currency", "counterparty", "reference", "description")


def _times(row: dict, *columns: str) -> dict:
    return row | {c: iso_or_none(row[c]) for c in columns}


def account(row: dict) -> dict:
    return _times(row, "created_at", "updated_at")


def statement_import(row: dict) -> dict:
    return _times(row, "created_at")


def run(row: dict) -> dict:
    return _times(row, "started_at", "finished_at")


def audit_entry(row: dict) -> dict:
    return _times(row, "at")


def line(row: dict) -> dict:
    return {k: row[k] for k in LINE_FIELDS} | {"side": "bank"}


def entry(row: dict) -> dict:
    return {k: row[k] for k in ENTRY_FIELDS} | {"side": "ledger"}


def _with_items(row: dict) -> dict:
    return row | {
        "statement_lines": [line(x) for x in row["statement_lines"]],
        "ledger_entries": [entry(x) for x in row["ledger_entries"]],
    }


def match(row: dict) -> dict:
    return _with_items(_times(row, "created_at", "undone_at"))


def suggestion(row: dict) -> dict:
    return _with_items(_times(row, "created_at"))


def alias(row: dict) -> dict:
    """A learned payer: ``kind`` says what the bank counterparty is known by ("iban" or "name")."""
    public = {"id": row["id"], "kind": row["bank_key"].partition(":")[0]}
    public |= {k: row[k] for k in ("bank_label", "ledger_name", "times", "first_at", "last_at")}
    return _times(public, "first_at", "last_at")
