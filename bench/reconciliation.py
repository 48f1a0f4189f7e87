"""Benchmark of the reconciliation matching engine on a labelled German B2B account.

For each size N it generates about N bank lines and N ledger entries with a
known truth, runs ``reconcile()`` with the default rules (and the payers an
account would have learned in earlier months), and prints the precision and
recall of the automatic matches overall and per category, the time the
engine took and the peak RSS of the process (each size runs in a fresh
process so the peaks do not mix).

The data imitates what issue 13 describes: a German business whose
customers write their names as they please (``Müller Bau GmbH``, ``MUELLER
BAU GMBH``, ``Mueller Bau G.m.b.H.``, ``Müller-Bau GmbH u. Co. KG``, cut at
27 characters as SEPA does) and mangle the invoice number ``RE-2026-10431``
(``RE 2026 10431``, ``RE2026/10431``, ``Rg.Nr. 10431``, a digit transposed, the
prefix dropped). Most bank lines carry the payer's IBAN. The statement
period starts on 2026-01-01 and lasts ``--span-days``; invoices go back two
months before it.

Each truth group (the bank lines and ledger entries that belong together)
has one category; their shares are the table ``SHARES`` below:

* ``clean_reference`` one invoice paid in full, the remittance names it
  (mostly well written, a quarter mangled), 0-10 days after the invoice;
  some are our own payments of supplier bills
* ``clean_name`` no usable reference ("Rechnung vom 12.10.", "Danke"): the
  name, the exact amount and the date (3-30 days after the invoice) decide
* ``batch`` one transfer pays 2-6 invoices issued over the previous 2-6
  weeks; mostly it names none of them ("Sammelzahlung"), sometimes some
* ``instalments`` one invoice paid in 2-4 parts a week or a month apart,
  each naming the invoice
* ``fee_deducted`` received short by a bank fee (up to 15.00, or 0.5-1 % of
  a large amount); the remittance names the invoice
* ``lookalike`` 20-60 subscribers per product pay the same price in the
  first days of each month, half without a reference: only the name or the
  IBAN (a learned payer) decides
* ``fx`` an invoice in USD, CHF or GBP paid by a line booked in EUR, with
  the instructed amount and currency and (mostly) the bank's rate; the
  booked amount may be off by a few cents or the bank's spread (<= 0.3 %)
* ``learned`` a parent company, a Treuhand or a factoring firm pays for the
  customer, without a reference: only the learned alias (IBAN -> customer,
  passed as ``EngineConfig.known_payers``) decides

and ``noise`` (at least 6 % of each side): open invoices not paid yet (some
of them copying the amount of a payment nearby, subscribers who stopped
paying), fees, card payments, salaries, taxes, and payments from other
customers copying the amount of an open invoice.

Precision per category attributes each automatic match to the category of
the truth group it touches (the first, if several); a match of noise only
is attributed to ``noise``. Recall counts the groups matched automatically
exactly as the truth has them; "in sugg" is the share of groups offered
exactly as a suggestion. Under the table, recall is broken down by a finer
label where a category has several (the form of the reference, how the
payer is identified, weekly or monthly instalments, ...).

Usage: ``python bench/reconciliation.py [--sizes 1000,10000,100000] [--seed 1]
[--span-days 365|auto] [--repeat 3] [--json]``

With the default one-year span the data gets denser as N grows (more
same-amount lines per day), which is the harder case for time; ``auto``
keeps the density of a busy account and lets only the history grow.
Figures only, never asserts: see DESIGN.md ("bench/ prints figures").
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import itertools
import json
import math
import random
import re
import resource
import subprocess
import sys
import time
from collections import Counter
from decimal import Decimal
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tierd.plugins.reconciliation.matching import BankLine, EngineConfig, LedgerEntry, reconcile  # noqa: E402
from tierd.plugins.reconciliation.matching.model import KnownPayer  # noqa: E402
from tierd.plugins.reconciliation.matching.text import norm_name, payer_keys  # noqa: E402

#: Share of truth groups per category (relative weights; noise comes on top).
SHARES: dict[str, float] = {
    "clean_reference": 40,
    "clean_name": 12,
    "batch": 8,
    "instalments": 7,
    "fee_deducted": 7,
    "lookalike": 12,
    "fx": 5,
    "learned": 4,
}
#: (bank lines, ledger entries) per group on average, where not (1, 1).
LINES_PER_GROUP = {"batch": (1, 4.3), "instalments": (3, 1)}
#: At least this share of each side is unmatched noise.
NOISE_SHARE = 0.06
#: Share of clean_reference / clean_name groups that are our payments to suppliers.
OUTGOING_SHARE = 0.15
#: Share of customer bank lines that carry the payer's IBAN.
IBAN_SHARE = 0.9
#: Share of customers whose IBAN the account learned in earlier months.
KNOWN_CUSTOMER_SHARE = 0.5
#: Share of a sole trader's payments whose account holder is the owner ("Müller, Anna" for
#: "Müller Bau e.K."); only where the IBAN is known, so the IBAN still decides.
OWNER_NAME_SHARE = 0.3

STATEMENT_START = dt.date(2026, 1, 1)
HISTORY_DAYS = 60  # invoices go back this far before the statement period
DAY = dt.timedelta(days=1)
CENT = Decimal("0.01")
VAT = Decimal("1.19")

SURNAMES = (
    "Müller Schmidt Schneider Fischer Weber Meyer Wagner Becker Schulz Hoffmann Schäfer Koch Bauer Richter Klein "
    "Wolf Schröder Neumann Schwarz Zimmermann Braun Krüger Hofmann Hartmann Lange Schmitt Werner Schmitz Krause "
    "Meier Lehmann Schmid Schulze Maier Köhler Herrmann König Walter Mayer Huber Kaiser Fuchs Peters Lang Scholz "
    "Möller Weiß Jung Hahn Schubert Vogel Friedrich Keller Günther Frank Berger Winkler Roth Beck Lorenz Baumann "
    "Franke Albrecht Schuster Simon Ludwig Böhm Winter Kraus Martin Schumacher Krämer Vogt Stein Jäger Otto "
    "Sommer Groß Seidel Heinrich Brandt Haas Schreiber Graf Schulte Dietrich Ziegler Kuhn Kühn Pohl Engel Horn "
    "Busch Bergmann Voigt Sauer Arnold Wolff Pfeiffer Büttner Strauß Hübner Löffler Blümel Gößling Rößler"
).split()
TRADES = (
    "Bau Elektro Haustechnik Metallbau Logistik Spedition Software Druck Gartenbau Dachdeckerei Sanitär "
    "Heizungsbau Maschinenbau Werkzeugbau Automation Systemtechnik Medientechnik Immobilien Reinigung "
    "Gebäudeservice Transporte Fensterbau Tischlerei Schreinerei Kältetechnik Brandschutz Verpackung "
    "Kunststofftechnik Feinmechanik Landtechnik Baustoffe Getränkehandel Großhandel Bürobedarf Planungsbüro "
    "Ingenieurbüro Autohaus Fahrzeugbau Personalservice Stahlbau Messebau Umzüge Glasbau Holzbau"
).split()
REGIONS = (
    "Rhein Main Nord Süd West Ost Allgäu Bodensee Elbe Weser Ruhr Harz Eifel Schwarzwald Franken Spree "
    "Mosel Taunus Isar Donau Saar Neckar Lausitz Havel Oder Ems Ostsee Nordsee Münsterland Hunsrück"
).split()
#: Common surnames and trades come up more often (list order), as in a real customer base: so
#: "Müller Bau", "Möller Bau" and "Müller Bau Nord" all exist, and only a careful name comparison tells them apart.
SURNAME_WEIGHTS = tuple(itertools.accumulate(1 / (i + 1) ** 0.7 for i in range(len(SURNAMES))))  # cumulative
SURNAME_SET = frozenset(SURNAMES)
TRADE_WEIGHTS = tuple(itertools.accumulate(1 / (i + 1) ** 0.5 for i in range(len(TRADES))))
NAME_PATTERNS = ("{s} {t}", "{s} {t}", "{s} & {s2}", "{t} {s}", "{r}-{t}", "{r} {t} {s}", "{s} {t} {r}")
LEGAL = ("GmbH", "GmbH & Co. KG", "AG", "e.K.", "KG", "OHG", "UG (haftungsbeschränkt)", "GbR", "")
LEGAL_WEIGHTS = tuple(itertools.accumulate((45, 16, 5, 8, 5, 3, 6, 3, 9)))
#: How banks and payers rewrite a legal form.
LEGAL_VARIANTS = {
    "GmbH & Co. KG": ("GmbH u. Co. KG", "GmbH + Co. KG", "GmbH&Co.KG", "GmbH & Co KG", "GmbH"),
    "GmbH": ("G.m.b.H.", "Gesellschaft mbH", "mbH", ""),
    "e.K.": ("e. K.", "eK", "e.Kfm.", ""),
    "UG (haftungsbeschränkt)": ("UG (haftungsbeschr.)", "UG haftungsbeschraenkt", "UG"),
    "AG": ("Aktiengesellschaft", ""),
    "KG": ("Kommanditgesellschaft", ""),
}
#: Words of a legal form, left out when telling two customers' names apart.
LEGAL_WORDS = frozenset("gmbh co kg ag ek e k ohg ug haftungsbeschraenkt gbr mbh inc llc corp ltd plc sa".split())
UMLAUTS = str.maketrans({"ä": "ae", "ö": "oe", "ü": "ue", "Ä": "Ae", "Ö": "Oe", "Ü": "Ue", "ß": "ss"})
#: Foreign customers invoiced in their currency: (currency, country, names, legal forms, EUR per unit).
FOREIGN = (
    (
        "USD",
        "",
        ("Summit", "Harbor", "Lakeside", "Pioneer", "Redwood", "Atlas", "Keystone"),
        ("Inc.", "LLC", "Corp."),
        "0.92",
    ),
    ("CHF", "CH", ("Alpen", "Zürcher", "Berner", "Jura", "Rigi", "Säntis", "Tessiner"), ("AG", "GmbH", "SA"), "1.05"),
    (
        "GBP",
        "GB",
        ("Thames", "Pennine", "Severn", "Cotswold", "Mersey", "Tyne", "Kestrel"),
        ("Ltd", "Limited", "plc"),
        "1.17",
    ),
)
FOREIGN_TRADES = ("Tools", "Devices", "Systems", "Supplies", "Trading", "Engineering", "Werkzeug", "Technik")
ALIAS_KINDS = {
    "parent": ("{s} Holding GmbH", "{s} Beteiligungs GmbH", "{s} Gruppe AG", "{r} Industrie Holding AG"),
    "treuhand": ("{r} Treuhand GmbH", "{s} & Partner Treuhand mbB", "Treuhandkonto RA {s}", "{s} Steuerberatung"),
    "factoring": ("{r} Factoring GmbH", "Deutsche Factoring Bank", "{s} Finetrading GmbH", "Kreditversicherung {r} AG"),
}
ALIAS_TEXTS = ("Regulierung", "Zahlung im Auftrag", "Ausgleich offener Posten", "Auszahlung", "Zahlung", "")
NO_REF_TEXTS = ("Danke", "Zahlung", "Ihre Rechnung", "Begleichung", "Überweisung", "", "", "Rechnung vom {d}")
BATCH_TEXTS = ("Sammelzahlung", "Payment run {m}", "Zahlungsavis folgt", "Sammelüberweisung KW {w}", "Zahlung lt. Avis")
SUBSCRIPTION_TEXTS = ("Abo {mon}", "Monatsbeitrag", "Lizenz {mon} {y}", "Wartungsvertrag", "Dauerauftrag", "")
MONTHS_DE = "Januar Februar März April Mai Juni Juli August September Oktober November Dezember".split()
PRICES = tuple(Decimal(p) for p in "49.00 99.00 249.00 58.31 117.81 29.00 19.90 149.00 199.00 79.00".split())
FIRST_NAMES = "Anna Lukas Marie Jonas Lea Felix Sophie Paul Laura Tim Julia Jan Sarah Max Lisa Tobias".split()


def cents(n: int) -> Decimal:
    """An integer number of cents as a Decimal with two places (``1200`` -> ``12.00``)."""
    return Decimal(n).scaleb(-2)


def name_key(name: str) -> str:
    """A name without case, umlauts, punctuation and legal form: two customers never share one.

    The benchmark's own, not the engine's: the data must not change when the
    engine's normalising does.
    """
    words = re.findall(r"[a-z0-9]+", name.translate(UMLAUTS).lower().replace(".", ""))
    return " ".join(w for w in words if w not in LEGAL_WORDS)


def make_iban(country: str, bban: str) -> str:
    """A well-formed IBAN (ISO 13616 check digits), so the data looks like a real export."""
    digits = "".join(str(int(c, 36)) for c in bban + country + "00")
    return f"{country}{98 - int(digits) % 97:02d}{bban}"


@dataclasses.dataclass(frozen=True)
class Party:
    """A counterparty: its name as our ledger writes it, its IBAN, and its customer number."""

    name: str
    iban: str
    number: str
    currency: str = "EUR"
    rate: Decimal = Decimal(1)  # EUR per unit of its currency, about
    owner: str = ""  # a sole trader's account holder, as the bank writes it


@dataclasses.dataclass(frozen=True)
class Group:
    """One truth group: what belongs together, its category, and a finer label (e.g. the reference form)."""

    category: str
    detail: str
    bank_ids: frozenset[str]
    ledger_ids: frozenset[str]


class Generator:
    """Builds one labelled data set; every choice comes from one seeded RNG."""

    def __init__(self, n: int, seed: int, span_days: int = 365):
        self.rng = random.Random(seed)
        self.n = n
        self.start = STATEMENT_START
        self.end = STATEMENT_START + dt.timedelta(days=span_days)  # exclusive
        self.span_days = span_days
        self.banks: list[BankLine] = []
        self.ledgers: list[LedgerEntry] = []
        self.groups: list[Group] = []
        self.noise_kinds: Counter = Counter()
        self.known_payers: list[KnownPayer] = []
        self._ids: set[str] = set()
        # (ledger name, amount) of every entry, and of every payment by or for that name:
        # a decoy must not give a party a second item of the same amount (that would
        # make its truth group ambiguous).
        self.owed: set[tuple[str, Decimal]] = set()
        self.paid: set[tuple[str, Decimal]] = set()
        # Our invoice numbers run with the date, densely, as a real numbering does:
        # about as many numbers a day as the ledger gets entries.
        # (Most entries are dated in the statement period or just before it.)
        self.serials: dict[int, int] = {}  # taken number -> where to look for a free one
        self.serials_per_day = n / (span_days + 30)
        # A customer pays about 1.5 times a month, whatever the span.
        months = max(1.0, span_days / 30.4)
        n_customers = max(80, int(n * 0.8 / months / 1.5))
        self.customers = self._parties(n_customers, "DE", self._company_name)
        self.suppliers = self._parties(max(30, n_customers // 5), "DE", self._company_name)
        self.foreign = [p for cur in FOREIGN for p in self._foreign_parties(cur, max(10, n_customers // 30))]
        self.aliases: list[tuple[str, Party, list[Party]]] = []
        self.month_starts = self._month_starts()
        self.known_ibans: set[str] = set()
        for c in self.customers:
            if self.rng.random() < KNOWN_CUSTOMER_SHARE:
                self._learn(c.iban, c.name.upper(), c)
                self.known_ibans.add(c.iban)

    # --- parties -------------------------------------------------------------

    def _parties(self, count: int, country: str, make_name) -> list[Party]:
        """``count`` parties whose names differ even after normalising (umlauts, legal form)."""
        seen: set[str] = set()
        parties = []
        for _ in range(count * 20):
            if len(parties) == count:
                break
            name = make_name()
            key = name_key(name)
            if key in seen:
                continue
            seen.add(key)
            parties.append(Party(name, self._iban(country), f"D{20000 + len(parties)}", owner=self._owner(name)))
        return parties

    def _owner(self, name: str) -> str:
        """The owner of a sole trader (``e.K.`` or no legal form), who holds the account in person."""
        if not (name.endswith(" e.K.") or not any(name.endswith(" " + form) for form in LEGAL if form)):
            return ""
        surname = next((w for w in name.replace("-", " ").split() if w in SURNAME_SET), "")
        if not surname:
            return ""
        first = self.rng.choice(FIRST_NAMES)
        return self.rng.choice((f"{surname}, {first}", f"{first} {surname}", f"{surname.upper()}, {first.upper()}"))

    def _iban(self, country: str) -> str:
        """A random, well-formed IBAN of ``country`` (none for US payers)."""
        r = self.rng
        if country == "DE":
            return make_iban("DE", f"{r.randrange(10**8):08d}{r.randrange(10**10):010d}")
        if country == "CH":
            return make_iban("CH", f"{r.randrange(10**5):05d}{r.randrange(10**12):012d}")
        if country == "GB":
            return make_iban("GB", f"{r.choice(['NWBK', 'BARC', 'LOYD', 'HBUK'])}{r.randrange(10**14):014d}")
        return ""  # US payers come through a correspondent bank without an IBAN

    def _company_name(self) -> str:
        r = self.rng
        s, s2 = r.choices(SURNAMES, cum_weights=SURNAME_WEIGHTS, k=2)
        t = r.choices(TRADES, cum_weights=TRADE_WEIGHTS)[0]
        base = r.choice(NAME_PATTERNS).format(s=s, s2=s2, t=t, r=r.choice(REGIONS))
        return f"{base} {r.choices(LEGAL, cum_weights=LEGAL_WEIGHTS)[0]}".strip()

    def _foreign_parties(self, spec, count: int) -> list[Party]:
        """Up to ``count`` customers invoiced in one foreign currency (a row of ``FOREIGN``)."""
        currency, country, words, forms, rate = spec
        r = self.rng
        names = sorted({f"{r.choice(words)} {r.choice(FOREIGN_TRADES)} {r.choice(forms)}" for _ in range(count)})
        return [Party(nm, self._iban(country), f"D{90000 + i}", currency, Decimal(rate)) for i, nm in enumerate(names)]

    def _learn(self, iban: str, label: str, customer: Party) -> None:
        """Record that ``iban`` paid for ``customer`` in earlier months (an alias the account learned)."""
        times = self.rng.randint(1, 12)
        key = payer_keys(iban, label)[0]
        self.known_payers.append(KnownPayer(key, label, norm_name(customer.name), customer.name, times))

    def bank_name(self, name: str) -> str:
        """How a bank line spells a party: legal form, hyphens, umlauts, case and SEPA's 27 characters vary."""
        r = self.rng
        for form, variants in LEGAL_VARIANTS.items():
            if name.endswith(" " + form):
                if r.random() < 0.25:
                    name = f"{name[: -len(form)]}{r.choice(variants)}".strip()
                break
        if r.random() < 0.15:
            name = name.replace(" ", "-", 1)
        if r.random() < 0.5:
            name = name.translate(UMLAUTS)
        if r.random() < 0.45:
            name = name.upper()
        if r.random() < 0.2:
            name = name[:27]
        if r.random() < 0.05:
            name = name.replace(".", "").replace("&", "+")
        return name.strip()

    # --- dates, amounts, references --------------------------------------------

    def pay_day(self, last_offset: int = 0) -> dt.date:
        """A day of the statement period, leaving ``last_offset`` days after it inside the period."""
        return self.start + dt.timedelta(days=self.rng.randrange(max(1, self.span_days - last_offset)))

    def amount(self, low: float = 50, high: float = 20000, round_share: float = 0.15) -> Decimal:
        """An invoice's gross amount: mostly any, sometimes a round net amount plus 19 % VAT."""
        r = self.rng
        if r.random() < round_share:
            net = Decimal(r.choice((100, 250, 500, 750, 1000, 1500, 2500, 5000)))
            return (net * VAT).quantize(CENT)
        return cents(int(10 ** r.uniform(math.log10(low * 100), math.log10(high * 100))))

    def invoice_ref(self, day: dt.date) -> str:
        """A new invoice number of ``day``: the next free one near where the numbering stands on that day.

        Dense, so a mistyped number often names another real invoice; in date
        order, so the invoices one transfer pays are not numbered side by side.
        """
        days = (day - self.start).days + HISTORY_DAYS
        serial = 10000 + int(days * self.serials_per_day) + self.rng.randrange(3)
        passed = []
        while serial in self.serials:  # the next free number, skipping runs of taken ones
            passed.append(serial)
            serial = self.serials[serial]
        for taken in passed:
            self.serials[taken] = serial + 1
        self.serials[serial] = serial + 1
        return f"RE-{day.year}-{serial}"

    def ref_text(self, ref: str, mangled: float) -> tuple[str, str]:
        """How a payer writes invoice ``ref``, and the label of that form."""
        r = self.rng
        _, year, serial = ref.split("-")
        if r.random() >= mangled:
            form = r.choice(("full", "full", "spaced", "slashed", "worded"))
            return {
                "full": ref if r.random() < 0.8 else ref.lower(),
                "spaced": f"RE {year} {serial}",
                "slashed": f"RE{year}/{serial}",
                "worded": f"Rechnung Nr. {ref}",
            }[form], form
        form = r.choice(("rg_nr", "no_prefix", "transposed"))
        if form == "rg_nr":
            return f"Rg.Nr. {serial}", form
        if form == "no_prefix":
            return (f"{year}-{serial}" if r.random() < 0.5 else serial), form
        pairs = [i for i in range(len(serial) - 1) if serial[i] != serial[i + 1]]
        if pairs:
            i = r.choice(pairs)
            swapped = serial[:i] + serial[i + 1] + serial[i] + serial[i + 2 :]
        else:  # 11111: nothing to swap, a wrong last digit instead
            swapped = serial[:-1] + str((int(serial[-1]) + 1) % 10)
        return r.choice((f"RE-{year}-{swapped}", f"RE {year} {swapped}", f"Rg.Nr. {swapped}")), form

    def wrap(self, text: str, party: Party, day: dt.date) -> str:
        """A remittance line around ``text``, with the bits payers add (customer number, date, SEPA tags)."""
        r = self.rng
        return r.choice(
            (
                "{x}",
                "{x}",
                "{x} Kd-Nr. {k}",
                "{x} vom {d}",
                "SVWZ+{x}",
                "{x} Danke",
                "Zahlung {x}",
                "KD {k} {x}",
            )
        ).format(x=text, k=party.number, d=f"{day:%d.%m.%Y}")

    # --- items -------------------------------------------------------------------

    def _id(self, prefix: str) -> str:
        """A random id: the engine sorts by id, so ids must not reveal which items belong together."""
        while True:
            i = f"{prefix}{self.rng.getrandbits(40):010x}"
            if i not in self._ids:
                self._ids.add(i)
                return i

    def bank(self, day, amount, name="", account="", remittance="", **fx) -> str:
        bid = self._id("b")
        self.banks.append(BankLine(bid, day, amount, "EUR", name, remittance, counterparty_account=account, **fx))
        return bid

    def customer_bank(self, day: dt.date, amount: Decimal, party: Party, remittance: str, **fx) -> str:
        """A line paid by ``party``: its name as the bank spells it (or its owner's), its IBAN most of the time."""
        r = self.rng
        owner = bool(party.owner) and party.iban in self.known_ibans and r.random() < OWNER_NAME_SHARE
        account = party.iban if owner or r.random() < IBAN_SHARE else ""
        if account and r.random() < 0.2:
            account = " ".join(account[i : i + 4] for i in range(0, len(account), 4))
        name = party.owner if owner else self.bank_name(party.name)
        self.paid.add((party.name, amount))
        return self.bank(day, amount, name, account, remittance, **fx)

    def identified_by(self, party: Party) -> str:
        """What names the payer of the line just made: ``owner_name`` (only the IBAN decides), ``iban`` or ``name``."""
        last = self.banks[-1]
        if party.owner and last.counterparty == party.owner:
            return "owner_name"
        return "iban" if last.counterparty_account else "name"

    def ledger(self, day, amount, name, ref="", currency="EUR") -> str:
        lid = self._id("l")
        self.owed.add((name, amount))
        self.ledgers.append(LedgerEntry(lid, day, amount, currency, name, ref, external_id=ref or lid))
        return lid

    def group(self, category: str, detail: str, bank_ids, ledger_ids) -> None:
        self.groups.append(Group(category, detail, frozenset(bank_ids), frozenset(ledger_ids)))

    # --- the mix -------------------------------------------------------------------

    def build(self) -> None:
        r = self.rng
        # Subscriptions come in cohorts, so they are made first, to their share.
        self._lookalikes(round(self.expected_groups() * SHARES["lookalike"] / sum(SHARES.values())))
        names = [k for k in SHARES if k != "lookalike"]
        weights = list(itertools.accumulate(SHARES[k] for k in names))
        while max(len(self.banks), len(self.ledgers)) < self.n * (1 - NOISE_SHARE):
            getattr(self, "_" + r.choices(names, cum_weights=weights)[0])()
        for _ in range(max(self.n - len(self.banks), math.ceil(self.n * NOISE_SHARE))):
            self._bank_noise()
        for _ in range(max(self.n - len(self.ledgers), math.ceil(self.n * NOISE_SHARE))):
            self._ledger_noise()
        r.shuffle(self.banks)
        r.shuffle(self.ledgers)

    def expected_groups(self) -> float:
        """How many truth groups fill the fuller side to its share (batches and instalments take several lines)."""
        total = sum(SHARES.values())
        bank = sum(w * LINES_PER_GROUP.get(c, (1, 1))[0] for c, w in SHARES.items()) / total
        ledger = sum(w * LINES_PER_GROUP.get(c, (1, 1))[1] for c, w in SHARES.items()) / total
        return self.n * (1 - NOISE_SHARE) / max(bank, ledger)

    def _supplier_payment(self, category: str, with_ref: bool) -> None:
        """We pay a supplier's bill: negative on both sides, the supplier's own numbering."""
        r = self.rng
        s = r.choice(self.suppliers)
        pay = self.pay_day()
        bill = pay - DAY * r.randint(3, 30)
        ref = r.choice(("{n}", "INV-{n}", "R{n}", "{y}/{n}")).format(n=r.randint(1000, 999999), y=bill.year)
        amount = -self.amount(round_share=0 if not with_ref else 0.15)
        text = r.choice((f"Rechnung {ref}", f"Re. {ref}", ref, f"Rg. {ref} Kd {s.number}")) if with_ref else "Rechnung"
        lid = self.ledger(bill, amount, s.name, ref)
        bid = self.bank(pay, amount, self.bank_name(s.name), s.iban, text)
        self.paid.add((s.name, amount))
        self.group(category, "supplier", [bid], [lid])

    def _clean_reference(self) -> None:
        r = self.rng
        if r.random() < OUTGOING_SHARE:
            return self._supplier_payment("clean_reference", with_ref=True)
        c = r.choice(self.customers)
        pay = self.pay_day()
        inv = pay - DAY * r.randint(0, 10)
        amount = self.amount()
        ref = self.invoice_ref(inv)
        text, form = self.ref_text(ref, mangled=0.25)
        lid = self.ledger(inv, amount, c.name, ref)
        bid = self.customer_bank(pay, amount, c, self.wrap(text, c, inv))
        self.group("clean_reference", form, [bid], [lid])

    def _clean_name(self) -> None:
        r = self.rng
        if r.random() < OUTGOING_SHARE:
            return self._supplier_payment("clean_name", with_ref=False)
        c = r.choice(self.customers)
        pay = self.pay_day()
        inv = pay - DAY * r.randint(3, 30)
        amount = self.amount(round_share=0)  # an odd amount: name, amount and date decide alone
        lid = self.ledger(inv, amount, c.name, self.invoice_ref(inv))
        text = r.choice(NO_REF_TEXTS).format(d=f"{inv:%d.%m.}")
        bid = self.customer_bank(pay, amount, c, text)
        self.group("clean_name", self.identified_by(c), [bid], [lid])

    def _batch(self) -> None:
        r = self.rng
        c = r.choice(self.customers)
        pay = self.pay_day()
        weeks = r.randint(2, 6)
        invoices = []
        for _ in range(r.randint(2, 6)):
            inv = pay - DAY * r.randint(3, weeks * 7)
            amount = self.amount(low=50, high=5000)
            ref = self.invoice_ref(inv)
            invoices.append((self.ledger(inv, amount, c.name, ref), amount, ref))
        roll = r.random()
        if roll < 0.6:
            detail = "names_none"
            text = r.choice(BATCH_TEXTS).format(m=f"{pay:%Y-%m}", w=pay.isocalendar()[1])
        else:
            detail = "names_some" if roll < 0.85 else "names_all"
            named = invoices if detail == "names_all" else r.sample(invoices, r.randint(1, len(invoices) - 1))
            text = " ".join(self.ref_text(ref, mangled=0.2)[0] for _, _, ref in named)
        bid = self.customer_bank(pay, sum(a for _, a, _ in invoices), c, text)
        self.group("batch", detail, [bid], [lid for lid, _, _ in invoices])
        if r.random() < 0.3:  # another open invoice of the same customer, not in this transfer
            inv = pay - DAY * r.randint(0, weeks * 7)
            self.ledger(inv, self.amount(low=50, high=5000), c.name, self.invoice_ref(inv))
            self.noise_kinds["ledger: open invoice of a batch payer"] += 1

    def _instalments(self) -> None:
        r = self.rng
        c = r.choice(self.customers)
        monthly = r.random() < 0.5
        step = 30 if monthly else 7
        k = r.randint(2, 4)
        while k > 2 and (k - 1) * (step + 2) >= self.span_days:
            k -= 1
        if (k - 1) * (step + 2) >= self.span_days:
            monthly, step = False, 7
        first = self.pay_day(last_offset=(k - 1) * (step + 2))
        inv = first - DAY * r.randint(0, 14)
        total = self.amount(low=300, high=30000)
        ref = self.invoice_ref(inv)
        if r.random() < 0.6:
            shares = [(total / k).quantize(CENT)] * k
        else:
            cuts = sorted(r.sample(range(10, 91), k - 1))
            bounds = zip([0, *cuts], [*cuts, 100], strict=True)
            shares = [(total * (b - a) / 100).quantize(CENT) for a, b in bounds]
        shares[-1] = total - sum(shares[:-1])
        lid = self.ledger(inv, total, c.name, ref)
        bids = []
        for i, share in enumerate(shares):
            day = min(self.end - DAY, first + DAY * (i * step + r.randint(0, 2)))
            text = self.ref_text(ref, mangled=0.25)[0]
            text = r.choice(("{x}", "{i}. Rate {x}", "Teilzahlung {x}", "Rate {i}/{k} {x}")).format(
                x=text, i=i + 1, k=k
            )
            bids.append(self.customer_bank(day, share, c, text))
        self.group("instalments", "monthly" if monthly else "weekly", bids, [lid])

    def _fee_deducted(self) -> None:
        r = self.rng
        c = r.choice(self.customers)
        pay = self.pay_day()
        inv = pay - DAY * r.randint(0, 10)
        amount = self.amount(low=100)
        if amount > 2000 and r.random() < 0.35:
            detail, fee = "percent", (amount * Decimal(str(round(r.uniform(0.005, 0.01), 4)))).quantize(CENT)
        else:
            detail = "flat"
            fee = cents(r.choice((250, 500, 750, 1000, 1250, 1500))) if r.random() < 0.5 else cents(r.randint(35, 1500))
        ref = self.invoice_ref(inv)
        lid = self.ledger(inv, amount, c.name, ref)
        bid = self.customer_bank(pay, amount - fee, c, self.wrap(self.ref_text(ref, mangled=0.2)[0], c, inv))
        self.group("fee_deducted", detail, [bid], [lid])

    def _month_starts(self) -> list[dt.date]:
        months, day = [], self.start.replace(day=1)
        while day < self.end:
            if day >= self.start:
                months.append(day)
            day = (day + DAY * 32).replace(day=1)
        return months or [self.start]

    def _lookalikes(self, budget: int) -> None:
        """About ``budget`` subscription payments, made up front so that every cohort stays 20-60 strong.

        A product has one price and 20-60 subscribers, who pay in the first
        days of each month of the product's run; a subscriber who stops paying
        leaves that month's invoice open and gets no more, and some have not
        paid the last month yet. A customer has at most one subscription per
        price, so that every payment is decidable.
        """
        r = self.rng
        taken: set[tuple[str, Decimal]] = set()
        months = self.month_starts
        while budget > 0:
            price = r.choice(PRICES)
            pool = [c for c in self.customers if (c.name, price) not in taken]
            subscribers = r.sample(pool, min(len(pool), r.randint(20, 60)))
            if not subscribers:
                break
            run = min(len(months), math.ceil(budget / len(subscribers)))
            first = r.randrange(len(months) - run + 1)
            for c in subscribers:
                taken.add((c.name, price))
                joined = first + (r.randrange(run) if r.random() < 0.2 else 0)
                for month in months[joined : first + run]:
                    if month == months[-1] and r.random() < 0.1:  # has not paid this month yet
                        self.ledger(month, price, c.name, self.invoice_ref(month))
                        self.noise_kinds["ledger: subscription not paid yet"] += 1
                        break
                    if r.random() < 0.03:  # stops paying: this invoice stays open, no more come
                        self.ledger(month, price, c.name, self.invoice_ref(month))
                        self.noise_kinds["ledger: unpaid subscription"] += 1
                        break
                    self._subscription_payment(c, price, month)
                    budget -= 1

    def _subscription_payment(self, c: Party, price: Decimal, month: dt.date) -> None:
        r = self.rng
        pay = min(self.end - DAY, month + DAY * r.randint(0, 4))
        ref = self.invoice_ref(month)
        lid = self.ledger(month, price, c.name, ref)
        if r.random() < 0.5:
            detail, text = "ref", self.wrap(self.ref_text(ref, mangled=0.2)[0], c, month)
        else:
            detail = "noref"
            text = r.choice(SUBSCRIPTION_TEXTS).format(mon=MONTHS_DE[month.month - 1], y=month.year)
        bid = self.customer_bank(pay, price, c, text)
        if self.identified_by(c) == "owner_name":
            detail += "_owner_name"
        self.group("lookalike", detail, [bid], [lid])

    def _fx(self) -> None:
        r = self.rng
        c = r.choice(self.foreign)
        pay = self.pay_day()
        inv = pay - DAY * r.randint(3, 30)
        instructed = self.amount(low=200, high=50000, round_share=0.1)
        rate = (c.rate * Decimal(str(round(r.uniform(0.97, 1.03), 4)))).quantize(Decimal("0.000001"))
        booked = (instructed * rate).quantize(CENT)
        roll = r.random()
        if roll < 0.6:
            detail = "exact"
        elif roll < 0.85:
            detail, booked = "cents", booked + cents(r.choice((-5, -4, -3, -2, -1, 1, 2, 3)))
        else:
            spread = Decimal(str(round(r.uniform(0.0005, 0.003), 5)))
            detail, booked = "spread", booked - (booked * spread).quantize(CENT)
        given = r.random() < 0.9
        if not given:
            detail = "no_rate"
        ref = self.invoice_ref(inv)
        lid = self.ledger(inv, instructed, c.name, ref, currency=c.currency)
        if r.random() < 0.6:
            text = r.choice(("Invoice {x}", "INV {x}", "{x}", "Payment {x}")).format(x=self.ref_text(ref, 0.2)[0])
        else:
            text = r.choice(("Payment", "Wire transfer", "Invoice payment", "/RFB/", ""))
        bid = self.customer_bank(
            pay,
            booked,
            c,
            text,
            instructed_amount=instructed,
            instructed_currency=c.currency,
            exchange_rate=rate if given else None,
        )
        self.group("fx", detail, [bid], [lid])

    def _alias(self) -> tuple[str, Party, list[Party]]:
        """A payer that pays for 1-3 customers; reused, as a factoring firm or a parent is."""
        r = self.rng
        if self.aliases and r.random() > 0.2:
            return r.choice(self.aliases)
        kind = r.choice(list(ALIAS_KINDS))
        name = r.choice(ALIAS_KINDS[kind]).format(s=r.choice(SURNAMES), r=r.choice(REGIONS))
        payer = Party(name, self._iban("DE"), "")
        clients = r.sample(self.customers, r.randint(1, 3))
        for c in clients:
            self._learn(payer.iban, name.upper(), c)
        self.aliases.append((kind, payer, clients))
        return self.aliases[-1]

    def _learned(self) -> None:
        r = self.rng
        kind, payer, clients = self._alias()
        c = r.choice(clients)
        pay = self.pay_day()
        inv = pay - DAY * r.randint(3, 30)
        amount = self.amount(round_share=0)
        lid = self.ledger(inv, amount, c.name, self.invoice_ref(inv))
        bid = self.bank(pay, amount, self.bank_name(payer.name), payer.iban, r.choice(ALIAS_TEXTS))
        self.paid.update((client.name, amount) for client in clients)
        self.group("learned", kind, [bid], [lid])

    # --- noise ------------------------------------------------------------------------

    def _bank_noise(self) -> None:
        """A line nobody will find an entry for: costs, or a payment copying an open invoice's amount."""
        r = self.rng
        day = self.pay_day()
        kind = r.choices(("fee", "card", "salary", "tax", "decoy", "unknown"), (20, 20, 15, 10, 25, 10))[0]
        self.noise_kinds[f"bank: {kind}"] += 1
        if kind == "fee":
            self.bank(day, -cents(r.choice((35, 990, 1250, 1500, 2490))), "", "", r.choice(("Kontoführung", "Entgelt")))
        elif kind == "card":
            shop = r.choice(("ARAL", "SHELL", "REWE", "BAUHAUS", "AMAZON EU", "DB VERTRIEB", "LUFTHANSA"))
            self.bank(day, -self.amount(low=5, high=800), f"{shop} {r.randint(1000, 9999)}", "", "Kartenzahlung")
        elif kind == "salary":
            person = f"{r.choice(FIRST_NAMES)} {r.choice(SURNAMES)}"
            self.bank(day, -cents(r.randint(180000, 650000)), person, self._iban("DE"), f"Gehalt {day:%m/%Y}")
        elif kind == "tax":
            who, what = r.choice((("Finanzamt Köln-Nord", "USt-VA"), ("AOK Rheinland", "Beitrag"), ("TK", "Beitrag")))
            self.bank(day, -self.amount(low=500, high=40000), who, self._iban("DE"), f"{what} {day:%m/%Y}")
        elif kind == "decoy" and self.ledgers:
            # Another customer pays the same amount as some open invoice, a few days after it.
            twin = r.choice(self.ledgers)
            amount = twin.amount if twin.currency == "EUR" else self.amount()
            other = self.other_party(self.customers if amount > 0 else self.suppliers, amount, self.owed)
            day = min(self.end - DAY, max(self.start, twin.date + DAY * r.randint(0, 10)))
            text = r.choice(("Danke", "Zahlung", "Anzahlung", f"RE-2025-{r.randint(1000, 9999)}"))
            self.customer_bank(day, amount, other, text)
        else:
            amount = self.amount()
            other = self.other_party(self.customers, amount, self.owed)
            self.customer_bank(day, amount, other, r.choice(("Anzahlung Auftrag", "Vorkasse", "Abschlag")))

    def other_party(self, parties: list[Party], amount: Decimal, taken: set[tuple[str, Decimal]]) -> Party:
        """A party with no item of ``amount`` on the other side, for a decoy that stays a decoy."""
        for _ in range(50):
            party = self.rng.choice(parties)
            if (party.name, amount) not in taken:
                break
        return party

    def _ledger_noise(self) -> None:
        """An entry nobody pays this period: an open invoice, some copying the amount of a payment nearby."""
        r = self.rng
        day = self.start - DAY * HISTORY_DAYS + DAY * r.randrange(self.span_days + HISTORY_DAYS)
        kind = r.choices(("open", "decoy", "supplier", "fx"), (40, 35, 15, 10))[0]
        self.noise_kinds[f"ledger: {kind}"] += 1
        if kind == "decoy" and self.banks:
            twin = r.choice(self.banks)
            day = twin.date - DAY * r.randint(0, 15)
            c = self.other_party(self.customers if twin.amount > 0 else self.suppliers, twin.amount, self.paid)
            self.ledger(day, twin.amount, c.name, self.invoice_ref(day))
        elif kind == "supplier":
            s = r.choice(self.suppliers)
            self.ledger(day, -self.amount(), s.name, f"R{r.randint(1000, 999999)}")
        elif kind == "fx":
            c = r.choice(self.foreign)
            self.ledger(day, self.amount(low=200, high=50000), c.name, self.invoice_ref(day), currency=c.currency)
        else:
            amount = self.amount()
            c = self.other_party(self.customers, amount, self.paid)
            self.ledger(day, amount, c.name, self.invoice_ref(day))


