"""The pipeline: a bounded queue from sources to one task that batches, processes and stores.

Sources call :meth:`Pipeline.offer` (never blocks: UDP sources drop and count when it says
no; stream sources pause reading and register to be resumed). One task drains the queue in
batches (``batch_size`` events or ``flush_interval`` seconds, whichever first), runs the
pre-store stages (enrichment), inserts the batch in one transaction, then runs the post-store
stages (correlation sees events with their ids). Every event offered ends up stored or counted
in ``appliance_events_dropped_total{source,reason}``.
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
from appliance.store.segments import encode_line

log = logging.getLogger(__name__)
_rl = RateLimitedLog(log)


class Stage(Protocol):
    """A processing step over a batch; mutates events in place (adds fields, tags)."""

    name: str

    async def process(self, events: list[Event], now: float) -> None: ...


class Pipeline:
    def __init__(
        self,
        store: Store,
        metrics: Registry,
        *,
        queue_size: int = 200_000,
        batch_size: int = 5_000,
        flush_interval: float = 0.2,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self.queue_size = queue_size
        self.batch_size = batch_size
        self.flush_interval = flush_interval
        self.clock = clock
        self.before_store: list[Stage] = []
        self.after_store: list[Stage] = []
        self._queue: deque[tuple[Event, str]] = deque()
        self._nonempty = asyncio.Event()
        self._batch_ready = asyncio.Event()
        self._stopping = False
        self._resume_callbacks: list[Callable[[], None]] = []
        self._task: asyncio.Task[None] | None = None
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
        # Called when an insert fails for lack of space; the appliance sheds old events.
        self.on_store_full: Callable[[], Awaitable[None]] | None = None
        metrics.gauge(
            "queue_depth",
            "Events waiting in the pipeline queue.",
            callback=lambda: float(len(self._queue)),
        )
        metrics.gauge(
            "queue_capacity",
            "Pipeline queue limit (pipeline.queue_size).",
            callback=lambda: float(self.queue_size),
        )

    # ------------------------------------------------------------------------ source side

    def offer(self, event: Event, source: str) -> bool:
        """Queue an event; ``False`` (and a ``queue_full`` drop counted) when the queue is full.

        The event is encoded into its stored line here, while its dict is still in the CPU's
        cache: encoding the same events later, a batch at a time, profiled 3-4 times slower.
        So nothing may change an event's fields between ``offer`` and the store.
        """
        q = self._queue
        if len(q) >= self.queue_size or self._stopping:
            self.dropped.inc(source, "queue_full" if not self._stopping else "shutting_down")
            return False
        if event.line is None:
            event.line = encode_line(
                event.timestamp,
                event.created,
                event.module,
                event.fields,
                event.raw[: self.store.raw_max_bytes],
            )
        q.append((event, source))
        n = len(q)
        if n == 1:
            self._nonempty.set()
        if n >= self.batch_size:
            self._batch_ready.set()
        return True

    def has_room(self) -> bool:
        return len(self._queue) < self.queue_size

    def wants_more(self) -> bool:
        """Whether a source holding raw input should decode more now: two batches queued are
        enough to keep the store busy, and raw input is the cheaper thing to hold."""
        return len(self._queue) < 2 * self.batch_size

    def call_when_room(self, callback: Callable[[], None]) -> None:
        """Call ``callback`` once less than one batch is queued (paused sources resume)."""
        self._resume_callbacks.append(callback)

    def __len__(self) -> int:
        return len(self._queue)

    # ------------------------------------------------------------------------ consumer side

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="pipeline")

    async def stop(self, timeout: float) -> bool:
        """Stop taking events, drain what is queued into the store; ``False`` if time ran out."""
        self._stopping = True
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
            for _event, source in self._queue:
                self.dropped.inc(source, "shutdown_timeout")
            self._queue.clear()
            return False

    async def _run(self) -> None:
        q = self._queue
        while True:
            if not q:
                if self._stopping:
                    return
                self._nonempty.clear()
                await self._nonempty.wait()
                continue
            if len(q) < self.batch_size and not self._stopping:
                self._batch_ready.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._batch_ready.wait(), self.flush_interval)
            n = min(len(q), self.batch_size)
            pairs = [q.popleft() for _ in range(n)]
            await self._process([e for e, _ in pairs], pairs)
            if self._resume_callbacks and len(q) < self.batch_size:
                callbacks, self._resume_callbacks = self._resume_callbacks, []
                for cb in callbacks:
                    cb()

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

    async def _process(self, events: list[Event], pairs: list[tuple[Event, str]]) -> None:
        now = self.clock()
        await self.run_stages(self.before_store, events, now)
        for attempt in range(5):
            try:
                await self.store.insert_events(events)
                break
            except (sqlite3.Error, OSError) as exc:
                _rl.warning("store", "event batch insert failed (attempt %d): %s", attempt + 1, exc)
                if "full" in str(exc) and self.on_store_full is not None:
                    # Disk full: make room by shedding the oldest events (counted by the
                    # hook) rather than refusing what arrives now.
                    self.store_full.inc()
                    try:
                        await self.on_store_full()
                    except Exception as hook_exc:
                        _rl.warning("store-full", "could not make room: %s", hook_exc)
                await asyncio.sleep(min(2.0, 0.1 * 2**attempt))
        else:
            for _event, source in pairs:
                self.dropped.inc(source, "store_error")
            return
        self.stored.inc(n=len(events))
        self.batches.inc()
        await self.run_stages(self.after_store, events, self.clock())
