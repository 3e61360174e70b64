"""The streaming correlation engine: sans-I/O, event time, ``now`` passed in.

Shaped like aioquic's connection objects: :meth:`Engine.observe` takes one event and the
current time and returns the alerts it caused; :meth:`Engine.next_deadline` says when the
caller must next call :meth:`Engine.on_timer` (silent sources, memory sweeps). Nothing here
reads a clock, sleeps or does I/O, so tests and ``appliance replay`` are deterministic.

Windows run on event time. The watermark is the newest event time seen minus
``allowed_lateness``; an event older than the watermark is too late for correlation (counted,
and still matched by single-event detections). Event times in the future beyond the lateness
are clamped to ``now`` so one device with a wrong clock cannot push everyone's windows ahead.

Per correlation rule, state is kept per group (the ``group-by`` values) in an LRU map bounded
by ``max_groups``; the least recently used group is evicted and counted when a new one would
exceed it. Windows hold at most what the condition needs (``gte: N`` keeps N timestamps).
"""

from __future__ import annotations

import bisect
import heapq
import math
from collections import OrderedDict, deque
from dataclasses import dataclass, field
from typing import Any

from appliance.correlate.mapping import event_index_keys
from appliance.correlate.rules import (
    CorrelationRule,
    DetectionRule,
    RuleMeta,
    RuleSet,
    Suppress,
    compare,
)
from appliance.event import Event

SAMPLE_CHARS = 1024
MAX_DEPTH = 8  # correlation-of-correlation nesting


@dataclass(slots=True)
class Alert:
    """A rule fired for a group: what the incident manager turns into an incident change."""

    rule: RuleMeta
    kind: str
    group: dict[str, Any]
    first_seen: float
    last_seen: float
    count: int = 1
    event_ids: list[int] = field(default_factory=list)
    samples: list[str] = field(default_factory=list)
    suppressed: bool = False
    detail: dict[str, Any] = field(default_factory=dict)

    @property
    def group_key(self) -> str:
        return ",".join(f"{k}={'' if v is None else v}" for k, v in self.group.items())


@dataclass(slots=True)
class Limits:
    allowed_lateness: float = 60.0
    max_groups: int = 10_000
    max_window_events: int = 10_000
    evidence_events: int = 20
    evidence_samples: int = 5


@dataclass(slots=True)
class Hit:
    """An input to a correlation: one matching event or one inner correlation alert."""

    rule_id: str
    fields: dict[str, Any]
    ts: float
    event_ids: list[int]
    samples: list[str]


def _sample(ev: Event) -> list[str]:
    if not ev.raw:
        m = ev.fields.get("message")
        return [str(m)[:SAMPLE_CHARS]] if m is not None else []
    return [ev.raw[:SAMPLE_CHARS].decode("utf-8", "backslashreplace")]


def _group_values(rule_id: str, by: tuple[str, ...], fields: dict[str, Any], c: Any) -> tuple:
    if c is None:
        return tuple(fields.get(g) for g in by)
    return tuple(fields.get(c.group_field(g, rule_id)) for g in by)


def _jsonable(v: Any) -> Any:
    if isinstance(v, str | int | float | bool) or v is None:
        return v
    return str(v)


# --------------------------------------------------------------------------- group states


class GroupState:
    """Per-group window of one correlation type; subclasses implement add/dump/load."""

    __slots__ = ("first", "ids", "last", "samples")

    def __init__(self, limits: Limits) -> None:
        self.ids: deque[int] = deque(maxlen=limits.evidence_events)
        self.samples: deque[str] = deque(maxlen=limits.evidence_samples)
        self.first = math.inf
        self.last = -math.inf

    def note(self, hit: Hit) -> None:
        self.ids.extend(hit.event_ids)
        self.samples.extend(hit.samples)
        if hit.ts < self.first:
            self.first = hit.ts
        if hit.ts > self.last:
            self.last = hit.ts

    def base_dump(self) -> dict[str, Any]:
        return {
            "ids": list(self.ids),
            "samples": list(self.samples),
            "first": self.first if self.first != math.inf else None,
            "last": self.last if self.last != -math.inf else None,
        }

    def base_load(self, d: dict[str, Any]) -> None:
        self.ids.extend(d.get("ids", []))
        self.samples.extend(d.get("samples", []))
        self.first = d["first"] if d.get("first") is not None else math.inf
        self.last = d["last"] if d.get("last") is not None else -math.inf

    def newest(self) -> float:
        return self.last


