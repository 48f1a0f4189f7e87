"""The history of deleted endpoints, removed in the background.

``DELETE /v1/webhooks/{id}`` deletes the endpoint row only (one statement,
whatever its history): the trigger of migration 4 queues it in
``webhook_purges``. This task takes the queue one endpoint at a time and
removes its deliveries, attempts and attempt counts in slices that leave the
writer to intake (``Store.purge``). The queue is in the database: a purge
cut short by a shutdown or a crash goes on at the next start.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from .store import Store

log = logging.getLogger("tierd.webhooks")

#: The queue is looked at this often (seconds) even if nobody wakes the task:
#: after an error, or a deletion this process was not told of.
RECHECK = 60.0


class Purger:
    def __init__(self, daemon, store: Store):
        self.daemon = daemon
        self.store = store
        self.wakeup = asyncio.Event()
        self.task: asyncio.Task | None = None

    def start(self) -> None:
        self.task = self.daemon.spawn(self._run(), name="webhooks.purge")

    async def stop(self) -> None:
        """Cancel the purge (between or inside a slice: each is one statement; the next start goes on)."""
        task, self.task = self.task, None
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    def wake(self) -> None:
        """An endpoint was deleted: its history is queued."""
        self.wakeup.set()

    async def run_once(self) -> int:
        """Purge every queued endpoint; the rows of history removed."""
        queued = await self.store.purges()
        if not queued:
            return 0
        # Several nodes on one PostgreSQL database: one purges at a time (the
        # others would delete the same slices and log the same endpoints);
        # a node that finds the lock held leaves the queue to its holder.
        once = asyncio.Event()
        once.set()  # ask for the lock once, never wait for it
        async with self.daemon.db.exclusive("tierd.webhooks.purge", until=once) as held:
            return await self._purge(queued) if held else 0

    async def _purge(self, queued: list[str]) -> int:
        removed = 0
        for endpoint_id in queued:
            counts = await self.store.purge(endpoint_id)
            total = sum(counts.values())
            log.info(
                "webhooks: removed the history of deleted endpoint %s: %d rows"
                " (%d deliveries, %d attempts, %d attempt counts)",
                endpoint_id,
                total,
                counts["deliveries"],
                counts["attempts"],
                counts["attempt_minutes"],
            )
            removed += total
        return removed

    async def _run(self) -> None:
        while True:
            self.wakeup.clear()
            try:
                await self.run_once()
            except Exception:
                log.exception("could not remove the history of deleted webhook endpoints; retrying in %g s", RECHECK)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.wakeup.wait(), timeout=RECHECK)
