"""Sigma detection semantics as the engine evaluates them (pySigma parses, we match)."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from appliance.correlate import Engine, load_rules
from appliance.event import Event
from tests.conftest import corpus_dir
from tests.ruletools import T0

HEAD = """\
title: t
id: 0b6d3c36-1f7e-4d4b-9d54-7d3c0b8f0a01
status: test
logsource: {product: appliance}
level: high
"""


def engine_for(tmp_path: Path, detection: str, **kw: int) -> Engine:
    (tmp_path / "r.yml").write_text(HEAD + "detection:\n" + textwrap.indent(detection, "  "))
    rs = load_rules([tmp_path], builtin=False, **kw)
    assert not rs.failures, rs.failures
    return Engine(rs)


def hit(engine: Engine, fields: dict) -> bool:
    return bool(engine.matches(Event(T0, T0, "syslog", fields)))


def test_plain_string_matches_case_insensitively(tmp_path: Path) -> None:
    e = engine_for(tmp_path, "sel: {user.name: Admin}\ncondition: sel")
    assert hit(e, {"user.name": "ADMIN"})
    assert not hit(e, {"user.name": "admins"})


def test_cased_modifier_matches_case_sensitively(tmp_path: Path) -> None:
    e = engine_for(tmp_path, "sel: {user.name|cased: Admin}\ncondition: sel")
    assert hit(e, {"user.name": "Admin"})
    assert not hit(e, {"user.name": "admin"})


def test_wildcards_and_single_char(tmp_path: Path) -> None:
    e = engine_for(tmp_path, "sel: {message: 'fail?d *for*root'}\ncondition: sel")
    assert hit(e, {"message": "FAILED password for ROOT"})
    assert not hit(e, {"message": "failed password for admin"})


def test_contains_all_needs_every_value(tmp_path: Path) -> None:
    e = engine_for(tmp_path, "sel: {message|contains|all: [password, invalid]}\ncondition: sel")
    assert hit(e, {"message": "Failed password for invalid user x"})
    assert not hit(e, {"message": "Failed password for root"})


def test_startswith_endswith(tmp_path: Path) -> None:
    e = engine_for(
        tmp_path,
        "a: {host.hostname|startswith: fw-}\nb: {host.hostname|endswith: .lan}\ncondition: a and b",
    )
    assert hit(e, {"host.hostname": "FW-1.LAN"})
    assert not hit(e, {"host.hostname": "sw-1.lan"})


def test_list_of_values_is_or_and_list_field_matches_any_item(tmp_path: Path) -> None:
    e = engine_for(tmp_path, "sel: {event.type: [denied, blocked]}\ncondition: sel")
    assert hit(e, {"event.type": ["connection", "denied"]})
    assert not hit(e, {"event.type": ["connection", "allowed"]})


def test_null_matches_missing_or_empty_field(tmp_path: Path) -> None:
    e = engine_for(tmp_path, "sel: {user.name: null}\ncondition: sel")
    assert hit(e, {})
    assert hit(e, {"user.name": ""})
    assert not hit(e, {"user.name": "x"})


def test_exists_modifier(tmp_path: Path) -> None:
    e = engine_for(tmp_path, "sel: {source.ip|exists: false}\ncondition: sel")
    assert hit(e, {"user.name": "x"})
    assert not hit(e, {"source.ip": "1.2.3.4"})


def test_numeric_comparisons(tmp_path: Path) -> None:
    e = engine_for(
        tmp_path, "a: {network.bytes|gte: 1000}\nb: {destination.port|lt: 1024}\ncondition: a and b"
    )
    assert hit(e, {"network.bytes": 1000, "destination.port": 22})
    assert hit(e, {"network.bytes": "5000", "destination.port": 80})
    assert not hit(e, {"network.bytes": 999, "destination.port": 22})
    assert not hit(e, {"network.bytes": "lots", "destination.port": 22})


def test_number_value_matches_int_field_and_its_text(tmp_path: Path) -> None:
    e = engine_for(tmp_path, "sel: {destination.port: 22}\ncondition: sel")
    assert hit(e, {"destination.port": 22})
    assert hit(e, {"destination.port": "22"})
    assert not hit(e, {"destination.port": 222})


def test_cidr_modifier_ipv4_and_ipv6(tmp_path: Path) -> None:
    e = engine_for(tmp_path, "sel: {source.ip|cidr: [10.0.0.0/8, 'fc00::/7']}\ncondition: sel")
    assert hit(e, {"source.ip": "10.2.3.4"})
    assert hit(e, {"source.ip": "fd00::1"})
    assert not hit(e, {"source.ip": "11.0.0.1"})
    assert not hit(e, {"source.ip": "not-an-ip"})
    assert not hit(e, {"source.ip": "::ffff:10.2.3.4"})  # an IPv6 address, not in 10/8
    assert not hit(e, {"source.ip": "fe80::1"})
    assert hit(e, {"source.ip": "10.255.255.255"})  # the same answers from the cache
    assert hit(e, {"source.ip": "10.2.3.4"}) and not hit(e, {"source.ip": "11.0.0.1"})


def test_cidr_matches_any_item_of_a_list_field_and_non_text_values(tmp_path: Path) -> None:
    e = engine_for(tmp_path, "sel: {source.ip|cidr: [10.0.0.0/8, 192.168.0.0/16]}\ncondition: sel")
    assert hit(e, {"source.ip": ["8.8.8.8", "192.168.1.1"]})
    assert not hit(e, {"source.ip": ["8.8.8.8", "1.1.1.1"]})
    assert not hit(e, {"source.ip": 167772161})  # an integer is not address text
    assert not hit(e, {"source.ip": None})
    assert not hit(e, {})


def test_cidr_answers_stay_right_when_the_memo_fills(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from appliance.correlate.compile import NetworkSet

    monkeypatch.setattr(NetworkSet, "MEMO_MAX", 4)
    e = engine_for(tmp_path, "sel: {source.ip|cidr: 10.0.0.0/8}\ncondition: not sel")
    for i in range(20):
        assert hit(e, {"source.ip": f"11.0.0.{i}"})
        assert not hit(e, {"source.ip": f"10.0.0.{i}"})
    (rule,) = e.ruleset.detections
    assert rule.predicate({"source.ip": "10.1.1.1"}) is False


def test_cidr_memo_stays_within_its_bound(monkeypatch: pytest.MonkeyPatch) -> None:
    from sigma.types import SigmaCIDRExpression

    from appliance.correlate.compile import NetworkSet

    monkeypatch.setattr(NetworkSet, "MEMO_MAX", 4)
    nets = NetworkSet([SigmaCIDRExpression("10.0.0.0/8"), SigmaCIDRExpression("fc00::/7")])
    assert [nets.contains(f"10.0.0.{i}") for i in range(50)] == [True] * 50
    assert nets.contains("fd00::1") and not nets.contains("11.0.0.1")
    assert nets.member.cache_info().currsize == 4


def test_re_modifier_uses_re2_search(tmp_path: Path) -> None:
    e = engine_for(tmp_path, "sel: {message|re: 'user (root|admin) from'}\ncondition: sel")
    assert hit(e, {"message": "Failed password for user admin from 1.2.3.4"})
    assert not hit(e, {"message": "Failed password for user bob from 1.2.3.4"})


def test_re_with_backreference_is_rejected_with_reason(tmp_path: Path) -> None:
    (tmp_path / "r.yml").write_text(
        HEAD + "detection:\n  sel: {message|re: '(a)\\1'}\n  condition: sel\n"
    )
    rs = load_rules([tmp_path], builtin=False)
    assert not rs.detections
    # pySigma's own check or our RE2 compile, whichever sees it first, names the problem.
    reason = rs.failures[0].reason
    assert "RE2" in reason or "invalid escape sequence" in reason


def test_re_longer_than_limit_is_rejected(tmp_path: Path) -> None:
    (tmp_path / "r.yml").write_text(
        HEAD + "detection:\n  sel: {message|re: 'a{1,5}bcdef'}\n  condition: sel\n"
    )
    rs = load_rules([tmp_path], builtin=False, max_regex_length=5)
    assert "max_regex_length" in rs.failures[0].reason


def test_keywords_search_the_message(tmp_path: Path) -> None:
    e = engine_for(tmp_path, "keywords: ['session opened', 'sudo:*root']\ncondition: keywords")
    assert hit(e, {"message": "pam_unix: Session Opened for user x"})
    assert not hit(e, {"message": "session closed"})


def test_one_of_and_all_of_selections_and_not(tmp_path: Path) -> None:
    e = engine_for(
        tmp_path,
        "sel_a: {user.name: a}\nsel_b: {user.name: b}\nflt: {source.ip: 10.0.0.1}\n"
        "condition: 1 of sel_* and not flt",
    )
    assert hit(e, {"user.name": "b", "source.ip": "10.0.0.2"})
    assert not hit(e, {"user.name": "b", "source.ip": "10.0.0.1"})
    e2 = engine_for(
        tmp_path, "sel_a: {user.name: a}\nsel_b: {source.ip: 1.1.1.1}\ncondition: all of sel_*"
    )
    assert hit(e2, {"user.name": "a", "source.ip": "1.1.1.1"})
    assert not hit(e2, {"user.name": "a"})


def test_base64offset_matches_encoded_text(tmp_path: Path) -> None:
    import base64

    e = engine_for(tmp_path, "sel: {message|base64offset|contains: 'bash -i'}\ncondition: sel")
    for prefix in ("", "x", "xy"):
        enc = base64.b64encode((prefix + "bash -i >& /dev/tcp").encode()).decode()
        assert hit(e, {"message": f"cmd {enc}"})
    assert not hit(e, {"message": base64.b64encode(b"ls -la").decode()})


def test_windash_expands_dash_variants(tmp_path: Path) -> None:
    e = engine_for(tmp_path, "sel: {message|windash|contains: ' -enc '}\ncondition: sel")
    assert hit(e, {"message": "powershell /enc AAAA"})
    assert not hit(e, {"message": "powershell enc AAAA"})


def test_fieldref_compares_two_fields(tmp_path: Path) -> None:
    e = engine_for(tmp_path, "sel: {source.ip|fieldref: destination.ip}\ncondition: sel")
    assert hit(e, {"source.ip": "1.1.1.1", "destination.ip": "1.1.1.1"})
    assert not hit(e, {"source.ip": "1.1.1.1", "destination.ip": "2.2.2.2"})


def test_unmapped_field_fails_the_rule_and_others_still_load(tmp_path: Path) -> None:
    (tmp_path / "bad.yml").write_text(
        HEAD + "detection:\n  sel: {CommandLine: x}\n  condition: sel\n"
    )
    (tmp_path / "good.yml").write_text(
        HEAD.replace("0a01", "0a02") + "detection:\n  sel: {user.name: x}\n  condition: sel\n"
    )
    rs = load_rules([tmp_path], builtin=False)
    assert len(rs.detections) == 1
    assert "CommandLine" in rs.failures[0].reason


def test_uncollected_logsource_fails_with_reason(tmp_path: Path) -> None:
    (tmp_path / "r.yml").write_text(
        HEAD.replace("{product: appliance}", "{product: windows, service: security}")
        + "detection:\n  sel: {user.name: x}\n  condition: sel\n"
    )
    rs = load_rules([tmp_path], builtin=False)
    assert "not collected" in rs.failures[0].reason


def test_broken_yaml_is_a_failure_not_a_crash(tmp_path: Path) -> None:
    (tmp_path / "r.yml").write_text("title: [unclosed\n")
    rs = load_rules([tmp_path], builtin=False)
    assert rs.failures and not rs.detections


def test_events_meet_only_rules_indexed_for_their_source() -> None:
    from tests.ruletools import builtin, flow, ssh

    eng = Engine(builtin())
    total = len(builtin().detections)
    assert len(eng.candidates(ssh(0, "1.2.3.4"))) < total // 3
    assert all(
        d.source.key in ("any", "module:netflow")
        for d in eng.candidates(flow(0, "1.1.1.1", "2.2.2.2", 80))
    )


@pytest.mark.corpus
def test_sigmahq_rules_load_report() -> None:
    """The SigmaHQ rules in the corpus: how many load, and why the rest do not."""
    from collections import Counter

    rs = load_rules([corpus_dir("sigma")], builtin=False)
    loaded = len(rs.detections) + len(rs.correlations)
    reasons = Counter(f.reason.split(":")[0] for f in rs.failures)
    report = f"SigmaHQ: {loaded} of {loaded + len(rs.failures)} loaded; not loaded: {dict(reasons)}"
    print(report)
    assert loaded + len(rs.failures) == 128
    # Everything for log sources we collect (network devices, firewall, linux syslog) loads.
    assert loaded >= 47, report
    # What does not load is for log sources the appliance does not collect, nothing else.
    assert all(f.reason.startswith("logsource") for f in rs.failures), report


@pytest.mark.corpus
def test_token_prefilter_never_changes_what_matches() -> None:
    """SigmaHQ keyword rules on real Linux syslog: pre-filtered matches == full evaluation."""
    from appliance.correlate.replay import decode_syslog_line

    rs = load_rules([corpus_dir("sigma")], builtin=False)
    eng = Engine(rs)
    files = ("linux_loghub.log", "openssh_loghub.log", "linux_sshd.log", "linux_su.log")
    checked = 0
    for name in files:
        for line in (corpus_dir("syslog") / name).read_bytes().splitlines():
            e = decode_syslog_line(line, "10.0.0.1", T0, "udp")
            fast = [d.meta.id for d in eng.matches(e)]
            full = [d.meta.id for d in eng.candidates(e) if d.predicate(e.fields)]
            assert fast == full, line
            checked += 1
    assert checked > 3000


def test_sigma_firewall_action_values_are_translated(tmp_path: Path) -> None:
    e = engine_for(tmp_path, "sel: {action: [accept, forward]}\ncondition: sel")
    assert hit(e, {"event.action": "allow"})
    assert not hit(e, {"event.action": "deny"})


@pytest.mark.corpus
def test_sigmahq_cleartext_protocol_rule_fires_on_an_allowed_telnet_connection() -> None:
    rs = load_rules([corpus_dir("sigma") / "network" / "firewall"], builtin=False)
    eng = Engine(rs)
    conn = {"event.category": ["network"], "destination.port": 23, "source.ip": "10.0.0.1"}
    allowed = Event(T0, T0, "syslog", {**conn, "event.action": "allow", "event.outcome": "success"})
    denied = Event(T0, T0, "syslog", {**conn, "event.action": "deny", "event.outcome": "failure"})
    assert [d.meta.title for d in eng.matches(allowed)] == ["Cleartext Protocol Usage"]
    assert eng.matches(denied) == []


@pytest.mark.parametrize(
    "line",
    [
        # OpenSSH 9.8 and later log authentication from sshd-session, not sshd
        "<38>Nov 29 10:00:00 srv1 sshd-session[4242]: Accepted publickey for root from "
        "198.51.100.7 port 50022 ssh2: ED25519 SHA256:x",
        # Dropbear, as in the shared corpus (dropbear_sshd.log)
        "<38>Jan  8 19:32:41 tp.lan dropbear[15165]: Pubkey auth succeeded for 'root' with key "
        "md5 78:d6:41:ca:78:37:80:88:1d:15:0a:68:91:d1:4e:ad from 10.10.10.241:51737",
    ],
)
def test_linux_sshd_rules_see_every_ssh_daemon_the_decoder_reads(line: str) -> None:
    """`logsource: linux/sshd` selected process.name == sshd only: ssh_login events from
    sshd-session and dropbear could never raise ssh_root_login or feed the brute-force rules."""
    from appliance.correlate.replay import decode_syslog_line
    from tests.ruletools import builtin

    ev = decode_syslog_line(line.encode(), "192.0.2.1", T0)
    assert ev.fields["event.action"] == "ssh_login"
    assert {"ssh_root_login", "ssh_auth_success"} <= {
        d.meta.name for d in Engine(builtin()).matches(ev)
    }


def test_a_service_with_several_process_names_matches_each_of_them(tmp_path: Path) -> None:
    (tmp_path / "r.yml").write_text(
        HEAD.replace("{product: appliance}", "{product: linux, service: cron}")
        + "detection:\n  sel: {message|contains: CMD}\n  condition: sel\n"
    )
    eng = Engine(load_rules([tmp_path], builtin=False))
    for proc in ("cron", "crond", "CROND"):
        ev = Event(T0, T0, "syslog", {"process.name": proc, "message": "(root) CMD (run-parts)"})
        assert eng.matches(ev), proc
    assert not eng.matches(Event(T0, T0, "syslog", {"process.name": "sshd", "message": "CMD"}))


def test_a_list_of_conditions_matches_when_any_of_them_does(tmp_path: Path) -> None:
    e = engine_for(
        tmp_path,
        "root: {user.name: root}\n"
        "fail: {event.outcome: failure}\n"
        "admin: {user.name: admin}\n"
        "condition:\n  - root and fail\n  - admin\n",
    )
    assert hit(e, {"user.name": "root", "event.outcome": "failure"})
    assert hit(e, {"user.name": "admin", "event.outcome": "success"})
    assert not hit(e, {"user.name": "root", "event.outcome": "success"})


def test_a_list_of_keyword_conditions_keeps_the_message_prefilter_exact(tmp_path: Path) -> None:
    e = engine_for(
        tmp_path,
        "a: ['segfault']\nb: ['out of memory']\ncondition:\n  - a\n  - b\n",
    )
    assert hit(e, {"message": "kernel: app[12]: segfault at 0"})
    assert hit(e, {"message": "Out of memory: Killed process 9"})
    assert not hit(e, {"message": "all good"})
