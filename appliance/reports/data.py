"""What a report says, read from the database: incidents, response times, top sources and
targets, noisy rules, device health, forwarding backlog, flows.

Read-only (``mode=ro`` and ``query_only``), so it runs beside the appliance: SQLite's WAL lets
this reader see the last commit while the appliance keeps writing. Events are read from their
segments within the window, at most :data:`MAX_REPORT_EVENTS` (the report then says it is
based on the newest that many).
"""

from __future__ import annotations

import sqlite3
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import orjson

from appliance.flows.rollup import OTHER
from appliance.incidents.manager import SEVERITIES
from appliance.store.segments import readable_text

MAX_REPORT_EVENTS = 2_000_000
TOP_N = 10


def bucket_for(span: float) -> int:
    """Bar width for the time series: hours up to two days, six hours up to two weeks."""
    if span <= 2 * 86400:
        return 3600
    if span <= 14 * 86400:
        return 6 * 3600
    return 86400


def _epoch(value: Any) -> float | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


@dataclass(slots=True)
class ReportData:
    since: float
    until: float
    bucket: int
    sensor_id: str
    generated: float = field(default_factory=time.time)
    # incidents
    incidents: int = 0
    by_severity: dict[str, int] = field(default_factory=dict)
    by_status: dict[str, int] = field(default_factory=dict)
    by_rule: list[tuple[str, str, str, int, int]] = field(
        default_factory=list
    )  # id title sev n hits
    noisiest: list[tuple[str, str, int, int]] = field(default_factory=list)  # id title hits supp
    severity_series: list[tuple[float, dict[str, int]]] = field(default_factory=list)
    mtta: float | None = None
    mttr: float | None = None
    acknowledged: int = 0
    resolved: int = 0
    incident_sources: list[tuple[str, int]] = field(default_factory=list)
    # events
    events: int = 0
    events_truncated: bool = False
    event_series: list[tuple[float, int]] = field(default_factory=list)
    top_sources: list[tuple[str, int]] = field(default_factory=list)
    top_targets: list[tuple[str, int]] = field(default_factory=list)
    top_users: list[tuple[str, int]] = field(default_factory=list)
    devices: list[dict[str, Any]] = field(default_factory=list)
    # data loss and forwarding
    forwarding: list[dict[str, Any]] = field(default_factory=list)
    # flows
    flow_totals: dict[str, int] = field(default_factory=dict)
    top_talkers: list[tuple[str, int]] = field(default_factory=list)
    top_ports: list[tuple[str, int]] = field(default_factory=list)
    flow_series: list[tuple[float, int]] = field(default_factory=list)


def connect_ro(path: Path) -> sqlite3.Connection:
    if not path.exists():
        raise FileNotFoundError(f"no database at {path}")
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=10)
    conn.execute("PRAGMA query_only=1")
    return conn


def _tables(conn: sqlite3.Connection) -> set[str]:
    return {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}


def gather(
    conn: sqlite3.Connection,
    *,
    since: float,
    until: float,
    sensor_id: str,
    max_events: int = MAX_REPORT_EVENTS,
) -> ReportData:
    data = ReportData(
        since=since, until=until, bucket=bucket_for(until - since), sensor_id=sensor_id
    )
    tables = _tables(conn)
    if "incidents" in tables:
        _incidents(conn, data)
    if "event_segments" in tables:
        _events(conn, data, max_events)
    if "outbox" in tables:
        _forwarding(conn, data)
    if "flow_rollups" in tables:
        _flows(conn, data)
    return data


