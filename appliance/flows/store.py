"""SQLite access for raw flows and rollups (tables from migration 0005_flows.sql).

Writes go through :meth:`Store.transaction` like every other write, one transaction per batch;
reads use the store's reader connection. All values are bound parameters.
"""

from __future__ import annotations

import json
import sqlite3
from typing import Any

import orjson

from appliance.event import Event
from appliance.flows.rollup import RollupRow
from appliance.store import Store
from appliance.store.errors import StoreError

_COLUMNS = (
    "event.start",
    "observer.ip",
    "source.ip",
    "destination.ip",
    "source.port",
    "destination.port",
    "network.bytes",
    "network.packets",
    "event.end",
)
_SKIP = frozenset(_COLUMNS) | {"network.iana_number"}
INT64_MAX = (1 << 63) - 1  # SQLite's largest integer
CLAMPED_PREFIX = "netflow.clamped."


def _clamp(value: Any) -> Any:
    """``value`` within SQLite's signed 64 bits (saturated); non-integers as they are."""
    if type(value) is int and not -INT64_MAX - 1 <= value <= INT64_MAX:
        return INT64_MAX if value > 0 else -INT64_MAX - 1
    return value


def flow_row(ev: Event, clamped: list[str] | None = None) -> tuple[Any, ...]:
    """One ``flows`` row for a flow event.

    IPFIX counters are unsigned64 and the sampling rate multiplies them, but SQLite integers
    are signed 64-bit: an out-of-range value would make the whole batch's insert raise. Like a
    saturating counter, such a column is stored as the largest integer SQLite holds and
    flagged: the exact value is kept as text in ``netflow.clamped.<field>`` of the row's JSON
    (and the field's name is appended to ``clamped`` for the caller to count). Rules and
    rollups see the exact value; only the stored column is clamped.
    """
    f = ev.fields
    rest = {k: v for k, v in f.items() if k not in _SKIP}
    proto = f.get("network.iana_number")
    ints = []
    for key in ("source.port", "destination.port", "network.bytes", "network.packets"):
        value = f.get(key)
        bounded = _clamp(value)
        if bounded is not value:
            rest[CLAMPED_PREFIX + key] = str(value)
            if clamped is not None:
                clamped.append(key)
        ints.append(bounded)
    try:
        blob = orjson.dumps(rest, default=str).decode()
    except TypeError:  # an integer past 64 bits in another field: the slower encoder takes it
        blob = json.dumps(rest, default=str, separators=(",", ":"))
    return (
        ev.timestamp,
        ev.created,
        f.get("event.start"),
        f.get("observer.ip", ""),
        f.get("source.ip"),
        f.get("destination.ip"),
        ints[0],
        ints[1],
        int(proto) if proto is not None else None,
        ints[2],
        ints[3],
        blob,
    )


def row_flow(row: tuple[Any, ...]) -> Event:
    (id_, ts, created, start, exporter, src, dst, sport, dport, proto, nbytes, npackets,
     fields_json) = row  # fmt: skip
    fields: dict[str, Any] = json.loads(fields_json)
    for key, value in (
        ("event.start", start),
        ("observer.ip", exporter),
        ("source.ip", src),
        ("destination.ip", dst),
        ("source.port", sport),
        ("destination.port", dport),
        ("network.iana_number", str(proto) if proto is not None else None),
        ("network.bytes", nbytes),
        ("network.packets", npackets),
    ):
        if value is not None:
            fields[key] = value
    if start is not None:
        fields["event.end"] = ts
    return Event(timestamp=ts, created=created, module="netflow", fields=fields, id=id_)


async def insert_flows(store: Store, rows: list[tuple[Any, ...]]) -> None:
    """Insert rows made by :func:`flow_row` (one transaction)."""
    async with store.transaction() as conn:
        await conn.executemany(
            "INSERT INTO flows (ts, created, start, exporter, src_ip, dst_ip, src_port, dst_port,"
            " proto, bytes, packets, fields) VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
            rows,
        )


async def insert_rollups(store: Store, rows: list[RollupRow], mark: int | None = None) -> None:
    """Add rollup rows; totals past SQLite's 64-bit integer are written as its maximum (the
    sum of a minute can pass it even when every flow alone fits), never refused. ``mark``:
    the write's number, committed with the rows (what :func:`query_top` returns beside them)."""
    if not rows:
        return
    rows = [(m, d, k, _clamp(b), _clamp(p), _clamp(n)) for m, d, k, b, p, n in rows]
    async with store.transaction() as conn:
        await conn.executemany(
            "INSERT INTO flow_rollups (minute, dim, key, bytes, packets, flows)"
            " VALUES (?,?,?,?,?,?) ON CONFLICT (minute, dim, key) DO UPDATE SET"
            " bytes = bytes + excluded.bytes, packets = packets + excluded.packets,"
            " flows = flows + excluded.flows",
            rows,
        )
        if mark is not None:
            await conn.execute("UPDATE flow_rollup_writes SET mark = ? WHERE id = 1", (mark,))


