"""RFC 3164 as it is really sent: ``<PRI>Mmm dd hh:mm:ss HOST TAG[PID]: MSG`` and its cousins.

Real senders omit the PRI, the hostname or both, put RFC 3339 stamps where the BSD stamp goes,
pad the day with one space or two, and send a year. None of that loses the message: what cannot
be read as header stays in ``message``.
"""

from __future__ import annotations

import re
import time
from datetime import datetime, tzinfo
from functools import lru_cache

from appliance.protocols.syslog.message import (
    DEFAULT_PRI,
    MAX_APP_NAME,
    MAX_HOSTNAME,
    SyslogMessage,
)
from appliance.protocols.syslog.rfc5424 import parse_rfc3339

MONTHS = {
    m: i
    for i, m in enumerate(
        ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"), 1
    )
}
# How far after the receive time a year-less stamp may lie: a fast clock, a zone set off.
FUTURE_SLACK = 2 * 86400.0


@lru_cache(maxsize=4096)
def _hour_epoch(year: int, month: int, day: int, h: int, tz: tzinfo | None) -> float | None:
    try:
        return datetime(year, month, day, h, tzinfo=tz).timestamp()
    except ValueError:
        return None


def _epoch(
    year: int, month: int, day: int, h: int, m: int, s: int, us: int, tz: tzinfo | None
) -> float | None:
    base = _hour_epoch(year, month, day, h, tz)
    if base is None or m > 59 or s > 59:
        return None
    return base + m * 60 + s + us / 1e6


def infer_year(
    month: int, day: int, h: int, m: int, s: int, us: int, now: float, tz: tzinfo | None
) -> float | None:
    """Epoch of a year-less stamp: the latest year that puts it at most :data:`FUTURE_SLACK`
    after ``now``.

    A stamp is almost always from the past: a stale "May 1" line received on 4 December is
    this May, not next May (rsyslog reads it the same way). The slack keeps New Year right for
    a fast clock or a sender zone set a little off: "Jan 1 00:00:01" received on Dec 31 at
    23:59:58 is the new year, "Dec 31 23:59:59" received on Jan 1 the old one.
    """
    year = time.gmtime(now).tm_year
    latest = now + FUTURE_SLACK
    future: float | None = None
    for candidate in (year + 1, year, year - 1):
        ts = _epoch(candidate, month, day, h, m, s, us, tz)
        if ts is None:
            continue
        if ts <= latest:
            return ts
        future = ts
    return future  # only a date no recent year has (Feb 29 far from a leap year)


def bsd_epoch(
    year: int | None,
    month: int,
    day: int,
    h: int,
    m: int,
    s: int,
    us: int,
    now: float,
    tz: tzinfo | None,
) -> float | None:
    """Epoch of a BSD stamp the native header decoder read (seconds already capped as
    :func:`_parse_bsd_timestamp` caps them): the zone and the year inference stay here."""
    if year is not None:
        return _epoch(year, month, day, h, m, s, us, tz)
    return infer_year(month, day, h, m, s, us, now, tz)


_STAMPS: dict[tuple[str, tzinfo | None, int], float | None] = {}
_STAMPS_MAX = 4096


def _digits(value: str) -> bool:
    """ASCII digits only: ``str.isdigit`` is also true for "²" and other characters that
    ``int`` refuses, which made a line with one where a stamp's digits go raise."""
    return value.isascii() and value.isdigit()


