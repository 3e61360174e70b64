"""Done-when (issue 13): an SSH brute force from the shared corpus, sent as syslog to a running
appliance, reaches a real SMTP server (STARTTLS), a Twilio-compatible SMS gateway and a
simulated modem on a pseudo-terminal within 5 s of the incident, once each, grouped as the
route says (one message for every brute-force incident of the burst).
"""

from __future__ import annotations

import asyncio
import socket
import ssl
import time
from datetime import datetime
from pathlib import Path

import pytest
import trustme
from aiosmtpd.controller import Controller

from appliance.app import Appliance
from appliance.config import parse_config
from appliance.correlate.component import correlation_of
from tests.conftest import corpus_dir, free_port, make_config
from tests.notify_peers import HttpPeer
from tests.notifying import wait_until
from tests.sim_modem import SimModem
from tests.test_notify_email import Mailbox

pytestmark = pytest.mark.corpus

ROUTE = {
    "channels": ["ops-mail", "ops-sms", "gsm"],
    "rules": ["SSH brute force*"],
    "min_severity": "high",
    "group_by": ["rule.id"],
    "group_wait": 1.0,
    "group_interval": 3600,
}


async def test_ssh_brute_force_from_the_corpus_reaches_smtp_sms_gateway_and_modem_once(
    tmp_path: Path,
) -> None:
    lines = (corpus_dir("syslog") / "openssh_loghub.log").read_bytes().splitlines()
    ca = trustme.CA()
    ca.cert_pem.write_to_path(str(tmp_path / "smtp-ca.pem"))
    tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(tls)
    mailbox = Mailbox()
    smtp_port = free_port()
    smtp = Controller(
        mailbox, hostname="127.0.0.1", port=smtp_port, tls_context=tls, require_starttls=True
    )
    smtp.start()
    gateway = await HttpPeer().start()
    modem = SimModem()
    notify = {
        "tick": 0.1,
        "channels": [
            {
                "name": "ops-mail",
                "type": "email",
                "host": "127.0.0.1",
                "port": smtp_port,
                "tls": "starttls",
                "ca_file": "smtp-ca.pem",
                "from": "sem@site.example",
                "to": ["noc@site.example"],
            },
            {
                "name": "ops-sms",
                "type": "sms_twilio",
                "url": gateway.url,
                "account_sid": "AC123",
                "auth_token": "secret",
                "from": "+15550000000",
                "to": ["+15551234567"],
            },
            {
                "name": "gsm",
                "type": "sms_modem",
                "device": modem.device,
                "pin": "1234",
                "to": ["+15557654321"],
                "reply_poll_interval": 0,
            },
        ],
        "routes": [ROUTE],
    }
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
            datetime.fromisoformat(d["created"].replace("Z", "+00:00")).timestamp()
            for d in await brute_forces()
        )

        def counts() -> tuple[int, int, int]:
            return len(mailbox.received), len(gateway.requests), len(modem.sent)

        # The done-when bound, as the hang guard: every receiver has its message 5 s after
        # the first incident.
        await wait_until(lambda: min(counts()) >= 1, max(0.1, first + 5 - time.time()))
        latency = time.time() - first
        await asyncio.sleep(1.5)  # anything extra would arrive now (group_wait is 1 s)
        assert counts() == (1, 1, 1)
        incidents = await brute_forces()
        _env, mail = mailbox.received[0]
        body = mail.get_body(("plain",))
        assert body is not None
        text = body.get_content()
        assert len(incidents) > 1  # the corpus holds several brute-forcing sources
        assert str(mail["Subject"]).startswith(f"[HIGH] {len(incidents)} incidents")
        for d in incidents:
            assert d["id"] in text  # every incident of the group is listed
        form = gateway.requests[0].text()
        assert "To=%2B15551234567" in form and "incidents" in form
        assert modem.sent[0].number == "+15557654321"
        print(
            f"{len(incidents)} incidents, one message per channel, {latency:.2f}s after the first"
        )
    finally:
        await app.stop()
        modem.close()
        await gateway.stop()
        smtp.stop()
