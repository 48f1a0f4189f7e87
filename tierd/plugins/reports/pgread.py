"""Reading a report's rows from PostgreSQL in a worker thread.

On SQLite a run reads its rows with ``Database.read_in_thread``: a read-only
``sqlite3`` connection of its own, used from a worker thread, so that the
exporter (synchronous, writing the file) never runs on the event loop.
:func:`read_in_thread` is the same for PostgreSQL: a connection of its own
(read-only, not one of the pool's: a long report holds none of the readers the
API needs), one ``REPEATABLE READ`` transaction (every report of a file sees
one snapshot), and :class:`PgReader`, which the worker thread uses as it would
an ``sqlite3`` connection (``execute`` answers a cursor with ``fetchmany``)
while asyncpg runs on the loop. Rows come through a server-side cursor, a
chunk at a time, so a large report is never held in memory whole.

The budget is the run's deadline: each fetch waits at most what is left of it
(asyncpg cancels the query on the server) and :class:`QueryTimeout` is raised.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from tierd.core.pg import translate
from tierd.core.storage import QueryTimeout

T = TypeVar("T")


class PgReader:
    """The worker thread's handle on the connection (see the module's docstring)."""

    def __init__(self, conn: Any, loop: asyncio.AbstractEventLoop, budget: float | None) -> None:
        self.conn = conn
        self.loop = loop
        self.budget = budget
        self.deadline = None if not budget else time.monotonic() + budget

    def remaining(self) -> float | None:
        """Seconds left of the budget (None: no budget); QueryTimeout once none are."""
        if self.deadline is None:
            return None
        left = self.deadline - time.monotonic()
        if left <= 0:
            raise QueryTimeout(self.budget or 0)
        return left

    def call(self, make: Callable[[float | None], Awaitable[Any]]) -> Any:
        """Await ``make(timeout)`` on the loop and wait for it here, in the thread."""
        timeout = self.remaining()

        async def run() -> Any:
            return await make(timeout)

        try:
            return asyncio.run_coroutine_threadsafe(run(), self.loop).result()
        except TimeoutError:
            raise QueryTimeout(self.budget or 0) from None

    def execute(self, sql: str, params: Any = ()) -> PgCursor:
        """A cursor over ``sql`` (SQLite's ``?`` / ``:name`` placeholders, as everywhere)."""
        statement = translate(sql)
        args = statement.args(params)
        cursor = self.call(lambda timeout: self.conn.cursor(statement.sql, *args, timeout=timeout))
        return PgCursor(self, cursor)


class PgCursor:
    """A server-side cursor read from the worker thread, as ``sqlite3.Cursor``'s ``fetchmany``."""

    def __init__(self, reader: PgReader, cursor: Any) -> None:
        self.reader = reader
        self.cursor = cursor

    def fetchmany(self, size: int) -> list:
        return list(self.reader.call(lambda timeout: self.cursor.fetch(size, timeout=timeout)))

    def close(self) -> None:
        # asyncpg's cursors have no close of their own: the portal goes with the transaction.
        pass


async def read_in_thread(db: Any, fn: Callable[[PgReader], T], budget: float | None = None) -> T:
    """Run ``fn(reader)`` in a worker thread on a read-only connection of its own
    to ``db`` (a ``PgDatabase``), and return what it returns. Past ``budget``
    seconds :class:`QueryTimeout`; cancelled, the connection is cut (a fetch
    the thread waits for fails, and the thread ends)."""
    import asyncpg  # only a PostgreSQL daemon needs it

    conn = await asyncpg.connect(
        db.url,
        server_settings={"default_transaction_read_only": "on", "application_name": "tierd/reports"},
    )
    loop = asyncio.get_running_loop()
    work: asyncio.Future | None = None
    try:
        await conn.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
        work = asyncio.ensure_future(asyncio.to_thread(fn, PgReader(conn, loop, budget)))
        return await asyncio.shield(work)
    finally:
        if work is None or work.done():
            await conn.close()  # the transaction, read only, ends with it
        else:
            # Cancelled while the thread reads: cut the connection; the thread's
            # next (or pending) fetch fails and it ends.
            conn.terminate()
