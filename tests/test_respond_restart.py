"""Active response across processes: a real appliance blocks through a real program, is
stopped, and the next process lifts the overdue block at once; and the ``appliance respond``
commands against a running and a stopped appliance."""

from __future__ import annotations

import json
import socket
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.conftest import free_port, wait_until_sync
from tests.test_lifecycle import Proc, write_config

TOOL = str(Path(__file__).with_name("blocklist_tool.py"))
ATTACKER = "203.0.113.9"


@pytest.fixture
def procs() -> Iterator[list[Proc]]:
    """Appliance processes this test started; killed (by their PID) if still running."""
    started: list[Proc] = []
    yield started
    for p in started:
        p.kill()


def respond_section(blocklist: Path, ttl: float) -> str:
    add = json.dumps([sys.executable, TOOL, str(blocklist), "add", "{ip}"])
    undo = json.dumps([sys.executable, TOOL, str(blocklist), "del", "{ip}"])
    return (
        f'[[respond.actions]]\nname = "file"\ntype = "exec"\nargv = {add}\n'
        f"undo_argv = {undo}\ndry_run = false\nttl = {ttl}\n"
    )


def send_brute_force(port: int, ip: str = ATTACKER) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        for i in range(10):
            line = (
                f"<38>Nov 29 10:00:{i:02d} srv1 sshd[26279]: Failed password for root from {ip}"
                f" port {40000 + i} ssh2"
            )
            s.sendto(line.encode(), ("127.0.0.1", port))


def wait_until(check: Callable[[], bool], what: str, timeout: float = 20.0) -> None:
    wait_until_sync(check, timeout, what, interval=0.1)


def blocked(blocklist: Path) -> list[str]:
    return blocklist.read_text().split() if blocklist.exists() else []


def rows(db: Path, sql: str) -> list[tuple]:
    with sqlite3.connect(db) as conn:
        return conn.execute(sql).fetchall()


def start(tmp_path: Path, procs: list[Proc], ttl: float) -> tuple[Proc, int, Path, Path]:
    api, udp = free_port(), free_port(socket.SOCK_DGRAM)
    cfg = tmp_path / "c.toml"
    blocklist = tmp_path / "blocked.txt"
    write_config(cfg, tmp_path / "data", api, [udp], respond_section(blocklist, ttl))
    proc = Proc(cfg, api)
    procs.append(proc)
    proc.wait_healthy()
    return proc, udp, blocklist, cfg


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "appliance", "respond", *args],
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_an_overdue_block_is_lifted_at_once_after_a_restart(tmp_path: Path, procs: list) -> None:
    proc, udp, blocklist, cfg = start(tmp_path, procs, ttl=2)
    send_brute_force(udp)
    wait_until(lambda: blocked(blocklist) == [ATTACKER], "the source is blocked")
    assert proc.stop() == 0
    db = tmp_path / "data" / "appliance.db"
    [(expires,)] = rows(db, "SELECT expires FROM respond_actions WHERE state = 'active'")
    wait_until(lambda: time.time() > expires + 0.5, "the TTL passes while nothing runs")
    assert blocked(blocklist) == [ATTACKER]  # nobody was there to lift it
    second = Proc(cfg, proc.api_port)
    procs.append(second)
    second.wait_healthy()
    wait_until(lambda: blocked(blocklist) == [], "the restarted appliance lifts the block")

    def audit() -> list[str]:
        return [e for (e,) in rows(db, "SELECT event FROM respond_audit ORDER BY id")]

    # The call lifts the block first, its outcome is committed just after.
    wait_until(lambda: audit()[-1:] == ["undone"], "the lift is recorded")
    assert audit() == ["planned", "executed", "expired", "undone"]
    assert second.stop() == 0


def test_cli_undo_beside_a_running_appliance_goes_through_its_api(
    tmp_path: Path, procs: list
) -> None:
    proc, udp, blocklist, cfg = start(tmp_path, procs, ttl=0)
    send_brute_force(udp)
    wait_until(lambda: blocked(blocklist) == [ATTACKER], "the source is blocked")
    listing = cli("list", "--config", str(cfg))
    assert listing.returncode == 0
    assert "file" in listing.stdout and "active" in listing.stdout and ATTACKER in listing.stdout
    done = cli("undo", "1", "--config", str(cfg))
    assert done.returncode == 0, done.stderr
    assert "the running appliance makes the call" in done.stdout
    wait_until(lambda: blocked(blocklist) == [], "the running appliance lifts the block")
    db = tmp_path / "data" / "appliance.db"
    actors = rows(db, "SELECT actor FROM respond_audit WHERE event = 'undo_requested'")
    assert actors == [("api:legacy",)]
    assert cli("undo", "1", "--config", str(cfg)).returncode == 1  # nothing left to undo
    assert proc.stop() == 0


def test_cli_undo_of_a_stopped_appliance_makes_the_call_itself(tmp_path: Path, procs: list) -> None:
    proc, udp, blocklist, cfg = start(tmp_path, procs, ttl=0)
    send_brute_force(udp)
    wait_until(lambda: blocked(blocklist) == [ATTACKER], "the source is blocked")
    assert proc.stop() == 0
    done = cli("undo", "1", "--config", str(cfg))
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "action 1: undone"
    assert blocked(blocklist) == []
    listing = cli("list", "--json", "--config", str(cfg))
    [row] = [json.loads(line) for line in listing.stdout.splitlines()]
    assert row["state"] == "undone" and row["value"] == ATTACKER
    db = tmp_path / "data" / "appliance.db"
    assert rows(db, "SELECT actor FROM respond_audit WHERE event = 'undo_requested'") == [("cli",)]
    assert cli("undo", "7", "--config", str(cfg)).stderr.strip() == "no action 7"
