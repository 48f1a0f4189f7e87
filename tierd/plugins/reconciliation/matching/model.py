"""What goes into the matching engine and what comes out of it.

Plain dataclasses, no database and no asyncio: the engine is a pure
function of these, which is what makes it testable, benchmarkable and safe
to run in a worker thread.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from decimal import Decimal

#: Every parameter each built-in rule reads, and the value it takes when an
#: account's rule leaves it out (``days_after`` None: as many days after as
#: ``window_days`` before). One table: the engine hands each rule its
#: parameters merged over these, the configuration refuses any other, and
#: "why is this open" quotes the same values.
RULE_DEFAULTS: dict[str, dict] = {
    "reference": {"window_days": 45},
    "fx": {"window_days": 60, "rate_tolerance": 0.5},
    "amount_date": {"window_days": 3, "days_after": None},
    "fuzzy_counterparty": {"window_days": 5, "days_after": None, "min_similarity": 85},
    "tolerance": {
        "window_days": 5,
        "ref_window_days": 45,
        "absolute": "15.00",
        "percent": 1,
        "single_absolute": "2.50",
        "single_percent": 0.5,
        "min_similarity": 85,
    },
    "partial": {
        "window_days": 14,
        "ref_window_days": 366,
        "max_items": 5,
        "max_pool": 12,
        "min_similarity": 90,
        "budget": 20_000,
    },
    "batch": {
        "window_days": 90,
        "days_after": 5,
        "max_items": 6,
        "max_pool": 20,
        "min_similarity": 92,
        "budget": 20_000,
    },
}

#: The rule passes used when an account configures none, in this order:
#: the surest first, each working on what the earlier ones left open. A fee
#: deducted comes before the many-to-one passes (its line names the invoice
#: and misses its amount by a little, which no sum explains better);
#: instalments before batches, so that the part of an invoice is not taken
#: for a payment of two other invoices of the same customer.
DEFAULT_RULES: tuple[dict, ...] = (
    {"rule": "reference", "window_days": 45},
    {"rule": "fx", "window_days": 60, "rate_tolerance": 0.5},
    {"rule": "amount_date", "window_days": 3},
    {"rule": "fuzzy_counterparty", "min_similarity": 90, "window_days": 5},
    {"rule": "fuzzy_counterparty", "min_similarity": 95, "window_days": 45, "days_after": 3},
    {
        "rule": "tolerance",
        "absolute": "15.00",
        "percent": 1.0,
        "single_absolute": "2.50",
        "single_percent": 0.5,
        "window_days": 5,
        "ref_window_days": 45,
    },
    {"rule": "partial", "max_items": 5, "window_days": 14, "ref_window_days": 366},
    {"rule": "batch", "max_items": 6, "max_pool": 20, "window_days": 90, "days_after": 5},
)


@dataclasses.dataclass(frozen=True)
class _Item:
    """What both sides have in common."""

    id: str
    date: dt.date
    amount: Decimal  # signed as the bank sees it: credit > 0
    currency: str
    counterparty: str = ""


@dataclasses.dataclass(frozen=True)
class BankLine(_Item):
    """An open statement line, as the engine sees it."""

    remittance: str = ""
    end_to_end_id: str = ""
    bank_reference: str = ""
    #: The payer's IBAN or account number, when the bank gives it.
    counterparty_account: str = ""
    #: A payment instructed in another currency: what the payer sent, and the
    #: bank's rate as booked currency per unit of it (None when not given).
    instructed_amount: Decimal | None = None
    instructed_currency: str = ""
    exchange_rate: Decimal | None = None


@dataclasses.dataclass(frozen=True)
class LedgerEntry(_Item):
    """An open ledger entry; ``amount`` is signed as the bank sees it."""

    reference: str = ""
    description: str = ""
    external_id: str = ""


@dataclasses.dataclass(frozen=True)
class Match:
    """Bank lines and ledger entries that belong together.

    ``sum(bank amounts) == sum(ledger amounts) + adjustment``; the adjustment
    is non-zero only for the tolerance rule (bank fees, rounding).
    """

    rule: str
    score: float
    explanation: str
    bank_ids: tuple[str, ...]
    ledger_ids: tuple[str, ...]
    adjustment: Decimal = Decimal(0)
    #: Set when ledger entries in another currency were matched through a
    #: rate: ``sum(bank) == sum(ledger) * exchange_rate + adjustment``.
    exchange_rate: Decimal | None = None


@dataclasses.dataclass(frozen=True)
class KnownPayer:
    """What reviewers taught: a bank counterparty has paid for a ledger counterparty.

    ``bank_key`` is ``text.payer_keys()``'s form (``iban:DE89...`` or
    ``name:mueller bau``), ``ledger_key`` is ``text.norm_name()`` of the ledger
    counterparty; ``times`` is how many active matches taught it.
    """

    bank_key: str
    bank_label: str
    ledger_key: str
    ledger_name: str
    times: int


#: A suggestion has the same shape: a match a person has to confirm.
Suggestion = Match


@dataclasses.dataclass
class EngineConfig:
    """How an account is reconciled (``reconciliation.accounts[].rules`` etc.)."""

    rules: list[dict] = dataclasses.field(default_factory=lambda: [dict(r) for r in DEFAULT_RULES])
    #: A candidate is matched automatically only at or above this score ...
    auto_threshold: float = 0.85
    #: ... and only when it beats every competing candidate by this much.
    min_margin: float = 0.05
    #: Candidates below this score are not even suggested.
    suggestion_threshold: float = 0.5
    #: At most this many suggestions name the same item.
    max_suggestions_per_item: int = 3
    #: What earlier matches of this account taught (see :class:`KnownPayer`).
    known_payers: list[KnownPayer] = dataclasses.field(default_factory=list)


@dataclasses.dataclass
class Result:
    matches: list[Match]
    suggestions: list[Suggestion]
    #: rule name -> number of automatic matches it made.
    by_rule: dict[str, int]
