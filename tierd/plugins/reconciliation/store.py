"""Every SQL statement on the reconciliation tables (created by ``migrations.py``).

Every table carries ``tenant_id`` and every query filters on it: a tenant
can never see or change another tenant's accounts, lines or matches.
Rows come back as stored, JSON columns decoded: instants are unix seconds
(``now`` is ``daemon.clock.time()``), dates ``YYYY-MM-DD`` text, money
``str(Decimal)``; ``present.py`` turns them into what the API answers. An item
is open while its ``match_id`` is NULL; a match owns its items through
``recon_match_items`` and undoing it frees exactly those.
"""

from __future__ import annotations

import json
from decimal import Decimal

from tierd.core.ids import new_id, new_ids

from .migrations import RUN_FIGURES

#: SQLite's limit on bound parameters is 999 in old builds; stay under it.
CHUNK = 500


class Conflict(Exception):
    """Items are no longer open (someone matched them meanwhile)."""


def ids_in_order(prefix: str, items: list[dict]) -> list[tuple[str, dict]]:
    """``items`` (matches or suggestions of one run) sorted by their first statement line,
    then ledger entry, each with a new id; the ids ascend in that order (core's new_ids
    ascend in list order), so a run's matches list by line."""
    ordered = sorted(items, key=lambda m: (min(m["bank_ids"], default=0), min(m["ledger_ids"], default=0)))
    return list(zip(new_ids(prefix, len(ordered)), ordered, strict=True))


def chunks(seq, size=CHUNK):
    seq = list(seq)
    for i in range(0, len(seq), size):
        yield seq[i : i + size]


def _text(value: Decimal | None) -> str | None:
    """A Decimal as stored (text), NULL for None."""
    return None if value is None else str(value)


def marks(n: int) -> str:
    return ",".join("?" * n)


def unindexed(dialect: str, column: str) -> str:
    """``column`` in a term SQLite's planner must not pick an index for: SQLite's hint is a
    unary ``+``. PostgreSQL has no unary ``+`` on text and plans from its statistics: the
    column as it is."""
    return f"+{column}" if dialect == "sqlite" else column


# --- accounts -------------------------------------------------------------------------

ACCOUNT_COLUMNS = "id, name, currency, iban, account_number, csv_format, ledger_format, source, created_at, updated_at"


async def upsert_config_account(db, acct: dict, now: float) -> None:
    """Make the row of an account defined in the config file match the file."""
    await db.execute(
        "INSERT INTO recon_accounts (tenant_id, id, name, currency, iban, account_number, csv_format, ledger_format,"
        " source, created_at, updated_at) VALUES (?,?,?,?,?,?,?,?, 'config', ?, ?)"
        " ON CONFLICT (tenant_id, id) DO UPDATE SET name=excluded.name, currency=excluded.currency,"
        " iban=excluded.iban, account_number=excluded.account_number, csv_format=excluded.csv_format,"
        " ledger_format=excluded.ledger_format, source='config', updated_at=excluded.updated_at",
        (
            acct["tenant"],
            acct["id"],
            acct["name"],
            acct["currency"],
            acct["iban"],
            acct["account_number"],
            acct["csv_format"],
            acct["ledger_format"],
            now,
            now,
        ),
    )


async def create_account(db, tenant: str, acct: dict, now: float) -> bool:
    """Insert an API-created account; False when the id is taken."""
    async with db.transaction() as tx:
        if await tx.fetchone("SELECT 1 FROM recon_accounts WHERE tenant_id=? AND id=?", (tenant, acct["id"])):
            return False
        await tx.execute(
            "INSERT INTO recon_accounts (tenant_id, id, name, currency, iban, account_number, csv_format,"
            " ledger_format, source, created_at, updated_at) VALUES (?,?,?,?,?,?,?,?, 'api', ?, ?)",
            (
                tenant,
                acct["id"],
                acct["name"],
                acct["currency"],
                acct["iban"],
                acct["account_number"],
                acct.get("csv_format"),
                acct.get("ledger_format"),
                now,
                now,
            ),
        )
        await audit(tx, tenant, acct["id"], now, acct.get("created_by", ""), "account.created", acct["id"], {})
    return True


