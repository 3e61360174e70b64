"""The e-mail channel against a real SMTP server (aiosmtpd) on loopback: plain, STARTTLS,
implicit TLS, AUTH, multipart content, header safety, and how SMTP replies map to retry."""

from __future__ import annotations

import email
import email.policy
import ssl
from collections.abc import Iterator
from dataclasses import dataclass, field
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest
import trustme
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session

from appliance.notify.channels.base import DeliveryError
from tests.conftest import free_port
from tests.notify_peers import make_channel, message


@dataclass
class Mailbox:
    """The SMTP server's handler: keeps each accepted message, refuses chosen recipients."""

    refuse: dict[str, str] = field(default_factory=dict)
    received: list[tuple[Envelope, EmailMessage]] = field(default_factory=list)
    logins: list[str] = field(default_factory=list)

    async def handle_RCPT(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: list[str]
    ) -> str:
        if address in self.refuse:
            return self.refuse[address]
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        assert isinstance(envelope.content, bytes)
        msg = email.message_from_bytes(envelope.content, policy=email.policy.default)
        assert isinstance(msg, EmailMessage)
        self.received.append((envelope, msg))
        return "250 Message accepted"

    def authenticate(
        self, server: SMTP, session: Session, envelope: Envelope, mechanism: str, data: Any
    ) -> AuthResult:
        ok = isinstance(data, LoginPassword) and (data.login, data.password) == (
            b"sem",
            b"s3cret",
        )
        if ok:
            self.logins.append(mechanism)
        return AuthResult(success=ok, handled=False)


@dataclass
class Smtp:
    mailbox: Mailbox
    port: int
    ca_file: Path


@pytest.fixture
def tls_files(tmp_path: Path) -> tuple[Path, ssl.SSLContext]:
    ca = trustme.CA()
    ca_file = tmp_path / "smtp-ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1", "localhost").configure_cert(ctx)
    return ca_file, ctx


def _server(mode: str, tls_files: tuple[Path, ssl.SSLContext], **kw: Any) -> Iterator[Smtp]:
    ca_file, ctx = tls_files
    mailbox = Mailbox()
    port = free_port()
    options: dict[str, Any] = {"authenticator": mailbox.authenticate, **kw}
    if mode == "starttls":
        options |= {"tls_context": ctx, "require_starttls": True}
    if mode == "implicit":
        options |= {"ssl_context": ctx}
    controller = Controller(mailbox, hostname="127.0.0.1", port=port, **options)
    controller.start()
    try:
        yield Smtp(mailbox, port, ca_file)
    finally:
        controller.stop()


@pytest.fixture
def plain_smtp(tls_files: tuple[Path, ssl.SSLContext]) -> Iterator[Smtp]:
    yield from _server("none", tls_files)


@pytest.fixture
def starttls_smtp(tls_files: tuple[Path, ssl.SSLContext]) -> Iterator[Smtp]:
    yield from _server("starttls", tls_files, auth_required=True)


@pytest.fixture
def implicit_smtp(tls_files: tuple[Path, ssl.SSLContext]) -> Iterator[Smtp]:
    yield from _server("implicit", tls_files)


def mail(smtp: Smtp, **kw: Any) -> dict[str, Any]:
    return {
        "name": "ops-mail",
        "type": "email",
        "host": "127.0.0.1",
        "port": smtp.port,
        "tls": "none",
        "from": "sem@site.example",
        "to": ["noc@site.example", "oncall@site.example"],
        "timeout": 10,
        **kw,
    }


async def test_plain_smtp_delivers_text_and_html_to_every_recipient(plain_smtp: Smtp) -> None:
    ch = make_channel(mail(plain_smtp))
    await ch.send(
        message(
            html="<p>12 failed logins</p>", ack_url="https://sem.example/ack/x", severity="critical"
        )
    )
    ((envelope, msg),) = plain_smtp.mailbox.received
    assert envelope.mail_from == "sem@site.example"
    assert envelope.rcpt_tos == ["noc@site.example", "oncall@site.example"]
    assert msg["Subject"] == "SSH brute force from 203.0.113.7"
    assert msg["Auto-Submitted"] == "auto-generated" and msg["X-Priority"] == "1"
    assert msg["X-SEM-Incidents"] == "inc-1"
    assert msg.get_content_type() == "multipart/alternative"
    plain = msg.get_body(("plain",))
    html = msg.get_body(("html",))
    assert plain is not None and html is not None
    assert "12 failed logins for root" in plain.get_content()
    assert "Acknowledge: https://sem.example/ack/x" in plain.get_content()
    assert "<p>12 failed logins</p>" in html.get_content()


