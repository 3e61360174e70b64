"""Sans-I/O NetFlow v5, v9 (RFC 3954) and IPFIX (RFC 7011) decoder.

``NetflowDecoder.decode(datagram, exporter, now)`` returns flow records as flat ECS field dicts;
it owns no socket and reads no clock, so tests drive it with bytes and a fake ``now``.

Three parts, one concern each: :mod:`.wire` reads the bytes (headers, sets, template records,
data records; every length checked before use), :mod:`.state` keeps what exporters told us
(templates, sequences, sampling, held data; every piece bounded and every bound counted), and
this module walks a datagram with the first and applies what it finds to the second, turning
data records into flows through the template's emitter: the extension's record decoder
(``appliance._dataplane.FlowTemplate``) when it runs, else the generated Python code.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

from appliance.protocols.netflow import wire
from appliance.protocols.netflow.state import (
    MAX_SAMPLERS,
    CountFn,
    DecoderLimits,
    DomainKey,
    DomainState,
    TemplateState,
)
from appliance.protocols.netflow.template import Template
from appliance.protocols.netflow.wire import Malformed, TemplateSpec

Record = tuple[float, dict[str, Any]]  # (event time, flat ECS fields)

__all__ = ["CountFn", "DecoderLimits", "DomainState", "Malformed", "NetflowDecoder", "Record"]


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
        self.state = TemplateState(self.limits, self.count)
        self._v5_template = Template(0, wire.V5_FIELDS, 0, 0.0)
        self._out: list[Record] = []  # where data released by a late template goes
        self._compile_tokens = self.limits.compiles_per_second
        self._compile_at = 0.0

    # ---------------------------------------------------------------------------- counting

    def count(self, family: str, reason: str, n: int = 1) -> None:
        key = (family, reason)
        self.counts[key] = self.counts.get(key, 0) + n
        self._count_cb(family, reason, n)

    def _error(self, reason: str) -> None:
        self.count("error", reason)

    # ------------------------------------------------------------- the state, as before

    @property
    def domains(self) -> OrderedDict[DomainKey, DomainState]:
        return self.state.domains

    @property
    def template_count(self) -> int:
        return self.state.template_count

    @property
    def domain_count(self) -> int:
        return len(self.state.domains)

    def templates_per_domain(self) -> list[int]:
        """Templates held per exporter (domain), least recently heard first."""
        return [len(d.templates) for d in self.state.domains.values()]

    @property
    def dirty(self) -> bool:
        """Templates or sampling changed since the last :meth:`export_state`."""
        return self.state.dirty

    @property
    def refreshed(self) -> bool:
        """Only template lifetimes moved since the last :meth:`export_state`."""
        return self.state.refreshed

    @property
    def _pending(self) -> OrderedDict[int, tuple[DomainKey, int, bytes, Any, float]]:
        return self.state.pending

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

    # -------------------------------------------------------------------------- versions

    def _decode_v5(
        self, data: bytes, exporter: str, port: int, now: float, out: list[Record]
    ) -> None:
        h = wire.v5_header(data)
        domain = self.state.domain((exporter, 5, h.source_id), now)
        self.state.sequence(domain, exporter, h.seq, h.count, "flows")
        rate = h.sampling & 0x3FFF
        common = self._common(exporter, port, 5, "netflow.exporter.source_id", h.source_id)
        export = h.secs + h.nsecs / 1e9
        ctx = _Context(domain, common, now, export, export - h.uptime / 1000.0, rate or 1)
        self._records(self._v5_template, data, 24, len(data), ctx, out)

    def _decode_v9(
        self, data: bytes, exporter: str, port: int, now: float, out: list[Record]
    ) -> None:
        uptime, secs, seq, source_id = wire.v9_header(data)
        domain = self.state.domain((exporter, 9, source_id), now)
        self.state.sequence(domain, exporter, seq, 1, "packets")
        common = self._common(exporter, port, 9, "netflow.exporter.source_id", source_id)
        ctx = _Context(domain, common, now, float(secs), secs - uptime / 1000.0)
        self._sets(data, 20, len(data), ctx, 9, out)

    def _decode_ipfix(
        self, data: bytes, exporter: str, port: int, now: float, out: list[Record]
    ) -> None:
        length, export, seq, odid = wire.ipfix_header(data)
        domain = self.state.domain((exporter, 10, odid), now)
        common = self._common(exporter, port, 10, "netflow.exporter.observation_domain_id", odid)
        ctx = _Context(domain, common, now, float(export), domain.init_time)
        complete, n = self._sets(data, 16, length, ctx, 10, out)
        # The IPFIX sequence counts data records, so it is only checkable when every data
        # set of this message could be decoded (options records count too).
        if complete:
            self.state.sequence(domain, exporter, seq, n, "flows")
        else:
            domain.next_seq = None

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

    def _sets(
        self, data: bytes, off: int, end: int, ctx: _Context, version: int, out: list[Record]
    ) -> tuple[bool, int]:
        """Walk the sets; return (every data set decoded, data records seen)."""
        template_set, options_set = (0, 1) if version == 9 else (2, 3)
        ipfix = version == 10
        complete = True
        records = 0
        for set_id, body, set_end in wire.sets(data, off, end):
            if ctx.domain is None:
                complete = False
                continue
            if set_id == template_set:
                self._templates(wire.template_set(data, body, set_end, ipfix), ctx)
            elif set_id == options_set:
                if ipfix:
                    self._templates(wire.ipfix_options_template_set(data, body, set_end), ctx)
                else:
                    self._templates(wire.v9_options_template_set(data, body, set_end), ctx)
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

    def _templates(self, items: Any, ctx: _Context) -> None:
        for item in items:
            if isinstance(item, TemplateSpec):
                self._install(ctx, item.tid, item.fields, item.scope)
            else:
                self.count(*item)

    def _install(self, ctx: _Context, tid: int, fields: Any, scope: int) -> None:
        domain = ctx.domain
        assert domain is not None
        if self.state.install(domain, tid, fields, scope, ctx.now) and self.state.pending:
            for body, held in self.state.take_pending(domain.key, tid, ctx.now):
                self._out.extend(self._decode_held(tid, body, held))

    # ----------------------------------------------------------------------------- data

    def _data_set(
        self, tid: int, data: bytes, p: int, end: int, ctx: _Context, out: list[Record]
    ) -> int:
        """Decode one data set: how many records it held, or -1 when it could not be decoded."""
        domain = ctx.domain
        assert domain is not None
        tpl = self.state.template(domain, tid, ctx.now)
        if tpl is None:
            self.state.hold(domain.key, tid, bytes(data[p:end]), ctx, ctx.now)
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
        n = sum(1 for _ in wire.records(tpl, data, p, end, self._error))
        if n:
            self.count("data", "empty_records", n)
        return n

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
        rows = wire.records(tpl, data, p, end, self._error)
        emit(rows, ctx.common, base, scale, rate, samplers, ctx.now, out.append)

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
        for d in wire.rows(tpl, data, p, end, self._error):
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
                    if sampler in domain.sampler_rates or len(domain.sampler_rates) < MAX_SAMPLERS:
                        domain.sampler_rates[sampler] = rate
                    else:
                        self.count("limit", "samplers")
                else:
                    domain.default_rate = rate
                self.state.dirty = True
            if init_name is not None and isinstance(d[init_name], int):
                domain.init_time = d[init_name] / 1000.0
                ctx.boot = domain.init_time
        if n:
            self.count("data", "options_records", n)
        return n

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
        return self.state.expire(now)

    # --------------------------------------------------------------------- persistence

    def export_state(self) -> dict[str, Any]:
        """Templates and sampling state as JSON-able data (saved so a restart can decode)."""
        return self.state.export()

    def import_state(self, state: dict[str, Any], now: float) -> int:
        """Load what :meth:`export_state` produced, through the same limits; return templates."""
        loaded = 0
        if not isinstance(state, dict) or state.get("format") != 1:
            return 0
        for item in state.get("domains", []):
            try:
                key = (str(item["exporter"]), int(item["version"]), int(item["domain"]))
                domain = self.state.domain(key, now)
                domain.default_rate = max(1, int(item.get("default_rate", 1)))
                for k, v in item.get("sampler_rates", [])[:MAX_SAMPLERS]:
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
                    before = self.state.template_count
                    self._install(ctx, int(tid), specs, int(scope))
                    loaded += self.state.template_count - before
            except (LookupError, TypeError, ValueError):  # a short list too: never a crash at start
                self.count("error", "bad_saved_state")
        self.state.dirty = self.state.refreshed = False
        return loaded
