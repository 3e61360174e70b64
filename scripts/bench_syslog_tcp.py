"""Syslog over TCP/TLS throughput: the appliance as a child process, senders in other processes.

    scripts/bench syslog-tcp [--messages N] [--connections C] [--framing lf|octet|mixed]
                             [--tls] [--mix plain|vendor] [--peer auto|none]

Prints one JSON line: offered, received, stored (SQLite rows), dropped by reason, msgs/s
(stored / time from the first byte sent to the last row stored), receiver CPU %, CPU
microseconds per stored message (the figure to compare on a loaded machine) and peak RSS.
TCP pushes back instead of dropping, so "no loss" means stored == offered. With rsyslogd
installed (and without ``--tls``) the same senders then feed rsyslogd (imtcp → omfile) and its
figures are printed beside ours (``peer_rsyslog``). Only 127.0.0.1.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import shutil
import socket
import ssl
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

from benchlib import ApplianceProcess, dropped_by_reason, free_port

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


def sender(port: int, data: bytes, tls_ca: str, start: Any) -> None:
    """Send ``data`` on one connection once every sender is connected (``start``, a
    barrier the parent passes last): the payload is built and the connection made before the
    clock starts, so the run times the receiver, not the senders' string formatting."""
    sock = socket.create_connection(("127.0.0.1", port))
    if tls_ca:
        ctx = ssl.create_default_context(cafile=tls_ca)
        sock = ctx.wrap_socket(sock, server_hostname="localhost")
    view = memoryview(data)
    start.wait()
    for i in range(0, len(data), 1 << 18):
        sock.sendall(view[i : i + (1 << 18)])
    if tls_ca:
        sock = sock.unwrap()
    sock.shutdown(socket.SHUT_WR)
    sock.settimeout(600)
    while sock.recv(4096):
        pass
    sock.close()


def start_senders(port: int, args: argparse.Namespace, tls_ca: str) -> tuple[int, Any]:
    """Build each connection's payload and start its sender (one process per connection,
    forked with its payload), held at a start line: (offered, the barrier the caller passes
    to let them go once they are connected)."""
    per = args.messages // args.connections
    start = mp.Barrier(args.connections + 1)
    procs = [
        mp.Process(
            target=sender,
            args=(port, payload(i * per, per, args.framing, args.mix), tls_ca, start),
        )
        for i in range(args.connections)
    ]
    for p in procs:
        p.start()
    SENDERS.extend(procs)
    return per * args.connections, start


SENDERS: list[mp.Process] = []


