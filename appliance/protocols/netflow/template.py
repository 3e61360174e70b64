"""Templates compiled once into a ``struct.Struct`` and one specialised record function.

Why: a v9/IPFIX collector spends its time per record, and in CPython every dict store and
branch per record counts (the target is 200,000 flows/s on two cores). A template is received
once and used for millions of records, so at install time it becomes a struct format (values
unpacked in C by ``iter_unpack``) and a small generated function that turns one tuple into the
event's flat field dict with a single dict display: ECS fields (``source.ip``, ``network.bytes``
with sampling applied, ``event.start``...) plus ``netflow.<IANA name>`` for every other IE.
The generated source is built only from our own constants and integers (IE numbers, tuple
positions) and every name is embedded with ``repr``: nothing from the wire becomes code. The
same trick is what ``dataclasses`` and ``namedtuple`` use. Variable-length templates (IPFIX,
RFC 7011 §7) are split into the same tuples by a slower per-field loop and then share the
generated function; options templates are state (sampling, boot time), read as plain dicts.
When the Rust extension runs, the same plan (field lengths, converters, ECS mapping) is also
handed to it once per template (``Template.native``) and it builds the records instead; the
generated function stays the reference, the fallback, and what the compile budget counts.
"""

from __future__ import annotations

import socket
import struct
from collections.abc import Callable
from typing import Any

from appliance import dataplane
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


_ADDR_CACHE_MAX = 65_536
_ip4_cache: dict[bytes, str] = {}
_ip6_cache: dict[bytes, str] = {}


def _ip4_miss(b: bytes) -> str:
    """Text of an IPv4 address, remembered: the same addresses recur in every batch."""
    if len(_ip4_cache) >= _ADDR_CACHE_MAX:
        _ip4_cache.clear()
    s = _ip4_cache[b] = _inet_ntoa(b)
    return s


def _ip6_miss(b: bytes) -> str:
    if len(_ip6_cache) >= _ADDR_CACHE_MAX:
        _ip6_cache.clear()
    s = _ip6_cache[b] = _ntop6(b)
    return s


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

# ECS sources: the first IE present wins.
_SRC_IP = (8, 27)
_DST_IP = (12, 28)
_SRC_PORT = (7, 180, 182)
_DST_PORT = (11, 181, 183)
_BYTES = (1, 85, 23, 352)
_PACKETS = (2, 86, 24)
_RATE = (34, 50)
_SAMPLER = (48, 302)
_TIME_PAIRS = (("uptime", 22, 21), ("s", 150, 151), ("ms", 152, 153), ("delta_us", 158, 159))

# emit(rows, common, base, scale, rate, samplers, now, append) -> records appended
Emitter = Callable[..., None]
_EMITTERS: dict[tuple[Field, ...], Emitter] = {}
_EMITTERS_MAX = 512


class _Plan:
    """Tuple positions of the values an emitter maps (-1: absent)."""

    __slots__ = ("bytes_i", "convs", "direct", "end_i", "init_i", "packets_i", "proto_i",
                 "rate_i", "sampler_i", "start_i")  # fmt: skip

    def __init__(self) -> None:
        self.convs: list[tuple[int, Callable[[bytes], Any] | None]] = []
        self.direct: list[tuple[str, int]] = []  # (field name, position)
        self.rate_i = self.sampler_i = self.bytes_i = self.packets_i = self.proto_i = -1
        self.start_i = self.end_i = self.init_i = -1


