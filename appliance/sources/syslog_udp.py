"""Syslog over UDP (RFC 5426): one message per datagram."""

from __future__ import annotations

import asyncio
import logging
import socket
import time

from appliance.config import SyslogSource
from appliance.logutil import RateLimitedLog
from appliance.sources.base import SourceContext
from appliance.sources.syslog_intake import SyslogIntake
from appliance.sources.udp import KernelDropTracker, bind_udp, socket_drops

log = logging.getLogger(__name__)
_rl = RateLimitedLog(log)


class SyslogUdpProtocol(asyncio.DatagramProtocol):
    """Datagram → decode → event → pipeline. Kept small: this runs once per datagram."""

    def __init__(self, source: SyslogUdpSource) -> None:
        self.source = source
        self.name = source.name
        self.pipeline = source.ctx.pipeline
        self.clock = source.ctx.clock
        self.max_bytes = source.cfg.max_message_bytes
        self.intake = source.intake
        self.profiles = source.intake.profiles
        self.rate = source.intake.rate
        self.received = source.ctx.pipeline.received
        self.dropped = source.ctx.pipeline.dropped
        self.truncated = source.truncated

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:  # type: ignore[override]
        name = self.name
        self.received.inc(name)
        ip = addr[0]
        prof = self.profiles.get(ip)
        if prof is None:
            prof = self.intake.profile(ip)
        if not prof.allowed:
            self.dropped.inc(name, "not_allowed")
            _rl.warning(f"deny:{name}", "%s: datagram from %s not in allow-list", name, ip)
            return
        if not data:
            self.dropped.inc(name, "empty")
            return
        if len(data) > self.max_bytes:
            self.truncated.inc(name)
            data = data[: self.max_bytes]
        now = self.clock()
        if self.rate and not self.intake.take(prof, now):
            self.dropped.inc(name, "rate_limited")
            return
        try:
            event = self.intake.event(data, ip, prof, now)
        except Exception:  # a decoder bug must cost one message, never the listener
            self.dropped.inc(name, "decode_error")
            _rl.decoder_bug(name, ip)
            return
        self.pipeline.offer(event, name)

    def error_received(self, exc: Exception) -> None:
        _rl.warning(f"err:{self.name}", "%s: socket error: %s", self.name, exc)


class SyslogUdpSource:
    def __init__(self, cfg: SyslogSource, ctx: SourceContext) -> None:
        self.cfg = cfg
        self.ctx = ctx
        self.name = cfg.label
        self.senders = tuple(ctx.config.sources.syslog_senders)  # reload: changed → restart
        self.intake = SyslogIntake(cfg, ctx.config.sources.syslog_senders, ctx.metrics, "udp")
        self.intake.export_limits(cfg, "rcvbuf_bytes")
        self.truncated = ctx.metrics.counter(
            "syslog_truncated_total",
            "Syslog messages longer than max_message_bytes, cut to the limit (kept).",
            ["source"],
        )
        self.sock: socket.socket | None = None
        self.transport: asyncio.DatagramTransport | None = None
        self.protocol: SyslogUdpProtocol | None = None
        self.kernel = KernelDropTracker(self.name, ctx.pipeline)

    async def start(self) -> None:
        self.sock = bind_udp(self.cfg.listen, self.cfg.rcvbuf_bytes)
        loop = asyncio.get_running_loop()
        self.transport, self.protocol = await loop.create_datagram_endpoint(
            lambda: SyslogUdpProtocol(self), sock=self.sock
        )
        self.kernel.start(self.sock)
        log.info("%s: listening on udp %s", self.name, self.sock.getsockname()[:2])

    @property
    def address(self) -> tuple[str, int]:
        assert self.sock is not None
        host, port = self.sock.getsockname()[:2]
        return host, port

    def kernel_drops(self) -> int | None:
        return socket_drops(self.sock) if self.sock is not None else None

    def drain_socket(self, budget: float = 2.0) -> int:
        """Read what the kernel still holds for us at stop, so datagrams that reached the socket
        are stored (or counted) instead of vanishing from the books; bounded by ``budget``."""
        sock, proto = self.sock, self.protocol
        if sock is None or proto is None:
            return 0
        deadline = time.monotonic() + budget
        n = 0
        while True:
            try:
                data, addr = sock.recvfrom(65_535)
            except OSError:  # BlockingIOError: the queue is empty
                return n
            proto.datagram_received(data, addr)
            n += 1
            if not n % 1024 and time.monotonic() > deadline:
                return n

    async def stop(self) -> None:
        if self.transport is not None:
            self.drain_socket()
        self.kernel.stop()  # last read of the kernel's drop count, while the socket is open
        if self.transport is not None:
            self.transport.close()
            self.transport = None
