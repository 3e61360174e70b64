"""The events: inserted in batches as segments, read back newest first, deleted oldest
first.

The segment format is :mod:`appliance.store.segments`; these are the SQL operations on
``event_segments`` over the store's connections (reads on the reader, writes in
:meth:`Store.transaction <appliance.store.db.Store.transaction>`). Ids grow with insertion
(one writer assigns them), which is what paging (``before_id``) and the age cut-off of
retention (``created`` grows with id) rely on.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, cast

import orjson

from appliance import dataplane
from appliance.event import Event
from appliance.logutil import RateLimitedLog
from appliance.store import segindex
from appliance.store.errors import StoreError
from appliance.store.segments import (
    INSERT_INDEX,
    INSERT_SEGMENT,
    decode_line,
    finish_rows,
    json_needle,
    pack_body,
    readable_text,
    segment_lines,
    segment_rows_with_ids,
)

if TYPE_CHECKING:
    from appliance.store.db import Store

log = logging.getLogger(__name__)
_rl = RateLimitedLog(log)


class EventFilter:
    """The exact test behind :func:`query_events`, after SQL has skipped segments."""

    __slots__ = ("hostname", "module", "observer_ip", "since", "source_ip", "text", "until")

    since: float | None
    until: float | None
    module: str | None
    hostname: str | None
    observer_ip: str | None
    source_ip: str | None
    text: str | None

    def __init__(self, **kw: Any) -> None:
        for name in self.__slots__:
            setattr(self, name, kw.get(name))

    def __call__(self, e: Event) -> bool:
        f = e.fields
        if self.since is not None and e.timestamp < self.since:
            return False
        if self.until is not None and e.timestamp >= self.until:
            return False
        if self.module is not None and e.module != self.module:
            return False
        if self.hostname is not None and f.get("host.hostname") != self.hostname:
            return False
        if self.observer_ip is not None and f.get("observer.ip") != self.observer_ip:
            return False
        if self.source_ip is not None:
            ip = f.get("source.ip")
            if (ip if ip is not None else f.get("observer.ip")) != self.source_ip:
                return False
        if self.text:
            message = f.get("message")
            if not isinstance(message, str) or self.text not in message:
                return False
        return True


async def insert_events(store: Store, events: list[Event]) -> None:
    """Insert a batch in one transaction, assigning each event its id first.

    The batch becomes segments (see :mod:`appliance.store.segments`): encoding happens
    here, the SQLite work in aiosqlite's thread, one row per segment. A failure raises
    and leaves the events without ids, so the caller can retry.
    """
    if not events:
        return
    next_id = store.next_id + len(events)
    try:
        rows = segment_rows_with_ids(events, store.next_id, store.raw_max_bytes)
        if dataplane.native is not None:
            # Packed (and indexed) on a native thread: it costs the event loop nothing
            # while it decodes the next reads.
            rows, index = await finish_rows_beside(rows, store.search_index)
        else:
            rows, index = finish_rows(rows, store.search_index)
        async with store.transaction() as conn:
            await conn.executemany(INSERT_SEGMENT, rows)
            # The segment's search index commits with it (or neither does).
            await conn.executemany(INSERT_INDEX, index)
    except BaseException:
        for ev in events:
            ev.id = None
        raise
    store.next_id = next_id
    store.events_stored += len(events)
    store.wal_written(sum([len(row[7]) for row in rows]))


async def finish_rows_beside(
    rows: list[tuple[Any, ...]], filters: bool
) -> tuple[list[tuple[Any, ...]], list[tuple[int, bytes]]]:
    """:func:`~appliance.store.segments.finish_rows` on the native builder's own thread
    (``FinishSegments``), awaited through the eventfd it signals.

    Why not ``asyncio.to_thread``: a Python worker thread takes the interpreter back to start
    and to hand its result over, and each time waits for the busy event loop's switch
    interval (up to 5 ms): a 2 MiB batch's filters, ~3 ms of work, took 10-18 ms of the
    insert's wall time. The native thread never takes it."""
    assert dataplane.native is not None
    try:
        job = dataplane.native.FinishSegments([row[7] for row in rows], filters)
    except OSError as exc:  # no thread or eventfd to be had: finish them on a Python one
        _rl.warning("segment-finish", "segments finished on a Python thread: %s", exc)
        return await asyncio.to_thread(finish_rows, rows, filters)
    loop = asyncio.get_running_loop()
    built: asyncio.Future[None] = loop.create_future()

    def ready() -> None:
        if not built.done():
            built.set_result(None)

    fd = job.fileno
    loop.add_reader(fd, ready)
    try:
        await built
    finally:
        loop.remove_reader(fd)
    finished: list[tuple[bytes, bytes | None]] = job.result()
    stored = [(*row[:7], body) for row, (body, _) in zip(rows, finished, strict=True)]
    index = [(row[0], f) for row, (_, f) in zip(rows, finished, strict=True) if f is not None]
    return stored, index


