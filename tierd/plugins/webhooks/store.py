"""Webhook tables and every SQL statement that touches them.

Three tables: endpoints (the subscriptions), deliveries (one per event and
endpoint; a pending row with a ``due_at`` *is* the scheduled retry, so
retries survive restarts) and attempts (the history). Every query filters on
``tenant_id`` where a tenant is involved.

Delivery status: ``pending`` (waiting for ``due_at``) -> ``inflight``
(claimed by the dispatcher; ``claimed_at`` set) -> ``succeeded`` | ``failed``
| back to ``pending`` with a later ``due_at``. At startup ``inflight`` rows
left by a crash go back to ``pending`` (at-least-once delivery).
"""

from __future__ import annotations

import dataclasses
import json
import math

from tierd.core.clock import iso
from tierd.core.events import type_matches
from tierd.core.ids import new_id
from tierd.core.storage import json_columns

from .signing import signing_of

MIGRATIONS = [
    # 1: endpoints, deliveries, attempts.
    """
    CREATE TABLE webhook_endpoints (
        id TEXT PRIMARY KEY,
        tenant_id TEXT NOT NULL,
        url TEXT NOT NULL,
        description TEXT NOT NULL DEFAULT '',
        event_types TEXT NOT NULL DEFAULT '[]',
        headers TEXT NOT NULL DEFAULT '{}',
        metadata TEXT NOT NULL DEFAULT '{}',
        rate_limit REAL,
        enabled INTEGER NOT NULL DEFAULT 1,
        disabled_reason TEXT,
        disabled_at REAL,
        secret TEXT NOT NULL,
        previous_secret TEXT,
        previous_secret_until REAL,
        failing_since REAL,
        created_at REAL NOT NULL,
        updated_at REAL NOT NULL
    );
    CREATE INDEX webhook_endpoints_tenant ON webhook_endpoints(tenant_id, created_at);
    CREATE TABLE webhook_deliveries (
        seq INTEGER PRIMARY KEY,
        id TEXT NOT NULL UNIQUE,
        tenant_id TEXT NOT NULL,
        endpoint_id TEXT NOT NULL,
        event_id TEXT NOT NULL,
        event_type TEXT NOT NULL,
        payload TEXT NOT NULL,
        status TEXT NOT NULL DEFAULT 'pending',
        attempts INTEGER NOT NULL DEFAULT 0,
        due_at REAL,
        claimed_at REAL,
        created_at REAL NOT NULL,
        last_attempt_at REAL,
        last_status_code INTEGER,
        last_error TEXT,
        finished_at REAL,
        UNIQUE (endpoint_id, event_id)
    );
    CREATE INDEX webhook_deliveries_due ON webhook_deliveries(endpoint_id, due_at) WHERE status = 'pending';
    CREATE INDEX webhook_deliveries_due_all ON webhook_deliveries(due_at) WHERE status = 'pending';
    CREATE INDEX webhook_deliveries_inflight ON webhook_deliveries(status) WHERE status = 'inflight';
    CREATE INDEX webhook_deliveries_endpoint ON webhook_deliveries(endpoint_id, seq);
    CREATE INDEX webhook_deliveries_created ON webhook_deliveries(created_at);
    CREATE TABLE webhook_attempts (
        id INTEGER PRIMARY KEY,
        delivery_seq INTEGER NOT NULL,
        tenant_id TEXT NOT NULL,
        endpoint_id TEXT NOT NULL,
        attempted_at REAL NOT NULL,
        status_code INTEGER,
        latency_ms REAL,
        outcome TEXT NOT NULL,
        error TEXT,
        response_body TEXT
    );
    CREATE INDEX webhook_attempts_delivery ON webhook_attempts(delivery_seq);
    CREATE INDEX webhook_attempts_time ON webhook_attempts(attempted_at);
    """,
    # 2: fewer round trips on the hot paths. A claim marks its rows with a
    # claim id (one UPDATE, then one SELECT of that claim); an attempt row
    # carries the delivery's next state and a trigger applies it, so recording
    # a batch of results is one INSERT statement (atomic on its own).
    """
    ALTER TABLE webhook_deliveries ADD COLUMN claim_id INTEGER;
    ALTER TABLE webhook_attempts ADD COLUMN next_status TEXT;
    ALTER TABLE webhook_attempts ADD COLUMN next_due_at REAL;
    CREATE TRIGGER webhook_attempt_applied AFTER INSERT ON webhook_attempts
    WHEN NEW.next_status IS NOT NULL
    BEGIN
        UPDATE webhook_deliveries SET status=NEW.next_status, due_at=NEW.next_due_at, claimed_at=NULL,
            claim_id=NULL, attempts=attempts+1, last_attempt_at=NEW.attempted_at,
            last_status_code=NEW.status_code, last_error=NEW.error,
            finished_at=CASE WHEN NEW.next_status IN ('succeeded', 'failed') THEN NEW.attempted_at END
        WHERE seq=NEW.delivery_seq;
        -- The failure window of an endpoint starts at its first failure after its last success.
        UPDATE webhook_endpoints SET failing_since=NULL
        WHERE id=NEW.endpoint_id AND NEW.outcome='success' AND failing_since IS NOT NULL;
        UPDATE webhook_endpoints SET failing_since=NEW.attempted_at
        WHERE id=NEW.endpoint_id AND NEW.outcome!='success' AND failing_since IS NULL;
    END;
    """,
]

