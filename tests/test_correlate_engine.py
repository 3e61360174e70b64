"""Correlation types, windows on event time, limits and snapshots of the streaming engine."""

from __future__ import annotations

import json
from pathlib import Path

from appliance.correlate import Engine, Limits
from appliance.event import Event
from tests.ruletools import (
    T0,
    auth,
    builtin,
    detection,
    device,
    ev,
    fired,
    flow,
    fw,
    rules_from,
    run,
    ssh,
)


def corr(
    name: str, ctype: str, rules: list[str], group: list[str], span: str, cond: str, extra: str = ""
) -> str:
    return (
        f"title: {name}\nname: {name}\nstatus: test\nlevel: high\n"
        f"correlation:\n  type: {ctype}\n  rules: {json.dumps(rules)}\n"
        f"  group-by: {json.dumps(group)}\n  timespan: {span}\n  condition: {cond}\n{extra}"
    )


def test_value_avg_fires_on_average_over_threshold(tmp_path: Path) -> None:
    rs = rules_from(
        tmp_path,
        b=detection(1, "flows", "flow"),
        c=corr(
            "big_avg",
            "value_avg",
            ["flows"],
            ["source.ip"],
            "10m",
            "{gte: 1000, field: network.bytes}",
        ),
    )

    def mk(dt: float, n: int) -> Event:
        return ev(dt, {"event.action": "flow", "source.ip": "10.0.0.1", "network.bytes": n})

    assert "big_avg" in fired(run([mk(0, 500), mk(1, 1600)], rs))
    assert "big_avg" not in fired(run([mk(0, 500), mk(1, 1400)], rs))


def test_temporal_fires_in_any_order_within_window(tmp_path: Path) -> None:
    rs = rules_from(
        tmp_path,
        a=detection(1, "a", "alpha"),
        b=detection(2, "b", "beta"),
        c=corr("both", "temporal", ["a", "b"], ["source.ip"], "1m", "{gte: 2}"),
    )
    mk = lambda dt, act: ev(dt, {"event.action": act, "source.ip": "1.1.1.1"})  # noqa: E731
    assert "both" in fired(run([mk(0, "beta"), mk(30, "alpha")], rs))
    assert "both" not in fired(run([mk(0, "beta"), mk(90, "alpha")], rs))


def test_temporal_ordered_needs_the_order(tmp_path: Path) -> None:
    rs = rules_from(
        tmp_path,
        a=detection(1, "a", "alpha"),
        b=detection(2, "b", "beta"),
        c=corr("seq", "temporal_ordered", ["a", "b"], ["source.ip"], "1m", "{gte: 2}"),
    )
    mk = lambda dt, act: ev(dt, {"event.action": act, "source.ip": "1.1.1.1"})  # noqa: E731
    assert "seq" in fired(run([mk(0, "alpha"), mk(30, "beta")], rs))
    assert "seq" not in fired(run([mk(0, "beta"), mk(30, "alpha")], rs))


def test_group_by_keeps_groups_apart() -> None:
    events = [ssh(i, f"203.0.113.{i % 2}") for i in range(18)]  # 9 per source
    assert "ssh_brute_force" not in fired(run(events))


def test_correlation_of_correlations_link_flapping_groups_by_interface() -> None:
    events = []
    for i in range(3):
        events.append(
            device(i * 100, "interface_down", **{"observer.ingress.interface.name": "Gi1"})
        )
        events.append(
            device(i * 100 + 5, "interface_up", **{"observer.ingress.interface.name": "Gi1"})
        )
    alerts = [a for a in run(events) if a.rule.name == "link_flapping"]
    assert len(alerts) == 1
    assert alerts[0].group == {"observer.ip": "10.0.0.1", "observer.ingress.interface.name": "Gi1"}
    assert len(alerts[0].event_ids) == 6  # evidence reaches down to the events


def test_aliases_join_differently_named_fields(tmp_path: Path) -> None:
    rs = rules_from(
        tmp_path,
        a=detection(1, "scan", "scan"),
        b=detection(2, "login", "login"),
        c=corr(
            "scan_then_login",
            "temporal_ordered",
            ["scan", "login"],
            ["ip"],
            "5m",
            "{gte: 2}",
            "  aliases:\n    ip:\n      scan: destination.ip\n      login: source.ip\n",
        ),
    )
    events = [
        ev(0, {"event.action": "scan", "destination.ip": "9.9.9.9"}),
        ev(10, {"event.action": "login", "source.ip": "9.9.9.9"}),
    ]
    alerts = [a for a in run(events, rs) if a.rule.name == "scan_then_login"]
    assert alerts and alerts[0].group == {"ip": "9.9.9.9"}


def test_window_follows_event_time_not_arrival() -> None:
    """Ten failures that arrive together but span 6 minutes of event time do not fire."""
    eng = Engine(builtin())
    alerts = []
    for i in range(10):
        e = ssh(i * 40, "203.0.113.9")
        alerts += eng.observe(e, T0 + 1000)  # all processed at the same wall time
    assert "ssh_brute_force" not in fired(alerts)


def test_out_of_order_within_lateness_still_counts() -> None:
    events = [ssh(i * 10, "203.0.113.9") for i in range(10)]
    events[3], events[7] = events[7], events[3]
    assert "ssh_brute_force" in fired(run(events))


