"""scripts/bench works end to end (a functional check of the tool; no timing is asserted)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

SCRIPTS = Path(__file__).parents[1] / "scripts"


def test_syslog_udp_bench_reports_balanced_books() -> None:
    proc = subprocess.run(
        [
            sys.executable,
            str(SCRIPTS / "bench_syslog_udp.py"),
            "--rate",
            "2000",
            "--seconds",
            "1",
            "--sender",
            "builtin",
            "--senders",
            "1",
            "--filler",
            "random",
        ],
        capture_output=True,
        text=True,
        timeout=180,
        cwd=SCRIPTS,
    )
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout.strip().splitlines()[-1])
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
    proc = subprocess.run(
        [sys.executable, str(SCRIPTS / "bench_pack.py"), "--lines", "2000"],
        capture_output=True,
        text=True,
        timeout=180,
        cwd=SCRIPTS,
    )
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["rules_sshd"]["events"] == 2000
    for name in ("rules_sshd", "udp_5424_256"):
        got = result[name]
        assert got["packed_bytes"] * 5 < got["stored_line_bytes"], got
        assert got["logrotate_gzip_bytes"] < got["rsyslog_file_bytes"], got
