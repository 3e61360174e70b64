#!/usr/bin/env python3
"""Forwarding throughput: incidents/s from the outbox to a local mTLS HTTPS receiver.

Fills the outbox with N incident revisions (the way correlation does, through the incident
hooks in durable transactions) while the receiver holds its first request, then releases it
and times the drain until the outbox is empty. Prints ONE JSON line. Needs the test extras
(trustme makes the certificates). Figures depend on the machine's load: say so when quoting.

    .venv/bin/python scripts/bench_forward.py --n 20000 --batch-size 500 --type webhook
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from aiohttp import web

try:
    import trustme  # noqa: F401 - the receiver's certificates (a test extra)
except ImportError:
    print(json.dumps({"bench": "forward", "error": "needs trustme: run scripts/test once"}))
    raise SystemExit(2) from None

from appliance.app import Appliance
from appliance.config import parse_config
from tests.forwarding import Receiver, incident, make_pki, raise_incidents, upstream


def answer_for(kind: str, seen) -> web.StreamResponse:  # type: ignore[no-untyped-def]
    if kind == "elastic_bulk":
        lines = seen.body.splitlines()[::2]
        return web.json_response(
            {"errors": False, "items": [{"create": {"status": 201}} for _ in lines]}
        )
    return web.json_response({})


async def bench(n: int, batch_size: int, kind: str, fill_txn: int) -> dict[str, object]:
    with tempfile.TemporaryDirectory() as tmp:
        tmp_path = Path(tmp)
        pki = make_pki(tmp_path)
        gate = asyncio.Event()

        async def respond(seen):  # type: ignore[no-untyped-def]
            await gate.wait()
            return answer_for(kind, seen)

        rx = Receiver(pki.server, pki.ca, respond)
        await rx.start()
        extra = {"token": "bench"} if kind == "splunk_hec" else {}
        cfg = parse_config(
            {
                "appliance": {
                    "data_dir": str(tmp_path / "data"),
                    "sensor_id": "bench-01",
                    "allow_empty": True,  # only the forwarder is measured
                },
                "api": {"listen": "127.0.0.1:0", "token": "t"},
                "upstream": [
                    upstream(
                        "bench",
                        kind,
                        rx.url("/h"),
                        pki,
                        batch_size=batch_size,
                        batch_max_bytes=64 * 1024 * 1024,
                        spool_max_bytes=4 * 1024**3,
                        request_timeout=120.0,
                        **extra,
                    )
                ],
            },
            base_dir=tmp_path,
        )
        app = Appliance(cfg)
        await app.start()
        try:
            t0 = time.perf_counter()
            for start in range(0, n, fill_txn):
                docs = [incident(i) for i in range(start + 1, min(n, start + fill_txn) + 1)]
                await raise_incidents(app, docs)
            fill = time.perf_counter() - t0
            t1 = time.perf_counter()
            gate.set()
            reg = app.metrics.get("forward_delivered_total")
            assert reg is not None
            while reg.total() < n:  # noqa: ASYNC110 - polling a counter, no event to wait on
                await asyncio.sleep(0.01)
            drain = time.perf_counter() - t1
            delivered = int(reg.total())
        finally:
            await app.stop()
            await rx.stop()
        return {
            "bench": "forward",
            "type": kind,
            "incidents": n,
            "delivered": delivered,
            "batch_size": batch_size,
            "requests": len(rx.seen),
            "enqueue_incidents_per_s": round(n / fill),
            "delivered_incidents_per_s": round(n / drain),
            "drain_seconds": round(drain, 3),
            "note": "shared 2-core machine; TLS 1.3 + mTLS on loopback",
        }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=20000)
    p.add_argument("--batch-size", type=int, default=500)
    p.add_argument(
        "--type", default="webhook", choices=["webhook", "splunk_hec", "elastic_bulk", "otlp_logs"]
    )
    p.add_argument("--fill-txn", type=int, default=1000, help="incidents per fill transaction")
    a = p.parse_args()
    print(json.dumps(asyncio.run(bench(a.n, a.batch_size, a.type, a.fill_txn))))


if __name__ == "__main__":
    main()
