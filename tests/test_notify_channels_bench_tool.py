"""scripts/bench notify-channels runs end to end (a functional check; no timing is asserted)."""

from __future__ import annotations

from tests.test_bench_tool import run_bench


def test_notify_bench_delivers_through_every_measured_channel() -> None:
    result = run_bench("bench_notify_channels.py", "--n", "5", timeout=120)
    assert result["delivered_ok"] is True
    for channel in ("webhook_https", "sms_twilio_http", "email_starttls", "sms_modem_pty"):
        assert result[channel]["messages"] == 5
        assert result[channel]["per_second"] > 0
