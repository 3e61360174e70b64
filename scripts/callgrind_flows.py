#!/usr/bin/env python3
"""The flow path's cost per flow in instructions (steadier than times on a shared box): the
listener's decode call (records and rollup columns; a flow's ``Event`` only where Python reads
it) and the pipeline's stages (enrichment, baselines, correlation with the built-in ruleset),
as ``FlowPath`` runs them, over ``scripts/bench netflow``'s NetFlow v9 datagrams (30 records
each).

Run under callgrind with ``--rounds 1`` and ``--rounds 3`` and subtract the totals: the setup
(interpreter, imports, the appliance started, the datagrams made) is the same in both, so the
difference is the path's on ``2 x`` the flows of one round::

    for r in 1 3; do PYTHONHASHSEED=0 setarch "$(uname -m)" -R valgrind --tool=callgrind \\
        --callgrind-out-file=/dev/null .venv/bin/python scripts/callgrind_flows.py --rounds $r
    done

(instructions of round 3 minus round 1) / (2 x 30 x --datagrams) is the figure in README
"Sizing" (``setarch -R``: see ``callgrind_rules.py``). Each round decodes the same datagrams
again (later rounds see warm caches and the windows' groups of the earlier ones, as a steady
stream does); the rollup and the raw rows are left out (``scripts/bench netflow --stages``
times them).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_netflow import data_datagrams, flows_appliance, template_datagram

from appliance.flows.path import joined
from appliance.runtime import tune_gc


async def run(rounds: int, datagrams: int) -> int:
    with tempfile.TemporaryDirectory(prefix="callgrind-flows-") as tmp:
        app = flows_appliance(Path(tmp))
        await app.start()
        tune_gc()  # as the appliance runs
        try:
            dec = app.sources[0].decoder  # type: ignore[attr-defined]
            now = time.time()
            dec.decode(template_datagram(), "127.0.0.1", now, 9)
            dgs = [bytes(x) for x in data_datagrams(datagrams)]
            stages = app.pipeline.before_store + app.pipeline.after_store
            flows = 0
            for _ in range(rounds):
                for i in range(0, len(dgs), 64):  # the listener's recvmmsg slices
                    batch = [(x, "127.0.0.1", 9, now) for x in dgs[i : i + 64]]
                    parts = [got[0] for got in dec.decode_flows(batch, "netflow") if got]
                    events = joined(parts)  # as the flow path takes a batch
                    for stage in stages:
                        await stage.process(events, now)
                    flows += len(events)
        finally:
            await app.stop()
    return flows


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=1, choices=[1, 2, 3])
    ap.add_argument("--datagrams", type=int, default=700)
    args = ap.parse_args()
    flows = asyncio.run(run(args.rounds, args.datagrams))
    print(f"{flows} flows through decode and stages")
    return 0


if __name__ == "__main__":
    sys.exit(main())