DELIVERY_STATUSES = ("pending", "inflight", "succeeded", "failed")
ENDPOINT_FIELDS = ("url", "description", "event_types", "headers", "metadata", "rate_limit", "enabled")
JSON_FIELDS = ("event_types", "headers", "metadata")
#: What the dispatcher reads of a claimed delivery (see :class:`Claimed`).
_CLAIMED_COLUMNS = "seq, id, tenant_id, endpoint_id, event_type, payload, attempts, created_at"


#: The highest ``rate_limit`` (requests per second) an endpoint may have.
MAX_RATE_LIMIT = 10_000


def usable_rate_limit(value) -> float | None:
    """A stored ``rate_limit`` as the dispatcher applies it: None (no limit),
    or a rate within (0, MAX_RATE_LIMIT]; ValueError for anything else.

    The API refuses rates out of range; rows written before it did (or by
    hand) may hold any number: a rate above the maximum acts as the maximum.
    """
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or math.isnan(value) or value <= 0:
        raise ValueError(f"rate_limit {value!r} is not a positive number")
    return float(min(value, MAX_RATE_LIMIT))


def new_endpoint_id() -> str:
    return new_id("ep_")


def new_delivery_id() -> str:
    # Also the ``webhook-id`` header: unique per delivery, stable across retries.
    return new_id("msg_")


def payload_of(event_type: str, timestamp: str, data: dict) -> str:
    """The request body, built once: retries send the very same bytes."""
    return json.dumps({"type": event_type, "timestamp": timestamp, "data": data}, separators=(",", ":"))


def signing_secrets(secret: str, previous: str | None, previous_until: float | None, now: float) -> list[str]:
    """The secrets that sign now: the current one, and the previous during its grace."""
    if previous and (previous_until or 0) > now:
        return [secret, previous]
    return [secret]


def endpoint_matches(event_types: list[str], event_type: str) -> bool:
    """An empty filter means every event type."""
    return not event_types or any(type_matches(p, event_type) for p in event_types)


@dataclasses.dataclass
class Claimed:
    """A delivery the dispatcher took, with what it needs to send it."""

    seq: int
    id: str
    tenant_id: str
    endpoint_id: str
    event_type: str
    payload: str
    attempts: int
    created_at: float
    url: str
    headers: dict
    secrets: list[str]


@dataclasses.dataclass
class Outcome:
    """The result of one attempt, as the dispatcher writes it back."""

    seq: int
    tenant_id: str
    endpoint_id: str
    attempted_at: float
    outcome: str                 # success | http_error | timeout | connect_error | refused | gone
    status_code: int | None
    latency_ms: float
    error: str | None
    response_body: str | None
    next_status: str             # succeeded | pending | failed
    due_at: float | None
    disable_endpoint: bool = False
    delivery_id: str = ""
    event_type: str = ""
    attempts: int = 0            # attempts made, this one included


