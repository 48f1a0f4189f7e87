"""Reconciliation runs: open items in, matches and suggestions out, events published.

A run is a row before any work starts (so a crash leaves a trace, marked
failed at the next start). The engine runs in a worker thread over a
snapshot of the open items and what earlier matches taught (aliases.py);
its matches, and what they teach, are then written in one transaction,
each guarded against items that were matched meanwhile by a person (those
matches are skipped, never forced).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import time
from collections import Counter
from decimal import Decimal

from . import aliases, store
from .config import EXCEPTIONS, account_settings, engine_config
from .matching import BankLine, LedgerEntry, reconcile
from .service import ReconciliationService

log = logging.getLogger("tierd.reconciliation.runs")

EVENT_RUN_COMPLETED = "reconciliation.run.completed"
EVENT_EXCEPTIONS = "reconciliation.exceptions"
#: How many exception items an event lists (the count is always complete).
EXCEPTION_SAMPLE = 50


def _bank_line(row: dict) -> BankLine:
    return BankLine(
        id=str(row["id"]),
        date=dt.date.fromisoformat(row["booking_date"]),
        amount=Decimal(row["amount"]),
        currency=row["currency"],
        counterparty=row["counterparty_name"],
        remittance=row["remittance"],
        end_to_end_id=row["end_to_end_id"],
        bank_reference=row["bank_reference"],
        counterparty_account=row["counterparty_account"],
        instructed_amount=Decimal(row["instructed_amount"]) if row["instructed_amount"] else None,
        instructed_currency=row["instructed_currency"],
        exchange_rate=Decimal(row["exchange_rate"]) if row["exchange_rate"] else None,
    )


def _ledger_entry(row: dict) -> LedgerEntry:
    return LedgerEntry(
        id=str(row["id"]),
        date=dt.date.fromisoformat(row["date"]),
        amount=Decimal(row["amount"]),
        currency=row["currency"],
        counterparty=row["counterparty"],
        reference=row["reference"],
        description=row["description"],
        external_id=row["external_id"],
    )


def _row(m) -> dict:
    """An engine match or suggestion as the store writes it (item ids back to integers)."""
    return {
        "rule": m.rule,
        "score": m.score,
        "explanation": m.explanation,
        "adjustment": m.adjustment,
        "exchange_rate": m.exchange_rate,
        "bank_ids": [int(i) for i in m.bank_ids],
        "ledger_ids": [int(i) for i in m.ledger_ids],
    }


async def _learn(tx, tenant: str, account_id: str, created: list[dict], lines, entries, now: float) -> None:
    """What the run's matches teach, learnt in bulk in the run's transaction (see aliases.py)."""
    line_of = {r["id"]: r for r in lines}
    entry_of = {r["id"]: r for r in entries}
    await aliases.learn_many(
        tx,
        tenant,
        account_id,
        ((m["id"], [line_of[i] for i in m["bank_ids"]], [entry_of[i] for i in m["ledger_ids"]]) for m in created),
        now,
    )


async def run_account(daemon, tenant: str, account: dict, trigger: str, actor: str) -> dict:
    """Run the account's rules over its open items; returns the finished run."""
    service = ReconciliationService.of(daemon)
    # One run per account at a time: two concurrent runs would only fight over the same open items.
    async with service.run_lock(tenant, account["id"]):
        started = time.monotonic()
        run = await _run(daemon, tenant, account, trigger, actor)
    service.metrics.run_seconds.observe(time.monotonic() - started)
    for rule, count in run["counts"].get("by_rule", {}).items():
        service.metrics.matches.labels(rule).inc(count)
    return run


