"""The decoded syslog message and the entry point that picks RFC 5424 or RFC 3164 per message."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, tzinfo

SEVERITY_NAMES = (
    "emergency",
    "alert",
    "critical",
    "error",
    "warning",
    "notice",
    "informational",
    "debug",
)
FACILITY_NAMES = (
    "kern",
    "user",
    "mail",
    "daemon",
    "auth",
    "syslog",
    "lpr",
    "news",
    "uucp",
    "cron",
    "authpriv",
    "ftp",
    "ntp",
    "security",
    "console",
    "solaris-cron",
    "local0",
    "local1",
    "local2",
    "local3",
    "local4",
    "local5",
    "local6",
    "local7",
)
DEFAULT_PRI = 13  # user.notice, what RFC 3164 section 4.3.3 tells a relay to assume

# Header field maxima from RFC 5424 section 6; longer values are cut and flagged.
MAX_HOSTNAME = 255
MAX_APP_NAME = 48
MAX_PROCID = 128
MAX_MSGID = 32


@dataclass(slots=True)
class SyslogMessage:
    """One syslog message as the wire had it, before any vendor decoding.

    ``timestamp`` is the device's time as epoch seconds, or ``None`` when the message carries
    none we can trust (the caller then uses the receive time). ``errors`` names what was wrong
    with the header (``pri_invalid``, ``timestamp_invalid``, ...): the message is still kept.
    """

    facility: int
    severity: int
    message: str
    format: str  # "rfc5424" | "rfc3164" | "raw"
    timestamp: float | None = None
    hostname: str | None = None
    app_name: str | None = None
    procid: str | None = None
    msgid: str | None = None
    version: int | None = None
    structured_data: dict[str, dict[str, str]] | None = None
    sequence: int | None = None  # Cisco-style "123:" sequence number
    errors: list[str] = field(default_factory=list)
    # The device's own time from the message body (FortiGate ``eventtime``, Suricata
    # ``timestamp``, ...), set by a vendor decoder: epoch seconds when the body says its zone,
    # a naive datetime when it is the device's local time. Used when the header has no time.
    payload_time: float | datetime | None = None

    @property
    def priority(self) -> int:
        return self.facility * 8 + self.severity


def device_time(msg: SyslogMessage, tz: tzinfo | None = None) -> float | None:
    """The device's time for ``msg`` as epoch seconds: the header's, else the one a vendor
    decoder found in the body (local times read in ``tz``, the sender's zone; ``None``: the
    appliance's), else ``None`` (the caller uses the receive time)."""
    if msg.timestamp is not None:
        return msg.timestamp
    return body_time(msg.payload_time, tz)


def body_time(t: float | datetime | None, tz: tzinfo | None = None) -> float | None:
    """A body time (``SyslogMessage.payload_time``) as epoch seconds, a local one read in
    ``tz``: what :func:`device_time` gives when the header has no time (the native batch
    intake calls it with the time alone, no message object)."""
    if isinstance(t, datetime):
        try:
            return (t.replace(tzinfo=tz) if tz is not None else t).timestamp()
        except (OverflowError, OSError, ValueError):
            return None
    return t


# Every valid "<PRI>" string: one dict probe answers the common case.
_PRI_TABLE = {f"<{v}>": v for v in range(192)}


def parse_pri(text: str) -> tuple[int | None, int]:
    """``(<PRI> value or None, index after '>')``; PRI is 1-3 digits and at most 191."""
    end = text.find(">", 1, 5)
    if end > 0:
        value = _PRI_TABLE.get(text[: end + 1])
        if value is not None:
            return value, end + 1
    if not text.startswith("<"):
        return None, 0
    end = text.find(">", 1, 5)
    if end < 2:
        return None, 0
    digits = text[1:end]
    if not digits.isdigit() or not digits.isascii() or (len(digits) > 1 and digits[0] == "0"):
        return None, 0
    value = int(digits)
    if value > 191:
        return None, 0
    return value, end + 1
