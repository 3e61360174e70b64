"""The correlation windows: per group of a correlation rule, what its condition needs of the
recent past, one class per correlation type (event and value counts, sums and averages,
quantiles, temporal and ordered temporal), with the entries they hold and their snapshot form.

The engine (:mod:`appliance.correlate.engine`) keeps one per group and feeds it entries; a
window says when its rule's condition holds. Moved out of the engine unchanged.

These are the reference: on the native backend the event_count, value_count and
temporal_ordered windows (:class:`CountState`, :class:`DistinctState`,
:class:`DistinctTupleState`, :class:`OrderedState`) run in the data plane
(``dataplane/src/windows.rs``, :class:`~appliance.correlate.engine.NativeCorrelationRuntime`)
and are held to these, alert for alert and snapshot for snapshot; a change here is a change
there. The other types run here on both backends.
"""

from __future__ import annotations

import bisect
import math
from collections import OrderedDict, deque
from typing import Any

from appliance.correlate.rules import CorrelationRule, compare

SAMPLE_CHARS = 1024

# A window entry: (event time, evidence event ids, evidence raw lines). One per matching event
# (or inner correlation alert), shared by every correlation the event feeds. The windows are
# the evidence: nothing else is copied per event.
Entry = tuple[float, tuple[int, ...], tuple[bytes, ...]]


def _sample(raw: bytes) -> str:
    return raw[:SAMPLE_CHARS].decode("utf-8", "backslashreplace")


SNAPSHOT_SAMPLES = 3  # raw lines kept per group in a snapshot (evidence; keeps snapshots small)


def _dump_entry(e: Entry, raw: bool = True) -> list[Any]:
    return [e[0], list(e[1]), [_sample(r) for r in e[2]] if raw else []]


def _dump_entries(es: list[Entry]) -> list[list[Any]]:
    cut = len(es) - SNAPSHOT_SAMPLES
    return [_dump_entry(e, i >= cut) for i, e in enumerate(es)]


def _load_entry(d: list[Any]) -> Entry:
    return (float(d[0]), tuple(d[1]), tuple(s.encode() for s in d[2]))


# --------------------------------------------------------------------------- group states


class GroupState:
    """Per-group window of one correlation type."""

    __slots__ = ()

    def add(self, c: CorrelationRule, entry: Entry, fields: dict[str, Any]) -> float | None:
        raise NotImplementedError

    def entries(self) -> list[Entry]:
        raise NotImplementedError

    def newest(self) -> float:
        es = self.entries()
        return max(e[0] for e in es) if es else -math.inf

    def dump(self) -> Any:
        raise NotImplementedError

    def load(self, d: Any) -> None:
        raise NotImplementedError


class CountState(GroupState):
    """event_count: entries in time order, at most what the threshold needs."""

    __slots__ = ("times",)

    def __init__(self, keep: int) -> None:
        self.times: deque[Entry] = deque(maxlen=keep)

    def add(self, c: CorrelationRule, entry: Entry, fields: dict[str, Any]) -> float | None:
        t = self.times
        if t and entry[0] < t[-1][0]:
            lst = list(t)
            bisect.insort(lst, entry, key=lambda e: e[0])
            t.clear()
            t.extend(lst)
        else:
            t.append(entry)
        cutoff = t[-1][0] - c.timespan
        while t[0][0] < cutoff:
            t.popleft()
        n = len(t)
        return n if c.check(n) else None

    def entries(self) -> list[Entry]:
        return list(self.times)

    def newest(self) -> float:
        return self.times[-1][0] if self.times else -math.inf

    def dump(self) -> Any:
        return _dump_entries(list(self.times))

    def load(self, d: Any) -> None:
        self.times.extend(_load_entry(x) for x in d)


class DistinctState(GroupState):
    """value_count: distinct values of the condition field with their newest entry."""

    __slots__ = ("keep", "values")

    def __init__(self, keep: int) -> None:
        self.values: OrderedDict[Any, Entry] = OrderedDict()
        self.keep = keep

    def key(self, c: CorrelationRule, fields: dict[str, Any]) -> Any:
        """The value this event adds to the count, or ``None`` when it adds none."""
        v = fields.get(c.fieldref)  # type: ignore[arg-type]
        if v is None or isinstance(v, str | int | float | bool):
            return v
        return str(v)

    def add(self, c: CorrelationRule, entry: Entry, fields: dict[str, Any]) -> float | None:
        v = self.key(c, fields)
        if v is None:
            return None
        vals = self.values
        old = vals.get(v)
        if old is None or old[0] <= entry[0]:
            vals[v] = entry
        vals.move_to_end(v)
        cutoff = entry[0] - c.timespan
        while vals:
            oldest = next(iter(vals))
            if vals[oldest][0] >= cutoff:
                break
            del vals[oldest]
        while len(vals) > self.keep:
            vals.popitem(last=False)
        n = len(vals)
        return n if c.check(n) else None

    def entries(self) -> list[Entry]:
        return sorted(self.values.values(), key=lambda e: e[0])

    def dump(self) -> Any:
        keys = list(self.values)
        return [
            [k, e] for k, e in zip(keys, _dump_entries(list(self.values.values())), strict=True)
        ]

    def load(self, d: Any) -> None:
        for k, e in d:
            self.values[k] = _load_entry(e)


