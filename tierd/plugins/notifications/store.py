"""Every SQL statement of the notifications module (its tables are in
``migrations.py``), valid on SQLite and PostgreSQL alike except where a
function says otherwise: SQLite's planner hints (``INDEXED BY``, a unary
``+`` that keeps a column's index out of a plan) are given to SQLite only,
PostgreSQL's planner goes by its statistics.

One row per (event, route, channel) in ``notifications`` -- whatever became
of it: ``pending`` (to send, maybe after a retry delay), ``delivered``,
``failed``, ``muted``, ``throttled``, ``grouped`` (waiting in a group) or
``digested`` (sent as part of the digest ``digest_id``). Digests, test and
manual sends are rows too (``kind``). ``dedup_key`` is UNIQUE, which makes
event intake idempotent: an event consumed twice inserts nothing the second
time. Every send attempt is a row in ``notification_attempts``.
"""

from __future__ import annotations

import json

from tierd.core.storage import value_list

from .migrations import SQLITE_MIGRATIONS

#: SQLite's migrations, under their former name (tests and old imports use it).
MIGRATIONS = SQLITE_MIGRATIONS

#: Statuses that count as "sent or about to be" for throttling.
SENDING_STATUSES = ("pending", "delivered", "failed")
FINAL_STATUSES = ("delivered", "failed", "muted", "throttled", "digested")
#: Prefix of notification ids (made with :func:`tierd.core.ids.new_id`).
ID_PREFIX = "ntf_"


def _dumps(value) -> str:
    return json.dumps(value, separators=(",", ":"), default=str, ensure_ascii=False)


def _hint(db) -> str:
    """SQLite's unary ``+`` before a column (keeps its index out of the plan); none
    on PostgreSQL, where ``+`` is not defined on text and the planner has statistics."""
    return "+" if db.dialect == "sqlite" else ""


def _indexed_by(db, index: str) -> str:
    """``INDEXED BY index`` on SQLite; nothing on PostgreSQL, which has no hints."""
    return f" INDEXED BY {index}" if db.dialect == "sqlite" else ""


def _where(*conditions: tuple[str, object]) -> tuple[str, list]:
    """`` WHERE a AND b`` and its parameters from ``(sql, value)`` pairs.

    A condition whose value is None is left out (an optional filter); the
    value fills every ``?`` of its SQL.
    """
    sql, params = [], []
    for condition, value in conditions:
        if value is not None:
            sql.append(condition)
            params += [value] * condition.count("?")
    return (" WHERE " + " AND ".join(sql) if sql else ""), params


# --- intake --------------------------------------------------------------------------


async def insert_notification(tx, row: dict) -> bool:
    """Insert a notification unless its ``dedup_key`` exists; True if inserted."""
    row = {
        "html": None,
        "digest_id": None,
        "group_id": None,
        "reason": "",
        "next_attempt_at": None,
        "event_id": None,
        "event_type": None,
        "route": None,
        "dedup_key": None,
        "severity": "info",
        "subject": "",
        "body": "",
        "attachments": None,
        "claimed_by": None,
        "claimed_at": None,
        **row,
    }
    row.setdefault("event_count", len(row.get("events") or []))
    row["events"] = _dumps(row.get("events") or [])
    if row["attachments"] is not None:
        row["attachments"] = _dumps(row["attachments"])
    row["updated_at"] = row["created_at"]
    cols = [
        "id",
        "tenant_id",
        "kind",
        "dedup_key",
        "event_id",
        "event_type",
        "route",
        "channel",
        "group_id",
        "digest_id",
        "status",
        "reason",
        "severity",
        "subject",
        "body",
        "html",
        "attachments",
        "events",
        "event_count",
        "next_attempt_at",
        "created_at",
        "updated_at",
        "claimed_by",
        "claimed_at",
    ]
    cur = await tx.execute(
        f"INSERT INTO notifications({', '.join(cols)}) VALUES ({', '.join('?' * len(cols))}) ON CONFLICT DO NOTHING",
        [row[c] for c in cols],
    )
    return cur.rowcount == 1


async def id_by_dedup_key(tx, key: str) -> str | None:
    """The id of the notification made with ``dedup_key`` (None: none was)."""
    row = await tx.fetchone("SELECT id FROM notifications WHERE dedup_key=?", (key,))
    return None if row is None else str(row["id"])


