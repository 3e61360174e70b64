"""The streaming correlation engine: sans-I/O, event time, ``now`` passed in.

Shaped like aioquic's connection objects: :meth:`Engine.observe` takes one event and the
current time and returns the alerts it caused; :meth:`Engine.next_deadline` says when the
caller must next call :meth:`Engine.on_timer` (silent sources, memory sweeps). Nothing here
reads a clock, sleeps or does I/O, so tests and ``appliance replay`` are deterministic.

Windows run on event time. The watermark is the newest event time seen minus
``allowed_lateness``; an event older than the watermark is too late for correlation (counted,
and still matched by single-event detections). Event times more than the lateness ahead of
``now`` are clamped to ``now + lateness``, so one device with a wrong clock cannot push
everyone's windows ahead.

Per correlation rule, state is kept per group (the ``group-by`` values) in an LRU map bounded
by ``max_groups``; the least recently used group is evicted and counted when a new one would
exceed it. Windows hold at most what the condition needs (``gte: N`` keeps the last N+1
entries); an entry is (event time, event ids, raw line): the window is the evidence. The
window classes, one per correlation type, are in :mod:`appliance.correlate.windows`.
"""

from __future__ import annotations

import contextlib
import heapq
import itertools
import logging
import math
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from appliance import dataplane
from appliance.correlate.mapping import event_index_keys
from appliance.correlate.matcher import NativeMatcher
from appliance.correlate.rules import (
    CorrelationRule,
    DetectionRule,
    RuleMeta,
    RuleSet,
    Suppress,
)
from appliance.correlate.windows import (
    SAMPLE_CHARS,
    BoolOrderedState,
    BoolTemporalState,
    CountState,
    DistinctState,
    DistinctTupleState,
    Entry,
    GroupState,
    OrderedState,
    QuantileState,
    SumState,
    TemporalRangeState,
    TemporalState,
    _sample,
    quantile,  # noqa: F401 - re-exported: callers import it from the engine
)
from appliance.event import Event

# A correlation group's key: the values of its group-by fields, in order.
GroupKey = tuple[Any, ...]
# A native window's fired group as the engine reads it: (ids, raw samples, first, last).
Evidence = tuple[list[int], list[bytes], Any, Any]
# What a correlation runtime's add returns when its condition holds: the group key, the
# group (the Python windows) or its evidence (the native ones), and the condition's value.
Fired = tuple[GroupKey, GroupState | Evidence, float]


def evidence(entries: list[Entry]) -> Evidence:
    """What an alert keeps of a fired group's entries: their ids in order of first
    appearance, every raw sample in order, the smallest and largest entry time (None with
    no entry). ``CorrelationWindows`` gathers the same in Rust for the native windows."""
    ids: list[int] = []
    raws: list[bytes] = []
    for e in entries:
        ids.extend(e[1])
        raws.extend(e[2])
    if not entries:
        return ids, raws, None, None
    return list(dict.fromkeys(ids)), raws, min(e[0] for e in entries), max(e[0] for e in entries)


MAX_DEPTH = 8  # correlation-of-correlation nesting
# Slices observe_batch gives the reference loop after one where more events had to be
# observed in Python than natively (then a slice is tried natively again).
FEEDS_BACKOFF_SLICES = 16

log = logging.getLogger(__name__)


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
    # The fields of the event that fired a detection (the same dict, not a copy; None for
    # correlations): incident-time analysis (appliance.analysis) weighs the whole event, not
    # only the group-by values. Never stored; read, not changed.
    fields: dict[str, Any] | None = None

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


def _event_raw(ev: Event) -> bytes:
    raw = ev.raw
    if not raw:
        m = ev.fields.get("message")
        return str(m).encode()[:SAMPLE_CHARS] if m is not None else b""
    return raw if len(raw) <= SAMPLE_CHARS else raw[:SAMPLE_CHARS]


def _jsonable(v: Any) -> Any:
    if isinstance(v, str | int | float | bool) or v is None:
        return v
    return str(v)


# ------------------------------------------------------------------------------ rule states


class CorrelationRuntime:
    """One correlation rule's groups and windows, in Python: the reference (and the runtime
    of every rule :class:`NativeCorrelationRuntime` does not take)."""

    def __init__(self, rule: CorrelationRule, limits: Limits) -> None:
        self._setup(rule, limits)
        self.groups: OrderedDict[GroupKey, GroupState] = OrderedDict()
        self.evicted = 0
        self.fired = 0
        self.ungrouped = 0

    def _setup(self, rule: CorrelationRule, limits: Limits) -> None:
        """What follows from the rule and the limits (both backends)."""
        self.rule = rule
        self.limits = limits
        self.dropped_on_restore = 0
        self.stats = RuleStats()
        # Raises alerts itself: not only a step of other correlations (Sigma `generate`).
        self.emits = not rule.parents or any(p.generate for p in rule.parents)
        # referenced rule id -> the field names its group-by reads (aliases resolved)
        self.group_fields: dict[str, tuple[str, ...]] = {
            rid: tuple(rule.group_field(g, rid) for g in rule.group_by) for rid in rule.refs
        }
        self.by_rule = rule.type in ("temporal", "temporal_ordered")
        # A boolean condition's bit(s) of each referenced rule id (bit i is refs[i]).
        self.bits: dict[str, int] = {}
        for i, rid in enumerate(rule.refs):
            self.bits[rid] = self.bits.get(rid, 0) | 1 << i
        # Entries a count window keeps: what the lowest bound needs (``gte: 10`` keeps 11);
        # an upper bound, eq or neq needs the whole window.
        comparisons = ((rule.op, rule.threshold), *rule.more)
        lower = [t for op, t in comparisons if op in ("gt", "gte")]
        self.keep = min(limits.max_window_events, max(1, int(max(lower, default=0)) + 1))
        if any(op in ("lt", "lte", "neq", "eq") for op, _t in comparisons):
            self.keep = limits.max_window_events

    def new_state(self) -> GroupState:
        c, lim, keep = self.rule, self.limits, self.keep
        if c.expr is not None:
            if c.type == "temporal":
                return BoolTemporalState(self.bits)
            return BoolOrderedState(self.bits, len(c.expr.names))
        if c.type == "event_count":
            return CountState(keep)
        if c.type == "value_count":
            return DistinctTupleState(keep) if c.more_fields else DistinctState(keep)
        if c.type in ("value_sum", "value_avg"):
            return SumState(lim.max_window_events)
        if c.type in ("value_median", "value_percentile"):
            return QuantileState(lim.max_window_events)
        if c.type == "temporal":
            return TemporalRangeState() if c.more else TemporalState()
        return OrderedState(len(c.refs))

    def group_count(self) -> int:
        return len(self.groups)

    def add(self, rule_id: str, entry: Entry, fields: dict[str, Any]) -> Fired | None:
        gf = self.group_fields.get(rule_id)
        if gf is None:
            return None
        key = (fields.get(gf[0]),) if len(gf) == 1 else tuple([fields.get(g) for g in gf])
        if key.count(None) == len(key) and key:
            # An event with none of the group-by fields (an sshd line with no address) belongs
            # to no group: counting it under "missing" would merge unrelated events into one.
            # With some of them (a trap naming no interface) it groups by what it has.
            self.ungrouped += 1
            return None
        groups = self.groups
        st = groups.get(key)
        if st is None:
            if len(groups) >= self.limits.max_groups:
                groups.popitem(last=False)
                self.evicted += 1
            st = groups[key] = self.new_state()
        else:
            groups.move_to_end(key)
        if self.by_rule:
            value = st.add_rule(self.rule, rule_id, entry)  # type: ignore[attr-defined]
        else:
            value = st.add(self.rule, entry, fields)
        if value is None:
            return None
        del groups[key]
        self.fired += 1
        return key, st, value

    def sweep(self, watermark: float) -> int:
        """Drop groups whose newest entry is older than the window (they cannot fire)."""
        cutoff = watermark - self.rule.timespan
        stale = [k for k, s in self.groups.items() if s.newest() < cutoff]
        for k in stale:
            del self.groups[k]
        return len(stale)

    def dump(self) -> list[Any]:
        return [[list(map(_jsonable, k)), s.dump()] for k, s in self.groups.items()]

    def load(self, data: list[Any]) -> None:
        for key, d in data:
            st = self.new_state()
            try:
                st.load(d)
            except (TypeError, ValueError, KeyError, AttributeError, IndexError):
                # A window of another shape: the rule's type or condition changed since the
                # snapshot (a count became a boolean condition). That group starts empty.
                self.dropped_on_restore += 1
                continue
            self.groups[tuple(key)] = st


