"""Done-when (issue 13): an SSH brute force from the shared corpus, sent as syslog to a running
appliance, becomes incidents that reach every channel of the route within 5 s, once each,
grouped as the route says.
"""

from __future__ import annotations

import asyncio
import socket
import time
from datetime import datetime
from pathlib import Path

import pytest

from appliance.app import Appliance
from appliance.config import parse_config
from appliance.correlate.component import correlation_of
from appliance.notify import engine as engine_mod
from tests.conftest import corpus_dir, make_config
from tests.notifying import Inbox, channels, loopback_factory, wait_until

pytestmark = pytest.mark.corpus

ROUTE = {
    "channels": ["ops-mail", "ops-sms", "modem"],
    "rules": ["SSH brute force*"],
    "min_severity": "high",
    "group_by": ["rule.id"],
    "group_wait": 1.0,
    "group_interval": 3600,
}


async def test_ssh_brute_force_from_the_corpus_reaches_every_channel_once_grouped(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    lines = (corpus_dir("syslog") / "openssh_loghub.log").read_bytes().splitlines()
    inbox = Inbox()
    await inbox.start()
    monkeypatch.setattr(engine_mod, "CHANNEL_FACTORY", [loopback_factory(inbox)])
    notify = {"channels": channels("ops-mail", "ops-sms", "modem"), "routes": [ROUTE], "tick": 0.1}
    app = Appliance(parse_config(make_config(tmp_path, notify=notify), base_dir=tmp_path))
    await app.start()
    try:
        addr = app.sources[0].address  # type: ignore[attr-defined]
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            for i, line in enumerate(lines):
                s.sendto(b"<38>" + line, addr)
                if i % 50 == 49:
                    await asyncio.sleep(0.005)  # paced: UDP on loopback drops bursts too
        comp = correlation_of(app)
        assert comp is not None

        async def brute_forces() -> list[dict]:
            docs = await comp.incidents.list(limit=1000)
            return [d for d in docs if d["title"].startswith("SSH brute force")]

        await wait_until(brute_forces, 20, "SSH brute-force incidents")
        first = min(
            datetime.fromisoformat((d["created"]).replace("Z", "+00:00")).timestamp()
            for d in await brute_forces()
        )
        # Within 5 s of the first incident, each channel has had its one grouped message.
        await wait_until(lambda: len(inbox.messages) >= 3, max(0.1, first + 5 - time.time()))
        await asyncio.sleep(1.5)  # anything extra would arrive now (group_wait is 1 s)
        incidents = {d["id"] for d in await brute_forces()}
        for name in ROUTE["channels"]:
            got = inbox.to(name)
            assert len(got) == 1, (name, [m["subject"] for m in got])
            assert set(got[0]["incident_ids"]) <= incidents
            assert got[0]["received_at"] - first < 5.0
        covered = set(inbox.to("ops-mail")[0]["incident_ids"])
        print(f"{len(incidents)} incidents, {len(covered)} in the first message, latency "
              f"{max(m['received_at'] for m in inbox.messages) - first:.2f}s")  # fmt: skip
    finally:
        await app.stop()
        await inbox.stop()
