"""NetFlow v5/v9 (RFC 3954) and IPFIX (RFC 7011) wire format: headers, sets, template records
and data records. Pure: bytes in, values out, plus the reason of whatever was wrong; no state.

Why it looks like this: flow collectors have been crashed or bloated by trusting wire lengths
and counts (nfdump CVE-2019-14459, pmacct #934, netflow_parser #28/#56, logstash #76/#212).
So every length and count is checked against the bytes actually left before it is used, and
every loop consumes at least four bytes or stops. What the bytes mean for the collector's state
(which template a data set needs, what a template replaces) is :mod:`.state`'s business; the
decoder (:mod:`.decoder`) walks a datagram with these functions and applies what they find.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from appliance.protocols.netflow.template import SCOPE_PEN, VARLEN, Field, Template

H2 = struct.Struct(">HH")
H3 = struct.Struct(">HHH")
U16 = struct.Struct(">H")
U32 = struct.Struct(">I")
V5_HEADER = struct.Struct(">HHIIIIBBH")
V9_HEADER = struct.Struct(">HHIIII")
IPFIX_HEADER = struct.Struct(">HHIII")

# NetFlow v5's fixed record expressed as a template: one decode path for every version.
V5_FIELDS: tuple[Field, ...] = tuple(
    (ie, length, 0)
    for ie, length in (
        (8, 4), (12, 4), (15, 4), (10, 2), (14, 2), (2, 4), (1, 4), (22, 4), (21, 4), (7, 2),
        (11, 2), (210, 1), (6, 1), (4, 1), (5, 1), (16, 2), (17, 2), (9, 1), (13, 1), (210, 2),
    )
)  # fmt: skip


class Malformed(Exception):
    """The rest of the datagram cannot be trusted; ``reason`` becomes the counter label."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class TemplateSpec:
    """A template record as sent: what the state is asked to install."""

    tid: int
    fields: tuple[Field, ...]
    scope: int = 0  # scope field count: > 0 for an options template


Note = tuple[str, str]  # (counter family, reason): something the caller counts
TemplateItem = TemplateSpec | Note


# ----------------------------------------------------------------------------- headers


@dataclass(frozen=True, slots=True)
class V5Header:
    count: int
    uptime: int
    secs: int
    nsecs: int
    seq: int
    source_id: int
    sampling: int


def v5_header(data: bytes) -> V5Header:
    if len(data) < 24:
        raise Malformed("short_header")
    _v, n, uptime, secs, nsecs, seq, etype, eid, sampling = V5_HEADER.unpack_from(data)
    if not 1 <= n <= 30:
        raise Malformed("v5_count")
    if len(data) != 24 + 48 * n:
        raise Malformed("v5_length")
    return V5Header(n, uptime, secs, nsecs, seq, (etype << 8) | eid, sampling)


def v9_header(data: bytes) -> tuple[int, int, int, int]:
    """(sysUptime ms, export seconds, sequence, source id)."""
    if len(data) < 20:
        raise Malformed("short_header")
    _v, _n, uptime, secs, seq, source_id = V9_HEADER.unpack_from(data)
    return uptime, secs, seq, source_id


def ipfix_header(data: bytes) -> tuple[int, int, int, int]:
    """(message length, export seconds, sequence, observation domain id)."""
    if len(data) < 16:
        raise Malformed("short_header")
    _v, length, export, seq, odid = IPFIX_HEADER.unpack_from(data)
    if length != len(data):
        raise Malformed("length_mismatch")
    return length, export, seq, odid


# -------------------------------------------------------------------------------- sets


def sets(data: bytes, off: int, end: int) -> Iterator[tuple[int, int, int]]:
    """(set id, body start, set end) of each set; raises :class:`Malformed` when it reaches a
    set it cannot trust (the sets before it were already yielded)."""
    while off < end:
        if end - off < 4:
            if any(data[off:end]):
                raise Malformed("truncated_set_header")
            return  # trailing padding
        set_id, set_len = H2.unpack_from(data, off)
        if set_len < 4:
            if set_id == 0 and not any(data[off:end]):
                return  # zero padding to the end of the datagram
            raise Malformed("set_length")
        if set_len > end - off:
            raise Malformed("set_past_end")
        yield set_id, off + 4, off + set_len
        off += set_len


# ---------------------------------------------------------------------------- templates


def template_set(data: bytes, p: int, end: int, ipfix: bool) -> Iterator[TemplateItem]:
    while end - p >= 4:
        tid, n = H2.unpack_from(data, p)
        p += 4
        if n == 0:
            if tid == 0:
                return  # padding
            if ipfix:
                yield ("template", "withdrawal_ignored")
                continue
            yield ("error", "empty_template")
            continue
        if tid < 256:
            yield ("error", "bad_template_id")
            return
        fields, p, note = field_specs(data, p, end, n, ipfix)
        if fields is None:
            if note is not None:
                yield note
            return
        yield TemplateSpec(tid, fields)