class NativeCorrelationRuntime(CorrelationRuntime):
    """An event_count, value_count or temporal_ordered rule whose groups and windows live in
    the native data plane (``appliance._dataplane.CorrelationWindows``): the same state
    machine as the Python windows, fed by the same ``add(rule_id, entry, fields)`` call
    (bound straight to the native method, no Python frame per event), reading the group-by
    and value fields from the event's dict itself and returning only what fired.

    Every other correlation type (value_sum/avg/median/percentile, temporal and the
    boolean conditions) keeps its Python runtime. Snapshots have the reference's shape on
    both backends: :meth:`dump` and :meth:`load` go through the Python window classes. What
    the native side declines (a caught panic, a NaN time) turns this runtime into the
    Python one with the same state, for good.
    """

    def __init__(self, rule: CorrelationRule, limits: Limits, impl: Any) -> None:
        self._setup(rule, limits)
        self.impl = impl
        self.add = impl.add  # type: ignore[method-assign]

    @classmethod
    def build(cls, rule: CorrelationRule, limits: Limits) -> CorrelationRuntime:
        """The native runtime when the rule is one it takes, else the Python one."""
        native = dataplane.native
        if native is None or rule.expr is not None:
            return CorrelationRuntime(rule, limits)
        if rule.type not in ("event_count", "value_count", "temporal_ordered"):
            return CorrelationRuntime(rule, limits)
        probe = CorrelationRuntime(rule, limits)
        value_fields = (
            [rule.fieldref, *rule.more_fields]
            if rule.type == "value_count" and rule.fieldref is not None
            else []
        )
        try:
            impl = native.CorrelationWindows(
                rule.type,
                float(rule.timespan),
                probe.keep,
                limits.max_groups,
                [(op, float(t)) for op, t in ((rule.op, rule.threshold), *rule.more)],
                {rid: list(fs) for rid, fs in probe.group_fields.items()},
                value_fields,
                list(rule.refs) if rule.type == "temporal_ordered" else [],
            )
        except (ValueError, TypeError, OverflowError):
            return probe
        return cls(rule, limits, impl)

    # the counters and groups live in the native state
    @property
    def evicted(self) -> int:  # type: ignore[override]
        return int(self.impl.evicted)

    @property
    def fired(self) -> int:  # type: ignore[override]
        return int(self.impl.fired)

    @property
    def ungrouped(self) -> int:  # type: ignore[override]
        return int(self.impl.ungrouped)

    @property
    def groups(self) -> OrderedDict[GroupKey, GroupState]:  # type: ignore[override]
        """The groups as the Python window classes (a copy: for reports and snapshots)."""
        out: OrderedDict[GroupKey, GroupState] = OrderedDict()
        kind = self.rule.type
        for key, items in self.impl.groups():
            st = self.new_state()
            if kind == "event_count":
                st.times.extend(items)  # type: ignore[attr-defined]
            elif kind == "value_count":
                st.values.update(items)  # type: ignore[attr-defined]
            else:
                st.chains = [  # type: ignore[attr-defined]
                    None if ch is None else (ch[0], tuple(ch[1])) for ch in items
                ]
            out[key] = st
        return out

    def group_count(self) -> int:
        return len(self.impl)

    def sweep(self, watermark: float) -> int:
        try:
            return int(self.impl.sweep(watermark))
        except _WindowsDeclined:
            self.to_python()
            return CorrelationRuntime.sweep(self, watermark)

    def dump(self) -> list[Any]:
        return [[list(map(_jsonable, k)), s.dump()] for k, s in self.groups.items()]

    def load(self, data: list[Any]) -> None:
        # The reference's load (its checks, its dropped_on_restore), then its groups handed
        # over in order; a window the native side cannot hold makes this rule Python.
        ref = CorrelationRuntime(self.rule, self.limits)
        ref.load(data)
        self.dropped_on_restore += ref.dropped_on_restore
        kind = self.rule.type
        for key, st in ref.groups.items():
            if kind == "event_count":
                items: list[Any] = list(st.times)  # type: ignore[attr-defined]
            elif kind == "value_count":
                items = list(st.values.items())  # type: ignore[attr-defined]
            else:
                items = [
                    None if ch is None else (ch[0], list(ch[1]))
                    for ch in st.chains  # type: ignore[attr-defined]
                ]
            try:
                self.impl.put(key, items)
            except _WindowsDeclined:  # NaN times: only the reference orders them
                self.to_python()
                for k, s in ref.groups.items():  # in place where already put, as a dict does
                    self.groups[k] = s
                return

    def decline(self, rule_id: str, entry: Entry, fields: dict[str, Any]) -> Any:
        """The native side declined this step (nothing changed there): carry on in Python."""
        self.to_python()
        return CorrelationRuntime.add(self, rule_id, entry, fields)

    def to_python(self) -> None:
        """Become the Python runtime with the native state (a caught panic, a NaN time)."""
        impl = self.impl
        try:
            groups = self.groups
        except Exception:  # the native state cannot be read back: start this rule empty
            log.exception("correlation %s: native windows lost", self.rule.meta.id)
            groups = OrderedDict()
        counters = (impl.evicted, impl.fired, impl.ungrouped)
        log.warning("correlation %s: windows continue in Python", self.rule.meta.id)
        self.__class__ = CorrelationRuntime  # type: ignore[assignment]
        del self.add
        del self.impl
        rt: CorrelationRuntime = self  # what it now is (mypy still reads the native class)
        rt.groups = groups
        rt.evicted, rt.fired, rt.ungrouped = counters