class Template:
    """One installed template, compiled. ``scope_count`` > 0 marks an options template."""

    __slots__ = (
        "emit",
        "fields",
        "fixups",
        "last_seen",
        "min_len",
        "names",
        "native",
        "plan",
        "scope_count",
        "split",
        "struct",
        "tid",
        "time_kind",
        "value_of",
    )

    def __init__(
        self,
        tid: int,
        fields: tuple[Field, ...],
        scope_count: int,
        now: float,
        *,
        native: bool = True,
    ) -> None:
        self.tid = tid
        self.fields = fields
        self.scope_count = scope_count
        self.last_seen = now
        variable = any(length == VARLEN for _ie, length, pen in fields if pen != SCOPE_PEN)
        fmt = [">"]
        names: list[str] = []
        convs: list[Callable[[bytes], Any] | None] = []
        # For the variable-length splitter: (length, value is an int) per field; None = padding.
        split: list[tuple[int, bool | None]] = []
        index: dict[int, int] = {}
        ints: set[int] = set()  # positions whose value is an int (safe to multiply, compare)
        min_len = 0
        for ie, length, pen in fields:
            min_len += 1 if length == VARLEN else length
            if ie == PAD_IE and pen == 0:
                fmt.append(f"{length}x")
                split.append((length, None))
                continue
            conv = converter(ie, pen, length) if length != VARLEN else _var_converter(ie, pen)
            i = len(names)
            names.append(field_name(ie, pen))
            convs.append(conv)
            if pen == 0:
                index[ie] = i  # a repeated IE (inner header): the last wins, as in nfacctd
            code = _CODES.get(length)
            numeric = conv is None and code is not None
            split.append((length, numeric))
            if numeric or conv is _uint:
                ints.add(i)
            fmt.append(code if numeric and code is not None else f"{length}s")
        self.names = tuple(names)
        self.fixups = tuple((i, names[i], c) for i, c in enumerate(convs) if c is not None)
        self.split = tuple(split)
        self.min_len = min_len
        self.value_of = index
        self.struct = None if variable else struct.Struct("".join(fmt))
        self.time_kind = ""
        self.plan: _Plan | None = None
        self.emit: Emitter | None = None  # set by the decoder: compiled, or generic
        self.native: Any = None  # the extension's FlowTemplate, when it runs
        if not scope_count:  # options templates are state, not flows: no emitter
            self.plan = self._plan(names, convs, index, ints)
            if native and dataplane.native is not None:
                self.native = _native_template(self.plan, fields)

    def _plan(
        self,
        names: list[str],
        convs: list[Callable[[bytes], Any] | None],
        index: dict[int, int],
        ints: set[int],
    ) -> _Plan:
        """Which tuple position feeds which field: the ECS mapping of this template."""

        def first(ids: tuple[int, ...], want: Callable[[int], bool]) -> int:
            for ie in ids:
                i = index.get(ie, -1)
                if i >= 0 and want(i):
                    return i
            return -1

        def is_int(i: int) -> bool:
            return i in ints

        def is_addr(i: int) -> bool:
            return convs[i] in (_inet_ntoa, _ntop6)

        plan = _Plan()
        plan.convs = list(enumerate(convs))
        used: set[int] = set()
        for ecs, ids, want in (
            ("source.ip", _SRC_IP, is_addr),
            ("destination.ip", _DST_IP, is_addr),
            ("source.port", _SRC_PORT, is_int),
            ("destination.port", _DST_PORT, is_int),
        ):
            i = first(ids, want)
            if i >= 0:
                plan.direct.append((ecs, i))
                used.add(i)
        plan.rate_i, plan.sampler_i = first(_RATE, is_int), first(_SAMPLER, is_int)
        plan.bytes_i, plan.packets_i = first(_BYTES, is_int), first(_PACKETS, is_int)
        plan.proto_i = first((4,), is_int)
        if plan.proto_i >= 0:
            used.add(plan.proto_i)
        for kind, start, end in _TIME_PAIRS:
            plan.start_i, plan.end_i = first((start,), is_int), first((end,), is_int)
            if plan.start_i >= 0 or plan.end_i >= 0:
                self.time_kind = kind
                break
        if self.time_kind == "uptime":
            plan.init_i = first((160,), is_int)
        for i in (plan.start_i, plan.end_i):
            if i >= 0:
                used.add(i)
        plan.direct += [(name, i) for i, name in enumerate(names) if i not in used]
        return plan

    def compiled(self) -> Emitter:
        """The generated emitter; compiled once per field layout (cached, bounded)."""
        assert self.plan is not None
        emit = _EMITTERS.get(self.fields)
        if emit is None:
            emit = _codegen(self.plan, self.tid)
            if len(_EMITTERS) >= _EMITTERS_MAX:
                _EMITTERS.pop(next(iter(_EMITTERS)))
            _EMITTERS[self.fields] = emit
        return emit

    def is_compiled(self) -> bool:
        return self.fields in _EMITTERS

    def generic(self) -> Emitter:
        """The same mapping interpreted from the plan: slower, but costs nothing to build."""
        assert self.plan is not None
        return _generic(self.plan)

    @property
    def is_options(self) -> bool:
        return self.scope_count > 0

    def same_as(self, fields: tuple[Field, ...], scope_count: int) -> bool:
        return self.fields == fields and self.scope_count == scope_count

    def to_json(self) -> list[Any]:
        return [self.tid, self.scope_count, [list(f) for f in self.fields], self.last_seen]


