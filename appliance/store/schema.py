"""The database's schema: the numbered migrations, and the one-time conversion of the
pre-segment ``events`` table.

Migrations are ``NNNN_name.sql`` files in :mod:`appliance.store.migrations`, applied in order
over the file's ``user_version``, each in its own transaction (a failed one leaves the file at
the version before it).
"""

from __future__ import annotations

import logging
import re
import sqlite3
from importlib import resources
from typing import Any

import aiosqlite
import orjson

from appliance.event import Event
from appliance.store.segments import INSERT_SEGMENT, SEGMENT_EVENTS, segment_rows

log = logging.getLogger(__name__)

# Columns of the pre-segment `events` table (0001_events.sql), read once to convert it.
_LEGACY_COLUMN_FIELDS = ("observer.ip", "source.ip", "host.hostname", "message")


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


async def migrate(conn: aiosqlite.Connection) -> None:
    """Apply the migrations newer than the file's ``user_version``, each in a transaction."""
    async with conn.execute("PRAGMA user_version") as cur:
        row = await cur.fetchone()
    current = row[0] if row else 0
    for number, name, sql in migrations():
        if number <= current:
            continue
        log.info("applying schema migration %04d_%s", number, name)
        # One script a migration: one trip to the connection's thread instead of one per
        # statement (a fresh database's 15 migrations were ~120 trips, most of its 16 ms of
        # CPU to open). The script stops at a failing statement with the transaction open.
        try:
            await conn.executescript(
                f"BEGIN IMMEDIATE;\n{sql}\n;PRAGMA user_version={int(number)};\nCOMMIT;"
            )
        except BaseException:
            if conn.in_transaction:
                await conn.execute("ROLLBACK")
            raise


async def convert_legacy_events(conn: aiosqlite.Connection, raw_max_bytes: int) -> None:
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
            await conn.executemany(INSERT_SEGMENT, segment_rows(run, raw_max_bytes))
        await conn.execute("COMMIT")
        converted += len(events)
        after = events[-1].id  # type: ignore[assignment]
    await conn.execute("DROP TABLE events")
    log.info("converted %d events to the segment store", converted)
