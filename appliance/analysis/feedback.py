"""Analyst feedback: scoped suppressions that future alerts honour, and the noisy-rules report.

A false positive is rarely "this exact incident"; it is "this rule, for this source" (a
scanner the site runs), "for this asset" (a honeypot, a test box) or "for this group key".
A suppression names a rule, a scope and a value, with an expiry and a note; the incident
manager asks :meth:`Suppressions.match` before an alert opens or updates an incident, and a
silenced alert is counted on the suppression (and on the incident it would have updated), not
lost. Counts are kept in memory and written back every few seconds and at stop.

Scopes and what they compare (the alert's group-by values, plus for single-event detections
the event's own address and host fields):

- ``group``: the incident's group key, exactly (``source.ip=203.0.113.9``);
- ``source``: an address or CIDR block containing the alert's ``source.ip`` / ``client.ip``;
- ``asset``: a host name (case-insensitive) equal to ``host.name`` / ``host.hostname`` /
  ``observer.hostname``, or an address / block containing ``destination.ip`` /
  ``server.ip`` / ``host.ip`` / ``observer.ip``.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import aiosqlite

from appliance.correlate.engine import Alert
from appliance.event import iso8601
from appliance.logutil import RateLimitedLog
from appliance.store import Store

if TYPE_CHECKING:
    from appliance.app import Appliance

log = logging.getLogger(__name__)
_rl = RateLimitedLog(log)

SCOPES = ("group", "source", "asset")
SOURCE_FIELDS = ("source.ip", "client.ip")
ASSET_ADDRESS_FIELDS = ("destination.ip", "server.ip", "host.ip", "observer.ip")
ASSET_NAME_FIELDS = ("host.name", "host.hostname", "observer.hostname")
MAX_SUPPRESSIONS = 10_000
MAX_NOTE = 500
FLUSH_INTERVAL = 5.0


class SuppressionError(ValueError):
    """A suppression that cannot be created as asked (the message says why)."""


Network = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass(slots=True)
class Suppression:
    id: str
    rule_id: str
    scope: str
    value: str
    incident_id: str | None
    created: float
    expires: float | None
    note: str
    created_by: str
    suppressed_count: int = 0
    last_suppressed: float | None = None
    network: Network | None = None  # source/asset scopes given an address or block
    dirty: bool = False

    def live(self, now: float) -> bool:
        return self.expires is None or self.expires > now

    def covers(self, a: Alert) -> bool:
        if self.scope == "group":
            return a.group_key == self.value
        values = _alert_values(a)
        if self.scope == "source":
            return _any_in(self.network, values, SOURCE_FIELDS)
        if self.network is not None:
            return _any_in(self.network, values, ASSET_ADDRESS_FIELDS)
        want = self.value.lower()
        return any(str(values.get(f, "")).lower() == want for f in ASSET_NAME_FIELDS)

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "rule_id": self.rule_id,
            "scope": self.scope,
            "value": self.value,
            "incident_id": self.incident_id,
            "created": iso8601(self.created),
            "expires": iso8601(self.expires) if self.expires is not None else None,
            "note": self.note,
            "created_by": self.created_by,
            "suppressed_count": self.suppressed_count,
            "last_suppressed": iso8601(self.last_suppressed) if self.last_suppressed else None,
        }


def _alert_values(a: Alert) -> dict[str, Any]:
    """A detection's whole event (its group-by values are among them); a correlation's
    group-by values."""
    return a.fields if a.fields is not None else a.group


def _any_in(net: Network | None, values: dict[str, Any], fields: tuple[str, ...]) -> bool:
    if net is None:
        return False
    for f in fields:
        v = values.get(f)
        if v is None:
            continue
        try:
            if ipaddress.ip_address(str(v)) in net:
                return True
        except ValueError:
            continue
    return False


def parse_scope(scope: str, value: str) -> Network | None:
    """Check a scope and value; the network a source/asset value names (``None`` for a
    group key or a host name). :class:`SuppressionError` when they do not fit."""
    if scope not in SCOPES:
        raise SuppressionError(f"scope must be one of {', '.join(SCOPES)}")
    if not value or len(value) > 1000:
        raise SuppressionError("value: required (at most 1000 characters)")
    if scope == "group":
        return None
    try:
        return ipaddress.ip_network(value, strict=False)
    except ValueError:
        if scope == "source":
            raise SuppressionError("value: a source scope takes an address or CIDR block") from None
    return None  # an asset by host name


class Suppressions:
    """The scoped suppressions, in memory by rule (what alerts are checked against) and in
    SQLite (what survives a restart)."""

    def __init__(self, store: Store, clock: Callable[[], float] = time.time) -> None:
        self.store = store
        self.clock = clock
        self.by_id: dict[str, Suppression] = {}
        self.by_rule: dict[str, list[Suppression]] = {}

    async def load(self) -> None:
        conn = self.store.writer
        assert conn is not None
        self.by_id.clear()
        self.by_rule.clear()
        async with conn.execute(
            "SELECT id, rule_id, scope, value, incident_id, created, expires, note, created_by,"
            " suppressed_count, last_suppressed FROM scoped_suppressions"
        ) as cur:
            for row in await cur.fetchall():
                s = Suppression(*row)
                try:
                    s.network = parse_scope(s.scope, s.value)
                except SuppressionError:
                    continue
                self._index(s)

    def _index(self, s: Suppression) -> None:
        self.by_id[s.id] = s
        self.by_rule.setdefault(s.rule_id, []).append(s)

    def _unindex(self, s: Suppression) -> None:
        self.by_id.pop(s.id, None)
        rules = self.by_rule.get(s.rule_id, [])
        if s in rules:
            rules.remove(s)
        if not rules:
            self.by_rule.pop(s.rule_id, None)

    # ----------------------------------------------------------------------- the hot side

    def match(self, a: Alert, now: float) -> Suppression | None:
        """The live suppression covering this alert (counted), or ``None``."""
        candidates = self.by_rule.get(a.rule.id)
        if not candidates:
            return None
        for s in candidates:
            if s.live(now) and s.covers(a):
                s.suppressed_count += 1
                s.last_suppressed = now
                s.dirty = True
                return s
        return None

    # -------------------------------------------------------------------------- changes

    def build(
        self,
        rule_id: str,
        scope: str,
        value: str,
        *,
        expires: float | None,
        note: str = "",
        incident_id: str | None = None,
        created_by: str = "",
    ) -> Suppression:
        network = parse_scope(scope, value)
        if len(self.by_id) >= MAX_SUPPRESSIONS:
            raise SuppressionError(f"at most {MAX_SUPPRESSIONS} suppressions; delete some first")
        now = self.clock()
        if expires is not None and expires <= now:
            raise SuppressionError("expires: must be in the future")
        if network is not None:
            value = str(network) if network.num_addresses > 1 else str(network.network_address)
        return Suppression(
            id=str(uuid.uuid4()),
            rule_id=rule_id,
            scope=scope,
            value=value,
            incident_id=incident_id,
            created=now,
            expires=expires,
            note=note[:MAX_NOTE],
            created_by=created_by,
            network=network,
        )

    async def insert(self, conn: aiosqlite.Connection, s: Suppression) -> None:
        """Write ``s`` in the caller's transaction; :meth:`add` makes it live after commit."""
        await conn.execute(
            "INSERT INTO scoped_suppressions (id, rule_id, scope, value, incident_id, created,"
            " expires, note, created_by) VALUES (?,?,?,?,?,?,?,?,?)",
            (
                s.id,
                s.rule_id,
                s.scope,
                s.value,
                s.incident_id,
                s.created,
                s.expires,
                s.note,
                s.created_by,
            ),
        )

    def add(self, s: Suppression) -> None:
        self._index(s)

    async def create(self, rule_id: str, scope: str, value: str, **kw: Any) -> Suppression:
        s = self.build(rule_id, scope, value, **kw)
        async with self.store.transaction(durable=True) as conn:
            await self.insert(conn, s)
        self.add(s)
        return s

    async def update(
        self,
        sid: str,
        *,
        expires: float | None = None,
        keep_expiry: bool = False,
        note: str | None = None,
    ) -> Suppression | None:
        """Change a suppression's expiry (``None``: never, unless ``keep_expiry``) and/or
        note."""
        s = self.by_id.get(sid)
        if s is None:
            return None
        new_expires = s.expires if keep_expiry else expires
        if new_expires is not None and new_expires <= self.clock():
            raise SuppressionError("expires: must be in the future (delete it to end it now)")
        new_note = s.note if note is None else note[:MAX_NOTE]
        async with self.store.transaction(durable=True) as conn:
            await conn.execute(
                "UPDATE scoped_suppressions SET expires = ?, note = ? WHERE id = ?",
                (new_expires, new_note, sid),
            )
        s.expires, s.note = new_expires, new_note
        return s

    async def delete(self, sid: str) -> bool:
        s = self.by_id.get(sid)
        if s is None:
            return False
        async with self.store.transaction(durable=True) as conn:
            await conn.execute("DELETE FROM scoped_suppressions WHERE id = ?", (sid,))
        self._unindex(s)
        return True

    async def flush(self) -> None:
        """Write the suppressed counts that changed since the last flush."""
        dirty = [s for s in self.by_id.values() if s.dirty]
        if not dirty or self.store.writer is None:
            return
        async with self.store.transaction() as conn:
            await conn.executemany(
                "UPDATE scoped_suppressions SET suppressed_count = ?, last_suppressed = ?"
                " WHERE id = ?",
                [(s.suppressed_count, s.last_suppressed, s.id) for s in dirty],
            )
        for s in dirty:
            s.dirty = False

    def list(self, *, rule: str | None = None, live_only: bool = False) -> list[Suppression]:
        now = self.clock()
        items = self.by_rule.get(rule, []) if rule else list(self.by_id.values())
        out = [s for s in items if not live_only or s.live(now)]
        return sorted(out, key=lambda s: s.created, reverse=True)


