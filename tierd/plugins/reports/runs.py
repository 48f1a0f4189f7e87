"""Making a run: its row first, then its file, then (a schedule's) its delivery.

A run is a row of ``report_runs`` before anything else happens (see
``store.py``); the :class:`Runner` picks pending rows, at most
``reports.concurrency`` at once, and for each:

1. compiles its reports for its tenant (``''``: across tenants) with
   ``reports.max_rows`` + 1 rows at most;
2. reads them in a worker thread on a read-only connection of its own
   (``Database.read_in_thread`` on SQLite, ``pgread.read_in_thread`` on
   PostgreSQL), streaming the rows into the exporter, which writes a temporary
   file: nothing of it runs on the event loop, and the query is interrupted
   past ``reports.timeout``;
3. renames the file into ``reports.directory/<tenant or _all>/<run id>.<ext>``
   (mode 0600);
4. for a schedule's run, copies it to the schedule's ``directory`` and queues a
   message to each of its notification channels (the file attached, where the
   channel can), each under a key made of the run's id, so a run made again after
   a crash sends nothing twice;
5. publishes ``report.generated`` or ``report.failed``.

Past ``max_rows`` or ``timeout`` the run fails with an error that says so; an
exporter that raises fails its own run, naming the exporter. A run left
``running`` by a crash is made again once at the next start (then failed).

Several nodes on one PostgreSQL database: a run is claimed by the node that
makes it (``claimed_by``); a node starting up makes again only its own name's
runs and those of nodes that are gone, and every :data:`TAKEOVER_EVERY`
seconds a node takes over the runs of nodes that died (``Database.gone``). The
file is kept in the database (``report_files``, after step 3, before the
delivery) and the local one removed once the run is recorded, so any node
answers its download; the notifications plugin keeps its own copy of an
attachment there too (it reads the file when the message is queued).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import datetime as dt
import json
import logging
import os
import shutil
import sqlite3
import sys
import time
import zoneinfo
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import prometheus_client

from tierd.core.events import wait_any
from tierd.core.registry import Column, ReportData
from tierd.core.storage import QueryTimeout

from . import pgread, store
from .builder import ReportTooLarge, stream
from .config import files_directory

if TYPE_CHECKING:
    from .service import ReportsService

log = logging.getLogger("tierd.reports")

EVENT_GENERATED = "report.generated"
EVENT_FAILED = "report.failed"
#: A run is made at most this many times (a crash during the first: once more).
MAX_ATTEMPTS = 2
#: Rows of each report kept for the summary sent to chat channels (key figures).
PREVIEW_ROWS = 5
#: Files larger than this are not attached to an email; the message says where they are.
ATTACH_LIMIT = 20 * 1024 * 1024
#: Seconds past the timeout after which a run whose exporter does not stop is failed anyway.
STUCK_GRACE = 10.0
#: How often (rows) the reading thread checks its deadline while the exporter writes.
DEADLINE_EVERY = 500
#: How often a node looks for runs of nodes that are gone (PostgreSQL).
TAKEOVER_EVERY = 5.0
#: A run started this recently is never taken over (see ``store.recover``).
TAKEOVER_GRACE = 3.0


class RunFailed(Exception):
    """A run failed for a reason its error states (shown to the user as is)."""


@dataclasses.dataclass
class _State:
    """What the reading thread found, whatever the exporter does with exceptions."""

    max_rows: int
    deadline: float
    timeout: float
    rows: dict[str, int] = dataclasses.field(default_factory=dict)
    preview: dict[str, list[tuple]] = dataclasses.field(default_factory=dict)
    problem: str | None = None


def _rows(state: _State, name: str, open_rows) -> Iterator[tuple]:
    """The rows of one report, counted, limited, and checked against the deadline."""
    state.rows[name] = 0
    kept = state.preview.setdefault(name, [])
    rows = open_rows()
    try:
        for count, row in enumerate(rows, 1):
            if count > state.max_rows:
                state.problem = _too_many(name, state.max_rows)
                raise RunFailed(state.problem)
            if count % DEADLINE_EVERY == 0 and time.monotonic() > state.deadline:
                raise QueryTimeout(state.timeout)
            state.rows[name] = count
            if len(kept) < PREVIEW_ROWS:
                kept.append(tuple(row))
            yield row
    except QueryTimeout:
        state.problem = state.problem or _timeout_message(state.timeout)
        raise
    except ReportTooLarge:
        state.problem = state.problem or _too_many(name, state.max_rows)
        raise
    except sqlite3.OperationalError as exc:
        if str(exc) == "interrupted":
            state.problem = state.problem or _timeout_message(state.timeout)
        else:
            state.problem = state.problem or f"the query of {name!r} failed: {exc}"
        raise
    except sqlite3.Error as exc:
        state.problem = state.problem or f"the query of {name!r} failed: {exc}"
        raise
    except Exception as exc:
        if _is_pg_error(exc):
            state.problem = state.problem or f"the query of {name!r} failed: {exc}"
        raise
    finally:
        rows.close()  # here, in the reading thread, while its connection is open


def _is_pg_error(exc: BaseException) -> bool:
    """An error PostgreSQL answered (asyncpg is imported only where it is the backend)."""
    asyncpg = sys.modules.get("asyncpg")
    return asyncpg is not None and isinstance(exc, asyncpg.PostgresError)


def _too_many(name: str, max_rows: int) -> str:
    return (
        f"the report {name!r} has more than {max_rows:,} rows (reports.max_rows): "
        "narrow it with its parameters (e.g. a shorter period), or raise the limit"
    )


def _timeout_message(timeout: float) -> str:
    return f"the run took longer than {timeout:g} s (reports.timeout) and was stopped"


def _columns(columns) -> list[Column]:
    return [c if isinstance(c, Column) else Column(str(c), "text") for c in columns]


class Runner:
    """Picks pending runs and makes them, ``concurrency`` at once."""

    def __init__(self, service: ReportsService) -> None:
        self.service = service
        self.daemon = service.daemon
        self._wake = asyncio.Event()
        self._tasks: dict[str, asyncio.Task] = {}
        self.finished = prometheus_client.Counter(
            "tierd_report_runs", "Report runs finished, by status", ["status"], registry=self.daemon.metrics
        )
        self.seconds = prometheus_client.Histogram(
            "tierd_report_run_seconds",
            "Time to make a report run's file (and deliver it)",
            buckets=(0.1, 0.5, 1, 5, 15, 60, 300, 1800),
            registry=self.daemon.metrics,
        )
        #: Run id -> an asyncio.Event set when it finishes, for those waiting (see :meth:`wait`).
        self._done: dict[str, asyncio.Event] = {}

    def wake(self) -> None:
        self._wake.set()

    @property
    def concurrency(self) -> int:
        return int(self.service.section["concurrency"])

    @property
    def shared(self) -> bool:
        """Whether other nodes may share the database (PostgreSQL)."""
        return bool(self.daemon.db.dialect == "postgresql")

    async def run(self, stopping: asyncio.Event) -> None:
        while not stopping.is_set():
            self._wake.clear()
            try:
                if self.shared:
                    await self.take_over()
                await self.start_waiting()
            except asyncio.CancelledError:
                raise
            except Exception:  # the loop runs for ever: log and try again
                log.exception("reports runner: picking runs failed")
            # Runs made here wake it; other nodes' runs (and their deaths) are polled.
            await wait_any(self._wake, stopping, timeout=TAKEOVER_EVERY if self.shared else 60.0)

    async def take_over(self) -> int:
        """Make again the runs of nodes that are gone (PostgreSQL); how many."""
        retried, failed = await store.recover(
            self.daemon.db, MAX_ATTEMPTS, self.daemon.clock.time(), own=False, grace=TAKEOVER_GRACE
        )
        if retried or failed:
            log.info(
                "reports: took over %d run(s) of nodes that are gone (%d failed: interrupted twice)",
                retried + failed,
                failed,
            )
        return int(retried)

    async def start_waiting(self) -> int:
        free = self.concurrency - len(self._tasks)
        if free <= 0:
            return 0
        started = 0
        for row in await store.waiting(self.daemon.db, free + len(self._tasks)):
            if started >= free:
                break
            if row["id"] in self._tasks:
                continue
            if not await store.claim(self.daemon.db, row["id"], self.daemon.clock.time()):
                continue
            task = asyncio.get_running_loop().create_task(self._make(row["id"]), name=f"report:{row['id']}")
            self._tasks[row["id"]] = task
            started += 1
        return started

    async def _make(self, run_id: str) -> None:
        try:
            row = await store.get(self.daemon.db, run_id)
            if row is not None:
                await self.make(row)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("report run %s: unexpected error", run_id)
            try:
                await store.finish(
                    self.daemon.db,
                    run_id,
                    "failed",
                    self.daemon.clock.time(),
                    error="internal error (see the daemon log)",
                )
            except Exception:  # the row stays running: made again at the next start
                log.exception("report run %s: could not record its failure", run_id)
        finally:
            self._tasks.pop(run_id, None)
            waiting = self._done.pop(run_id, None)
            if waiting is not None:
                waiting.set()
            self._wake.set()

    async def wait(self, run_id: str, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds for the run ``run_id`` to finish; whether it did."""
        done = self._done.setdefault(run_id, asyncio.Event())
        try:
            row = await store.get(self.daemon.db, run_id)  # after registering: a finish is not missed
            if row is None or row["status"] in store.FINAL_STATUSES:
                return row is not None
            if not self.shared:
                try:
                    await asyncio.wait_for(done.wait(), timeout)
                except TimeoutError:
                    return False
                return True
            # Another node may be making it: ask the database too, every second.
            deadline = asyncio.get_running_loop().time() + timeout
            while (left := deadline - asyncio.get_running_loop().time()) > 0:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(done.wait(), min(1.0, left))
                    return True
                row = await store.get(self.daemon.db, run_id)
                if row is None or row["status"] in store.FINAL_STATUSES:
                    return row is not None
            return False
        finally:
            if not done.is_set() and self._done.get(run_id) is done:
                del self._done[run_id]

    async def stop(self, grace: float) -> None:
        """Let runs in flight finish for ``grace`` seconds, then stop them (their rows go
        back to pending, made again at the next start without counting an attempt)."""
        tasks = dict(self._tasks)
        if tasks:
            await asyncio.wait(list(tasks.values()), timeout=grace)
        for run_id, task in tasks.items():
            if not task.done():
                task.cancel()
                try:
                    await store.release(self.daemon.db, run_id)
                except Exception:
                    log.exception("report run %s: could not hand it back", run_id)
        if tasks:
            await asyncio.gather(*tasks.values(), return_exceptions=True)

    # --- one run -------------------------------------------------------------------------

    async def make(self, row) -> None:
        db, clock = self.daemon.db, self.daemon.clock
        run_id = row["id"]
        started = time.monotonic()
        try:
            result = await self.generate(row)
        except RunFailed as exc:
            await self._failed(row, str(exc))
            self.finished.labels("failed").inc()
            return
        status, delivery, error = "delivered", None, ""
        deliver = json.loads(row["deliver"]) if row["deliver"] else None
        if self.shared:
            await self._keep_in_database(run_id, Path(result["file"]["file_path"]))
        if deliver is not None:
            await store.set_file(db, run_id, **result["file"])
            try:
                status, delivery = await self.deliver(row, deliver, result)
            except RunFailed as exc:
                status, error = "failed", str(exc)
        await store.finish(db, run_id, status, clock.time(), error=error, delivery=delivery, **result["file"])
        if self.shared:  # any node answers from the database; retention runs on any node
            _remove(Path(result["file"]["file_path"]))
        self.finished.labels(status).inc()
        self.seconds.observe(time.monotonic() - started)
        log.info(
            "report run %s (%s, %s): %s, %d row(s), %d bytes in %.2fs",
            run_id,
            ", ".join(json.loads(row["reports"])),
            row["format"],
            status,
            result["file"]["rows"],
            result["file"]["size"],
            time.monotonic() - started,
        )
        if status == "failed":
            await self._publish_failed(row, error)
        else:
            await self._publish(
                row, EVENT_GENERATED, {**self._event_data(row), **self._file_data(result), "status": status}
            )

    async def _keep_in_database(self, run_id: str, path: Path) -> None:
        """Copy the run's file into ``report_files``, a part at a time."""

        async def parts():
            with open(path, "rb") as f:
                while content := await asyncio.to_thread(f.read, store.FILE_PART):
                    yield content

        try:
            await store.store_file(self.daemon.db, run_id, parts())
        except OSError as exc:
            raise RunFailed(f"cannot read the report's file {path}: {exc}") from None

    async def _failed(self, row, error: str) -> None:
        await store.finish(self.daemon.db, row["id"], "failed", self.daemon.clock.time(), error=error)
        log.warning("report run %s failed: %s", row["id"], error)
        await self._publish_failed(row, error)

    async def _publish_failed(self, row, error: str) -> None:
        await self._publish(row, EVENT_FAILED, {**self._event_data(row), "error": error})

    def _event_data(self, row) -> dict:
        return {
            "run_id": row["id"],
            "reports": json.loads(row["reports"]),
            "format": row["format"],
            "trigger": row["trigger"],
            "schedule": row["schedule"],
        }

    @staticmethod
    def _file_data(result: dict) -> dict:
        f = result["file"]
        return {"rows": f["rows"], "size": f["size"], "file_name": f["file_name"]}

    async def _publish(self, row, type_: str, data: dict) -> None:
        try:
            await self.daemon.bus.publish(row["tenant_id"], type_, data, key=f"{type_}:{row['id']}")
        except Exception:  # the run's row says what happened; the event is a courtesy
            log.exception("report run %s: could not publish %s", row["id"], type_)

    async def generate(self, row) -> dict:
        """Make the run's file; {"file": {...columns of the row}, "preview", "rows"}."""
        service = self.service
        section = service.section
        run_id, tenant = row["id"], row["tenant_id"] or None
        names = json.loads(row["reports"])
        all_params = json.loads(row["params"])
        exporter = self.daemon.registries.report_exporters.get(row["format"])
        if exporter is None:
            raise RunFailed(f"no exporter for the format {row['format']!r} is installed (any more)")
        if len(names) > 1 and not exporter.many:
            raise RunFailed(f"the {row['format']} exporter takes one report per file")
        jobs = []
        for name in names:
            report = service.reports.get(name)
            if report is None:
                raise RunFailed(f"the report {name!r} is not defined (any more)")
            params = all_params.get(name, {})
            try:
                parsed = report.parse_params(params, timezone=row["timezone"])
                query = report.compile(
                    tenant, parsed, int(section["max_rows"]), timezone=row["timezone"], dialect=self.daemon.db.dialect
                )
            except Exception as exc:  # ParamError, or a definition the config changed since
                raise RunFailed(f"{name}: {exc}") from None
            jobs.append((name, report, query, params))
        directory = files_directory(self.daemon.config) / (tenant or "_all")
        ext = exporter.extension or row["format"]
        final = directory / f"{run_id}.{ext.lstrip('.')}"
        partial = directory / f".{run_id}.partial"
        timeout = float(section["timeout"])
        state = _State(max_rows=int(section["max_rows"]), deadline=time.monotonic() + timeout, timeout=timeout)
        generated_at = self.daemon.clock.time()

        def work(conn: sqlite3.Connection | pgread.PgReader) -> int:
            datas = []
            for name, report, query, params in jobs:
                report.prepare(conn)

                def open_rows(report=report, query=query):
                    return stream(conn, report, query)

                datas.append(
                    ReportData(
                        name=name,
                        title=getattr(report, "title", "") or name,
                        description=getattr(report, "description", "") or "",
                        tenant=tenant,
                        params=params,
                        generated_at=generated_at,
                        columns=_columns(query.columns),
                        rows=_rows(state, name, open_rows),
                        chart=getattr(report, "chart", None),
                    )
                )
            directory.mkdir(parents=True, exist_ok=True, mode=0o700)
            fd = os.open(partial, os.O_CREAT | os.O_WRONLY | os.O_TRUNC, 0o600)
            try:
                with os.fdopen(fd, "wb") as out:
                    exporter.export(datas, out)
                    out.flush()
                    os.fsync(out.fileno())
            finally:
                for data in datas:  # rows an exporter left unread: let go of their statements now
                    data.rows.close()  # type: ignore[attr-defined]
            # An exporter that swallowed the limit's exception still wrote a file
            # that stops half-way: the run fails all the same.
            if state.problem:
                raise RunFailed(state.problem)
            os.replace(partial, final)
            return final.stat().st_size

        try:
            # The query is interrupted at the timeout; an exporter that stops reading rows
            # (and so never meets the interruption) is left behind a little later.
            db = self.daemon.db
            reading = (
                db.read_in_thread(work, budget=timeout)
                if db.dialect == "sqlite"
                else pgread.read_in_thread(db, work, budget=timeout)
            )
            size = await asyncio.wait_for(reading, timeout + STUCK_GRACE)
        except TimeoutError:
            _remove(partial)
            log.error("report run %s: the %s exporter did not stop at the timeout", run_id, row["format"])
            raise RunFailed(_timeout_message(timeout) + f" (the {row['format']} exporter did not stop)") from None
        except RunFailed:
            _remove(partial)
            raise
        except QueryTimeout:
            _remove(partial)
            raise RunFailed(_timeout_message(timeout)) from None
        except asyncio.CancelledError:
            _remove(partial)
            raise
        except Exception as exc:
            _remove(partial)
            if state.problem:
                raise RunFailed(state.problem) from None
            if isinstance(exc, OSError):
                raise RunFailed(f"cannot write the report's file in {directory}: {exc}") from None
            log.warning("report run %s: the %s exporter raised", run_id, row["format"], exc_info=True)
            raise RunFailed(
                f"the {row['format']} exporter ({_origin(self.daemon, row['format'])}) failed: "
                f"{type(exc).__name__}: {exc}"
            ) from None
        return {
            "file": {
                "file_path": str(final),
                "file_name": download_name(row, names, ext, generated_at),
                "media_type": exporter.media_type,
                "size": size,
                "rows": sum(state.rows.values()),
            },
            "rows": dict(state.rows),
            "preview": dict(state.preview),
            "columns": {name: [c.name for c in _columns(query.columns)] for name, _r, query, _p in jobs},
            "titles": {name: getattr(report, "title", "") or name for name, report, _q, _p in jobs},
        }

    # --- delivery of a schedule's run -------------------------------------------------------

    async def deliver(self, row, deliver: dict, result: dict) -> tuple[str, dict]:
        """Copy and send a schedule's file; (status, what was done). RunFailed names
        every destination that failed (the others are done, and never done twice)."""
        rows = result["file"]["rows"]
        if deliver.get("only_if_rows") and rows == 0:
            return "skipped", {"skipped": "the reports have no rows (only_if_rows)"}
        done: dict[str, Any] = {}
        problems = []
        fields = path_fields(row, result)
        template = deliver.get("directory") or ""
        if template:
            target = Path(template.format(**fields))
            try:
                await asyncio.to_thread(_copy, Path(result["file"]["file_path"]), target)
                done["directory"] = str(target)
            except OSError as exc:
                problems.append(f"cannot copy the file to {target}: {exc.strerror or exc}")
        channels = deliver.get("to") or []
        if channels:
            notifications = self.daemon.services.get("notifications")
            send = getattr(notifications, "send", None)
            if send is None:
                problems.append("the notifications plugin is not running: cannot send to " + ", ".join(channels))
            else:
                subject, body = summary(row, result, fields)
                attachments = []
                if result["file"]["size"] <= ATTACH_LIMIT:
                    attachments = [
                        {
                            "filename": result["file"]["file_name"],
                            "path": result["file"]["file_path"],
                            "media_type": result["file"]["media_type"],
                        }
                    ]
                sent = {}
                for channel in channels:
                    try:
                        sent[channel] = await send(
                            channel,
                            subject,
                            body,
                            tenant=row["tenant_id"],
                            attachments=attachments,
                            key=f"report:{row['id']}:{channel}",
                        )
                    except LookupError as exc:
                        problems.append(str(exc).strip("'\""))
                done["notifications"] = sent
        if problems:
            raise RunFailed("; ".join(problems))
        return "delivered", done


