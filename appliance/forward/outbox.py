"""The durable outbox: SQLite rows the senders deliver, in creation order, until acknowledged.

Why SQLite and not memory: an incident must not be lost between "committed" and "delivered"
across restarts, power cuts and outages of days. The row is written in the incident's own
durable transaction (see :meth:`Outbox.enqueue`), every state change after that is a
``durable=True`` transaction (``synchronous=FULL``), and a row leaves only when the upstream
acknowledged it or the spool limits dropped it (counted).

Spool limits per upstream: rows older than ``spool_max_age`` are dropped (reason ``age``);
when the rows exceed ``spool_max_bytes`` the drop order is fixed by ``drop_class`` (see
:mod:`appliance.forward.document`): dead-lettered rows, then resolved/suppressed incidents,
then informational/low, then medium, then open high, and open critical last; oldest first
within a class (reason ``spool_full``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import aiosqlite

from appliance.forward.document import DROP_DEAD
from appliance.forward.formats.base import OutboxItem, Outcome
from appliance.store import Store
from appliance.store.state import FLOAT, StateSlot

STATE_COMPONENT = "forward"


@dataclass(slots=True)
class Settled:
    delivered: int = 0
    duplicates: int = 0
    retried: int = 0
    rejected: int = 0
    dead: int = 0


@dataclass(slots=True)
class SpoolStats:
    pending: int = 0
    dead: int = 0
    bytes: int = 0
    oldest_created: float | None = None


class Outbox:
    def __init__(self, store: Store) -> None:
        self.store = store

    # ------------------------------------------------------------------------ in the txn hook

    @staticmethod
    async def enqueue(
        conn: aiosqlite.Connection,
        upstream: str,
        key: str,
        document: dict[str, Any],
        drop_class: int,
        now: float,
        stream: str = "incident",
    ) -> int:
        """Insert one row inside the caller's transaction; its size, 0 if the key is queued.

        ``INSERT OR IGNORE`` on (upstream, key): a revision replayed by the correlation engine
        after a restart is the same document, so queuing it twice would only add a duplicate.
        """
        # default=str: an odd value in an incident must never roll the incident back.
        body = json.dumps(document, separators=(",", ":"), ensure_ascii=False, default=str)
        size = len(body.encode())
        cur = await conn.execute(
            "INSERT OR IGNORE INTO outbox (upstream, stream, key, created, drop_class, size, body)"
            " VALUES (?,?,?,?,?,?,?)",
            (upstream, stream, key, now, drop_class, size, body),
        )
        return size if cur.rowcount > 0 else 0

    @staticmethod
    async def enqueue_many(
        conn: aiosqlite.Connection,
        upstream: str,
        stream: str,
        rows: list[tuple[str, str, int]],
        now: float,
    ) -> int:
        """Insert ``(key, body, drop_class)`` rows in the caller's transaction; bytes added."""
        await conn.executemany(
            "INSERT OR IGNORE INTO outbox (upstream, stream, key, created, drop_class, size, body)"
            " VALUES (?,?,?,?,?,?,?)",
            [(upstream, stream, key, now, cls, len(body), body) for key, body, cls in rows],
        )
        return sum(len(body) for _, body, _ in rows)

    @staticmethod
    async def spool_bytes(conn: aiosqlite.Connection, upstream: str) -> int:
        async with conn.execute(
            "SELECT coalesce(sum(size), 0) FROM outbox WHERE upstream = ?", (upstream,)
        ) as cur:
            row = await cur.fetchone()
        return int(row[0]) if row else 0

    @staticmethod
    async def trim(
        conn: aiosqlite.Connection,
        upstream: str,
        *,
        max_bytes: int,
        max_age: float,
        now: float,
        check_bytes: bool = True,
    ) -> dict[str, int]:
        """Drop rows past the age limit, then by drop order until under ``max_bytes``.

        ``check_bytes=False`` skips the size pass (a scan of the upstream's rows) when the
        caller's estimate says the spool is well under its limit.
        """
        dropped = {"age": 0, "spool_full": 0}
        cur = await conn.execute(
            "DELETE FROM outbox WHERE upstream = ? AND created < ?", (upstream, now - max_age)
        )
        dropped["age"] = max(cur.rowcount, 0)
        if not check_bytes:
            return dropped
        total = await Outbox.spool_bytes(conn, upstream)
        if total <= max_bytes:
            return dropped
        excess = total - max_bytes
        ids: list[int] = []
        async with conn.execute(
            "SELECT id, size FROM outbox WHERE upstream = ?"
            " ORDER BY CASE WHEN state = 'dead' THEN ? ELSE drop_class END, id",
            (upstream, DROP_DEAD),
        ) as cur:
            async for row in cur:
                ids.append(int(row[0]))
                excess -= int(row[1])
                if excess <= 0:
                    break
        for start in range(0, len(ids), 500):
            chunk = ids[start : start + 500]
            marks = ",".join("?" * len(chunk))
            await conn.execute(f"DELETE FROM outbox WHERE id IN ({marks})", chunk)  # noqa: S608
        dropped["spool_full"] = len(ids)
        return dropped

    # ------------------------------------------------------------------------------ sender

    async def head(self, upstream: str, limit: int, max_bytes: int) -> list[OutboxItem]:
        """The oldest pending rows, at most ``limit`` and ``max_bytes`` (always at least one).

        If the oldest row was rejected before, it goes alone: a poisoned item is isolated
        from good ones until it is delivered or dead-lettered.
        """
        # What the sender's last settle deleted must be gone: a read that sees every commit.
        rows = await self.store.read_current(
            "SELECT id, key, body, size, attempts, rejections FROM outbox"
            " WHERE upstream = ? AND state = 'pending' ORDER BY id LIMIT ?",
            (upstream, limit),
        )
        items: list[OutboxItem] = []
        used = 0
        for id_, key, body, size, attempts, rejections in rows:
            if items and (used + size > max_bytes or rejections):
                break
            items.append(OutboxItem(id_, key, json.loads(body), size, attempts, rejections))
            used += size
            if rejections:
                break
        return items

    async def settle(
        self,
        upstream: str,
        outcomes: dict[int, Outcome],
        *,
        error: str,
        max_rejections: int,
        now: float,
        per_item: bool = False,
    ) -> Settled:
        """Apply one attempt's outcomes in a durable transaction.

        A rejected row is dead-lettered at ``max_rejections`` only when the rejection was
        about it alone (a one-item request, or a per-item status); otherwise it is just
        isolated, so its next tries go alone and tell which item is poisoned.
        """
        if not per_item and len(outcomes) > 1:
            max_rejections = 1 << 30
        s = Settled()
        done = [i for i, o in outcomes.items() if o in (Outcome.DELIVERED, Outcome.DUPLICATE)]
        retry = [i for i, o in outcomes.items() if o is Outcome.RETRY]
        reject = [i for i, o in outcomes.items() if o is Outcome.REJECT]
        s.delivered = sum(1 for o in outcomes.values() if o is Outcome.DELIVERED)
        s.duplicates = sum(1 for o in outcomes.values() if o is Outcome.DUPLICATE)
        s.retried, s.rejected = len(retry), len(reject)
        async with self.store.transaction(durable=True) as conn:
            if done:
                await conn.executemany("DELETE FROM outbox WHERE id = ?", [(i,) for i in done])
                await self.last_success_slot(upstream).write(conn, now)
            if retry:
                await conn.executemany(
                    "UPDATE outbox SET attempts = attempts + 1, last_error = ? WHERE id = ?",
                    [(error, i) for i in retry],
                )
            if reject:
                await conn.executemany(
                    "UPDATE outbox SET attempts = attempts + 1, rejections = rejections + 1,"
                    " last_error = ?,"
                    " state = CASE WHEN rejections + 1 >= ? THEN 'dead' ELSE state END"
                    " WHERE id = ?",
                    [(error, max_rejections, i) for i in reject],
                )
                marks = ",".join("?" * len(reject))
                async with conn.execute(
                    f"SELECT count(*) FROM outbox WHERE state = 'dead' AND id IN ({marks})",  # noqa: S608
                    reject,
                ) as cur:
                    row = await cur.fetchone()
                s.dead = int(row[0]) if row else 0
        return s

    async def drop_unconfigured(
        self, keep: set[str], streams: tuple[str, ...] = ("incident", "event")
    ) -> dict[str, int]:
        """Delete rows of ``streams`` whose upstream is no longer in the config; counts by
        upstream. Other streams sharing the table (the notifier's) are left to their owner."""
        conn = self.store.reader
        assert conn is not None
        marks = ",".join("?" * len(streams))
        async with conn.execute(
            f"SELECT upstream, count(*) FROM outbox WHERE stream IN ({marks})"  # noqa: S608
            " GROUP BY upstream",
            streams,
        ) as cur:
            counts = {str(r[0]): int(r[1]) for r in await cur.fetchall()}
        gone = {name: n for name, n in counts.items() if name not in keep}
        if gone:
            async with self.store.transaction(durable=True) as wconn:
                await wconn.executemany(
                    "DELETE FROM outbox WHERE upstream = ?", [(name,) for name in gone]
                )
        return gone

    def last_success_slot(self, upstream: str) -> StateSlot[float]:
        """When ``upstream`` last took a delivery: kept with the deletes of what it took."""
        return self.store.state(STATE_COMPONENT, f"{upstream}.last_success", FLOAT)

    async def last_success(self, upstream: str) -> float | None:
        try:
            return await self.last_success_slot(upstream).load()
        except ValueError:
            return None

    async def stats(self, upstream: str) -> SpoolStats:
        rows = await self.store.read_current(
            "SELECT coalesce(sum(state = 'pending'), 0), coalesce(sum(state = 'dead'), 0),"
            " coalesce(sum(size), 0), min(CASE WHEN state = 'pending' THEN created END)"
            " FROM outbox WHERE upstream = ?",
            (upstream,),
        )
        (row,) = rows  # an aggregate: always one row
        return SpoolStats(int(row[0]), int(row[1]), int(row[2]), row[3])

    async def dead_letters(self, upstream: str, limit: int = 100) -> list[dict[str, Any]]:
        conn = self.store.reader
        assert conn is not None
        async with conn.execute(
            "SELECT id, key, created, attempts, rejections, last_error FROM outbox"
            " WHERE upstream = ? AND state = 'dead' ORDER BY id LIMIT ?",
            (upstream, limit),
        ) as cur:
            rows = await cur.fetchall()
        return [
            dict(
                zip(
                    ("id", "key", "created", "attempts", "rejections", "last_error"), r, strict=True
                )
            )
            for r in rows
        ]