def test_events_older_than_the_watermark_are_counted_late_not_correlated() -> None:
    eng = Engine(builtin(), Limits(allowed_lateness=60))
    eng.observe(ssh(1000, "198.51.100.1"), T0 + 1000)
    for i in range(10):
        eng.observe(ssh(i, "203.0.113.9"), T0 + 1000)
    assert eng.late_events == 10
    assert not eng.correlations[_id("ssh_brute_force")].groups.get(("203.0.113.9",))


def test_future_event_time_is_clamped_to_now_plus_lateness() -> None:
    eng = Engine(builtin(), Limits(allowed_lateness=60))
    eng.observe(ssh(10**6, "198.51.100.1"), T0)  # device clock years ahead
    assert eng.newest == T0 + 60


def test_groups_are_bounded_and_evictions_counted() -> None:
    eng = Engine(builtin(), Limits(max_groups=100))
    for i in range(1000):
        eng.observe(ssh(i * 0.01, f"10.{i // 250}.{i % 250}.1"), T0 + i * 0.01)
    rt = eng.correlations[_id("ssh_brute_force")]
    assert len(rt.groups) == 100
    assert rt.evicted == 900


def test_cooldown_suppresses_repeat_hits_but_returns_them_marked() -> None:
    events = [ssh(i, "203.0.113.9") for i in range(30)]
    alerts = [a for a in run(events) if a.rule.name == "ssh_brute_force"]
    assert [a.suppressed for a in alerts] == [False, True, True]


def test_snapshot_restore_continues_a_window() -> None:
    eng = Engine(builtin())
    for i in range(6):
        eng.observe(ssh(i, "203.0.113.9"), T0 + i)
    snap = json.loads(json.dumps(eng.snapshot()))
    eng2 = Engine(builtin())
    eng2.restore(snap)
    alerts = []
    for i in range(6, 10):
        alerts += eng2.observe(ssh(i, "203.0.113.9"), T0 + i)
    assert "ssh_brute_force" in fired(alerts)


def test_absence_deadline_is_reported_and_fires_once() -> None:
    eng = Engine(builtin())
    eng.observe(device(0, "x"), T0)
    assert eng.next_deadline() == T0 + 900
    assert not eng.on_timer(T0 + 899)
    first = eng.on_timer(T0 + 900)
    assert [a.rule.name for a in first] == ["silent_source"]
    assert not eng.on_timer(T0 + 5000)


def test_absence_rearms_when_the_source_returns() -> None:
    eng = Engine(builtin())
    eng.observe(device(0, "x"), T0)
    eng.on_timer(T0 + 900)
    eng.observe(device(1000, "x"), T0 + 1000)
    assert [a.rule.name for a in eng.on_timer(T0 + 1900)] == ["silent_source"]


def test_unrelated_traffic_creates_no_correlation_state() -> None:
    eng = Engine(builtin())
    for i in range(100):
        eng.observe(ev(i, {"message": "kernel: eth0 up", "process.name": "kernel"}), T0 + i)
    assert eng.tracked_groups() == 0


def test_flow_and_firewall_scans_are_separate() -> None:
    events = [flow(i, "10.1.1.66", "10.2.0.1", 1 + i, 60) for i in range(25)]
    events += [fw(i, "10.1.1.66", "10.2.0.1", 1 + i) for i in range(25)]
    got = fired(run(events))
    assert "firewall_vertical_port_scan" in got
    assert "flow_vertical_port_scan" not in got  # 25 < 50 flows


def test_vpn_spray_counts_distinct_users_only() -> None:
    events = [auth(i, "vpn_login", "2.4.6.8", "same", False) for i in range(20)]
    assert "vpn_password_spray" not in fired(run(events))


def _id(name: str) -> str:
    for r in [*builtin().detections, *builtin().correlations]:
        if r.meta.name == name:
            return r.meta.id
    raise KeyError(name)


def test_restart_restarts_silent_source_timers_from_now() -> None:
    eng = Engine(builtin())
    eng.observe(device(0, "x"), T0)
    snap = json.loads(json.dumps(eng.snapshot()))
    eng2 = Engine(builtin())
    eng2.restore(snap, now=T0 + 3600)  # down for an hour
    assert not eng2.on_timer(T0 + 3600)
    assert eng2.next_deadline() is not None
    assert [a.rule.name for a in eng2.on_timer(T0 + 3600 + 900)] == ["silent_source"]


def test_snapshot_keeps_few_raw_samples_per_group() -> None:
    eng = Engine(builtin())
    for i in range(9):
        eng.observe(ssh(i, "203.0.113.9"), T0 + i)
    (group,) = eng.snapshot()["correlations"][_id("ssh_brute_force")]
    entries = group[1]
    assert len(entries) == 9
    assert sum(1 for e in entries if e[2]) == 3


def test_events_missing_a_group_by_field_are_not_grouped() -> None:
    events = [ssh(i, "203.0.113.9") for i in range(10)]
    for e in events:
        del e.fields["source.ip"]
    assert "ssh_brute_force" not in fired(run(events))


def test_link_flaps_without_interface_names_group_by_device() -> None:
    events = []
    for i in range(3):
        events.append(device(i * 100, "linkDown", "snmp"))
        events.append(device(i * 100 + 5, "linkUp", "snmp"))
    alerts = [a for a in run(events) if a.rule.name == "link_flapping"]
    assert [a.group for a in alerts] == [
        {"observer.ip": "10.0.0.1", "observer.ingress.interface.name": None}
    ]


def test_nan_event_time_falls_back_to_now() -> None:
    eng = Engine(builtin())
    e = ssh(0, "203.0.113.9")
    e.timestamp = float("nan")
    eng.observe(e, T0 + 5)
    assert eng.newest == T0 + 5
