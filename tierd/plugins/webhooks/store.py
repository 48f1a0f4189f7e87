"""Every SQL statement on the webhook tables (created by ``migrations.py``).

Every query filters on ``tenant_id`` where a tenant is involved. Endpoints,
deliveries and attempts come back as the API shows them (``present.py``).

Delivery status: ``pending`` (waiting for ``due_at``) -> ``inflight``
(claimed by the dispatcher; ``claimed_at`` set) -> ``succeeded`` | ``failed``
| back to ``pending`` with a later ``due_at``. At startup ``inflight`` rows
left by a crash go back to ``pending`` (at-least-once delivery).
"""

from __future__ import annotations

import json

from tierd.core.ids import new_id
from tierd.core.storage import json_columns

from .present import attempt_of, delivery_of, endpoint_of
from .records import DELIVERY_STATUSES, Outcome

ENDPOINT_FIELDS = ("url", "description", "event_types", "headers", "metadata", "rate_limit", "enabled")
JSON_FIELDS = ("event_types", "headers", "metadata")
#: What the dispatcher reads of a claimed delivery (see :class:`records.Claimed`).
_CLAIMED_COLUMNS = "seq, id, tenant_id, endpoint_id, event_type, payload, attempts, created_at"
#: Id prefixes: endpoints, and deliveries (also the ``webhook-id`` header: unique
#: per delivery, stable across retries).
ENDPOINT_ID, DELIVERY_ID = "ep_", "msg_"


