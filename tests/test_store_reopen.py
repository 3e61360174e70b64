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