class CountState(GroupState):
    """event_count: sorted timestamps, at most what the threshold needs."""

    __slots__ = ("times",)

    def __init__(self, limits: Limits, keep: int) -> None:
        super().__init__(limits)
        self.times: deque[float] = deque(maxlen=keep)

    def add(self, c: CorrelationRule, hit: Hit) -> float | None:
        t = self.times
        if t and hit.ts < t[-1]:
            lst = list(t)
            bisect.insort(lst, hit.ts)
            t.clear()
            t.extend(lst[-t.maxlen :] if t.maxlen else lst)
        else:
            t.append(hit.ts)
        cutoff = t[-1] - c.timespan
        while t and t[0] < cutoff:
            t.popleft()
        self.note(hit)
        n = len(t)
        return n if compare(c.op, n, c.threshold) else None

    def dump(self) -> dict[str, Any]:
        return {**self.base_dump(), "times": list(self.times)}

    def load(self, d: dict[str, Any]) -> None:
        self.base_load(d)
        self.times.extend(d.get("times", []))


class DistinctState(GroupState):
    """value_count: distinct values of the condition field with their newest time."""

    __slots__ = ("keep", "values")

    def __init__(self, limits: Limits, keep: int) -> None:
        super().__init__(limits)
        self.values: OrderedDict[Any, float] = OrderedDict()
        self.keep = keep

    def add(self, c: CorrelationRule, hit: Hit) -> float | None:
        assert c.fieldref is not None
        v = hit.fields.get(c.fieldref)
        if v is None:
            return None
        v = _jsonable(v) if not isinstance(v, list) else tuple(map(_jsonable, v))
        vals = self.values
        vals[v] = max(hit.ts, vals.get(v, hit.ts))
        vals.move_to_end(v)
        cutoff = hit.ts - c.timespan
        while vals:
            oldest = next(iter(vals))
            if vals[oldest] >= cutoff:
                break
            del vals[oldest]
        while len(vals) > self.keep:
            vals.popitem(last=False)
        self.note(hit)
        n = len(vals)
        return n if compare(c.op, n, c.threshold) else None

    def dump(self) -> dict[str, Any]:
        return {**self.base_dump(), "values": [[k, t] for k, t in self.values.items()]}

    def load(self, d: dict[str, Any]) -> None:
        self.base_load(d)
        for k, t in d.get("values", []):
            self.values[tuple(k) if isinstance(k, list) else k] = t


class SumState(GroupState):
    """value_sum / value_avg: (time, value) pairs in the window and their running sum."""

    __slots__ = ("items", "maxn", "total")

    def __init__(self, limits: Limits) -> None:
        super().__init__(limits)
        self.items: deque[tuple[float, float]] = deque()
        self.total = 0.0
        self.maxn = limits.max_window_events

    def add(self, c: CorrelationRule, hit: Hit) -> float | None:
        assert c.fieldref is not None
        raw = hit.fields.get(c.fieldref)
        try:
            v = float(raw)  # type: ignore[arg-type]
        except (TypeError, ValueError):
            return None
        items = self.items
        items.append((hit.ts, v))
        self.total += v
        cutoff = max(hit.ts, items[0][0]) - c.timespan
        while items and (items[0][0] < cutoff or len(items) > self.maxn):
            self.total -= items.popleft()[1]
        self.note(hit)
        value = self.total if c.type == "value_sum" else self.total / max(1, len(items))
        return value if compare(c.op, value, c.threshold) else None

    def dump(self) -> dict[str, Any]:
        return {**self.base_dump(), "items": [list(x) for x in self.items]}

    def load(self, d: dict[str, Any]) -> None:
        self.base_load(d)
        for ts, v in d.get("items", []):
            self.items.append((ts, v))
            self.total += v


