"""Syslog over UDP: offer N msg/s for T seconds, report what was received, stored and dropped.

Usage: scripts/bench syslog-udp [--rate 50000] [--seconds 30] [--size 256] [--format 5424|3164]
       [--sender auto|builtin|loggen] [--senders 2] [--filler x|random]

Sender: syslog-ng's `loggen` when installed (the peers' baseline tool), else a built-in
multi-process sender that paces pre-built datagrams in 1 ms slots. The message's filler is a
repeated byte (loggen's kind, which the store packs ~240x) or, with ``--filler random`` and
the built-in sender, random text that packs only as far as the header fields do. Output: one
JSON line.
"""

from __future__ import annotations

import argparse
import base64
import json
import multiprocessing as mp
import random
import re
import shutil
import socket
import subprocess
import time

from benchlib import ApplianceProcess, dropped_by_reason, free_port, host_rcvbuf_errors

# Vendor-shaped lines (each goes through its vendor decoder), numbered like the others.
VENDOR_HEADS = {
    "sshd": b"<38>Nov 29 10:00:00 bench-host sshd[4242]: Failed password for invalid user admin"
    b" from 203.0.113.7 port 51234 ssh2 seq: %010d, ",
    "asa": b"<164>Nov 29 10:00:00 fw1 %%ASA-4-106023: Deny tcp src outside:198.51.100.7/4455 "
    b'dst inside:10.0.0.5/22 by access-group "outside_in" seq: %010d, ',
    "fortigate": b'<189>date=2026-11-29 time=10:00:00 devname="fg1" devid="FG100E" '
    b'logid="0000000013" type="traffic" subtype="forward" level="notice" '
    b"srcip=10.1.100.11 srcport=40000 dstip=172.16.200.55 dstport=80 proto=6 "
    b'action="deny" policyid=1 seq: %010d, ',
}


def make_line(seq: int, size: int, fmt: str) -> bytes:
    if fmt in VENDOR_HEADS:
        head = VENDOR_HEADS[fmt] % seq
    elif fmt == "3164":
        head = b"<38>Nov 29 10:00:00 bench-host prg00000[1234]: seq: %010d, " % seq
    else:
        head = b"<38>1 2026-11-29T10:00:00.000000Z bench-host prg00000 1234 - - seq: %010d, " % seq
    return head + b"x" * max(0, size - len(head))


def _send(
    port: int,
    rate: float,
    seconds: float,
    size: int,
    fmt: str,
    first: int,
    count: int,
    out: mp.Queue,
    filler: str,
) -> None:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    addr = ("127.0.0.1", port)
    template = make_line(0, size, fmt)
    cut = template.index(b"seq: ") + 5
    prefix, suffix = template[:cut], template[cut + 10 :]
    # Random filler: 4096 different ones (more than a segment's 1024 lines), so a stored
    # segment packs only as far as its header fields do, the worst case for the store's writes.
    fillers = [suffix]
    if filler == "random":
        rng = random.Random(first)
        fillers = [
            b", " + base64.b64encode(rng.randbytes(len(suffix)))[: len(suffix) - 2]
            for _ in range(4096)
        ]
    sent = failed = 0
    t0 = time.perf_counter()
    while sent < count:
        due = int((time.perf_counter() - t0) * rate) + 1
        burst = min(due, count) - sent
        if burst <= 0:
            time.sleep(0.0005)
            continue
        for i in range(first + sent, first + sent + burst):
            try:
                sock.sendto(prefix + b"%010d" % i + fillers[i % len(fillers)], addr)
            except OSError:  # ENOBUFS and friends: not offered, so not counted as sent
                failed += 1
        sent += burst
        if time.perf_counter() - t0 > seconds * 1.5 + 5:
            break
    out.put(sent - failed)


def send_builtin(
    port: int, rate: int, seconds: float, size: int, fmt: str, senders: int, filler: str
) -> int:
    total = int(rate * seconds)
    per = total // senders
    out: mp.Queue = mp.Queue()
    procs = [
        mp.Process(
            target=_send,
            args=(port, rate / senders, seconds, size, fmt, i * per, per, out, filler),
        )
        for i in range(senders)
    ]
    for p in procs:
        p.start()
    sent = sum(out.get() for _ in procs)
    for p in procs:
        p.join()
    return sent


