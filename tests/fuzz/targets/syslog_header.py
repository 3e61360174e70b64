"""Syslog header, Python reference (``decode_syslog_reference``): any bytes give a message
that meets the header contract (``_syslog.check_message``) and never raise."""

from __future__ import annotations

from collections.abc import Iterator

from appliance.protocols.syslog.decode import decode_syslog_reference
from tests.fuzz.targets._syslog import DICTIONARY, check_message, params, syslog_seeds

MAX_LEN = 2048
__all__ = ["DICTIONARY", "MAX_LEN", "one_input", "seeds"]


def seeds() -> Iterator[bytes]:
    return syslog_seeds("syslog-header")


def one_input(data: bytes) -> None:
    now, tz, raw = params(data)
    check_message(decode_syslog_reference(raw, now, tz), raw, tz)
