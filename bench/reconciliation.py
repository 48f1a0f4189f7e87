"""Benchmark of the reconciliation matching engine on labelled synthetic data.

For each size N it generates about N bank lines and N ledger entries with a
known truth, runs ``reconcile()`` with the default rules, and prints the
precision and recall of the automatic matches, the time the engine took and
the peak RSS of the process (each size runs in a fresh process so the peaks
do not mix).

The mix, per truth group (a group is the bank lines and ledger entries that
belong together):

* 44% exact reference in the remittance (written in varied ways)
* 12% reference with a typo, 10% no reference (counterparty name only)
* 5% neither reference nor name on the bank side (amount and date only)
* 5% batch deposits (one bank line = 2..4 ledger entries of one customer)
* 4% partial payments (2..3 bank lines = one ledger entry)
* 5% bank fees deducted (amounts differ by up to 2.50 or 0.5%)
* 15% same-amount decoys: a round amount, and another customer's entry (or
  payment) of the same amount a day or two away; besides, 15% of all amounts
  are round (100.00, 250.00 ...), and dates shift by 0..3 days between sides
* unmatched noise on both sides (at least 5%, topped up so that each side
  has N items), half of it copying the amount of a real item nearby

Usage: ``python bench/reconciliation.py [--sizes 1000,10000,100000] [--seed 1] [--span-days 365|auto] [--repeat 3]``

With the default one-year span the data gets denser as N grows (more
same-amount lines per day), which is the harder case for time; ``auto``
keeps the density of a busy account and lets only the history grow.
Figures only, never asserts: see DESIGN.md ("bench/ prints figures").
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import random
import resource
import subprocess
import sys
import time
from decimal import Decimal
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tierd.plugins.reconciliation.matching import BankLine, LedgerEntry, reconcile  # noqa: E402

START = dt.date(2026, 1, 1)
SYLLABLES = (
    "ka lo mi ne ra to su vi xe zo ber tan gor lin mar pel quin rod sten vor wel "
    "da fi hu jo ku le no pa ri se ti bu cho dre fla gri pro tra sol ven"
).split()
LEGAL = ["GmbH", "AG", "Ltd", "LLC", "Inc", "SA", "BV", "", ""]
JUNK = ["thank you", "payment", "Zahlung", "ref", "order", "monthly", "invoice", "Rechnung", "pmt", ""]


class Generator:
    def __init__(self, n: int, seed: int, span_days: int = 365):
        self.rng = random.Random(seed)
        self.n = n
        self.span_days = span_days
        self.banks: list[BankLine] = []
        self.ledgers: list[LedgerEntry] = []
        self.truth: list[tuple[frozenset, frozenset]] = []
        self.kind_of: dict[tuple[frozenset, frozenset], str] = {}  # truth group -> kind of mix
        self.invoice = 100000
        # Each customer pays about 40 times a year, whatever the span.
        n_companies = max(50, int(n / 40 * 365 / span_days))
        self.companies = sorted({self._company() for _ in range(n_companies)})

    # --- building blocks --------------------------------------------------------

    def _company(self) -> str:
        r = self.rng
        word = "".join(r.choice(SYLLABLES) for _ in range(r.randint(2, 4))).capitalize()
        second = "".join(r.choice(SYLLABLES) for _ in range(2)).capitalize() if r.random() < 0.5 else ""
        return " ".join(p for p in (word, second, r.choice(LEGAL)) if p)

    def _bank_name(self, name: str) -> str:
        """How the bank spells a customer: case, legal form and small typos vary."""
        r = self.rng
        roll = r.random()
        if roll < 0.4:
            return name.upper()
        if roll < 0.6:
            return name.replace("GmbH", "G.m.b.H.").replace("Ltd", "Limited")
        if roll < 0.75 and len(name) > 6:
            i = r.randrange(1, len(name) - 2)
            return name[:i] + name[i + 1] + name[i] + name[i + 2 :]  # transposed letters
        return name

    def _amount(self) -> Decimal:
        r = self.rng
        if r.random() < 0.15:
            return Decimal(r.choice([50, 100, 150, 200, 250, 300, 500, 750, 1000, 1500, 2000]))
        return Decimal(round(10 ** r.uniform(0.7, 4.3), 2)).quantize(Decimal("0.01"))

    def _day(self) -> dt.date:
        return START + dt.timedelta(days=self.rng.randrange(self.span_days))

    def _ref(self) -> str:
        self.invoice += self.rng.randint(1, 3)
        return f"INV-{self.invoice}"

    def _remit_with(self, ref: str) -> str:
        r = self.rng
        digits = ref.split("-")[1]
        form = r.choice([ref, ref.replace("-", " "), ref.replace("-", ""), f"inv/{digits}", ref.lower()])
        return f"{r.choice(JUNK)} {form} {r.choice(JUNK)}".strip()

    def _misspell(self, ref: str) -> str:
        r = self.rng
        prefix, digits = ref.split("-")
        i = r.randrange(len(digits) - 1)
        if r.random() < 0.5:
            digits = digits[:i] + digits[i + 1] + digits[i] + digits[i + 2 :]
        else:
            digits = digits[:i] + str((int(digits[i]) + 1) % 10) + digits[i + 1 :]
        return f"{prefix}-{digits}"

    def _bank(self, amount, date, name="", remit="", ccy="EUR") -> str:
        bid = f"b{len(self.banks):07d}"
        self.banks.append(BankLine(bid, date, amount, ccy, name, remit))
        return bid

    def _ledger(self, amount, date, name="", ref="") -> str:
        lid = f"l{len(self.ledgers):07d}"
        self.ledgers.append(LedgerEntry(lid, date, amount, "EUR", name, ref, external_id=lid))
        return lid

    # --- the mix ---------------------------------------------------------------------

    def build(self):
        r = self.rng
        kinds = [
            ("exact", 44),
            ("typo", 12),
            ("noref", 10),
            ("bare", 5),
            ("batch", 5),
            ("partial", 4),
            ("fee", 5),
            ("decoy", 15),
        ]
        weights = [w for _, w in kinds]
        while max(len(self.banks), len(self.ledgers)) < self.n * 0.95:
            kind = r.choices([k for k, _ in kinds], weights)[0]
            getattr(self, "_" + kind)()
            self.kind_of[self.truth[-1]] = kind
        # Unmatched noise on both sides: at least 5%, and enough to give
        # each side N items.
        while len(self.banks) < self.n:
            self._bank_noise()
        while len(self.ledgers) < self.n:
            self._ledger_noise()
        # Items arrive in no particular order.
        r.shuffle(self.banks)
        r.shuffle(self.ledgers)

    def _pair(self, remit_of, name_on_bank=True, amount=None):
        name = self.rng.choice(self.companies)
        ref = self._ref()
        amount = amount if amount is not None else self._amount()
        if self.rng.random() < 0.2:
            amount = -amount  # outgoing payments against supplier bills
        ld = self._day()
        bd = ld + dt.timedelta(days=self.rng.choice([0, 0, 1, 1, 2, 3]))
        lid = self._ledger(amount, ld, name, ref)
        bid = self._bank(amount, bd, self._bank_name(name) if name_on_bank else "", remit_of(ref))
        self.truth.append((frozenset([bid]), frozenset([lid])))

    def _exact(self):
        self._pair(self._remit_with)

    def _typo(self):
        self._pair(lambda ref: self._remit_with(self._misspell(ref)))

    def _noref(self):
        self._pair(lambda ref: self.rng.choice(JUNK))

    def _bare(self):
        self._pair(lambda ref: "", name_on_bank=False)

    def _decoy(self):
        # A round amount, and another customer's entry of the same amount nearby.
        amount = Decimal(self.rng.choice([100, 200, 250, 500, 1000]))
        self._pair(self._remit_with if self.rng.random() < 0.5 else (lambda ref: "payment"), amount=amount)
        # Half the time another customer owes it (ledger side), half the time
        # another customer pays it (bank side).
        true = self.ledgers[-1]
        near = true.date + dt.timedelta(days=self.rng.choice([-1, 0, 1, 2]))
        if self.rng.random() < 0.5:
            self._ledger(true.amount, near, self.rng.choice(self.companies), self._ref())
        else:
            self._bank(true.amount, near, self._bank_name(self.rng.choice(self.companies)), "payment")

    def _batch(self):
        r = self.rng
        name = r.choice(self.companies)
        d = self._day()
        parts = [self._amount() for _ in range(r.randint(2, 4))]
        refs = [self._ref() for _ in parts]
        lids = [
            self._ledger(a, d - dt.timedelta(days=r.randint(0, 2)), name, ref)
            for a, ref in zip(parts, refs, strict=True)
        ]
        remit = " ".join(refs) if r.random() < 0.5 else "collective deposit"
        bid = self._bank(sum(parts), d, self._bank_name(name), remit)
        self.truth.append((frozenset([bid]), frozenset(lids)))

    def _partial(self):
        r = self.rng
        name = r.choice(self.companies)
        ref = self._ref()
        d = self._day()
        total = (self._amount() + Decimal(100)).quantize(Decimal("0.01"))
        k = r.randint(2, 3)
        cuts = sorted(Decimal(c) / 100 for c in r.sample(range(10, 91), k - 1))  # distinct: no empty share
        shares, last = [], Decimal(0)
        for c in cuts + [Decimal(1)]:
            shares.append((total * (c - last)).quantize(Decimal("0.01")))
            last = c
        shares[-1] = total - sum(shares[:-1])
        lid = self._ledger(total, d, name, ref)
        remit = (lambda: self._remit_with(ref)) if r.random() < 0.7 else (lambda: "part payment")
        bids = [self._bank(s, d + dt.timedelta(days=r.randint(0, 10)), self._bank_name(name), remit()) for s in shares]
        self.truth.append((frozenset(bids), frozenset([lid])))

    def _fee(self):
        r = self.rng
        name = r.choice(self.companies)
        ref = self._ref()
        amount = self._amount() + Decimal(50)
        fee = min(Decimal("2.50"), (amount * Decimal("0.005")).quantize(Decimal("0.01")))
        fee = max(Decimal("0.10"), (fee * Decimal(r.uniform(0.3, 1))).quantize(Decimal("0.01")))
        ld = self._day()
        lid = self._ledger(amount, ld, name, ref)
        remit = self._remit_with(ref if r.random() < 0.8 else self._misspell(ref))
        bid = self._bank(amount - fee, ld + dt.timedelta(days=r.randint(0, 3)), self._bank_name(name), remit)
        self.truth.append((frozenset([bid]), frozenset([lid])))

    def _bank_noise(self):
        r = self.rng
        # Fees, interest, card payments nobody booked; half of them with the
        # amount of some ledger entry, booked near it.
        if r.random() < 0.5 and self.ledgers:
            twin = r.choice(self.ledgers)  # same amount as some ledger entry, nearby
            self._bank(
                twin.amount,
                twin.date + dt.timedelta(days=r.randint(-10, 10)),
                r.choice(["", "CARD 4711", "BANK"]),
                r.choice(["card payment", "interest", "charges Q3", ""]),
            )
        else:
            self._bank(-self._amount(), self._day(), "", r.choice(["card payment", "interest", "charges"]))

    def _ledger_noise(self):
        r = self.rng
        # Invoices not paid yet; half of them with the amount of some bank line.
        if r.random() < 0.5 and self.banks:
            twin = r.choice(self.banks)
            self._ledger(
                twin.amount, twin.date + dt.timedelta(days=r.randint(-10, 10)), r.choice(self.companies), self._ref()
            )
        else:
            self._ledger(self._amount(), self._day(), r.choice(self.companies), self._ref())


def span_for(n: int, span: str) -> int:
    """Days the data covers: fixed (denser as n grows) or "auto" (about 300 lines a day)."""
    return max(30, n // 300) if span == "auto" else int(span)


def measure(n: int, seed: int, span_days: int, repeat: int) -> dict:
    gen = Generator(n, seed, span_days)
    gen.build()
    # The engine is deterministic: the best of a few runs is its time, the
    # rest is noise from whatever else the machine does.
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        result = reconcile(gen.banks, gen.ledgers)
        times.append(time.perf_counter() - t0)
    elapsed = min(times)
    truth = set(gen.truth)
    auto = [(frozenset(m.bank_ids), frozenset(m.ledger_ids)) for m in result.matches]
    correct = sum(1 for a in auto if a in truth)
    found = set(auto) & truth
    kinds = sorted(set(gen.kind_of.values()))
    recall_by_kind = {
        k: round(
            100
            * sum(1 for t, kk in gen.kind_of.items() if kk == k and t in found)
            / max(1, sum(1 for kk in gen.kind_of.values() if kk == k)),
            1,
        )
        for k in kinds
    }
    return {
        "n": n,
        "span_days": span_days,
        "bank_lines": len(gen.banks),
        "ledger_entries": len(gen.ledgers),
        "truth_groups": len(truth),
        "auto_matches": len(auto),
        "correct": correct,
        "suggestions": len(result.suggestions),
        "precision": correct / len(auto) if auto else 1.0,
        "recall": correct / len(truth) if truth else 1.0,
        "seconds": elapsed,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "by_rule": result.by_rule,
        "recall_by_kind": recall_by_kind,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", default="1000,10000,100000", help="comma-separated N (lines per side)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument(
        "--span-days",
        default="365",
        help="days the data covers (default 365: one year, so density grows with N); "
        '"auto" keeps about 300 lines a day, so only the history grows',
    )
    parser.add_argument("--repeat", type=int, default=3, help="runs per size; the fastest is reported")
    parser.add_argument("--one", type=int, help=argparse.SUPPRESS)  # internal: measure one size, print JSON
    args = parser.parse_args()
    if args.one:
        print(json.dumps(measure(args.one, args.seed, span_for(args.one, args.span_days), args.repeat)))
        return
    print(f"data over {args.span_days} days (--span-days); seed {args.seed}; time = best of {args.repeat} runs")
    print(
        f"{'N':>7} {'bank':>7} {'ledger':>7} {'auto':>7} {'sugg':>6} {'precision':>9} {'recall':>7} {'time s':>7}"
        f" {'RSS MB':>7}  by rule"
    )
    previous = None
    for n in (int(s) for s in args.sizes.split(",")):
        out = subprocess.run(
            [
                sys.executable,
                __file__,
                "--one",
                str(n),
                "--seed",
                str(args.seed),
                "--span-days",
                args.span_days,
                "--repeat",
                str(args.repeat),
            ],
            check=True,
            capture_output=True,
            text=True,
        ).stdout
        r = json.loads(out)
        growth = ""
        if previous:
            # n log n predicts this ratio; printed so the growth can be judged.
            predicted = (r["n"] * math.log(r["n"])) / (previous["n"] * math.log(previous["n"]))
            growth = (
                f"  (x{r['seconds'] / previous['seconds']:.1f} time for x{r['n'] / previous['n']:.0f} n;"
                f" n log n predicts x{predicted:.1f})"
            )
        print(
            f"{r['n']:>7} {r['bank_lines']:>7} {r['ledger_entries']:>7} {r['auto_matches']:>7} {r['suggestions']:>6} "
            f"{r['precision'] * 100:>8.2f}% {r['recall'] * 100:>6.2f}% {r['seconds']:>7.2f} {r['peak_rss_mb']:>7.0f}  "
            f"{r['by_rule']}{growth}"
        )
        print(f"{'':>7} recall by kind (%): {r['recall_by_kind']}")
        previous = r


if __name__ == "__main__":
    main()
