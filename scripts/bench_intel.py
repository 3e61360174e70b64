#!/usr/bin/env python3
"""Threat intel at scale: load time of a million indicators, lookup cost, and what the
enrichment stage adds to ingest, with and without it, from the same run.

- ``load``: a generated list (80 % addresses, 10 % /20-/30 blocks, 5 % domains, 5 % SHA-256
  hashes; seeded) read and indexed as the appliance does (``load_index``), wall and CPU
  seconds, and the process's RSS growth;
- ``lookup``: CPU ns per ``lookup_ip`` (random addresses, a share of them listed) and per
  firewall event through the stage (``enrich_batch``, as the pipeline runs it: source and
  destination looked up, a miss the usual case);
- ``ingest``: syslog firewall lines decoded as the listeners do, offered to the real pipeline
  and stored in a real SQLite file, CPU µs per line with the stage (index of --indicators)
  and without; rounds alternate so both see the same machine, the median is reported.

The appliance's GC policy (automatic collection off, a timer) is used throughout.
Prints one JSON line. ``--indicators N``, ``--lines N``, ``--rounds N``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

from appliance.analysis.intel_stage import IntelEnricher, load_index
from appliance.config import parse_config
from appliance.event import Event
from appliance.metrics import Registry
from appliance.pipeline.bus import Pipeline
from appliance.protocols.syslog.decode import decode_with_fields
from appliance.protocols.syslog.vendors import REGISTRY
from appliance.runtime import tune_gc
from appliance.store import Store

T0 = 1_790_000_000.0


def ip(rnd: random.Random) -> str:
    a = rnd.getrandbits(32)
    return f"{a >> 24 & 255}.{a >> 16 & 255}.{a >> 8 & 255}.{a & 255}"


def generate(path: Path, n: int, seed: int = 16) -> list[str]:
    """The list file, and a sample of listed addresses (for hits in the lookups)."""
    rnd = random.Random(seed)
    listed: list[str] = []
    with path.open("w") as f:
        f.write("# generated blocklist for scripts/bench intel\n")
        for i in range(n):
            r = i % 20
            if r < 16:
                a = ip(rnd)
                if len(listed) < 10_000:
                    listed.append(a)
                f.write(a + "\n")
            elif r < 18:
                plen = rnd.randint(20, 30)
                a = rnd.getrandbits(32) >> (32 - plen) << (32 - plen)
                f.write(f"{a >> 24 & 255}.{a >> 16 & 255}.{a >> 8 & 255}.{a & 255}/{plen} ; x\n")
            elif r == 18:
                f.write(f"h{rnd.getrandbits(48):012x}.example-bad.net\n")
            else:
                f.write(f"{rnd.getrandbits(256):064x}\n")
    return listed


def decode(line: bytes, now: float) -> Event:
    """A line as the syslog listeners decode it (native header when built, vendor decoders)."""
    msg, fields = decode_with_fields(line, now, None, "192.0.2.1")
    name = REGISTRY.decode(msg, fields)
    if name:
        fields["event.dataset"] = name
    return Event(now, now, "syslog", fields, line)


def calibrate() -> float:
    """This machine's speed right now: ns to build a 6-entry dict literal (README sizing)."""
    import timeit

    n = 200_000
    return timeit.timeit("{'a': 1, 'b': 2, 'c': 3, 'd': 4, 'e': 5, 'f': 6}", number=n) / n * 1e9


def rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def firewall_lines(
    n: int, listed: list[str], hit_share: float, peers: int, seed: int = 17
) -> list[bytes]:
    """Lines from ``peers`` distinct outside addresses (a site sees the same ones again and
    again), ``hit_share`` of them from listed ones."""
    rnd = random.Random(seed)
    pool = [ip(rnd) for _ in range(peers)]
    out = []
    for i in range(n):
        src = rnd.choice(listed) if rnd.random() < hit_share else rnd.choice(pool)
        out.append(
            (
                f"<4>Dec  4 10:00:{i % 60:02d} fw1 kernel: FIREWALL_IN IN=eth0 OUT= SRC={src}"
                f" DST=10.0.{i % 250}.{i % 200 + 1} LEN=60 TOS=0x00 PREC=0x00 TTL=52 ID={i}"
                f" DF PROTO=TCP SPT={1024 + i % 60000} DPT=443 WINDOW=64240 RES=0x00 SYN URGP=0"
            ).encode()
        )
    return out


