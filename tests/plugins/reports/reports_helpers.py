"""Helpers shared by the reports plugin's tests."""

from __future__ import annotations

import itertools
import os
from pathlib import Path

from tierd.testing import TEST_STORAGE_ENV, deep_merge, shared_postgres

_databases = itertools.count(1)
_kept: dict[Path, str] = {}


def one_database(config: dict, workdir: Path) -> dict:
    """``config`` with the database pinned, for tests that stop a daemon and
    start another in ``workdir`` on what the first left (a crash, a restart).

    On SQLite the database is the file in the daemon's folder already. Under
    ``TIERD_TEST_STORAGE=postgresql`` each daemon of the harness gets a new
    database (its name has the daemon's port), so the daemons of one folder
    are given one of their own here, made once.
    """
    if os.environ.get(TEST_STORAGE_ENV, "sqlite") != "postgresql":
        return config
    url = _kept.get(workdir)
    if url is None:
        url = _kept[workdir] = shared_postgres().create_database(f"reports_kept_{os.getpid()}_{next(_databases)}")
    return deep_merge(config, {"storage": {"url": url}})
