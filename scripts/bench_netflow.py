#!/usr/bin/env python3
"""Flow throughput: NetFlow v9 (30 records per datagram) replayed over loopback UDP into a real
appliance (decode → flow rules → rollups → bounded raw rows in SQLite), then the same replay
into ``nfcapd`` for comparison. Prints ONE JSON line.

    .venv/bin/python scripts/bench_netflow.py [--rates 100000,200000] [--seconds 5]
    .venv/bin/python scripts/bench_netflow.py --stages   # CPU per flow by stage, no socket
    .venv/bin/python scripts/bench_netflow.py --decode-ab   # old vs native decode + rollup

"No loss" at a rate means: every flow sent was decoded, offered to the rules and counted in
the rollups (flows_processed_total == flows sent), with zero kernel socket drops and zero
queue drops. The rules are the appliance's own correlation engine with the built-in ruleset
(``evaluated_by_rules``: the hits of ``flow_record``, which every flow matches; until
2026-12-05 a Python stand-in stage ran beside it, ~1.5 us a flow more). The sender runs in its
own process (the other core). The appliance runs under its own GC policy (``runtime.tune_gc``
and the timed collection ``serve`` runs); until 2026-12-05 the bench left CPython's automatic
collection on, which scanned the queued flows every few hundred allocations (~8 us a flow).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import re
import shutil
import socket
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from appliance.app import Appliance
from appliance.config import parse_config
from appliance.event import Event
from appliance.runtime import timed_collection, tune_gc

RECORDS = 30
# A typical router v9 template: addresses, ports, proto, flags, tos, interfaces, counters, times.
FIELDS = [(8, 4), (12, 4), (7, 2), (11, 2), (4, 1), (6, 1), (5, 1), (10, 4), (14, 4), (1, 8),
          (2, 8), (22, 4), (21, 4), (15, 4)]  # fmt: skip
RECORD = struct.Struct(">4s4sHHBBBIIQQII4s")


def template_datagram(source_id: int = 1) -> bytes:
    body = struct.pack(">HH", 256, len(FIELDS)) + b"".join(struct.pack(">HH", *f) for f in FIELDS)
    fs = struct.pack(">HH", 0, 4 + len(body)) + body
    return struct.pack(">HHIIII", 9, 1, 100_000, int(time.time()), 0, source_id) + fs


def data_datagrams(n: int) -> list[bytearray]:
    """``n`` distinct datagrams of 30 flows: ~6,000 sources, 100 destinations, 500 ports."""
    out = []
    k = 0
    for _ in range(n):
        recs = []
        for _ in range(RECORDS):
            src = socket.inet_aton(f"10.{k % 23}.{k % 251}.{(k // 7) % 250 + 1}")
            dst = socket.inet_aton(f"192.168.{k % 4}.{k % 25 + 1}")
            nbytes = 64 + (k * 7919) % 60_000
            recs.append(RECORD.pack(src, dst, 1024 + k % 50_000, (k * 13) % 500 + 1, 6 if k % 3
                                    else 17, 0x18, 0, 1, 2, nbytes, nbytes // 500 + 1, 90_000,
                                    99_000, b"\0\0\0\0"))  # fmt: skip
            k += 1
        body = b"".join(recs)
        fs = struct.pack(">HH", 256, 4 + len(body)) + body
        head = struct.pack(">HHIIII", 9, RECORDS, 100_000, int(time.time()), 0, 1)
        out.append(bytearray(head + fs))
    return out


def send(port: int, rate: int, seconds: float, seq0: int) -> tuple[int, float]:
    """Send ``rate`` flows/s for ``seconds`` (paced per millisecond); return (flows sent,
    wall-clock time of the first datagram)."""
    dgs = data_datagrams(1000)
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 * 1024 * 1024)
    addr = ("127.0.0.1", port)
    sock.sendto(template_datagram(), addr)
    per_second = rate / RECORDS
    started = time.time()
    start = time.perf_counter()
    sent = 0
    seq = seq0
    i = 0
    while True:
        elapsed = time.perf_counter() - start
        if elapsed >= seconds:
            break
        due = int(per_second * elapsed) - sent
        for _ in range(due):
            dg = dgs[i % 1000]
            struct.pack_into(">I", dg, 12, seq & 0xFFFFFFFF)
            try:
                sock.sendto(dg, addr)
            except BlockingIOError:
                continue
            seq += 1
            sent += 1
            i += 1
        if due <= 0:
            time.sleep(0.0005)
    sock.close()
    return sent * RECORDS, started


def sender_process(port: int, rate: int, seconds: float, seq0: int) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, __file__, "--send", str(port), str(rate), str(seconds), str(seq0)],
        stdout=subprocess.PIPE,
        text=True,
    )


def flow_rule_hits(app: Appliance) -> int:
    """Flows the correlation engine evaluated: every flow with a destination port matches the
    built-in ``flow_record`` rule, whose windows are the port scans."""
    from appliance.correlate.component import CorrelationComponent

    comp = app.component(CorrelationComponent)
    if comp is None:
        return 0
    engine = comp.engine
    return sum(
        engine.stats[d.meta.id].hits
        for d in engine.ruleset.detections
        if d.meta.name == "flow_record"
    )


async def loop_stalls(ms: float) -> None:
    """Hold the event loop ``ms`` once a second, as a long stretch of work on it would (a
    heavy console query, a large rollup write, a collection): what the socket receives
    meanwhile waits in the kernel's buffer unless a thread of its own reads it."""
    while True:
        await asyncio.sleep(1.0)
        time.sleep(ms / 1000)  # noqa: ASYNC251 - the stall is the point


