#!/usr/bin/env python3
"""CPU per message, stage by stage, against the per-message budget each throughput target sets.

The throughput modes (`syslog-udp`, `syslog-tcp`, `netflow`, `rules`) say *whether* a target is
met; this one says *why not*: what each stage of the appliance's own path costs per message on
this machine, what the least any Python implementation must do costs (the floor), and the budget
the target leaves. No sockets: every figure is a lower bound of the real path.

    scripts/bench budget [--n 20000] [--repeat 5]

Stages run the appliance's functions as its listeners call them: syslog header, ECS fields,
vendor decoder, event + stored line (``Pipeline.offer``), the built-in ruleset
(``Engine.observe``), the baselines stage (also on the Python reference), the segment store (a
real SQLite file; also without its search index, to show the index's share of the path); flows:
decoder, event, ruleset, rollups; asset enrichment (``analysis``: stamping both ends from a
10k-entry inventory, the stored line encoded again). Each figure is the median over ``--repeat``
runs of process CPU time per item (the store counts its SQLite thread too). The budget is one
core's microseconds per message at the target rate: the path is one event loop (decode workers
measured slower per message; see README).
Prints ONE JSON line.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import re
import socket
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_netflow import RECORD, data_datagrams, template_datagram
from bench_syslog_udp import make_line

from appliance import dataplane
from appliance.analysis.assets import Asset, AssetIndex
from appliance.analysis.baselines import BaselineStage
from appliance.analysis.context import Context, enrich
from appliance.config import AnalysisSection, SyslogSource
from appliance.correlate import Engine, load_rules
from appliance.event import Event
from appliance.flows.rollup import new_rollup
from appliance.metrics import Registry
from appliance.protocols.netflow import NetflowDecoder
from appliance.protocols.netflow.native import NativeNetflowDecoder, new_decoder
from appliance.protocols.syslog.decode import decode_syslog, decode_syslog_reference
from appliance.protocols.syslog.ecs import syslog_fields
from appliance.protocols.syslog.vendors import REGISTRY
from appliance.sources.syslog_intake import SyslogIntake
from appliance.store import Store, segindex
from appliance.store.segments import encode_line, pack_body, segment_rows

NOW = 1_795_940_000.0
SENDER = "192.0.2.10"

# (target, rate per second, what it covers) from the issues' evidence sections.
TARGETS = (
    ("syslog-udp 50k/s, 0 loss (issues 2, 6)", 50_000, "syslog"),
    ("syslog-udp vendor lines 50k/s, 0 loss (issue 3)", 50_000, "vendor"),
    ("syslog-tcp 100k/s stored (issue 3)", 100_000, "syslog"),
    ("rules: decode + whole ruleset >= SEC's 90k lines/s (issue 6)", 90_000, "rules"),
    ("netflow v9 200k flows/s, 0 loss (issue 5)", 200_000, "flows"),
)

# The floor for syslog: one regular expression over an RFC 5424 or 3164 header, one dict of the
# fields any SEM must keep, one JSON line. No vendor meaning, no rules, no store.
_FLOOR_RE = re.compile(
    rb"<(\d{1,3})>(?:1 (\S+) (\S+) (\S+) (\S+) (\S+) (?:-|\[.*?\]) ?|"
    rb"(\w{3} [ \d]\d \d\d:\d\d:\d\d) (\S+) ([^:\[ ]+)(?:\[(\d+)\])?: ?)"
)


def floor_syslog(line: bytes) -> bytes:
    m = _FLOOR_RE.match(line)
    g = m.groups() if m else (b"13",) + (None,) * 10
    pri = int(g[0])
    d = {
        "message": line[m.end() if m else 0 :].decode("utf-8", "replace"),
        "log.syslog.priority": pri,
        "log.syslog.facility.code": pri >> 3,
        "log.syslog.severity.code": pri & 7,
        "host.hostname": (g[2] or g[7] or b"").decode(),
        "process.name": (g[3] or g[8] or b"").decode(),
        "process.pid": int(g[4] or g[9] or 0) if (g[4] or g[9] or b"-").isdigit() else None,
        "observer.ip": SENDER,
        "event.created": NOW,
    }
    return orjson.dumps(d)


def floor_flows(datagram: bytes, cache: dict[bytes, str]) -> list[dict[str, Any]]:
    """The floor for flows: struct records to a dict of ECS names (addresses cached)."""
    out = []
    for (
        src,
        dst,
        sport,
        dport,
        proto,
        _f,
        _t,
        _i,
        _o,
        nbytes,
        npkts,
        _a,
        _b,
        _n,
    ) in RECORD.iter_unpack(memoryview(datagram)[24:]):
        s = cache.get(src) or cache.setdefault(src, socket.inet_ntoa(src))
        d = cache.get(dst) or cache.setdefault(dst, socket.inet_ntoa(dst))
        out.append({"source.ip": s, "destination.ip": d, "source.port": sport,
                    "destination.port": dport, "network.iana_number": proto,
                    "network.bytes": nbytes, "network.packets": npkts})  # fmt: skip
    return out


def per_item(fn: Callable[[], Any], n: int, repeat: int) -> float:
    """Median CPU microseconds per item of ``fn`` (which handles ``n`` items)."""
    runs = []
    for _ in range(repeat):
        gc.collect()
        t = time.process_time()
        fn()
        runs.append((time.process_time() - t) * 1e6 / n)
    return round(statistics.median(runs), 2)


def syslog_stages(fmt: str, n: int, repeat: int, engine: Engine, tmp: Path) -> dict[str, Any]:
    lines = [make_line(i, 256, fmt) for i in range(n)]
    msgs = [decode_syslog(b, NOW) for b in lines]
    fields = [syslog_fields(m, SENDER) for m in msgs]

    def vendor() -> None:
        for m in msgs:
            REGISTRY.decode(m, syslog_fields(m, SENDER))

    events = []
    for m, f in zip(msgs, fields, strict=True):
        REGISTRY.decode(m, f)
        events.append(Event(NOW, NOW, "syslog", f))

    def event_line() -> None:
        for ev, raw in zip(events, lines, strict=True):
            Event(ev.timestamp, NOW, "syslog", ev.fields, raw=raw)
            encode_line(ev.timestamp, NOW, "syslog", ev.fields, raw)

    for ev, raw in zip(events, lines, strict=True):
        ev.line = encode_line(ev.timestamp, NOW, "syslog", ev.fields, raw)

    def rules() -> None:
        for ev in events:
            engine.observe(ev, NOW)

    # The baselines stage (on by default) over the pipeline's batches, in steady state (the
    # first run learns); the same events through the other backend's loop, side by side.
    native_stage, python_stage = BaselineStage(AnalysisSection()), BaselineStage(AnalysisSection())
    python_stage.native = None
    for ev in events:
        ev.listener = "syslog-udp"  # as Pipeline.offer stamps it (rates per listener)

    def baselines(stage: BaselineStage) -> Callable[[], None]:
        def run() -> None:
            hour = int(NOW // 3600)
            for i in range(0, n, 2048):
                stage.observe_batch(events[i : i + 2048], hour, NOW)

        return run

    def store() -> None:
        # Insert only: the file is opened (migrations, quick check) before the clock starts.
        for i in range(0, n, 4096):
            runner.run(db.insert_events(events[i : i + 4096]))

    def store_unindexed() -> None:
        for i in range(0, n, 4096):
            runner.run(plain.insert_events(events[i : i + 4096]))

    runner = asyncio.Runner()
    db = Store(tmp / f"{fmt}.db")
    runner.run(db.open())
    plain = Store(tmp / f"{fmt}-unindexed.db", search_index=False)
    runner.run(plain.open())

    stages = {
        "header": per_item(lambda: [decode_syslog(b, NOW) for b in lines], n, repeat),
        "fields": per_item(lambda: [syslog_fields(m, SENDER) for m in msgs], n, repeat),
        "vendor": round(
            per_item(vendor, n, repeat)
            - per_item(lambda: [syslog_fields(m, SENDER) for m in msgs], n, repeat),
            2,
        ),
        "event_line": per_item(event_line, n, repeat),
        "rules": per_item(rules, n, repeat),
        "baselines": per_item(baselines(native_stage), n, repeat),
        "store": per_item(store, n, repeat),
    }
    baselines_reference = per_item(baselines(python_stage), n, repeat)
    # The search index's part of the store stage: the same inserts without it (SQLite's I/O
    # makes that difference noisy), and the filters alone, built from the same segments; the
    # bodies' packing alone (on the store's native thread in the appliance, here in line).
    unindexed = per_item(store_unindexed, n, repeat)
    seg_rows = segment_rows(events, 8192)
    index_alone = per_item(lambda: [segindex.segment_bloom(r[7]) for r in seg_rows], n, repeat)
    pack_alone = per_item(lambda: [pack_body(r[7]) for r in seg_rows], n, repeat)
    # The header on the other backend too, so one run shows what the native core saves.
    header_reference = per_item(lambda: [decode_syslog_reference(b, NOW) for b in lines], n, repeat)
    runner.run(db.close())
    runner.run(plain.close())
    runner.close()
    decoded = [e for e in events if e.fields.get("event.dataset")]
    total = sum(stages.values())
    return {
        "stages_us": stages,
        "appliance_us": round(total, 2),
        **intake_paths(lines, n, repeat),
        "store_without_search_index_us": unindexed,
        "search_index_us": index_alone,
        "search_index_share": round(index_alone / total, 3),
        "pack_us": pack_alone,
        "header_python_reference_us": header_reference,
        "baselines_python_reference_us": baselines_reference,
        "floor_us": per_item(lambda: [floor_syslog(b) for b in lines], n, repeat),
        "vendor_decoded_share": round(len(decoded) / n, 3),
    }


def intake_paths(lines: list[bytes], n: int, repeat: int) -> dict[str, float]:
    """The listener's intake as a whole (header, fields, vendor, event and its stored line:
    the first four stages together), per message as before and as the native batch call the
    UDP reader makes per slice of 512 datagrams (``SyslogIntake.datagrams``)."""
    cfg = SyslogSource(listen="127.0.0.1:0", allowed=["192.0.2.0/24"], rate_limit=0.0)
    metrics = Registry()
    dropped = metrics.counter("dropped", "", ["source", "reason"])
    truncated = metrics.counter("truncated", "", ["source"])
    per_msg, batched = (SyslogIntake(cfg, [], metrics, "udp") for _ in range(2))
    items = [(b, (SENDER, 514)) for b in lines]

    def one_by_one() -> None:
        # The events of a slice are kept, as the pipeline's queue keeps them (dropping each at
        # once would spare this path the garbage collector's work the batch path pays).
        for i in range(0, n, 512):
            kept = []
            for b in lines[i : i + 512]:
                ev = per_msg.datagram(b, SENDER, NOW, 8192, dropped, truncated)
                if ev is not None:
                    ev.line = encode_line(ev.timestamp, ev.created, ev.module, ev.fields, ev.raw)
                    kept.append(ev)

    def by_batch() -> None:
        for i in range(0, n, 512):
            batched.datagrams(items[i : i + 512], NOW, 8192, 8192, dropped, truncated)

    return {
        "intake_per_message_us": per_item(one_by_one, n, repeat),
        "intake_batch_us": per_item(by_batch, n, repeat),
    }


def per_fresh_item(
    base: list[dict[str, Any]], fn: Callable[[dict[str, Any]], Any], repeat: int
) -> float:
    """Like :func:`per_item` for a stage that changes its input: each run gets fresh copies of
    ``base`` (made before the clock starts), as the pipeline gives each event once."""
    runs = []
    for _ in range(repeat):
        fresh = [dict(f) for f in base]
        gc.collect()
        t = time.process_time()
        for f in fresh:
            fn(f)
        runs.append((time.process_time() - t) * 1e6 / len(base))
    return round(statistics.median(runs), 2)


def analysis_inventory(hosts: int = 10_000) -> Context:
    """An inventory of ``hosts`` /32s, /24s and /16s that holds both ends of the vendor lines
    (the asa and fortigate addresses), so every event is stamped on both sides."""
    assets = [Asset(f"10.{i}.0.0/16", name=f"site{i}", zone="internal") for i in range(200)]
    assets += [Asset(f"172.16.{i}.0/24", name=f"dmz{i}", zone="dmz") for i in range(256)]
    assets += [
        Asset(f"10.{i % 200}.{(i // 200) % 256}.{i % 250 + 1}/32", name=f"h{i}", criticality=3)
        for i in range(hosts)
    ]
    assets.append(Asset("198.51.100.0/24", name="partner", zone="external"))
    return Context(assets=AssetIndex(assets))


def analysis_stages(fmt: str, n: int, repeat: int) -> dict[str, Any]:
    """The asset enrichment stage (appliance.analysis) on one vendor's events: stamping both
    ends plus encoding the stored line again (the pipeline re-encodes a changed event), with
    the index's address cache warm (addresses repeat) and cold (every lookup parses)."""
    lines = [make_line(i, 256, fmt) for i in range(n)]
    base = []
    for b in lines:
        m = decode_syslog(b, NOW)
        f = syslog_fields(m, SENDER)
        REGISTRY.decode(m, f)
        base.append(f)
    ctx = analysis_inventory()
    cold = analysis_inventory()
    cold.assets.CACHE_MAX = 0  # type: ignore[misc]

    stamped = []
    for f in base:
        f = dict(f)
        enrich(f, ctx)
        stamped.append(f)

    def reencode() -> None:
        for f, raw in zip(stamped, lines, strict=True):
            encode_line(NOW, NOW, "syslog", f, raw)

    warm_us = per_fresh_item(base, lambda f: enrich(f, ctx), repeat)
    reencode_us = per_item(reencode, n, repeat)
    return {
        "assets": len(ctx.assets),
        "enrich_warm_us": warm_us,
        "enrich_cold_us": per_fresh_item(base, lambda f: enrich(f, cold), repeat),
        "reencode_us": reencode_us,
        "stage_us": round(warm_us + reencode_us, 2),
        "stamped": sorted(k for k in stamped[0] if ".asset." in k or k == "network.direction"),
    }


