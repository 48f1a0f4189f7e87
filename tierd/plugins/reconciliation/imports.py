"""Importing a statement file: parse, check, de-duplicate, store in one go.

The work is split in two so that a large file never blocks the event loop:
:func:`plan_import` is pure and runs in a worker thread (parse, balance
check, de-duplication keys); :func:`import_statement` then writes the new
lines in one transaction. A malformed file raises before anything is
written, so it imports nothing.

De-duplication: each line gets a key. Where the bank gives its own
reference, the key is that reference; otherwise it is a fingerprint of date,
amount, currency, references and counterparty. Either way an occurrence
index is appended (the n-th identical line of the file), so two genuine
identical payments on the same day are both kept, while importing the same
file again, or a statement overlapping an earlier one, adds nothing.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import logging
from collections import Counter
from decimal import Decimal

from tierd.core.ids import new_id
from tierd.core.registry import Statement, StatementError, StatementLine
from tierd.core.schema import unicode_problem

from . import store
from .importers import detect_format
from .service import ReconciliationService

EVENT_IMPORTED = "reconciliation.statement.imported"

log = logging.getLogger("tierd.reconciliation.imports")


class AccountMismatch(StatementError):
    """The statement names another bank account than the one it is imported into."""


@dataclasses.dataclass
class ImportPlan:
    format: str
    sha256: str
    lines: list[dict]
    rejected: list[dict]
    balances: list[dict]
    statements: int


def _norm_account(text: str | None) -> str:
    return "".join(ch for ch in (text or "").upper() if ch.isalnum())


def check_account(stmt: Statement, account: dict, index: int) -> None:
    """Refuse a statement that names a different IBAN / account number."""
    named = _norm_account(stmt.account)
    known = [_norm_account(account.get("iban")), _norm_account(account.get("account_number"))]
    known = [k for k in known if k]
    if not named or not known:
        return
    # MT940 :25: is often "BLZ/account" and OFX ACCTID may carry a prefix,
    # so an account number matching the end of what the statement says counts.
    if not any(named == k or named.endswith(k) or k.endswith(named) for k in known):
        raise AccountMismatch(f"the statement is for account {stmt.account!r}, not this account", f"statement {index}")


def check_balances(stmt: Statement, index: int) -> dict | None:
    """Opening balance + lines = closing balance? (None when the format has no balances)."""
    if stmt.opening_balance is None or stmt.closing_balance is None:
        return None
    total = sum((ln.amount for ln in stmt.lines), Decimal(0))
    computed = stmt.opening_balance + total
    return {
        "statement": stmt.statement_id or str(index),
        "opening": str(stmt.opening_balance),
        "closing": str(stmt.closing_balance),
        "lines_total": str(total),
        "computed_closing": str(computed),
        "ok": computed == stmt.closing_balance,
    }


def fingerprint(line: StatementLine) -> str:
    parts = [
        line.booking_date.isoformat(),
        str(line.amount.normalize()),
        line.currency,
        line.end_to_end_id,
        " ".join(line.remittance.split()).lower(),
        line.counterparty_name.lower(),
        line.counterparty_account,
    ]
    return hashlib.sha256("\x1f".join(parts).encode()).hexdigest()[:32]


def dedup_keys(lines: list[StatementLine]) -> list[str]:
    """One key per line; the n-th identical line of a file gets ``#n``."""
    seen: Counter = Counter()
    keys = []
    for line in lines:
        base = f"ref:{line.bank_reference}" if line.bank_reference else f"fp:{fingerprint(line)}"
        keys.append(f"{base}#{seen[base]}")
        seen[base] += 1
    return keys


def line_row(line: StatementLine, key: str) -> dict:
    return {
        "booking_date": line.booking_date.isoformat(),
        "value_date": line.value_date.isoformat() if line.value_date else None,
        "amount": str(line.amount),
        "currency": line.currency,
        "counterparty_name": line.counterparty_name,
        "counterparty_account": line.counterparty_account,
        "remittance": line.remittance,
        "end_to_end_id": line.end_to_end_id,
        "bank_reference": line.bank_reference,
        "instructed_amount": str(line.instructed_amount) if line.instructed_amount is not None else None,
        "instructed_currency": line.instructed_currency,
        "exchange_rate": str(line.exchange_rate) if line.exchange_rate is not None else None,
        "dedup_key": key,
        "raw": line.raw,
        "location": line.location,
    }


