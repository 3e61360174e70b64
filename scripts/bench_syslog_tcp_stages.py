"""CPU per message of each step of the syslog TCP/TLS stream path, in one process, no socket:

    scripts/bench syslog-tcp-stages [--messages N] [--framing lf|octet] [--mix plain|vendor]

The steps the connection's ``_drain`` and the pipeline run for every stream read, in their
order and with the same objects: the framer (``feed`` of 64 KiB reads) with the frames
taken in chunks and decoded (``SyslogIntake.stream``: one native call per chunk on the native
backend), the queue (``Pipeline.offer_batch`` and ``_take_batch``), the segment rows with their
search filters and packed bodies (``segment_rows``, ``finish_rows``: here on the same thread,
where the store runs the native ones on a thread of their own) and the SQLite insert. Prints
one JSON line of CPU microseconds per message (median of ``--repeat`` runs). The rules engine
is left out: its figures are ``scripts/bench rules`` and ``scripts/bench budget``.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import sqlite3
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from bench_syslog_tcp import payload

from appliance import dataplane
from appliance.config import SyslogSource
from appliance.metrics import Registry
from appliance.pipeline.bus import Pipeline
from appliance.protocols.syslog.framing import new_framer
from appliance.runtime import tune_gc
from appliance.sources.syslog_intake import SyslogIntake
from appliance.sources.syslog_tcp import FRAMES_PER_CALL
from appliance.store import Store
from appliance.store.segments import INSERT_INDEX, INSERT_SEGMENT, finish_rows, segment_rows

SENDER = "127.0.0.1"
NOW = 1_764_410_400.0
READ = 65536


class _Store:
    raw_max_bytes = 8192


async def make_store(db: Path) -> None:
    store = Store(db, quick_check=False)
    await store.open()
    await store.close()


def run_once(data: bytes, n: int, db: Path) -> dict[str, float]:
    """One pass over ``data`` as the appliance streams it: each read decoded and queued, each
    batch the queue hands out encoded and inserted, so memory is reused as it is there."""
    metrics = Registry()
    cfg = SyslogSource(listen="127.0.0.1:0", name="bench", protocol="tcp")
    intake = SyslogIntake(cfg, [], metrics, "tcp")
    prof = intake.profile(SENDER)
    dropped = metrics.counter("dropped", "", ["source", "reason"])
    pipeline = Pipeline(_Store(), metrics)  # type: ignore[arg-type]
    framer = new_framer()
    asyncio.run(make_store(db))  # the schema, as the appliance makes it
    conn = sqlite3.connect(db, isolation_level=None)
    conn.execute("PRAGMA synchronous=NORMAL")
    t = dict.fromkeys(("intake", "queue", "segments", "sqlite"), 0.0)
    clock = time.process_time
    stream = getattr(intake, "stream", None)
    next_id = 1
    stored = 0

    def store(batch: list[Any]) -> None:
        nonlocal next_id, stored
        start = clock()
        for ev in batch:
            ev.id = next_id
            next_id += 1
        seg, index = finish_rows(segment_rows(batch, 8192), True)
        mid = clock()
        conn.execute("BEGIN IMMEDIATE")
        conn.executemany(INSERT_SEGMENT, seg)
        conn.executemany(INSERT_INDEX, index)
        conn.execute("COMMIT")
        end = clock()
        t["segments"] += mid - start
        t["sqlite"] += end - mid
        stored += len(batch)

    gc.collect()
    for i in range(0, len(data), READ):
        # A read: fed, then its frames taken and decoded a chunk at a time as the
        # connection's _drain does (SyslogIntake.stream; before it, next_frame + frames).
        start = clock()
        framer.feed(data[i : i + READ])
        decoded = []
        while True:
            if stream is not None:
                events, got, line_bytes = stream(
                    framer, FRAMES_PER_CALL, SENDER, prof, NOW, 8192, dropped, "bench"
                )
            else:
                chunk = []
                for _ in range(FRAMES_PER_CALL):
                    frame = framer.next_frame()
                    if frame is None:
                        break
                    chunk.append(frame)
                got, line_bytes = len(chunk), None
                events = intake.frames(chunk, SENDER, prof, NOW, 8192, dropped) if chunk else []
            if got:
                decoded.append((events, line_bytes))
            if got < FRAMES_PER_CALL:
                break
        mid = clock()
        for events, line_bytes in decoded:
            if line_bytes is None:
                pipeline.offer_batch(events, "bench")
            else:
                pipeline.offer_batch(events, "bench", line_bytes)  # type: ignore[call-arg]
        batch = None
        if len(pipeline) >= pipeline.batch_size or i + READ >= len(data):
            batch = pipeline._take_batch()[0]
        end = clock()
        t["intake"] += mid - start
        t["queue"] += end - mid
        if batch:
            store(batch)
    while len(pipeline):
        start = clock()
        batch = pipeline._take_batch()[0]
        t["queue"] += clock() - start
        store(batch)
    conn.close()
    assert stored == n, (stored, n)
    return {k: v * 1e6 / n for k, v in t.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--messages", type=int, default=200_000)
    ap.add_argument("--framing", choices=("lf", "octet"), default="lf")
    ap.add_argument("--mix", choices=("plain", "vendor"), default="plain")
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args()
    data = payload(0, args.messages, args.framing, args.mix)
    runs: list[dict[str, float]] = []
    tune_gc()  # as the appliance runs: no collection on the allocation path
    with tempfile.TemporaryDirectory(prefix="bench-tcp-stages-") as tmp:
        for i in range(args.repeat):
            runs.append(run_once(data, args.messages, Path(tmp) / f"s{i}.db"))
    stages: dict[str, Any] = {k: round(statistics.median(r[k] for r in runs), 3) for k in runs[0]}
    print(
        json.dumps(
            {
                "mode": "syslog-tcp-stages",
                "backend": "native" if dataplane.native is not None else "python",
                "framing": args.framing,
                "mix": args.mix,
                "messages": args.messages,
                "stages_us": stages,
                "total_us": round(sum(stages.values()), 3),
                "loadavg_1m": os.getloadavg()[0],
            }
        )
    )


if __name__ == "__main__":
    main()