def span_for(n: int, span: str) -> int:
    """Days the data covers: fixed (denser as n grows) or "auto" (about 300 lines a day)."""
    return max(30, n // 300) if span == "auto" else int(span)


def score(gen: Generator, matches, suggestions) -> dict:
    """Precision and recall overall, per category and per finer label."""
    group_of = {}
    for i, g in enumerate(gen.groups):
        for item in g.bank_ids | g.ledger_ids:
            group_of[item] = i
    exact = {(g.bank_ids, g.ledger_ids): i for i, g in enumerate(gen.groups)}
    cats: dict[str, Counter] = {c: Counter() for c in [*SHARES, "noise"]}
    details: dict[str, dict[str, Counter]] = {c: {} for c in SHARES}
    for g in gen.groups:
        cats[g.category].update(groups=1, bank_lines=len(g.bank_ids), ledger_entries=len(g.ledger_ids))
        details[g.category].setdefault(g.detail, Counter())["groups"] += 1
    cats["noise"]["bank_lines"] = len(gen.banks) - len({i for i in group_of if i.startswith("b")})
    cats["noise"]["ledger_entries"] = len(gen.ledgers) - len({i for i in group_of if i.startswith("l")})
    found: set[int] = set()
    for m in matches:
        key = (frozenset(m.bank_ids), frozenset(m.ledger_ids))
        hit = exact.get(key)
        if hit is not None:
            found.add(hit)
            cats[gen.groups[hit].category].update(auto=1, correct=1)
            continue
        touched = [group_of[i] for i in (*sorted(m.bank_ids), *sorted(m.ledger_ids)) if i in group_of]
        cats[gen.groups[touched[0]].category if touched else "noise"]["auto"] += 1
    suggested = {
        exact[k] for k in ((frozenset(s.bank_ids), frozenset(s.ledger_ids)) for s in suggestions) if k in exact
    }
    for i in found:
        g = gen.groups[i]
        cats[g.category]["found"] += 1
        details[g.category][g.detail]["found"] += 1
    for i in suggested:
        cats[gen.groups[i].category]["suggested"] += 1

    def pct(a: int, b: int) -> float | None:
        return round(100 * a / b, 2) if b else None

    categories = {
        c: {
            **{k: v[k] for k in ("groups", "bank_lines", "ledger_entries", "found", "auto", "correct", "suggested")},
            "recall": pct(v["found"], v["groups"]),
            "precision": pct(v["correct"], v["auto"]),
            "suggested_pct": pct(v["suggested"], v["groups"]),
        }
        for c, v in cats.items()
    }
    by_detail = {c: {d: pct(v["found"], v["groups"]) for d, v in sorted(ds.items())} for c, ds in details.items()}
    auto = len(matches)
    correct = sum(v["correct"] for v in cats.values())
    return {
        "truth_groups": len(gen.groups),
        "auto_matches": auto,
        "correct": correct,
        "suggestions": len(suggestions),
        "precision": correct / auto if auto else 1.0,
        "recall": len(found) / len(gen.groups) if gen.groups else 1.0,
        "categories": categories,
        "recall_by_detail": by_detail,
        "detail_groups": {c: {d: v["groups"] for d, v in sorted(ds.items())} for c, ds in details.items()},
        "noise_kinds": dict(sorted(gen.noise_kinds.items())),
    }


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def measure(n: int, seed: int, span_days: int, repeat: int) -> dict:
    t0 = time.perf_counter()
    gen = Generator(n, seed, span_days)
    gen.build()
    generated = time.perf_counter() - t0
    data_rss = peak_rss_mb()
    config = EngineConfig(known_payers=gen.known_payers)
    # The engine is deterministic: the best of a few runs is its time, the
    # rest is noise from whatever else the machine does.
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        result = reconcile(gen.banks, gen.ledgers, config)
        times.append(time.perf_counter() - t0)
    return {
        "n": n,
        "span_days": span_days,
        "bank_lines": len(gen.banks),
        "ledger_entries": len(gen.ledgers),
        "known_payers": len(gen.known_payers),
        **score(gen, result.matches, result.suggestions),
        "seconds": min(times),
        "generate_seconds": round(generated, 2),
        "peak_rss_mb": peak_rss_mb(),
        "peak_rss_after_generate_mb": data_rss,
        "by_rule": result.by_rule,
    }


def print_categories(r: dict) -> None:
    """The per-category table under a size's line, and the finer labels where a category has several."""
    print(
        f"{'':>7} {'category':<16} {'groups':>7} {'bank':>7} {'ledger':>7} {'recall':>8} {'auto':>7}"
        f" {'precision':>9} {'in sugg':>8}"
    )

    def fmt(v: float | None, width: int) -> str:
        return f"{v:>{width - 1}.2f}%" if v is not None else f"{'-':>{width}}"

    for c, v in r["categories"].items():
        groups = v["groups"] if c != "noise" else "-"
        print(
            f"{'':>7} {c:<16} {groups:>7} {v['bank_lines']:>7} {v['ledger_entries']:>7} {fmt(v['recall'], 8)}"
            f" {v['auto']:>7} {fmt(v['precision'], 9)} {fmt(v['suggested_pct'], 8)}"
        )
    for c, ds in r["recall_by_detail"].items():
        if len(ds) > 1:
            parts = ", ".join(f"{d} {v:.1f}% of {r['detail_groups'][c][d]}" for d, v in ds.items())
            print(f"{'':>7} recall of {c}: {parts}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", default="1000,10000,100000", help="comma-separated N (lines per side)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument(
        "--span-days",
        default="365",
        help="days the statements cover (default 365: one year, so density grows with N); "
        '"auto" keeps about 300 lines a day, so only the history grows',
    )
    parser.add_argument("--repeat", type=int, default=3, help="runs per size; the fastest is reported")
    parser.add_argument("--json", action="store_true", help="print the results as one JSON list instead of tables")
    parser.add_argument("--one", type=int, help=argparse.SUPPRESS)  # internal: measure one size, print JSON
    args = parser.parse_args()
    if args.one:
        print(json.dumps(measure(args.one, args.seed, span_for(args.one, args.span_days), args.repeat)))
        return
    if not args.json:
        print(f"data over {args.span_days} days (--span-days); seed {args.seed}; time = best of {args.repeat} runs")
    results: list[dict] = []
    for n in (int(s) for s in args.sizes.split(",")):
        r = run_size(n, args)
        if not args.json:
            print_size(r, results[-1] if results else None)
        results.append(r)
    if args.json:
        print(json.dumps(results, indent=1))


def run_size(n: int, args: argparse.Namespace) -> dict:
    """Measure one size in a fresh process (so its peak RSS is its own); its error, if any, is shown as is."""
    cmd = [sys.executable, __file__, "--one", str(n), "--seed", str(args.seed)]
    cmd += ["--span-days", args.span_days, "--repeat", str(args.repeat)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        sys.stderr.write(proc.stderr)
        sys.exit(f"N={n} failed (exit status {proc.returncode}); the run above is {' '.join(cmd[1:])}")
    return json.loads(proc.stdout)


def print_size(r: dict, previous: dict | None) -> None:
    """One size: the summary line (as the benchmark always printed it), then the categories."""
    growth = ""
    if previous:
        # n log n predicts this ratio; printed so the growth can be judged.
        predicted = (r["n"] * math.log(r["n"])) / (previous["n"] * math.log(previous["n"]))
        growth = (
            f"  (x{r['seconds'] / previous['seconds']:.1f} time for x{r['n'] / previous['n']:.0f} n;"
            f" n log n predicts x{predicted:.1f})"
        )
    print(
        f"\n{'N':>7} {'bank':>7} {'ledger':>7} {'auto':>7} {'sugg':>6} {'precision':>9} {'recall':>7} {'time s':>7}"
        f" {'RSS MB':>7}  by rule"
    )
    print(
        f"{r['n']:>7} {r['bank_lines']:>7} {r['ledger_entries']:>7} {r['auto_matches']:>7} {r['suggestions']:>6} "
        f"{r['precision'] * 100:>8.2f}% {r['recall'] * 100:>6.2f}% {r['seconds']:>7.2f} {r['peak_rss_mb']:>7.0f}  "
        f"{r['by_rule']}{growth}"
    )
    print(
        f"{'':>7} data generated in {r['generate_seconds']:.1f} s; peak RSS before the engine ran:"
        f" {r['peak_rss_after_generate_mb']:.0f} MB"
    )
    print_categories(r)


if __name__ == "__main__":
    main()
