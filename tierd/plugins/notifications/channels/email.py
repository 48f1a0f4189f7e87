"""Email through SMTP (aiosmtplib): STARTTLS or implicit TLS, auth, HTML and
text parts, attachments.

SMTP replies decide what happens next: a 4xx reply (greylisting, mailbox
busy, too many connections) is transient and retried; a 5xx reply (unknown
recipient, authentication refused, message rejected) is permanent.
"""

from __future__ import annotations

import ssl
from email.message import EmailMessage
from email.utils import make_msgid

import aiosmtplib

from tierd.core.http import tls_context
from tierd.core.registry import Channel, Message, SendResult
from tierd.core.schema import Bool, CaFile, Duration, Int, List, Obj, Str

from ..templates import html_from_text


def _smtp_outcome(code: int, text: str) -> SendResult:
    detail = f"SMTP {code}: {text}".strip()
    if 400 <= code < 500:
        return SendResult.retry(detail)
    return SendResult.failed(detail)


class EmailChannel(Channel):
    """Send a message as an email to a fixed list of recipients."""

    type_name = "email"
    schema = Obj(
        {
            "host": Str(required=True, doc="SMTP server host name"),
            "port": Int(default=0, min=0, max=65535, doc="0: 465 with tls, 587 with starttls, else 25"),
            "starttls": Bool(default=False, doc="Upgrade the connection with STARTTLS (port 587)"),
            "tls": Bool(default=False, doc="Implicit TLS from the first byte (port 465)"),
            "username": Str(default="", doc="SMTP AUTH user; empty: no authentication"),
            "password": Str(default="", doc="SMTP AUTH password; use ${VAR} or a file"),
            "from": Str(required=True, doc="Sender address"),
            "to": List(Str(), required=True, doc="Recipient addresses"),
            "cc": List(Str(), default=[], doc="Copy recipients"),
            "timeout": Duration(default="30s", doc="Per attempt"),
            "verify_tls": Bool(default=True, doc="Check the server certificate"),
            "ca_file": CaFile(
                default="", doc="Extra CA bundle (PEM) for a private mail server, trusted besides the system's"
            ),
            "subject_prefix": Str(default="", doc="Prepended to every subject, e.g. [tierd]"),
        }
    )

    def build(self, message: Message) -> EmailMessage:
        """The MIME message: text part, optional HTML alternative, attachments."""
        cfg = self.config
        mail = EmailMessage()
        mail["From"] = cfg["from"]
        mail["To"] = ", ".join(cfg["to"])
        if cfg.get("cc"):
            mail["Cc"] = ", ".join(cfg["cc"])
        mail["Subject"] = (cfg.get("subject_prefix", "") + " " + message.subject).strip()
        domain = cfg["from"].rpartition("@")[2] or None
        mail["Message-ID"] = make_msgid(idstring=message.id or None, domain=domain)
        if message.id:
            # Lets mail filters and people correlate with `tierd notify history`.
            mail["X-Tierd-Notification"] = message.id
        mail.set_content(message.body)
        # Every mail gets an HTML part: the template's, or the text made readable.
        mail.add_alternative(message.html or html_from_text(message.subject, message.body), subtype="html")
        for att in message.attachments:
            maintype, _, subtype = att.media_type.partition("/")
            mail.add_attachment(
                att.content, maintype=maintype, subtype=subtype or "octet-stream", filename=att.filename
            )
        return mail

    def _tls_context(self) -> ssl.SSLContext:
        ctx = tls_context(self.config.get("ca_file") or None)
        if not self.config.get("verify_tls", True):
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
        return ctx

    async def send(self, message: Message) -> SendResult:
        cfg = self.config
        tls, starttls = cfg.get("tls", False), cfg.get("starttls", False)
        port = cfg.get("port") or (465 if tls else 587 if starttls else 25)
        recipients = list(cfg["to"]) + list(cfg.get("cc") or [])
        try:
            refused, _reply = await aiosmtplib.send(
                self.build(message),
                hostname=cfg["host"],
                port=port,
                username=cfg.get("username") or None,
                password=cfg.get("password") or None,
                use_tls=tls,
                start_tls=starttls if starttls else False,
                tls_context=self._tls_context() if (tls or starttls) else None,
                timeout=cfg.get("timeout", 30.0),
                recipients=recipients,
            )
        except aiosmtplib.SMTPRecipientsRefused as exc:
            # Every recipient refused: the worst reply decides (one 5xx is permanent).
            worst = max(exc.recipients, key=lambda r: r.code)
            return _smtp_outcome(worst.code, f"{worst.recipient}: {worst.message}")
        except aiosmtplib.SMTPResponseException as exc:
            return _smtp_outcome(exc.code, exc.message)
        except (aiosmtplib.SMTPException, OSError) as exc:
            # Timeouts, refused connections, TLS handshakes that failed: try later.
            return SendResult.retry(f"{type(exc).__name__}: {exc}")
        detail = f"accepted by {cfg['host']}:{port} for {len(recipients) - len(refused)} recipient(s)"
        if refused:
            # Some recipients got it: retrying would send them a duplicate. Say who did not.
            detail += "; refused: " + ", ".join(f"{rcpt} ({r.code} {r.message})" for rcpt, r in refused.items())
        return SendResult.delivered(detail)
