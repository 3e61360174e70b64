"""What a queued event holds in memory: its stored line is no larger than its bytes."""

from __future__ import annotations

import asyncio
import socket
import tracemalloc
from pathlib import Path
from typing import Any

import pytest

from appliance.event import Event
from appliance.metrics import Registry
from appliance.pipeline.bus import Pipeline
from appliance.store import Store
from appliance.store.segments import encode_line
from tests.test_pipeline_offer_batch import queued


def test_an_encoded_line_holds_no_buffer_beyond_its_own_bytes() -> None:
    # orjson hands back its output buffer unshrunk (4-8 KiB for a 1 KB line); a line waits in
    # the pipeline queue, so the slack would be held once per queued event.
    fields = {"message": "m" * 600, "host.hostname": "h", "log.syslog.priority": 13}
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        line = encode_line(1000.0, 1000.0, "syslog", fields, b"<13>" + b"r" * 250)
        held = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert 900 < len(line) < 1024
    assert held < len(line) + 128, f"{held} bytes held for a {len(line)}-byte line"


# ------------------------------------------------------------------ the queue's bound in bytes


def queued_event(n: int, size: int = 400) -> Event:
    return Event(1000.0, 1000.0, "syslog", {"message": f"m{n} " + "x" * size})


async def test_the_queue_refuses_past_queue_bytes_and_counts_queue_full(tmp_path: Path) -> None:
    store = Store(tmp_path / "a.db")
    await store.open()
    try:
        registry = Registry()
        pipeline = Pipeline(store, registry, queue_bytes=2000)  # not started: nothing drains
        taken = 0
        while pipeline.offer(queued_event(taken), "src"):
            taken += 1
        # The event that crosses the bound is the last taken: ~450-byte lines, 2000 bytes.
        assert taken == 5
        assert pipeline.dropped.value("src", "queue_full") == 1
        assert not pipeline.has_room()
        assert not pipeline.wants_more()
        gauges = registry_values(registry)
        assert gauges["appliance_queue_bytes"] == sum(len(e.line or b"") for e in queued(pipeline))
        assert gauges["appliance_queue_bytes_capacity"] == 2000
    finally:
        await store.close()


async def test_sources_stop_decoding_at_half_of_queue_bytes(tmp_path: Path) -> None:
    store = Store(tmp_path / "a.db")
    await store.open()
    try:
        pipeline = Pipeline(store, Registry(), queue_bytes=4000, batch_size=1000)
        while pipeline.wants_more():
            assert pipeline.offer(queued_event(len(pipeline)), "src")
        assert pipeline.has_room()  # raw input waits upstream well before anything is refused
        assert 2000 <= pipeline._bytes < 2000 + 500
    finally:
        await store.close()


class RecordBatches:
    """An after-store stage that keeps the line bytes of each batch it is given."""

    name = "record"

    def __init__(self) -> None:
        self.batches: list[int] = []

    async def process(self, events: list[Event], now: float) -> None:
        self.batches.append(sum(len(e.line or b"") for e in events))


async def test_a_batch_holds_at_most_a_quarter_of_queue_bytes(tmp_path: Path) -> None:
    store = Store(tmp_path / "a.db")
    await store.open()
    pipeline = Pipeline(store, Registry(), queue_bytes=8000, batch_size=1000, flush_interval=5)
    record = RecordBatches()
    pipeline.after_store.append(record)
    pipeline.start()
    try:
        for i in range(60):  # ~27 KB of lines: more than the bound, offered as room returns
            if not pipeline.has_room():
                room = asyncio.Event()
                pipeline.call_when_room(room.set)
                await asyncio.wait_for(room.wait(), 10)
            assert pipeline.offer(queued_event(i), "src")
        await pipeline.stop(10.0)
        assert pipeline.stored.value() == 60
        assert pipeline.dropped.total() == 0
        assert len(record.batches) >= 60 * 450 // 2000
        assert all(b <= 2000 for b in record.batches), record.batches
    finally:
        await store.close()


