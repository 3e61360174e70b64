#!/usr/bin/env python3
"""SNMP trap benchmark: v2c traps/s received and stored with no loss, beside net-snmp's snmptrapd.

A pre-encoded linkDown trap (our own encoder) is sent with sendto, paced at ``--rate`` per
second for ``--seconds``, to (1) the appliance running as its own process (`appliance run`,
uvloop, real SQLite) and (2) ``snmptrapd -f -C -n -On -m ""`` with ``authCommunity log
public``, logging one line per trap to a file. Loss = sent - rows in SQLite named linkDown
(appliance, counted after a clean stop) or sent - lines logged (snmptrapd). ``--pysnmp`` adds
a plain pysnmp 7 NotificationReceiver (counting callbacks, storing nothing) as the baseline the
fast path replaces. Prints ONE JSON line.

    .venv/bin/python scripts/bench_snmp.py --rate 5000 --seconds 10
"""

from __future__ import annotations

import argparse
import json
import os
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
sys.path.insert(0, str(ROOT))

from appliance.protocols.snmp import ber  # noqa: E402
from appliance.protocols.snmp.message import encode_trap_v2c  # noqa: E402

LINK_DOWN = "1.3.6.1.6.3.1.1.5.3"


def link_down_trap() -> bytes:
    return encode_trap_v2c(
        b"public",
        LINK_DOWN,
        [
            ("1.3.6.1.2.1.2.2.1.1.3", ber.INTEGER, b"\x03"),
            ("1.3.6.1.2.1.2.2.1.2.3", ber.OCTET_STRING, b"GigabitEthernet0/3"),
            ("1.3.6.1.2.1.2.2.1.7.3", ber.INTEGER, b"\x01"),
            ("1.3.6.1.2.1.2.2.1.8.3", ber.INTEGER, b"\x02"),
        ],
        uptime=123456,
    )


def free_port(kind: int = socket.SOCK_DGRAM) -> int:
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def send_paced(port: int, rate: float, seconds: float) -> tuple[int, float]:
    """Send rate*seconds traps, paced in 1 ms slices; returns (sent, elapsed)."""
    payload = link_down_trap()
    total = int(rate * seconds)
    addr = ("127.0.0.1", port)
    sent = 0
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        start = time.perf_counter()
        while sent < total:
            due = min(total, int((time.perf_counter() - start) * rate) + 1)
            while sent < due:
                s.sendto(payload, addr)
                sent += 1
            time.sleep(0.0005)
        elapsed = time.perf_counter() - start
    return sent, elapsed


def metric(text: str, name: str) -> float:
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name) and not line.startswith("#"):
            head, _, value = line.rpartition(" ")
            if head == name or head.startswith(name + "{"):
                total += float(value)
    return total


