"""Why is this item still open? Loads an open item's neighbourhood and asks the engine.

The pure part is :mod:`.matching.why`; here the neighbourhood is read from the
store without reading the account: the other side's items dated within the
reach of the account's widest rule window whose amount lies in a band around
the target's, or whose counterparty has the target's words, or that the
target's reference text names (or that name the target's reference); the same
for items already held by a match (to say "another line took it"), and the
target's own side's open items that compete for the same partners. Open items
are read outward from the target's date along the open-items index of their
side, so each query stops after a few hundred rows whatever the size of the
account. (The held items' index is ordered by match first: that query reads
the index entries of the account's held items, though only the rows in reach.)
"""

from __future__ import annotations

import asyncio
import datetime as dt
import re
from decimal import Decimal

from tierd.core.api import ApiError

from . import aliases, present, store
from .config import account_settings, engine_config
from .matching import why as whys
from .matching.text import norm_name, norm_ref, payer_keys, ref_grams
from .runs import _bank_line, _ledger_entry

#: Rows each neighbourhood query reads at most (half before the item's date, half after):
#: the other side's open items, those held by matches, and the item's rivals.
MAX_ROWS = 400
MAX_HELD_ROWS = 120
MAX_RIVAL_ROWS = 160
#: Reference keys a query looks for at most.
MAX_KEYS = 200

#: Per side: table, columns, date column, counterparty column, what to present rows with.
SIDES = {
    "bank": ("recon_bank_lines", store.LINE_COLUMNS, "booking_date", "counterparty_name", present.line),
    "ledger": ("recon_ledger_entries", store.ENTRY_COLUMNS, "date", "counterparty", present.entry),
}
WHAT = {"bank": "statement line", "ledger": "ledger entry"}


def _model(side: str, row: dict) -> whys.Source:
    """A stored row as the engine sees it."""
    return _bank_line(row) if side == "bank" else _ledger_entry(row)


def _squeezed(column: str) -> str:
    """SQL for a column as :func:`norm_ref` has it, near enough: upper case without the usual separators."""
    out = column
    for sep in ("-", " ", "/", ".", "_", ":"):
        out = f"replace({out}, '{sep}', '')"
    return f"upper({out})"


def _name_term(column: str, name: str) -> tuple[str, list] | None:
    """A term on a counterparty column for a name: its (at most) two longest words each appear,
    by their first or last four letters (a typo or an umlaut spares one of them)."""
    words = sorted((w for w in norm_name(name).split() if len(w) >= 3), key=lambda w: (-len(w), w))[:2]
    if not words:
        return None
    ands, params = [], []
    for w in words:
        ands.append(f"(lower({column}) LIKE ? OR lower({column}) LIKE ?)")
        params += [f"%{w[:4]}%", f"%{w[-4:]}%"]
    return "(" + " AND ".join(ands) + ")", params


def _band_term(currency_col: str, amount_col: str, currency: str, amount: Decimal) -> tuple[str, list]:
    width = whys.band(amount)
    # DOUBLE PRECISION, not REAL: PostgreSQL's REAL is 32 bits; SQLite reads either as its REAL.
    return (
        f"({currency_col}=? AND CAST({amount_col} AS DOUBLE PRECISION) BETWEEN ? AND ?)",
        [currency, float(amount - width), float(amount + width)],
    )


