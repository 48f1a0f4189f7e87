"""Options of the daemon process: unix socket, watchdog, JSON logs."""

import json
import shutil
import tempfile
from pathlib import Path

import pytest


@pytest.fixture
def short_dir():
    """A directory with a short path (a unix socket's path is limited to ~108 bytes), removed after."""
    path = Path(tempfile.mkdtemp(prefix="tierd-api-"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


def test_unix_socket_watchdog_and_json_logs(tierd_daemon, short_dir):
    sock = short_dir / "api.sock"
    d = tierd_daemon(
        {"server": {"listen": f"unix:{sock}"}, "logging": {"format": "json"}}, env={"WATCHDOG_USEC": "400000"}
    )  # ping every 0.2 s
    d.notify.wait_for("WATCHDOG=1", timeout=5)
    count = sum("WATCHDOG=1" in m for m in d.notify.drain())
    d.notify.wait_for("WATCHDOG=1", timeout=5, start=len(d.notify.messages))
    assert sum("WATCHDOG=1" in m for m in d.notify.drain()) > count

    # The CLI reaches the API over the socket. Meanwhile nobody drains the
    # notify socket: its datagram queue fills with pings in about 2 s, and the
    # daemon must drop pings rather than block its loop on a full queue.
    assert d.cli("tenants", "create", "acme").returncode == 0
    r = d.cli("events", "publish", "--tenant", "acme", "--type", "invoice.paid", "--data", '{"n": 1}', "--json")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["type"] == "invoice.paid"
    r = d.cli("events", "list", "--tenant", "acme", "--json")
    assert [e["type"] for e in json.loads(r.stdout)] == ["invoice.paid"]

    assert d.terminate() == 0
    # Every line the daemon wrote is one JSON record: a line that is not (a
    # plain-text handler, a traceback outside the record) breaks log shippers.
    lines = d.logs().splitlines()
    records = []
    for line in lines:
        try:
            records.append(json.loads(line))
        except ValueError:
            raise AssertionError(f"not a JSON log record: {line!r}") from None
    assert all(isinstance(r, dict) and {"ts", "level", "logger", "message"} <= set(r) for r in records), records
    assert any("ready on unix:" in r["message"] for r in records)