class Store:
    def __init__(self, db):
        self.db = db

    # --- endpoints --------------------------------------------------------------

    async def create_endpoint(self, tenant: str, fields: dict, secret: str, now: float) -> dict:
        endpoint_id = new_endpoint_id()
        await self.db.execute(
            "INSERT INTO webhook_endpoints(id, tenant_id, url, description, event_types, headers, metadata,"
            " rate_limit, enabled, secret, created_at, updated_at) VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
            (endpoint_id, tenant, fields["url"], fields.get("description", ""),
             json.dumps(fields.get("event_types", [])), json.dumps(fields.get("headers", {})),
             json.dumps(fields.get("metadata", {})), fields.get("rate_limit"),
             int(fields.get("enabled", True)), secret, now, now))
        return await self.get_endpoint(tenant, endpoint_id)

    async def get_endpoint(self, tenant: str, endpoint_id: str) -> dict | None:
        row = await self.db.fetchone(
            "SELECT * FROM webhook_endpoints WHERE tenant_id=? AND id=?", (tenant, endpoint_id))
        return _endpoint(row) if row else None

    async def list_endpoints(self, tenant: str, limit: int, after: str | None) -> list[dict]:
        sql, params = "SELECT * FROM webhook_endpoints WHERE tenant_id=?", [tenant]
        if after:
            sql += " AND id>?"
            params.append(after)
        sql += " ORDER BY id LIMIT ?"
        params.append(limit)
        return [_endpoint(r) for r in await self.db.fetchall(sql, params)]

    async def update_endpoint(self, tenant: str, endpoint_id: str, fields: dict, now: float) -> dict | None:
        sets, params = [], []
        for key in ENDPOINT_FIELDS:
            if key in fields:
                value = fields[key]
                sets.append(f"{key}=?")
                params.append(json.dumps(value) if key in JSON_FIELDS else int(value) if key == "enabled" else value)
        if fields.get("enabled") is True:
            # Re-enabling starts a fresh failure window.
            sets += ["disabled_reason=NULL", "disabled_at=NULL", "failing_since=NULL"]
        sets.append("updated_at=?")
        params += [now, tenant, endpoint_id]
        await self.db.execute(f"UPDATE webhook_endpoints SET {', '.join(sets)} WHERE tenant_id=? AND id=?", params)
        return await self.get_endpoint(tenant, endpoint_id)

    async def delete_endpoint(self, tenant: str, endpoint_id: str) -> bool:
        async with self.db.transaction() as tx:
            cur = await tx.execute("DELETE FROM webhook_endpoints WHERE tenant_id=? AND id=?", (tenant, endpoint_id))
            if cur.rowcount == 0:
                return False
            await tx.execute("DELETE FROM webhook_attempts WHERE tenant_id=? AND endpoint_id=?", (tenant, endpoint_id))
            await tx.execute("DELETE FROM webhook_deliveries WHERE tenant_id=? AND endpoint_id=?", (tenant, endpoint_id))
        return True

    async def rotate_secret(self, tenant: str, endpoint_id: str, new: str, grace_until: float, now: float) -> bool:
        cur = await self.db.execute(
            "UPDATE webhook_endpoints SET previous_secret=secret, previous_secret_until=?, secret=?, updated_at=?"
            " WHERE tenant_id=? AND id=?", (grace_until, new, now, tenant, endpoint_id))
        return cur.rowcount > 0

    async def disable_endpoint(self, endpoint_id: str, reason: str, now: float) -> dict | None:
        """Disable an enabled endpoint; returns it, or None if it was not enabled."""
        async with self.db.transaction() as tx:
            cur = await tx.execute(
                "UPDATE webhook_endpoints SET enabled=0, disabled_reason=?, disabled_at=?, updated_at=?"
                " WHERE id=? AND enabled=1", (reason, now, now, endpoint_id))
            if cur.rowcount == 0:
                return None
            row = await tx.fetchone("SELECT * FROM webhook_endpoints WHERE id=?", (endpoint_id,))
        return _endpoint(row)

    async def endpoints_failing_since(self, cutoff: float) -> list[str]:
        rows = await self.db.fetchall(
            "SELECT id FROM webhook_endpoints WHERE enabled=1 AND failing_since IS NOT NULL AND failing_since<=?",
            (cutoff,))
        return [r["id"] for r in rows]

    async def count_disabled(self) -> int:
        row = await self.db.fetchone("SELECT COUNT(*) AS n FROM webhook_endpoints WHERE enabled=0")
        return row["n"]

    # --- deliveries: creation ----------------------------------------------------------

    async def load_endpoints(self, ids: list[str] | None = None) -> list:
        """Endpoint rows (all, or those of ``ids``) for the in-memory cache."""
        if ids is None:
            return await self.db.fetchall("SELECT * FROM webhook_endpoints")
        return await self.db.fetchall(
            "SELECT * FROM webhook_endpoints WHERE id IN (SELECT value FROM json_each(?))", (json.dumps(ids),))

    async def create_deliveries(self, rows: list[tuple], now: float) -> dict[str, int]:
        """Insert deliveries ``(id, tenant, endpoint_id, event_id, event_type,
        payload, due_at, created_at, inflight)``; return ``{id: seq}`` of those
        inserted.

        Rows with ``inflight`` true are stored already claimed (the dispatcher
        sends them at once, without a claim query); the others are pending.
        One statement, so atomic without a transaction around it. Idempotent:
        a re-delivered event hits UNIQUE(endpoint_id, event_id) and is
        ignored (and not returned).
        """
        if not rows:
            return {}
        cur = await self.db.execute(
            "INSERT OR IGNORE INTO webhook_deliveries(id, tenant_id, endpoint_id, event_id, event_type, payload,"
            " status, claimed_at, due_at, created_at)"
            f" SELECT {json_columns(6)},"
            " CASE WHEN json_extract(value, '$[8]') THEN 'inflight' ELSE 'pending' END,"
            " CASE WHEN json_extract(value, '$[8]') THEN ? END,"
            f" {json_columns(2, 6)} FROM json_each(?)", (now, json.dumps(rows)))
        # One statement numbers the rows it inserts one after the other (each
        # takes the largest seq + 1), in array order, ending at lastrowid.
        # (Not RETURNING: each returned row is one more wait for the GIL in
        # the database thread, and intake waits behind this statement.)
        if cur.rowcount == 0:
            return {}
        first = cur.lastrowid - cur.rowcount + 1
        if cur.rowcount == len(rows):
            return {row[0]: first + i for i, row in enumerate(rows)}
        # Some were duplicates: which ones made it is in the table.
        found = await self.db.fetchall(
            "SELECT seq, id FROM webhook_deliveries WHERE seq BETWEEN ? AND ?", (first, cur.lastrowid))
        return {r["id"]: r["seq"] for r in found}

    async def create_test_delivery(self, tenant: str, endpoint_id: str, payload: str, now: float) -> int:
        """A ``webhook.test`` delivery, claimed at once (the API sends it itself)."""
        cur = await self.db.execute(
            "INSERT INTO webhook_deliveries(id, tenant_id, endpoint_id, event_id, event_type, payload, status,"
            " claimed_at, created_at) VALUES (?,?,?,?,?,?,'inflight',?,?)",
            (new_delivery_id(), tenant, endpoint_id, new_id("test_"), "webhook.test",
             payload, now, now))
        return cur.lastrowid

    # --- deliveries: the dispatcher's side ---------------------------------------------------

    async def requeue_inflight(self) -> int:
        """Deliveries a crash left in flight go back to pending (sent again: at least once)."""
        cur = await self.db.execute(
            "UPDATE webhook_deliveries SET status='pending', claimed_at=NULL,"
            " due_at=COALESCE(due_at, created_at) WHERE status='inflight'")
        return cur.rowcount

    async def claim(self, now: float, limit: int, cap: int, room: dict[str, int], claim_id: int) -> list:
        """Take up to ``limit`` due deliveries, oldest due first; return their rows.

        At most ``cap`` per endpoint, or ``room[endpoint_id]`` when given
        (its free in-flight slots and rate tokens). The per-endpoint subquery
        walks the (endpoint_id, due_at) index, so one endpoint's backlog
        costs nothing to the others and the work is bounded by ``limit``
        however many rows are due. Two statements, each atomic: the UPDATE
        marks the rows with ``claim_id``, the SELECT reads that claim.
        """
        if limit <= 0:
            return []
        cur = await self.db.execute(
            "UPDATE webhook_deliveries SET status='inflight', claimed_at=?, claim_id=? WHERE seq IN ("
            " SELECT seq FROM ("
            "  SELECT d.seq, d.due_at, d.endpoint_id,"
            "   ROW_NUMBER() OVER (PARTITION BY d.endpoint_id ORDER BY d.due_at) AS rn"
            # CROSS JOIN fixes the loop order (SQLite honours it): endpoints
            # outside, an index seek per endpoint inside. Left to itself the
            # planner may scan every delivery instead (0.4 s at 30k rows).
            "  FROM webhook_endpoints e CROSS JOIN webhook_deliveries d ON d.seq IN ("
            "   SELECT x.seq FROM webhook_deliveries x WHERE x.endpoint_id=e.id AND x.status='pending'"
            "   AND x.due_at<=? ORDER BY x.due_at LIMIT ?)"
            "  WHERE e.enabled=1)"
            " WHERE rn <= COALESCE(json_extract(?, '$.\"' || endpoint_id || '\"'), ?)"
            " ORDER BY due_at LIMIT ?)",
            (now, claim_id, now, cap, json.dumps(room), cap, limit))
        if cur.rowcount == 0:
            return []
        return await self.db.fetchall(
            f"SELECT {_CLAIMED_COLUMNS} FROM webhook_deliveries WHERE status='inflight' AND claim_id=? ORDER BY due_at",
            (claim_id,))

    async def claimed_row(self, seq: int):
        """The row of one claimed delivery (test sends)."""
        return await self.db.fetchone(
            f"SELECT {_CLAIMED_COLUMNS} FROM webhook_deliveries WHERE seq=?", (seq,))

    async def postpone(self, seq: int, due_at: float) -> None:
        """A claimed delivery that could not be sent goes back to pending, due at ``due_at``
        (no attempt is counted: none was made)."""
        await self.db.execute(
            "UPDATE webhook_deliveries SET status='pending', due_at=?, claimed_at=NULL, claim_id=NULL"
            " WHERE seq=? AND status='inflight'", (due_at, seq))

    async def next_due(self) -> float | None:
        """The earliest due time of any pending delivery (one index seek)."""
        row = await self.db.fetchone("SELECT MIN(due_at) AS t FROM webhook_deliveries WHERE status='pending'")
        return row["t"] if row else None

    async def record(self, outcomes: list[Outcome]) -> None:
        """Write a batch of attempt results: one INSERT; the trigger of
        migration 2 moves each delivery (and its endpoint's failure window)."""
        await self.db.execute(
            "INSERT INTO webhook_attempts(delivery_seq, tenant_id, endpoint_id, attempted_at, status_code,"
            " latency_ms, outcome, error, response_body, next_status, next_due_at)"
            f" SELECT {json_columns(11)} FROM json_each(?)",
            (json.dumps([(o.seq, o.tenant_id, o.endpoint_id, o.attempted_at, o.status_code, o.latency_ms, o.outcome,
                          o.error, o.response_body, o.next_status, o.due_at) for o in outcomes]),))

    async def due_stats(self, now: float) -> tuple[int, float | None]:
        """(deliveries due now, due_at of the oldest) over enabled endpoints."""
        row = await self.db.fetchone(
            "SELECT COUNT(*) AS n, MIN(d.due_at) AS oldest FROM webhook_deliveries d"
            " JOIN webhook_endpoints e ON e.id=d.endpoint_id"
            " WHERE d.status='pending' AND d.due_at<=? AND e.enabled=1", (now,))
        return row["n"], row["oldest"]

    # --- deliveries: history and recovery ----------------------------------------------------

    async def list_deliveries(self, tenant: str, endpoint_id: str, *, limit: int, before_seq: int | None,
                              status: str | None, event_type: str | None, since: float | None,
                              until: float | None) -> list[dict]:
        sql = "SELECT * FROM webhook_deliveries WHERE tenant_id=? AND endpoint_id=?"
        params: list = [tenant, endpoint_id]
        for clause, value in (("seq<?", before_seq), ("status=?", status), ("created_at>=?", since),
                              ("created_at<?", until)):
            if value is not None:
                sql += " AND " + clause
                params.append(value)
        if event_type:
            if event_type.endswith(".*"):
                sql += " AND event_type LIKE ? ESCAPE '\\'"
                params.append(event_type[:-1].replace("_", "\\_").replace("%", "\\%") + "%")
            elif event_type != "*":
                sql += " AND event_type=?"
                params.append(event_type)
        sql += " ORDER BY seq DESC LIMIT ?"
        params.append(limit)
        return [_delivery(r) for r in await self.db.fetchall(sql, params)]

    async def deliveries_of_event(self, tenant: str, event_id: str) -> list[dict]:
        """Every delivery of one event, one per endpoint it went to (oldest endpoint first).

        Walks the tenant's endpoints and seeks UNIQUE(endpoint_id, event_id)
        for each: no index on event_id alone is needed (nor paid on every insert).
        """
        rows = await self.db.fetchall(
            "SELECT d.*, e.url AS endpoint_url FROM webhook_endpoints e CROSS JOIN webhook_deliveries d"
            " ON d.endpoint_id=e.id AND d.event_id=? WHERE e.tenant_id=? ORDER BY e.created_at, d.seq",
            (event_id, tenant))
        return [_delivery(r) | {"endpoint_url": r["endpoint_url"]} for r in rows]

    async def get_delivery(self, tenant: str, delivery_id: str) -> dict | None:
        row = await self.db.fetchone(
            "SELECT * FROM webhook_deliveries WHERE tenant_id=? AND id=?", (tenant, delivery_id))
        return _delivery(row) if row else None

    async def attempts_of(self, seq: int) -> list[dict]:
        rows = await self.db.fetchall(
            "SELECT * FROM webhook_attempts WHERE delivery_seq=? ORDER BY id", (seq,))
        return [_attempt(r) for r in rows]

    async def requeue(self, tenant: str, delivery_id: str, now: float) -> bool:
        """Send a delivery again now (any state but in flight)."""
        cur = await self.db.execute(
            "UPDATE webhook_deliveries SET status='pending', due_at=?, finished_at=NULL"
            " WHERE tenant_id=? AND id=? AND status!='inflight'", (now, tenant, delivery_id))
        return cur.rowcount > 0

    async def recover(self, tenant: str, endpoint_id: str, since: float, now: float,
                      until: float | None = None) -> int:
        """Re-queue every failed delivery of an endpoint created since ``since`` (and before ``until``)."""
        cur = await self.db.execute(
            "UPDATE webhook_deliveries SET status='pending', due_at=?, finished_at=NULL"
            " WHERE tenant_id=? AND endpoint_id=? AND status='failed' AND created_at>=? AND created_at<?",
            (now, tenant, endpoint_id, since, float("inf") if until is None else until))
        return cur.rowcount

    async def endpoint_stats(self, tenant: str, endpoint_id: str, since: float) -> dict:
        """Deliveries by status (all kept), and attempts since ``since``: by
        outcome, success rate, latency p50 and p99. Counted and sorted by
        SQLite, so a busy endpoint's day of attempts never comes into memory."""
        rows = await self.db.fetchall(
            "SELECT status, COUNT(*) AS n FROM webhook_deliveries WHERE tenant_id=? AND endpoint_id=?"
            " GROUP BY status", (tenant, endpoint_id))
        by_status = {status: 0 for status in DELIVERY_STATUSES} | {r["status"]: r["n"] for r in rows}
        window = "FROM webhook_attempts WHERE tenant_id=? AND endpoint_id=? AND attempted_at>=?"
        params = (tenant, endpoint_id, since)
        rows = await self.db.fetchall(f"SELECT outcome, COUNT(*) AS n {window} GROUP BY outcome", params)
        by_outcome = {r["outcome"]: r["n"] for r in rows}
        total = sum(by_outcome.values())

        async def percentile(p: int) -> float | None:
            if not total:
                return None
            row = await self.db.fetchone(
                f"SELECT latency_ms {window} ORDER BY latency_ms LIMIT 1 OFFSET ?",
                (*params, min(total - 1, total * p // 100)))
            return row["latency_ms"] if row else None

        return {"deliveries": by_status, "attempts": {
            "total": total, "by_outcome": by_outcome,
            "success_rate": round(by_outcome.get("success", 0) / total, 4) if total else None,
            "latency_ms_p50": await percentile(50), "latency_ms_p99": await percentile(99)}}

    async def prune(self, cutoff: float, batch: int = 5000) -> int:
        """Delete attempts and finished deliveries older than ``cutoff`` (and
        old ones of deleted endpoints), in small transactions so the writer
        lock is never held long."""
        removed = 0
        while True:
            async with self.db.transaction() as tx:
                a = await tx.execute(
                    "DELETE FROM webhook_attempts WHERE id IN (SELECT id FROM webhook_attempts"
                    " WHERE attempted_at<? LIMIT ?)", (cutoff, batch))
                # Finished ones, and any left by an endpoint deleted while one of
                # its events was being fanned out (never claimed: no endpoint).
                d = await tx.execute(
                    "DELETE FROM webhook_deliveries WHERE seq IN (SELECT seq FROM webhook_deliveries"
                    " WHERE created_at<? AND (status IN ('succeeded','failed')"
                    " OR endpoint_id NOT IN (SELECT id FROM webhook_endpoints)) LIMIT ?)", (cutoff, batch))
            removed += a.rowcount + d.rowcount
            if a.rowcount < batch and d.rowcount < batch:
                return removed


# --- row -> dict ---------------------------------------------------------------------------


def _endpoint(row) -> dict:
    return {
        "id": row["id"], "url": row["url"], "description": row["description"],
        "event_types": _stored_json(row["event_types"], []), "headers": _stored_json(row["headers"], {}),
        "metadata": _stored_json(row["metadata"], {}), "rate_limit": _shown_rate_limit(row["rate_limit"]),
        "enabled": bool(row["enabled"]), "signing": signing_of(row["secret"]),
        "disabled_reason": row["disabled_reason"],
        "disabled_at": _iso_or_none(row["disabled_at"]),
        # Start of the current run of failed attempts (None after a success);
        # the endpoint is disabled once it is older than webhooks.disable_after.
        "failing_since": _iso_or_none(row["failing_since"]),
        "created_at": iso(row["created_at"]), "updated_at": iso(row["updated_at"]),
        # Internal (stripped by the API): owner and secrets.
        "_tenant_id": row["tenant_id"], "_secret": row["secret"], "_previous_secret": row["previous_secret"],
        "_previous_secret_until": row["previous_secret_until"],
    }


def _stored_json(text, default):
    """A JSON column, or ``default`` for a row the API never wrote (one bad row must not fail a list)."""
    try:
        value = json.loads(text)
    except (TypeError, ValueError):
        return default
    return value if isinstance(value, type(default)) else default


def _shown_rate_limit(value) -> float | None:
    """The rate the dispatcher applies (a row it cannot use shows none: the log says why)."""
    try:
        return usable_rate_limit(value)
    except ValueError:
        return None


def _iso_or_none(ts):
    return iso(ts) if ts is not None else None


def _delivery(row) -> dict:
    return {
        "id": row["id"], "endpoint_id": row["endpoint_id"], "event_id": row["event_id"],
        "event_type": row["event_type"], "status": row["status"], "attempts": row["attempts"],
        "created_at": _iso_or_none(row["created_at"]),
        "next_attempt_at": _iso_or_none(row["due_at"]) if row["status"] == "pending" else None,
        "last_attempt_at": _iso_or_none(row["last_attempt_at"]),
        "last_status_code": row["last_status_code"], "last_error": row["last_error"],
        "finished_at": _iso_or_none(row["finished_at"]),
        "payload": json.loads(row["payload"]),
        "_seq": row["seq"],
    }


def _attempt(row) -> dict:
    return {
        "attempted_at": _iso_or_none(row["attempted_at"]), "outcome": row["outcome"],
        "status_code": row["status_code"], "latency_ms": row["latency_ms"], "error": row["error"],
        "response_body": row["response_body"],
    }
