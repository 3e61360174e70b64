"""Syslog over TCP (RFC 6587) and TLS (RFC 5425): a thin asyncio adapter around the framer.

Bytes go through :class:`~appliance.protocols.syslog.framing.SyslogFramer`, frames through the
shared :class:`~appliance.sources.syslog_intake.SyslogIntake` (``admit``: rate limit, then
decode, as for a datagram). Streams are never dropped for being fast: when the pipeline queue
is full the connection stops reading (TCP pushes back on the sender) and resumes once the queue
has room (:class:`~appliance.sources.flow_control.ReadFlow` keeps when to read). Limits:
connections in total and per sender address, idle time, time to finish a started frame, TLS
handshake time.

TLS runs on memory BIOs in a sans-I/O session
(:class:`~appliance.sources.tls_session.ServerTlsSession`) rather than asyncio's SSL transport
so that every handshake failure is seen here and counted by reason (plaintext on the TLS port,
unknown CA, expired certificate, no certificate, not on the allow-list, stalled) with asyncio
and uvloop alike.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import ssl
import sys
from collections.abc import Callable
from pathlib import Path

from appliance.config import SyslogSource, parse_hostport
from appliance.logutil import RateLimitedLog, printable
from appliance.protocols.syslog.framing import new_framer
from appliance.sources.base import SourceContext
from appliance.sources.flow_control import ReadFlow
from appliance.sources.syslog_intake import SenderProfile, SyslogIntake
from appliance.sources.tls_session import (
    ClientAllowList,
    ServerTlsSession,
    TlsRefused,
)
from appliance.sources.udp import BindError

log = logging.getLogger(__name__)
_rl = RateLimitedLog(log)

# Framer problems that lose a message (counted as drops); the others keep a (cut) message.
_DISCARDING = ("octet_count_invalid", "octet_count_zero", "incomplete_frame")
FRAMES_PER_TURN = 512
# Frames decoded per call between two looks at the pipeline's room (wants_more): small enough
# that a full pipeline pauses the read soon, large enough that the call's cost is shared.
FRAMES_PER_CALL = 128
# Linux's SO_PEERNAME (asm-generic value; Python does not export it). None elsewhere.
_SO_PEERNAME: int | None = 28 if sys.platform.startswith("linux") else None
_SOCKADDR = {socket.AF_INET: (16, 4, 8), socket.AF_INET6: (28, 8, 24)}  # size, address slice


def stream_peer(transport: asyncio.BaseTransport) -> str:
    """The address of a stream's peer, or ``""`` when it cannot be known.

    Why not just ``get_extra_info("peername")``: a client that sends and then resets before the
    connection is accepted leaves a closed socket in the accept queue whose data the kernel
    still delivers. asyncio keeps the address ``accept()`` returned, but uvloop asks
    ``getpeername()``, which fails with ENOTCONN on a closed socket, so the peer looks unknown
    and its frames would be lost. Linux's ``SO_PEERNAME`` answers from the same place as
    ``accept()``, whatever the socket's state.
    """
    peer = transport.get_extra_info("peername")
    if peer:
        return str(peer[0])
    sock = transport.get_extra_info("socket")
    if sock is None or _SO_PEERNAME is None or sock.family not in _SOCKADDR:
        return ""
    size, start, end = _SOCKADDR[sock.family]
    try:
        raw = sock.getsockopt(socket.SOL_SOCKET, _SO_PEERNAME, size)
    except OSError:
        return ""
    if len(raw) < end:
        return ""
    return socket.inet_ntop(sock.family, raw[start:end])


def bind_tcp(listen: str, backlog: int = 1024) -> socket.socket:
    host, port = parse_hostport(listen)
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        sock.bind((host, port))
        sock.listen(backlog)
    except OSError as exc:
        sock.close()
        raise BindError(exc.errno, f"cannot bind tcp {listen}: {exc.strerror}") from exc
    sock.setblocking(False)
    return sock


def server_tls_context(cfg: SyslogSource, resolve: Callable[[str], Path]) -> ssl.SSLContext:
    """RFC 5425 server side: TLS >= 1.2, our certificate, client certificates when a CA is set."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = (
        ssl.TLSVersion.TLSv1_3 if cfg.tls_min_version == "1.3" else ssl.TLSVersion.TLSv1_2
    )
    ctx.options |= ssl.OP_NO_RENEGOTIATION | ssl.OP_NO_COMPRESSION
    # No TLS 1.3 session tickets: syslog senders never read, so a ticket left unread in their
    # socket turns their close into a RST, and the kernel then discards our unread records.
    ctx.num_tickets = 0
    ctx.load_cert_chain(str(resolve(cfg.tls_cert)), str(resolve(cfg.tls_key)))
    if cfg.tls_client_ca:
        ctx.verify_mode = ssl.CERT_REQUIRED
        ctx.load_verify_locations(cafile=str(resolve(cfg.tls_client_ca)))
    return ctx


