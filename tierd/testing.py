"""A test harness for tierd and its plugins: real daemons, real receivers, no mocks.

tierd's own tests and third-party plugins' tests use the same pieces:

- :class:`LocalDaemon`: the daemon started in the test's own event loop, on a
  temporary config and database (swap its clock, call a plugin's service).
- :class:`DaemonProcess`: ``tierd run`` as a subprocess with a fake systemd
  ``NOTIFY_SOCKET`` (kill it, restart it, run the CLI against it).
- :class:`Receiver`: an HTTP server on loopback that records every request.
- :func:`eventually`: wait for a condition instead of sleeping.
- :func:`recorded_reads` and :func:`assert_index_walk`: the SQL a request ran,
  and whether each statement reads only its page along an index.
- :class:`PostgresServer`: a throw-away PostgreSQL server (``initdb`` in a
  temporary directory) for tests of the PostgreSQL storage.
- :func:`run_sql` / :func:`arun_sql` (and ``DaemonProcess.sql``,
  ``LocalDaemon.sql``): SQL straight on a test daemon's database, whichever
  backend the tests run on (:func:`on_postgresql`); :func:`open_test_database`:
  that backend's database of a folder, without a daemon.

The test daemons' database is a SQLite file in their folder, or with
``TIERD_TEST_STORAGE=postgresql`` a database of a throw-away PostgreSQL server
(one per folder, so a daemon started again on its folder finds its data).

Both daemons take ``plugins=``: plugin modules (or their import names) to load
without installing them; see ``docs/plugin-api.md``, "Testing your plugin".
Nothing here changes the environment it runs in: files go to the directory a
test gives, and :func:`install_package` installs into a directory, never into
the running interpreter's site-packages.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import inspect
import json
import os
import re
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import AsyncIterator
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

import yaml
from aiohttp import ClientSession, web

from tierd.core.clock import Clock

if TYPE_CHECKING:
    from tierd.core.daemon import Daemon
    from tierd.core.storage import Database

#: The admin token of every test daemon (``token=None`` in requests means this one).
ADMIN_TOKEN = "test-admin-token-0123456789"


async def eventually(predicate, timeout: float = 20.0, what: str = "condition", interval: float = 0.05):
    """Wait until ``predicate()`` (sync or async) is truthy and return its value;
    fail naming ``what`` after ``timeout`` seconds.

    To show that something did *not* happen, wait for something that happens
    after it instead (a later event's delivery, a consumer passing an event):
    a sleep proves nothing on a slow machine.
    """
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if inspect.isawaitable(value):
            value = await value
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout:g}s waiting for {what}")
        await asyncio.sleep(interval)


def free_port() -> int:
    """A TCP port free on loopback right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def deep_merge(base: dict, extra: dict | None) -> dict:
    """``base`` with ``extra`` merged in, mappings key by key (neither is changed)."""
    out = dict(base)
    for key, value in (extra or {}).items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = value
    return out


#: ``TIERD_TEST_STORAGE=postgresql`` runs every test daemon on PostgreSQL: each
#: config :func:`daemon_config` makes gets a fresh database of one throw-away
#: server shared by the test process (see :func:`shared_postgres`).
TEST_STORAGE_ENV = "TIERD_TEST_STORAGE"


def daemon_config(workdir: Path, port: int, extra: dict | None = None, shutdown_grace: str = "5s") -> dict:
    """A daemon config on ``port`` with its database in ``workdir``, merged with ``extra``
    (on PostgreSQL instead when ``$TIERD_TEST_STORAGE`` is ``postgresql``)."""
    storage: dict = {"path": str(Path(workdir) / "tierd.db")}
    if os.environ.get(TEST_STORAGE_ENV, "sqlite") == "postgresql" and not ((extra or {}).get("storage") or {}).get(
        "url"
    ):
        storage["url"] = _postgres_database_of(Path(workdir))
    return deep_merge(
        {
            "server": {"listen": f"127.0.0.1:{port}", "admin_token": ADMIN_TOKEN, "shutdown_grace": shutdown_grace},
            "storage": storage,
            "logging": {"level": "INFO"},
        },
        extra,
    )


_shared_postgres: PostgresServer | None = None
#: The PostgreSQL database of each test daemon's folder, as the SQLite file
#: would be: a daemon started again on the same folder finds its data.
_postgres_databases: dict[Path, str] = {}


def _postgres_database_of(workdir: Path) -> str:
    key = workdir.resolve()
    if key not in _postgres_databases:
        _postgres_databases[key] = shared_postgres().create_database(f"t{len(_postgres_databases)}_{os.getpid()}")
    return _postgres_databases[key]


def shared_postgres() -> PostgresServer:
    """One PostgreSQL server for the whole test process, started when first
    asked for and stopped when the process exits."""
    global _shared_postgres
    if _shared_postgres is None:
        if not PostgresServer.available():
            raise RuntimeError(f"{TEST_STORAGE_ENV}=postgresql, but {PostgresServer.MISSING}")
        import atexit

        _shared_postgres = PostgresServer().start()
        atexit.register(_shared_postgres.stop)
    return _shared_postgres


def on_postgresql() -> bool:
    """Whether the test daemons run on PostgreSQL (``$TIERD_TEST_STORAGE`` is ``postgresql``)."""
    return os.environ.get(TEST_STORAGE_ENV, "sqlite") == "postgresql"


async def open_test_database(workdir: Path, name: str = "tierd.db", readers: int | None = None):
    """The database a test daemon in ``workdir`` would have, opened (not migrated):
    the SQLite file ``workdir/name``, or (``$TIERD_TEST_STORAGE=postgresql``) the
    folder's PostgreSQL database. For tests of core pieces (the bus, the
    scheduler) without a daemon, on the backend the tests run on; close it."""
    from tierd.core.storage import DEFAULT_READERS, Database

    storage = daemon_config(Path(workdir), 0)["storage"]
    if storage.get("url"):
        from tierd.core.pg import PgDatabase

        return await PgDatabase(storage["url"], readers=readers or DEFAULT_READERS).open()
    return await Database(Path(workdir) / name, readers=readers or DEFAULT_READERS).open()


async def arun_sql(storage: dict, sql: str, params=(), many: bool = False) -> list[tuple]:
    """Run ``sql`` (written with SQLite's ``?`` or ``:name`` placeholders) straight on
    the database of a daemon's ``storage`` section, committed at once; its rows as
    tuples. The SQLite file at ``storage["path"]``, or the PostgreSQL database of
    ``storage["url"]`` (the placeholders translated, see :func:`tierd.core.pg.translate`).

    For what a test sees or changes beside the daemon (a row the API does not show,
    junk an older version left): beside a running daemon or while it is stopped.
    ``many``: ``params`` is a list of parameter rows (executemany; no rows back).
    """
    url = storage.get("url")
    if not url:
        return await asyncio.to_thread(_sqlite_sql, storage["path"], sql, params, many)
    import asyncpg

    from tierd.core.pg import translate

    statement = translate(sql)
    conn = await asyncpg.connect(url)
    try:
        if many:
            await conn.executemany(statement.sql, [statement.args(p) for p in params])
            return []
        return [tuple(r) for r in await conn.fetch(statement.sql, *statement.args(params))]
    finally:
        await conn.close()


def run_sql(storage: dict, sql: str, params=(), many: bool = False) -> list[tuple]:
    """:func:`arun_sql` for synchronous tests (PostgreSQL's in a thread with a loop of its own,
    so it works inside a running event loop too; a :class:`LocalDaemon` in that loop is
    blocked meanwhile: use its async ``sql`` there)."""
    if not storage.get("url"):
        return _sqlite_sql(storage["path"], sql, params, many)
    result: list[list[tuple]] = []
    failure: list[BaseException] = []

    def work() -> None:
        try:
            result.append(asyncio.run(arun_sql(storage, sql, params, many)))
        except BaseException as exc:  # handed to the caller's thread
            failure.append(exc)

    thread = threading.Thread(target=work, name="tierd-test-sql")
    thread.start()
    thread.join()
    if failure:
        raise failure[0]
    return result[0]


def _sqlite_sql(path: str | Path, sql: str, params, many: bool) -> list[tuple]:
    conn = sqlite3.connect(path, timeout=30)
    try:
        with conn:  # committed, or rolled back on an error
            if many:
                conn.executemany(sql, params)
                return []
            return conn.execute(sql, params).fetchall()
    finally:
        conn.close()


def _plugin_names(plugins) -> list[str]:
    return [p if isinstance(p, str) else p.__name__ for p in plugins]


def import_root(module: str) -> Path:
    """The sys.path entry ``module`` is imported from (the folder holding its top package)."""
    top = module.split(".", 1)[0]
    spec = importlib.util.find_spec(top)
    if spec is None or (spec.origin is None and not spec.submodule_search_locations):
        raise ModuleNotFoundError(f"plugin module {module!r} is not importable here")
    if spec.submodule_search_locations:  # a package: its folder's parent
        return Path(next(iter(spec.submodule_search_locations))).parent
    return Path(str(spec.origin)).parent


def plugin_env(plugins=(), pythonpath=()) -> dict:
    """Environment for a tierd subprocess that loads ``plugins`` by name.

    ``plugins``: modules or import names; ``pythonpath``: folders to import
    from (a project's source folder, or one :func:`install_package` filled).
    A plugin found in none of them is found where this process imports it.
    Empty if both are.
    """
    names = _plugin_names(plugins)
    folders = [Path(p) for p in pythonpath]

    def in_folders(name: str) -> bool:
        top = name.split(".", 1)[0]
        return any((f / top).is_dir() or (f / f"{top}.py").is_file() for f in folders)

    paths = [str(f) for f in folders] + [str(import_root(n)) for n in names if not in_folders(n)]
    env = {}
    if names:
        env["TIERD_PLUGINS"] = ",".join(names)
    if paths:
        env["PYTHONPATH"] = os.pathsep.join(dict.fromkeys([*paths, *filter(None, [os.environ.get("PYTHONPATH")])]))
    return env


def install_package(project: Path, target: Path) -> Path:
    """pip-install the plugin project at ``project`` into the folder ``target``
    (without dependencies, offline) and return ``target``.

    For a test that the package installs and its entry point loads: start a
    :class:`DaemonProcess` with ``pythonpath=[target]``. The project is built
    from a copy, so no ``build/`` or ``*.egg-info`` lands in it, and the
    running interpreter's environment is not touched.
    """
    source = Path(target) / ".source"
    shutil.copytree(project, source, ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__", ".*"))
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "-q",
            "--no-deps",
            "--no-build-isolation",
            "--no-cache-dir",
            "--disable-pip-version-check",
            "--target",
            str(target),
            str(source),
        ],
        check=True,
        capture_output=True,
        text=True,
    )
    shutil.rmtree(source)
    return Path(target)


