"""Done-when (issue 13) with the real channels: a storm of 1,000 incidents is one digest
e-mail and one digest SMS, not 1,000 of each; an unacknowledged critical incident escalates
after its delay to the SMS gateway, the signed link in its e-mail acknowledges it and stops
the escalation, and forged or expired links are refused. The SMTP server (aiosmtpd) and the
Twilio-compatible gateway are real servers on loopback; the appliance's clock is moved.
"""

from __future__ import annotations

import asyncio
import re
import urllib.parse
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiosmtpd.controller import Controller

from appliance.api import tokens as api_tokens
from appliance.app import Appliance
from appliance.config import parse_config
from appliance.correlate.component import correlation_of
from appliance.notify.engine import NotifyEngine, notify_of
from tests.conftest import free_port, make_config
from tests.notify_peers import HttpPeer
from tests.notifying import Clock, alert, wait_until
from tests.test_notify_email import Mailbox


class Site:
    def __init__(self, app: Appliance, clock: Clock, mailbox: Mailbox, gateway: HttpPeer) -> None:
        self.app, self.clock, self.mailbox, self.gateway = app, clock, mailbox, gateway

    @property
    def engine(self) -> NotifyEngine:
        e = notify_of(self.app)
        assert e is not None
        return e

    @property
    def api(self) -> str:
        assert self.app.api is not None
        return f"http://127.0.0.1:{self.app.api.port}"

    def sms(self) -> list[str]:
        return [urllib.parse.parse_qs(r.text())["Body"][0] for r in self.gateway.requests]

    def mails(self) -> list[Any]:
        return [m for _e, m in self.mailbox.received]


@pytest.fixture
async def site(tmp_path: Path) -> AsyncIterator[Callable[..., Any]]:
    mailbox = Mailbox()
    port = free_port()
    smtp = Controller(mailbox, hostname="127.0.0.1", port=port)
    smtp.start()
    gateway = await HttpPeer().start()
    apps: list[Appliance] = []

    async def start(extra_channels: list[dict[str, Any]] | None = None, **notify: Any) -> Site:
        channels = [
            {
                "name": "ops-mail",
                "type": "email",
                "host": "127.0.0.1",
                "port": port,
                "tls": "none",
                "from": "sem@site.example",
                "to": ["noc@site.example"],
            },
            {
                "name": "ops-sms",
                "type": "sms_twilio",
                "url": gateway.url,
                "account_sid": "AC1",
                "auth_token": "secret",
                "from": "+15550000000",
                "to": ["+15551234567"],
            },
            *(extra_channels or []),
        ]
        data = make_config(tmp_path, notify={"tick": 0.05, "channels": channels, **notify})
        data["appliance"]["allow_empty"] = True
        data.pop("sources", None)
        clock = Clock()
        app = Appliance(parse_config(data, base_dir=tmp_path), clock=clock)
        await app.start()
        apps.append(app)
        return Site(app, clock, mailbox, gateway)

    yield start
    for app in apps:
        await app.stop()
    await gateway.stop()
    smtp.stop()


async def test_a_storm_of_1000_incidents_is_one_digest_per_channel(site) -> None:
    s = await site(
        routes=[
            {
                "channels": ["ops-mail", "ops-sms"],
                "digest_interval": 600,
                "digest_below": "critical",
            }
        ],
    )
    comp = correlation_of(s.app)
    assert comp is not None
    for start in range(0, 1000, 250):
        await comp.incidents.apply(
            [alert(f"10.1.{(start + i) // 250}.{(start + i) % 250}") for i in range(250)]
        )
    await s.engine.run_due()
    await asyncio.sleep(0.5)
    assert s.mails() == [] and s.sms() == []  # the digest window is still open
    s.clock.advance(601)
    await s.engine.run_due()
    await wait_until(lambda: len(s.mails()) == 1 and len(s.sms()) == 1)
    await asyncio.sleep(1.0)
    assert len(s.mails()) == 1 and len(s.sms()) == 1
    (mail,) = s.mails()
    assert str(mail["Subject"]).startswith("Digest: 1000 incidents")
    assert "... and 950 more" in mail.get_body(("plain",)).get_content()
    assert s.sms()[0].startswith("1000 incidents")


ESCALATION = {
    "public_url": "http://sem.example",
    "routes": [{"channels": ["ops-mail"], "escalation": "crit"}],
    "escalations": [
        {
            "name": "crit",
            "min_severity": "critical",
            "levels": [{"after": 900, "channels": ["ops-sms"]}],
        }
    ],
}


def ack_path(mail: Any) -> str:
    text = mail.get_body(("plain",)).get_content()
    m = re.search(r"http://sem\.example(/ack/\S+)", text)
    assert m, text
    return m.group(1)


