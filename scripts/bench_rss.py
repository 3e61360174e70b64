"""Resident memory under steady syslog/UDP load, with a breakdown of where it goes.

Usage: scripts/bench rss [--rate 50000] [--seconds 30] [--size 256] [--format 5424|3164|sshd...]
       [--sender auto|builtin|loggen] [--filler x|random] [--peer auto|none] [--extra TOML]

Runs the appliance with its defaults (built-in ruleset loaded) and one UDP syslog listener,
offers ``rate`` msg/s for ``seconds``, and samples the process's RSS (``VmRSS``), the pipeline
queue depth and the UDP backlog every 0.25 s. Prints one JSON line:

- ``rss_start_mb``: after start (healthy, nothing received yet); ``rss_steady_mb``: median of
  the samples over the second half of the sending; ``rss_peak_mb``: ``VmHWM``.
- ``breakdown``: measured in a separate process on the same code (``--probe``): the
  interpreter with the appliance imported, what loading the built-in ruleset and building its
  engine adds, the bytes one queued event holds (``tracemalloc`` over events made by the
  listener's own decode path and encoded as the pipeline encodes them), one raw datagram in
  the UDP backlog (a real reader's), what the correlation state holds when sshd failures from
  40,000 addresses fill the rules that group by address to ``max_groups_per_rule``, and what
  SQLite's allocator holds after storing events through the store (its page caches,
  ``sqlite3_memory_used``); then the run's peaks: queue depth times the event size, the batch
  being stored, backlog bytes times the per-datagram size.
- ``peer``: rsyslogd (imudp → omfile) under the same offered load, when installed: its
  steady and peak RSS and loss.
"""

from __future__ import annotations

import argparse
import asyncio
import ctypes
import gc
import importlib
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import tracemalloc
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_syslog_udp import make_line, send_builtin, send_loggen
from benchlib import ApplianceProcess, dropped_by_reason, free_port

MB = 1024 * 1024


def status_kb(pid: int, key: str) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def self_rss_mb() -> float:
    return status_kb(os.getpid(), "VmRSS") / 1024


class Sampler(threading.Thread):
    """VmRSS of ``pid`` (and, with ``metrics``, the queue and backlog gauges) every ``every`` s."""

    def __init__(self, pid: int, metrics: Any = None, every: float = 0.25) -> None:
        super().__init__(daemon=True)
        self.pid, self.metrics, self.every = pid, metrics, every
        # t, RSS MB, queue events, backlog bytes, queue line bytes
        self.samples: list[tuple[float, float, float, float, float]] = []
        self._halt = threading.Event()

    def run(self) -> None:
        t0 = time.monotonic()
        while not self._halt.wait(self.every):
            rss = status_kb(self.pid, "VmRSS") / 1024
            queue = backlog = queue_bytes = 0.0
            if self.metrics is not None:
                try:
                    m = self.metrics()
                except OSError:
                    m = {}
                queue = m.get("appliance_queue_depth", 0.0)
                queue_bytes = m.get("appliance_queue_bytes", 0.0)
                backlog = sum(
                    v for k, v in m.items() if k.startswith("appliance_udp_backlog_bytes")
                )
            self.samples.append((time.monotonic() - t0, rss, queue, backlog, queue_bytes))

    def stop(self) -> None:
        self._halt.set()
        self.join()

    def steady_mb(self, until: float) -> float:
        """Median RSS over the second half of [0, until] (the sending time)."""
        rows = [r for t, r, *_rest in self.samples if until / 2 <= t <= until]
        return round(statistics.median(rows), 1) if rows else 0.0


def send(sender: str, port: int, a: argparse.Namespace) -> int:
    if sender == "loggen":
        return send_loggen(port, a.rate, a.seconds, a.size, a.format)
    return send_builtin(port, a.rate, a.seconds, a.size, a.format, a.senders, a.filler)


# ----------------------------------------------------------------------------- breakdown probe


