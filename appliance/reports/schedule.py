"""Scheduled reports (``[[reports.schedules]]``): daily or weekly at a UTC time, written to
``[reports] dir`` as ``NAME-YYYYmmdd-HHMM.FORMAT``, the newest ``keep`` per schedule and
format kept.

The work (reading the database, drawing the PDF) runs in a worker thread on the read-only
path the CLI uses, so intake never waits on it. A run the appliance was down for is not made
up later: the next one covers its own period. Failures are counted
(``appliance_reports_total{schedule,format,outcome}``) and logged, never raised.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from appliance.config import ReportSchedule
from appliance.logutil import RateLimitedLog

if TYPE_CHECKING:
    from appliance.app import Appliance

log = logging.getLogger(__name__)
_rl = RateLimitedLog(log)
WEEKDAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
# Longest sleep between looks at the clock: a clock step (NTP at boot) is noticed this fast.
MAX_SLEEP = 60.0


MIME = {".pdf": "application/pdf", ".html": "text/html", ".csv": "text/csv"}


def next_run(schedule: ReportSchedule, after: float) -> float:
    """The first time strictly after ``after`` (epoch seconds) the schedule fires."""
    hh, mm = (int(x) for x in schedule.at.split(":"))
    now = datetime.fromtimestamp(after, UTC)
    candidate = now.replace(hour=hh, minute=mm, second=0, microsecond=0)
    if schedule.every == "weekly":
        candidate += timedelta(days=(WEEKDAYS.index(schedule.weekday) - now.weekday()) % 7)
        step = timedelta(days=7)
    else:
        step = timedelta(days=1)
    while candidate.timestamp() <= after:
        candidate += step
    return candidate.timestamp()


def prune(folder: Path, name: str, fmt: str, keep: int) -> int:
    """Delete all but the newest ``keep`` reports of one schedule and format; how many went."""
    files = sorted(folder.glob(f"{name}-*.{fmt}"))
    doomed = files[:-keep] if keep > 0 else files
    for path in doomed:
        path.unlink(missing_ok=True)
    return len(doomed)


class ReportScheduler:
    """The appliance component that writes the scheduled reports."""

    def __init__(self, app: Appliance) -> None:
        self.app = app
        cfg = app.config
        self.section = cfg.reports
        self.folder = cfg.path(cfg.reports.dir) if cfg.reports.dir else cfg.data_dir / "reports"
        self.db_path = cfg.data_dir / "appliance.db"
        self.written = app.metrics.counter(
            "reports_total",
            "Scheduled reports by schedule, format and outcome (written, failed).",
            ["schedule", "format", "outcome"],
        )
        self._task: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()
        self.due: dict[str, float] = {}

    def trigger(self, name: str) -> None:
        """Make a schedule due now (it runs at once, then goes back to its times)."""
        if name not in self.due:
            raise KeyError(name)
        self.due[name] = 0.0
        self._wake.set()

    async def start(self) -> None:
        if not self.section.schedules:
            return
        now = self.app.clock()
        self.due = {s.name: next_run(s, now) for s in self.section.schedules}
        self._task = asyncio.create_task(self._loop(), name="report-scheduler")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _loop(self) -> None:
        while True:
            now = self.app.clock()
            for schedule in self.section.schedules:
                if now >= self.due[schedule.name]:
                    await self.run(schedule, now)
                    self.due[schedule.name] = next_run(schedule, now)
            wait = min(self.due.values()) - self.app.clock()
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), max(0.05, min(MAX_SLEEP, wait)))

    async def run(self, schedule: ReportSchedule, now: float) -> list[Path]:
        """Write the schedule's reports for the period ending ``now``; the files written."""
        from appliance.reports.build import build_report, write_atomically

        stamp = time.strftime("%Y%m%d-%H%M", time.gmtime(now))
        out = []
        for fmt in schedule.formats:
            path = self.folder / f"{schedule.name}-{stamp}.{fmt}"
            try:
                body = await asyncio.to_thread(
                    build_report,
                    self.db_path,
                    span=schedule.span,
                    fmt=fmt,
                    sensor_id=self.app.config.appliance.sensor_id,
                    now=now,
                )
                await asyncio.to_thread(write_atomically, path, body)
                await asyncio.to_thread(prune, self.folder, schedule.name, fmt, self.section.keep)
            except Exception as exc:  # a report must never take the appliance down
                self.written.inc(schedule.name, fmt, "failed")
                _rl.error(
                    f"report:{schedule.name}", "report %s (%s) failed: %s", schedule.name, fmt, exc
                )
                continue
            self.written.inc(schedule.name, fmt, "written")
            log.info("wrote report %s", path)
            out.append(path)
        if out and schedule.email:
            await self.mail(schedule, out, now)
        return out

    async def mail(self, schedule: ReportSchedule, paths: list[Path], now: float) -> None:
        """One message per channel with the run's files attached. Sent at once, not through
        the incident outbox: the files stay on disk, so a failed mailing loses nothing and is
        counted (``reports_total{outcome="mail_failed"}``) and logged."""
        from appliance.notify.channels import build_channel
        from appliance.notify.channels.base import Message

        day = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(now))
        sensor = self.app.config.appliance.sensor_id
        files = []
        for p in paths:
            data = await asyncio.to_thread(p.read_bytes)
            files.append((p.name, MIME.get(p.suffix, "application/octet-stream"), data))
        text = (
            f"The {schedule.every} report of {sensor} for the {schedule.since or 'default'}"
            f" period ending {day} is attached: {', '.join(p.name for p in paths)}."
        )
        message = Message(
            subject=f"[{sensor}] {schedule.name} report, {day}",
            text=text,
            short=text[:160],
            severity="informational",
            attachments=tuple(files),
        )
        config = self.app.config
        by_name = {c.name: c for c in config.notify.channels}
        for name in schedule.email:
            cfg = by_name.get(name)
            if cfg is None:  # a reload removed it
                continue
            channel = None
            try:
                channel = build_channel(cfg, Path(config.base_dir), self.app.metrics)
                await channel.send(message)
                self.written.inc(schedule.name, "email", "mailed")
            except Exception as exc:  # DeliveryError, an unreadable secret: counted, logged
                self.written.inc(schedule.name, "email", "mail_failed")
                _rl.error(f"report-mail:{name}", "report %s: mail via %s failed: %s",
                          schedule.name, name, exc)  # fmt: skip
            finally:
                if channel is not None:
                    await channel.close()


def build_reports(app: Appliance) -> Any:
    return ReportScheduler(app)