def scrape(api_port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{api_port}/metrics", timeout=5) as r:
        return r.read().decode()


def wait_settled(read: callable, target: int, timeout: float = 30.0) -> float:  # type: ignore[valid-type]
    """Poll until the count reaches target or stops growing for 2 s."""
    deadline = time.monotonic() + timeout
    last, last_change = -1.0, time.monotonic()
    while time.monotonic() < deadline:
        value = read()
        if value >= target:
            return value
        if value != last:
            last, last_change = value, time.monotonic()
        elif time.monotonic() - last_change > 2.0:
            return value
        time.sleep(0.1)
    return read()


def bench_appliance(rate: float, seconds: float, tmp: Path) -> dict[str, int | float]:
    trap_port, api_port = free_port(), free_port(socket.SOCK_STREAM)
    tmp.mkdir(parents=True, exist_ok=True)
    cfg = tmp / "appliance.toml"
    cfg.write_text(
        f'[appliance]\ndata_dir = "{tmp / "data"}"\nwatchdog = false\nlog_level = "warning"\n'
        f'[api]\nlisten = "127.0.0.1:{api_port}"\ntoken = "bench-token-0123456789"\n'
        f'[[sources.snmp]]\nlisten = "127.0.0.1:{trap_port}"\ncommunities = ["public"]\n'
        f"rate_limit = 0.0\nrcvbuf_bytes = 33554432\n"
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "appliance", "run", "-c", str(cfg)],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                scrape(api_port)
                break
            except OSError as exc:
                if proc.poll() is not None or time.monotonic() > deadline:
                    err = proc.stderr.read().decode() if proc.stderr else "did not start"
                    raise RuntimeError(err) from exc
                time.sleep(0.1)
        sent, elapsed = send_paced(trap_port, rate, seconds)
        stored = wait_settled(
            lambda: metric(scrape(api_port), "appliance_events_stored_total"), sent
        )
        text = scrape(api_port)
        result = {
            "sent": sent,
            "send_seconds": round(elapsed, 3),
            "received": int(metric(text, "appliance_events_received_total")),
            "stored": int(stored),
            "dropped": int(metric(text, "appliance_events_dropped_total")),
            "kernel_drops": int(metric(text, "appliance_udp_socket_drops")),
            "lost": sent - int(stored),
            "stored_per_s": round(stored / elapsed, 1),
        }
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
    # The rows themselves, read after a clean stop, with the trap name the decoder gave them.
    with sqlite3.connect(f"file:{tmp / 'data' / 'appliance.db'}?mode=ro", uri=True) as db:
        (rows,) = db.execute(
            "SELECT count(*) FROM events WHERE module = 'snmp'"
            " AND json_extract(fields, '$.\"event.action\"') = 'linkDown'"
        ).fetchone()
    result["rows_linkDown"] = rows
    result["lost"] = result["sent"] - rows
    return result


def bench_snmptrapd(rate: float, seconds: float, tmp: Path) -> dict[str, object]:
    exe = shutil.which("snmptrapd")
    if exe is None:
        return {"skipped": "snmptrapd not installed (apt-get install snmptrapd)"}
    port = free_port()
    conf = tmp / "snmptrapd.conf"
    conf.write_text("authCommunity log public\n")
    log = tmp / "snmptrapd.log"
    proc = subprocess.Popen(
        [exe, "-f", "-C", "-n", "-On", "-m", "", "-c", str(conf), "-F", "T\\n", "-Lf", str(log),
         f"udp:127.0.0.1:{port}"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        time.sleep(1.0)
        sent, elapsed = send_paced(port, rate, seconds)

        def lines() -> float:
            try:
                return float(sum(1 for line in log.open("rb") if line.startswith(b"T")))
            except OSError:
                return 0.0

        got = wait_settled(lines, sent)
        return {
            "sent": sent,
            "send_seconds": round(elapsed, 3),
            "logged": int(got),
            "lost": sent - int(got),
            "logged_per_s": round(got / elapsed, 1),
        }
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()


PYSNMP_RECEIVER = """
import asyncio, signal, socket, sys
from pysnmp.carrier.asyncio.dgram import udp
from pysnmp.entity import config, engine
from pysnmp.entity.rfc3413 import ntfrcv

async def main(port, out):
    eng = engine.SnmpEngine()
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 << 20)
    sock.bind(("127.0.0.1", port))
    sock.setblocking(False)
    config.add_transport(eng, udp.DOMAIN_NAME, udp.UdpTransport().open_server_mode(sock=sock))
    config.add_v1_system(eng, "idx", "public")
    count = [0]
    ntfrcv.NotificationReceiver(eng, lambda *a: count.__setitem__(0, count[0] + 1))
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    print("ready", flush=True)
    await stop.wait()
    open(out, "w").write(str(count[0]))

asyncio.run(main(int(sys.argv[1]), sys.argv[2]))
"""


def bench_pysnmp(rate: float, seconds: float, tmp: Path) -> dict[str, object]:
    """The same sender against a plain pysnmp 7 NotificationReceiver (its own BER decoder)."""
    port = free_port()
    out = tmp / "pysnmp-count"
    proc = subprocess.Popen(
        [sys.executable, "-c", PYSNMP_RECEIVER, str(port), str(out)],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
    )
    try:
        assert proc.stdout is not None
        proc.stdout.readline()  # "ready"
        sent, elapsed = send_paced(port, rate, seconds)
        time.sleep(max(3.0, seconds))  # let it drain what the kernel buffered
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
    got = int(out.read_text()) if out.exists() else 0
    return {"sent": sent, "received": got, "lost": sent - got, "per_s": round(got / elapsed, 1)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rate", type=float, default=5000.0, help="traps per second offered")
    p.add_argument("--seconds", type=float, default=10.0)
    p.add_argument("--no-snmptrapd", action="store_true")
    p.add_argument(
        "--pysnmp", action="store_true", help="also run a plain pysnmp 7 receiver (baseline)"
    )
    args = p.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-snmp-") as tmp:
        result: dict[str, object] = {
            "mode": "snmp",
            "offered_per_s": args.rate,
            "seconds": args.seconds,
            "cpus": os.cpu_count(),
            "load_before": os.getloadavg()[0],
            "appliance": bench_appliance(args.rate, args.seconds, Path(tmp) / "a"),
        }
        if not args.no_snmptrapd:
            result["snmptrapd"] = bench_snmptrapd(args.rate, args.seconds, Path(tmp))
        if args.pysnmp:
            result["pysnmp"] = bench_pysnmp(args.rate, args.seconds, Path(tmp))
    print(json.dumps(result))


if __name__ == "__main__":
    main()
