"""Retention: finished notifications past it go, with their attempts, a slice at
a time (core's ``Database.delete_in_slices``); pending and grouped ones stay."""

import asyncio

from tierd.core.storage import CORE_MIGRATIONS, Database
from tierd.plugins.notifications import store
from tierd.testing import assert_index_walk

DAY = 86400.0
NOW = 1_800_000_000.0
RETENTION = 30 * DAY


async def add(db, n: int, status: str, created_at: float, attempts: int = 0) -> list[str]:
    """``n`` notifications of ``status`` created at ``created_at``, each with ``attempts`` attempts."""
    ids = [f"{store.ID_PREFIX}{status}_{created_at:.0f}_{i}" for i in range(n)]
    async with db.transaction() as tx:
        for i in ids:
            row = {"id": i, "tenant_id": "acme", "kind": "event", "channel": "journal", "status": status}
            assert await store.insert_notification(tx, row | {"route": "all", "created_at": created_at})
        await store.record_attempts(
            tx,
            [
                {
                    "id": i,
                    "attempt": a,
                    "at": created_at + a,
                    "outcome": "ok" if status == "delivered" else "error",
                    "detail": "",
                    "duration_ms": 1.0,
                    "status": status,
                    "next_attempt_at": created_at + 60 if status == "pending" else None,
                    "last_error": "",
                    "sent_at": created_at + a if status == "delivered" else None,
                }
                for i in ids
                for a in range(1, attempts + 1)
            ],
        )
    return ids


async def test_purge_removes_finished_notifications_past_retention_and_their_attempts_in_slices(tmp_path):
    path = tmp_path / "tierd.db"
    db = await Database(path).open()
    try:
        await db.migrate({"core": CORE_MIGRATIONS, "notifications": store.MIGRATIONS})
        old, recent = NOW - 40 * DAY, NOW - DAY
        gone = []
        gone += await add(db, 900, "delivered", old, attempts=1)
        gone += await add(db, 300, "failed", old, attempts=2)
        for status in ("muted", "throttled", "digested"):
            gone += await add(db, 100, status, old)
        gone += await add(db, 50, "delivered", NOW - RETENTION - 1, attempts=1)  # just past retention
        kept = await add(db, 40, "pending", old, attempts=2)  # still being retried
        kept += await add(db, 10, "grouped", old)  # waiting in a group
        kept += await add(db, 60, "delivered", recent, attempts=1)
        kept += await add(db, 20, "failed", NOW - RETENTION + 1, attempts=1)  # just within retention

        # Slices leave the writer to others in between: a write queued right
        # after the purge began runs before it ends (behind one slice) and sees
        # some of the rows to delete gone and some still there. A single DELETE
        # of everything would let it see all or none.
        purge = asyncio.create_task(store.purge(db, NOW - RETENTION))
        await asyncio.sleep(0)  # the first slice is queued on the writer
        await db.execute(
            "INSERT INTO notifications (id, tenant_id, kind, channel, status, body, created_at, updated_at)"
            " SELECT 'ntf_meanwhile', '', 'manual', 'journal', 'pending', COUNT(*), ?, ? FROM notifications"
            " WHERE created_at < ? AND status NOT IN ('pending', 'grouped')",
            (NOW, NOW, NOW - RETENTION),
        )
        deleted = await purge
        assert deleted == len(gone) == 1550
        seen = await db.fetchone("SELECT body FROM notifications WHERE id='ntf_meanwhile'")
        assert seen is not None and 0 < int(seen["body"]) < len(gone), seen["body"]
        kept.append("ntf_meanwhile")
        left = {r["id"] for r in await db.fetchall("SELECT id FROM notifications")}
        assert left == set(kept)
        attempts_left = {
            r["notification_id"] for r in await db.fetchall("SELECT notification_id FROM notification_attempts")
        }
        assert attempts_left == {i for i in kept if "grouped" not in i and i != "ntf_meanwhile"}
        n = await db.fetchone("SELECT COUNT(*) AS n FROM notification_attempts")
        assert n is not None and n["n"] == 40 * 2 + 60 + 20

        assert await store.purge(db, NOW - RETENTION) == 0  # nothing left to do
    finally:
        await db.close()

    # Each slice walks notifications_created from the oldest row (no scan, no
    # sort), and the trigger finds a notification's attempts by their index.
    slice_sql = store.PURGE_SLICE.replace(":cutoff", repr(NOW - RETENTION)).replace(":slice", "256")
    assert any("notifications_created" in line for line in assert_index_walk(path, slice_sql))
    assert_index_walk(path, "DELETE FROM notification_attempts WHERE notification_id = 'ntf_1'")
