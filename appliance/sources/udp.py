"""UDP socket plumbing shared by the syslog, SNMP and NetFlow sources.

We bind the socket ourselves (rather than let ``create_datagram_endpoint`` do it) so that a busy
port fails at start with a clear message, tests can use port 0, and the receive buffer is set
before the first datagram. Kernel drops are invisible to the application, so they are read from
``/proc/net/udp*`` (per socket) and ``/proc/net/snmp`` (``RcvbufErrors``, host-wide) at scrape.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import logging
import os
import socket
import struct
from pathlib import Path
from typing import TYPE_CHECKING

from appliance.config import parse_hostport

if TYPE_CHECKING:
    from appliance.pipeline.bus import Pipeline

log = logging.getLogger(__name__)


class BindError(OSError):
    """A listener could not bind its address (port in use, no permission, no such address)."""


def bind_udp(listen: str, rcvbuf: int) -> socket.socket:
    return bind_udp_group(listen, rcvbuf, 1)[0]


SO_ATTACH_REUSEPORT_CBPF = 51
# Classic BPF: A = random u32 (SKF_AD_OFF + SKF_AD_RANDOM); A %= n; return A. The kernel then
# hands the datagram to socket number A of the SO_REUSEPORT group.
_RANDOM_INDEX = (
    (0x20, 0xFFFFF000 + 56),  # BPF_LD | BPF_W | BPF_ABS
    (0x94, 0),  # BPF_ALU | BPF_MOD | BPF_K (k patched to n)
    (0x16, 0),  # BPF_RET | BPF_A
)


def bind_udp_group(listen: str, rcvbuf: int, n: int) -> list[socket.socket]:
    """``n`` sockets on one address; with ``n > 1`` an ``SO_REUSEPORT`` group whose datagrams
    are spread at random over its sockets. The kernel's default spread hashes the sender's
    address and port, which puts all of one busy firewall's traffic on one socket; random
    spread keeps every decode worker busy (order within a sender is not kept either way)."""
    host, port = parse_hostport(listen)
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    socks: list[socket.socket] = []
    try:
        for _ in range(max(1, n)):
            sock = socket.socket(family, socket.SOCK_DGRAM)
            socks.append(sock)
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            if n > 1:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            set_rcvbuf(sock, rcvbuf)
            sock.bind((host, port))
            port = sock.getsockname()[1]  # port 0: the others join the port the first got
            sock.setblocking(False)
    except OSError as exc:
        for sock in socks:
            sock.close()
        raise BindError(exc.errno, f"cannot bind udp {listen}: {exc.strerror}") from exc
    if n > 1:
        _spread_randomly(socks[0], n)
    return socks


def _spread_randomly(sock: socket.socket, n: int) -> bool:
    code = b"".join(
        struct.pack("<HBBI", op, 0, 0, k if i != 1 else n)
        for i, (op, k) in enumerate(_RANDOM_INDEX)
    )
    buf = ctypes.create_string_buffer(code, len(code))
    prog = struct.pack("HP", len(_RANDOM_INDEX), ctypes.addressof(buf))  # struct sock_fprog
    try:
        sock.setsockopt(socket.SOL_SOCKET, SO_ATTACH_REUSEPORT_CBPF, prog)
        return True
    except OSError as exc:
        log.warning(
            "cannot spread datagrams at random over workers (%s); using the kernel's hash", exc
        )
        return False


def set_rcvbuf(sock: socket.socket, size: int) -> int:
    """Ask for ``size`` bytes of receive buffer; past ``net.core.rmem_max`` try the privileged
    ``SO_RCVBUFFORCE``, and say so when the kernel gives less."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, size)
    got = sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF) // 2  # the kernel reports double
    if got < size and hasattr(socket, "SO_RCVBUFFORCE"):
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUFFORCE, size)
            got = sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF) // 2
    if got < size:
        log.warning(
            "receive buffer is %d bytes, asked for %d: raise net.core.rmem_max "
            "(sysctl -w net.core.rmem_max=%d) to absorb bursts without loss",
            got,
            size,
            size,
        )
    return got


def socket_drops(sock: socket.socket) -> int | None:
    """Datagrams the kernel dropped for this socket (last column of /proc/net/udp{,6})."""
    try:
        inode = str(os.fstat(sock.fileno()).st_ino)
    except OSError:
        return None
    for name in ("/proc/net/udp", "/proc/net/udp6"):
        with contextlib.suppress(OSError):
            for line in Path(name).read_text().splitlines()[1:]:
                cols = line.split()
                if len(cols) >= 13 and cols[9] == inode:
                    return int(cols[-1])
    return None


def host_rcvbuf_errors() -> dict[str, int]:
    """Host-wide ``Udp``/``Udp6`` ``RcvbufErrors`` from /proc/net/snmp and /proc/net/snmp6."""
    out: dict[str, int] = {}
    with contextlib.suppress(OSError, ValueError, IndexError):
        lines = Path("/proc/net/snmp").read_text().splitlines()
        for head, vals in zip(lines[::2], lines[1::2], strict=False):
            if head.startswith("Udp:"):
                keys, values = head.split()[1:], vals.split()[1:]
                out["udp"] = int(dict(zip(keys, values, strict=False)).get("RcvbufErrors", 0))
    with contextlib.suppress(OSError, ValueError):
        for line in Path("/proc/net/snmp6").read_text().splitlines():
            if line.startswith("Udp6RcvbufErrors"):
                out["udp6"] = int(line.split()[1])
    return out


class KernelDropTracker:
    """Counts the datagrams the kernel dropped on a source's socket as received *and* dropped
    (reason ``kernel_buffer_full``), so ``received = stored + dropped`` holds for everything
    that reached the socket, not only for what the application read. Polled once a second and
    once more at stop."""

    def __init__(self, source: str, pipeline: Pipeline, interval: float = 1.0) -> None:
        self.source = source
        self.pipeline = pipeline
        self.interval = interval
        self._sock: socket.socket | None = None
        self._base: int | None = None
        self._task: asyncio.Task[None] | None = None

    def start(self, sock: socket.socket) -> None:
        self._sock = sock
        self._base = socket_drops(sock)
        self._task = asyncio.get_running_loop().create_task(self._poll())

    def poll(self) -> None:
        if self._sock is None or self._base is None:
            return
        now = socket_drops(self._sock)
        if now is not None and now > self._base:
            delta = now - self._base
            self._base = now
            self.pipeline.received.inc(self.source, n=delta)
            self.pipeline.dropped.inc(self.source, "kernel_buffer_full", n=delta)

    async def _poll(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            self.poll()

    def stop(self) -> None:
        self.poll()
        if self._task is not None:
            self._task.cancel()
            self._task = None
        self._sock = None
