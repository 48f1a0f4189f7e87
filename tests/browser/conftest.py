"""Browser tests of the web console and the webhooks portal: a real Chromium.

Debian's ``chromium`` (``/usr/bin/chromium``) driven by the ``playwright``
package, headless, with a fresh profile for each test session; nothing is
installed at run time (never ``playwright install``). Where either is absent
the tests skip and say which one is missing (``.ci/run`` installs Debian's
package).

Fixtures: ``browser`` (one Chromium for this folder's tests), ``page`` (a fresh
context per test: its own cookies), ``daemon`` (``tierd run`` on a free port,
webhooks allowed to deliver to loopback over HTTP), ``receiver`` (a threaded
HTTP server answering the status the test sets, recording what it got).

The tests use Playwright's sync API: it runs its own loop, so the tests are
plain functions and the receiver lives in a thread of its own.
"""

from __future__ import annotations

import importlib.util
import json
import shutil
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from tierd.testing import ADMIN_TOKEN, DaemonProcess

CHROMIUM = Path("/usr/bin/chromium")
#: What the project's DESIGN asks of a headless Chromium in tests: nothing
#: reaches the network but the pages under test.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
#: Short retry schedule and loopback receivers allowed (as the webhooks tests run).
WEBHOOKS = {
    "retry_schedule": ["0s", "1s", "1s"],
    "allow_http": True,
    "allow_destinations": ["127.0.0.1/32"],
    "timeout": "2s",
}


def missing() -> str | None:
    """Why the browser tests cannot run here, or None."""
    if importlib.util.find_spec("playwright") is None:
        return "the playwright package is not installed (pip install -e '.[test]')"
    if not CHROMIUM.exists():
        return f"{CHROMIUM} is absent (apt-get install chromium; .ci/run does)"
    return None


@pytest.fixture(scope="package")
def browser() -> Iterator[Any]:
    """One headless Chromium for these tests, with a fresh profile of its own
    (closed once they are done, before the rest of the suite runs)."""
    reason = missing()
    if reason:
        pytest.skip(f"browser tests skipped: {reason}")
    from playwright.sync_api import sync_playwright

    profile = tempfile.mkdtemp(prefix="tierd-chromium-")
    with sync_playwright() as pw:
        # A persistent context on a fresh directory: no state from any earlier run.
        # Each test then opens its own context (its own cookies) in the browser.
        context = pw.chromium.launch_persistent_context(
            profile, executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS
        )
        try:
            assert context.browser is not None
            yield context.browser
        finally:
            context.close()
            shutil.rmtree(profile, ignore_errors=True)


class User:
    """One person's browser: a context of its own (its own cookies) and a page.

    Whatever the browser refused or failed to run while the test went (a
    Content-Security-Policy violation, such as an inline style or script, or
    an uncaught JavaScript error) is kept in ``problems``: a page that needs
    them looks broken to its user, so the test fails on them."""

    def __init__(self, browser: Any) -> None:
        self.context = browser.new_context(viewport={"width": 1280, "height": 900})
        self.context.set_default_timeout(10_000)
        self.page = self.context.new_page()
        self.problems: list[str] = []
        # A form marked data-confirm asks through window.confirm: the user says yes.
        self.page.on("dialog", lambda dialog: dialog.accept())
        self.page.on("console", self._console)
        self.page.on("pageerror", lambda error: self.problems.append(f"{self.page.url}: script error: {error}"))

    def _console(self, message: Any) -> None:
        if message.type == "error" and "Content Security Policy" in message.text:
            self.problems.append(f"{self.page.url}: {message.text}")

    def close(self) -> None:
        self.context.close()
        assert not self.problems, "the browser refused parts of the pages:\n" + "\n".join(self.problems)


@pytest.fixture
def page(browser) -> Iterator[Any]:
    """A page in a context of its own (a separate cookie jar): one user."""
    user = User(browser)
    yield user.page
    user.close()


@pytest.fixture
def new_page(browser) -> Iterator[Callable[[], Any]]:
    """Factory of further pages, each a separate user (a context of its own)."""
    users: list[User] = []

    def factory() -> Any:
        users.append(User(browser))
        return users[-1].page

    yield factory
    for user in users:
        user.close()


@pytest.fixture
def daemon(tmp_path) -> Iterator[DaemonProcess]:
    """``tierd run`` with the console on, delivering webhooks to loopback."""
    process = DaemonProcess(tmp_path, {"webhooks": WEBHOOKS})
    process.start()
    yield process
    process.close()


class ThreadedReceiver:
    """A webhook receiver in a thread: answers ``status`` (settable at any
    time) and records each request: path, headers, body, the status answered."""

    def __init__(self) -> None:
        self.status = 200
        self.requests: list[dict] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                outer.requests.append(
                    {"path": self.path, "headers": dict(self.headers), "body": body, "status": outer.status}
                )
                self.send_response(outer.status)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, *args: Any) -> None:  # quiet: pytest shows failures, not traffic
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def answered(self, status: int) -> list[str]:
        """The deliveries (their ``webhook-id``) of the requests answered with ``status``."""
        return [r["headers"].get("webhook-id", "") for r in self.requests if r["status"] == status]

    def bodies(self) -> list[dict]:
        return [json.loads(r["body"]) for r in self.requests]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver() -> Iterator[ThreadedReceiver]:
    one = ThreadedReceiver()
    yield one
    one.close()


def sign_in(page: Any, daemon: DaemonProcess, token: str = ADMIN_TOKEN) -> None:
    """Sign in through the form, as a person does."""
    page.goto(daemon.url + "/ui/login")
    page.fill("input[name=token]", token)
    with page.expect_navigation():
        page.click("button:has-text('Sign in')")
    # Say what the browser was shown if the form did not lead to the overview.
    assert page.url == daemon.url + "/ui/", f"sign-in ended at {page.url}: {page.inner_text('body')[:500]}"


def wait_until(predicate: Callable[[], Any], timeout: float = 10.0, what: str = "condition") -> Any:
    """Poll ``predicate`` until truthy (return it) or fail naming ``what``."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g}s waiting for {what}")
        time.sleep(0.1)


def api(daemon, method, path, body=None, token=None, tenant=None, expect=(200, 201, 202)) -> Any:
    """An API call that must succeed; its JSON answer."""
    status, answer = daemon.request(method, path, body, token=token, tenant=tenant)
    assert status in expect, (status, answer)
    return answer


def publish(daemon, token, type_="invoice.paid", **data) -> Any:
    """Publish an event as the tenant of ``token``."""
    return api(daemon, "POST", "/v1/events", {"type": type_, "data": data}, token=token)


def reload_until(page: Any, check: Callable[[], Any], what: str, timeout: float = 15.0) -> Any:
    """Reload the page until ``check()`` holds, as a person waiting would."""

    def again():
        page.reload()
        return check()

    return check() or wait_until(again, timeout, what)
