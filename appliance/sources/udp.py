"""UDP socket plumbing shared by the syslog, SNMP and NetFlow sources.

We bind the socket ourselves (rather than let ``create_datagram_endpoint`` do it) so that a busy
port fails at start with a clear message, tests can use port 0, and the receive buffer is set
before the first datagram. Kernel drops are invisible to the application, so they are read from
``/proc/net/udp*`` (per socket) and ``/proc/net/snmp`` (``RcvbufErrors``, host-wide) at scrape.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import ctypes
import logging
import mmap
import os
import socket
import struct
import time
import weakref
from collections.abc import Callable, Sequence
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from appliance import dataplane
from appliance.config import parse_hostport
from appliance.logutil import RateLimitedLog

if TYPE_CHECKING:
    from appliance.metrics import Registry
    from appliance.pipeline.bus import Pipeline

log = logging.getLogger(__name__)
_rl = RateLimitedLog(log)


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


def _spread_randomly(sock: socket.socket, n: int) -> None:
    code = b"".join(
        struct.pack("<HBBI", op, 0, 0, k if i != 1 else n)
        for i, (op, k) in enumerate(_RANDOM_INDEX)
    )
    buf = ctypes.create_string_buffer(code, len(code))
    prog = struct.pack("HP", len(_RANDOM_INDEX), ctypes.addressof(buf))  # struct sock_fprog
    try:
        sock.setsockopt(socket.SOL_SOCKET, SO_ATTACH_REUSEPORT_CBPF, prog)
    except OSError as exc:
        log.warning(
            "cannot spread datagrams at random over workers (%s); using the kernel's hash", exc
        )


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
    """Datagrams the kernel dropped for this socket (last column of /proc/net/udp{,6}).

    Read through /proc/self/net (what /proc/net links to): the systemd unit's
    ``ProcSubset=pid`` hides /proc/net itself."""
    try:
        inode = str(os.fstat(sock.fileno()).st_ino)
    except OSError:
        return None
    for name in ("/proc/self/net/udp", "/proc/self/net/udp6"):
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
        lines = Path("/proc/self/net/snmp").read_text().splitlines()
        for head, vals in zip(lines[::2], lines[1::2], strict=False):
            if head.startswith("Udp:"):
                keys, values = head.split()[1:], vals.split()[1:]
                out["udp"] = int(dict(zip(keys, values, strict=False)).get("RcvbufErrors", 0))
    with contextlib.suppress(OSError, ValueError):
        for line in Path("/proc/self/net/snmp6").read_text().splitlines():
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


class _Iovec(ctypes.Structure):
    _fields_ = [("iov_base", ctypes.c_void_p), ("iov_len", ctypes.c_size_t)]


class _Msghdr(ctypes.Structure):
    _fields_ = [
        ("msg_name", ctypes.c_void_p),
        ("msg_namelen", ctypes.c_uint32),
        ("msg_iov", ctypes.POINTER(_Iovec)),
        ("msg_iovlen", ctypes.c_size_t),
        ("msg_control", ctypes.c_void_p),
        ("msg_controllen", ctypes.c_size_t),
        ("msg_flags", ctypes.c_int),
    ]


class _Mmsghdr(ctypes.Structure):
    _fields_ = [("msg_hdr", _Msghdr), ("msg_len", ctypes.c_uint)]


_MSG_DONTWAIT = 0x40
_NAME = 128  # sizeof(struct sockaddr_storage)


def _recvmmsg() -> Callable[..., int] | None:
    try:
        fn = ctypes.CDLL(None, use_errno=True).recvmmsg
    except (OSError, AttributeError):
        return None
    fn.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_uint, ctypes.c_int, ctypes.c_void_p]
    fn.restype = ctypes.c_int
    return fn


@lru_cache(maxsize=65_536)
def sockaddr_text(sockaddr: bytes) -> tuple[str, int]:
    """``(address, port)`` of a raw ``sockaddr_in`` (16 bytes) or ``sockaddr_in6`` (28):
    cached (bounded), since senders are few and repeat every datagram."""
    port = int.from_bytes(sockaddr[2:4], "big")
    if len(sockaddr) == 28:
        return socket.inet_ntop(socket.AF_INET6, sockaddr[8:24]), port
    return socket.inet_ntop(socket.AF_INET, sockaddr[4:8]), port


# Datagrams decoded between two asks of ``ready`` within a slice: at most this many lines go
# past the point where the pipeline said it had enough (64 datagrams of 8 KiB: about 1 MiB of
# lines at worst, against the half of pipeline.queue_bytes kept as headroom).
READY_EVERY = 64


class UdpBatchReader:
    """Reads a UDP socket many datagrams per system call (``recvmmsg``) into a bounded backlog
    of raw datagrams that the event loop decodes a slice at a time.

    Why: with one callback per datagram the loop reads only as fast as it decodes, so a burst
    larger than the kernel's receive buffer (``net.core.rmem_max`` caps it: a sender's
    start-up burst, a firewall's flush after a link flap) is lost while the loop is busy.
    Here every loop turn first empties the socket into memory (a few hundred bytes a datagram
    and ~3 µs), then decodes at most ``slice_`` of them; up to ``backlog_bytes`` of payload
    are held, past that reading pauses and the kernel's buffer (and its drop counter) takes
    over. Bursts cost latency instead of messages. While ``ready()`` says the pipeline has
    enough queued, datagrams wait here raw rather than decoded (several kB each).
    """

    available = _recvmmsg() is not None

    def __init__(
        self,
        sock: socket.socket,
        deliver: Callable[[bytes, tuple[str, int]], None],
        *,
        max_bytes: int,
        backlog_bytes: int,
        batch: int = 256,
        slice_: int = 512,
        ready: Callable[[], bool] | None = None,
        name: str = "",
        deliver_batch: Callable[[list[tuple[bytes, tuple[str, int]]]], None] | None = None,
    ) -> None:
        self.name = name
        # Given, a slice goes to it as one list (one native call for the whole slice)
        # instead of to ``deliver`` one datagram at a time.
        self.deliver_batch = deliver_batch
        self.full = 0  # times the backlog reached backlog_bytes and reading paused
        self.sock = sock
        self.deliver = deliver
        self.backlog_bytes = backlog_bytes
        self.ready = ready
        # Payloads and their senders in two parallel deques, not one of (payload, sender)
        # tuples: a tuple per datagram was 56 of the 98 bytes each held beside its payload.
        self.backlog: collections.deque[bytes] = collections.deque()
        self._senders: collections.deque[tuple[str, int]] = collections.deque()
        self.held = 0  # payload bytes in the backlog
        self._slice = slice_
        self._loop: asyncio.AbstractEventLoop | None = None
        self._reading = False
        self._scheduled: asyncio.Handle | None = None
        recvmmsg = _recvmmsg()
        assert recvmmsg is not None
        self._recvmmsg = recvmmsg
        # One byte more than the limit: a longer datagram arrives cut to max_bytes + 1, so
        # ``deliver`` still sees that it was too long (and counts it).
        self._size = size = max_bytes + 1
        self._n = n = batch
        # Anonymous memory the kernel maps on first touch: a datagram of a few hundred bytes
        # touches one page of its slot, so the buffer costs what arrives, not ``batch`` times
        # the largest datagram zeroed up front (16 MiB and ~3 ms a reader for NetFlow's 64 KiB).
        self._buf = mmap.mmap(-1, n * size)
        buf_addr = ctypes.addressof(ctypes.c_char.from_buffer(self._buf))
        self._names = ctypes.create_string_buffer(n * _NAME)
        self._iovs = (_Iovec * n)()
        self._msgs = (_Mmsghdr * n)()
        for i in range(n):
            self._iovs[i].iov_base = buf_addr + i * size
            self._iovs[i].iov_len = size
            hdr = self._msgs[i].msg_hdr
            hdr.msg_name = ctypes.addressof(self._names) + i * _NAME
            hdr.msg_namelen = _NAME
            hdr.msg_iov = ctypes.pointer(self._iovs[i])
            hdr.msg_iovlen = 1
        at = _Mmsghdr.msg_len.offset  # msg_len of every struct mmsghdr, in one unpack
        pad = ctypes.sizeof(_Mmsghdr) - at - 4
        self._lengths = struct.Struct("=" + f"{at}xI{pad}x" * n)
        self._msgs_addr = ctypes.addressof(self._msgs)
        self._v6 = sock.family == socket.AF_INET6

    @property
    def pending(self) -> int:
        """Datagrams read and not yet handed over."""
        return len(self.backlog)

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        _LIVE_READERS.add(self)
        self._resume()

    def stop(self) -> None:
        """Stop reading and hand everything held to ``deliver``."""
        _LIVE_READERS.discard(self)
        self._pause()
        if self._scheduled is not None:
            self._scheduled.cancel()
            self._scheduled = None
        self._deliver(len(self.backlog))

    async def aclose(self, timeout: float = 30.0) -> None:
        """Stop reading, then hand over what is held a slice at a time as ``ready()`` allows
        (a full backlog is far more than the pipeline's queue takes at once), within
        ``timeout``; whatever is left then goes to ``deliver`` at once (which counts what it
        cannot take)."""
        self._pause()
        if self._scheduled is not None:
            self._scheduled.cancel()
            self._scheduled = None
        deadline = time.monotonic() + timeout
        while self.backlog and time.monotonic() < deadline:
            if self.ready is None or self.ready():
                self._deliver(self._slice)
            await asyncio.sleep(0 if self.ready is None or self.ready() else 0.005)
        self.stop()

    def _resume(self) -> None:
        if not self._reading and self._loop is not None:
            self._loop.add_reader(self.sock.fileno(), self._readable)
            self._reading = True

    def _pause(self) -> None:
        if self._reading and self._loop is not None:
            self._loop.remove_reader(self.sock.fileno())
            self._reading = False

    def _readable(self) -> None:
        for _ in range(64):  # bounded: other sockets and tasks get their turn
            if self.held >= self.backlog_bytes:
                self.full += 1
                self._pause()  # resumed by _drain_slice once half of it is decoded
                break
            if self.read_batch() < self._n:
                break
        if self.backlog and self._scheduled is None and self._loop is not None:
            self._scheduled = self._loop.call_soon(self._drain_slice)

    def read_batch(self) -> int:
        """One ``recvmmsg``: append what it brought to the backlog; the number of datagrams."""
        n = self._recvmmsg(self.sock.fileno(), self._msgs_addr, self._n, _MSG_DONTWAIT, None)
        if n <= 0:
            return 0  # EAGAIN, or an ICMP error queued on the socket
        if n <= 8:  # a quiet socket: one attribute a datagram beats unpacking all 256
            msgs = self._msgs
            lens: Sequence[int] = [msgs[i].msg_len for i in range(n)]
        else:
            lens = self._lengths.unpack_from(memoryview(self._msgs).cast("B"))
        data_view, name_view = memoryview(self._buf), memoryview(self._names)
        size, append, append_sender = self._size, self.backlog.append, self._senders.append
        name_len = 28 if self._v6 else 16
        held = 0
        for i in range(n):
            length = lens[i]
            held += length
            off = i * size
            key = name_view[i * _NAME : i * _NAME + name_len].tobytes()
            append(data_view[off : off + length].tobytes())
            append_sender(sockaddr_text(key))
        self.held += held
        return n

    def _drain_slice(self) -> None:
        """On the loop: decode one slice, then yield to the loop (and the socket) again."""
        self._scheduled = None
        loop = self._loop
        assert loop is not None
        if self.ready is not None and not self.ready():
            self._scheduled = loop.call_later(0.005, self._drain_slice)
            return
        self._deliver(self._slice, self.ready)
        # Half the bound, or all of it taken for a bound too small to halve (as the native
        # receiver's resume_below).
        if not self._reading and self.held < max(1, self.backlog_bytes // 2):
            self._resume()
        if self.backlog:
            self._scheduled = loop.call_soon(self._drain_slice)

    def _deliver(self, limit: int, ready: Callable[[], bool] | None = None) -> None:
        """Hand up to ``limit`` datagrams to ``deliver``; with ``ready``, stop early once it
        says no (asked every :data:`READY_EVERY`), so a slice of long datagrams cannot push
        the pipeline past its byte bound."""
        take, sender, deliver = self.backlog.popleft, self._senders.popleft, self.deliver
        removed = 0
        batch = self.deliver_batch
        left = min(len(self.backlog), limit)
        while left:
            n = min(left, READY_EVERY)
            if batch is not None:
                items = [(take(), sender()) for _ in range(n)]
                removed += sum(len(data) for data, _addr in items)
                batch(items)
            else:
                for _ in range(n):
                    data = take()
                    removed += len(data)
                    deliver(data, sender())
            left -= n
            if ready is not None and left and not ready():
                break
        self.held -= removed


# Seconds the native receiver's thread sleeps in recvmmsg on a quiet socket before it looks
# at its stop flag again: what closing a listener waits at most for the thread.
_RECV_TIMEOUT = 0.05


class NativeUdpReader:
    """:class:`UdpBatchReader`'s contract with the socket read on a native thread
    (``_dataplane.UdpReceiver``): ``recvmmsg`` into Rust-owned buffers, a native backlog
    bounded by ``backlog_bytes`` (past it the thread pauses and the kernel's buffer and drop
    counter take over, as here), an eventfd that wakes the loop when the backlog goes
    non-empty. The loop only takes slices: the kernel's copy and the reads no longer wait for
    the loop to be idle, and a datagram costs no Python object until it is decoded.

    ``deliver_native(receiver, n)`` takes up to ``n`` datagrams off the receiver itself (the
    syslog decode does, in one native call) and says how many it took. Without it, slices go
    to ``deliver_batch`` or ``deliver`` as ``(bytes, (ip, port))``, as the Python reader's do.
    The socket is switched to blocking with a receive timeout while the thread reads it (the
    thread sleeps in ``recvmmsg``) and back to non-blocking at stop.
    """

    available = dataplane.native is not None and hasattr(dataplane.native, "UdpReceiver")

    def __init__(
        self,
        sock: socket.socket,
        deliver: Callable[[bytes, tuple[str, int]], None],
        *,
        max_bytes: int,
        backlog_bytes: int,
        batch: int = 256,
        slice_: int = 512,
        ready: Callable[[], bool] | None = None,
        name: str = "",
        deliver_batch: Callable[[list[tuple[bytes, tuple[str, int]]]], None] | None = None,
        deliver_native: Callable[[Any, int], int] | None = None,
    ) -> None:
        self.name = name
        self.sock = sock
        self.deliver = deliver
        self.deliver_batch = deliver_batch
        self.deliver_native = deliver_native
        self.max_bytes = max_bytes
        self.backlog_bytes = backlog_bytes
        self.ready = ready
        self._batch = batch
        self._slice = slice_
        self._loop: asyncio.AbstractEventLoop | None = None
        self._scheduled: asyncio.Handle | None = None
        self._rx: Any = None
        self._fd = -1
        self._wake_fd = -1

    @property
    def held(self) -> int:
        """Payload bytes read and not yet handed over."""
        return int(self._rx.held) if self._rx is not None else 0

    @property
    def full(self) -> int:
        """Times the backlog reached backlog_bytes and reading paused."""
        return int(self._rx.full) if self._rx is not None else 0

    @property
    def pending(self) -> int:
        """Datagrams read and not yet handed over."""
        return int(self._rx.pending) if self._rx is not None else 0

    @property
    def receiver(self) -> Any:
        return self._rx

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        native = dataplane.native
        assert native is not None
        self._loop = loop
        self.sock.setblocking(True)
        timeout = struct.pack("@ll", 0, int(_RECV_TIMEOUT * 1e6))  # struct timeval
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, timeout)
        self._fd = os.dup(self.sock.fileno())
        try:
            self._rx = native.UdpReceiver(self._fd, self.max_bytes, self.backlog_bytes, self._batch)
        except BaseException:
            os.close(self._fd)
            self._fd = -1
            self.sock.setblocking(False)
            raise
        self._wake_fd = self._rx.wake_fd
        loop.add_reader(self._wake_fd, self._woken)
        _LIVE_READERS.add(self)

    def _woken(self) -> None:
        self._rx.ack()
        if self._scheduled is None and self._loop is not None:
            self._scheduled = self._loop.call_soon(self._drain_slice)

    def _halt(self) -> None:
        """Stop the thread (what it read stays in the backlog) and give the socket back."""
        if self._scheduled is not None:
            self._scheduled.cancel()
            self._scheduled = None
        if self._fd < 0:
            return
        if self._loop is not None:
            self._loop.remove_reader(self._wake_fd)
        self._rx.close()  # joins the thread: within _RECV_TIMEOUT
        os.close(self._fd)
        self._fd = -1
        with contextlib.suppress(OSError):  # the caller may have closed it already
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, bytes(16))
            self.sock.setblocking(False)

    def stop(self) -> None:
        """Stop reading and hand everything held to the consumer."""
        _LIVE_READERS.discard(self)
        self._halt()
        if self._rx is not None:
            self._deliver(self.pending)

    async def aclose(self, timeout: float = 30.0) -> None:
        """As :meth:`UdpBatchReader.aclose`: stop reading, hand over what is held a slice at a
        time as ``ready()`` allows within ``timeout``, then the rest at once."""
        self._halt()
        deadline = time.monotonic() + timeout
        while self.pending and time.monotonic() < deadline:
            if self.ready is None or self.ready():
                self._deliver(self._slice)
            await asyncio.sleep(0 if self.ready is None or self.ready() else 0.005)
        self.stop()

    def _drain_slice(self) -> None:
        """On the loop: decode one slice, then yield to the loop again."""
        self._scheduled = None
        loop = self._loop
        assert loop is not None
        if self.ready is not None and not self.ready():
            self._scheduled = loop.call_later(0.005, self._drain_slice)
            return
        self._deliver(self._slice, self.ready)
        if self.pending:
            self._scheduled = loop.call_soon(self._drain_slice)

    def _deliver(self, limit: int, ready: Callable[[], bool] | None = None) -> None:
        """Hand up to ``limit`` datagrams over, :data:`READY_EVERY` at a time, stopping early
        once ``ready`` says no."""
        rx = self._rx
        left = min(rx.pending, limit)
        while left > 0:
            n = min(left, READY_EVERY)
            if self.deliver_native is not None:
                took = self.deliver_native(rx, n)
            else:
                items = rx.take(n)
                took = len(items)
                if self.deliver_batch is not None:
                    if items:
                        self.deliver_batch(items)
                else:
                    for data, addr in items:
                        self.deliver(data, addr)
            if not took:
                break
            left -= took
            if ready is not None and left and not ready():
                break


_LIVE_READERS: weakref.WeakSet[UdpBatchReader | NativeUdpReader] = weakref.WeakSet()


class DatagramSender(Protocol):
    """What answers go out through: an asyncio datagram transport, or :class:`SocketReplies`."""

    def sendto(self, data: bytes, addr: tuple[Any, ...], /) -> None: ...


class SocketReplies:
    """Answers sent from a listener's own socket while a :class:`UdpBatchReader` reads it.

    There is no asyncio transport then, yet answers (SNMP inform responses, SNMPv3 Reports for
    engine-ID discovery) must leave from the port the request went to. Like an asyncio
    datagram transport, a send the kernel refuses (send buffer full, unreachable) is logged,
    never raised into the caller: the sender retries, as UDP senders do.
    """

    def __init__(self, sock: socket.socket, name: str = "") -> None:
        self.sock = sock
        self.name = name
        self.failed = 0

    def sendto(self, data: bytes, addr: tuple[Any, ...], /) -> None:
        try:
            self.sock.sendto(data, addr)
        except OSError as exc:
            self.failed += 1
            _rl.warning(f"reply:{self.name}", "%s: could not answer %s: %s", self.name, addr, exc)


def drain_socket(
    socks: list[socket.socket],
    deliver: Callable[[bytes, tuple[str, int]], None],
    budget: float = 2.0,
) -> int:
    """Read what the kernel still holds for ``socks`` at stop and hand it to ``deliver``, so
    datagrams that reached a socket are stored (or counted) instead of vanishing from the
    books; bounded by ``budget`` seconds. The number of datagrams read."""
    deadline = time.monotonic() + budget
    n = 0
    for sock in socks:
        while True:
            try:
                data, addr = sock.recvfrom(65_535)
            except OSError:  # BlockingIOError: the queue is empty
                break
            deliver(data, addr)
            n += 1
            if not n % 1024 and time.monotonic() > deadline:
                return n
    return n


def register_backlog_gauge(metrics: Registry) -> None:
    """``appliance_udp_backlog_bytes{source}`` and ``appliance_udp_backlog_full{source}``
    over every running reader (one callback per gauge serves all sources)."""
    metrics.gauge(
        "udp_backlog_bytes",
        "Datagram bytes read from a UDP socket and waiting to be decoded.",
        ["source"],
        callback=lambda: {(r.name,): float(r.held) for r in list(_LIVE_READERS)},
    )
    metrics.gauge(
        "udp_backlog_full",
        "Times a UDP backlog reached backlog_bytes and reading paused (the kernel buffer and "
        "its drop counter took over), since the listener started.",
        ["source"],
        callback=lambda: {(r.name,): float(r.full) for r in list(_LIVE_READERS)},
    )
