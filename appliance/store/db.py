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
import errno
import logging
import os
import re
import sqlite3
import time
from collections.abc import AsyncIterator, Callable, Iterable
from importlib import resources
from pathlib import Path
from typing import Any, cast

import aiosqlite
import orjson

from appliance import dataplane
from appliance.event import Event
from appliance.logutil import RateLimitedLog
from appliance.metrics import Registry
from appliance.store import segindex
from appliance.store.search import sql_may_hold
from appliance.store.segments import (
    INSERT_INDEX,
    INSERT_SEGMENT,
    SEGMENT_EVENTS,
    decode_line,
    index_rows,
    json_needle,
    segment_lines,
    segment_rows,
)

log = logging.getLogger(__name__)
_rl = RateLimitedLog(log)

# Columns of the pre-segment `events` table (0001_events.sql), read once to convert it.
_LEGACY_COLUMN_FIELDS = ("observer.ip", "source.ip", "host.hostname", "message")


PAGE_SIZE = 32_768
WAL_CHECKPOINT_BYTES = 4 * 1024 * 1024


# The ballast (reserve.bin) is at most this share of data_dir's filesystem: a fixed 16 MiB
# never fits on a small one (it is only taken with twice its size free), and then a full disk
# has no room left for the deletes and checkpoints that make room.
RESERVE_FS_SHARE = 0.05
# Disk full and the database holds less than this share of the filesystem: something else
# filled it. Deleting the appliance's own history would not make lasting room, so it waits.
SHED_MIN_FS_SHARE = 0.5

# SQLite primary result codes (https://www.sqlite.org/rescode.html) by what they mean here.
_ERROR_REASONS = {
    13: "disk_full",  # SQLITE_FULL
    10: "io_error",  # SQLITE_IOERR
    8: "readonly",  # SQLITE_READONLY
    11: "corrupt",  # SQLITE_CORRUPT
    26: "corrupt",  # SQLITE_NOTADB
    5: "busy",  # SQLITE_BUSY
    6: "busy",  # SQLITE_LOCKED
    14: "cantopen",  # SQLITE_CANTOPEN
}


class StoreError(Exception):
    """The database could not be opened or written."""


def write_error_reason(exc: BaseException) -> str | None:
    """The storage reason behind a failed write, or ``None`` when the SQL was at fault
    (a constraint, a bug): only the former is the disk's doing and belongs in the metrics."""
    if isinstance(exc, sqlite3.Error):
        code = getattr(exc, "sqlite_errorcode", None)
        if code is not None:
            return _ERROR_REASONS.get(code & 0xFF)
        return "disk_full" if "full" in str(exc) else None
    if isinstance(exc, OSError):
        return "disk_full" if exc.errno in (errno.ENOSPC, errno.EDQUOT) else "io_error"
    return None