async def run_appliance(
    rates: list[int], seconds: float, data_dir: Path, stall_ms: float = 0.0
) -> dict[str, Any]:
    cfg = parse_config(
        {
            "appliance": {"data_dir": str(data_dir / "data"), "sensor_id": "bench"},
            "api": {"listen": "127.0.0.1:0", "token": "bench-token-0123456789"},
            "sources": {"netflow": [{"listen": "127.0.0.1:0", "allowed": ["127.0.0.0/8"]}]},
        },
        base_dir=data_dir,
    )
    app = Appliance(cfg)
    await app.start()
    tune_gc()  # as ``serve`` runs the appliance: no automatic collection, a timed one
    collector = asyncio.create_task(timed_collection(), name="gc")
    stalls = asyncio.create_task(loop_stalls(stall_ms), name="stalls") if stall_ms else None
    src = app.sources[0]
    port = src.address[1]  # type: ignore[attr-defined]
    flows = app.flows
    results = []
    seq = 0
    try:
        for rate in rates:
            before = {
                "received": flows.received.total(),
                "processed": flows.processed.total(),
                "dropped": flows.dropped.total(),
                "stored": flows.stored.total(),
                "kernel": src.kernel_drops() or 0,  # type: ignore[attr-defined]
                "evaluated": flow_rule_hits(app),
                "rolled": flows.rollup.flows,
            }
            t0 = time.perf_counter()
            cpu0 = time.process_time()
            loop0 = time.thread_time()  # the event loop's thread: decode, rules, rollups
            proc = await asyncio.create_subprocess_exec(
                sys.executable, __file__, "--send", str(port), str(rate), str(seconds), str(seq),
                stdout=asyncio.subprocess.PIPE,
            )  # fmt: skip
            out, _ = await proc.communicate()
            sent_text, started_text = out.decode().split()
            sent, started = int(sent_text), float(started_text)
            seq += sent // RECORDS
            deadline = time.perf_counter() + 120
            settled = -1.0
            while time.perf_counter() < deadline:  # until every flow is processed or counted
                done = flows.processed.total() + flows.dropped.total() - before["processed"]
                kernel = (src.kernel_drops() or 0) - before["kernel"]  # type: ignore[attr-defined]
                if done + kernel * RECORDS >= sent:
                    break
                # In flight: flows queued, or datagrams held raw by the source's reader.
                reader = getattr(src, "reader", None)
                busy = len(flows) or (reader is not None and reader.pending)
                if not busy and settled < 0:
                    settled = time.perf_counter()
                elif busy and settled >= 0:
                    settled = -1.0
                if settled >= 0 and time.perf_counter() - settled > 2.0:
                    break  # nothing left in flight: the rest never arrived
                await asyncio.sleep(0.02)
            elapsed = time.time() - started  # first datagram sent → last flow processed
            cpu = time.process_time() - cpu0
            loop_cpu = time.thread_time() - loop0
            processed = int(flows.processed.total() - before["processed"])
            kernel = int((src.kernel_drops() or 0) - before["kernel"])  # type: ignore[attr-defined]
            dropped = int(flows.dropped.total() - before["dropped"])
            results.append(
                {
                    "target_fps": rate,
                    "seconds": seconds,
                    "sent": sent,
                    "decoded": int(flows.received.total() - before["received"]),
                    "evaluated_by_rules": flow_rule_hits(app) - before["evaluated"],
                    "rolled_up": flows.rollup.flows - before["rolled"],
                    "processed": processed,
                    "stored_raw": int(flows.stored.total() - before["stored"]),
                    "queue_dropped": dropped,
                    "kernel_dropped_datagrams": kernel,
                    "loss": sent - processed,
                    "no_loss": processed == sent and kernel == 0 and dropped == 0,
                    "achieved_fps": round(processed / elapsed),
                    "appliance_cpu_percent": round(100 * cpu / (time.perf_counter() - t0)),
                    # What the box cannot show while sender and receiver share two loaded
                    # cores: the appliance's CPU per flow and the one-core ceiling it implies.
                    "cpu_us_per_flow": round(1e6 * cpu / max(processed, 1), 2),
                    "one_core_ceiling_fps": round(processed / cpu) if cpu > 0 else None,
                    # The event loop's thread alone: the busiest one (the socket's reader and
                    # the store's writer run on threads of their own), so what sets the
                    # ceiling when the box has a second core for the others.
                    "loop_cpu_percent": round(100 * loop_cpu / (time.perf_counter() - t0)),
                    "loop_cpu_us_per_flow": round(1e6 * loop_cpu / max(processed, 1), 2),
                }
            )
    finally:
        collector.cancel()
        if stalls is not None:
            stalls.cancel()
        await app.stop()
        gc.unfreeze()
        gc.enable()
    return {"appliance": results}


