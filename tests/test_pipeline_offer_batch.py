"""``Pipeline.offer_batch`` (the syslog batch path's one call per slice) keeps ``offer``'s books:
the same events queued with their listener and stored line, each one past the queue's limit
counted as a drop by reason, and the queued events stored."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

from appliance.event import Event
from appliance.metrics import Registry
from appliance.pipeline.bus import Pipeline
from appliance.store import Store
from appliance.store.segments import encode_line


def queued(pipeline: Pipeline) -> list[Event]:
    """The events waiting in the queue, in order (it holds them in chunks)."""
    return [e for chunk in pipeline._queue for e in chunk.events]


def events(n: int) -> list[Event]:
    return [
        Event(1_800_000_000.0 + k, 1_800_000_000.5, "syslog", {"message": f"m{k}"}, b"raw %d" % k)
        for k in range(n)
    ]


async def test_offer_batch_queues_and_counts_as_offer_one_by_one(tmp_path: Path) -> None:
    store = Store(tmp_path / "a.db")
    one, batch = (Pipeline(store, Registry(), queue_size=7) for _ in range(2))
    for e in events(10):
        one.offer(e, "udp-a")
    assert batch.offer_batch(events(10), "udp-a") == 7
    assert batch.dropped.values == one.dropped.values == {("udp-a", "queue_full"): 3}
    assert [(e.fields, e.listener, e.line) for e in queued(batch)] == [
        (e.fields, e.listener, e.line) for e in queued(one)
    ]
    first = queued(batch)[0]
    assert first.line == encode_line(
        first.timestamp, first.created, "syslog", first.fields, b"raw 0"
    )


async def test_offer_batch_keeps_a_line_already_encoded(tmp_path: Path) -> None:
    pipeline = Pipeline(Store(tmp_path / "a.db"), Registry())
    e = events(1)[0]
    e.line = b'[1,2,"syslog",{},null]'
    pipeline.offer_batch([e], "udp-a")
    assert queued(pipeline)[0].line == b'[1,2,"syslog",{},null]'


async def test_offer_batch_events_reach_the_store(tmp_path: Path) -> None:
    store = Store(tmp_path / "a.db")
    await store.open()
    pipeline = Pipeline(store, Registry(), batch_size=4, flush_interval=0.01)
    pipeline.start()
    try:
        assert pipeline.offer_batch(events(9), "udp-a") == 9
        for _ in range(500):
            if await store.count_events() == 9:
                break
            await asyncio.sleep(0.01)
        assert await store.count_events() == 9
    finally:
        await pipeline.stop(5.0)
        await store.close()


def lined(n: int, source: str) -> tuple[list[Event], int]:
    """Events as the native stream path makes them: line and listener set, the lines' total."""
    out = events(n)
    for e in out:
        e.line = encode_line(e.timestamp, e.created, e.module, e.fields, e.raw)
        e.listener = source
    return out, sum(len(e.line or b"") for e in out)


async def test_offer_batch_with_line_bytes_keeps_the_same_books(tmp_path: Path) -> None:
    store = Store(tmp_path / "a.db")
    plain, known = (Pipeline(store, Registry(), queue_size=20) for _ in range(2))
    batch, total = lined(10, "tcp-a")
    assert plain.offer_batch(events(10), "tcp-a") == known.offer_batch(batch, "tcp-a", total)
    assert known._bytes == plain._bytes == total
    assert [(e.fields, e.listener, e.line) for e in queued(known)] == [
        (e.fields, e.listener, e.line) for e in queued(plain)
    ]
    assert known._batch_ready.is_set() == plain._batch_ready.is_set()


async def test_offer_batch_with_line_bytes_past_the_limit_counts_each_event_lost(
    tmp_path: Path,
) -> None:
    pipeline = Pipeline(Store(tmp_path / "a.db"), Registry(), queue_size=7)
    batch, total = lined(10, "tcp-a")
    assert pipeline.offer_batch(batch, "tcp-a", total) == 7
    assert pipeline.dropped.values == {("tcp-a", "queue_full"): 3}
    assert pipeline._bytes == sum(len(e.line or b"") for e in batch[:7])


def test_a_batch_within_the_byte_budget_is_taken_whole_and_the_count_returns_to_zero(
    tmp_path: Path,
) -> None:
    pipeline = Pipeline(Store(tmp_path / "a.db"), Registry(), batch_size=4)
    batch, total = lined(10, "tcp-a")
    pipeline.offer_batch(batch, "tcp-a", total)
    sizes = [len(e.line or b"") for e in batch]
    assert pipeline._take_batch()[0] == batch[:4]
    assert pipeline._bytes == total - sum(sizes[:4])
    assert pipeline._take_batch()[0] == batch[4:8]
    assert pipeline._take_batch()[0] == batch[8:]
    assert pipeline._bytes == 0 and len(pipeline) == 0


# ------------------------------------------------ the queue holds chunks, one per offer_batch


def test_a_batch_takes_whole_chunks_and_splits_the_last(tmp_path: Path) -> None:
    pipeline = Pipeline(Store(tmp_path / "a.db"), Registry(), batch_size=6)
    a, a_bytes = lined(4, "tcp-a")
    b, b_bytes = lined(4, "tcp-b")
    pipeline.offer_batch(a, "tcp-a", a_bytes)
    pipeline.offer_batch(b, "tcp-b", b_bytes)
    taken, sources = pipeline._take_batch()
    assert taken == a + b[:2]
    assert sources == [("tcp-a", 4), ("tcp-b", 2)]
    assert len(pipeline) == 2
    assert pipeline._bytes == sum(len(e.line or b"") for e in b[2:])
    assert pipeline._take_batch() == (b[2:], [("tcp-b", 2)])
    assert len(pipeline) == 0 and pipeline._bytes == 0


