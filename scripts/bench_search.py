#!/usr/bin/env python3
"""Event search on a large store: latency of /api/v1/events filters, aggregate and histogram,
and what an FTS5 index on the message would add to ingest.

Usage: scripts/bench search [--events 1000000] [--repeat 3] [--no-fts]

Fills a fresh database with ``--events`` SSH/firewall-like events through the store's own
insert (segments, as the pipeline writes them), starts the appliance on it as its own
process, and times each query (median of ``--repeat``) with the events read per request
(``scanned``) and whether the answer was complete within the scan budget. Then inserts the
same messages into an FTS5 table to compare its ingest cost per event with the segments'.
Prints ONE JSON line.
"""

from __future__ import annotations

import argparse
import asyncio
import atexit
import json
import random
import shutil
import sqlite3
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchlib import TOKEN, ApplianceProcess

from appliance.event import Event
from appliance.store import Store

BATCH = 10_000
T0 = 1_790_000_000.0


def make_events(n: int, start: int, rng: random.Random) -> list[Event]:
    out = []
    for i in range(start, start + n):
        ts = T0 + i * 0.05
        if i % 3:
            user = f"user{rng.randrange(2000)}"
            ip = f"198.51.{rng.randrange(40)}.{rng.randrange(250)}"
            fields: dict[str, Any] = {
                "event.category": ["authentication"],
                "event.outcome": "failure",
                "user.name": user,
                "source.ip": ip,
                "source.port": 1024 + rng.randrange(60000),
                "host.hostname": f"srv{rng.randrange(50)}",
                "observer.ip": "10.0.0.5",
                "message": f"Failed password for {user} from {ip} port 40000 ssh2",
            }
        else:
            ip = f"10.{rng.randrange(8)}.{rng.randrange(250)}.{rng.randrange(250)}"
            port = rng.choice((22, 80, 443, 3389, 8080, 53))
            fields = {
                "event.category": ["network"],
                "event.action": "deny",
                "source.ip": ip,
                "destination.ip": "192.0.2.10",
                "destination.port": port,
                "observer.ip": "10.0.0.1",
                "message": f"deny tcp {ip} -> 192.0.2.10:{port}",
            }
        out.append(Event(timestamp=ts, created=ts, module="syslog", fields=fields, raw=b""))
    return out


async def fill(data_dir: Path, n: int) -> tuple[float, list[str]]:
    """Insert ``n`` events; seconds spent in insert_events, and the messages (for FTS)."""
    store = Store(data_dir / "appliance.db")
    await store.open()
    rng = random.Random(17)
    spent = 0.0
    messages: list[str] = []
    for start in range(0, n, BATCH):
        events = make_events(min(BATCH, n - start), start, rng)
        messages += [e.fields["message"] for e in events]
        t = time.perf_counter()
        await store.insert_events(events)
        spent += time.perf_counter() - t
    await store.close()
    return spent, messages


def fts_cost(messages: list[str]) -> float:
    """Seconds to index the messages in an FTS5 table, in the store's batch size."""
    with tempfile.TemporaryDirectory() as tmp:
        conn = sqlite3.connect(Path(tmp) / "fts.db", isolation_level=None)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")
        conn.execute("CREATE VIRTUAL TABLE ev_fts USING fts5(message, content='', detail=none)")
        t = time.perf_counter()
        for start in range(0, len(messages), BATCH):
            conn.execute("BEGIN")
            conn.executemany(
                "INSERT INTO ev_fts (rowid, message) VALUES (?, ?)",
                ((start + k + 1, m) for k, m in enumerate(messages[start : start + BATCH])),
            )
            conn.execute("COMMIT")
        spent = time.perf_counter() - t
        conn.close()
    return spent


QUERIES: list[tuple[str, str, dict[str, str]]] = [
    ("newest page", "/api/v1/events", {"limit": "100"}),
    ("user.name (rare, 1 in 3000)", "/api/v1/events", {"user.name": "user777", "limit": "100"}),
    ("event.action=deny", "/api/v1/events", {"event.action": "deny", "limit": "100"}),
    ("source.ip CIDR (10.3.0.0/16)", "/api/v1/events", {"source.ip": "10.3.0.0/16"}),
    ("destination.port range 3000..4000", "/api/v1/events", {"destination.port": "3000..4000"}),
    ("q= text absent", "/api/v1/events", {"q": "no such text anywhere"}),
    (
        "aggregate source.ip, all time",
        "/api/v1/events/aggregate",
        {"field": "source.ip", "since": "0", "until": "4000000000"},
    ),
    ("aggregate user.name, last hour", "/api/v1/events/aggregate", {"field": "user.name"}),
    ("histogram 1h buckets, 1 day", "/api/v1/events/histogram", {"interval": "3600"}),
]


async def run_queries(port: int, repeat: int, last_ts: float) -> list[dict[str, Any]]:
    out = []
    headers = {"Authorization": f"Bearer {TOKEN}"}
    async with aiohttp.ClientSession(headers=headers) as s:
        for name, path, params in QUERIES:
            params = dict(params)
            if path != "/api/v1/events" and "since" not in params:
                span = 3600 if "hour" in name else 86400
                params.update(since=str(last_ts - span), until=str(last_ts + 1))
            times = []
            body: dict[str, Any] = {}
            for _ in range(repeat):
                t = time.perf_counter()
                async with s.get(f"http://127.0.0.1:{port}{path}", params=params) as r:
                    body = await r.json()
                    assert r.status == 200, body
                times.append(time.perf_counter() - t)
            out.append(
                {
                    "query": name,
                    "median_ms": round(statistics.median(times) * 1000, 1),
                    "scanned": body.get("scanned"),
                    "complete": body.get("complete"),
                    "results": body.get("count", body.get("matched")),
                }
            )
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--events", type=int, default=1_000_000)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--no-fts", action="store_true")
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="bench-search-"))
    atexit.register(shutil.rmtree, tmp, ignore_errors=True)  # a 1M-event store is ~300 MB
    data_dir = tmp / "data"
    insert_s, messages = asyncio.run(fill(data_dir, args.events))
    db_bytes = (data_dir / "appliance.db").stat().st_size
    fts_s = None if args.no_fts else fts_cost(messages)
    del messages
    app = ApplianceProcess(
        '[[sources.syslog]]\nprotocol = "udp"\nlisten = "127.0.0.1:0"\n', data_dir=data_dir
    )
    try:
        results = asyncio.run(run_queries(app.api_port, args.repeat, T0 + args.events * 0.05))
    finally:
        app.stop()
    n = args.events
    print(
        json.dumps(
            {
                "mode": "search",
                "events": n,
                "db_mb": round(db_bytes / 1e6, 1),
                "segment_insert_us_per_event": round(insert_s / n * 1e6, 2),
                "fts5_insert_us_per_event": round(fts_s / n * 1e6, 2) if fts_s else None,
                "fts5_vs_segments": round(fts_s / insert_s, 2) if fts_s else None,
                "queries": results,
            }
        )
    )


if __name__ == "__main__":
    main()