class SyslogStreamProtocol(asyncio.Protocol):
    """One connection: (TLS) → framer → intake → pipeline, pausing when the queue is full."""

    def __init__(self, source: SyslogStreamSource) -> None:
        self.source = source
        self.name = source.name
        self.pipeline = source.ctx.pipeline
        self.intake = source.intake
        self.received = source.ctx.pipeline.received
        self.dropped = source.ctx.pipeline.dropped
        self.framer = new_framer(source.cfg.max_frame_bytes, source.cfg.max_count_digits)
        self.transport: asyncio.Transport | None = None
        self.ip = ""
        self.prof: SenderProfile  # set in connection_made, before any data
        self.loop = asyncio.get_running_loop()
        self.started = self.last_active = self.last_frame = self.loop.time()
        self.flow = ReadFlow()  # backpressure and yields (appliance.sources.flow_control)
        self.closed = False
        self.registered = False
        self.tls: ServerTlsSession | None = None  # set in connection_made on a TLS listener
        self.eof = False  # the peer closed its side cleanly (FIN)
        self.reset = False  # the stream ended abnormally (RST, error) before any clean EOF

    # ------------------------------------------------------------------ connection lifecycle

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's is no subclass
        self.ip = stream_peer(transport)
        if not self.ip:  # an address that cannot be checked against the allow-list
            self._reject("peer_unknown")
            _rl.warning(
                f"peer:{self.name}",
                "%s: connection from an unknown peer address refused",
                self.name,
            )
            return
        src = self.source
        self.prof = self.intake.profile(self.ip)
        if not self.prof.allowed:
            self._reject("not_allowed")
            _rl.warning(
                f"deny:{self.name}", "%s: connection from %s not in allow-list", self.name, self.ip
            )
            return
        if len(src.connections) >= src.cfg.max_connections:
            self._reject("too_many_connections")
            return
        if src.per_ip.get(self.ip, 0) >= src.cfg.max_connections_per_ip:
            self._reject("too_many_per_ip")
            return
        src.connections.add(self)
        src.per_ip[self.ip] = src.per_ip.get(self.ip, 0) + 1
        self.registered = True
        src.accepted.inc(self.name)
        if src.tls_context is not None:
            self.tls = ServerTlsSession(src.tls_context, src.client_allow)

    def _reject(self, reason: str) -> None:
        self.source.rejected.inc(self.name, reason)
        self.closed = True
        assert self.transport is not None
        self.transport.abort()

    def close(self, reason: str) -> None:
        """Close on our initiative (limits, errors), counting why."""
        if self.closed:
            return
        self.source.closed.inc(self.name, reason)
        self.closed = True
        if self.transport is not None:
            self.transport.abort()

    def eof_received(self) -> bool | None:
        self.eof = True
        return None  # close our side too; syslog senders never read

    def connection_lost(self, exc: Exception | None) -> None:
        if exc is not None and not self.eof:
            self.reset = True
        self.closed = True
        if self.registered:
            self.registered = False
            src = self.source
            src.connections.discard(self)
            left = src.per_ip.get(self.ip, 1) - 1
            if left > 0:
                src.per_ip[self.ip] = left
            else:
                src.per_ip.pop(self.ip, None)
        if not self.flow.holding:
            self._finish()

    def _finish(self) -> None:
        """The stream ended: a last unterminated line is a message; half a counted frame is not.

        Only a clean end (the peer's FIN, or our own close) says the sender finished its last
        line; after a reset the bytes after the last LF are the start of a line cut off, so
        they are counted as ``incomplete_frame`` like half an octet-counted frame.
        """
        for frame in self.framer:
            self._message(frame)
        tail = self.framer.close()
        self._count_framer_errors()
        if tail is not None:
            if self.reset:
                self._count_frame_error("incomplete_frame", 1)
            else:
                self._message(tail)

    # ------------------------------------------------------------------------- reading

    def data_received(self, data: bytes) -> None:
        self.last_active = self.loop.time()
        tls = self.tls
        if tls is not None:
            try:
                data = tls.receive(data)
            except TlsRefused as exc:
                self._tls_refused(exc)
                return
            self._tls_flush()
            if not data:
                if tls.eof and self.transport is not None:
                    self.transport.close()
                return
        self.framer.feed(data)
        self._drain()
        if tls is not None and tls.eof and self.transport is not None:
            self.transport.close()

    def _tls_refused(self, exc: TlsRefused) -> None:
        """Count and log why the TLS stream ends, send the session's alert if it has one, and
        close."""
        reason = exc.reason
        self.source.tls_errors.inc(self.name, reason)
        if reason == "plaintext":
            _rl.warning(
                f"plain:{self.name}", "%s: plaintext from %s on the TLS port", self.name, self.ip
            )
        elif reason == "client_not_allowed":
            _rl.warning(
                f"cert:{self.name}",
                "%s: client certificate of %s not allowed",
                self.name,
                self.ip,
            )
        else:
            _rl.warning(
                f"tls:{self.name}:{reason}",
                "%s: TLS error from %s: %s",
                self.name,
                self.ip,
                printable(exc.detail),
            )
        if exc.answer:
            self._tls_flush()
        self.close("tls_error")

    def _tls_flush(self) -> None:
        assert self.tls is not None
        out = self.tls.data_to_send()
        if out and self.transport is not None and not self.transport.is_closing():
            self.transport.write(out)

    def _drain(self) -> None:
        """Hand complete frames to the pipeline while it has room (else pause reading), at most
        ``FRAMES_PER_TURN`` per loop turn so one busy sender cannot starve the API, the other
        connections and the pipeline's own writer task. Runs once per socket read, so the
        per-message work below is kept to the decode itself."""
        framer = self.framer
        pipeline = self.pipeline
        # Two batches queued keep the store busy; more would only hold decoded events
        # (several kB each) in memory while the sender's bytes can wait in the socket.
        has_room = pipeline.wants_more
        wanted = pipeline.wanted
        stream = self.intake.stream
        offer_batch = pipeline.offer_batch
        dropped = self.dropped
        prof = self.prof
        ip, name = self.ip, self.name
        raw_max = pipeline.store.raw_max_bytes
        now = self.source.ctx.clock()  # one receive time per socket read
        budget = FRAMES_PER_TURN
        taken = 0
        while True:
            if not has_room():
                self._pause()
                break
            if taken == budget:
                self._yield()
                break
            # The frames at hand, up to one chunk, taken and decoded in one call (one native
            # call on the native backend) and queued in one offer.
            # Never more than the pipeline wants now (two batches queued, and never past the
            # queue's limit): a stream's sender waits in the socket, it is not dropped.
            want = min(FRAMES_PER_CALL, budget - taken, wanted())
            if want <= 0:
                self._pause()
                break
            events, n, line_bytes = stream(framer, want, ip, prof, now, raw_max, dropped, name)
            if not n:
                break
            taken += n
            offer_batch(events, name, line_bytes)
            if n < want:
                break  # the framer is empty
        if taken:
            self.received.inc(name, n=taken)
            self.last_frame = self.loop.time()
        if framer.errors:
            self._count_framer_errors()

    def _message(self, frame: bytes) -> None:
        """One frame outside the drain loop (the unterminated tail at close)."""
        name = self.name
        self.received.inc(name)
        now = self.source.ctx.clock()
        event = self.intake.admit(frame, self.ip, self.prof, now, self.dropped, "frame")
        if event is not None:
            self.pipeline.offer(event, name)

    def _count_framer_errors(self) -> None:
        errors = self.framer.errors
        for reason, n in errors.items():
            self._count_frame_error(reason, n)
        errors.clear()

    def _count_frame_error(self, reason: str, n: int) -> None:
        src = self.source
        src.frame_errors.inc(self.name, reason, n=n)
        if reason in _DISCARDING:
            self.received.inc(self.name, n=n)
            self.dropped.inc(self.name, reason, n=n)
        elif reason == "frame_too_long":
            src.truncated.inc(self.name, n=n)

    def _set_reading(self) -> None:
        """Read from the socket only while neither backpressure nor a yield holds frames back."""
        if self.transport is None:
            return
        change = self.flow.reading_change(self.closed)
        if change is True:
            self.transport.pause_reading()
        elif change is False:
            self.transport.resume_reading()

    def _pause(self) -> None:
        if self.flow.pause():
            self.source.paused.inc(self.name)
            self._set_reading()
            self.pipeline.call_when_room(self._resume)

    def _resume(self) -> None:
        self.flow.resume()
        self._drain()
        self._set_reading()
        if self.closed and not self.flow.holding:
            self._finish()

    def _yield(self) -> None:
        if self.flow.yield_turn():
            self._set_reading()
            self.loop.call_soon(self._continue)

    def _continue(self) -> None:
        self.flow.next_turn()
        self._drain()
        self._set_reading()
        if self.closed and not self.flow.holding:
            self._finish()

    # ------------------------------------------------------------------------ timers

    def check_timers(self, now: float) -> None:
        cfg = self.source.cfg
        if self.flow.holding or self.closed:
            return
        if (
            self.tls is not None
            and not self.tls.handshaken
            and now - self.started > cfg.tls_handshake_timeout
        ):
            self.source.tls_errors.inc(self.name, "handshake_timeout")
            self.close("tls_error")
        elif now - self.last_active > cfg.idle_timeout:
            self.close("idle_timeout")
        elif self.framer.buffered and now - self.last_frame > cfg.frame_timeout:
            self.source.frame_errors.inc(self.name, "frame_timeout")
            self.close("frame_timeout")


