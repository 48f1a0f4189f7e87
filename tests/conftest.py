"""Shared test support: the real daemon as a subprocess, and real HTTP receivers.

``tierd_daemon`` starts ``python -m tierd run`` on a free port with a real
SQLite file and a fake systemd NOTIFY_SOCKET; ``receiver`` starts an aiohttp
server on loopback that records what it is sent.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import yaml
from aiohttp import ClientSession, web

ROOT = Path(__file__).resolve().parent.parent
SHARED = ROOT.parent / "shared"
ADMIN_TOKEN = "test-admin-token-0123456789"


async def until(predicate, timeout: float = 20.0, what: str = "condition"):
    """Wait until ``predicate()`` (sync or async) is truthy and return its value;
    fail naming ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if inspect.isawaitable(value):
            value = await value
        if value:
            return value
        await asyncio.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def deep_merge(base: dict, extra: dict) -> dict:
    out = dict(base)
    for key, value in (extra or {}).items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = value
    return out


class NotifySocket:
    """A unix datagram socket standing in for systemd's $NOTIFY_SOCKET."""

    def __init__(self, directory: Path):
        # AF_UNIX paths are limited to ~108 bytes; pytest's tmp_path can be longer.
        self.path = Path(tempfile.mkdtemp(prefix="tierd-notify-")) / "notify.sock"
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(self.path))
        self.sock.setblocking(False)
        self.messages: list[str] = []

    def drain(self) -> list[str]:
        while True:
            try:
                self.messages.append(self.sock.recv(4096).decode())
            except BlockingIOError:
                return self.messages

    def wait_for(self, text: str, timeout: float = 15.0, start: int = 0) -> str:
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


