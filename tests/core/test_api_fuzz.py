"""The whole control API under a property-based fuzzer (schemathesis over
``/v1/openapi.json``): no input yields a 5xx, every answer is one the document
declares, and afterwards another tenant's requests and deliveries still work.

The daemon runs in a network namespace of its own (``unshare --net``) with
only a loopback interface: fuzzed webhook endpoints (``https://8.8.8.8/``)
and notification targets can reach nothing outside this machine. The API
listens on a unix socket, which a small forwarder in this process exposes
on 127.0.0.1 for the fuzzer's HTTP client. A plain receiver runs inside the
namespace, so the bystander's webhook deliveries have somewhere to land.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import socketserver
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pytest
import schemathesis
import yaml
from conftest import ADMIN_TOKEN, ROOT, NotifySocket
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

FUZZ_TENANT = "fuzz"
BYSTANDER = "bystander"
RECEIVER_PORT = 9000  # inside the namespace, where nothing else listens
FIXTURES = ROOT / "examples" / "reconciliation"  # a real CAMT.053 statement and its books
EXAMPLES = int(os.environ.get("TIERD_FUZZ_EXAMPLES", "25"))

RECEIVER = """
import sys
from http.server import BaseHTTPRequestHandler, HTTPServer
out = open(sys.argv[1], "ab", buffering=0)
class Hook(BaseHTTPRequestHandler):
    def do_POST(self):
        out.write(self.rfile.read(int(self.headers["content-length"])) + b"\\n")
        self.send_response(204)
        self.end_headers()
    def log_message(self, *args):
        pass
HTTPServer(("127.0.0.1", int(sys.argv[2])), Hook).serve_forever()
"""

#: The daemon runs in a network namespace of its own: the tests' PostgreSQL server on
#: loopback is out of its reach, so it fuzzes a SQLite daemon (the API is the same on both).
pytestmark = pytest.mark.sqlite_only("the daemon's network namespace cannot reach the test PostgreSQL server")


def _sandbox_ok() -> bool:
    if not (shutil.which("unshare") and shutil.which("ip")):
        return False
    return (
        subprocess.run(
            ["unshare", "--net", "--pid", "--fork", "ip", "link", "set", "lo", "up"], capture_output=True
        ).returncode
        == 0
    )


class _Forward(socketserver.BaseRequestHandler):
    """One TCP connection from the fuzzer, piped to the daemon's unix socket."""

    def handle(self):
        upstream = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        upstream.connect(self.server.unix_path)

        def pump(src, dst):
            try:
                while data := src.recv(65536):
                    dst.sendall(data)
            except OSError:
                pass
            finally:
                for sock in (src, dst):
                    try:
                        sock.shutdown(socket.SHUT_RDWR)
                    except OSError:
                        pass

        back = threading.Thread(target=pump, args=(upstream, self.request), daemon=True)
        back.start()
        pump(self.request, upstream)
        back.join(30)
        upstream.close()


class _Forwarder(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, unix_path: str):
        self.unix_path = unix_path
        super().__init__(("127.0.0.1", 0), _Forward)


