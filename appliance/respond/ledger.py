"""The response tables: actions with their state and expiry, and the audit log (SQL only).

Every function takes the connection of the caller's transaction, so a state change and its
audit line commit together or not at all. Parameterized SQL throughout.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import aiosqlite

HELD = ("pending", "active", "undo_pending")
TERMINAL = ("undone", "failed", "undo_failed", "cancelled", "refused", "duplicate")
STATES = (*HELD, *TERMINAL)
COLUMNS = (
    "id, action, incident_id, rule_id, value, state, dry_run, ttl, created, updated, executed,"
    " expires, next_attempt, attempts, last_error"
)


@dataclass(slots=True)
class ActionRow:
    id: int
    action: str
    incident_id: str
    rule_id: str
    value: str
    state: str
    dry_run: bool
    ttl: float
    created: float
    updated: float
    executed: float | None
    expires: float | None
    next_attempt: float | None
    attempts: int
    last_error: str | None

    @classmethod
    def of(cls, row: Any) -> ActionRow:
        values = list(row)
        values[6] = bool(values[6])
        return cls(*values)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


async def audit(
    conn: aiosqlite.Connection,
    now: float,
    event: str,
    action: str,
    *,
    action_id: int | None = None,
    incident_id: str | None = None,
    value: str | None = None,
    actor: str = "system",
    detail: str = "",
) -> None:
    await conn.execute(
        "INSERT INTO respond_audit (at, action_id, action, incident_id, value, event, actor,"
        " detail) VALUES (?,?,?,?,?,?,?,?)",
        (now, action_id, action, incident_id, value, event, actor, detail[:2000]),
    )


async def insert(
    conn: aiosqlite.Connection,
    *,
    action: str,
    incident_id: str,
    rule_id: str,
    value: str,
    state: str,
    dry_run: bool,
    ttl: float,
    now: float,
    last_error: str | None = None,
) -> int:
    cur = await conn.execute(
        "INSERT INTO respond_actions (action, incident_id, rule_id, value, state, dry_run, ttl,"
        " created, updated, next_attempt, last_error) VALUES (?,?,?,?,?,?,?,?,?,?,?)",
        (action, incident_id, rule_id, value, state, int(dry_run), ttl, now, now, now, last_error),
    )
    assert cur.lastrowid is not None
    return cur.lastrowid


async def planned_for(conn: aiosqlite.Connection, action: str, incident_id: str) -> bool:
    async with conn.execute(
        "SELECT 1 FROM respond_actions WHERE action = ? AND incident_id = ?", (action, incident_id)
    ) as cur:
        return await cur.fetchone() is not None


async def held_by(conn: aiosqlite.Connection, action: str, value: str) -> int | None:
    """The row id that holds ``value`` for ``action`` (pending, active or being lifted)."""
    async with conn.execute(
        "SELECT id FROM respond_actions WHERE action = ? AND value = ?"
        " AND state IN ('pending', 'active', 'undo_pending')",
        (action, value),
    ) as cur:
        row = await cur.fetchone()
    return int(row[0]) if row else None


async def get(conn: aiosqlite.Connection, action_id: int) -> ActionRow | None:
    async with conn.execute(
        f"SELECT {COLUMNS} FROM respond_actions WHERE id = ?",  # noqa: S608
        (action_id,),
    ) as cur:
        row = await cur.fetchone()
    return ActionRow.of(row) if row else None


async def expire(conn: aiosqlite.Connection, now: float) -> list[ActionRow]:
    """Move active rows whose TTL passed to ``undo_pending``; the rows moved."""
    async with conn.execute(
        f"SELECT {COLUMNS} FROM respond_actions"  # noqa: S608
        " WHERE state = 'active' AND expires IS NOT NULL AND expires <= ? ORDER BY expires",
        (now,),
    ) as cur:
        rows = [ActionRow.of(r) for r in await cur.fetchall()]
    for r in rows:
        await conn.execute(
            "UPDATE respond_actions SET state = 'undo_pending', attempts = 0, next_attempt = ?,"
            " updated = ? WHERE id = ?",
            (now, now, r.id),
        )
    return rows


async def due(
    conn: aiosqlite.Connection, now: float, skip: set[int], limit: int
) -> list[ActionRow]:
    async with conn.execute(
        f"SELECT {COLUMNS} FROM respond_actions"  # noqa: S608
        " WHERE state IN ('pending', 'undo_pending') AND coalesce(next_attempt, 0) <= ?"
        " ORDER BY id LIMIT ?",
        (now, limit + len(skip)),
    ) as cur:
        rows = [ActionRow.of(r) for r in await cur.fetchall()]
    return [r for r in rows if r.id not in skip][:limit]


async def next_due(conn: aiosqlite.Connection, skip: set[int]) -> float | None:
    """The earliest time anything is due: a retry, a first try, or an expiry."""
    times: list[float] = []
    async with conn.execute(
        "SELECT id, coalesce(next_attempt, 0) FROM respond_actions"
        " WHERE state IN ('pending', 'undo_pending') ORDER BY 2 LIMIT ?",
        (len(skip) + 1,),
    ) as cur:
        times += [float(t) for i, t in await cur.fetchall() if i not in skip][:1]
    async with conn.execute(
        "SELECT min(expires) FROM respond_actions WHERE state = 'active'"
    ) as cur:
        row = await cur.fetchone()
    if row and row[0] is not None:
        times.append(float(row[0]))
    return min(times) if times else None


async def set_state(
    conn: aiosqlite.Connection,
    action_id: int,
    state: str,
    now: float,
    *,
    expect: str | None = None,
    **fields: Any,
) -> bool:
    """Change a row's state (and the given columns); only from ``expect`` when given."""
    allowed = {"executed", "expires", "next_attempt", "attempts", "last_error"}
    assert set(fields) <= allowed, fields
    sets = ", ".join(f"{k} = ?" for k in fields)
    # Column names come from the fixed ``allowed`` set above, never from data.
    sql = f"UPDATE respond_actions SET state = ?, updated = ?{', ' if sets else ''}{sets}"  # noqa: S608
    sql += " WHERE id = ?" + (" AND state = ?" if expect else "")
    params: list[Any] = [state, now, *fields.values(), action_id]
    if expect:
        params.append(expect)
    cur = await conn.execute(sql, params)
    return cur.rowcount > 0


