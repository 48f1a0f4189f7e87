"""Test support for notifications: a real SMTP server (aiosmtpd) with
STARTTLS, implicit TLS and AUTH, whose replies a test can script.

Not a conftest (tests have no packages, and one conftest name is enough):
test modules import from it directly.
"""

from __future__ import annotations

import email
import email.policy
import ssl
import threading

import trustme
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword
from conftest import free_port

USER, PASSWORD = "tierd", "s3cret-pass"


class Certs:
    """A throwaway CA and a server certificate for 127.0.0.1/localhost."""

    def __init__(self, tmp_path):
        self.ca = trustme.CA()
        self.cert = self.ca.issue_cert("127.0.0.1", "localhost")
        self.ca_file = tmp_path / "ca.pem"
        self.ca.cert_pem.write_to_path(str(self.ca_file))

    def server_context(self) -> ssl.SSLContext:
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self.cert.configure_cert(ctx)
        return ctx


class MailHandler:
    """Records accepted messages; ``rcpt_replies`` scripts RCPT answers (popped in order)."""

    def __init__(self):
        self.messages: list[email.message.EmailMessage] = []
        self.envelopes = []
        self.rcpt_replies: list[str] = []
        self.auth_logins: list[str] = []
        self.arrived = threading.Event()

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        if self.rcpt_replies:
            return self.rcpt_replies.pop(0)
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):
        self.envelopes.append(envelope)
        self.messages.append(email.message_from_bytes(envelope.original_content, policy=email.policy.default))
        self.arrived.set()
        return "250 Message accepted for delivery"


class SmtpServer:
    """aiosmtpd in its own thread. ``mode``: "starttls" (AUTH required after
    STARTTLS), "tls" (implicit TLS) or "plain"."""

    def __init__(self, certs: Certs | None, mode: str = "starttls"):
        self.handler = MailHandler()
        self.port = free_port()
        kwargs = {}
        if mode == "starttls":
            kwargs = {
                "tls_context": certs.server_context(),
                "require_starttls": True,
                "authenticator": self._authenticate,
                "auth_required": True,
                "auth_require_tls": True,
            }
        elif mode == "tls":
            kwargs = {
                "ssl_context": certs.server_context(),
                "authenticator": self._authenticate,
                "auth_required": True,
                "auth_require_tls": False,
            }
        self.controller = Controller(
            self.handler, hostname="127.0.0.1", port=self.port, server_hostname="127.0.0.1", **kwargs
        )
        self.mode = mode

    def _authenticate(self, server, session, envelope, mechanism, auth_data):
        ok = (
            isinstance(auth_data, LoginPassword)
            and auth_data.login.decode() == USER
            and auth_data.password.decode() == PASSWORD
        )
        if ok:
            self.handler.auth_logins.append(auth_data.login.decode())
        return AuthResult(success=ok, handled=False)

    def start(self) -> SmtpServer:
        self.controller.start()
        return self

    def stop(self) -> None:
        self.controller.stop()

    @property
    def messages(self):
        return self.handler.messages

    def channel_config(self, ca_file=None, **extra) -> dict:
        cfg = {
            "type": "email",
            "host": "127.0.0.1",
            "port": self.port,
            "from": "tierd@example.com",
            "to": ["ops@example.com"],
        }
        if self.mode == "starttls":
            cfg.update(starttls=True, username=USER, password=PASSWORD, ca_file=str(ca_file))
        elif self.mode == "tls":
            cfg.update(tls=True, username=USER, password=PASSWORD, ca_file=str(ca_file))
        return cfg | extra