def _conditions(target_side: str, target: dict, rows_side: str, known: list) -> tuple[str, list]:
    """The WHERE terms (OR-ed) that make a row of ``rows_side`` a plausible neighbour of the target."""
    terms: list[str] = []
    params: list = []

    def add(term: str, values: list) -> None:
        terms.append(term)
        params.extend(values)

    amount = Decimal(target["amount"])
    add(*_band_term("currency", "amount", target["currency"], amount))
    name_col = SIDES[rows_side][3]
    names = [(name_col, target[SIDES[target_side][3]])]
    if rows_side == target_side:
        pass  # rivals: an amount or a name like the target's
    elif target_side == "bank":
        if target["instructed_amount"] and target["instructed_currency"]:
            add(*_band_term("currency", "amount", target["instructed_currency"], Decimal(target["instructed_amount"])))
        grams = sorted(ref_grams(target["remittance"], target["end_to_end_id"]))[:MAX_KEYS]
        if grams:
            marks = store.marks(len(grams))
            add(f"{_squeezed('reference')} IN ({marks})", grams)
            add(f"{_squeezed('external_id')} IN ({marks})", grams)
        for kp in known:
            names.append(("counterparty", kp.ledger_name))
    else:
        add(*_band_term("instructed_currency", "instructed_amount", target["currency"], amount))
        for key in {norm_ref(target["reference"]), norm_ref(target["external_id"])} - {""}:
            add(f"{_squeezed('remittance')} LIKE ?", [f"%{key}%"])
            add(f"{_squeezed('end_to_end_id')} = ?", [key])
        for kp in known:
            kind, _, value = kp.bank_key.partition(":")
            if kind == "iban":
                add(f"{_squeezed('counterparty_account')} = ?", [value])
            else:
                names.append(("counterparty_name", kp.bank_label))
    for column, name in names:
        term = _name_term(column, name)
        if term:
            add(*term)
    return " OR ".join(terms), params


async def _rows(
    db, tenant: str, account_id: str, side: str, held: bool, day: dt.date, reach: int, where, limit: int
) -> list[dict]:
    """Open (or, ``held``, matched) items of one side within ``reach`` days of ``day`` that pass ``where``.

    Read outward from the day, backward and forward, at most ``limit``/2 each
    way: the nearest come first, and no account is too large for it.
    """
    table, cols, date, *_ = SIDES[side]
    terms, params = where
    match = "match_id IS NOT NULL" if held else "match_id IS NULL"
    sql = f"SELECT {cols} FROM {table} WHERE tenant_id=? AND account_id=? AND {match} AND ({terms})"
    first, last = (day - dt.timedelta(days=reach)).isoformat(), (day + dt.timedelta(days=reach)).isoformat()
    back = await db.fetchall(
        f"{sql} AND {date} BETWEEN ? AND ? ORDER BY {date} DESC LIMIT {limit // 2}",
        (tenant, account_id, *params, first, day.isoformat()),
    )
    forth = await db.fetchall(
        f"{sql} AND {date} > ? AND {date} <= ? ORDER BY {date} LIMIT {limit // 2}",
        (tenant, account_id, *params, day.isoformat(), last),
    )
    return [dict(r) for r in (*back, *forth)]


async def _holders(db, tenant: str, account_id: str, rows: list[dict], partner_side: str) -> dict[str, whys.TakenBy]:
    """Item id -> the match holding it, with that match's items on ``partner_side``."""
    match_ids = sorted({r["match_id"] for r in rows})
    matches: dict[str, dict] = {}
    partners: dict[str, list[str]] = {}
    for part in store.chunks(match_ids):
        marks = store.marks(len(part))
        for m in await db.fetchall(
            f"SELECT id, rule, score FROM recon_matches WHERE tenant_id=? AND account_id=? AND id IN ({marks})",
            (tenant, account_id, *part),
        ):
            matches[m["id"]] = dict(m)
        for link in await db.fetchall(
            f"SELECT match_id, item_id FROM recon_match_items WHERE tenant_id=? AND side=? AND match_id IN ({marks})"
            " ORDER BY item_id",
            (tenant, partner_side, *part),
        ):
            partners.setdefault(link["match_id"], []).append(str(link["item_id"]))
    return {
        str(r["id"]): whys.TakenBy(
            r["match_id"],
            matches[r["match_id"]]["rule"],
            matches[r["match_id"]]["score"],
            tuple(partners.get(r["match_id"], ())),
        )
        for r in rows
        if r["match_id"] in matches
    }


#: An item id as a path gives it: digits SQLite can hold (anything else names no item).
ITEM_ID = re.compile(r"[1-9][0-9]{0,18}")
MAX_ITEM_ID = 2**63 - 1  # SQLite's largest integer


