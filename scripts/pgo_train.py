#!/usr/bin/env python3
"""The workload the data plane's profile-guided build is trained on (``scripts/_venv.sh``,
``build_package``): the per-message paths the appliance runs, each for a few seconds, on the
instrumented extension.

Why train at all: the per-line path of decode and rules touches more code than the first-level
instruction cache holds (callgrind with this VM's caches: ~750 misses a line, against ~27,000
instructions), so each line fetches its code again from the second level. With the profile,
LLVM lays the hot blocks out together and moves the error paths out of them: instructions a
line and those misses fall by a sixth and a quarter (README "Sizing", the row of 2026-12-07
14:12-15:45).

What is trained on is what the appliance runs per message: the syslog/TCP listener's decode
and the whole built-in ruleset (``callgrind_rules.py``), the syslog/UDP batch intake with each
of the bench's line formats and the pipeline's queue (``callgrind_intake.py``: RFC 5424,
sshd, Cisco ASA, FortiGate, loggen's), the flow path (``callgrind_flows.py``: NetFlow v9 decode,
stages, rules), and the store's segment packing and search filters (``bench_pack.py``, the
corpus's syslog files too when ``APPLIANCE_CORPUS`` or ``../shared/corpus`` has them). A path
the training never runs (NetFlow v5 and IPFIX; the vendor decoders the corpus would reach when
it is absent) is in the profile with zero counts: LLVM lays its code out as cold, apart from the
hot code, and inlines less into it. Measured for the flow path's two untrained versions
(instructions a flow through decode and stages, plain build against profile-guided): NetFlow
v5 9,010 against 8,816, IPFIX 7,221 against 7,147, so no slower: they share most of their code
with v9's. A path that matters belongs in ``STEPS`` all the same.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent

# Each step is one of the instruction-count harnesses, run as its docstring says, without
# callgrind: they drive the same calls the listeners and the pipeline make.
STEPS: list[list[str]] = [
    ["callgrind_rules.py", "--what", "engine", "--rounds", "3", "--lines", "20000"],
    *(
        ["callgrind_intake.py", "--format", fmt, "--queue", "--rounds", "2", "--lines", "10000"]
        for fmt in ("rfc5424", "sshd", "asa", "fortigate", "loggen")
    ),
    ["callgrind_flows.py", "--rounds", "3"],
    ["bench_pack.py", "--lines", "10000"],
]


def main() -> int:
    for step in STEPS:
        t0 = time.monotonic()
        done = subprocess.run(
            [sys.executable, str(HERE / step[0]), *step[1:]],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            check=False,
        )
        if done.returncode != 0:
            print(f"pgo-train: {' '.join(step)} failed:\n{done.stderr}", file=sys.stderr)
            return 1
        print(f"pgo-train: {' '.join(step)} in {time.monotonic() - t0:.1f} s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
