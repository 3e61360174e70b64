#!/usr/bin/env python3
"""Notification engine: what routing costs the incident transaction, and messages/s out.

Raises N new incidents through the incident manager (batches of --batch, one durable
transaction each) twice: with no [notify] and with one route to a real ``webhook`` channel
(a local HTTP server on loopback), then times the channel's drain until the outbox is empty.
Prints ONE JSON line. Figures depend on the machine's load: say so when quoting.

    .venv/bin/python scripts/bench_notify.py --n 2000 --batch 100
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from aiohttp import web

from appliance.app import Appliance
from appliance.config import parse_config
from appliance.correlate.component import correlation_of
from appliance.correlate.engine import Alert
from appliance.correlate.rules import RuleMeta

RULE = RuleMeta(id="bench", title="Bench rule", level="high", tags=[], path="x")


def ip(i: int) -> str:
    return f"10.{i >> 16 & 255}.{i >> 8 & 255}.{i & 255}"


async def run(tmp: Path, n: int, batch: int, notify: dict[str, Any] | None) -> dict[str, float]:
    data: dict[str, Any] = {
        "appliance": {"data_dir": str(tmp), "sensor_id": "bench-01", "allow_empty": True},
        "api": {"listen": "127.0.0.1:0", "token": "t"},
    }
    if notify:
        data["notify"] = notify
    app = Appliance(parse_config(data, base_dir=tmp))
    await app.start()
    try:
        comp = correlation_of(app)
        assert comp is not None
        t0 = time.perf_counter()
        for start in range(0, n, batch):
            now = time.time()
            alerts = [
                Alert(
                    RULE,
                    "event_count",
                    {"source.ip": f"10.{i >> 16 & 255}.{i >> 8 & 255}.{i & 255}"},
                    now,
                    now,
                    1,
                    [1],
                    ["x"],
                )
                for i in range(start, min(n, start + batch))
            ]
            await comp.incidents.apply(alerts)
        raised = time.perf_counter() - t0
        out = {"incidents_per_s": round(n / raised, 1)}
        if notify:
            conn = app.store.reader
            assert conn is not None
            while True:
                async with conn.execute(
                    "SELECT count(*) FROM outbox WHERE stream = 'notify'"
                ) as cur:
                    row = await cur.fetchone()
                if row is not None and row[0] == 0:
                    break
                await asyncio.sleep(0.05)
            out["messages_per_s"] = round(n / (time.perf_counter() - t0), 1)
        return out
    finally:
        await app.stop()


async def main(n: int, batch: int) -> dict[str, Any]:
    received = 0

    async def handle(request: web.Request) -> web.Response:
        nonlocal received
        await request.read()
        received += 1
        return web.json_response({})

    server = web.Application()
    server.router.add_post("/hook", handle)
    runner = web.AppRunner(server, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    notify = {
        "tick": 0.05,
        "channels": [{"name": "hook", "type": "webhook", "url": f"http://127.0.0.1:{port}/hook"}],
        "routes": [{"channels": ["hook"]}],
    }
    try:
        with tempfile.TemporaryDirectory() as a, tempfile.TemporaryDirectory() as b:
            base = await run(Path(a), n, batch, None)
            routed = await run(Path(b), n, batch, notify)
    finally:
        await runner.cleanup()
    return {
        "bench": "notify",
        "n": n,
        "batch": batch,
        "incidents_per_s_without_notify": base["incidents_per_s"],
        "incidents_per_s_with_route": routed["incidents_per_s"],
        "webhook_messages_per_s_end_to_end": routed["messages_per_s"],
        "received": received,
    }


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=2000)
    p.add_argument("--batch", type=int, default=100)
    args = p.parse_args()
    print(json.dumps(asyncio.run(main(args.n, args.batch))))
