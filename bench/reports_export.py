"""XLSX of 200,000 rows: tierd's exporter vs pandas (read_sql + to_excel with openpyxl).

    python bench/reports_export.py [--rows 200000]

Both read the same rows from the same SQLite file (a deliveries-like table:
texts, integers, a decimal stored as text, an instant, a date, a boolean) and
write typed cells: tierd streams the cursor into :class:`XlsxExporter`
(XlsxWriter, constant memory); pandas reads the whole result with
``read_sql``, converts the decimal, instant and date columns, and writes it
with ``DataFrame.to_excel(engine="openpyxl")``. Each side runs in a process of
its own; printed: wall time, peak RSS growth over the process before the
export (``ru_maxrss`` minus the RSS just before), file size, and the ratios.

pandas and openpyxl are not tierd's dependencies: install them into a folder
of their own and name it in ``$TIERD_BENCH_PANDAS`` (default
``/tmp/pandas-bench``)::

    pip install --target /tmp/pandas-bench pandas openpyxl

Without them the baseline is skipped, with a message.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PANDAS_DIR = os.environ.get("TIERD_BENCH_PANDAS", "/tmp/pandas-bench")
START = 1_764_590_400  # 2025-12-01T12:00:00Z
QUERY = "SELECT endpoint, event_type, status, attempts, amount, created_at, day, ok FROM deliveries ORDER BY id"


def make_db(path: Path, rows: int) -> None:
    conn = sqlite3.connect(path)
    conn.execute(
        "CREATE TABLE deliveries (id INTEGER PRIMARY KEY, endpoint TEXT, event_type TEXT, status INTEGER,"
        " attempts INTEGER, amount TEXT, created_at INTEGER, day TEXT, ok INTEGER)"
    )
    types = ["invoice.paid", "invoice.voided", "order.created", "order.shipped", "customer.updated"]
    conn.executemany(
        "INSERT INTO deliveries VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (
            (
                i,
                f"https://hooks.example.test/tenant-{i % 37}/endpoint-{i % 101}",
                types[i % len(types)],
                200 if i % 13 else 503,
                1 + i % 4,
                f"{(i * 7919) % 100000 // 100}.{i % 100:02d}",
                START + i * 13,
                f"2026-11-{1 + i % 30:02d}",
                int(i % 13 != 0),
            )
            for i in range(rows)
        ),
    )
    conn.commit()
    conn.close()


def rss_now_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 1e6


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e3  # KiB on Linux


def side_tierd(db: Path, out: Path) -> None:
    from tierd.core.registry import Column, ReportData
    from tierd.plugins.reports.exporters.xlsx import XlsxExporter

    columns = [
        Column("endpoint", "text"),
        Column("event_type", "text"),
        Column("status", "integer"),
        Column("attempts", "integer"),
        Column("amount", "decimal"),
        Column("created_at", "instant"),
        Column("day", "date"),
        Column("ok", "boolean"),
    ]
    before = rss_now_mb()
    started = time.perf_counter()
    conn = sqlite3.connect(db)
    cursor = conn.execute(QUERY)
    data = ReportData("deliveries", "Deliveries", "", "acme", {}, time.time(), columns, iter(cursor))
    with open(out, "wb") as f:
        XlsxExporter().export([data], f)
    conn.close()
    report(started, before, out)


def side_pandas(db: Path, out: Path) -> None:
    import pandas as pd

    before = rss_now_mb()
    started = time.perf_counter()
    conn = sqlite3.connect(db)
    df = pd.read_sql(QUERY, conn)
    df["amount"] = df["amount"].astype(float)
    df["created_at"] = pd.to_datetime(df["created_at"], unit="s")
    df["day"] = pd.to_datetime(df["day"])
    df["ok"] = df["ok"].astype(bool)
    df.to_excel(out, index=False, engine="openpyxl", sheet_name="Deliveries")
    conn.close()
    report(started, before, out)


def report(started: float, before: float, out: Path) -> None:
    seconds = time.perf_counter() - started
    print(json.dumps({"seconds": seconds, "rss_growth_mb": peak_rss_mb() - before, "bytes": out.stat().st_size}))


def run_side(side: str, db: Path, out: Path) -> dict | None:
    env = dict(os.environ)
    if side == "pandas":
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [PANDAS_DIR, env.get("PYTHONPATH")]))
    proc = subprocess.run(
        [sys.executable, __file__, "--side", side, "--db", str(db), "--out", str(out)],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
    )
    if proc.returncode != 0:
        print(f"{side}: failed\n{proc.stderr.strip()[-2000:]}")
        return None
    return json.loads(proc.stdout.strip().splitlines()[-1])


def pandas_available() -> bool:
    probe = "import pandas, openpyxl"
    env = dict(os.environ) | {"PYTHONPATH": PANDAS_DIR}
    return subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True).returncode == 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--side", choices=["tierd", "pandas"], help=argparse.SUPPRESS)
    parser.add_argument("--db", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.side:
        (side_tierd if args.side == "tierd" else side_pandas)(args.db, args.out)
        return
    with tempfile.TemporaryDirectory(prefix="tierd-bench-") as tmp:
        folder = Path(tmp)
        db = folder / "bench.db"
        make_db(db, args.rows)
        print(f"XLSX of {args.rows:,} rows (8 typed columns), from the same SQLite file")
        ours = run_side("tierd", db, folder / "tierd.xlsx")
        if ours:
            print(
                f"  tierd  (XlsxWriter, constant memory): {ours['seconds']:6.2f} s, "
                f"peak RSS +{ours['rss_growth_mb']:6.1f} MB, {ours['bytes'] / 1e6:.1f} MB file"
            )
        if not pandas_available():
            print(
                f"  pandas: skipped, not importable from {PANDAS_DIR} "
                f"(pip install --target {PANDAS_DIR} pandas openpyxl, or set TIERD_BENCH_PANDAS)"
            )
            return
        theirs = run_side("pandas", db, folder / "pandas.xlsx")
        if theirs:
            print(
                f"  pandas (read_sql + to_excel, openpyxl): {theirs['seconds']:6.2f} s, "
                f"peak RSS +{theirs['rss_growth_mb']:6.1f} MB, {theirs['bytes'] / 1e6:.1f} MB file"
            )
        if ours and theirs:
            print(
                f"  pandas / tierd: {theirs['seconds'] / ours['seconds']:.1f}x the time, "
                f"{theirs['rss_growth_mb'] / max(ours['rss_growth_mb'], 0.1):.0f}x the peak RSS growth"
            )


if __name__ == "__main__":
    main()