async def backfill_index(store: Store, *, batch: int = 16) -> int:
    """Write the search index of segments stored without one (before migration 0014, by
    the Python backend, or converted from the old events table), newest first; how many
    were indexed.

    Optional: a segment without an index is searched by scanning, so this only makes old
    history as fast to search as new. Each transaction holds ``batch`` segments, so ingest
    waits at most that long behind it.
    """
    conn = store.reader
    if conn is None:
        raise StoreError("store is closed")
    build = segindex.segment_bloom if dataplane.native is not None else None
    done = 0
    before = 2**62
    while True:
        async with conn.execute(
            "SELECT s.first_id FROM event_segments s WHERE s.first_id < ?"
            " AND NOT EXISTS (SELECT 1 FROM event_index i WHERE i.first_id = s.first_id)"
            " ORDER BY s.first_id DESC LIMIT ?",
            (before, batch),
        ) as cur:
            ids = [int(r[0]) for r in await cur.fetchall()]
        if not ids:
            return done
        async with store.transaction() as wconn:
            for first_id in ids:
                async with wconn.execute(
                    "SELECT body FROM event_segments WHERE first_id = ?", (first_id,)
                ) as cur:
                    row = await cur.fetchone()
                if row is None:
                    continue  # retention took it meanwhile
                body = readable_text(first_id, bytes(row[0]))
                if body is None:
                    continue  # left unindexed: a search skips it
                bloom = build(body) if build else segindex.bloom_reference(body)
                if bloom is not None:
                    await wconn.execute(
                        "INSERT OR IGNORE INTO event_index (first_id, bloom) VALUES (?, ?)",
                        (first_id, bloom),
                    )
                    done += 1
        before = ids[-1]
        await asyncio.sleep(0)


async def query_events(
    store: Store,
    *,
    since: float | None = None,
    until: float | None = None,
    source_ip: str | None = None,
    observer_ip: str | None = None,
    hostname: str | None = None,
    module: str | None = None,
    text: str | None = None,
    before_id: int | None = None,
    limit: int = 100,
) -> list[Event]:
    """Newest first; ``before_id`` is the paging cursor (ids only grow).

    ``source_ip`` matches an event's ``source.ip``, or for events that have none (plain
    syslog, traps) the device that sent it (``observer.ip``). SQL skips the segments that
    cannot match (time and id ranges; ``seg_holds`` of each value's JSON form); the lines of
    the others are decoded and tested exactly.
    """
    clauses: list[str] = []
    args: list[Any] = []
    for clause, value in (
        ("max_ts >= ?", since),
        ("min_ts < ?", until),
        ("first_id < ?", before_id),
    ):
        if value is not None:
            clauses.append(clause)
            args.append(value)
    needles = []
    if hostname is not None:
        needles.append(b'"host.hostname":"' + json_needle(hostname) + b'"')
    if observer_ip is not None:
        needles.append(b'"observer.ip":"' + json_needle(observer_ip) + b'"')
    if source_ip is not None:
        needles.append(b'"' + json_needle(source_ip) + b'"')
    if text:
        needles.append(json_needle(text))
    for needle in needles:
        clauses.append("seg_holds(body, ?)")
        args.append(needle)
    match = EventFilter(
        since=since,
        until=until,
        source_ip=source_ip,
        observer_ip=observer_ip,
        hostname=hostname,
        module=module,
        text=text,
    )
    limit = max(0, int(limit))
    conn = store.reader
    if conn is None:
        raise StoreError("store is closed")
    out: list[Event] = []
    cursor = before_id
    while len(out) < limit:
        where = list(clauses)
        page_args = list(args)
        if cursor is not None and cursor != before_id:
            where.append("first_id < ?")
            page_args.append(cursor)
        sql = (
            "SELECT first_id, seg_text(body) FROM event_segments"  # noqa: S608 - fixed clauses
            + (f" WHERE {' AND '.join(where)}" if where else "")
            + " ORDER BY first_id DESC LIMIT 4"
        )
        async with conn.execute(sql, page_args) as cur:
            segments = cast("list[tuple[int, bytes]]", await cur.fetchall())
        if not segments:
            break
        # Decoding up to 4 x 1024 lines is CPU work: off the event loop, which intake and
        # /healthz wait on (with many API clients, pages built on the loop queued /healthz
        # behind each other for a second).
        out.extend(await asyncio.to_thread(matching, segments, before_id, match, limit - len(out)))
        if len(out) >= limit:
            return out
        cursor = segments[-1][0]
    return out


async def count_events(store: Store) -> int:
    conn = store.reader
    if conn is None:
        raise StoreError("store is closed")
    async with conn.execute("SELECT coalesce(sum(count), 0) FROM event_segments") as cur:
        row = await cur.fetchone()
    return int(row[0]) if row else 0