class DistinctTupleState(DistinctState):
    """value_count over several fields (Sigma: "linked by an AND"): the distinct
    combinations of their values; an event lacking one of the fields adds none."""

    __slots__ = ()

    def key(self, c: CorrelationRule, fields: dict[str, Any]) -> Any:
        key = []
        for f in (c.fieldref, *c.more_fields):
            v = fields.get(f)  # type: ignore[arg-type]
            if v is None:
                return None
            key.append(v if isinstance(v, str | int | float | bool) else str(v))
        return tuple(key)

    def load(self, d: Any) -> None:
        for k, e in d:
            self.values[tuple(k) if isinstance(k, list) else k] = _load_entry(e)


def _number(raw: Any) -> float | None:
    """A field's value as the sum and quantile windows count it: a finite number (or its
    text), never a boolean."""
    if isinstance(raw, bool):
        return None
    try:
        v = float(raw)
    except (TypeError, ValueError):
        return None
    return v if math.isfinite(v) else None


class SumState(GroupState):
    """value_sum / value_avg: (entry, value) pairs in the window and their running sum."""

    __slots__ = ("items", "maxn", "total")

    def __init__(self, maxn: int) -> None:
        self.items: deque[tuple[Entry, float]] = deque()
        self.total = 0.0
        self.maxn = maxn

    def add(self, c: CorrelationRule, entry: Entry, fields: dict[str, Any]) -> float | None:
        v = _number(fields.get(c.fieldref))  # type: ignore[arg-type]
        if v is None:
            return None
        items = self.items
        items.append((entry, v))
        self.total += v
        cutoff = entry[0] - c.timespan
        while items and (items[0][0][0] < cutoff or len(items) > self.maxn):
            self.total -= items.popleft()[1]
        if not items:
            return None
        value = self.total if c.type == "value_sum" else self.total / len(items)
        return value if c.check(value) else None

    def entries(self) -> list[Entry]:
        return [e for e, _v in self.items]

    def dump(self) -> Any:
        dumped = _dump_entries([e for e, _v in self.items])
        return [[d, v] for d, (_e, v) in zip(dumped, self.items, strict=True)]

    def load(self, d: Any) -> None:
        for e, v in d:
            self.items.append((_load_entry(e), float(v)))
            self.total += float(v)


class QuantileState(SumState):
    """value_median / value_percentile: the window's values also kept sorted, so the
    statistic is an index (``bisect.insort``/removal are memmoves over at most
    ``max_window_events`` floats, not a sort per event)."""

    __slots__ = ("ordered",)

    def __init__(self, maxn: int) -> None:
        super().__init__(maxn)
        self.ordered: list[float] = []

    def add(self, c: CorrelationRule, entry: Entry, fields: dict[str, Any]) -> float | None:
        v = _number(fields.get(c.fieldref))  # type: ignore[arg-type]
        if v is None:
            return None
        items, ordered = self.items, self.ordered
        items.append((entry, v))
        bisect.insort(ordered, v)
        cutoff = entry[0] - c.timespan
        while items and (items[0][0][0] < cutoff or len(items) > self.maxn):
            old = items.popleft()[1]
            del ordered[bisect.bisect_left(ordered, old)]
        if not ordered:
            return None
        value = quantile(ordered, c.percentile)
        return value if c.check(value) else None

    def load(self, d: Any) -> None:
        super().load(d)
        self.ordered = sorted(v for _e, v in self.items)


def quantile(ordered: list[float], percentile: float | None) -> float:
    """The median (``None``: the mean of the two middle values of an even count) or the
    nearest-rank percentile of sorted values (Sigma leaves the method open; nearest rank
    returns a value that occurred, as a threshold on "the 95th percentile" expects)."""
    n = len(ordered)
    if percentile is None:
        mid = n // 2
        return ordered[mid] if n % 2 else (ordered[mid - 1] + ordered[mid]) / 2
    rank = max(1, math.ceil(percentile / 100 * n))
    return ordered[min(rank, n) - 1]