async def count_recent(tx, route: str, channel: str, since: float) -> int:
    """Notifications of (route, channel) sent or queued since ``since`` (throttling)."""
    row = await tx.fetchone(
        "SELECT COUNT(*) AS n FROM notifications WHERE route=? AND channel=? AND created_at>=?"
        f" AND kind IN ('event','digest') AND status IN ({','.join('?' * len(SENDING_STATUSES))})",
        (route, channel, since, *SENDING_STATUSES),
    )
    return row["n"]


async def lock_throttle(tx, route: str, channel: str, dialect: str) -> None:
    """On PostgreSQL, hold the throttle of (route, channel) until the transaction
    ends: the count and the rows it lets through are one step, so two nodes (two
    groups' flushes, or a flush and intake) cannot both pass the last free slot.
    SQLite's single writer already runs one such transaction at a time."""
    if dialect == "postgresql":
        await tx.execute(
            "SELECT pg_advisory_xact_lock(hashtextextended(?, 0))", (f"tierd.notifications.throttle:{route}|{channel}",)
        )


def _for_update(dialect: str) -> str:
    """`` FOR UPDATE`` on PostgreSQL: the row stays locked until the transaction
    ends. SQLite has no row locks and needs none: its single writer runs one
    write transaction at a time."""
    return " FOR UPDATE" if dialect == "postgresql" else ""


async def get_group(tx, key: str, dialect: str = "sqlite"):
    """The group with ``key``; inside intake's transaction on PostgreSQL (``dialect``)
    locked until it commits, so that a flush of the group waits for the events
    joining it (and intake waits for a flush under way, then reads its timers)."""
    return await tx.fetchone(f"SELECT * FROM notification_groups WHERE group_key=?{_for_update(dialect)}", (key,))


async def existing_dedup_keys(tx, keys: list[str], dialect: str) -> set[str]:
    """Those of ``keys`` some notification already has (one query for a whole batch,
    one parameter whatever its size; ``dialect`` is the database's: a transaction
    does not say)."""
    values, param = value_list(dialect, "text", keys)
    rows = await tx.fetchall(f"SELECT dedup_key FROM notifications WHERE dedup_key IN {values}", (param,))
    return {r["dedup_key"] for r in rows}


async def save_group(
    tx, group_id: int | None, key: str, tenant: str, route: str, channel: str, labels: dict, times, now: float
) -> int:
    """Create (``group_id`` None) or update a group's timers; returns its id."""
    if group_id is None:
        row = await tx.fetchone(
            "INSERT INTO notification_groups(group_key, tenant_id, route, channel, labels, next_flush_at,"
            " last_flush_at, expires_at, created_at) VALUES (?,?,?,?,?,?,?,?,?) RETURNING id",
            (
                key,
                tenant,
                route,
                channel,
                _dumps(labels),
                times.next_flush_at,
                times.last_flush_at,
                times.expires_at,
                now,
            ),
        )
        return row["id"]
    await tx.execute(
        "UPDATE notification_groups SET next_flush_at=?, last_flush_at=?, expires_at=? WHERE id=?",
        (times.next_flush_at, times.last_flush_at, times.expires_at, group_id),
    )
    return group_id


# --- groups ----------------------------------------------------------------------------


async def due_groups(db, now: float, limit: int = 100):
    return await db.fetchall(
        "SELECT * FROM notification_groups WHERE next_flush_at IS NOT NULL AND next_flush_at<=?"
        " ORDER BY next_flush_at LIMIT ?",
        (now, limit),
    )


async def next_group_flush(db) -> float | None:
    row = await db.fetchone("SELECT MIN(next_flush_at) AS t FROM notification_groups WHERE next_flush_at IS NOT NULL")
    return row["t"]


async def lock_due_group(tx, group_id: int, now: float, dialect: str):
    """The group ``group_id`` if it is still due at ``now`` (None: flushed or moved
    meanwhile), locked on PostgreSQL until the transaction ends: a flush reads its
    items and sets its timers with no intake adding to it in between, and of two
    nodes flushing the same group one makes the digest and the other finds it done."""
    return await tx.fetchone(
        "SELECT * FROM notification_groups WHERE id=? AND next_flush_at IS NOT NULL AND next_flush_at<=?"
        + _for_update(dialect),
        (group_id, now),
    )


async def group_items(tx, group_id: int):
    return await tx.fetchall(
        "SELECT * FROM notifications WHERE group_id=? AND status='grouped' ORDER BY seq", (group_id,)
    )


async def mark_digested(tx, item_ids: list[str], digest_id: str, now: float) -> None:
    await tx.executemany(
        "UPDATE notifications SET status='digested', digest_id=?, updated_at=? WHERE id=?",
        [(digest_id, now, i) for i in item_ids],
    )


