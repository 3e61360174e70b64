"""Scheduled reports: when they fire, that a running appliance writes them into the reports
folder from its own database, keeps the newest ``keep``, and refuses bad schedules."""

from __future__ import annotations

import calendar
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller

from appliance.config import ConfigError, ReportSchedule, parse_config
from appliance.reports.schedule import ReportScheduler, next_run, prune
from tests.conftest import free_port, make_config
from tests.ruletools import ssh
from tests.test_incidents_api import feed
from tests.test_notify_cli import Inbox

# Friday 2026-12-04 10:30:00 UTC
FRI = calendar.timegm((2026, 12, 4, 10, 30, 0))


def test_a_daily_report_fires_at_its_time_today_or_tomorrow() -> None:
    assert next_run(ReportSchedule(name="d", at="11:00"), FRI) == FRI + 1800
    assert next_run(ReportSchedule(name="d", at="10:30"), FRI) == FRI + 86400
    assert next_run(ReportSchedule(name="d", at="06:00"), FRI) == FRI + 86400 - 4.5 * 3600


def test_a_weekly_report_fires_on_its_weekday() -> None:
    monday = next_run(ReportSchedule(name="w", every="weekly", weekday="monday", at="06:00"), FRI)
    assert monday == calendar.timegm((2026, 12, 7, 6, 0, 0))
    friday = next_run(ReportSchedule(name="w", every="weekly", weekday="friday", at="09:00"), FRI)
    assert friday == calendar.timegm((2026, 12, 11, 9, 0, 0))


def test_prune_keeps_the_newest(tmp_path: Path) -> None:
    for stamp in ("20261201-0600", "20261202-0600", "20261203-0600"):
        (tmp_path / f"daily-{stamp}.pdf").write_bytes(b"%PDF")
    (tmp_path / "other-20261201-0600.pdf").write_bytes(b"%PDF")
    assert prune(tmp_path, "daily", "pdf", 2) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "daily-20261202-0600.pdf",
        "daily-20261203-0600.pdf",
        "other-20261201-0600.pdf",
    ]


@pytest.mark.parametrize(
    ("schedule", "error"),
    [
        ({"name": "x", "at": "25:00"}, "reports.schedules[0].at: expected HH:MM"),
        ({"name": "x", "since": "forever"}, "reports.schedules[0].since:"),
        ({"name": "x", "formats": ["docx"]}, "reports.schedules[0].formats[0]: must be one of"),
        ({"at": "06:00"}, "reports.schedules[0].name: required"),
        ({"name": "x", "email": ["nope"]}, "reports.schedules[0].email: no [[notify.channels]]"),
    ],
)
def test_bad_schedules_are_config_errors(tmp_path: Path, schedule: dict, error: str) -> None:
    with pytest.raises(ConfigError) as exc:
        parse_config(make_config(tmp_path, reports={"schedules": [schedule]}), base_dir=tmp_path)
    assert any(e.startswith(error) for e in exc.value.errors), exc.value.errors


async def test_a_due_schedule_writes_its_reports_into_the_folder(
    start_appliance: Any, tmp_path: Path
) -> None:
    run = await start_appliance(
        reports={
            "dir": str(tmp_path / "out"),
            "keep": 1,
            "schedules": [{"name": "daily", "formats": ["html", "csv"], "at": "00:00"}],
        }
    )
    await feed(run, [ssh(i, "203.0.113.9") for i in range(3)])
    scheduler = next(c for c in run.app.components if isinstance(c, ReportScheduler))
    scheduler.trigger("daily")
    await run.wait_for(lambda: scheduler.due["daily"] > run.app.clock(), timeout=30)
    assert len(list((tmp_path / "out").glob("daily-*"))) == 2
    html = next((tmp_path / "out").glob("daily-*.html")).read_text()
    assert "Security report: test-01" in html and "<svg" in html
    assert 'appliance_reports_total{schedule="daily",format="csv",outcome="written"} 1' in (
        await run.metrics()
    )


async def test_a_schedule_with_email_mails_its_reports_as_attachments(
    start_appliance: Any, tmp_path: Path
) -> None:
    inbox = Inbox()
    port = free_port()
    smtpd = Controller(inbox, hostname="127.0.0.1", port=port)
    smtpd.start()
    try:
        mail = {
            "name": "ops-mail",
            "type": "email",
            "host": "127.0.0.1",
            "port": port,
            "tls": "none",
            "from": "sem@site.example",
            "to": ["noc@site.example"],
        }
        run = await start_appliance(
            notify={"channels": [mail]},
            reports={
                "dir": str(tmp_path / "out"),
                "schedules": [
                    {
                        "name": "daily",
                        "formats": ["pdf", "csv"],
                        "at": "00:00",
                        "email": ["ops-mail"],
                    }
                ],
            },
        )
        await feed(run, [ssh(i, "203.0.113.9") for i in range(3)])
        scheduler = next(c for c in run.app.components if isinstance(c, ReportScheduler))
        scheduler.trigger("daily")
        await run.wait_for(lambda: len(inbox.messages) == 1, timeout=30)
    finally:
        smtpd.stop()
    (msg,) = inbox.messages
    assert msg["Subject"].startswith("[test-01] daily report")
    parts = {p.get_filename(): p for p in msg.iter_attachments()}
    names = sorted(parts)
    assert [n.rsplit(".", 1)[1] for n in names] == ["csv", "pdf"]
    pdf = next(p for n, p in parts.items() if n.endswith(".pdf"))
    assert pdf.get_content_type() == "application/pdf"
    assert pdf.get_content().startswith(b"%PDF")
    mailed = 'appliance_reports_total{schedule="daily",format="email",outcome="mailed"} 1'

    async def counted() -> bool:
        return mailed in await run.metrics()

    # The SMTP peer holds the message before the scheduler's send returns and counts it.
    await run.wait_for(counted)
