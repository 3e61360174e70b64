"""Syslog over UDP (RFC 5426): one message per datagram."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import pickle
import socket
import sys
from typing import Any

import orjson

from appliance.config import SyslogSource
from appliance.logutil import RateLimitedLog
from appliance.sources.base import SourceContext
from appliance.sources.syslog_intake import SyslogIntake
from appliance.sources.syslog_udp_worker import FRAME
from appliance.sources.udp import (
    KernelDropTracker,
    NativeUdpReader,
    UdpBatchReader,
    bind_udp_group,
    drain_socket,
    register_backlog_gauge,
    socket_drops,
)
from appliance.store.segments import decode_line

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
        self.received = source.ctx.pipeline.received
        self.dropped = source.ctx.pipeline.dropped
        self.truncated = source.truncated

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.received.inc(self.name)
        event = self.intake.datagram(
            data, addr[0], self.clock(), self.max_bytes, self.dropped, self.truncated
        )
        if event is not None:
            self.pipeline.offer(event, self.name)

    def datagrams_received(self, items: list[tuple[bytes, tuple[str, int]]]) -> None:
        """A slice of the reader's backlog at once: one native call decodes it all (the
        Python backend loops over :meth:`datagram_received`'s path), one offer queues it."""
        self.received.inc(self.name, n=len(items))
        events = self.intake.datagrams(
            items,
            self.clock(),
            self.max_bytes,
            self.pipeline.store.raw_max_bytes,
            self.dropped,
            self.truncated,
        )
        self.pipeline.offer_batch(events, self.name)

    def receiver_received(self, receiver: Any, n: int) -> int:
        """Up to ``n`` datagrams of a native receiver's backlog, taken and decoded in one
        native call (:class:`~appliance.sources.udp.NativeUdpReader`); how many it took."""
        events, taken, line_bytes = self.intake.receiver_datagrams(
            receiver,
            n,
            self.clock(),
            self.max_bytes,
            self.pipeline.store.raw_max_bytes,
            self.dropped,
            self.truncated,
            self.name,
        )
        if taken:
            self.received.inc(self.name, n=taken)
            self.pipeline.offer_batch(events, self.name, line_bytes)
        return int(taken)

    def error_received(self, exc: Exception) -> None:
        _rl.warning(f"err:{self.name}", "%s: socket error: %s", self.name, exc)


class SyslogUdpSource:
    """A syslog/UDP listener. With ``workers = 0`` (the default) one socket is read here, by a
    native reading thread (:class:`~appliance.sources.udp.NativeUdpReader`) on the native
    backend, else by a :class:`~appliance.sources.udp.UdpBatchReader` on the event loop, and
    decoded by :class:`SyslogUdpProtocol`.
    With ``workers > 0`` the port is an ``SO_REUSEPORT`` group of sockets, each read by a
    decode worker process (:mod:`appliance.sources.syslog_udp_worker`); this process parses
    the lines they send for the rules and stores them as they are. Either way the books are
    the same: ``received = stored + dropped`` by reason."""

    def __init__(self, cfg: SyslogSource, ctx: SourceContext) -> None:
        self.cfg = cfg
        self.ctx = ctx
        self.name = cfg.label
        self.senders = tuple(ctx.config.sources.syslog_senders)  # reload: changed → restart
        self.intake = SyslogIntake(
            cfg, ctx.config.sources.syslog_senders, ctx.metrics, "udp", ctx.decoders
        )
        self.intake.export_limits(cfg, "rcvbuf_bytes", "workers", "backlog_bytes")
        self.truncated = ctx.metrics.counter(
            "syslog_truncated_total",
            "Syslog messages longer than max_message_bytes, cut to the limit (kept).",
            ["source"],
        )
        self.worker_restarts = ctx.metrics.counter(
            "syslog_worker_restarts_total",
            "Syslog/UDP decode worker processes that exited unexpectedly and were restarted.",
            ["source"],
        )
        self.socks: list[socket.socket] = []
        self.transport: asyncio.DatagramTransport | None = None
        self.protocol: SyslogUdpProtocol | None = None
        self.kernel: list[KernelDropTracker] = []
        self.workers: list[_Worker] = []
        self.reader: UdpBatchReader | NativeUdpReader | None = None
        self._stopping = False
        register_backlog_gauge(ctx.metrics)

    @property
    def sock(self) -> socket.socket | None:
        return self.socks[0] if self.socks else None

    async def start(self) -> None:
        n = self.cfg.workers
        self.socks = bind_udp_group(self.cfg.listen, self.cfg.rcvbuf_bytes, max(1, n))
        self.protocol = SyslogUdpProtocol(self)
        loop = asyncio.get_running_loop()
        native = NativeUdpReader.available and self.intake.native
        if n == 0 and (native or UdpBatchReader.available):
            # Both readers keep one contract; only the hand-over differs.
            common: dict[str, Any] = {
                "max_bytes": self.cfg.max_message_bytes,
                "backlog_bytes": self.cfg.backlog_bytes,
                "ready": self.ctx.pipeline.wants_more,
                "name": self.name,
            }
            sock, proto = self.socks[0], self.protocol
            self.reader = (
                NativeUdpReader(
                    sock, proto.datagram_received, deliver_native=proto.receiver_received, **common
                )
                if native
                else UdpBatchReader(
                    sock, proto.datagram_received, deliver_batch=proto.datagrams_received, **common
                )
            )
            self.reader.start(loop)
        elif n == 0:
            protocol = self.protocol
            assert protocol is not None  # made with the sockets above
            self.transport, _ = await loop.create_datagram_endpoint(
                lambda: protocol, sock=self.socks[0]
            )
        else:
            self.workers = [_Worker(self, sock, n) for sock in self.socks]
            try:
                for worker in self.workers:
                    await worker.start()
            except BaseException:
                await self.stop()
                raise
        for sock in self.socks:
            tracker = KernelDropTracker(self.name, self.ctx.pipeline)
            tracker.start(sock)
            self.kernel.append(tracker)
        how = f"{n} decode workers" if n else "decoding in-process"
        log.info(
            "%s: listening on udp %s (%s); senders allowed: %s",
            self.name,
            self.socks[0].getsockname()[:2],
            how,
            self.intake.allowed.describe(),
        )

    @property
    def listening(self) -> bool:
        return bool(self.socks)

    @property
    def address(self) -> tuple[str, int]:
        assert self.socks
        host, port = self.socks[0].getsockname()[:2]
        return host, port

    def kernel_drops(self) -> int | None:
        drops = [socket_drops(s) for s in self.socks]
        known = [d for d in drops if d is not None]
        return sum(known) if known else None

    async def stop(self) -> None:
        self._stopping = True
        if self.workers:
            await asyncio.gather(*(w.stop() for w in self.workers))
            self.workers = []
        if self.reader is not None:
            # What it holds goes through the protocol now, as the pipeline has room.
            await self.reader.aclose(self.ctx.config.appliance.shutdown_timeout / 2)
            self.reader = None
        if self.socks and self.protocol is not None:
            # Datagrams that reached a socket are stored (or counted), not lost from the books.
            drain_socket(self.socks, self.protocol.datagram_received)
        for tracker in self.kernel:
            tracker.stop()  # last read of the kernel's drop count, while the socket is open
        self.kernel = []
        if self.transport is not None:
            self.transport.close()
            self.transport = None
        else:
            for sock in self.socks:
                sock.close()
        self.socks = []