def ipfix_options_template_set(data: bytes, p: int, end: int) -> Iterator[TemplateItem]:
    while end - p >= 4:
        tid, n = H2.unpack_from(data, p)
        if n == 0:
            if tid == 0:
                return
            yield ("template", "withdrawal_ignored")
            p += 4
            continue
        if end - p < 6:
            yield ("error", "truncated_template")
            return
        scope = U16.unpack_from(data, p + 4)[0]
        p += 6
        if tid < 256:
            yield ("error", "bad_template_id")
            return
        fields, p, note = field_specs(data, p, end, n, True)
        if fields is None:
            if note is not None:
                yield note
            return
        if scope == 0 or scope > n:
            yield ("error", "bad_scope_count")
            continue
        yield TemplateSpec(tid, fields, scope)


def v9_options_template_set(data: bytes, p: int, end: int) -> Iterator[TemplateItem]:
    while end - p >= 6:
        tid, scope_len, opt_len = H3.unpack_from(data, p)
        if tid == 0 and scope_len == 0:
            return  # padding
        p += 6
        if tid < 256:
            yield ("error", "bad_template_id")
            return
        if scope_len % 4 or opt_len % 4 or scope_len + opt_len > end - p:
            yield ("error", "bad_options_template")
            return
        if scope_len == 0:
            yield ("error", "bad_scope_count")
            p += opt_len
            continue
        fields: list[Field] = []
        for i in range(0, scope_len, 4):
            ie, length = H2.unpack_from(data, p + i)
            fields.append((ie, length, SCOPE_PEN))
        p += scope_len
        for i in range(0, opt_len, 4):
            ie, length = H2.unpack_from(data, p + i)
            fields.append((ie, length, 0))
        p += opt_len
        yield TemplateSpec(tid, tuple(fields), scope_len // 4)


def field_specs(
    data: bytes, p: int, end: int, n: int, ipfix: bool
) -> tuple[tuple[Field, ...] | None, int, Note | None]:
    """``n`` field specifiers from ``p``, bounded by ``end``: (fields, next offset, None), or
    (None, end, the error) when they are truncated."""
    fields: list[Field] = []
    for _ in range(n):
        if end - p < 4:
            return None, end, ("error", "truncated_template")
        ie, length = H2.unpack_from(data, p)
        p += 4
        pen = 0
        if ipfix and ie & 0x8000:
            if end - p < 4:
                return None, end, ("error", "truncated_enterprise")
            pen = U32.unpack_from(data, p)[0]
            p += 4
            ie &= 0x7FFF
        fields.append((ie, length, pen))
    return tuple(fields), p, None


# ------------------------------------------------------------------------------ records


def records(
    tpl: Template, data: bytes, p: int, end: int, error: Callable[[str], None]
) -> Iterable[tuple[Any, ...]]:
    """One value tuple per record in ``data[p:end]`` (addresses still bytes); what is left
    over shorter than a record is set padding. ``error`` gets the reason of a bad set."""
    st = tpl.struct
    if st is None:
        return _split_variable(tpl, data, p, end, error)
    size = st.size
    n = (end - p) // size
    if n == 0:
        if end > p and any(data[p:end]):
            error("short_data_set")
        return ()
    return st.iter_unpack(memoryview(data)[p : p + n * size])


def _split_variable(
    tpl: Template, data: bytes, p: int, end: int, error: Callable[[str], None]
) -> Iterator[tuple[Any, ...]]:
    """RFC 7011 §7: a length byte, or 255 and a two-byte length, before each such value."""
    split = tpl.split
    min_len = tpl.min_len
    while end - p >= min_len:
        values: list[Any] = []
        for length, numeric in split:
            if length == VARLEN:
                if p >= end:
                    error("varlen_past_end")
                    return
                length = data[p]
                p += 1
                if length == 255:
                    if end - p < 2:
                        error("varlen_past_end")
                        return
                    length = U16.unpack_from(data, p)[0]
                    p += 2
            if length > end - p:
                error("varlen_past_end")
                return
            raw = data[p : p + length]
            p += length
            if numeric is None:
                continue  # paddingOctets
            values.append(int.from_bytes(raw, "big") if numeric else bytes(raw))
        yield tuple(values)


def rows(
    tpl: Template, data: bytes, p: int, end: int, error: Callable[[str], None]
) -> Iterator[dict[str, Any]]:
    """Plain ``netflow.*`` dicts (options records: few, so no compiled path needed)."""
    names = tpl.names
    fixups = tpl.fixups
    for t in records(tpl, data, p, end, error):
        d = dict(zip(names, t, strict=True))
        for i, name, fn in fixups:
            d[name] = fn(t[i])
        yield d