async def get_account(db, tenant: str, account_id: str) -> dict | None:
    row = await db.fetchone(
        f"SELECT {ACCOUNT_COLUMNS} FROM recon_accounts WHERE tenant_id=? AND id=?", (tenant, account_id)
    )
    return dict(row) if row else None


async def list_accounts(db, tenant: str) -> list[dict]:
    rows = await db.fetchall(f"SELECT {ACCOUNT_COLUMNS} FROM recon_accounts WHERE tenant_id=? ORDER BY id", (tenant,))
    return [dict(r) for r in rows]


# --- statement lines ---------------------------------------------------------------------

LINE_COLUMNS = (
    "id, booking_date, value_date, amount, currency, counterparty_name, counterparty_account, remittance,"
    " end_to_end_id, bank_reference, instructed_amount, instructed_currency, exchange_rate, match_id, import_id"
)


async def known_dedup_keys(tx, tenant: str, account_id: str, keys: list[str]) -> set[str]:
    found: set[str] = set()
    for part in chunks(keys):
        rows = await tx.fetchall(
            "SELECT dedup_key FROM recon_bank_lines WHERE tenant_id=? AND account_id=?"
            f" AND dedup_key IN ({marks(len(part))})",
            (tenant, account_id, *part),
        )
        found.update(r["dedup_key"] for r in rows)
    return found


async def insert_lines(tx, tenant: str, account_id: str, import_id: str, lines: list[dict], now: float) -> None:
    await tx.executemany(
        "INSERT INTO recon_bank_lines (tenant_id, account_id, import_id, booking_date, value_date, amount, currency,"
        " counterparty_name, counterparty_account, remittance, end_to_end_id, bank_reference, instructed_amount,"
        " instructed_currency, exchange_rate, dedup_key, raw, location, created_at)"
        " VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
        [
            (
                tenant,
                account_id,
                import_id,
                ln["booking_date"],
                ln["value_date"],
                ln["amount"],
                ln["currency"],
                ln["counterparty_name"],
                ln["counterparty_account"],
                ln["remittance"],
                ln["end_to_end_id"],
                ln["bank_reference"],
                ln.get("instructed_amount"),
                ln.get("instructed_currency") or "",
                ln.get("exchange_rate"),
                ln["dedup_key"],
                ln["raw"],
                ln["location"],
                now,
            )
            for ln in lines
        ],
    )


async def insert_import(tx, tenant: str, account_id: str, record: dict) -> None:
    await tx.execute(
        "INSERT INTO recon_imports (id, tenant_id, account_id, filename, format, sha256, new_lines, duplicate_lines,"
        " rejected_lines, report, created_at, created_by) VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
        (
            record["id"],
            tenant,
            account_id,
            record["filename"],
            record["format"],
            record["sha256"],
            record["new"],
            record["duplicates"],
            record["rejected"],
            json.dumps(record["report"], default=str),
            record["created_at"],
            record["created_by"],
        ),
    )


async def list_imports(db, tenant: str, account_id: str, limit: int, after: str | None) -> list[dict]:
    rows = await db.fetchall(
        "SELECT id, filename, format, sha256, new_lines, duplicate_lines, rejected_lines, report, created_at,"
        " created_by FROM recon_imports WHERE tenant_id=? AND account_id=? AND id>? ORDER BY id LIMIT ?",
        (tenant, account_id, after or "", limit),
    )
    return [dict(r) | {"report": json.loads(r["report"])} for r in rows]


# --- ledger entries -----------------------------------------------------------------------

ENTRY_COLUMNS = "id, external_id, date, amount, currency, counterparty, reference, description, match_id"


async def ledger_by_external_ids(tx, tenant: str, account_id: str, ext_ids: list[str]) -> dict[str, dict]:
    out = {}
    for part in chunks(ext_ids):
        rows = await tx.fetchall(
            f"SELECT {ENTRY_COLUMNS} FROM recon_ledger_entries WHERE tenant_id=? AND account_id=?"
            f" AND external_id IN ({marks(len(part))})",
            (tenant, account_id, *part),
        )
        out.update({r["external_id"]: dict(r) for r in rows})
    return out


