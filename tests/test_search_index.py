"""The events search index (appliance/store/segindex.py): one Bloom filter per segment, written
with the segment, that lets a search skip segments without changing what it finds."""

from __future__ import annotations

import random
import select
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from appliance import dataplane
from appliance.event import Event
from appliance.store import Store, search, segindex
from appliance.store.events import delete_before, finish_rows_beside
from appliance.store.search import Query, parse_condition
from appliance.store.segments import (
    ZSTD_MAGIC,
    encode_line,
    finish_rows,
    segment_rows,
    segment_text,
)
from tests.ruletools import T0


@pytest.fixture(autouse=True)
def _builder(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without the extension (APPLIANCE_NATIVE=0) ingest builds no filter; these tests then
    index with the reference so the search side is exercised on both backends."""
    if dataplane.native is None:
        monkeypatch.setattr(segindex, "segment_bloom", segindex.bloom_reference)


def event(i: int, rng: random.Random, *, old: bool = False) -> Event:
    """Varied events: scalars, lists, numbers stored as int and float, booleans, nested
    objects, escapes and non-ASCII text in messages, events without source.ip."""
    user = f"user{rng.randrange(40)}"
    ip = f"10.{rng.randrange(3)}.{rng.randrange(4)}.{rng.randrange(20)}"
    fields: dict[str, Any] = {
        "event.category": [rng.choice(["network", "authentication", "process"])],
        "event.type": rng.sample(["connection", "denied", "start", "end", "info"], 2),
        "user.name": user,
        "observer.ip": f"192.0.2.{i % 5}",
        "destination.port": rng.choice([22, 80, 443, 3389]),
        "event.duration": rng.choice([5.0, 2.5, 0.0, 1e-7, 12345.0]),
        "event.severity": rng.randrange(10),
        "tls.established": rng.random() < 0.5,
        "labels.nested": {"k": user, "n": 1},
        "message": rng.choice(
            [
                f"Failed password for {user} from {ip} port {40000 + i} ssh2",
                f'deny tcp {ip} -> 198.51.100.7:443 "quoted \\ back"',
                f"Zugriff verweigert für Benutzer {user} — ünïcode\tTab",
                f"line one\nline two {i}",
            ]
        ),
    }
    if i % 7:
        fields["source.ip"] = ip
    if old:
        fields["user.name"] = "legacy-only"
        fields["host.hostname"] = "old-host"
    module = "netflow" if i % 11 == 0 else "syslog"
    ts = T0 + i
    return Event(ts, ts, module, fields, raw=f"<13>raw-only-token {i}".encode())


async def fill(path: Path, events: list[Event], indexed_from: int | None) -> Store:
    """A store with ``events`` in batches of 37 (segments of varied sizes); segments before
    ``indexed_from`` are stored without an index (as before migration 0014)."""
    store = Store(path)
    await store.open()
    for start in range(0, len(events), 37):
        store.search_index = indexed_from is not None and start >= indexed_from
        batch = [
            Event(e.timestamp, e.created, e.module, dict(e.fields), e.raw)
            for e in events[start : start + 37]
        ]
        await store.insert_events(batch)
    return store


async def everything(store: Store, query: Query, max_scan: int) -> list[tuple[int, bytes]]:
    """Every match, following the cursor to the end."""
    found: list[tuple[int, bytes]] = []
    cursor = None
    for _ in range(10_000):
        r = await search.find_events(store, query, limit=25, before_id=cursor, max_scan=max_scan)
        found += [(e.id or 0, e.fields.get("message", "").encode()) for e in r.events]
        cursor = r.next_cursor
        if cursor is None:
            return found
    raise AssertionError("cursor never ended")


QUERIES: list[tuple[dict[str, list[str]], str | None]] = [
    ({"user.name": ["user7"]}, None),
    ({"user.name": ["legacy-only"]}, None),  # only in unindexed segments
    ({"host.hostname": ["old-host"]}, None),
    ({"user.name": ["user7", "user8"]}, None),
    ({"event.type": ["denied"]}, None),  # list-valued
    ({"event.category": ["network"], "event.type": ["end"]}, None),
    ({"source.ip": ["10.1.2.3"]}, None),
    ({"source.ip": ["192.0.2.3"]}, None),  # events without source.ip: their device
    ({"source.ip": ["10.1.0.0/16"]}, None),  # CIDR: not indexed, scanned
    ({"destination.port": ["443"]}, None),
    ({"destination.port": ["400..1000"]}, None),
    ({"event.duration": ["5"]}, None),  # a float field holding 5.0
    ({"event.duration": ["0"]}, None),
    ({"event.duration": ["2.5"]}, None),
    ({"event.duration": ["1e-07"]}, None),
    ({"event.severity": [">=8"]}, None),
    ({"tls.established": ["true"]}, None),
    ({"event.module": ["netflow"]}, None),
    ({"user.name": ["nobody-has-this"]}, None),
    ({}, "user7 "),
    ({}, "ser1"),
    ({}, "198.51.100.7:443"),
    ({}, '"quoted \\ back"'),
    ({}, "für Benutzer"),
    ({}, "e\tT"),
    ({}, "line one\nline"),
    ({}, "raw-only-token"),  # in the raw text only: q= searches the message
    ({}, "ab"),  # too short for a trigram: scanned
    ({}, "no such text anywhere"),
    ({"user.name": ["user3"]}, "Failed password"),
]


async def test_answers_are_the_same_with_and_without_the_index(tmp_path: Path) -> None:
    rng = random.Random(5)
    events = [event(i, rng, old=i < 300 and i % 50 == 3) for i in range(1500)]
    mixed = await fill(tmp_path / "mixed.db", events, indexed_from=37 * 9)
    plain = await fill(tmp_path / "plain.db", events, indexed_from=None)
    try:
        async with mixed.reader.execute("SELECT count(*) FROM event_index") as cur:  # type: ignore[union-attr]
            assert (await cur.fetchone())[0] > 0  # type: ignore[index]
        for filters, text in QUERIES:
            conds = [parse_condition(name, values) for name, values in filters.items()]
            for since in (None, T0 + 700):
                query = Query(since=since, conditions=conds, text=text)
                for max_scan in (50, 200_000):
                    want = await everything(plain, query, max_scan)
                    got = await everything(mixed, query, max_scan)
                    assert got == want, (filters, text, since, max_scan)
            if filters:
                name = next(iter(filters))
                query = Query(conditions=conds, text=text)
                a = await search.count_by(mixed, query, name, before_id=None, max_scan=200_000)
                b = await search.count_by(plain, query, name, before_id=None, max_scan=200_000)
                assert (a.counts, a.missing) == (b.counts, b.missing)
        # The value only old segments hold was found there.
        old = Query(conditions=[parse_condition("user.name", ["legacy-only"])])
        assert len(await everything(mixed, old, 200_000)) == 6
    finally:
        await mixed.close()
        await plain.close()


async def test_an_indexed_query_covers_the_store_past_the_scan_span(tmp_path: Path) -> None:
    rng = random.Random(1)
    events = [event(i, rng) for i in range(740)]
    events[100].fields["user.name"] = "needle"
    store = await fill(tmp_path / "s.db", events, indexed_from=0)
    try:
        absent = Query(text="no such text")
        r = await search.find_events(store, absent, limit=10, before_id=None, max_scan=4)
        # 20 ids of SQL span per window, 37 events a segment: unindexed, this needed dozens of
        # requests; the filters rule out every segment in one, reading no line.
        assert (r.scanned, r.events, r.next_cursor) == (0, [], None)
        rare = Query(conditions=[parse_condition("user.name", ["needle"])])
        r = await search.find_events(store, rare, limit=10, before_id=None, max_scan=200_000)
        assert [e.id for e in r.events] == [101]
        assert r.scanned <= 37  # only the segment holding it was parsed
    finally:
        await store.close()


async def test_unindexed_segments_bound_how_far_an_indexed_query_goes(tmp_path: Path) -> None:
    rng = random.Random(2)
    store = await fill(tmp_path / "s.db", [event(i, rng) for i in range(740)], indexed_from=None)
    try:
        r = await search.find_events(
            store, Query(text="no such text"), limit=10, before_id=None, max_scan=4
        )
        assert r.next_cursor is not None  # one span of blob reads, then a cursor, as before
    finally:
        await store.close()


def _bodies() -> list[bytes]:
    rng = random.Random(9)
    out = []
    for n in (1, 3, 37, 1024):
        lines = []
        for i in range(n):
            e = event(i, rng)
            lines.append(encode_line(e.timestamp, e.created, e.module, e.fields, e.raw))
        out.append(b"\n".join(lines))
    return out


@pytest.mark.skipif(dataplane.native is None, reason="the Rust extension is not loaded")
def test_the_native_filter_is_the_reference_byte_for_byte() -> None:
    assert dataplane.native is not None
    for body in _bodies():
        assert dataplane.native.segment_bloom(body) == segindex.bloom_reference(body)
    # Hostile bytes: cut lines, stray quotes and escapes, deep nesting, invalid UTF-8.
    rng = random.Random(11)
    pieces = [b'[1,2,"m",{', b'"message":"', b'"k":', b'\\"', b"\\", b"[[", b"]}", b"\n"]
    for _ in range(300):
        body = b"".join(
            rng.choice(pieces) if rng.random() < 0.6 else rng.randbytes(rng.randrange(8))
            for _ in range(rng.randrange(30))
        )
        assert dataplane.native.segment_bloom(body) == segindex.bloom_reference(body), body


@pytest.mark.skipif(dataplane.native is None, reason="the Rust extension is not loaded")
def test_finished_segments_are_handed_over_once_the_job_eventfd_is_readable() -> None:
    assert dataplane.native is not None
    bodies = [*_bodies(), b"", b"\xff\xfe not text"]
    job = dataplane.native.FinishSegments(bodies, True)
    readable, _, _ = select.select([job.fileno], [], [], 10)
    assert readable == [job.fileno]
    got = job.result()
    assert [f for _, f in got] == [segindex.bloom_reference(body) for body in bodies]
    assert [segment_text(stored) for stored, _ in got] == bodies
    assert got[3][0].startswith(ZSTD_MAGIC)  # the 1024 lines, packed
    assert got[-1][0] == bodies[-1]  # bytes that do not shrink stay as they are
    assert job.result() is None  # handed over once
    empty = dataplane.native.FinishSegments([], True)
    assert select.select([empty.fileno], [], [], 10)[0] == [empty.fileno]
    assert empty.result() == []


@pytest.mark.skipif(dataplane.native is None, reason="the Rust extension is not loaded")
def test_a_native_job_asked_for_no_filters_packs_the_bodies_only() -> None:
    assert dataplane.native is not None
    bodies = _bodies()
    job = dataplane.native.FinishSegments(bodies, False)
    select.select([job.fileno], [], [], 10)
    got = job.result()
    assert [f for _, f in got] == [None] * len(bodies)
    assert [segment_text(stored) for stored, _ in got] == bodies
    assert all(stored.startswith(ZSTD_MAGIC) for stored, _ in got[1:])


@pytest.mark.skipif(dataplane.native is None, reason="the Rust extension is not loaded")
async def test_the_store_awaits_the_rows_finish_rows_would_make() -> None:
    events = [Event(T0 + i, T0 + i, "syslog", {"message": f"m {i}"}) for i in range(3000)]
    for i, e in enumerate(events):
        e.id = i + 1
    rows = segment_rows(events, 8192)
    assert len(rows) == 3
    native_rows, native_index = await finish_rows_beside(rows, True)
    reference_rows, reference_index = finish_rows(rows, True)
    assert native_index == reference_index
    assert [r[:7] for r in native_rows] == [r[:7] for r in reference_rows] == [r[:7] for r in rows]
    assert [segment_text(r[7]) for r in native_rows] == [r[7] for r in rows]
    assert [segment_text(r[7]) for r in reference_rows] == [r[7] for r in rows]
    assert all(r[7].startswith(ZSTD_MAGIC) for r in native_rows + reference_rows)


def test_a_filter_holds_its_terms_and_its_size_is_bounded() -> None:
    for body in _bodies():
        found = segindex.terms(body)
        f = segindex.bloom_reference(body)
        assert segindex.may_hold(f, found)
        assert len(f) == 2 + (1 << segindex.log2_bits(len(found))) // 8
        assert len(f) <= 2 + (1 << segindex.MAX_LOG2) // 8
    # A pathological body (every token distinct) still gets a filter of at most 128 KiB.
    assert segindex.log2_bits(10**9) == segindex.MAX_LOG2


def test_conditions_the_index_cannot_answer_give_no_probe() -> None:
    for name, values in (
        ("source.ip", ["10.0.0.0/8"]),
        ("destination.port", ["1..1023"]),
        ("event.duration", ["2.5"]),
        ("event.count", ["10000000000000000"]),
        ("source.ip", ["10.0.0.1", "10.0.0.0/8"]),
    ):
        assert parse_condition(name, values).index_group() is None
    assert Query(text="ab").index_probe() == []
    assert (
        len(Query(text="abc", conditions=[parse_condition("user.name", ["x"])]).index_probe()) == 2
    )


async def test_retention_deletes_filters_with_their_segments(tmp_path: Path) -> None:
    rng = random.Random(3)
    store = await fill(tmp_path / "s.db", [event(i, rng) for i in range(370)], indexed_from=0)
    try:
        deleted = await delete_before(store, 37 * 4 + 6)  # four segments and a segment's head
        assert deleted == 37 * 4 + 5
        conn = store.reader
        assert conn is not None
        async with conn.execute(
            "SELECT count(*) FROM event_index WHERE first_id NOT IN"
            " (SELECT first_id FROM event_segments)"
        ) as cur:
            assert (await cur.fetchone()) == (0,)
        async with conn.execute(
            "SELECT count(*) FROM event_segments s JOIN event_index i USING (first_id)"
        ) as cur:
            assert (await cur.fetchone()) == (6,)  # the trimmed segment kept its filter
        q = Query(conditions=[parse_condition("user.name", ["user5"])])
        found = await everything(store, q, 200_000)
        assert found and all(i >= 37 * 4 + 6 for i, _ in found)
    finally:
        await store.close()


async def test_a_segment_and_its_filter_commit_together_or_not_at_all(tmp_path: Path) -> None:
    rng = random.Random(4)
    store = await fill(tmp_path / "s.db", [event(i, rng) for i in range(10)], indexed_from=0)
    try:
        assert store.writer is not None
        await store.writer.execute("DROP TABLE event_index")  # the index write now fails
        with pytest.raises(sqlite3.OperationalError):
            await store.insert_events([event(99, rng)])
        assert await store.count_events() == 10
    finally:
        await store.close()


async def test_a_database_from_before_the_index_opens_and_is_searched(tmp_path: Path) -> None:
    rng = random.Random(6)
    path = tmp_path / "old.db"
    store = await fill(path, [event(i, rng) for i in range(100)], indexed_from=None)
    assert store.writer is not None
    await store.writer.execute("DROP TABLE event_index")
    await store.writer.execute("DROP TABLE flow_rollup_writes")  # 0015's, after it
    await store.writer.execute("PRAGMA user_version=13")
    await store.close()
    store = Store(path)
    await store.open()  # migration 0014 adds the table; nothing is rebuilt
    try:
        await store.insert_events([event(200, rng)])
        async with store.reader.execute("SELECT count(*) FROM event_index") as cur:  # type: ignore[union-attr]
            assert (await cur.fetchone()) == (1,)
        q = Query(conditions=[parse_condition("user.name", ["user1"])])
        assert await everything(store, q, 200_000)
    finally:
        await store.close()


async def test_backfill_indexes_old_segments_and_answers_stay_the_same(tmp_path: Path) -> None:
    rng = random.Random(8)
    events = [event(i, rng) for i in range(400)]
    events[50].fields["user.name"] = "needle"
    store = await fill(tmp_path / "s.db", events, indexed_from=37 * 5)
    try:
        query = Query(conditions=[parse_condition("user.name", ["needle"])])
        before = await everything(store, query, 200_000)
        assert await store.backfill_index(batch=2) == 5
        assert await store.backfill_index() == 0  # nothing left to do
        conn = store.reader
        assert conn is not None
        async with conn.execute(
            "SELECT count(*) FROM event_segments WHERE first_id NOT IN"
            " (SELECT first_id FROM event_index)"
        ) as cur:
            assert (await cur.fetchone()) == (0,)
        assert await everything(store, query, 200_000) == before == [(51, before[0][1])]
    finally:
        await store.close()


async def test_appliance_db_index_backfills_a_database_from_before_the_index(
    tmp_path: Path,
) -> None:
    from tests.test_db_restore import cli, config_file

    rng = random.Random(10)
    store = await fill(
        tmp_path / "data" / "appliance.db", [event(i, rng) for i in range(111)], None
    )
    await store.close()
    done = cli("db", "index", "--config", str(config_file(tmp_path)))
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "indexed 3 segments"
    conn = sqlite3.connect(tmp_path / "data" / "appliance.db")
    try:
        rows = conn.execute("SELECT count(*) FROM event_index").fetchone()
    finally:
        conn.close()
    assert rows == (3,)