class TemporalState(GroupState):
    """temporal: newest time each referenced rule was seen in the window."""

    __slots__ = ("seen",)

    def __init__(self, limits: Limits) -> None:
        super().__init__(limits)
        self.seen: dict[str, float] = {}

    def add(self, c: CorrelationRule, hit: Hit) -> float | None:
        self.seen[hit.rule_id] = max(hit.ts, self.seen.get(hit.rule_id, hit.ts))
        cutoff = hit.ts - c.timespan
        for k in [k for k, t in self.seen.items() if t < cutoff]:
            del self.seen[k]
        self.note(hit)
        n = len(self.seen)
        need = min(c.threshold, len(set(c.refs)))
        return n if compare(c.op, n, need) else None

    def dump(self) -> dict[str, Any]:
        return {**self.base_dump(), "seen": self.seen}

    def load(self, d: dict[str, Any]) -> None:
        self.base_load(d)
        self.seen.update(d.get("seen", {}))


class OrderedState(GroupState):
    """temporal_ordered: for each step, the latest start of a chain that reached it.

    O(steps) per event, independent of how many partial sequences are open: a newer start
    always dominates an older one (it has more time left), so one number per step suffices.
    """

    __slots__ = ("starts",)

    def __init__(self, limits: Limits, steps: int) -> None:
        super().__init__(limits)
        self.starts: list[float | None] = [None] * steps

    def add(self, c: CorrelationRule, hit: Hit) -> float | None:
        starts = self.starts
        ts = hit.ts
        cutoff = ts - c.timespan
        advanced = False
        for k in range(len(c.refs) - 1, -1, -1):
            if c.refs[k] != hit.rule_id:
                continue
            if k == 0:
                starts[0] = ts
                advanced = True
            else:
                prev = starts[k - 1]
                if prev is not None and prev >= cutoff:
                    cur = starts[k]
                    starts[k] = prev if cur is None or prev > cur else cur
                    advanced = True
        if advanced:
            self.note(hit)
        last = starts[-1]
        if last is not None and last >= cutoff:
            return float(len(c.refs))
        return None

    def dump(self) -> dict[str, Any]:
        return {**self.base_dump(), "starts": self.starts}

    def load(self, d: dict[str, Any]) -> None:
        self.base_load(d)
        s = d.get("starts", [])
        if len(s) == len(self.starts):
            self.starts = s


# ------------------------------------------------------------------------------ rule states


class CorrelationRuntime:
    def __init__(self, rule: CorrelationRule, limits: Limits) -> None:
        self.rule = rule
        self.limits = limits
        self.groups: OrderedDict[tuple, GroupState] = OrderedDict()
        self.evicted = 0
        self.fired = 0
        self.late = 0

    def new_state(self) -> GroupState:
        c, lim = self.rule, self.limits
        keep = min(lim.max_window_events, max(1, int(c.threshold) + 1))
        if c.type == "event_count":
            if c.op in ("lt", "lte", "neq"):
                keep = lim.max_window_events
            return CountState(lim, keep)
        if c.type == "value_count":
            if c.op in ("lt", "lte", "neq"):
                keep = lim.max_window_events
            return DistinctState(lim, keep)
        if c.type in ("value_sum", "value_avg"):
            return SumState(lim)
        if c.type == "temporal":
            return TemporalState(lim)
        return OrderedState(lim, len(c.refs))

    def add(self, key: tuple, hit: Hit) -> tuple[GroupState, float] | None:
        groups = self.groups
        st = groups.get(key)
        if st is None:
            if len(groups) >= self.limits.max_groups:
                groups.popitem(last=False)
                self.evicted += 1
            st = groups[key] = self.new_state()
        else:
            groups.move_to_end(key)
        value = st.add(self.rule, hit)  # type: ignore[attr-defined]
        if value is None:
            return None
        del groups[key]
        self.fired += 1
        return st, value

    def sweep(self, watermark: float) -> int:
        """Drop groups whose newest entry is older than the window (they cannot fire)."""
        cutoff = watermark - self.rule.timespan
        stale = [k for k, s in self.groups.items() if s.newest() < cutoff]
        for k in stale:
            del self.groups[k]
        return len(stale)

    def dump(self) -> list[Any]:
        return [[list(map(_jsonable, k)), s.dump()] for k, s in self.groups.items()]  # type: ignore[attr-defined]

    def load(self, data: list[Any]) -> None:
        for key, d in data:
            st = self.new_state()
            st.load(d)  # type: ignore[attr-defined]
            self.groups[tuple(key)] = st


