"""The store: the owner of the database file's connections, and the one way to write.

Why this shape: SQLite allows one writer at a time, and a transaction per event caps ingest at
a few thousand rows a second. So every write goes through :meth:`Store.transaction`, which
serialises writers with an asyncio lock on one aiosqlite connection, and events are inserted
in batches by the pipeline. Reads (API, reports) use their own connection so a long query
never waits behind a batch, and a third copies the WAL into the database file beside the
writer (:meth:`Store.wal_written`). WAL + ``synchronous=NORMAL`` for events (an application
crash loses nothing; a power cut may lose the last commits); ``durable=True`` transactions
switch to ``FULL`` for what must survive a power cut (incidents, the outbox).

What is done over those connections lives beside it, one module per concern: the schema and
its migrations (:mod:`~appliance.store.schema`), the events (:mod:`~appliance.store.events`),
retention (:mod:`~appliance.store.retention`), disk space (:mod:`~appliance.store.space`),
component state (:mod:`~appliance.store.state`). :class:`Store` keeps the methods callers use
and hands each to its module.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import TypeVar

import aiosqlite

from appliance.event import Event
from appliance.logutil import RateLimitedLog
from appliance.metrics import Registry
from appliance.store import events as _events
from appliance.store import retention as _retention
from appliance.store import space as _space
from appliance.store.errors import StoreError, write_error_reason
from appliance.store.schema import convert_legacy_events, migrate, migrations
from appliance.store.search import sql_may_hold
from appliance.store.segments import sql_holds, sql_text
from appliance.store.space import PAGE_SIZE, SHED_MIN_FS_SHARE, Ballast, file_id
from appliance.store.state import Codec, StateSlot

# Names importers of this module used before it was split.
__all__ = [
    "PAGE_SIZE",
    "SHED_MIN_FS_SHARE",
    "Store",
    "StoreError",
    "migrations",
    "write_error_reason",
]

T = TypeVar("T")

log = logging.getLogger(__name__)
_rl = RateLimitedLog(log)


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
        clock: Callable[[], float] = time.time,
        search_index: bool = True,
    ) -> None:
        self.path = path
        # Whether inserts write each segment's search index (benchmarks compare without).
        self.search_index = search_index
        self.clock = clock  # stamps the ``updated`` column of state rows
        self.ballast = Ballast(path.with_name("reserve.bin"), reserve_bytes)
        self.raw_max_bytes = raw_max_bytes
        self.quick_check = quick_check
        self.writer: aiosqlite.Connection | None = None
        self.reader: aiosqlite.Connection | None = None
        # Reads that must see every commit before them (read_current): used by no cursor.
        self.current: aiosqlite.Connection | None = None
        # Checkpoints the WAL in its own thread while the writer goes on (see wal_written).
        self.checkpointer: aiosqlite.Connection | None = None
        self._checkpointing: asyncio.Task[None] | None = None
        self._wal_unsaved = 0  # event bytes committed since the last background checkpoint
        self._lock = asyncio.Lock()
        self.next_id = 1  # the id the next stored event gets (appliance.store.events)
        self.events_stored = 0
        metrics = metrics if metrics is not None else Registry()
        self.write_errors = metrics.counter(
            "storage_write_errors_total",
            "Write transactions that failed for a storage reason (disk_full, io_error, ...).",
            ["reason"],
        )
        self.background_checkpoints = metrics.counter(
            "storage_wal_checkpoints_total",
            "WAL checkpoints run beside the writer, by result (done: the WAL was copied"
            " whole; partial: a reader or another checkpoint held part of it; failed).",
            ["result"],
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
            await migrate(self.writer)
            await convert_legacy_events(self.writer, self.raw_max_bytes)
            async with self.writer.execute("SELECT max(last_id) FROM event_segments") as cur:
                row = await cur.fetchone()
            self.next_id = (row[0] or 0) + 1 if row else 1
            self.reader = await aiosqlite.connect(
                f"file:{self.path}?mode=ro", uri=True, isolation_level=None
            )
            await self.reader.execute("PRAGMA busy_timeout=5000")
            await self.reader.execute("PRAGMA query_only=1")
            await self.reader.create_function("seg_may_hold", 2, sql_may_hold, deterministic=True)
            await self.reader.create_function("seg_holds", -1, sql_holds, deterministic=True)
            await self.reader.create_function("seg_text", 1, sql_text, deterministic=True)
            self.current = await aiosqlite.connect(
                f"file:{self.path}?mode=ro", uri=True, isolation_level=None
            )
            await self.current.execute("PRAGMA busy_timeout=5000")
            await self.current.execute("PRAGMA query_only=1")
            # Never writes a row: journal mode and page size are the file's own. A read now
            # opens its handles on the WAL and its index, so the files it holds are held
            # from the start, not from its first checkpoint.
            self.checkpointer = await aiosqlite.connect(self.path, isolation_level=None)
            async with self.checkpointer.execute("SELECT count(*) FROM sqlite_master") as cur:
                await cur.fetchone()
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

    @property
    def _wal_path(self) -> Path:
        return Path(str(self.path) + "-wal")

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
        """Close the checkpointer, readers and writer (the caller holds the write lock)."""
        running = self._checkpointing
        if running is not None:
            with contextlib.suppress(Exception):
                await running  # its statement runs in the connection's thread to the end
        for attr in ("checkpointer", "current", "reader", "writer"):
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

    async def read_current(self, sql: str, params: tuple[object, ...] = ()) -> list[sqlite3.Row]:
        """The rows of a read that sees every transaction committed before it.

        The shared ``reader`` cannot promise that: while any task holds a statement open on
        it (a cursor read in steps, a ``fetchone`` before its close), every query there joins
        that statement's read snapshot, so a row deleted since reads back: the forward
        sender, reading its next rows so, could send again a row its last transaction had
        deleted as delivered. Here each call runs its statement to the end in the
        connection's thread, so no statement is ever left open on this connection."""
        conn = self.current
        if conn is None:
            raise StoreError("store is closed")
        return list(await conn.execute_fetchall(sql, params))

    # ---------------------------------------------------------------------------------- state

    def state(self, component: str, key: str, codec: Codec[T]) -> StateSlot[T]:
        """The ``state`` row ``(component, key)`` whose value ``codec`` encodes: the one way
        components keep what must survive a restart (:mod:`appliance.store.state`)."""
        return StateSlot(self, component, key, codec)

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

    def wal_written(self, nbytes: int) -> None:
        """Say that a commit added about ``nbytes`` to the WAL; past a quarter of the
        checkpoint size, a checkpoint starts on the checkpointer's connection, in its thread.

        Why: the writer's own automatic checkpoint runs inside the COMMIT that crosses the
        size, so the batch that crossed it waited for the copy and its fsyncs (10-17 ms of a
        ~40 ms cycle of syslog/TCP, every other batch). Run beside the writer, it costs the
        pipeline nothing; the WAL restarts from its start at the next write after a complete
        copy. The writer's automatic checkpoint stays the bound on the WAL: it finds nothing
        left to copy when this one kept up, and does the work itself when this one could not
        (a reader on an old snapshot, a copy still running, a full disk)."""
        self._wal_unsaved += nbytes
        if (
            self._wal_unsaved < self.wal_checkpoint_bytes() >> 2
            or self._checkpointing is not None
            or self.checkpointer is None
        ):
            return
        self._wal_unsaved = 0
        self._checkpointing = asyncio.create_task(
            self._checkpoint_beside(self.checkpointer), name="wal-checkpoint"
        )

    async def _checkpoint_beside(self, conn: aiosqlite.Connection) -> None:
        try:
            async with conn.execute("PRAGMA wal_checkpoint(PASSIVE)") as cur:
                row = await cur.fetchone()
        except (sqlite3.Error, ValueError) as exc:  # ValueError: closed meanwhile
            self.background_checkpoints.inc("failed")
            _rl.warning("checkpoint-beside", "WAL checkpoint beside the writer failed: %s", exc)
        else:
            # (busy, frames in the WAL, frames copied): all copied is what lets it restart.
            done = row is not None and row[0] == 0 and row[1] == row[2]
            self.background_checkpoints.inc("done" if done else "partial")
        finally:
            self._checkpointing = None

    async def give_back_space(self, *, truncate_wal: bool) -> None:
        """Hand the pages deletes freed back to the filesystem (``incremental_vacuum``), then
        checkpoint the WAL. Both only give space back: on a full disk they may fail now and
        succeed next time, so a failure is logged, not raised."""
        async with self._lock:
            assert self.writer is not None
            # Both pragmas return rows; fetch them so no statement stays active.
            checkpoint = "TRUNCATE" if truncate_wal else "PASSIVE"
            for pragma in ("PRAGMA incremental_vacuum", f"PRAGMA wal_checkpoint({checkpoint})"):
                try:
                    async with self.writer.execute(pragma) as cur:
                        await cur.fetchall()
                except sqlite3.Error as exc:
                    log.warning("%s after retention failed: %s", pragma, exc)

    # -------------------------------------------------------- events (appliance.store.events)

    async def insert_events(self, events: list[Event]) -> None:
        """Store a batch in one transaction, each event given its id (see
        :func:`appliance.store.events.insert_events`)."""
        await _events.insert_events(self, events)

    async def backfill_index(self, *, batch: int = 16) -> int:
        """Write the search index of segments stored without one (see
        :func:`appliance.store.events.backfill_index`); how many were indexed."""
        return await _events.backfill_index(self, batch=batch)

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
        """Newest first, ``before_id`` the paging cursor (see
        :func:`appliance.store.events.query_events`)."""
        return await _events.query_events(
            self,
            since=since,
            until=until,
            source_ip=source_ip,
            observer_ip=observer_ip,
            hostname=hostname,
            module=module,
            text=text,
            before_id=before_id,
            limit=limit,
        )

    async def count_events(self) -> int:
        return await _events.count_events(self)

    # -------------------------------------------------- retention (appliance.store.retention)

    async def used_bytes(self) -> int:
        return await _retention.used_bytes(self)

    async def make_room(
        self, *, goal_bytes: int | None = None, share: float = 0.1, full: bool = True
    ) -> int:
        return await _retention.make_room(self, goal_bytes=goal_bytes, share=share, full=full)

    async def enforce_retention(
        self,
        *,
        max_age: float,
        max_bytes: int,
        now: float,
        truncate_wal: bool = False,
        event_floor: float = 0.1,
    ) -> tuple[int, int]:
        return await _retention.enforce_retention(
            self,
            max_age=max_age,
            max_bytes=max_bytes,
            now=now,
            truncate_wal=truncate_wal,
            event_floor=event_floor,
        )

    # ---------------------------------------------------------- disk (appliance.store.space)

    def size_bytes(self) -> int:
        """Database plus WAL on disk."""
        return _space.files_size(self.path)

    def wal_checkpoint_bytes(self) -> int:
        return _space.wal_checkpoint_bytes(self.path.parent)

    def effective_reserve(self) -> int:
        return self.ballast.effective()

    def ensure_reserve(self) -> bool:
        return self.ballast.ensure()

    def release_reserve(self) -> bool:
        return self.ballast.release()

    def fs_share(self) -> float:
        """Share of data_dir's filesystem taken by the database and its WAL."""
        return _space.fs_share(self.path.parent, self.size_bytes())

    def free_bytes(self) -> int:
        return _space.free_bytes(self.path.parent)
