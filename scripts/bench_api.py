#!/usr/bin/env python3
"""API under load: RSS, /healthz latency and ingestion while many clients page through events.

Usage: scripts/bench api [--clients 1000] [--limit 1000] [--events 20000] [--rate 2000]
       [--seconds 20]

The appliance runs as its own process. ``--events`` syslog/UDP lines are stored first (so each
page is full), then, for ``--seconds``: ``--clients`` concurrent clients each request
``/api/v1/events?limit=LIMIT`` in a loop, a sender offers ``--rate`` lines/s, and /healthz is
probed every 100 ms. Reports peak RSS (before and under load), /healthz latency (median, p99,
max), the lines stored during the load against those offered, and the API answers by status
(503s are the configured bounds at work). Prints ONE JSON line.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import socket
import statistics
import sys
import time
from collections import Counter
from pathlib import Path

import aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parent))

from benchlib import TOKEN, ApplianceProcess, free_port


def send(port: int, first: int, count: int) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        for i in range(first, first + count):
            s.sendto(b"<13>1 - bench app - - - line %08d padding padding padding" % i,
                     ("127.0.0.1", port))  # fmt: skip


async def sender(port: int, rate: int, until: float, sent: list[int]) -> None:
    n = 10_000_000
    while time.monotonic() < until:
        batch = max(1, rate // 20)
        send(port, n, batch)
        n += batch
        sent[0] += batch
        await asyncio.sleep(0.05)


async def client(
    session: aiohttp.ClientSession, url: str, until: float, codes: Counter[int]
) -> None:
    while time.monotonic() < until:
        try:
            async with session.get(url) as r:
                await r.read()
                codes[r.status] += 1
                if r.status == 503:
                    await asyncio.sleep(float(r.headers.get("Retry-After", "1")))
        except aiohttp.ClientError:
            codes[0] += 1
            await asyncio.sleep(0.1)


async def prober(base: str, until: float, lat: list[float]) -> None:
    async with aiohttp.ClientSession() as s:
        while time.monotonic() < until:
            t = time.monotonic()
            try:
                async with s.get(f"{base}/healthz", timeout=aiohttp.ClientTimeout(total=30)) as r:
                    await r.read()
                lat.append(time.monotonic() - t)
            except (aiohttp.ClientError, TimeoutError):
                lat.append(30.0)
            await asyncio.sleep(0.1)


async def load(app: ApplianceProcess, port: int, args: argparse.Namespace) -> dict[str, object]:
    base = f"http://127.0.0.1:{app.api_port}"
    url = f"{base}/api/v1/events?limit={args.limit}"
    until = time.monotonic() + args.seconds
    codes: Counter[int] = Counter()
    lat: list[float] = []
    sent = [0]
    stored0 = app.metrics().get("appliance_events_stored_total", 0.0)
    conn = aiohttp.TCPConnector(limit=0)
    headers = {"Authorization": f"Bearer {TOKEN}"}
    async with aiohttp.ClientSession(connector=conn, headers=headers) as session:
        await asyncio.gather(
            prober(base, until, lat),
            sender(port, args.rate, until, sent),
            *(client(session, url, until, codes) for _ in range(args.clients)),
        )
    m = app.wait_idle()
    lat.sort()
    return {
        "healthz_ms": {
            "median": round(statistics.median(lat) * 1000, 1),
            "p99": round(lat[int(len(lat) * 0.99) - 1] * 1000, 1),
            "max": round(lat[-1] * 1000, 1),
            "probes": len(lat),
        },
        "api_answers": {str(k): v for k, v in sorted(codes.items())},
        "ingest_offered": sent[0],
        "ingest_stored": int(m.get("appliance_events_stored_total", 0.0) - stored0),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--clients", type=int, default=1000)
    ap.add_argument("--limit", type=int, default=1000)
    ap.add_argument("--events", type=int, default=20_000)
    ap.add_argument("--rate", type=int, default=2000)
    ap.add_argument("--seconds", type=float, default=20.0)
    args = ap.parse_args()
    port = free_port(socket.SOCK_DGRAM)
    app = ApplianceProcess(
        f'[[sources.syslog]]\nname = "bench"\nprotocol = "udp"\nlisten = "127.0.0.1:{port}"\n'
    )
    for first in range(0, args.events, 500):
        send(port, first, min(500, args.events - first))
        time.sleep(0.02)
    app.wait_idle()
    rss_before = app.peak_rss_mb()
    result = asyncio.run(load(app, port, args))
    out = {
        "mode": "api",
        "clients": args.clients,
        "limit": args.limit,
        "seconds": args.seconds,
        "rss_mb_before": round(rss_before, 1),
        "peak_rss_mb": round(app.peak_rss_mb(), 1),
        **result,
        "final": app.stop(),
    }
    print(json.dumps(out))


if __name__ == "__main__":
    main()
