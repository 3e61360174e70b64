"""Sans-I/O NetFlow v5, v9 (RFC 3954) and IPFIX (RFC 7011) decoder with bounded template state.

``NetflowDecoder.decode(datagram, exporter, now)`` returns flow records as flat ECS field dicts;
it owns no socket and reads no clock, so tests drive it with bytes and a fake ``now``.

Why it looks like this: flow collectors have been crashed or bloated by trusting wire lengths
and counts (reference C1: nfdump CVE-2019-14459, pmacct #934, FastNetMon CVE-2026-48683,
netflow_parser #28/#56, logstash #76/#212). So every length and count is checked against the
bytes actually left before it is used; every loop consumes at least four bytes or stops; every
piece of state is bounded (exporters, templates per exporter and in total, fields per template,
fixed field length, held data) and every bound that bites is counted through ``count``.
Templates are keyed by (exporter address, version, source ID / observation domain, template ID)
and live ``template_lifetime`` seconds from their last (re)send; IPFIX withdrawals are ignored
because over UDP anyone can spoof them (RFC 7011 §8.4).
"""

from __future__ import annotations

import struct
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from appliance.protocols.netflow.ie import LARGE_IES
from appliance.protocols.netflow.template import (
    SCOPE_PEN,
    VARLEN,
    Field,
    Template,
)

Record = tuple[float, dict[str, Any]]  # (event time, flat ECS fields)
CountFn = Callable[[str, str, int], None]
DomainKey = tuple[str, int, int]  # (exporter address, version, source id / observation domain)

_H2 = struct.Struct(">HH")
_H3 = struct.Struct(">HHH")
_U16 = struct.Struct(">H")
_U32 = struct.Struct(">I")
_V5_HEADER = struct.Struct(">HHIIIIBBH")
_V9_HEADER = struct.Struct(">HHIIII")
_IPFIX_HEADER = struct.Struct(">HHIII")
_MAX_SAMPLERS = 256

# NetFlow v5's fixed record expressed as a template: one decode path for every version.
_V5_FIELDS: tuple[Field, ...] = tuple(
    (ie, length, 0)
    for ie, length in (
        (8, 4), (12, 4), (15, 4), (10, 2), (14, 2), (2, 4), (1, 4), (22, 4), (21, 4), (7, 2),
        (11, 2), (210, 1), (6, 1), (4, 1), (5, 1), (16, 2), (17, 2), (9, 1), (13, 1), (210, 2),
    )
)  # fmt: skip


@dataclass(frozen=True, slots=True)
class DecoderLimits:
    """Bounds on decoder state (reference C3 defaults); each is a config key of the source."""

    max_exporters: int = 1000
    max_domains_per_exporter: int = 64
    max_templates_per_exporter: int = 256
    max_templates: int = 10_000
    max_fields_per_template: int = 256
    max_field_length: int = 128
    template_lifetime: float = 1800.0
    pending_max_sets: int = 256
    pending_max_age: float = 10.0
    compiles_per_second: float = 50.0