class TemporalState(GroupState):
    """temporal: newest entry of each referenced rule seen in the window."""

    __slots__ = ("seen",)

    def __init__(self) -> None:
        self.seen: dict[str, Entry] = {}

    def add(self, c: CorrelationRule, entry: Entry, fields: dict[str, Any]) -> float | None:
        raise NotImplementedError  # needs the rule id: see add_rule

    def add_rule(self, c: CorrelationRule, rule_id: str, entry: Entry) -> float | None:
        seen = self.seen
        old = seen.get(rule_id)
        if old is None or old[0] <= entry[0]:
            seen[rule_id] = entry
        cutoff = entry[0] - c.timespan
        for k in [k for k, e in seen.items() if e[0] < cutoff]:
            del seen[k]
        n = len(seen)
        need = min(c.threshold, len(set(c.refs)))
        return n if compare(c.op, n, need) else None

    def entries(self) -> list[Entry]:
        return sorted(self.seen.values(), key=lambda e: e[0])

    def dump(self) -> Any:
        return {k: _dump_entry(e) for k, e in self.seen.items()}

    def load(self, d: Any) -> None:
        self.seen.update({k: _load_entry(e) for k, e in d.items()})


class OrderedState(GroupState):
    """temporal_ordered: for each step, the latest-starting chain that reached it.

    O(steps) per event however many partial sequences are open: a chain that started later
    dominates one that started earlier (it has more time left), so one chain per step is
    enough. This is what SEC's Pair rule cannot do (it re-tries every open pair per line).
    """

    __slots__ = ("chains",)

    def __init__(self, steps: int) -> None:
        # chains[k] = (start time, entries of the chain) for the best chain through step k
        self.chains: list[tuple[float, tuple[Entry, ...]] | None] = [None] * steps

    def add(self, c: CorrelationRule, entry: Entry, fields: dict[str, Any]) -> float | None:
        raise NotImplementedError  # needs the rule id: see add_rule

    def add_rule(self, c: CorrelationRule, rule_id: str, entry: Entry) -> float | None:
        chains = self.chains
        ts = entry[0]
        cutoff = ts - c.timespan
        refs = c.refs
        for k in range(len(refs) - 1, -1, -1):
            if refs[k] != rule_id:
                continue
            if k == 0:
                chains[0] = (ts, (entry,))
                continue
            prev = chains[k - 1]
            if prev is None or prev[0] < cutoff:
                continue
            cur = chains[k]
            if cur is None or prev[0] >= cur[0]:
                chains[k] = (prev[0], (*prev[1][-15:], entry))
        last = chains[-1]
        if last is not None and last[0] >= cutoff:
            return float(len(refs))
        return None

    def entries(self) -> list[Entry]:
        last = self.chains[-1]
        return list(last[1]) if last else []

    def newest(self) -> float:
        return max((ch[1][-1][0] for ch in self.chains if ch), default=-math.inf)

    def dump(self) -> Any:
        return [None if ch is None else [ch[0], _dump_entries(list(ch[1]))] for ch in self.chains]

    def load(self, d: Any) -> None:
        if len(d) == len(self.chains):
            self.chains = [
                None if ch is None else (float(ch[0]), tuple(_load_entry(e) for e in ch[1]))
                for ch in d
            ]


class TemporalRangeState(TemporalState):
    """temporal with a range (``gte: 2`` and ``lte: 3``): the count of distinct rules seen,
    checked against every comparison (no clamping to the number of rules)."""

    __slots__ = ()

    def add_rule(self, c: CorrelationRule, rule_id: str, entry: Entry) -> float | None:
        seen = self.seen
        old = seen.get(rule_id)
        if old is None or old[0] <= entry[0]:
            seen[rule_id] = entry
        cutoff = entry[0] - c.timespan
        for k in [k for k, e in seen.items() if e[0] < cutoff]:
            del seen[k]
        n = len(seen)
        return n if c.check(n) else None


def _names(c: CorrelationRule, mask: int) -> list[str]:
    assert c.expr is not None
    return [n for i, n in enumerate(c.expr.names) if mask >> i & 1]


