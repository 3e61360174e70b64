"""Templates compiled once into a ``struct.Struct`` so records decode in C, not field by field.

Why: a v9/IPFIX collector spends its time per record. A template is received once and used for
thousands of records, so at install time it becomes one struct format (fixed-length fields),
the tuple of ``netflow.<IANA name>`` keys the values are zipped into, the few conversions that
must run in Python (addresses to text, odd-sized integers), and the positions of the values the
ECS mapping needs. Variable-length templates (IPFIX, RFC 7011 §7) take a slower per-field path.
"""

from __future__ import annotations

import socket
import struct
from collections.abc import Callable
from typing import Any

from appliance.protocols.netflow.ie import (
    BYTES,
    IP4,
    IP6,
    MAC,
    PROTOCOL_NAMES,
    STR,
    ie_kind,
    ie_name,
)

VARLEN = 0xFFFF
PAD_IE = 210  # paddingOctets: skipped, never a field
SCOPE_PEN = -1  # NetFlow v9 options scope fields (RFC 3954 §6.1) have their own type space
V9_SCOPE_NAMES = {1: "scope.system", 2: "scope.interface", 3: "scope.lineCard", 4: "scope.cache"}
V9_SCOPE_NAMES[5] = "scope.template"

Field = tuple[int, int, int]  # (information element id, length, private enterprise number)

_inet_ntoa = socket.inet_ntoa


def _ntop6(b: bytes) -> str:
    return socket.inet_ntop(socket.AF_INET6, b)


def _mac(b: bytes) -> str:
    return b.hex(":")


def _text(b: bytes) -> str:
    return b.rstrip(b"\x00").decode("utf-8", "replace")


def _hex(b: bytes) -> str:
    return b.hex()


def _uint(b: bytes) -> int:
    return int.from_bytes(b, "big")


IANA_NUMBER = [str(i) for i in range(256)]
TRANSPORT = [PROTOCOL_NAMES.get(i) for i in range(256)]


def field_name(ie: int, pen: int) -> str:
    if pen == SCOPE_PEN:
        return "netflow." + V9_SCOPE_NAMES.get(ie, f"scope.{ie}")
    return "netflow." + ie_name(ie, pen)


def converter(ie: int, pen: int, length: int) -> Callable[[bytes], Any] | None:
    """How a field's bytes become a value; ``None`` when struct already gives the value."""
    kind = "bytes" if pen == SCOPE_PEN and length not in (1, 2, 4, 8) else ie_kind(ie, max(pen, 0))
    if kind == IP4:
        return _inet_ntoa if length == 4 else _hex
    if kind == IP6:
        return _ntop6 if length == 16 else _hex
    if kind == MAC:
        return _mac if length == 6 else _hex
    if kind == STR:
        return _text
    if kind == BYTES:
        return _hex
    if length in (1, 2, 4, 8):
        return None
    return _uint if 0 < length < 8 else _hex


_CODES = {1: "B", 2: "H", 4: "I", 8: "Q"}

# ECS sources: first IE present wins.
_SRC_IP = (8, 27)
_DST_IP = (12, 28)
_SRC_PORT = (7, 180, 182)
_DST_PORT = (11, 181, 183)
_BYTES = (1, 85, 23, 352)
_PACKETS = (2, 86, 24)
_RATE = (34, 50)
_SAMPLER = (48, 302)
_TIME_PAIRS = (("uptime", 22, 21), ("s", 150, 151), ("ms", 152, 153), ("delta_us", 158, 159))


class Template:
    """One installed template, compiled. ``scope_count`` > 0 marks an options template."""

    __slots__ = (
        "bytes_i",
        "converters",
        "copies",
        "fields",
        "fixups",
        "init_i",
        "last_seen",
        "min_len",
        "names",
        "packets_i",
        "proto_i",
        "rate_i",
        "sampler_i",
        "scope_count",
        "struct",
        "tid",
        "time_i",
        "time_kind",
        "value_of",
    )

    def __init__(self, tid: int, fields: tuple[Field, ...], scope_count: int, now: float) -> None:
        self.tid = tid
        self.fields = fields
        self.scope_count = scope_count
        self.last_seen = now
        variable = any(length == VARLEN for _ie, length, pen in fields if pen != SCOPE_PEN)
        fmt = [">"]
        names: list[str] = []
        fixups: list[tuple[int, str, Callable[[bytes], Any]]] = []
        converters: list[tuple[str, int, Callable[[bytes], Any] | None]] = []
        index: dict[int, int] = {}
        ints: set[int] = set()  # positions whose value is an int (safe to multiply, compare)
        min_len = 0
        for ie, length, pen in fields:
            if ie == PAD_IE and pen == 0:
                fmt.append(f"{length}x")
                converters.append(("", length, None))
                min_len += 1 if length == VARLEN else length
                continue
            name = field_name(ie, pen)
            conv = converter(ie, pen, length)
            i = len(names)
            names.append(name)
            if pen == 0:
                index.setdefault(ie, i)
            if length == VARLEN:
                min_len += 1
                converters.append((name, length, conv))
                continue
            min_len += length
            converters.append((name, length, conv))
            if conv is None or conv is _uint:
                ints.add(i)
            code = _CODES.get(length)
            if conv is None and code is not None:
                fmt.append(code)
            else:
                fmt.append(f"{length}s")
                if conv is not None:
                    fixups.append((i, name, conv))
        self.names = tuple(names)
        self.fixups = tuple(fixups)
        self.converters = tuple(converters)
        self.min_len = min_len
        self.struct = None if variable else struct.Struct("".join(fmt))
        if scope_count:  # options templates are state, not flows: no ECS plan needed
            self.copies: tuple[tuple[str, str], ...] = ()
            self.proto_i = self.bytes_i = self.packets_i = self.rate_i = self.sampler_i = -1
            self.time_kind = ""
            self.time_i = (-1, -1)
            self.init_i = -1
            self.value_of = index
            return
        self.value_of = index

        def first(ids: tuple[int, ...], numeric: bool = True) -> int:
            for ie in ids:
                i = index.get(ie, -1)
                if i >= 0 and (i in ints or not numeric):
                    return i
            return -1

        copies = []
        for ecs, ids in (
            ("source.ip", _SRC_IP),
            ("destination.ip", _DST_IP),
            ("source.port", _SRC_PORT),
            ("destination.port", _DST_PORT),
        ):
            i = first(ids, numeric=ecs.endswith(".port"))
            if i >= 0:
                copies.append((ecs, names[i]))
        self.copies = tuple(copies)
        self.proto_i = first((4,))
        self.bytes_i = first(_BYTES)
        self.packets_i = first(_PACKETS)
        self.rate_i = first(_RATE)
        self.sampler_i = first(_SAMPLER)
        self.init_i = first((160,))
        self.time_kind = ""
        self.time_i = (-1, -1)
        for kind, start, end in _TIME_PAIRS:
            si, ei = first((start,)), first((end,))
            if si >= 0 or ei >= 0:
                self.time_kind = kind
                self.time_i = (si, ei)
                break

    @property
    def is_options(self) -> bool:
        return self.scope_count > 0

    @property
    def variable(self) -> bool:
        return self.struct is None

    def same_as(self, fields: tuple[Field, ...], scope_count: int) -> bool:
        return self.fields == fields and self.scope_count == scope_count

    def to_json(self) -> list[Any]:
        return [self.tid, self.scope_count, [list(f) for f in self.fields], self.last_seen]
