"""RFC 5424: ``<PRI>1 TIMESTAMP HOSTNAME APP-NAME PROCID MSGID STRUCTURED-DATA [MSG]``."""

from __future__ import annotations

import re
from datetime import UTC, datetime

from appliance.protocols.syslog.message import (
    MAX_APP_NAME,
    MAX_HOSTNAME,
    MAX_MSGID,
    MAX_PROCID,
    SyslogMessage,
)

NIL = "-"
MAX_SD_ELEMENTS = 32
MAX_SD_PARAMS = 128
MAX_SD_VALUE = 2048
_UNESCAPE = re.compile(r'\\(["\\\]])')


def _escaped(text: str, start: int, quote: int) -> bool:
    """True when the quote at ``quote`` is preceded by an odd run of backslashes."""
    k = quote - 1
    while k >= start and text[k] == "\\":
        k -= 1
    return (quote - 1 - k) % 2 == 1


def parse_rfc3339(value: str) -> float | None:
    """Epoch seconds from an RFC 3339 stamp; ``None`` when it is not one (leap second included)."""
    if len(value) < 19 or value[4] != "-" or value[10] not in "Tt":
        return None
    try:
        dt = datetime.fromisoformat(value.replace("z", "Z"))
    except ValueError:
        return None
    if dt.tzinfo is None:  # RFC 5424 requires an offset; read a missing one as UTC
        dt = dt.replace(tzinfo=UTC)
    return dt.timestamp()


def parse_epoch(value: str) -> float | None:
    """Epoch seconds (``1700000000``, ``1700000000.123``) or milliseconds (``1700000000123``)
    where RFC 5424 wants RFC 3339: some devices and log shippers write them. Nine or ten digits
    of seconds (2001-2286) or twelve or thirteen of milliseconds; anything else is no stamp."""
    if not value.isascii():
        return None
    whole, dot, frac = value.partition(".")
    if not whole.isdigit():
        return None
    if dot:
        if not 9 <= len(whole) <= 10 or not frac.isdigit() or len(frac) > 9:
            return None
        return float(value)
    if 9 <= len(whole) <= 10:
        return float(int(whole))
    if 12 <= len(whole) <= 13:
        return int(whole) / 1000
    return None


def _field(value: str, limit: int, name: str, errors: list[str]) -> str | None:
    if value == NIL or not value:
        return None
    if len(value) > limit:
        errors.append(f"{name}_too_long")
        return value[:limit]
    return value


def parse_structured_data(
    text: str, pos: int, errors: list[str]
) -> tuple[dict[str, dict[str, str]] | None, int]:
    """Parse SD-ELEMENTs starting at ``pos``; return (elements or None, index after them).

    Escapes ``\\"``, ``\\\\`` and ``\\]`` are undone; a backslash before anything else is kept
    as the RFC says. A duplicate SD-ID keeps the first (RFC 5424 forbids duplicates) and flags
    ``sd_duplicate_id``. Malformed SD stops parsing: the rest is treated as the message.
    """
    n = len(text)
    if pos >= n:
        return None, pos
    if text[pos] == "-":
        return None, pos + 1
    elements: dict[str, dict[str, str]] = {}
    while pos < n and text[pos] == "[":
        end_id = pos + 1
        while end_id < n and text[end_id] not in " ]":
            end_id += 1
        sd_id = text[pos + 1 : end_id]
        if not sd_id or len(sd_id) > 32 or "=" in sd_id or '"' in sd_id:
            errors.append("sd_invalid")
            return elements or None, pos
        params: dict[str, str] = {}
        i = end_id
        while i < n and text[i] == " ":
            i += 1
            eq = text.find("=", i)
            if eq < 0 or eq - i > 32 or eq == i or eq + 1 >= n or text[eq + 1] != '"':
                errors.append("sd_invalid")
                return elements or None, pos
            name = text[i:eq]
            i = eq + 2
            j = text.find('"', i)
            while j > 0 and text[j - 1] == "\\" and _escaped(text, i, j):
                j = text.find('"', j + 1)
            if j < 0:
                errors.append("sd_unterminated")
                return elements or None, pos
            value = text[i:j]
            if "\\" in value:
                value = _UNESCAPE.sub(r"\1", value)
            i = j
            if len(value) > MAX_SD_VALUE:
                value = value[:MAX_SD_VALUE]
                errors.append("sd_value_too_long")
            if len(params) < MAX_SD_PARAMS:
                params.setdefault(name, value)
            elif "sd_too_many_params" not in errors:
                errors.append("sd_too_many_params")
            i += 1  # closing quote
        if i >= n or text[i] != "]":
            errors.append("sd_unterminated")
            return elements or None, pos
        if sd_id in elements:
            errors.append("sd_duplicate_id")
        elif len(elements) < MAX_SD_ELEMENTS:
            elements[sd_id] = params
        elif "sd_too_many_elements" not in errors:
            errors.append("sd_too_many_elements")
        pos = i + 1
    return elements or None, pos


def decode_rfc5424(text: str, pri: int, pos: int, now: float) -> SyslogMessage:
    """Decode the part of an RFC 5424 message after ``<PRI>1 `` (``pos`` indexes into ``text``)."""
    errors: list[str] = []
    parts = text[pos:].split(" ", 5)
    while len(parts) < 6:
        parts.append(NIL)
        if "header_truncated" not in errors:
            errors.append("header_truncated")
    ts_text, host, app, procid, msgid, rest = parts
    timestamp = None
    if ts_text != NIL:
        timestamp = parse_rfc3339(ts_text)
        if timestamp is None:
            timestamp = parse_epoch(ts_text)
        if timestamp is None:
            errors.append("timestamp_invalid")
    sd, after = parse_structured_data(rest, 0, errors)
    message = rest[after:]
    if message.startswith(" "):
        message = message[1:]
    if message.startswith("\ufeff"):
        message = message[1:]
    return SyslogMessage(
        facility=pri >> 3,
        severity=pri & 7,
        message=message,
        format="rfc5424",
        timestamp=timestamp,
        hostname=_field(host, MAX_HOSTNAME, "hostname", errors),
        app_name=_field(app, MAX_APP_NAME, "app_name", errors),
        procid=_field(procid, MAX_PROCID, "procid", errors),
        msgid=_field(msgid, MAX_MSGID, "msgid", errors),
        version=1,
        structured_data=sd,
        errors=errors,
    )