async def insert_entries(tx, tenant: str, account_id: str, entries: list[dict], now: float) -> None:
    await tx.executemany(
        "INSERT INTO recon_ledger_entries (tenant_id, account_id, external_id, date, amount, currency, counterparty,"
        " reference, description, created_at, updated_at) VALUES (?,?,?,?,?,?,?,?,?,?,?)",
        [
            (
                tenant,
                account_id,
                e["external_id"],
                e["date"],
                e["amount"],
                e["currency"],
                e["counterparty"],
                e["reference"],
                e["description"],
                now,
                now,
            )
            for e in entries
        ],
    )


async def update_entries(tx, tenant: str, account_id: str, entries: list[dict], now: float) -> None:
    await tx.executemany(
        "UPDATE recon_ledger_entries SET date=?, amount=?, currency=?, counterparty=?, reference=?, description=?,"
        " updated_at=? WHERE tenant_id=? AND account_id=? AND external_id=? AND match_id IS NULL",
        [
            (
                e["date"],
                e["amount"],
                e["currency"],
                e["counterparty"],
                e["reference"],
                e["description"],
                now,
                tenant,
                account_id,
                e["external_id"],
            )
            for e in entries
        ],
    )


# --- open items ------------------------------------------------------------------------------


async def open_lines(db, tenant: str, account_id: str) -> list[dict]:
    rows = await db.fetchall(
        f"SELECT {LINE_COLUMNS} FROM recon_bank_lines WHERE tenant_id=? AND account_id=? AND match_id IS NULL"
        " ORDER BY booking_date, id",
        (tenant, account_id),
    )
    return [dict(r) for r in rows]


async def open_entries(db, tenant: str, account_id: str) -> list[dict]:
    rows = await db.fetchall(
        f"SELECT {ENTRY_COLUMNS} FROM recon_ledger_entries WHERE tenant_id=? AND account_id=? AND match_id IS NULL"
        " ORDER BY date, id",
        (tenant, account_id),
    )
    return [dict(r) for r in rows]


async def open_page(db, tenant: str, account_id: str, side: str, booked_by: str, limit: int) -> tuple[list[dict], int]:
    """The oldest ``limit`` open items of one side (``bank`` or ``ledger``) dated
    ``booked_by`` (``YYYY-MM-DD``) or earlier, and how many such items there are.

    Both walk recon_bank_open / recon_ledger_open (tenant, account, match_id,
    date, then id): the page stops after ``limit`` rows, the count reads that
    index alone.
    """
    table, cols, date = (
        ("recon_bank_lines", LINE_COLUMNS, "booking_date")
        if side == "bank"
        else ("recon_ledger_entries", ENTRY_COLUMNS, "date")
    )
    where = f" WHERE tenant_id=? AND account_id=? AND match_id IS NULL AND {date}<=?"
    params = (tenant, account_id, booked_by)
    rows = await db.fetchall(f"SELECT {cols} FROM {table}{where} ORDER BY {date}, id LIMIT ?", (*params, limit))
    total = await db.fetchone(f"SELECT COUNT(*) AS n FROM {table}{where}", params)
    return [dict(r) for r in rows], total["n"] if total else 0


async def items_by_id(db, tenant: str, account_id: str, side: str, ids: list[int]) -> dict[int, dict]:
    table, cols = ("recon_bank_lines", LINE_COLUMNS) if side == "bank" else ("recon_ledger_entries", ENTRY_COLUMNS)
    out = {}
    for part in chunks(ids):
        rows = await db.fetchall(
            f"SELECT {cols} FROM {table} WHERE tenant_id=? AND account_id=? AND id IN ({marks(len(part))})",
            (tenant, account_id, *part),
        )
        out.update({r["id"]: dict(r) for r in rows})
    return out


# --- matches ---------------------------------------------------------------------------------