async def first_id_created_at_or_after(store: Store, cutoff: float) -> int | None:
    """Binary search on segments, then on the lines of one: ``created`` grows with id
    because one writer assigns both."""
    conn = store.reader
    assert conn is not None
    async with conn.execute("SELECT min(first_id), max(first_id) FROM event_segments") as cur:
        row = await cur.fetchone()
    if not row or row[0] is None:
        return None
    lo, hi = int(row[0]), int(row[1]) + 1
    found: tuple[int, bytes] | None = None
    while lo < hi:  # the first segment whose newest event is at or after the cutoff
        mid = (lo + hi) // 2
        async with conn.execute(
            "SELECT first_id, max_created FROM event_segments WHERE first_id >= ?"
            " ORDER BY first_id LIMIT 1",
            (mid,),
        ) as cur:
            r = await cur.fetchone()
        if r is None or r[1] >= cutoff:
            hi = mid
        else:
            lo = int(r[0]) + 1
    async with conn.execute(
        "SELECT first_id, body FROM event_segments WHERE first_id >= ? ORDER BY first_id LIMIT 1",
        (lo,),
    ) as cur:
        found = cast("tuple[int, bytes] | None", await cur.fetchone())
    if found is None:
        return store.next_id  # every stored event is older than the cutoff
    first_id, body = found
    text = readable_text(first_id, body)
    if text is None:
        return int(first_id)  # its events unreadable: those before it are older anyway
    for k, line in enumerate(text.split(b"\n")):
        if orjson.loads(line)[1] >= cutoff:
            return int(first_id) + k
    return int(first_id) + text.count(b"\n") + 1


async def delete_before(store: Store, first_kept: int, chunk: int = 256) -> int:
    """Delete every event with an id below ``first_kept``: whole segments, then the head
    of the segment that holds ``first_kept``."""
    deleted = 0
    while True:
        async with store.transaction() as conn:
            async with conn.execute(
                "SELECT first_id, count FROM event_segments WHERE last_id < ?"
                " ORDER BY first_id LIMIT ?",
                (first_kept, chunk),
            ) as cur:
                doomed = cast("list[tuple[int, int]]", await cur.fetchall())
            if doomed:
                await conn.execute(
                    "DELETE FROM event_segments WHERE first_id <= ?", (doomed[-1][0],)
                )
                await conn.execute("DELETE FROM event_index WHERE first_id <= ?", (doomed[-1][0],))
                deleted += sum(int(c) for _f, c in doomed)
        if len(doomed) < chunk:
            try:
                deleted += await trim_segment_head(store, first_kept)
            except sqlite3.Error as exc:  # disk full: the whole segments went, enough
                _rl.warning("trim", "could not trim the oldest segment: %s", exc)
            return deleted
        await asyncio.sleep(0)  # let ingest batches in between chunks


async def trim_segment_head(store: Store, first_kept: int) -> int:
    """Drop the events below ``first_kept`` from the segment holding it (a rewrite of one
    segment, in its own transaction so whole-segment deletes never wait on it)."""
    async with store.transaction() as conn:
        async with conn.execute(
            "SELECT first_id, last_id, min_ts, max_ts, min_created, max_created, body"
            " FROM event_segments WHERE first_id < ? AND last_id >= ?",
            (first_kept, first_kept),
        ) as cur:
            head = await cur.fetchone()
        if head is None:
            return 0
        first_id, last_id, *bounds, body = head
        text = readable_text(first_id, body)
        if text is None:
            return 0  # kept whole: it goes when retention reaches its last event
        cut = first_kept - first_id
        kept = text.split(b"\n")[cut:]
        await conn.execute("DELETE FROM event_segments WHERE first_id = ?", (first_id,))
        # The old bounds still bound what is left: queries only use them to skip segments.
        await conn.execute(
            INSERT_SEGMENT, (first_kept, last_id, len(kept), *bounds, pack_body(b"\n".join(kept)))
        )
        # So does the old filter (it holds the terms of a superset of the lines).
        await conn.execute(
            "UPDATE event_index SET first_id = ? WHERE first_id = ?", (first_kept, first_id)
        )
        return cut


def matching(
    segments: list[tuple[int, bytes]],
    before_id: int | None,
    match: Callable[[Event], bool],
    want: int,
) -> list[Event]:
    """The events of ``segments`` (newest first) that ``match``, at most ``want``."""
    out: list[Event] = []
    for first_id, body in segments:
        for id_, line in segment_lines(first_id, body):
            if before_id is not None and id_ >= before_id:
                continue
            event = decode_line(line, id_)
            if match(event):
                out.append(event)
                if len(out) >= want:
                    return out
    return out