def _auth_headers(token: str | None, tenant: str | None) -> dict:
    token = ADMIN_TOKEN if token is None else token
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    if tenant:
        headers["Tierd-Tenant"] = tenant
    return headers


def _decode(raw: bytes):
    try:
        return json.loads(raw)
    except ValueError:
        return raw.decode(errors="replace")


class NotifySocket:
    """A unix datagram socket standing in for systemd's $NOTIFY_SOCKET."""

    def __init__(self, directory: Path | None = None):
        # AF_UNIX paths are limited to ~108 bytes: a longer directory (pytest's
        # tmp_path often is) gives way to a short one of our own.
        self._own_dir = directory is None or len(str(directory)) > 80
        folder = Path(tempfile.mkdtemp(prefix="tierd-notify-")) if directory is None or self._own_dir else directory
        self.path = folder / "notify.sock"
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(self.path))
        self.sock.setblocking(False)
        self.messages: list[str] = []

    def drain(self) -> list[str]:
        """Every message received so far."""
        while True:
            try:
                self.messages.append(self.sock.recv(4096).decode())
            except BlockingIOError:
                return self.messages

    def wait_for(self, text: str, timeout: float = 15.0, start: int = 0) -> str:
        """The first message from index ``start`` on that contains ``text``."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for message in self.drain()[start:]:
                if text in message:
                    return message
            time.sleep(0.02)
        raise AssertionError(f"no {text!r} on NOTIFY_SOCKET; got {self.messages}")

    def close(self):
        self.sock.close()
        self.path.unlink(missing_ok=True)
        if self._own_dir:
            shutil.rmtree(self.path.parent, ignore_errors=True)


class DaemonProcess:
    """``tierd run`` in a subprocess, with helpers to talk to it and to hurt it.

    ``config`` is merged into a config listening on a free loopback port with
    its database in ``workdir``; ``env`` is added to the process environment;
    ``plugins`` (modules or import names) are loaded by name and
    ``pythonpath`` folders put on its path (see :func:`plugin_env`).
    """

    def __init__(self, workdir: Path, config: dict | None = None, env: dict | None = None, plugins=(), pythonpath=()):
        self.workdir = Path(workdir)
        self.port = free_port()
        self.config = daemon_config(self.workdir, self.port, config)
        self.config_path = self.workdir / "tierd.yaml"
        self.write_config(self.config)
        self.env = plugin_env(plugins, pythonpath) | (env or {})
        self.url = f"http://127.0.0.1:{self.port}"
        self.notify = NotifySocket(self.workdir)
        self.proc: subprocess.Popen | None = None
        self.log_path = self.workdir / "daemon.log"
        self._log: BinaryIO | None = None

    def write_config(self, config: dict | str) -> None:
        text = config if isinstance(config, str) else yaml.safe_dump(config, sort_keys=False)
        self.config_path.write_text(text)

    def start(self, wait: bool = True) -> DaemonProcess:
        env = os.environ.copy() | {"NOTIFY_SOCKET": str(self.notify.path), "PYTHONUNBUFFERED": "1"} | self.env
        self._log = open(self.log_path, "ab")
        self._notify_start = len(self.notify.drain())
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tierd", "--config", str(self.config_path), "run"],
            cwd=self.workdir,
            env=env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )
        if wait:
            self.wait_ready()
        return self

    def wait_ready(self, timeout: float = 20.0) -> None:
        """Wait for READY=1 on the notify socket; fail with the log if it exits first."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(f"daemon exited with {self.process.returncode}:\n{self.logs()}")
            if any("READY=1" in m for m in self.notify.drain()[self._notify_start :]):
                return
            time.sleep(0.02)
        raise AssertionError(f"daemon not ready after {timeout}s:\n{self.logs()}")

    def logs(self) -> str:
        """Everything the process wrote to stdout and stderr."""
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    @property
    def process(self) -> subprocess.Popen:
        """The running (or exited) process; an error before :meth:`start`."""
        if self.proc is None:
            raise RuntimeError("the daemon was not started")
        return self.proc

    def kill9(self) -> None:
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(10)

    def terminate(self, timeout: float = 20.0) -> int:
        """SIGTERM; return the exit status."""
        self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout)

    def restart(self) -> DaemonProcess:
        if self.proc and self.proc.poll() is None:
            self.terminate()
        return self.start()

    def stop(self) -> None:
        """Stop the process if it runs (SIGTERM, then SIGKILL) and close the log."""
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        if self._log:
            self._log.close()
            self._log = None

    def close(self) -> None:
        """:meth:`stop` and remove the notify socket."""
        self.stop()
        self.notify.close()

    def __enter__(self) -> DaemonProcess:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.close()

    def cli(self, *args: str, input: str | None = None, env: dict | None = None) -> subprocess.CompletedProcess:
        """Run the ``tierd`` CLI against this daemon's config (with its plugins)."""
        return subprocess.run(
            [sys.executable, "-m", "tierd", "--config", str(self.config_path), *args],
            cwd=self.workdir,
            capture_output=True,
            text=True,
            input=input,
            timeout=120,
            env=os.environ.copy() | self.env | (env or {}),
        )

    # --- HTTP --------------------------------------------------------------------------

    def request(
        self,
        method: str,
        path: str,
        json_body=None,
        token: str | None = None,
        tenant: str | None = None,
        data: bytes | None = None,
        headers: dict | None = None,
        timeout: float = 30,
    ):
        """Synchronous request; returns (status, parsed JSON or text). token=None means admin."""
        body = json.dumps(json_body).encode() if json_body is not None else data
        all_headers = {"Content-Type": "application/json"} | _auth_headers(token, tenant) | (headers or {})
        req = urllib.request.Request(self.url + path, data=body, method=method, headers=all_headers)
        try:
            with urllib.request.urlopen(req, timeout=timeout) as resp:
                status, raw = resp.status, resp.read()
        except urllib.error.HTTPError as exc:
            status, raw = exc.code, exc.read()
        return status, _decode(raw)

    async def arequest(
        self,
        method: str,
        path: str,
        json_body=None,
        token: str | None = None,
        tenant: str | None = None,
        data: bytes | None = None,
        headers: dict | None = None,
    ):
        """The same, for async tests (so receivers in the test's loop keep running)."""
        content_type = {} if data is not None else {"Content-Type": "application/json"}
        async with ClientSession() as session:
            async with session.request(
                method,
                self.url + path,
                json=json_body,
                data=data,
                headers=content_type | _auth_headers(token, tenant) | (headers or {}),
            ) as resp:
                return resp.status, _decode(await resp.read())

    # --- its database -----------------------------------------------------------------

    def sql(self, sql: str, params=(), many: bool = False) -> list[tuple]:
        """Run ``sql`` (SQLite's placeholders) straight on this daemon's database, the
        SQLite file or its PostgreSQL database: see :func:`run_sql`."""
        return run_sql(self.config["storage"], sql, params, many)

    async def asql(self, sql: str, params=(), many: bool = False) -> list[tuple]:
        """The same, for async tests: see :func:`arun_sql`."""
        return await arun_sql(self.config["storage"], sql, params, many)

    def create_tenant(self, name: str) -> str:
        """Create a tenant and return a fresh token for it."""
        status, body = self.request("POST", "/v1/admin/tenants", {"name": name})
        assert status in (201, 409), body
        status, body = self.request("POST", f"/v1/admin/tenants/{name}/tokens", {})
        assert status == 201, body
        return body["token"]


