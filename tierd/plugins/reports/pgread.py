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
A read cancelled (a shutdown, an exporter stuck past the grace) cancels the
fetch in flight the same way before the connection goes: PostgreSQL would
otherwise run the query on until it next wrote to the closed socket.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from tierd.core.pg import translate
from tierd.core.storage import QueryTimeout

T = TypeVar("T")
#: Seconds a cancelled read waits for its thread to let go before the connection is cut.
STOP_WAIT = 5.0


class ReadStopped(Exception):
    """The read was cancelled: the thread's next fetch raises this."""


class PgReader:
    """The worker thread's handle on the connection (see the module's docstring)."""

    def __init__(self, conn: Any, loop: asyncio.AbstractEventLoop, budget: float | None) -> None:
        self.conn = conn
        self.loop = loop
        self.budget = budget
        self.deadline = None if not budget else time.monotonic() + budget
        self.stopped = False
        #: The fetch the thread waits for (cancelled by :meth:`stop`).
        self.pending: concurrent.futures.Future | None = None

    def stop(self) -> None:
        """From the loop: cancel the fetch in flight (asyncpg cancels its query on
        the server) and refuse the next one."""
        self.stopped = True
        if self.pending is not None:
            self.pending.cancel()

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
        if self.stopped:
            raise ReadStopped("the report's read was cancelled")
        timeout = self.remaining()

        async def run() -> Any:
            return await make(timeout)

        self.pending = asyncio.run_coroutine_threadsafe(run(), self.loop)
        try:
            return self.pending.result()
        except TimeoutError:
            raise QueryTimeout(self.budget or 0) from None
        except concurrent.futures.CancelledError:
            raise ReadStopped("the report's read was cancelled") from None

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
    seconds :class:`QueryTimeout`; cancelled, the query in flight is cancelled
    on the server and the thread's next fetch fails (it ends), then the
    connection closes."""
    import asyncpg  # only a PostgreSQL daemon needs it

    conn = await asyncpg.connect(
        db.url,
        server_settings={"default_transaction_read_only": "on", "application_name": "tierd/reports"},
    )
    reader = PgReader(conn, asyncio.get_running_loop(), budget)
    work: asyncio.Future | None = None
    try:
        await conn.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
        work = asyncio.ensure_future(asyncio.to_thread(fn, reader))
        # What the thread ends with is the caller's, or (cancelled) nobody's: retrieved.
        work.add_done_callback(lambda done: done.cancelled() or done.exception())
        return await asyncio.shield(work)
    finally:
        try:
            if work is not None and not work.done():
                reader.stop()
                # The thread ends at its next fetch; one busy in the exporter may take longer.
                await asyncio.wait([work], timeout=STOP_WAIT)
            if work is None or work.done():
                await conn.close()  # the transaction, read only, ends with it
        finally:
            if not conn.is_closed():  # the thread still busy, or cancelled again meanwhile
                conn.terminate()
