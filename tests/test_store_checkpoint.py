"""The WAL checkpoint beside the writer: the store copies committed events into the database
file on a connection of its own, so the COMMIT that crosses the WAL's size does not wait for
the copy and its fsyncs."""

from __future__ import annotations

import asyncio
import random
import shutil
import sqlite3
import time
from pathlib import Path

from appliance.event import Event
from appliance.store import Store

# A quarter of the WAL's 4 MiB checkpoint size starts a checkpoint beside the writer.
MIB = 1024 * 1024


def events(n: int, size: int = 2000) -> list[Event]:
    """Events of ``size`` random bytes each, as hex: text that packs only to those bytes, so
    ``size`` is about what each adds to the WAL."""
    rng = random.Random(n)
    return [
        Event(1000.0 + i, 1000.0 + i, "syslog", {"message": f"m{i} " + rng.randbytes(size).hex()})
        for i in range(n)
    ]


def checkpoint_tasks() -> list[asyncio.Task[object]]:
    return [t for t in asyncio.all_tasks() if t.get_name() == "wal-checkpoint"]


async def checkpoints_done(store: Store, n: int = 1) -> None:
    deadline = time.monotonic() + 10
    while store.background_checkpoints.value("done") < n:
        assert time.monotonic() < deadline, "no checkpoint beside the writer finished"
        await asyncio.sleep(0.01)


def rows_in_file_alone(db: Path, tmp_path: Path) -> int:
    """Event rows in a copy of the database file without its WAL: what a checkpoint copied."""
    copy = tmp_path / "copy.db"
    shutil.copyfile(db, copy)
    conn = sqlite3.connect(copy)
    try:
        return int(conn.execute("SELECT count(*) FROM event_segments").fetchone()[0])
    finally:
        conn.close()


async def test_committed_events_reach_the_database_file_itself_beside_the_writer(
    tmp_path: Path,
) -> None:
    store = Store(tmp_path / "a.db")
    await store.open()
    try:
        await store.insert_events(events(700))  # ~1.4 MB packed: under the writer's 4 MiB
        await checkpoints_done(store)
        assert rows_in_file_alone(store.path, tmp_path) == 1  # one segment of 700 events
    finally:
        await store.close()


async def test_small_commits_start_no_checkpoint_beside_the_writer(tmp_path: Path) -> None:
    store = Store(tmp_path / "a.db")
    await store.open()
    try:
        await store.insert_events(events(50))
        assert checkpoint_tasks() == []
        assert store.background_checkpoints.value("done") == 0
    finally:
        await store.close()


async def test_close_waits_for_a_running_checkpoint_and_keeps_every_event(
    tmp_path: Path,
) -> None:
    store = Store(tmp_path / "a.db")
    await store.open()
    try:
        await store.insert_events(events(700))
        assert len(checkpoint_tasks()) == 1
    finally:
        await store.close()
    assert checkpoint_tasks() == []
    assert store.checkpointer is None
    again = Store(tmp_path / "a.db")
    await again.open()
    try:
        assert await again.count_events() == 700
    finally:
        await again.close()


async def test_a_commit_past_a_quarter_of_the_wal_size_after_a_checkpoint_starts_another(
    tmp_path: Path,
) -> None:
    store = Store(tmp_path / "a.db")
    await store.open()
    try:
        for k in range(3):
            await store.insert_events(events(700))
            await checkpoints_done(store, k + 1)
        assert rows_in_file_alone(store.path, tmp_path) == 3
    finally:
        await store.close()
