"""The email channel against a real aiosmtpd server: STARTTLS, TLS, AUTH,
HTML and text parts, attachments, 4xx retried and 5xx permanent."""

import pytest
from notify_helpers import Certs, SmtpServer

from tierd.core.registry import Attachment, Message
from tierd.core.schema import validate
from tierd.plugins.notifications.channels import EmailChannel

MSG = Message(
    subject="Webhook endpoint disabled",
    body="Endpoint we_1 was disabled.",
    html="<p>Endpoint <b>we_1</b> was disabled.</p>",
    severity="warning",
    id="ntf_mail1",
    attachments=[Attachment("report.csv", b"a,b\n1,2\n", "text/csv")],
)


@pytest.fixture
def certs(tmp_path):
    return Certs(tmp_path)


@pytest.fixture
def smtp(certs):
    servers = []

    def start(mode="starttls"):
        server = SmtpServer(certs, mode).start()
        servers.append(server)
        return server

    yield start
    for s in servers:
        s.stop()


def channel(config):
    clean, errors = validate(EmailChannel.schema, {k: v for k, v in config.items() if k != "type"})
    assert not errors, errors
    return EmailChannel("ops-mail", clean)


async def test_starttls_auth_html_text_and_attachment(smtp, certs):
    server = smtp("starttls")
    result = await channel(
        server.channel_config(certs.ca_file, cc=["boss@example.com"], subject_prefix="[tierd]")
    ).send(MSG)
    assert result.outcome == "delivered", result.detail
    assert server.handler.auth_logins == ["tierd"]
    (mail,) = server.messages
    assert mail["Subject"] == "[tierd] Webhook endpoint disabled"
    assert mail["From"] == "tierd@example.com" and mail["To"] == "ops@example.com"
    assert mail["Cc"] == "boss@example.com" and mail["X-Tierd-Notification"] == "ntf_mail1"
    assert sorted(server.handler.envelopes[0].rcpt_tos) == ["boss@example.com", "ops@example.com"]
    assert mail.get_body(("plain",)).get_content().strip() == "Endpoint we_1 was disabled."
    assert "<b>we_1</b>" in mail.get_body(("html",)).get_content()
    (att,) = list(mail.iter_attachments())
    assert att.get_filename() == "report.csv" and att.get_content_type() == "text/csv"
    assert att.get_content() in (b"a,b\n1,2\n", "a,b\n1,2\n")


@pytest.mark.filterwarnings("ignore:Requiring AUTH while not requiring TLS")
async def test_implicit_tls(smtp, certs):
    server = smtp("tls")
    result = await channel(server.channel_config(certs.ca_file)).send(MSG)
    assert result.outcome == "delivered", result.detail
    assert len(server.messages) == 1


async def test_untrusted_certificate_is_retried_not_sent(smtp):
    server = smtp("starttls")
    cfg = server.channel_config("/nonexistent") | {"ca_file": ""}  # system CAs do not know our test CA
    result = await channel(cfg).send(MSG)
    assert result.outcome == "retry" and server.messages == []


async def test_wrong_password_is_permanent(smtp, certs):
    server = smtp("starttls")
    result = await channel(server.channel_config(certs.ca_file, password="wrong")).send(MSG)
    assert result.outcome == "failed" and "SMTP 535" in result.detail


async def test_4xx_is_transient_then_success(smtp, certs):
    server = smtp("starttls")
    server.handler.rcpt_replies = ["451 4.7.1 Greylisted, try again later"]
    ch = channel(server.channel_config(certs.ca_file))
    first = await ch.send(MSG)
    assert first.outcome == "retry" and "451" in first.detail
    second = await ch.send(MSG)
    assert second.outcome == "delivered" and len(server.messages) == 1


async def test_5xx_is_permanent(smtp, certs):
    server = smtp("starttls")
    server.handler.rcpt_replies = ["550 5.1.1 No such user"]
    result = await channel(server.channel_config(certs.ca_file)).send(MSG)
    assert result.outcome == "failed" and "550" in result.detail and "No such user" in result.detail


async def test_connection_refused_is_transient():
    from conftest import free_port

    result = await channel(
        {"host": "127.0.0.1", "port": free_port(), "from": "a@example.com", "to": ["b@example.com"], "timeout": "2s"}
    ).send(MSG)
    assert result.outcome == "retry"


def test_schema_requires_host_from_to():
    _, errors = validate(EmailChannel.schema, {"port": 25})
    assert {e.path for e in errors} == {("host",), ("from",), ("to",)}


async def test_some_recipients_refused_is_delivered_with_detail(smtp, certs):
    server = smtp("starttls")
    server.handler.rcpt_replies = ["550 5.1.1 No such user"]  # the first RCPT only
    result = await channel(server.channel_config(certs.ca_file, to=["gone@example.com", "ops@example.com"])).send(MSG)
    assert result.outcome == "delivered"
    assert "for 1 recipient(s)" in result.detail and "refused: gone@example.com (550" in result.detail
    assert server.handler.envelopes[0].rcpt_tos == ["ops@example.com"]
