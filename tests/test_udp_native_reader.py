"""The native UDP receiver (a reading thread per socket, ``NativeUdpReader``) against the
Python reader it stands in for: the same datagrams make the same events, stored lines and
counters; its thread stops with the listener and loses nothing it read; a panic on it is
caught and counted. (The readers' shared contract is ``test_udp_batch_reader.py``.)"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import os
import socket
import sys
from pathlib import Path
from typing import Any

import orjson
import pytest

from appliance import dataplane
from appliance.config import SyslogSender, SyslogSource
from appliance.event import Event
from appliance.metrics import Registry
from appliance.sources.syslog_intake import SyslogIntake
from appliance.sources.udp import NativeUdpReader, UdpBatchReader, drain_socket, socket_drops
from tests import conftest
from tests.conftest import syslog_corpus_lines
from tests.test_syslog_batch_equivalence import HOSTILE, NOW, RAW_MAX

pytestmark = pytest.mark.skipif(
    not NativeUdpReader.available,
    reason="native data plane not loaded (not built, or APPLIANCE_NATIVE=0)",
)

MAX_BYTES = 1024
LOGGEN = (
    b"<38>1 2026-12-05T04:32:46+00:00 localhost prg00000 1234 - - \xef\xbb\xbfseq: 0000000001,"
    b" thread: 0000, runid: 1796445166, stamp: 2026-12-05T04:32:46 " + b"PADD" * 30 + b"\n"
)


def host(family: socket.AddressFamily) -> str:
    return "::1" if family == socket.AF_INET6 else "127.0.0.1"


def receiver(family: socket.AddressFamily = socket.AF_INET) -> socket.socket:
    sock = socket.socket(family, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
    sock.bind((host(family), 0))
    sock.setblocking(False)
    return sock


def intake(allowed: list[str], rate: float) -> SyslogIntake:
    cfg = SyslogSource(
        listen="127.0.0.1:0",
        name="native-reader-test",
        allowed=allowed,
        rate_limit=rate,
        rate_burst=100,
        max_message_bytes=MAX_BYTES,
    )
    senders = [
        SyslogSender(networks=["127.0.0.0/8"], timezone="Europe/Berlin", site="lab", tags=["t"]),
        SyslogSender(networks=["::1/128"], vendor="cisco_asa", device_name="v6dev"),
    ]
    return SyslogIntake(cfg, senders, Registry(), "udp")


class Books:
    """One reader's events and the counters its decode moved."""

    def __init__(self, allowed: list[str], rate: float) -> None:
        self.intake = intake(allowed, rate)
        metrics = Registry()
        self.dropped = metrics.counter("dropped", "", ["source", "reason"])
        self.truncated = metrics.counter("truncated", "", ["source"])
        self.events: list[Event] = []
        self.seen = 0
        self.line_bytes = 0

    def batch(self, items: list[tuple[bytes, tuple[str, int]]]) -> None:
        self.seen += len(items)
        self.events += self.intake.datagrams(
            items, NOW, MAX_BYTES, RAW_MAX, self.dropped, self.truncated
        )

    def native(self, receiver: Any, n: int) -> int:
        events, taken, line_bytes = self.intake.receiver_datagrams(
            receiver, n, NOW, MAX_BYTES, RAW_MAX, self.dropped, self.truncated, "lst"
        )
        self.seen += taken
        self.line_bytes += line_bytes
        self.events += events
        return int(taken)

    def counters(self) -> dict[str, Any]:
        i = self.intake
        return {
            "dropped": dict(self.dropped.values),
            "truncated": dict(self.truncated.values),
            "parse_errors": dict(i.parse_errors.values),
            "decoded": dict(i.decoded.values),
            "skew": dict(i.skew.values),
        }


def payloads() -> list[bytes]:
    corpus = [line for _, line in zip(range(400), syslog_corpus_lines(), strict=False)]
    return [*HOSTILE, *corpus, *[LOGGEN] * 50]