async def create_match(
    tx,
    tenant: str,
    account_id: str,
    *,
    run_id: str | None,
    kind: str,
    rule: str,
    score: float,
    explanation: str,
    adjustment: Decimal,
    bank_ids: list[int],
    ledger_ids: list[int],
    actor: str,
    now: float,
    exchange_rate: Decimal | None = None,
) -> str:
    """Record a match and close its items; :class:`Conflict` if any is not open."""
    match_id = new_id("m_")
    # A savepoint, so a conflict on the last item undoes the first ones and
    # the surrounding transaction (a whole run) can go on with other matches.
    await tx.execute("SAVEPOINT create_match")
    for table, ids in (("recon_bank_lines", bank_ids), ("recon_ledger_entries", ledger_ids)):
        for part in chunks(ids):
            cur = await tx.execute(
                f"UPDATE {table} SET match_id=? WHERE tenant_id=? AND account_id=? AND match_id IS NULL"
                f" AND id IN ({marks(len(part))})",
                (match_id, tenant, account_id, *part),
            )
            if cur.rowcount != len(part):
                await tx.execute("ROLLBACK TO create_match")
                await tx.execute("RELEASE create_match")
                raise Conflict("some items are not open any more")
    await tx.execute(
        "INSERT INTO recon_matches (id, tenant_id, account_id, run_id, kind, rule, score, explanation, adjustment,"
        " exchange_rate, status, created_at, created_by) VALUES (?,?,?,?,?,?,?,?,?,?, 'active', ?, ?)",
        (
            match_id,
            tenant,
            account_id,
            run_id,
            kind,
            rule,
            score,
            explanation,
            str(adjustment),
            _text(exchange_rate),
            now,
            actor,
        ),
    )
    await tx.executemany(
        "INSERT INTO recon_match_items (match_id, tenant_id, side, item_id) VALUES (?,?,?,?)",
        [(match_id, tenant, "bank", i) for i in bank_ids] + [(match_id, tenant, "ledger", i) for i in ledger_ids],
    )
    await tx.execute("RELEASE create_match")
    return match_id


async def open_ids(tx, tenant: str, account_id: str) -> tuple[set[int], set[int]]:
    """Ids of the open statement lines and ledger entries, read inside a transaction."""
    lines = await tx.fetchall(
        "SELECT id FROM recon_bank_lines WHERE tenant_id=? AND account_id=? AND match_id IS NULL", (tenant, account_id)
    )
    entries = await tx.fetchall(
        "SELECT id FROM recon_ledger_entries WHERE tenant_id=? AND account_id=? AND match_id IS NULL",
        (tenant, account_id),
    )
    return {r["id"] for r in lines}, {r["id"] for r in entries}


async def create_matches_bulk(
    tx, tenant: str, account_id: str, matches: list[dict], *, run_id: str, actor: str, now: float
) -> tuple[list[dict], int]:
    """Record many automatic matches at once; returns (created, skipped).

    A run writes tens of thousands of matches: one statement per match and
    item would take longer than the matching itself. Inside the caller's
    transaction the open items are read once, matches whose items are no
    longer all open (a person matched one meanwhile) are skipped, and the
    rest is written with a handful of ``executemany`` calls.
    """
    open_lines, open_entries = await open_ids(tx, tenant, account_id)
    created, skipped = [], 0
    for match_id, m in ids_in_order("m_", matches):
        if all(i in open_lines for i in m["bank_ids"]) and all(i in open_entries for i in m["ledger_ids"]):
            open_lines.difference_update(m["bank_ids"])
            open_entries.difference_update(m["ledger_ids"])
            created.append({**m, "id": match_id})
        else:
            skipped += 1
    await tx.executemany(
        "INSERT INTO recon_matches (id, tenant_id, account_id, run_id, kind, rule, score, explanation, adjustment,"
        " exchange_rate, status, created_at, created_by) VALUES (?,?,?,?, 'auto', ?,?,?,?,?, 'active', ?, ?)",
        [
            (
                m["id"],
                tenant,
                account_id,
                run_id,
                m["rule"],
                m["score"],
                m["explanation"],
                str(m["adjustment"]),
                _text(m.get("exchange_rate")),
                now,
                actor,
            )
            for m in created
        ],
    )
    await tx.executemany(
        "INSERT INTO recon_match_items (match_id, tenant_id, side, item_id) VALUES (?,?,?,?)",
        [
            (m["id"], tenant, side, i)
            for m in created
            for side, ids in (("bank", m["bank_ids"]), ("ledger", m["ledger_ids"]))
            for i in ids
        ],
    )
    for table, side in (("recon_bank_lines", "bank_ids"), ("recon_ledger_entries", "ledger_ids")):
        await tx.executemany(
            f"UPDATE {table} SET match_id=? WHERE tenant_id=? AND account_id=? AND id=? AND match_id IS NULL",
            [(m["id"], tenant, account_id, i) for m in created for i in m[side]],
        )
    return created, skipped