class LocalDaemon:
    """The daemon started in the test's own event loop (real database, real API socket).

    ``config`` is merged into a test config in ``workdir``; ``plugins``
    (modules or import names) are loaded besides the installed ones; ``clock``
    replaces the daemon's clock (e.g. :class:`StepClock` to move time on).
    ``daemon`` is the running :class:`tierd.core.daemon.Daemon`.
    """

    def __init__(
        self,
        workdir: Path,
        config: dict | None = None,
        plugins=(),
        clock: Clock | None = None,
        shutdown_grace: str = "3s",
    ):
        self.workdir = Path(workdir)
        self.port = free_port()
        self.clock = clock
        self.plugins = tuple(plugins)
        self.config_path = self.workdir / "tierd.yaml"
        #: The config written to ``config_path`` (its ``storage`` is where :meth:`sql` goes).
        self.config = daemon_config(self.workdir, self.port, config, shutdown_grace)
        self.config_path.write_text(yaml.safe_dump(self.config))
        self.url = f"http://127.0.0.1:{self.port}"
        self.daemon: Daemon | None = None
        self.session: ClientSession | None = None

    async def start(self) -> LocalDaemon:
        from tierd.core.daemon import Daemon, prepare

        pm, registries, config = prepare(self.config_path, plugins=self.plugins)
        self.daemon = daemon = Daemon(pm, registries, config, clock=self.clock)
        try:
            await daemon.start()
        except BaseException:
            # Close what the start opened (the database's connection threads would
            # otherwise keep the test process from exiting), then fail.
            self.daemon = None
            with contextlib.suppress(Exception):
                await daemon.stop()
            raise
        self.session = ClientSession()
        return self

    def _running(self) -> tuple[Daemon, ClientSession]:
        if self.daemon is None or self.session is None:
            raise RuntimeError("the daemon is not running: start() it first")
        return self.daemon, self.session

    async def stop(self) -> None:
        if self.session:
            await self.session.close()
            self.session = None
        if self.daemon:
            await self.daemon.stop()
            self.daemon = None

    async def __aenter__(self) -> LocalDaemon:
        return await self.start()

    async def __aexit__(self, *exc) -> None:
        await self.stop()

    async def call(
        self,
        method: str,
        path: str,
        body=None,
        tenant: str | None = None,
        token: str | None = None,
        params=None,
        headers: dict | None = None,
    ):
        """An API request; returns (status, parsed JSON or None). token=None means admin."""
        async with self._running()[1].request(
            method, self.url + path, json=body, params=params, headers=_auth_headers(token, tenant) | (headers or {})
        ) as resp:
            raw = await resp.read()
            return resp.status, (_decode(raw) if raw else None)

    async def sql(self, sql: str, params=(), many: bool = False) -> list[tuple]:
        """Run ``sql`` (SQLite's placeholders) straight on this daemon's database, on a
        connection of its own (not the daemon's): see :func:`arun_sql`."""
        return await arun_sql(self.config["storage"], sql, params, many)

    async def tenant(self, name: str) -> str:
        """Create a tenant; return a token of its own."""
        status, body = await self.call("POST", "/v1/admin/tenants", {"name": name})
        assert status in (201, 409), body
        status, body = await self.call("POST", f"/v1/admin/tenants/{name}/tokens", {})
        assert status == 201, body
        return body["token"]

    async def publish(self, tenant: str, type_: str, data: dict | None = None) -> dict:
        """Publish an event through the API; return it as the API answered."""
        status, body = await self.call("POST", "/v1/events", {"type": type_, "data": data or {}}, tenant=tenant)
        assert status == 202, body
        return body

    async def settled(self, timeout: float = 15.0) -> None:
        """Wait until every running consumer has handled every event published so far.

        The later sentinel for "X did not happen": once a consumer has passed
        an event, whatever it was going to do with it is done (or durably queued).
        """
        bus = self._running()[0].bus
        assert bus is not None
        row = await bus.db.fetchone("SELECT COALESCE(MAX(seq), 0) AS seq FROM events")
        assert row is not None  # an aggregate always answers a row
        last: int = row["seq"]

        def passed() -> bool:
            return all(p.cursor is not None and p.cursor >= last for p in bus.progress.values())

        await eventually(passed, timeout, what=f"consumers {sorted(bus.progress)} to pass event {last}")