def test_a_list_handed_to_offer_batch_is_left_as_it_was_when_a_batch_splits_it(
    tmp_path: Path,
) -> None:
    pipeline = Pipeline(Store(tmp_path / "a.db"), Registry(), batch_size=3)
    batch, total = lined(5, "tcp-a")
    given = list(batch)
    pipeline.offer_batch(batch, "tcp-a", total)
    pipeline.offer(events(1)[0], "tcp-a")  # joins no list it was not given
    assert pipeline._take_batch()[0] == given[:3]
    assert batch == given
    assert len(pipeline._take_batch()[0]) == 3


def test_the_byte_budget_splits_a_chunk_at_the_event_that_crosses_it(tmp_path: Path) -> None:
    batch, total = lined(10, "tcp-a")
    sizes = [len(e.line or b"") for e in batch]
    # A quarter of queue_bytes holds the first two lines and half the third.
    budget = sizes[0] + sizes[1] + sizes[2] // 2
    pipeline = Pipeline(Store(tmp_path / "a.db"), Registry(), queue_bytes=4 * budget)
    assert pipeline.offer_batch(batch, "tcp-a", total) == 10
    assert pipeline._take_batch() == (batch[:2], [("tcp-a", 2)])
    assert pipeline._bytes == total - sizes[0] - sizes[1]
    assert len(pipeline) == 8


def test_a_line_larger_than_the_byte_budget_is_a_batch_of_its_own(tmp_path: Path) -> None:
    batch, total = lined(3, "tcp-a")
    pipeline = Pipeline(Store(tmp_path / "a.db"), Registry(), queue_bytes=4 * 10)
    pipeline.offer_batch(batch, "tcp-a", total)
    assert [pipeline._take_batch()[0] for _ in range(3)] == [[e] for e in batch]
    assert pipeline._bytes == 0 and len(pipeline) == 0


def test_len_room_and_wanted_count_events_across_chunks(tmp_path: Path) -> None:
    pipeline = Pipeline(Store(tmp_path / "a.db"), Registry(), queue_size=20, batch_size=5)
    pipeline.offer_batch(events(6), "udp-a")
    for e in events(3):
        pipeline.offer(e, "snmp")
    pipeline.offer_batch(events(4), "udp-b")
    assert len(pipeline) == 13 and len(pipeline._queue) == 3  # the three traps: one chunk
    assert pipeline.room() == 7
    assert pipeline.wanted() == 0  # two batches (10 events) queued already
    pipeline._take_batch()  # five of the first chunk
    assert len(pipeline) == 8 and pipeline.room() == 12 and pipeline.wanted() == 2
    assert pipeline.offer_batch(events(15), "udp-a") == 12
    assert len(pipeline) == 20 and pipeline.room() == 0 and not pipeline.has_room()
    assert pipeline.dropped.values == {("udp-a", "queue_full"): 3}


def test_offer_groups_one_sources_run_of_events_and_keeps_the_order_across_sources(
    tmp_path: Path,
) -> None:
    pipeline = Pipeline(Store(tmp_path / "a.db"), Registry(), batch_size=100)
    offered = events(7)
    for e, source in zip(offered, "aaabbaa", strict=True):
        pipeline.offer(e, source)
    taken, sources = pipeline._take_batch()
    assert taken == offered
    assert sources == [("a", 3), ("b", 2), ("a", 2)]


class FillingStore:
    """A store whose disk fills: it refuses the first insert, takes the next ``pieces``, then
    refuses every insert (``database or disk is full``)."""

    raw_max_bytes = 8192

    def __init__(self, pieces: int) -> None:
        self.pieces = pieces
        self.inserts = 0
        self.stored: list[Event] = []

    def wal_checkpoint_bytes(self) -> int:
        return 1  # space is short: one event a transaction

    async def insert_events(self, batch: list[Event]) -> None:
        self.inserts += 1
        if self.inserts == 1 or self.inserts > 1 + self.pieces:
            raise sqlite3.OperationalError("database or disk is full")
        self.stored.extend(batch)


async def test_a_held_batch_and_the_shed_queue_are_counted_as_dropped_by_source() -> None:
    store = FillingStore(pieces=3)
    pipeline = Pipeline(store, Registry(), batch_size=6, flush_interval=0.01)  # type: ignore[arg-type]
    a, b = events(4), events(4)
    pipeline.offer_batch(a, "udp-a")
    pipeline.offer_batch(b, "udp-b")
    pipeline.start()
    for _ in range(500):  # the batch a + b[:2] is held, b[2:] shed, three pieces stored
        if store.inserts > 6:
            break
        await asyncio.sleep(0.01)
    assert await pipeline.stop(5.0)
    assert store.stored == a[:3]
    assert pipeline.stored.value() == 3
    assert pipeline.dropped.values == {("udp-a", "store_full"): 1, ("udp-b", "store_full"): 4}
    assert len(pipeline) == 0 and pipeline._bytes == 0