class SandboxedDaemon:
    def __init__(self, workdir: Path):
        self.workdir = workdir
        short = Path(tempfile.mkdtemp(prefix="tierd-fuzz-"))  # unix socket paths are short
        self.sock_path = short / "api.sock"
        self.received = workdir / "received.jsonl"
        self.config_path = workdir / "tierd.yaml"
        self.config_path.write_text(
            yaml.safe_dump(
                {
                    "server": {"listen": f"unix:{self.sock_path}", "admin_token": ADMIN_TOKEN, "shutdown_grace": "3s"},
                    "storage": {"path": str(workdir / "tierd.db")},
                    "webhooks": {
                        "allow_http": True,
                        "allow_destinations": ["127.0.0.1/32"],
                        "timeout": "2s",
                        "retry_schedule": ["0s", "1s"],
                    },
                    "notifications": {"channels": {"journal": {"type": "log"}}},
                }
            )
        )
        self.notify = NotifySocket(workdir)
        script = (
            f"ip link set lo up && "
            f"{sys.executable} -c '{RECEIVER}' {self.received} {RECEIVER_PORT} & "
            f"exec {sys.executable} -m tierd --config {self.config_path} run"
        )
        self.log = open(workdir / "daemon.log", "ab")
        env = os.environ | {"NOTIFY_SOCKET": str(self.notify.path), "PYTHONUNBUFFERED": "1"}
        # A PID namespace too: when its first process (the daemon) ends, the
        # kernel ends the receiver with it.
        self.proc = subprocess.Popen(
            ["unshare", "--net", "--pid", "--fork", "--kill-child", "sh", "-c", script],
            cwd=workdir,
            env=env,
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )
        self.notify.wait_for("READY=1", timeout=30)
        self.forwarder = _Forwarder(str(self.sock_path))
        threading.Thread(target=self.forwarder.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.forwarder.server_address[1]}"

    def request(self, method, path, body=None, tenant=None, token=ADMIN_TOKEN, raw=None):
        import urllib.error
        import urllib.request

        headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
        if tenant:
            headers["Tierd-Tenant"] = tenant
        data = json.dumps(body).encode() if body is not None else raw
        req = urllib.request.Request(self.url + path, data=data, method=method, headers=headers)
        try:
            with urllib.request.urlopen(req, timeout=30) as resp:
                return resp.status, json.loads(resp.read() or b"{}")
        except urllib.error.HTTPError as exc:
            return exc.code, json.loads(exc.read() or b"{}")

    def logs(self) -> str:
        return (self.workdir / "daemon.log").read_text(errors="replace")

    def stop(self):
        self.forwarder.shutdown()
        self.proc.terminate()  # --kill-child ends the daemon; the PID namespace goes with it
        try:
            self.proc.wait(20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        self.log.close()
        self.notify.close()


@pytest.fixture(scope="module")
def sandboxed(tmp_path_factory):
    if not _sandbox_ok():
        pytest.skip("needs unshare --net and ip (root): the fuzzer must not reach any network")
    daemon = SandboxedDaemon(tmp_path_factory.mktemp("fuzz"))
    try:
        for tenant in (FUZZ_TENANT, BYSTANDER):
            status, body = daemon.request("POST", "/v1/admin/tenants", {"name": tenant})
            assert status == 201, body
        daemon.known = seed(daemon)
        yield daemon
    finally:
        daemon.stop()


def seed(daemon: SandboxedDaemon) -> dict[str, str]:
    """One object of each kind in the fuzzer's tenant, so that fuzzed requests
    also reach handlers past their 404 (a random id finds nothing)."""

    def ok(method, path, body=None, raw=None):
        status, answer = daemon.request(method, path, body, tenant=FUZZ_TENANT, raw=raw)
        assert status in (200, 201, 202), (path, answer)
        return answer

    endpoint = ok("POST", "/v1/webhooks", {"url": f"http://127.0.0.1:{RECEIVER_PORT}/hook"})
    event = ok("POST", "/v1/events", {"type": "invoice.paid", "data": {"amount": "1.00"}})
    deliveries = []
    for _ in range(100):
        deliveries = ok("GET", f"/v1/deliveries?event_id={event['id']}")["data"]
        if deliveries:
            break
        time.sleep(0.05)
    silence = ok(
        "POST", "/v1/notifications/silences", {"matchers": {"type": "invoice.*"}, "ends_at": "2099-01-01T00:00:00Z"}
    )
    notification = ok("POST", "/v1/notifications/send", {"channel": "journal", "subject": "s", "body": "b"})
    token = ok("POST", f"/v1/admin/tenants/{FUZZ_TENANT}/tokens", {})
    account = "/v1/reconciliation/accounts/main-eur"
    ok("POST", "/v1/reconciliation/accounts", {"id": "main-eur", "currency": "EUR", "iban": "DE89370400440532013000"})
    ok("POST", account + "/statements?format=camt053", raw=(FIXTURES / "nov.xml").read_bytes())
    ok("POST", account + "/ledger", raw=(FIXTURES / "ledger.jsonl").read_bytes())
    run = ok("POST", account + "/runs")
    matches = ok("GET", account + "/matches")["data"]
    suggestions = ok("GET", account + "/suggestions")["data"]
    open_lines = ok("GET", account + "/open-items?side=bank")["statement_lines"]
    aliases = ok("GET", account + "/aliases")["data"]
    portal_link = ok("POST", "/v1/portal/links", {"customer": "cust_1"})
    return {
        "/v1/webhooks/": endpoint["id"],
        "/v1/events/": event["id"],
        "/v1/deliveries/": deliveries[0]["id"] if deliveries else "msg_none",
        "/v1/notifications/silences/": silence["id"],
        "/v1/notifications/": notification["id"],
        "/v1/admin/tokens/": token["id"],
        "/v1/admin/jobs/": "core.metrics",
        "/v1/portal/links/": portal_link["id"],
        "{tenant}": FUZZ_TENANT,
        "{account}": "main-eur",
        "{run}": run["id"],
        "{match}": matches[0]["id"] if matches else "m_none",
        "{suggestion}": suggestions[0]["id"] if suggestions else "s_none",
        "{item}": str(open_lines[0]["id"]) if open_lines else "1",
        "{alias}": str(aliases[0]["id"]) if aliases else "1",
    }


def known_path_parameters(path: str, known: dict[str, str]) -> dict[str, str]:
    """The seeded object for each path parameter of ``path`` (``{id}`` by the path before it)."""
    values = {}
    for name in ("tenant", "account", "run", "match", "suggestion", "item", "alias"):
        if "{" + name + "}" in path:
            values[name] = known["{" + name + "}"]
    if "{id}" in path:
        before = path[: path.index("{id}")]
        values["id"] = next(v for k, v in sorted(known.items(), key=lambda kv: -len(kv[0])) if before.startswith(k))
    return values


CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]


