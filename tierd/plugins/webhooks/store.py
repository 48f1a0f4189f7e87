"""Every SQL statement on the webhook tables (created by ``migrations.py``).

Every query filters on ``tenant_id`` where a tenant is involved. Endpoints,
deliveries and attempts come back as the API shows them (``present.py``).

SQL is SQLite's, written to run on PostgreSQL too (issue 15): SQLite's planner
hints are taken out for PostgreSQL (:func:`for_postgresql`), and where no form
serves both (bulk inserts numbered by ``lastrowid``, the claims, which take
``FOR UPDATE SKIP LOCKED`` on PostgreSQL) a method branches on ``self.pg``.

Delivery status: ``pending`` (waiting for ``due_at``) -> ``inflight``
(claimed by the dispatcher; ``claimed_at`` set) -> ``succeeded`` | ``failed``
| back to ``pending`` with a later ``due_at``. A claim records its node
(``claimed_by``, ``Database.node``). At startup a node takes back the rows in
flight under its own name (a restart) and those of nodes that are gone
(``Database.gone``: on SQLite, any other; on PostgreSQL, no longer connected),
never a live node's; on PostgreSQL every node does the latter every few
seconds too (:meth:`Store.take_back`). Rows taken back are sent again (at
least once).
"""

from __future__ import annotations

import heapq
import json
import re
from collections.abc import Sequence
from functools import lru_cache
from typing import NamedTuple

from tierd.core.ids import new_id
from tierd.core.storage import bulk_rows, json_columns, value_list

from .migrations import LATENCY_BOUNDS_MS
from .present import attempt_of, delivery_of, endpoint_of
from .records import DELIVERY_STATUSES, Outcome
from .transform import column_of

ENDPOINT_FIELDS = (
    "url",
    "description",
    "event_types",
    "headers",
    "metadata",
    "rate_limit",
    "enabled",
    "ordering",
    "owner",
)
JSON_FIELDS = ("event_types", "headers", "metadata")
#: What the dispatcher reads of a claimed delivery (see :class:`records.Claimed`).
_CLAIMED_COLUMNS = "seq, id, tenant_id, endpoint_id, event_type, payload, attempts, created_at"
#: Id prefixes: endpoints, and deliveries (also the ``webhook-id`` header: unique
#: per delivery, stable across retries).
ENDPOINT_ID, DELIVERY_ID = "ep_", "msg_"
#: PostgreSQL: the channel on which a node says an endpoint changed (its id).
ENDPOINTS_CHANNEL = "tierd_webhook_endpoints"
#: The index a delivery list walks for a status filter (migration 3): the
#: selective states have a partial index each in list order. ``succeeded`` (most
#: rows) and no filter walk the endpoint's index, the status checked on the way.
STATUS_INDEX = {
    "pending": "webhook_deliveries_pending",
    "inflight": "webhook_deliveries_inflight",
    "failed": "webhook_deliveries_failed",
}
#: A ``prefix.*`` filter merges the walks of the endpoint's types under the prefix
#: up to this many types; beyond, the prefix is broad and one walk of the
#: endpoint's index, the type checked on the way, reads fewer rows.
MAX_MERGED_TYPES = 16
#: Minutes: attempts are counted per minute (``webhook_attempt_minutes``).
MINUTE = 60
#: How often (seconds) PostgreSQL's counter changes are folded (``fold_counts``).
FOLD_INTERVAL = 1.0
#: The condition that a delivery ``d`` is shown and changed through the API:
#: its endpoint still exists (a deleted one's history waits for its purge).
#: One seek of the endpoints' primary key.
_ENDPOINT_EXISTS = "EXISTS (SELECT 1 FROM webhook_endpoints e WHERE e.id=d.endpoint_id)"
#: A fifo endpoint's oldest delivery of one status in event order (created_at,
#: then seq: the events of one intake batch share their time): one index seek.
_HEAD_ROW = (
    "SELECT h.id, h.status, h.created_at, h.seq FROM webhook_deliveries h INDEXED BY webhook_deliveries_{status}"
    " WHERE h.endpoint_id=:endpoint AND h.status='{status}' ORDER BY h.created_at, h.seq LIMIT 1"
)
#: The seq of a fifo endpoint's next delivery to send (its oldest pending one).
_HEAD = (
    "SELECT h.seq FROM webhook_deliveries h INDEXED BY webhook_deliveries_pending"
    " WHERE h.endpoint_id={endpoint} AND h.status='pending' ORDER BY h.created_at, h.seq LIMIT 1"
)


class TakenBack(NamedTuple):
    """Deliveries in flight that :meth:`Store.take_back` put back to pending:
    how many, per node that had claimed them (None: a row claimed before nodes
    were recorded)."""

    node: str | None
    rows: int


#: SQLite's planner hints, which PostgreSQL has no use for (see :func:`for_postgresql`).
_INDEX_HINT = re.compile(r"\s+INDEXED BY \w+")
_CROSS_JOIN_ON = re.compile(r"\bCROSS JOIN\b(?! LATERAL)")
#: The rows of :meth:`Store.record` (an attempt and the delivery's next state).
_ATTEMPT = {
    "delivery_seq": "bigint",
    "tenant_id": "text",
    "endpoint_id": "text",
    "attempted_at": "float8",
    "status_code": "bigint",
    "latency_ms": "float8",
    "outcome": "text",
    "error": "text",
    "response_body": "text",
    "next_status": "text",
    "next_due_at": "float8",
}