def plan_import(
    data: bytes, importers: dict, account: dict, csv_layout: dict | None, fmt: str | None = None, filename: str = ""
) -> ImportPlan:
    """Parse and check a file; pure (no I/O), so it can run in a thread."""
    if fmt is None:
        fmt = detect_format(data, importers, filename, fallback="csv" if csv_layout else None)
    importer = importers.get(fmt)
    if importer is None:
        raise StatementError(f"unknown format {fmt!r} (known: {', '.join(sorted(importers))})")
    if fmt == "csv" and not csv_layout:
        raise StatementError("this account has no CSV layout: set its csv_format (reconciliation.csv_formats)")
    options = {"currency": account["currency"], "csv_format": csv_layout}
    try:
        statements = importer.parse(data, options)
    except StatementError:
        raise
    except Exception as exc:
        # An importer (perhaps a third party's) that crashes on a file could
        # not read it: the caller gets a clear error, the log gets the trace.
        log.exception("the %s importer failed", fmt)
        raise StatementError(f"the {fmt} importer could not read this file ({exc.__class__.__name__}: {exc})") from exc
    lines: list[StatementLine] = []
    balances = []
    for n, stmt in enumerate(statements, 1):
        check_account(stmt, account, n)
        check = check_balances(stmt, n)
        if check:
            balances.append(check)
        lines.extend(stmt.lines)
    rows, rejected = [], []
    for line, key in zip(lines, dedup_keys(lines), strict=True):
        if line.currency != account["currency"]:
            rejected.append(
                {
                    "location": line.location,
                    "reason": f"currency {line.currency}, the account is in {account['currency']}",
                }
            )
            continue
        row = line_row(line, key)
        # Decoders refuse such text; an importer (a third party's) may still make it.
        problem = next(filter(None, (unicode_problem(v) for v in row.values() if isinstance(v, str))), None)
        if problem:
            raise StatementError(problem, line.location or None)
        rows.append(row)
    return ImportPlan(
        format=fmt,
        sha256=hashlib.sha256(data).hexdigest(),
        lines=rows,
        rejected=rejected,
        balances=balances,
        statements=len(statements),
    )


async def import_statement(
    daemon,
    tenant: str,
    account: dict,
    data: bytes,
    *,
    fmt: str | None,
    filename: str,
    csv_layout: dict | None,
    actor: str,
) -> dict:
    """Import one file into an account; returns the counts. Raises StatementError."""
    importers = daemon.registries.statement_importers
    plan = await asyncio.to_thread(plan_import, data, importers, account, csv_layout, fmt, filename)
    now = daemon.clock.time()
    import_id = new_id("imp_")
    async with daemon.db.transaction() as tx:
        known = await store.known_dedup_keys(tx, tenant, account["id"], [ln["dedup_key"] for ln in plan.lines])
        new = [ln for ln in plan.lines if ln["dedup_key"] not in known]
        report = {"balances": plan.balances, "rejected": plan.rejected[:100], "statements": plan.statements}
        record = {
            "id": import_id,
            "filename": filename,
            "format": plan.format,
            "sha256": plan.sha256,
            "new": len(new),
            "duplicates": len(plan.lines) - len(new),
            "rejected": len(plan.rejected),
            "report": report,
            "created_at": now,
            "created_by": actor,
        }
        await store.insert_import(tx, tenant, account["id"], record)
        await store.insert_lines(tx, tenant, account["id"], import_id, new, now)
        await store.audit(
            tx,
            tenant,
            account["id"],
            now,
            actor,
            "statement.imported",
            import_id,
            {"filename": filename, "format": plan.format, "new": len(new)},
        )
    log.info(
        "statement imported for tenant %s, account %s: format %s, %d new line(s), %d duplicate(s), "
        "%d rejected, %d balance mismatch(es) (import %s, file %r, by %s)",
        tenant,
        account["id"],
        plan.format,
        record["new"],
        record["duplicates"],
        record["rejected"],
        sum(not b["ok"] for b in plan.balances),
        import_id,
        filename,
        actor,
    )
    metrics = ReconciliationService.of(daemon).metrics
    metrics.lines_imported.labels(plan.format).inc(record["new"])
    metrics.duplicates.inc(record["duplicates"])
    mismatches = [b for b in plan.balances if not b["ok"]]
    result = {
        "import_id": import_id,
        "account": account["id"],
        "format": plan.format,
        "filename": filename,
        "statements": plan.statements,
        "new": record["new"],
        "duplicates": record["duplicates"],
        "rejected": record["rejected"],
        "rejected_lines": plan.rejected[:100],
        "balances": plan.balances,
        "balance_mismatches": len(mismatches),
    }
    await daemon.bus.publish(
        tenant, EVENT_IMPORTED, {k: v for k, v in result.items() if k != "rejected_lines"}, key=import_id
    )
    return result
