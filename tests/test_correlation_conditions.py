"""Correlation conditions beyond one comparison: boolean conditions over the referenced rules
(temporal, temporal_ordered), ranges (several comparisons ANDed), value_count over several
fields; and what ``appliance rules check`` says about them."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from appliance.cli import main
from appliance.correlate import Engine
from appliance.event import Event
from tests.ruletools import detection, ev, fired, rules_from, run
from tests.test_correlate_engine import corr
from tests.test_syslog_udp import send_udp


def step(dt: float, action: str, user: str = "alice", **extra: object) -> Event:
    return ev(dt, {"event.action": action, "user.name": user, **extra})


def steps(**names: int) -> dict[str, str]:
    """Base detections named after the actions they select (``a`` selects ``event.action: a``)."""
    return {f"base_{name}": detection(n, name, name) for name, n in names.items()}


def boolean(name: str, ctype: str, cond: str, rules: list[str] | None = None) -> str:
    listed = f"  rules: {json.dumps(rules)}\n" if rules is not None else ""
    return (
        f"title: {name}\nname: {name}\nstatus: test\nlevel: high\n"
        f"correlation:\n  type: {ctype}\n{listed}  group-by: [user.name]\n  timespan: 5m\n"
        f"  condition: {cond}\n"
    )


# --------------------------------------------------------------------- boolean, temporal


def test_a_boolean_temporal_condition_fires_when_its_expression_holds(tmp_path: Path) -> None:
    rs = rules_from(
        tmp_path,
        **steps(a=1, b=2, c=3),
        c=boolean("abc", "temporal", "a and (b or not c)", ["a", "b", "c"]),
    )
    assert not rs.failures
    assert "abc" in fired(run([step(0, "b"), step(10, "a")], rs))  # a and b
    assert "abc" in fired(run([step(0, "a")], rs))  # a and not c
    assert "abc" in fired(run([step(0, "c"), step(5, "b"), step(10, "a")], rs))  # a, b, c


def test_a_boolean_temporal_condition_stays_quiet_when_its_expression_does_not_hold(
    tmp_path: Path,
) -> None:
    rs = rules_from(
        tmp_path,
        **steps(a=1, b=2, c=3),
        c=boolean("abc", "temporal", "a and (b or not c)", ["a", "b", "c"]),
    )
    assert "abc" not in fired(run([step(0, "c"), step(10, "a")], rs))  # a and c, no b
    assert "abc" not in fired(run([step(0, "b"), step(10, "c")], rs))  # no a
    # a and b five minutes apart are not in one window: a meets c only.
    assert "abc" not in fired(run([step(0, "b"), step(100, "c"), step(400, "a")], rs))


def test_not_means_the_rule_did_not_occur_in_the_timespan_before(tmp_path: Path) -> None:
    rs = rules_from(
        tmp_path,
        **steps(login=1, vpn=2),
        c=boolean("no_vpn", "temporal", "login and not vpn", ["login", "vpn"]),
    )
    assert "no_vpn" not in fired(run([step(0, "vpn"), step(60, "login")], rs))
    assert "no_vpn" in fired(run([step(0, "vpn"), step(301, "login")], rs))  # vpn aged out
    assert "no_vpn" in fired(run([step(0, "vpn", user="bob"), step(60, "login")], rs))


def test_a_boolean_condition_without_a_rules_list_takes_its_rules_from_the_expression(
    tmp_path: Path,
) -> None:
    rs = rules_from(tmp_path, **steps(a=1, b=2), c=boolean("ab", "temporal", "a and b"))
    (c,) = rs.correlations
    assert [r.meta.name for r in rs.detections if r.meta.id in c.refs] == ["a", "b"]
    assert "ab" in fired(run([step(0, "a"), step(1, "b")], rs))
    assert "ab" not in fired(run([step(0, "a"), step(1, "a")], rs))


def test_the_incident_says_which_rules_occurred_and_which_were_absent(tmp_path: Path) -> None:
    rs = rules_from(
        tmp_path,
        **steps(a=1, b=2, c=3),
        c=boolean("abc", "temporal", "a and (b or not c)", ["a", "b", "c"]),
    )
    (alert,) = [a for a in run([step(0, "b"), step(10, "a")], rs) if a.rule.name == "abc"]
    assert alert.detail["condition"] == "a and (b or not c)"
    assert alert.detail["occurred"] == ["a", "b"] and alert.detail["absent"] == ["c"]
    assert alert.detail["timespan"] == 300.0
    assert len(alert.event_ids) == 2  # the evidence: the events of a and b


# -------------------------------------------------------------- boolean, temporal_ordered


def test_an_ordered_boolean_condition_fires_on_its_rules_in_list_order(tmp_path: Path) -> None:
    rs = rules_from(
        tmp_path,
        **steps(fail=1, ok=2, mfa=3),
        c=boolean("no_mfa", "temporal_ordered", "fail and ok and not mfa", ["fail", "ok", "mfa"]),
    )
    assert "no_mfa" in fired(run([step(0, "fail"), step(30, "ok")], rs))


def test_an_ordered_boolean_condition_ignores_the_wrong_order_and_negated_rules(
    tmp_path: Path,
) -> None:
    rs = rules_from(
        tmp_path,
        **steps(fail=1, ok=2, mfa=3),
        c=boolean("no_mfa", "temporal_ordered", "fail and ok and not mfa", ["fail", "ok", "mfa"]),
    )
    assert "no_mfa" not in fired(run([step(0, "ok"), step(30, "fail")], rs))
    assert "no_mfa" not in fired(run([step(0, "fail"), step(10, "mfa"), step(30, "ok")], rs))
    assert "no_mfa" not in fired(run([step(0, "fail"), step(301, "ok")], rs))


def test_an_ordered_or_takes_either_branch_in_order(tmp_path: Path) -> None:
    rs = rules_from(
        tmp_path,
        **steps(scan=1, exploit=2, login=3),
        c=boolean(
            "chain",
            "temporal_ordered",
            "scan and (exploit or login)",
            ["scan", "exploit", "login"],
        ),
    )
    assert "chain" in fired(run([step(0, "scan"), step(9, "login")], rs))
    assert "chain" in fired(run([step(0, "scan"), step(9, "exploit")], rs))
    assert "chain" not in fired(run([step(0, "login"), step(9, "scan")], rs))


def test_an_ordered_boolean_window_survives_a_snapshot(tmp_path: Path) -> None:
    rs = rules_from(
        tmp_path,
        **steps(fail=1, ok=2, mfa=3),
        c=boolean("no_mfa", "temporal_ordered", "fail and ok and not mfa", ["fail", "ok", "mfa"]),
    )
    before = Engine(rs)
    first = step(0, "fail")
    assert "no_mfa" not in fired(before.observe(first, first.timestamp))
    restored = Engine(rs)
    restored.restore(json.loads(json.dumps(before.snapshot())))
    then = step(30, "ok")
    assert "no_mfa" in fired(restored.observe(then, then.timestamp))


# ----------------------------------------------------------------------------- ranges


def avg_range() -> str:
    return corr(
        "mid_avg",
        "value_avg",
        ["flows"],
        ["source.ip"],
        "10m",
        "{gte: 100, lte: 200, field: network.bytes}",
    )


def flows(*sizes: int, src: str = "10.0.0.1") -> list[Event]:
    return [
        ev(i, {"event.action": "flow", "source.ip": src, "network.bytes": n})
        for i, n in enumerate(sizes)
    ]


def test_a_range_condition_fires_inside_the_range(tmp_path: Path) -> None:
    rs = rules_from(tmp_path, b=detection(1, "flows", "flow"), c=avg_range())
    assert not rs.failures
    (alert,) = [a for a in run(flows(150), rs) if a.rule.name == "mid_avg"]
    assert alert.detail["condition"] == {"gte": 100.0, "lte": 200.0}
    assert "mid_avg" in fired(run(flows(100), rs)) and "mid_avg" in fired(run(flows(200), rs))


def test_a_range_condition_stays_quiet_outside_the_range(tmp_path: Path) -> None:
    rs = rules_from(tmp_path, b=detection(1, "flows", "flow"), c=avg_range())
    assert "mid_avg" not in fired(run(flows(50, 90), rs))  # below
    assert "mid_avg" not in fired(run(flows(5000, 300), rs))  # above
    assert "mid_avg" not in fired(run(flows(99), rs))
    assert "mid_avg" not in fired(run(flows(201), rs))


def test_a_temporal_range_counts_the_distinct_rules_seen(tmp_path: Path) -> None:
    rs = rules_from(
        tmp_path,
        **steps(a=1, b=2, c=3),
        c=corr("two", "temporal", ["a", "b", "c"], ["user.name"], "5m", "{gte: 2, lte: 2}"),
    )
    assert "two" in fired(run([step(0, "a"), step(1, "c")], rs))
    assert "two" not in fired(run([step(0, "a"), step(1, "a")], rs))


def test_an_empty_range_is_refused_with_the_reason(tmp_path: Path) -> None:
    rs = rules_from(
        tmp_path,
        b=detection(1, "flows", "flow"),
        c=corr("never", "value_sum", ["flows"], ["source.ip"], "1m", "{gt: 10, lt: 5, field: x.y}"),
    )
    (failure,) = rs.failures
    assert failure.title == "never"
    assert failure.reason == "the condition's comparisons (gt: 10 and lt: 5) are never all true"


def test_a_range_with_a_value_that_is_not_a_number_fails_with_the_reason(tmp_path: Path) -> None:
    rs = rules_from(
        tmp_path,
        b=detection(1, "flows", "flow"),
        c=corr("bad", "value_sum", ["flows"], ["source.ip"], "1m", "{gt: 1, lt: lots, field: x.y}"),
    )
    (failure,) = rs.failures
    assert failure.title == "bad" and failure.reason == "condition lt: 'lots' is not a number"


def test_a_range_in_a_file_leaves_its_other_rules_loaded(tmp_path: Path) -> None:
    (tmp_path / "both.yml").write_text(detection(1, "flows", "flow") + "---\n" + avg_range())
    rs = rules_from(tmp_path)
    assert not rs.failures
    assert [d.meta.name for d in rs.detections] == ["flows"]
    assert [c.meta.name for c in rs.correlations] == ["mid_avg"]


# ------------------------------------------------------------ value_count, several fields


def test_value_count_over_several_fields_counts_their_distinct_combinations(
    tmp_path: Path,
) -> None:
    rs = rules_from(
        tmp_path,
        b=detection(1, "logins", "login"),
        c=corr(
            "spray",
            "value_count",
            ["logins"],
            ["source.ip"],
            "10m",
            "{gte: 3, field: [user.name, host.name]}",
        ),
    )
    assert not rs.failures

    def login(dt: float, user: str, host: str | None) -> Event:
        f = {"event.action": "login", "source.ip": "10.0.0.9", "user.name": user}
        return ev(dt, f if host is None else {**f, "host.name": host})

    pairs = [login(0, "a", "h1"), login(1, "a", "h2"), login(2, "b", "h1")]
    assert "spray" in fired(run(pairs, rs))
    repeats = [login(0, "a", "h1"), login(1, "a", "h1"), login(2, "b", None)]
    assert "spray" not in fired(run(repeats, rs))


# ------------------------------------------------------------------------ what is refused


def test_a_condition_that_can_never_hold_is_refused(tmp_path: Path) -> None:
    rs = rules_from(
        tmp_path,
        **steps(a=1, b=2),
        c=boolean("never", "temporal", "(a and not a) or (b and not b)"),
    )
    (failure,) = rs.failures
    assert "can never be true" in failure.reason


def test_a_listed_rule_missing_from_the_condition_fails_that_rule_only(tmp_path: Path) -> None:
    (tmp_path / "both.yml").write_text(
        detection(1, "a", "a") + "---\n" + boolean("ab", "temporal", "a", ["a", "b"])
    )
    rs = rules_from(tmp_path)
    (failure,) = rs.failures
    assert failure.title == "ab" and "not referenced in extended condition: b" in failure.reason
    assert [d.meta.name for d in rs.detections] == ["a"]


def test_rules_check_reports_boolean_and_range_conditions_as_loaded(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    for name, text in {
        **steps(a=1, b=2, c=3),
        "base_flows": detection(4, "flows", "flow"),
        "temporal": boolean("abc", "temporal", "a and (b or not c)", ["a", "b", "c"]),
        "ordered": boolean("seq", "temporal_ordered", "a and b and not c", ["a", "b", "c"]),
        "range": avg_range(),
    }.items():
        (tmp_path / f"{name}.yml").write_text(text)
    assert main(["rules", "check", str(tmp_path), "--json"]) == 0
    rows = {Path(r["path"]).stem: r for r in map(json.loads, capsys.readouterr().out.splitlines())}
    assert rows["temporal"]["status"] == "ok" and rows["temporal"]["kind"] == "temporal"
    assert rows["ordered"]["status"] == "ok" and rows["ordered"]["kind"] == "temporal_ordered"
    assert rows["range"]["status"] == "ok" and rows["range"]["kind"] == "value_avg"


def test_rules_check_says_why_pysigma_cannot_read_upper_case_operators(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    for name, text in {
        **steps(a=1, b=2),
        "upper": boolean("up", "temporal", "a AND NOT b"),
    }.items():
        (tmp_path / f"{name}.yml").write_text(text)
    assert main(["rules", "check", str(tmp_path), "--json"]) == 1
    (row,) = [json.loads(r) for r in capsys.readouterr().out.splitlines() if '"failed"' in r]
    assert row["title"] == "up"
    assert "lower case only: write 'a and not b'" in row["reason"]


def test_rules_check_says_why_a_rule_id_cannot_appear_in_a_boolean_condition(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    uid = "9a1c0f3e-0000-4000-8000-000000000001"
    (tmp_path / "base_a.yml").write_text(detection(1, "a", "a"))
    (tmp_path / "by_id.yml").write_text(boolean("ids", "temporal", f"{uid} and a", [uid, "a"]))
    assert main(["rules", "check", str(tmp_path), "--json"]) == 1
    (row,) = [json.loads(r) for r in capsys.readouterr().out.splitlines() if '"failed"' in r]
    assert f"'{uid}' cannot appear in it: give that rule such a name:" in row["reason"]


def test_a_window_snapshotted_before_the_condition_changed_restores_empty(
    tmp_path: Path,
) -> None:
    plain = rules_from(
        tmp_path,
        **steps(fail=1, ok=2, mfa=3),
        c=corr("seq", "temporal_ordered", ["fail", "ok", "mfa"], ["user.name"], "5m", "{gte: 3}"),
    )
    before = Engine(plain)
    first = step(0, "fail")
    before.observe(first, first.timestamp)
    snap = json.loads(json.dumps(before.snapshot()))
    changed = rules_from(
        tmp_path,
        c=boolean("seq", "temporal_ordered", "fail and ok and not mfa", ["fail", "ok", "mfa"]),
    )
    (seq,) = changed.correlations
    after = Engine(changed)
    after.restore(snap)
    assert after.correlations[seq.meta.id].dropped_on_restore == 1
    then = step(30, "ok")
    assert "seq" not in fired(after.observe(then, then.timestamp))  # the fail was not kept


async def test_a_restart_after_the_condition_changed_counts_the_windows_it_drops(
    start_appliance: Any, tmp_path: Path
) -> None:
    from appliance.correlate.component import CorrelationComponent

    rules = tmp_path / "rules"
    rules.mkdir()
    for n, word in ((1, "alpha"), (2, "beta")):
        (rules / f"{word}.yml").write_text(
            f"title: {word}\nid: 3b6d3c36-1f7e-4d4b-9d54-7d3c0b8f0a0{n}\nname: {word}\n"
            "status: test\nlogsource: {product: linux, service: sshd}\n"
            f"detection:\n  keywords: ['STEP-{word.upper()}']\n  condition: keywords\n"
        )
    seq = rules / "seq.yml"
    seq.write_text(
        corr("seq", "temporal_ordered", ["alpha", "beta"], ["host.hostname"], "1h", "{gte: 2}")
    )
    first = await start_appliance(rules={"paths": ["rules"], "builtin": False})
    send_udp(first.source().address, b"<38>Nov 29 10:00:00 LabSZ sshd[1]: STEP-ALPHA")
    comp = next(c for c in first.app.components if isinstance(c, CorrelationComponent))
    await first.wait_for(lambda: any(rt.groups for rt in comp.engine.correlations.values()))
    await first.app.stop()  # saves the windows

    seq.write_text(boolean("seq", "temporal_ordered", "alpha and beta", ["alpha", "beta"]))
    second = await start_appliance(rules={"paths": ["rules"], "builtin": False})
    metrics = await second.metrics()
    assert 'appliance_correlation_errors_total{reason="snapshot_window_dropped"} 1' in metrics