def _above(runtimes: list[CorrelationRuntime]) -> set[str]:
    """The ids of every correlation these runtimes' alerts feed, transitively (chains)."""
    above: set[str] = set()
    todo = [p for rt in runtimes for p in rt.rule.parents]
    while todo:
        p = todo.pop()
        if p.meta.id not in above:
            above.add(p.meta.id)
            todo.extend(p.parents)
    return above


class _NeverRaised(Exception):
    """Stands in for ``WindowsDeclined`` on the Python backend."""


_WindowsDeclined: type[Exception] = (
    dataplane.native.WindowsDeclined if dataplane.native is not None else _NeverRaised
)


class AbsenceRuntime:
    """Silent source: groups seen before that have not been seen for ``timespan`` (wall time).

    The reference; :class:`NativeAbsenceRuntime` keeps the same groups in the native data
    plane behind the same methods. The deadlines' heap is the engine's."""

    def __init__(self, rule: DetectionRule, limits: Limits) -> None:
        self.rule = rule
        assert rule.absence is not None
        self.timespan = rule.absence.timespan
        self.by = rule.absence.by
        self.max_groups = limits.max_groups
        self.last: dict[GroupKey, tuple[float, float]] = {}  # key -> (now seen, event time)
        self.alerted: set[GroupKey] = set()
        self.evicted = 0

    @classmethod
    def build(cls, rule: DetectionRule, limits: Limits) -> AbsenceRuntime:
        native = dataplane.native
        if native is None:
            return cls(rule, limits)
        assert rule.absence is not None
        try:
            impl = native.AbsenceGroups(list(rule.absence.by), limits.max_groups)
        except (ValueError, TypeError, OverflowError):
            return cls(rule, limits)
        return NativeAbsenceRuntime(rule, limits, impl)

    def seen(self, fields: dict[str, Any], now: float, ts: float) -> GroupKey | None:
        """This event's group is seen now; its key when it was not armed (new, or it had
        alerted): the caller schedules its deadline."""
        by = self.by
        key = (fields.get(by[0]),) if len(by) == 1 else tuple([fields.get(g) for g in by])
        last = self.last
        # pop + re-insert: the dict's order is least recently seen first (eviction order)
        armed = last.pop(key, None) is not None and not (self.alerted and key in self.alerted)
        last[key] = (now, ts)
        if self.alerted:
            self.alerted.discard(key)
        if len(last) > self.max_groups:
            oldest = next(iter(last))
            del last[oldest]
            self.alerted.discard(oldest)
            self.evicted += 1
        return None if armed else key

    def due(self, key: GroupKey) -> tuple[float, float] | None:
        """(seen now, event time) of a group that has not alerted since; else None."""
        if key in self.alerted:
            return None
        return self.last.get(key)

    def mark_alerted(self, key: GroupKey) -> None:
        self.alerted.add(key)

    def shift(self, step: float) -> None:
        self.last = {k: (seen + step, ts) for k, (seen, ts) in self.last.items()}

    def restart(self, now: float) -> None:
        """No sighting older than ``now`` (a restart: being down is not the source silent)."""
        self.last = {k: (max(v[0], now), v[1]) for k, v in self.last.items()}

    def items(self) -> list[tuple[GroupKey, float, float, bool]]:
        return [(k, v[0], v[1], k in self.alerted) for k, v in self.last.items()]

    def __len__(self) -> int:
        return len(self.last)

    def dump(self) -> list[Any]:
        return [[list(map(_jsonable, k)), now, ts, al] for k, now, ts, al in self.items()]

    def load(self, data: list[Any]) -> None:
        for key, now, ts, alerted in data:
            k = tuple(key)
            self.last[k] = (now, ts)
            if alerted:
                self.alerted.add(k)


class _NativeEvicted:
    """``evicted`` of a bookkeeping runtime whose groups live in its native ``impl``. The
    reference class's ``__init__`` sets it to 0 before ``impl`` exists: that write is
    dropped."""

    impl: Any
    rule: DetectionRule
    kind: str  # for the log lines
    bound: str  # the per-event method bound straight to ``impl`` in ``__init__``

    @property
    def evicted(self) -> int:
        return int(self.impl.evicted)

    @evicted.setter
    def evicted(self, value: int) -> None:
        if "impl" in self.__dict__:
            self.impl.evicted = value

    def _become(self, runtime: type, rebuild: Callable[[list[Any]], None]) -> None:
        """Become ``runtime``, the reference, with the native groups (a caught panic, a
        snapshot row only Python holds): ``rebuild`` puts ``impl.items()`` into the
        reference's containers once the class is swapped."""
        impl, bound = self.impl, self.bound  # the reference class has no ``bound``
        try:
            items = impl.items()
        except Exception:  # the native state cannot be read back: start this rule empty
            log.exception("%s %s: native groups lost", self.kind, self.rule.meta.id)
            items = []
        evicted = int(impl.evicted)
        log.warning("%s %s: groups continue in Python", self.kind, self.rule.meta.id)
        self.__class__ = runtime
        delattr(self, bound)
        del self.impl
        rebuild(items)
        self.evicted = evicted


