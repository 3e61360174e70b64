"""The notification engine in a running appliance: routing, grouping, digests, quiet hours,
silences, escalation, acknowledgement links and SMS codes, retries and the deliveries API.

Incidents are made by the real incident manager (its transaction runs the engine's hook);
messages go through loopback channels to a real HTTP server; time is the appliance's
injectable clock, moved by the test.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from appliance.app import Appliance
from appliance.composition import component_builders
from appliance.config import parse_config
from appliance.correlate.component import correlation_of
from appliance.notify import engine as engine_mod
from appliance.notify.acklink import make_token
from appliance.notify.engine import ChannelFactory, NotifyEngine, build_notify, notify_of
from tests.conftest import TOKEN, make_config
from tests.notifying import Clock, Inbox, LoopbackChannel, alert, channels, loopback_factory
from tests.notifying import wait_until as until

AUTH = {"Authorization": f"Bearer {TOKEN}"}


class Box:
    def __init__(self, app: Appliance, clock: Clock, inbox: Inbox) -> None:
        self.app = app
        self.clock = clock
        self.inbox = inbox
        self.session = aiohttp.ClientSession()

    @property
    def engine(self) -> NotifyEngine:
        e = notify_of(self.app)
        assert e is not None
        return e

    @property
    def api(self) -> str:
        assert self.app.api is not None
        return f"http://127.0.0.1:{self.app.api.port}"

    async def raise_(self, *ips: str, level: str = "high", rule_id: str = "ssh-bruteforce"):
        comp = correlation_of(self.app)
        assert comp is not None
        return await comp.incidents.apply([alert(ip, rule_id=rule_id, level=level) for ip in ips])

    async def tick(self) -> None:
        """Run the scheduler once now (it also runs every notify.tick on its own)."""
        await self.engine.run_due()

    async def settled(self) -> None:
        """Wait until no channel has anything pending that is due now."""

        async def drained() -> bool:
            conn = self.app.store.reader
            assert conn is not None
            async with conn.execute(
                "SELECT count(*) FROM outbox WHERE stream = 'notify' AND state = 'pending'"
            ) as cur:
                row = await cur.fetchone()
            return row is not None and row[0] == 0

        await until(drained, what="notify outbox drained")


@pytest.fixture
async def boot(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[Callable[..., Any]]:
    inbox = Inbox()
    await inbox.start()
    boxes: list[Box] = []
    clock = Clock()

    async def start(
        notify: dict[str, Any], *, channel_factory: ChannelFactory | None = None, **sections: Any
    ) -> Box:
        notify = {"tick": 0.05, "backoff_base": 1.0, "backoff_cap": 60.0, **notify}
        data = make_config(tmp_path, notify=notify, **sections)
        data["appliance"]["allow_empty"] = True
        data.pop("sources", None)
        factory = channel_factory or loopback_factory(inbox)
        builders = [
            functools.partial(build_notify, channel_factory=factory) if b is build_notify else b
            for b in component_builders()
        ]
        app = Appliance(parse_config(data, base_dir=tmp_path), clock=clock, builders=builders)
        await app.start()
        box = Box(app, clock, inbox)
        boxes.append(box)
        return box

    yield start
    for box in boxes:
        await box.session.close()
        if box.app.running:
            await box.app.stop()
    await inbox.stop()


MAIL_SMS = {"channels": channels("mail", "sms")}


async def test_a_new_incident_reaches_each_channel_of_its_route_once(boot) -> None:
    box = await boot({**MAIL_SMS, "routes": [{"channels": ["mail", "sms"]}]})
    (doc,) = await box.raise_("203.0.113.7")
    await until(lambda: len(box.inbox.messages) == 2, what="two messages")
    await box.raise_("203.0.113.7")  # a further hit on the same incident: no new message
    await box.tick()
    await asyncio.sleep(0.3)
    assert sorted(m["channel"] for m in box.inbox.messages) == ["mail", "sms"]
    for m in box.inbox.messages:
        assert m["incident_ids"] == [doc["id"]]
        assert "203.0.113.7" in m["text"] and m["subject"].startswith("[HIGH]")


async def test_below_min_severity_nothing_is_sent(boot) -> None:
    box = await boot({**MAIL_SMS, "routes": [{"channels": ["mail"], "min_severity": "high"}]})
    await box.raise_("203.0.113.7", level="medium")
    await box.tick()
    await asyncio.sleep(0.3)
    assert box.inbox.messages == []


async def test_first_matching_route_takes_the_incident_unless_it_says_continue(boot) -> None:
    box = await boot(
        {
            **MAIL_SMS,
            "routes": [
                {"channels": ["mail"], "rules": ["ssh-*"], "continue": True},
                {"channels": ["sms"], "source_networks": ["203.0.113.0/24"]},
                {"channels": ["mail"]},  # never reached by 203.0.113.x
            ],
        }
    )
    await box.raise_("203.0.113.7")
    await box.raise_("198.51.100.1", rule_id="web-scan")
    await until(lambda: len(box.inbox.messages) == 3)
    await asyncio.sleep(0.3)
    by = sorted((m["channel"], m["subject"].split("(")[-1]) for m in box.inbox.messages)
    assert [c for c, _ in by] == ["mail", "mail", "sms"]
    assert len(box.inbox.to("sms")) == 1 and "203.0.113.7" in box.inbox.to("sms")[0]["text"]


async def test_a_group_window_sends_one_message_for_the_incidents_of_a_group(boot) -> None:
    route = {"channels": ["mail"], "group_by": ["rule.id"], "group_wait": 30, "group_interval": 600}
    box = await boot({**MAIL_SMS, "routes": [route]})
    await box.raise_("203.0.113.1", "203.0.113.2", "203.0.113.3")
    await box.tick()
    await asyncio.sleep(0.2)
    assert box.inbox.messages == []  # still in the group window
    box.clock.advance(31)
    await box.tick()
    await until(lambda: len(box.inbox.messages) == 1)
    (msg,) = box.inbox.messages
    assert len(msg["incident_ids"]) == 3 and msg["subject"].startswith("[HIGH] 3 incidents")
    # A fourth incident of the group waits for group_interval after that message.
    await box.raise_("203.0.113.4")
    box.clock.advance(60)
    await box.tick()
    await asyncio.sleep(0.2)
    assert len(box.inbox.messages) == 1
    box.clock.advance(600)
    await box.tick()
    await until(lambda: len(box.inbox.messages) == 2)
    assert len(box.inbox.messages[1]["incident_ids"]) == 1


async def test_a_storm_of_1000_low_incidents_becomes_one_digest(boot) -> None:
    route = {"channels": ["mail", "sms"], "digest_interval": 900, "digest_below": "high"}
    box = await boot({**MAIL_SMS, "routes": [route], "digest_max_items": 20})
    for start in range(0, 1000, 100):
        ips = [f"10.0.{(start + i) // 250}.{(start + i) % 250}" for i in range(100)]
        await box.raise_(*ips, level="low")
    box.clock.advance(901)
    await box.tick()
    await until(lambda: len(box.inbox.messages) == 2)
    await box.tick()
    await asyncio.sleep(0.3)
    assert len(box.inbox.messages) == 2
    mail = box.inbox.to("mail")[0]
    assert len(mail["incident_ids"]) == 1000
    assert mail["subject"].startswith("Digest: 1000 incidents")
    assert "... and 980 more" in mail["text"]
    assert len(box.inbox.to("sms")[0]["short"]) <= 306


async def test_quiet_hours_hold_low_severities_until_they_end(boot) -> None:
    # Quiet all day: whatever the real time, "now" is inside.
    quiet = {"hours": "00:00-24:00", "min_severity": "critical", "action": "hold"}
    box = await boot({**MAIL_SMS, "routes": [{"channels": ["mail"], "quiet_hours": quiet}]})
    await box.raise_("203.0.113.9", level="critical")
    await until(lambda: len(box.inbox.messages) == 1)  # critical goes through
    await box.raise_("203.0.113.10", level="medium")
    await box.tick()
    await asyncio.sleep(0.3)
    assert len(box.inbox.messages) == 1
    box.clock.advance(86400)
    await box.tick()
    await until(lambda: len(box.inbox.messages) == 2)
    assert box.inbox.messages[1]["subject"].startswith("Held")


async def test_a_silence_from_the_api_keeps_matching_incidents_quiet_until_it_expires(
    boot,
) -> None:
    box = await boot({**MAIL_SMS, "routes": [{"channels": ["mail"]}]})
    body = {"matchers": {"rule": "ssh-*", "source": "203.0.113.0/24"}, "duration": 600}
    async with box.session.post(box.api + "/api/v1/notify/silences", json=body, headers=AUTH) as r:
        assert r.status == 201
        silence = await r.json()
    async with box.session.get(box.api + "/api/v1/notify/silences", headers=AUTH) as r:
        assert [s["id"] for s in (await r.json())["silences"]] == [silence["id"]]
    await box.raise_("203.0.113.5")
    await box.raise_("198.51.100.5")  # outside the silence
    await until(lambda: len(box.inbox.messages) == 1)
    assert "198.51.100.5" in box.inbox.messages[0]["text"]
    assert box.engine.m.silenced.total() == 1
    box.clock.advance(601)
    await box.tick()
    await box.raise_("203.0.113.6")
    await until(lambda: len(box.inbox.messages) == 2)


async def test_silences_are_deleted_through_the_api_and_bad_ones_refused(boot) -> None:
    box = await boot({**MAIL_SMS, "routes": [{"channels": ["mail"]}]})
    for bad in (
        {"matchers": {"colour": "red"}, "duration": 60},
        {"matchers": {"source": "not-an-ip"}, "duration": 60},
        {"matchers": {"rule": "x"}, "duration": -1},
    ):
        async with box.session.post(
            box.api + "/api/v1/notify/silences", json=bad, headers=AUTH
        ) as r:
            assert r.status == 400, bad
    async with box.session.post(
        box.api + "/api/v1/notify/silences",
        json={"matchers": {"severity": ["high"]}, "duration": 60},
        headers=AUTH,
    ) as r:
        sid = (await r.json())["id"]
    async with box.session.delete(box.api + f"/api/v1/notify/silences/{sid}", headers=AUTH) as r:
        assert r.status == 200
    async with box.session.delete(box.api + f"/api/v1/notify/silences/{sid}", headers=AUTH) as r:
        assert r.status == 404
    await box.raise_("203.0.113.5")
    await until(lambda: len(box.inbox.messages) == 1)


# "sms" is declared a modem (the loopback factory still builds a loopback channel for it):
# reply codes are only made where a reply can come back.
MODEM = {"name": "sms", "type": "sms_modem", "device": "/dev/null", "to": ["+15550001111"]}
ESCALATING = {
    **MAIL_SMS,
    "channels": [*channels("mail", "oncall"), MODEM],
    "public_url": "https://sem.example:8080",
    "routes": [{"channels": ["mail"], "escalation": "crit"}],
    "escalations": [
        {
            "name": "crit",
            "min_severity": "critical",
            "levels": [{"after": 300, "channels": ["sms"]}, {"after": 600, "channels": ["oncall"]}],
        }
    ],
}


async def test_an_unacknowledged_critical_incident_escalates_level_by_level(boot) -> None:
    box = await boot(ESCALATING)
    await box.raise_("203.0.113.66", level="critical")
    await until(lambda: len(box.inbox.to("mail")) == 1)
    box.clock.advance(299)
    await box.tick()
    await asyncio.sleep(0.2)
    assert box.inbox.to("sms") == []
    box.clock.advance(2)
    await box.tick()
    await until(lambda: len(box.inbox.to("sms")) == 1)
    assert box.inbox.to("sms")[0]["subject"].startswith("ESCALATION level 1")
    box.clock.advance(600)
    await box.tick()
    await until(lambda: len(box.inbox.to("oncall")) == 1)
    box.clock.advance(3600)
    await box.tick()
    await asyncio.sleep(0.2)
    assert len(box.inbox.messages) == 3  # no level after the last


async def test_the_signed_link_acknowledges_and_stops_the_escalation(boot) -> None:
    box = await boot(ESCALATING)
    (doc,) = await box.raise_("203.0.113.66", level="critical")
    await until(lambda: len(box.inbox.to("mail")) == 1)
    url = box.inbox.to("mail")[0]["ack_url"]
    assert url.startswith("https://sem.example:8080/ack/")
    path = url.removeprefix("https://sem.example:8080")
    async with box.session.get(box.api + path) as r:  # what a link scanner does
        assert r.status == 200 and "<form method=post>" in await r.text()
    assert (await correlation_of(box.app).incidents.get(doc["id"]))["status"] == "open"
    async with box.session.post(box.api + path) as r:
        assert r.status == 200 and "Acknowledged" in await r.text()
    assert (await correlation_of(box.app).incidents.get(doc["id"]))["status"] == "acknowledged"
    box.clock.advance(4000)
    await box.tick()
    await asyncio.sleep(0.3)
    assert box.inbox.to("sms") == [] and box.inbox.to("oncall") == []
    assert box.engine.m.acks.value("link") == 1


async def test_forged_altered_and_expired_links_are_refused_and_counted(boot) -> None:
    box = await boot(ESCALATING)
    (doc,) = await box.raise_("203.0.113.66", level="critical")
    await until(lambda: len(box.inbox.to("mail")) == 1)
    good = box.inbox.to("mail")[0]["ack_url"].rsplit("/", 1)[1]
    iid, expires, sig = good.split(".")
    forged = make_token(b"k" * 32, doc["id"], float(expires))
    altered = f"{iid}.{int(expires) + 86400}.{sig}"
    for token, status in ((forged, 403), (altered, 403), ("nonsense", 403)):
        for method in ("GET", "POST"):
            async with box.session.request(method, box.api + f"/ack/{token}") as r:
                assert r.status == status, (token, method)
    box.clock.advance(86401)
    async with box.session.post(box.api + f"/ack/{good}") as r:
        assert r.status == 410
    assert (await correlation_of(box.app).incidents.get(doc["id"]))["status"] == "open"
    m = box.engine.m.ack_refused
    assert m.value("forged") == 4 and m.value("malformed") == 2 and m.value("expired") == 1


async def test_an_sms_reply_with_the_code_acknowledges(boot, monkeypatch) -> None:
    built: dict[str, LoopbackChannel] = {}
    inbox = Inbox()
    await inbox.start()
    box = await boot(ESCALATING, channel_factory=loopback_factory(inbox, built))
    (doc,) = await box.raise_("203.0.113.66", level="critical")
    await until(lambda: len(inbox.to("mail")) == 1)
    code = inbox.to("mail")[0]["ack_code"]
    assert inbox.to("mail")[0]["short"].endswith(f"Reply ACK {code}")
    reply = built["sms"].on_reply
    await reply("+15559999999", f"ACK {code}")  # not a recipient of the channel
    await reply("+15550001111", "ACK 23ZZZZ")  # no such code
    assert (await correlation_of(box.app).incidents.get(doc["id"]))["status"] == "open"
    await reply("+15550001111", f"ack {code.lower()}")
    assert (await correlation_of(box.app).incidents.get(doc["id"]))["status"] == "acknowledged"
    assert box.engine.m.acks.value("sms") == 1
    assert box.engine.m.ack_refused.value("unknown_code") == 1
    assert box.engine.m.ack_refused.value("sender") == 1
    await inbox.stop()


async def test_a_dead_channel_does_not_hold_up_the_others_and_catches_up(boot) -> None:
    box = await boot({**MAIL_SMS, "routes": [{"channels": ["mail", "sms"]}]})
    box.inbox.status = 503  # both down
    await box.raise_("203.0.113.1")
    await until(lambda: box.engine.lanes["sms"].failures >= 1)
    # sms stays down; mail comes back after an hour of simulated outage
    box.clock.advance(3600)
    box.inbox.status = 200

    lane = box.engine.lanes["sms"]
    await lane.channel.close()
    lane.channel = LoopbackChannel("sms", "webhook", "http://127.0.0.1:9")  # refused
    await until(lambda: len(box.inbox.to("mail")) == 1, what="mail delivered")
    await box.raise_("203.0.113.2")
    box.clock.advance(120)
    await until(lambda: len(box.inbox.to("mail")) == 2, what="second mail")
    assert box.inbox.to("sms") == []
    async with box.session.get(
        box.api + "/api/v1/notify/deliveries", params={"channel": "sms"}, headers=AUTH
    ) as r:
        items = (await r.json())["deliveries"]
    assert [i["status"] for i in items] == ["pending", "pending"]
    assert items[0]["attempts"] >= 1 and items[0]["last_error"]
    sent: list[dict[str, Any]] = []

    async def both_recorded() -> bool:
        async with box.session.get(
            box.api + "/api/v1/notify/deliveries", params={"status": "sent"}, headers=AUTH
        ) as r:
            sent[:] = (await r.json())["deliveries"]
        return len(sent) >= 2

    # The inbox has the mail a moment before the engine records it as sent.
    await until(both_recorded, what="both mails recorded as sent")
    assert {i["channel"] for i in sent} == {"mail"} and len(sent) == 2
    metrics = await (await box.session.get(box.api + "/metrics")).text()
    assert 'appliance_notify_backlog{channel="sms"} 2' in metrics
    assert 'appliance_notify_sent_total{channel="mail"} 2' in metrics
    assert 'appliance_notify_retried_total{channel="sms"}' in metrics


async def test_a_rate_limit_defers_messages_past_its_window(boot) -> None:
    box = await boot(
        {
            **MAIL_SMS,
            "routes": [{"channels": ["sms"]}],
            "rate_limits": [{"channel": "sms", "max_messages": 2, "per": 600}],
        }
    )
    await box.raise_("203.0.113.1", "203.0.113.2", "203.0.113.3")
    await until(lambda: len(box.inbox.messages) == 2)
    # The lane counts the third as deferred only after the peer has the second: wait for it
    # (then the third is held, not late).
    await until(lambda: box.engine.m.rate_limited.value("sms") == 1, what="third deferred")
    assert len(box.inbox.messages) == 2
    box.clock.advance(601)
    await until(lambda: len(box.inbox.messages) == 3)


SMS_TWO = [
    {
        "name": "sms",
        "type": "webhook",
        "url": "http://127.0.0.1:9/unused",
        "to": ["+15550000001", "+15550000002"],
    }
]


async def test_a_recipient_past_its_limit_is_left_out_and_the_others_still_get_it(boot) -> None:
    box = await boot(
        {
            "channels": SMS_TWO,
            "routes": [{"channels": ["sms"]}],
            "rate_limits": [{"recipient": "+15550000001", "max_messages": 1, "per": 600}],
        }
    )
    await box.raise_("203.0.113.1")
    await until(lambda: len(box.inbox.messages) == 1)
    await box.raise_("203.0.113.2")
    await until(lambda: len(box.inbox.messages) == 2)
    first, second = box.inbox.messages
    assert first["recipients"] is None  # everyone
    assert second["recipients"] == ["+15550000002"]
    assert box.engine.m.recipient_limited.value("sms") == 1
    box.clock.advance(601)
    await box.raise_("203.0.113.3")
    await until(lambda: len(box.inbox.messages) == 3)
    assert box.inbox.messages[2]["recipients"] is None


async def test_a_message_whose_every_recipient_is_limited_is_settled_and_listed(boot) -> None:
    box = await boot(
        {
            "channels": [dict(SMS_TWO[0], to=["+15550000001"])],
            "routes": [{"channels": ["sms"]}],
            "rate_limits": [{"recipient": "+15550000001", "max_messages": 1, "per": 600}],
        }
    )
    await box.raise_("203.0.113.1")
    await until(lambda: len(box.inbox.messages) == 1)
    await box.raise_("203.0.113.2")
    await box.settled()
    assert len(box.inbox.messages) == 1
    async with box.session.get(f"{box.api}/api/v1/notify/deliveries", headers=AUTH) as resp:
        listed = await resp.json()
    assert [d["status"] for d in listed["deliveries"]][:2] == ["limited", "sent"]


async def test_pending_groups_and_escalation_deadlines_survive_a_restart(
    boot, tmp_path: Path
) -> None:
    notify = {
        **ESCALATING,
        "routes": [
            {"channels": ["mail"], "group_by": ["rule.id"], "group_wait": 60, "escalation": "crit"}
        ],
    }
    box = await boot(notify)
    await box.raise_("203.0.113.1", "203.0.113.2", level="critical")
    await box.app.stop()
    box2 = await boot(notify)
    box2.clock.advance(61)
    await box2.tick()
    await until(lambda: len(box2.inbox.to("mail")) == 1)
    assert len(box2.inbox.to("mail")[0]["incident_ids"]) == 2
    box2.clock.advance(300)
    await box2.tick()
    await until(lambda: len(box2.inbox.to("sms")) == 2)  # one escalation per incident


async def test_repeat_interval_reminds_while_the_incident_stays_open(boot) -> None:
    box = await boot({**MAIL_SMS, "routes": [{"channels": ["mail"], "repeat_interval": 3600}]})
    (doc,) = await box.raise_("203.0.113.1")
    await until(lambda: len(box.inbox.messages) == 1)
    box.clock.advance(3601)
    await box.tick()
    await until(lambda: len(box.inbox.messages) == 2)
    assert box.inbox.messages[1]["subject"].startswith("Reminder")
    await correlation_of(box.app).incidents.transition(doc["id"], "resolve")
    box.clock.advance(7200)
    await box.tick()
    await asyncio.sleep(0.2)
    assert len(box.inbox.messages) == 2


async def test_a_bug_while_routing_costs_the_message_not_the_incident(boot, monkeypatch) -> None:
    box = await boot({**MAIL_SMS, "routes": [{"channels": ["mail"]}]})

    def broken(*_a: Any, **_k: Any) -> Any:
        raise KeyError("renderer bug")

    monkeypatch.setattr(engine_mod, "render", broken)
    (doc,) = await box.raise_("203.0.113.1")
    assert (await correlation_of(box.app).incidents.get(doc["id"]))["status"] == "open"
    assert box.engine.m.dropped.value("internal") == 1


async def test_channel_status_lists_backlog_and_last_error(boot) -> None:
    box = await boot({**MAIL_SMS, "routes": [{"channels": ["sms"]}]})
    box.inbox.status = 500
    await box.raise_("203.0.113.1")
    await until(lambda: box.engine.lanes["sms"].failures >= 1)
    async with box.session.get(box.api + "/api/v1/notify/channels", headers=AUTH) as r:
        chans = {c["channel"]: c for c in (await r.json())["channels"]}
    assert chans["sms"]["status"] == "failing" and chans["sms"]["last_error"] == "HTTP 500"
    assert chans["mail"]["status"] == "ok"
    async with box.session.get(box.api + "/api/v1/notify/deliveries") as r:
        assert r.status == 401  # the API token is needed


async def test_a_reload_applies_new_routes_and_drops_the_queue_of_a_removed_channel(
    boot, tmp_path: Path
) -> None:
    box = await boot({**MAIL_SMS, "routes": [{"channels": ["mail", "sms"]}]})
    box.inbox.status = 503
    await box.raise_("203.0.113.1")
    await until(lambda: box.engine.lanes["sms"].failures >= 1)
    data = make_config(
        tmp_path,
        notify={"tick": 0.05, "channels": channels("mail"), "routes": [{"channels": ["mail"]}]},
    )
    data["appliance"]["allow_empty"] = True
    data.pop("sources", None)
    await box.app.reload(parse_config(data, base_dir=tmp_path))
    assert set(box.engine.lanes) == {"mail"}
    assert box.engine.m.dropped.value("channel_removed") == 1
    box.inbox.status = 200
    box.clock.advance(600)  # past the mail lane's backoff
    await until(lambda: len(box.inbox.to("mail")) == 1)
    await box.raise_("203.0.113.2")
    await until(lambda: len(box.inbox.to("mail")) == 2)
    assert box.inbox.to("sms") == []


async def test_notifications_added_by_a_reload_start_without_a_restart(
    boot, tmp_path: Path
) -> None:
    box = await boot({})
    async with box.session.get(box.api + "/api/v1/notify/channels", headers=AUTH) as r:
        assert (await r.json())["channels"] == []
    data = make_config(
        tmp_path, notify={"tick": 0.05, **MAIL_SMS, "routes": [{"channels": ["sms"]}]}
    )
    data["appliance"]["allow_empty"] = True
    data.pop("sources", None)
    await box.app.reload(parse_config(data, base_dir=tmp_path))
    await box.raise_("203.0.113.9")
    await until(lambda: len(box.inbox.to("sms")) == 1)
