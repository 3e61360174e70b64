"""Firmware hooks: each idempotent, each doing its job against a real appliance binary."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

HOOKS = Path(__file__).parents[1] / "firmware_hooks"


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    # A stand-in for systemctl that records its calls; the appliance binary is the real one.
    calls = tmp_path / "systemctl.calls"
    fake = tmp_path / "systemctl"
    fake.write_text(
        f'#!/bin/sh\necho "$@" >> "{calls}"\ncase "$1" in is-active) exit 0 ;; esac\nexit 0\n'
    )
    fake.chmod(0o755)
    appliance = tmp_path / "appliance"
    appliance.write_text(f'#!/bin/sh\nexec "{sys.executable}" -m appliance "$@"\n')
    appliance.chmod(0o755)
    return {
        **os.environ,
        "APPLIANCE_BIN": str(appliance),
        "APPLIANCE_CONFIG": str(tmp_path / "etc" / "appliance.toml"),
        "APPLIANCE_DATA": str(tmp_path / "data"),
        "APPLIANCE_BACKUP_DIR": str(tmp_path / "backups"),
        "SYSTEMCTL": str(fake),
        "CALLS": str(calls),
    }


def hook(name: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(HOOKS / name)], env=env, capture_output=True, text=True, timeout=120)


def calls(env: dict[str, str]) -> list[str]:
    p = Path(env["CALLS"])
    return p.read_text().splitlines() if p.exists() else []


def test_on_boot_installs_config_and_migrates_twice_the_same(env) -> None:
    for _ in range(2):
        r = hook("on-boot", env)
        assert r.returncode == 0, r.stderr
    db = Path(env["APPLIANCE_DATA"]) / "appliance.db"
    with sqlite3.connect(db) as conn:
        assert conn.execute("PRAGMA user_version").fetchone()[0] >= 1
    assert f'data_dir = "{env["APPLIANCE_DATA"]}"' in Path(env["APPLIANCE_CONFIG"]).read_text()


def test_on_boot_with_invalid_config_exits_2(env) -> None:
    Path(env["APPLIANCE_CONFIG"]).parent.mkdir(parents=True)
    Path(env["APPLIANCE_CONFIG"]).write_text("bogus = 1\n")
    assert hook("on-boot", env).returncode == 2


def test_pre_upgrade_stops_and_backs_up_keeping_three(env) -> None:
    assert hook("on-boot", env).returncode == 0
    for _ in range(5):
        r = hook("pre-upgrade", env)
        assert r.returncode == 0, r.stderr
    backups = list(Path(env["APPLIANCE_BACKUP_DIR"]).glob("appliance-*.db"))
    assert len(backups) == 3
    with sqlite3.connect(backups[0]) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    assert calls(env).count("stop appliance") == 5


def test_post_upgrade_migrates_and_starts(env) -> None:
    assert hook("on-boot", env).returncode == 0
    r = hook("post-upgrade", env)
    assert r.returncode == 0, r.stderr
    assert calls(env)[-1] == "start appliance"


def test_factory_reset_wipes_state_and_restores_config(env) -> None:
    assert hook("on-boot", env).returncode == 0
    data = Path(env["APPLIANCE_DATA"])
    (data / "api-token").write_text("secret")
    Path(env["APPLIANCE_CONFIG"]).write_text("bogus = 1\n")
    for _ in range(2):
        r = hook("factory-reset", env)
        assert r.returncode == 0, r.stderr
    assert list(data.iterdir()) == []
    assert hook("on-boot", env).returncode == 0  # the restored config is valid


def test_network_change_reloads_a_running_service(env) -> None:
    assert hook("on-boot", env).returncode == 0
    r = hook("network-change", env)
    assert r.returncode == 0, r.stderr
    assert calls(env)[-1] == "reload appliance"
