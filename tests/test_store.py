"""The SQLite store: migrations, batched inserts, readers, retention — on a real file."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from appliance.event import Event
from appliance.store import Store
from appliance.store.db import migrations


def ev(i: int, created: float = 1000.0, **fields) -> Event:
    return Event(timestamp=created, created=created, module="syslog",
                 fields={"message": f"m{i}", "host.hostname": f"h{i % 3}", **fields},
                 raw=b"raw%d" % i)


async def open_store(path: Path, **kw) -> Store:
    store = Store(path, **kw)
    await store.open()
    return store


async def test_new_database_is_migrated_to_the_latest_version(tmp_path: Path) -> None:
    store = await open_store(tmp_path / "a.db")
    await store.close()
    with sqlite3.connect(tmp_path / "a.db") as conn:
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        mode = conn.execute("PRAGMA journal_mode").fetchone()[0]
    assert version == migrations()[-1][0]
    assert mode == "wal"


async def test_batch_insert_assigns_increasing_ids_and_rows_survive_reopen(tmp_path: Path) -> None:
    store = await open_store(tmp_path / "a.db")
    batch = [ev(i) for i in range(100)]
    await store.insert_events(batch)
    assert [e.id for e in batch] == list(range(1, 101))
    await store.close()
    store = await open_store(tmp_path / "a.db")
    try:
        assert await store.count_events() == 100
        more = [ev(100)]
        await store.insert_events(more)
        assert more[0].id == 101
        (latest,) = await store.query_events(limit=1)
        assert latest.fields["message"] == "m100"
        assert latest.raw == b"raw100"
    finally:
        await store.close()


async def test_raw_bytes_are_bounded(tmp_path: Path) -> None:
    store = await open_store(tmp_path / "a.db", raw_max_bytes=10)
    try:
        e = ev(1)
        e.raw = b"x" * 100
        await store.insert_events([e])
        (got,) = await store.query_events()
        assert got.raw == b"x" * 10
    finally:
        await store.close()


async def test_hostile_field_values_are_data_not_sql(tmp_path: Path) -> None:
    store = await open_store(tmp_path / "a.db")
    try:
        nasty = "x'); DROP TABLE events; -- %_\\ ${jndi:ldap://x} {0.__class__}"
        await store.insert_events([ev(1, **{"user.name": nasty, "host.hostname": nasty})])
        (got,) = await store.query_events(hostname=nasty)
        assert got.fields["user.name"] == nasty
        assert await store.query_events(text="%") == []
    finally:
        await store.close()


async def test_retention_deletes_by_receive_age(tmp_path: Path) -> None:
    store = await open_store(tmp_path / "a.db")
    try:
        await store.insert_events([ev(i, created=1000.0 + i) for i in range(100)])
        by_age, by_size = await store.enforce_retention(max_age=50, max_bytes=10**9, now=1099.5)
        assert (by_age, by_size) == (50, 0)
        remaining = await store.query_events(limit=1000)
        assert min(e.created for e in remaining) == 1050.0
    finally:
        await store.close()


async def test_retention_deletes_oldest_until_under_the_size_limit(tmp_path: Path) -> None:
    store = await open_store(tmp_path / "a.db")
    try:
        big = "y" * 2000
        for chunk in range(10):
            await store.insert_events(
                [ev(chunk * 100 + i, message=big) for i in range(100)])
        limit = 1_000_000
        by_age, by_size = await store.enforce_retention(max_age=1e9, max_bytes=limit, now=1000)
        assert by_age == 0 and by_size > 0
        assert await store.used_bytes() <= limit
        newest = await store.query_events(limit=1)
        assert newest[0].id == 1000  # the newest survive
    finally:
        await store.close()


async def test_corrupt_database_is_moved_aside_and_a_fresh_one_started(tmp_path: Path) -> None:
    path = tmp_path / "a.db"
    store = await open_store(path)
    await store.insert_events([ev(i) for i in range(2000)])
    await store.close()
    data = bytearray(path.read_bytes())
    data[4096 * 2 : 4096 * 3] = b"\xff" * 4096  # trash a b-tree page
    path.write_bytes(bytes(data))
    store = await open_store(path)
    try:
        assert await store.count_events() == 0
        assert any(p.name.startswith("a.db.corrupt-") for p in tmp_path.iterdir())
    finally:
        await store.close()


async def test_durable_transaction_commits_and_rolls_back(tmp_path: Path) -> None:
    store = await open_store(tmp_path / "a.db")
    try:
        async with store.transaction(durable=True) as conn:
            await conn.execute("INSERT INTO state VALUES ('t', 'k', 'v', 0)")
        try:
            async with store.transaction(durable=True) as conn:
                await conn.execute("INSERT INTO state VALUES ('t', 'k2', 'v', 0)")
                raise RuntimeError("boom")
        except RuntimeError:
            pass
        async with store.reader.execute("SELECT key FROM state") as cur:
            assert [r[0] for r in await cur.fetchall()] == ["k"]
    finally:
        await store.close()
