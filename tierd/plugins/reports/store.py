"""The reports tables and every SQL statement of the module.

``report_runs`` holds one row per run, whatever asked for it (the API, the CLI
through the API, a schedule): ``pending`` (waiting for a slot of the runner),
``running``, then ``delivered`` (its file is ready and, for a schedule, handed to
its destinations), ``skipped`` (a schedule's run with ``only_if_rows`` and no
rows) or ``failed`` (with its ``error``). ``tenant_id`` is the tenant whose rows
the report covers, ``''`` for a report across tenants (the admin's). A
schedule's run is made with ``dedup_key`` (schedule and due time), UNIQUE: a
timer that fires twice, or a catch-up at start, makes it once.

``report_schedules`` remembers since when each schedule is known, so that the
catch-up at start never makes a run that was due before the schedule existed.
"""

from __future__ import annotations

import json
from typing import Any

MIGRATIONS = [
    # 1: runs and schedules.
    """
    CREATE TABLE report_runs (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        id TEXT NOT NULL UNIQUE,
        tenant_id TEXT NOT NULL,
        reports TEXT NOT NULL,
        params TEXT NOT NULL,
        format TEXT NOT NULL,
        timezone TEXT NOT NULL DEFAULT 'UTC',
        status TEXT NOT NULL,
        error TEXT NOT NULL DEFAULT '',
        file_path TEXT,
        file_name TEXT,
        media_type TEXT,
        size INTEGER,
        rows INTEGER,
        trigger TEXT NOT NULL,
        schedule TEXT,
        deliver TEXT,
        delivery TEXT,
        dedup_key TEXT UNIQUE,
        due_at REAL,
        attempts INTEGER NOT NULL DEFAULT 0,
        actor TEXT NOT NULL DEFAULT '',
        created_at REAL NOT NULL,
        started_at REAL,
        finished_at REAL
    );
    CREATE INDEX report_runs_tenant ON report_runs(tenant_id, seq);
    CREATE INDEX report_runs_waiting ON report_runs(status, seq) WHERE status IN ('pending', 'running');
    CREATE INDEX report_runs_schedule ON report_runs(schedule, seq) WHERE schedule IS NOT NULL;
    CREATE INDEX report_runs_finished ON report_runs(finished_at) WHERE finished_at IS NOT NULL;
    CREATE TABLE report_schedules (
        name TEXT PRIMARY KEY,
        known_since REAL NOT NULL
    );
    """,
]

ID_PREFIX = "rpt_"
STATUSES = ("pending", "running", "delivered", "skipped", "failed")
FINAL_STATUSES = ("delivered", "skipped", "failed")
TRIGGERS = ("api", "cli", "schedule")
#: The largest seq SQLite holds (a page's walk always has an upper bound).
MAX_SEQ = 2**63 - 1


def _dumps(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), default=str, ensure_ascii=False)


_COLUMNS = (
    "id",
    "tenant_id",
    "reports",
    "params",
    "format",
    "timezone",
    "status",
    "trigger",
    "schedule",
    "deliver",
    "dedup_key",
    "due_at",
    "actor",
    "created_at",
)


async def insert_run(db, run: dict) -> bool:
    """Insert a pending run unless its ``dedup_key`` exists; True if inserted."""
    row = {"schedule": None, "deliver": None, "dedup_key": None, "due_at": None, "actor": "", "timezone": "UTC", **run}
    row["status"] = "pending"
    row["reports"] = _dumps(row["reports"])
    row["params"] = _dumps(row["params"])
    if row["deliver"] is not None:
        row["deliver"] = _dumps(row["deliver"])
    cur = await db.execute(
        f"INSERT OR IGNORE INTO report_runs({', '.join(_COLUMNS)}) VALUES ({', '.join('?' * len(_COLUMNS))})",
        [row[c] for c in _COLUMNS],
    )
    return bool(cur.rowcount == 1)


async def get(db, run_id: str, tenant: str | None = None):
    """A run; ``tenant`` (not None) must own it (a tenant's wall)."""
    sql, params = "SELECT * FROM report_runs WHERE id=?", [run_id]
    if tenant is not None:
        sql += " AND tenant_id=?"
        params.append(tenant)
    return await db.fetchone(sql, params)


