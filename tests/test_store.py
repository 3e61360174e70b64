"""The SQLite store: migrations, batched inserts, readers, retention — on a real file."""

from __future__ import annotations

import random
import sqlite3
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from appliance.event import Event
from appliance.store import Store, schema, search, segments
from appliance.store.errors import StoreError
from appliance.store.events import delete_before
from appliance.store.schema import migrations
from appliance.store.search import Query
from appliance.store.segments import (
    INSERT_SEGMENT,
    ZSTD_MAGIC,
    CorruptSegment,
    corrupt_segment_reads,
    encode_line,
    pack_body,
    segment_text,
)
from appliance.store.space import PAGE_SIZE


def ev(i: int, created: float = 1000.0, **fields) -> Event:
    return Event(
        timestamp=created,
        created=created,
        module="syslog",
        fields={"message": f"m{i}", "host.hostname": f"h{i % 3}", **fields},
        raw=b"raw%d" % i,
    )


def unpackable(size: int, seed: int) -> str:
    """``size`` characters of random hex: a message that packs only to about half, so a test
    of byte budgets writes bytes in proportion to what it asks for."""
    return random.Random(seed).randbytes(size // 2).hex()


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


async def test_a_failing_migration_leaves_the_file_at_the_version_before_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    latest = migrations()[-1][0]
    broken = (
        latest + 1,
        "broken",
        "CREATE TABLE half_done (x);\nINSERT INTO no_such_table VALUES (1);",
    )
    monkeypatch.setattr(schema, "migrations", lambda: [*migrations(), broken])
    with pytest.raises(StoreError, match="no_such_table"):
        await open_store(tmp_path / "a.db")
    with sqlite3.connect(tmp_path / "a.db") as conn:
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master")}
    assert version == latest
    assert "half_done" not in tables and "event_segments" in tables


async def test_new_database_uses_large_pages_for_event_segments(tmp_path: Path) -> None:
    store = await open_store(tmp_path / "a.db")
    await store.insert_events([ev(i) for i in range(10)])
    assert store.writer is not None
    async with store.writer.execute("PRAGMA wal_autocheckpoint") as cur:
        assert (await cur.fetchone())[0] * PAGE_SIZE == 4 * 1024 * 1024  # the WAL stays small
    await store.close()
    with sqlite3.connect(tmp_path / "a.db") as conn:
        assert conn.execute("PRAGMA page_size").fetchone()[0] == PAGE_SIZE == 32_768
        assert conn.execute("PRAGMA auto_vacuum").fetchone()[0] == 2  # incremental


async def test_existing_database_keeps_its_page_size_and_its_events(tmp_path: Path) -> None:
    path = tmp_path / "a.db"
    with sqlite3.connect(path) as conn:
        conn.execute("PRAGMA page_size=4096")
        conn.execute("CREATE TABLE t (x)")
    store = await open_store(path)
    await store.insert_events([ev(i) for i in range(3)])
    assert store.writer is not None
    async with store.writer.execute("PRAGMA wal_autocheckpoint") as cur:
        assert (await cur.fetchone())[0] == 1024  # 4 MiB of 4 KiB pages
    await store.close()
    store = await open_store(path)
    got = await store.query_events(limit=10)
    await store.close()
    assert [e.fields["message"] for e in got] == ["m2", "m1", "m0"]
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA page_size").fetchone()[0] == 4096


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


async def test_fields_with_non_text_keys_are_stored_with_the_keys_as_text(tmp_path: Path) -> None:
    store = await open_store(tmp_path / "a.db")
    try:
        await store.insert_events([ev(1, **{"snmp.varbinds": {1: "up", "ifIndex": 3}})])
        (got,) = await store.query_events(limit=1)
    finally:
        await store.close()
    assert got.fields["snmp.varbinds"] == {"1": "up", "ifIndex": 3}
    assert got.fields["message"] == "m1"


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
        # The schema alone takes a page (32 KiB) per table and index, over 1 MB by now: the
        # limit is 1 MB of room above what an empty database uses.
        limit = await store.used_bytes() + 1_000_000
        for chunk in range(10):
            await store.insert_events(
                [ev(chunk * 100 + i, message=unpackable(2000, chunk * 100 + i)) for i in range(100)]
            )
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
    size = int.from_bytes(data[16:18], "big")  # the page size, from the file header
    data[size * 2 : size * 3] = b"\xff" * size  # trash a b-tree page
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


async def test_paging_walks_every_event_across_segments_newest_first(tmp_path: Path) -> None:
    store = await open_store(tmp_path / "a.db")
    try:
        await store.insert_events([ev(i) for i in range(2500)])  # three segments
        seen: list[int] = []
        cursor = None
        while True:
            page = await store.query_events(limit=700, before_id=cursor)
            if not page:
                break
            seen += [e.id for e in page]
            cursor = page[-1].id
        assert seen == list(range(2500, 0, -1))
    finally:
        await store.close()


async def test_filters_match_values_that_json_escapes(tmp_path: Path) -> None:
    store = await open_store(tmp_path / "a.db")
    try:
        odd = 'say "hi" \\ über\ttab'
        await store.insert_events([ev(1), ev(2, message=odd, **{"host.hostname": odd}), ev(3)])
        (by_text,) = await store.query_events(text='"hi" \\ ü')
        (by_host,) = await store.query_events(hostname=odd)
        assert by_text.id == by_host.id == 2
        assert by_text.fields["message"] == odd
    finally:
        await store.close()


async def test_source_ip_filter_falls_back_to_the_sending_device(tmp_path: Path) -> None:
    store = await open_store(tmp_path / "a.db")
    try:
        await store.insert_events(
            [
                ev(1, **{"observer.ip": "192.0.2.1", "source.ip": "198.51.100.9"}),
                ev(2, **{"observer.ip": "198.51.100.9"}),
                ev(3, **{"observer.ip": "192.0.2.1", "destination.ip": "198.51.100.9"}),
            ]
        )
        got = await store.query_events(source_ip="198.51.100.9")
        assert [e.id for e in got] == [2, 1]
    finally:
        await store.close()


async def test_raw_bytes_that_are_not_utf8_round_trip(tmp_path: Path) -> None:
    store = await open_store(tmp_path / "a.db")
    try:
        e = ev(1)
        e.raw = b"<13>\xff\xfe binary \x00 tail"
        await store.insert_events([e])
        (got,) = await store.query_events()
        assert got.raw == e.raw
    finally:
        await store.close()


async def test_events_of_the_row_per_event_schema_are_converted_at_open(tmp_path: Path) -> None:
    path = tmp_path / "a.db"
    with sqlite3.connect(path) as conn:  # a database as schema version 7 left it
        for number, _name, sql in migrations():
            if number <= 7:
                conn.executescript(sql)
        conn.execute("PRAGMA user_version=7")
        conn.executemany(
            "INSERT INTO events (id, ts, created, module, observer_ip, source_ip, hostname,"
            " message, fields, raw) VALUES (?,?,?,?,?,?,?,?,?,?)",
            [
                (
                    i,
                    1000.0 + i,
                    1000.0 + i,
                    "syslog",
                    "192.0.2.1",
                    None,
                    "fw1",
                    f"old {i}",
                    '{"event.kind":"event"}',
                    b"<13>old %d" % i,
                )
                for i in (1, 2, 3, 7)
            ],
        )
    store = await open_store(path)
    try:
        got = await store.query_events()
        assert [e.id for e in got] == [7, 3, 2, 1]
        assert got[0].fields == {
            "event.kind": "event",
            "observer.ip": "192.0.2.1",
            "host.hostname": "fw1",
            "message": "old 7",
        }
        assert got[0].raw == b"<13>old 7"
        more = [ev(8)]
        await store.insert_events(more)
        assert more[0].id == 8
    finally:
        await store.close()
    with sqlite3.connect(path) as conn:
        legacy = conn.execute("SELECT name FROM sqlite_master WHERE name = 'events'").fetchone()
    assert legacy is None


async def test_size_retention_keeps_events_when_other_tables_fill_the_budget(
    tmp_path: Path, caplog
) -> None:
    store = await open_store(tmp_path / "a.db")
    try:
        for chunk in range(4):
            await store.insert_events(
                [ev(chunk * 100 + i, message=unpackable(1500, chunk * 100 + i)) for i in range(100)]
            )
        async with store.transaction() as conn:  # ~2 MB of state rows, not events
            for i in range(40):
                await conn.execute(
                    "INSERT INTO state (component, key, value, updated) VALUES ('t', ?, ?, 0)",
                    (str(i), b"s" * 50_000),
                )
        used = await store.used_bytes()
        limit = used // 2  # less than what the state rows alone take
        _, by_size = await store.enforce_retention(max_age=1e9, max_bytes=limit, now=1000)
        remaining = await store.count_events()
        assert by_size > 0 and remaining > 0  # trimmed to the floor, not wiped
        assert remaining + by_size == 400
        assert "not events" in caplog.text
    finally:
        await store.close()


def stored_bodies(path: Path) -> list[bytes]:
    with sqlite3.connect(path) as conn:
        return [bytes(r[0]) for r in conn.execute("SELECT body FROM event_segments")]


async def test_segments_are_stored_packed_and_read_back_as_their_lines(tmp_path: Path) -> None:
    store = await open_store(tmp_path / "a.db")
    try:
        events = [ev(i) for i in range(1500)]
        await store.insert_events(events)
        bodies = stored_bodies(tmp_path / "a.db")
        assert len(bodies) == 2 and all(b.startswith(ZSTD_MAGIC) for b in bodies)
        lines = b"\n".join(segment_text(b) for b in bodies).split(b"\n")
        assert lines == [
            encode_line(e.timestamp, e.created, e.module, e.fields, e.raw) for e in events
        ]
        assert sum(map(len, bodies)) * 5 < len(b"\n".join(lines))
        got = await store.query_events(limit=2000, hostname="h1")
        assert [e.id for e in got] == [i + 1 for i in range(1499, -1, -1) if i % 3 == 1]
        assert got[0].fields["message"] == "m1498"
    finally:
        await store.close()


async def test_plain_segments_stored_before_packing_are_still_read_and_searched(
    tmp_path: Path,
) -> None:
    store = await open_store(tmp_path / "a.db")
    try:
        old = [ev(i) for i in range(10)]
        for i, e in enumerate(old):
            e.id = i + 1
        plain = b"\n".join(
            encode_line(e.timestamp, e.created, e.module, e.fields, e.raw) for e in old
        )
        async with store.transaction() as conn:
            await conn.execute(INSERT_SEGMENT, (1, 10, 10, 1000.0, 1000.0, 1000.0, 1000.0, plain))
        store.next_id = 11
        await store.insert_events([ev(i) for i in range(10, 20)])
        bodies = stored_bodies(tmp_path / "a.db")
        assert bodies[0] == plain and bodies[1].startswith(ZSTD_MAGIC)
        got = await store.query_events(limit=100, text="m1")
        assert [e.fields["message"] for e in got] == [f"m{i}" for i in range(19, 9, -1)] + ["m1"]
    finally:
        await store.close()


def test_packed_bodies_unpack_right_on_many_threads_at_once() -> None:
    # The reader's thread (seg_holds) and the scans' workers unpack at the same time.
    bodies = [
        b"\n".join(
            encode_line(1.0, 1.0, "syslog", {"message": f"{k} {i}"}, b"r") for i in range(800)
        )
        for k in range(8)
    ]
    packed = [pack_body(b) for b in bodies]
    assert all(p.startswith(ZSTD_MAGIC) for p in packed)

    def unpack_all(start: int) -> bool:
        return all(
            segment_text(packed[(start + j) % 8]) == bodies[(start + j) % 8] for j in range(200)
        )

    with ThreadPoolExecutor(8) as pool:
        assert all(pool.map(unpack_all, range(8)))


def test_a_body_that_claims_more_than_the_bound_is_refused_before_it_is_unpacked() -> None:
    # A frame header with a single-segment flag and an 8-byte content size of 2^40.
    frame = ZSTD_MAGIC + bytes([0xE0]) + (1 << 40).to_bytes(8, "little") + b"\x01\x00\x00"
    with pytest.raises(CorruptSegment, match="claims"):
        segment_text(frame)
    with pytest.raises(CorruptSegment):
        segment_text(ZSTD_MAGIC + b"\x00garbage")
    # a frame header without the content size (no flags, a window descriptor byte)
    with pytest.raises(CorruptSegment, match="does not record its size"):
        segment_text(ZSTD_MAGIC + bytes([0x00, 0x50]) + b"\x01\x00\x00")


def test_a_packed_body_with_a_flipped_bit_is_corrupt_not_other_text() -> None:
    body = b"\n".join(
        encode_line(1.0, 1.0, "syslog", {"message": f"line {i}"}, b"r") for i in range(300)
    )
    packed = bytearray(pack_body(body))
    packed[len(packed) // 2] ^= 0x10
    with pytest.raises(CorruptSegment):
        segment_text(bytes(packed))


async def test_retention_trims_a_packed_segment_head_and_keeps_it_packed(tmp_path: Path) -> None:
    store = await open_store(tmp_path / "a.db")
    try:
        await store.insert_events([ev(i) for i in range(1000)])
        assert await delete_before(store, 401) == 400
        (body,) = stored_bodies(tmp_path / "a.db")
        assert body.startswith(ZSTD_MAGIC)
        got = await store.query_events(limit=1000)
        assert [e.id for e in got] == list(range(1000, 400, -1))
        assert got[-1].fields["message"] == "m400"
    finally:
        await store.close()


async def test_a_corrupt_segment_is_skipped_counted_and_the_others_still_read(
    tmp_path: Path, caplog
) -> None:
    store = await open_store(tmp_path / "a.db")
    try:
        await store.insert_events([ev(i) for i in range(3000)])  # segments at 1, 1025, 2049
        async with store.transaction() as conn:
            await conn.execute(
                "UPDATE event_segments SET body = ? WHERE first_id = 1025",
                (ZSTD_MAGIC + b"\x00damaged on the disk",),
            )
        before = corrupt_segment_reads()
        got = await store.query_events(limit=3000, hostname="h1")
        assert [e.id for e in got] == [
            i + 1 for i in range(2999, -1, -1) if i % 3 == 1 and not 1024 <= i < 2048
        ]
        assert corrupt_segment_reads() > before
        assert "event segment 1025 skipped" in caplog.text
        page = await search.find_events(
            store, Query(text="m2"), limit=5000, before_id=None, max_scan=10_000
        )
        assert page.events and all(not 1025 <= e.id < 2049 for e in page.events)
    finally:
        await store.close()


async def test_a_search_with_a_text_filter_unpacks_each_segment_it_reads_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = await open_store(tmp_path / "a.db", search_index=False)
    try:
        await store.insert_events([ev(i) for i in range(5000)])  # five segments
        unpacked: list[int] = []
        real = segments._unpack
        monkeypatch.setattr(segments, "_unpack", lambda body: unpacked.append(1) or real(body))
        page = await search.find_events(
            store, Query(text="m4"), limit=10_000, before_id=None, max_scan=10_000
        )
        assert len(page.events) == 1 + 10 + 100 + 1000  # m4, m40-m49, m400-m499, m4000-m4999
        assert len(unpacked) == 5
    finally:
        await store.close()


async def test_read_current_sees_what_the_writer_committed_just_before(tmp_path: Path) -> None:
    store = await open_store(tmp_path / "a.db")
    await store.insert_events([ev(i) for i in range(3)])
    (row,) = await store.read_current("SELECT count(*), max(last_id) FROM event_segments")
    await store.close()
    assert tuple(row) == (1, store.next_id - 1)


async def test_read_current_refuses_to_write(tmp_path: Path) -> None:
    store = await open_store(tmp_path / "a.db")
    await store.insert_events([ev(i) for i in range(3)])
    with pytest.raises(sqlite3.OperationalError, match="readonly"):
        await store.read_current("DELETE FROM event_segments")
    (row,) = await store.read_current("SELECT count(*) FROM event_segments")
    await store.close()
    assert row[0] == 1


async def test_read_current_on_a_closed_store_raises_store_error(tmp_path: Path) -> None:
    store = await open_store(tmp_path / "a.db")
    await store.close()
    with pytest.raises(StoreError, match="closed"):
        await store.read_current("SELECT 1")
