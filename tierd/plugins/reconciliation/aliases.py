"""What reviewers taught: which bank counterparty pays for which ledger counterparty.

Every match (by hand, an accepted suggestion, or a run's automatic one) that
joins a statement line with a payer key (``text.payer_keys``: the IBAN, else
the name) to ledger entries of a counterparty is remembered per tenant and
account in ``recon_aliases``; ``times`` counts the active matches that taught
it, and ``recon_alias_sources`` says which match taught which alias, so
undoing a match forgets exactly its share. The engine reads them back as
:class:`KnownPayer` (``EngineConfig.known_payers``), so that the next line
from that IBAN scores on it and says why.

Every function that writes takes the caller's transaction: learning and
forgetting commit or roll back with the match that taught them.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable
from typing import NamedTuple

from tierd.core.api import MAX_CURSOR, ApiError

from . import store
from .matching.model import KnownPayer
from .matching.text import norm_name, payer_keys

#: Alias ids are 64-bit integers (SQLite's INTEGER, PostgreSQL's BIGINT).
INT64_MAX = 2**63 - 1

COLUMNS = "id, bank_key, bank_label, ledger_key, ledger_name, times, first_at, last_at"


class Lesson(NamedTuple):
    """One thing a match teaches: this bank counterparty paid for that ledger counterparty.

    (A tuple rather than a dataclass: a run makes one per match, tens of thousands.)
    """

    bank_key: str
    bank_label: str
    ledger_key: str
    ledger_name: str


async def known_payers(db, tenant: str, account_id: str) -> list[KnownPayer]:
    """Everything the account's matches taught, as the engine takes it."""
    rows = await db.fetchall(
        "SELECT bank_key, bank_label, ledger_key, ledger_name, times FROM recon_aliases"
        " WHERE tenant_id=? AND account_id=? AND times>0 ORDER BY bank_key, ledger_key",
        (tenant, account_id),
    )
    return [KnownPayer(r["bank_key"], r["bank_label"], r["ledger_key"], r["ledger_name"], r["times"]) for r in rows]


def lessons(bank_rows: Iterable[dict], ledger_rows: Iterable[dict]) -> set[Lesson]:
    """What one match teaches: each payer of its statement lines paid for each
    counterparty of its ledger entries, each pair once.

    A line without an IBAN or a name, or an entry without a counterparty,
    teaches nothing; nor does a payer known only by a name that already reads
    as the ledger's (the rules find that one by its name alone).
    """
    payers: dict[str, str] = {}  # key -> label: two lines of one payer teach once
    for row in bank_rows:
        account, name = row["counterparty_account"] or "", row["counterparty_name"] or ""
        for key in payer_keys(account, name):
            payers[key] = account.strip() if key.startswith("iban:") else name.strip()
    counterparties = {norm_name(r["counterparty"] or ""): (r["counterparty"] or "").strip() for r in ledger_rows}
    return {
        Lesson(bank_key, bank_label, ledger_key, ledger_name)
        for bank_key, bank_label in payers.items()
        for ledger_key, ledger_name in counterparties.items()
        if ledger_key and bank_key != f"name:{ledger_key}"
    }


async def learn(
    tx, tenant: str, account_id: str, match_id: str, bank_rows: Iterable[dict], ledger_rows: Iterable[dict], now: float
) -> int:
    """Remember what one new match teaches (see :func:`lessons`); returns how many pairs it taught."""
    return await learn_many(tx, tenant, account_id, [(match_id, bank_rows, ledger_rows)], now)


#: What one match teaches from: its id, its statement lines and its ledger entries (rows as stored).
Taught = tuple[str, Iterable[dict], Iterable[dict]]


async def learn_many(tx, tenant: str, account_id: str, taught: Iterable[Taught], now: float) -> int:
    """Remember what many new matches teach, each ``(match_id, bank rows, ledger rows)``.

    A run writes tens of thousands of matches in one transaction: the pairs
    are counted here first, so each alias is written once (one upsert per
    pair, ``times`` raised by the number of matches that taught it) and the
    sources with one ``INSERT ... SELECT`` per match and pair, all through
    ``executemany``. Returns the number of (match, pair) sources written.
    """
    latest: dict[tuple[str, str], Lesson] = {}
    times: Counter[tuple[str, str]] = Counter()
    sources: list[tuple[str, str, str, str, str]] = []
    for match_id, bank_rows, ledger_rows in taught:
        for lesson in lessons(bank_rows, ledger_rows):
            key = (lesson.bank_key, lesson.ledger_key)
            latest[key] = lesson
            times[key] += 1
            sources.append((match_id, tenant, account_id, *key))
    if not sources:
        return 0
    # The labels are kept as the bank and the books last wrote them. (The row's own
    # times is named with its table: PostgreSQL finds a bare name ambiguous here.)
    await tx.executemany(
        "INSERT INTO recon_aliases (tenant_id, account_id, bank_key, bank_label, ledger_key, ledger_name, times,"
        " first_at, last_at) VALUES (?,?,?,?,?,?,?,?,?)"
        " ON CONFLICT (tenant_id, account_id, bank_key, ledger_key)"
        " DO UPDATE SET times=recon_aliases.times+excluded.times,"
        " bank_label=excluded.bank_label, ledger_name=excluded.ledger_name, last_at=excluded.last_at",
        [
            (tenant, account_id, ls.bank_key, ls.bank_label, ls.ledger_key, ls.ledger_name, times[key], now, now)
            for key, ls in latest.items()
        ],
    )
    await tx.executemany(
        "INSERT INTO recon_alias_sources (match_id, alias_id) SELECT ?, id FROM recon_aliases"
        " WHERE tenant_id=? AND account_id=? AND bank_key=? AND ledger_key=? ON CONFLICT DO NOTHING",
        sources,
    )
    return len(sources)


