"""Disk full (bad-input case 15): ingest sheds the oldest events, counts, keeps running."""

from __future__ import annotations

import os
import socket
import subprocess
from pathlib import Path

import pytest


@pytest.fixture
def tiny_fs(tmp_path: Path):
    mnt = tmp_path / "tiny"
    mnt.mkdir()
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=24m", "tmpfs", str(mnt)],
                       capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {r.stderr.strip()}")
    yield mnt
    subprocess.run(["umount", "-l", str(mnt)], check=False)


async def test_full_disk_sheds_oldest_events_and_keeps_ingesting(start_appliance, tiny_fs) -> None:
    run = await start_appliance(appliance={"data_dir": str(tiny_fs / "data"),
                                           "sensor_id": "full-01"},
                                pipeline={"batch_size": 200, "flush_interval": 0.05},
                                storage={"raw_max_bytes": 2000, "reserve_bytes": 6_000_000})
    addr = run.source().address
    big = b"x" * 1900
    first_full_at = None
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        for i in range(12_000):  # ~45 MB of rows into a 24 MB filesystem
            s.sendto(b"<13>1 - h app - - - %06d " % i + big, addr)
            if i % 50 == 49:  # paced so the socket buffer never overflows
                sent = i + 1
                await run.wait_for(lambda n=sent: run.app.pipeline.received.total() >= n
                                   and len(run.app.pipeline) < 500, timeout=30)
                if first_full_at is None and run.app.pipeline.store_full.total():
                    first_full_at = i
    await run.wait_for(lambda: run.app.pipeline.received.total()
                       == run.app.pipeline.stored.total() + run.app.pipeline.dropped.total()
                       and len(run.app.pipeline) == 0, timeout=60)
    assert run.app.pipeline.store_full.total() >= 1
    assert run.app.retention_deleted.value("disk_full") > 0
    # Still serving, and messages that arrived after the disk filled were stored.
    assert first_full_at is not None
    body = await run.get_json("/api/v1/events", limit=1)
    assert int(body["events"][0]["message"].split()[0]) > first_full_at
    health = await run.get_json("/healthz", token=None)
    assert health["status"] == "ok"
