"""Pages of the notification history cost the same at any size (issue 16): every
filter, alone and combined, as the admin and as a tenant, through the API; each
statement the page ran on the database is read along an index in seq order,
never sorted in a temporary B-tree, never a scan of the table. The plans are
SQLite's: on PostgreSQL (``TIERD_TEST_STORAGE=postgresql``) the pages' rows are
checked the same, the plans left to its planner's statistics."""

from __future__ import annotations

import contextlib
import re

from tierd.core.clock import iso
from tierd.testing import LocalDaemon, StepClock, assert_index_walk, eventually, recorded_reads

CONFIG = {
    "plugins": {"disabled": ["webhooks", "reconciliation"]},
    "notifications": {
        "channels": {"journal": {"type": "log"}, "chat": {"type": "log"}},
        "routes": [
            {"name": "invoices", "match": {"type": "invoice.*"}, "channels": ["journal", "chat"]},
            {"name": "payments", "match": {"type": "payment.*"}, "channels": ["journal"]},
        ],
    },
}


def walks_index(plan: list[str]) -> None:
    """Besides what assert_index_walk checks, no full pass over an index either
    ("SCAN t USING INDEX i" reads every entry of i)."""
    assert not [line for line in plan if line.startswith("SCAN ") and line != "SCAN CONSTANT ROW"], plan


async def test_every_history_page_walks_an_index_in_seq_order(tmp_path):
    clock = StepClock()
    async with LocalDaemon(tmp_path, CONFIG, clock=clock) as d:
        assert d.daemon is not None
        acme = await d.tenant("acme")
        await d.tenant("globex")
        first = await d.publish("acme", "invoice.paid", {"amount": "10.00"})
        await d.publish("globex", "invoice.paid", {"amount": "20.00"})
        await d.settled()  # their notifications are stamped now, before ``middle``
        clock.advance(60)
        middle = clock.time()
        clock.advance(60)
        for n in range(3):
            await d.publish("acme", "invoice.paid", {"amount": f"{n}.00"})
            await d.publish("acme", "payment.failed", {"amount": f"{n}.00"})
        status, body = await d.call("POST", "/v1/notifications/test", {"channel": "chat"})
        assert status == 200, body
        await d.settled()
        db = d.daemon.db

        async def delivered() -> bool:
            row = await db.fetchone("SELECT COUNT(*) AS n FROM notifications WHERE status='delivered'")
            return row is not None and row["n"] == 2 * 2 + 3 * 2 + 3 + 1

        await eventually(delivered, what="every notification delivered")

        since, until = iso(middle), iso(clock.time() + 1)
        event = first["id"]
        combined = {"status": "delivered", "channel": "journal", "route": "invoices", "kind": "event"}
        # (caller, query parameters, what each row returned must have)
        cases: list[tuple[str, dict, dict]] = [
            ("admin", {}, {}),
            ("admin", {"channel": "chat"}, {"channel": "chat"}),
            ("admin", {"status": "delivered"}, {"status": "delivered"}),
            ("admin", {"status": "failed"}, {"status": "failed"}),
            ("admin", {"event": event}, {"event_id": event}),
            ("admin", {"route": "payments"}, {"route": "payments"}),
            ("admin", {"kind": "event"}, {"kind": "event"}),
            ("admin", {"kind": "test"}, {"kind": "test"}),
            ("admin", {"since": since}, {}),
            ("admin", {"until": since}, {}),
            ("admin", {"since": since, "until": until}, {}),
            ("admin", {**combined, "since": since, "until": until}, combined),
            ("admin", {"status": "delivered", "limit": "2"}, {"status": "delivered"}),
            ("acme-by-admin", {"status": "delivered", "channel": "chat"}, {"tenant": "acme", "channel": "chat"}),
            ("acme", {}, {"tenant": "acme"}),
            ("acme", {"channel": "journal"}, {"tenant": "acme", "channel": "journal"}),
            ("acme", {"status": "delivered"}, {"tenant": "acme", "status": "delivered"}),
            ("acme", {"event": event}, {"tenant": "acme", "event_id": event}),
            ("acme", {"route": "invoices"}, {"tenant": "acme", "route": "invoices"}),
            ("acme", {"kind": "event"}, {"tenant": "acme", "kind": "event"}),
            ("acme", {"kind": "test"}, {"tenant": "acme", "kind": "test"}),
            ("acme", {"since": since, "until": until}, {"tenant": "acme"}),
            ("acme", {"status": "delivered", "channel": "journal", "since": since}, {"tenant": "acme"}),
            ("acme", {"status": "delivered", "limit": "1"}, {"tenant": "acme", "status": "delivered"}),
        ]
        expected_counts = {
            ("admin", "{}"): 14,
            ("admin", str({"event": event})): 2,
            ("admin", str({"kind": "test"})): 1,
            ("admin", str({"since": since})): 10,
            ("admin", str({"until": since})): 4,
        }
        for who, params, want in cases:
            token, tenant = {"admin": (None, None), "acme-by-admin": (None, "acme"), "acme": (acme, None)}[who]
            rows, pages = [], 0
            cursor = None
            on_sqlite = db.dialect == "sqlite"
            recording = recorded_reads(db) if on_sqlite else contextlib.nullcontext([])
            async with recording as reads:
                while True:  # every page: the first ones and the last
                    query = params | ({"cursor": cursor} if cursor else {})
                    status, body = await d.call("GET", "/v1/notifications", params=query, token=token, tenant=tenant)
                    assert status == 200, (who, params, body)
                    rows += body["data"]
                    pages += 1
                    cursor = body["next_cursor"]
                    if cursor is None:
                        break
            label = f"{who} {params}"
            for row in rows:
                assert {k: row[k] for k in want} == want, (label, row)
            seqs = [r["id"] for r in rows]
            assert len(seqs) == len(set(seqs)), label
            if "limit" in params:
                assert pages > 1, label
            if (who, str(params)) in expected_counts:
                assert len(rows) == expected_counts[who, str(params)], (label, rows)
            ours = [sql for sql in reads if re.search(r"\bnotification(s|_attempts)\b", sql)]
            # No query when a tenant asks for test sends (it has none).
            if on_sqlite and not (who == "acme" and params.get("kind") == "test"):
                assert any("ORDER BY seq DESC" in sql for sql in ours), (label, reads)
            for sql in ours:
                walks_index(assert_index_walk(db.path, sql))
