"""Disk full: peak RSS while the data_dir's filesystem is full, and whether storing resumes.

Usage: scripts/bench disk-full [--fs-mb 20] [--messages 12000] [--size 4096] [--free-mb 2]
       [--after 500] [--with-space]

The appliance runs as its own process with data_dir on a tmpfs of ``--fs-mb`` MiB (mounting
needs root; ``--with-space`` runs the same load on the ordinary disk as the baseline). A filler
file of ``--free-mb`` MiB sits beside data_dir. ``--messages`` syslog/UDP lines of ``--size``
bytes are sent in steps the appliance has received before the next goes (so the kernel never
drops: what is measured is the appliance), then the filler is deleted and ``--after`` more are
sent: ``stored_after_free`` says whether storing came back by itself. Prints ONE JSON line.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchlib import ApplianceProcess, dropped_by_reason, free_port


def send_in_steps(app: ApplianceProcess, port: int, first: int, count: int, size: int) -> None:
    """Send ``count`` lines, 100 at a time, each step once the previous one was received."""
    addr = ("127.0.0.1", port)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        for start in range(first, first + count, 100):
            for i in range(start, min(start + 100, first + count)):
                head = b"<13>1 - bench app - - - %08d " % i
                s.sendto(head + b"x" * max(0, size - len(head)), addr)
            want = min(start + 100, first + count)
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                if app.metrics().get('appliance_events_received_total{source="bench"}', 0) >= want:
                    break
                time.sleep(0.01)


def stored(app: ApplianceProcess) -> int:
    return int(app.metrics().get("appliance_events_stored_total", 0))


def wait_settled(app: ApplianceProcess, seconds: float = 3.0, timeout: float = 120.0) -> None:
    """Until the stored count has not moved for ``seconds`` and the queue is empty."""
    deadline = time.monotonic() + timeout
    last, since = -1, time.monotonic()
    while time.monotonic() < deadline:
        m = app.metrics()
        now = int(m.get("appliance_events_stored_total", 0))
        if now != last:
            last, since = now, time.monotonic()
        elif time.monotonic() - since > seconds and m.get("appliance_queue_depth", 0) == 0:
            return
        time.sleep(0.2)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--fs-mb", type=int, default=20)
    ap.add_argument("--messages", type=int, default=12_000)
    ap.add_argument("--size", type=int, default=4096)
    ap.add_argument("--free-mb", type=int, default=2)
    ap.add_argument("--after", type=int, default=500)
    ap.add_argument("--with-space", action="store_true", help="baseline on the ordinary disk")
    ap.add_argument("--show-log", action="store_true", help="the appliance's log to stderr")
    args = ap.parse_args()

    mnt = Path(tempfile.mkdtemp(prefix="bench-disk-full-"))
    mounted = False
    if not args.with_space:
        if os.geteuid() != 0:
            raise SystemExit("mounting a tmpfs needs root (or use --with-space)")
        subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={args.fs_mb}m", "tmpfs", str(mnt)], check=True
        )
        mounted = True
    try:
        filler = mnt / "filler.bin"
        with filler.open("wb") as f:
            os.posix_fallocate(f.fileno(), 0, args.free_mb * 1024 * 1024)
        port = free_port(socket.SOCK_DGRAM)
        app = ApplianceProcess(
            f'[[sources.syslog]]\nprotocol = "udp"\nlisten = "127.0.0.1:{port}"\n'
            'name = "bench"\nrcvbuf_bytes = 33554432\n',
            data_dir=mnt / "data",
        )
        try:
            send_in_steps(app, port, 0, args.messages, args.size)
            wait_settled(app)
            rss = app.peak_rss_mb()
            m = app.metrics()
            before = stored(app)
            filler.unlink()
            send_in_steps(app, port, args.messages, args.after, args.size)
            wait_settled(app)
            after = stored(app) - before
            m_end = app.metrics()
        finally:
            final = app.stop()
        log_text = app.log_path.read_text(errors="replace")
        if args.show_log:
            print(log_text, file=sys.stderr)
        result = {
            "fs_mb": None if args.with_space else args.fs_mb,
            "messages": args.messages,
            "size": args.size,
            "peak_rss_mb": round(rss, 1),
            "stored_while_full": before,
            "dropped_by_reason": dropped_by_reason(m),
            "store_full_total": int(m.get("appliance_store_full_total", 0)),
            "after_free": args.after,
            "stored_after_free": after,
            "dropped_by_reason_end": dropped_by_reason(m_end),
            "final": final,
            "log_lines": len(log_text.splitlines()),
            "log_could_not_trim": log_text.count("could not trim the oldest segment"),
        }
        print(json.dumps(result))
    finally:
        if mounted:
            subprocess.run(["umount", "-l", str(mnt)], check=False)
        subprocess.run(["rm", "-rf", str(mnt)], check=False)


if __name__ == "__main__":
    main()
