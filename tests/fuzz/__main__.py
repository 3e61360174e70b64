"""``scripts/fuzz [TARGET ...] [--seconds N]``: run fuzz targets for a bounded time each.

Each target runs in its own process (libFuzzer owns the process: it exits on the first crash
or when time is up) with three folders under ``fuzz-out/`` (``$APPLIANCE_FUZZ_OUT``):

* ``seeds/TARGET``: rebuilt on every run from the shared corpus and the committed seeds;
* ``corpus/TARGET``: what the fuzzer found interesting, kept between runs so a long run
  resumes where the last one stopped;
* ``crashes/TARGET``: the input of a failure (``crash-<sha1>``, ``timeout-*``, ``oom-*``);
  ``scripts/fuzz TARGET --replay FILE`` reproduces it without the fuzzer.

Exit status: 0 when every target ran clean, 1 when one found a failure, 2 for a target that
could not run at all (with ``--strict``; otherwise it is reported as skipped).
"""

from __future__ import annotations

import argparse
import hashlib
import importlib
import os
import re
import shutil
import subprocess
import sys
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

from tests.fuzz.harness import ROOT
from tests.fuzz.targets import ALL_TARGETS, PYTHON_TARGETS, RUST_TARGETS

OUT = Path(os.environ.get("APPLIANCE_FUZZ_OUT", ROOT / "fuzz-out")).resolve()
DATAPLANE = ROOT / "dataplane"
RUST_MAX_LEN = 4096


@dataclass
class Outcome:
    target: str
    status: str  # "ok" | "crash" | "skipped" | "error"
    seconds: float = 0.0
    execs: int = 0
    corpus: int = 0
    detail: str = ""


def _module(target: str) -> ModuleType:
    return importlib.import_module(f"tests.fuzz.targets.{PYTHON_TARGETS[target]}")


def _seed_target(target: str) -> str:
    return RUST_TARGETS[target][1] if target in RUST_TARGETS else target


def write_seeds(target: str) -> tuple[Path, int]:
    """The seed folder for ``target``, rebuilt: one file per distinct seed."""
    folder = OUT / "seeds" / target
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    module = _module(_seed_target(target))
    n = 0
    for seed in module.seeds():
        path = folder / hashlib.sha1(seed).hexdigest()  # a file name, not security
        if not path.exists():
            path.write_bytes(seed)
            n += 1
    return folder, n


def write_dictionary(target: str) -> Path | None:
    """libFuzzer's ``-dict`` file from the target's ``DICTIONARY`` (tokens it splices in)."""
    tokens = getattr(_module(_seed_target(target)), "DICTIONARY", ())
    if not tokens:
        return None
    path = OUT / "dicts" / f"{target}.dict"
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = ['"' + "".join(chr(b) if 32 <= b < 127 and b not in b'"\\' else f"\\x{b:02x}"
                           for b in token) + '"' for token in dict.fromkeys(tokens)]  # fmt: skip
    path.write_text("\n".join(lines) + "\n")
    return path


def _libfuzzer_flags(target: str, seconds: int, max_len: int, crashes: Path) -> list[str]:
    dictionary = write_dictionary(target)
    return [
        *([f"-dict={dictionary}"] if dictionary else []),
        f"-max_total_time={seconds}",
        f"-max_len={max_len}",
        f"-artifact_prefix={crashes}/",
        "-timeout=10",  # one input taking 10 s is a finding (a parser that can be stalled)
        "-rss_limit_mb=2048",
        "-print_final_stats=1",
    ]


def _tool_missing(target: str) -> str | None:
    if target in PYTHON_TARGETS:
        try:
            import atheris  # noqa: F401
        except ImportError:
            return "atheris is not installed (pip install -e '.[test]'; x86_64 Linux wheels)"
        if not getattr(_module(target), "AVAILABLE", True):  # a native-only target
            return "the native data plane is not loaded (not built, or APPLIANCE_NATIVE=0)"
        return None
    if shutil.which("cargo") is None:
        return "cargo is not on PATH"
    probe = subprocess.run(["cargo", "+nightly", "fuzz", "--version"], capture_output=True,
                           cwd=DATAPLANE)  # fmt: skip
    if probe.returncode != 0:
        return ("cargo-fuzz on a nightly toolchain is needed (rustup toolchain install nightly; "
                "cargo install cargo-fuzz)")  # fmt: skip
    return None


def _stats(log: str) -> tuple[int, int]:
    execs = re.findall(r"stat::number_of_executed_units:\s*(\d+)", log)
    corp = re.findall(r"#\d+\s+(?:DONE|pulse|NEW|REDUCE|INITED)\s.*?corp: (\d+)/", log)
    return (int(execs[-1]) if execs else 0), (int(corp[-1]) if corp else 0)


def build_rust() -> Outcome | None:
    """Build every cargo-fuzz target once (the first build takes a minute or two)."""
    start = time.monotonic()
    done = subprocess.run(["cargo", "+nightly", "fuzz", "build"], cwd=DATAPLANE,
                          capture_output=True, text=True)  # fmt: skip
    if done.returncode != 0:
        return Outcome("rust-build", "error", time.monotonic() - start, detail=done.stderr[-3000:])
    print(f"fuzz: built the Rust targets in {time.monotonic() - start:.0f} s", flush=True)
    return None