class Store:
    def __init__(self, db):
        self.db = db

    # --- endpoints --------------------------------------------------------------

    async def create_endpoint(self, tenant: str, fields: dict, secret: str, now: float) -> dict:
        endpoint_id = new_id(ENDPOINT_ID)
        await self.db.execute(
            "INSERT INTO webhook_endpoints(id, tenant_id, url, description, event_types, headers, metadata,"
            " rate_limit, enabled, secret, created_at, updated_at) VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
            (
                endpoint_id,
                tenant,
                fields["url"],
                fields.get("description", ""),
                json.dumps(fields.get("event_types", [])),
                json.dumps(fields.get("headers", {})),
                json.dumps(fields.get("metadata", {})),
                fields.get("rate_limit"),
                int(fields.get("enabled", True)),
                secret,
                now,
                now,
            ),
        )
        endpoint = await self.get_endpoint(tenant, endpoint_id)
        assert endpoint is not None  # inserted just above
        return endpoint

    async def get_endpoint(self, tenant: str, endpoint_id: str) -> dict | None:
        row = await self.db.fetchone(
            "SELECT * FROM webhook_endpoints WHERE tenant_id=? AND id=?", (tenant, endpoint_id)
        )
        return endpoint_of(row) if row else None

    async def list_endpoints(self, tenant: str, limit: int, after: str | None) -> list[dict]:
        sql = "SELECT * FROM webhook_endpoints WHERE tenant_id=?"
        params: list[str | int] = [tenant]
        if after:
            sql += " AND id>?"
            params.append(after)
        sql += " ORDER BY id LIMIT ?"
        params.append(limit)
        return [endpoint_of(r) for r in await self.db.fetchall(sql, params)]

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
            await tx.execute(
                "DELETE FROM webhook_deliveries WHERE tenant_id=? AND endpoint_id=?", (tenant, endpoint_id)
            )
        return True

    async def rotate_secret(self, tenant: str, endpoint_id: str, new: str, grace_until: float, now: float) -> bool:
        cur = await self.db.execute(
            "UPDATE webhook_endpoints SET previous_secret=secret, previous_secret_until=?, secret=?, updated_at=?"
            " WHERE tenant_id=? AND id=?",
            (grace_until, new, now, tenant, endpoint_id),
        )
        return cur.rowcount > 0

    async def disable_endpoint(self, endpoint_id: str, reason: str, now: float) -> dict | None:
        """Disable an enabled endpoint; returns it, or None if it was not enabled."""
        async with self.db.transaction() as tx:
            cur = await tx.execute(
                "UPDATE webhook_endpoints SET enabled=0, disabled_reason=?, disabled_at=?, updated_at=?"
                " WHERE id=? AND enabled=1",
                (reason, now, now, endpoint_id),
            )
            if cur.rowcount == 0:
                return None
            row = await tx.fetchone("SELECT * FROM webhook_endpoints WHERE id=?", (endpoint_id,))
        return endpoint_of(row)

    async def endpoints_failing_since(self, cutoff: float) -> list[str]:
        rows = await self.db.fetchall(
            "SELECT id FROM webhook_endpoints WHERE enabled=1 AND failing_since IS NOT NULL AND failing_since<=?",
            (cutoff,),
        )
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
            "SELECT * FROM webhook_endpoints WHERE id IN (SELECT value FROM json_each(?))", (json.dumps(ids),)
        )

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
            f" {json_columns(2, 6)} FROM json_each(?)",
            (now, json.dumps(rows)),
        )
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
            "SELECT seq, id FROM webhook_deliveries WHERE seq BETWEEN ? AND ?", (first, cur.lastrowid)
        )
        return {r["id"]: r["seq"] for r in found}

    async def create_test_delivery(self, tenant: str, endpoint_id: str, payload: str, now: float) -> int:
        """A ``webhook.test`` delivery, claimed at once (the API sends it itself)."""
        cur = await self.db.execute(
            "INSERT INTO webhook_deliveries(id, tenant_id, endpoint_id, event_id, event_type, payload, status,"
            " claimed_at, created_at) VALUES (?,?,?,?,?,?,'inflight',?,?)",
            (new_id(DELIVERY_ID), tenant, endpoint_id, new_id("test_"), "webhook.test", payload, now, now),
        )
        return cur.lastrowid

    # --- deliveries: the dispatcher's side ---------------------------------------------------

    async def requeue_inflight(self) -> int:
        """Deliveries a crash left in flight go back to pending (sent again: at least once)."""
        cur = await self.db.execute(
            "UPDATE webhook_deliveries SET status='pending', claimed_at=NULL,"
            " due_at=COALESCE(due_at, created_at) WHERE status='inflight'"
        )
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
            (now, claim_id, now, cap, json.dumps(room), cap, limit),
        )
        if cur.rowcount == 0:
            return []
        return await self.db.fetchall(
            f"SELECT {_CLAIMED_COLUMNS} FROM webhook_deliveries WHERE status='inflight' AND claim_id=? ORDER BY due_at",
            (claim_id,),
        )

    async def claimed_row(self, seq: int):
        """The row of one claimed delivery (test sends)."""
        return await self.db.fetchone(f"SELECT {_CLAIMED_COLUMNS} FROM webhook_deliveries WHERE seq=?", (seq,))

    async def postpone(self, seq: int, due_at: float) -> None:
        """A claimed delivery that could not be sent goes back to pending, due at ``due_at``
        (no attempt is counted: none was made)."""
        await self.db.execute(
            "UPDATE webhook_deliveries SET status='pending', due_at=?, claimed_at=NULL, claim_id=NULL"
            " WHERE seq=? AND status='inflight'",
            (due_at, seq),
        )

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
            (
                json.dumps(
                    [
                        (
                            o.seq,
                            o.tenant_id,
                            o.endpoint_id,
                            o.attempted_at,
                            o.status_code,
                            o.latency_ms,
                            o.outcome,
                            o.error,
                            o.response_body,
                            o.next_status,
                            o.due_at,
                        )
                        for o in outcomes
                    ]
                ),
            ),
        )

    async def due_stats(self, now: float) -> tuple[int, float | None]:
        """(deliveries due now, due_at of the oldest) over enabled endpoints."""
        row = await self.db.fetchone(
            "SELECT COUNT(*) AS n, MIN(d.due_at) AS oldest FROM webhook_deliveries d"
            " JOIN webhook_endpoints e ON e.id=d.endpoint_id"
            " WHERE d.status='pending' AND d.due_at<=? AND e.enabled=1",
            (now,),
        )
        return row["n"], row["oldest"]

    # --- deliveries: history and recovery ----------------------------------------------------

    async def list_deliveries(
        self,
        tenant: str,
        endpoint_id: str,
        *,
        limit: int,
        before_seq: int | None,
        status: str | None,
        event_type: str | None,
        since: float | None,
        until: float | None,
    ) -> list[dict]:
        sql = "SELECT * FROM webhook_deliveries WHERE tenant_id=? AND endpoint_id=?"
        params: list = [tenant, endpoint_id]
        for clause, value in (
            ("seq<?", before_seq),
            ("status=?", status),
            ("created_at>=?", since),
            ("created_at<?", until),
        ):
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
        return [delivery_of(r) for r in await self.db.fetchall(sql, params)]

    async def deliveries_of_event(self, tenant: str, event_id: str) -> list[dict]:
        """Every delivery of one event, one per endpoint it went to (oldest endpoint first).

        Walks the tenant's endpoints and seeks UNIQUE(endpoint_id, event_id)
        for each: no index on event_id alone is needed (nor paid on every insert).
        """
        rows = await self.db.fetchall(
            "SELECT d.*, e.url AS endpoint_url FROM webhook_endpoints e CROSS JOIN webhook_deliveries d"
            " ON d.endpoint_id=e.id AND d.event_id=? WHERE e.tenant_id=? ORDER BY e.created_at, d.seq",
            (event_id, tenant),
        )
        return [delivery_of(r) | {"endpoint_url": r["endpoint_url"]} for r in rows]

    async def get_delivery(self, tenant: str, delivery_id: str) -> dict | None:
        row = await self.db.fetchone(
            "SELECT * FROM webhook_deliveries WHERE tenant_id=? AND id=?", (tenant, delivery_id)
        )
        return delivery_of(row) if row else None

    async def attempts_of(self, seq: int) -> list[dict]:
        rows = await self.db.fetchall("SELECT * FROM webhook_attempts WHERE delivery_seq=? ORDER BY id", (seq,))
        return [attempt_of(r) for r in rows]

    async def requeue(self, tenant: str, delivery_id: str, now: float) -> bool:
        """Send a delivery again now (any state but in flight)."""
        cur = await self.db.execute(
            "UPDATE webhook_deliveries SET status='pending', due_at=?, finished_at=NULL"
            " WHERE tenant_id=? AND id=? AND status!='inflight'",
            (now, tenant, delivery_id),
        )
        return cur.rowcount > 0

    async def recover(self, tenant: str, endpoint_id: str, since: float, now: float, until: float | None = None) -> int:
        """Re-queue every failed delivery of an endpoint created since ``since`` (and before ``until``)."""
        cur = await self.db.execute(
            "UPDATE webhook_deliveries SET status='pending', due_at=?, finished_at=NULL"
            " WHERE tenant_id=? AND endpoint_id=? AND status='failed' AND created_at>=? AND created_at<?",
            (now, tenant, endpoint_id, since, float("inf") if until is None else until),
        )
        return cur.rowcount

    async def endpoint_stats(self, tenant: str, endpoint_id: str, since: float) -> dict:
        """Deliveries by status (all kept), and attempts since ``since``: by
        outcome, success rate, latency p50 and p99. Counted and sorted by
        SQLite, so a busy endpoint's day of attempts never comes into memory."""
        rows = await self.db.fetchall(
            "SELECT status, COUNT(*) AS n FROM webhook_deliveries WHERE tenant_id=? AND endpoint_id=? GROUP BY status",
            (tenant, endpoint_id),
        )
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
                (*params, min(total - 1, total * p // 100)),
            )
            return row["latency_ms"] if row else None

        return {
            "deliveries": by_status,
            "attempts": {
                "total": total,
                "by_outcome": by_outcome,
                "success_rate": round(by_outcome.get("success", 0) / total, 4) if total else None,
                "latency_ms_p50": await percentile(50),
                "latency_ms_p99": await percentile(99),
            },
        }

    async def prune(self, cutoff: float, batch: int = 5000) -> int:
        """Delete attempts and finished deliveries older than ``cutoff`` (and
        old ones of deleted endpoints), in small transactions so the writer
        lock is never held long."""
        removed = 0
        while True:
            async with self.db.transaction() as tx:
                a = await tx.execute(
                    "DELETE FROM webhook_attempts WHERE id IN (SELECT id FROM webhook_attempts"
                    " WHERE attempted_at<? LIMIT ?)",
                    (cutoff, batch),
                )
                # Finished ones, and any left by an endpoint deleted while one of
                # its events was being fanned out (never claimed: no endpoint).
                d = await tx.execute(
                    "DELETE FROM webhook_deliveries WHERE seq IN (SELECT seq FROM webhook_deliveries"
                    " WHERE created_at<? AND (status IN ('succeeded','failed')"
                    " OR endpoint_id NOT IN (SELECT id FROM webhook_endpoints)) LIMIT ?)",
                    (cutoff, batch),
                )
            removed += a.rowcount + d.rowcount
            if a.rowcount < batch and d.rowcount < batch:
                return removed