async def set_group_times(tx, group_id: int, times, flushed: bool) -> None:
    await tx.execute(
        "UPDATE notification_groups SET next_flush_at=?, last_flush_at=?, expires_at=?, flushes=flushes+? WHERE id=?",
        (times.next_flush_at, times.last_flush_at, times.expires_at, 1 if flushed else 0, group_id),
    )


async def delete_expired_groups(db, now: float) -> None:
    await db.execute("DELETE FROM notification_groups WHERE next_flush_at IS NULL AND expires_at<=?", (now,))


# --- sending ----------------------------------------------------------------------------


def _not_in(column: str, values) -> tuple[str, list]:
    values = list(values)
    return (f" AND {column} NOT IN ({','.join('?' * len(values))})", values) if values else ("", [])


# The dispatcher's two reads name their index: without statistics the planner
# would rather take notifications_status (status='pending') and sort every
# pending row, thousands of them while a channel is down.


async def due_notifications(db, now: float, limit: int, exclude_channels=()):
    """Pending rows due at ``now``, oldest first, skipping channels that are saturated."""
    extra, params = _not_in("channel", exclude_channels)
    return await db.fetchall(
        f"SELECT * FROM notifications{_indexed_by(db, 'notifications_due')}"
        " WHERE status='pending' AND next_attempt_at<=?" + extra + " ORDER BY next_attempt_at LIMIT ?",
        (now, *params, limit),
    )


async def next_attempt(db, exclude=(), exclude_channels=()) -> float | None:
    """When the next pending row is due, ignoring ids in flight and saturated channels."""
    ids_sql, ids = _not_in("id", exclude)
    ch_sql, channels = _not_in("channel", exclude_channels)
    row = await db.fetchone(
        f"SELECT MIN(next_attempt_at) AS t FROM notifications{_indexed_by(db, 'notifications_due')}"
        " WHERE status='pending'" + ids_sql + ch_sql,
        ids + channels,
    )
    return row["t"]


async def get(db, notification_id: str, tenant: str | None = None):
    sql, params = "SELECT * FROM notifications WHERE id=?", [notification_id]
    if tenant is not None:
        sql += " AND tenant_id=?"
        params.append(tenant)
    return await db.fetchone(sql, params)


async def record_attempts(tx, outcomes: list[dict], node: str | None = None) -> None:
    """Write attempts and the resulting status of each notification, in one go.

    ``node`` (several nodes, PostgreSQL): the outcome also clears the row's claim,
    and is written only while the row is still this node's (or nobody's): a row
    another node took over and claimed is that node's to record.
    """
    await tx.executemany(
        "INSERT INTO notification_attempts(notification_id, attempt, at, outcome, detail, duration_ms)"
        " VALUES (?,?,?,?,?,?)",
        [(o["id"], o["attempt"], o["at"], o["outcome"], o["detail"], o["duration_ms"]) for o in outcomes],
    )
    values = [
        (o["status"], o["attempt"], o["next_attempt_at"], o["last_error"], o["at"], o["sent_at"], o["id"])
        for o in outcomes
    ]
    sql = "UPDATE notifications SET status=?, attempts=?, next_attempt_at=?, last_error=?, updated_at=?, sent_at=?"
    if node is None:
        await tx.executemany(sql + " WHERE id=?", values)
    else:
        await tx.executemany(
            sql + ", claimed_by=NULL, claimed_at=NULL WHERE id=? AND (claimed_by=? OR claimed_by IS NULL)",
            [(*v, node) for v in values],
        )


# --- claims of several nodes (PostgreSQL) ------------------------------------------------
#
# SQLite has one node: its dispatcher keeps what it sends in memory and claims
# nothing in the database (no write more per batch). On PostgreSQL, due rows are
# claimed in a transaction with FOR UPDATE SKIP LOCKED (two nodes never lock the
# same row) that marks them ``claimed_by`` this node and moves ``next_attempt_at``
# past a lease, so once it commits no other node finds them due.


async def claim_due(db, now: float, limit: int, exclude_channels, pick, node: str, until: float) -> list:
    """Claim for ``node``, until ``until``, the due rows ``pick`` chooses among at most
    ``limit`` (oldest first, no other node's locked rows, skipping saturated channels);
    the rows chosen (as read, before the claim)."""
    extra, params = _not_in("channel", exclude_channels)
    async with db.transaction() as tx:
        rows = await tx.fetchall(
            "SELECT * FROM notifications WHERE status='pending' AND next_attempt_at<=?"
            + extra
            # seq breaks ties: rows made by one batch of events are due at the same
            # instant, and go out in the order of their events, as on SQLite.
            + " ORDER BY next_attempt_at, seq LIMIT ? FOR UPDATE SKIP LOCKED",
            (now, *params, limit),
        )
        chosen = pick(rows)
        if chosen:
            values, param = value_list(db.dialect, "bigint", [r["seq"] for r in chosen])
            await tx.execute(
                f"UPDATE notifications SET claimed_by=?, claimed_at=?, next_attempt_at=? WHERE seq IN {values}",
                (node, now, until, param),
            )
    return chosen


