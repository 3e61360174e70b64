"""Event-time replay of a scenario through the rules: ``appliance test-rule`` and ``replay``.

Input is one message per line, in the order they happened:

- a raw syslog line (its header gives the event time; decoded like the UDP source does), or
- ``@<time> <raw syslog line>`` where time is epoch seconds or RFC 3339 and overrides it, or
- a JSON object: an event given by its fields (``{"@timestamp": "...", "event.module":
  "netflow", "source.ip": ...}``; dotted names or nested objects), for sources without a line
  form (flows, traps) or for decoders not written yet.

``now`` is the event time of each line, so windows, cooldowns and silent-source deadlines
behave as they would have live, and every run of the same file gives the same incidents.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from appliance.correlate.engine import (
    Alert,
    DistinctState,
    Engine,
    OrderedState,
    SumState,
    TemporalState,
)
from appliance.event import Event, iso8601
from appliance.protocols.syslog import decode_syslog
from appliance.protocols.syslog.ecs import syslog_fields
from appliance.protocols.syslog.message import device_time
from appliance.protocols.syslog.vendors import REGISTRY


class InputError(ValueError):
    """A line of the scenario cannot be read; the message says which and why."""


def parse_time(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        pass
    try:
        dt = datetime.fromisoformat(text.replace("z", "Z"))
    except ValueError:
        raise InputError(f"not a time: {text!r}") from None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return dt.timestamp()


def _flatten(obj: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in obj.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(_flatten(v, key + "."))
        else:
            out[key] = v
    return out


def decode_syslog_line(data: bytes, sender: str, now: float, transport: str = "file") -> Event:
    """One syslog message to an event the way the listeners decode it: header, then vendor."""
    msg = decode_syslog(data, now)
    fields = syslog_fields(msg, sender)
    fields["log.source.transport"] = transport
    name = REGISTRY.decode(msg, fields)
    if name:
        fields["event.dataset"] = name
    ts = device_time(msg)
    if ts is None:
        ts = now
    return Event(timestamp=ts, created=now, module="syslog", fields=fields, raw=data)


def parse_line(line: str, default_now: float, sender: str = "127.0.0.1") -> Event | None:
    """One scenario line to an event (``None`` for blank lines and ``#`` comments)."""
    line = line.rstrip("\r\n")
    if not line.strip() or line.lstrip().startswith("#"):
        return None
    if line.lstrip().startswith("{"):
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            raise InputError(f"bad JSON: {exc}") from None
        if not isinstance(obj, dict):
            raise InputError("a JSON line must be an object")
        fields = _flatten(obj)
        ts_raw = fields.pop("@timestamp", None)
        ts = parse_time(str(ts_raw)) if ts_raw is not None else default_now
        module = str(fields.pop("event.module", "syslog"))
        raw = fields.pop("event.original", "")
        return Event(ts, ts, module, fields, str(raw).encode())
    forced: float | None = None
    if line.startswith("@"):
        stamp, _, line = line[1:].partition(" ")
        forced = parse_time(stamp)
    data = line.encode("utf-8", "surrogateescape")
    now = forced if forced is not None else default_now
    ev = decode_syslog_line(data, sender, now)
    if forced is not None:
        ev.timestamp = forced
    ev.created = ev.timestamp
    return ev


@dataclass
class IncidentSummary:
    rule: str
    title: str
    severity: str
    group_key: str
    hit_count: int = 0
    suppressed_count: int = 0
    first_seen: float = 0.0
    last_seen: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "rule": self.rule,
            "title": self.title,
            "severity": self.severity,
            "group_key": self.group_key,
            "hit_count": self.hit_count,
            "suppressed_count": self.suppressed_count,
            "first_seen": iso8601(self.first_seen),
            "last_seen": iso8601(self.last_seen),
        }


@dataclass
class Replay:
    """Feeds lines through an engine in event time and keeps incident-like summaries.

    The summaries key alerts as the incident manager does (rule + group key), without a
    database, so a golden file states which incidents a scenario must produce.
    """

    engine: Engine
    incidents: dict[tuple[str, str], IncidentSummary] = field(default_factory=dict)
    alerts: list[Alert] = field(default_factory=list)
    now: float = 0.0
    lines: int = 0

    def feed(self, ev: Event) -> list[Alert]:
        self.lines += 1
        ev.id = self.lines
        self.now = max(self.now, ev.timestamp)
        got = self.engine.on_timer(self.now)
        got += self.engine.observe(ev, self.now)
        self._record(got)
        return got

    def finish(self, tail: float = 0.0) -> list[Alert]:
        """Run the timers ``tail`` seconds past the last event (silent sources)."""
        got: list[Alert] = []
        end = self.now + tail
        while (d := self.engine.next_deadline()) is not None and d <= end:
            got += self.engine.on_timer(d)
        got += self.engine.on_timer(end)
        self._record(got)
        return got

    def _record(self, alerts: Iterable[Alert]) -> None:
        for a in alerts:
            self.alerts.append(a)
            key = (a.rule.id, a.group_key)
            inc = self.incidents.get(key)
            if inc is None:
                inc = self.incidents[key] = IncidentSummary(
                    a.rule.name or a.rule.id,
                    a.rule.title,
                    a.rule.level,
                    a.group_key,
                    first_seen=a.first_seen,
                    last_seen=a.last_seen,
                )
            if a.suppressed:
                inc.suppressed_count += 1
            else:
                inc.hit_count += 1
            inc.first_seen = min(inc.first_seen, a.first_seen)
            inc.last_seen = max(inc.last_seen, a.last_seen)

    def summary(self) -> list[dict[str, Any]]:
        return sorted(
            (i.to_dict() for i in self.incidents.values()),
            key=lambda d: (d["rule"], d["group_key"]),
        )

    def state(self) -> dict[str, Any]:
        """Open correlation windows: per rule, the groups and what each holds."""
        out: dict[str, Any] = {}
        for rt in self.engine.correlations.values():
            if rt.groups:
                name = rt.rule.meta.name or rt.rule.meta.id
                out[name] = {
                    ",".join(f"{g}={v}" for g, v in zip(rt.rule.group_by, k, strict=True)): _brief(
                        s
                    )
                    for k, s in list(rt.groups.items())[:20]
                }
        return out


def _brief(state: Any) -> dict[str, Any]:

    entries = state.entries()
    out: dict[str, Any] = {
        "entries": len(entries),
        "first": iso8601(min(e[0] for e in entries)) if entries else None,
        "last": iso8601(max(e[0] for e in entries)) if entries else None,
    }
    if isinstance(state, DistinctState):
        out["values"] = [str(v) for v in list(state.values)[:20]]
    elif isinstance(state, SumState):
        out["total"] = state.total
    elif isinstance(state, TemporalState):
        out["seen_rules"] = sorted(state.seen)
    elif isinstance(state, OrderedState):
        out["steps_reached"] = sum(1 for ch in state.chains if ch is not None)
    return out
