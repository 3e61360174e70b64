#!/usr/bin/env python3
"""SNMP trap benchmark: v2c traps/s received and stored with no loss, beside net-snmp's snmptrapd.

A pre-encoded linkDown trap (our own encoder) is sent with sendto, paced at ``--rate`` per
second for ``--seconds``, to (1) the appliance running as its own process (`appliance run`,
uvloop, real SQLite) and (2) ``snmptrapd -f -C -n -On -m ""`` with ``authCommunity log
public``, logging one line per trap to a file. Loss = sent - rows in SQLite named linkDown
(appliance, counted after a clean stop) or sent - lines logged (snmptrapd). ``--pysnmp`` adds
a plain pysnmp 7 NotificationReceiver (counting callbacks, storing nothing) as the baseline the
fast path replaces. ``cpu_us_per_trap`` is the appliance's CPU (user + system, from the first
trap sent until everything is stored) over the traps stored. ``--rcvbuf`` sets the
appliance's ``rcvbuf_bytes`` (a small one shows what a burst costs beyond the kernel's buffer).
``--v3`` sends an SNMPv3 authPriv (SHA/AES) linkDown trap instead, made once by net-snmp's
snmptrap and sent again and again (the appliance's pysnmp path; snmptrapd is given the same
user). Prints ONE JSON line.

    scripts/bench snmp --rate 5000 --seconds 10 [--pysnmp] [--no-snmptrapd] [--loop asyncio]
                       [--rcvbuf 33554432] [--v3]
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
from collections.abc import Callable
from pathlib import Path

import orjson
from benchlib import ApplianceProcess, dropped_by_reason, free_port

from appliance.protocols.snmp import ber
from appliance.protocols.snmp.message import encode_trap_v2c
from appliance.store.segments import segment_text

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


V3_ENGINE = "0x8000000001020304"
V3_USER = ("bench", "benchauth1", "benchpriv1")  # name, SHA auth key, AES priv key


def v3_link_down_trap() -> bytes:
    """One authPriv trap as net-snmp's snmptrap encodes it, caught on a local socket."""
    exe = shutil.which("snmptrap")
    if exe is None:
        raise SystemExit("--v3 needs net-snmp's snmptrap (apt-get install snmp)")
    user, auth, priv = V3_USER
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        s.settimeout(10)
        subprocess.run(
            [exe, "-v3", "-u", user, "-e", V3_ENGINE, "-l", "authPriv", "-a", "SHA", "-A", auth,
             "-x", "AES", "-X", priv, f"udp:127.0.0.1:{s.getsockname()[1]}", "", LINK_DOWN,
             "1.3.6.1.2.1.2.2.1.1.3", "i", "3", "1.3.6.1.2.1.2.2.1.2.3", "s",
             "GigabitEthernet0/3"],
            check=True, timeout=10,
        )  # fmt: skip
        return s.recv(65_535)


PAYLOAD: list[bytes] = []  # the trap every sender sends (set in main)


def send_paced(port: int, rate: float, seconds: float) -> tuple[int, float]:
    """Send rate*seconds traps, paced in 1 ms slices; returns (sent, elapsed)."""
    payload = PAYLOAD[0]
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


def wait_settled(read: Callable[[], float], target: int, timeout: float = 30.0) -> float:
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


def bench_appliance(
    rate: float, seconds: float, loop: str, rcvbuf: int, v3: bool
) -> dict[str, object]:
    port = free_port(socket.SOCK_DGRAM)
    user, auth, priv = V3_USER
    users = (
        f'[[sources.snmp.users]]\nname = "{user}"\nengine_id = "{V3_ENGINE}"\n'
        f'auth_protocol = "sha"\nauth_key = "{auth}"\npriv_protocol = "aes"\n'
        f'priv_key = "{priv}"\n'
        if v3
        else ""
    )
    app = ApplianceProcess(
        f'[[sources.snmp]]\nlisten = "127.0.0.1:{port}"\nname = "bench"\n'
        f'communities = ["public"]\nrate_limit = 0.0\nrcvbuf_bytes = {rcvbuf}\n{users}',
        loop=loop,
    )
    app.mark()
    cpu0 = app.cpu_seconds()
    sent, elapsed = send_paced(port, rate, seconds)
    metrics = app.wait_idle()
    cpu, rss = app.cpu_percent(), app.peak_rss_mb()
    cpu_used = app.cpu_seconds() - cpu0
    final = app.stop()
    # The rows themselves, read after a clean stop, with the trap name the decoder gave them.
    with sqlite3.connect(f"file:{app.tmp / 'data' / 'appliance.db'}?mode=ro", uri=True) as db:
        rows = 0
        for (body,) in db.execute("SELECT body FROM event_segments"):
            for line in segment_text(body).split(b"\n"):
                _ts, _created, module, fields, _raw = orjson.loads(line)
                rows += module == "snmp" and fields.get("event.action") == "linkDown"
    return {
        "sent": sent,
        "send_seconds": round(elapsed, 3),
        "received": final["received"],
        "stored_linkDown_rows": rows,
        "dropped": final["dropped"],
        "dropped_by_reason": dropped_by_reason(metrics),
        "lost": sent - rows,
        "stored_per_s": round(rows / elapsed, 1),
        "recv_cpu_pct": round(cpu, 1),
        "cpu_us_per_trap": round(cpu_used * 1e6 / max(1, rows), 1),
        "recv_peak_rss_mb": round(rss, 1),
    }


def bench_snmptrapd(rate: float, seconds: float, tmp: Path) -> dict[str, object]:
    exe = shutil.which("snmptrapd")
    if exe is None:
        return {"skipped": "snmptrapd not installed (apt-get install snmptrapd)"}
    port = free_port()
    conf = tmp / "snmptrapd.conf"
    user, auth, priv = V3_USER
    conf.write_text(
        "authCommunity log public\n"
        f"createUser -e {V3_ENGINE} {user} SHA {auth} AES {priv}\nauthUser log {user}\n"
    )
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
    p.add_argument("--loop", choices=["auto", "asyncio"], default="auto")
    p.add_argument("--rcvbuf", type=int, default=32 << 20, help="the appliance's rcvbuf_bytes")
    p.add_argument("--v3", action="store_true", help="send SNMPv3 authPriv traps")
    p.add_argument("--no-snmptrapd", action="store_true")
    p.add_argument(
        "--pysnmp", action="store_true", help="also run a plain pysnmp 7 receiver (baseline)"
    )
    args = p.parse_args()
    PAYLOAD.append(v3_link_down_trap() if args.v3 else link_down_trap())
    with tempfile.TemporaryDirectory(prefix="bench-snmp-") as tmp:
        result: dict[str, object] = {
            "mode": "snmp",
            "offered_per_s": args.rate,
            "seconds": args.seconds,
            "version": "3 authPriv" if args.v3 else "2c",
            "cpus": os.cpu_count(),
            "load_before": os.getloadavg()[0],
            "appliance": bench_appliance(args.rate, args.seconds, args.loop, args.rcvbuf, args.v3),
        }
        if not args.no_snmptrapd:
            result["snmptrapd"] = bench_snmptrapd(args.rate, args.seconds, Path(tmp))
        if args.pysnmp and not args.v3:
            result["pysnmp"] = bench_pysnmp(args.rate, args.seconds, Path(tmp))
    print(json.dumps(result))


if __name__ == "__main__":
    main()
