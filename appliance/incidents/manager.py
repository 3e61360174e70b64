"""Incident lifecycle: alerts from the engine become incident creates and updates, durably.

Every change is written in ``store.transaction(durable=True)`` (``synchronous=FULL``) and runs
each of its ``hooks`` (the appliance's ``incident_hooks``) inside the same transaction, so nothing
(the forwarding outbox) learns of an incident that a power cut could undo. One transaction per
batch of alerts keeps fsyncs to one per pipeline batch however many incidents it touches.

Keying: an alert updates the incident of the same rule and group key while it is ``open`` or
``acknowledged``; a ``resolved`` incident is history, the next hit opens a new one. Marking an
incident a false positive makes it ``suppressed`` and stores a scoped suppression (rule +
group key, optional expiry); hits under a suppression, and hits suppressed by a rule's
cooldown, are counted on the incident (``suppressed_count``), not lost.
"""

from __future__ import annotations

import asyncio
import copy
import json
import logging
import uuid
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import aiosqlite

from appliance.analysis import risk
from appliance.correlate.engine import Alert
from appliance.event import iso8601
from appliance.incidents import IncidentTxnHook
from appliance.logutil import RateLimitedLog
from appliance.store import Store

log = logging.getLogger(__name__)
_rl = RateLimitedLog(log)

SCHEMA_VERSION = 1
ACTIVE = ("open", "acknowledged", "suppressed")
SEVERITIES = ("informational", "low", "medium", "high", "critical")
# ``list()`` orders: names the API accepts -> fixed SQL (never built from the request); the
# direction and the ``id`` tie-break are appended. The risk expression matches the index of
# migration 0011.
SORTS = {
    "last_seen": "last_seen",
    "first_seen": "first_seen",
    "updated": "updated",
    "severity": "CASE severity WHEN 'critical' THEN 4 WHEN 'high' THEN 3 WHEN 'medium' THEN 2"
    " WHEN 'low' THEN 1 ELSE 0 END",
    "risk_score": "json_extract(doc, '$.risk_score')",
}
MAX_CACHED = 10_000  # active incidents kept in memory (the rest are read back when hit)
MAX_HISTORY = 50  # history entries kept on an incident (newest)
MAX_COMMENTS = 100  # comments kept on an incident (newest)
MAX_COMMENT = 4000  # characters of one comment
MAX_TEXT_SHORT = 200  # characters of an assignee, and of a comment's history note


class TransitionError(Exception):
    """The requested status change is not allowed from the incident's current status."""


@dataclass(slots=True)
class EvidenceLimits:
    event_ids: int = 50
    samples: int = 10


