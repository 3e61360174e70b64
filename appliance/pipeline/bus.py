"""The pipeline: a bounded queue from sources to one task that batches, processes and stores.

Sources call :meth:`Pipeline.offer` (never blocks: UDP sources drop and count when it says
no; stream sources pause reading and register to be resumed). The queue is bounded twice: by
events (``queue_size``) and by the bytes of their stored lines (``queue_bytes``), because a
queued event holds about twice its line in memory (``scripts/bench rss``) and lines run from
a hundred bytes to several kilobytes: a bound in events alone sizes memory for one message
length only. Sources that can hold their input raw (UDP's datagram backlog, a TCP socket)
stop decoding at half of either bound (:meth:`Pipeline.wants_more`), where raw input is the
cheaper thing to hold. One task drains the queue in batches (``batch_size`` events, a quarter
of ``queue_bytes``, or ``flush_interval`` seconds, whichever first), runs the
pre-store stages (enrichment), inserts the batch in one transaction, then runs the post-store
stages (correlation sees events with their ids). Every event offered ends up stored or counted
in ``appliance_events_dropped_total{source,reason}``.

Disk full is a state, not a retry count. When a batch cannot be stored for lack of space even
after the appliance made room (``on_store_full``), the pipeline keeps that batch (the oldest
events waiting) and retries it with backoff, in segment-sized transactions that need little
WAL, for as long as it takes; everything queued or offered meanwhile is dropped as
``store_full`` (drop newest, as rsyslog and Vector do), so memory holds one batch, not a queue
that grows with the outage. The first batch that commits ends the state.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
import time
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Protocol

from appliance.event import Event
from appliance.logutil import RateLimitedLog
from appliance.metrics import Registry
from appliance.store import Store
from appliance.store.errors import write_error_reason
from appliance.store.segments import SEGMENT_EVENTS, encode_line, line_census

log = logging.getLogger(__name__)
_rl = RateLimitedLog(log)


class Stage(Protocol):
    """A processing step over a batch.

    ``before_store`` stages enrich: they may add fields, and call :meth:`Event.changed` on
    each event they change so its stored line is encoded again (the others keep the line
    encoded at :meth:`Pipeline.offer`). ``after_store`` stages (correlation, forwarding) see
    the stored events with their ids and must not change them.
    """

    name: str

    async def process(self, events: list[Event], now: float) -> None: ...


class _Chunk:
    """Events one source offered at once, in order, with their stored lines' bytes (as
    counted into ``Pipeline._bytes``): the queue's unit, so offering, batching and dropping
    cost a step per chunk, not per event. ``own``: the pipeline made the list (:meth:`offer`),
    so the source's next single event may join it and a batch may shorten it in place; a list
    handed to :meth:`offer_batch` is never changed."""

    __slots__ = ("events", "own", "size", "source")

    def __init__(self, events: list[Event], source: str, size: int, own: bool) -> None:
        self.events = events
        self.source = source
        self.size = size
        self.own = own


class Pipeline:
    def __init__(
        self,
        store: Store,
        metrics: Registry,
        *,
        queue_size: int = 200_000,
        queue_bytes: int = 8 * 1024 * 1024,
        batch_size: int = 5_000,
        flush_interval: float = 0.2,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self.queue_size = queue_size
        self.queue_bytes = queue_bytes
        self.batch_size = batch_size
        self.flush_interval = flush_interval
        self.clock = clock
        self.before_store: list[Stage] = []
        self.after_store: list[Stage] = []
        self._queue: deque[_Chunk] = deque()
        self._count = 0  # events in the queue's chunks, against queue_size
        # Bytes of the queued events' stored lines (as encoded at offer), against queue_bytes.
        self._bytes = 0
        self._nonempty = asyncio.Event()
        self._batch_ready = asyncio.Event()
        self._stopping = False
        self._resume_callbacks: list[Callable[[], None]] = []
        self._task: asyncio.Task[None] | None = None
        self._stop_requested = asyncio.Event()
        # offer()'s bound: queue_size, or 0 while the disk is full (see the module docstring).
        self._limit = queue_size
        self.full = False  # a batch is waiting for disk space
        self.held = 0  # events of that batch not yet stored
        self._backoff = 0.0
        self.received = metrics.counter(
            "events_received_total", "Messages received by a source, before any drop.", ["source"]
        )
        self.dropped = metrics.counter(
            "events_dropped_total", "Messages dropped, by source and reason.", ["source", "reason"]
        )
        self.stored = metrics.counter("events_stored_total", "Events committed to SQLite.")
        self.stage_errors = metrics.counter(
            "stage_errors_total", "Exceptions raised by a pipeline stage (events kept).", ["stage"]
        )
        self.batches = metrics.counter("store_batches_total", "Event batches committed.")
        self.store_full = metrics.counter(
            "store_full_total", "Batch inserts that failed because the disk or database is full."
        )
        # Called when an insert fails for lack of space; the appliance makes room (sheds its
        # oldest events) and says whether it freed anything worth an immediate retry.
        self.on_store_full: Callable[[], Awaitable[bool]] | None = None
        # Called before each insert with the batch's size in bytes: room is made *before*
        # the disk fills, while deleting and checkpointing still can (the appliance's hook).
        # It says whether space is short (then the batch is stored in small transactions).
        self.before_insert: Callable[[int], Awaitable[bool]] | None = None
        metrics.gauge(
            "queue_depth",
            "Events waiting in the pipeline queue.",
            callback=lambda: float(self._count),
        )
        metrics.gauge(
            "queue_capacity",
            "Pipeline queue limit (pipeline.queue_size).",
            callback=lambda: float(self.queue_size),
        )
        metrics.gauge(
            "queue_bytes",
            "Bytes of the stored lines of the events waiting in the pipeline queue.",
            callback=lambda: float(self._bytes),
        )
        metrics.gauge(
            "queue_bytes_capacity",
            "Pipeline queue limit in bytes of stored lines (pipeline.queue_bytes).",
            callback=lambda: float(self.queue_bytes),
        )

    # ------------------------------------------------------------------------ source side

    def offer(self, event: Event, source: str) -> bool:
        """Queue an event; ``False`` (and a ``queue_full`` drop counted) when the queue is full
        (``queue_size`` events, or ``queue_bytes`` of lines: the event that crosses it is the
        last taken).

        The event is encoded into its stored line here, while its dict is still in the CPU's
        cache: encoding the same events later, a batch at a time, profiled 3-4 times slower.
        So nothing may change an event's fields between ``offer`` and the store.
        """
        if self._count >= self._limit or self._bytes >= self.queue_bytes or self._stopping:
            self.dropped.inc(source, self._refusal())
            return False
        line = event.line
        if line is None:
            line = self.encode(event)
        event.listener = source
        size = len(line)
        q = self._queue
        # A source offering one event at a time (SNMP traps, the UDP decode workers' lines)
        # grows its chunk rather than queueing one per event (measured cheaper).
        if q and (last := q[-1]).own and last.source == source:
            last.events.append(event)
            last.size += size
        else:
            q.append(_Chunk([event], source, size, True))
        self._bytes += size
        n = self._count = self._count + 1
        if n == 1:
            self._nonempty.set()
        if n >= self.batch_size or self._bytes >= self.queue_bytes >> 2:
            self._batch_ready.set()
        return True

    def offer_batch(self, events: list[Event], source: str, line_bytes: int | None = None) -> int:
        """:meth:`offer` for a batch (a source's native batch path): the events that fit the
        event bound are queued, each one past it is counted as :meth:`offer` would count it.
        The byte bound is checked once, as the batch arrives: the batch that crosses it is
        the last taken, whole (a stream source asked :meth:`wanted` first, and a frame it
        decoded must not be dropped for the bytes of its neighbours). Returns how many were
        queued. The queue keeps ``events`` itself as one chunk: the caller hands the list
        over and must not change it afterwards.

        ``line_bytes``: the caller made every event with its stored line and ``listener``
        (``source``) set, and this is the lines' total (the native stream path), so a batch
        that fits is queued without a step per event."""
        if not events:
            return 0
        room = 0 if self._bytes >= self.queue_bytes else self.room()
        if line_bytes is not None and room >= len(events):
            take = events
        else:
            take = events[:room] if room < len(events) else events
            line_bytes = 0
            encode = self.encode
            for event in take:
                line = event.line
                if line is None:
                    line = encode(event)
                event.listener = source
                line_bytes += len(line)
            lost = len(events) - len(take)
            if lost:
                self.dropped.inc(source, self._refusal(), n=lost)
            if not take:
                return 0
        self._queue.append(_Chunk(take, source, line_bytes, False))
        self._bytes += line_bytes
        before = self._count
        n = self._count = before + len(take)
        if not before:
            self._nonempty.set()
        if n >= self.batch_size or self._bytes >= self.queue_bytes >> 2:
            self._batch_ready.set()
        return len(take)

    def _refusal(self) -> str:
        """The drop reason of an event the queue does not take now."""
        return "shutting_down" if self._stopping else "store_full" if self.full else "queue_full"

    def encode(self, event: Event) -> bytes:
        """Encode the line the store keeps from the event as it is now."""
        line = event.line = encode_line(
            event.timestamp,
            event.created,
            event.module,
            event.fields,
            event.raw[: self.store.raw_max_bytes],
        )
        return line

    def room(self) -> int:
        """How many events :meth:`offer` would take now (a stream source decoding a chunk
        asks, so that none of it is dropped for want of room)."""
        if self._stopping or self._bytes >= self.queue_bytes:
            return 0
        return max(0, self._limit - self._count)

    def has_room(self) -> bool:
        return self._count < self._limit and self._bytes < self.queue_bytes

    def wants_more(self) -> bool:
        """Whether a source holding raw input should decode more now: two batches (or half of
        ``queue_bytes``) queued are enough to keep the store busy, and raw input is the
        cheaper thing to hold."""
        return self._count < 2 * self.batch_size and self._bytes < self.queue_bytes >> 1

    def wanted(self) -> int:
        """How many more events a source holding raw input should decode now: what
        :meth:`wants_more` allows (two batches queued) and the queue takes. A source decoding
        a chunk at a time asks, so the queue grows no further than one event at a time would
        grow it."""
        if not self.wants_more():
            return 0
        return min(self.room(), 2 * self.batch_size - self._count)

    def call_when_room(self, callback: Callable[[], None]) -> None:
        """Call ``callback`` once less than one batch is queued (paused sources resume)."""
        self._resume_callbacks.append(callback)

    def __len__(self) -> int:
        return self._count

    # ------------------------------------------------------------------------ consumer side

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="pipeline")

    async def stop(self, timeout: float) -> bool:
        """Stop taking events, drain what is queued into the store; ``False`` if time ran out."""
        self._stopping = True
        self._stop_requested.set()
        self._nonempty.set()
        self._batch_ready.set()
        if self._task is None:
            return True
        try:
            await asyncio.wait_for(asyncio.shield(self._task), timeout)
            return True
        except TimeoutError:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._shed("shutdown_timeout")
            return False

    async def _run(self) -> None:
        while True:
            if not self._count:
                if self._stopping:
                    return
                self._nonempty.clear()
                await self._nonempty.wait()
                continue
            if (
                self._count < self.batch_size
                and self._bytes < self.queue_bytes >> 2
                and not self._stopping
            ):
                self._batch_ready.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._batch_ready.wait(), self.flush_interval)
            events, sources = self._take_batch()
            if self._resume_callbacks and self.wants_more():
                # A batch's worth of room again: the paused sources decode the next batch
                # while this one is stored, not after it (they run at the first await).
                asyncio.get_running_loop().call_soon(self._resume_sources)
            await self._process(events, sources)
            if self._count < self.batch_size and self._bytes < self.queue_bytes >> 2:
                self._resume_sources()

    def _resume_sources(self) -> None:
        """Call back the sources :meth:`call_when_room` paused (each pauses again itself
        when it finds no room)."""
        if self._resume_callbacks:
            callbacks, self._resume_callbacks = self._resume_callbacks, []
            for cb in callbacks:
                cb()

    def _take_batch(self) -> tuple[list[Event], list[tuple[str, int]]]:
        """The next batch: up to ``batch_size`` events and a quarter of ``queue_bytes`` of
        lines (at least one event), so the batch held while it is stored and evaluated is
        bounded in bytes as the queue is. Returns the events and their sources as
        ``(source, events)`` runs, in order (what a drop counts).

        Whole chunks are taken while they fit; the chunk that does not is split, and only its
        taken part is measured event by event."""
        q = self._queue
        budget = self.queue_bytes >> 2
        left = min(self._count, self.batch_size)
        # Everything queued within the byte budget: any events fit it, chunks are not measured.
        fits = self._bytes <= budget
        events: list[Event] = []
        sources: list[tuple[str, int]] = []
        taken = 0  # bytes
        while left and q:
            chunk = q[0]
            part = chunk.events
            k = len(part)
            if k <= left and (fits or taken + chunk.size <= budget):
                q.popleft()
                events += part
                sources.append((chunk.source, k))
                taken += chunk.size
                left -= k
                continue
            # The batch ends in this chunk: take its head, leave the rest queued.
            k = min(k, left)
            size = 0
            if fits:
                size = sum([len(e.line or b"") for e in part[:k]])
            else:
                for i in range(k):
                    line_size = len(part[i].line or b"")
                    if (events or i) and taken + size + line_size > budget:
                        k = i
                        break
                    size += line_size
            if k:
                events += part[:k]
                sources.append((chunk.source, k))
            if k == len(part):  # its lines were set after it was queued: they fit after all
                q.popleft()
                size = chunk.size
            elif k:
                if chunk.own:
                    del part[:k]  # in place: a move of what is left, no reference counting
                else:
                    chunk.events = part[k:]  # the list handed to offer_batch stays as it was
                    chunk.own = True
                # Never below zero: an event whose line was set after it was queued.
                chunk.size = max(0, chunk.size - size)
            taken += size
            break
        self._count -= len(events)
        self._bytes = max(0, self._bytes - taken)
        return events, sources

    async def run_stages(self, stages: list[Stage], events: list[Event], now: float) -> None:
        for stage in stages:
            try:
                await stage.process(events, now)
            except Exception:
                self.stage_errors.inc(stage.name)
                _rl.log(
                    logging.ERROR,
                    f"stage:{stage.name}",
                    "pipeline stage %s failed",
                    stage.name,
                    exc_info=True,
                )

    async def _process(self, events: list[Event], sources: list[tuple[str, int]]) -> None:
        now = self.clock()
        line_bytes: int | None = None
        if self.before_store:
            await self.run_stages(self.before_store, events, now)
            line_bytes = self._encode_changed(events)
        short = False  # space is short: small transactions, so the WAL never holds much
        if self.before_insert is not None:
            try:
                if line_bytes is None:
                    line_bytes = self._encode_changed(events)
                short = await self.before_insert(line_bytes)
            except Exception as exc:
                _rl.warning("headroom", "could not make room ahead of the batch: %s", exc)
        stored: list[Event] = []
        start = 0  # events[:start] are stored
        failures = 0
        rooms = 0
        while start < len(events):
            end = self._piece_end(events, start) if short else len(events)
            chunk = events[start:end]
            try:
                await self.store.insert_events(chunk)
            except (sqlite3.Error, OSError) as exc:
                if write_error_reason(exc) == "disk_full":
                    short = True
                    self.store_full.inc()
                    rooms += 1
                    # Room made (the oldest events shed): retry at once, a few times, before
                    # calling it a state.
                    if not self.full and rooms <= 3 and await self._make_room():
                        continue
                    if await self._wait_for_space(len(events) - start):
                        continue
                    self._drop(sources, start, "store_full")
                    break
                failures += 1
                _rl.warning("store", "event batch insert failed (attempt %d): %s", failures, exc)
                if failures >= 5:
                    self._drop(sources, start, "store_error")
                    break
                await asyncio.sleep(min(2.0, 0.1 * 2 ** (failures - 1)))
                continue
            stored.extend(chunk)
            self.stored.inc(n=len(chunk))  # counted per piece: a held batch may take hours
            start += len(chunk)
            if self.full:
                self._space_returned()
        if not stored:
            return
        self.batches.inc()
        await self.run_stages(self.after_store, stored, self.clock())

    def _encode_changed(self, events: list[Event]) -> int:
        """Encode the stored line of each event a stage changed (its line dropped); the
        batch's line bytes, what the headroom check is asked for."""
        total, odd = line_census(events)
        encode = self.encode
        for i in odd:
            ev = events[i]
            line = ev.line
            if line is None:
                line = encode(ev)
            total += len(line)
        return total

    def _piece_end(self, events: list[Event], start: int) -> int:
        """End of the next transaction when space is short: at most one WAL checkpoint's
        worth of bytes (so what a checkpoint must copy always fits the ballast) and at most
        one segment, at least one event."""
        budget = self.store.wal_checkpoint_bytes() // 2
        end = start
        limit = min(len(events), start + SEGMENT_EVENTS)
        while end < limit:
            budget -= len(events[end].line or b"")
            if budget < 0 and end > start:
                break
            end += 1
        return end

    def _drop(self, sources: list[tuple[str, int]], start: int, reason: str) -> None:
        """Count a batch's events from ``start`` on as dropped, by their source."""
        for source, n in sources:
            if start < n:
                self.dropped.inc(source, reason, n=n - start)
                start = 0
            else:
                start -= n

    def _shed(self, reason: str) -> None:
        """Drop everything queued, counted by source."""
        for chunk in self._queue:
            self.dropped.inc(chunk.source, reason, n=len(chunk.events))
        self._queue.clear()
        self._count = 0
        self._bytes = 0

    async def _make_room(self) -> bool:
        if self.on_store_full is None:
            return False
        try:
            return await self.on_store_full()
        except Exception as exc:
            _rl.warning("store-full", "could not make room: %s", exc)
            return False

    async def _wait_for_space(self, held: int) -> bool:
        """The disk is full and no room could be made: hold ``held`` events, shed the queue,
        wait with backoff (capped at 2 s); ``False`` when the pipeline is stopping instead."""
        self.held = held
        if not self.full:
            self.full = True
            self._limit = 0
            self._backoff = 0.05
            _rl.log(
                logging.ERROR,
                "disk-full",
                "disk full: %d events wait for space; new events are dropped (store_full)"
                " until a batch commits again",
                held,
            )
        self._shed("store_full")
        self._resume_sources()  # paused streams read on and shed, rather than stall
        if self._stopping:
            return False
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stop_requested.wait(), self._backoff)
        self._backoff = min(2.0, self._backoff * 2)
        if self.on_store_full is not None:
            await self._make_room()  # the ballast, the WAL: whatever came free meanwhile
        return not self._stopping

    def _space_returned(self) -> None:
        self.full = False
        self.held = 0
        self._limit = self.queue_size
        _rl.log(logging.WARNING, "disk-space", "disk space returned: storing events again")