async def undo_match(tx, tenant: str, account_id: str, match_id: str, actor: str, now: float) -> bool:
    """Mark a match undone and reopen exactly its items; False if not active."""
    cur = await tx.execute(
        "UPDATE recon_matches SET status='undone', undone_at=?, undone_by=? WHERE tenant_id=? AND account_id=? AND id=?"
        " AND status='active'",
        (now, actor, tenant, account_id, match_id),
    )
    if cur.rowcount != 1:
        return False
    for table in ("recon_bank_lines", "recon_ledger_entries"):
        await tx.execute(
            f"UPDATE {table} SET match_id=NULL WHERE tenant_id=? AND account_id=? AND match_id=?",
            (tenant, account_id, match_id),
        )
    return True


MATCH_COLUMNS = (
    "id, run_id, kind, rule, score, explanation, adjustment, exchange_rate, status, created_at, created_by,"
    " undone_at, undone_by"
)


async def get_match(db, tenant: str, account_id: str, match_id: str) -> dict | None:
    row = await db.fetchone(
        f"SELECT {MATCH_COLUMNS} FROM recon_matches WHERE tenant_id=? AND account_id=? AND id=?",
        (tenant, account_id, match_id),
    )
    if row is None:
        return None
    return (await with_items(db, tenant, account_id, [dict(row)]))[0]


async def list_matches(
    db, tenant: str, account_id: str, *, run_id: str | None, status: str | None, limit: int, after: str | None
) -> list[dict]:
    rows = await _page_of(db, "recon_matches", MATCH_COLUMNS, tenant, account_id, run_id, status, limit, after)
    return await with_items(db, tenant, account_id, [dict(r) for r in rows])


async def _page_of(
    db,
    table: str,
    columns: str,
    tenant: str,
    account_id: str,
    run_id: str | None,
    status: str | None,
    limit: int,
    after: str | None,
) -> list:
    """One page of an account's matches or suggestions, optionally of one run and one status.

    It walks one index in id order (migration 4): (tenant, run, id) for a run,
    its status checked on the way (the unary + keeps the planner on that walk
    rather than the account's rows of that status); else (tenant, account,
    status, id), or (tenant, account, id) for every status.
    """
    sql = f"SELECT {columns} FROM {table} WHERE tenant_id=? AND account_id=?"
    params: list = [tenant, account_id]
    status_term = f"{unindexed(db.dialect, 'status')}=?" if run_id else "status=?"
    for condition, value in (("run_id=?", run_id), (status_term, status), ("id>?", after)):
        if value:
            sql += f" AND {condition}"
            params.append(value)
    return await db.fetchall(sql + " ORDER BY id LIMIT ?", (*params, limit))


async def with_items(db, tenant: str, account_id: str, matches: list[dict]) -> list[dict]:
    """Attach ``statement_lines`` and ``ledger_entries`` (their rows as stored) to each match."""
    if not matches:
        return matches
    ids = [m["id"] for m in matches]
    links: list = []
    for part in chunks(ids):
        links += await db.fetchall(
            "SELECT match_id, side, item_id FROM recon_match_items"
            f" WHERE tenant_id=? AND match_id IN ({marks(len(part))})",
            (tenant, *part),
        )
    # Sorted here: SQL would sort them in a temporary B-tree all the same.
    links.sort(key=lambda r: r["item_id"])
    lines = await items_by_id(db, tenant, account_id, "bank", [r["item_id"] for r in links if r["side"] == "bank"])
    entries = await items_by_id(
        db, tenant, account_id, "ledger", [r["item_id"] for r in links if r["side"] == "ledger"]
    )
    for m in matches:
        m["statement_lines"], m["ledger_entries"] = [], []
    by_id = {m["id"]: m for m in matches}
    for r in links:
        m = by_id[r["match_id"]]
        if r["side"] == "bank" and r["item_id"] in lines:
            m["statement_lines"].append(lines[r["item_id"]])
        elif r["side"] == "ledger" and r["item_id"] in entries:
            m["ledger_entries"].append(entries[r["item_id"]])
    return matches