async def noise_report(store: Store, suppressions: Suppressions) -> list[dict[str, Any]]:
    """Per rule: incidents, how many were marked false positive, their share, the hits
    suppressed on incidents and by scoped suppressions; noisiest (false-positive share, then
    incidents) first."""
    conn = store.reader
    assert conn is not None
    async with conn.execute(
        "SELECT rule_id, json_extract(doc, '$.rule.title'), COUNT(*),"
        " SUM(instr(doc, '\"action\":\"false-positive\"') > 0 OR status = 'suppressed'),"
        " SUM(json_extract(doc, '$.suppressed_count')), SUM(json_extract(doc, '$.hit_count'))"
        " FROM incidents GROUP BY rule_id"
    ) as cur:
        rows = await cur.fetchall()
    by_rule: dict[str, dict[str, Any]] = {}
    for rule_id, title, n, fp, suppressed, hits in rows:
        by_rule[rule_id] = {
            "rule_id": rule_id,
            "title": title,
            "incidents": n,
            "false_positives": fp or 0,
            "false_positive_share": round((fp or 0) / n, 3) if n else 0.0,
            "hits": hits or 0,
            "suppressed_on_incidents": suppressed or 0,
            "suppressions": 0,
            "suppressed_by_suppressions": 0,
        }
    for s in suppressions.by_id.values():
        entry = by_rule.setdefault(
            s.rule_id,
            {
                "rule_id": s.rule_id,
                "title": None,
                "incidents": 0,
                "false_positives": 0,
                "false_positive_share": 0.0,
                "hits": 0,
                "suppressed_on_incidents": 0,
                "suppressions": 0,
                "suppressed_by_suppressions": 0,
            },
        )
        entry["suppressions"] += 1
        entry["suppressed_by_suppressions"] += s.suppressed_count
    return sorted(
        by_rule.values(), key=lambda e: (-e["false_positive_share"], -e["incidents"], e["rule_id"])
    )