async def list_actions(
    conn: aiosqlite.Connection, *, state: str | None, action: str | None, limit: int
) -> list[ActionRow]:
    where: list[str] = []
    params: list[Any] = []
    if state:
        where.append("state = ?")
        params.append(state)
    if action:
        where.append("action = ?")
        params.append(action)
    sql = f"SELECT {COLUMNS} FROM respond_actions"  # noqa: S608
    if where:
        sql += " WHERE " + " AND ".join(where)
    sql += " ORDER BY id DESC LIMIT ?"
    async with conn.execute(sql, (*params, limit)) as cur:
        return [ActionRow.of(r) for r in await cur.fetchall()]


AUDIT_COLUMNS = ("id", "at", "action_id", "action", "incident_id", "value", "event", "actor")


async def list_audit(
    conn: aiosqlite.Connection,
    *,
    action_id: int | None,
    since: float | None,
    limit: int,
) -> list[dict[str, Any]]:
    where: list[str] = []
    params: list[Any] = []
    if action_id is not None:
        where.append("action_id = ?")
        params.append(action_id)
    if since is not None:
        where.append("at >= ?")
        params.append(since)
    sql = f"SELECT {', '.join(AUDIT_COLUMNS)}, detail FROM respond_audit"  # noqa: S608
    if where:
        sql += " WHERE " + " AND ".join(where)
    sql += " ORDER BY id DESC LIMIT ?"
    async with conn.execute(sql, (*params, limit)) as cur:
        rows = await cur.fetchall()
    return [dict(zip((*AUDIT_COLUMNS, "detail"), r, strict=True)) for r in rows]


async def purge(conn: aiosqlite.Connection, before: float) -> int:
    """Forget finished actions and audit lines older than ``before``."""
    marks = ",".join("?" * len(TERMINAL))
    cur = await conn.execute(
        f"DELETE FROM respond_actions WHERE state IN ({marks}) AND updated < ?",  # noqa: S608
        (*TERMINAL, before),
    )
    n = max(cur.rowcount, 0)
    await conn.execute("DELETE FROM respond_audit WHERE at < ?", (before,))
    return n