def probe(size: int, fmt: str, n: int) -> dict[str, Any]:
    """Run in a fresh interpreter: what each part costs, measured one at a time."""
    gc.collect()
    rss0 = self_rss_mb()
    # What the big imports add, in the order the appliance pulls them in.
    imports: dict[str, float] = {}
    for name in ("aiosqlite", "aiohttp", "appliance.protocols.syslog.vendors", "appliance.app"):
        before = self_rss_mb()
        importlib.import_module(name)
        imports[name] = round(self_rss_mb() - before, 1)
    from appliance.config import SyslogSource, parse_config
    from appliance.correlate import Engine
    from appliance.correlate.component import limits_of, load_configured_rules
    from appliance.metrics import Registry
    from appliance.sources.syslog_intake import SyslogIntake
    from appliance.store import Store
    from appliance.store.segments import encode_line

    gc.collect()
    rss_imported = self_rss_mb()
    data_dir = tempfile.mkdtemp(prefix="appliance-rss-")
    config = parse_config({"appliance": {"data_dir": data_dir, "allow_empty": True}})
    tracemalloc.start()
    rules = load_configured_rules(config)
    engine = Engine(rules, limits_of(config.rules))
    ruleset_traced = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    gc.collect()
    rss_rules = self_rss_mb()

    intake = SyslogIntake(SyslogSource(), [], Registry(), "udp")
    lines = [make_line(i, size, fmt) for i in range(n)]
    raw_max = config.storage.raw_max_bytes
    now = time.time()

    def queued_events() -> list[Any]:
        out = []
        for data in lines:
            ev = intake.event(data, "127.0.0.1", intake.profile("127.0.0.1"), now)
            ev.line = encode_line(ev.timestamp, ev.created, ev.module, ev.fields, ev.raw[:raw_max])
            ev.listener = "bench"
            out.append((ev, "bench"))  # the queue holds (event, source) pairs
        return out

    queued_events()  # warm caches (interned names, decoder state) outside the measurement
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    events = queued_events()
    event_bytes = (tracemalloc.get_traced_memory()[0] - before) / n
    line_bytes = statistics.mean(len(e.line or b"") for e, _s in events)
    del events
    gc.collect()
    datagram_bytes = backlog_bytes_per_datagram(lines[:5000])
    tracemalloc.stop()

    # Correlation state at its bound: sshd failures from 40,000 addresses fill every rule that
    # groups by source address to rules.max_groups_per_rule (the steady run has one sender).
    def scan_line(i: int) -> bytes:
        ip = b"10.%d.%d.%d" % (i >> 16 & 255, i >> 8 & 255, i & 255)
        head = b"<38>Nov 29 10:00:00 bench-host sshd[4242]: Failed password for invalid user"
        return head + b" u%d from %s port 51234 ssh2" % (i, ip)

    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    for i in range(40_000):
        ev = intake.event(scan_line(i), "127.0.0.1", intake.profile("127.0.0.1"), now)
        engine.observe(ev, now)
    del ev
    gc.collect()
    correlation_full = tracemalloc.get_traced_memory()[0] - before
    full_groups = {k: len(r.groups) for k, r in engine.correlations.items() if r.groups}
    tracemalloc.stop()

    # SQLite's own allocator (page caches of the writer and reader connections) after storing.
    lib = ctypes.CDLL("libsqlite3.so.0")
    lib.sqlite3_memory_used.restype = ctypes.c_int64
    lib.sqlite3_memory_highwater.restype = ctypes.c_int64
    lib.sqlite3_memory_highwater.argtypes = [ctypes.c_int]
    sqlite0 = lib.sqlite3_memory_used()

    async def store_some() -> tuple[int, int]:
        store = Store(config.data_dir / "appliance.db", raw_max_bytes=raw_max)
        await store.open()
        lib.sqlite3_memory_highwater(1)
        events = [e for e, _s in queued_events()]
        for i in range(0, len(events), 5000):
            await store.insert_events(events[i : i + 5000])
        used = lib.sqlite3_memory_used()
        high = lib.sqlite3_memory_highwater(0)
        await store.close()
        return used, high

    for _ in range(3):  # a few segments' worth, so the caches fill as they do in the run
        used, high = asyncio.run(store_some())
    shutil.rmtree(config.data_dir, ignore_errors=True)
    del engine
    return {
        "rss_interpreter_mb": round(rss0, 1),
        "rss_imported_mb": round(rss_imported, 1),
        "imports_mb": imports,
        "ruleset_mb": round(rss_rules - rss_imported, 1),
        "ruleset_traced_mb": round(ruleset_traced / MB, 2),
        "ruleset_rules": len(rules.detections) + len(rules.correlations),
        "event_bytes": round(event_bytes),
        "line_bytes": round(line_bytes),
        "datagram_bytes": round(datagram_bytes),
        "correlation_full_mb": round(correlation_full / MB, 1),
        "correlation_full_groups": sum(full_groups.values()),
        "correlation_full_rules": len(full_groups),
        "sqlite_used_mb": round((used - sqlite0) / MB, 1),
        "sqlite_highwater_mb": round(high / MB, 1),
    }


