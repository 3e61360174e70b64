"""The SQLite store: schema migrations, the single writer, readers, retention.

Why this shape: SQLite allows one writer at a time, and a transaction per event caps ingest at
a few thousand rows a second. So every write goes through :meth:`Store.transaction`, which
serialises writers with an asyncio lock on one aiosqlite connection, and events are inserted
in batches by the pipeline. Reads (API, reports) use their own connection so a long query
never waits behind a batch. WAL + ``synchronous=NORMAL`` for events (an application crash
loses nothing; a power cut may lose the last commits); ``durable=True`` transactions switch to
``FULL`` for what must survive a power cut (incidents, the outbox).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import sqlite3
import time
from collections.abc import AsyncIterator, Iterable
from importlib import resources
from pathlib import Path
from typing import Any

import aiosqlite
import orjson

from appliance.event import Event
from appliance.store.segments import (
    INSERT_SEGMENT,
    SEGMENT_EVENTS,
    decode_line,
    json_needle,
    segment_lines,
    segment_rows,
)

log = logging.getLogger(__name__)

# Columns of the pre-segment `events` table (0001_events.sql), read once to convert it.
_LEGACY_COLUMN_FIELDS = ("observer.ip", "source.ip", "host.hostname", "message")


PAGE_SIZE = 32_768
WAL_CHECKPOINT_BYTES = 4 * 1024 * 1024


class StoreError(Exception):
    """The database could not be opened or written."""


def migrations() -> list[tuple[int, str, str]]:
    """``(number, name, sql)`` for every ``NNNN_name.sql`` in the migrations package, in order."""
    out = []
    for entry in resources.files("appliance.store.migrations").iterdir():
        m = re.fullmatch(r"(\d{4})_(\w+)\.sql", entry.name)
        if m:
            out.append((int(m.group(1)), m.group(2), entry.read_text(encoding="utf-8")))
    return sorted(out)


def legacy_row_event(row: sqlite3.Row | tuple[Any, ...]) -> Event:
    """An event from a row of the pre-segment ``events`` table."""
    id_, ts, created, module, observer_ip, source_ip, hostname, message, fields_json, raw = row
    fields = orjson.loads(fields_json)
    values = (observer_ip, source_ip, hostname, message)
    for key, value in zip(_LEGACY_COLUMN_FIELDS, values, strict=True):
        if value is not None:
            fields[key] = value
    return Event(
        timestamp=ts, created=created, module=module, fields=fields, raw=raw or b"", id=id_
    )


class _EventFilter:
    """The exact test behind :meth:`Store.query_events`, after SQL has skipped segments."""

    __slots__ = ("hostname", "module", "observer_ip", "since", "source_ip", "text", "until")

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


class Store:
    """Owns the database file. Open with :meth:`open`, close with :meth:`close`."""

    def __init__(
        self,
        path: Path,
        *,
        raw_max_bytes: int = 8192,
        quick_check: bool = True,
        reserve_bytes: int = 0,
    ) -> None:
        self.path = path
        self.reserve_path = path.with_name("reserve.bin")
        self.reserve_bytes = reserve_bytes
        self.raw_max_bytes = raw_max_bytes
        self.quick_check = quick_check
        self.writer: aiosqlite.Connection | None = None
        self.reader: aiosqlite.Connection | None = None
        self._lock = asyncio.Lock()
        self._next_id = 1
        self.events_stored = 0
        self.write_errors: dict[str, int] = {}

    # ------------------------------------------------------------------------------ lifecycle

    async def open(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.ensure_reserve()
        try:
            self.writer = await self._connect(self.path)
            if self.quick_check and not await self._healthy(self.writer):
                await self.writer.close()
                aside = self.path.with_name(f"{self.path.name}.corrupt-{int(time.time())}")
                log.error(
                    "database %s failed quick_check; moved aside to %s, starting fresh",
                    self.path,
                    aside,
                )
                for suffix in ("", "-wal", "-shm"):
                    p = Path(str(self.path) + suffix)
                    if p.exists():
                        p.rename(Path(str(aside) + suffix))
                self.writer = await self._connect(self.path)
            await self._migrate(self.writer)
            await self._convert_legacy_events(self.writer)
            async with self.writer.execute("SELECT max(last_id) FROM event_segments") as cur:
                row = await cur.fetchone()
            self._next_id = (row[0] or 0) + 1 if row else 1
            self.reader = await aiosqlite.connect(
                f"file:{self.path}?mode=ro", uri=True, isolation_level=None
            )
            await self.reader.execute("PRAGMA busy_timeout=5000")
            await self.reader.execute("PRAGMA query_only=1")
        except (sqlite3.Error, OSError) as exc:
            await self.close()
            raise StoreError(f"cannot open database {self.path}: {exc}") from exc

    async def _connect(self, path: Path) -> aiosqlite.Connection:
        conn = await aiosqlite.connect(path, isolation_level=None)
        new = not path.exists() or path.stat().st_size == 0
        if new:
            # Both must precede the first table. auto_vacuum lets retention give pages back to
            # the filesystem. Event segments are ~1.5 MB blobs, stored as chains of overflow
            # pages each written through the WAL with its own frame checksum: 32 KiB pages
            # measured 2.4x less CPU per stored event than SQLite's 4 KiB default, with no
            # loss on the small-row tables (a database made before keeps its page size).
            await conn.execute(f"PRAGMA page_size={PAGE_SIZE}")
            await conn.execute("PRAGMA auto_vacuum=INCREMENTAL")
        async with conn.execute("PRAGMA journal_mode=WAL") as cur:
            await cur.fetchone()
        await conn.execute("PRAGMA synchronous=NORMAL")
        # SQLite checkpoints the WAL every N *pages* (1000 by default): 32 MiB with our pages.
        # Keep it to the 4 MiB it is with SQLite's default page size, so the WAL stays small
        # next to the database (and a small filesystem is not filled by the WAL alone).
        async with conn.execute("PRAGMA page_size") as cur:
            row = await cur.fetchone()
        page = int(row[0]) if row else 4096
        await conn.execute(f"PRAGMA wal_autocheckpoint={max(1, WAL_CHECKPOINT_BYTES // page)}")
        await conn.execute("PRAGMA busy_timeout=5000")
        await conn.execute("PRAGMA foreign_keys=ON")
        await conn.execute("PRAGMA journal_size_limit=67108864")
        # Debian builds SQLite with SECURE_DELETE on: every page a delete frees is zeroed
        # through the WAL, so retention on a full disk would need as much room as it frees.
        # FAST zeroes deleted content only in pages that are written anyway.
        await conn.execute("PRAGMA secure_delete=FAST")
        return conn

    @staticmethod
    async def _healthy(conn: aiosqlite.Connection) -> bool:
        try:
            async with conn.execute("PRAGMA quick_check") as cur:
                row = await cur.fetchone()
            return bool(row) and row[0] == "ok"
        except sqlite3.DatabaseError:
            return False

    async def _migrate(self, conn: aiosqlite.Connection) -> None:
        async with conn.execute("PRAGMA user_version") as cur:
            row = await cur.fetchone()
        current = row[0] if row else 0
        for number, name, sql in migrations():
            if number <= current:
                continue
            log.info("applying schema migration %04d_%s", number, name)
            await conn.execute("BEGIN IMMEDIATE")
            try:
                for statement in _split_sql(sql):
                    await conn.execute(statement)
                await conn.execute(f"PRAGMA user_version={int(number)}")
                await conn.execute("COMMIT")
            except BaseException:
                await conn.execute("ROLLBACK")
                raise

    async def _convert_legacy_events(self, conn: aiosqlite.Connection) -> None:
        """Move rows of the pre-segment ``events`` table into segments, then drop it."""
        async with conn.execute(
            "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'events'"
        ) as cur:
            if await cur.fetchone() is None:
                return
        converted = 0
        after = 0
        while True:
            async with conn.execute(
                "SELECT id, ts, created, module, observer_ip, source_ip, hostname, message,"
                " fields, raw FROM events WHERE id > ? ORDER BY id LIMIT ?",
                (after, SEGMENT_EVENTS),
            ) as cur:
                events = [legacy_row_event(r) for r in await cur.fetchall()]
            if not events:
                break
            runs: list[list[Event]] = [[events[0]]]  # segments need consecutive ids
            for e in events[1:]:
                if e.id == runs[-1][-1].id + 1:  # type: ignore[operator]
                    runs[-1].append(e)
                else:
                    runs.append([e])
            await conn.execute("BEGIN IMMEDIATE")
            for run in runs:
                await conn.executemany(INSERT_SEGMENT, segment_rows(run, self.raw_max_bytes))
            await conn.execute("COMMIT")
            converted += len(events)
            after = events[-1].id  # type: ignore[assignment]
        await conn.execute("DROP TABLE events")
        log.info("converted %d events to the segment store", converted)

    def ensure_reserve(self) -> bool:
        """Hold ``reserve_bytes`` of disk in a ballast file; ``False`` if there is no room.

        The ballast is only taken back when the filesystem has at least twice its size free,
        so retaking it never starves the WAL that inserts need right after shedding.
        """
        if self.reserve_bytes <= 0:
            return True
        path = self.reserve_path
        try:
            if path.exists() and path.stat().st_size >= self.reserve_bytes:
                return True
            st = os.statvfs(path.parent)
            if st.f_bavail * st.f_frsize < 2 * self.reserve_bytes:
                return False
            with path.open("wb") as f:
                os.posix_fallocate(f.fileno(), 0, self.reserve_bytes)
            return True
        except OSError:
            path.unlink(missing_ok=True)
            return False

    def release_reserve(self) -> bool:
        """Give the ballast back to the filesystem (disk full); ``True`` if there was one."""
        try:
            self.reserve_path.unlink()
            return True
        except FileNotFoundError:
            return False

    async def close(self) -> None:
        for attr in ("reader", "writer"):
            conn = getattr(self, attr)
            if conn is not None:
                setattr(self, attr, None)
                with contextlib.suppress(Exception):
                    if attr == "writer":
                        # PASSIVE never waits on readers; the last close checkpoints anyway.
                        async with self._lock, conn.execute("PRAGMA wal_checkpoint(PASSIVE)") as c:
                            await c.fetchall()
                with contextlib.suppress(Exception):
                    await conn.close()  # even when the checkpoint failed

    # --------------------------------------------------------------------------------- writes

    @contextlib.asynccontextmanager
    async def transaction(self, *, durable: bool = False) -> AsyncIterator[aiosqlite.Connection]:
        """One write transaction on the writer connection; ``durable`` commits with FULL sync."""
        conn = self.writer
        if conn is None:
            raise StoreError("store is closed")
        async with self._lock:
            if durable:
                await conn.execute("PRAGMA synchronous=FULL")
            try:
                # Inside the try: a task cancelled while BEGIN runs in aiosqlite's thread
                # still gets the transaction opened, and must roll it back.
                await conn.execute("BEGIN IMMEDIATE")
                yield conn
            except BaseException:
                with contextlib.suppress(sqlite3.Error):
                    await conn.execute("ROLLBACK")
                raise
            else:
                try:
                    await conn.execute("COMMIT")
                except BaseException:
                    # SQLite may keep the transaction open after a failed COMMIT (disk full):
                    # end it, or every later write on this connection fails too.
                    with contextlib.suppress(sqlite3.Error):
                        await conn.execute("ROLLBACK")
                    raise
            finally:
                if durable:
                    await conn.execute("PRAGMA synchronous=NORMAL")

    async def insert_events(self, events: list[Event]) -> None:
        """Insert a batch in one transaction, assigning each event its id first.

        The batch becomes segments (see :mod:`appliance.store.segments`): encoding happens
        here, the SQLite work in aiosqlite's thread, one row per segment. A failure raises
        and leaves the events without ids, so the caller can retry.
        """
        if not events:
            return
        next_id = self._next_id
        for ev in events:
            ev.id = next_id
            next_id += 1
        try:
            rows = segment_rows(events, self.raw_max_bytes)
            async with self.transaction() as conn:
                await conn.executemany(INSERT_SEGMENT, rows)
        except BaseException:
            for ev in events:
                ev.id = None
            raise
        self._next_id = next_id
        self.events_stored += len(events)

    # ---------------------------------------------------------------------------------- reads

    async def query_events(
        self,
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
        cannot match (time and id ranges; ``instr`` of each value's JSON form); the lines of
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
            clauses.append("instr(body, ?) > 0")
            args.append(needle)
        match = _EventFilter(
            since=since,
            until=until,
            source_ip=source_ip,
            observer_ip=observer_ip,
            hostname=hostname,
            module=module,
            text=text,
        )
        limit = max(0, int(limit))
        conn = self.reader
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
                "SELECT first_id, body FROM event_segments"  # noqa: S608 - fixed clauses, bound values
                + (f" WHERE {' AND '.join(where)}" if where else "")
                + " ORDER BY first_id DESC LIMIT 4"
            )
            async with conn.execute(sql, page_args) as cur:
                segments = await cur.fetchall()
            if not segments:
                break
            for first_id, body in segments:
                for id_, line in segment_lines(first_id, body):
                    if before_id is not None and id_ >= before_id:
                        continue
                    event = decode_line(line, id_)
                    if match(event):
                        out.append(event)
                        if len(out) >= limit:
                            return out
            cursor = segments[-1][0]
        return out

    async def count_events(self) -> int:
        conn = self.reader
        if conn is None:
            raise StoreError("store is closed")
        async with conn.execute("SELECT coalesce(sum(count), 0) FROM event_segments") as cur:
            row = await cur.fetchone()
        return int(row[0]) if row else 0

    def size_bytes(self) -> int:
        """Database plus WAL on disk."""
        total = 0
        for suffix in ("", "-wal"):
            with contextlib.suppress(OSError):
                total += Path(str(self.path) + suffix).stat().st_size
        return total

    # ------------------------------------------------------------------------------ retention

    async def used_bytes(self) -> int:
        """Bytes of the database file in use (pages minus the free list), WAL excluded."""
        conn = self.reader
        assert conn is not None
        vals = []
        for pragma in ("page_count", "freelist_count", "page_size"):
            async with conn.execute(f"PRAGMA {pragma}") as cur:
                row = await cur.fetchone()
                vals.append(int(row[0]) if row else 0)
        pages, free, size = vals
        return (pages - free) * size

    async def _first_id_created_at_or_after(self, cutoff: float) -> int | None:
        """Binary search on segments, then on the lines of one: ``created`` grows with id
        because one writer assigns both."""
        conn = self.reader
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
            "SELECT first_id, body FROM event_segments WHERE first_id >= ? ORDER BY first_id"
            " LIMIT 1",
            (lo,),
        ) as cur:
            found = await cur.fetchone()
        if found is None:
            return self._next_id  # every stored event is older than the cutoff
        first_id, body = found
        for k, line in enumerate(body.split(b"\n")):
            if orjson.loads(line)[1] >= cutoff:
                return int(first_id) + k
        return int(first_id) + body.count(b"\n") + 1

    async def _delete_before(self, first_kept: int, chunk: int = 256) -> int:
        """Delete every event with an id below ``first_kept``: whole segments, then the head
        of the segment that holds ``first_kept``."""
        deleted = 0
        while True:
            async with self.transaction() as conn:
                async with conn.execute(
                    "SELECT first_id, count FROM event_segments WHERE last_id < ?"
                    " ORDER BY first_id LIMIT ?",
                    (first_kept, chunk),
                ) as cur:
                    doomed = await cur.fetchall()
                if doomed:
                    await conn.execute(
                        "DELETE FROM event_segments WHERE first_id <= ?", (doomed[-1][0],)
                    )
                    deleted += sum(int(c) for _f, c in doomed)
            if len(doomed) < chunk:
                try:
                    deleted += await self._trim_segment_head(first_kept)
                except sqlite3.Error as exc:  # disk full: the whole segments went, enough
                    log.warning("could not trim the oldest segment: %s", exc)
                return deleted
            await asyncio.sleep(0)  # let ingest batches in between chunks

    async def _trim_segment_head(self, first_kept: int) -> int:
        """Drop the events below ``first_kept`` from the segment holding it (a rewrite of one
        segment, in its own transaction so whole-segment deletes never wait on it)."""
        async with self.transaction() as conn:
            async with conn.execute(
                "SELECT first_id, last_id, min_ts, max_ts, min_created, max_created, body"
                " FROM event_segments WHERE first_id < ? AND last_id >= ?",
                (first_kept, first_kept),
            ) as cur:
                head = await cur.fetchone()
            if head is None:
                return 0
            first_id, last_id, *bounds, body = head
            cut = first_kept - first_id
            kept = body.split(b"\n")[cut:]
            await conn.execute("DELETE FROM event_segments WHERE first_id = ?", (first_id,))
            # The old bounds still bound what is left: queries only use them to skip segments.
            await conn.execute(
                INSERT_SEGMENT, (first_kept, last_id, len(kept), *bounds, b"\n".join(kept))
            )
            return cut

    async def enforce_retention(
        self,
        *,
        max_age: float,
        max_bytes: int,
        now: float,
        truncate_wal: bool = False,
        event_floor: float = 0.1,
    ) -> tuple[int, int]:
        """Delete events received more than ``max_age`` seconds ago, then the oldest until the
        database uses at most ``max_bytes``; return (deleted by age, deleted by size).

        Only events are deleted here, but flows, rollups, incidents and state share the file.
        When they alone fill the budget, events keep ``event_floor`` of ``max_bytes`` (and a
        warning says what to lower) instead of all being deleted for room they cannot make.
        """
        by_age = 0
        first_kept = await self._first_id_created_at_or_after(now - max_age)
        if first_kept is not None:
            by_age = await self._delete_before(first_kept)
        deleted = 0
        for _ in range(20):
            used = await self.used_bytes()
            if used <= max_bytes:
                break
            conn = self.reader
            assert conn is not None
            async with conn.execute(
                "SELECT coalesce(sum(length(body)), 0), min(first_id), max(last_id)"
                " FROM event_segments"
            ) as cur:
                row = await cur.fetchone()
            if not row or row[1] is None:
                break
            events_bytes, lo, hi = row
            others = max(0, used - events_bytes)
            budget = max(max_bytes - others, int(max_bytes * event_floor))
            if events_bytes <= budget:
                log.warning(
                    "database uses %d bytes, %d of them not events (flows, rollups, incidents):"
                    " events keep %d bytes; lower flows.raw_max_rows or raw_retention_hours,"
                    " or raise storage.max_db_bytes",
                    used,
                    others,
                    events_bytes,
                )
                break
            # Delete the oldest share that brings events to 90 % of their budget (at least 1 %).
            share = max(0.01, 1 - (0.9 * budget) / events_bytes)
            cut = lo + max(1, int((hi - lo + 1) * share))
            deleted += await self._delete_before(cut)
        if deleted or by_age:
            async with self._lock:
                assert self.writer is not None
                # Both pragmas return rows; fetch them so no statement stays active. They only
                # give space back: on a full disk they may fail now and succeed next time.
                checkpoint = "TRUNCATE" if truncate_wal else "PASSIVE"
                for pragma in ("PRAGMA incremental_vacuum", f"PRAGMA wal_checkpoint({checkpoint})"):
                    try:
                        async with self.writer.execute(pragma) as cur:
                            await cur.fetchall()
                    except sqlite3.Error as exc:
                        log.warning("%s after retention failed: %s", pragma, exc)
        return by_age, deleted


def _split_sql(sql: str) -> Iterable[str]:
    """Statements of a migration file (no semicolons inside literals in our migrations)."""
    body = "\n".join(line for line in sql.splitlines() if not line.lstrip().startswith("--"))
    for stmt in body.split(";"):
        if stmt.strip():
            yield stmt.strip()