def parse_bsd_timestamp(
    text: str, pos: int, now: float, tz: tzinfo | None
) -> tuple[float | None, int]:
    """Read ``Mmm dd hh:mm:ss[.fff][ yyyy]`` at ``pos``; return (epoch or None, index after).

    The plain ``Mmm dd hh:mm:ss `` form is memoised per (stamp, zone, hour received): a burst
    shares a handful of stamps, and reading one costs more than the rest of the header.
    """
    if text[pos + 15 : pos + 16] == " " and not text[pos + 16 : pos + 20].isdigit():
        key = (text[pos : pos + 15], tz, int(now) // 3600)
        hit = _STAMPS.get(key, False)
        if hit is not False:
            return hit, pos + 15
        ts, end = _parse_bsd_timestamp(text, pos, now, tz)
        if end == pos + 15:
            if len(_STAMPS) >= _STAMPS_MAX:
                _STAMPS.clear()
            _STAMPS[key] = ts
        return ts, end
    return _parse_bsd_timestamp(text, pos, now, tz)


def _parse_bsd_timestamp(
    text: str, pos: int, now: float, tz: tzinfo | None
) -> tuple[float | None, int]:
    month = MONTHS.get(text[pos : pos + 3])
    if month is None or len(text) < pos + 15 or text[pos + 3] != " ":
        return None, pos
    i = pos + 4
    if text[i] == " ":  # "Aug  7": space-padded day
        i += 1
    j = text.find(" ", i, i + 3)
    day_text = text[i:j] if j > 0 else ""
    year = 0
    if j > 0 and _digits(text[j + 1 : j + 5]) and text[j + 5 : j + 6] == " ":
        year = int(text[j + 1 : j + 5])  # Cisco ASA "Oct 03 2018 17:34:08"
        j += 5
    clock = text[j + 1 : j + 9] if j > 0 else ""
    if (
        not _digits(day_text)
        or len(clock) != 8
        or clock[2] != ":"
        or clock[5] != ":"
        or not _digits(clock[:2] + clock[3:5] + clock[6:8])
    ):
        return None, pos
    end = j + 9
    us = 0
    if end < len(text) and text[end] == ".":  # fractional seconds (Cisco "*Mar 1 00:00:00.123")
        k = end + 1
        while k < len(text) and "0" <= text[k] <= "9" and k - end <= 6:
            k += 1
        frac = text[end + 1 : k]
        if frac:
            us = int(frac.ljust(6, "0")[:6])
        end = k
    h, m, s = int(clock[:2]), int(clock[3:5]), int(clock[6:8])
    day = int(day_text)
    if year:
        return _epoch(year, month, day, h, m, min(s, 59), us, tz), end
    # An explicit year after the clock ("Aug 7 10:00:00 2024 host ...").
    if (
        text[end : end + 1] == " "
        and len(text) >= end + 5
        and _digits(text[end + 1 : end + 5])
        and (end + 5 == len(text) or text[end + 5] in " :")
    ):
        year = int(text[end + 1 : end + 5])
        ts = _epoch(year, month, day, h, m, min(s, 59), us, tz)
        return ts, end + 5
    if s == 60:
        s = 59
    return infer_year(month, day, h, m, s, us, now, tz), end


_TAGS: dict[str, tuple[str | None, str | None, bool]] = {}
_HOSTS: dict[str, bool] = {}
_TOKEN_CACHE_MAX = 8192  # per cache; tags and host names repeat, so both are memoised


def _split_tag(token: str) -> tuple[str | None, str | None, bool]:
    hit = _TAGS.get(token)
    if hit is None:
        if len(_TAGS) >= _TOKEN_CACHE_MAX:
            _TAGS.clear()
        hit = _TAGS[token] = _split_tag_uncached(token)
    return hit


def _split_tag_uncached(token: str) -> tuple[str | None, str | None, bool]:
    """``app[pid]:`` / ``app:`` / ``app[pid]`` to (app, pid, looked like a tag).

    Cisco's ``%FAC-SEV-MNEMONIC:`` is message text, not a tag: vendor decoders read it.
    """
    if token.startswith("%") or not token.strip("0123456789:.*"):
        return None, None, False  # "%LINK-3-UPDOWN:", "123:", "00:00:46:" (uptime)
    core = token[:-1] if token.endswith(":") else token
    pid = None
    if core.endswith("]") and "[" in core:
        lb = core.index("[")
        pid = core[lb + 1 : -1] or None
        core = core[:lb]
    looks = token.endswith(":") or pid is not None
    if not core or len(core) > MAX_APP_NAME * 2:
        return None, pid, looks
    return core, pid, looks


_HOSTNAME = re.compile(r"[\w.\-:%]*[\w.\-%]")


def _is_hostname(token: str) -> bool:
    hit = _HOSTS.get(token)
    if hit is None:
        if len(_HOSTS) >= _TOKEN_CACHE_MAX:
            _HOSTS.clear()
        hit = _HOSTS[token] = len(token) <= MAX_HOSTNAME and _HOSTNAME.fullmatch(token) is not None
    return hit


AIX_FORWARDED = "Message forwarded from "


def _cisco_sequence(text: str, pos: int) -> tuple[int | None, int]:
    """Cisco IOS ``123: `` before the stamp (``service sequence-numbers``): (number, after)."""
    colon = text.find(": ", pos, pos + 12)
    if colon > pos and _digits(text[pos:colon]):
        return int(text[pos:colon]), colon + 2
    return None, pos


def _skip_cisco_stamp(
    text: str, pos: int, now: float, tz: tzinfo | None
) -> tuple[float | None, int]:
    """``*Mar  1 00:00:00.123 UTC: `` (``*``/``.``: clock not synchronised) → (epoch, after)."""
    start = pos + 1 if text[pos : pos + 1] in ("*", ".") else pos
    ts, after = parse_bsd_timestamp(text, start, now, tz)
    if ts is None:
        return None, pos
    colon = text.find(": ", after, after + 8)  # optional zone name ("UTC") before the colon
    if colon < 0:
        return None, pos
    return ts, colon + 2


def decode_rfc3164(
    text: str, pri: int | None, pos: int, now: float, tz: tzinfo | None = None
) -> SyslogMessage:
    errors: list[str] = []
    if pri is None:
        errors.append("pri_missing" if not text.startswith("<") else "pri_invalid")
        pri = DEFAULT_PRI
    timestamp: float | None = None
    sequence: int | None = None
    if text[pos : pos + 1].isdigit():
        sequence, seq_end = _cisco_sequence(text, pos)
        if sequence is not None:
            ts, after = _skip_cisco_stamp(text, seq_end, now, tz)
            rest = text[after:] if ts is not None else text[seq_end:]
            return SyslogMessage(
                facility=pri >> 3,
                severity=pri & 7,
                message=rest,
                format="rfc3164",
                timestamp=ts,
                sequence=sequence,
                errors=errors if ts is not None else [*errors, "timestamp_missing"],
            )
    ts, after = parse_bsd_timestamp(text, pos, now, tz)
    if ts is not None:
        timestamp = ts
    else:
        # RFC 3339 stamp in a 3164-shaped line (rsyslog's default since Debian 12), or none.
        sp = text.find(" ", pos)
        if sp > pos and text[pos : pos + 1].isdigit():
            if sp == pos + 10 and text[pos + 4 : pos + 5] == "-":
                # "2020-03-23 06:47:42.801612-0700": a space where RFC 3339 has "T".
                sp2 = text.find(" ", sp + 1)
                if sp2 < 0:
                    sp2 = len(text)
                ts2 = parse_rfc3339(text[pos:sp] + "T" + text[sp + 1 : sp2])
                if ts2 is not None:
                    timestamp, after = ts2, sp2
            else:
                ts2 = parse_rfc3339(text[pos:sp])
                if ts2 is not None:
                    timestamp, after = ts2, sp
    hostname = app = procid = None
    # Without a stamp, spaces after the PRI ("<13>   msg") are padding, not message.
    rest = text[after:].lstrip(" ") if timestamp is not None else text[pos:].lstrip(" ")
    if rest.startswith(": "):  # Cisco puts a colon after its stamp
        rest = rest[2:]
    if timestamp is None:
        errors.append("timestamp_missing")
    elif rest.startswith(AIX_FORWARDED):
        # AIX relays: "Message forwarded from HOST: TAG: MSG" (CVE-2019-17041's shape).
        first, _, tail = rest[len(AIX_FORWARDED) :].partition(" ")
        host = first.rstrip(":")
        if _is_hostname(host):
            hostname, rest = host, tail
    else:
        first, _, tail = rest.partition(" ")
        if _is_hostname(first) and tail:
            hostname, rest = first, tail
    tag, _, tail = rest.partition(" ")
    if tag:
        app, procid, looks = _split_tag(tag)
        if looks and app is not None:
            rest = tail
        else:
            app = procid = None
            seq, seq_end = _cisco_sequence(rest, 0) if tag[0].isdigit() else (None, 0)
            if seq is not None:  # "HOST 123: *Mar 1 00:00:00.123: %LINK-3-UPDOWN: ..."
                sequence = seq
                _ts, after = _skip_cisco_stamp(rest, seq_end, now, tz)
                rest = rest[after if _ts is not None else seq_end :]
            elif tag[0].isdigit() and tag[-1] == ":" and not tag.strip("0123456789:."):
                rest = tail  # Cisco uptime stamp "00:00:46:" (no clock set): not content
    return SyslogMessage(
        facility=pri >> 3,
        severity=pri & 7,
        message=rest,
        format="rfc3164",
        timestamp=timestamp,
        hostname=hostname,
        app_name=app,
        procid=procid,
        sequence=sequence,
        errors=errors,
    )
