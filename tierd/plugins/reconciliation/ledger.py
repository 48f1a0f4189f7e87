"""Ledger entries from the books: JSON (lines) or CSV in, upserted by external id.

Every entry carries the ``external_id`` the accounting system gave it, so
sending the same entries again changes nothing, and sending a corrected
entry updates it while it is still open. A matched entry is not changed
behind its match's back: it is reported as a conflict (undo the match first).
A batch with any invalid entry is refused as a whole, listing every problem.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
from decimal import Decimal, InvalidOperation
from typing import Any

from tierd.core.registry import StatementError
from tierd.core.schema import unicode_problem

from . import store
from .importers.base import CURRENCY_RE, csv_rows, decode_text, parse_localized_decimal
from .importers.csv import DEFAULT_LAYOUT

log = logging.getLogger("tierd.reconciliation.ledger")

FIELDS = ("external_id", "date", "amount", "currency", "counterparty", "reference", "description")
MAX_ERRORS = 50


class LedgerError(ValueError):
    """Invalid ledger input; ``problems`` lists each bad entry and why."""

    def __init__(self, problems: list[str]):
        self.problems = problems[:MAX_ERRORS]
        super().__init__(
            f"{len(problems)} invalid ledger entr{'y' if len(problems) == 1 else 'ies'}: "
            + "; ".join(self.problems[:3])
        )


def parse_json_entries(raw: bytes) -> list[tuple[str, dict]]:
    """``(location, object)`` pairs from a JSON array, ``{"entries": [...]}`` or JSON lines."""
    text = raw.decode("utf-8-sig", errors="strict")
    try:
        doc = json.loads(text, parse_float=Decimal)
    except RecursionError:
        raise LedgerError(["the JSON is nested too deeply"]) from None
    except ValueError:
        doc = None
    if isinstance(doc, dict) and isinstance(doc.get("entries"), list):
        return [(f"entries[{i}]", e) for i, e in enumerate(doc["entries"])]
    if isinstance(doc, list):
        return [(f"entries[{i}]", e) for i, e in enumerate(doc)]
    if isinstance(doc, dict):
        return [("entries[0]", doc)]
    out = []
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            out.append((f"line {number}", json.loads(line, parse_float=Decimal)))
        except ValueError as exc:
            raise LedgerError([f"line {number}: not valid JSON ({exc.args[0]})"]) from None
        except RecursionError:
            raise LedgerError([f"line {number}: the JSON is nested too deeply"]) from None
    return out


def parse_csv_entries(raw: bytes, layout: dict | None) -> list[tuple[str, dict]]:
    """Rows of a CSV upload mapped to entry fields through a ``ledger_formats`` layout."""
    layout = layout or {**DEFAULT_LAYOUT, "columns": {f: f for f in FIELDS}}  # headers named as the fields
    columns = {k: v for k, v in (layout["columns"] or {}).items() if v}
    header = None
    out = []
    try:
        rows = list(csv_rows(decode_text(raw, layout["encoding"]), layout["delimiter"], layout["quotechar"]))
    except StatementError as exc:
        raise LedgerError([str(exc)]) from None
    for index, (number, row) in enumerate(rows):
        if index < layout["skip_rows"] or not any(c.strip() for c in row):
            continue
        if header is None:
            header = [h.strip() for h in row]
            missing = [c for c in columns.values() if c not in header]
            if missing and any(columns.get(f) in missing for f in ("external_id", "date", "amount")):
                raise LedgerError([f"line {number}: header lacks column(s) {', '.join(missing)}"])
            continue
        where = f"line {number}"
        entry = {
            f: row[header.index(c)].strip() for f, c in columns.items() if c in header and header.index(c) < len(row)
        }
        try:
            if entry.get("amount"):
                entry["amount"] = parse_localized_decimal(entry["amount"], layout["decimal"], where)
            if entry.get("date"):
                entry["date"] = dt.datetime.strptime(entry["date"], layout["date_format"]).date().isoformat()
        except (StatementError, ValueError) as exc:
            raise LedgerError([f"{where}: {exc}"]) from None
        out.append((where, entry))
    return out


def validate_entries(items: list[tuple[str, dict]], currency: str) -> list[dict]:
    """Clean entries, or :class:`LedgerError` naming every bad one."""
    problems: list[str] = []
    clean: list[dict] = []
    seen: dict[str, str] = {}  # external_id -> where it first appears
    for where, e in items:
        if not isinstance(e, dict):
            problems.append(f"{where}: expected an object")
            continue
        unknown = sorted(set(e) - set(FIELDS))
        if unknown:
            problems.append(f"{where}: unknown field(s) {', '.join(unknown)}")
        given = e.get("external_id")
        if (
            not isinstance(given, (str, int))
            or isinstance(given, bool)
            or not str(given).strip()
            or len(str(given)) > 200
        ):
            problems.append(f"{where}: external_id is required (a string of up to 200 characters)")
            continue
        ext = str(given).strip()
        if ext in seen:
            problems.append(f"{where}: external_id {ext!r} already appears at {seen[ext]}")
        seen[ext] = where
        try:
            date = dt.date.fromisoformat(str(e.get("date", ""))).isoformat()
        except ValueError:
            problems.append(f"{where}: date must be YYYY-MM-DD, got {e.get('date')!r}")
            continue
        amount = e.get("amount")
        try:
            if isinstance(amount, bool) or not isinstance(amount, (str, int, Decimal)):
                raise InvalidOperation
            amount = Decimal(str(amount).strip())
            if not amount.is_finite():
                raise InvalidOperation
            exponent = amount.as_tuple().exponent  # an int: the amount is finite
            if isinstance(exponent, int) and exponent > 0:
                amount = amount.quantize(Decimal(1))  # 1.5e3 -> 1500, not "1.5E+3"
        except InvalidOperation:
            problems.append(f'{where}: amount must be a decimal string such as "-12.50", got {e.get("amount")!r}')
            continue
        # An entry in another currency than the account's (an invoice in USD
        # on a EUR account) is matched through a payment's instructed amount
        # and the bank's rate (the fx rule).
        ccy = e.get("currency") or currency
        if not isinstance(ccy, str) or not CURRENCY_RE.fullmatch(ccy):
            problems.append(f"{where}: currency must be an ISO 4217 code such as {currency}, got {ccy!r}")
            continue
        # The body's JSON values, unchecked until the `bad` test below.
        texts: dict[str, Any] = {
            f: e.get(f) if e.get(f) is not None else "" for f in ("counterparty", "reference", "description")
        }
        bad = [f for f, v in texts.items() if not isinstance(v, str)]
        if bad:
            problems.append(f"{where}: {', '.join(bad)} must be text")
            continue
        problem = next(filter(None, map(unicode_problem, (ext, *texts.values()))), None)
        if problem:
            problems.append(f"{where}: {problem}")
            continue
        clean.append({"external_id": ext, "date": date, "amount": str(amount), "currency": ccy, **texts})
    if problems:
        raise LedgerError(problems)
    return clean


async def upsert_entries(daemon, tenant: str, account_id: str, entries: list[dict], actor: str) -> dict:
    """Insert new entries, update changed open ones; one transaction."""
    now = daemon.clock.time()
    fields = ("date", "amount", "currency", "counterparty", "reference", "description")
    async with daemon.db.transaction() as tx:
        existing = await store.ledger_by_external_ids(tx, tenant, account_id, [e["external_id"] for e in entries])
        new, changed, conflicts, unchanged = [], [], [], 0
        for e in entries:
            old = existing.get(e["external_id"])
            if old is None:
                new.append(e)
            elif all(_same(f, old[f], e[f]) for f in fields):
                unchanged += 1
            elif old["match_id"]:
                conflicts.append(
                    {
                        "external_id": e["external_id"],
                        "match_id": old["match_id"],
                        "reason": "the entry is matched; undo the match before changing it",
                    }
                )
            else:
                changed.append(e)
        await store.insert_entries(tx, tenant, account_id, new, now)
        await store.update_entries(tx, tenant, account_id, changed, now)
        if new or changed:
            await store.audit(
                tx, tenant, account_id, now, actor, "ledger.upserted", "", {"new": len(new), "updated": len(changed)}
            )
    log.info(
        "ledger entries upserted for tenant %s, account %s: %d new, %d updated, %d unchanged, %d conflict(s) (by %s)",
        tenant,
        account_id,
        len(new),
        len(changed),
        unchanged,
        len(conflicts),
        actor,
    )
    return {
        "account": account_id,
        "new": len(new),
        "updated": len(changed),
        "unchanged": unchanged,
        "conflicts": conflicts,
    }


def _same(field: str, old, new) -> bool:
    if field == "amount":
        return Decimal(old) == Decimal(new)
    return (old or "") == (new or "")