class SyslogStreamSource:
    """A ``protocol = "tcp"`` or ``"tls"`` syslog listener."""

    def __init__(self, cfg: SyslogSource, ctx: SourceContext) -> None:
        self.cfg = cfg
        self.ctx = ctx
        self.name = cfg.label
        self.senders = tuple(ctx.config.sources.syslog_senders)  # reload: changed → restart
        self.intake = SyslogIntake(
            cfg, ctx.config.sources.syslog_senders, ctx.metrics, cfg.protocol, ctx.decoders
        )
        self.tls_context: ssl.SSLContext | None = None
        self.client_allow = ClientAllowList(cfg.tls_client_allowed)
        self.connections: set[SyslogStreamProtocol] = set()
        self.per_ip: dict[str, int] = {}
        self.sock: socket.socket | None = None
        self.server: asyncio.AbstractServer | None = None
        self._sweeper: asyncio.Task[None] | None = None
        m = ctx.metrics
        self.accepted = m.counter(
            "syslog_connections_accepted_total", "TCP/TLS connections accepted.", ["source"]
        )
        self.rejected = m.counter(
            "syslog_connections_rejected_total",
            "TCP/TLS connections refused at accept, by reason (allow-list, limits, peer_unknown).",
            ["source", "reason"],
        )
        self.closed = m.counter(
            "syslog_connections_closed_total",
            "TCP/TLS connections we closed, by reason (idle_timeout, frame_timeout, tls_error).",
            ["source", "reason"],
        )
        self.frame_errors = m.counter(
            "syslog_frame_errors_total",
            "RFC 6587 framing problems, by reason.",
            ["source", "reason"],
        )
        self.tls_errors = m.counter(
            "syslog_tls_errors_total",
            "TLS handshake and stream failures, by reason.",
            ["source", "reason"],
        )
        self.paused = m.counter(
            "syslog_backpressure_pauses_total",
            "Times a connection stopped reading because the pipeline queue was full.",
            ["source"],
        )
        self.truncated = m.counter(
            "syslog_truncated_total",
            "Syslog messages longer than the size limit, cut to the limit (kept).",
            ["source"],
        )
        self.active = m.gauge("syslog_connections", "Open TCP/TLS syslog connections.", ["source"])
        self.intake.export_limits(
            cfg,
            "max_connections",
            "max_connections_per_ip",
            "max_frame_bytes",
            "max_count_digits",
            "idle_timeout",
            "frame_timeout",
            "tls_handshake_timeout",
        )

    async def start(self) -> None:
        if self.cfg.protocol == "tls":
            self.tls_context = server_tls_context(self.cfg, self.ctx.config.path)
        self.sock = bind_tcp(self.cfg.listen)
        loop = asyncio.get_running_loop()
        self.server = await loop.create_server(lambda: SyslogStreamProtocol(self), sock=self.sock)
        self._sweeper = asyncio.create_task(self._sweep(), name=f"{self.name}-timers")
        log.info(
            "%s: listening on %s %s", self.name, self.cfg.protocol, self.sock.getsockname()[:2]
        )

    @property
    def listening(self) -> bool:
        return self.server is not None and self.server.is_serving()

    @property
    def address(self) -> tuple[str, int]:
        assert self.sock is not None
        host, port = self.sock.getsockname()[:2]
        return host, port

    async def _sweep(self) -> None:
        cfg = self.cfg
        interval = min(
            1.0, cfg.idle_timeout / 4, cfg.frame_timeout / 4, cfg.tls_handshake_timeout / 4
        )
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(interval)
            now = loop.time()
            for conn in list(self.connections):
                conn.check_timers(now)
            self.active.set(float(len(self.connections)), self.name)

    async def stop(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sweeper
            self._sweeper = None
        if self.server is not None:
            self.server.close()
            for conn in list(self.connections):
                if conn.transport is not None:
                    conn.transport.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.server.wait_closed(), 2.0)
            self.server = None
        self.active.set(0.0, self.name)