def analysis_flow_stage(n_datagrams: int, repeat: int) -> dict[str, Any]:
    """The same enrichment on flows (``analysis.enrich_flows``; off by default): ~6,000
    sources in the inventory's /16s, 100 destinations outside it; no line to encode again."""
    dec = NetflowDecoder()
    dec.decode(template_datagram(), SENDER, NOW)
    recs: list[Any] = []
    for d in data_datagrams(n_datagrams):
        recs.extend(dec.decode(bytes(d), SENDER, NOW))
    base = [f for _ts, f in recs]
    ctx = analysis_inventory()
    warm = per_fresh_item(base, lambda f: enrich(f, ctx), repeat)
    return {"flows": len(base), "enrich_warm_us": warm}


def flow_stages(n_datagrams: int, repeat: int, engine: Engine) -> dict[str, Any]:
    """The flow path as the listener runs it: the native decoder takes slices of 64
    datagrams and hands the rollup columns (the Python decoder and rollup without the
    extension or with APPLIANCE_NATIVE=0)."""
    dec = new_decoder()
    dec.decode(template_datagram(), SENDER, NOW)
    dgs = [bytes(d) for d in data_datagrams(n_datagrams)]
    slices = [[(d, SENDER, 0, NOW) for d in dgs[i : i + 64]] for i in range(0, len(dgs), 64)]

    def decode() -> tuple[list[Any], list[Any]]:
        recs: list[Any] = []
        columns: list[Any] = []
        if isinstance(dec, NativeNetflowDecoder):
            for batch in slices:
                for got in dec.decode_batch(batch):
                    if got is not None:
                        recs += got[0]
                        columns.append(got[1])
        else:
            for d in dgs:
                recs.extend(dec.decode(d, SENDER, NOW))
        return recs, columns

    recs = decode()[0]
    n = len(recs)
    events = [Event(ts, NOW, "netflow", f) for ts, f in recs]
    cache: dict[bytes, str] = {}
    rollup = new_rollup()
    fresh = [decode()[1] for _ in range(repeat)]  # columns are taken once

    def roll() -> None:
        columns = fresh.pop() if fresh else []
        if columns:
            rollup.add_columns(columns)  # type: ignore[attr-defined]  # the native rollup
        else:
            rollup.add(events)

    stages = {
        "decode": per_item(decode, n, repeat),
        "event": per_item(lambda: [Event(ts, NOW, "netflow", f) for ts, f in recs], n, repeat),
        "rules": per_item(lambda: [engine.observe(e, NOW) for e in events], n, repeat),
        "rollup": per_item(roll, n, repeat),
    }
    return {
        "stages_us": stages,
        "appliance_us": round(sum(stages.values()), 2),
        "floor_us": per_item(lambda: [floor_flows(d, cache) for d in dgs], n, repeat),
        "flows": n,
    }