async def take_over(db, now: float, grace: float) -> dict[str, int]:
    """Put back to due at ``now`` the rows claimed by nodes that are gone (see
    ``Database.gone``) at least ``grace`` seconds ago; {gone node: rows}."""
    async with db.transaction() as tx:
        rows = await tx.fetchall(
            "SELECT seq, claimed_by FROM notifications WHERE claimed_by IS NOT NULL AND status='pending'"
            f" AND claimed_at<? AND {db.gone('claimed_by')} FOR UPDATE SKIP LOCKED",
            (now - grace,),
        )
        if rows:
            values, param = value_list(db.dialect, "bigint", [r["seq"] for r in rows])
            await tx.execute(
                f"UPDATE notifications SET claimed_by=NULL, claimed_at=NULL, next_attempt_at=? WHERE seq IN {values}",
                (now, param),
            )
    taken: dict[str, int] = {}
    for r in rows:
        taken[r["claimed_by"]] = taken.get(r["claimed_by"], 0) + 1
    return taken


async def take_back(db, node: str, now: float) -> int:
    """At start: rows still claimed under this node's own name (a run before, with
    the same name, that ended without recording them) are due again at ``now``."""
    cur = await db.execute(
        "UPDATE notifications SET claimed_by=NULL, claimed_at=NULL, next_attempt_at=?"
        " WHERE claimed_by=? AND status='pending'",
        (now, node),
    )
    return int(cur.rowcount)


async def store_files(tx, notification_id: str, contents: list[bytes]) -> None:
    """The bytes of a message's attachments, by position (see ``notification_files``)."""
    await tx.executemany(
        "INSERT INTO notification_files(notification_id, position, content) VALUES (?,?,?)",
        [(notification_id, i, content) for i, content in enumerate(contents)],
    )


async def files_of(db, notification_id: str) -> dict[int, bytes]:
    rows = await db.fetchall(
        "SELECT position, content FROM notification_files WHERE notification_id=?", (notification_id,)
    )
    return {r["position"]: bytes(r["content"]) for r in rows}


# --- history ----------------------------------------------------------------------------


#: The largest seq SQLite holds: a page's walk always has an upper bound, so its
#: plan is a seek into an index rather than what reads as a SCAN of the table.
MAX_SEQ = 2**63 - 1
#: Seconds by which rows' stamps may be out of seq order (see :func:`history`).
STAMP_SKEW = 60.0
#: Kinds only the operator sends (``POST /v1/notifications/test`` and ``/send``):
#: their rows always belong to tenant ''.
OPERATOR_KINDS = ("test", "manual")


async def first_seq_at(db, at: float) -> int | None:
    """The seq of the first notification created at ``at`` or later (None: none is):
    one seek of notifications_created."""
    row = await db.fetchone("SELECT seq FROM notifications WHERE created_at>=? ORDER BY created_at LIMIT 1", (at,))
    return None if row is None else row["seq"]


async def last_seq_before(db, at: float) -> int | None:
    """The seq of the last notification created before ``at`` (None: none was):
    one seek of notifications_created."""
    row = await db.fetchone("SELECT seq FROM notifications WHERE created_at<? ORDER BY created_at DESC LIMIT 1", (at,))
    return None if row is None else row["seq"]


