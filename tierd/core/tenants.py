"""Tenants and their API tokens. Only a SHA-256 of each token is stored.

The API and the CLI both come here, so the INFO log lines of a tenant or
token created or revoked are written here (never a token itself).
"""

from __future__ import annotations

import hashlib
import logging
import re
import secrets
import time
from collections.abc import Mapping
from typing import Any

from tierd.core.clock import iso
from tierd.core.storage import Database

log = logging.getLogger("tierd.tenants")

#: A tenant name (use with ``fullmatch``).
NAME_RE = re.compile(r"[a-z0-9][a-z0-9_-]{0,62}\Z")
TOKEN_PREFIX = "tierd_"
MAX_DESCRIPTION = 1000


class TenantError(ValueError):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


async def create_tenant(db: Database, name: str) -> dict:
    if not isinstance(name, str) or not NAME_RE.fullmatch(name):
        raise TenantError(
            "invalid_tenant_name",
            "tenant names are 1-63 lowercase letters, digits, '-' or '_', starting with a letter or digit",
        )
    async with db.transaction() as tx:
        if await tx.fetchone("SELECT 1 FROM tenants WHERE id=?", (name,)):
            raise TenantError("tenant_exists", f"tenant {name!r} already exists")
        now = time.time()
        await tx.execute("INSERT INTO tenants(id, name, created_at) VALUES (?,?,?)", (name, name, now))
    log.info("tenant %s created", name)
    return {"id": name, "name": name, "created_at": iso(now)}


async def ensure_tenant(db: Database, name: str) -> None:
    """Create the tenant if missing (for tenants named in the config)."""
    await db.execute(
        "INSERT INTO tenants(id, name, created_at) VALUES (?,?,?) ON CONFLICT DO NOTHING", (name, name, time.time())
    )


async def list_tenants(db: Database) -> list[dict]:
    rows = await db.fetchall(
        "SELECT t.id, t.name, t.created_at,"
        " (SELECT COUNT(*) FROM tokens k WHERE k.tenant_id=t.id AND k.revoked_at IS NULL) AS active_tokens"
        " FROM tenants t ORDER BY t.id"
    )
    return [dict(r) | {"created_at": iso(r["created_at"])} for r in rows]


async def create_token(db: Database, tenant: str, description: str = "") -> dict:
    """A new token for ``tenant``. The token itself is returned once, never stored."""
    if not isinstance(description, str) or len(description) > MAX_DESCRIPTION:
        raise TenantError("invalid_description", f"description must be text of at most {MAX_DESCRIPTION} characters")
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    token_id = "tok_" + secrets.token_hex(6)
    async with db.transaction() as tx:
        if not await tx.fetchone("SELECT 1 FROM tenants WHERE id=?", (tenant,)):
            raise TenantError("tenant_not_found", f"no tenant {tenant!r}")
        await tx.execute(
            "INSERT INTO tokens(id, tenant_id, token_hash, description, created_at) VALUES (?,?,?,?,?)",
            (token_id, tenant, hash_token(token), description, time.time()),
        )
    log.info("token %s created for tenant %s", token_id, tenant)
    return {"id": token_id, "tenant": tenant, "token": token, "description": description}


async def list_tokens(db: Database, tenant: str | None = None) -> list[dict]:
    sql = "SELECT id, tenant_id AS tenant, description, created_at, revoked_at FROM tokens"
    params: tuple[str, ...] = ()
    if tenant:
        sql, params = sql + " WHERE tenant_id=?", (tenant,)
    rows = await db.fetchall(sql + " ORDER BY created_at", params)
    return [
        dict(r) | {"created_at": iso(r["created_at"]), "revoked_at": iso(r["revoked_at"]) if r["revoked_at"] else None}
        for r in rows
    ]


async def revoke_token(db: Database, token_id: str) -> dict:
    async with db.transaction() as tx:
        row = await tx.fetchone("SELECT id, tenant_id, revoked_at FROM tokens WHERE id=?", (token_id,))
        if row is None:
            raise TenantError("token_not_found", f"no token {token_id!r}")
        revoking = row["revoked_at"] is None
        if revoking:
            await tx.execute("UPDATE tokens SET revoked_at=? WHERE id=?", (time.time(), token_id))
    if revoking:
        log.info("token %s of tenant %s revoked", token_id, row["tenant_id"])
    return {"id": token_id, "tenant": row["tenant_id"], "revoked": True}


async def tenant_for_token(db: Database, token: str) -> tuple[str, str] | None:
    """(tenant id, token id) of a valid token, or None (every request asks: a point lookup)."""
    row = await db.lookups.fetchone(
        "SELECT tenant_id, id FROM tokens WHERE token_hash=? AND revoked_at IS NULL", (hash_token(token),)
    )
    return (row["tenant_id"], row["id"]) if row else None


def local_admin_token(config: Mapping[str, Any], create: bool = False) -> str | None:
    """The admin token: from the config, else the one kept beside the database.

    With no ``server.admin_token`` configured, the daemon makes a random one
    at first start and keeps it in ``admin.token`` (mode 0600) next to the
    database, where the CLI on the same machine finds it: the quick start
    needs no secret to be invented, and nothing guessable is ever accepted.
    """
    import os
    from pathlib import Path

    configured: str | None = config["server"].get("admin_token")
    if configured:
        return configured
    path = Path(config["storage"]["path"]).parent / "admin.token"
    if path.exists():
        return path.read_text().strip() or None
    if not create:
        return None
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_CREAT | os.O_WRONLY | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write("tierd_admin_" + secrets.token_urlsafe(32) + "\n")
    return path.read_text().strip()