async def test_the_byte_count_returns_to_zero_once_everything_is_stored(tmp_path: Path) -> None:
    store = Store(tmp_path / "a.db")
    await store.open()
    pipeline = Pipeline(store, Registry(), queue_bytes=8000, batch_size=7, flush_interval=0.01)
    pipeline.start()
    try:
        for i in range(15):
            assert pipeline.offer(queued_event(i), "src")
        for _ in range(500):
            if pipeline.stored.value() == 15:
                break
            await asyncio.sleep(0.01)
        assert pipeline.stored.value() == 15
        assert pipeline._bytes == 0
        assert pipeline.wants_more()
    finally:
        await pipeline.stop(5.0)
        await store.close()


async def test_a_paused_source_resumes_when_a_batch_is_taken_not_once_it_is_stored(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The source decodes the next batch while this one is written: resumed only after the
    # write, the event loop sat idle through every other insert.
    store = Store(tmp_path / "a.db")
    await store.open()
    written = asyncio.Event()
    insert = store.insert_events

    async def held_insert(events: list[Event]) -> None:
        await written.wait()
        await insert(events)

    monkeypatch.setattr(store, "insert_events", held_insert)
    pipeline = Pipeline(store, Registry(), queue_bytes=8000, batch_size=1000, flush_interval=5)
    i = 0
    while pipeline.wants_more():  # half of queue_bytes: two batches of a quarter each
        assert pipeline.offer(queued_event(i), "src")
        i += 1
    resumed = asyncio.Event()
    pipeline.call_when_room(resumed.set)
    pipeline.start()
    try:
        await asyncio.wait_for(resumed.wait(), 10)
        assert pipeline.stored.value() == 0  # the taken batch is still being written
        assert pipeline.wants_more()
    finally:
        written.set()
        await pipeline.stop(10.0)
        await store.close()
    assert pipeline.stored.value() == i


# ------------------------------------------------- sources upstream of the bound hold raw input


@pytest.mark.usefixtures("backend")
async def test_a_stream_pauses_at_the_byte_bound_and_resumes_losing_nothing(
    start_appliance: Any,
) -> None:
    run = await start_appliance(
        pipeline={"queue_bytes": 4096, "batch_size": 1000, "flush_interval": 0.01},
        sources={"syslog": [{"protocol": "tcp", "listen": "127.0.0.1:0"}]},
    )
    n = 3000
    payload = b"".join(b"<13>app: msg %d\n" % i for i in range(n))
    loop = asyncio.get_running_loop()
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setblocking(False)
        await loop.sock_connect(s, run.source().address)
        await loop.sock_sendall(s, payload)
    await run.wait_stored(n, timeout=30)
    assert run.app.pipeline.dropped.total() == 0
    assert run.source().paused.value("syslog-tcp") >= 1  # it paused, and so resumed
    body = await run.get_json("/api/v1/events", limit=10, q="msg 2999")
    assert [e["message"] for e in body["events"]] == ["msg 2999"]


@pytest.mark.exclusive  # a starved reader would leave the burst to the kernel buffer
@pytest.mark.usefixtures("backend")
async def test_a_udp_burst_waits_raw_in_the_backlog_not_refused_at_the_byte_bound(
    start_appliance: Any,
) -> None:
    # 2,000 stored lines of ~0.9 KB against a 256 KiB queue: the reader stops decoding at half
    # of it (asking every 64 datagrams, ~58 KB of lines), the rest waits raw in its backlog,
    # and none is refused as queue_full.
    run = await start_appliance(
        pipeline={"queue_bytes": 262144, "batch_size": 1000, "flush_interval": 0.01},
    )
    n = 2000
    addr = run.source().address
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        for i in range(n):
            s.sendto(b"<13>app: burst %06d " % i + b"x" * 200, addr)
    await run.wait_for(
        lambda: run.app.pipeline.stored.total() + run.app.pipeline.dropped.total() >= n, 30
    )
    p = run.app.pipeline
    assert p.dropped.total() == 0, p.dropped.values
    assert p.stored.total() == n


def registry_values(registry: Registry) -> dict[str, float]:
    out: dict[str, float] = {}
    for line in registry.render().splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            out[name] = float(value)
    return out