def _buckets(data: ReportData) -> list[float]:
    start = data.since // data.bucket * data.bucket
    n = int((data.until - start) // data.bucket) + 1
    return [start + k * data.bucket for k in range(n)]


def _incidents(conn: sqlite3.Connection, data: ReportData) -> None:
    rows = conn.execute(
        "SELECT doc FROM incidents WHERE (last_seen >= ? OR updated >= ?) AND first_seen < ?",
        (data.since, data.since, data.until),
    ).fetchall()
    sev: Counter[str] = Counter()
    status: Counter[str] = Counter()
    rules: dict[str, list[Any]] = {}
    sources: Counter[str] = Counter()
    series: dict[float, Counter[str]] = defaultdict(Counter)
    ack_times: list[float] = []
    resolve_times: list[float] = []
    for (doc_json,) in rows:
        doc = orjson.loads(doc_json)
        severity = doc.get("severity", "medium")
        sev[severity] += 1
        status[doc.get("status", "open")] += 1
        rule = doc.get("rule", {})
        entry = rules.setdefault(rule.get("id", "?"), [rule.get("title", "?"), severity, 0, 0, 0])
        entry[2] += 1
        entry[3] += int(doc.get("hit_count", 0))
        entry[4] += int(doc.get("suppressed_count", 0))
        src = doc.get("group", {}).get("source.ip")
        if isinstance(src, str):
            sources[src] += 1
        first = _epoch(doc.get("first_seen"))
        if first is not None:
            series[max(first, data.since) // data.bucket * data.bucket][severity] += 1
        created = _epoch(doc.get("created"))
        acked = _epoch(doc.get("acknowledged_at"))
        resolved = _epoch(doc.get("resolved_at"))
        for h in doc.get("history", []):  # documents from before the *_at keys
            at = _epoch(h.get("at"))
            if h.get("action") == "ack" and acked is None:
                acked = at
            if h.get("action") == "resolve" and resolved is None:
                resolved = at
        if created is not None and acked is not None:
            ack_times.append(max(0.0, acked - created))
        if created is not None and resolved is not None:
            resolve_times.append(max(0.0, resolved - created))
    data.incidents = len(rows)
    data.by_severity = {s: sev.get(s, 0) for s in reversed(SEVERITIES)}
    data.by_status = dict(status.most_common())
    data.by_rule = sorted(
        ((rid, e[0], e[1], e[2], e[3]) for rid, e in rules.items()), key=lambda r: -r[3]
    )[:TOP_N]
    data.noisiest = sorted(
        ((rid, e[0], e[3], e[4]) for rid, e in rules.items()), key=lambda r: -(r[2] + r[3])
    )[:TOP_N]
    data.severity_series = [(b, dict(series.get(b, {}))) for b in _buckets(data)]
    data.acknowledged, data.resolved = len(ack_times), len(resolve_times)
    data.mtta = sum(ack_times) / len(ack_times) if ack_times else None
    data.mttr = sum(resolve_times) / len(resolve_times) if resolve_times else None
    data.incident_sources = sources.most_common(TOP_N)


def _events(conn: sqlite3.Connection, data: ReportData, max_events: int) -> None:
    counts: Counter[float] = Counter()
    sources: Counter[str] = Counter()
    targets: Counter[str] = Counter()
    users: Counter[str] = Counter()
    devices: dict[str, dict[str, Any]] = {}
    read = 0
    # By receive time: what the box took in during the period (device clocks may be off).
    cur = conn.execute(
        "SELECT first_id, body FROM event_segments WHERE max_created >= ? AND min_created < ?"
        " ORDER BY first_id DESC",
        (data.since, data.until),
    )
    for first_id, body in cur:
        text = readable_text(first_id, bytes(body))
        if text is None:
            continue
        for line in reversed(text.split(b"\n")):
            if read >= max_events:
                data.events_truncated = True
                break
            read += 1
            _ts, created, module, fields, _raw = orjson.loads(line)
            if not data.since <= created < data.until:
                continue
            data.events += 1
            counts[created // data.bucket * data.bucket] += 1
            src = fields.get("source.ip")
            if isinstance(src, str):
                sources[src] += 1
            dst = fields.get("destination.ip")
            if isinstance(dst, str):
                targets[dst] += 1
            user = fields.get("user.name")
            if isinstance(user, str):
                users[user] += 1
            device = fields.get("observer.ip")
            if isinstance(device, str):
                d = devices.get(device)
                if d is None:
                    d = devices[device] = {
                        "device": device,
                        "name": fields.get("host.hostname") or fields.get("observer.name") or "",
                        "module": module,
                        "events": 0,
                        "first": created,
                        "last": created,
                        "buckets": set(),
                    }
                d["events"] += 1
                d["first"] = min(d["first"], created)
                d["last"] = max(d["last"], created)
                d["buckets"].add(created // data.bucket)
        if data.events_truncated:
            break
    data.event_series = [(b, counts.get(b, 0)) for b in _buckets(data)]
    data.top_sources = sources.most_common(TOP_N)
    data.top_targets = targets.most_common(TOP_N)
    data.top_users = users.most_common(TOP_N)
    all_buckets = {int(b // data.bucket) for b in _buckets(data)}
    out = []
    for d in sorted(devices.values(), key=lambda d: -d["events"]):
        seen = d.pop("buckets")
        first_b = int(d["first"] // data.bucket)
        # Silent periods: buckets after the device's first event in the window without one.
        d["silent_buckets"] = len([b for b in all_buckets if b > first_b and b not in seen])
        d["silent_for"] = max(0.0, data.until - d["last"])
        out.append(d)
    data.devices = out[:50]


def _forwarding(conn: sqlite3.Connection, data: ReportData) -> None:
    for upstream, state, n, size, oldest in conn.execute(
        "SELECT upstream, state, count(*), coalesce(sum(size), 0), min(created) FROM outbox"
        " GROUP BY upstream, state ORDER BY upstream, state"
    ):
        data.forwarding.append(
            {"upstream": upstream, "state": state, "items": n, "bytes": size, "oldest": oldest}
        )


def _flows(conn: sqlite3.Connection, data: ReportData) -> None:
    start, end = int(data.since) // 60 * 60, data.until
    row = conn.execute(
        "SELECT coalesce(sum(bytes), 0), coalesce(sum(packets), 0), coalesce(sum(flows), 0)"
        " FROM flow_rollups WHERE dim = 'source.ip' AND minute >= ? AND minute < ?",
        (start, end),
    ).fetchone()
    data.flow_totals = {"bytes": int(row[0]), "packets": int(row[1]), "flows": int(row[2])}
    for dim, target in (("source.ip", data.top_talkers), ("destination.port", data.top_ports)):
        target.extend(
            (str(k), int(b))
            for k, b in conn.execute(
                "SELECT key, sum(bytes) AS b FROM flow_rollups WHERE dim = ? AND key != ?"
                " AND minute >= ? AND minute < ? GROUP BY key ORDER BY b DESC LIMIT ?",
                (dim, OTHER, start, end, TOP_N),
            )
        )
    series = dict(
        conn.execute(
            "SELECT minute / ? * ?, sum(bytes) FROM flow_rollups WHERE dim = 'source.ip'"
            " AND minute >= ? AND minute < ? GROUP BY 1",
            (data.bucket, data.bucket, start, end),
        ).fetchall()
    )
    data.flow_series = [(b, int(series.get(int(b), 0))) for b in _buckets(data)]