@lru_cache(maxsize=512)
def for_postgresql(sql: str) -> str:
    """``sql`` without SQLite's planner hints, for PostgreSQL.

    ``INDEXED BY name`` goes (PostgreSQL has no such hint: its planner picks
    the index, as the PostgreSQL tests' plans check), and ``CROSS JOIN ... ON``,
    SQLite's way of fixing the loop order, becomes a plain ``JOIN`` (PostgreSQL
    refuses an ON after CROSS JOIN). Cached: a few dozen distinct statements.
    """
    return _CROSS_JOIN_ON.sub("JOIN", _INDEX_HINT.sub("", sql))


def dialect_sql(db, sql: str) -> str:
    """``sql`` as ``db``'s dialect takes it (SQLite's as written)."""
    return for_postgresql(sql) if db.dialect == "postgresql" else sql


class Store:
    def __init__(self, db):
        self.db = db
        #: PostgreSQL (issue 15): planner hints out, claims and bulk inserts of their own.
        self.pg = getattr(db, "dialect", "sqlite") == "postgresql"

    def _q(self, sql: str) -> str:
        """``sql`` for this store's database (see :func:`for_postgresql`)."""
        return for_postgresql(sql) if self.pg else sql

    # --- endpoints --------------------------------------------------------------

    async def create_endpoint(self, tenant: str, fields: dict, secret: str, now: float) -> dict:
        endpoint_id = new_id(ENDPOINT_ID)
        await self.db.execute(
            "INSERT INTO webhook_endpoints(id, tenant_id, url, description, event_types, headers, metadata,"
            " rate_limit, enabled, secret, created_at, updated_at, ordering, transformation, owner)"
            " VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
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
                fields.get("ordering", "unordered"),
                column_of(fields.get("transformation")),
                fields.get("owner"),
            ),
        )
        endpoint = await self.get_endpoint(tenant, endpoint_id)
        assert endpoint is not None  # inserted just above
        return endpoint

    async def get_endpoint(self, tenant: str, endpoint_id: str) -> dict | None:
        row = await self.db.fetchone(
            "SELECT * FROM webhook_endpoints WHERE tenant_id=? AND id=?", (tenant, endpoint_id)
        )
        return (await self.with_heads([endpoint_of(row)]))[0] if row else None

    async def list_endpoints(self, tenant: str, limit: int, after: str | None, owner: str | None = None) -> list[dict]:
        """A page of the tenant's endpoints in id order (ids rise with creation
        time), after the id ``after``: a walk of (tenant_id, id), ``limit`` rows;
        only one customer's (``owner``): a walk of (tenant_id, owner, id)."""
        if owner is not None:
            rows = await self.db.fetchall(
                self._q(
                    "SELECT * FROM webhook_endpoints INDEXED BY webhook_endpoints_owner"
                    " WHERE tenant_id=? AND owner=? AND id>? ORDER BY id LIMIT ?"
                ),
                (tenant, owner, after or "", limit),
            )
            return await self.with_heads([endpoint_of(r) for r in rows])
        rows = await self.db.fetchall(
            self._q(
                "SELECT * FROM webhook_endpoints INDEXED BY webhook_endpoints_list WHERE tenant_id=? AND id>?"
                " ORDER BY id LIMIT ?"
            ),
            (tenant, after or "", limit),
        )
        return await self.with_heads([endpoint_of(r) for r in rows])

    async def update_endpoint(self, tenant: str, endpoint_id: str, fields: dict, now: float) -> dict | None:
        sets, params = [], []
        for key in ENDPOINT_FIELDS:
            if key in fields:
                value = fields[key]
                sets.append(f"{key}=?")
                params.append(json.dumps(value) if key in JSON_FIELDS else int(value) if key == "enabled" else value)
        if "transformation" in fields:  # JSON text, NULL for none (transform.py)
            sets.append("transformation=?")
            params.append(column_of(fields["transformation"]))
        if fields.get("enabled") is True:
            # Re-enabling starts a fresh failure window.
            sets += ["disabled_reason=NULL", "disabled_at=NULL", "failing_since=NULL"]
        if fields.get("ordering") == "unordered":
            sets.append("blocked_since=NULL")  # nothing waits for a head any more
        sets.append("updated_at=?")
        params += [now, tenant, endpoint_id]
        await self.db.execute(f"UPDATE webhook_endpoints SET {', '.join(sets)} WHERE tenant_id=? AND id=?", params)
        return await self.get_endpoint(tenant, endpoint_id)

    async def delete_endpoint(self, tenant: str, endpoint_id: str) -> bool:
        """Delete an endpoint; its history goes later, in slices (:meth:`purge`).

        One statement, as cheap whatever the history's size: the row, and
        through the trigger of migration 4 its delivery counters, and its
        entry in ``webhook_purges`` (the purge task's queue, which survives a
        crash). From then on nothing of it is claimed or shown: every read of
        deliveries goes through their endpoint's row.
        """
        cur = await self.db.execute("DELETE FROM webhook_endpoints WHERE tenant_id=? AND id=?", (tenant, endpoint_id))
        return cur.rowcount > 0

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
        values, param = value_list(self.db.dialect, "text", ids)
        return await self.db.fetchall(f"SELECT * FROM webhook_endpoints WHERE id IN {values}", (param,))

    async def create_deliveries(self, rows: list, now: float, cap: int | None = None) -> dict[str, int]:
        """Insert deliveries ``(id, tenant, endpoint_id, event_id, event_type,
        payload, due_at, created_at, inflight)``; return ``{id: seq}`` of those
        inserted.

        Rows with ``inflight`` true are stored already claimed by this node
        (the dispatcher sends them at once, without a claim query); the others
        are pending. On PostgreSQL, given the per-endpoint ``cap``, the rows
        (lists) whose endpoint has that many in flight across the nodes are
        made pending instead: their ``inflight`` is set to False here, so the
        caller sees which it may send (see :meth:`_claim_pg`).
        One statement, so atomic without a transaction around it. Idempotent:
        a re-delivered event hits UNIQUE(endpoint_id, event_id) and is
        ignored (and not returned). Rows of an endpoint deleted since the
        caller looked are not made either (nor returned): its history is
        being purged, nothing of it may come back.
        """
        if not rows:
            return {}
        if self.pg:
            return await self._create_deliveries_pg(rows, now, cap)
        cur = await self.db.execute(
            "INSERT OR IGNORE INTO webhook_deliveries(id, tenant_id, endpoint_id, event_id, event_type, payload,"
            " status, claimed_at, due_at, created_at, claimed_by)"
            f" SELECT {json_columns(6)},"
            " CASE WHEN json_extract(value, '$[8]') THEN 'inflight' ELSE 'pending' END,"
            " CASE WHEN json_extract(value, '$[8]') THEN ? END,"
            f" {json_columns(2, 6)}, CASE WHEN json_extract(value, '$[8]') THEN ? END FROM json_each(?)"
            " WHERE EXISTS (SELECT 1 FROM webhook_endpoints e WHERE e.id=json_extract(value, '$[2]'))",
            (now, self.db.node, json.dumps(rows)),
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
        # Some were duplicates (or of a deleted endpoint): which ones made it is in the table.
        found = await self.db.fetchall(
            "SELECT seq, id FROM webhook_deliveries WHERE seq BETWEEN ? AND ?", (first, cur.lastrowid)
        )
        return {r["id"]: r["seq"] for r in found}

    async def _create_deliveries_pg(self, rows: list, now: float, cap: int | None) -> dict[str, int]:
        """:meth:`create_deliveries` on PostgreSQL: one call of
        ``webhook_make_deliveries`` (migration 8), which takes the claims' lock
        when rows go in flight at once and ``cap`` is given (they count against
        their endpoint's cap across the nodes, as a claim does). The seqs come
        from RETURNING (identity values of concurrent inserts interleave, so they
        are not a range there)."""
        columns = list(zip(*rows, strict=True))
        found = await self.db.write_fetchall(
            "SELECT o_id, o_seq, o_inflight FROM webhook_make_deliveries(?::text[], ?::text[], ?::text[], ?::text[],"
            " ?::text[], ?::text[], ?::float8[], ?::float8[], ?::bool[], ?::float8, ?::text, ?::bigint)",
            (*(list(c) for c in columns), now, self.db.node, cap),
        )
        made = {r["o_id"]: r for r in found}
        for row in rows:
            if row[8] and row[0] in made and not made[row[0]]["o_inflight"]:
                row[8] = False  # pending: a claim takes it when the endpoint has room
        return {row[0]: made[row[0]]["o_seq"] for row in rows if row[0] in made}  # in the rows' order, as on SQLite

    async def create_test_delivery(self, tenant: str, endpoint_id: str, payload: str, now: float) -> int:
        """A ``webhook.test`` delivery, claimed at once (the API sends it itself)."""
        sql = (
            "INSERT INTO webhook_deliveries(id, tenant_id, endpoint_id, event_id, event_type, payload, status,"
            " claimed_at, created_at, claimed_by) VALUES (?,?,?,?,?,?,'inflight',?,?,?)"
        )
        params = (
            new_id(DELIVERY_ID),
            tenant,
            endpoint_id,
            new_id("test_"),
            "webhook.test",
            payload,
            now,
            now,
            self.db.node,
        )
        if self.pg:  # no lastrowid there
            async with self.db.transaction() as tx:
                row = await tx.fetchone(sql + " RETURNING seq", params)
            return row["seq"]
        cur = await self.db.execute(sql, params)
        return cur.lastrowid

    # --- deliveries: the dispatcher's side ---------------------------------------------------

    async def requeue_inflight(self) -> int:
        """At startup: the deliveries left in flight by a crash (of this node,
        or of nodes that are gone) go back to pending; how many."""
        return sum(t.rows for t in await self.take_back(own=True))

    async def take_back(self, own: bool = False, now: float | None = None, grace: float = 0.0) -> list[TakenBack]:
        """Put the deliveries in flight on nodes that are gone back to pending
        (sent again: at least once), and with ``own`` those claimed under this
        node's name too (at startup: a restart with the same name); how many
        per node. Never a live node's.

        On PostgreSQL, given ``now``, only gone nodes' claims made before
        ``now - grace``: a node that has just connected may not be in the list
        of sessions read yet. Rows are taken with ``SKIP LOCKED``: two nodes
        taking over at once take each row once. A fifo endpoint's head in
        flight goes back to pending as its oldest unfinished delivery, so it
        is its head again: the order holds. One walk of the in-flight partial
        index (rows in flight are few) and one read of the sessions.
        """
        gone = self.db.gone("claimed_by")
        if self.pg and now is not None:
            gone = f"({gone} AND COALESCE(claimed_at, 0) < :before)"
        where = f"status='inflight' AND (claimed_by=:node OR {gone})" if own else f"status='inflight' AND {gone}"
        params = {"node": self.db.node, "before": (now or 0.0) - grace}
        back = (
            "UPDATE webhook_deliveries AS d SET status='pending', claimed_at=NULL, claim_id=NULL, claimed_by=NULL,"
            " due_at=COALESCE(d.due_at, d.created_at)"
        )
        if self.pg:
            async with self.db.transaction() as tx:
                rows = await tx.fetchall(
                    f"WITH t AS (SELECT seq, claimed_by FROM webhook_deliveries WHERE {where} FOR UPDATE SKIP LOCKED)"
                    f" {back} FROM t WHERE d.seq=t.seq RETURNING t.claimed_by AS node",
                    params,
                )
        else:  # one process owns the file: the claims of runs that ended
            async with self.db.transaction() as tx:
                rows = await tx.fetchall(f"SELECT claimed_by AS node FROM webhook_deliveries WHERE {where}", params)
                if rows:
                    await tx.execute(f"{back} WHERE {where}", params)
        counts: dict[str | None, int] = {}
        for r in rows:
            counts[r["node"]] = counts.get(r["node"], 0) + 1
        return [TakenBack(node, n) for node, n in sorted(counts.items(), key=lambda kv: kv[0] or "")]

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
        if self.pg:
            return await self._claim_pg(now, limit, cap, room, claim_id)
        cur = await self.db.execute(
            "UPDATE webhook_deliveries SET status='inflight', claimed_at=?, claim_id=?, claimed_by=? WHERE seq IN ("
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
            (now, claim_id, self.db.node, now, cap, json.dumps(room), cap, limit),
        )
        if cur.rowcount == 0:
            return []
        return await self.db.fetchall(
            f"SELECT {_CLAIMED_COLUMNS} FROM webhook_deliveries WHERE status='inflight' AND claim_id=? ORDER BY due_at",
            (claim_id,),
        )

    async def _claim_pg(self, now: float, limit: int, cap: int, room: dict[str, int], claim_id: int) -> list:
        """:meth:`claim` on PostgreSQL, where several nodes may claim at once.

        Per enabled endpoint, a LATERAL walk of its (endpoint_id, due_at)
        pending index takes its room's worth of due rows, skipping rows another
        transaction has locked (``FOR UPDATE SKIP LOCKED``): two nodes claiming
        together get different rows, neither waits. The UPDATE re-checks
        ``status='pending'`` on the row it locks, and answers the rows claimed
        (RETURNING: claim ids are per node, so no SELECT by claim id). The
        rows record this node (``claimed_by``).

        The endpoint's ``cap`` holds for the cluster: each endpoint takes at
        most ``cap`` minus its rows in flight on every node (and at most its
        ``room`` on this node: its slots here and its rate tokens). For those
        counts to be right, claims (and the consumer's insert of rows already
        in flight) take turns on one advisory lock held until commit
        (``tierd.webhooks.claims``): the UPDATE's snapshot, taken after the
        lock, sees every other claim. What it costs: one more seek per enabled
        endpoint (a count over the in-flight partial index, at most ``cap``
        entries each), and one claim at a time across the cluster. So the
        claim is one call of ``webhook_claim_due`` (migration 8): the lock is
        held for no round trip (a claim takes up to ``limit`` rows, and the
        sending runs side by side on every node).
        """
        rows = await self.db.write_fetchall(
            f"SELECT {_CLAIMED_COLUMNS}, due_at FROM webhook_claim_due(?::float8, ?::bigint, ?::text, ?::bigint,"
            " ?::json, ?::bigint)",
            (now, claim_id, self.db.node, cap, json.dumps(room), limit),
        )
        return sorted(rows, key=lambda r: r["due_at"])

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

    # --- ordered endpoints (ordering: fifo, see ordering.py) ----------------------------------

    async def claim_heads(self, now: float, endpoint_ids: list[str], limit: int, claim_id: int) -> list:
        """Claim the head of each fifo endpoint of ``endpoint_ids`` that is due,
        at most ``limit`` of them (the longest due first).

        The head is the endpoint's oldest pending delivery in event order
        (created_at, seq): one seek of the pending index per endpoint. None is
        claimed while one of the endpoint's deliveries is in flight (the last
        head, its result not written yet): one seek of the in-flight index.
        """
        if limit <= 0:
            return []
        ids, param = value_list(self.db.dialect, "text", endpoint_ids)
        sql = self._q(
            "UPDATE webhook_deliveries SET status='inflight', claimed_at=?, claim_id=?, claimed_by=? WHERE seq IN ("
            " SELECT d.seq FROM webhook_endpoints e CROSS JOIN webhook_deliveries d"
            f" ON d.seq=({_HEAD.format(endpoint='e.id')})"
            f" WHERE e.id IN {ids} AND e.enabled=1 AND d.due_at<=? AND NOT EXISTS ("
            "  SELECT 1 FROM webhook_deliveries i INDEXED BY webhook_deliveries_inflight"
            "  WHERE i.endpoint_id=e.id AND i.status='inflight')"
            " ORDER BY d.due_at LIMIT ?) AND status='pending'"
        )
        params = (now, claim_id, self.db.node, param, now, limit)
        if self.pg:
            # No SKIP LOCKED here: skipping a head another node holds would claim
            # the delivery after it, out of order. The UPDATE waits for that
            # node's claim instead and re-checks status='pending' on the row:
            # it is in flight now, so nothing of that endpoint is claimed.
            async with self.db.transaction() as tx:
                return await tx.fetchall(sql + f" RETURNING {_CLAIMED_COLUMNS}", params)
        cur = await self.db.execute(sql, params)
        if cur.rowcount == 0:
            return []
        return await self.db.fetchall(
            f"SELECT {_CLAIMED_COLUMNS} FROM webhook_deliveries WHERE status='inflight' AND claim_id=?", (claim_id,)
        )

    async def head_of(self, endpoint_id: str) -> dict | None:
        """The delivery a fifo endpoint sends next or is sending: its oldest
        unfinished one in event order (``id``, ``status``, ``created_at``), or None."""
        row = await self.db.fetchone(
            self._q(
                "SELECT id, status, created_at, seq FROM ("
                f" SELECT * FROM ({_HEAD_ROW.format(status='pending')}) AS p"
                f" UNION ALL SELECT * FROM ({_HEAD_ROW.format(status='inflight')}) AS i) AS h"
                " ORDER BY created_at, seq LIMIT 1"
            ),
            {"endpoint": endpoint_id},
        )
        return dict(row) if row else None

    async def with_heads(self, endpoints: list[dict]) -> list[dict]:
        """Fill ``blocked_by`` (the delivery holding it back) of each blocked endpoint shown."""
        for endpoint in endpoints:
            if endpoint["blocked_since"] is not None:
                head = await self.head_of(endpoint["id"])
                endpoint["blocked_by"] = head["id"] if head else None
        return endpoints

    async def set_blocked(self, endpoint_id: str, blocked: bool, now: float) -> dict | None:
        """Mark a fifo endpoint blocked (since ``now``) or flowing again; the
        endpoint if that changed its state, else None (so each change is announced once)."""
        if blocked:
            sql = (
                "UPDATE webhook_endpoints SET blocked_since=? WHERE id=? AND blocked_since IS NULL AND ordering='fifo'"
            )
            params: tuple = (now, endpoint_id)
        else:
            sql = "UPDATE webhook_endpoints SET blocked_since=NULL WHERE id=? AND blocked_since IS NOT NULL"
            params = (endpoint_id,)
        async with self.db.transaction() as tx:
            cur = await tx.execute(sql, params)
            if cur.rowcount == 0:
                return None
            row = await tx.fetchone("SELECT * FROM webhook_endpoints WHERE id=?", (endpoint_id,))
        return endpoint_of(row)

    async def count_blocked(self) -> int:
        row = await self.db.fetchone("SELECT COUNT(*) AS n FROM webhook_endpoints WHERE blocked_since IS NOT NULL")
        return row["n"]

    async def announce_endpoint(self, endpoint_id: str) -> None:
        """Tell the other nodes that an endpoint changed (PostgreSQL's NOTIFY on
        ``ENDPOINTS_CHANNEL``), so that they reload it into their cache: a
        disabled one stops, a new one gets events. Nothing on SQLite."""
        if self.pg:
            await self.db.execute("SELECT pg_notify(?, ?)", (ENDPOINTS_CHANNEL, endpoint_id))

    async def next_due(self) -> float | None:
        """The earliest due time of any pending delivery (one index seek)."""
        row = await self.db.fetchone("SELECT MIN(due_at) AS t FROM webhook_deliveries WHERE status='pending'")
        return row["t"] if row else None

    async def fold_counts(self) -> None:
        """Move the counters' changes into the counters (PostgreSQL's migration 8,
        the ``webhooks.fold`` job, every ``FOLD_INTERVAL`` seconds on one node).
        Reads are exact either way (the ``_now`` views); folding keeps the changes
        few. Nothing on SQLite, whose triggers update the counters in place."""
        if self.pg:
            await self.db.execute("SELECT webhook_counts_fold()")

    async def record(self, outcomes: list[Outcome]) -> None:
        """Write a batch of attempt results: one INSERT; the trigger of
        migration 2 moves each delivery (and its endpoint's failure window)."""
        if self.pg:
            # Rows locked in one order by every node (the deliveries, the endpoints'
            # failure windows): two nodes' batches cannot deadlock. Stable: an
            # endpoint's attempts keep their order (its failure window follows it).
            outcomes = sorted(outcomes, key=lambda o: o.endpoint_id)
        source, params = bulk_rows(
            self.db.dialect,
            _ATTEMPT,
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
            ],
        )
        await self.db.execute(f"INSERT INTO webhook_attempts({', '.join(_ATTEMPT)}) {source}", params)

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
        before: tuple[float, int] | None,
        status: str | None,
        event_type: str | None,
        since: float | None,
        until: float | None,
    ) -> list[dict]:
        """A page of an endpoint's deliveries, newest first: (created_at, seq)
        descending, before the (created_at, seq) ``before``.

        Filters: ``status``, ``event_type`` (exact, or ``prefix.*``; ``*`` is
        any), created at or after ``since`` and before ``until``. A page reads
        about ``limit`` rows along one index in that order, whatever the size
        of the table (which filter walks which index: migration 3).
        """
        where = ["d.tenant_id=?", "d.endpoint_id=?"]
        params: list = [tenant, endpoint_id]
        if before is not None:
            where.append("(d.created_at, d.seq)<(?, ?)")
            params += before
        for clause, value in (("d.created_at>=?", since), ("d.created_at<?", until)):
            if value is not None:
                where.append(clause)
                params.append(value)
        if status is not None:
            if status not in DELIVERY_STATUSES:
                raise ValueError(f"unknown delivery status {status!r}")
            # A literal, not a parameter: SQLite takes a partial index (WHERE
            # status='failed') only for a literal that matches its WHERE.
            where.append(f"d.status='{status}'")
        index = STATUS_INDEX.get(status or "", "webhook_deliveries_list")
        if event_type and event_type != "*":
            if event_type.endswith(".*"):
                prefix = event_type[:-1]
                types = await self._types_under(endpoint_id, prefix, MAX_MERGED_TYPES + 1)
                if not types:
                    return []
                if status not in STATUS_INDEX and len(types) <= MAX_MERGED_TYPES:
                    return await self._merged_walks(where, params, types, limit)
                # A status index, or many types: one walk, the type checked on the way
                # (a range of the text: the prefix and everything sorting after it that starts with it).
                where.append("d.event_type>=? AND d.event_type<?")
                params += [prefix, _next_prefix(prefix)]
            else:
                where.append("d.event_type=?")
                params.append(event_type)
                if status not in STATUS_INDEX:
                    index = "webhook_deliveries_type"
        rows = await self.db.fetchall(
            self._q(
                f"SELECT d.* FROM webhook_deliveries d INDEXED BY {index} WHERE {' AND '.join(where)}"
                " ORDER BY d.created_at DESC, d.seq DESC LIMIT ?"
            ),
            (*params, limit),
        )
        return [delivery_of(r) for r in rows]

    async def _types_under(self, endpoint_id: str, prefix: str, most: int) -> list[str]:
        """The endpoint's event types starting with ``prefix`` (at most ``most``):
        a loose walk of (endpoint_id, event_type, created_at), one seek per type."""
        rows = await self.db.fetchall(
            self._q(
                "WITH RECURSIVE t(type, k) AS ("
                " SELECT (SELECT MIN(event_type) FROM webhook_deliveries INDEXED BY webhook_deliveries_type"
                "  WHERE endpoint_id=:ep AND event_type>=:lo AND event_type<:hi), 1"
                " UNION ALL"
                " SELECT (SELECT MIN(event_type) FROM webhook_deliveries INDEXED BY webhook_deliveries_type"
                "  WHERE endpoint_id=:ep AND event_type>t.type AND event_type<:hi), k+1"
                " FROM t WHERE t.type IS NOT NULL AND k<:most)"
                " SELECT type FROM t WHERE type IS NOT NULL"
            ),
            {"ep": endpoint_id, "lo": prefix, "hi": _next_prefix(prefix), "most": most},
        )
        return [r["type"] for r in rows]

    async def _merged_walks(self, where: list[str], params: list, types: list[str], limit: int) -> list[dict]:
        """The first ``limit`` rows of the walks of (endpoint_id, event_type,
        created_at) for each type, merged: at most ``len(types) * limit`` rows
        read, one statement (a UNION ALL of LIMITed walks; the merge is here,
        as SQLite would sort the union)."""
        arm = (
            "SELECT * FROM (SELECT d.* FROM webhook_deliveries d INDEXED BY webhook_deliveries_type"
            f" WHERE {' AND '.join(where)} AND d.event_type=? ORDER BY d.created_at DESC, d.seq DESC LIMIT ?) AS w"
        )
        sql = self._q(" UNION ALL ".join([arm] * len(types)))
        args: list = []
        for event_type in types:
            args += [*params, event_type, limit]
        rows = await self.db.fetchall(sql, args)
        newest = heapq.nlargest(limit, rows, key=lambda r: (r["created_at"], r["seq"]))
        return [delivery_of(r) for r in newest]

    async def delivery_cursor(self, tenant: str, endpoint_id: str, seq: int) -> tuple[float, int] | None:
        """(created_at, seq) of a delivery: the position of a cursor made by an
        older version (which paged by seq alone), or None if it is gone."""
        row = await self.db.fetchone(
            "SELECT d.created_at FROM webhook_deliveries d WHERE d.seq=? AND d.tenant_id=? AND d.endpoint_id=?"
            f" AND {_ENDPOINT_EXISTS}",
            (seq, tenant, endpoint_id),
        )
        return None if row is None else (row["created_at"], seq)

    async def deliveries_of_event(self, tenant: str, event_id: str) -> list[dict]:
        """Every delivery of one event, one per endpoint it went to (oldest endpoint first).

        Walks the tenant's endpoints in id order (ids rise with creation time)
        and seeks UNIQUE(endpoint_id, event_id) for each: no index on event_id
        alone is needed (nor paid on every insert), and nothing is sorted.
        """
        rows = await self.db.fetchall(
            self._q(
                "SELECT d.*, e.url AS endpoint_url FROM webhook_endpoints e INDEXED BY webhook_endpoints_list"
                " CROSS JOIN webhook_deliveries d ON d.endpoint_id=e.id AND d.event_id=?"
                " WHERE e.tenant_id=? ORDER BY e.id"
            ),
            (event_id, tenant),
        )
        return [delivery_of(r) | {"endpoint_url": r["endpoint_url"]} for r in rows]

    async def get_delivery(self, tenant: str, delivery_id: str) -> dict | None:
        """One delivery, unless its endpoint was deleted (its history is being purged)."""
        row = await self.db.fetchone(
            f"SELECT d.* FROM webhook_deliveries d WHERE d.tenant_id=? AND d.id=? AND {_ENDPOINT_EXISTS}",
            (tenant, delivery_id),
        )
        return delivery_of(row) if row else None

    async def attempts_of(self, seq: int) -> list[dict]:
        rows = await self.db.fetchall("SELECT * FROM webhook_attempts WHERE delivery_seq=? ORDER BY id", (seq,))
        return [attempt_of(r) for r in rows]

    async def requeue(self, tenant: str, delivery_id: str, now: float) -> bool:
        """Send a delivery again now (any state but in flight)."""
        cur = await self.db.execute(
            "UPDATE webhook_deliveries AS d SET status='pending', due_at=?, finished_at=NULL"
            f" WHERE d.tenant_id=? AND d.id=? AND d.status!='inflight' AND {_ENDPOINT_EXISTS}",
            (now, tenant, delivery_id),
        )
        return cur.rowcount > 0

    async def recover(self, tenant: str, endpoint_id: str, since: float, now: float, until: float | None = None) -> int:
        """Re-queue every failed delivery of an endpoint created since ``since`` (and before ``until``)."""
        cur = await self.db.execute(
            "UPDATE webhook_deliveries AS d SET status='pending', due_at=?, finished_at=NULL"
            " WHERE d.tenant_id=? AND d.endpoint_id=? AND d.status='failed' AND d.created_at>=? AND d.created_at<?"
            f" AND {_ENDPOINT_EXISTS}",
            (now, tenant, endpoint_id, since, float("inf") if until is None else until),
        )
        return cur.rowcount

    async def endpoint_stats(self, tenant: str, endpoint_id: str, since: float) -> dict:
        """Deliveries by status (all kept), and attempts from the minute of
        ``since`` on: total, by outcome, success rate, latency p50 and p99.

        Reads counters kept by the triggers of migration 3, not the history:
        one row for the deliveries, and the endpoint's per-minute rows of the
        window (at most one per outcome and latency bucket each minute), so
        the cost is the same at a thousand attempts a day or a million.

        Attempts are counted by whole minutes: the window starts at the
        minute that holds ``since`` (returned as ``since``, up to 59 s
        earlier). The latencies are estimates from a histogram whose buckets
        are 1.41x wide from 1 ms to 60 s (``LATENCY_BOUNDS_MS``): the value
        given lies in the same bucket as the exact percentile, so it is within
        41% of it (interpolated linearly inside the bucket); 60 s and over
        reads as 60000.
        """
        row = await self.db.fetchone(
            "SELECT c.pending, c.inflight, c.succeeded, c.failed FROM webhook_endpoints e"
            " JOIN webhook_delivery_counts_now c ON c.endpoint_id=e.id WHERE e.tenant_id=? AND e.id=?",
            (tenant, endpoint_id),
        )
        by_status = {status: row[status] if row else 0 for status in DELIVERY_STATUSES}
        first_minute = int(since // MINUTE)
        rows = await self.db.fetchall(
            "SELECT m.outcome, m.bucket, SUM(m.n) AS n FROM webhook_endpoints e"
            " JOIN webhook_attempt_minutes_now m ON m.endpoint_id=e.id AND m.minute>=?"
            " WHERE e.tenant_id=? AND e.id=? GROUP BY m.outcome, m.bucket",
            (first_minute, tenant, endpoint_id),
        )
        by_outcome: dict[str, int] = {}
        histogram = [0] * (len(LATENCY_BOUNDS_MS) + 1)
        for r in rows:
            n = int(r["n"])  # PostgreSQL's SUM of a BIGINT is a NUMERIC (a Decimal)
            by_outcome[r["outcome"]] = by_outcome.get(r["outcome"], 0) + n
            if r["bucket"] >= 0:
                histogram[r["bucket"]] += n
        total = sum(by_outcome.values())
        return {
            "deliveries": by_status,
            "since": first_minute * MINUTE,
            "attempts": {
                "total": total,
                "by_outcome": dict(sorted(by_outcome.items())),
                "success_rate": round(by_outcome.get("success", 0) / total, 4) if total else None,
                "latency_ms_p50": latency_percentile(histogram, 50),
                "latency_ms_p99": latency_percentile(histogram, 99),
            },
        }

    def prune_statements(self, cutoff: float) -> list[tuple[str, dict]]:
        """The DELETEs of :meth:`prune`, each taking ``:slice`` rows along an
        index from the oldest (see ``Database.delete_in_slices``)."""
        statements: list[tuple[str, dict]] = [
            (
                "DELETE FROM webhook_attempts WHERE id IN (SELECT id FROM webhook_attempts"
                " INDEXED BY webhook_attempts_time WHERE attempted_at<:cutoff ORDER BY attempted_at LIMIT :slice)",
                {"cutoff": cutoff},
            ),
            # Finished ones, and any left by an endpoint deleted while one of
            # its events was being fanned out (never claimed: no endpoint). A
            # slice walks past old rows still pending (a disabled endpoint's
            # backlog): they are few, and the walk is the same for each slice.
            (
                "DELETE FROM webhook_deliveries WHERE seq IN (SELECT d.seq FROM webhook_deliveries d"
                " INDEXED BY webhook_deliveries_created WHERE d.created_at<:cutoff"
                " AND (d.status IN ('succeeded','failed')"
                " OR NOT EXISTS (SELECT 1 FROM webhook_endpoints e WHERE e.id=d.endpoint_id))"
                " ORDER BY d.created_at LIMIT :slice)",
                {"cutoff": cutoff},
            ),
            # Minutes that ended before the cutoff: their attempts are gone.
            (
                "DELETE FROM webhook_attempt_minutes WHERE (endpoint_id, minute, outcome, bucket) IN ("
                " SELECT endpoint_id, minute, outcome, bucket FROM webhook_attempt_minutes"
                " INDEXED BY webhook_attempt_minutes_minute WHERE minute<:minute ORDER BY minute LIMIT :slice)",
                {"minute": int(cutoff // MINUTE)},
            ),
        ]
        return [(self._q(sql), params) for sql, params in statements]

    # --- the history of deleted endpoints ----------------------------------------------------

    async def purges(self) -> list[str]:
        """Deleted endpoints whose history is still to be removed (``webhook_purges``)."""
        rows = await self.db.fetchall("SELECT endpoint_id FROM webhook_purges ORDER BY endpoint_id")
        return [r["endpoint_id"] for r in rows]

    def purge_statements(self, endpoint_id: str) -> list[tuple[str, dict]]:
        """The DELETEs of :meth:`purge`, each taking ``:slice`` rows of the endpoint
        along an index (see ``Database.delete_in_slices``)."""
        statements: list[tuple[str, dict]] = [
            # Its deliveries along (endpoint_id, created_at); the trigger of
            # migration 4 deletes the attempts of each (one seek of (delivery_seq)).
            (
                "DELETE FROM webhook_deliveries WHERE seq IN (SELECT seq FROM webhook_deliveries"
                " INDEXED BY webhook_deliveries_list WHERE endpoint_id=:endpoint LIMIT :slice)",
                {"endpoint": endpoint_id},
            ),
            # Its attempt counts along their primary key.
            (
                "DELETE FROM webhook_attempt_minutes WHERE (endpoint_id, minute, outcome, bucket) IN ("
                " SELECT endpoint_id, minute, outcome, bucket FROM webhook_attempt_minutes"
                " WHERE endpoint_id=:endpoint LIMIT :slice)",
                {"endpoint": endpoint_id},
            ),
        ]
        return [(self._q(sql), params) for sql, params in statements]

    async def purge(self, endpoint_id: str) -> dict[str, int]:
        """Remove the history of the deleted endpoint ``endpoint_id``, then take
        it off the queue; the rows removed: ``deliveries``, ``attempts`` (both
        counted in the queue row, so across restarts) and ``attempt_minutes``
        (those of this call).

        In slices with pauses that leave the writer to intake, like retention
        (``Database.delete_in_slices``). Each slice is one statement: a crash
        or a shutdown in the middle leaves whole deliveries with their
        attempts, and the queue row, for the next start to go on from. Nothing
        of the endpoint is shown meanwhile (its row is gone). Attempts whose
        delivery retention removed first are retention's to remove.
        """
        deliveries, minutes = self.purge_statements(endpoint_id)
        await self.db.delete_in_slices(*deliveries)
        await self.fold_counts()  # its minutes not folded yet, into the table purged next
        removed_minutes = await self.db.delete_in_slices(*minutes)
        async with self.db.transaction() as tx:
            row = await tx.fetchone(
                "SELECT deliveries, attempts FROM webhook_purges WHERE endpoint_id=?", (endpoint_id,)
            )
            await tx.execute("DELETE FROM webhook_purges WHERE endpoint_id=?", (endpoint_id,))
        return {
            "deliveries": row["deliveries"] if row else 0,
            "attempts": row["attempts"] if row else 0,
            "attempt_minutes": removed_minutes,
        }

    async def prune(self, cutoff: float) -> int:
        """Delete attempts and finished deliveries older than ``cutoff`` (and
        old ones of deleted endpoints), and the attempt counts of the minutes
        before it; the rows of history deleted (attempts and deliveries).

        In slices sized to a time budget with pauses that leave the writer to
        intake (``Database.delete_in_slices``): a first prune of millions of
        rows takes longer, it does not stall deliveries. The triggers of
        migration 3 keep the endpoints' delivery counters right as rows go.
        """
        attempts, deliveries, minutes = self.prune_statements(cutoff)
        removed = await self.db.delete_in_slices(*attempts) + await self.db.delete_in_slices(*deliveries)
        await self.fold_counts()  # minutes not folded yet, into the table pruned next
        await self.db.delete_in_slices(*minutes)  # counts, not history: not in the total
        return removed


def _next_prefix(prefix: str) -> str:
    """The first text after every text starting with ``prefix`` (which ends with
    '.'): ``'invoice.'`` -> ``'invoice/'``, so a prefix is a range of an index."""
    return prefix[:-1] + chr(ord(prefix[-1]) + 1)


def latency_percentile(histogram: Sequence[int], p: int) -> float | None:
    """The ``p``-th percentile (ms) of the latencies counted in ``histogram``
    (counts per bucket of ``LATENCY_BOUNDS_MS``), or None if it is empty.

    The rank is the one an exact sort would take (the value at 0-based
    position ``min(n - 1, n * p // 100)``); the value is interpolated
    linearly inside its bucket, at the middle of its share of the bucket.
    """
    total = sum(histogram)
    if not total:
        return None
    rank = min(total - 1, total * p // 100)
    seen = 0
    for bucket, n in enumerate(histogram):
        if rank < seen + n:
            if bucket == len(LATENCY_BOUNDS_MS):
                return LATENCY_BOUNDS_MS[-1]  # 60 s and over: no upper bound to interpolate to
            low = LATENCY_BOUNDS_MS[bucket - 1] if bucket else 0.0
            high = LATENCY_BOUNDS_MS[bucket]
            return round(low + (high - low) * (rank - seen + 0.5) / n, 2)
        seen += n
    return None  # not reached: rank < total
