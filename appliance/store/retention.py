"""Retention: which events go when the database is too old or too big, and making room when
the disk is full.

Only events are deleted here (oldest first, whole segments where possible: see
:mod:`appliance.store.events`); flows, rollups and incidents have their own retention.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from appliance.store.errors import StoreError
from appliance.store.events import delete_before, first_id_created_at_or_after

if TYPE_CHECKING:
    from appliance.store.db import Store

log = logging.getLogger(__name__)


async def used_bytes(store: Store) -> int:
    """Bytes of the database file in use (pages minus the free list), WAL excluded."""
    conn = store.reader
    assert conn is not None
    vals = []
    for pragma in ("page_count", "freelist_count", "page_size"):
        async with conn.execute(f"PRAGMA {pragma}") as cur:
            row = await cur.fetchone()
            vals.append(int(row[0]) if row else 0)
    pages, free, size = vals
    return (pages - free) * size


async def make_room(
    store: Store, *, goal_bytes: int | None = None, share: float = 0.1, full: bool = True
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
        store.release_reserve()
    conn = store.reader
    if conn is None:
        raise StoreError("store is closed")
    if goal_bytes is None:
        async with conn.execute("SELECT coalesce(sum(length(body)), 0) FROM event_segments") as cur:
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
    deleted = await delete_before(store, cut) if cut is not None else 0
    await store.checkpoint(truncate=full)
    return deleted


async def enforce_retention(
    store: Store,
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
    first_kept = await first_id_created_at_or_after(store, now - max_age)
    if first_kept is not None:
        by_age = await delete_before(store, first_kept)
    deleted = 0
    for _ in range(20):
        used = await used_bytes(store)
        if used <= max_bytes:
            break
        conn = store.reader
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
        deleted += await delete_before(store, cut)
    if deleted or by_age:
        await store.give_back_space(truncate_wal=truncate_wal)
    return by_age, deleted
