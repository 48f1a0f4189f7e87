"""The pieces of evidence every rule weighs, and the candidate they add up to.

Scores are built from the same few pieces everywhere: equal amounts, dates
close together, a reference found (exactly or nearly) in the remittance, and
the counterparty: similar names, or a payer reviewers have matched to this
counterparty before (a *known payer*, at least as strong as identical names).
Keeping them here means a rule cannot weigh a name differently from another.
"""

from __future__ import annotations

import dataclasses
from decimal import Decimal

from .context import Context, Item, payer_phrase, similarity
from .model import KnownPayer
from .text import norm_ref


class Candidate:
    """A proposed match: the items, its score and why."""

    __slots__ = (
        "score",
        "evidence",
        "bank_ids",
        "ledger_ids",
        "items",
        "rule",
        "reasons",
        "adjustment",
        "exchange_rate",
    )

    def __init__(
        self, rule: str, score: float, banks, ledgers, reasons: list[str], adjustment: int = 0, date_part: float = 0.0
    ):
        self.rule = rule
        self.score = round(min(max(score, 0.0), 1.0), 4)
        # The score without its date-closeness share: two candidates that
        # differ only in how close their dates are count as a close call.
        self.evidence = round(self.score - date_part, 4)
        self.bank_ids = tuple(sorted(b.id for b in banks))
        self.ledger_ids = tuple(sorted(e.id for e in ledgers))
        # Both sides' ids, tagged; read over and over while conflicts are settled, so made once.
        self.items: tuple[tuple[str, str], ...] = tuple(("b", i) for i in self.bank_ids) + tuple(
            ("l", i) for i in self.ledger_ids
        )
        self.reasons = reasons
        self.adjustment = adjustment
        #: Set by the fx rule: ledger amounts were converted at this rate.
        self.exchange_rate: Decimal | None = None

    def sort_key(self):
        # Best first; ties broken by ids, never by the order items came in.
        return (-self.score, self.bank_ids, self.ledger_ids, self.rule)


def closeness(days: int, window: int) -> float:
    """1.0 for the same day, falling linearly to just above 0 at the window's edge."""
    return max(0.0, 1.0 - days / (window + 1))


def days_phrase(days: int, within: bool = False) -> str:
    if days == 0:
        return "booked the same day"
    unit = "day" if days == 1 else "days"
    return f"booked within {days} {unit}" if within else f"booked {days} {unit} apart"


def span_phrase(offsets: list[int], positive: str = "before", negative: str = "after") -> str:
    """``"12 to 38 days before"`` for day offsets (``positive`` names offsets above zero)."""
    lo, hi = min(offsets), max(offsets)

    def one(n: int) -> str:
        if n == 0:
            return "the same day"
        unit = "day" if abs(n) == 1 else "days"
        return f"{abs(n)} {unit} {positive if n > 0 else negative}"

    if lo == hi:
        return one(lo)
    if lo >= 0:
        return f"{lo or 'the same day'} to {one(hi)}"
    if hi <= 0:
        return f"{-hi or 'the same day'} to {one(lo)}"
    return f"{one(hi)} to {one(lo)}"


#: Names at least this alike speak for one counterparty on their own.
NAMES_AGREE = 0.9

#: Below this similarity two known names are taken to be different parties
#: (unrelated short names still reach 50-65% with token_set_ratio).
NAMES_DIFFER_BELOW = 0.7


def name_weight(sim: float | None) -> float:
    """Name evidence 0..1: nothing below NAMES_DIFFER_BELOW, full at identical names."""
    if sim is None or sim < NAMES_DIFFER_BELOW:
        return 0.0
    return (sim - NAMES_DIFFER_BELOW) / (1 - NAMES_DIFFER_BELOW)


def names_differ(sim: float | None) -> bool:
    return sim is not None and sim < NAMES_DIFFER_BELOW


def name_phrase(sim: float | None) -> str | None:
    return f"counterparty names {round(sim * 100)}% alike" if sim is not None else None


@dataclasses.dataclass(frozen=True, slots=True)
class Party:
    """What the counterparty says about a bank line and a ledger entry belonging together.

    ``sim`` is the name similarity as the rules weigh it: 1.0 for a known
    payer whatever the names (reviewers have said this payer pays for this
    counterparty, which beats any spelling), else the names' similarity
    (None when a name is missing). ``phrase`` is the reason a person reads.
    """

    sim: float | None
    phrase: str | None
    known: KnownPayer | None = None

    @property
    def weight(self) -> float:
        return name_weight(self.sim)

    @property
    def differ(self) -> bool:
        return names_differ(self.sim)


def party(ctx: Context, bank: Item, entry: Item) -> Party:
    """The counterparty evidence of one (bank line, ledger entry) pair."""
    kp = ctx.known_payer(bank, entry)
    if kp is not None:
        return Party(1.0, payer_phrase(kp), kp)
    sim = similarity(bank, entry)
    return Party(sim, name_phrase(sim))


def party_with(ctx: Context, bank: Item, entry: Item, sim: float | None) -> Party:
    """:func:`party` where the names' similarity is already known."""
    kp = ctx.known_payer(bank, entry)
    if kp is not None:
        return Party(1.0, payer_phrase(kp), kp)
    return Party(sim, name_phrase(sim))


#: How far apart a bank line and another open item it names may be, to count against a candidate.
NAMED_ELSEWHERE_DAYS = 366


class NamedElsewhere:
    """Open items of a payer whose numbers its bank lines give: a line pays those, not another item.

    An instalment naming RE-2026-46206 that happens to equal another open
    invoice of the same customer is the part of RE-2026-46206. A number that
    belongs to another customer's invoice says nothing here (numbering is
    dense: a typo often gives some other invoice's number). What a line names
    is looked up once per line.
    """

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
        self.by_key = ctx.ledger_keys()
        self._named: dict[str, list[tuple[Item, str]]] = {}

    def _of(self, b: Item) -> list[tuple[Item, str]]:
        named = self._named.get(b.id)
        if named is None:
            named = []
            for key in sorted(b.keys | b.grams):
                for other in self.by_key.window(key, b.day, NAMED_ELSEWHERE_DAYS):
                    if other.currency == b.currency and other.id in self.ctx.open_ledgers:
                        who = party(self.ctx, b, other)
                        if who.sim is None or who.sim >= NAMES_AGREE:
                            named.append((other, key))
            self._named[b.id] = named
        return named

    def other(self, b: Item, entry: Item) -> Item | None:
        """Another open item of its payer that ``b`` names (None when it names only ``entry``, or nothing)."""
        for other, key in self._of(b):
            if other.id != entry.id and key not in entry.keys:
                return other
        return None


def elsewhere_phrase(other: Item) -> str:
    return f"but the remittance names another open item, {ledger_label(other)}"


def ref_label(entry: Item, key: str) -> str:
    """How a reference found under ``key`` is named: ``"RE-2026-10431"``, or ``"RE-2026-10431 (as 10431)"``
    where the payer wrote only part of it."""
    if key == entry.ref:
        return entry.src.reference
    if key == norm_ref(entry.src.external_id):
        return entry.src.external_id
    return f"{entry.src.reference} (as {key})"


def ledger_label(entry: Item) -> str:
    return entry.src.reference or entry.src.external_id


def clean(reasons) -> list[str]:
    return [r for r in reasons if r]
