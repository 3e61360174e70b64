"""scripts/bench works end to end (a functional check of the tool; no timing is asserted)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

SCRIPTS = Path(__file__).parents[1] / "scripts"


def run_bench(script: str, *args: str, timeout: float = 180) -> dict[str, Any]:
    """The JSON line a bench script prints last, after it exited 0."""
    proc = subprocess.run(
        [sys.executable, str(SCRIPTS / script), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=SCRIPTS,
    )
    assert proc.returncode == 0, proc.stderr
    result: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    return result


def test_syslog_udp_bench_reports_balanced_books() -> None:
    result = run_bench(
        "bench_syslog_udp.py",
        *("--rate", "2000", "--seconds", "1", "--sender", "builtin", "--senders", "1"),
        *("--filler", "random"),
    )
    assert result["offered"] == 2000
    assert result["received"] == 2000
    assert result["received"] == result["stored"] + result["dropped"]
    for key in (
        "eps",
        "recv_cpu_pct",
        "recv_peak_rss_mb",
        "kernel_rcvbuf_errors",
        "dropped_by_reason",
        "loss_pct",
        "body_bytes_per_stored",
    ):
        assert key in result


def test_pack_bench_reports_each_input_packed_smaller_than_its_stored_lines() -> None:
    result = run_bench("bench_pack.py", "--lines", "2000")
    assert result["rules_sshd"]["events"] == 2000
    for name in ("rules_sshd", "udp_5424_256"):
        got = result[name]
        assert got["packed_bytes"] * 5 < got["stored_line_bytes"], got
        assert got["logrotate_gzip_bytes"] < got["rsyslog_file_bytes"], got


def test_rss_bench_stores_what_it_offered_and_breaks_its_memory_down() -> None:
    result = run_bench(
        "bench_rss.py",
        *("--rate", "2000", "--seconds", "1", "--sender", "builtin", "--senders", "1"),
        *("--peer", "none", "--format", "sshd", "--filler", "random"),
    )
    assert result["offered"] == result["received"] == result["stored"] == 2000
    assert 0 < result["rss_start_mb"] <= result["rss_peak_mb"]
    parts = result["breakdown"]
    assert parts["rss_interpreter_mb"] < parts["rss_imported_mb"]
    assert parts["event_bytes"] > parts["line_bytes"] > 0
    # the rules that group by source address, filled to their bound
    assert parts["correlation_full_rules"] > 0
    assert parts["correlation_full_groups"] > 0


def test_forward_bench_delivers_every_incident_it_raised() -> None:
    result = run_bench("bench_forward.py", "--n", "300", "--batch-size", "100")
    assert result["delivered"] == 300
    assert result["requests"] >= 3  # batches of at most 100
