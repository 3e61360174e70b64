"""The process as systemd and an admin see it: start, signals, reload, notify, exit codes."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import sqlite3
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from tests.conftest import TOKEN, free_port, wait_until_sync


def write_config(
    path: Path, data_dir: Path, api_port: int, udp_ports: list[int], extra: str = ""
) -> None:
    sources = "".join(
        f'[[sources.syslog]]\nprotocol = "udp"\nlisten = "127.0.0.1:{p}"\nname = "udp{p}"\n'
        for p in udp_ports
    )
    path.write_text(
        f'[appliance]\ndata_dir = "{data_dir}"\nsensor_id = "life-01"\nshutdown_timeout = 20.0\n'
        f'[api]\nlisten = "127.0.0.1:{api_port}"\ntoken = "{TOKEN}"\n'
        f"[pipeline]\nflush_interval = 0.05\n{extra}\n{sources}"
    )


class Proc:
    def __init__(self, config: Path, api_port: int, env: dict[str, str] | None = None) -> None:
        self.api_port = api_port
        self.stderr_path = config.with_suffix(".log")
        self.stderr = self.stderr_path.open("wb")
        self.p = subprocess.Popen(
            [sys.executable, "-m", "appliance", "run", "--config", str(config)],
            stdout=subprocess.DEVNULL,
            stderr=self.stderr,
            env={**os.environ, **(env or {})},
        )

    def log(self) -> str:
        return self.stderr_path.read_text(errors="replace")

    def healthz(self) -> dict | None:
        try:
            with urllib.request.urlopen(
                f"http://127.0.0.1:{self.api_port}/healthz", timeout=1
            ) as r:
                return json.loads(r.read())
        except OSError:
            return None

    def wait_healthy(self, timeout: float = 20) -> dict:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.p.poll() is not None:
                raise AssertionError(f"exited {self.p.returncode}: {self.log()}")
            h = self.healthz()
            if h and h["status"] == "ok":
                return h
            time.sleep(0.1)
        raise AssertionError("not healthy in time: " + self.log())

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30) -> int:
        self.p.send_signal(sig)
        try:
            return self.p.wait(timeout)
        finally:
            self.stderr.close()

    def kill(self) -> None:
        if self.p.poll() is None:
            self.p.kill()
            self.p.wait(10)
        self.stderr.close()


@pytest.fixture
def procs():
    started: list[Proc] = []
    yield started
    for p in started:
        p.kill()


def final_counters(log: str) -> dict[str, int]:
    m = re.search(r"appliance stopped: received=(\d+) stored=(\d+) dropped=(\d+)", log)
    assert m, log
    return dict(zip(("received", "stored", "dropped"), map(int, m.groups()), strict=True))


def rows(db: Path) -> int:
    with sqlite3.connect(db) as conn:
        return conn.execute("SELECT coalesce(sum(count), 0) FROM event_segments").fetchone()[0]


def test_sigterm_after_100k_datagrams_drains_everything_and_exits_0(tmp_path, procs) -> None:
    api, udp = free_port(), free_port(socket.SOCK_DGRAM)
    cfg = tmp_path / "c.toml"
    write_config(cfg, tmp_path / "data", api, [udp])
    proc = Proc(cfg, api)
    procs.append(proc)
    proc.wait_healthy()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        for i in range(100_000):
            s.sendto(b"<13>1 2026-11-29T10:00:00Z h app - - - message %d" % i, ("127.0.0.1", udp))
            if i % 2000 == 1999:
                time.sleep(0.01)  # loopback sender faster than any receiver: pace lightly
    time.sleep(0.5)
    assert proc.stop() == 0
    c = final_counters(proc.log())
    # Datagrams the kernel dropped on our socket count as received and dropped too, so the
    # books balance for every datagram that reached the socket.
    assert c["received"] == 100_000
    assert c["received"] == c["stored"] + c["dropped"]
    db = tmp_path / "data" / "appliance.db"
    assert rows(db) == c["stored"]
    # Restart: the same rows are there.
    proc2 = Proc(cfg, api)
    procs.append(proc2)
    proc2.wait_healthy()
    assert proc2.stop() == 0
    assert rows(db) == c["stored"]


def test_port_in_use_is_a_clear_error_and_exit_1(tmp_path, procs) -> None:
    api = free_port()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as busy:
        busy.bind(("127.0.0.1", 0))
        cfg = tmp_path / "c.toml"
        write_config(cfg, tmp_path / "data", api, [busy.getsockname()[1]])
        proc = Proc(cfg, api)
        procs.append(proc)
        assert proc.p.wait(30) == 1
    assert "cannot bind udp" in proc.log()
    assert "Address already in use" in proc.log()


def test_invalid_config_exits_2_before_starting(tmp_path, procs) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text('[appliance]\ncolour = "red"\n')
    proc = Proc(cfg, free_port())
    procs.append(proc)
    assert proc.p.wait(30) == 2
    assert "appliance.colour: unknown key" in proc.log()


def test_sighup_with_invalid_config_keeps_running_on_the_old_one(tmp_path, procs) -> None:
    api, udp = free_port(), free_port(socket.SOCK_DGRAM)
    cfg = tmp_path / "c.toml"
    write_config(cfg, tmp_path / "data", api, [udp])
    proc = Proc(cfg, api)
    procs.append(proc)
    proc.wait_healthy()
    cfg.write_text(cfg.read_text() + "\nbogus = 1\n")
    proc.p.send_signal(signal.SIGHUP)
    deadline = time.monotonic() + 10
    while "new config is invalid" not in proc.log() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert "new config is invalid" in proc.log()
    assert "bogus: unknown key" in proc.log()
    assert proc.healthz()["sources"] == {f"udp{udp}": {"received": 0, "dropped": 0}}
    assert proc.stop() == 0


def test_sighup_with_a_truncated_config_keeps_every_listener_and_says_why(tmp_path, procs) -> None:
    api, udp = free_port(), free_port(socket.SOCK_DGRAM)
    cfg = tmp_path / "c.toml"
    write_config(cfg, tmp_path / "data", api, [udp])
    proc = Proc(cfg, api)
    procs.append(proc)
    proc.wait_healthy()
    cfg.write_text("")
    proc.p.send_signal(signal.SIGHUP)
    deadline = time.monotonic() + 10
    while "new config is invalid" not in proc.log() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert "ERROR appliance: SIGHUP: new config is invalid" in proc.log()
    assert "sources: no source configured" in proc.log()
    health = proc.healthz()
    assert (health["status"], health["sensor_id"]) == ("ok", "life-01")
    assert health["sources"] == {f"udp{udp}": {"received": 0, "dropped": 0}}
    with urllib.request.urlopen(f"http://127.0.0.1:{api}/metrics", timeout=5) as r:
        assert 'appliance_config_reloads_total{result="invalid"} 1' in r.read().decode()
    assert proc.stop() == 0


def test_sighup_applies_a_valid_new_source(tmp_path, procs) -> None:
    api, udp, udp2 = free_port(), free_port(socket.SOCK_DGRAM), free_port(socket.SOCK_DGRAM)
    cfg = tmp_path / "c.toml"
    write_config(cfg, tmp_path / "data", api, [udp])
    proc = Proc(cfg, api)
    procs.append(proc)
    proc.wait_healthy()
    write_config(cfg, tmp_path / "data", api, [udp, udp2])
    proc.p.send_signal(signal.SIGHUP)
    deadline = time.monotonic() + 10
    while f"udp{udp2}" not in (proc.healthz() or {}).get("sources", {}):
        assert time.monotonic() < deadline, proc.log()
        time.sleep(0.1)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.sendto(b"<13>via the new listener", ("127.0.0.1", udp2))
    wait_until_sync(lambda: proc.healthz()["sources"][f"udp{udp2}"]["received"] >= 1)
    assert proc.stop() == 0


def test_sd_notify_ready_and_stopping(tmp_path, procs) -> None:
    api, udp = free_port(), free_port(socket.SOCK_DGRAM)
    cfg = tmp_path / "c.toml"
    write_config(cfg, tmp_path / "data", api, [udp])
    notify_path = str(tmp_path / "notify.sock")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as notify:
        notify.bind(notify_path)
        notify.settimeout(20)
        proc = Proc(cfg, api, env={"NOTIFY_SOCKET": notify_path, "WATCHDOG_USEC": "400000"})
        procs.append(proc)
        got: list[str] = []
        while not any("READY=1" in m for m in got):
            got.append(notify.recv(4096).decode())
        while not any(m == "WATCHDOG=1" for m in got):
            got.append(notify.recv(4096).decode())
        assert proc.healthz()["status"] == "ok"
        proc.p.send_signal(signal.SIGTERM)
        while not any("STOPPING=1" in m for m in got):
            got.append(notify.recv(4096).decode())
        assert proc.p.wait(30) == 0


def test_sigint_is_a_graceful_stop_too(tmp_path, procs) -> None:
    api, udp = free_port(), free_port(socket.SOCK_DGRAM)
    cfg = tmp_path / "c.toml"
    write_config(cfg, tmp_path / "data", api, [udp])
    proc = Proc(cfg, api)
    procs.append(proc)
    proc.wait_healthy()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.sendto(b"<13>last words", ("127.0.0.1", udp))
    time.sleep(0.3)
    assert proc.stop(signal.SIGINT) == 0
    assert rows(tmp_path / "data" / "appliance.db") == 1


def test_sighup_rereads_the_api_token_file(tmp_path, procs) -> None:
    api, udp = free_port(), free_port(socket.SOCK_DGRAM)
    cfg = tmp_path / "c.toml"
    write_config(cfg, tmp_path / "data", api, [udp])
    proc = Proc(cfg, api)
    procs.append(proc)
    proc.wait_healthy()
    added = subprocess.run(
        [sys.executable, "-m", "appliance", "tokens", "add", "late", "--scope", "read",
         "--config", str(cfg)],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    token = added.stdout.strip()
    proc.p.send_signal(signal.SIGHUP)
    deadline = time.monotonic() + 10
    while "api tokens: 1 from" not in proc.log():
        assert time.monotonic() < deadline, proc.log()
        time.sleep(0.05)
    assert "(SIGHUP)" in proc.log()  # the signal, not the per-request change check, read it
    req = urllib.request.Request(
        f"http://127.0.0.1:{api}/api/v1/events", headers={"Authorization": f"Bearer {token}"}
    )
    with urllib.request.urlopen(req, timeout=5) as r:
        assert r.status == 200
    assert proc.stop() == 0