def proc_cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def run_rsyslog(args: argparse.Namespace) -> dict[str, Any] | None:
    """The same load into rsyslogd (imtcp → omfile, its defaults otherwise): stored lines/s
    and CPU per line, or ``None`` when it is not installed."""
    rsyslogd = shutil.which("rsyslogd") or (
        "/usr/sbin/rsyslogd" if os.path.exists("/usr/sbin/rsyslogd") else None
    )
    if rsyslogd is None:
        return None
    tmp = Path(tempfile.mkdtemp(prefix="rsyslog-bench-"))
    try:
        port = free_port()
        out = tmp / "out.log"
        (tmp / "rsyslog.conf").write_text(
            f'global(workDirectory="{tmp}")\n'
            'module(load="imtcp")\n'
            f'input(type="imtcp" address="127.0.0.1" port="{port}")\n'
            f'action(type="omfile" file="{out}")\n'
        )
        proc = subprocess.Popen(
            [rsyslogd, "-n", "-f", str(tmp / "rsyslog.conf"), "-i", str(tmp / "pid")],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:  # listening?
                if proc.poll() is not None:
                    return None
                try:
                    socket.create_connection(("127.0.0.1", port), timeout=1).close()
                    break
                except OSError:
                    time.sleep(0.1)
            offered, start = start_senders(port, args, "")
            start.wait(60)
            cpu0 = proc_cpu_seconds(proc.pid)
            t0 = time.monotonic()
            stored, last, last_change = 0, -1, time.monotonic()
            while time.monotonic() - t0 < args.timeout:
                with out.open("rb") if out.exists() else open(os.devnull, "rb") as f:
                    stored = sum(chunk.count(b"\n") for chunk in iter(lambda: f.read(1 << 20), b""))
                if stored >= offered:
                    break
                if stored != last:
                    last, last_change = stored, time.monotonic()
                elif time.monotonic() - last_change > 15:
                    break
                time.sleep(0.05)
            elapsed = time.monotonic() - t0
            cpu = proc_cpu_seconds(proc.pid) - cpu0
        finally:
            proc.terminate()
            proc.wait(30)
            for p in SENDERS:
                p.join(30)
            SENDERS.clear()
        return {
            "offered": offered,
            "stored": stored,
            "seconds": round(elapsed, 2),
            "msgs_per_s": round(stored / elapsed),
            "cpu_us_per_stored": round(cpu * 1e6 / stored, 2) if stored else None,
        }
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def make_tls(tmp: Path) -> tuple[str, str]:
    """A throw-away self-signed server certificate (openssl CLI: no test dependency here)."""
    key, cert = tmp / "server.key", tmp / "server.crt"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-keyout",
            str(key),
            "-out",
            str(cert),
            "-days",
            "1",
            "-subj",
            "/CN=localhost",
            "-addext",
            "subjectAltName=DNS:localhost,IP:127.0.0.1",
        ],
        check=True,
        capture_output=True,
    )
    pem = tmp / "server.pem"
    pem.write_bytes(key.read_bytes() + cert.read_bytes())
    return str(pem), str(cert)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--messages", type=int, default=500_000)
    ap.add_argument("--connections", type=int, default=4)
    ap.add_argument("--framing", choices=("lf", "octet", "mixed"), default="lf")
    ap.add_argument("--tls", action="store_true")
    ap.add_argument("--mix", choices=("plain", "vendor"), default="plain")
    ap.add_argument("--timeout", type=float, default=300.0)
    ap.add_argument("--loop", choices=["auto", "asyncio"], default="auto")
    ap.add_argument("--extra", default="", help="TOML appended to the appliance's config")
    ap.add_argument("--peer", choices=["auto", "none"], default="auto")
    args = ap.parse_args()

    port = free_port()
    src = f'[[sources.syslog]]\nprotocol = "{"tls" if args.tls else "tcp"}"\n'
    src += f'listen = "127.0.0.1:{port}"\nname = "bench"\n'
    tls_dir = Path(tempfile.mkdtemp(prefix="appliance-bench-tls-"))
    cert, ca = make_tls(tls_dir) if args.tls else ("", "")
    if cert:
        src += f'tls_cert = "{cert}"\ntls_key = "{cert}"\n'
    app = ApplianceProcess(src, extra_toml=args.extra.replace("\\n", "\n"), loop=args.loop)
    offered, start = start_senders(port, args, ca)
    start.wait(60)  # every sender connected: the clock starts as they send
    app.mark()
    t0 = time.monotonic()
    stored = rate = 0.0
    last_change, last = time.monotonic(), -1.0
    while time.monotonic() - t0 < args.timeout:
        m = app.metrics()
        stored = m.get("appliance_events_stored_total", 0.0)
        dropped = sum(v for k, v in m.items() if k.startswith("appliance_events_dropped_total"))
        if stored + dropped >= offered:
            break
        now = time.monotonic()
        if stored != last:
            rate = (stored - last) / (now - last_change) if last >= 0 else 0.0
            last, last_change = stored, now
        elif now - last_change > 15:
            break  # stalled
        # The appliance renders every metric per poll (~3 ms of its event loop): polled every
        # 50 ms throughout, that was ~6 % of the CPU the run measures. Seldom while the end
        # is far (half the time the rate so far says is left, at most 250 ms), then every
        # 20 ms, so the clock still stops within 20 ms of the last line.
        left = (offered - stored - dropped) / rate if rate > 0 else 0.0
        time.sleep(min(0.25, max(0.02, left / 2)))
    elapsed = time.monotonic() - t0
    cpu = app.cpu_percent()
    cpu_s = app.cpu_since_mark()
    rss = app.peak_rss_mb()
    for p in SENDERS:
        p.join(30)
    SENDERS.clear()
    m = app.wait_idle()
    final = app.stop()
    rows = app.stored_rows()
    dropped_by = dropped_by_reason(m)
    received = final["received"]
    peer = run_rsyslog(args) if args.peer == "auto" and not args.tls else None
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
                "cpu_us_per_stored": round(cpu_s * 1e6 / rows, 2) if rows else None,
                "receiver_peak_rss_mb": round(rss, 1),
                "cpus": os.cpu_count(),
                "loadavg_1m": os.getloadavg()[0],
                "peer_rsyslog": peer,
            }
        )
    )


if __name__ == "__main__":
    main()
