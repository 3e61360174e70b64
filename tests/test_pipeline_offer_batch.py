"""``Pipeline.offer_batch`` (the syslog batch path's one call per slice) keeps ``offer``'s books:
the same events queued with their listener and stored line, each one past the queue's limit
counted as a drop by reason, and the queued events stored."""

from __future__ import annotations

import asyncio
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
