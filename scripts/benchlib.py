"""Shared pieces of the bench modes: run the appliance as a child process with a temporary
config, measure its CPU and peak RSS from /proc, read its counters and its SQLite rows.

Every bench sends only to 127.0.0.1 and is bounded in count and time.
"""

from __future__ import annotations

import atexit
import json
import os
import re
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TOKEN = "bench-token"


def free_port(kind: int = socket.SOCK_STREAM) -> int:
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class ApplianceProcess:
    """The appliance under test, in its own process, on a private data dir."""

    def __init__(
        self,
        sources_toml: str,
        extra_toml: str = "",
        loop: str = "auto",
        data_dir: Path | None = None,
    ) -> None:
        self.tmp = Path(tempfile.mkdtemp(prefix="appliance-bench-"))
        atexit.register(shutil.rmtree, self.tmp, ignore_errors=True)  # after the last read
        # A caller-made data_dir (e.g. on a small filesystem it mounted) outlives this object.
        self.data_dir = data_dir or self.tmp / "data"
        self.api_port = free_port()
        self.config = self.tmp / "bench.toml"
        self.config.write_text(
            f'[appliance]\ndata_dir = "{self.data_dir}"\nsensor_id = "bench"\n'
            f'log_level = "info"\nshutdown_timeout = 120.0\nloop = "{loop}"\n'
            f'[api]\nlisten = "127.0.0.1:{self.api_port}"\ntoken = "{TOKEN}"\n'
            f"{extra_toml}\n{sources_toml}\n"
        )
        self.log_path = self.tmp / "appliance.log"
        self._log = self.log_path.open("wb")
        # BENCH_CPROFILE=FILE: the appliance runs under cProfile and leaves its stats there
        # at stop (where its CPU goes per message; the profiler's overhead inflates the rates).
        prof = os.environ.get("BENCH_CPROFILE")
        profiler = ["-m", "cProfile", "-o", prof] if prof else []
        self.proc = subprocess.Popen(
            [sys.executable, *profiler, "-m", "appliance", "run", "--config", str(self.config)],
            stdout=subprocess.DEVNULL,
            stderr=self._log,
            cwd=ROOT,
        )
        self._cpu0 = 0.0
        self._t0 = 0.0
        self.wait_healthy()

    def wait_healthy(self, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise SystemExit("appliance exited: " + self.log_path.read_text())
            try:
                with urllib.request.urlopen(
                    f"http://127.0.0.1:{self.api_port}/healthz", timeout=1
                ) as r:
                    if json.loads(r.read())["status"] == "ok":
                        return
            except OSError:
                pass
            time.sleep(0.1)
        raise SystemExit("appliance did not become healthy")

    def pids(self) -> list[int]:
        """The appliance and its children (decode worker processes)."""
        pid = self.proc.pid
        try:
            kids = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
        except OSError:
            kids = []
        return [pid, *map(int, kids)]

    def cpu_seconds(self) -> float:
        """User+system CPU of the appliance and its live children."""
        total = 0.0
        for pid in self.pids():
            try:
                fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
        return total

    def peak_rss_mb(self) -> float:
        """Sum of peak RSS of the appliance and its children."""
        total = 0.0
        for pid in self.pids():
            try:
                for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                    if line.startswith("VmHWM:"):
                        total += int(line.split()[1]) / 1024
            except OSError:
                continue
        return total

    def mark(self) -> None:
        """Start of the measured interval (for CPU %)."""
        self._cpu0 = self.cpu_seconds()
        self._t0 = time.monotonic()

    def cpu_since_mark(self) -> float:
        """CPU seconds of the appliance and its children since :meth:`mark`."""
        return self.cpu_seconds() - self._cpu0

    def cpu_percent(self) -> float:
        dt = time.monotonic() - self._t0
        return 100.0 * (self.cpu_seconds() - self._cpu0) / dt if dt > 0 else 0.0

    def metrics(self) -> dict[str, float]:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.api_port}/metrics", timeout=5) as r:
            text = r.read().decode()
        out: dict[str, float] = {}
        for line in text.splitlines():
            if line and not line.startswith("#"):
                name, _, value = line.rpartition(" ")
                out[name] = float(value)
        return out

    def wait_idle(self, timeout: float = 120) -> dict[str, float]:
        """Wait until the queue is empty and the stored count stops moving."""
        deadline = time.monotonic() + timeout
        last = -1.0
        while time.monotonic() < deadline:
            m = self.metrics()
            stored = m.get("appliance_events_stored_total", 0.0)
            if m.get("appliance_queue_depth", 0) == 0 and stored == last:
                return m
            last = stored
            time.sleep(0.5)
        return self.metrics()

    def stop(self) -> dict[str, int]:
        """SIGTERM, wait, and return the final counters the appliance logged."""
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(180)
        self._log.close()
        text = self.log_path.read_text(errors="replace")
        m = re.search(r"appliance stopped: received=(\d+) stored=(\d+) dropped=(\d+)", text)
        if not m:
            raise SystemExit("no final counters in the log:\n" + text[-2000:])
        return dict(zip(("received", "stored", "dropped"), map(int, m.groups()), strict=True))

    def stored_rows(self) -> int:
        with sqlite3.connect(self.data_dir / "appliance.db") as conn:
            row = conn.execute("SELECT coalesce(sum(count), 0) FROM event_segments").fetchone()
            return int(row[0])

    def stored_body_bytes(self) -> int:
        """The bytes of the event segments' bodies as stored (packed where they shrank)."""
        with sqlite3.connect(self.data_dir / "appliance.db") as conn:
            row = conn.execute("SELECT coalesce(sum(length(body)), 0) FROM event_segments")
            return int(row.fetchone()[0])


def dropped_by_reason(metrics: dict[str, float]) -> dict[str, int]:
    out: dict[str, int] = {}
    for name, value in metrics.items():
        m = re.match(r'appliance_events_dropped_total\{source="[^"]*",reason="([^"]*)"\}', name)
        if m:
            out[m.group(1)] = out.get(m.group(1), 0) + int(value)
    return out


def host_rcvbuf_errors() -> int:
    lines = Path("/proc/net/snmp").read_text().splitlines()
    for head, vals in zip(lines[::2], lines[1::2], strict=False):
        if head.startswith("Udp:"):
            return int(dict(zip(head.split()[1:], vals.split()[1:], strict=False))["RcvbufErrors"])
    return 0