@contextlib.asynccontextmanager
async def recorded_reads(db: Database) -> AsyncIterator[list[str]]:
    """Collect the SQL (parameters inlined) of every statement run on ``db``'s
    readers inside the block, e.g. to check their plans with :func:`assert_index_walk`."""
    statements: list[str] = []
    await db.trace_reads(statements.append)
    try:
        yield statements
    finally:
        await db.trace_reads(None)


def query_plan(db_path: str | Path, sql: str) -> list[str]:
    """The details of SQLite's EXPLAIN QUERY PLAN of ``sql``, one line each."""
    conn = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True)
    try:
        return [row[3] for row in conn.execute("EXPLAIN QUERY PLAN " + sql)]
    finally:
        conn.close()


def assert_index_walk(db_path: str | Path, sql: str) -> list[str]:
    """Fail unless ``sql`` reads its rows along indexes in the order asked:
    no temporary B-tree for ORDER BY (a sort of everything that matched) and
    no full scan of a table. Returns the plan."""
    plan = query_plan(db_path, sql)
    conn = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True)
    try:
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    finally:
        conn.close()
    for line in plan:
        scanned = re.fullmatch(r"SCAN (\w+)(?: AS \w+)?", line)
        assert "USE TEMP B-TREE FOR ORDER BY" not in line and not (scanned and scanned.group(1) in tables), (
            f"{sql}\nreads more than its page: {line}\nplan: {plan}"
        )
    return plan