def _origin(daemon, format_name: str) -> str:
    """The plugin that registered an exporter, for errors."""
    return str(daemon.registries.origins.get(f"report_exporters:{format_name}", "a plugin"))


def _remove(path: Path) -> None:
    try:
        path.unlink()
    except FileNotFoundError:
        pass


def _copy(source: Path, target: Path) -> None:
    """Copy atomically (a reader never sees half a file; copying again replaces it)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(f".{target.name}.partial")
    shutil.copyfile(source, partial)
    os.chmod(partial, 0o640)
    os.replace(partial, target)


def download_name(row, names: list[str], ext: str, generated_at: float) -> str:
    base = row["schedule"] or (names[0] if len(names) == 1 else "reports")
    day = dt.datetime.fromtimestamp(row["due_at"] or generated_at, dt.UTC).date().isoformat()
    return f"{base}-{day}.{ext.lstrip('.')}"


def path_fields(row, result: dict) -> dict[str, str]:
    """The fields of a schedule's ``directory`` template (see ``config.PATH_FIELDS``)."""
    deliver = json.loads(row["deliver"]) if row["deliver"] else {}
    zone = zoneinfo.ZoneInfo(deliver.get("timezone") or "UTC")
    due = dt.datetime.fromtimestamp(row["due_at"] or row["created_at"], zone)
    names = json.loads(row["reports"])
    return {
        "tenant": row["tenant_id"] or "_all",
        "name": names[0] if len(names) == 1 else (row["schedule"] or "reports"),
        "schedule": row["schedule"] or "",
        "date": due.date().isoformat(),
        "time": due.strftime("%H%M"),
        "run": row["id"],
        "ext": result["file"]["file_name"].rpartition(".")[2],
    }