class DaemonProcess:
    """``tierd run`` in a subprocess, with helpers to talk to it and to hurt it."""

    def __init__(self, workdir: Path, config: dict, env: dict | None = None):
        self.workdir = workdir
        self.port = free_port()
        self.config = deep_merge({
            "server": {"listen": f"127.0.0.1:{self.port}", "admin_token": ADMIN_TOKEN, "shutdown_grace": "5s"},
            "storage": {"path": str(workdir / "tierd.db")},
            "logging": {"level": "INFO"},
        }, config)
        self.config_path = workdir / "tierd.yaml"
        self.write_config(self.config)
        self.env = env or {}
        self.url = f"http://127.0.0.1:{self.port}"
        self.notify = NotifySocket(workdir)
        self.proc: subprocess.Popen | None = None
        self.log_path = workdir / "daemon.log"
        self._log = None

    def write_config(self, config: dict | str) -> None:
        text = config if isinstance(config, str) else yaml.safe_dump(config, sort_keys=False)
        self.config_path.write_text(text)

    def start(self, wait: bool = True) -> "DaemonProcess":
        env = os.environ.copy() | {"NOTIFY_SOCKET": str(self.notify.path), "PYTHONUNBUFFERED": "1"} | self.env
        self._log = open(self.log_path, "ab")
        self._notify_start = len(self.notify.drain())
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tierd", "--config", str(self.config_path), "run"],
            cwd=self.workdir, env=env, stdout=self._log, stderr=subprocess.STDOUT)
        if wait:
            self.wait_ready()
        return self

    def wait_ready(self, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"daemon exited with {self.proc.returncode}:\n{self.logs()}")
            if any("READY=1" in m for m in self.notify.drain()[self._notify_start:]):
                return
            time.sleep(0.02)
        raise AssertionError(f"daemon not ready after {timeout}s:\n{self.logs()}")

    def logs(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def kill9(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def terminate(self, timeout: float = 20.0) -> int:
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout)

    def restart(self) -> "DaemonProcess":
        if self.proc and self.proc.poll() is None:
            self.terminate()
        return self.start()

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        if self._log:
            self._log.close()

    def cli(self, *args: str, input: str | None = None, env: dict | None = None) -> subprocess.CompletedProcess:
        """Run the ``tierd`` CLI against this daemon's config."""
        return subprocess.run(
            [sys.executable, "-m", "tierd", "--config", str(self.config_path), *args],
            cwd=self.workdir, capture_output=True, text=True, input=input, timeout=120,
            env=os.environ.copy() | self.env | (env or {}))

    # --- HTTP --------------------------------------------------------------------------

    def _headers(self, token, tenant, content_type="application/json"):
        headers = {"Content-Type": content_type} if content_type else {}
        token = ADMIN_TOKEN if token is None else token
        if token:
            headers["Authorization"] = f"Bearer {token}"
        if tenant:
            headers["Tierd-Tenant"] = tenant
        return headers

    def request(self, method: str, path: str, json_body=None, token: str | None = None, tenant: str | None = None,
                data: bytes | None = None, headers: dict | None = None, timeout: float = 30):
        """Synchronous request; returns (status, parsed JSON or text). token=None means admin."""
        body = json.dumps(json_body).encode() if json_body is not None else data
        all_headers = self._headers(token, tenant) | (headers or {})
        req = urllib.request.Request(self.url + path, data=body, method=method, headers=all_headers)
        try:
            with urllib.request.urlopen(req, timeout=timeout) as resp:
                status, raw = resp.status, resp.read()
        except urllib.error.HTTPError as exc:
            status, raw = exc.code, exc.read()
        try:
            return status, json.loads(raw)
        except ValueError:
            return status, raw.decode(errors="replace")

    async def arequest(self, method: str, path: str, json_body=None, token: str | None = None,
                       tenant: str | None = None, data: bytes | None = None, headers: dict | None = None):
        """The same, for async tests (so receivers in the test's loop keep running)."""
        async with ClientSession() as session:
            all_headers = self._headers(token, tenant, None if data is not None else "application/json")
            async with session.request(method, self.url + path, json=json_body, data=data,
                                       headers=all_headers | (headers or {})) as resp:
                raw = await resp.read()
                try:
                    return resp.status, json.loads(raw)
                except ValueError:
                    return resp.status, raw.decode(errors="replace")

    def create_tenant(self, name: str) -> str:
        """Create a tenant and return a fresh token for it."""
        status, body = self.request("POST", "/v1/admin/tenants", {"name": name})
        assert status in (201, 409), body
        status, body = self.request("POST", f"/v1/admin/tenants/{name}/tokens", {})
        assert status == 201, body
        return body["token"]


@pytest.fixture
def tierd_daemon(tmp_path):
    """Factory: ``d = tierd_daemon(config_dict, env=None, start=True)``."""
    started: list[DaemonProcess] = []

    def factory(config: dict | None = None, env: dict | None = None, start: bool = True, name: str = "d"):
        workdir = tmp_path / f"{name}{len(started)}"
        workdir.mkdir()
        daemon = DaemonProcess(workdir, config or {}, env)
        started.append(daemon)
        if start:
            daemon.start()
        return daemon

    yield factory
    for daemon in started:
        daemon.stop()
        daemon.notify.close()


class Receiver:
    """An aiohttp server on loopback recording every request it gets.

    ``responder`` is an async function ``(request, body: bytes) -> web.Response``
    (default: 200 "ok"); swap it at any time to change behaviour.
    """

    def __init__(self):
        self.requests: list[dict] = []
        self.responder = None
        self.runner = None
        self.url = ""
        self.arrived = asyncio.Event()

    async def start(self) -> "Receiver":
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
        entry = {"method": request.method, "path": request.path_qs, "headers": dict(request.headers),
                 "body": body, "time": time.time()}
        self.requests.append(entry)
        self.arrived.set()
        if self.responder is not None:
            return await self.responder(request, body)
        return web.Response(text="ok")

    async def wait_for(self, count: int, timeout: float = 15.0) -> list[dict]:
        deadline = time.monotonic() + timeout
        while len(self.requests) < count:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"receiver got {len(self.requests)} requests, expected {count}")
            self.arrived.clear()
            try:
                await asyncio.wait_for(self.arrived.wait(), remaining)
            except asyncio.TimeoutError:
                pass
        return self.requests

    def json_bodies(self) -> list:
        return [json.loads(r["body"]) for r in self.requests]

    async def close(self):
        if self.runner:
            await self.runner.cleanup()


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


def install_example(folder: str, module: str) -> None:
    """pip-install ``examples/FOLDER`` into this interpreter, as a user would.

    No dependencies (tierd itself is already installed) and no build
    isolation (the test environment has setuptools), so it works offline.
    """
    import importlib

    try:
        importlib.import_module(module)
        return
    except ImportError:
        pass
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation", str(ROOT / "examples" / folder)],
        check=True, capture_output=True)
    importlib.invalidate_caches()
