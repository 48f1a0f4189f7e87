"""The batched writer: attempt outcomes go to the database together.

Results wait a moment to be written in one statement for all: fewer trips
to the writer, which event intake waits on. A crash in that window sends
those deliveries again (at least once, never lost); a delivery recorded as
succeeded never is.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from .records import Outcome
from .store import Store

log = logging.getLogger("tierd.webhooks")

#: Results wait this long to be written together.
RECORD_DELAY = 0.02
#: Outcomes written per statement at most.
BATCH = 500


class Recorder:
    """``add()`` queues an outcome; the writer task records them, then calls ``on_recorded(batch)``."""

    def __init__(self, store: Store, on_recorded: Callable[[list[Outcome]], Awaitable[None]]):
        self.store = store
        self.on_recorded = on_recorded
        self.results: list[Outcome] = []
        self.ready = asyncio.Event()
        #: An outcome others wait for (a fifo endpoint's head: the next one goes
        #: once it is written) is written without the delay.
        self.urgent = False

    def add(self, outcome: Outcome, urgent: bool = False) -> None:
        self.results.append(outcome)
        self.urgent = self.urgent or urgent
        self.ready.set()

    async def run(self, stopping: asyncio.Event) -> None:
        """The writer task, until ``stopping`` (then :meth:`flush` writes what is left)."""
        while not stopping.is_set():
            await self.ready.wait()
            self.ready.clear()
            if not self.urgent:
                await asyncio.sleep(RECORD_DELAY)
            self.urgent = False
            try:
                await self.flush()
            except Exception:
                log.exception("could not record webhook attempts; retrying in 1 s")
                await asyncio.sleep(1)
                self.ready.set()

    async def flush(self) -> None:
        while self.results:
            batch, self.results = self.results[:BATCH], self.results[BATCH:]
            try:
                await self.store.record(batch)
            except BaseException:
                self.results = batch + self.results
                raise
            await self.on_recorded(batch)

    async def record_now(self, batch: list[Outcome]) -> None:
        """Write ``batch`` at once (a test send, whose caller waits for it)."""
        await self.store.record(batch)
        await self.on_recorded(batch)
