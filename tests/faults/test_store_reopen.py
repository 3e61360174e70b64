"""The database file or its WAL deleted or replaced under the running appliance.

SQLite does not notice: commits go on into the unlinked file and are lost at the next stop,
while ``appliance db check`` on the path says ok. The appliance compares the paths' inodes
with what it opened and reopens.
"""

from __future__ import annotations

import os
import socket
import sqlite3
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.slow


def on_disk(db: Path) -> int:
    """Events another process sees in the file at ``db`` (what survives a kill)."""
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
            row = conn.execute("SELECT coalesce(sum(count), 0) FROM event_segments").fetchone()
    except sqlite3.Error:
        return -1
    return int(row[0])


def send(run: Any, lines: list[bytes]) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        for line in lines:
            s.sendto(line, run.source().address)


async def test_deleted_wal_is_noticed_and_what_was_committed_reaches_the_file(
    start_appliance, tmp_path: Path
) -> None:
    run = await start_appliance()
    db = run.app.store.path
    send(run, [b"<13>1 - h app - - - before %d" % i for i in range(10)])
    await run.wait_stored(10)
    Path(str(db) + "-wal").unlink()
    send(run, [b"<13>1 - h app - - - after %d" % i for i in range(10)])
    await run.wait_stored(20)
    await run.wait_for(lambda: run.app.store.reopens.value("wal_missing") >= 1, timeout=10)
    await run.wait_for(lambda: on_disk(db) == 20, timeout=5)
    assert 'appliance_storage_reopens_total{reason="wal_missing"} 1' in await run.metrics()


async def test_deleted_database_is_recreated_and_ingestion_goes_on(
    start_appliance, tmp_path: Path
) -> None:
    run = await start_appliance()
    db = run.app.store.path
    send(run, [b"<13>1 - h app - - - old %d" % i for i in range(5)])
    await run.wait_stored(5)
    for suffix in ("", "-wal", "-shm"):
        Path(str(db) + suffix).unlink(missing_ok=True)
    await run.wait_for(lambda: run.app.store.reopens.value("db_missing") >= 1, timeout=10)
    send(run, [b"<13>1 - h app - - - new %d" % i for i in range(7)])
    await run.wait_stored(12)
    await run.wait_for(lambda: on_disk(db) == 7, timeout=5)
    body = await run.get_json("/api/v1/events", limit=10)
    assert body["events"][0]["message"] == "new 6"


async def test_database_replaced_by_another_file_is_reopened(
    start_appliance, tmp_path: Path
) -> None:
    run = await start_appliance()
    db = run.app.store.path
    send(run, [b"<13>1 - h app - - - old %d" % i for i in range(5)])
    await run.wait_stored(5)
    other = tmp_path / "other.db"
    sqlite3.connect(other).close()  # an empty file, as a careless restore would copy in
    os.replace(other, db)
    await run.wait_for(lambda: run.app.store.reopens.value("db_replaced") >= 1, timeout=10)
    send(run, [b"<13>1 - h app - - - new %d" % i for i in range(3)])
    await run.wait_stored(8)
    await run.wait_for(lambda: on_disk(db) == 3, timeout=5)


async def test_wal_and_database_deleted_mid_stream_keep_ingesting_books_balanced_healthz_ok(
    start_appliance, tmp_path: Path
) -> None:
    """What the tests above leave out: the files go while events keep arriving. Ingestion
    never stops, every line is received and stored or counted, /healthz stays ``ok`` (no
    restart), and what was committed after each reopen is in the file the path names."""
    run = await start_appliance(pipeline={"batch_size": 50, "flush_interval": 0.02})
    db = run.app.store.path
    p = run.app.pipeline
    n = 0

    async def stream(count: int) -> None:
        nonlocal n
        for _ in range(count // 20):
            send(run, [b"<13>1 - h app - - - seq %06d" % (n + i) for i in range(20)])
            n += 20
            await run.wait_for(lambda w=n: p.received.total() >= w, timeout=10)

    await stream(200)
    Path(str(db) + "-wal").unlink()
    await stream(400)  # on for longer than the 2 s watch interval would need in the worst case
    await run.wait_for(lambda: run.app.store.reopens.value("wal_missing") >= 1, timeout=10)
    await stream(200)
    await run.wait_for(lambda: p.stored.total() + p.dropped.total() == n, timeout=10)
    assert p.dropped.total() == 0
    await run.wait_for(lambda: on_disk(db) == n, timeout=5)  # nothing committed was lost

    for suffix in ("", "-wal", "-shm"):
        Path(str(db) + suffix).unlink(missing_ok=True)
    before = n
    await stream(200)
    await run.wait_for(lambda: run.app.store.reopens.value("db_missing") >= 1, timeout=10)
    await stream(200)
    await run.wait_for(lambda: p.received.total() == p.stored.total() + p.dropped.total())
    # Lines committed into the unlinked file before the reopen went with it (counted stored:
    # they were); everything since the reopen is in the new file at the path.
    await run.wait_for(lambda: 200 <= on_disk(db) <= n - before, timeout=5)
    health = await run.get_json("/healthz", token=None)
    assert health["status"] == "ok" and health["degraded"] == []
    body = await run.get_json("/api/v1/events", limit=1)
    assert body["events"][0]["message"] == f"seq {n - 1:06d}"
