"""Syslog over TCP/TLS throughput: the appliance as a child process, senders in other processes.

    scripts/bench syslog-tcp [--messages N] [--connections C] [--framing lf|octet|mixed]
                             [--tls] [--mix plain|vendor]

Prints one JSON line: offered, received, stored (SQLite rows), dropped by reason, msgs/s
(stored / time from the first byte sent to the last row stored), receiver CPU % and peak RSS.
TCP pushes back instead of dropping, so "no loss" means stored == offered. Only 127.0.0.1.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import re
import signal
import socket
import sqlite3
import ssl
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TOKEN = "bench-token"

VENDOR_LINES = (
    b"<38>Nov 29 10:00:00 srv1 sshd[4242]: Failed password for invalid user admin from "
    b"203.0.113.7 port 51234 ssh2 seq=%d",
    b"<166>Nov 29 10:00:00 fw1 %%ASA-6-302013: Built outbound TCP connection %d for "
    b"outside:198.51.100.1/443 (198.51.100.1/443) to inside:10.1.1.2/53496 (10.1.1.2/53496)",
    b'<189>date=2026-11-29 time=10:00:00 devname="fg1" devid="FG100E" logid="0000000013" '
    b'type="traffic" subtype="forward" level="notice" srcip=10.1.100.11 srcport=%d '
    b'dstip=172.16.200.55 dstport=80 proto=6 action="deny" policyid=1',
    b"<4>Nov 29 10:00:00 gw kernel: DROP IN=eth0 OUT= SRC=192.0.2.9 DST=10.0.0.1 LEN=60 "
    b"PROTO=TCP SPT=%d DPT=22",
    b"<14>Nov 29 10:00:00 app1 myapp[77]: an ordinary line nobody decodes, number %d",
)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def payload(start: int, count: int, framing: str, mix: str) -> bytes:
    out = []
    for i in range(start, start + count):
        if mix == "vendor":
            msg = VENDOR_LINES[i % len(VENDOR_LINES)] % i
        else:
            msg = b"<13>Nov 29 10:00:00 bench app[123]: bench message number %d" % i
        octet = framing == "octet" or (framing == "mixed" and i % 2)
        out.append(b"%d %s" % (len(msg), msg) if octet else msg + b"\n")
    return b"".join(out)


def sender(port: int, start: int, count: int, framing: str, mix: str, tls_ca: str) -> None:
    data = payload(start, count, framing, mix)
    sock = socket.create_connection(("127.0.0.1", port))
    if tls_ca:
        ctx = ssl.create_default_context(cafile=tls_ca)
        sock = ctx.wrap_socket(sock, server_hostname="localhost")
    view = memoryview(data)
    for i in range(0, len(data), 1 << 18):
        sock.sendall(view[i : i + (1 << 18)])
    if tls_ca:
        sock = sock.unwrap()
    sock.shutdown(socket.SHUT_WR)
    sock.settimeout(600)
    while sock.recv(4096):
        pass
    sock.close()


def make_tls(tmp: Path) -> tuple[str, str]:
    import trustme  # test extra; only needed for --tls

    ca = trustme.CA()
    ca.issue_cert("localhost", "127.0.0.1").private_key_and_cert_chain_pem.write_to_path(
        str(tmp / "server.pem")
    )
    ca.cert_pem.write_to_path(str(tmp / "ca.pem"))
    return str(tmp / "server.pem"), str(tmp / "ca.pem")


class Appliance:
    def __init__(self, tmp: Path, listen_port: int, tls_cert: str) -> None:
        self.tmp = tmp
        self.api_port = free_port()
        tls = f'tls_cert = "{tls_cert}"\ntls_key = "{tls_cert}"\n' if tls_cert else ""
        cfg = tmp / "bench.toml"
        cfg.write_text(
            f'[appliance]\ndata_dir = "{tmp / "data"}"\nsensor_id = "bench"\n'
            f"shutdown_timeout = 120.0\n"
            f'[api]\nlisten = "127.0.0.1:{self.api_port}"\ntoken = "{TOKEN}"\n'
            f"[[sources.syslog]]\nprotocol = \"{'tls' if tls_cert else 'tcp'}\"\n"
            f'listen = "127.0.0.1:{listen_port}"\n{tls}'
        )
        self.log = (tmp / "appliance.log").open("wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "appliance", "run", "--config", str(cfg)],
            stdout=subprocess.DEVNULL,
            stderr=self.log,
            cwd=ROOT,
        )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise SystemExit("appliance exited: " + (tmp / "appliance.log").read_text())
            try:
                self.metrics()
                return
            except OSError:
                time.sleep(0.1)
        raise SystemExit("appliance did not start")

    def metrics(self) -> dict[str, float]:
        url = f"http://127.0.0.1:{self.api_port}/metrics"
        with urllib.request.urlopen(url, timeout=5) as r:
            text = r.read().decode()
        out = {}
        for line in text.splitlines():
            if line and not line.startswith("#"):
                name, _, value = line.rpartition(" ")
                out[name] = float(value)
        return out

    def cpu_seconds(self) -> float:
        fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def peak_rss_mb(self) -> float:
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
        return 0.0

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(180)
        self.log.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--messages", type=int, default=500_000)
    ap.add_argument("--connections", type=int, default=4)
    ap.add_argument("--framing", choices=("lf", "octet", "mixed"), default="lf")
    ap.add_argument("--tls", action="store_true")
    ap.add_argument("--mix", choices=("plain", "vendor"), default="plain")
    ap.add_argument("--timeout", type=float, default=300.0)
    args = ap.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="appliance-bench-tcp-"))
    cert, ca = make_tls(tmp) if args.tls else ("", "")
    port = free_port()
    app = Appliance(tmp, port, cert)
    per = args.messages // args.connections
    offered = per * args.connections
    cpu0 = app.cpu_seconds()
    t0 = time.monotonic()
    procs = [
        mp.Process(target=sender, args=(port, i * per, per, args.framing, args.mix, ca))
        for i in range(args.connections)
    ]
    for p in procs:
        p.start()
    stored = 0.0
    last_change, last = time.monotonic(), -1.0
    while time.monotonic() - t0 < args.timeout:
        m = app.metrics()
        stored = m.get("appliance_events_stored_total", 0.0)
        dropped = sum(v for k, v in m.items() if k.startswith("appliance_events_dropped_total"))
        if stored + dropped >= offered:
            break
        if stored != last:
            last, last_change = stored, time.monotonic()
        elif time.monotonic() - last_change > 15:
            break  # stalled
        time.sleep(0.05)
    elapsed = time.monotonic() - t0
    cpu = 100.0 * (app.cpu_seconds() - cpu0) / elapsed
    rss = app.peak_rss_mb()
    for p in procs:
        p.join(30)
    m = app.metrics()
    app.stop()
    with sqlite3.connect(tmp / "data" / "appliance.db") as conn:
        rows = int(conn.execute("SELECT count(*) FROM events").fetchone()[0])
    dropped_by: dict[str, int] = {}
    received = 0
    for name, value in m.items():
        d = re.match(r'appliance_events_dropped_total\{.*reason="([^"]*)"', name)
        if d:
            dropped_by[d.group(1)] = dropped_by.get(d.group(1), 0) + int(value)
        if name.startswith("appliance_events_received_total"):
            received += int(value)
    print(
        json.dumps(
            {
                "mode": "syslog-tls" if args.tls else "syslog-tcp",
                "framing": args.framing,
                "mix": args.mix,
                "connections": args.connections,
                "offered": offered,
                "received": received,
                "stored": rows,
                "dropped": dropped_by,
                "lost": offered - rows - sum(dropped_by.values()),
                "seconds": round(elapsed, 2),
                "msgs_per_s": round(rows / elapsed),
                "receiver_cpu_percent": round(cpu, 1),
                "receiver_peak_rss_mb": round(rss, 1),
                "cpus": os.cpu_count(),
                "loadavg_1m": os.getloadavg()[0],
            }
        )
    )


if __name__ == "__main__":
    main()
