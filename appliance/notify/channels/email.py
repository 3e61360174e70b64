"""E-mail over SMTP: plain text and HTML alternatives, STARTTLS or implicit TLS, AUTH.

smtplib runs in a worker thread: it is the standard library's complete client (STARTTLS,
AUTH mechanisms, SMTPUTF8) and one send per notification is no load for a thread, so no
async SMTP dependency is needed. TLS always verifies the server's certificate and name
(``ca_file`` for a private CA); AUTH is refused by the config without TLS.

Header safety: the subject is one line with controls escaped, and ``email.message`` refuses
CR/LF in any header besides; addresses come from the config only, never from event data.
Replies 5xx are permanent (a refused recipient, a failed login), 4xx and lost connections
transient.
"""

from __future__ import annotations

import asyncio
import email.utils
import smtplib
import ssl
from email.message import EmailMessage
from typing import Any

from appliance.notify.channels.base import DeliveryError, Message
from appliance.notify.channels.core import ChannelBase
from appliance.notify.channels.http import client_ssl_context
from appliance.notify.channels.text import clean_body, clean_line

DEFAULT_PORT = {"none": 25, "starttls": 587, "implicit": 465}
BODY_LIMIT = 100_000


def build_message(message: Message, sender: str, to: list[str], limit: int) -> EmailMessage:
    msg = EmailMessage()
    msg["Subject"] = clean_line(message.subject, 250)
    msg["From"] = sender
    msg["To"] = ", ".join(to)
    msg["Date"] = email.utils.formatdate(localtime=False, usegmt=True)
    msg["Message-ID"] = email.utils.make_msgid(domain=sender.rpartition("@")[2] or None)
    msg["Auto-Submitted"] = "auto-generated"  # RFC 3834: no vacation replies to alerts
    if message.severity in ("critical", "high"):
        msg["X-Priority"] = "1"
    if message.incident_ids:
        msg["X-SEM-Incidents"] = clean_line(" ".join(message.incident_ids), 900)
    text = clean_body(message.text, limit)
    if message.ack_url:
        text += f"\n\nAcknowledge: {message.ack_url}\n"
    msg.set_content(text)
    if message.html:
        msg.add_alternative(clean_body(message.html, limit * 2), subtype="html")
    for filename, mime, data in message.attachments:
        maintype, _, subtype = mime.partition("/")
        msg.add_attachment(
            data,
            maintype=maintype or "application",
            subtype=subtype or "octet-stream",
            filename=clean_line(filename, 200),
        )
    return msg


class EmailChannel(ChannelBase):
    type = "email"

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        cfg = self.cfg
        self.password = self.secret("password") if cfg.username else ""
        self.port = cfg.port or DEFAULT_PORT[cfg.tls]
        self.ssl_context = client_ssl_context(cfg, self.base_dir) if cfg.tls != "none" else None

    async def _deliver(self, message: Message) -> None:
        cfg = self.cfg
        to = self.recipients(message)
        msg = build_message(message, cfg.from_, to, cfg.max_length or BODY_LIMIT)
        await asyncio.to_thread(self._send_blocking, msg, to)

    def _connect(self) -> smtplib.SMTP:
        cfg = self.cfg
        if cfg.tls == "implicit":
            return smtplib.SMTP_SSL(
                cfg.host, self.port, timeout=cfg.timeout, context=self.ssl_context
            )
        smtp = smtplib.SMTP(cfg.host, self.port, timeout=cfg.timeout)
        try:
            if cfg.tls == "starttls":
                smtp.ehlo()
                if not smtp.has_extn("starttls"):
                    raise DeliveryError(
                        f"{cfg.host}:{self.port} does not offer STARTTLS (tls = 'starttls')",
                        retryable=False,
                    )
                smtp.starttls(context=self.ssl_context)
                smtp.ehlo()
        except BaseException:
            smtp.close()
            raise
        return smtp

    def _send_blocking(self, msg: EmailMessage, to: list[str]) -> None:
        cfg = self.cfg
        where = f"smtp {cfg.host}:{self.port}"
        try:
            with self._connect() as smtp:
                if cfg.username:
                    smtp.login(cfg.username, self.password)
                refused = smtp.send_message(msg, from_addr=cfg.from_, to_addrs=to)
        except smtplib.SMTPRecipientsRefused as exc:
            codes = [code for code, _ in exc.recipients.values()]
            raise DeliveryError(
                f"{where}: every recipient refused: {_refusals(exc.recipients)}",
                retryable=any(400 <= c < 500 for c in codes),
            ) from None
        except smtplib.SMTPResponseException as exc:
            err = exc.smtp_error
            text = err.decode("utf-8", "replace") if isinstance(err, bytes) else str(err)
            raise DeliveryError(
                f"{where}: {exc.smtp_code} {text}", retryable=not 500 <= exc.smtp_code < 600
            ) from None
        except ssl.SSLCertVerificationError as exc:
            raise DeliveryError(
                f"{where}: TLS certificate not trusted: {exc.verify_message}"
            ) from None
        except TimeoutError:
            raise DeliveryError(f"{where}: no answer within {cfg.timeout:g}s") from None
        except (smtplib.SMTPException, OSError) as exc:
            raise DeliveryError(f"{where}: {type(exc).__name__}: {exc}") from None
        if refused:
            # Some recipients took it; repeating would duplicate theirs, so it is not retried.
            raise DeliveryError(
                f"{where}: recipients refused: {_refusals(refused)}", retryable=False
            )


def _refusals(recipients: dict[str, tuple[int, bytes]]) -> str:
    return ", ".join(
        f"{addr} ({code} {msg.decode('utf-8', 'replace')})"
        for addr, (code, msg) in recipients.items()
    )