class NativeAbsenceRuntime(_NativeEvicted, AbsenceRuntime):
    """An absence rule whose groups live in the native data plane
    (``appliance._dataplane.AbsenceGroups``, ``dataplane/src/bookkeeping.rs``): ``seen`` is
    bound straight to the native method (no Python frame per event). A caught panic
    (``WindowsDeclined``) turns it into the reference with the same groups, for good."""

    kind = "absence"
    bound = "seen"

    def __init__(self, rule: DetectionRule, limits: Limits, impl: Any) -> None:
        super().__init__(rule, limits)
        self.impl = impl
        self.seen = impl.seen  # type: ignore[method-assign]

    def decline(self, fields: dict[str, Any], now: float, ts: float) -> GroupKey | None:
        """The native side declined (nothing changed there): carry on in Python."""
        self.to_python()
        return AbsenceRuntime.seen(self, fields, now, ts)

    def to_python(self) -> None:
        def rebuild(items: list[tuple[GroupKey, float, float, bool]]) -> None:
            self.last = {k: (now, ts) for k, now, ts, _al in items}
            self.alerted = {k for k, _now, _ts, al in items if al}

        self._become(AbsenceRuntime, rebuild)

    def _call(self, name: str, *args: Any) -> Any:
        try:
            return getattr(self.impl, name)(*args)
        except _WindowsDeclined:
            self.to_python()
            return getattr(self, name)(*args)

    def due(self, key: GroupKey) -> tuple[float, float] | None:
        return self._call("due", key)  # type: ignore[no-any-return]

    def mark_alerted(self, key: GroupKey) -> None:
        self._call("mark_alerted", key)

    def shift(self, step: float) -> None:
        self._call("shift", step)

    def restart(self, now: float) -> None:
        self._call("restart", now)

    def items(self) -> list[tuple[GroupKey, float, float, bool]]:
        return self._call("items")  # type: ignore[no-any-return]

    def __len__(self) -> int:
        return len(self.impl)

    def load(self, data: list[Any]) -> None:
        for i, (key, now, ts, alerted) in enumerate(data):
            try:
                self.impl.put(tuple(key), now, ts, bool(alerted))
            except (_WindowsDeclined, ValueError, TypeError, OverflowError):
                # an unhashable key raises in the reference's load too
                self.to_python()
                AbsenceRuntime.load(self, data[i:])
                return


class BaselineRuntime:
    """Event rate per group per interval against its EWMA mean and deviation (k-sigma).

    The reference; :class:`NativeBaselineRuntime` keeps the same groups natively."""

    def __init__(self, rule: DetectionRule, limits: Limits) -> None:
        self.rule = rule
        assert rule.baseline is not None
        self.b = rule.baseline
        self.limits = limits
        # key -> [bucket, count, mean, var, n, fired]
        self.groups: OrderedDict[GroupKey, list[Any]] = OrderedDict()
        self.evicted = 0

    @classmethod
    def build(cls, rule: DetectionRule, limits: Limits) -> BaselineRuntime:
        native = dataplane.native
        if native is None:
            return cls(rule, limits)
        b = rule.baseline
        assert b is not None
        try:
            impl = native.BaselineGroups(
                list(b.by),
                float(b.interval),
                float(b.alpha),
                float(b.k),
                float(b.warmup),
                float(b.min_count),
                limits.max_groups,
            )
        except (ValueError, TypeError, OverflowError):
            return cls(rule, limits)
        return NativeBaselineRuntime(rule, limits, impl)

    def observe(self, fields: dict[str, Any], ts: float) -> tuple[GroupKey, dict[str, Any]] | None:
        """This event counted in its group: (key, detail) when it lifts the interval's count
        above the baseline (once per interval), else None."""
        by = self.b.by
        key = (fields.get(by[0]),) if len(by) == 1 else tuple([fields.get(g) for g in by])
        info = self.add(key, ts)
        return None if info is None else (key, info)

    def add(self, key: GroupKey, ts: float) -> dict[str, Any] | None:
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

    def items(self) -> list[tuple[GroupKey, list[Any]]]:
        return list(self.groups.items())

    def __len__(self) -> int:
        return len(self.groups)

    def dump(self) -> list[Any]:
        return [[list(map(_jsonable, k)), g] for k, g in self.items()]

    def load(self, data: list[Any]) -> None:
        for key, g in data:
            self.groups[tuple(key)] = list(g)


