"""Console sessions, kept in the database (they survive a restart).

The cookie holds a random id; the table (core migration 3) holds its hash, the session's kind
and subject, its CSRF token and its expiry. The subject says what the
session rests on, and it is checked at every request, so a session ends
with what it came from:

* ``admin``: the hash of the admin token; changing the token (and
  reloading) ends every admin session.
* ``tenant``: the hash of the tenant token; revoking the token ends them.
* a plugin's kind (``portal``): what that plugin resolves (a link's id).
"""

from __future__ import annotations

import hashlib
import secrets
import time

from tierd.core.storage import Database


def _hash(session_id: str) -> str:
    return hashlib.sha256(session_id.encode()).hexdigest()


class Session:
    __slots__ = ("id_hash", "kind", "subject", "csrf", "label", "expires_at")

    def __init__(self, id_hash: str, kind: str, subject: str, csrf: str, label: str, expires_at: float) -> None:
        self.id_hash, self.kind, self.subject = id_hash, kind, subject
        self.csrf, self.label, self.expires_at = csrf, label, expires_at


async def create(db: Database, kind: str, subject: str, label: str, lifetime: float) -> tuple[str, Session]:
    """A new session: (the cookie's value, the session). Expired ones are swept on the way."""
    session_id = secrets.token_urlsafe(32)
    now = time.time()
    session = Session(_hash(session_id), kind, subject, secrets.token_urlsafe(24), label, now + lifetime)
    async with db.transaction() as tx:
        await tx.execute("DELETE FROM ui_sessions WHERE expires_at < ?", (now,))
        await tx.execute(
            "INSERT INTO ui_sessions(id_hash, kind, subject, csrf, label, created_at, expires_at)"
            " VALUES (?,?,?,?,?,?,?)",
            (session.id_hash, kind, subject, session.csrf, label, now, session.expires_at),
        )
    return session_id, session


async def find(db: Database, session_id: str) -> Session | None:
    """The live session of this cookie value, or None."""
    if not session_id or len(session_id) > 100:
        return None
    row = await db.lookups.fetchone(
        "SELECT id_hash, kind, subject, csrf, label, expires_at FROM ui_sessions WHERE id_hash=?",
        (_hash(session_id),),
    )
    if row is None or row["expires_at"] < time.time():
        return None
    return Session(*row)


async def end(db: Database, id_hash: str) -> None:
    await db.execute("DELETE FROM ui_sessions WHERE id_hash=?", (id_hash,))


async def end_all(db: Database, kind: str, subject: str) -> int:
    """End every session resting on this subject (e.g. a revoked portal link)."""
    cursor = await db.execute("DELETE FROM ui_sessions WHERE kind=? AND subject=?", (kind, subject))
    return cursor.rowcount
