"""Pick RFC 5424 or RFC 3164 per message: the one entry point sources call."""

from __future__ import annotations

from datetime import tzinfo
from typing import Any

from appliance import dataplane
from appliance.protocols.syslog.ecs import syslog_fields
from appliance.protocols.syslog.message import (
    FACILITY_NAMES,
    SEVERITY_NAMES,
    SyslogMessage,
    parse_pri,
)
from appliance.protocols.syslog.rfc3164 import bsd_epoch, decode_rfc3164
from appliance.protocols.syslog.rfc5424 import decode_rfc5424, parse_rfc3339


def _native_header() -> Any:
    """The extension's header decoder, given the reference's own time conversions (zones stay
    in Python) and message class, so both backends build the same ``SyslogMessage``."""
    if dataplane.native is None:
        return None
    return dataplane.native.HeaderDecoder(
        SyslogMessage, bsd_epoch, parse_rfc3339, list(SEVERITY_NAMES), list(FACILITY_NAMES)
    )


_native: Any = _native_header()


def header_templates() -> tuple[int, int]:
    """(header templates the native decoder holds, messages made without one because they
    were at their bound): the bound's cost shows in the metrics, not only in the CPU."""
    if _native is None:
        return 0, 0
    held, untemplated = _native.templates()
    return int(held), int(untemplated)


def decode_syslog(data: bytes, now: float, tz: tzinfo | None = None) -> SyslogMessage:
    """Decode one syslog message of either RFC, never raising on bad input.

    RFC 5424 is recognised by ``<PRI>1 ``; everything else is read as RFC 3164 as it is really
    sent (missing PRI, missing hostname, RFC 3339 stamps). ``tz`` is the sender's time zone
    for 3164 stamps, which carry none (``None``: the appliance's local zone).

    The native decoder answers ``None`` for the few lines it leaves to the reference (RFC 3164
    with non-ASCII text, a caught panic).
    """
    if _native is not None:
        msg: SyslogMessage | None = _native.decode(data, now, tz)
        if msg is not None:
            return msg
    return decode_syslog_reference(data, now, tz)


def decode_with_fields(
    data: bytes, now: float, tz: tzinfo | None, peer_ip: str
) -> tuple[SyslogMessage, dict[str, Any]]:
    """:func:`decode_syslog` and then :func:`~appliance.protocols.syslog.ecs.syslog_fields`,
    in one native call on the listeners' path (the header's fields are built with the
    message, in the reference's key order)."""
    if _native is not None:
        got: tuple[SyslogMessage, dict[str, Any]] | None = _native.decode_with_fields(
            data, now, tz, peer_ip
        )
        if got is not None:
            return got
    msg = decode_syslog_reference(data, now, tz)
    return msg, syslog_fields(msg, peer_ip)


def decode_with_fields_reference(
    data: bytes, now: float, tz: tzinfo | None, peer_ip: str
) -> tuple[SyslogMessage, dict[str, Any]]:
    """The Python reference of :func:`decode_with_fields` (what the native batch path asks
    for the lines its header decoder leaves to the reference)."""
    msg = decode_syslog_reference(data, now, tz)
    return msg, syslog_fields(msg, peer_ip)


def decode_syslog_reference(data: bytes, now: float, tz: tzinfo | None = None) -> SyslogMessage:
    """The Python reference of :func:`decode_syslog` (the native decoder is held to it)."""
    if data.startswith(b"\xef\xbb\xbf"):
        data = data[3:]
    text = data.decode("utf-8", "replace") if not data.isascii() else data.decode("ascii")
    # Trailing newlines and NULs are framing leftovers from senders, not message content.
    text = text.rstrip("\r\n\x00")
    pri, pos = parse_pri(text)
    if pri is not None and text.startswith("1 ", pos):
        return decode_rfc5424(text, pri, pos + 2, now)
    msg = decode_rfc3164(text, pri, pos, now, tz)
    if pri is not None and text[pos : pos + 1].isdigit() and text[pos + 1 : pos + 2] == " ":
        msg.errors.append("version_unsupported")  # "<13>2 ...": a syslog version we do not know
    return msg
