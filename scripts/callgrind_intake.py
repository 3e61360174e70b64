#!/usr/bin/env python3
"""The syslog batch intake's cost per message in instructions (steadier than times on a shared
box): header, vendor decoder, event and its stored line, as the UDP listener runs them.

Run under callgrind with ``--rounds 1`` and ``--rounds 3`` and subtract the totals: the setup
(interpreter, imports, the generated lines) is the same in both, so the difference over the
extra rounds' messages is the intake's::

    for r in 1 3; do valgrind --tool=callgrind --callgrind-out-file=/dev/null \\
        .venv/bin/python scripts/callgrind_intake.py --format sshd --rounds $r; done

(instructions of round 3 minus round 1) / (2 x --lines) is the figure in README "Sizing".
``--format`` is one of ``scripts/bench budget``'s line formats (rfc5424, sshd, asa, fortigate) or
``loggen``: syslog-ng's ``loggen -P -F`` line (what ``scripts/bench syslog-udp`` sends), RFC 5424
with a UTF-8 BOM before MSG and a trailing newline.
``--queue`` also queues each slice's events (``Pipeline.offer_batch``) and takes them off in
batches (``_take_batch``) as the pipeline task does, each batch freed once taken, with the
collector off as the appliance runs (``tune_gc``): the listener's main-thread path up to the
stages and the store.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_budget import NOW, SENDER, make_line

from appliance.config import SyslogSource
from appliance.metrics import Registry
from appliance.pipeline.bus import Pipeline
from appliance.runtime import tune_gc
from appliance.sources.syslog_intake import SyslogIntake

LOGGEN = (
    b"<38>1 2026-12-05T04:32:46+00:00 localhost prg00000 1234 - - \xef\xbb\xbfseq: %010d, "
    b"thread: 0000, runid: 1796445166, stamp: 2026-12-05T04:32:46 "
)


def loggen_line(seq: int, size: int) -> bytes:
    head = LOGGEN % seq
    pad = max(0, size - 1 - len(head))
    return head + (b"PADD" * (pad // 4 + 1))[:pad] + b"\n"


class _Store:
    raw_max_bytes = 8192


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--format", default="sshd")
    ap.add_argument("--lines", type=int, default=20_000)
    ap.add_argument("--rounds", type=int, default=1)
    ap.add_argument("--queue", action="store_true", help="queue and batch the events too")
    ap.add_argument("--slice", type=int, default=512, help="datagrams per recvmmsg slice")
    args = ap.parse_args()
    if args.format == "loggen":
        lines = [loggen_line(i, 256) for i in range(args.lines)]
    else:
        lines = [make_line(i, 256, args.format) for i in range(args.lines)]
    cfg = SyslogSource(listen="127.0.0.1:0", allowed=["192.0.2.0/24"], rate_limit=0.0)
    metrics = Registry()
    dropped = metrics.counter("dropped", "", ["source", "reason"])
    truncated = metrics.counter("truncated", "", ["source"])
    intake = SyslogIntake(cfg, [], metrics, "udp")
    items = [(line, (SENDER, 514)) for line in lines]
    pipeline = None
    if args.queue:
        pipeline = Pipeline(_Store(), metrics, queue_size=len(items))  # type: ignore[arg-type]
        tune_gc()
    for _ in range(args.rounds):
        for i in range(0, len(items), args.slice):  # the listener's recvmmsg slice
            batch = items[i : i + args.slice]
            events = intake.datagrams(batch, NOW, 8192, 8192, dropped, truncated)
            if pipeline is not None:
                pipeline.offer_batch(events, "udp")
                if len(pipeline) >= pipeline.batch_size:
                    pipeline._take_batch()
        while pipeline is not None and len(pipeline):
            pipeline._take_batch()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
