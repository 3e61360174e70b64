"""Sigma filters (meta rules that exclude events from other rules) and ``appliance rules
check``: which rules load, and why the others do not."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from appliance.cli import main
from tests.ruletools import ev, fired, rules_from, run

RULE = """\
title: Admin port connection
id: 5b0e1c7a-1111-4a4a-8b8b-000000000001
name: admin_port
status: test
logsource: {product: appliance, category: firewall}
detection:
  sel: {destination.port: 22}
  condition: sel
level: low
"""

FILTER = """\
title: The jump host is allowed to reach admin ports
id: 5b0e1c7a-1111-4a4a-8b8b-000000000002
logsource: {product: appliance, category: firewall}
filter:
  rules: [admin_port]
  jump_host: {source.ip: 10.0.0.5}
  condition: not jump_host
"""


def conn(src: str) -> object:
    return ev(
        0,
        {"event.category": ["network"], "source.ip": src, "destination.port": 22},
    )


def test_a_filter_excludes_its_matches_from_the_rule_it_names(tmp_path: Path) -> None:
    rs = rules_from(tmp_path, rule=RULE, jump=FILTER)
    assert not rs.failures
    (rule,) = rs.detections
    assert rule.filters == ["The jump host is allowed to reach admin ports"]
    assert "admin_port" not in fired(run([conn("10.0.0.5")], rs))  # type: ignore[list-item]
    assert "admin_port" in fired(run([conn("10.0.0.6")], rs))  # type: ignore[list-item]


def test_a_filter_naming_no_loaded_rule_fails_with_the_reason(tmp_path: Path) -> None:
    rs = rules_from(tmp_path, jump=FILTER)
    (failure,) = rs.failures
    assert failure.reason == "filter: references unknown rule admin_port"


def test_a_filter_of_another_log_source_is_not_applied(tmp_path: Path) -> None:
    other = FILTER.replace("category: firewall", "category: authentication")
    rs = rules_from(tmp_path, rule=RULE, jump=other)
    (failure,) = rs.failures
    assert "does not cover rule admin_port" in failure.reason
    assert "admin_port" in fired(run([conn("10.0.0.5")], rs))  # type: ignore[list-item]


def test_rules_check_reports_each_rule_and_exits_1_when_one_fails(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "rule.yml").write_text(RULE)
    (tmp_path / "jump.yml").write_text(FILTER)
    (tmp_path / "windows.yml").write_text(
        RULE.replace("product: appliance, category: firewall", "product: windows").replace(
            "000000000001", "000000000003"
        )
    )
    assert main(["rules", "check", str(tmp_path), "--json"]) == 1
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    by_file = {Path(r["path"]).name: r for r in rows}
    assert by_file["rule.yml"]["status"] == "ok" and by_file["rule.yml"]["kind"] == "detection"
    assert by_file["jump.yml"]["kind"] == "filter of admin_port"
    assert by_file["windows.yml"]["status"] == "failed"
    assert "not collected" in by_file["windows.yml"]["reason"]
    assert len(rows) == 3  # the built-in rules are loaded, not reported


def test_rules_check_exits_0_when_all_load_and_2_for_a_missing_path(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "rule.yml").write_text(RULE)
    assert main(["rules", "check", str(tmp_path)]) == 0
    assert capsys.readouterr().out.startswith("ok ")
    assert main(["rules", "check", str(tmp_path / "nope")]) == 2