# --- suggestions ------------------------------------------------------------------------------


async def replace_suggestions(
    tx, tenant: str, account_id: str, run_id: str, suggestions: list[dict], now: float
) -> None:
    """A run's suggestions supersede the previous run's open ones."""
    await tx.execute(
        "UPDATE recon_suggestions SET status='stale' WHERE tenant_id=? AND account_id=? AND status='open'",
        (tenant, account_id),
    )
    await tx.executemany(
        "INSERT INTO recon_suggestions (id, tenant_id, account_id, run_id, rule, score, explanation, adjustment,"
        " exchange_rate, bank_ids, ledger_ids, status, created_at) VALUES (?,?,?,?,?,?,?,?,?,?,?, 'open', ?)",
        [
            (
                suggestion_id,
                tenant,
                account_id,
                run_id,
                s["rule"],
                s["score"],
                s["explanation"],
                str(s["adjustment"]),
                _text(s.get("exchange_rate")),
                json.dumps(s["bank_ids"]),
                json.dumps(s["ledger_ids"]),
                now,
            )
            for suggestion_id, s in ids_in_order("s_", suggestions)
        ],
    )


async def stale_rivals(
    tx, tenant: str, account_id: str, bank_ids: list, ledger_ids: list, actor: str, now: float, *, dialect: str
) -> None:
    """Open suggestions that share an item with a new match can no longer be accepted: mark them stale.

    A suggestion keeps its items as JSON lists of ids, read with the backend's JSON
    functions (``dialect`` is the database's: a transaction does not say it).
    """
    if not bank_ids and not ledger_ids:
        return
    where = "UPDATE recon_suggestions SET status='stale', decided_at=?, decided_by=?" + (
        " WHERE tenant_id=? AND account_id=? AND status='open' AND ("
    )
    if dialect == "sqlite":
        bank_marks = marks(len(bank_ids)) or "NULL"
        ledger_marks = marks(len(ledger_ids)) or "NULL"
        await tx.execute(
            where + f" EXISTS (SELECT 1 FROM json_each(bank_ids) WHERE value IN ({bank_marks}))"
            f" OR EXISTS (SELECT 1 FROM json_each(ledger_ids) WHERE value IN ({ledger_marks})))",
            (now, actor, tenant, account_id, *bank_ids, *ledger_ids),
        )
        return
    await tx.execute(
        where + " EXISTS (SELECT 1 FROM json_array_elements_text(bank_ids::json) AS b(value)"
        " WHERE b.value::bigint = ANY(?::bigint[]))"
        " OR EXISTS (SELECT 1 FROM json_array_elements_text(ledger_ids::json) AS l(value)"
        " WHERE l.value::bigint = ANY(?::bigint[])))",
        (now, actor, tenant, account_id, list(bank_ids), list(ledger_ids)),
    )


SUGGESTION_COLUMNS = (
    "id, run_id, rule, score, explanation, adjustment, exchange_rate, bank_ids, ledger_ids, status, created_at"
)


def _suggestion(row) -> dict:
    out = dict(row)
    out["bank_ids"] = json.loads(out["bank_ids"])
    out["ledger_ids"] = json.loads(out["ledger_ids"])
    return out


async def get_suggestion(db, tenant: str, account_id: str, suggestion_id: str) -> dict | None:
    row = await db.fetchone(
        f"SELECT {SUGGESTION_COLUMNS} FROM recon_suggestions WHERE tenant_id=? AND account_id=? AND id=?",
        (tenant, account_id, suggestion_id),
    )
    return _suggestion(row) if row else None