async def page(db, tenant: str | None, before_seq: int | None, limit: int, status: str | None = None):
    """Newest first; ``tenant`` None: every run (the admin's view)."""
    where: list[str] = ["seq<?"]
    params: list[Any] = [MAX_SEQ if before_seq is None else before_seq]
    if tenant is not None:
        where.insert(0, "tenant_id=?")
        params.insert(0, tenant)
    if status is not None:
        where.append("+status=?")
        params.append(status)
    return await db.fetchall(
        f"SELECT * FROM report_runs WHERE {' AND '.join(where)} ORDER BY seq DESC LIMIT ?", [*params, limit]
    )


async def waiting(db, limit: int):
    """Pending runs, oldest first."""
    return await db.fetchall(
        "SELECT * FROM report_runs WHERE status='pending' ORDER BY seq LIMIT ?",
        (limit,),
    )


async def claim(db, run_id: str, now: float) -> bool:
    """pending -> running; False if somebody else took it (or it is gone)."""
    cur = await db.execute(
        "UPDATE report_runs SET status='running', started_at=?, attempts=attempts+1 WHERE id=? AND status='pending'",
        (now, run_id),
    )
    return bool(cur.rowcount == 1)


async def finish(db, run_id: str, status: str, now: float, **fields: Any) -> None:
    """A run's end: ``status`` and any of error, file_path, file_name, media_type, size, rows, delivery."""
    if "delivery" in fields and fields["delivery"] is not None:
        fields["delivery"] = _dumps(fields["delivery"])
    sets = ", ".join(f"{name}=?" for name in fields)
    await db.execute(
        f"UPDATE report_runs SET status=?, finished_at=?{', ' + sets if sets else ''} WHERE id=?",
        (status, now, *fields.values(), run_id),
    )


async def release(db, run_id: str) -> None:
    """A run stopped by a shutdown: pending again, without counting the attempt."""
    await db.execute(
        "UPDATE report_runs SET status='pending', started_at=NULL, attempts=MAX(attempts-1, 0)"
        " WHERE id=? AND status='running'",
        (run_id,),
    )


async def set_file(db, run_id: str, **fields: Any) -> None:
    """Record the generated file of a run still running (before its delivery)."""
    sets = ", ".join(f"{name}=?" for name in fields)
    await db.execute(f"UPDATE report_runs SET {sets} WHERE id=?", (*fields.values(), run_id))


async def recover(db, max_attempts: int, now: float) -> tuple[int, int]:
    """Runs left ``running`` by a crash: back to pending if they have attempts
    left, else failed; (retried, failed)."""
    retried = await db.execute(
        "UPDATE report_runs SET status='pending', started_at=NULL WHERE status='running' AND attempts<?",
        (max_attempts,),
    )
    failed = await db.execute(
        "UPDATE report_runs SET status='failed', finished_at=?, error=? WHERE status='running'",
        (now, f"the daemon stopped during this run {max_attempts} times (killed, or out of memory?); not retried"),
    )
    return retried.rowcount, failed.rowcount


async def expired(db, older_than: float, limit: int = 500):
    """Finished runs past retention, oldest first (their files go with them)."""
    return await db.fetchall(
        "SELECT id, file_path FROM report_runs WHERE finished_at<? ORDER BY finished_at LIMIT ?",
        (older_than, limit),
    )


async def delete_runs(db, ids: list[str]) -> int:
    cur = await db.execute("DELETE FROM report_runs WHERE id IN (SELECT value FROM json_each(?))", (_dumps(ids),))
    return int(cur.rowcount)


async def schedule_known_since(db, name: str, now: float) -> float:
    """Since when the schedule ``name`` is known (recorded now if it is new)."""
    await db.execute("INSERT OR IGNORE INTO report_schedules(name, known_since) VALUES (?, ?)", (name, now))
    row = await db.fetchone("SELECT known_since FROM report_schedules WHERE name=?", (name,))
    return float(row["known_since"]) if row is not None else now


async def last_of_schedule(db, name: str):
    """The latest run of a schedule (for ``GET /v1/reports/schedules``)."""
    return await db.fetchone(
        "SELECT * FROM report_runs WHERE schedule=? ORDER BY seq DESC LIMIT 1",
        (name,),
    )