async def test_event_data_cannot_inject_headers(plain_smtp: Smtp) -> None:
    ch = make_channel(mail(plain_smtp))
    await ch.send(message(subject="hi\r\nBcc: victim@evil.example\r\n\r\nbody", text="x\x1b[2J"))
    ((envelope, msg),) = plain_smtp.mailbox.received
    assert msg["Bcc"] is None
    assert "victim@evil.example" not in envelope.rcpt_tos
    assert msg["Subject"] == "hi Bcc: victim@evil.example body"
    body = msg.get_body(("plain",))
    assert body is not None and "\\x1b[2J" in body.get_content()


async def test_starttls_with_auth_verifies_the_server_and_logs_in(starttls_smtp: Smtp) -> None:
    ch = make_channel(
        mail(
            starttls_smtp,
            tls="starttls",
            ca_file=str(starttls_smtp.ca_file),
            username="sem",
            password="s3cret",
        )
    )
    await ch.send(message())
    assert len(starttls_smtp.mailbox.received) == 1
    assert starttls_smtp.mailbox.logins


async def test_wrong_password_is_a_permanent_failure(starttls_smtp: Smtp) -> None:
    ch = make_channel(
        mail(
            starttls_smtp,
            tls="starttls",
            ca_file=str(starttls_smtp.ca_file),
            username="sem",
            password="wrong",
        )
    )
    with pytest.raises(DeliveryError, match="535") as err:
        await ch.send(message())
    assert not err.value.retryable
    assert "wrong" not in str(err.value)
    assert starttls_smtp.mailbox.received == []


async def test_starttls_refuses_a_server_certificate_it_cannot_verify(starttls_smtp: Smtp) -> None:
    ch = make_channel(
        mail(starttls_smtp, tls="starttls", username="sem", password="s3cret")
    )  # no ca_file: the system store does not know the test CA
    with pytest.raises(DeliveryError, match="certificate") as err:
        await ch.send(message())
    assert err.value.retryable
    assert starttls_smtp.mailbox.received == []


async def test_starttls_required_but_not_offered_is_refused(plain_smtp: Smtp) -> None:
    ch = make_channel(mail(plain_smtp, tls="starttls", ca_file=str(plain_smtp.ca_file)))
    with pytest.raises(DeliveryError, match="does not offer STARTTLS") as err:
        await ch.send(message())
    assert not err.value.retryable
    assert plain_smtp.mailbox.received == []


async def test_implicit_tls_delivers(implicit_smtp: Smtp) -> None:
    ch = make_channel(mail(implicit_smtp, tls="implicit", ca_file=str(implicit_smtp.ca_file)))
    await ch.send(message())
    assert len(implicit_smtp.mailbox.received) == 1


async def test_every_recipient_refused_permanently_is_not_retried(plain_smtp: Smtp) -> None:
    plain_smtp.mailbox.refuse = {
        "noc@site.example": "550 no such user",
        "oncall@site.example": "550 no such user",
    }
    ch = make_channel(mail(plain_smtp))
    with pytest.raises(DeliveryError, match="550") as err:
        await ch.send(message())
    assert not err.value.retryable


async def test_a_greylisting_server_is_retried(plain_smtp: Smtp) -> None:
    plain_smtp.mailbox.refuse = {
        "noc@site.example": "451 greylisted, try later",
        "oncall@site.example": "451 greylisted, try later",
    }
    ch = make_channel(mail(plain_smtp))
    with pytest.raises(DeliveryError, match="451") as err:
        await ch.send(message())
    assert err.value.retryable


async def test_no_server_listening_is_retried() -> None:
    port = free_port()
    ch = make_channel(
        {
            "name": "m",
            "type": "email",
            "host": "127.0.0.1",
            "port": port,
            "tls": "none",
            "from": "a@b.example",
            "to": ["c@d.example"],
        }
    )
    with pytest.raises(DeliveryError, match="ConnectionRefused") as err:
        await ch.send(message())
    assert err.value.retryable