async def suggestions_with_items(db, tenant: str, account_id: str, suggestions: list[dict]) -> list[dict]:
    """Attach ``statement_lines`` and ``ledger_entries`` (as matches have them)."""
    lines = await items_by_id(db, tenant, account_id, "bank", sorted({i for s in suggestions for i in s["bank_ids"]}))
    entries = await items_by_id(
        db, tenant, account_id, "ledger", sorted({i for s in suggestions for i in s["ledger_ids"]})
    )
    for s in suggestions:
        s["statement_lines"] = [lines[i] for i in s["bank_ids"] if i in lines]
        s["ledger_entries"] = [entries[i] for i in s["ledger_ids"] if i in entries]
    return suggestions


async def list_suggestions(
    db, tenant: str, account_id: str, *, run_id: str | None, status: str | None, limit: int, after: str | None
) -> list[dict]:
    rows = await _page_of(db, "recon_suggestions", SUGGESTION_COLUMNS, tenant, account_id, run_id, status, limit, after)
    return await suggestions_with_items(db, tenant, account_id, [_suggestion(r) for r in rows])


async def decide_suggestion(tx, tenant: str, suggestion_id: str, status: str, actor: str, now: float) -> None:
    await tx.execute(
        "UPDATE recon_suggestions SET status=?, decided_at=?, decided_by=? WHERE tenant_id=? AND id=?",
        (status, now, actor, tenant, suggestion_id),
    )


# --- runs ---------------------------------------------------------------------------------------

RUN_COLUMNS = "id, account_id, status, trigger, started_at, finished_at, counts, error"


async def start_run(db, tenant: str, account_id: str, trigger: str, now: float) -> str:
    run_id = new_id("run_")
    await db.execute(
        "INSERT INTO recon_runs (id, tenant_id, account_id, status, trigger, started_at) VALUES (?,?,?,?,?,?)",
        (run_id, tenant, account_id, "running", trigger, now),
    )
    return run_id


async def finish_run(
    tx, tenant: str, run_id: str, status: str, counts: dict, now: float, error: str | None = None
) -> None:
    """Close a run with its counts (JSON, as the API answers them) and the figures reports
    read in columns of their own (migration 6; NULL where the counts lack them: a failed run)."""
    figures = ", ".join(f"{col}=?" for col in RUN_FIGURES)
    await tx.execute(
        f"UPDATE recon_runs SET status=?, finished_at=?, counts=?, error=?, {figures} WHERE tenant_id=? AND id=?",
        (status, now, json.dumps(counts), error, *(counts.get(key) for key in RUN_FIGURES.values()), tenant, run_id),
    )


async def get_run(db, tenant: str, account_id: str, run_id: str) -> dict | None:
    row = await db.fetchone(
        f"SELECT {RUN_COLUMNS} FROM recon_runs WHERE tenant_id=? AND account_id=? AND id=?",
        (tenant, account_id, run_id),
    )
    if row is None:
        return None
    out = dict(row)
    out["counts"] = json.loads(out["counts"])
    return out


async def fail_interrupted_runs(db, now: float) -> None:
    """Runs left 'running' by a crash will never finish: say so."""
    await db.execute(
        "UPDATE recon_runs SET status='failed', finished_at=?, error='interrupted (daemon stopped)'"
        " WHERE status='running'",
        (now,),
    )


# --- audit ----------------------------------------------------------------------------------------


async def audit(
    tx, tenant: str, account_id: str, now: float, actor: str, action: str, object_id: str, details: dict
) -> None:
    await tx.execute(
        "INSERT INTO recon_audit (tenant_id, account_id, at, actor, action, object_id, details) VALUES (?,?,?,?,?,?,?)",
        (tenant, account_id, now, actor, action, object_id, json.dumps(details, default=str)),
    )


async def list_audit(db, tenant: str, account_id: str, limit: int, after: int | None) -> list[dict]:
    rows = await db.fetchall(
        "SELECT id, at, actor, action, object_id, details FROM recon_audit WHERE tenant_id=? AND account_id=? AND id>?"
        " ORDER BY id LIMIT ?",
        (tenant, account_id, after or 0, limit),
    )
    return [dict(r) | {"details": json.loads(r["details"])} for r in rows]
