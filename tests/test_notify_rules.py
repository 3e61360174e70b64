"""The engine's pure parts: route matching and time windows, silences, rendering limits and
escaping, acknowledgement tokens and codes, and the [notify] config checks."""

from __future__ import annotations

import os
import stat
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from appliance.config import ConfigError, NotifyRoute, parse_config
from appliance.notify import acklink
from appliance.notify.match import Silence, check_matchers, in_window, select_routes, window_end
from appliance.notify.render import render
from tests.conftest import make_config

UTC = ZoneInfo("UTC")
PARIS = ZoneInfo("Europe/Paris")


def incident(severity: str = "high", ip: str = "203.0.113.9", **kw: object) -> dict:
    doc = {
        "id": "i-1",
        "title": "SSH brute force from one source",
        "severity": severity,
        "rule": {
            "id": "r-ssh",
            "title": "SSH brute force from one source",
            "tags": ["attack.t1110"],
        },
        "group": {"source.ip": ip},
        "group_key": f"source.ip={ip}",
    }
    doc.update(kw)
    return doc


def at(text: str, tz: ZoneInfo = UTC) -> float:
    return datetime.fromisoformat(text).replace(tzinfo=tz).timestamp()


def test_route_matchers_all_must_hold() -> None:
    now = at("2026-12-04T10:00")
    route = NotifyRoute(
        channels=["a"], rules=["SSH*"], tags=["attack.t11*"], source_networks=["203.0.113.0/24"]
    )
    assert select_routes([route], incident(), site="", now=now, tz=UTC) == [route]
    for other in (incident(ip="198.51.100.1"), incident(rule={"id": "x", "title": "y"})):
        assert select_routes([route], other, site="", now=now, tz=UTC) == []
    assert select_routes([route], incident("medium"), site="", now=now, tz=UTC) == [route]
    strict = NotifyRoute(channels=["a"], min_severity="critical")
    assert select_routes([strict], incident(), site="", now=now, tz=UTC) == []


def test_a_night_window_belongs_to_the_day_it_starts_on() -> None:
    # Friday 22:00-07:00: Saturday 03:00 is inside, Friday 03:00 is not.
    assert in_window("22:00-07:00", ["fri"], at("2026-12-05T03:00", PARIS), PARIS)
    assert not in_window("22:00-07:00", ["fri"], at("2026-12-04T03:00", PARIS), PARIS)
    assert in_window("08:00-18:00", [], at("2026-12-04T08:00", PARIS), PARIS)
    assert not in_window("08:00-18:00", [], at("2026-12-04T18:00", PARIS), PARIS)
    assert window_end("22:00-07:00", at("2026-12-04T23:00", PARIS), PARIS) == at(
        "2026-12-05T07:00", PARIS
    )


def test_continue_lets_later_routes_match_too() -> None:
    now = at("2026-12-04T10:00")
    a = NotifyRoute(channels=["a"], continue_=True)
    b = NotifyRoute(channels=["b"])
    c = NotifyRoute(channels=["c"])
    assert select_routes([a, b, c], incident(), site="", now=now, tz=UTC) == [a, b]


def test_silence_matchers_and_expiry() -> None:
    s = Silence("s", 100.0, 200.0, "tok", "", {"rule": "SSH*", "severity": ["high"]})
    assert s.matches(incident()) and not s.matches(incident("low"))
    assert s.active(150.0) and not s.active(200.0)
    assert check_matchers({"source": "2001:db8::/32"}) is None
    assert check_matchers({}) and check_matchers({"severity": "huge"})


def test_rendering_escapes_controls_and_cuts_the_sms_to_its_limit() -> None:
    evil = incident(title="x\x1b[31mred\u202eevil" + "A" * 500, id="i-1", site="hq")
    out = render([evil], kind="incident", ack_code="ABC234", sms_max=160)
    for part in (out["subject"], out["text"], out["short"], out["html"]):
        assert "\x1b" not in part and "\u202e" not in part
    assert "\\x1b" in out["text"]
    assert len(out["short"]) <= 160 and out["short"].endswith("Reply ACK ABC234")
    assert len(out["subject"]) <= 200
    html = render([incident(title="<script>alert(1)</script>")], kind="incident")["html"]
    assert "<script>" not in html and "&lt;script&gt;" in html


def test_ack_tokens_bind_incident_and_expiry(tmp_path: Path) -> None:
    key = acklink.load_or_create_key(tmp_path)
    assert stat.S_IMODE(os.stat(tmp_path / acklink.KEY_FILE).st_mode) == 0o600
    assert acklink.load_or_create_key(tmp_path) == key
    token = acklink.make_token(key, "i-1", 1000.0)
    assert acklink.verify_token(key, token, 999.0) == "i-1"
    with pytest.raises(acklink.AckRefused) as e:
        acklink.verify_token(key, token, 1000.0)
    assert e.value.status == 410
    other = token.replace("i-1", "i-2", 1)
    with pytest.raises(acklink.AckRefused) as e:
        acklink.verify_token(key, other, 0.0)
    assert (e.value.reason, e.value.status) == ("forged", 403)


def test_sms_codes_are_found_in_replies() -> None:
    code = acklink.new_code()
    assert acklink.find_code(f"ack {code.lower()}") == code
    assert acklink.find_code("thanks") is None


def config_errors(tmp_path: Path, notify: dict) -> str:
    with pytest.raises(ConfigError) as e:
        parse_config(make_config(tmp_path, notify=notify), base_dir=tmp_path)
    return "\n".join(e.value.errors)


def test_notify_config_names_unknown_channels_and_escalations(tmp_path: Path) -> None:
    mail = [{"name": "mail", "type": "webhook", "url": "http://127.0.0.1:9/unused"}]
    route = {"channels": ["mail", "pager"], "escalation": "nope"}
    text = config_errors(tmp_path, {"channels": mail, "routes": [route], "public_url": "ftp://x"})
    assert "notify.routes[0].channels: no channel named 'pager'" in text
    assert "notify.routes[0].escalation: no escalation named 'nope'" in text
    assert "notify.public_url: must start with http" in text
    bad_hours = {"channels": mail, "routes": [{"channels": ["mail"], "hours": "25:00-01:00"}]}
    assert "notify.routes[0].hours: not HH:MM-HH:MM" in config_errors(tmp_path, bad_hours)


def test_route_continue_is_read_from_its_toml_key(tmp_path: Path) -> None:
    channel = {"name": "m", "type": "webhook", "url": "http://127.0.0.1:9/unused"}
    notify = {"channels": [channel], "routes": [{"channels": ["m"], "continue": True}]}
    cfg = parse_config(make_config(tmp_path, notify=notify), base_dir=tmp_path)
    assert cfg.notify.routes[0].continue_ is True
