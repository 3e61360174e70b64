"""The syslog/UDP reader alone, in one process: CPU of the event loop's thread per datagram,
the Python reader (``UdpBatchReader``, ``recvmmsg`` through ctypes on the loop) against the
native one (``NativeUdpReader``, a reading thread), each followed by the same native batch
decode; events are made and dropped (no pipeline, no store). Datagrams come from another
process (RFC 5424, 256 B, loggen's shape), paced in 1 ms slots.

Usage: scripts/bench udp-reader [--rate 40000] [--seconds 5] [--repeat 2]
Output: one JSON line per run (``loop_us_per_datagram``: the loop thread's CPU;
``process_us_per_datagram``: every thread's, the native reader's thread included).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from appliance import dataplane
from appliance.config import SyslogSource
from appliance.metrics import Registry
from appliance.sources.syslog_intake import SyslogIntake
from appliance.sources.udp import NativeUdpReader, UdpBatchReader, socket_drops

SENDER = r"""
import socket, sys, time
port, rate, seconds = int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3])
head = (b"<38>1 2026-12-05T04:32:46+00:00 localhost prg00000 1234 - - \xef\xbb\xbfseq: ")
tail = b", thread: 0000, runid: 1796445166, stamp: 2026-12-05T04:32:46 "
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
n = int(rate * seconds)
t0 = time.perf_counter()
sent = 0
while sent < n:
    due = min(n, int((time.perf_counter() - t0) * rate) + 1)
    while sent < due:
        line = head + b"%010d" % sent + tail
        s.sendto(line + b"PADD" * ((255 - len(line)) // 4) + b"\n", ("127.0.0.1", port))
        sent += 1
    time.sleep(0.0005)
print(sent)
"""


def receiver_thread_cpu() -> tuple[float, float]:
    """User and system CPU seconds of the native reader's thread (0 for the Python reader),
    from /proc (clock ticks: 10 ms steps)."""
    tick = os.sysconf("SC_CLK_TCK")
    for task in os.listdir("/proc/self/task"):
        try:
            if Path(f"/proc/self/task/{task}/comm").read_text().strip() != "udp-receiver":
                continue
            fields = Path(f"/proc/self/task/{task}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        return int(fields[11]) / tick, int(fields[12]) / tick
    return 0.0, 0.0


def make_intake() -> SyslogIntake:
    cfg = SyslogSource(listen="127.0.0.1:0", name="bench", allowed=["0.0.0.0/0", "::/0"])
    return SyslogIntake(cfg, [], Registry(), "udp")


async def one_run(kind: str, rate: int, seconds: float) -> dict[str, Any]:
    intake = make_intake()
    metrics = Registry()
    dropped = metrics.counter("dropped", "", ["source", "reason"])
    truncated = metrics.counter("truncated", "", ["source"])
    seen = [0]
    max_bytes, raw_max = 8192, 8192

    def batch(items: list[tuple[bytes, tuple[str, int]]]) -> None:
        seen[0] += len(items)
        intake.datagrams(items, time.time(), max_bytes, raw_max, dropped, truncated)

    def native(receiver: Any, n: int) -> int:
        _events, taken, _lines = intake.receiver_datagrams(
            receiver, n, time.time(), max_bytes, raw_max, dropped, truncated, "bench"
        )
        seen[0] += taken
        return int(taken)

    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
    sock.bind(("127.0.0.1", 0))
    sock.setblocking(False)
    common: dict[str, Any] = {"max_bytes": max_bytes, "backlog_bytes": 64 << 20}
    reader: UdpBatchReader | NativeUdpReader
    if kind == "python":
        reader = UdpBatchReader(sock, lambda d, a: None, deliver_batch=batch, **common)
    else:
        reader = NativeUdpReader(sock, lambda d, a: None, deliver_native=native, **common)
    loop = asyncio.get_running_loop()
    reader.start(loop)
    port = sock.getsockname()[1]
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        SENDER,
        str(port),
        str(rate),
        str(seconds),
        stdout=subprocess.PIPE,
    )
    thread0, proc0, wall0 = time.thread_time(), time.process_time(), time.perf_counter()
    out, _ = await proc.communicate()
    sent = int(out)
    for _ in range(3000):  # the last datagrams decoded (or counted by the kernel): 30 s at most
        if seen[0] + (socket_drops(sock) or 0) >= sent:
            break
        await asyncio.sleep(0.01)
    thread1, proc1, wall1 = time.thread_time(), time.process_time(), time.perf_counter()
    user, system = receiver_thread_cpu()
    reader.stop()
    drops = socket_drops(sock) or 0
    sock.close()
    n = max(1, seen[0])
    return {
        "reader": kind,
        "rate": rate,
        "sent": sent,
        "read": seen[0],
        "kernel_drops": drops,
        "loop_us_per_datagram": round((thread1 - thread0) / n * 1e6, 3),
        "process_us_per_datagram": round((proc1 - proc0) / n * 1e6, 3),
        "reader_thread_user_us_per_datagram": round(user / n * 1e6, 3),
        "reader_thread_sys_us_per_datagram": round(system / n * 1e6, 3),
        "wall_s": round(wall1 - wall0, 2),
        "loadavg": os.getloadavg()[0],
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rate", type=int, default=40_000)
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("--repeat", type=int, default=2)
    args = ap.parse_args()
    if dataplane.native is None or not NativeUdpReader.available:
        sys.exit("needs the native data plane (the native reader and batch decode)")
    for _ in range(args.repeat):
        for kind in ("python", "native"):  # A B A B
            print(json.dumps(asyncio.run(one_run(kind, args.rate, args.seconds))), flush=True)


if __name__ == "__main__":
    main()
