"""The engine's working set: items prepared once, and indexes over open items.

Amounts become integers in the smallest unit the data uses, dates become
ordinals, references and names are normalised once; every rule then works
on these. Candidates always come from an index (amount buckets sorted by
date, reference keys, counterparties by name: :class:`PartyIndex`), never
from all pairs.
"""

from __future__ import annotations

import bisect
from collections import defaultdict
from collections.abc import Iterable
from decimal import Decimal

from .model import BankLine, KnownPayer, LedgerEntry
from .text import (
    flat_name,
    is_reference,
    may_be_cut,
    name_keys,
    name_similarity,
    norm_name,
    norm_ref,
    payer_keys,
    ref_grams,
    short_keys,
)


class Item:
    """One bank line or ledger entry, prepared for matching."""

    __slots__ = (
        "id",
        "side",
        "day",
        "units",
        "currency",
        "name",
        "flat",
        "name_keys",
        "keys",
        "grams",
        "ref",
        "payer_keys",
        "cut",
        "src",
    )

    def __init__(self, side: str, src, scale: int):
        self.side = side
        self.src = src
        self.id = src.id
        self.day = src.date.toordinal()
        self.units = int(src.amount.scaleb(scale))
        self.currency = src.currency
        self.name = norm_name(src.counterparty)
        self.flat = flat_name(src.counterparty)
        self.name_keys = name_keys(self.name)
        # Only banks cut names (SEPA's fixed lengths); the books write them in full.
        self.cut = side == "bank" and may_be_cut(src.counterparty)
        if side == "bank":
            e2e = norm_ref(src.end_to_end_id)
            self.keys = frozenset(k for k in (e2e,) if is_reference(k))
            self.grams = ref_grams(src.remittance, src.end_to_end_id)
            self.ref = ""
            self.payer_keys = payer_keys(src.counterparty_account, src.counterparty)
        else:
            # The ledger side is looked up by its invoice number / reference
            # and by its external id (some payers quote the document id).
            self.ref = norm_ref(src.reference)
            ext = norm_ref(src.external_id)
            self.keys = frozenset(k for k in (self.ref, ext) if is_reference(k)) | short_keys(src.reference)
            self.grams = frozenset()
            self.payer_keys = ()


def similarity(x: Item, y: Item) -> float | None:
    """Counterparty similarity of two items, 0..1 (None when a name is missing)."""
    return name_similarity(x.name, y.name, x.flat, y.flat, x.cut, y.cut)


def decimal_places(*groups) -> int:
    """The most decimal places any amount uses (2 for EUR, 3 for KWD ...)."""
    places = 0
    for group in groups:
        for x in group:
            exp = x.amount.as_tuple().exponent
            if isinstance(exp, int) and -exp > places:
                places = -exp
    return min(places, 6)


class Context:
    """All items of one engine call, and which of them are still open."""

    def __init__(self, banks: list[BankLine], ledgers: list[LedgerEntry], known_payers: Iterable[KnownPayer] = ()):
        # bank key -> ledger key -> what was learned
        self.known: dict[str, dict[str, KnownPayer]] = {}
        for kp in known_payers:
            self.known.setdefault(kp.bank_key, {})[kp.ledger_key] = kp
        self.scale = decimal_places(banks, ledgers)
        # Sorting by id first makes every later step independent of input order.
        self.banks = {b.id: Item("bank", b, self.scale) for b in sorted(banks, key=lambda x: x.id)}
        self.ledgers = {e.id: Item("ledger", e, self.scale) for e in sorted(ledgers, key=lambda x: x.id)}
        if len(self.banks) != len(banks) or len(self.ledgers) != len(ledgers):
            raise ValueError("item ids must be unique on each side")
        self.open_banks: dict[str, Item] = dict(self.banks)
        self.open_ledgers: dict[str, Item] = dict(self.ledgers)
        self._ledger_keys: DatedIndex | None = None

    def ledger_keys(self) -> DatedIndex:
        """Reference key -> ledger entries, open or not: built once for every pass.

        Passes look entries up by the keys a bank line gives, then skip the
        ones earlier passes closed; rebuilding the index over the open ones
        for each pass cost more than the lookups.
        """
        if self._ledger_keys is None:
            self._ledger_keys = key_index(self.ledgers.values())
        return self._ledger_keys

    def known_payer(self, bank: Item, entry: Item) -> KnownPayer | None:
        """What reviewers taught about this bank line's payer paying for the entry's counterparty."""
        if not self.known or not entry.name:
            return None
        for key in bank.payer_keys:
            kp = self.known.get(key, {}).get(entry.name)
            if kp is not None:
                return kp
        return None

    def learned(self, bank: Item) -> list[KnownPayer]:
        """Every ledger counterparty this bank line's payer has been matched to before."""
        out: list[KnownPayer] = []
        for key in bank.payer_keys:
            out.extend(self.known.get(key, {}).values())
        return out

    def to_decimal(self, units: int) -> Decimal:
        return Decimal(units).scaleb(-self.scale)

    def close(self, bank_ids, ledger_ids) -> None:
        for i in bank_ids:
            del self.open_banks[i]
        for i in ledger_ids:
            del self.open_ledgers[i]