def decoder_only_fps(seconds: float = 2.0) -> int:
    """Flows/s of the sans-I/O decoder alone on the same datagrams (no socket, no rules)."""
    from appliance.protocols.netflow.native import new_decoder

    dec = new_decoder()
    dec.decode(template_datagram(), "127.0.0.1", time.time())
    dgs = [bytes(d) for d in data_datagrams(1000)]
    n = 0
    start = time.perf_counter()
    while time.perf_counter() - start < seconds:
        for d in dgs:
            n += len(dec.decode(d, "127.0.0.1", 1e9))
    return round(n / (time.perf_counter() - start))


def flows_appliance(data_dir: Path) -> Appliance:
    """An appliance with the default config and one NetFlow listener on loopback (not
    started), for measuring the flow path in one process."""
    cfg = parse_config(
        {
            "appliance": {"data_dir": str(data_dir / "data"), "sensor_id": "bench"},
            "api": {"listen": "127.0.0.1:0", "token": "bench-token-0123456789"},
            "sources": {"netflow": [{"listen": "127.0.0.1:0", "allowed": ["127.0.0.0/8"]}]},
        },
        base_dir=data_dir,
    )
    return Appliance(cfg)


async def stages(n_datagrams: int = 1000, repeat: int = 6) -> dict[str, Any]:
    """Where each flow's CPU goes on the appliance's own path (no socket): the decoder, the
    event, each pipeline stage the flow path runs (enrichment, baselines, correlation with the
    built-in ruleset), the rollups and the raw rows; process time per flow, best of
    ``repeat`` passes over the same datagrams (later passes see warm windows and caches)."""
    from appliance import dataplane
    from appliance.flows import store as flowstore
    from appliance.flows.path import joined
    from appliance.flows.rollup import new_rollup

    with tempfile.TemporaryDirectory(prefix="bench-netflow-stages-") as tmp:
        app = flows_appliance(Path(tmp))
        await app.start()
        tune_gc()  # as the appliance runs; a collection between passes instead of its timer
        try:
            dec = app.sources[0].decoder  # type: ignore[attr-defined]
            now = time.time()
            dec.decode(template_datagram(), "127.0.0.1", now, 9)
            dgs = [bytes(d) for d in data_datagrams(n_datagrams)]
            best: dict[str, float] = {}

            def keep(name: str, seconds: float, n: int) -> None:
                best[name] = min(best.get(name, 1e9), seconds / n * 1e6)

            for _ in range(repeat):
                gc.collect()
                t = time.process_time()
                columns: list[Any] = []
                if hasattr(dec, "decode_flows"):
                    # What the source does with each slice of 64 datagrams: one native call,
                    # which also makes the rollup's columns (a flow's event is made only
                    # where Python reads it); the flow path joins the datagrams' flows.
                    parts = []
                    for i in range(0, len(dgs), 64):
                        batch = [(d, "127.0.0.1", 9, now) for d in dgs[i : i + 64]]
                        for got in dec.decode_flows(batch, "netflow"):
                            if got is not None:
                                parts.append(got[0])
                                columns.append(got[1])
                    events = joined(parts)
                    n = len(events)
                    keep("decode", time.process_time() - t, n)
                else:
                    recs = [r for d in dgs for r in dec.decode(d, "127.0.0.1", now, 9)]
                    n = len(recs)
                    keep("decode", time.process_time() - t, n)
                    t = time.process_time()
                    events = [Event(ts, now, "netflow", f) for ts, f in recs]
                    keep("event", time.process_time() - t, n)
                for where, stages_ in (("before_store", app.pipeline.before_store),
                                       ("after_store", app.pipeline.after_store)):  # fmt: skip
                    for stage in stages_:
                        t = time.process_time()
                        await stage.process(events, now)
                        keep(f"{where}:{type(stage).__name__}", time.process_time() - t, n)
                rollup = new_rollup()
                t = time.process_time()
                if columns and hasattr(rollup, "add_columns"):
                    rollup.add_columns(columns)
                else:
                    rollup.add(events)
                rollup.take_all()
                keep("rollup", time.process_time() - t, n)
                t = time.process_time()
                rows = [flowstore.flow_row(e) for e in events]
                await flowstore.insert_flows(app.store, rows)
                keep("raw_row_each_stored", time.process_time() - t, n)
        finally:
            await app.stop()
            gc.unfreeze()
            gc.enable()
    per_flow = {k: v for k, v in best.items() if k != "raw_row_each_stored"}
    return {
        "backend": dataplane.backend(),
        "stages_us": {k: round(v, 2) for k, v in best.items()},
        "per_flow_us_without_raw_rows": round(sum(per_flow.values()), 2),
        "flows": n,
    }


