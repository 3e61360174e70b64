"""The syslog header contract both header targets check, and the inputs they share.

An input is one parameter byte (which sender time zone and receive time) and the datagram.
"""

from __future__ import annotations

import calendar
import re
from collections.abc import Iterator
from datetime import UTC, timedelta, timezone, tzinfo
from zoneinfo import ZoneInfo

from appliance.protocols.syslog.ecs import syslog_fields
from appliance.protocols.syslog.message import (
    MAX_APP_NAME,
    MAX_HOSTNAME,
    MAX_MSGID,
    MAX_PROCID,
    SyslogMessage,
    device_time,
)
from tests.fuzz.harness import committed_seeds, corpus_lines, finite_or_none, stored_json

ZONES: list[tzinfo | None] = [
    None,
    UTC,
    timezone(timedelta(hours=-5)),
    ZoneInfo("Europe/Berlin"),
    ZoneInfo("Pacific/Kiritimati"),
    ZoneInfo("America/St_Johns"),
]
NOWS = [
    float(calendar.timegm((2026, 12, 4, 13, 0, 0))),
    float(calendar.timegm((2026, 1, 1, 0, 0, 30))),  # BSD stamps of 31 Dec are last year
    float(calendar.timegm((2024, 2, 29, 12, 0, 0))),
]
_REASON = re.compile(r"[a-z0-9_]+")

HAND_MADE = [
    b"<34>1 2003-10-11T22:14:15.003Z mymachine.example.com su - ID47 - 'su root' failed",
    b'<165>1 2003-10-11T22:14:15.003Z host app 12 ID1 [ex@1 a="1" b="x\\"y\\\\z\\]"][o@2 c=""] m',
    b"<13>1 - - - - - -",
    b"<134>1 1764853200.123 fw01 app - - - epoch seconds",
    b"<13>Aug  7 10:00:00 host sshd[123]: Failed password for root from 10.0.0.1",
    b"<189>123: *Mar  1 00:00:00.123 UTC: %LINK-3-UPDOWN: Interface Gi0/1",
    b"<166>Oct 03 2018 17:34:08: %ASA-6-302013: Built outbound TCP connection",
    b"<13>2020-03-23 06:47:42.801612-0700 host app: space stamp",
    b"<13>Aug  7 10:00:00 aix Message forwarded from relay: sshd: hi",
    b"<13>2 2024-01-05T10:00:00Z h a p m - v2",
    b"\xef\xbb\xbf<13>Dec 31 23:59:59 h\xc3\xa9 app: \xff\xfe",
]


# Tokens for libFuzzer's dictionary: header pieces, and digits that are digits to str.isdigit()
# but not to int() or not ASCII ("²", Arabic-Indic, fullwidth, Devanagari), which byte-level
# mutation almost never spells as valid UTF-8 by itself.
DICTIONARY = (
    b"<13>", b"<34>1 ", b"<165>", b"Aug  7 ", b"Oct 03 2018 ", b"10:00:00", b".123", b" 2024 ",
    b"2026-01-05T10:00:00Z", b"+01:00", b"-0700", b"1764853200", b"123: ", b"*Mar  1 ",
    b"[", b"]", b'="', b"\\", b"@", b" - ", b"app[12]: ", b"%ASA-6-302013: ", b"%LINK-3-UPDOWN: ",
    b"Message forwarded from ", b"\xef\xbb\xbf", "²".encode(), "\u0661".encode(),
    "\uff11".encode(), "\u0967".encode(), "\u00b9".encode(),
)  # fmt: skip


def params(data: bytes) -> tuple[float, tzinfo | None, bytes]:
    if not data:
        return NOWS[0], None, b""
    b = data[0]
    return NOWS[(b >> 3) % len(NOWS)], ZONES[b % len(ZONES)], data[1:]


def syslog_seeds(target: str) -> Iterator[bytes]:
    """Every corpus syslog line and the hand-made ones, each under a few time zones."""
    for i, line in enumerate(HAND_MADE):
        yield bytes([i % 256]) + line
    for i, (_stem, line) in enumerate(corpus_lines("syslog")):
        yield bytes([i % 48]) + line
    yield from committed_seeds(target)


def check_message(msg: SyslogMessage, raw: bytes, tz: tzinfo | None) -> None:
    """What every consumer of a decoded header relies on, whatever the bytes were."""
    assert isinstance(msg, SyslogMessage), type(msg)
    assert 0 <= msg.facility < 24 and 0 <= msg.severity < 8, (msg.facility, msg.severity)
    assert msg.format in ("rfc5424", "rfc3164"), msg.format
    finite_or_none(msg.timestamp, "timestamp")
    # RFC 5424 fields are cut to the RFC's maxima (and flagged). RFC 3164 has none: a tag of
    # up to twice MAX_APP_NAME is taken as sent, a longer one is not a tag; its PID is not
    # capped (it is bounded by the message size).
    caps = (
        [(msg.hostname, MAX_HOSTNAME), (msg.app_name, MAX_APP_NAME),
         (msg.procid, MAX_PROCID), (msg.msgid, MAX_MSGID)]
        if msg.format == "rfc5424"
        else [(msg.hostname, MAX_HOSTNAME), (msg.app_name, 2 * MAX_APP_NAME)]
    )  # fmt: skip
    for value, cap in caps:
        assert value is None or (isinstance(value, str) and len(value) <= cap), (value, cap)
    text = raw.decode("utf-8", "replace")
    assert isinstance(msg.message, str) and msg.message in text, "message is not from the input"
    assert all(isinstance(e, str) and _REASON.fullmatch(e) for e in msg.errors), msg.errors
    if msg.structured_data is not None:
        for sd_id, sd_params in msg.structured_data.items():
            assert isinstance(sd_id, str) and isinstance(sd_params, dict)
            assert all(isinstance(k, str) and isinstance(v, str) for k, v in sd_params.items())
    finite_or_none(device_time(msg, tz), "device time")
    stored_json(syslog_fields(msg, "192.0.2.1"), "syslog fields")
