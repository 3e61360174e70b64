#!/usr/bin/env python3
"""The threat-intel stage's cost in instructions (steadier than times on a shared box).

Run twice under callgrind, with and without ``--stage``, and subtract the totals: the setup
(a generated list indexed, firewall lines decoded, the stage warmed on them once) is the same
in both, so the difference is the stage. ``--what enrich`` runs ``enrich_batch`` on the
decoded events in 5,000-event batches (steady state: the peers were seen in the warm-up);
``--what ingest`` runs the lines through the real pipeline into a SQLite file
(``scripts/bench_intel.ingest``); ``--what setup`` only the setup, the base that ingest's
own cost is counted from. See README, Threat intelligence, for the commands.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_intel import T0, decode, firewall_lines, generate, ingest

from appliance.analysis.intel_stage import IntelEnricher, load_index
from appliance.config import parse_config
from appliance.metrics import Registry
from appliance.runtime import tune_gc


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--what", choices=("enrich", "ingest", "setup"), default="enrich")
    ap.add_argument("--stage", action="store_true", help="run the stage (else only the setup)")
    ap.add_argument("--prefilter", choices=("native", "python"), default="native")
    ap.add_argument("--indicators", type=int, default=100_000)
    ap.add_argument("--lines", type=int, default=20_000)
    args = ap.parse_args()
    tune_gc()
    tmp = Path(tempfile.mkdtemp(prefix="callgrind-intel-"))
    listed = generate(tmp / "blocklist.txt", args.indicators)
    config = parse_config(
        {
            "appliance": {"data_dir": str(tmp / "data"), "allow_empty": True},
            "analysis": {"intel_files": ["blocklist.txt"], "intel_max_indicators": 10_000_000},
        },
        base_dir=tmp,
    )
    index, _report, errors = load_index(config)
    assert not errors, errors
    lines = firewall_lines(args.lines, listed, 0.01, 20_000)
    stage = IntelEnricher(index, Registry())
    native_select, stage.native_select = stage.native_select, None
    stage.enrich_batch([decode(line, T0) for line in lines], T0)  # the peers seen once
    if args.prefilter == "native":  # the warm-up above is the same for both
        stage.native_select = native_select
    if args.what == "enrich":
        events = [decode(line, T0) for line in lines]
        if args.stage:
            for i in range(0, len(events), 5000):
                stage.enrich_batch(events[i : i + 5000], T0)
    elif args.what == "ingest":
        asyncio.run(ingest(lines, stage if args.stage else None, tmp / "ingest.db"))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