def decode_ab(repeat: int = 7) -> dict[str, Any]:
    """The two decode paths in one process, interleaved (so load affects both alike): the
    reference walk (Python state, native FlowTemplate records) with the native rollup reading
    the events, against the native stateful decoder on slices of 64 with the rollup reading
    its columns. Records are kept as the flow path keeps a batch; gen-0 GC threshold as the
    flow path sets it; CPU us per flow, best of ``repeat``."""
    import gc

    from appliance import dataplane
    from appliance.protocols.netflow import NetflowDecoder
    from appliance.protocols.netflow.native import NativeNetflowDecoder, available

    if not available() or dataplane.native is None:
        return {"error": "the native data plane is not loaded"}
    gc.set_threshold(50_000, 20, 20)
    dgs = [bytes(d) for d in data_datagrams(1000)]
    now = time.time()
    old, new = NetflowDecoder(), NativeNetflowDecoder()
    for dec in (old, new):
        dec.decode(template_datagram(), "127.0.0.1", now, 9)
    best = dict.fromkeys(("old_decode", "old_rollup", "new_decode", "new_rollup"), 1e9)
    n = 0

    def keep(name: str, seconds: float) -> None:
        best[name] = min(best[name], seconds / n * 1e6)

    for _ in range(repeat):
        gc.collect()
        t = time.process_time()
        recs = [r for d in dgs for r in old.decode(d, "127.0.0.1", now, 9)]
        n = len(recs)
        keep("old_decode", time.process_time() - t)
        events = [Event(ts, now, "netflow", f) for ts, f in recs]
        rollup = dataplane.native.FlowRollup()
        t = time.process_time()
        rollup.add(events)
        rollup.take_all()
        keep("old_rollup", time.process_time() - t)
        del recs, events
        gc.collect()
        t = time.process_time()
        recs, columns = [], []
        for i in range(0, len(dgs), 64):
            for got in new.decode_batch([(d, "127.0.0.1", 9, now) for d in dgs[i : i + 64]]):
                if got is not None:
                    recs += got[0]
                    columns.append(got[1])
        keep("new_decode", time.process_time() - t)
        rollup = dataplane.native.FlowRollup()
        t = time.process_time()
        rollup.add_columns(columns)
        rollup.take_all()
        keep("new_rollup", time.process_time() - t)
        del recs, columns
    out = {k: round(v, 3) for k, v in best.items()}
    out["old_us"] = round(best["old_decode"] + best["old_rollup"], 3)
    out["new_us"] = round(best["new_decode"] + best["new_rollup"], 3)
    return {"flows": n, **out}


