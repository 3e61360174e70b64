"""NetFlow v5/v9 and IPFIX over UDP: one port for all three (the version is sniffed per datagram).

A thin adapter: allow-list, decode (sans-I/O: the extension's stateful decoder, a whole
``recvmmsg`` slice per call, or the Python :class:`NetflowDecoder`), wrap records as events,
hand them to the flow path. It also keeps the decoder's template state in the ``state`` table
so that after a restart the first data packets decode without waiting for a template resend.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from typing import Any

from appliance.config import NetflowSource
from appliance.event import Event
from appliance.logutil import RateLimitedLog
from appliance.protocols.netflow import DecoderLimits
from appliance.protocols.netflow.native import NativeNetflowDecoder, new_decoder
from appliance.sources.base import SourceContext
from appliance.sources.policy import AllowList, SenderRateLimit
from appliance.sources.udp import (
    KernelDropTracker,
    NativeUdpReader,
    UdpBatchReader,
    bind_udp,
    drain_socket,
    register_backlog_gauge,
    socket_drops,
)
from appliance.store.state import JSON

log = logging.getLogger(__name__)
_rl = RateLimitedLog(log)

STATE_COMPONENT = "netflow"
REFRESH_SAVE_INTERVAL = 60.0  # lifetimes only moved: save at most this often


# The decoder's bounds: passed to it and shown in /metrics as appliance_netflow_limit.
LIMIT_KEYS = (
    "max_exporters",
    "max_domains_per_exporter",
    "max_templates_per_exporter",
    "max_templates",
    "max_fields_per_template",
    "max_field_length",
    "template_lifetime",
    "pending_max_sets",
    "pending_max_age",
)


class NetflowUdpProtocol(asyncio.DatagramProtocol):
    def __init__(self, source: NetflowUdpSource) -> None:
        self.source = source
        self.name = source.name
        self.decoder = source.decoder
        self.flows = source.flows
        self.clock = source.ctx.clock
        self.allowed = source.allowed
        self.rate_limit = source.rate_limit
        self.datagrams = source.datagrams
        self.rejected = source.rejected

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        name = self.name
        self.datagrams.inc(name)
        ip = addr[0]
        if ip not in self.allowed:
            self.rejected.inc(name, "not_allowed")
            _rl.warning(f"deny:{name}", "%s: datagram from %s not in allow-list", name, ip)
            return
        now = self.clock()
        if not self.rate_limit.allow(ip, now):
            self.rejected.inc(name, "rate_limited")
            return
        try:
            records = self.decoder.decode(data, ip, now, addr[1])
        except Exception:  # a decoder bug must cost one datagram, never the listener
            self.rejected.inc(name, "decode_error")
            _rl.decoder_bug(name, ip)
            return
        if records:
            self.flows.offer([Event(ts, now, "netflow", f) for ts, f in records], name)

    def datagrams_received(self, batch: list[tuple[bytes, tuple[str, int]]]) -> None:
        """A slice of the reader's backlog: the policy per datagram, then one native call
        decodes all that passed (state, records and their events in Rust), then each
        datagram's flows are offered as :meth:`datagram_received` would."""
        name = self.name
        allowed, rate_limit, rejected = self.allowed, self.rate_limit, self.rejected
        now = self.clock()
        self.datagrams.inc(name, n=len(batch))
        todo: list[tuple[bytes, str, int, float]] = []
        for data, (ip, port) in batch:
            if ip not in allowed:
                rejected.inc(name, "not_allowed")
                _rl.warning(f"deny:{name}", "%s: datagram from %s not in allow-list", name, ip)
            elif not rate_limit.allow(ip, now):
                rejected.inc(name, "rate_limited")
            else:
                todo.append((data, ip, port, now))
        if not todo:
            return
        decoder = self.decoder
        assert isinstance(decoder, NativeNetflowDecoder)
        offer = self.flows.offer
        decoded = decoder.decode_flows(todo, name)  # events made when read, listener set
        for (_data, ip, _port, _now), got in zip(todo, decoded, strict=True):
            if got is None:  # a caught panic: this datagram only
                rejected.inc(name, "decode_error")
                _rl.decoder_bug(name, ip)
            elif got[0]:
                offer(got[0], name, got[1], labelled=True)

    def error_received(self, exc: Exception) -> None:
        _rl.warning(f"err:{self.name}", "%s: socket error: %s", self.name, exc)