@pytest.mark.parametrize("family", [socket.AF_INET, socket.AF_INET6], ids=["v4", "v6"])
@pytest.mark.parametrize(
    ("allowed", "rate"),
    [(["0.0.0.0/0", "::/0"], 0.0), (["0.0.0.0/0", "::/0"], 50.0), (["10.0.0.0/8"], 0.0)],
    ids=["open", "rate-limited", "denied"],
)
async def test_the_same_datagrams_make_the_same_events_lines_and_counters(
    family: socket.AddressFamily, allowed: list[str], rate: float
) -> None:
    if family == socket.AF_INET6 and not socket.has_ipv6:
        pytest.skip("no IPv6 on this host")
    old, new = Books(allowed, rate), Books(allowed, rate)
    sock_old, sock_new = receiver(family), receiver(family)
    loop = asyncio.get_running_loop()
    readers = [
        UdpBatchReader(
            sock_old,
            lambda d, a: pytest.fail("not per datagram"),
            max_bytes=MAX_BYTES,
            backlog_bytes=64 << 20,
            deliver_batch=old.batch,
        ),
        NativeUdpReader(
            sock_new,
            lambda d, a: pytest.fail("not per datagram"),
            max_bytes=MAX_BYTES,
            backlog_bytes=64 << 20,
            deliver_native=new.native,
        ),
    ]
    sent = payloads()
    try:
        for reader in readers:
            reader.start(loop)
        with socket.socket(family, socket.SOCK_DGRAM) as tx:
            for i, payload in enumerate(sent):
                tx.sendto(payload, sock_old.getsockname())
                tx.sendto(payload, sock_new.getsockname())
                if i % 64 == 63:
                    await asyncio.sleep(0)  # the Python reader reads on this loop
        await conftest.wait_until(lambda: old.seen == new.seen == len(sent))
    finally:
        for reader in readers:
            reader.stop()
        sock_old.close()
        sock_new.close()
    assert socket_drops(sock_old) in (None, 0)
    assert len(new.events) == len(old.events)
    for g, w in zip(new.events, old.events, strict=True):
        assert g.raw == w.raw
        assert (g.timestamp, g.created, g.module) == (w.timestamp, w.created, w.module), g.raw
        assert orjson.dumps(g.fields) == orjson.dumps(w.fields), g.raw
        assert g.line == w.line, g.raw
        assert g.listener == "lst"
    assert new.line_bytes == sum(len(e.line or b"") for e in new.events)
    assert new.counters() == old.counters()
    reasons = {reason for _source, reason in new.counters()["dropped"]}
    if allowed == ["10.0.0.0/8"]:
        assert not new.events and reasons == {"not_allowed"}
    elif rate:
        assert len(new.events) == 100 and "rate_limited" in reasons  # the burst
    else:
        assert new.counters()["truncated"] and len(new.events) > 300


def receiver_threads() -> int:
    tasks = Path(f"/proc/{os.getpid()}/task")
    n = 0
    for task in tasks.iterdir():
        with contextlib.suppress(OSError):  # the thread ended while we looked
            n += (task / "comm").read_text().strip() == "udp-receiver"
    return n


def open_fds(target: str) -> int:
    """This process's descriptors open on ``target`` (a /proc/self/fd link's text)."""
    n = 0
    for fd in os.listdir("/proc/self/fd"):
        with contextlib.suppress(OSError):
            n += os.readlink(f"/proc/self/fd/{fd}") == target
    return n


