"""What every channel shares: secrets from the config, send counting, failure logging.

A concrete channel implements ``_deliver``; :meth:`ChannelBase.send` counts the outcome in
``appliance_notify_channel_sends_total{channel,type,result}`` and logs a failure at most once
per interval per channel and reason, with every secret of the channel blanked out of the
text (a chat webhook's URL or a Telegram bot token is the credential itself). An unexpected
exception becomes a retryable DeliveryError (logged with its traceback): one broken
channel must not take the engine's delivery loop down.

Channels that send one request per recipient remember, per message, who already has it
(:meth:`ChannelBase.pending` / :meth:`ChannelBase.delivered`), so the engine's retry after
a failure on the third of three numbers does not text the first two again.
"""

from __future__ import annotations

import hashlib
import logging
from collections import OrderedDict
from collections.abc import Iterable
from pathlib import Path

from appliance.config import NotifyChannel
from appliance.forward.transport import read_secret
from appliance.logutil import RateLimitedLog, printable
from appliance.metrics import Registry
from appliance.notify.channels.base import DeliveryError, Message

log = logging.getLogger("appliance.notify.channels")


PROGRESS_MESSAGES = 1024  # messages whose partial delivery is remembered, per channel


class ChannelMetrics:
    def __init__(self, registry: Registry) -> None:
        self.sends = registry.counter(
            "notify_channel_sends_total",
            "Deliveries tried per channel: result ok, retry (transient failure) or failed"
            " (permanent: the far end refused the message).",
            ["channel", "type", "result"],
        )
        self.modem_signal = registry.gauge(
            "notify_modem_signal_dbm",
            "Received signal strength of an SMS modem at its last check (AT+CSQ; -113..-51).",
            ["channel"],
        )
        self.modem_registered = registry.gauge(
            "notify_modem_registered",
            "1 while an SMS modem is registered on its network (home or roaming).",
            ["channel"],
        )
        self.modem_replies = registry.counter(
            "notify_modem_replies_total", "SMS replies read from a modem.", ["channel"]
        )


class ChannelBase:
    """Counting, logging and secrets; subclasses implement :meth:`_deliver`."""

    type = ""

    def __init__(self, cfg: NotifyChannel, base_dir: Path, metrics: ChannelMetrics) -> None:
        self.cfg = cfg
        self.name = cfg.name
        self.base_dir = base_dir
        self.metrics = metrics
        self._secrets: list[str] = []
        self._rlog = RateLimitedLog(log, interval=60.0)
        self._progress: OrderedDict[str, set[str]] = OrderedDict()

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r})"

    def path(self, value: str) -> Path:
        p = Path(value).expanduser()
        return p if p.is_absolute() else self.base_dir / p

    def secret(self, key: str) -> str:
        """The secret ``key`` inline, from ``key_file`` or ``key_env`` (else ConfigError)."""
        cfg = self.cfg
        value = read_secret(
            cfg,
            getattr(cfg, key),
            getattr(cfg, f"{key}_file"),
            getattr(cfg, f"{key}_env"),
            key,
            self.path,
            section="notify channel",
        )
        if value:
            self._secrets.append(value)
        return value

    def redact(self, text: str) -> str:
        for s in self._secrets:
            text = text.replace(s, "<redacted>")
        return text

    # ------------------------------------------------------------ per-recipient progress

    @staticmethod
    def _key(message: Message) -> str:
        parts = (message.subject, message.text, message.short, *message.incident_ids)
        return hashlib.sha256("\0".join(map(str, parts)).encode()).hexdigest()

    def recipients(self, message: Message) -> list[str]:
        """The configured recipients this message goes to: ``to``, narrowed (never widened)
        by ``message.recipients``."""
        if message.recipients is None:
            return list(self.cfg.to)
        wanted = set(message.recipients)
        return [r for r in self.cfg.to if r in wanted]

    def pending(self, message: Message, recipients: Iterable[str]) -> list[str]:
        """The recipients (or recipient parts) that do not have ``message`` yet."""
        done = self._progress.get(self._key(message), set())
        return [r for r in recipients if r not in done]

    def delivered(self, message: Message, recipient: str) -> None:
        key = self._key(message)
        self._progress.setdefault(key, set()).add(recipient)
        self._progress.move_to_end(key)
        while len(self._progress) > PROGRESS_MESSAGES:
            self._progress.popitem(last=False)

    # ---------------------------------------------------------------------------- sending

    async def start(self) -> None:
        """Background work a channel needs (the modem's reply poller); most need none."""
        return None

    async def send(self, message: Message) -> None:
        """Deliver to every recipient, or raise DeliveryError (counted and logged)."""
        try:
            await self._deliver(message)
        except Exception as exc:
            if not isinstance(exc, DeliveryError):
                self._rlog.error(
                    f"{self.name}:bug", "notify channel %s: unexpected failure", self.name,
                    exc_info=True,
                )  # fmt: skip
                exc = DeliveryError(f"internal error: {type(exc).__name__}: {exc}")
            result = "retry" if exc.retryable else "failed"
            self.metrics.sends.inc(self.name, self.type, result)
            detail = printable(self.redact(str(exc)), 300)
            clean = DeliveryError(detail, retryable=exc.retryable, retry_after=exc.retry_after)
            self._rlog.warning(
                f"{self.name}:{result}", "notify channel %s (%s): %s", self.name, self.type, detail
            )
            raise clean from None
        self._progress.pop(self._key(message), None)
        self.metrics.sends.inc(self.name, self.type, "ok")

    async def _deliver(self, message: Message) -> None:
        raise NotImplementedError

    async def close(self) -> None:
        return None
