"""Disk full (bad-input case 15, defect 6): a state that is reported, bounded and left by itself.

The filesystems are real (a tmpfs mounted for the test, so root is needed) and small: a few
MiB fill with a few thousand 2 KB messages, which keeps each test to seconds.
"""

from __future__ import annotations

import base64
import os
import random
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.slow


def mount_tmpfs(path: Path, size_mb: int) -> Iterator[Path]:
    path.mkdir()
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    r = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size_mb}m", "tmpfs", str(path)],
        capture_output=True,
        text=True,
    )
    if r.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {r.stderr.strip()}")
    yield path
    subprocess.run(["umount", "-l", str(path)], check=False)


@pytest.fixture
def tiny_fs(tmp_path: Path) -> Iterator[Path]:
    yield from mount_tmpfs(tmp_path / "tiny", 8)


def fill(path: Path) -> None:
    """Take every free byte of ``path``'s filesystem, as another program would."""
    st = os.statvfs(path.parent)
    with path.open("wb") as f:
        os.posix_fallocate(f.fileno(), 0, st.f_bavail * st.f_frsize)


async def send(run: Any, first: int, count: int, size: int = 1900) -> None:
    """``count`` numbered lines, 50 at a time, each step once the previous one was received
    (so the kernel never drops and every line is the appliance's to store or count). Their
    text is random (base64 of random bytes), so packed segments still take ~3/4 of its size
    and the disk fills as it would with real traffic."""
    addr = run.source().address
    pipeline = run.app.pipeline
    base = pipeline.received.total()
    rng = random.Random(first)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        for i in range(first, first + count):
            text = base64.b64encode(rng.randbytes(size * 3 // 4))[:size]
            s.sendto(b"<13>1 - h app - - - %06d " % i + text, addr)
            if (i - first) % 50 == 49 or i == first + count - 1:
                want = base + i - first + 1
                await run.wait_for(lambda w=want: pipeline.received.total() >= w, timeout=30)


def books_balance(run: Any) -> bool:
    p = run.app.pipeline
    return p.received.total() == p.stored.total() + p.dropped.total() and len(p) == 0


async def test_full_disk_sheds_oldest_events_and_keeps_ingesting(start_appliance, tiny_fs) -> None:
    run = await start_appliance(
        appliance={"data_dir": str(tiny_fs / "data"), "sensor_id": "full-01"},
        pipeline={"batch_size": 200, "flush_interval": 0.05},
        storage={"raw_max_bytes": 2000},
    )
    await send(run, 0, 4000)  # ~16 MB of lines, ~6 MB packed, into an 8 MB filesystem
    await run.wait_for(lambda: books_balance(run), timeout=30)
    # Room was made by deleting the oldest, before the disk was full: nothing was dropped.
    assert run.app.retention_deleted.value("disk_full") > 0
    assert run.app.pipeline.dropped.total() == 0
    body = await run.get_json("/api/v1/events", limit=1)
    assert int(body["events"][0]["message"].split()[0]) == 3999
    health = await run.get_json("/healthz", token=None)
    assert health["status"] == "ok"


async def test_disk_filled_by_another_file_is_a_reported_state_left_when_space_returns(
    start_appliance, tiny_fs
) -> None:
    run = await start_appliance(
        appliance={"data_dir": str(tiny_fs / "data"), "sensor_id": "full-02"},
        pipeline={"batch_size": 100, "flush_interval": 0.05},
        storage={"raw_max_bytes": 2000},
    )
    pipeline = run.app.pipeline
    await send(run, 0, 100)
    await run.wait_stored(100)
    hog = tiny_fs / "hog.bin"
    fill(hog)
    await send(run, 100, 1000)
    name = run.source().name
    await run.wait_for(lambda: pipeline.dropped.value(name, "store_full") > 0, timeout=20)
    health = await run.get_json("/healthz", token=None)
    assert health["status"] == "degraded"
    assert "disk_full" in health["degraded"]
    text = await run.metrics()
    assert "appliance_storage_disk_full 1" in text
    assert 'appliance_storage_write_errors_total{reason="disk_full"}' in text
    # Memory stays bounded: what waits for the disk is one batch, the queue sheds the rest.
    assert len(pipeline) + pipeline.held <= 100
    # The appliance's own events are not what another program's file is made room with.
    assert run.app.retention_deleted.value("disk_full") == 0
    assert await run.app.store.count_events() >= 100

    hog.unlink()
    stored = pipeline.stored.total()
    await run.wait_for(lambda: pipeline.stored.total() > stored, timeout=20)
    await send(run, 1100, 20)
    await run.wait_for(lambda: books_balance(run), timeout=20)
    body = await run.get_json("/api/v1/events", limit=1)
    assert int(body["events"][0]["message"].split()[0]) == 1119
    health = await run.get_json("/healthz", token=None)
    assert health["status"] == "ok" and health["degraded"] == []
    assert "appliance_storage_disk_full 0" in await run.metrics()