class StepClock(Clock):
    """Real time plus an offset a test can move forward (expiry, retention, windows)."""

    def __init__(self):
        self.offset = 0.0

    def time(self) -> float:
        return time.time() + self.offset

    def advance(self, seconds: float) -> None:
        self.offset += seconds


class Receiver:
    """An aiohttp server on loopback recording every request it gets.

    Each entry of ``requests`` has method, path (with query), headers, body
    (bytes) and time (unix seconds of arrival). ``responder`` is an async
    function ``(request, body: bytes) -> web.Response`` (default: 200 "ok");
    swap it at any time to change behaviour.
    """

    def __init__(self):
        self.requests: list[dict] = []
        self.responder = None
        self.runner = None
        self.url = ""
        self.arrived = asyncio.Event()

    async def start(self) -> Receiver:
        app = web.Application(client_max_size=16 * 1024 * 1024)
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self.runner = web.AppRunner(app, access_log=None)
        await self.runner.setup()
        port = free_port()
        await web.TCPSite(self.runner, "127.0.0.1", port).start()
        self.url = f"http://127.0.0.1:{port}"
        return self

    async def _handle(self, request: web.Request):
        body = await request.read()
        entry = {
            "method": request.method,
            "path": request.path_qs,
            "headers": dict(request.headers),
            "body": body,
            "time": time.time(),
        }
        self.requests.append(entry)
        self.arrived.set()
        if self.responder is not None:
            return await self.responder(request, body)
        return web.Response(text="ok")

    async def wait_for(self, count: int, timeout: float = 15.0) -> list[dict]:
        """Wait until at least ``count`` requests arrived; return them all."""
        deadline = time.monotonic() + timeout
        while len(self.requests) < count:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"receiver got {len(self.requests)} requests, expected {count}")
            self.arrived.clear()
            try:
                await asyncio.wait_for(self.arrived.wait(), remaining)
            except TimeoutError:
                pass
        return self.requests

    def json_bodies(self) -> list:
        return [json.loads(r["body"]) for r in self.requests]

    async def close(self):
        if self.runner:
            await self.runner.cleanup()
            self.runner = None

    async def __aenter__(self) -> Receiver:
        return await self.start()

    async def __aexit__(self, *exc) -> None:
        await self.close()


