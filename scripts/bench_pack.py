#!/usr/bin/env python3
"""What packing the event segments saves: bytes stored per event and the CPU it costs.

    scripts/bench pack [--lines 20000]

Each input is decoded by the syslog/UDP listener's own batch call (slices of 512, one sender),
its stored lines cut into segments of 1024 as the store cuts them, and each segment packed as
the store packs it (``FinishSegments`` on its native thread on the native backend, CPU time of
the whole process while the event loop's thread waits; ``pack_body`` on the Python backend).
Inputs: the corpus's syslog files in name order (real devices' lines; ``APPLIANCE_CORPUS``,
default ``../shared/corpus``; skipped when absent), ``scripts/bench rules``' sshd log, and
``scripts/bench syslog-udp``'s 256-byte RFC 5424 line (one repeated filler: it packs far better
than real traffic, so its UDP runs write less than a real site would).

The peer: what a box running rsyslog to a file keeps, the raw lines (``omfile``) and the same
file after logrotate's default ``compress`` (``gzip -6``, CPU from ``getrusage`` of the child).
Prints one JSON line.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import select
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_rules import Decoder, generate
from bench_syslog_udp import make_line

from appliance import dataplane
from appliance.event import Event
from appliance.store.segments import pack_body, segment_rows_with_ids, segment_text

NOW = 1_790_000_000.0
SLICE = 512
CORPUS = Path(
    os.environ.get("APPLIANCE_CORPUS", Path(__file__).parents[1] / ".." / "shared" / "corpus")
)


def stored_bodies(lines: list[bytes]) -> list[bytes]:
    """The segments' bodies as the store makes them, before packing."""
    decoder = Decoder()
    events: list[Event] = []
    for i in range(0, len(lines), SLICE):
        events.extend(decoder.slice(lines[i : i + SLICE], NOW))
    return [row[7] for row in segment_rows_with_ids(events, 1, 8192)]


def pack_all(bodies: list[bytes]) -> tuple[list[bytes], float]:
    """The bodies as the store keeps them, and the process CPU seconds packing took."""
    native = dataplane.native
    start = time.process_time()
    if native is None:
        packed = [pack_body(b) for b in bodies]
    else:
        job = native.FinishSegments(bodies, False)
        select.select([job.fileno], [], [], 60)
        packed = [stored for stored, _ in job.result()]
    return packed, time.process_time() - start


def gzip_peer(raw: bytes) -> tuple[int, float]:
    """``gzip -6`` of the raw log (logrotate's ``compress``): its size and the child's CPU."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    out = subprocess.run(["gzip", "-6", "-c"], input=raw, capture_output=True, check=True).stdout
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return len(out), cpu


def measure(lines: list[bytes]) -> dict[str, float | int]:
    bodies = stored_bodies(lines)
    events = sum(b.count(b"\n") + 1 for b in bodies)
    packed, pack_cpu = pack_all(bodies)
    start = time.process_time()
    assert [segment_text(p) for p in packed] == bodies
    unpack_cpu = time.process_time() - start
    raw = b"".join(line + b"\n" for line in lines)
    gz, gz_cpu = gzip_peer(raw)
    plain = sum(map(len, bodies))
    kept = sum(map(len, packed))
    return {
        "events": events,
        "stored_line_bytes": round(plain / events, 1),
        "packed_bytes": round(kept / events, 1),
        "ratio": round(plain / kept, 1),
        "pack_us": round(pack_cpu * 1e6 / events, 3),
        "unpack_and_check_us": round(unpack_cpu * 1e6 / events, 3),
        "rsyslog_file_bytes": round(len(raw) / events, 1),
        "logrotate_gzip_bytes": round(gz / events, 1),
        "logrotate_gzip_us": round(gz_cpu * 1e6 / events, 3),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--lines", type=int, default=20_000, help="lines of the generated inputs")
    a = ap.parse_args()
    inputs: dict[str, list[bytes]] = {}
    logs = sorted((CORPUS / "syslog").glob("*.log"))
    if logs:
        inputs["corpus"] = [
            line for p in logs for line in p.read_bytes().splitlines() if line.strip()
        ]
    with tempfile.TemporaryDirectory(prefix="bench-pack-") as tmp:
        path = Path(tmp) / "sshd.log"
        generate(path, a.lines)
        inputs["rules_sshd"] = path.read_bytes().splitlines()
    inputs["udp_5424_256"] = [make_line(i, 256, "5424") for i in range(a.lines)]
    out: dict[str, object] = {
        "mode": "pack",
        "backend": "native" if dataplane.native is not None else "python",
    }
    for name, lines in inputs.items():
        out[name] = measure(lines)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
