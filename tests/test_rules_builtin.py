"""Every built-in rule with a scenario that must fire it and a near miss that must not."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from appliance.correlate import Engine
from appliance.event import Event
from appliance.protocols.syslog import decode_syslog
from appliance.protocols.syslog.ecs import syslog_fields
from appliance.protocols.syslog.vendors import REGISTRY
from tests.ruletools import (
    T0,
    auth,
    builtin,
    device,
    ev,
    fired,
    flow,
    fw,
    ids,
    rules_from,
    run,
    ssh,
)

Scenario = Callable[[], list[Event]]


def stamped(e: Event, fields: dict[str, object]) -> Event:
    e.fields.update(fields)
    return e


def intel_hit(e: Event) -> Event:
    e.fields.update(
        {
            "threat.indicator.type": "ipv4-addr",
            "threat.indicator.ip": e.fields["source.ip"],
            "threat.indicator.confidence": 80,
            "threat.feed.name": "blocklist",
            "threat.enrichments.matched.field": "source.ip",
            "threat.enrichments.matched.atomic": e.fields["source.ip"],
        }
    )
    return e


def many(n: int, make: Callable[[int], Event]) -> list[Event]:
    return [make(i) for i in range(n)]


def line(dt: float, text: str, sender: str = "192.0.2.1") -> Event:
    """An event as the syslog listener makes it from a raw line (header, then the decoders)."""
    msg = decode_syslog(text.encode(), T0 + dt)
    fields = syslog_fields(msg, sender)
    fields["event.dataset"] = REGISTRY.decode(msg, fields) or "syslog"
    return ev(dt, fields, raw=text)


# Antivirus lines, as the decoder files' and tests/test_syslog_vendors.py's samples.
CLAM = "<36>Nov 29 10:00:00 mail1 clamd[2321]: "
SEP = (
    "<51>Nov 29 10:00:00 sepm01 SymantecServer: Virus found,IP Address: 192.0.2.31,Computer "
    "name: WS-031,Source: Real Time Scan,Risk name: EICAR Test String,Occurrences: 1,File "
    "path: C:\\Users\\alice\\eicar.com,Description: ,Actual action: {act},Requested action: "
    "Cleaned,Secondary action: Quarantined,User Name: alice"
)
DEFENDER = (
    '{{"win":{{"system":{{"providerName":"Microsoft-Windows-Windows Defender",'
    '"eventID":"{id}","computer":"WS-040"}},"eventdata":{{"threat Name":"Virus:DOS/EICAR",'
    '"path":"file:_C:\\\\t\\\\eicar.com"}}}}}}'
)


# name -> (fires, does not fire). Near misses sit just under a threshold, outside a window,
# in the wrong order or on the wrong source.
ALERTING: dict[str, tuple[Scenario, Scenario]] = {
    "ssh_brute_force": (
        lambda: many(10, lambda i: ssh(i * 20, "203.0.113.9", f"u{i % 3}")),
        lambda: many(10, lambda i: ssh(i * 40, "203.0.113.9")),  # 10 failures over 6 min
    ),
    "ssh_success_after_failures": (
        lambda: [*many(5, lambda i: ssh(i, "198.51.100.7")), ssh(60, "198.51.100.7", ok=True)],
        lambda: [ssh(0, "198.51.100.7", ok=True), *many(5, lambda i: ssh(i + 1, "198.51.100.7"))],
    ),
    "ssh_password_spray": (
        lambda: many(8, lambda i: ssh(i * 5, "203.0.113.20", f"user{i}")),
        lambda: many(20, lambda i: ssh(i * 5, "203.0.113.20", f"user{i % 7}")),
    ),
    "ssh_distributed_brute_force": (
        lambda: many(10, lambda i: ssh(i * 5, f"203.0.113.{i + 1}", "admin")),
        lambda: many(9, lambda i: ssh(i * 5, f"203.0.113.{i + 1}", "admin")),
    ),
    "ssh_root_login": (
        lambda: [ssh(0, "192.0.2.1", "root", ok=True)],
        lambda: [ssh(0, "192.0.2.1", "alice", ok=True), ssh(1, "192.0.2.1", "root")],
    ),
    "privilege_escalation_failure": (
        lambda: [auth(0, "sudo", "127.0.0.1", "dcid", False, **{"host.hostname": "niban"})],
        lambda: [auth(0, "sudo", "127.0.0.1", "dcid", True, **{"host.hostname": "niban"})],
    ),
    "netdev_admin_brute_force": (
        lambda: many(
            5,
            lambda i: auth(
                i, "login", "192.0.2.50", "admin", False, **{"observer.vendor": "Cisco"}
            ),
        ),
        lambda: many(5, lambda i: auth(i, "login", "192.0.2.50", "admin", False)),  # no vendor
    ),
    "netdev_login_success": (
        lambda: [auth(0, "login", "192.0.2.50", "admin", True, **{"observer.vendor": "Cisco"})],
        lambda: [auth(0, "login", "192.0.2.50", "admin", False, **{"observer.vendor": "Cisco"})],
    ),
    "netdev_success_after_failures": (
        lambda: [
            *many(
                3,
                lambda i: auth(
                    i, "login", "192.0.2.50", "admin", False, **{"observer.vendor": "Juniper"}
                ),
            ),
            auth(10, "login", "192.0.2.50", "admin", True, **{"observer.vendor": "Juniper"}),
        ],
        lambda: [
            *many(
                2,
                lambda i: auth(
                    i, "login", "192.0.2.50", "admin", False, **{"observer.vendor": "Juniper"}
                ),
            ),
            auth(10, "login", "192.0.2.50", "admin", True, **{"observer.vendor": "Juniper"}),
        ],
    ),
    "netdev_config_change": (
        lambda: [
            device(
                0, "config_change", **{"event.category": ["configuration"], "user.name": "admin"}
            )
        ],
        lambda: [device(0, "config_change")],  # not categorized as configuration
    ),
    "vpn_brute_force": (
        lambda: many(10, lambda i: auth(i * 30, "vpn_login", "2.4.6.8", "my_user_name", False)),
        lambda: many(9, lambda i: auth(i * 30, "vpn_login", "2.4.6.8", "my_user_name", False)),
    ),
    "vpn_password_spray": (
        lambda: many(5, lambda i: auth(i * 30, "vpn_login", "2.4.6.8", f"user{i}", False)),
        lambda: many(5, lambda i: auth(i * 30, "vpn_login", f"2.4.6.{i}", f"user{i}", False)),
    ),
    "vpn_login_from_ids_flagged_source": (
        lambda: [
            auth(0, "vpn_login", "198.51.100.3", "bob", True),
            ids(600, "198.51.100.3", "10.1.1.1", 2),
        ],
        lambda: [
            ids(0, "198.51.100.3", "10.1.1.1", 2),
            auth(4000, "vpn_login", "198.51.100.3", "bob", True),
        ],
    ),
    "firewall_deny_flood": (
        lambda: many(100, lambda i: fw(i * 0.5, "111.11.11.1", "172.11.1.11", 139)),
        lambda: many(100, lambda i: fw(i * 0.5, "111.11.11.1", "172.11.1.11", 139, "allow")),
    ),
    "firewall_vertical_port_scan": (
        lambda: many(20, lambda i: fw(i, "203.0.113.5", "10.2.0.1", 1000 + i)),
        lambda: many(20, lambda i: fw(i * 5, "203.0.113.5", "10.2.0.1", 1000 + i)),  # 95 s
    ),
    "firewall_horizontal_port_scan": (
        lambda: many(20, lambda i: fw(i, "203.0.113.5", f"10.2.0.{i + 1}", 445)),
        lambda: many(19, lambda i: fw(i, "203.0.113.5", f"10.2.0.{i + 1}", 445)),
    ),
    "firewall_cleartext_admin_allowed": (
        lambda: [fw(0, "10.9.9.9", "10.2.0.1", 23, "allow")],
        lambda: [
            fw(0, "10.9.9.9", "10.2.0.1", 23, "deny"),
            fw(1, "10.9.9.9", "10.2.0.1", 22, "allow"),
        ],
    ),
    "flow_vertical_port_scan": (
        lambda: many(50, lambda i: flow(i, "10.1.1.66", "10.2.0.1", 1 + i, 60)),
        lambda: many(50, lambda i: flow(i, "10.1.1.66", "10.2.0.1", 80, 60)),
    ),
    "flow_horizontal_port_scan": (
        lambda: many(50, lambda i: flow(i, "10.1.1.66", f"10.2.{i // 200}.{i % 200 + 1}", 22, 60)),
        lambda: many(49, lambda i: flow(i, "10.1.1.66", f"10.2.0.{i + 1}", 22, 60)),
    ),
    "large_outbound_transfer": (
        lambda: many(4, lambda i: flow(i * 600, "10.1.1.20", "198.51.100.200", 443, 300_000_000)),
        lambda: many(4, lambda i: flow(i * 600, "10.1.1.20", "10.1.1.21", 443, 300_000_000)),
    ),
    "single_large_outbound_flow": (
        lambda: [flow(0, "192.168.1.20", "198.51.100.200", 443, 600_000_000)],
        lambda: [flow(0, "192.168.1.20", "198.51.100.200", 443, 400_000_000)],
    ),
    "ids_alert_severity_1": (
        lambda: [ids(0, "203.0.113.1", "10.1.1.1", 1)],
        lambda: [ids(0, "203.0.113.1", "10.1.1.1", 2)],
    ),
    "ids_alert_severity_2": (
        lambda: [ids(0, "192.168.88.10", "4.2.2.3", 2, "1:2012811:2")],
        lambda: [ids(0, "192.168.88.10", "4.2.2.3", 3, "1:2012811:2")],
    ),
    "ids_alert_severity_3": (
        lambda: [ids(0, "203.0.113.1", "10.1.1.1", 3)],
        lambda: [ids(0, "203.0.113.1", "10.1.1.1", 1)],
    ),
    "ids_alert_burst": (
        lambda: many(20, lambda i: ids(i, "203.0.113.1", "10.1.1.1", 3, f"1:{i}:1")),
        lambda: many(20, lambda i: ids(i * 20, "203.0.113.1", "10.1.1.1", 3, f"1:{i}:1")),
    ),
    "link_flapping": (
        lambda: [
            e
            for i in range(3)
            for e in (
                device(i * 120, "interface_down", **{"observer.ingress.interface.name": "Gi0/2"}),
                device(
                    i * 120 + 30, "interface_up", **{"observer.ingress.interface.name": "Gi0/2"}
                ),
            )
        ],
        lambda: [
            e
            for i in range(3)
            for e in (
                device(
                    i * 120, "interface_down", **{"observer.ingress.interface.name": f"Gi0/{i}"}
                ),
                device(
                    i * 120 + 30, "interface_up", **{"observer.ingress.interface.name": f"Gi0/{i}"}
                ),
            )
        ],
    ),
    "snmp_authentication_failure": (
        lambda: [
            device(0, "authenticationFailure", "snmp", **{"snmp.trap_oid": "1.3.6.1.6.3.1.1.5.5"})
        ],
        lambda: [device(0, "authenticationFailure", "syslog")],
    ),
    "device_reboot": (
        lambda: [device(0, "coldStart", "snmp")],
        lambda: [device(0, "linkDown", "snmp")],
    ),
    "av_malware_detected": (
        lambda: [line(0, CLAM + "/srv/up/eicar.com: Eicar-Signature FOUND")],
        lambda: [
            line(0, CLAM + "SelfCheck: Database status OK."),
            line(1, SEP.format(act="Left alone")),  # a failed remediation: its own rule
            line(2, DEFENDER.format(id="5001")),
        ],
    ),
    "av_remediation_failed": (
        lambda: [line(0, SEP.format(act="Left alone"))],
        lambda: [line(0, SEP.format(act="Quarantined")), line(1, DEFENDER.format(id="1117"))],
    ),
    "av_signatures_outdated": (
        lambda: [
            line(0, CLAM + "LibClamAV Warning: ***  The virus database is older than 7 days!  ***")
        ],
        lambda: [
            line(
                0,
                "<30>Nov 29 10:00:00 mail1 freshclam[1207]: daily.cld updated (version: "
                "27480, sigs: 2069541, f-level: 90, builder: raynman)",
            ),
            line(1, DEFENDER.format(id="2000")),
        ],
    ),
    "av_protection_disabled": (
        lambda: [line(0, DEFENDER.format(id="5001"))],
        lambda: [line(0, DEFENDER.format(id="5000")), line(1, DEFENDER.format(id="1116"))],
    ),
}


@pytest.mark.parametrize("name", sorted(ALERTING))
def test_builtin_rule_fires_on_its_scenario(name: str) -> None:
    positive, _ = ALERTING[name]
    assert name in fired(run(positive()))


@pytest.mark.parametrize("name", sorted(ALERTING))
def test_builtin_rule_stays_quiet_on_near_miss(name: str) -> None:
    _, negative = ALERTING[name]
    assert name not in fired(run(negative()))


def test_antivirus_lines_fire_their_rules_once_each() -> None:
    """A detection, a failed clean-up, an update failure and protection switched off: each
    raises its own rule and no other antivirus rule."""
    events = [
        line(0, DEFENDER.format(id="1116")),
        line(1, SEP.format(act="All actions failed")),
        line(
            2,
            "<27>Nov 29 10:00:00 mail1 freshclam[1207]: ERROR: Database update process "
            "failed: Connection failed (10)",
        ),
        line(3, DEFENDER.format(id="5010")),
    ]
    names = [a.rule.name for a in run(events) if (a.rule.name or "").startswith("av_")]
    assert names == ["av_malware_detected", "av_remediation_failed", "av_signatures_outdated",
                     "av_protection_disabled"]  # fmt: skip


def test_av_source_silent_fires_after_6_hours_without_antivirus_events() -> None:
    events = [line(i * 3600, CLAM + "SelfCheck: Database status OK.") for i in range(3)]
    events.append(line(3 * 3600, "<30>Nov 29 10:00:00 mail1 clamd[2321]: Listening daemon"))
    alerts = run(events, timer_until=2 * 3600 + 6 * 3600 + 120)
    silent = [a for a in alerts if a.rule.name == "av_source_silent"]
    assert len(silent) == 1  # the non-AV line does not keep the antivirus source alive
    assert silent[0].group == {"observer.ip": "192.0.2.1", "observer.product": "ClamAV"}


def test_av_source_silent_quiet_while_freshclam_keeps_checking() -> None:
    events = [
        line(
            i * 7200,
            "<30>Nov 29 10:00:00 mail1 freshclam[1207]: daily.cld database is "
            "up-to-date (version: 27480, sigs: 2069541, f-level: 90, builder: raynman)",
        )
        for i in range(6)
    ]
    assert "av_source_silent" not in fired(run(events, timer_until=5 * 7200 + 3600))


SIGMAHQ_STYLE_AV_RULE = """
title: EICAR test file seen by antivirus
id: 6f0e1c9a-2b7d-4c55-9d4e-1f3a8b2c7d60
status: test
logsource:
  category: antivirus
