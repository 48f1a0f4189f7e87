"""The running reconciliation of one daemon: its metrics and the run locks.

Made by ``tierd_services`` and kept in core's service slot; routes, jobs and
imports reach it with ``ReconciliationService.of(daemon)``. At start and on
every reload the accounts of the config file become rows; at start runs a
crash interrupted are marked failed.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from tierd.core.service import PluginService
from tierd.core.tenants import ensure_tenant

from . import store
from .config import section
from .metrics import Metrics

if TYPE_CHECKING:
    from tierd.core.daemon import Daemon


class ReconciliationService(PluginService):
    name = "reconciliation"

    def __init__(self, daemon: Daemon) -> None:
        super().__init__(daemon)
        self.metrics = Metrics(daemon.metrics)
        # One run at a time per account: two would match the same open items.
        self._run_locks: dict[tuple[str, str], asyncio.Lock] = {}

    async def start(self) -> None:
        await store.fail_interrupted_runs(self.daemon.db, self.daemon.clock.time())
        await self._sync_config_accounts()

    async def reload(self, config: dict) -> None:
        await self._sync_config_accounts()

    def run_lock(self, tenant: str, account_id: str) -> asyncio.Lock:
        """The lock a run of this account holds."""
        return self._run_locks.setdefault((tenant, account_id), asyncio.Lock())

    async def _sync_config_accounts(self) -> None:
        """Accounts of the config file become (or update) rows; tenants are created on the fly."""
        now = self.daemon.clock.time()
        for acct in section(self.daemon.config)["accounts"]:
            await ensure_tenant(self.daemon.db, acct["tenant"])
            await store.upsert_config_account(self.daemon.db, acct, now)