# The extension's converter codes (dataplane/src/netflow.rs, Conv::from_code).
_CONV_CODES: dict[Any, int] = {
    None: 0, _uint: 0, _inet_ntoa: 1, _ntop6: 2, _mac: 3, _text: 4, _hex: 5,
}  # fmt: skip
_PAD_CODE = 6


def _native_template(plan: _Plan, fields: tuple[Field, ...]) -> Any:
    """The same plan for the extension's record decoder: field lengths and converter codes
    in wire order (padding included), the ECS mapping by value index. ``None`` when the
    extension refuses it (the Python emitter then does the work)."""
    assert dataplane.native is not None
    convs = iter(plan.convs)
    wire: list[tuple[int, int]] = []
    for ie, length, pen in fields:
        if ie == PAD_IE and pen == 0:
            wire.append((length, _PAD_CODE))
        else:
            wire.append((length, _CONV_CODES.get(next(convs)[1], 5)))
    slots = [plan.rate_i, plan.sampler_i, plan.bytes_i, plan.packets_i, plan.proto_i,
             plan.start_i, plan.end_i, plan.init_i]  # fmt: skip
    try:
        return dataplane.native.FlowTemplate(wire, plan.direct, slots, TRANSPORT)
    except (ValueError, OverflowError, TypeError):
        return None


def native_plan(
    fields: list[tuple[int, int, int]], scope: int
) -> tuple[list[int], list[tuple[str, int]], list[int], str]:
    """A template's meaning for the extension's stateful decoder (``NetflowBatchDecoder``),
    asked once per installed template: the converter code of each field in wire order
    (padding included), the ECS mapping (``direct`` and the eight slots, -1 = absent) and the
    time kind. Options templates get codes only. The IANA tables stay here, in one place."""
    tpl = Template(0, tuple(fields), scope, 0.0, native=False)
    conv_at = {i: conv for i, _name, conv in tpl.fixups}
    codes: list[int] = []
    i = 0
    for ie, _length, pen in tpl.fields:
        if ie == PAD_IE and pen == 0:
            codes.append(_PAD_CODE)
            continue
        codes.append(_CONV_CODES.get(conv_at.get(i), 5))
        i += 1
    plan = tpl.plan
    if plan is None:
        return codes, [], [-1] * 8, ""
    slots = [plan.rate_i, plan.sampler_i, plan.bytes_i, plan.packets_i, plan.proto_i,
             plan.start_i, plan.end_i, plan.init_i]  # fmt: skip
    return codes, list(plan.direct), slots, tpl.time_kind


def _var_converter(ie: int, pen: int) -> Callable[[bytes], Any]:
    """Variable-length values: text for string IEs, hex for everything else."""
    conv = converter(ie, pen, VARLEN)
    return conv if conv is not None else _hex