def send_loggen(port: int, rate: int, seconds: float, size: int, fmt: str) -> int:
    loggen = shutil.which("loggen")
    assert loggen
    args = [loggen, "--dgram", "--inet", "-r", str(rate), "-I", str(int(seconds)), "-s", str(size)]
    if fmt == "5424":
        args += ["-P", "-F"]  # RFC 5424 without octet-count framing: one message per datagram
    args += ["127.0.0.1", str(port)]
    proc = subprocess.run(args, capture_output=True, text=True, timeout=seconds * 3 + 30)
    text = proc.stderr + proc.stdout
    # loggen prints progress lines and then the summary, the last line with "count=":
    # "average rate = 49999.68 msg/sec, count=1500000, time=30.0003, ..."
    counts = re.findall(r"average rate = [^\n]*count=(\d+)", text)
    counts = counts or re.findall(r"count=(\d+)", text)
    if not counts:
        raise SystemExit("cannot read loggen's count: " + text)
    return int(counts[-1])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rate", type=int, default=50_000)
    ap.add_argument("--seconds", type=float, default=30)
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--format", choices=["5424", "3164", *VENDOR_HEADS], default="5424")
    ap.add_argument("--sender", choices=["auto", "builtin", "loggen"], default="auto")
    ap.add_argument("--senders", type=int, default=2)
    ap.add_argument(
        "--filler",
        choices=["x", "random"],
        default="x",
        help="the message's filler: x repeated (loggen's kind), or random text (built-in sender)",
    )
    ap.add_argument("--loop", choices=["auto", "asyncio"], default="auto")
    ap.add_argument("--workers", type=int, default=None, help="sources.syslog workers")
    ap.add_argument("--extra", default="", help="TOML appended to the appliance's config")
    a = ap.parse_args()
    port = free_port(socket.SOCK_DGRAM)
    workers = f"workers = {a.workers}\n" if a.workers is not None else ""
    app = ApplianceProcess(
        f'[[sources.syslog]]\nprotocol = "udp"\nlisten = "127.0.0.1:{port}"\nname = "bench"\n'
        + workers,
        extra_toml=a.extra.replace("\\n", "\n"),
        loop=a.loop,
    )
    sender = a.sender
    if sender == "auto":
        loggen_ok = shutil.which("loggen") and a.format in ("5424", "3164") and a.filler == "x"
        sender = "loggen" if loggen_ok else "builtin"
    rcv0 = host_rcvbuf_errors()
    app.mark()
    t0 = time.monotonic()
    if sender == "loggen":
        offered = send_loggen(port, a.rate, a.seconds, a.size, a.format)
    else:
        offered = send_builtin(port, a.rate, a.seconds, a.size, a.format, a.senders, a.filler)
    send_time = time.monotonic() - t0
    m = app.wait_idle()
    busy_time = time.monotonic() - t0 - 0.5  # wait_idle saw one unchanged 0.5 s poll
    cpu = app.cpu_percent()
    cpu_s = app.cpu_since_mark()
    rss = app.peak_rss_mb()
    final = app.stop()
    stored_rows = app.stored_rows()
    body_bytes = app.stored_body_bytes()
    print(
        json.dumps(
            {
                "mode": "syslog-udp",
                "sender": sender,
                "format": a.format,
                "size": a.size,
                "filler": a.filler,
                "rate": a.rate,
                "seconds": a.seconds,
                "offered": offered,
                "received": final["received"],
                "stored": stored_rows,
                "dropped": final["dropped"],
                "dropped_by_reason": dropped_by_reason(m),
                "loss_pct": round(100.0 * (offered - stored_rows) / offered, 3) if offered else 0.0,
                "kernel_rcvbuf_errors": host_rcvbuf_errors() - rcv0,
                # Stored per second until everything offered was stored or dropped (held bursts are
                # stored after the sender stops, so stored / send time would overstate it).
                "eps": round(stored_rows / max(send_time, busy_time), 1),
                "recv_cpu_pct": round(cpu, 1),
                # The figure to compare on a loaded machine: the appliance's CPU per stored
                # message (reading, decoding, the stages, the store; the kernel's part too).
                "cpu_us_per_stored": round(cpu_s * 1e6 / stored_rows, 2) if stored_rows else None,
                "recv_peak_rss_mb": round(rss, 1),
                # What a stored message takes in the segments' bodies (each byte is written
                # twice: the WAL, then the checkpoint's copy).
                "body_bytes_per_stored": round(body_bytes / stored_rows, 1)
                if stored_rows
                else None,
            }
        )
    )


if __name__ == "__main__":
    main()