class ConsoleSession:
    """A browser-like client of the web console (``/ui``): cookies kept, the
    CSRF token of the last page read put in every form it posts.

    ::

        async with ConsoleSession(daemon.url) as ui:
            await ui.sign_in(ADMIN_TOKEN)
            status, html = await ui.get("/ui/webhooks")
            status, html = await ui.post("/ui/deliveries/dlv_1/retry")
    """

    CSRF = re.compile(r'name="csrf" value="([^"]*)"')

    def __init__(self, url: str) -> None:
        from aiohttp import CookieJar

        self.url = url.rstrip("/")
        # unsafe: keep cookies of an IP-address host (the daemon listens on 127.0.0.1).
        self.session = ClientSession(cookie_jar=CookieJar(unsafe=True))
        self.csrf = ""
        #: Where the last request ended up, after redirects (a path with its query).
        self.last_path = ""

    async def __aenter__(self) -> ConsoleSession:
        return self

    async def __aexit__(self, *exc) -> None:
        await self.session.close()

    async def _read(self, resp) -> tuple[int, str]:
        html = await resp.text()
        found = self.CSRF.search(html)
        if found and found.group(1):
            self.csrf = found.group(1)
        self.last_path = resp.url.path_qs
        return resp.status, html

    async def get(self, path: str, **kwargs) -> tuple[int, str]:
        """GET a console page: (status, HTML), redirects followed."""
        async with self.session.get(self.url + path, **kwargs) as resp:
            return await self._read(resp)

    async def post(self, path: str, fields: dict | None = None, csrf: bool = True, **kwargs) -> tuple[int, str]:
        """POST a form (with the CSRF token unless ``csrf=False``): (status, HTML) after redirects."""
        data = dict(fields or {})
        if csrf:
            data.setdefault("csrf", self.csrf)
        async with self.session.post(self.url + path, data=data, **kwargs) as resp:
            return await self._read(resp)

    async def sign_in(self, token: str) -> tuple[int, str]:
        """Sign in with a token (the admin's or a tenant's); (status, HTML of the page reached)."""
        await self.get("/ui/login")
        return await self.post("/ui/login", {"token": token})