class FeedbackComponent:
    """Loads the suppressions, hands their check to the incident manager, flushes counts."""

    name = "feedback"

    def __init__(self, app: Appliance) -> None:
        self.app = app
        self.suppressions = Suppressions(app.store, app.clock)
        self._task: asyncio.Task[None] | None = None
        m = app.metrics
        self.silenced = m.counter(
            "suppressed_alerts_total",
            "Alerts silenced by a scoped suppression, by rule and scope.",
            ["rule", "scope"],
        )
        m.gauge(
            "suppressions",
            "Scoped suppressions in force (not expired).",
            callback=lambda: float(len(self.suppressions.list(live_only=True))),
        )

    def check(self, a: Alert, now: float) -> bool:
        s = self.suppressions.match(a, now)
        if s is None:
            return False
        self.silenced.inc(a.rule.id, s.scope)
        return True

    async def start(self) -> None:
        from appliance.correlate.component import correlation_of

        await self.suppressions.load()
        corr = correlation_of(self.app)
        if corr is not None:
            corr.incidents.suppressor = self.check
        self._task = asyncio.create_task(self._flusher(), name="feedback-flush")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(BaseException):
                await self._task
            self._task = None
        try:
            await self.suppressions.flush()
        except Exception:
            _rl.error("flush", "suppression counts not saved", exc_info=True)

    async def _flusher(self) -> None:
        while True:
            await asyncio.sleep(FLUSH_INTERVAL)
            try:
                await self.suppressions.flush()
            except Exception:
                _rl.error("flush", "suppression counts not saved", exc_info=True)


def build_feedback(app: Appliance) -> FeedbackComponent:
    return FeedbackComponent(app)