async def _run(daemon, tenant: str, account: dict, trigger: str, actor: str) -> dict:
    db = daemon.db
    settings = account_settings(daemon.config, tenant, account["id"])
    config = engine_config(settings)
    run_id = await store.start_run(db, tenant, account["id"], trigger, daemon.clock.time())
    try:
        lines = await store.open_lines(db, tenant, account["id"])
        entries = await store.open_entries(db, tenant, account["id"])
        config.known_payers = await aliases.known_payers(db, tenant, account["id"])
        result = await asyncio.to_thread(
            reconcile, [_bank_line(r) for r in lines], [_ledger_entry(r) for r in entries], config
        )
        now = daemon.clock.time()
        async with db.transaction() as tx:
            created, skipped = await store.create_matches_bulk(
                tx, tenant, account["id"], [_row(m) for m in result.matches], run_id=run_id, actor=actor, now=now
            )
            made = len(created)
            await _learn(tx, tenant, account["id"], created, lines, entries, now)
            matched_lines = sum(len(m["bank_ids"]) for m in created)
            matched_entries = sum(len(m["ledger_ids"]) for m in created)
            await store.replace_suggestions(
                tx, tenant, account["id"], run_id, [_row(s) for s in result.suggestions], now
            )
            counts = {
                "bank_lines_open_before": len(lines),
                "ledger_entries_open_before": len(entries),
                "matches": made,
                "suggestions": len(result.suggestions),
                "skipped_conflicts": skipped,
                "bank_lines_matched": matched_lines,
                "ledger_entries_matched": matched_entries,
                "bank_lines_open": len(lines) - matched_lines,
                "ledger_entries_open": len(entries) - matched_entries,
                "by_rule": dict(Counter(m["rule"] for m in created)),  # as written, conflicts left out
            }
            await store.finish_run(tx, tenant, run_id, "completed", counts, now)
            await store.audit(tx, tenant, account["id"], now, actor, "run.completed", run_id, counts)
    except Exception as exc:
        log.error(
            "reconciliation run %s for tenant %s, account %s failed: %s: %s",
            run_id,
            tenant,
            account["id"],
            type(exc).__name__,
            exc,
        )
        await store.finish_run(db, tenant, run_id, "failed", {}, daemon.clock.time(), error=str(exc))
        raise
    log.info(
        "reconciliation run %s for tenant %s, account %s (%s) finished: %d matched, %d suggested, "
        "%d statement line(s) and %d ledger entr(ies) open",
        run_id,
        tenant,
        account["id"],
        trigger,
        counts["matches"],
        counts["suggestions"],
        counts["bank_lines_open"],
        counts["ledger_entries_open"],
    )
    await daemon.bus.publish(
        tenant,
        EVENT_RUN_COMPLETED,
        {"account": account["id"], "run_id": run_id, "trigger": trigger, "counts": counts},
        key=run_id,
    )
    await publish_exceptions(daemon, tenant, account, settings, run_id)
    run = await store.get_run(db, tenant, account["id"], run_id)
    assert run is not None  # written above
    return run


def age_days(date_text: str, today: dt.date) -> int:
    return (today - dt.date.fromisoformat(date_text)).days


def exception_items(
    lines: list[dict], entries: list[dict], today: dt.date, max_age: int | None, min_amount: Decimal | None
) -> list[dict]:
    """Open items older than ``max_age`` days or at least ``min_amount`` large."""
    out = []
    for side, rows, date_key in (("bank", lines, "booking_date"), ("ledger", entries, "date")):
        for r in rows:
            age = age_days(r[date_key], today)
            too_old = max_age is not None and age > max_age
            too_big = min_amount is not None and abs(Decimal(r["amount"])) >= min_amount
            if too_old or too_big:
                out.append(
                    {
                        "side": side,
                        "id": r["id"],
                        "date": r[date_key],
                        "amount": r["amount"],
                        "age_days": age,
                        "reasons": [x for x, on in (("age", too_old), ("amount", too_big)) if on],
                        "reference": r.get("bank_reference") or r.get("external_id") or "",
                    }
                )
    return out


async def publish_exceptions(daemon, tenant: str, account: dict, settings: dict | None, run_id: str) -> None:
    """Publish ``reconciliation.exceptions`` when open items pass the account's limits."""
    limits = (settings or {}).get("exceptions") or EXCEPTIONS.validate({})  # API accounts: the defaults
    today = daemon.clock.now().date()
    items = exception_items(
        await store.open_lines(daemon.db, tenant, account["id"]),
        await store.open_entries(daemon.db, tenant, account["id"]),
        today,
        limits.get("max_age_days"),
        limits.get("min_amount"),
    )
    if not items:
        return
    await daemon.bus.publish(
        tenant,
        EVENT_EXCEPTIONS,
        {
            "account": account["id"],
            "run_id": run_id,
            "count": len(items),
            "max_age_days": limits.get("max_age_days"),
            "min_amount": str(limits["min_amount"]) if limits.get("min_amount") is not None else None,
            "items": items[:EXCEPTION_SAMPLE],
        },
        key=f"{run_id}:exceptions",
    )