def calibration() -> dict[str, float]:
    """Two tiny operations, to compare this machine with another (nanoseconds)."""
    t = time.perf_counter()
    for _ in range(200_000):
        {"a": 1, "b": 2, "c": 3, "d": 4, "e": 5, "f": 6}  # noqa: B018
    dict_ns = (time.perf_counter() - t) * 1e9 / 200_000
    s = b"<38>Nov 29 10:00:00 host sshd[1]: Failed password"
    t = time.perf_counter()
    for _ in range(200_000):
        s.decode().partition(" ")
    return {"dict6_literal_ns": round(dict_ns), "decode_partition_ns": round(
        (time.perf_counter() - t) * 1e9 / 200_000)}  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=20_000, help="syslog lines per format")
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args()
    rules = load_rules([], builtin=True)
    result: dict[str, Any] = {"mode": "budget", "machine": calibration(), "syslog": {}}
    with tempfile.TemporaryDirectory(prefix="bench-budget-") as tmp:
        for fmt in ("5424", "sshd", "asa", "fortigate"):
            result["syslog"][fmt] = syslog_stages(
                fmt, args.n, args.repeat, Engine(rules), Path(tmp)
            )
    result["flows"] = flow_stages(max(1, args.n // 30), args.repeat, Engine(rules))
    # Asset enrichment (issue 16), when [analysis] lists asset files: its cost per event and
    # its share of that vendor path's own cost.
    result["analysis"] = {}
    for fmt in ("asa", "fortigate"):
        a = analysis_stages(fmt, args.n, args.repeat)
        a["share_of_path"] = round(a["stage_us"] / result["syslog"][fmt]["appliance_us"], 3)
        result["analysis"][fmt] = a
    fa = analysis_flow_stage(max(1, args.n // 30), args.repeat)
    fa["share_of_path"] = round(fa["enrich_warm_us"] / result["flows"]["appliance_us"], 3)
    fa["share_of_budget_200k"] = round(fa["enrich_warm_us"] / 5.0, 3)
    result["analysis"]["flows"] = fa
    plain = result["syslog"]["5424"]
    vendors = [result["syslog"][f] for f in ("sshd", "asa", "fortigate")]
    rows = []
    for name, rate, kind in TARGETS:
        budget = 1e6 / rate
        if kind == "flows":
            cost, floor = result["flows"]["appliance_us"], result["flows"]["floor_us"]
        elif kind == "rules":
            sshd = result["syslog"]["sshd"]
            st = sshd["stages_us"]
            cost = st["header"] + st["fields"] + st["vendor"] + st["rules"]
            floor = sshd["floor_us"]
        elif kind == "vendor":
            cost = statistics.mean(v["appliance_us"] for v in vendors)
            floor = statistics.mean(v["floor_us"] for v in vendors)
        else:
            cost, floor = plain["appliance_us"], plain["floor_us"]
        rows.append({
            "target": name,
            "budget_us": round(budget, 2),
            "appliance_us": round(cost, 2),
            "appliance_over_budget": round(cost / budget, 2),
            "floor_us": round(floor, 2),
            "floor_over_budget": round(floor / budget, 2),
        })  # fmt: skip
    result["targets"] = rows
    result["python"] = sys.version.split()[0]
    result["backend"] = dataplane.backend()
    print(json.dumps(result))


if __name__ == "__main__":
    main()