async def ingest(lines: list[bytes], stage: IntelEnricher | None, db: Path) -> float:
    """CPU seconds to decode, enrich (if a stage is given) and store ``lines``."""
    store = Store(db)
    await store.open()
    pipeline = Pipeline(store, Registry(), batch_size=5000, flush_interval=0.05)
    if stage is not None:
        pipeline.before_store.append(stage)
    pipeline.start()
    cpu = time.process_time()
    try:
        for i, line in enumerate(lines):
            ev = decode(line, T0 + i * 1e-3)
            # The queue is full: let the pipeline drain (it has no event to wait on).
            while not pipeline.offer(ev, "bench"):  # noqa: ASYNC110
                await asyncio.sleep(0.001)
            if not i % 2000:
                await asyncio.sleep(0)
        while pipeline.stored.value() < len(lines):  # noqa: ASYNC110 - a counter, polled
            await asyncio.sleep(0.005)
        return time.process_time() - cpu
    finally:
        await pipeline.stop(30.0)
        await store.close()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--indicators", type=int, default=1_000_000)
    ap.add_argument("--lines", type=int, default=100_000, help="firewall lines per ingest round")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--hit-share", type=float, default=0.01, help="share of lines from listed IPs")
    ap.add_argument("--peers", type=int, default=20_000, help="distinct outside addresses")
    ap.add_argument(
        "--prefilter",
        choices=("native", "python"),
        default="native",
        help="the stage's batch test: the data plane's (when built) or the Python loop",
    )
    args = ap.parse_args()
    tune_gc()
    tmp = Path(tempfile.mkdtemp(prefix="bench-intel-"))
    listed = generate(tmp / "blocklist.txt", args.indicators)
    config = parse_config(
        {
            "appliance": {"data_dir": str(tmp / "data"), "allow_empty": True},
            "analysis": {"intel_files": ["blocklist.txt"], "intel_max_indicators": 10_000_000},
        },
        base_dir=tmp,
    )
    rss0 = rss_mb()
    wall, cpu = time.perf_counter(), time.process_time()
    index, report, errors = load_index(config)
    load_wall, load_cpu = time.perf_counter() - wall, time.process_time() - cpu
    rss1 = rss_mb()
    assert not errors, errors

    rnd = random.Random(18)
    probes = [rnd.choice(listed) if i % 10 == 0 else ip(rnd) for i in range(200_000)]  # 10 % listed
    cpu = time.process_time()
    hits = sum(1 for p in probes if index.lookup_ip(p, T0) >= 0)
    lookup_ns = (time.process_time() - cpu) / len(probes) * 1e9

    stage = IntelEnricher(index, Registry())
    if args.prefilter == "python":
        stage.native_select = None
    lines = firewall_lines(args.lines, listed, args.hit_share, args.peers)
    events = [decode(line, T0) for line in lines[:50_000]]
    cpu = time.process_time()
    enriched = stage.enrich_batch(events, T0)  # the stage's own path, as process() runs it
    enrich_ns = (time.process_time() - cpu) / len(events) * 1e9
    again = [decode(line, T0) for line in lines[:50_000]]  # the same peers, seen before
    cpu = time.process_time()
    stage.enrich_batch(again, T0)
    enrich_steady_ns = (time.process_time() - cpu) / len(again) * 1e9
    cold = [decode(line, T0) for line in firewall_lines(50_000, listed, 0.0, 50_000, seed=19)]
    cpu = time.process_time()
    stage.enrich_batch(cold, T0)
    enrich_cold_ns = (time.process_time() - cpu) / len(cold) * 1e9

    # The baseline stage (appliance.analysis.baselines, on by default) on the same lines, in
    # steady state: the beside-intel cost every event pays for rates, new terms and rarity.
    from appliance.analysis.baselines import BaselineStage
    from appliance.config import AnalysisSection

    baselines = BaselineStage(AnalysisSection())
    hour = int(T0 // 3600)
    fresh = [decode(line, T0) for line in lines[:50_000]]
    for e in events + fresh:
        e.listener = "syslog-udp"  # as Pipeline.offer stamps it (rates per listener)
    for i in range(0, len(events), 5000):  # the pipeline's batches
        baselines.observe_batch(events[i : i + 5000], hour, T0)
    cpu = time.process_time()
    for i in range(0, len(fresh), 5000):
        baselines.observe_batch(fresh[i : i + 5000], hour, T0)
    baseline_ns = (time.process_time() - cpu) / len(fresh) * 1e9

    without: list[float] = []
    with_: list[float] = []
    # One stage for the whole run, as the appliance keeps one for its life: the warm-up
    # round has seen the peers once (their first sighting is enrich_event_all_new_addresses).
    live = IntelEnricher(index, Registry())
    live.native_select = stage.native_select
    asyncio.run(ingest(lines, live, tmp / "warm-up.db"))  # imports, caches, sqlite
    for r in range(args.rounds):
        for use in (False, True) if r % 2 == 0 else (True, False):
            secs = asyncio.run(ingest(lines, live if use else None, tmp / f"ingest-{r}-{use}.db"))
            (with_ if use else without).append(secs / len(lines) * 1e6)
    base, withi = statistics.median(without), statistics.median(with_)
    print(
        json.dumps(
            {
                "mode": "intel",
                "indicators": len(index),
                "by_type": index.summary()["by_type"],
                "malformed": sum(report.malformed.values()),
                "load_wall_s": round(load_wall, 2),
                "load_cpu_s": round(load_cpu, 2),
                "load_rss_growth_mb": round(rss1 - rss0),
                "lookup_ip_ns": round(lookup_ns),
                "lookup_hits": hits,
                "enrich_event_ns": round(enrich_ns),
                "enrich_hits": enriched,
                "enrich_event_steady_ns": round(enrich_steady_ns),
                "enrich_event_all_new_addresses_ns": round(enrich_cold_ns),
                "baseline_stage_event_ns": round(baseline_ns),
                "prefilter": "native" if stage.native_select is not None else "python",
                "ingest_lines": args.lines,
                "ingest_us_per_line_without_intel": round(base, 2),
                "ingest_us_per_line_with_intel": round(withi, 2),
                "ingest_overhead_pct": round((withi - base) / base * 100, 1),
                "ingest_rounds_without": [round(x, 2) for x in without],
                "ingest_rounds_with": [round(x, 2) for x in with_],
                "calibration_dict6_ns": round(calibrate()),
                "python": sys.version.split()[0],
                "note": "shared 2-core machine under load from other work",
            }
        )
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
