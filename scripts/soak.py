"""Soak: run the appliance under steady syslog and NetFlow load for hours; watch RSS and fds.

Not part of CI. ``scripts/soak [--hours 1] [--interval 60] [--rate 2000] [--flow-rate 50]``.
Every interval prints one line: elapsed time, RSS (MiB, the appliance and its children), open
file descriptors, and the books (received / stored / dropped). At the end it prints the growth
per hour of RSS and fds over the second half of the run (after warm-up: caches, SQLite page
cache and the pipeline's buffers fill in the first minutes) and the final counters, as one
JSON line. A leak shows as steady growth per hour that does not level off; the books should
balance (received = stored + dropped) with nothing dropped at these rates.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench_netflow import data_datagrams, template_datagram
from benchlib import ApplianceProcess, free_port


def rss_mib(pids: list[int]) -> float:
    total = 0
    for pid in pids:
        try:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
        except OSError:
            pass
    return total / 1024


def fds(pid: int) -> int:
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return -1


def load(syslog: int, flows: int, rate: int, flow_rate: int, stop: threading.Event) -> None:
    """Paced senders: ``rate`` syslog lines/s (a mix of shapes), ``flow_rate`` v9 datagrams/s
    of 30 flows each, from a few hundred distinct lines and datagrams."""
    lines = [
        b"<38>1 - srv%d sshd 4242 - - Failed password for root from 203.0.113.%d port %d ssh2"
        % (i % 7, i % 250, 40000 + i)
        for i in range(200)
    ] + [b"<13>Nov 29 10:00:00 fw%d kernel: IN=eth0 OUT= SRC=10.0.0.%d DST=10.1.0.1 PROTO=TCP"
         b" SPT=%d DPT=443" % (i % 3, i % 250, 1024 + i) for i in range(200)]  # fmt: skip
    datagrams = [template_datagram(), *data_datagrams(64)]
    tick = 0.05
    per_tick, flows_per_tick = max(1, int(rate * tick)), flow_rate * tick
    owed = 0.0
    k = 0
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        nxt = time.monotonic()
        while not stop.is_set():
            for _ in range(per_tick):
                s.sendto(lines[k % len(lines)], ("127.0.0.1", syslog))
                k += 1
            owed += flows_per_tick
            while owed >= 1:
                s.sendto(datagrams[k % len(datagrams)], ("127.0.0.1", flows))
                owed -= 1
                k += 1
            if k % 5000 < per_tick:
                s.sendto(datagrams[0], ("127.0.0.1", flows))  # refresh the template
            nxt += tick
            time.sleep(max(0.0, nxt - time.monotonic()))


def total(metrics: dict[str, float], name: str) -> int:
    return int(sum(v for k, v in metrics.items() if k == name or k.startswith(name + "{")))


def slope_per_hour(points: list[tuple[float, float]]) -> float:
    """Least-squares slope of (seconds, value), per hour."""
    if len(points) < 2:
        return 0.0
    n = len(points)
    mx = sum(t for t, _ in points) / n
    my = sum(v for _, v in points) / n
    den = sum((t - mx) ** 2 for t, _ in points)
    return 3600 * sum((t - mx) * (v - my) for t, v in points) / den if den else 0.0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--hours", type=float, default=1.0)
    ap.add_argument("--interval", type=float, default=60.0, help="seconds between samples")
    ap.add_argument("--rate", type=int, default=2000, help="syslog lines per second")
    ap.add_argument("--flow-rate", type=int, default=50, help="NetFlow datagrams (30 flows)/s")
    args = ap.parse_args()

    syslog, flows = free_port(socket.SOCK_DGRAM), free_port(socket.SOCK_DGRAM)
    app = ApplianceProcess(
        f'[[sources.syslog]]\nprotocol = "udp"\nlisten = "127.0.0.1:{syslog}"\nname = "syslog"\n'
        f'[[sources.netflow]]\nlisten = "127.0.0.1:{flows}"\nallowed = ["127.0.0.0/8"]\n',
    )
    app.wait_healthy()
    stop = threading.Event()
    sender = threading.Thread(target=load, args=(syslog, flows, args.rate, args.flow_rate, stop))
    sender.start()
    start = time.monotonic()
    end = start + args.hours * 3600
    samples: list[tuple[float, float, int]] = []
    print("elapsed_s  rss_mib  fds  received  stored  dropped", flush=True)
    try:
        while True:
            now = time.monotonic()
            m = app.metrics()
            received = total(m, "appliance_events_received_total")
            stored = total(m, "appliance_events_stored_total")
            dropped = total(m, "appliance_events_dropped_total")
            rss, nfd = rss_mib(app.pids()), fds(app.proc.pid)
            samples.append((now - start, rss, nfd))
            print(
                f"{now - start:9.0f}  {rss:7.1f}  {nfd:3d}  {received:8d}  {stored:6d}"
                f"  {dropped:7d}",
                flush=True,
            )
            if now >= end:
                break
            time.sleep(min(args.interval, max(0.0, end - time.monotonic())))
    except KeyboardInterrupt:
        pass
    finally:
        stop.set()
        sender.join()
    final = app.stop()
    half = [s for s in samples if s[0] >= samples[-1][0] / 2]
    print(
        json.dumps(
            {
                "hours": round(samples[-1][0] / 3600, 3),
                "rss_mib_start": round(samples[0][1], 1),
                "rss_mib_end": round(samples[-1][1], 1),
                "rss_mib_per_hour": round(slope_per_hour([(t, r) for t, r, _ in half]), 2),
                "fds_start": samples[0][2],
                "fds_end": samples[-1][2],
                "fds_per_hour": round(slope_per_hour([(t, f) for t, _, f in half]), 2),
                "final": final,
                "balanced": final["received"] == final["stored"] + final["dropped"],
            }
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
