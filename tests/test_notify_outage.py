"""Done-when (issue 13): every channel's receiver is down for an hour of (simulated) clock, the
appliance is SIGKILLed in the middle and restarted; once the receivers are back, every
notification (immediate, grouped and escalated) is delivered, each exactly once.

A real appliance process (``tests.notify_child``) whose clock is real time plus an offset the
test writes to a file; the receiver is a real HTTP server stopped and restarted on its port.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
import urllib.request
from collections import Counter
from pathlib import Path

import pytest

from tests.conftest import free_port
from tests.notifying import Inbox, wait_until

pytestmark = pytest.mark.slow

ROOT = Path(__file__).parents[1]
N = 10  # critical incidents


def write_config(tmp: Path, api_port: int) -> Path:
    cfg = tmp / "appliance.toml"
    notify = {
        "tick": 0.05,
        "backoff_base": 30.0,
        "backoff_cap": 300.0,
        "channels": [
            {"name": n, "type": "webhook", "url": "http://127.0.0.1:9/unused"}
            for n in ("mail", "sms", "oncall")
        ],
        "routes": [
            {"channels": ["mail", "sms"], "escalation": "crit"},
            {
                "name": "grouped",
                "channels": ["mail"],
                "group_by": ["rule.id"],
                "group_wait": 600,
                "continue": True,
            },
        ],
        "escalations": [
            {
                "name": "crit",
                "min_severity": "critical",
                "levels": [{"after": 1200, "channels": ["oncall"]}],
            }
        ],
    }
    notify["routes"].reverse()  # the grouped route first, with continue
    text = f"""
[appliance]
data_dir = "{tmp / "data"}"
sensor_id = "test-01"
shutdown_timeout = 3.0
allow_empty = true

[api]
listen = "127.0.0.1:{api_port}"
token = "t"
"""
    cfg.write_text(text + "\n[notify]\n" + _toml_notify(notify))
    return cfg


def _toml_notify(n: dict) -> str:
    # Inline tables keep the nested levels readable; JSON values are valid TOML scalars here.
    lines = [f"{k} = {json.dumps(v)}" for k, v in n.items() if not isinstance(v, list)]
    for key in ("channels", "routes", "escalations"):
        items = ", ".join(_inline(i) for i in n[key])
        lines.append(f"{key} = [{items}]")
    return "\n".join(lines) + "\n"


def _inline(d: dict) -> str:
    parts = []
    for k, v in d.items():
        if isinstance(v, list) and v and isinstance(v[0], dict):
            val = "[" + ", ".join(_inline(x) for x in v) + "]"
        elif isinstance(v, bool):
            val = "true" if v else "false"
        else:
            val = json.dumps(v)
        parts.append(f'"{k}" = {val}')
    return "{" + ", ".join(parts) + "}"


async def spawn(cfg: Path, offset: Path, url: str, n: int) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable, "-m", "tests.notify_child", str(cfg), str(offset), url, str(n),
        cwd=ROOT, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )  # fmt: skip


async def _api(port: int, path: str) -> dict:
    def get() -> dict:
        req = urllib.request.Request(
            f"http://127.0.0.1:{port}{path}", headers={"Authorization": "Bearer t"}
        )
        with urllib.request.urlopen(req, timeout=5) as r:
            return json.loads(r.read())

    return await asyncio.to_thread(get)


async def test_an_hour_of_outage_and_a_sigkill_lose_no_notification(tmp_path: Path) -> None:
    inbox = Inbox()
    await inbox.start()  # learn a port, then go down
    url = f"http://127.0.0.1:{inbox.port}"
    await inbox.stop()
    offset = tmp_path / "offset"
    offset.write_text("0")
    api_port = free_port()
    cfg = write_config(tmp_path, api_port)
    child = await spawn(cfg, offset, url, N)
    try:
        assert child.stdout is not None
        line = await asyncio.wait_for(child.stdout.readline(), 60)
        assert line.strip() == b"raised"
        for minutes in (5, 15, 25):  # retries keep failing while the clock moves on
            offset.write_text(str(minutes * 60))
            await asyncio.sleep(0.5)
    finally:
        child.send_signal(signal.SIGKILL)
        await child.wait()
    offset.write_text(str(45 * 60))  # the group window and the escalation fall due while down
    child = await spawn(cfg, offset, url, 0)
    try:
        assert child.stdout is not None
        assert (await asyncio.wait_for(child.stdout.readline(), 60)).strip() == b"raised"
        await asyncio.sleep(1.0)
        # Still down: the restarted appliance has every message queued; each channel's head
        # (messages go in order, one at a time) was tried and failed before and after the kill.
        queued = (await _api(api_port, "/api/v1/notify/deliveries?status=pending&limit=1000"))[
            "deliveries"
        ]
        assert len(queued) == 3 * N + 1
        for name in ("mail", "sms"):
            head = min((q for q in queued if q["channel"] == name), key=lambda q: int(q["id"][1:]))
            assert head["attempts"] >= 2 and "ClientConnectorError" in head["last_error"]
        offset.write_text(str(60 * 60))
        await inbox.start()  # back, on the same port
        offset.write_text(str(70 * 60))  # past any backoff (cap 300 s)
        expected = {"mail": N + 1, "sms": N, "oncall": N}
        await wait_until(
            lambda: Counter(m["channel"] for m in inbox.messages) == expected, 60,
            f"deliveries {expected}",
        )  # fmt: skip
        await asyncio.sleep(1.0)
        per = Counter((m["channel"], tuple(m["incident_ids"])) for m in inbox.messages)
        assert all(v == 1 for v in per.values()), per
        assert Counter(m["channel"] for m in inbox.messages) == expected
        grouped = [m for m in inbox.to("mail") if len(m["incident_ids"]) == N]
        assert len(grouped) == 1
        assert all(m["subject"].startswith("ESCALATION") for m in inbox.to("oncall"))
    finally:
        child.send_signal(signal.SIGKILL)
        await child.wait()
        await inbox.stop()
