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
import sys
import time
from collections.abc import AsyncIterator, Iterable
from importlib import resources
from pathlib import Path
from typing import Any

import aiosqlite
import orjson

from appliance.event import Event
from appliance.store.frames import INSERT as INSERT_EVENT
from appliance.store.frames import REPLY, REQUEST, encode_row, pack_batch

log = logging.getLogger(__name__)

# Columns pulled out of the fields dict into their own columns (see 0001_events.sql).
_COLUMN_FIELDS = ("observer.ip", "source.ip", "host.hostname", "message")


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


def event_row(ev: Event, max_raw: int) -> tuple[Any, ...]:
    return encode_row(ev.id, ev.timestamp, ev.created, ev.module, ev.fields, ev.raw, max_raw)


def row_event(row: sqlite3.Row | tuple[Any, ...]) -> Event:
    id_, ts, created, module, observer_ip, source_ip, hostname, message, fields_json, raw = row
    fields = orjson.loads(fields_json)
    for key, value in zip(_COLUMN_FIELDS, (observer_ip, source_ip, hostname, message), strict=True):
        if value is not None:
            fields[key] = value
    return Event(
        timestamp=ts, created=created, module=module, fields=fields, raw=raw or b"", id=id_
    )


class Store:
    """Owns the database file. Open with :meth:`open`, close with :meth:`close`."""

    def __init__(
        self,
        path: Path,
        *,
        raw_max_bytes: int = 8192,
        quick_check: bool = True,
        writer_process: bool = True,
        reserve_bytes: int = 0,
    ) -> None:
        self.path = path
        self.reserve_path = path.with_name("reserve.bin")
        self.reserve_bytes = reserve_bytes
        self.raw_max_bytes = raw_max_bytes
        self.quick_check = quick_check
        self.event_writer: EventWriterProcess | None = (
            EventWriterProcess(path) if writer_process else None
        )
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
            async with self.writer.execute("SELECT max(id) FROM events") as cur:
                row = await cur.fetchone()
            self._next_id = (row[0] or 0) + 1 if row else 1
            self.reader = await aiosqlite.connect(
                f"file:{self.path}?mode=ro", uri=True, isolation_level=None
            )
            await self.reader.execute("PRAGMA busy_timeout=5000")
            await self.reader.execute("PRAGMA query_only=1")
            if self.event_writer is not None:
                await self.event_writer.start()
        except (sqlite3.Error, OSError) as exc:
            await self.close()
            raise StoreError(f"cannot open database {self.path}: {exc}") from exc

    async def _connect(self, path: Path) -> aiosqlite.Connection:
        conn = await aiosqlite.connect(path, isolation_level=None)
        new = not path.exists() or path.stat().st_size == 0
        if new:
            # Must precede the first table: lets retention give pages back to the filesystem.
            await conn.execute("PRAGMA auto_vacuum=INCREMENTAL")
        async with conn.execute("PRAGMA journal_mode=WAL") as cur:
            await cur.fetchone()
        await conn.execute("PRAGMA synchronous=NORMAL")
        await conn.execute("PRAGMA busy_timeout=5000")
        await conn.execute("PRAGMA foreign_keys=ON")
        await conn.execute("PRAGMA journal_size_limit=67108864")
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
        if self.event_writer is not None:
            await self.event_writer.stop()
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
                await conn.execute("COMMIT")
            finally:
                if durable:
                    await conn.execute("PRAGMA synchronous=NORMAL")

    async def insert_events(self, events: list[Event]) -> None:
        """Insert a batch in one transaction, assigning each event its id first.

        With the writer process (the default) the rows go to the child and this returns once
        it acknowledges the commit; otherwise they are written on the aiosqlite connection.
        Either way a failure raises and leaves the events without ids, so the caller can retry.
        """
        if not events:
            return
        next_id = self._next_id
        for ev in events:
            ev.id = next_id
            next_id += 1
        try:
            if self.event_writer is not None:
                # The child encodes the rows (JSON, columns): that work leaves this process.
                parts = [(e.id, e.timestamp, e.created, e.module, e.fields, e.raw) for e in events]
                await self.event_writer.write(self.raw_max_bytes, parts)
            else:
                await self._insert_inline([event_row(e, self.raw_max_bytes) for e in events])
        except BaseException:
            for ev in events:
                ev.id = None
            raise
        self._next_id = next_id
        self.events_stored += len(events)

    async def _insert_inline(self, rows: list[tuple[Any, ...]]) -> None:
        async with self._lock:
            conn = self.writer
            if conn is None:
                raise StoreError("store is closed")
            await conn.execute("BEGIN")
            try:
                await conn.executemany(INSERT_EVENT, rows)
                await conn.execute("COMMIT")
            except BaseException:
                with contextlib.suppress(sqlite3.Error):
                    await conn.execute("ROLLBACK")
                raise

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
        syslog, traps) the device that sent it (``observer.ip``).
        """
        clauses: list[str] = []
        args: list[Any] = []
        for clause, value in (
            ("ts >= ?", since),
            ("ts < ?", until),
            ("coalesce(source_ip, observer_ip) = ?", source_ip),
            ("observer_ip = ?", observer_ip),
            ("hostname = ?", hostname),
            ("module = ?", module),
            ("id < ?", before_id),
        ):
            if value is not None:
                clauses.append(clause)
                args.append(value)
        if text:
            clauses.append("instr(message, ?) > 0")
            args.append(text)
        where = f"WHERE {' AND '.join(clauses)}" if clauses else ""
        # The clauses are the fixed strings above; every value is bound.
        sql = (
            "SELECT id, ts, created, module, observer_ip, source_ip, hostname, message, fields,"  # noqa: S608
            " raw FROM events " + where + " ORDER BY id DESC LIMIT ?"
        )
        args.append(int(limit))
        conn = self.reader
        if conn is None:
            raise StoreError("store is closed")
        async with conn.execute(sql, args) as cur:
            rows = await cur.fetchall()
        return [row_event(r) for r in rows]

    async def count_events(self) -> int:
        conn = self.reader
        if conn is None:
            raise StoreError("store is closed")
        async with conn.execute("SELECT count(*) FROM events") as cur:
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
        """Binary search on rowid: ``created`` grows with id because one writer assigns both."""
        conn = self.reader
        assert conn is not None
        async with conn.execute("SELECT min(id), max(id) FROM events") as cur:
            row = await cur.fetchone()
        if not row or row[0] is None:
            return None
        lo, hi = int(row[0]), int(row[1]) + 1
        while lo < hi:
            mid = (lo + hi) // 2
            async with conn.execute(
                "SELECT id, created FROM events WHERE id >= ? ORDER BY id LIMIT 1", (mid,)
            ) as cur:
                r = await cur.fetchone()
            if r is None or r[1] >= cutoff:
                hi = mid
            else:
                lo = int(r[0]) + 1
        return lo

    async def _delete_before(self, first_kept: int, chunk: int = 20_000) -> int:
        deleted = 0
        while True:
            async with self.transaction() as conn:
                cur = await conn.execute(
                    "DELETE FROM events WHERE id IN"
                    " (SELECT id FROM events WHERE id < ? ORDER BY id LIMIT ?)",
                    (first_kept, chunk),
                )
                n = cur.rowcount
            deleted += max(n, 0)
            if n < chunk:
                return deleted
            await asyncio.sleep(0)  # let ingest batches in between chunks

    async def enforce_retention(
        self, *, max_age: float, max_bytes: int, now: float, truncate_wal: bool = False
    ) -> tuple[int, int]:
        """Delete events received more than ``max_age`` seconds ago, then the oldest until the
        database uses at most ``max_bytes``; return (deleted by age, deleted by size)."""
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
            async with conn.execute("SELECT min(id), max(id), count(*) FROM events") as cur:
                row = await cur.fetchone()
            if not row or not row[2]:
                break
            lo, hi, _count = row
            # Delete the oldest share that brings usage to 90 % of the limit (at least 1 %).
            share = max(0.01, 1 - (0.9 * max_bytes) / used)
            cut = lo + max(1, int((hi - lo + 1) * share))
            deleted += await self._delete_before(cut)
        if deleted or by_age:
            async with self._lock:
                assert self.writer is not None
                # Both pragmas return rows; fetch them so no statement stays active.
                checkpoint = "TRUNCATE" if truncate_wal else "PASSIVE"
                for pragma in ("PRAGMA incremental_vacuum", f"PRAGMA wal_checkpoint({checkpoint})"):
                    async with self.writer.execute(pragma) as cur:
                        await cur.fetchall()
        return by_age, deleted


def _split_sql(sql: str) -> Iterable[str]:
    """Statements of a migration file (no semicolons inside literals in our migrations)."""
    body = "\n".join(line for line in sql.splitlines() if not line.lstrip().startswith("--"))
    for stmt in body.split(";"):
        if stmt.strip():
            yield stmt.strip()


class EventWriterProcess:
    """Parent side of :mod:`appliance.store.writer_process`: frames batches out, awaits acks.

    If the child dies, the batch in flight fails (the pipeline retries it: rows carry their
    ids, so a replay is idempotent) and the next write starts a new child.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self.proc: asyncio.subprocess.Process | None = None
        self._batch = 0
        self._lock = asyncio.Lock()

    async def start(self) -> None:
        self.proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "appliance.store.writer_process",
            str(self.path),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            start_new_session=True,  # a terminal's Ctrl-C goes to us; we stop the child
        )

    async def write(self, max_raw: int, rows: list[tuple[Any, ...]]) -> None:
        async with self._lock:
            if self.proc is None or self.proc.returncode is not None:
                if self.proc is not None:
                    log.error(
                        "event writer process exited (%s); starting a new one", self.proc.returncode
                    )
                await self.start()
            proc = self.proc
            assert proc is not None and proc.stdin is not None and proc.stdout is not None
            self._batch += 1
            payload = pack_batch(max_raw, rows)
            try:
                proc.stdin.write(REQUEST.pack(self._batch, len(payload)))
                proc.stdin.write(payload)
                await proc.stdin.drain()
                reply = await proc.stdout.readexactly(REPLY.size)
                batch, count, status, elen = REPLY.unpack(reply)
                error = (await proc.stdout.readexactly(elen)).decode() if elen else ""
            except (OSError, asyncio.IncompleteReadError) as exc:
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
                await proc.wait()
                raise sqlite3.OperationalError(f"event writer process failed: {exc}") from exc
            if batch != self._batch or count != len(rows):
                raise sqlite3.OperationalError("event writer process is out of step")
            if status:
                raise sqlite3.OperationalError(error or "event writer process error")

    async def stop(self, timeout: float = 60.0) -> None:
        proc, self.proc = self.proc, None
        if proc is None:
            return
        async with self._lock:
            if proc.stdin is not None:
                proc.stdin.close()
            try:
                await asyncio.wait_for(proc.wait(), timeout)
            except TimeoutError:
                proc.kill()
                await proc.wait()