async def rollup_mark(store: Store) -> int:
    """The number of the last rollup write committed (0 before the first)."""
    async with _reader(store).execute("SELECT mark FROM flow_rollup_writes") as cur:
        row = await cur.fetchone()
    return int(row[0]) if row else 0


def _reader(store: Store) -> Any:
    if store.reader is None:
        raise StoreError("store is closed")
    return store.reader


async def query_flows(
    store: Store,
    *,
    since: float | None = None,
    until: float | None = None,
    source_ip: str | None = None,
    destination_ip: str | None = None,
    ip: str | None = None,
    port: int | None = None,
    exporter: str | None = None,
    proto: int | None = None,
    before_id: int | None = None,
    limit: int = 100,
) -> list[Event]:
    """Newest first, filtered like ``/api/v1/events``; ``before_id`` is the paging cursor."""
    clauses: list[str] = []
    args: list[Any] = []
    for clause, value in (
        ("ts >= ?", since),
        ("ts < ?", until),
        ("src_ip = ?", source_ip),
        ("dst_ip = ?", destination_ip),
        ("exporter = ?", exporter),
        ("proto = ?", proto),
        ("id < ?", before_id),
    ):
        if value is not None:
            clauses.append(clause)
            args.append(value)
    if ip is not None:
        clauses.append("(src_ip = ? OR dst_ip = ?)")
        args += [ip, ip]
    if port is not None:
        clauses.append("(src_port = ? OR dst_port = ?)")
        args += [port, port]
    where = f"WHERE {' AND '.join(clauses)}" if clauses else ""
    # The clauses are the fixed strings above; every value is bound.
    sql = (
        "SELECT id, ts, created, start, exporter, src_ip, dst_ip, src_port, dst_port, proto,"  # noqa: S608
        " bytes, packets, fields FROM flows " + where + " ORDER BY id DESC LIMIT ?"
    )
    args.append(int(limit))
    async with _reader(store).execute(sql, args) as cur:
        rows = await cur.fetchall()
    return [row_flow(tuple(r)) for r in rows]


async def query_top(
    store: Store, *, dim: str, since: float, until: float | None
) -> tuple[list[tuple[str, int, int, int]], int]:
    """``(key, bytes, packets, flows)`` summed over stored minutes in [since, until), and the
    number of the last rollup write that snapshot holds (read in the same statement: a write
    committing meanwhile is in both or in neither)."""
    sql = "SELECT key, sum(bytes), sum(packets), sum(flows) FROM flow_rollups WHERE dim = ?"
    args: list[Any] = [dim, int(since) // 60 * 60]
    sql += " AND minute >= ?"
    if until is not None:
        sql += " AND minute < ?"
        args.append(until)
    sql += " GROUP BY key UNION ALL SELECT NULL, mark, 0, 0 FROM flow_rollup_writes"
    try:
        async with _reader(store).execute(sql, args) as cur:
            rows = await cur.fetchall()
    except sqlite3.OperationalError as exc:
        if "overflow" not in str(exc):
            raise
        # sum() refuses to pass 64 bits; total() adds in floating point (exact to 2**53).
        async with _reader(store).execute(sql.replace("sum(", "total("), args) as cur:
            rows = await cur.fetchall()
    mark = 0
    out = []
    for r in rows:
        if r[0] is None:  # keys are never NULL: this is the mark's row
            mark = int(r[1])
        else:
            out.append((r[0], int(r[1]), int(r[2]), int(r[3])))
    return out, mark


async def delete_old(store: Store, *, flows_before: float, rollups_before: float, max_rows: int,
                     chunk: int = 50_000) -> tuple[int, int]:  # fmt: skip
    """Delete raw flows older than the cut-off or beyond ``max_rows``, and old rollups."""
    deleted = 0
    while True:
        async with store.transaction() as conn:
            cur = await conn.execute(
                "DELETE FROM flows WHERE id IN (SELECT id FROM flows WHERE ts < ? LIMIT ?)",
                (flows_before, chunk),
            )
            n = max(cur.rowcount, 0)
        deleted += n
        if n < chunk:
            break
    async with _reader(store).execute("SELECT min(id), max(id) FROM flows") as cur:
        row = await cur.fetchone()
    if row and row[0] is not None and row[1] - row[0] + 1 > max_rows:
        async with store.transaction() as conn:
            cur = await conn.execute("DELETE FROM flows WHERE id <= ?", (row[1] - max_rows,))
            deleted += max(cur.rowcount, 0)
    async with store.transaction() as conn:
        cur = await conn.execute(
            "DELETE FROM flow_rollups WHERE minute < ?", (int(rollups_before),)
        )
        rolled = max(cur.rowcount, 0)
    return deleted, rolled
