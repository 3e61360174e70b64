"""A syslog/UDP decode worker process: datagrams in on its socket, stored lines out on stdout.

Why processes: on a 2-core box one interpreter cannot receive, decode and correlate 50,000
messages a second. The listener's sockets form an ``SO_REUSEPORT`` group that spreads
datagrams over the workers (randomly, so one busy sender is spread too); each worker runs the
same :class:`~appliance.sources.syslog_intake.SyslogIntake` as the in-process listener and
sends each event as the line the store keeps (:mod:`appliance.store.segments`). The parent
parses lines for the rules and stores them as they are, so nothing is encoded twice.

Setup arrives on stdin as one pickle from the parent (our own process; the pipe is private):
``(cfg, senders, workers, raw_max, fd, decoder_paths)``. Frames out (little-endian):
``u32 lines, u32 body, u32 metrics`` then the ``\\n``-joined lines and, when counters
changed, a JSON snapshot of the worker's metrics (the parent applies the differences). EOF on
stdin means stop: the worker flushes what it holds and exits; the parent then drains the
sockets itself.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import pickle
import select
import signal
import socket
import struct
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import BinaryIO

import orjson

from appliance.config import SyslogSender, SyslogSource
from appliance.metrics import Registry
from appliance.store.segments import encode_line

FRAME = struct.Struct("<III")
BATCH_LINES = 512
FLUSH_SECONDS = 0.02
_F_SETPIPE_SZ = 1031


class SyslogUdpWorker:
    """The worker's loop, kept apart from process setup so a test can drive it in-process."""

    def __init__(
        self,
        cfg: SyslogSource,
        senders: list[SyslogSender],
        workers: int,
        raw_max: int,
        sock: socket.socket,
        out: BinaryIO,
        decoder_paths: list[Path] | None = None,
    ) -> None:
        from appliance.protocols.syslog.vendors import build_registry
        from appliance.sources.syslog_intake import SyslogIntake

        if cfg.rate_limit and workers > 1:  # each worker holds its share of a sender's bucket
            cfg = replace(
                cfg,
                rate_limit=cfg.rate_limit / workers,
                rate_burst=max(1, cfg.rate_burst // workers),
            )
        self.cfg = cfg
        self.name = cfg.label
        self.raw_max = raw_max
        self.sock = sock
        self.out = out
        self.registry = Registry()
        # The parent logged any bad site file already; the worker uses the ones that load.
        decoders = build_registry(decoder_paths or []).registry
        self.intake = SyslogIntake(cfg, senders, self.registry, "udp", decoders)
        self.received = self.registry.counter("events_received_total", "", ["source"])
        self.dropped = self.registry.counter("events_dropped_total", "", ["source", "reason"])
        self.truncated = self.registry.counter("syslog_truncated_total", "", ["source"])
        self.lines: list[bytes] = []
        self.first = 0.0
        self._sent_metrics: bytes = b""

    def receive(self, budget: int = BATCH_LINES) -> int:
        """Read and decode what the socket holds (at most ``budget`` datagrams)."""
        sock, name, lines = self.sock, self.name, self.lines
        max_bytes = self.cfg.max_message_bytes
        items: list[tuple[bytes, tuple[str, int]]] = []
        while len(items) < budget:
            try:
                data, addr = sock.recvfrom(65_535)
            except (BlockingIOError, InterruptedError):
                break
            except OSError:  # ICMP errors and the like: the socket stays usable
                break
            items.append((data, addr))
        if not items:
            return 0
        # One decode call for what the socket held (one native call on the native backend).
        self.received.inc(name, n=len(items))
        now = time.time()
        events = self.intake.datagrams(
            items, now, max_bytes, self.raw_max, self.dropped, self.truncated
        )
        if events and not lines:
            self.first = now
        raw_max = self.raw_max
        for ev in events:
            line = ev.line
            if line is None:
                line = encode_line(ev.timestamp, ev.created, ev.module, ev.fields, ev.raw[:raw_max])
            lines.append(line)
        return len(items)

    def flush(self, force: bool = False) -> None:
        """Send the held lines (and changed counters) when the batch is full or old enough."""
        lines = self.lines
        if (
            lines
            and not force
            and len(lines) < BATCH_LINES
            and time.time() - self.first < FLUSH_SECONDS
        ):
            return
        snapshot = orjson.dumps(self.registry.snapshot())
        metrics = b"" if snapshot == self._sent_metrics else snapshot
        if not lines and not metrics:
            return
        body = b"\n".join(lines)
        self.out.write(FRAME.pack(len(lines), len(body), len(metrics)) + body + metrics)
        self.out.flush()
        self._sent_metrics = snapshot
        self.lines = []

    def run(self, control: int) -> None:
        """Until ``control`` (the parent's pipe) reaches EOF."""
        poller = select.poll()
        poller.register(self.sock.fileno(), select.POLLIN)
        poller.register(control, select.POLLIN | select.POLLHUP)
        while True:
            ready = poller.poll(FLUSH_SECONDS * 1000)
            stop = False
            for fd, _mask in ready:
                if fd == control:
                    stop = not os.read(control, 4096)
            while self.receive() == BATCH_LINES:
                self.flush()
            self.flush(force=not ready or stop)
            if stop:
                return


def main() -> int:
    # The parent decides when we stop (it closes our stdin); a Ctrl-C or SIGTERM sent to the
    # whole process group must not cut a batch short.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    logging.basicConfig(
        level=logging.INFO, stream=sys.stderr, format="%(levelname)s %(name)s: %(message)s"
    )
    cfg, senders, workers, raw_max, fd, decoder_paths = pickle.load(  # noqa: S301 - our parent
        sys.stdin.buffer
    )
    sock = socket.socket(fileno=fd)
    sock.setblocking(False)
    out = sys.stdout.buffer
    with contextlib.suppress(OSError):  # room for a few batches in flight
        fcntl.fcntl(out.fileno(), _F_SETPIPE_SZ, 1 << 20)
    worker = SyslogUdpWorker(cfg, senders, workers, raw_max, sock, out, decoder_paths)
    try:
        worker.run(sys.stdin.fileno())
        worker.flush(force=True)
    except BrokenPipeError:
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