#: Run by :meth:`PostgresServer._watch`: wait for the test process (argv 1) to be
#: gone, then stop the server (argv 3...) and remove its folder (argv 2).
_PG_WATCHER = """
import os, shutil, subprocess, sys, time
owner, folder, stop = int(sys.argv[1]), sys.argv[2], sys.argv[3:]
while True:
    try:
        os.kill(owner, 0)
    except ProcessLookupError:
        break
    time.sleep(1)
subprocess.run(stop, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
shutil.rmtree(folder, ignore_errors=True)
"""


class PostgresServer:
    """A throw-away PostgreSQL server for tests: ``initdb`` and ``postgres`` in
    a temporary directory, on a free port of 127.0.0.1, trust authentication
    (a test server: nobody but this machine's processes can reach it).

    ::

        if not PostgresServer.available():
            pytest.skip(PostgresServer.MISSING)
        with PostgresServer() as pg:
            url = pg.create_database("t1")  # postgresql://postgres@127.0.0.1:PORT/t1

    The binaries are Debian's (``/usr/lib/postgresql/<version>/bin``, the newest
    version found; ``.ci/run`` installs the ``postgresql`` package where they are
    missing). PostgreSQL refuses to run as root, so as root the server runs as
    the ``postgres`` user (``runuser``), its directory handed over to it.
    Durability is off for speed (``fsync``, ``full_page_writes``,
    ``synchronous_commit``): a test's data need not survive a power cut.
    """

    #: Debian's PostgreSQL: one folder per major version.
    ROOT = Path("/usr/lib/postgresql")
    MISSING = "PostgreSQL is not installed (no /usr/lib/postgresql/*/bin/initdb; .ci/run installs Debian's postgresql)"

    def __init__(self, user: str = "postgres") -> None:
        #: The OS user the server runs as when this process is root.
        self.os_user = user
        self.bin = self.binaries()
        self.dir: Path | None = None
        self.port = 0
        self._started = False

    @classmethod
    def binaries(cls) -> Path | None:
        """The newest PostgreSQL's bin folder, or None where there is none."""
        found = [initdb.parent for initdb in cls.ROOT.glob("*/bin/initdb")]
        # By major version as a number: 9.6 < 15 < 16.
        return max(found, key=lambda p: [int(x) for x in re.findall(r"\d+", p.parent.name)] or [0], default=None)

    @classmethod
    def available(cls) -> bool:
        """Whether PostgreSQL's binaries are here (tests skip with :attr:`MISSING` otherwise)."""
        return cls.binaries() is not None

    @property
    def url(self) -> str:
        """The server's ``postgres`` database, as superuser ``postgres``."""
        return self.database_url("postgres")

    def database_url(self, name: str) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{name}"

    _watcher: subprocess.Popen | None = None

    def _run(self, *argv: str, check: bool = True) -> subprocess.CompletedProcess:
        """Run one of PostgreSQL's programs, as the server's user when we are root."""
        assert self.bin is not None
        cmd = [str(self.bin / argv[0]), *argv[1:]]
        if os.geteuid() == 0:
            cmd = ["runuser", "-u", self.os_user, "--", *cmd]
        done = subprocess.run(cmd, capture_output=True, text=True, stdin=subprocess.DEVNULL)
        if check and done.returncode != 0:
            raise RuntimeError(f"{' '.join(argv[:2])} failed ({done.returncode}): {done.stderr or done.stdout}")
        return done

    def start(self) -> PostgresServer:
        if self.bin is None:
            raise RuntimeError(self.MISSING)
        # As root, under /tmp itself: the server's user must reach the folder
        # (a TMPDIR may be root's own), and a unix socket's path is short.
        self.dir = Path(tempfile.mkdtemp(prefix="tierd-pg-", dir="/tmp" if os.geteuid() == 0 else None))
        if os.geteuid() == 0:
            shutil.chown(self.dir, self.os_user, self.os_user)
        data = self.dir / "data"
        self._run(
            "initdb", "-D", str(data), "-U", "postgres", "-A", "trust", "-E", "UTF8", "--locale=C.UTF-8", "--no-sync"
        )
        settings = {
            "listen_addresses": "'127.0.0.1'",
            "unix_socket_directories": f"'{self.dir}'",
            # Speed over durability: a test server's data need not survive a crash.
            "fsync": "off",
            "full_page_writes": "off",
            "synchronous_commit": "off",
            "max_connections": "100",
            "shared_buffers": "32MB",
        }
        with open(data / "postgresql.conf", "a") as conf:
            conf.writelines(f"{key} = {value}\n" for key, value in settings.items())
        # A free port can be taken between looking and binding: try a few.
        for _ in range(5):
            self.port = free_port()
            started = self._run(
                "pg_ctl", "start", "-w", "-t", "60", "-D", str(data), "-l", str(self.dir / "server.log"),
                "-o", f"-p {self.port}", check=False,
            )  # fmt: skip
            if started.returncode == 0:
                self._started = True
                self._watch(data)
                return self
        log_text = (self.dir / "server.log").read_text(errors="replace")[-2000:]
        self.stop()
        raise RuntimeError(f"PostgreSQL did not start: {started.stderr}\n{log_text}")

    def _watch(self, data: Path) -> None:
        """A watcher that stops the server and removes its folder once this process is
        gone, however it ends: a test run killed (a CI timeout, ``kill -9``) runs no
        ``stop()`` nor atexit, and would leave a server running for ever."""
        assert self.bin is not None
        stop = [str(self.bin / "pg_ctl"), "stop", "-m", "immediate", "-D", str(data)]
        if os.geteuid() == 0:
            stop = ["runuser", "-u", self.os_user, "--", *stop]
        self._watcher = subprocess.Popen(
            [sys.executable, "-c", _PG_WATCHER, str(os.getpid()), str(self.dir), *stop],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            start_new_session=True,  # not killed with the test run's process group
        )  # fmt: skip

    def stop(self) -> None:
        """Stop the server (fast: its sessions are ended) and remove its directory."""
        if self._watcher is not None:
            self._watcher.kill()
            self._watcher.wait()
            self._watcher = None
        if self.dir is None:
            return
        if self._started:
            self._run("pg_ctl", "stop", "-m", "fast", "-w", "-D", str(self.dir / "data"), check=False)
            self._started = False
        shutil.rmtree(self.dir, ignore_errors=True)
        self.dir = None

    def psql(self, sql: str, database: str = "postgres") -> str:
        """Run SQL through ``psql`` (for set-up outside an event loop); its output."""
        return self._run("psql", "-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-d", self.database_url(database),
                         "-c", sql).stdout  # fmt: skip

    def create_database(self, name: str) -> str:
        """A new empty database (e.g. one per test); its URL."""
        if not re.fullmatch(r"[a-z_][a-z0-9_]*", name):
            raise ValueError(f"not a plain database name: {name!r}")
        self.psql(f"CREATE DATABASE {name}")
        return self.database_url(name)

    def __enter__(self) -> PostgresServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