class BoolTemporalState(TemporalState):
    """temporal with a boolean condition (``a and (b or not c)``): the newest entry of each
    referenced rule in the window, and the condition over which rules occurred in it.

    Evaluated when an event of a referenced rule arrives, over the timespan ending at the
    newest of them: ``not c`` means c did not occur in that timespan."""

    __slots__ = ("bits",)

    def __init__(self, bits: dict[str, int]) -> None:
        super().__init__()
        self.bits = bits  # referenced rule id -> its bit(s) in the condition's masks

    def add_rule(self, c: CorrelationRule, rule_id: str, entry: Entry) -> float | None:
        seen = self.seen
        old = seen.get(rule_id)
        if old is None or old[0] <= entry[0]:
            seen[rule_id] = entry
        cutoff = max(e[0] for e in seen.values()) - c.timespan
        for k in [k for k, e in seen.items() if e[0] < cutoff]:
            del seen[k]
        mask = self.mask()
        assert c.expr is not None
        return float(len(seen)) if c.expr.table[mask] else None

    def mask(self) -> int:
        bits, mask = self.bits, 0
        for k in self.seen:
            mask |= bits[k]
        return mask

    def load(self, d: Any) -> None:
        # only the rules still referenced (the rule may have changed since the snapshot)
        self.seen.update({k: _load_entry(e) for k, e in d.items() if k in self.bits})

    def explain(self, c: CorrelationRule) -> dict[str, Any]:
        mask = self.mask()
        return {"occurred": _names(c, mask), "absent": _names(c, ~mask)}


class BoolOrderedState(GroupState):
    """temporal_ordered with a boolean condition: the rules the condition wants must occur in
    the order of the rules list, the rules it negates must not occur in the window at all.

    For every set of rules (a mask, bit i = ``refs[i]``), the latest-starting chain through
    exactly those rules in list order, like :class:`OrderedState` does for the prefixes: an
    event of rule i extends the chains of the sets of earlier rules, so an arrival costs
    O(2^i) and the check O(2^k). A chain holds one entry per rule of its set, so a group
    holds at most k * 2^(k-1) entries, with k at most ``MAX_BOOL_RULES`` (6): 192."""

    __slots__ = ("best", "bits", "chain", "seen")

    def __init__(self, bits: dict[str, int], k: int) -> None:
        self.bits = bits
        self.best: list[tuple[float, tuple[Entry, ...]] | None] = [None] * (1 << k)
        self.seen: dict[str, Entry] = {}  # newest entry per rule id (for the negations)
        self.chain = 0  # the set of rules of the chain that fired

    def add(self, c: CorrelationRule, entry: Entry, fields: dict[str, Any]) -> float | None:
        raise NotImplementedError  # needs the rule id: see add_rule

    def add_rule(self, c: CorrelationRule, rule_id: str, entry: Entry) -> float | None:
        assert c.expr is not None
        ts = entry[0]
        seen = self.seen
        old = seen.get(rule_id)
        if old is None or old[0] <= ts:
            seen[rule_id] = entry
        cutoff = max(e[0] for e in seen.values()) - c.timespan
        for k in [k for k, e in seen.items() if e[0] < cutoff]:
            del seen[k]
        best = self.best
        bit = self.bits[rule_id]
        for j in range(len(c.expr.names) - 1, -1, -1):
            if not bit >> j & 1:
                continue
            top = 1 << j
            for sub in range(1, top):  # the sets of earlier rules this event can follow
                prev = best[sub]
                if prev is None or prev[0] < cutoff or prev[1][-1][0] > ts:
                    continue
                cur = best[sub | top]
                if cur is None or prev[0] >= cur[0]:
                    best[sub | top] = (prev[0], (*prev[1], entry))
            cur = best[top]
            if cur is None or cur[0] <= ts:
                best[top] = (ts, (entry,))
        mask = 0
        for k in seen:
            mask |= self.bits[k]
        shift, table = len(c.expr.names), c.expr.table
        for chain in range(len(best) - 1, 0, -1):
            ch = best[chain]
            if ch is not None and ch[0] >= cutoff and table[chain << shift | mask]:
                self.chain = chain
                return float(chain.bit_count())
        return None

    def entries(self) -> list[Entry]:
        ch = self.best[self.chain] if self.chain else None
        return list(ch[1]) if ch else sorted(self.seen.values(), key=lambda e: e[0])

    def newest(self) -> float:
        return max((e[0] for e in self.seen.values()), default=-math.inf)

    def explain(self, c: CorrelationRule) -> dict[str, Any]:
        mask = 0
        for k in self.seen:
            mask |= self.bits[k]
        return {"occurred": _names(c, self.chain), "absent": _names(c, ~mask)}

    def dump(self) -> Any:
        return {
            "seen": {k: _dump_entry(e) for k, e in self.seen.items()},
            "chains": [
                [m, ch[0], _dump_entries(list(ch[1]))]
                for m, ch in enumerate(self.best)
                if ch is not None
            ],
        }

    def load(self, d: Any) -> None:
        seen = d["seen"]
        self.seen.update({k: _load_entry(e) for k, e in seen.items() if k in self.bits})
        for m, start, es in d["chains"]:
            if 0 < m < len(self.best):
                self.best[m] = (float(start), tuple(_load_entry(e) for e in es))