async def forget(tx, tenant: str, account_id: str, match_id: str, *, dialect: str) -> list[dict]:
    """Take back what an undone match taught: each of its aliases is taught by one
    match fewer, and one no active match teaches any more is deleted.

    Returns the aliases deleted (their rows as they were), for the audit.
    ``dialect`` is the database's (a transaction does not say it).
    """
    # By id, the tenant and account checked on the way (SQLite's unary + keeps the
    # planner off the walk over all the account's aliases).
    taught = (
        "id IN (SELECT alias_id FROM recon_alias_sources WHERE match_id=?)"
        f" AND {store.unindexed(dialect, 'tenant_id')}=? AND {store.unindexed(dialect, 'account_id')}=?"
    )
    await tx.execute(f"UPDATE recon_aliases SET times=times-1 WHERE {taught}", (match_id, tenant, account_id))
    removed = await tx.fetchall(
        f"DELETE FROM recon_aliases WHERE {taught} AND times<=0 RETURNING {COLUMNS}", (match_id, tenant, account_id)
    )
    await tx.execute("DELETE FROM recon_alias_sources WHERE match_id=?", (match_id,))
    await _drop_sources(tx, [r["id"] for r in removed])
    return [dict(r) for r in removed]


async def _drop_sources(tx, alias_ids: list[int]) -> None:
    """Forget which matches taught deleted aliases (another match's undo must not count them down)."""
    for part in store.chunks(alias_ids):
        await tx.execute(f"DELETE FROM recon_alias_sources WHERE alias_id IN ({store.marks(len(part))})", part)


async def audit_removed(tx, tenant: str, account_id: str, removed: list[dict], actor: str, now: float, **why) -> None:
    """One ``alias.removed`` audit entry per alias deleted, saying what it had taught and why it went."""
    for alias in removed:
        details = {"bank_label": alias["bank_label"], "ledger_name": alias["ledger_name"], "times": alias["times"]}
        await store.audit(tx, tenant, account_id, now, actor, "alias.removed", str(alias["id"]), details | why)


async def remove(db, tenant: str, account_id: str, alias_id: str, actor: str, now: float) -> dict:
    """Delete an alias a person says is wrong, with its sources; a later match may teach it again.

    ``alias_id`` is the path's text: anything but the id of an alias of this
    account (another tenant's or account's, not a number at all) is a 404.
    """
    number = _int_id(alias_id)
    async with db.transaction() as tx:
        row = None
        if number:
            row = await tx.fetchone(
                f"DELETE FROM recon_aliases WHERE tenant_id=? AND account_id=? AND id=? RETURNING {COLUMNS}",
                (tenant, account_id, number),
            )
        if row is None:
            raise ApiError(404, "not_found", f"no alias {alias_id} in this account")
        await _drop_sources(tx, [row["id"]])
        await audit_removed(tx, tenant, account_id, [dict(row)], actor, now, reason="removed by a person")
    return dict(row)


def _int_id(text: str) -> int | None:
    """``text`` as an alias id (a positive SQLite integer), else None."""
    if not (text.isascii() and text.isdigit() and len(text) < 20):
        return None
    number = int(text)
    return number if 0 < number <= INT64_MAX else None


# --- the list: by bank counterparty, then ledger counterparty --------------------------------------------


async def list_aliases(db, tenant: str, account_id: str, limit: int, cursor: str | None) -> list[dict]:
    """A page of the account's aliases, all a payer taught together, after ``cursor`` (see :func:`cursor_of`).

    The page walks the unique index (tenant, account, bank key, ledger key)
    from the cursor and stops after ``limit`` rows, however many aliases
    there are.
    """
    sql = f"SELECT {COLUMNS} FROM recon_aliases WHERE tenant_id=? AND account_id=?"
    params: list = [tenant, account_id]
    after = _after(cursor)
    if isinstance(after, int):
        row = await db.fetchone(
            "SELECT bank_key, ledger_key FROM recon_aliases WHERE tenant_id=? AND account_id=? AND id=?",
            (tenant, account_id, after),
        )
        if row is None:  # better said than a list that silently ends here
            raise ApiError(
                400, "invalid_cursor", "the alias this page would follow was removed: start from the first page"
            )
        after = [row["bank_key"], row["ledger_key"]]
    if after is not None:
        sql += " AND (bank_key, ledger_key) > (?, ?)"
        params += after
    rows = await db.fetchall(sql + " ORDER BY bank_key, ledger_key LIMIT ?", (*params, limit))
    return [dict(r) for r in rows]


def cursor_of(alias: dict) -> str:
    """Where the next page starts: after this alias's keys (JSON), or, for keys too
    long for a cursor, after this alias's id (a 400 once it is removed meanwhile)."""
    keys = json.dumps([alias["bank_key"], alias["ledger_key"]], separators=(",", ":"))
    return keys if len(keys) <= MAX_CURSOR else f"#{alias['id']}"


def _after(cursor: str | None) -> list[str] | int | None:
    """A cursor of :func:`cursor_of` read back; 400 for anything else."""
    if cursor is None:
        return None
    try:
        if cursor.startswith("#"):
            number = _int_id(cursor[1:])
            if number:
                return number
        keys = json.loads(cursor)
        if isinstance(keys, list) and len(keys) == 2 and all(isinstance(k, str) for k in keys):
            return keys
    except ValueError:
        pass
    raise ApiError(400, "invalid_cursor", "cursor is not one this API returned")