class NativeBaselineRuntime(_NativeEvicted, BaselineRuntime):
    """A baseline rule whose groups live in the native data plane
    (``appliance._dataplane.BaselineGroups``): ``observe`` is bound straight to the native
    method. A caught panic, or a snapshot row only Python holds exactly (a tampered one),
    turns it into the reference with the same groups, for good."""

    kind = "baseline"
    bound = "observe"

    def __init__(self, rule: DetectionRule, limits: Limits, impl: Any) -> None:
        super().__init__(rule, limits)
        self.impl = impl
        self.observe = impl.add  # type: ignore[method-assign]

    def decline(self, fields: dict[str, Any], ts: float) -> tuple[GroupKey, dict[str, Any]] | None:
        self.to_python()
        return BaselineRuntime.observe(self, fields, ts)

    def to_python(self) -> None:
        def rebuild(items: list[tuple[GroupKey, list[Any]]]) -> None:
            self.groups = OrderedDict(items)

        self._become(BaselineRuntime, rebuild)

    def items(self) -> list[tuple[GroupKey, list[Any]]]:
        try:
            return self.impl.items()  # type: ignore[no-any-return]
        except _WindowsDeclined:
            self.to_python()
            return BaselineRuntime.items(self)

    def __len__(self) -> int:
        return len(self.impl)

    def load(self, data: list[Any]) -> None:
        for i, (key, g) in enumerate(data):
            try:
                self.impl.put(tuple(key), g)
            except (_WindowsDeclined, ValueError, TypeError, OverflowError):
                self.to_python()
                BaselineRuntime.load(self, data[i:])
                return


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
        # Rule ids switched off by an operator (appliance.console, ``rule_state``): still
        # evaluated (their hits counted, correlations fed), but they raise nothing.
        self.disabled: set[str] = set()
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
            c.meta.id: NativeCorrelationRuntime.build(c, self.limits) for c in ruleset.correlations
        }
        for c in ruleset.correlations:
            self.stats[c.meta.id] = RuleStats()
            self.correlations[c.meta.id].stats = self.stats[c.meta.id]
        self._feeders: dict[str, list[CorrelationRuntime]] = {
            d.meta.id: [
                self.correlations[p.meta.id] for p in d.parents if p.meta.id in self.correlations
            ]
            for d in ruleset.detections
        }
        self.absence = {
            d.meta.id: AbsenceRuntime.build(d, self.limits) for d in ruleset.detections if d.absence
        }
        self.baseline = {
            d.meta.id: BaselineRuntime.build(d, self.limits)
            for d in ruleset.detections
            if d.baseline
        }
        self.cooldowns: dict[str, OrderedDict[GroupKey, float]] = {}
        self._last_sweep = -math.inf
        self._cand_cache: dict[GroupKey, list[DetectionRule]] = {}
        # The native matcher (None on the Python backend) and its candidate groups.
        self._native = NativeMatcher.build(ruleset.detections)
        self._prepared: dict[int, tuple[Event, list[DetectionRule]]] = {}
        # (deadline, push number, rule id, key): the number breaks ties, so two groups due
        # at the same time never compare their keys (None against a string raised TypeError)
        self._absence_heap: list[tuple[float, int, str, GroupKey]] = []
        self._pushes = itertools.count()
        self._observed_before = 0
        self._feeds: Any = None
        self._feeds_groups: list[AbsenceRuntime | BaselineRuntime] = []  # what _feeds holds
        self._feeds_backoff = 0  # slices left to take the reference loop (observe_batch)
        self.feeds_backoff_slices = FEEDS_BACKOFF_SLICES
        self._rebuild_native()

    def _rebuild_native(self) -> None:
        """The batches and feeds anew (a window may have gone to Python)."""
        if self._feeds is not None:
            self._observed_before += self._feeds.observed
        self._batches = self._native_batches()
        self._feeds = self._native_feeds()

    @property
    def natively_observed(self) -> int:
        """Matching events observed in Rust (``DetectionFeeds``) since this engine started."""
        return self._observed_before + (self._feeds.observed if self._feeds is not None else 0)

    def _native_batches(self) -> dict[str, Any]:
        """Per detection id, one native call for all the windows it feeds, where every one
        of them is native and none feeds another through a chain (then updating them all
        before handling what fired is the reference's order). One window needs no batch."""
        native = dataplane.native
        out: dict[str, Any] = {}
        if native is None:
            return out
        for rid, feeders in self._feeders.items():
            if len(feeders) < 2 or not all(
                isinstance(rt, NativeCorrelationRuntime) for rt in feeders
            ):
                continue
            if _above(feeders) & {rt.rule.meta.id for rt in feeders}:
                continue
            out[rid] = native.WindowsBatch(
                [rt.impl for rt in feeders]  # type: ignore[attr-defined]
            ).add
        return out

    def _declined(self, rt: CorrelationRuntime, rid: str, entry: Entry, fields: Any) -> Any:
        """A native window declined a step: that rule goes on in Python, and the batches,
        which hold its native state, are rebuilt without it."""
        fired = rt.decline(rid, entry, fields)  # type: ignore[attr-defined]
        self._rebuild_native()
        return fired

    def _batch_fired(
        self,
        feeders: list[CorrelationRuntime],
        results: list[tuple[Any, ...]],
        rid: str,
        entry: Entry,
        fields: dict[str, Any],
        alerts: list[Alert],
    ) -> None:
        """What a batch reported, handled as the one-by-one loop would have: the hits of
        the windows it reached, the alerts in order, an exception where it was raised, a
        declined step (and the windows after it) one by one. An item is (window index, what
        fired or raised) or, from ``DetectionFeeds``, with the chained step (see
        :meth:`_fired`) after them."""
        done = 0
        for item in results:
            i, got = item[0], item[1]
            for rt in feeders[done : i + 1]:
                rt.stats.hits += 1
            done = i + 1
            if isinstance(got, _WindowsDeclined):
                fired = self._declined(feeders[i], rid, entry, fields)
                if fired is not None:
                    self._fired(feeders[i], fired, entry, alerts, 0)
                self._add_each(feeders[i + 1 :], rid, entry, fields, alerts)
                return
            if isinstance(got, BaseException):
                raise got
            chained = item[2] if len(item) > 2 else None
            self._fired(feeders[i], got, entry, alerts, 0, chained)
            if chained is not None and isinstance(chained[0], BaseException):
                # the batch stopped at the step above this window: the rest one by one
                self._add_each(feeders[i + 1 :], rid, entry, fields, alerts)
                return
        for rt in feeders[done:]:
            rt.stats.hits += 1

    def _add_each(
        self,
        feeders: Sequence[CorrelationRuntime],
        rid: str,
        entry: Entry,
        fields: dict[str, Any],
        alerts: list[Alert],
        depth: int = 0,
    ) -> None:
        """Each window fed the event in turn (``observe``'s loop, the windows a batch did
        not reach, a chain's step in :meth:`_feed`), its fire handled at once. No lookup
        per window: the hot path."""
        for rt in feeders:
            rt.stats.hits += 1
            try:
                fired = rt.add(rid, entry, fields)
            except _WindowsDeclined:
                fired = self._declined(rt, rid, entry, fields)
            if fired is not None:
                self._fired(rt, fired, entry, alerts, depth)

    # ------------------------------------------------------------------------- matching

    @staticmethod
    def _signature(ev: Event) -> GroupKey:
        """The few fields the rule index reads (the candidates' memo key)."""
        fields = ev.fields
        cats = fields.get("event.category")
        return (
            ev.module,
            fields.get("process.name"),
            fields.get("observer.vendor"),
            tuple(cats) if isinstance(cats, list) else cats,
            fields.get("event.action"),
        )

    def candidates(self, ev: Event) -> list[DetectionRule]:
        """The rules indexed for this event's log source and action (no scan of all rules).

        Memoized on the few fields the index reads, so the usual event costs one dict probe.
        """
        sig = self._signature(ev)
        try:
            cached = self._cand_cache.get(sig)
        except TypeError:  # an unhashable value in an index field
            return self._candidates(ev)
        if cached is None:
            if len(self._cand_cache) >= 4096:
                self._cand_cache.clear()
            cached = self._cand_cache[sig] = self._candidates(ev)
        return cached

    def _candidates(self, ev: Event) -> list[DetectionRule]:
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
        return [d for d in out if not d.source.checks or self.source_ok(d, ev)]

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

    def match_batch(self, events: list[Event]) -> list[list[DetectionRule]]:
        """:meth:`matches` of every event of a batch: one native call on the native backend
        (the pairs it leaves undecided, and a batch it fails on, go to the predicates)."""
        native = self._native
        if native is not None:
            try:
                return native.match_batch(self, events)
            except Exception:
                native.failures += 1
        return [self.matches(ev) for ev in events]

    def matches(self, ev: Event) -> list[DetectionRule]:
        """The detection rules this event matches (pre-filters, then predicates)."""
        fields = ev.fields
        out: list[DetectionRule] = []
        msg_l: str | None = None
        for d in self.candidates(ev):
            toks = d.tokens
            if toks is not None:
                if msg_l is None:
                    m = fields.get("message")
                    msg_l = str(m).lower() if m is not None else ""
                if not any(t in msg_l for t in toks):
                    continue
            if d.predicate(fields):
                out.append(d)
        return out

    def prepare(self, events: list[Event]) -> None:
        """Match a batch ahead of :meth:`observe` (one native call); ``observe`` of each of
        these events then uses its prepared matches. ``prepare([])`` forgets them. Without
        the native matcher there is nothing to gain: ``observe`` matches as it always did."""
        if self._native is None and events:
            return
        matched = self.match_batch(events)
        self._prepared = {id(ev): (ev, m) for ev, m in zip(events, matched, strict=True)}

    def observe(self, ev: Event, now: float) -> list[Alert]:
        """Match one event and advance the windows it feeds; returns the alerts it caused."""
        ready = self._prepared.pop(id(ev), None) if self._prepared else None
        matched = ready[1] if ready is not None and ready[0] is ev else self.matches(ev)
        if not matched:
            return []
        alerts: list[Alert] = []
        ts = ev.timestamp
        if ts > now + self.limits.allowed_lateness:
            ts = now + self.limits.allowed_lateness
        elif ts != ts:  # NaN from a bad JSON replay line: use the clock
            ts = now
        late = ts < self.watermark
        if ts > self.newest:
            self.newest = ts
            self.watermark = ts - self.limits.allowed_lateness
        entry = self._observe_rules(ev, matched, ts, late, None, alerts, now)
        if late and entry is None and any(d.parents for d in matched):
            self.late_events += 1
        return alerts

    def _observe_rules(
        self,
        ev: Event,
        matched: list[DetectionRule],
        ts: float,
        late: bool,
        entry: Entry | None,
        alerts: list[Alert],
        now: float,
    ) -> Entry | None:
        """:meth:`observe` of the matched rules once the time is settled; returns the
        window entry (None when no window was fed)."""
        fields = ev.fields
        stats = self.stats
        for d in matched:
            stats[d.meta.id].hits += 1
            if d.absence is not None:
                rid = d.meta.id
                rt_a = self.absence[rid]
                try:
                    key = rt_a.seen(fields, now, ts)
                except _WindowsDeclined:
                    key = rt_a.decline(fields, now, ts)  # type: ignore[attr-defined]
                if key is not None:  # one heap entry per silent-able group; re-armed lazily
                    heapq.heappush(
                        self._absence_heap, (now + rt_a.timespan, next(self._pushes), rid, key)
                    )
                continue
            if d.baseline is not None:
                rt_b = self.baseline[d.meta.id]
                try:
                    spike = rt_b.observe(fields, ts)
                except _WindowsDeclined:
                    spike = rt_b.decline(fields, ts)  # type: ignore[attr-defined]
                if spike is not None:
                    self._baseline(d, ev, ts, spike, alerts)
                continue
            if d.generate:
                group = {g: fields.get(g) for g in d.group_by}
                ids = [ev.id] if ev.id is not None else []
                a = Alert(
                    d.meta,
                    "detection",
                    group,
                    ts,
                    ts,
                    1,
                    ids,
                    [_sample(_event_raw(ev))],
                    fields=fields,
                )
                self._emit(d.meta, d.suppress, a, alerts)
            if d.parents:
                if late:
                    continue
                if entry is None:
                    entry = (ts, (ev.id,) if ev.id is not None else (), (_event_raw(ev),))
                rid = d.meta.id
                batch = self._batches.get(rid)
                if batch is not None:  # every window it feeds is native: one call
                    results = batch(rid, entry, fields)
                    if results is None:
                        for rt in self._feeders[rid]:
                            rt.stats.hits += 1
                    else:
                        self._batch_fired(self._feeders[rid], results, rid, entry, fields, alerts)
                    continue
                self._add_each(self._feeders[rid], rid, entry, fields, alerts)
        return entry

    def observe_batch(
        self, events: list[Event], now: float, on_error: Callable[[Event], None]
    ) -> list[Alert]:
        """:meth:`observe` of each event in order (an event it raises on goes to
        ``on_error`` and costs that event's alerts, as a failed ``observe`` does).

        On the native backend the events whose matches only feed native windows or native
        absence and baseline groups (every flow, and every syslog line that raises no alert
        of its own, with the built-in ruleset) are observed in Rust, a slice per call
        (``DetectionFeeds``): no Python frame for them unless a window fires or a rate
        spikes; the absence deadlines they arm are pushed here after the call, in order. The
        call stops at each event this engine must observe itself and resumes after it, so
        the state changes and the alerts come in the reference's order."""
        alerts: list[Alert] = []
        native = self._native
        start, n = 0, len(events)
        groups: list[int] = []
        if self._feeds_backoff > 0:  # the last slices were mostly for Python: no calls
            self._feeds_backoff -= 1
        elif native is not None and self._feeds is not None and events:
            try:
                groups = native.groups_for(self, events)
            except Exception:
                native.failures += 1
        dets = self.ruleset.detections
        observed, stops = self.natively_observed, 0
        while start < n:
            feeds = self._current_feeds()
            if feeds is None or not groups:
                self._observe_each(events[start:], now, on_error, alerts)
                break
            try:
                got = feeds.run(events, groups, start, now, self.newest, self.watermark)
            except Exception:  # nothing changed in this call: the rest one by one
                assert native is not None
                native.failures += 1
                self._observe_each(events[start:], now, on_error, alerts)
                break
            stop, self.newest, self.watermark, late, hits, fired, pushes, partial, decided = got
            self.late_events += late
            for r, det_hits, feed_hits in hits:
                rid = dets[r].meta.id
                self.stats[rid].hits += det_hits
                if feed_hits:
                    for rt in self._feeders[rid]:
                        rt.stats.hits += feed_hits
            heap = self._absence_heap
            for r, key in pushes:  # in the order the reference pushes them
                rid = dets[r].meta.id
                when = now + self.absence[rid].timespan
                heapq.heappush(heap, (when, next(self._pushes), rid, key))
            for i, r, k, out, entry, chained in fired:
                try:
                    if k is None:  # a baseline spike (entry: the event time)
                        self._baseline(dets[r], events[i], entry, out, alerts)
                    else:
                        rt = self._feeders[dets[r].meta.id][k]
                        self._fired(rt, out, entry, alerts, 0, chained)
                except Exception:
                    on_error(events[i])
            if stop >= n:
                break
            stops += 1
            ev = events[stop]
            if partial is not None:
                self._finish_partial(ev, partial, decided, now, on_error, alerts)
            else:
                if decided:
                    assert native is not None
                    self._prepared = {id(ev): (ev, native.resolve(ev, decided))}
                try:
                    alerts.extend(self.observe(ev, now))
                except Exception:
                    on_error(ev)
                self._prepared = {}
            start = stop + 1
        if groups and stops > self.natively_observed - observed:
            # More events stopped the calls than went through them (a stream whose events
            # mostly raise alerts of their own or feed Python windows): each stop costs a
            # call, so the next slices take the reference loop, then native is tried again.
            self._feeds_backoff = self.feeds_backoff_slices
        return alerts

    def _observe_each(
        self, events: list[Event], now: float, on_error: Callable[[Event], None], out: list[Alert]
    ) -> None:
        """The reference loop: the stateless matching of the slice, then each event."""
        with contextlib.suppress(Exception):  # else each event is matched on its own
            self.prepare(events)
        for ev in events:
            try:
                got = self.observe(ev, now)
            except Exception:
                on_error(ev)
                continue
            out.extend(got)
        self.prepare([])

    def _finish_partial(
        self,
        ev: Event,
        partial: tuple[int, float, bool, Entry | None, list[tuple[int, Any]], list[int]],
        decided: list[tuple[int, int, bool]],
        now: float,
        on_error: Callable[[Event], None],
        out: list[Alert],
    ) -> None:
        """An event whose native step a window or group raised on or declined: what its
        detections did so far, then the rest of them, as :meth:`observe` would go on."""
        _i, ts, late, entry, done, rest = partial
        dets = self.ruleset.detections
        fields = ev.fields
        mine: list[Alert] = []
        try:
            for r, got in done:
                d = dets[r]
                rid = d.meta.id
                if d.absence is not None:
                    rt_a = self.absence[rid]
                    if isinstance(got, _WindowsDeclined):
                        got = rt_a.decline(fields, now, ts)  # type: ignore[attr-defined]
                    elif isinstance(got, BaseException):
                        raise got
                    if got is not None:
                        heapq.heappush(
                            self._absence_heap,
                            (now + rt_a.timespan, next(self._pushes), rid, got),
                        )
                elif d.baseline is not None:
                    if isinstance(got, _WindowsDeclined):
                        got = self.baseline[rid].decline(fields, ts)  # type: ignore[attr-defined]
                    elif isinstance(got, BaseException):
                        raise got
                    if got is not None:
                        self._baseline(d, ev, ts, got, mine)
                else:
                    assert entry is not None
                    self._batch_fired(self._feeders[rid], got, rid, entry, fields, mine)
            self._observe_rules(ev, [dets[r] for r in rest], ts, late, entry, mine, now)
        except Exception:
            on_error(ev)
            return
        if late and any(dets[r].parents for _i, r, _u in decided):
            self.late_events += 1
        out.extend(mine)

    def _current_feeds(self) -> Any:
        """The feeds, rebuilt first when an absence or baseline group they hold went on in
        Python (a declined step, a snapshot only Python holds): they would feed stale state."""
        if self._feeds is not None and not all(
            isinstance(rt, NativeAbsenceRuntime | NativeBaselineRuntime)
            for rt in self._feeds_groups
        ):
            self._rebuild_native()
        return self._feeds

    def _native_feeds(self) -> Any:
        """``DetectionFeeds`` over the detections whose every window is native and fed by no
        chain that could reorder (see :meth:`_native_batches`), and the absence and baseline
        detections whose groups are native (and feed no correlation, so a late event's
        count needs no Python); None if there is none. A window whose fire feeds a window
        fed there too (a sequence's inner step) hands its event over after that detection,
        so the engine feeds the chain first, as :meth:`observe` does."""
        native, dp = self._native, dataplane.native
        self._feeds_groups = []
        if native is None or dp is None:
            return None
        dets = native.detections
        cands: dict[int, list[CorrelationRuntime]] = {}
        plans: list[tuple[str, Any, list[bool], list[Any]] | None] = [None] * len(dets)
        for i, d in enumerate(dets):
            rid = d.meta.id
            feeders = self._feeders.get(rid, [])
            if d.absence is not None or d.baseline is not None:
                rt_g = self.absence.get(rid) if d.absence is not None else self.baseline.get(rid)
                if d.parents or not isinstance(rt_g, NativeAbsenceRuntime | NativeBaselineRuntime):
                    continue
                plans[i] = (rid, rt_g.impl, [], [])
                self._feeds_groups.append(rt_g)
                continue
            if d.generate or not feeders:
                continue
            if not all(isinstance(rt, NativeCorrelationRuntime) for rt in feeders):
                continue
            if _above(feeders) & {rt.rule.meta.id for rt in feeders}:
                continue
            cands[i] = feeders
        fed = {rt.rule.meta.id for feeders in cands.values() for rt in feeders}
        for i, feeders in cands.items():
            impls = [rt.impl for rt in feeders]  # type: ignore[attr-defined]
            ends = [bool(_above([rt]) & fed) for rt in feeders]
            plans[i] = (dets[i].meta.id, impls, ends, [self._chain(rt) for rt in feeders])
        if not any(plans):
            return None
        lim = self.limits
        try:
            return dp.DetectionFeeds(
                native.impl,
                plans,
                lim.allowed_lateness,
                SAMPLE_CHARS,
                (lim.evidence_events, lim.evidence_samples),
            )
        except (TypeError, ValueError):
            return None

    def _chain(self, rt: CorrelationRuntime) -> tuple[Any, str, list[str]] | None:
        """What ``DetectionFeeds`` needs to feed this window's fires to the one window above
        it itself, as :meth:`_fired` and :meth:`_feed` would (a sequence's inner step): that
        window, this rule's id and group-by; None unless there is exactly one, native, that
        feeds nothing itself (its fire is then handled here, in order, with nothing above it
        to feed)."""
        parents = rt.rule.parents
        if len(parents) != 1 or parents[0].parents:
            return None
        above = self.correlations.get(parents[0].meta.id)
        if not isinstance(above, NativeCorrelationRuntime):
            return None
        return above.impl, rt.rule.meta.id, list(rt.rule.group_by)

    def _baseline(
        self,
        d: DetectionRule,
        ev: Event,
        ts: float,
        spike: tuple[GroupKey, dict[str, Any]],
        alerts: list[Alert],
    ) -> None:
        assert d.baseline is not None
        key, info = spike
        ids = [ev.id] if ev.id is not None else []
        group = dict(zip(d.baseline.by, key, strict=True))
        a = Alert(
            d.meta,
            "baseline",
            group,
            ts,
            ts,
            info["count"],
            ids,
            [_sample(_event_raw(ev))],
            detail=info,
        )
        self._emit(d.meta, d.suppress, a, alerts)

    def _feed(
        self,
        c: CorrelationRule,
        rule_id: str,
        entry: Entry,
        fields: dict[str, Any],
        alerts: list[Alert],
        depth: int,
    ) -> None:
        if depth > MAX_DEPTH:
            return
        rt = self.correlations.get(c.meta.id)
        if rt is None:
            return
        self._add_each((rt,), rule_id, entry, fields, alerts, depth)

    def _fired(
        self,
        rt: CorrelationRuntime,
        fired: Fired,
        entry: Entry,
        alerts: list[Alert],
        depth: int,
        chained: tuple[Any] | None = None,
    ) -> None:
        """A window fired: its alert (unless it is an inner step), then the windows above it
        fed (``chained``: ``DetectionFeeds`` fed the one above already, with what
        :meth:`_feed` would have, and this is what that step returned or raised)."""
        c = rt.rule
        if chained is not None and chained[0] is None and not rt.emits:
            # an inner step whose fire the window above took in the call without firing
            # (most inner fires of a sequence): no alert, no entry to build, only its hit
            self.correlations[c.parents[0].meta.id].stats.hits += 1
            return
        key, state, value = fired
        lim = self.limits
        # the native windows gather their entries' evidence themselves
        ids, raws, first, last = state if isinstance(state, tuple) else evidence(state.entries())
        if first is None:
            first = last = entry[0]
        ids = ids[-lim.evidence_events :]
        raws = raws[-lim.evidence_samples :]
        group = dict(zip(c.group_by, key, strict=True))
        if rt.emits:  # an inner step of a sequence raises nothing itself: no alert to build
            a = Alert(
                c.meta,
                c.type,
                group,
                first,
                last,
                int(value) if c.type == "event_count" else 1,
                ids,
                [_sample(r) for r in raws],
                detail={"value": value, "condition": c.condition_detail(), "timespan": c.timespan},
            )
            if c.expr is not None:
                a.detail.update(state.explain(c))  # type: ignore[union-attr]
            self._emit(c.meta, c.suppress, a, alerts)
        if c.parents:
            inner: Entry = (last, tuple(ids), tuple(raws))
            if chained is not None:
                self._fed(c.parents[0], chained[0], c.meta.id, inner, group, alerts, depth + 1)
                return
            for p in c.parents:
                self._feed(p, c.meta.id, inner, group, alerts, depth + 1)

    def _fed(
        self,
        c: CorrelationRule,
        got: Any,
        rule_id: str,
        entry: Entry,
        fields: dict[str, Any],
        alerts: list[Alert],
        depth: int,
    ) -> None:
        """:meth:`_feed` of ``c`` after ``DetectionFeeds`` took its step: ``got`` is what its
        window returned or raised."""
        rt = self.correlations[c.meta.id]
        rt.stats.hits += 1
        if isinstance(got, _WindowsDeclined):
            got = self._declined(rt, rule_id, entry, fields)
        elif isinstance(got, BaseException):
            raise got
        if got is not None:
            self._fired(rt, got, entry, alerts, depth)

    def _emit(self, meta: RuleMeta, sup: Suppress | None, a: Alert, out: list[Alert]) -> None:
        if meta.id in self.disabled:
            return
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

    def next_deadline(self) -> float | None:
        """Wall-clock time at which :meth:`on_timer` has something to do (None: nothing)."""
        return self._absence_heap[0][0] if self._absence_heap else None

    def shift_clock(self, step: float) -> None:
        """The wall clock stepped by ``step`` seconds (NTP, an operator): silence is elapsed
        time, so every absence timer moves with the clock. Without it a step forward of a day
        reads as a day of silence from every device (and a step back hides real silence)."""
        for rt in self.absence.values():
            rt.shift(step)
        self._absence_heap = [(w + step, n, rid, k) for w, n, rid, k in self._absence_heap]
        if self._last_sweep != -math.inf:
            self._last_sweep += step

    def on_timer(self, now: float) -> list[Alert]:
        alerts: list[Alert] = []
        heap = self._absence_heap
        while heap and heap[0][0] <= now:
            _when, _n, rid, key = heapq.heappop(heap)
            rt = self.absence.get(rid)
            got = rt.due(key) if rt is not None else None
            if rt is None or got is None:
                continue
            seen_now, seen_ts = got
            due = seen_now + rt.timespan
            if due > now:
                heapq.heappush(heap, (due, next(self._pushes), rid, key))
                continue
            rt.mark_alerted(key)
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
        n = sum(rt.sweep(self.watermark) for rt in self.correlations.values())
        self._rebuild_native()  # a window the native side declined is Python now
        return n

    # ------------------------------------------------------------------------- state

    def tracked_groups(self) -> int:
        return (
            sum(rt.group_count() for rt in self.correlations.values())
            + sum(len(b) for b in self.baseline.values())
            + sum(len(a) for a in self.absence.values())
        )

    def evicted(self) -> int:
        return (
            sum(rt.evicted for rt in self.correlations.values())
            + sum(b.evicted for b in self.baseline.values())
            + sum(a.evicted for a in self.absence.values())
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

    def carry_stats(self, old: Engine) -> None:
        """Keep the hit, alert and last-fired counts of rules that survive a reload (the
        rules API reports them; a SIGHUP must not zero them). Also the late-event count."""
        for rid, st in old.stats.items():
            mine = self.stats.get(rid)
            if mine is not None:
                mine.hits, mine.alerts = st.hits, st.alerts
                mine.suppressed, mine.last_fired = st.suppressed, st.last_fired
        self.late_events = old.late_events

    def restore(self, snap: dict[str, Any], now: float | None = None) -> None:
        """Load a snapshot; state of rules that no longer exist is dropped.

        With ``now`` (a restart), silent-source timers restart from ``now``: the appliance
        being down is not the devices being silent.
        """
        if snap.get("version") != 1:
            return
        if snap.get("newest") is not None:
            self.newest = float(snap["newest"])
            self.watermark = self.newest - self.limits.allowed_lateness
        for rid, data in snap.get("correlations", {}).items():
            if rid in self.correlations:
                self.correlations[rid].load(data)
        self._rebuild_native()  # a window restored to Python leaves its batch
        for rid, data in snap.get("absence", {}).items():
            if rid in self.absence:
                rt = self.absence[rid]
                rt.load(data)
                if now is not None:
                    rt.restart(now)
                for key, seen_now, _ts, alerted in rt.items():
                    if not alerted:
                        heapq.heappush(
                            self._absence_heap,
                            (seen_now + rt.timespan, next(self._pushes), rid, key),
                        )
        for rid, data in snap.get("baseline", {}).items():
            if rid in self.baseline:
                self.baseline[rid].load(data)
        for rid, data in snap.get("cooldowns", {}).items():
            if rid in self.stats:
                self.cooldowns[rid] = OrderedDict((tuple(k), t) for k, t in data)