class AbsenceRuntime:
    """Silent source: groups seen before that have not been seen for ``timespan`` (wall time)."""

    def __init__(self, rule: DetectionRule) -> None:
        self.rule = rule
        assert rule.absence is not None
        self.timespan = rule.absence.timespan
        self.last: dict[tuple, tuple[float, float]] = {}  # key -> (now seen, event time)
        self.alerted: set[tuple] = set()

    def seen(self, key: tuple, now: float, ts: float) -> Alert | None:
        self.last[key] = (now, ts)
        self.alerted.discard(key)
        return None

    def dump(self) -> list[Any]:
        return [
            [list(map(_jsonable, k)), v[0], v[1], k in self.alerted] for k, v in self.last.items()
        ]

    def load(self, data: list[Any]) -> None:
        for key, now, ts, alerted in data:
            k = tuple(key)
            self.last[k] = (now, ts)
            if alerted:
                self.alerted.add(k)


class BaselineRuntime:
    """Event rate per group per interval against its EWMA mean and deviation (k-sigma)."""

    def __init__(self, rule: DetectionRule, limits: Limits) -> None:
        self.rule = rule
        assert rule.baseline is not None
        self.b = rule.baseline
        self.limits = limits
        # key -> [bucket, count, mean, var, n, fired]
        self.groups: OrderedDict[tuple, list[Any]] = OrderedDict()
        self.evicted = 0

    def add(self, key: tuple, ts: float) -> dict[str, Any] | None:
        b = self.b
        bucket = int(ts // b.interval)
        g = self.groups.get(key)
        if g is None:
            if len(self.groups) >= self.limits.max_groups:
                self.groups.popitem(last=False)
                self.evicted += 1
            g = self.groups[key] = [bucket, 0, 0.0, 0.0, 0, False]
        else:
            self.groups.move_to_end(key)
        if bucket < g[0]:
            return None  # late beyond the current interval: ignored for the rate
        if bucket > g[0]:
            closed = [g[1]] + [0] * min(bucket - g[0] - 1, 1000)
            for x in closed:
                if g[4] == 0:
                    g[2], g[3] = float(x), 0.0
                else:
                    diff = x - g[2]
                    g[2] += b.alpha * diff
                    g[3] = (1 - b.alpha) * (g[3] + b.alpha * diff * diff)
                g[4] += 1
            g[0], g[1], g[5] = bucket, 0, False
        g[1] += 1
        if g[5] or g[4] < b.warmup or g[1] < b.min_count:
            return None
        limit = g[2] + b.k * math.sqrt(g[3])
        if g[1] > limit:
            g[5] = True
            return {"count": g[1], "mean": round(g[2], 3), "stddev": round(math.sqrt(g[3]), 3)}
        return None

    def dump(self) -> list[Any]:
        return [[list(map(_jsonable, k)), g] for k, g in self.groups.items()]

    def load(self, data: list[Any]) -> None:
        for key, g in data:
            self.groups[tuple(key)] = list(g)


# ------------------------------------------------------------------------------------ engine


@dataclass(slots=True)
class RuleStats:
    hits: int = 0
    alerts: int = 0
    suppressed: int = 0
    last_fired: float | None = None


class Engine:
    def __init__(self, ruleset: RuleSet, limits: Limits | None = None) -> None:
        self.ruleset = ruleset
        self.limits = limits or Limits()
        self.watermark = -math.inf
        self.newest = -math.inf
        self.late_events = 0
        self.stats: dict[str, RuleStats] = {}
        self.index: dict[str, dict[str | None, list[DetectionRule]]] = {}
        for d in ruleset.detections:
            slot = self.index.setdefault(d.source.key, {})
            if d.actions is None:
                slot.setdefault(None, []).append(d)
            else:
                for a in d.actions:
                    slot.setdefault(a, []).append(d)
            self.stats[d.meta.id] = RuleStats()
        self.correlations = {
            c.meta.id: CorrelationRuntime(c, self.limits) for c in ruleset.correlations
        }
        for c in ruleset.correlations:
            self.stats[c.meta.id] = RuleStats()
        self.absence = {d.meta.id: AbsenceRuntime(d) for d in ruleset.detections if d.absence}
        self.baseline = {
            d.meta.id: BaselineRuntime(d, self.limits) for d in ruleset.detections if d.baseline
        }
        self.cooldowns: dict[str, OrderedDict[tuple, float]] = {}
        self._last_sweep = -math.inf
        self._absence_heap: list[tuple[float, str, tuple]] = []

    # ------------------------------------------------------------------------- matching

    def candidates(self, ev: Event) -> list[DetectionRule]:
        """The rules indexed for this event's log source and action (no scan of all rules)."""
        index = self.index
        fields = ev.fields
        action = fields.get("event.action")
        action_l = action.lower() if isinstance(action, str) else None
        out: list[DetectionRule] = []
        for key in event_index_keys(ev.module, fields):
            slot = index.get(key)
            if slot is None:
                continue
            rules = slot.get(None)
            if rules:
                out.extend(rules)
            if action_l is not None:
                rules = slot.get(action_l)
                if rules:
                    out.extend(rules)
        return out

    @staticmethod
    def source_ok(d: DetectionRule, ev: Event) -> bool:
        for name, allowed in d.source.checks:
            if name == "event.module":
                v: Any = ev.module
            else:
                v = ev.fields.get(name)
            if v is None:
                return False
            if isinstance(v, list):
                if not any(str(x).lower() in allowed for x in v):
                    return False
            elif str(v).lower() not in allowed:
                return False
        return True

    def matches(self, ev: Event) -> list[DetectionRule]:
        fields = ev.fields
        return [
            d
            for d in self.candidates(ev)
            if (not d.source.checks or self.source_ok(d, ev)) and d.predicate(fields)
        ]

    def observe(self, ev: Event, now: float) -> list[Alert]:
        matched = self.matches(ev)
        if not matched:
            return []
        alerts: list[Alert] = []
        ts = min(ev.timestamp, now + self.limits.allowed_lateness)
        late = ts < self.watermark
        if ts > self.newest:
            self.newest = ts
            self.watermark = ts - self.limits.allowed_lateness
        ids = [ev.id] if ev.id is not None else []
        for d in matched:
            st = self.stats[d.meta.id]
            st.hits += 1
            if d.absence is not None:
                self._absence_seen(d, ev, now, ts)
                continue
            if d.baseline is not None:
                key = tuple(ev.fields.get(g) for g in d.baseline.by)
                info = self.baseline[d.meta.id].add(key, ts)
                if info is not None:
                    a = Alert(
                        d.meta,
                        "baseline",
                        dict(zip(d.baseline.by, key, strict=True)),
                        ts,
                        ts,
                        info["count"],
                        ids,
                        _sample(ev),
                        detail=info,
                    )
                    self._emit(d.meta, d.suppress, a, alerts)
                continue
            if d.generate:
                group = {g: ev.fields.get(g) for g in d.group_by}
                a = Alert(d.meta, "detection", group, ts, ts, 1, list(ids), _sample(ev))
                self._emit(d.meta, d.suppress, a, alerts)
            if d.parents:
                if late:
                    self.late_events += 1
                    continue
                hit = Hit(d.meta.id, ev.fields, ts, ids, _sample(ev))
                for c in d.parents:
                    self._feed(c, hit, alerts, 0)
        return alerts

    def _feed(self, c: CorrelationRule, hit: Hit, alerts: list[Alert], depth: int) -> None:
        if depth > MAX_DEPTH:
            return
        rt = self.correlations[c.meta.id]
        key = _group_values(hit.rule_id, c.group_by, hit.fields, c)
        self.stats[c.meta.id].hits += 1
        fired = rt.add(key, hit)
        if fired is None:
            return
        state, value = fired
        group = dict(zip(c.group_by, key, strict=True))
        a = Alert(
            c.meta,
            c.type,
            group,
            state.first,
            state.last,
            len(state.ids) if c.type == "event_count" else 1,
            list(state.ids),
            list(state.samples),
            detail={"value": value, "condition": {c.op: c.threshold}, "timespan": c.timespan},
        )
        if c.type == "event_count":
            a.count = int(value)
        if not c.parents or any(p.generate for p in c.parents):
            self._emit(c.meta, c.suppress, a, alerts)
        if c.parents:
            inner = Hit(c.meta.id, group, state.last, list(state.ids), list(state.samples))
            for p in c.parents:
                self._feed(p, inner, alerts, depth + 1)

    def _emit(self, meta: RuleMeta, sup: Suppress | None, a: Alert, out: list[Alert]) -> None:
        st = self.stats[meta.id]
        if sup is not None:
            key = tuple(a.group.get(f) for f in sup.by) if sup.by else (a.group_key,)
            cd = self.cooldowns.setdefault(meta.id, OrderedDict())
            until = cd.get(key)
            if until is not None and a.last_seen < until:
                a.suppressed = True
                st.suppressed += 1
            else:
                cd[key] = a.last_seen + sup.cooldown
                cd.move_to_end(key)
                while len(cd) > self.limits.max_groups:
                    cd.popitem(last=False)
        if not a.suppressed:
            st.alerts += 1
            st.last_fired = a.last_seen
        out.append(a)

    # ----------------------------------------------------------------------- absence

    def _absence_seen(self, d: DetectionRule, ev: Event, now: float, ts: float) -> None:
        assert d.absence is not None
        key = tuple(ev.fields.get(g) for g in d.absence.by)
        rt = self.absence[d.meta.id]
        armed = key in rt.last and key not in rt.alerted
        rt.seen(key, now, ts)
        if not armed:  # one heap entry per silent-able group; re-armed lazily in on_timer
            heapq.heappush(self._absence_heap, (now + rt.timespan, d.meta.id, key))

    def next_deadline(self) -> float | None:
        """Wall-clock time at which :meth:`on_timer` has something to do (None: nothing)."""
        return self._absence_heap[0][0] if self._absence_heap else None

    def on_timer(self, now: float) -> list[Alert]:
        alerts: list[Alert] = []
        heap = self._absence_heap
        while heap and heap[0][0] <= now:
            _when, rid, key = heapq.heappop(heap)
            rt = self.absence.get(rid)
            if rt is None or key in rt.alerted or key not in rt.last:
                continue
            seen_now, seen_ts = rt.last[key]
            due = seen_now + rt.timespan
            if due > now:
                heapq.heappush(heap, (due, rid, key))
                continue
            rt.alerted.add(key)
            d = rt.rule
            assert d.absence is not None
            a = Alert(
                d.meta,
                "absence",
                dict(zip(d.absence.by, key, strict=True)),
                seen_ts,
                seen_ts,
                1,
                detail={"silent_for": now - seen_now, "timespan": rt.timespan},
            )
            self._emit(d.meta, d.suppress, a, alerts)
        if now - self._last_sweep >= 60:
            self._last_sweep = now
            self.sweep()
        return alerts

    def sweep(self) -> int:
        return sum(rt.sweep(self.watermark) for rt in self.correlations.values())

    # ------------------------------------------------------------------------- state

    def tracked_groups(self) -> int:
        return sum(len(rt.groups) for rt in self.correlations.values()) + sum(
            len(b.groups) for b in self.baseline.values()
        )

    def evicted(self) -> int:
        return sum(rt.evicted for rt in self.correlations.values()) + sum(
            b.evicted for b in self.baseline.values()
        )

    def snapshot(self) -> dict[str, Any]:
        """JSON-able windows, baselines, absences and cooldowns (restored by :meth:`restore`)."""
        return {
            "version": 1,
            "newest": self.newest if self.newest != -math.inf else None,
            "correlations": {rid: rt.dump() for rid, rt in self.correlations.items()},
            "absence": {rid: rt.dump() for rid, rt in self.absence.items()},
            "baseline": {rid: rt.dump() for rid, rt in self.baseline.items()},
            "cooldowns": {
                rid: [[list(map(_jsonable, k)), t] for k, t in cd.items()]
                for rid, cd in self.cooldowns.items()
            },
        }

    def restore(self, snap: dict[str, Any]) -> None:
        """Load a snapshot; state of rules that no longer exist is dropped."""
        if snap.get("version") != 1:
            return
        if snap.get("newest") is not None:
            self.newest = float(snap["newest"])
            self.watermark = self.newest - self.limits.allowed_lateness
        for rid, data in snap.get("correlations", {}).items():
            if rid in self.correlations:
                self.correlations[rid].load(data)
        for rid, data in snap.get("absence", {}).items():
            if rid in self.absence:
                rt = self.absence[rid]
                rt.load(data)
                for key, (seen_now, _ts) in rt.last.items():
                    if key not in rt.alerted:
                        heapq.heappush(self._absence_heap, (seen_now + rt.timespan, rid, key))
        for rid, data in snap.get("baseline", {}).items():
            if rid in self.baseline:
                self.baseline[rid].load(data)
        for rid, data in snap.get("cooldowns", {}).items():
            if rid in self.stats:
                self.cooldowns[rid] = OrderedDict((tuple(k), t) for k, t in data)
