"""Shared test fixtures over tierd's own harness, ``tierd/testing.py``.

``tierd_daemon`` starts ``python -m tierd run`` on a free port with a real
database and a fake systemd NOTIFY_SOCKET; ``receiver`` starts an aiohttp
server on loopback that records what it is sent. The logic lives in
``tierd.testing`` so that plugin authors test with the same pieces; the names
below are what test modules import.

Every test runs on SQLite by default, and on PostgreSQL with
``TIERD_TEST_STORAGE=postgresql`` (``make test`` runs both passes). A test of
SQLite itself (its file, locking, WAL, ``db compact``...) is marked
``@pytest.mark.sqlite_only("why")`` and skipped on PostgreSQL with that reason.
A module named ``*_pg.py`` or ``*_postgres.py`` starts a PostgreSQL server of
its own (``tierd.testing.PostgresServer``) whatever the pass: its tests are
marked ``own_postgres``, so that ``make test`` runs them once, in the
PostgreSQL pass.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tierd.testing import (  # noqa: F401 (re-exported for test modules)
    ADMIN_TOKEN,
    DaemonProcess,
    NotifySocket,
    PostgresServer,
    Receiver,
    deep_merge,
    eventually,
    free_port,
    on_postgresql,
)

ROOT = Path(__file__).resolve().parent.parent
SHARED = ROOT.parent / "shared"
#: The example plugin projects (loaded by path, never installed into this environment).
EXAMPLES = ROOT / "examples"

#: The name tierd's tests have always used for :func:`tierd.testing.eventually`.
until = eventually


def pytest_configure(config):
    config.addinivalue_line(
        "markers",
        "sqlite_only(reason): a test of SQLite itself (its file, locks, WAL, compact...);"
        " skipped when the tests run on PostgreSQL (TIERD_TEST_STORAGE=postgresql), with the reason",
    )
    config.addinivalue_line(
        "markers",
        "own_postgres: the test starts a PostgreSQL server of its own (a module named *_pg.py or"
        " *_postgres.py), whichever backend the other tests run on",
    )


def pytest_collection_modifyitems(config, items):
    for item in items:
        if item.path.stem.endswith(("_pg", "_postgres")):
            item.add_marker(pytest.mark.own_postgres)
    if not on_postgresql():
        return
    for item in items:
        marker = item.get_closest_marker("sqlite_only")
        if marker is not None:
            reason = marker.args[0] if marker.args else marker.kwargs.get("reason", "a test of SQLite itself")
            item.add_marker(pytest.mark.skip(reason=f"SQLite only: {reason}"))


@pytest.fixture(scope="module")
def pg():
    """A throw-away PostgreSQL server for a module's tests (``pg.create_database(name)``
    gives the URL of a new empty database); skips where PostgreSQL is not installed."""
    if not PostgresServer.available():
        pytest.skip(PostgresServer.MISSING)
    with PostgresServer() as server:
        yield server


@pytest.fixture
def tierd_daemon(tmp_path):
    """Factory: ``d = tierd_daemon(config_dict, env=None, start=True)``."""
    started: list[DaemonProcess] = []

    def factory(
        config: dict | None = None,
        env: dict | None = None,
        start: bool = True,
        name: str = "d",
        plugins=(),
        pythonpath=(),
    ):
        workdir = tmp_path / f"{name}{len(started)}"
        workdir.mkdir()
        daemon = DaemonProcess(workdir, config or {}, env, plugins=plugins, pythonpath=pythonpath)
        started.append(daemon)
        if start:
            daemon.start()
        return daemon

    yield factory
    for daemon in started:
        daemon.close()


@pytest.fixture
async def receiver():
    """Factory: ``r = await receiver()``; closed at the end of the test."""
    made: list[Receiver] = []

    async def factory() -> Receiver:
        r = await Receiver().start()
        made.append(r)
        return r

    yield factory
    for r in made:
        await r.close()


@pytest.fixture
def shared_statements() -> Path:
    """../shared/data/statements, or skip (the suite carries its own fixtures too)."""
    path = SHARED / "data" / "statements"
    if not path.is_dir():
        pytest.skip("../shared/data/statements is not present")
    return path


def example_plugin(folder: str) -> Path:
    """The folder of the example project ``examples/FOLDER``: put it on a
    daemon's ``pythonpath`` (with its module in ``plugins``) to load it by path."""
    return EXAMPLES / folder


def sqlite_only_plugin(tmp_path: Path) -> dict:
    """A third-party plugin ``olden`` whose migrations are SQLite's only (a
    bare list, as before PostgreSQL): the DaemonProcess arguments that load it."""
    folder = tmp_path / "olden-plugin"
    folder.mkdir(exist_ok=True)
    (folder / "olden.py").write_text(
        "from tierd.core.plugins import hookimpl\n\n\n"
        "@hookimpl\n"
        "def tierd_migrations():\n"
        "    return {'olden': ['CREATE TABLE olden_notes (id INTEGER PRIMARY KEY AUTOINCREMENT, note TEXT)']}\n"
    )
    return {"plugins": ["olden"], "pythonpath": [folder]}