class IncidentManager:
    def __init__(
        self,
        store: Store,
        sensor_id: str,
        *,
        clock: Callable[[], float],
        evidence: EvidenceLimits | None = None,
        hooks: list[IncidentTxnHook] | None = None,
    ) -> None:
        self.store = store
        self.sensor_id = sensor_id
        self.clock = clock
        self.evidence = evidence or EvidenceLimits()
        self.hooks: list[IncidentTxnHook] = [] if hooks is None else hooks
        # (rule id, group key) -> incident doc, for incidents still taking hits: an LRU cache of
        # at most MAX_CACHED; `complete` while it holds every active incident (no lookup needed
        # on a miss), else a miss asks the database.
        self.active: OrderedDict[tuple[str, str], dict[str, Any]] = OrderedDict()
        self.complete = True
        # (rule id, group key) -> (incident id, expires or None)
        self.suppressions: dict[tuple[str, str], tuple[str, float | None]] = {}
        # Scoped suppressions (appliance.analysis.feedback): asked before an alert opens or
        # updates an incident; True silences it (counted on the incident it would update).
        self.suppressor: Callable[[Alert, float], bool] | None = None
        self.created = 0
        self.updated = 0
        # Weighs each hit: risk score, severity moves, suppression (appliance.analysis). The
        # analysis component installs one that knows the assets and scans; this default scores
        # from the rule level and the evidence's own fields.
        self.assess: Callable[[Alert], risk.Assessment] = basic_assessment
        self.assess_errors = 0
        self._lock = asyncio.Lock()

    async def load(self) -> None:
        """Read the active incidents (the most recent MAX_CACHED) and suppressions, at start."""
        conn = self.store.writer
        assert conn is not None
        placeholders = ",".join("?" * len(ACTIVE))
        async with conn.execute(
            f"SELECT doc FROM incidents WHERE status IN ({placeholders})"  # noqa: S608
            " ORDER BY updated DESC LIMIT ?",
            (*ACTIVE, MAX_CACHED + 1),
        ) as cur:
            rows = list(await cur.fetchall())
        self.complete = len(rows) <= MAX_CACHED
        for (doc_json,) in reversed(rows[:MAX_CACHED]):
            doc = json.loads(doc_json)
            self.active[(doc["rule"]["id"], doc["group_key"])] = doc
        async with conn.execute(
            "SELECT rule_id, group_key, incident_id, expires FROM suppressions"
        ) as cur:
            for rule_id, key, inc_id, expires in await cur.fetchall():
                self.suppressions[(rule_id, key)] = (inc_id, expires)

    # --------------------------------------------------------------------------- alerts

    def _new_doc(self, a: Alert, now: float) -> dict[str, Any]:
        rule = a.rule.to_dict()
        return {
            "schema_version": SCHEMA_VERSION,
            "id": str(uuid.uuid4()),
            "revision": 0,
            "sensor_id": self.sensor_id,
            "title": a.rule.title,
            "rule": rule,
            "kind": a.kind,
            "severity": a.rule.level if a.rule.level in SEVERITIES else "medium",
            "status": "open",
            "group_key": a.group_key,
            "group": {k: v for k, v in a.group.items()},
            "first_seen": iso8601(a.first_seen),
            "last_seen": iso8601(a.last_seen),
            "hit_count": 0,
            "suppressed_count": 0,
            "evidence": {"event_ids": [], "samples": []},
            "detail": {},
            "created": iso8601(now),
            "updated": iso8601(now),
            "_first": a.first_seen,
            "_last": a.last_seen,
        }

    def _add_hit(self, doc: dict[str, Any], a: Alert) -> None:
        doc["hit_count"] += 1
        ev = doc["evidence"]
        ids = ev["event_ids"] + [i for i in a.event_ids if i not in ev["event_ids"]]
        ev["event_ids"] = ids[-self.evidence.event_ids :]
        samples = ev["samples"] + [s for s in a.samples if s not in ev["samples"]]
        ev["samples"] = samples[-self.evidence.samples :]
        if a.first_seen < doc["_first"]:
            doc["_first"] = a.first_seen
            doc["first_seen"] = iso8601(a.first_seen)
        if a.last_seen > doc["_last"]:
            doc["_last"] = a.last_seen
            doc["last_seen"] = iso8601(a.last_seen)
        if a.detail:
            doc["detail"] = a.detail

    def _cache(self, key: tuple[str, str], doc: dict[str, Any]) -> None:
        active = self.active
        active[key] = doc
        active.move_to_end(key)
        while len(active) > MAX_CACHED:
            active.popitem(last=False)
            self.complete = False

    async def _active_doc(self, key: tuple[str, str]) -> dict[str, Any] | None:
        """The active incident of a rule and group key: from the cache, else the database."""
        doc = self.active.get(key)
        if doc is not None:
            self.active.move_to_end(key)
            return doc
        if self.complete:
            return None
        conn = self.store.reader
        assert conn is not None
        placeholders = ",".join("?" * len(ACTIVE))
        async with conn.execute(
            "SELECT doc FROM incidents WHERE rule_id = ? AND group_key = ?"  # noqa: S608
            f" AND status IN ({placeholders}) ORDER BY updated DESC LIMIT 1",
            (*key, *ACTIVE),
        ) as cur:
            row = await cur.fetchone()
        if row is None:
            return None
        doc = json.loads(row[0])
        self._cache(key, doc)
        return doc

    def _suppressed(self, key: tuple[str, str], now: float) -> str | None:
        s = self.suppressions.get(key)
        if s is None:
            return None
        inc_id, expires = s
        if expires is not None and expires <= now:
            return None
        return inc_id

    async def apply(self, alerts: list[Alert]) -> list[dict[str, Any]]:
        async with self._lock:
            return await self._apply(alerts)

    async def _apply(self, alerts: list[Alert]) -> list[dict[str, Any]]:
        """Turn alerts into incident changes; returns the changed documents (committed).

        Changes are made on copies and swapped in only after the commit, so a failed write
        (a hook raising, a full disk) leaves the in-memory view equal to the database and the
        same alerts can be applied again.
        """
        if not alerts:
            return []
        now = self.clock()
        work: dict[tuple[str, str], dict[str, Any]] = {}
        new_ids: set[str] = set()
        expired: list[tuple[str, str]] = []
        for a in alerts:
            key = (a.rule.id, a.group_key)
            doc = work.get(key)
            if doc is None:
                cached = await self._active_doc(key)
                if cached is not None:
                    doc = work[key] = copy.deepcopy(cached)
            if self.suppressor is not None and self.suppressor(a, now):
                if doc is not None:
                    doc["suppressed_count"] += 1
                continue
            if doc is not None and self._suppressed(key, now) is not None:
                doc["suppressed_count"] += 1
                continue
            if doc is not None and doc["status"] == "suppressed":
                expired.append(key)  # the suppression ran out: the false positive is history
                doc = None
            if a.suppressed and doc is not None:
                doc["suppressed_count"] += 1
                continue
            verdict = self._assess(a)
            if verdict.suppress:  # the analysis policy says the attack cannot work here
                if doc is not None:
                    doc["suppressed_count"] += 1
                    risk.apply(doc, verdict, new=False)
                continue
            created = doc is None
            if doc is None:
                doc = work[key] = self._new_doc(a, now)
                new_ids.add(doc["id"])
            self._add_hit(doc, a)
            risk.apply(doc, verdict, new=created)
        docs = list(work.values())
        for doc in docs:
            doc["revision"] += 1
            doc["updated"] = iso8601(now)
        async with self.store.transaction(durable=True) as conn:
            for key in expired:
                await conn.execute(
                    "DELETE FROM suppressions WHERE rule_id = ? AND group_key = ?", key
                )
            for doc in docs:
                await self._write(conn, doc)
        for key, doc in work.items():
            self._cache(key, doc)
        for key in expired:
            self.suppressions.pop(key, None)
        self.created += len(new_ids)
        self.updated += len(docs) - len(new_ids)
        return [public(d) for d in docs]

    def _assess(self, a: Alert) -> risk.Assessment:
        try:
            return self.assess(a)
        except Exception:
            # An analysis bug must not lose the incident: score it without the context.
            self.assess_errors += 1
            _rl.error("assess", "incident analysis failed for %s", a.rule.id, exc_info=True)
            return basic_assessment(a)

    async def _write(self, conn: aiosqlite.Connection, doc: dict[str, Any]) -> None:
        pub = public(doc)
        await conn.execute(
            "INSERT INTO incidents (id, rule_id, group_key, status, severity, first_seen,"
            " last_seen, updated, revision, doc) VALUES (?,?,?,?,?,?,?,?,?,?)"
            " ON CONFLICT(id) DO UPDATE SET status=excluded.status,"
            " severity=excluded.severity, first_seen=excluded.first_seen,"
            " last_seen=excluded.last_seen, updated=excluded.updated,"
            " revision=excluded.revision, doc=excluded.doc",
            (
                doc["id"],
                doc["rule"]["id"],
                doc["group_key"],
                doc["status"],
                doc["severity"],
                doc["_first"],
                doc["_last"],
                self.clock(),
                doc["revision"],
                json.dumps(doc, separators=(",", ":"), default=str),
            ),
        )
        for hook in self.hooks:
            await hook(conn, pub)

    # ------------------------------------------------------------------------ lifecycle

    async def _get_doc(self, incident_id: str) -> dict[str, Any] | None:
        # The database and the cache agree: the cache changes only after a commit.
        conn = self.store.reader
        assert conn is not None
        async with conn.execute("SELECT doc FROM incidents WHERE id = ?", (incident_id,)) as cur:
            row = await cur.fetchone()
        return json.loads(row[0]) if row else None

    async def transition(
        self,
        incident_id: str,
        action: str,
        *,
        note: str = "",
        suppress_for: float | None = None,
        by: str = "",
        in_txn: Callable[[aiosqlite.Connection, dict[str, Any]], Awaitable[None]] | None = None,
    ) -> dict[str, Any] | None:
        """``ack`` | ``resolve`` | ``false-positive`` | ``reopen``; ``None`` if no such
        incident.

        ``in_txn`` runs inside the change's transaction with the new document (a scoped
        suppression written with the false-positive mark); given, it replaces the rule +
        group key suppression a false positive otherwise stores."""
        async with self._lock:  # one change at a time: no lost update against apply()
            return await self._transition(incident_id, action, note, suppress_for, by, in_txn)

    async def assign(
        self, incident_id: str, assignee: str, *, by: str = ""
    ) -> dict[str, Any] | None:
        """Set (or with ``""`` clear) who handles the incident, whatever its status."""
        async with self._lock:
            doc = await self._get_doc(incident_id)
            if doc is None:
                return None
            doc = copy.deepcopy(doc)
            doc["assignee"] = assignee[:MAX_TEXT_SHORT] or None
            return await self._commit_change(doc, "assign", assignee[:MAX_TEXT_SHORT], by)

    async def comment(self, incident_id: str, text: str, *, by: str = "") -> dict[str, Any] | None:
        """Add a comment (the newest :data:`MAX_COMMENTS` are kept)."""
        async with self._lock:
            doc = await self._get_doc(incident_id)
            if doc is None:
                return None
            doc = copy.deepcopy(doc)
            now = self.clock()
            comments = doc.setdefault("comments", [])
            comments.append({"at": iso8601(now), "by": by or None, "text": text[:MAX_COMMENT]})
            doc["comments"] = comments[-MAX_COMMENTS:]
            return await self._commit_change(doc, "comment", text[:MAX_TEXT_SHORT], by)

    async def _commit_change(
        self, doc: dict[str, Any], action: str, note: str, by: str
    ) -> dict[str, Any]:
        """Bump the revision, record the change in the history and write it (hooks run in the
        same durable transaction, so the change is forwarded like any other)."""
        now = self.clock()
        self._record(doc, now, action, note, by)
        async with self.store.transaction(durable=True) as conn:
            await self._write(conn, doc)
        key = (doc["rule"]["id"], doc["group_key"])
        current = self.active.get(key)
        if current is not None and current["id"] == doc["id"]:
            self._cache(key, doc)
        return public(doc)

    @staticmethod
    def _record(doc: dict[str, Any], now: float, action: str, note: str, by: str) -> None:
        doc["revision"] += 1
        doc["updated"] = iso8601(now)
        entry: dict[str, Any] = {"at": iso8601(now), "action": action, "note": note[:500]}
        if by:
            entry["by"] = by
        doc.setdefault("history", []).append(entry)
        doc["history"] = doc["history"][-MAX_HISTORY:]

    async def _transition(
        self,
        incident_id: str,
        action: str,
        note: str,
        suppress_for: float | None,
        by: str,
        in_txn: Callable[[aiosqlite.Connection, dict[str, Any]], Awaitable[None]] | None = None,
    ) -> dict[str, Any] | None:
        doc = await self._get_doc(incident_id)
        if doc is None:
            return None
        status = doc["status"]
        allowed = {
            "ack": ({"open"}, "acknowledged"),
            "resolve": ({"open", "acknowledged"}, "resolved"),
            "false-positive": ({"open", "acknowledged", "resolved"}, "suppressed"),
            "reopen": ({"acknowledged", "resolved", "suppressed"}, "open"),
        }
        sources, target = allowed[action]
        if status not in sources:
            raise TransitionError(f"cannot {action} an incident that is {status}")
        now = self.clock()
        key = (doc["rule"]["id"], doc["group_key"])
        current = self.active.get(key) or await self._active_doc(key)
        if action == "reopen" and current is not None and current["id"] != doc["id"]:
            # Hits of the rule and key go to one active incident at a time.
            raise TransitionError(
                f"cannot reopen: incident {current['id']} is active for the same rule and key"
            )
        doc = copy.deepcopy(doc)
        doc["status"] = target
        stamp = {"acknowledged": "acknowledged_at", "resolved": "resolved_at"}.get(target)
        if stamp and not doc.get(stamp):
            doc[stamp] = iso8601(now)  # first time only: what MTTA/MTTR measure
        self._record(doc, now, action, note, by)
        expires = now + suppress_for if suppress_for else None
        async with self.store.transaction(durable=True) as conn:
            if in_txn is not None:
                await in_txn(conn, doc)
            elif target == "suppressed":
                await conn.execute(
                    "INSERT OR REPLACE INTO suppressions (rule_id, group_key, incident_id,"
                    " created, expires, reason) VALUES (?,?,?,?,?,?)",
                    (*key, doc["id"], now, expires, note[:500]),
                )
            elif status == "suppressed":
                await conn.execute(
                    "DELETE FROM suppressions WHERE rule_id = ? AND group_key = ?"
                    " AND incident_id = ?",
                    (*key, doc["id"]),
                )
            await self._write(conn, doc)
        current = self.active.get(key)
        if target == "resolved":
            if current is not None and current["id"] == doc["id"]:
                del self.active[key]
        elif current is None or current["id"] == doc["id"]:
            self._cache(key, doc)
        if target == "suppressed" and in_txn is None:
            self.suppressions[key] = (doc["id"], expires)
        elif status == "suppressed" and self.suppressions.get(key, ("",))[0] == doc["id"]:
            del self.suppressions[key]
        return public(doc)

    async def purge(self, max_age: float) -> int:
        """Delete resolved incidents last changed more than ``max_age`` seconds ago, and
        expired suppressions; returns the number of incidents deleted."""
        now = self.clock()
        async with self._lock, self.store.transaction() as conn:
            cur = await conn.execute(
                "DELETE FROM incidents WHERE status = 'resolved' AND updated < ?",
                (now - max_age,),
            )
            deleted = max(cur.rowcount, 0)
            await conn.execute(
                "DELETE FROM suppressions WHERE expires IS NOT NULL AND expires <= ?", (now,)
            )
        for key in [
            k for k, (_i, exp) in self.suppressions.items() if exp is not None and exp <= now
        ]:
            del self.suppressions[key]
        return deleted

    # ---------------------------------------------------------------------------- reads

    async def get(self, incident_id: str) -> dict[str, Any] | None:
        conn = self.store.reader
        assert conn is not None
        async with conn.execute("SELECT doc FROM incidents WHERE id = ?", (incident_id,)) as cur:
            row = await cur.fetchone()
        return public(json.loads(row[0])) if row else None

    async def list(
        self,
        *,
        status: str | None = None,
        severity: str | None = None,
        since: float | None = None,
        until: float | None = None,
        rule: str | None = None,
        assignee: str | None = None,
        sort: str = "last_seen",
        descending: bool = True,
        limit: int = 100,
    ) -> list[dict[str, Any]]:
        """Incidents by the filters; ``sort`` is one of :data:`SORTS`."""
        clauses, args = [], []
        for clause, value in (
            ("status = ?", status),
            ("severity = ?", severity),
            ("last_seen >= ?", since),
            ("last_seen < ?", until),
            ("rule_id = ?", rule),
            ("json_extract(doc, '$.assignee') = ?", assignee),
        ):
            if value is not None:
                clauses.append(clause)
                args.append(value)
        where = f"WHERE {' AND '.join(clauses)}" if clauses else ""
        order = f"{SORTS[sort]} {'DESC' if descending else 'ASC'}, id"
        sql = f"SELECT doc FROM incidents {where} ORDER BY {order} LIMIT ?"  # noqa: S608
        args.append(int(limit))
        conn = self.store.reader
        assert conn is not None
        async with conn.execute(sql, args) as cur:
            rows = await cur.fetchall()
        return [public(json.loads(r[0])) for r in rows]


def basic_assessment(a: Alert) -> risk.Assessment:
    """The risk of a hit from the rule's level and the evidence's own fields: the asset
    criticality the enrichment stage stamped, intel confidence, rarity (no scan data)."""
    fields = a.fields if a.fields is not None else a.group
    crit, name = None, ""
    for side in ("destination", "source"):
        value = fields.get(f"{side}.asset.criticality")
        if (
            isinstance(value, int)
            and not isinstance(value, bool)
            and (crit is None or value > crit)
        ):
            crit, name = value, str(fields.get(f"{side}.asset.name") or fields.get(f"{side}.ip"))
    inputs = risk.RiskInputs(
        rule_level=a.rule.level if a.rule.level in SEVERITIES else "medium",
        asset_criticality=crit,
        asset=name,
        intel_confidence=risk.intel_confidence(fields.get(risk.INTEL_CONFIDENCE_FIELD)),
        rarity=risk.rarity(fields.get(risk.RARITY_FIELD)),
    )
    return risk.assess(inputs, risk.Policy())


def public(doc: dict[str, Any]) -> dict[str, Any]:
    """The document without the manager's private keys (epoch copies of the times)."""
    return {k: v for k, v in doc.items() if not k.startswith("_")}