def _cell(value: Any) -> str:
    text = " ".join(str("" if value is None else value).split())
    return text if len(text) <= 40 else text[:39] + "…"


def summary(row, result: dict, fields: dict[str, str]) -> tuple[str, str]:
    """Subject and text of a schedule's message: each report's rows and its first
    rows as key figures (what a chat channel shows; email also has the file)."""
    names = json.loads(row["reports"])
    titles = result["titles"]
    params = json.loads(row["params"])
    who = f"tenant {row['tenant_id']}" if row["tenant_id"] else "all tenants"
    title = titles[names[0]] if len(names) == 1 else f"{len(names)} reports"
    subject = f"Report: {title} ({who}, {fields['date']})"
    lines = []
    for name in names:
        p = params.get(name) or {}
        period = f", {p['from']} to {p['to']}" if p.get("from") and p.get("to") else ""
        count = result["rows"].get(name, 0)
        lines.append(f"{titles[name]}{period}: {count:,} row{'s' if count != 1 else ''}")
        columns = result["columns"].get(name, [])
        for values in result["preview"].get(name, []):
            lines.append("  " + ", ".join(f"{c}={_cell(v)}" for c, v in zip(columns, values, strict=False)))
        if count > len(result["preview"].get(name, [])):
            lines.append("  …")
    f = result["file"]
    attached = "attached to the email" if f["size"] <= ATTACH_LIMIT else "too large to attach"
    lines.append("")
    lines.append(
        f"File: {f['file_name']} ({_size(f['size'])}, {attached}); run {row['id']}: "
        f"`tierd reports download {row['id']}` or GET /v1/reports/runs/{row['id']}/download"
    )
    return subject, "\n".join(lines)


def _size(n: int) -> str:
    for unit in ("bytes", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "bytes" else f"{n:.1f} {unit}"
        n /= 1024  # type: ignore[assignment]
    return f"{n} bytes"
