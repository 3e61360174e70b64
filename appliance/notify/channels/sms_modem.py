"""SMS through a GSM/LTE modem on a serial port: it still reaches a person when the site's
internet link is down.

Each send holds the port: open and initialise once (``ATE0``, ``AT+CMEE=1``, the SIM PIN,
``AT+CMGF=1`` text mode), then check registration (``AT+CREG?``: home or roaming) and signal
(``AT+CSQ``, exported as ``appliance_notify_modem_signal_dbm``) before ``AT+CMGS`` for every
recipient and part. Any I/O failure or timeout closes the port, so the next attempt starts
from a fresh initialisation.

Long texts go as numbered stand-alone parts in text mode (``(1/3) ...``), not as
concatenated PDUs with a UDH: text mode is what every modem implements the same way, the
parts read fine on any phone even when one arrives late, and no PDU encoder is needed. Text
that is plain ASCII within the GSM alphabet is sent in the IRA character set (160 per part);
anything else in UCS-2 (70 per part). ``max_segments`` caps the parts; the rest is cut.

A wrong PIN is never tried twice (three wrong tries lock the SIM behind its PUK): the
channel refuses to send until the configuration is reloaded.

Replies: every ``reply_poll_interval`` seconds (when the engine set ``on_reply``) the stored
received messages are listed (``AT+CMGL="ALL"``), handed to ``on_reply(sender, text)`` and
deleted (``AT+CMGD``) once the handler returned; a handler that fails leaves the message
for the next poll.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from appliance.config import ConfigError
from appliance.notify.channels import gsm
from appliance.notify.channels.at_modem import (
    BAUD_RATES,
    AtError,
    AtPort,
    AtTimeout,
    parse_cmgl,
    parse_cpin,
    parse_creg,
    parse_csq,
    ucs2_hex,
)
from appliance.notify.channels.base import DeliveryError, Message
from appliance.notify.channels.core import ChannelBase
from appliance.notify.channels.text import clean_body, cut

log = logging.getLogger(__name__)

REGISTERED = {1: "home", 5: "roaming"}
CREG_TEXT = {0: "not searching", 2: "searching", 3: "registration denied", 4: "unknown"}


def sms_parts(message: Message, max_segments: int, max_length: int = 0) -> tuple[str, list[str]]:
    """The charset (``IRA`` or ``UCS2``) and the parts to send for ``message``. When the
    engine gave an ``ack_code`` the text does not carry yet, ``Reply ACK <code>`` (the
    engine's wording) ends it, and the body is shortened rather than that cut off."""
    text = clean_body(message.short or message.subject, max_length, "...")
    code = clean_body(message.ack_code or "", 40)
    suffix = f" Reply ACK {code}" if code and code not in text else ""
    plain = (text + suffix).isascii() and gsm.encoding_of(text + suffix) == "gsm7"
    enc: gsm.Encoding = "gsm7" if plain else "ucs2"
    body = text
    while True:
        parts = gsm.numbered_parts(body + suffix, max_segments, encoding=enc)
        if not suffix or parts[-1].endswith(suffix) or not body:
            return ("IRA" if plain else "UCS2"), parts
        body = cut(body, max(len(body) - 10, 0), "...") if len(body) > 10 else ""


class ModemChannel(ChannelBase):
    type = "sms_modem"

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        cfg = self.cfg
        if cfg.baud not in BAUD_RATES:
            raise ConfigError(
                [f"notify channel {self.name}: baud {cfg.baud} is not a serial speed"]
            )
        self.pin = self.secret("pin")
        self.on_reply: Callable[[str, str], Awaitable[None]] | None = None
        self._port: AtPort | None = None
        self._lock = asyncio.Lock()
        self._pin_refused = False
        self._poller: asyncio.Task[None] | None = None
        self._closing = False

    # -------------------------------------------------------------------------- lifecycle

    async def start(self) -> None:
        """Poll for replies in the background (when ``reply_poll_interval`` > 0 and the
        engine set ``on_reply``)."""
        self._closing = False
        if self._poller is None and self.cfg.reply_poll_interval > 0:
            self._poller = asyncio.create_task(self._poll_loop(), name=f"modem-{self.name}")

    async def close(self) -> None:
        self._closing = True
        if self._poller is not None:
            self._poller.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._poller
            self._poller = None
        async with self._lock:
            self._drop_port()

    def _drop_port(self) -> None:
        if self._port is not None:
            self._port.close()
            self._port = None
        self.metrics.modem_registered.set(0, self.name)

    # ------------------------------------------------------------------------ the session

    async def _cmd(self, command: str, timeout: float | None = None) -> list[str]:
        assert self._port is not None
        return await self._port.command(command, timeout or self.cfg.command_timeout)

    async def _ready(self) -> AtPort:
        """An open, initialised, registered modem (DeliveryError when it is not)."""
        if self._pin_refused:
            raise DeliveryError(
                "the SIM refused the configured PIN; fix pin and reload", retryable=False
            )
        if self._port is None:
            port = AtPort(self.cfg.device, self.cfg.baud)
            try:
                await port.open()
            except OSError as exc:
                raise DeliveryError(
                    f"cannot open {self.cfg.device}: {exc.strerror or exc}"
                ) from None
            self._port = port
            await self._cmd("ATE0")
            await self._cmd("AT+CMEE=1")
            await self._unlock()
            await self._cmd("AT+CMGF=1")
        stat = parse_creg(await self._cmd("AT+CREG?"))
        self.metrics.modem_registered.set(1 if stat in REGISTERED else 0, self.name)
        dbm = parse_csq(await self._cmd("AT+CSQ"))
        if dbm is not None:
            self.metrics.modem_signal.set(dbm, self.name)
        if stat not in REGISTERED:
            raise DeliveryError(
                f"modem not registered on a network ({CREG_TEXT.get(stat or 4, stat)}"
                f", signal {'unknown' if dbm is None else f'{dbm:g} dBm'})"
            )
        return self._port

    async def _unlock(self) -> None:
        state = parse_cpin(await self._cmd("AT+CPIN?"))
        if state == "READY":
            return
        if state != "SIM PIN":
            raise DeliveryError(
                f"SIM is {state or 'not ready'}; it needs a person", retryable=False
            )
        if not self.pin:
            raise DeliveryError("the SIM asks for a PIN; set pin (or pin_file)", retryable=False)
        try:
            await self._cmd(f'AT+CPIN="{self.pin}"')
        except AtError as exc:
            self._pin_refused = True
            raise DeliveryError(f"the SIM refused the PIN ({exc.final})", retryable=False) from None

    async def _session(self, work: Callable[[AtPort], Awaitable[None]]) -> None:
        """Run ``work`` on a ready modem; failures close the port and become DeliveryErrors."""
        async with self._lock:
            try:
                await work(await self._ready())
            except AtTimeout as exc:
                self._drop_port()
                raise DeliveryError(f"modem {self.cfg.device}: {exc} within the timeout") from None
            except OSError as exc:
                self._drop_port()
                raise DeliveryError(f"modem {self.cfg.device}: {exc}") from None
            except AtError as exc:
                self._drop_port()
                raise DeliveryError(
                    f"modem {self.cfg.device}: {exc}", retryable=_transient(exc)
                ) from None
            except DeliveryError:
                if not self._pin_refused:
                    self._drop_port()
                raise

    # ----------------------------------------------------------------------------- sending

    async def _deliver(self, message: Message) -> None:
        charset, parts = sms_parts(message, self.cfg.max_segments, self.cfg.max_length)

        async def work(port: AtPort) -> None:
            await self._cmd(f'AT+CSCS="{charset}"')
            await self._cmd("AT+CSMP=17,167,0,8" if charset == "UCS2" else "AT+CSMP=17,167,0,0")
            todo = [(n, i) for n in self.recipients(message) for i in range(len(parts))]
            for number, i in todo:
                if not self.pending(message, [f"{number}#{i}"]):
                    continue  # this part reached this number on an earlier try
                if charset == "UCS2":
                    dest, data = ucs2_hex(number), ucs2_hex(parts[i]).encode()
                else:
                    dest, data = number, parts[i].encode("ascii")
                await port.send_sms(dest, data, self.cfg.timeout)
                self.delivered(message, f"{number}#{i}")

        await self._session(work)

    # ----------------------------------------------------------------------------- replies

    async def poll_replies(self) -> int:
        """Hand every stored received SMS to ``on_reply`` and delete it; how many were handled."""
        handler = self.on_reply
        if handler is None:
            return 0
        handled = 0

        async def work(port: AtPort) -> None:
            nonlocal handled
            await self._cmd('AT+CSCS="IRA"')
            for sms in parse_cmgl(await self._cmd('AT+CMGL="ALL"', self.cfg.timeout)):
                if not sms.status.startswith("REC"):
                    continue  # drafts and sent copies are not replies
                try:
                    await handler(sms.sender, sms.text)
                except Exception:
                    log.exception("notify channel %s: reply handler failed", self.name)
                    continue
                self.metrics.modem_replies.inc(self.name)
                await self._cmd(f"AT+CMGD={sms.index}")
                handled += 1

        await self._session(work)
        return handled

    async def _poll_loop(self) -> None:
        while not self._closing:
            await asyncio.sleep(self.cfg.reply_poll_interval)
            try:
                await self.poll_replies()
            except DeliveryError as exc:
                self._rlog.warning(
                    f"{self.name}:poll", "notify channel %s: reading replies: %s", self.name, exc
                )


def _transient(exc: AtError) -> bool:
    """Whether an error result is worth retrying: network and memory trouble are; a
    number the network refuses (+CMS 21 short message rejected, 28 unidentified subscriber,
    96 invalid mandatory info, 304 invalid PDU parameter, 305 invalid text parameter) is not."""
    return exc.cms not in (21, 28, 96, 304, 305)