async def test_stop_joins_the_thread_and_gives_the_socket_back() -> None:
    gc.collect()
    threads, eventfds = receiver_threads(), open_fds("anon_inode:[eventfd]")
    sock = receiver()
    inode = f"socket:[{os.fstat(sock.fileno()).st_ino}]"
    got: list[bytes] = []
    reader = NativeUdpReader(
        sock, lambda d, a: got.append(d), max_bytes=MAX_BYTES, backlog_bytes=1 << 20
    )
    reader.start(asyncio.get_running_loop())
    await conftest.wait_until(lambda: receiver_threads() == threads + 1)  # named once running
    assert open_fds(inode) == 2  # the thread reads a dup of the socket
    assert sock.getblocking()  # the thread sleeps in recvmmsg
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as tx:
        tx.sendto(b"<13>one", sock.getsockname())
    await conftest.wait_until(lambda: got == [b"<13>one"])
    reader.stop()
    assert receiver_threads() == threads
    assert open_fds(inode) == 1
    assert not sock.getblocking()  # drain_socket must not block at stop
    assert drain_socket([sock], lambda d, a: got.append(d)) == 0
    sock.close()
    del reader  # the backlog (and its eventfd) lives as long as the reader
    gc.collect()
    assert open_fds("anon_inode:[eventfd]") == eventfds


SENDER = """
import socket, sys, time
port, n = map(int, sys.argv[1:])
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
for i in range(n):
    s.sendto(b"<13>burst %06d " % i + b"x" * 200, ("127.0.0.1", port))
    if i % 20 == 19:
        time.sleep(0.001)
"""


async def test_a_reader_stopped_mid_burst_hands_over_all_it_read() -> None:
    sock = receiver()
    got: list[bytes] = []
    reader = NativeUdpReader(
        sock,
        lambda d, a: pytest.fail("not per datagram"),
        max_bytes=MAX_BYTES,
        backlog_bytes=64 << 20,
        ready=lambda: False,  # nothing decoded while it reads: all of it is in the backlog
        deliver_batch=lambda items: got.extend(d for d, _ in items),
    )
    reader.start(asyncio.get_running_loop())
    n = 20_000
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", SENDER, str(sock.getsockname()[1]), str(n)
    )
    try:
        await conftest.wait_until(lambda: reader.pending > 1000)
        reader.stop()  # mid-burst: the sender goes on
        read = reader.receiver.received
        assert len(got) == read and reader.pending == 0
        assert await proc.wait() == 0
        drained: list[bytes] = []
        drain_socket([sock], lambda d, a: drained.append(d))
        assert len(got) + len(drained) + (socket_drops(sock) or 0) == n
        assert got + drained == sorted(got + drained)  # in order, none twice
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        sock.close()


async def test_a_panic_on_the_reading_thread_is_caught_counted_and_reading_goes_on() -> None:
    assert dataplane.native is not None
    sock = receiver()
    got: list[bytes] = []
    reader = NativeUdpReader(
        sock, lambda d, a: got.append(d), max_bytes=MAX_BYTES, backlog_bytes=1 << 20
    )
    reader.start(asyncio.get_running_loop())
    try:
        panics = dataplane.native_panics()
        reader.receiver.inject_panic()
        await conftest.wait_until(lambda: reader.receiver.panics == 1)
        assert dataplane.native_panics() == panics + 1
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as tx:
            tx.sendto(b"<13>after", sock.getsockname())
        await conftest.wait_until(lambda: got == [b"<13>after"])
        assert reader.receiver.alive
    finally:
        reader.stop()
        sock.close()


@pytest.mark.parametrize("native", [True, False], ids=["native", "python"])
async def test_syslog_udp_uses_the_native_reader_on_the_native_backend(
    native: bool, start_appliance: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(NativeUdpReader, "available", native)
    run = await start_appliance()
    src = run.source()
    assert isinstance(src.reader, NativeUdpReader if native else UdpBatchReader)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as tx:
        tx.sendto(LOGGEN, src.address)
    await run.wait_stored(1)
    (ev,) = (await run.get_json("/api/v1/events"))["events"]
    assert ev["message"].startswith("seq: 0000000001, thread: 0000")
    assert (ev["observer"]["ip"], ev["process"]["name"]) == ("127.0.0.1", "prg00000")
    text = await run.metrics()
    assert 'appliance_udp_backlog_bytes{source="syslog-udp"} 0' in text
    assert 'appliance_events_received_total{source="syslog-udp"} 1' in text