class _DatagramBooks:
    """The two counters :class:`KernelDropTracker` books kernel drops into: for flows these
    are datagram counters (a dropped datagram's flow count is unknown), not the event books."""

    def __init__(self, received: Any, dropped: Any) -> None:
        self.received = received
        self.dropped = dropped


class NetflowUdpSource:
    def __init__(self, cfg: NetflowSource, ctx: SourceContext, flows: Any) -> None:
        self.cfg = cfg
        self.ctx = ctx
        self.flows = flows
        self.name = cfg.label
        # The templates, kept across restarts: exporters resend theirs only every few minutes.
        self.state_slot = ctx.pipeline.store.state(STATE_COMPONENT, self.name, JSON)
        self.allowed = AllowList(cfg.allowed)
        self.rate_limit = SenderRateLimit(cfg.rate_limit, cfg.rate_burst, cfg.max_senders)
        m = ctx.metrics
        self.datagrams = m.counter(
            "netflow_datagrams_total", "Flow export datagrams received.", ["source"]
        )
        self.rejected = m.counter(
            "netflow_datagrams_rejected_total",
            "Flow export datagrams not decoded at all, by reason (kernel_buffer_full: dropped"
            " by the kernel on the socket, also counted in netflow_datagrams_total).",
            ["source", "reason"],
        )
        families = {
            "error": m.counter(
                "netflow_errors_total",
                "Malformed flow export input (the bad unit is skipped), by reason.",
                ["source", "reason"],
            ),
            "limit": m.counter(
                "netflow_limit_hits_total",
                "Decoder bounds that bit (the template/exporter/field was refused or evicted).",
                ["source", "limit"],
            ),
            "template": m.counter(
                "netflow_templates_total",
                "Template events: new, refreshed, changed, expired, withdrawal_ignored.",
                ["source", "event"],
            ),
            "data": m.counter(
                "netflow_data_total",
                "Data set outcomes: no_template, pending_*, options_records, empty_records.",
                ["source", "outcome"],
            ),
            "lost_flows": m.counter(
                "netflow_lost_flows_total",
                "Flows lost upstream, from sequence gaps (v5 and IPFIX).",
                ["source", "exporter"],
            ),
            "lost_packets": m.counter(
                "netflow_lost_packets_total",
                "Export packets lost upstream, from sequence gaps (v9).",
                ["source", "exporter"],
            ),
            "sequence": m.counter(
                "netflow_sequence_resets_total",
                "Sequence numbers that went backwards (reorder, duplicate or exporter restart).",
                ["source", "reason"],
            ),
        }
        name = self.name

        def count(family: str, reason: str, n: int) -> None:
            families[family].inc(name, reason, n=n)

        self.decoder = new_decoder(
            DecoderLimits(
                **{key: getattr(cfg, key) for key in LIMIT_KEYS},
            ),
            count,
        )
        self._gauge_templates = m.gauge(
            "netflow_templates", "Templates held by the decoder (updated every few seconds).",
            ["source"],
        )  # fmt: skip
        limits = m.gauge(
            "netflow_limit", "Configured NetFlow listener limits, by config key.",
            ["source", "limit"],
        )  # fmt: skip
        for key in (*LIMIT_KEYS, "rcvbuf_bytes", "backlog_bytes"):
            limits.set(float(getattr(cfg, key)), self.name, key)
        self.sock: socket.socket | None = None
        self.transport: asyncio.DatagramTransport | None = None
        self.reader: UdpBatchReader | NativeUdpReader | None = None
        self.protocol: NetflowUdpProtocol | None = None
        register_backlog_gauge(ctx.metrics)
        self._task: asyncio.Task[None] | None = None
        self._saved_at = 0.0
        books = _DatagramBooks(self.datagrams, self.rejected)
        self.kernel = KernelDropTracker(self.name, books)  # type: ignore[arg-type]

    async def start(self) -> None:
        try:
            saved = await self.state_slot.load()
        except Exception:
            log.exception("%s: could not load saved templates", self.name)
            saved = None
        if saved:
            n = self.decoder.import_state(saved, self.ctx.clock())
            log.info("%s: %d template(s) restored from the database", self.name, n)
        self.sock = bind_udp(self.cfg.listen, self.cfg.rcvbuf_bytes)
        loop = asyncio.get_running_loop()
        protocol = self.protocol = NetflowUdpProtocol(self)
        native = isinstance(self.decoder, NativeNetflowDecoder)
        if (native and NativeUdpReader.available) or UdpBatchReader.available:
            # Exporters flush their caches in bursts; raw datagrams wait here while the flow
            # path has two batches queued, instead of being decoded only to be dropped. On the
            # native backend a thread of its own keeps the socket empty (and pays the kernel's
            # copy) while the loop decodes and correlates; the loop takes slices of 64.
            common: dict[str, Any] = {
                "max_bytes": 65_535,
                "backlog_bytes": self.cfg.backlog_bytes,
                "batch": 64,
                "slice_": 64,
                "ready": self.flows.wants_more,
                "name": self.name,
                "deliver_batch": protocol.datagrams_received if native else None,
            }
            self.reader = (
                NativeUdpReader(self.sock, protocol.datagram_received, **common)
                if native and NativeUdpReader.available
                else UdpBatchReader(self.sock, protocol.datagram_received, **common)
            )
            self.reader.start(loop)
        else:
            self.transport, _ = await loop.create_datagram_endpoint(
                lambda: protocol, sock=self.sock
            )
        self.kernel.start(self.sock)
        self._task = asyncio.create_task(self._maintain(), name=f"{self.name}-state")
        log.info(
            "%s: listening on udp %s; senders allowed: %s",
            self.name,
            self.sock.getsockname()[:2],
            self.allowed.describe(),
        )

    @property
    def listening(self) -> bool:
        return self.reader is not None or self.transport is not None

    @property
    def address(self) -> tuple[str, int]:
        assert self.sock is not None
        host, port = self.sock.getsockname()[:2]
        return host, port

    def kernel_drops(self) -> int | None:
        return socket_drops(self.sock) if self.sock is not None else None

    async def save_state(self, force: bool = False) -> None:
        """Persist templates when they changed, or when only lifetimes moved and it is time."""
        dec = self.decoder
        now = self.ctx.clock()
        if not (
            force or dec.dirty or (dec.refreshed and now - self._saved_at > REFRESH_SAVE_INTERVAL)
        ):
            return
        state = dec.export_state()
        await self.state_slot.save(state)
        self._saved_at = now

    async def _maintain(self) -> None:
        interval = self.ctx.config.flows.state_save_interval
        while True:
            await asyncio.sleep(interval)
            try:
                self.decoder.expire(self.ctx.clock())
                self._gauge_templates.set(float(self.decoder.template_count), self.name)
                await self.save_state()
            except Exception:
                _rl.log(logging.ERROR, f"state:{self.name}", "%s: template state save failed",
                        self.name, exc_info=True)  # fmt: skip

    async def stop(self) -> None:
        if self.reader is not None:
            # What it holds goes through the protocol now, as the pipeline has room.
            await self.reader.aclose(self.ctx.config.appliance.shutdown_timeout / 2)
            self.reader = None
        if self.sock is not None and self.protocol is not None:
            # Datagrams that reached the socket are decoded (or counted), not lost from the books.
            drain_socket([self.sock], self.protocol.datagram_received)
            self.protocol = None
        self.kernel.stop()  # last read of the kernel's drop count, while the socket is open
        if self.transport is not None:
            self.transport.close()
            self.transport = None
        elif self.sock is not None:
            self.sock.close()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(BaseException):
                await self._task
            self._task = None
            try:
                await self.save_state(force=True)
            except Exception:
                log.exception("%s: could not save templates at stop", self.name)
