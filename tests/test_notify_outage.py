"""Done-when (issue 13): every channel's receiver is down for an hour of (simulated) clock, the
appliance is SIGKILLed in the middle and restarted; once the receivers are back, every
notification (immediate, grouped and escalated) is delivered, each exactly once.

A real appliance process (``tests.notify_child``) with its real channels (e-mail to an SMTP
server, a signed JSON webhook, a Twilio-compatible SMS gateway) and a clock that is real time
plus an offset the test writes to a file. The receivers are real servers, stopped and started
again on their ports.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import sys
import urllib.parse
import urllib.request
from collections import Counter
from pathlib import Path

import pytest
from aiohttp import web
from aiosmtpd.controller import Controller

from tests.conftest import free_port
from tests.notifying import wait_until
from tests.test_notify_email import Mailbox

pytestmark = pytest.mark.slow

ROOT = Path(__file__).parents[1]
N = 10  # critical incidents


class Recorder:
    """An HTTP server on a fixed loopback port that records (path, body); restartable."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.seen: list[tuple[str, bytes]] = []
        self.runner: web.AppRunner | None = None

    async def _handle(self, request: web.Request) -> web.Response:
        self.seen.append((request.path, await request.read()))
        return web.json_response({"sid": f"SM{len(self.seen)}"}, status=201)

    async def start(self) -> None:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self.runner = web.AppRunner(app, access_log=None)
        await self.runner.setup()
        await web.TCPSite(self.runner, "127.0.0.1", self.port, reuse_address=True).start()

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()


def write_config(tmp: Path, api: int, http: int, smtp: int) -> Path:
    cfg = tmp / "appliance.toml"
    cfg.write_text(
        f"""
[appliance]
data_dir = "{tmp / "data"}"
sensor_id = "test-01"
shutdown_timeout = 3.0
allow_empty = true

[api]
listen = "127.0.0.1:{api}"
token = "t"

[notify]
tick = 0.05
backoff_base = 30.0
backoff_cap = 300.0

[[notify.channels]]
name = "mail"
type = "email"
host = "127.0.0.1"
port = {smtp}
tls = "none"
from = "sem@site.example"
to = ["noc@site.example"]
timeout = 5

[[notify.channels]]
name = "hook"
type = "webhook"
url = "http://127.0.0.1:{http}/hook"
timeout = 5

[[notify.channels]]
name = "sms"
type = "sms_twilio"
url = "http://127.0.0.1:{http}"
account_sid = "AC123"
auth_token = "secret"
from = "+15550000000"
to = ["+15551234567"]
timeout = 5

[[notify.routes]]
name = "grouped"
channels = ["mail"]
group_by = ["rule.id"]
group_wait = 600
continue = true

[[notify.routes]]
name = "now"
channels = ["hook", "sms"]
escalation = "crit"

[[notify.escalations]]
name = "crit"
min_severity = "critical"
levels = [{{ after = 1200, channels = ["mail"] }}]
"""
    )
    return cfg


async def spawn(cfg: Path, offset: Path, n: int) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable, "-m", "tests.notify_child", str(cfg), str(offset), str(n),
        cwd=ROOT, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )  # fmt: skip


async def api_get(port: int, path: str) -> dict:
    def get() -> dict:
        req = urllib.request.Request(
            f"http://127.0.0.1:{port}{path}", headers={"Authorization": "Bearer t"}
        )
        with urllib.request.urlopen(req, timeout=5) as r:
            return json.loads(r.read())

    return await asyncio.to_thread(get)


async def test_an_hour_of_outage_and_a_sigkill_lose_no_notification(tmp_path: Path) -> None:
    api, http, smtp = free_port(), free_port(), free_port()
    recorder = Recorder(http)
    mailbox = Mailbox()
    offset = tmp_path / "offset"
    offset.write_text("0")
    cfg = write_config(tmp_path, api, http, smtp)
    child = await spawn(cfg, offset, N)  # every receiver is down
    try:
        assert child.stdout is not None
        assert (await asyncio.wait_for(child.stdout.readline(), 60)).strip() == b"raised"
        for minutes in (5, 15, 25):  # retries keep failing while the clock moves on
            offset.write_text(str(minutes * 60))
            await asyncio.sleep(0.5)
    finally:
        child.send_signal(signal.SIGKILL)
        await child.wait()
    offset.write_text(str(45 * 60))  # the group window and the escalation fall due while down
    child = await spawn(cfg, offset, 0)
    smtpd = Controller(mailbox, hostname="127.0.0.1", port=smtp)
    try:
        assert child.stdout is not None
        assert (await asyncio.wait_for(child.stdout.readline(), 60)).strip() == b"raised"
        await asyncio.sleep(1.0)
        # Still down: every message is queued; each channel's oldest (they go in order, one
        # at a time) was tried and failed, before and after the kill.
        queued = (await api_get(api, "/api/v1/notify/deliveries?status=pending&limit=1000"))[
            "deliveries"
        ]
        assert Counter(q["channel"] for q in queued) == {"mail": N + 1, "hook": N, "sms": N}
        for name in ("hook", "sms"):
            head = min((q for q in queued if q["channel"] == name), key=lambda q: int(q["id"][1:]))
            assert head["attempts"] >= 2 and head["last_error"]
        offset.write_text(str(60 * 60))
        await recorder.start()  # back, on the same ports
        smtpd.start()
        offset.write_text(str(70 * 60))  # past any backoff (cap 300 s)

        def hooks() -> list[dict]:
            return [json.loads(b) for p, b in recorder.seen if p == "/hook"]

        def texts() -> list[str]:
            return [
                urllib.parse.parse_qs(b.decode())["Body"][0]
                for p, b in recorder.seen
                if p.endswith("/Messages.json")
            ]

        def done() -> bool:
            return len(hooks()) >= N and len(texts()) >= N and len(mailbox.received) >= N + 1

        await wait_until(done, 60, "every notification delivered")
        await asyncio.sleep(1.0)  # a duplicate would show now
        assert Counter(tuple(h["incident_ids"]) for h in hooks()).most_common(1)[0][1] == 1
        assert len(hooks()) == N
        ips = Counter(re.search(r"203\.0\.113\.\d+", t).group() for t in texts())  # type: ignore[union-attr]
        assert len(ips) == N and set(ips.values()) == {1}
        subjects = [str(m["Subject"]) for _e, m in mailbox.received]
        assert len(subjects) == N + 1
        assert sum(s.startswith(f"[CRITICAL] {N} incidents") for s in subjects) == 1
        escalated = Counter(
            re.search(r"203\.0\.113\.\d+", s).group()  # type: ignore[union-attr]
            for s in subjects
            if s.startswith("ESCALATION level 1")
        )
        assert len(escalated) == N and set(escalated.values()) == {1}
    finally:
        child.send_signal(signal.SIGKILL)
        await child.wait()
        await recorder.stop()
        smtpd.stop()
