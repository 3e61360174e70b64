"""Where decoded flows go: every flow to the rules and the rollups, a bounded share to SQLite.

Why a path of its own beside :class:`~appliance.pipeline.bus.Pipeline`: that pipeline stores
every event as a row of ``events`` (JSON fields, one rowid each), which tops out far below the
200,000 flows/s a single router can export. Flows therefore take this path: a bounded queue of
per-datagram batches drained by one task that, per batch of up to ``batch_size`` flows,

1. runs the pipeline's own stages (``before_store`` then ``after_store``: enrichment and
   correlation), so rules see every flow exactly as they see other events (ids stay ``None``:
   flows are not rows of ``events``);
2. counts every flow in the per-minute rollups (:mod:`appliance.flows.rollup`);
3. writes raw rows to the ``flows`` table up to ``raw_max_per_second`` (a token bucket with a
   one-second burst); the rest is counted in ``flows_not_stored_total{reason="raw_rate_limit"}``.

Accounting: ``flows_received_total`` = ``flows_processed_total`` + ``flows_dropped_total``
(+ what is queued); ``flows_processed_total`` = ``flows_stored_total`` +
``flows_not_stored_total``. Nothing leaves the path uncounted.

A minute's rollup rows are in one of three places: open in the rollup, pending (taken when
the minute closed, on their way to SQLite, or kept after a failed write for the next one), or
stored. :meth:`FlowPath.top` reads all three and counts each row once: every write carries a
number, committed with its rows, and the reader gets the snapshot's number in the statement
that sums the stored rows (writes are sequential: the drain task's, then ``stop``'s).
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import sqlite3
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from appliance import dataplane
from appliance.config import FlowsSection, StorageSection
from appliance.event import Event
from appliance.flows import store as flowstore
from appliance.flows.rollup import RollupRow, new_rollup
from appliance.logutil import RateLimitedLog
from appliance.metrics import Registry
from appliance.pipeline.bus import Pipeline

log = logging.getLogger(__name__)
_rl = RateLimitedLog(log)
GC_GEN0_THRESHOLD = 50_000
# Rollup rows kept for another try after failed writes (~150 bytes each; ~2 hours of the
# default top-K's rows); past it the oldest are given up and counted.
MAX_UNWRITTEN_ROWS = 100_000


def joined(parts: list[Any]) -> Any:
    """Datagrams' flows as one batch: the native decoder's ``FlowEvents`` joined natively
    (no event made), else a list of the events (a native part's events made now)."""
    if dataplane.NATIVE_SEQUENCES and parts:
        flow_events: Any = dataplane.NATIVE_SEQUENCES[0]
        if all(type(p) is flow_events for p in parts):
            return flow_events.join(parts)
    return [e for p in parts for e in p]


class FlowPath:
    def __init__(
        self,
        pipeline: Pipeline,
        metrics: Registry,
        cfg: FlowsSection,
        storage: StorageSection,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.pipeline = pipeline
        self.store = pipeline.store
        self.cfg = cfg
        self.storage = storage
        self.clock = clock
        self.rollup = new_rollup(cfg.rollup_top_k, cfg.rollup_max_keys)
        self._columns = hasattr(self.rollup, "add_columns")  # the native rollup
        # The native rollup counts a batch's columns with the GIL released: on this thread,
        # while the event loop decodes the next datagrams (made at start, native only).
        self._counting: ThreadPoolExecutor | None = None
        # Per datagram: its flow events (a list, or the native decoder's ``FlowEvents``), and
        # the native decoder's rollup columns of the same flows when it made them (the rollup
        # then reads no dict), else None.
        self._queue: deque[tuple[Any, Any]] = deque()
        self._queued = 0
        self._nonempty = asyncio.Event()
        self._batch_ready = asyncio.Event()
        self._stopping = False
        self._task: asyncio.Task[None] | None = None
        self._retention_task: asyncio.Task[None] | None = None
        self._tokens = float(cfg.raw_max_per_second)
        self._tokens_at = clock()
        # Rollup rows not in the store yet, by the number of the write that carries them, and
        # the rows of failed writes waiting for the next one (see the module docs).
        self._pending: dict[int, list[RollupRow]] = {}
        self._unwritten: list[RollupRow] = []
        self._mark = 0  # the last write's number (read from the store at start)
        self.received = metrics.counter(
            "flows_received_total", "Flows decoded by a source, before any drop.", ["source"]
        )
        self.dropped = metrics.counter(
            "flows_dropped_total",
            "Flows dropped before the rules, by reason.",
            ["source", "reason"],
        )
        self.processed = metrics.counter(
            "flows_processed_total", "Flows offered to the rules and counted in the rollups."
        )
        self.stored = metrics.counter("flows_stored_total", "Raw flow rows committed to SQLite.")
        self.not_stored = metrics.counter(
            "flows_not_stored_total",
            "Processed flows not kept as raw rows, by reason (policy or store error).",
            ["reason"],
        )
        self.clamped = metrics.counter(
            "flows_clamped_total",
            "Raw flow columns past SQLite's 64-bit integer, stored as its maximum (exact value"
            " kept as text in netflow.clamped.<field>), by field.",
            ["field"],
        )
        self.rollup_rows = metrics.counter(
            "flow_rollup_rows_total", "Per-minute rollup rows written (top keys and other)."
        )
        self.rollup_rows_dropped = metrics.counter(
            "flow_rollup_rows_dropped_total",
            "Rollup rows given up: their writes failed and they passed the rows kept for another"
            " try, or the last write at stop failed.",
        )
        metrics.gauge(
            "flow_rollup_rows_unwritten",
            "Rollup rows whose write failed, kept for the next one.",
            callback=lambda: float(len(self._unwritten)),
        )
        self.retention_deleted = metrics.counter(
            "flows_retention_deleted_total", "Raw flows and rollup rows deleted by retention.",
            ["table"],
        )  # fmt: skip
        metrics.gauge(
            "flow_rollup_folded_keys",
            "Keys folded into 'other' because a rollup dimension reached rollup_max_keys.",
            callback=lambda: float(self.rollup.folded),
        )
        metrics.gauge(
            "flow_queue_depth", "Flows waiting for the rules.", callback=lambda: float(self._queued)
        )
        metrics.gauge(
            "flow_queue_capacity",
            "Flow queue limit (flows.queue_size).",
            callback=lambda: float(self.cfg.queue_size),
        )

    # ------------------------------------------------------------------------ source side

    def offer(
        self, events: list[Event], source: str, columns: Any = None, labelled: bool = False
    ) -> bool:
        """Queue one datagram's flows; ``False`` (all counted as dropped) when full.
        ``columns``: the same flows as ``FlowRollup.add_columns`` takes them; ``labelled``:
        the events were made with ``listener`` = ``source`` (the native decoder's)."""
        n = len(events)
        self.received.inc(source, n=n)
        if self._stopping or self._queued + n > self.cfg.queue_size:
            self.dropped.inc(source, "shutting_down" if self._stopping else "queue_full", n=n)
            return False
        if not labelled:
            for e in events:
                e.listener = source
        self._queue.append((events, columns))
        self._queued += n
        self._nonempty.set()
        if self._queued >= self.cfg.batch_size:
            self._batch_ready.set()
        return True

    def wants_more(self) -> bool:
        """Whether a source holding raw datagrams should decode more now: two batches queued
        keep the task busy; decoding more would only hold flows (or drop them) in memory."""
        return self._queued < 2 * self.cfg.batch_size

    def __len__(self) -> int:
        return self._queued

    # ----------------------------------------------------------------------- lifecycle

    async def start(self, tune_gc: bool = True) -> None:
        if tune_gc:
            self._tune_gc()
        self._mark = await flowstore.rollup_mark(self.store)
        if self._columns:
            self._counting = ThreadPoolExecutor(1, thread_name_prefix="flow-rollup")
        self._task = asyncio.create_task(self._run(), name="flows")
        self._retention_task = asyncio.create_task(self._retention_loop(), name="flow-retention")

    @staticmethod
    def _tune_gc() -> None:
        # Flows keep tens of thousands of small dicts alive between decode and the rollups;
        # with CPython's default gen-0 threshold (700) the cyclic collector then runs every
        # few datagrams and rescans them, which measured ~2.5x slower end to end. None of
        # these objects form cycles, so collect less often (the thresholds only grow).
        gen0, gen1, gen2 = gc.get_threshold()
        gc.set_threshold(max(gen0, GC_GEN0_THRESHOLD), max(gen1, 20), max(gen2, 20))

    async def stop(self, timeout: float = 10.0) -> None:
        """Stop taking flows, process what is queued, write the open rollup minutes."""
        self._stopping = True
        self._nonempty.set()
        self._batch_ready.set()
        if self._retention_task is not None:
            self._retention_task.cancel()
            with contextlib.suppress(BaseException):
                await self._retention_task
        if self._task is not None:
            try:
                await asyncio.wait_for(asyncio.shield(self._task), timeout)
            except TimeoutError:
                self._task.cancel()
                with contextlib.suppress(BaseException):
                    await self._task
                for batch, _columns in self._queue:
                    self.dropped.inc("flows", "shutdown_timeout", n=len(batch))
                self._queue.clear()
                self._queued = 0
        if self._counting is not None:
            self._counting.shutdown(wait=True)  # a batch still being counted: a few ms
            self._counting = None
        await self._write_rollups(self.rollup.take_all(), last=True)

    # ------------------------------------------------------------------------ consumer

    async def _run(self) -> None:
        q = self._queue
        while True:
            if not q:
                if self._stopping:
                    return
                self._nonempty.clear()
                await self._nonempty.wait()
                continue
            if self._queued < self.cfg.batch_size and not self._stopping:
                self._batch_ready.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._batch_ready.wait(), self.cfg.flush_interval)
            parts: list[Any] = []
            columns: list[Any] = []
            uncolumned: list[Event] = []  # flows the rollup reads from their events
            limit, taken = self.cfg.batch_size, 0
            while q and taken < limit:
                batch, cols = q.popleft()
                parts.append(batch)
                taken += len(batch)
                if cols is not None and self._columns:
                    columns.append(cols)
                else:
                    uncolumned.extend(batch)
            events = joined(parts)
            self._queued -= taken
            try:
                await self._process(events, columns, uncolumned)
            except Exception:  # never let one batch stop the flow path
                _rl.log(logging.ERROR, "flows", "flow batch failed", exc_info=True)
                self.not_stored.inc("error", n=len(events))

    async def _process(
        self, events: list[Event], columns: list[Any] | None = None, uncolumned: Any = None
    ) -> None:
        """``columns``/``uncolumned``: the batch's flows as the rollup counts them, split by
        whether the decoder made columns (default: every event read as a dict). The stages
        add fields to flows but never change the ones the rollup keys on."""
        pipeline = self.pipeline
        now = self.clock()
        await pipeline.run_stages(pipeline.before_store, events, now)
        await self._store_raw(events, now)
        await pipeline.run_stages(pipeline.after_store, events, now)
        if columns:
            await self._add_columns(columns)
        self.rollup.add(events if uncolumned is None else uncolumned)
        # Counted once a minute that closed meanwhile is in the store: rows taken from the
        # rollup are in neither the open minutes nor the store until the write returns, and
        # a reader that waits for the count (the API's "top", a test) must find the flows.
        await self._write_rollups(self.rollup.take_closed(self.clock()))
        self.processed.inc(n=len(events))

    async def _add_columns(self, columns: list[Any]) -> None:
        """The native rollup counts the decoder's columns, on its own thread once started:
        ~0.1-0.3 µs a flow that the loop spends decoding instead."""
        add = self.rollup.add_columns  # type: ignore[attr-defined]  # the native rollup
        if self._counting is None:
            add(columns)
        else:
            await asyncio.get_running_loop().run_in_executor(self._counting, add, columns)

    def _raw_allowance(self, now: float) -> int:
        rate = self.cfg.raw_max_per_second
        self._tokens = min(float(rate), self._tokens + (now - self._tokens_at) * rate)
        self._tokens_at = now
        return int(self._tokens)

    async def _store_raw(self, events: list[Event], now: float) -> None:
        n = min(len(events), self._raw_allowance(now))
        if n < len(events):
            self.not_stored.inc("raw_rate_limit", n=len(events) - n)
        if n <= 0:
            return
        self._tokens -= n
        # Row by row, so that one record whose values cannot be stored costs itself only;
        # the insert is still one statement per batch.
        rows = []
        clamped: list[str] = []
        row = flowstore.flow_row
        for ev in events[:n]:
            try:
                rows.append(row(ev, clamped))
            except Exception:
                self.not_stored.inc("invalid_record")
                _rl.log(logging.ERROR, "flows-row", "flow record not storable", exc_info=True)
        for field in clamped:
            self.clamped.inc(field)
        if not rows:
            return
        try:
            await flowstore.insert_flows(self.store, rows)
        except (sqlite3.Error, OSError) as exc:
            _rl.warning("flows-store", "raw flow insert failed: %s", exc)
            self.not_stored.inc("store_error", n=len(rows))
            return
        except Exception:  # never let the raw rows take the rules and rollups down with them
            _rl.log(logging.ERROR, "flows-store", "raw flow insert failed", exc_info=True)
            self.not_stored.inc("store_error", n=len(rows))
            return
        self.stored.inc(n=len(rows))

    async def _write_rollups(self, rows: list[RollupRow], last: bool = False) -> None:
        """Write closed minutes' rows (and those of failed writes before): pending, readable
        by :meth:`top`, until committed. ``last``: nothing comes after (``stop``): rows that
        fail now are given up."""
        if self._unwritten:
            rows = self._unwritten + rows
            self._unwritten = []
        if not rows:
            return
        self._mark += 1
        mark = self._mark
        self._pending[mark] = rows
        try:
            await flowstore.insert_rollups(self.store, rows, mark)
            self.rollup_rows.inc(n=len(rows))
            return
        except (sqlite3.Error, OSError) as exc:
            _rl.warning("flows-rollup", "rollup write failed: %s", exc)
        except Exception:  # a bug here must not cost the batch its rules (or stop() its end)
            _rl.log(logging.ERROR, "flows-rollup", "rollup write failed", exc_info=True)
        finally:
            del self._pending[mark]
        if last:
            self.rollup_rows_dropped.inc(n=len(rows))
            return
        over = len(rows) - MAX_UNWRITTEN_ROWS
        if over > 0:
            self.rollup_rows_dropped.inc(n=over)
            rows = rows[over:]
        self._unwritten = rows

    async def top(self, dim: str, since: float, until: float | None) -> dict[str, list[int]]:
        """``key -> [bytes, packets, flows]`` over the minutes in [since, until) of dimension
        ``dim``: the stored rows, the pending ones the store's snapshot does not hold yet, and
        the open minutes (so "top" is current and counts each flow once)."""
        stored, mark = await flowstore.query_top(self.store, dim=dim, since=since, until=until)
        totals = {key: [b, p, n] for key, b, p, n in stored}
        rows = [r for m, pending in self._pending.items() if m > mark for r in pending]
        first = int(since) // 60 * 60
        for minute, d, key, b, p, n in (*rows, *self._unwritten, *self.rollup.open_rows()):
            if d != dim or minute < first or (until is not None and minute >= until):
                continue
            t = totals.setdefault(key, [0, 0, 0])
            t[0] += b
            t[1] += p
            t[2] += n
        return totals

    async def _retention_loop(self) -> None:
        while True:
            await asyncio.sleep(self.storage.retention_interval)
            now = self.clock()
            try:
                flows, rollups = await flowstore.delete_old(
                    self.store,
                    flows_before=now - self.cfg.raw_retention_hours * 3600,
                    rollups_before=now - self.cfg.rollup_retention_days * 86400,
                    max_rows=self.cfg.raw_max_rows,
                )
                self.retention_deleted.inc("flows", n=flows)
                self.retention_deleted.inc("flow_rollups", n=rollups)
            except Exception:
                log.exception("flow retention run failed")
