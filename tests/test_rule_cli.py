"""``appliance test-rule`` and ``appliance replay`` on scenario files (in-process CLI)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from appliance.cli import main
from appliance.correlate.rules import builtin_rule_files


def _failure(t: int, ip: str = "203.0.113.9", user: str = "root") -> str:
    return json.dumps(
        {
            "@timestamp": 1_790_000_000 + t,
            "event.category": ["authentication"],
            "event.action": "ssh_login",
            "event.outcome": "failure",
            "process.name": "sshd",
            "source.ip": ip,
            "user.name": user,
            "event.original": f"sshd[1]: Failed password for {user} from {ip} port 4000 ssh2",
        }
    )


@pytest.fixture
def rules_dir(tmp_path: Path) -> Path:
    """A user folder holding copies of two built-in rules (what a user's CI would have)."""
    d = tmp_path / "rules"
    d.mkdir()
    for f in builtin_rule_files():
        if f.stem in ("ssh_auth_failure", "ssh_brute_force"):
            shutil.copy(f, d / f.name)
    return d


@pytest.fixture
def scenario(tmp_path: Path) -> Path:
    p = tmp_path / "scenario.jsonl"
    p.write_text("# ten failures in 90 s\n" + "\n".join(_failure(i * 10) for i in range(10)) + "\n")
    return p


def test_replay_update_then_replay_passes(
    rules_dir: Path, scenario: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    golden = tmp_path / "golden.json"
    args = ["replay", "--rules", str(rules_dir), "--input", str(scenario), "--expect", str(golden)]
    assert main([*args, "--update"]) == 0
    incidents = json.loads(golden.read_text())
    assert [(i["rule"], i["group_key"], i["hit_count"]) for i in incidents] == [
        ("ssh_brute_force", "source.ip=203.0.113.9", 1)
    ]
    assert main(args) == 0
    assert "as expected" in capsys.readouterr().out


def test_replay_exits_1_and_prints_the_diff(
    rules_dir: Path, scenario: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    golden = tmp_path / "golden.json"
    golden.write_text("[]")
    rc = main(
        ["replay", "--rules", str(rules_dir), "--input", str(scenario), "--expect", str(golden)]
    )
    assert rc == 1
    out = capsys.readouterr().out
    assert '+    "rule": "ssh_brute_force"' in out


def test_replay_bad_line_exits_2(
    rules_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"@timestamp": "yesterday"}\n')
    rc = main(
        [
            "replay",
            "--rules",
            str(rules_dir),
            "--input",
            str(bad),
            "--expect",
            str(tmp_path / "g.json"),
        ]
    )
    assert rc == 2
    assert "bad.jsonl:1" in capsys.readouterr().err


def test_replay_refuses_when_a_rule_fails_to_load(
    rules_dir: Path, scenario: Path, tmp_path: Path
) -> None:
    (rules_dir / "broken.yml").write_text(
        "title: x\nlogsource: {product: windows}\ndetection: {s: {a: 1}, condition: s}\n"
    )
    assert (
        main(
            [
                "replay",
                "--rules",
                str(rules_dir),
                "--input",
                str(scenario),
                "--expect",
                str(tmp_path / "g.json"),
            ]
        )
        == 2
    )


def test_replay_is_deterministic_in_event_time(rules_dir: Path, tmp_path: Path) -> None:
    """Failures spread over 6 minutes of event time never fire, however fast they are read."""
    p = tmp_path / "slow.jsonl"
    p.write_text("\n".join(_failure(i * 40) for i in range(10)) + "\n")
    golden = tmp_path / "g.json"
    main(
        [
            "replay",
            "--rules",
            str(rules_dir),
            "--input",
            str(p),
            "--expect",
            str(golden),
            "--update",
        ]
    )
    assert json.loads(golden.read_text()) == []


def test_test_rule_shows_decode_matches_state_and_incidents(
    scenario: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["test-rule", str(scenario), "--json"]) == 0
    lines = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    first = lines[0]
    assert first["event"]["source"]["ip"] == "203.0.113.9"
    assert "ssh_auth_failure" in first["matched"]
    assert first["alerts"] == []
    assert any(a["rule"] == "ssh_brute_force" for a in lines[9]["alerts"])
    end = lines[-1]
    assert "ssh_password_spray" in end["state"]
    assert any(i["rule"] == "ssh_brute_force" for i in end["incidents"])


def test_test_rule_decodes_a_raw_syslog_line(capsys: pytest.CaptureFixture[str]) -> None:
    line = "<34>1 2026-11-29T10:00:00Z fw1 sshd 12 - - Failed password for root"
    assert main(["test-rule", "--no-builtin", "--line", line]) == 0
    out = capsys.readouterr().out
    assert "process.name: sshd" in out
    assert "host.hostname: fw1" in out
    assert "@ 2026-11-29T10:00:00.000000Z" in out


def test_test_rule_time_prefix_overrides_the_header(capsys: pytest.CaptureFixture[str]) -> None:
    line = "@1790000000 <34>Nov 29 10:00:00 fw1 sshd[1]: hello"
    assert main(["test-rule", "--no-builtin", "--line", line, "--json"]) == 0
    first = json.loads(capsys.readouterr().out.splitlines()[0])
    assert first["event"]["@timestamp"].startswith("2026-09-21T")