def backlog_bytes_per_datagram(lines: list[bytes]) -> float:
    """Memory one datagram holds in a real UdpBatchReader's backlog (payload and bookkeeping),
    read from loopback in rounds small enough for the kernel's buffer."""
    from appliance.sources.udp import UdpBatchReader

    rx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    rx.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
    rx.bind(("127.0.0.1", 0))
    rx.setblocking(False)
    tx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    reader = UdpBatchReader(rx, lambda d, a: None, max_bytes=8192, backlog_bytes=1 << 30)
    try:
        for i in range(0, len(lines), 200):  # warm: buffers, the sender's cached address
            tx.sendto(lines[i], rx.getsockname())
        while reader.read_batch():
            pass
        reader.backlog.clear()
        reader._senders.clear()
        gc.collect()
        before = tracemalloc.get_traced_memory()[0]
        for i in range(0, len(lines), 200):
            for line in lines[i : i + 200]:
                tx.sendto(line, rx.getsockname())
            while reader.read_batch():
                pass
        held = tracemalloc.get_traced_memory()[0] - before
        return held / max(1, len(reader.backlog))
    finally:
        tx.close()
        rx.close()


def run_probe(a: argparse.Namespace) -> dict[str, Any]:
    out = subprocess.run(
        [sys.executable, __file__, "--probe", "--size", str(a.size), "--format", a.format],
        capture_output=True,
        text=True,
        check=True,
        timeout=600,
    )
    result: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


# ----------------------------------------------------------------------------------- the peer