def file_id(path: Path) -> tuple[int, int] | None:
    """``(st_dev, st_ino)`` of ``path``, ``None`` when it does not exist."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return None
    return (st.st_dev, st.st_ino)


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


class Store:
    """Owns the database file. Open with :meth:`open`, close with :meth:`close`."""

    def __init__(
        self,
        path: Path,
        *,
        raw_max_bytes: int = 8192,
        quick_check: bool = True,
        reserve_bytes: int = 0,
        metrics: Registry | None = None,
        search_index: bool = True,
    ) -> None:
        self.path = path
        # Whether inserts write each segment's search index (benchmarks compare without).
        self.search_index = search_index
        self.reserve_path = path.with_name("reserve.bin")
        self.reserve_bytes = reserve_bytes
        self.raw_max_bytes = raw_max_bytes
        self.quick_check = quick_check
        self.writer: aiosqlite.Connection | None = None
        self.reader: aiosqlite.Connection | None = None
        self._lock = asyncio.Lock()
        self._next_id = 1
        self.events_stored = 0
        metrics = metrics if metrics is not None else Registry()
        self.write_errors = metrics.counter(
            "storage_write_errors_total",
            "Write transactions that failed for a storage reason (disk_full, io_error, ...).",
            ["reason"],
        )
        self.reopens = metrics.counter(
            "storage_reopens_total",
            "Times the database was reopened because its file or WAL was deleted or replaced.",
            ["reason"],
        )
        # Set by a write that failed for lack of space, cleared by the next one that commits.
        self.disk_full_since: float | None = None
        # (st_dev, st_ino) of the database file and its WAL as opened: what the paths must
        # still name, or commits go to a file nobody else will ever read.
        self._ids: dict[str, tuple[int, int] | None] = {}

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
            await self.reader.create_function("seg_may_hold", 2, sql_may_hold, deterministic=True)
            self._ids = {"db": file_id(self.path), "wal": file_id(self._wal_path)}
        except (sqlite3.Error, OSError) as exc:
            await self._close_connections(checkpoint=False)
            raise StoreError(f"cannot open database {self.path}: {exc}") from exc

    async def _connect(self, path: Path) -> aiosqlite.Connection:
        conn = await aiosqlite.connect(path, isolation_level=None)
        try:
            return await self._configure(conn, path)
        except BaseException:
            with contextlib.suppress(Exception):
                await conn.close()  # else its thread outlives the store and the process
            raise

    async def _configure(self, conn: aiosqlite.Connection, path: Path) -> aiosqlite.Connection:
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
        await conn.execute(
            f"PRAGMA wal_autocheckpoint={max(1, self.wal_checkpoint_bytes() // page)}"
        )
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
            return row is not None and row[0] == "ok"
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
                rows = segment_rows(run, self.raw_max_bytes)
                await conn.executemany(INSERT_SEGMENT, rows)
                await conn.executemany(INSERT_INDEX, index_rows(rows) if self.search_index else [])
            await conn.execute("COMMIT")
            converted += len(events)
            after = events[-1].id  # type: ignore[assignment]
        await conn.execute("DROP TABLE events")
        log.info("converted %d events to the segment store", converted)

    @property
    def _wal_path(self) -> Path:
        return Path(str(self.path) + "-wal")

    def wal_checkpoint_bytes(self) -> int:
        """WAL size that triggers a checkpoint: 4 MiB, or 1/32 of a small filesystem. A
        checkpoint grows the database file by up to that much, so on a small filesystem a
        4 MiB WAL alone could take the room its own checkpoint needs."""
        try:
            st = os.statvfs(self.path.parent)
        except OSError:
            return WAL_CHECKPOINT_BYTES
        return max(PAGE_SIZE, min(WAL_CHECKPOINT_BYTES, st.f_blocks * st.f_frsize // 32))

    def effective_reserve(self) -> int:
        """``reserve_bytes``, capped at :data:`RESERVE_FS_SHARE` of the filesystem."""
        if self.reserve_bytes <= 0:
            return 0
        try:
            st = os.statvfs(self.path.parent)
        except OSError:
            return self.reserve_bytes
        return min(self.reserve_bytes, int(st.f_blocks * st.f_frsize * RESERVE_FS_SHARE))

    def ensure_reserve(self) -> bool:
        """Hold the ballast (:meth:`effective_reserve`) on disk; ``False`` if there is no room.

        The ballast is only taken back when the filesystem has at least twice its size free,
        so retaking it never starves the WAL that inserts need right after shedding.
        """
        size = self.effective_reserve()
        if size <= 0:
            return True
        path = self.reserve_path
        try:
            if path.exists() and path.stat().st_size >= size:
                return True
            st = os.statvfs(path.parent)
            if st.f_bavail * st.f_frsize < 2 * size:
                return False
            with path.open("wb") as f:
                os.posix_fallocate(f.fileno(), 0, size)
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

    def fs_share(self) -> float:
        """Share of data_dir's filesystem taken by the database and its WAL."""
        try:
            st = os.statvfs(self.path.parent)
        except OSError:
            return 1.0
        total = st.f_blocks * st.f_frsize
        return self.size_bytes() / total if total else 1.0

    def free_bytes(self) -> int:
        try:
            st = os.statvfs(self.path.parent)
        except OSError:
            return 0
        return st.f_bavail * st.f_frsize

    # ------------------------------------------------------------- files replaced underneath

    def files_changed(self) -> str | None:
        """Why the open database no longer is what its path names (``db_missing``,
        ``db_replaced``, ``wal_missing``, ``wal_replaced``), or ``None``.

        Two ``stat`` calls: cheap enough for a timer of a few seconds. SQLite itself does not
        notice: commits go on into the unlinked file and are lost when the process ends.
        """
        if self.writer is None:
            return None
        for kind, path in (("db", self.path), ("wal", self._wal_path)):
            was = self._ids.get(kind)
            now = file_id(path)
            if was is None:
                if kind == "wal" and now is not None:
                    self._ids[kind] = now  # the WAL came into being after open
                continue
            if now is None:
                return f"{kind}_missing"
            if now != was:
                return f"{kind}_replaced"
        return None

    async def reopen(self, reason: str) -> None:
        """Reopen the database at its path after :meth:`files_changed` said ``reason``.

        A deleted WAL is first checkpointed through the handle still open on it, so what was
        committed into it reaches the database file. A deleted database cannot be saved that
        way (its pages are only in the unlinked file): a new one is created and migrated, so
        ingestion goes on. Writers wait on the lock meanwhile.
        """
        async with self._lock:
            if reason.startswith("wal") and self.writer is not None:
                try:
                    async with self.writer.execute("PRAGMA wal_checkpoint(TRUNCATE)") as cur:
                        row = await cur.fetchone()
                    if row is not None and row[0]:
                        log.error("checkpoint of the deleted WAL could not finish: %s", row)
                except sqlite3.Error as exc:
                    log.error("checkpoint of the deleted WAL failed: %s", exc)
            await self._close_connections(checkpoint=False)
            try:
                await self.open()
            except StoreError:
                log.exception("reopening %s after %s failed", self.path, reason)
                raise
            self.reopens.inc(reason)
        log.error(
            "database %s: %s underneath the running appliance; reopened%s",
            self.path,
            reason.replace("_", " "),
            " (a new empty database)" if reason == "db_missing" else "",
        )

    async def close(self) -> None:
        async with self._lock:
            await self._close_connections(checkpoint=True)

    async def _close_connections(self, *, checkpoint: bool) -> None:
        """Close reader and writer (the caller holds the write lock)."""
        for attr in ("reader", "writer"):
            conn = getattr(self, attr)
            if conn is not None:
                setattr(self, attr, None)
                if checkpoint and attr == "writer":
                    # PASSIVE never waits on readers; the last close checkpoints anyway.
                    with contextlib.suppress(Exception):
                        async with conn.execute("PRAGMA wal_checkpoint(PASSIVE)") as c:
                            await c.fetchall()
                with contextlib.suppress(Exception):
                    await conn.close()  # even when the checkpoint failed

    # --------------------------------------------------------------------------------- writes

    @contextlib.asynccontextmanager
    async def transaction(self, *, durable: bool = False) -> AsyncIterator[aiosqlite.Connection]:
        """One write transaction on the writer connection; ``durable`` commits with FULL sync.

        Every writer comes through here, so this is where a full disk is noticed (and counted
        by reason) whoever writes, and where its end is seen: the next commit that succeeds.
        """
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
            except BaseException as exc:
                with contextlib.suppress(sqlite3.Error):
                    await conn.execute("ROLLBACK")
                self._write_failed(exc)
                raise
            else:
                try:
                    await conn.execute("COMMIT")
                except BaseException as exc:
                    # SQLite may keep the transaction open after a failed COMMIT (disk full):
                    # end it, or every later write on this connection fails too.
                    with contextlib.suppress(sqlite3.Error):
                        await conn.execute("ROLLBACK")
                    self._write_failed(exc)
                    raise
                if self.disk_full_since is not None:
                    log.warning(
                        "storage: writes commit again after %.0f s of disk full",
                        time.monotonic() - self.disk_full_since,
                    )
                    self.disk_full_since = None
            finally:
                if durable:
                    with contextlib.suppress(sqlite3.Error):
                        await conn.execute("PRAGMA synchronous=NORMAL")

    def _write_failed(self, exc: BaseException) -> None:
        reason = write_error_reason(exc)
        if reason is None:
            return
        self.write_errors.inc(reason)
        if reason == "disk_full" and self.disk_full_since is None:
            self.disk_full_since = time.monotonic()
            log.error("storage: disk full in %s (%s)", self.path.parent, exc)

    @property
    def disk_full(self) -> bool:
        return self.disk_full_since is not None

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
            index = index_rows(rows) if self.search_index else []
            async with self.transaction() as conn:
                await conn.executemany(INSERT_SEGMENT, rows)
                # The segment's search index commits with it (or neither does).
                await conn.executemany(INSERT_INDEX, index)
        except BaseException:
            for ev in events:
                ev.id = None
            raise
        self._next_id = next_id
        self.events_stored += len(events)

    async def backfill_index(self, *, batch: int = 16) -> int:
        """Write the search index of segments stored without one (before migration 0014, or
        by the Python backend), newest first; how many were indexed.

        Optional: a segment without an index is searched by scanning, so this only makes old
        history as fast to search as new. Each transaction holds ``batch`` segments, so
        ingest waits at most that long behind it.
        """
        conn = self.reader
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
            async with self.transaction() as wconn:
                for first_id in ids:
                    async with wconn.execute(
                        "SELECT body FROM event_segments WHERE first_id = ?", (first_id,)
                    ) as cur:
                        row = await cur.fetchone()
                    if row is None:
                        continue  # retention took it meanwhile
                    body = bytes(row[0])
                    bloom = build(body) if build else segindex.bloom_reference(body)
                    if bloom is not None:
                        await wconn.execute(
                            "INSERT OR IGNORE INTO event_index (first_id, bloom) VALUES (?, ?)",
                            (first_id, bloom),
                        )
                        done += 1
            before = ids[-1]
            await asyncio.sleep(0)

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
                segments = cast("list[tuple[int, bytes]]", await cur.fetchall())
            if not segments:
                break
            # Decoding up to 4 x 1024 lines is CPU work: off the event loop, which intake and
            # /healthz wait on (with many API clients, pages built on the loop queued /healthz
            # behind each other for a second).
            out.extend(
                await asyncio.to_thread(_matching, segments, before_id, match, limit - len(out))
            )
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
            found = cast("tuple[int, bytes] | None", await cur.fetchone())
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
                    doomed = cast("list[tuple[int, int]]", await cur.fetchall())
                if doomed:
                    await conn.execute(
                        "DELETE FROM event_segments WHERE first_id <= ?", (doomed[-1][0],)
                    )
                    await conn.execute(
                        "DELETE FROM event_index WHERE first_id <= ?", (doomed[-1][0],)
                    )
                    deleted += sum(int(c) for _f, c in doomed)
            if len(doomed) < chunk:
                try:
                    deleted += await self._trim_segment_head(first_kept)
                except sqlite3.Error as exc:  # disk full: the whole segments went, enough
                    _rl.warning("trim", "could not trim the oldest segment: %s", exc)
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
            # So does the old filter (it holds the terms of a superset of the lines).
            await conn.execute(
                "UPDATE event_index SET first_id = ? WHERE first_id = ?", (first_kept, first_id)
            )
            return cut

    async def make_room(
        self, *, goal_bytes: int | None = None, share: float = 0.1, full: bool = True
    ) -> int:
        """Delete the oldest whole segments holding at least ``goal_bytes`` (default: ``share``
        of the events' bytes); the number of events deleted.

        Whole segments only: trimming one rewrites it, which needs as much room as it frees.
        Their pages go to the free list, where the next inserts take them, so the file stops
        growing and WAL checkpoints need no new space. ``full``: the disk is already full, so
        the ballast is released first (deleting and checkpointing need a little space; the
        caller retakes it once there is room) and the WAL is truncated after.
        """
        if full:
            self.release_reserve()
        conn = self.reader
        if conn is None:
            raise StoreError("store is closed")
        if goal_bytes is None:
            async with conn.execute(
                "SELECT coalesce(sum(length(body)), 0) FROM event_segments"
            ) as cur:
                row = await cur.fetchone()
            goal_bytes = int((row[0] if row else 0) * share)
        cut = None
        total = 0
        async with conn.execute(
            "SELECT last_id, length(body) FROM event_segments ORDER BY first_id"
        ) as cur:
            async for last_id, size in cur:
                cut, total = int(last_id) + 1, total + int(size)
                if total >= goal_bytes:
                    break
        deleted = await self._delete_before(cut) if cut is not None else 0
        await self.checkpoint(truncate=full)
        return deleted

    async def checkpoint(self, *, truncate: bool) -> bool:
        """``PRAGMA wal_checkpoint`` on the writer; ``True`` when it finished. TRUNCATE gives
        the WAL's space back to the filesystem, which is what a full disk needs."""
        async with self._lock:
            if self.writer is None:
                return False
            mode = "TRUNCATE" if truncate else "PASSIVE"
            try:
                async with self.writer.execute(f"PRAGMA wal_checkpoint({mode})") as cur:
                    row = await cur.fetchone()
            except sqlite3.Error as exc:
                _rl.warning("checkpoint", "WAL checkpoint (%s) failed: %s", mode, exc)
                return False
            return row is not None and row[0] == 0

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
            # The search index goes with its segments, so its bytes count as the events'.
            async with conn.execute(
                "SELECT coalesce(sum(length(body)), 0)"
                " + (SELECT coalesce(sum(length(bloom)), 0) FROM event_index),"
                " min(first_id), max(last_id) FROM event_segments"
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


def _matching(
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