detection:
  selection:
    Signature|contains: eicar
    Filename|endswith: .com
  condition: selection
level: high
"""


def test_a_sigmahq_style_antivirus_rule_reads_our_fields(tmp_path: Path) -> None:
    rs = rules_from(tmp_path, eicar=SIGMAHQ_STYLE_AV_RULE)
    assert not rs.failures
    hits = run([line(0, DEFENDER.format(id="1116")), line(1, CLAM + "/x/e.com: Win.Trojan.A FOUND"),
                line(2, SEP.format(act="Deleted"))], rules=rs)  # fmt: skip
    assert [a.rule.title for a in hits] == ["EICAR test file seen by antivirus"] * 2


def test_silent_source_fires_after_15_minutes_of_silence() -> None:
    events = [device(i * 60, "other", message="tick") for i in range(5)]
    assert "silent_source" in fired(run(events, timer_until=4 * 60 + 16 * 60))


def test_silent_source_quiet_while_the_device_keeps_logging() -> None:
    events = [device(i * 60, "other", message="tick") for i in range(30)]
    assert "silent_source" not in fired(run(events, timer_until=29 * 60 + 60))


def _rate(per_bucket: list[int]) -> list[Event]:
    out = []
    for b, n in enumerate(per_bucket):
        out.extend(device(b * 300 + i * (299 / max(n, 1)), "other", message="x") for i in range(n))
    return out


def test_log_rate_spike_fires_far_above_the_baseline() -> None:
    assert "log_rate_spike" in fired(
        run(_rate([20, 22, 18, 21, 19, 20, 23, 20, 19, 21, 20, 22, 20, 400]))
    )


def test_log_rate_spike_quiet_at_the_usual_rate() -> None:
    assert "log_rate_spike" not in fired(
        run(_rate([20, 22, 18, 21, 19, 20, 23, 20, 19, 21, 20, 22, 20, 24]))
    )


# Input-only rules (informational, no incident of their own): what they match and what not.
BASE: dict[str, tuple[Event, Event]] = {
    "ssh_auth_failure": (ssh(0, "192.0.2.1"), ssh(0, "192.0.2.1", ok=True)),
    "ssh_auth_success": (ssh(0, "192.0.2.1", ok=True), ssh(0, "192.0.2.1")),
    "netdev_login_failure": (
        auth(0, "login", "192.0.2.1", "admin", False, **{"observer.vendor": "Cisco"}),
        auth(0, "login", "192.0.2.1", "admin", True, **{"observer.vendor": "Cisco"}),
    ),
    "vpn_auth_failure": (
        auth(0, "vpn_login", "192.0.2.1", "u", False),
        auth(0, "login", "192.0.2.1", "u", False),
    ),
    "vpn_auth_success": (
        auth(0, "vpn_login", "192.0.2.1", "u", True),
        auth(0, "vpn_login", "192.0.2.1", "u", False),
    ),
    "firewall_deny": (fw(0, "1.1.1.1", "10.0.0.1", 80), fw(0, "1.1.1.1", "10.0.0.1", 80, "allow")),
    "firewall_connection": (
        fw(0, "1.1.1.1", "10.0.0.1", 80, "allow"),
        flow(0, "1.1.1.1", "10.0.0.1", 80),  # flows are not firewall logs
    ),
    "flow_record": (flow(0, "1.1.1.1", "10.0.0.1", 80), fw(0, "1.1.1.1", "10.0.0.1", 80)),
    "flow_outbound": (flow(0, "10.1.1.1", "8.8.8.8", 53), flow(0, "8.8.8.8", "10.1.1.1", 53)),
    "ids_alert_any": (ids(0, "1.1.1.1", "10.0.0.1", 3), fw(0, "1.1.1.1", "10.0.0.1", 80)),
    "interface_down": (device(0, "linkDown", "snmp"), device(0, "linkUp", "snmp")),
    "interface_up": (device(0, "interface_up"), device(0, "interface_down")),
    "silent_source": (device(0, "x"), device(0, "x", "netflow")),
    "log_rate_spike": (device(0, "x"), device(0, "x", "snmp")),
    # What the intel enrichment stage stamps on a flow from a listed address (tests/test_intel.py
    # runs the stage itself); the same flow without a hit raises nothing.
    # What the baseline stage stamps (tests/test_baselines.py runs the stage itself).
    "baseline_rate_anomaly": (
        stamped(
            device(0, "x"),
            {"baseline.rate.kind": "device", "baseline.rate.key": "10.0.0.1"},
        ),
        device(0, "x"),
    ),
    "baseline_new_term": (
        stamped(
            ssh(0, "192.0.2.1", ok=True),
            {"baseline.new_term.kind": "user_per_host", "baseline.new_term.value": "root"},
        ),
        ssh(0, "192.0.2.1", ok=True),
    ),
    "intel_indicator_match": (
        intel_hit(flow(0, "203.0.113.9", "10.0.0.1", 443)),
        flow(0, "203.0.113.9", "10.0.0.1", 443),
    ),
}


@pytest.mark.parametrize("name", sorted(BASE))
def test_input_rule_matches_its_event_and_not_the_other(name: str) -> None:
    eng = Engine(builtin())
    yes, no = BASE[name]
    assert name in {d.meta.name for d in eng.matches(yes)}
    assert name not in {d.meta.name for d in eng.matches(no)}


def test_every_builtin_rule_has_a_scenario() -> None:
    rs = builtin()
    covered = set(ALERTING) | set(BASE) | {"silent_source", "log_rate_spike", "av_source_silent"}
    intermediate = {"ssh_failures_before_success", "netdev_failures_before_success", "link_down_up"}
    names = {r.meta.name for r in [*rs.detections, *rs.correlations]}
    assert not rs.failures
    assert len(names) >= 30
    assert names - covered - intermediate == set()


def test_ssh_brute_force_from_real_corpus_lines() -> None:
    """Real sshd lines (OpenSSH loghub corpus): field extraction here is the test's own."""
    import re

    from tests.conftest import corpus_dir

    path = corpus_dir("syslog") / "openssh_loghub.log"
    rx = re.compile(r"Failed password for (?:invalid user )?(\S+) from (\S+) port (\d+)")
    events = []
    for i, line in enumerate(path.read_text().splitlines()):
        m = rx.search(line)
        if m:
            e = ssh(i * 0.5, m.group(2), m.group(1), port=int(m.group(3)))
            e.raw = line.encode()
            events.append(e)
    assert len(events) > 100
    alerts = [a for a in run(events) if a.rule.name == "ssh_brute_force"]
    assert alerts
    assert {a.group["source.ip"] for a in alerts} <= {e.fields["source.ip"] for e in events}
    assert all(a.samples and "Failed password" in a.samples[0] for a in alerts)