def run_rsyslog(a: argparse.Namespace, sender: str) -> dict[str, Any] | None:
    rsyslogd = shutil.which("rsyslogd") or (
        "/usr/sbin/rsyslogd" if os.path.exists("/usr/sbin/rsyslogd") else None
    )
    if rsyslogd is None:
        return None
    tmp = Path(tempfile.mkdtemp(prefix="rsyslog-bench-"))
    try:
        port = free_port(socket.SOCK_DGRAM)
        out = tmp / "out.log"
        conf = tmp / "rsyslog.conf"
        conf.write_text(
            f'global(workDirectory="{tmp}")\n'
            'module(load="imudp")\n'
            f'input(type="imudp" address="127.0.0.1" port="{port}" rcvbufSize="8m")\n'
            f'action(type="omfile" file="{out}")\n'
        )
        proc = subprocess.Popen(
            [rsyslogd, "-n", "-f", str(conf), "-i", str(tmp / "pid")],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            time.sleep(1.0)
            if proc.poll() is not None:
                return None
            rss_start = status_kb(proc.pid, "VmRSS") / 1024
            sampler = Sampler(proc.pid)
            sampler.start()
            t0 = time.monotonic()
            offered = send(sender, port, a)
            send_time = time.monotonic() - t0
            time.sleep(2.0)  # let its queue reach the file
            sampler.stop()
            peak = status_kb(proc.pid, "VmHWM") / 1024
        finally:
            proc.terminate()
            proc.wait(30)
        with out.open("rb") as f:
            stored = sum(1 for _ in f)
        return {
            "rss_start_mb": round(rss_start, 1),
            "rss_steady_mb": sampler.steady_mb(send_time),
            "rss_peak_mb": round(peak, 1),
            "offered": offered,
            "stored": stored,
            "loss_pct": round(100.0 * (offered - stored) / offered, 3) if offered else 0.0,
        }
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


# ------------------------------------------------------------------------------------- main


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rate", type=int, default=50_000)
    ap.add_argument("--seconds", type=float, default=30)
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--format", default="5424")
    ap.add_argument("--sender", choices=["auto", "builtin", "loggen"], default="auto")
    ap.add_argument("--senders", type=int, default=2)
    ap.add_argument(
        "--filler",
        choices=["x", "random"],
        default="x",
        help="the built-in sender's filler: x repeated (loggen's kind), or random text",
    )
    ap.add_argument("--peer", choices=["auto", "none"], default="auto")
    ap.add_argument("--extra", default="", help="TOML appended to the appliance's config")
    ap.add_argument("--probe", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--probe-events", type=int, default=20_000, help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.probe:
        print(json.dumps(probe(a.size, a.format, a.probe_events)))
        return

    sender = a.sender
    if sender == "auto":
        loggen_ok = shutil.which("loggen") and a.format in ("5424", "3164")
        sender = "loggen" if loggen_ok else "builtin"
    breakdown = run_probe(a)

    port = free_port(socket.SOCK_DGRAM)
    app = ApplianceProcess(
        f'[[sources.syslog]]\nprotocol = "udp"\nlisten = "127.0.0.1:{port}"\nname = "bench"\n',
        extra_toml=a.extra.replace("\\n", "\n"),
    )
    pid = app.proc.pid
    time.sleep(1.0)  # the start's own allocations settle
    rss_start = status_kb(pid, "VmRSS") / 1024
    sampler = Sampler(pid, app.metrics)
    sampler.start()
    t0 = time.monotonic()
    offered = send(sender, port, a)
    send_time = time.monotonic() - t0
    m = app.wait_idle()
    sampler.stop()
    rss_idle = status_kb(pid, "VmRSS") / 1024
    peak = status_kb(pid, "VmHWM") / 1024
    rss_sum = 0.0
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
        if line.startswith("Anonymous:"):
            rss_sum = int(line.split()[1]) / 1024
    final = app.stop()
    stored = app.stored_rows()
    queue_peak = max((s[2] for s in sampler.samples), default=0.0)
    backlog_peak = max((s[3] for s in sampler.samples), default=0.0)
    breakdown["queue_peak_events"] = int(queue_peak)
    breakdown["queue_peak_mb"] = round(queue_peak * breakdown["event_bytes"] / MB, 1)
    # The batch being stored and then evaluated is out of the queue: at most batch_size events
    # and a quarter of queue_bytes.
    cap = m.get("appliance_queue_bytes_capacity", 0.0)
    batch = min(5000, int(cap / 4 / max(1, breakdown["line_bytes"]))) if cap else 5000
    breakdown["batch_events"] = batch
    breakdown["batch_mb"] = round(batch * breakdown["event_bytes"] / MB, 1)
    breakdown["queue_peak_line_bytes"] = int(max((s[4] for s in sampler.samples), default=0.0))
    breakdown["backlog_peak_bytes"] = int(backlog_peak)
    breakdown["backlog_peak_mb"] = round(
        backlog_peak / max(1, a.size) * breakdown["datagram_bytes"] / MB, 1
    )
    peer = run_rsyslog(a, sender) if a.peer == "auto" else None
    print(
        json.dumps(
            {
                "mode": "rss",
                "backend": "python" if os.environ.get("APPLIANCE_NATIVE") == "0" else "native",
                "sender": sender,
                "format": a.format,
                "size": a.size,
                "rate": a.rate,
                "seconds": a.seconds,
                "offered": offered,
                "received": final["received"],
                "stored": stored,
                "dropped_by_reason": dropped_by_reason(m),
                "loss_pct": round(100.0 * (offered - stored) / offered, 3) if offered else 0.0,
                "rss_start_mb": round(rss_start, 1),
                "rss_steady_mb": sampler.steady_mb(send_time),
                "rss_peak_mb": round(peak, 1),
                "rss_idle_mb": round(rss_idle, 1),
                "anonymous_idle_mb": round(rss_sum, 1),
                "breakdown": breakdown,
                "peer_rsyslog": peer,
            }
        )
    )


if __name__ == "__main__":
    main()
