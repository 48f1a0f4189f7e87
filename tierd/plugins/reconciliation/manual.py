"""What people do: match by hand, accept a suggestion, undo a match.

Each is one transaction with an audit row (who, when, what). Errors are
:class:`tierd.core.api.ApiError` with stable codes, raised before anything
changes. The shape of a manual match's body (ids, adjustment, note) is
checked by its route's schema (``api.MATCH_BODY``) before it gets here.
A match teaches who pays for whom, and an undo forgets what its match
taught, in the same transaction (``aliases.py``).
"""

from __future__ import annotations

from decimal import Decimal

from tierd.core.api import ApiError

from . import aliases, exchange, store


async def _load_open(db, tenant: str, account_id: str, side: str, ids: list[int]) -> list[dict]:
    rows = await store.items_by_id(db, tenant, account_id, side, ids)
    missing = [i for i in ids if i not in rows]
    if missing:
        what = "statement line" if side == "bank" else "ledger entry"
        raise ApiError(404, "item_not_found", f"no {what} {missing[0]} in this account", {"side": side, "ids": missing})
    taken = [i for i in ids if rows[i]["match_id"]]
    if taken:
        raise ApiError(
            409,
            "item_not_open",
            f"item {taken[0]} is already matched ({rows[taken[0]]['match_id']})",
            {"side": side, "ids": taken},
        )
    return [rows[i] for i in ids]


async def manual_match(daemon, tenant: str, account: dict, body: dict, actor: str) -> dict:
    """Match chosen items; ``sum(bank) - sum(ledger)`` must equal the adjustment."""
    bank_ids = sorted(body["statement_line_ids"] or [])
    ledger_ids = sorted(body["ledger_entry_ids"] or [])
    adjustment: Decimal = body["adjustment"]
    note: str = body["note"]
    db = daemon.db
    lines = await _load_open(db, tenant, account["id"], "bank", bank_ids)
    entries = await _load_open(db, tenant, account["id"], "ledger", ledger_ids)
    bank_total = sum((Decimal(r["amount"]) for r in lines), Decimal(0))
    # In the account's currency: entries in another one are valued at a rate.
    ledger_total, rate = exchange.ledger_value(account["currency"], lines, entries, body.get("exchange_rate"))
    if bank_total - ledger_total != adjustment:
        raise ApiError(
            422,
            "amounts_unbalanced",
            f"statement lines total {bank_total}, ledger entries {ledger_total}: the difference "
            f'{bank_total - ledger_total} must be given as "adjustment"',
            {
                "bank_total": str(bank_total),
                "ledger_total": str(ledger_total),
                "difference": str(bank_total - ledger_total),
            },
        )
    explanation = f"matched by hand by {actor}; " + (
        "amounts balance" if not adjustment else f"difference {adjustment} kept as an adjustment"
    )
    if rate is not None:
        explanation += f"; ledger entries valued at {rate.normalize():f} {account['currency']} per unit"
    if note:
        explanation += f"; note: {note}"
    now = daemon.clock.time()
    try:
        async with db.transaction() as tx:
            match_id = await store.create_match(
                tx,
                tenant,
                account["id"],
                run_id=None,
                kind="manual",
                rule="manual",
                score=1.0,
                explanation=explanation,
                adjustment=adjustment,
                exchange_rate=rate,
                bank_ids=bank_ids,
                ledger_ids=ledger_ids,
                actor=actor,
                now=now,
            )
            await store.stale_rivals(tx, tenant, account["id"], bank_ids, ledger_ids, actor, now, dialect=db.dialect)
            await aliases.learn(tx, tenant, account["id"], match_id, lines, entries, now)
            await store.audit(
                tx,
                tenant,
                account["id"],
                now,
                actor,
                "match.created",
                match_id,
                {"statement_line_ids": bank_ids, "ledger_entry_ids": ledger_ids, "adjustment": adjustment},
            )
    except store.Conflict:
        raise ApiError(409, "item_not_open", "an item was matched meanwhile; reload the open items") from None
    return await _match_made(db, tenant, account["id"], match_id)


async def accept_suggestion(daemon, tenant: str, account: dict, suggestion_id: str, actor: str) -> dict:
    db = daemon.db
    s = await store.get_suggestion(db, tenant, account["id"], suggestion_id)
    if s is None:
        raise ApiError(404, "not_found", f"no suggestion {suggestion_id}")
    if s["status"] != "open":
        raise ApiError(409, "suggestion_not_open", f"suggestion {suggestion_id} is {s['status']}")
    now = daemon.clock.time()
    try:
        async with db.transaction() as tx:
            match_id = await store.create_match(
                tx,
                tenant,
                account["id"],
                run_id=s["run_id"],
                kind="accepted",
                rule=s["rule"],
                score=s["score"],
                explanation=f"{s['explanation']}; accepted by {actor}",
                adjustment=Decimal(s["adjustment"]),
                exchange_rate=Decimal(s["exchange_rate"]) if s["exchange_rate"] else None,
                bank_ids=s["bank_ids"],
                ledger_ids=s["ledger_ids"],
                actor=actor,
                now=now,
            )
            await store.decide_suggestion(tx, tenant, suggestion_id, "accepted", actor, now)
            await store.stale_rivals(
                tx, tenant, account["id"], s["bank_ids"], s["ledger_ids"], actor, now, dialect=db.dialect
            )
            await _learn_from_ids(tx, tenant, account["id"], match_id, s["bank_ids"], s["ledger_ids"], now)
            await store.audit(
                tx, tenant, account["id"], now, actor, "suggestion.accepted", suggestion_id, {"match_id": match_id}
            )
    except store.Conflict:
        async with db.transaction() as tx:
            await store.decide_suggestion(tx, tenant, suggestion_id, "stale", actor, now)
        raise ApiError(409, "item_not_open", "an item of this suggestion was matched meanwhile") from None
    return await _match_made(db, tenant, account["id"], match_id)


async def undo(daemon, tenant: str, account: dict, match_id: str, actor: str) -> dict:
    db = daemon.db
    now = daemon.clock.time()
    async with db.transaction() as tx:
        if not await store.undo_match(tx, tenant, account["id"], match_id, actor, now):
            raise ApiError(404, "not_found", f"no active match {match_id}")
        await store.audit(tx, tenant, account["id"], now, actor, "match.undone", match_id, {})
        forgotten = await aliases.forget(tx, tenant, account["id"], match_id, dialect=db.dialect)
        await aliases.audit_removed(tx, tenant, account["id"], forgotten, actor, now, match_undone=match_id)
    return await _match_made(db, tenant, account["id"], match_id)


async def _learn_from_ids(tx, tenant: str, account_id: str, match_id: str, bank_ids, ledger_ids, now: float) -> None:
    """What a match of these items teaches (an accepted suggestion names its items by id)."""
    lines = await store.items_by_id(tx, tenant, account_id, "bank", list(bank_ids))
    entries = await store.items_by_id(tx, tenant, account_id, "ledger", list(ledger_ids))
    await aliases.learn(tx, tenant, account_id, match_id, lines.values(), entries.values(), now)


async def _match_made(db, tenant: str, account_id: str, match_id: str) -> dict:
    """A match this module has just written (made or undone), read back."""
    match = await store.get_match(db, tenant, account_id, match_id)
    assert match is not None  # written in the transaction that just committed
    return match