def run_nfcapd(rates: list[int], seconds: float, data_dir: Path) -> list[dict[str, Any]]:
    if not (shutil.which("nfcapd") and shutil.which("nfdump")):
        return [{"skipped": "nfcapd/nfdump not installed"}]
    out = []
    for rate in rates:
        d = data_dir / f"nfcapd-{rate}"
        d.mkdir()
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        proc = subprocess.Popen(
            ["nfcapd", "-w", str(d), "-p", str(port), "-b", "127.0.0.1", "-t", "3600"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        time.sleep(0.5)
        sender = sender_process(port, rate, seconds, 0)
        sent = int(sender.communicate()[0].split()[0])
        time.sleep(1.0)
        proc.terminate()
        proc.wait(timeout=30)
        info = subprocess.run(["nfdump", "-R", str(d), "-I"], capture_output=True, text=True,
                              timeout=60).stdout  # fmt: skip
        m = re.search(r"^Flows: (\d+)$", info, re.MULTILINE)
        flows = int(m.group(1)) if m else -1
        out.append({"target_fps": rate, "sent": sent, "flows": flows, "loss": sent - flows})
    return out


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--send":
        port, rate, seconds, seq0 = sys.argv[2:6]
        sent, started = send(int(port), int(rate), float(seconds), int(seq0))
        print(sent, started)
        return
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rates", default="100000,200000,250000")
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("--no-nfcapd", action="store_true")
    ap.add_argument(
        "--stall-ms", type=float, default=0.0,
        help="hold the appliance's event loop this long once a second (a long query's stall)",
    )  # fmt: skip
    ap.add_argument(
        "--stages", action="store_true", help="CPU per flow by stage (no socket), then exit"
    )
    ap.add_argument(
        "--decode-ab", action="store_true",
        help="decode + rollup: the reference walk against the native state, interleaved",
    )  # fmt: skip
    args = ap.parse_args()
    if args.decode_ab:
        print(json.dumps({"mode": "netflow-decode-ab", **decode_ab()}))
        return
    if args.stages:
        print(json.dumps({"mode": "netflow-stages", **asyncio.run(stages())}))
        return
    rates = [int(r) for r in args.rates.split(",")]
    loop_factory = None
    try:
        import uvloop

        loop_factory = uvloop.new_event_loop
    except ImportError:
        pass
    with tempfile.TemporaryDirectory(prefix="bench-netflow-") as tmp:
        with asyncio.Runner(loop_factory=loop_factory) as runner:
            result = runner.run(run_appliance(rates, args.seconds, Path(tmp), args.stall_ms))
        if not args.no_nfcapd:
            result["nfcapd"] = run_nfcapd(rates, args.seconds, Path(tmp))
    result["decoder_only_fps"] = decoder_only_fps()
    ok = [r["target_fps"] for r in result["appliance"] if r["no_loss"]]
    result.update(
        {
            "mode": "netflow",
            "records_per_datagram": RECORDS,
            "max_no_loss_fps": max(ok) if ok else 0,
            "loadavg": os.getloadavg(),
            "loop": "uvloop" if loop_factory else "asyncio",
            "stall_ms_per_second": args.stall_ms,
        }
    )
    print(json.dumps(result))


if __name__ == "__main__":
    main()
