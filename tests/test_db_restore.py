"""``appliance db restore``: a backup replaces the database atomically, only when it is a sound
appliance database and no appliance runs on the data directory (which one appliance holds)."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from appliance.app import Appliance
from appliance.cli import main
from appliance.config import parse_config
from appliance.datalock import DataDirBusy
from appliance.store.segments import segment_text
from tests.conftest import make_config
from tests.test_syslog_udp import send_udp


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    """The command as an operator runs it (a process of its own: the tests' loop is busy)."""
    return subprocess.run(
        [sys.executable, "-m", "appliance", *args], capture_output=True, text=True, timeout=60
    )


def config_file(tmp_path: Path) -> Path:
    path = tmp_path / "appliance.toml"
    path.write_text(
        f'[appliance]\ndata_dir = "{tmp_path / "data"}"\n'
        '[[sources.syslog]]\nprotocol = "udp"\nlisten = "127.0.0.1:0"\n'
    )
    return path


async def test_a_backup_restored_brings_back_exactly_what_it_held(
    start_appliance: Any, tmp_path: Path
) -> None:
    run = await start_appliance()
    send_udp(run.source().address, b"<13>app: before backup")
    await run.wait_stored(1)
    backup = tmp_path / "backup.db"
    assert cli("db", "backup", str(backup), "--config", str(config_file(tmp_path))).returncode == 0
    send_udp(run.source().address, b"<13>app: after backup")
    await run.wait_stored(2)
    await run.app.stop()
    done = cli("db", "restore", str(backup), "--config", str(config_file(tmp_path)))
    assert done.returncode == 0, done.stderr
    db = tmp_path / "data" / "appliance.db"
    assert not db.with_name("appliance.db-wal").exists()  # the old WAL must not be replayed
    conn = sqlite3.connect(db)
    try:
        bodies = b"".join(
            segment_text(r[0]) for r in conn.execute("SELECT body FROM event_segments")
        )
    finally:
        conn.close()
    assert b"before backup" in bodies and b"after backup" not in bodies


async def test_restore_is_refused_while_the_appliance_runs(
    start_appliance: Any, tmp_path: Path
) -> None:
    await start_appliance()
    backup = tmp_path / "backup.db"
    assert cli("db", "backup", str(backup), "--config", str(config_file(tmp_path))).returncode == 0
    refused = cli("db", "restore", str(backup), "--config", str(config_file(tmp_path)))
    assert refused.returncode == 1
    assert "in use by a running appliance" in refused.stderr


@pytest.mark.parametrize(
    ("content", "why"),
    [
        (b"not a database at all" * 100, "not a usable database"),
        (None, "no such file"),
    ],
    ids=["garbage", "missing"],
)
def test_restore_refuses_what_is_not_a_sound_backup(
    tmp_path: Path, content: bytes | None, why: str, capsys: pytest.CaptureFixture[str]
) -> None:
    backup = tmp_path / "backup.db"
    if content is not None:
        backup.write_bytes(content)
    assert main(["db", "restore", str(backup), "--config", str(config_file(tmp_path))]) == 1
    assert why in capsys.readouterr().err


def test_restore_refuses_a_schema_newer_than_this_build(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    backup = tmp_path / "future.db"
    with sqlite3.connect(backup) as conn:
        conn.execute("CREATE TABLE t (x)")
        conn.execute("PRAGMA user_version = 9999")
    assert main(["db", "restore", str(backup), "--config", str(config_file(tmp_path))]) == 1
    assert "newer than this build" in capsys.readouterr().err


async def test_a_second_appliance_on_the_same_data_dir_cannot_start(
    start_appliance: Any, tmp_path: Path
) -> None:
    await start_appliance()
    second = Appliance(parse_config(make_config(tmp_path), base_dir=tmp_path))
    with pytest.raises(DataDirBusy):
        await second.start()
