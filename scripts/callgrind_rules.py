#!/usr/bin/env python3
"""The correlation engine's cost per event in instructions (steadier than times on a shared
box): ``Engine.observe_batch`` per slice of 256 with the whole built-in ruleset, as the
correlation component runs it, over ``scripts/bench rules``' sshd log.

Run under callgrind with ``--rounds 1`` and ``--rounds 3`` and subtract the totals: both
decode the same ``3 x --lines`` events first (the setup), and the engine observes the first
``--rounds x --lines`` of them, so the difference is the engine's on ``2 x --lines`` events::

    for r in 1 3; do PYTHONHASHSEED=0 setarch "$(uname -m)" -R valgrind --tool=callgrind \\
        --callgrind-out-file=/dev/null .venv/bin/python scripts/callgrind_rules.py --rounds $r
    done

(instructions of round 3 minus round 1) / (2 x --lines) is the figure in README "Sizing".
``PYTHONHASHSEED=0`` keeps the dicts' probe sequences the same between the two runs, and
``setarch -R`` (no address randomization) the native key tables', which place interned keys by
their addresses (without it their probes alone moved a build's count by 60-120 a line from run
to run; two runs with it were 125 apart, all of it glibc's allocator).
``--what full`` counts ``scripts/bench rules``' ``full`` run itself (decode and ruleset
streamed as that bench runs them, its per-event loop included) over the first ``--rounds x
--lines`` lines: the like-for-like figure beside SEC's under callgrind (``bench_rules.py``'s
docstring).
``--what decode`` counts the decode instead (the syslog listener's batch calls over the first
``--rounds x --lines`` lines of the same log fed as an LF-framed stream, whole calls of up to
512 frames, no engine; divide by the difference of the two runs' printed event counts): the
lines are sshd's, sudo's, cron's, the kernel's and others', as the rules bench decodes them.
"""

from __future__ import annotations

import argparse
import itertools
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_rules import YIELD_EVERY, Decoder, generate, observe, run_full

from appliance.correlate import Engine, load_rules
from appliance.event import Event
from appliance.runtime import tune_gc


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--lines", type=int, default=20_000)
    ap.add_argument("--rounds", type=int, default=1, choices=[1, 2, 3])
    ap.add_argument("--what", choices=["engine", "decode", "full"], default="engine")
    args = ap.parse_args()
    upto = args.rounds * args.lines
    with tempfile.TemporaryDirectory(prefix="callgrind-rules-") as tmp:
        path = Path(tmp) / "sshd.log"
        generate(path, 3 * args.lines)
        rules = load_rules([], builtin=True)
        tune_gc()  # as the appliance runs
        if args.what == "full":
            # every round's prefix is written, so the setup is the same whatever --rounds
            prefixes = [Path(tmp) / f"prefix{r}.log" for r in (1, 2, 3)]
            for r, prefix in enumerate(prefixes, 1):
                with path.open("rb") as src, prefix.open("wb") as dst:
                    dst.writelines(itertools.islice(src, r * args.lines))
            _, alerts = run_full(prefixes[args.rounds - 1], rules)
            print(f"{upto} lines decoded and observed, {alerts} alerts")
            return 0
        decoder = Decoder()
        events: list[Event] = []
        for chunk in decoder.stream(path, 1_790_000_000.0):
            if args.what == "decode" and len(events) >= upto:
                break
            events.extend(chunk)
        if args.what == "decode":
            print(f"{len(events)} events decoded")
            return 0
        for n, ev in enumerate(events, 1):
            ev.id = n
        engine = Engine(rules)
        alerts = 0
        for i in range(0, upto, YIELD_EVERY):
            alerts += observe(engine, events[i : min(i + YIELD_EVERY, upto)])
    print(f"{len(events)} events decoded, {upto} observed, {alerts} alerts")
    return 0


if __name__ == "__main__":
    sys.exit(main())
