"""Real device logs (shared corpus) through the listeners' decoders and the built-in rules."""

from __future__ import annotations

import pytest

from appliance.correlate import Engine
from appliance.correlate.replay import Replay, parse_line
from tests.conftest import corpus_dir
from tests.ruletools import builtin

pytestmark = pytest.mark.corpus


def replay(name: str) -> Replay:
    rp = Replay(Engine(builtin()))
    now = 1_790_000_000.0
    for line in (corpus_dir("syslog") / name).read_text(errors="replace").splitlines():
        ev = parse_line(line, now)
        if ev is not None:
            rp.feed(ev)
    return rp


def incidents(rp: Replay, rule: str) -> dict[str, int]:
    return {i["group_key"]: i["hit_count"] for i in rp.summary() if i["rule"] == rule}


def test_openssh_brute_force_sources_found_and_none_without_address() -> None:
    rp = replay("openssh_loghub.log")
    found = incidents(rp, "ssh_brute_force")
    assert "source.ip=183.62.140.253" in found
    assert all(k != "source.ip=" for k in found)


def test_snort_alerts_become_incidents_by_severity() -> None:
    rp = replay("snort_fast-alert_elastic.log")
    levels = {i["rule"]: i["severity"] for i in rp.summary() if i["rule"].startswith("ids_")}
    assert levels == {
        "ids_alert_severity_1": "high",
        "ids_alert_severity_2": "medium",
        "ids_alert_severity_3": "low",
    }


def test_su_and_sudo_failures_raise_privilege_escalation_incidents() -> None:
    su = incidents(replay("linux_su.log"), "privilege_escalation_failure")
    sudo = incidents(replay("linux_sudo.log"), "privilege_escalation_failure")
    assert su and sudo


def test_firewall_denies_in_asa_and_iptables_logs_are_seen() -> None:
    for name in ("cisco_asa.log", "linux_iptables.log"):
        rp = replay(name)
        assert rp.engine.stats[_id("firewall_deny")].hits > 5


def test_device_config_changes_raise_an_incident() -> None:
    assert incidents(replay("cisco_asa.log"), "netdev_config_change")


def test_netscreen_config_changes_and_screen_alarms_raise_incidents() -> None:
    rp = replay("juniper_netscreen.log")
    assert sum(incidents(rp, "netdev_config_change").values()) == 2
    assert incidents(rp, "ids_alert_severity_1") == {
        "rule.id=00005,source.ip=192.168.18.53,destination.ip=192.168.17.251": 1
    }


def _id(name: str) -> str:
    return next(d.meta.id for d in builtin().detections if d.meta.name == name)