def _codegen(plan: _Plan, tid: int) -> Emitter:
    ns: dict[str, Any] = {
        "C4": _ip4_cache,
        "C6": _ip6_cache,
        "ip4": _ip4_miss,
        "ip6": _ip6_miss,
        "IANA": IANA_NUMBER,
        "TRANSPORT": TRANSPORT,
    }
    n = len(plan.convs)
    v = [f"v{i}" for i in range(n)]
    targets = f"{', '.join(v)}{',' if n == 1 else ''}" if n else "_"  # no fields: padding only
    body = [f"    for {targets} in rows:"]
    for i, conv in plan.convs:
        if conv is _inet_ntoa:
            body.append(f"        v{i} = C4.get(v{i}) or ip4(v{i})")
        elif conv is _ntop6:
            body.append(f"        v{i} = C6.get(v{i}) or ip6(v{i})")
        elif conv is not None:
            ns[f"F{i}"] = conv
            body.append(f"        v{i} = F{i}(v{i})")
    if plan.rate_i >= 0:
        body.append(f"        r = v{plan.rate_i} or rate")
    elif plan.sampler_i >= 0:
        body.append(f"        r = samplers.get(v{plan.sampler_i}, rate)")
    else:
        body.append("        r = rate")
    entries = [(k, v[i]) for k, i in plan.direct]
    if plan.bytes_i >= 0:
        entries.append(("network.bytes", f"v{plan.bytes_i} * r"))
    if plan.packets_i >= 0:
        entries.append(("network.packets", f"v{plan.packets_i} * r"))
    entries.append(("event.category", '["network"]'))
    entries.append(("event.type", '["connection"]'))
    body.append("        d = {" + ", ".join(f"{k!r}: {e}" for k, e in entries) + "}")
    if plan.proto_i >= 0:
        body += [
            f"        p = v{plan.proto_i}",
            "        if p < 256:",
            "            d['network.iana_number'] = IANA[p]",
            "            t = TRANSPORT[p]",
            "            if t is not None:",
            "                d['network.transport'] = t",
        ]
    body += ["        if r != 1:", "            d['netflow.sampling_rate'] = r", "        ts = now"]
    if plan.start_i >= 0 or plan.end_i >= 0:
        if plan.init_i >= 0:
            body += ["        if True:", f"            b = v{plan.init_i} * 0.001"]
        else:
            body += ["        if base is not None:", "            b = base"]
        if plan.start_i >= 0:
            body.append(f"            d['event.start'] = b + v{plan.start_i} * scale")
        if plan.end_i >= 0:
            body.append(f"            ts = d['event.end'] = b + v{plan.end_i} * scale")
    body += ["        d.update(common)", "        append((ts, d))"]
    src = "def emit(rows, common, base, scale, rate, samplers, now, append):\n"
    src += "\n".join(body) + "\n"
    exec(compile(src, f"<netflow template {int(tid)}>", "exec"), ns)  # noqa: S102
    emit: Callable[..., None] = ns["emit"]
    return emit


def _generic(plan: _Plan) -> Emitter:
    convs = [(i, c) for i, c in plan.convs if c is not None]
    direct = plan.direct
    rate_i, sampler_i = plan.rate_i, plan.sampler_i
    bytes_i, packets_i = plan.bytes_i, plan.packets_i
    proto_i, start_i, end_i, init_i = plan.proto_i, plan.start_i, plan.end_i, plan.init_i
    timed = start_i >= 0 or end_i >= 0

    def emit(
        rows: Any,
        common: dict[str, Any],
        base: float | None,
        scale: float,
        rate: int,
        samplers: dict[int, int],
        now: float,
        append: Callable[[Any], None],
    ) -> None:
        for t in rows:
            vals = list(t)
            for i, conv in convs:
                vals[i] = conv(vals[i])
            r = rate
            if rate_i >= 0:
                r = vals[rate_i] or rate
            elif sampler_i >= 0:
                r = samplers.get(vals[sampler_i], rate)
            d = {k: vals[i] for k, i in direct}
            if bytes_i >= 0:
                d["network.bytes"] = vals[bytes_i] * r
            if packets_i >= 0:
                d["network.packets"] = vals[packets_i] * r
            d["event.category"] = ["network"]
            d["event.type"] = ["connection"]
            if proto_i >= 0 and vals[proto_i] < 256:
                d["network.iana_number"] = IANA_NUMBER[vals[proto_i]]
                transport = TRANSPORT[vals[proto_i]]
                if transport is not None:
                    d["network.transport"] = transport
            if r != 1:
                d["netflow.sampling_rate"] = r
            ts = now
            if timed and (init_i >= 0 or base is not None):
                b = vals[init_i] * 0.001 if init_i >= 0 else base
                assert b is not None
                if start_i >= 0:
                    d["event.start"] = b + vals[start_i] * scale
                if end_i >= 0:
                    ts = d["event.end"] = b + vals[end_i] * scale
            d.update(common)
            append((ts, d))

    return emit