class DatedIndex:
    """Items grouped under keys, each group sorted by date for window lookups."""

    def __init__(self) -> None:
        self._groups: dict = defaultdict(list)
        self._days: dict = {}

    def add(self, key, item: Item) -> None:
        self._groups[key].append(item)

    def freeze(self) -> DatedIndex:
        for key in list(self._groups):
            group = self._groups[key]
            group.sort(key=lambda it: (it.day, it.id))
            self._days[key] = [it.day for it in group]
        return self

    def window(self, key, day: int, days: int) -> list[Item]:
        """Items under ``key`` at most ``days`` from ``day``, either way."""
        return self.between(key, day - days, day + days)

    def between(self, key, first: int, last: int) -> list[Item]:
        """Items under ``key`` dated ``first`` to ``last`` (day ordinals, both included)."""
        group = self._groups.get(key)
        if not group:
            return []
        ds = self._days[key]
        return group[bisect.bisect_left(ds, first) : bisect.bisect_right(ds, last)]


def amount_index(items) -> DatedIndex:
    """(currency, amount) -> items by date: the equal-amount candidates."""
    index = DatedIndex()
    for it in items:
        index.add((it.currency, it.units), it)
    return index.freeze()


def key_index(items, keys_of=lambda it: it.keys) -> DatedIndex:
    """Reference key -> items (the hash map the reference rule looks up)."""
    index = DatedIndex()
    for it in items:
        for key in keys_of(it):
            index.add(key, it)
    return index.freeze()


def party_index(items) -> DatedIndex:
    """(currency, whole normalised name) -> items by date: a learned counterparty's items."""
    index = DatedIndex()
    for it in items:
        if it.name:
            index.add((it.currency, it.name), it)
    return index.freeze()


class PartyIndex:
    """Open items by counterparty: names alike to a given one, then that party's items by date.

    Comparing a name with the name of every item that shares a word with it
    costs too much where words are common ("Bau", "Müller"), and most of those
    are other customers. Here each distinct name is compared once: the
    candidates are the names that match every word of the given name (each
    word through its typo-robust keys, see ``text.name_keys``; one word may be
    missing from names of three words or more), then rapidfuzz decides, and
    the answer is kept for the next item of the same name.
    """

    def __init__(self, items) -> None:
        self.items = party_index(items)
        self._names: list[tuple[str, str, bool]] = []  # (name, flat, may be cut) by number
        numbers: dict[tuple[str, str, bool], int] = {}
        self._by_key: dict[tuple[str, str], set[int]] = defaultdict(set)
        for it in items:
            if not it.name:
                continue
            n = numbers.get((it.name, it.flat, it.cut))
            if n is None:
                n = numbers[(it.name, it.flat, it.cut)] = len(self._names)
                self._names.append((it.name, it.flat, it.cut))
                for key in it.name_keys:
                    self._by_key[(it.currency, key)].add(n)
        self._alike: dict[tuple, list[tuple[str, float]]] = {}

    def alike(self, it: Item, min_sim: float) -> list[tuple[str, float]]:
        """(name, similarity) of the indexed names at least ``min_sim`` alike to ``it``'s, best first."""
        if not it.name:
            return []
        cache_key = (it.currency, it.name, it.flat, it.cut, min_sim)
        found = self._alike.get(cache_key)
        if found is None:
            best: dict[str, float] = {}
            for n in self._candidates(it):
                name, flat, cut = self._names[n]
                sim = name_similarity(it.name, name, it.flat, flat, it.cut, cut)
                if sim is not None and sim >= min_sim and sim > best.get(name, -1.0):
                    best[name] = sim
            found = self._alike[cache_key] = sorted(best.items(), key=lambda kv: (-kv[1], kv[0]))
        return found

    def _candidates(self, it: Item) -> set[int]:
        per_word = []
        for word in it.name.split():
            if len(word) >= 3:
                hits: set[int] = set()
                for key in name_keys(word):
                    hits |= self._by_key.get((it.currency, key), set())
                per_word.append(hits)
        if not per_word:
            return set()
        if len(per_word) < 3:
            return set.intersection(*per_word)
        out: set[int] = set()
        for skip in range(len(per_word)):
            out |= set.intersection(*(w for i, w in enumerate(per_word) if i != skip))
        return out

    def between(self, currency: str, name: str, first: int, last: int) -> list[Item]:
        return self.items.between((currency, name), first, last)


def payer_phrase(kp: KnownPayer) -> str:
    """``"IBAN DE89…3000 paid Müller Bau GmbH 4 times before"``: the reason a learned alias gives."""
    kind, _, value = kp.bank_key.partition(":")
    label = kp.bank_label
    if kind == "iban":
        compact = value  # the key is the IBAN, whatever the label says
        label = "IBAN " + (compact[:4] + "…" + compact[-4:] if len(compact) > 10 else compact)
    times = "once" if kp.times == 1 else ("twice" if kp.times == 2 else f"{kp.times} times")
    return f"{label} paid {kp.ledger_name} {times} before"