class Malformed(Exception):
    """The rest of the datagram cannot be trusted; ``reason`` becomes the counter label."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class DomainState:
    """What one (exporter, version, source id / observation domain) has told us."""

    __slots__ = (
        "default_rate",
        "init_time",
        "key",
        "last_seen",
        "next_seq",
        "sampler_rates",
        "templates",
    )

    def __init__(self, key: DomainKey, now: float) -> None:
        self.key = key
        self.templates: dict[int, Template] = {}  # insertion order = least recently (re)sent first
        self.next_seq: int | None = None
        self.default_rate = 1
        self.sampler_rates: dict[int, int] = {}
        self.init_time: float | None = None  # IPFIX systemInitTimeMilliseconds, in seconds
        self.last_seen = now


class _Context:
    """Per-datagram values every record of it shares."""

    __slots__ = ("boot", "common", "domain", "export_time", "header_rate", "now")

    def __init__(
        self,
        domain: DomainState | None,
        common: dict[str, Any],
        now: float,
        export_time: float,
        boot: float | None,
        header_rate: int = 1,
    ) -> None:
        self.domain = domain
        self.common = common
        self.now = now
        self.export_time = export_time
        self.boot = boot
        self.header_rate = header_rate


def _noop_count(family: str, reason: str, n: int) -> None:
    return None


class NetflowDecoder:
    """Decodes datagrams from many exporters; holds their templates, sampling and sequences."""

    def __init__(self, limits: DecoderLimits | None = None, count: CountFn | None = None) -> None:
        self.limits = limits or DecoderLimits()
        self.counts: dict[tuple[str, str], int] = {}
        self._count_cb = count or _noop_count
        # Least recently heard first, in all and per exporter address (see _domain).
        self.domains: OrderedDict[DomainKey, DomainState] = OrderedDict()
        self._by_address: dict[str, OrderedDict[DomainKey, None]] = {}
        self._lru: OrderedDict[tuple[DomainKey, int], None] = OrderedDict()
        self._pending: OrderedDict[int, tuple[DomainKey, int, bytes, _Context, float]] = (
            OrderedDict()
        )
        self._pending_seq = 0
        self.dirty = False  # templates or sampling changed since the last export_state()
        self.refreshed = False  # only lifetimes moved since the last export_state()
        self._v5_template = Template(0, _V5_FIELDS, 0, 0.0)
        self._out: list[Record] = []  # where data released by a late template goes
        self._compile_tokens = self.limits.compiles_per_second
        self._loss_labels: set[str] = set()
        self._compile_at = 0.0

    # ---------------------------------------------------------------------------- counting

    def count(self, family: str, reason: str, n: int = 1) -> None:
        key = (family, reason)
        self.counts[key] = self.counts.get(key, 0) + n
        self._count_cb(family, reason, n)

    @property
    def template_count(self) -> int:
        return len(self._lru)

    # ------------------------------------------------------------------------------ entry

    def decode(self, data: bytes, exporter: str, now: float, port: int = 0) -> list[Record]:
        """All flow records in one datagram from ``exporter``; never raises on bad input."""
        out: list[Record] = []
        if len(data) < 2:
            self.count("error", "short_header")
            return out
        version = (data[0] << 8) | data[1]
        self._out = out
        try:
            if version == 9:
                self._decode_v9(data, exporter, port, now, out)
            elif version == 10:
                self._decode_ipfix(data, exporter, port, now, out)
            elif version == 5:
                self._decode_v5(data, exporter, port, now, out)
            else:
                self.count("error", "unsupported_version")
        except Malformed as exc:
            self.count("error", exc.reason)
        return out

    # ------------------------------------------------------------------------------- v5

    def _decode_v5(
        self, data: bytes, exporter: str, port: int, now: float, out: list[Record]
    ) -> None:
        if len(data) < 24:
            raise Malformed("short_header")
        _v, n, uptime, secs, nsecs, seq, etype, eid, sampling = _V5_HEADER.unpack_from(data)
        if not 1 <= n <= 30:
            raise Malformed("v5_count")
        if len(data) != 24 + 48 * n:
            raise Malformed("v5_length")
        source_id = (etype << 8) | eid
        domain = self._domain((exporter, 5, source_id), now)
        if domain is not None:
            self._sequence(domain, exporter, seq, n, "flows")
        rate = sampling & 0x3FFF
        common = self._common(exporter, port, 5, "netflow.exporter.source_id", source_id)
        export = secs + nsecs / 1e9
        ctx = _Context(domain, common, now, export, export - uptime / 1000.0, rate or 1)
        self._records(self._v5_template, data, 24, len(data), ctx, out)

    # ------------------------------------------------------------------------------- v9

    def _decode_v9(
        self, data: bytes, exporter: str, port: int, now: float, out: list[Record]
    ) -> None:
        if len(data) < 20:
            raise Malformed("short_header")
        _v, _n, uptime, secs, seq, source_id = _V9_HEADER.unpack_from(data)
        domain = self._domain((exporter, 9, source_id), now)
        if domain is not None:
            self._sequence(domain, exporter, seq, 1, "packets")
        common = self._common(exporter, port, 9, "netflow.exporter.source_id", source_id)
        ctx = _Context(domain, common, now, float(secs), secs - uptime / 1000.0)
        self._sets(data, 20, len(data), ctx, 9, out)

    # ----------------------------------------------------------------------------- IPFIX

    def _decode_ipfix(
        self, data: bytes, exporter: str, port: int, now: float, out: list[Record]
    ) -> None:
        if len(data) < 16:
            raise Malformed("short_header")
        _v, length, export, seq, odid = _IPFIX_HEADER.unpack_from(data)
        if length != len(data):
            raise Malformed("length_mismatch")
        domain = self._domain((exporter, 10, odid), now)
        common = self._common(exporter, port, 10, "netflow.exporter.observation_domain_id", odid)
        boot = domain.init_time if domain is not None else None
        ctx = _Context(domain, common, now, float(export), boot)
        complete, n = self._sets(data, 16, length, ctx, 10, out)
        if domain is not None:
            # The IPFIX sequence counts data records, so it is only checkable when every
            # data set of this message could be decoded (options records count too).
            if complete:
                self._sequence(domain, exporter, seq, n, "flows")
            else:
                domain.next_seq = None

    # ------------------------------------------------------------------------ shared parts

    @staticmethod
    def _common(
        exporter: str, port: int, version: int, id_name: str, id_value: int
    ) -> dict[str, Any]:
        common: dict[str, Any] = {
            "event.kind": "event",
            "observer.ip": exporter,
            "netflow.exporter.address": exporter,
            "netflow.exporter.version": version,
            id_name: id_value,
        }
        if port:
            common["netflow.exporter.port"] = port
        return common

    def _domain(self, key: DomainKey, now: float) -> DomainState:
        """The state of ``key``, made room for when new.

        Why evict rather than refuse: the table is keyed by (address, version, domain), and
        the domain is a number the exporter picks, so one allowed exporter cycling through
        observation domains could fill it and lock every new exporter out until its entries
        idled out. So each address holds at most ``max_domains_per_exporter`` (a flood
        evicts its own stalest), and a full table evicts the least recently heard domain,
        so a new exporter is decoded at once. Each eviction is a counted limit hit.
        """
        domain = self.domains.get(key)
        if domain is not None:
            domain.last_seen = now
            self.domains.move_to_end(key)
            self._by_address[key[0]].move_to_end(key)
            return domain
        limits = self.limits
        mine = self._by_address.get(key[0])
        if mine is not None and len(mine) >= limits.max_domains_per_exporter:
            self._drop_domain(next(iter(mine)))
            self.count("limit", "domains_per_exporter")
        if len(self.domains) >= limits.max_exporters:
            self._forget_idle(now)
            if len(self.domains) >= limits.max_exporters:
                self._drop_domain(next(iter(self.domains)))
                self.count("limit", "exporters")
        domain = self.domains[key] = DomainState(key, now)
        self._by_address.setdefault(key[0], OrderedDict())[key] = None
        return domain

    def _forget_idle(self, now: float) -> None:
        """Drop exporters silent for a template lifetime (their templates would be expired);
        the table is in order of last arrival, so they are at its front."""
        cutoff = now - self.limits.template_lifetime
        domains = self.domains
        while domains:
            key, first = next(iter(domains.items()))
            if first.last_seen >= cutoff:
                break
            self._drop_domain(key)

    def _drop_domain(self, key: DomainKey) -> None:
        domain = self.domains.pop(key)
        mine = self._by_address.get(key[0])
        if mine is not None:
            mine.pop(key, None)
            if not mine:
                del self._by_address[key[0]]
        for tid in domain.templates:
            self._lru.pop((key, tid), None)
        self.dirty = True

    def _sequence(
        self, domain: DomainState, exporter: str, seq: int, advance: int, unit: str
    ) -> None:
        expected = domain.next_seq
        domain.next_seq = (seq + advance) & 0xFFFFFFFF
        if expected is None or seq == expected:
            return
        gap = (seq - expected) & 0xFFFFFFFF
        if gap < 0x80000000:
            # Exporter labels are bounded like the exporters themselves: churn from many
            # (spoofed) addresses lands on one "other" label instead of growing /metrics.
            labels = self._loss_labels
            if exporter not in labels:
                if len(labels) >= self.limits.max_exporters:
                    exporter = "other"
                else:
                    labels.add(exporter)
            self.count(f"lost_{unit}", exporter, gap)
        else:  # behind us: reordered, duplicated, or the exporter restarted
            self.count("sequence", "reordered_or_reset")

    def _sets(
        self, data: bytes, off: int, end: int, ctx: _Context, version: int, out: list[Record]
    ) -> tuple[bool, int]:
        """Walk the sets; return (every data set decoded, data records seen)."""
        template_set, options_set = (0, 1) if version == 9 else (2, 3)
        complete = True
        records = 0
        while off < end:
            if end - off < 4:
                if any(data[off:end]):
                    raise Malformed("truncated_set_header")
                break  # trailing padding
            set_id, set_len = _H2.unpack_from(data, off)
            if set_len < 4:
                if set_id == 0 and not any(data[off:end]):
                    break  # zero padding to the end of the datagram
                raise Malformed("set_length")
            if set_len > end - off:
                raise Malformed("set_past_end")
            body, set_end = off + 4, off + set_len
            off = set_end
            if ctx.domain is None:
                complete = False
                continue
            if set_id == template_set:
                self._template_set(data, body, set_end, ctx, version)
            elif set_id == options_set:
                if version == 9:
                    self._v9_options_template_set(data, body, set_end, ctx)
                else:
                    self._ipfix_options_template_set(data, body, set_end, ctx)
            elif set_id >= 256:
                got = self._data_set(set_id, data, body, set_end, ctx, out)
                if got < 0:
                    complete = False
                else:
                    records += got
            else:
                self.count("error", "reserved_set_id")
        return complete, records

    # ------------------------------------------------------------------------ templates

    def _template_set(self, data: bytes, p: int, end: int, ctx: _Context, version: int) -> None:
        ipfix = version == 10
        while end - p >= 4:
            tid, n = _H2.unpack_from(data, p)
            p += 4
            if n == 0:
                if tid == 0:
                    break  # padding
                if ipfix:
                    self.count("template", "withdrawal_ignored")
                    continue
                self.count("error", "empty_template")
                continue
            if tid < 256:
                self.count("error", "bad_template_id")
                return
            fields, p = self._field_specs(data, p, end, n, ipfix)
            if fields is None:
                return
            self._install(ctx, tid, fields, 0)

    def _ipfix_options_template_set(self, data: bytes, p: int, end: int, ctx: _Context) -> None:
        while end - p >= 4:
            tid, n = _H2.unpack_from(data, p)
            if n == 0:
                if tid == 0:
                    break
                self.count("template", "withdrawal_ignored")
                p += 4
                continue
            if end - p < 6:
                self.count("error", "truncated_template")
                return
            scope = _U16.unpack_from(data, p + 4)[0]
            p += 6
            if tid < 256:
                self.count("error", "bad_template_id")
                return
            fields, p = self._field_specs(data, p, end, n, True)
            if fields is None:
                return
            if scope == 0 or scope > n:
                self.count("error", "bad_scope_count")
                continue
            self._install(ctx, tid, fields, scope)

    def _v9_options_template_set(self, data: bytes, p: int, end: int, ctx: _Context) -> None:
        while end - p >= 6:
            tid, scope_len, opt_len = _H3.unpack_from(data, p)
            if tid == 0 and scope_len == 0:
                break  # padding
            p += 6
            if tid < 256:
                self.count("error", "bad_template_id")
                return
            if scope_len % 4 or opt_len % 4 or scope_len + opt_len > end - p:
                self.count("error", "bad_options_template")
                return
            if scope_len == 0:
                self.count("error", "bad_scope_count")
                p += opt_len
                continue
            fields: list[Field] = []
            for i in range(0, scope_len, 4):
                ie, length = _H2.unpack_from(data, p + i)
                fields.append((ie, length, SCOPE_PEN))
            p += scope_len
            for i in range(0, opt_len, 4):
                ie, length = _H2.unpack_from(data, p + i)
                fields.append((ie, length, 0))
            p += opt_len
            self._install(ctx, tid, tuple(fields), scope_len // 4)

    def _field_specs(
        self, data: bytes, p: int, end: int, n: int, ipfix: bool
    ) -> tuple[tuple[Field, ...] | None, int]:
        """``n`` field specifiers from ``p``, bounded by ``end``; ``None`` if truncated."""
        fields: list[Field] = []
        for _ in range(n):
            if end - p < 4:
                self.count("error", "truncated_template")
                return None, end
            ie, length = _H2.unpack_from(data, p)
            p += 4
            pen = 0
            if ipfix and ie & 0x8000:
                if end - p < 4:
                    self.count("error", "truncated_enterprise")
                    return None, end
                pen = _U32.unpack_from(data, p)[0]
                p += 4
                ie &= 0x7FFF
            fields.append((ie, length, pen))
        return tuple(fields), p

    def _install(self, ctx: _Context, tid: int, fields: tuple[Field, ...], scope: int) -> None:
        limits = self.limits
        domain = ctx.domain
        assert domain is not None
        if len(fields) > limits.max_fields_per_template:
            self.count("limit", "fields_per_template")
            return
        version = domain.key[1]
        total = 0
        for ie, length, pen in fields:
            if length == VARLEN and version == 10 and pen != SCOPE_PEN:
                total += 1
                continue
            if length > limits.max_field_length and not (pen == 0 and ie in LARGE_IES):
                self.count("limit", "field_length")
                return
            total += length
        if total > 65535 - 20:
            self.count("error", "template_too_long")
            return
        if total == 0:
            self.count("error", "zero_length_record")
            return
        key = domain.key
        now = ctx.now
        old = domain.templates.pop(tid, None)
        if old is not None and old.same_as(fields, scope):
            old.last_seen = now
            if old.emit is not None and not old.is_compiled():
                old.emit = None  # on the generic emitter: try compiling again
            domain.templates[tid] = old
            self._lru.move_to_end((key, tid))
            self.count("template", "refreshed")
            self.refreshed = True
            return
        if old is not None:
            self._lru.pop((key, tid), None)
            self.count("template", "changed")
        else:
            if len(domain.templates) >= limits.max_templates_per_exporter:
                victim = next(iter(domain.templates))
                del domain.templates[victim]
                self._lru.pop((key, victim), None)
                self.count("limit", "templates_per_exporter")
            if len(self._lru) >= limits.max_templates:
                (vkey, vtid), _ = self._lru.popitem(last=False)
                victim_domain = self.domains.get(vkey)
                if victim_domain is not None:
                    victim_domain.templates.pop(vtid, None)
                self.count("limit", "templates_total")
            self.count("template", "new")
        domain.templates[tid] = Template(tid, fields, scope, now)
        self._lru[(key, tid)] = None
        self.dirty = True
        if self._pending:
            self._release_pending(key, tid, now)

    def _template(self, domain: DomainState, tid: int, now: float) -> Template | None:
        tpl = domain.templates.get(tid)
        if tpl is not None and now - tpl.last_seen > self.limits.template_lifetime:
            del domain.templates[tid]
            self._lru.pop((domain.key, tid), None)
            self.count("template", "expired")
            self.dirty = True
            return None
        return tpl

    # ----------------------------------------------------------------------------- data

    def _data_set(
        self, tid: int, data: bytes, p: int, end: int, ctx: _Context, out: list[Record]
    ) -> int:
        """Decode one data set: how many records it held, or -1 when it could not be decoded."""
        domain = ctx.domain
        assert domain is not None
        tpl = self._template(domain, tid, ctx.now)
        if tpl is None:
            self._hold(domain.key, tid, bytes(data[p:end]), ctx)
            return -1
        if tpl.is_options:
            return self._options_records(tpl, data, p, end, ctx)
        if not tpl.names:
            return self._empty_records(tpl, data, p, end)
        before = len(out)
        self._records(tpl, data, p, end, ctx, out)
        return len(out) - before

    def _empty_records(self, tpl: Template, data: bytes, p: int, end: int) -> int:
        """Records of a template made only of paddingOctets: valid IPFIX, but records that
        carry no field are no flows. Counted (and in the sequence), never emitted."""
        n = sum(1 for _ in self._tuples(tpl, data, p, end))
        if n:
            self.count("data", "empty_records", n)
        return n

    def _tuples(self, tpl: Template, data: bytes, p: int, end: int) -> Iterable[tuple[Any, ...]]:
        """One value tuple per record in ``data[p:end]`` (addresses still bytes); what is left
        over shorter than a record is set padding."""
        st = tpl.struct
        if st is None:
            return self._split_variable(tpl, data, p, end)
        size = st.size
        n = (end - p) // size
        if n == 0:
            if end > p and any(data[p:end]):
                self.count("error", "short_data_set")
            return ()
        return st.iter_unpack(memoryview(data)[p : p + n * size])

    def _split_variable(
        self, tpl: Template, data: bytes, p: int, end: int
    ) -> Iterable[tuple[Any, ...]]:
        """RFC 7011 §7: a length byte, or 255 and a two-byte length, before each such value."""
        split = tpl.split
        min_len = tpl.min_len
        while end - p >= min_len:
            values: list[Any] = []
            for length, numeric in split:
                if length == VARLEN:
                    if p >= end:
                        self.count("error", "varlen_past_end")
                        return
                    length = data[p]
                    p += 1
                    if length == 255:
                        if end - p < 2:
                            self.count("error", "varlen_past_end")
                            return
                        length = _U16.unpack_from(data, p)[0]
                        p += 2
                if length > end - p:
                    self.count("error", "varlen_past_end")
                    return
                raw = data[p : p + length]
                p += length
                if numeric is None:
                    continue  # paddingOctets
                values.append(int.from_bytes(raw, "big") if numeric else bytes(raw))
            yield tuple(values)

    def _rows(self, tpl: Template, data: bytes, p: int, end: int) -> Iterable[dict[str, Any]]:
        """Plain ``netflow.*`` dicts (options records: few, so no compiled path needed)."""
        names = tpl.names
        fixups = tpl.fixups
        for t in self._tuples(tpl, data, p, end):
            d = dict(zip(names, t, strict=True))
            for i, name, fn in fixups:
                d[name] = fn(t[i])
            yield d

    def _records(
        self, tpl: Template, data: bytes, p: int, end: int, ctx: _Context, out: list[Record]
    ) -> None:
        """Flow records → ECS via the template's compiled emitter."""
        domain = ctx.domain
        rate = ctx.header_rate
        samplers: dict[int, int] = {}
        if domain is not None:
            rate = max(rate, domain.default_rate)
            samplers = domain.sampler_rates
        kind = tpl.time_kind
        base: float | None = None
        scale = 1.0
        if kind == "uptime":
            base, scale = ctx.boot, 0.001
        elif kind == "s":
            base = 0.0
        elif kind == "ms":
            base, scale = 0.0, 0.001
        elif kind == "delta_us":
            base, scale = ctx.export_time, -0.000001
        emit = tpl.emit
        if emit is None:
            emit = tpl.emit = self._emitter(tpl, ctx.now)
        native = tpl.native
        if native is not None:
            try:
                error = native.emit(data, p, end, ctx.common, base, scale, rate, samplers,
                                    ctx.now, out)  # fmt: skip
            except (ValueError, OverflowError, TypeError):
                pass  # a value past what it holds, or a caught panic: the reference decodes
            else:
                if error is not None:
                    self.count("error", error)
                return
        emit(self._tuples(tpl, data, p, end), ctx.common, base, scale, rate, samplers, ctx.now,
             out.append)  # fmt: skip

    def _emitter(self, tpl: Template, now: float) -> Any:
        """Compile a template's emitter (about a millisecond) within a budget per second, so
        template churn cannot buy unbounded CPU; past it the generic emitter does the work."""
        if tpl.is_compiled():
            return tpl.compiled()
        rate = self.limits.compiles_per_second
        self._compile_tokens = min(rate, self._compile_tokens + (now - self._compile_at) * rate)
        self._compile_at = now
        if self._compile_tokens >= 1:
            self._compile_tokens -= 1
            return tpl.compiled()
        self.count("limit", "compile_budget")
        return tpl.generic()

    def _options_records(self, tpl: Template, data: bytes, p: int, end: int, ctx: _Context) -> int:
        """Options data is state (sampling rates, exporter boot time), not flows."""
        domain = ctx.domain
        assert domain is not None
        value_of = tpl.value_of
        names = tpl.names

        def name(*ies: int) -> str | None:
            for ie in ies:
                if ie in value_of:
                    return names[value_of[ie]]
            return None

        interval_name = name(34, 50)
        packet_interval, packet_space = name(305), name(306)
        size_name, population_name = name(309), name(310)
        sampler_name = name(48, 302)
        init_name = name(160)
        n = 0
        for d in self._rows(tpl, data, p, end):
            n += 1
            rate = 0
            if size_name is not None and population_name is not None:
                size, population = d[size_name], d[population_name]
                if isinstance(size, int) and isinstance(population, int) and size > 0:
                    rate = population // size
            elif interval_name is not None:
                rate = d[interval_name]
            elif packet_interval is not None and packet_space is not None:
                interval, space = d[packet_interval], d[packet_space]
                if isinstance(interval, int) and isinstance(space, int) and interval > 0:
                    rate = (interval + space) // interval
            if isinstance(rate, int) and rate > 0:
                sampler = d.get(sampler_name) if sampler_name is not None else None
                if isinstance(sampler, int):
                    if sampler in domain.sampler_rates or len(domain.sampler_rates) < _MAX_SAMPLERS:
                        domain.sampler_rates[sampler] = rate
                    else:
                        self.count("limit", "samplers")
                else:
                    domain.default_rate = rate
                self.dirty = True
            if init_name is not None and isinstance(d[init_name], int):
                domain.init_time = d[init_name] / 1000.0
                ctx.boot = domain.init_time
        if n:
            self.count("data", "options_records", n)
        return n

    # ------------------------------------------------------------- data before template

    def _hold(self, key: DomainKey, tid: int, body: bytes, ctx: _Context) -> None:
        """Keep a data set whose template has not arrived yet, briefly and boundedly."""
        self.count("data", "no_template")
        limits = self.limits
        if limits.pending_max_sets <= 0:
            return
        now = ctx.now
        self._expire_pending(now)
        if len(self._pending) >= limits.pending_max_sets:
            self._pending.popitem(last=False)
            self.count("data", "pending_evicted")
        self._pending_seq += 1
        self._pending[self._pending_seq] = (key, tid, body, ctx, now)

    def _expire_pending(self, now: float) -> None:
        cutoff = now - self.limits.pending_max_age
        while self._pending:
            first = next(iter(self._pending.values()))
            if first[4] >= cutoff:
                break
            self._pending.popitem(last=False)
            self.count("data", "pending_expired")

    def _release_pending(self, key: DomainKey, tid: int, now: float) -> None:
        self._expire_pending(now)
        ready = [s for s, (k, t, *_rest) in self._pending.items() if k == key and t == tid]
        for s in ready:
            _k, _t, body, ctx, _ts = self._pending.pop(s)
            self._out.extend(self._decode_held(tid, body, ctx))

    def _decode_held(self, tid: int, body: bytes, ctx: _Context) -> list[Record]:
        out: list[Record] = []
        domain = ctx.domain
        if domain is None:
            return out
        tpl = domain.templates.get(tid)
        if tpl is None:
            return out
        if tpl.is_options:
            self._options_records(tpl, body, 0, len(body), ctx)
        elif not tpl.names:
            self._empty_records(tpl, body, 0, len(body))
        else:
            self._records(tpl, body, 0, len(body), ctx, out)
        self.count("data", "pending_released_records", len(out))
        return out

    # --------------------------------------------------------------------- maintenance

    def expire(self, now: float) -> int:
        """Drop templates past their lifetime, idle exporters and stale held data."""
        lifetime = self.limits.template_lifetime
        expired = 0
        for key, tid in list(self._lru):
            domain = self.domains.get(key)
            tpl = domain.templates.get(tid) if domain is not None else None
            if tpl is None or now - tpl.last_seen > lifetime:
                self._lru.pop((key, tid), None)
                if domain is not None:
                    domain.templates.pop(tid, None)
                expired += 1
            else:
                break  # LRU order: the rest were (re)sent later
        if expired:
            self.count("template", "expired", expired)
            self.dirty = True
        self._forget_idle(now)
        self._expire_pending(now)
        return expired

    # --------------------------------------------------------------------- persistence

    def export_state(self) -> dict[str, Any]:
        """Templates and sampling state as JSON-able data (saved so a restart can decode)."""
        domains = []
        for (addr, version, dom), state in self.domains.items():
            if not state.templates and state.default_rate == 1 and not state.sampler_rates:
                continue
            domains.append(
                {
                    "exporter": addr,
                    "version": version,
                    "domain": dom,
                    "default_rate": state.default_rate,
                    "sampler_rates": [[k, v] for k, v in state.sampler_rates.items()],
                    "init_time": state.init_time,
                    "templates": [t.to_json() for t in state.templates.values()],
                }
            )
        self.dirty = self.refreshed = False
        return {"format": 1, "domains": domains}

    def import_state(self, state: dict[str, Any], now: float) -> int:
        """Load what :meth:`export_state` produced, through the same limits; return templates."""
        loaded = 0
        if not isinstance(state, dict) or state.get("format") != 1:
            return 0
        for item in state.get("domains", []):
            try:
                key = (str(item["exporter"]), int(item["version"]), int(item["domain"]))
                domain = self._domain(key, now)
                if domain is None:
                    continue
                domain.default_rate = max(1, int(item.get("default_rate", 1)))
                for k, v in item.get("sampler_rates", [])[:_MAX_SAMPLERS]:
                    domain.sampler_rates[int(k)] = max(1, int(v))
                init = item.get("init_time")
                domain.init_time = float(init) if init is not None else None
                ctx = _Context(domain, {}, now, now, None)
                saved = sorted(item.get("templates", []), key=lambda t: float(t[3]))
                for tid, scope, fields, last_seen in saved:
                    if now - float(last_seen) > self.limits.template_lifetime:
                        continue
                    specs = tuple((int(a), int(b), int(c)) for a, b, c in fields)
                    ctx.now = float(last_seen)
                    before = len(self._lru)
                    self._install(ctx, int(tid), specs, int(scope))
                    loaded += len(self._lru) - before
            except (KeyError, TypeError, ValueError):
                self.count("error", "bad_saved_state")
        self.dirty = self.refreshed = False
        return loaded