async def test_an_unacknowledged_critical_incident_escalates_after_its_delay(site) -> None:
    s = await site(**ESCALATION)
    comp = correlation_of(s.app)
    assert comp is not None
    await comp.incidents.apply([alert("203.0.113.50", level="critical")])
    await wait_until(lambda: len(s.mails()) == 1)
    s.clock.advance(899)
    await s.engine.run_due()
    await asyncio.sleep(0.3)
    assert s.sms() == []
    s.clock.advance(2)
    await s.engine.run_due()
    await wait_until(lambda: len(s.sms()) == 1)
    assert s.sms()[0].startswith("ESCALATION level 1: CRITICAL")


async def test_the_link_in_the_mail_acknowledges_and_stops_escalation(site) -> None:
    s = await site(**ESCALATION)
    comp = correlation_of(s.app)
    assert comp is not None
    (doc,) = await comp.incidents.apply([alert("203.0.113.51", level="critical")])
    await wait_until(lambda: len(s.mails()) == 1)
    path = ack_path(s.mails()[0])
    async with aiohttp.ClientSession() as http:
        async with http.get(s.api + path) as r:  # a mail scanner's prefetch
            assert r.status == 200
        assert (await comp.incidents.get(doc["id"]))["status"] == "open"
        async with http.post(s.api + path) as r:
            assert r.status == 200
        assert (await comp.incidents.get(doc["id"]))["status"] == "acknowledged"
        async with http.post(s.api + path) as r:  # twice: nothing left to acknowledge
            assert r.status == 409
    s.clock.advance(3600)
    await s.engine.run_due()
    await asyncio.sleep(0.5)
    assert s.sms() == []


async def test_forged_and_expired_links_are_refused(site) -> None:
    s = await site(**ESCALATION)
    comp = correlation_of(s.app)
    assert comp is not None
    (doc,) = await comp.incidents.apply([alert("203.0.113.52", level="critical")])
    await wait_until(lambda: len(s.mails()) == 1)
    path = ack_path(s.mails()[0])
    incident_id, expires, sig = path.removeprefix("/ack/").split(".")
    forged = f"/ack/{incident_id}.{expires}.{sig[::-1]}"
    async with aiohttp.ClientSession() as http:
        async with http.post(s.api + forged) as r:
            assert r.status == 403
        s.clock.advance(86401)  # past ack_link_ttl
        async with http.post(s.api + path) as r:
            assert r.status == 410
    assert (await comp.incidents.get(doc["id"]))["status"] == "open"
    metrics = s.app.metrics.render()
    assert 'appliance_notify_ack_refused_total{reason="forged"} 1' in metrics
    assert 'appliance_notify_ack_refused_total{reason="expired"} 1' in metrics


async def test_silences_need_the_write_scope(site, tmp_path: Path) -> None:
    s = await site(**ESCALATION)
    reader, _ = api_tokens.add_token(tmp_path / "data" / api_tokens.TOKENS_FILE, "ro", ["read"])
    body = {"matchers": {"rule": "*"}, "duration": 60}
    async with aiohttp.ClientSession() as http:
        headers = {"Authorization": f"Bearer {reader}"}
        async with http.post(s.api + "/api/v1/notify/silences", json=body, headers=headers) as r:
            assert r.status == 403
        async with http.get(s.api + "/api/v1/notify/silences", headers=headers) as r:
            assert r.status == 200


async def test_an_sms_reply_with_the_code_to_the_modem_acknowledges(site) -> None:
    from tests.sim_modem import SimModem

    modem = SimModem()
    try:
        gsm = {
            "name": "gsm",
            "type": "sms_modem",
            "device": modem.device,
            "pin": "1234",
            "to": ["+15557654321"],
            "reply_poll_interval": 0.2,
            "command_timeout": 2,
        }
        s = await site(
            extra_channels=[gsm],
            routes=[{"channels": ["gsm"], "escalation": "crit"}],
            escalations=[
                {
                    "name": "crit",
                    "min_severity": "critical",
                    "levels": [{"after": 900, "channels": ["ops-sms"]}],
                }
            ],
        )
        comp = correlation_of(s.app)
        assert comp is not None
        (doc,) = await comp.incidents.apply([alert("203.0.113.53", level="critical")])
        await wait_until(lambda: len(modem.sent) == 1)
        m = re.search(r"Reply ACK (\w+)$", modem.sent[0].text)
        assert m, modem.sent[0].text
        modem.inbox[1] = ("REC UNREAD", "+15550000001", f"ACK {m.group(1)}")  # a stranger
        modem.inbox[2] = ("REC UNREAD", "+15557654321", f"ack {m.group(1).lower()} thanks")
        await wait_until(lambda: not modem.inbox, what="replies read and deleted")
        assert (await comp.incidents.get(doc["id"]))["status"] == "acknowledged"
        assert s.engine.m.ack_refused.value("sender") == 1
        s.clock.advance(3600)
        await s.engine.run_due()
        await asyncio.sleep(0.3)
        assert s.sms() == []  # no escalation after the acknowledgement
    finally:
        modem.close()