async def open_item(db, tenant: str, account_id: str, side: str, item: str) -> dict:
    """The item, if it is there and open: 404 ``not_found`` or 409 ``item_not_open`` otherwise."""
    item_id = int(item) if ITEM_ID.fullmatch(item) and int(item) <= MAX_ITEM_ID else None
    row = (await store.items_by_id(db, tenant, account_id, side, [item_id])).get(item_id) if item_id else None
    if row is None:
        shown = item if item_id else repr(item[:40])
        raise ApiError(404, "not_found", f"no {WHAT[side]} {shown} in this account", {"side": side})
    if row["match_id"]:
        raise ApiError(
            409,
            "item_not_open",
            f"{WHAT[side]} {item_id} is already matched ({row['match_id']})",
            {"side": side, "id": item_id, "match_id": row["match_id"]},
        )
    return row


async def explain(daemon, tenant: str, account: dict, side: str, item: str, limit: int) -> dict:
    """The answer of ``GET .../open-items/{item}/candidates``: the item (its id as the path gives it)
    and its closest candidates."""
    db = daemon.db
    target = await open_item(db, tenant, account["id"], side, item)
    config = engine_config(account_settings(daemon.config, tenant, account["id"]))
    config.known_payers = await aliases.known_payers(db, tenant, account["id"])
    other = "ledger" if side == "bank" else "bank"
    _, _, date, _, show = SIDES[side]
    known = _known_for(side, target, config.known_payers)
    reach = whys.reach_days(config)
    day = dt.date.fromisoformat(target[date])
    where = _conditions(side, target, other, known)
    open_rows = await _rows(db, tenant, account["id"], other, False, day, reach, where, MAX_ROWS)
    held_rows = await _rows(db, tenant, account["id"], other, True, day, reach, where, MAX_HELD_ROWS)
    rival_where = _conditions(side, target, side, [])
    same_side = await _rows(db, tenant, account["id"], side, False, day, reach, rival_where, MAX_RIVAL_ROWS)
    rivals = [r for r in same_side if r["id"] != target["id"]]
    taken = await _holders(db, tenant, account["id"], held_rows, side)
    other_show = SIDES[other][4]
    answer = await asyncio.to_thread(
        whys.why,
        _model(side, target),
        [_model(other, r) for r in open_rows + held_rows],
        [_model(side, r) for r in rivals],
        config,
        taken,
        limit,
    )
    by_id = {str(r["id"]): r for r in open_rows + held_rows}
    return {
        "item": show(target),
        "side": side,
        "status": "open",
        "would_match": _would(answer.would_match, by_id, other_show),
        "looked_at": {"items": answer.neighbourhood, "days": reach},
        "candidates": [_finding(f, by_id, other_show) for f in answer.candidates],
    }


def _known_for(side: str, target: dict, known_payers: list) -> list:
    """The learned payers that concern the target: its payer's (a line), or its counterparty's (an entry)."""
    if side == "bank":
        keys = set(payer_keys(target["counterparty_account"], target["counterparty_name"]))
        return [kp for kp in known_payers if kp.bank_key in keys]
    name = norm_name(target["counterparty"])
    return [kp for kp in known_payers if name and kp.ledger_key == name]


def _would(f: whys.Finding | None, by_id: dict, show) -> dict | None:
    if f is None:
        return None
    return {"rule": f.rule, "score": f.score, "items": [show(by_id[i.id]) for i in f.items], "reason": f.reasons[0]}


def _finding(f: whys.Finding, by_id: dict, show) -> dict:
    return {
        "items": [show(by_id[i.id]) for i in f.items],
        "outcome": f.outcome,
        "rule": f.rule,
        "score": f.score,
        "reasons_not_taken": f.reasons,
        "facts": f.facts,
        "by_rule": f.by_rule,
        "explanation": f.explanation,
        "match": None
        if f.taken_by is None
        else {"id": f.taken_by.match_id, "rule": f.taken_by.rule, "score": f.taken_by.score},
    }