class _Worker:
    """One decode worker process and the task that reads its frames."""

    def __init__(self, source: SyslogUdpSource, sock: socket.socket, n: int) -> None:
        self.source = source
        self.sock = sock
        self.n = n
        self.proc: asyncio.subprocess.Process | None = None
        self.task: asyncio.Task[None] | None = None
        self.last_metrics: dict[str, dict[tuple[str, ...], float]] = {}

    async def start(self) -> None:
        src = self.source
        self.last_metrics = {}
        self.proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "appliance.sources.syslog_udp_worker",
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            pass_fds=(self.sock.fileno(),),
            start_new_session=True,  # a terminal's Ctrl-C goes to us; we stop the worker
            limit=1 << 22,
        )
        assert self.proc.stdin is not None
        setup = (
            src.cfg,
            list(src.senders),
            self.n,
            src.ctx.config.storage.raw_max_bytes,
            self.sock.fileno(),
            src.ctx.config.decoder_paths,
        )
        self.proc.stdin.write(pickle.dumps(setup))
        await self.proc.stdin.drain()
        self.task = asyncio.get_running_loop().create_task(self._read(self.proc))

    async def _read(self, proc: asyncio.subprocess.Process) -> None:
        src = self.source
        stdout = proc.stdout
        assert stdout is not None
        offer = src.ctx.pipeline.offer
        metrics = src.ctx.metrics
        name = src.name
        head_size = FRAME.size
        while True:
            try:
                lines, body_len, metrics_len = FRAME.unpack(await stdout.readexactly(head_size))
                body = await stdout.readexactly(body_len) if body_len else b""
                snapshot = await stdout.readexactly(metrics_len) if metrics_len else b""
            except (asyncio.IncompleteReadError, ConnectionError):
                break
            if lines:
                for line in body.split(b"\n"):
                    try:
                        event = decode_line(line)
                    except (ValueError, TypeError):  # a worker bug: count, carry on
                        src.ctx.pipeline.dropped.inc(name, "decode_error")
                        continue
                    offer(event, name)
            if snapshot:
                metrics.apply_snapshot(orjson.loads(snapshot), self.last_metrics)
        code = await proc.wait()
        if not src._stopping:
            src.worker_restarts.inc(name)
            _rl.warning(f"worker:{name}", "%s: decode worker exited (%s); restarting", name, code)
            await asyncio.sleep(0.5)
            if not src._stopping:
                await self.start()

    async def stop(self, timeout: float = 30.0) -> None:
        proc, task = self.proc, self.task
        if proc is None:
            return
        if proc.stdin is not None:
            proc.stdin.close()  # EOF: the worker flushes what it holds and exits
        try:
            if task is not None:
                await asyncio.wait_for(asyncio.shield(task), timeout)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        await proc.wait()