async def history(
    db,
    *,
    tenant: str | None,
    channel=None,
    status=None,
    event=None,
    route=None,
    kind=None,
    since=None,
    until=None,
    before_seq=None,
    limit=50,
):
    """Newest first; ``tenant=None`` is the admin's view of every tenant.

    A page reads about ``limit`` rows along one index (see migration 2 for
    which filter walks which index and which are checked on the way).
    """
    if kind in OPERATOR_KINDS:
        if tenant not in (None, ""):
            return []  # a tenant has no test or manual sends
        tenant = ""  # walk the operator's rows, not the whole table
    # since/until become seq bounds, as times rise with seq. Nearly: a row is
    # stamped before its transaction inserts it, and meanwhile another writer
    # (PostgreSQL's concurrent ones, another node with its own clock) may
    # insert a row stamped later. With stamps at most STAMP_SKEW out of seq
    # order, every row created at ``since`` or later comes after the last one
    # created before ``since - STAMP_SKEW``, and every row created before
    # ``until`` before the first one created at ``until + STAMP_SKEW`` or later.
    # The times are still checked on each row: the answer is exact, the walk
    # a little longer.
    after, upper = None, MAX_SEQ if before_seq is None else before_seq
    if since is not None:
        if await first_seq_at(db, since) is None:
            return []
        after = await last_seq_before(db, since - STAMP_SKEW)
    if until is not None:
        end = await first_seq_at(db, until + STAMP_SKEW)
        if end is not None:
            upper = min(upper, end)
    # A unary + keeps the planner from seeking by a column ("+route=?"): it
    # would take the rows of that value and sort them all. With an event, its
    # handful of rows (found by seq) drive the query and every other filter is
    # checked on them.
    hint = _hint(db)
    key = hint if event is not None else ""
    where, params = _where(
        (f"{key}tenant_id=?", tenant),
        (f"{key}status=?", status),
        (f"{hint}channel=?", channel),
        (f"{hint}route=?", route),
        (f"{hint}kind=?", kind),
        # The event's own rows and the digests that carried it.
        (
            "seq IN (SELECT seq FROM notifications WHERE event_id=? UNION ALL SELECT d.seq FROM notifications e"
            " JOIN notifications d ON d.id=e.digest_id WHERE e.event_id=?)",
            event,
        ),
        ("seq>?", after),
        ("seq<?", upper),
        (f"{hint}created_at>=?", since),
        (f"{hint}created_at<?", until),
    )
    return await db.fetchall(f"SELECT * FROM notifications{where} ORDER BY seq DESC LIMIT ?", [*params, limit])


async def attempts_of(db, ids: list[str]) -> dict[str, list]:
    if not ids:
        return {}
    rows = await db.fetchall(
        f"SELECT * FROM notification_attempts WHERE notification_id IN ({','.join('?' * len(ids))})"
        " ORDER BY notification_id, attempt",
        ids,
    )
    out: dict[str, list] = {}
    for r in rows:
        out.setdefault(r["notification_id"], []).append(r)
    return out


#: One slice of the retention purge: the oldest finished notifications, walked
#: along notifications_created. The status is checked on each row (unary +): the
#: rows it leaves behind past retention (pending, grouped) are few. Their attempts
#: go with them (the trigger notifications_delete_attempts).
def purge_slice(dialect: str) -> str:
    """:data:`PURGE_SLICE` for ``dialect`` (SQLite's hint left out on PostgreSQL)."""
    hint = "+" if dialect == "sqlite" else ""
    return (
        "DELETE FROM notifications WHERE seq IN (SELECT seq FROM notifications WHERE created_at<:cutoff"
        f" AND {hint}status IN ({', '.join(repr(s) for s in FINAL_STATUSES)}) ORDER BY created_at LIMIT :slice)"
    )


PURGE_SLICE = purge_slice("sqlite")


async def purge(db, older_than: float) -> int:
    """Delete finished notifications (and their attempts) created before ``older_than``,
    in slices that leave the writer to intake in between; returns how many."""
    return await db.delete_in_slices(purge_slice(db.dialect), {"cutoff": older_than})


# --- silences -------------------------------------------------------------------------------


async def insert_silence(db, row: dict) -> None:
    await db.execute(
        "INSERT INTO notification_silences(id, tenant_id, matchers, starts_at, ends_at, comment, created_by,"
        " created_at) VALUES (?,?,?,?,?,?,?,?)",
        (
            row["id"],
            row["tenant_id"],
            _dumps(row["matchers"]),
            row["starts_at"],
            row["ends_at"],
            row["comment"],
            row["created_by"],
            row["created_at"],
        ),
    )


async def silences(db, tenant: str | None = None, active_at: float | None = None):
    """Silences visible to ``tenant`` (None: all), optionally only those not ended."""
    where, params = _where(("tenant_id=?", tenant), ("ends_at>?", active_at))
    return await db.fetchall(f"SELECT * FROM notification_silences{where} ORDER BY created_at", params)


async def get_silence(db, silence_id: str):
    return await db.fetchone("SELECT * FROM notification_silences WHERE id=?", (silence_id,))


async def delete_silence(db, silence_id: str, tenant: str | None) -> bool:
    sql, params = "DELETE FROM notification_silences WHERE id=?", [silence_id]
    if tenant is not None:
        sql += " AND tenant_id=?"
        params.append(tenant)
    cur = await db.execute(sql, params)
    return cur.rowcount == 1
