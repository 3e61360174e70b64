"""scripts/bench notify-channels runs end to end (a functional check; no timing is asserted)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

SCRIPTS = Path(__file__).parents[1] / "scripts"


def test_notify_bench_delivers_through_every_measured_channel() -> None:
    proc = subprocess.run(
        [sys.executable, str(SCRIPTS / "bench_notify_channels.py"), "--n", "5"],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=SCRIPTS,
    )
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["delivered_ok"] is True
    for channel in ("webhook_https", "sms_twilio_http", "email_starttls", "sms_modem_pty"):
        assert result[channel]["messages"] == 5
        assert result[channel]["per_second"] > 0