def run_target(target: str, seconds: int) -> Outcome:
    missing = _tool_missing(target)
    if missing:
        return Outcome(target, "skipped", detail=missing)
    seeds, n_seeds = write_seeds(target)
    corpus = OUT / "corpus" / target
    crashes = OUT / "crashes" / target
    logs = OUT / "logs"
    for folder in (corpus, crashes, logs):
        folder.mkdir(parents=True, exist_ok=True)
    before = set(crashes.iterdir())
    if target in PYTHON_TARGETS:
        max_len = _module(target).MAX_LEN
        cmd = [sys.executable, "-m", "tests.fuzz.run_one", target, str(corpus), str(seeds),
               *_libfuzzer_flags(target, seconds, max_len, crashes)]  # fmt: skip
        cwd = ROOT
    else:
        flags = _libfuzzer_flags(target, seconds, RUST_MAX_LEN, crashes)
        cmd = ["cargo", "+nightly", "fuzz", "run", RUST_TARGETS[target][0], str(corpus),
               str(seeds), "--", *flags]  # fmt: skip
        cwd = DATAPLANE
    print(f"fuzz: {target}: {n_seeds} seeds, {seconds} s ...", flush=True)
    start = time.monotonic()
    log_path = logs / f"{target}.log"
    with log_path.open("w") as log_file:
        try:
            rc = subprocess.run(cmd, cwd=cwd, stdout=log_file, stderr=subprocess.STDOUT,
                                timeout=seconds + 600).returncode  # fmt: skip
        except subprocess.TimeoutExpired:
            rc = -1
    elapsed = time.monotonic() - start
    log = log_path.read_text(errors="replace")
    execs, corp = _stats(log)
    found = sorted(set(crashes.iterdir()) - before)
    if rc == 0 and not found:
        return Outcome(target, "ok", elapsed, execs, corp)
    tail = "\n".join(log.splitlines()[-40:])
    where = ", ".join(str(p.relative_to(ROOT) if p.is_relative_to(ROOT) else p) for p in found)
    return Outcome(target, "crash" if found else "error", elapsed, execs, corp,
                   f"{where or 'no input saved'} (exit {rc}; log {log_path})\n{tail}")  # fmt: skip


def replay(target: str, files: list[str]) -> int:
    """Run inputs through a Python target's ``one_input`` without the fuzzer."""
    if target not in PYTHON_TARGETS:
        print(f"--replay takes a Python target; for {target}: cd dataplane && cargo +nightly "
              f"fuzz run {RUST_TARGETS[target][0]} FILE", file=sys.stderr)  # fmt: skip
        return 2
    one_input = _module(target).one_input
    failed = 0
    for name in files:
        try:
            one_input(Path(name).read_bytes())
        except Exception:  # every failure is reported
            failed += 1
            print(f"{name}: FAILED", file=sys.stderr)
            traceback.print_exc()
        else:
            print(f"{name}: ok")
    return 1 if failed else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="scripts/fuzz", description=__doc__.split("\n")[0])
    parser.add_argument("targets", nargs="*", metavar="TARGET", help="default: all")
    parser.add_argument("--seconds", type=int, default=60, help="per target (default 60)")
    parser.add_argument("--list", action="store_true", help="list the targets and exit")
    parser.add_argument("--replay", nargs="+", metavar="FILE", help="run inputs through TARGET")
    parser.add_argument("--strict", action="store_true",
                        help="a target that cannot run (missing tool) fails the run")  # fmt: skip
    args = parser.parse_args(argv)
    unknown = [t for t in args.targets if t not in ALL_TARGETS]
    if unknown:
        parser.error(f"unknown target(s) {', '.join(unknown)}; one of {', '.join(ALL_TARGETS)}")
    if args.list:
        for t in ALL_TARGETS:
            doc = (
                (_module(t).__doc__ or "").strip().split("\n")[0]
                if t in PYTHON_TARGETS
                else (f"cargo-fuzz target dataplane/fuzz/fuzz_targets/{RUST_TARGETS[t][0]}.rs")
            )
            print(f"{t:16} {doc}")
        return 0
    if args.replay:
        if len(args.targets) != 1:
            parser.error("--replay needs exactly one TARGET")
        return replay(args.targets[0], args.replay)
    targets = args.targets or ALL_TARGETS
    outcomes: list[Outcome] = []
    if any(t in RUST_TARGETS for t in targets) and _tool_missing("rust-header") is None:
        failed = build_rust()
        if failed is not None:
            outcomes.append(failed)
            targets = [t for t in targets if t not in RUST_TARGETS]
    start = time.monotonic()
    for target in targets:
        outcome = run_target(target, args.seconds)
        outcomes.append(outcome)
        line = (f"fuzz: {target}: {outcome.status} in {outcome.seconds:.0f} s, "
                f"{outcome.execs} inputs, corpus {outcome.corpus}")  # fmt: skip
        print(line if outcome.status == "ok" else f"{line}\n{outcome.detail}", flush=True)
    print(
        f"fuzz: {len(outcomes)} target(s) in {time.monotonic() - start:.0f} s: "
        + ", ".join(f"{o.target} {o.status}" for o in outcomes)
    )
    if any(o.status in ("crash", "error") for o in outcomes):
        return 1
    if args.strict and any(o.status == "skipped" for o in outcomes):
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