def test_no_input_yields_a_server_error(sandboxed):
    """Every operation of the document, positive and negative examples, a fixed seed."""
    api = schemathesis.openapi.from_url(sandboxed.url + "/v1/openapi.json")
    headers = {"Authorization": f"Bearer {ADMIN_TOKEN}", "Tierd-Tenant": FUZZ_TENANT}
    failures, operations, calls = [], 0, []
    for result in api.get_all_operations():
        operation = result.ok()
        operations += 1

        strategies = [operation.as_strategy(mode) for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE)]
        if "{" in operation.path:  # half the examples reach a real object
            known = known_path_parameters(operation.path, sandboxed.known)
            strategies += [
                operation.as_strategy(mode, path_parameters=known)
                for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE)
            ]

        @given(st.one_of(*strategies))
        @settings(
            max_examples=EXAMPLES,
            derandomize=True,
            deadline=None,
            database=None,
            suppress_health_check=list(HealthCheck),
            phases=[Phase.explicit, Phase.generate],
        )
        def fuzz(case):
            calls.append(case.operation.label)
            case.call_and_validate(headers=headers, checks=CHECKS, timeout=30)

        try:
            fuzz()
        except (Exception, BaseExceptionGroup) as exc:  # one operation's failure must not hide the others'
            failures.append(f"{operation.label}: {exc!r}"[:3000])
    assert operations >= 30, "the document lost its operations"
    print(f"{operations} operations, {len(calls)} requests")
    assert not failures, "\n\n".join(failures) + "\n" + sandboxed.logs()[-3000:]


def test_after_the_fuzzing_another_tenant_still_works(sandboxed):
    """What the fuzzer did to its tenant changed nothing for the bystander."""
    status, token = sandboxed.request("POST", f"/v1/admin/tenants/{BYSTANDER}/tokens", {})
    assert status == 201, token
    token = token["token"]
    status, endpoint = sandboxed.request(
        "POST",
        "/v1/webhooks",
        {"url": f"http://127.0.0.1:{RECEIVER_PORT}/hook", "event_types": ["order.*"]},
        token=token,
    )
    assert status == 201, endpoint
    status, event = sandboxed.request("POST", "/v1/events", {"type": "order.placed", "data": {"n": 1}}, token=token)
    assert status == 202, event
    status, page = sandboxed.request("GET", "/v1/events", token=token)
    assert status == 200 and event["id"] in [e["id"] for e in page["data"]]
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        lines = sandboxed.received.read_bytes().splitlines() if sandboxed.received.exists() else []
        mine = [json.loads(line) for line in lines if b'"order.placed"' in line]
        if mine:
            assert mine[0]["data"] == {"n": 1}
            break
        time.sleep(0.1)
    else:
        raise AssertionError(f"the bystander's webhook never arrived:\n{sandboxed.logs()[-3000:]}")
    assert "Traceback" not in sandboxed.logs(), sandboxed.logs()[-5000:]
