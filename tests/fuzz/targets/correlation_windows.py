"""Correlation windows, the native state machine against the Python one, step for step.

Input: five header bytes (the first's two low bits: event_count, value_count or, 2 and 3,
temporal_ordered over three rules, the step's value byte then naming the rule; the window's
``keep`` 1-8; ``max_groups`` 1-6; the comparison; its threshold 0-8), then one step per three
bytes: the group key (0xFF: the field missing; else one of a few values of mixed types that
Python's dicts partly equate: ``True``, ``1``, ``1.0``), the time step in half seconds (a
signed byte: late and out-of-order times), the value (0xFF: none). The Rust target
``rust-windows`` reads the same layout with coverage from the Rust code.

Any difference in what fired (key, entries, count), in the counters or in the snapshot,
or a panic the native side caught (counted by ``panics()``), is a failure. The same steps
also drive an absence and a baseline rule (``max_groups`` and the threshold byte as their
bounds) on both backends: the same keys to schedule, spikes, groups and snapshots.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

from appliance import dataplane
from appliance.correlate.engine import (
    AbsenceRuntime,
    BaselineRuntime,
    CorrelationRuntime,
    Limits,
    NativeAbsenceRuntime,
    NativeBaselineRuntime,
    NativeCorrelationRuntime,
    evidence,
)
from appliance.correlate.rules import Absence, Baseline, CorrelationRule, DetectionRule, RuleMeta

MAX_LEN = 4096
__all__ = ["AVAILABLE", "MAX_LEN", "one_input", "seeds"]
AVAILABLE = dataplane.native is not None
OPS = ("gte", "gt", "lte", "lt", "eq", "neq")
KEYS: tuple[Any, ...] = ("a", "b", 1, True, 1.0, None, 2.5, "1")
VALUES: tuple[Any, ...] = ("x", "y", 0, False, -0.0, ["l"], 3)
T0 = 1_790_000_000.0


def rule(data: bytes) -> tuple[CorrelationRule, Limits]:
    kind = ("event_count", "value_count", "temporal_ordered", "temporal_ordered")[data[0] & 3]
    op = OPS[data[3] % len(OPS)]
    r = CorrelationRule(
        RuleMeta("fuzz", "fuzz", "low", [], "fuzz"),
        kind,
        list(RULES) if kind == "temporal_ordered" else ["d"],
        ("k",),
        10.0,
        op,
        float(data[4] % 9),
        "v" if kind == "value_count" else None,
        {},
    )
    return r, Limits(max_groups=data[2] % 6 + 1, max_window_events=data[1] % 8 + 1)


RULES = ("d", "e", "f")


def steps(data: bytes) -> Iterator[tuple[float, int, dict[str, Any]]]:
    t = T0
    for i in range(5, len(data) - 2, 3):
        k, dt, v = data[i], data[i + 1], data[i + 2]
        t += (dt - 256 if dt > 127 else dt) / 2
        fields: dict[str, Any] = {}
        if k != 0xFF:
            fields["k"] = KEYS[k % len(KEYS)]
        if v != 0xFF:
            fields["v"] = VALUES[v % len(VALUES)]
        yield t, v, fields


def fired_form(got: Any) -> str | None:
    if got is None:
        return None
    key, state, value = got
    return repr((key, state if isinstance(state, tuple) else evidence(state.entries()), value))


def one_input(data: bytes) -> None:
    if dataplane.native is None or len(data) < 5:
        return
    r, limits = rule(data)
    py = CorrelationRuntime(r, limits)
    native = NativeCorrelationRuntime.build(r, limits)
    assert isinstance(native, NativeCorrelationRuntime)
    before = dataplane.native_panics()
    t = T0
    ordered = r.type == "temporal_ordered"
    for n, (t, v, fields) in enumerate(steps(data)):
        entry = (t, (n,), (b"raw %d" % n,))
        rid = RULES[v % 3] if ordered else "d"
        outs = []
        for rt in (py, native):
            try:
                outs.append(fired_form(rt.add(rid, entry, fields)))
            except TypeError:
                outs.append("TypeError")
        assert outs[0] == outs[1], (n, outs)
    assert (py.evicted, py.fired, py.ungrouped) == (native.evicted, native.fired, native.ungrouped)
    assert json.dumps(py.dump()) == json.dumps(native.dump())
    assert py.sweep(t) == native.sweep(t)
    assert json.dumps(py.dump()) == json.dumps(native.dump())
    bookkeeping(data, limits)
    assert dataplane.native_panics() == before


def bookkeeping(data: bytes, limits: Limits) -> None:
    """The absence and baseline bookkeeping over the same steps, Python against native."""
    meta = RuleMeta("fuzz-b", "fuzz-b", "low", [], "fuzz-b")
    d = DetectionRule(
        meta,
        lambda _f: True,
        None,  # type: ignore[arg-type]
        None,
        absence=Absence(("k",), 5.0),
        baseline=Baseline(("k", "v"), 4.0, k=data[4] % 3 / 2, alpha=0.3, warmup=1, min_count=1),
    )
    a_py, a_nat = AbsenceRuntime(d, limits), AbsenceRuntime.build(d, limits)
    b_py, b_nat = BaselineRuntime(d, limits), BaselineRuntime.build(d, limits)
    assert isinstance(a_nat, NativeAbsenceRuntime) and isinstance(b_nat, NativeBaselineRuntime)
    for n, (t, v, fields) in enumerate(steps(data)):
        outs = []
        for a, b in ((a_py, b_py), (a_nat, b_nat)):
            out: list[Any] = []
            for fn, args in ((a.seen, (fields, t + n, t)), (b.observe, (fields, t))):
                try:
                    out.append(fn(*args))
                except TypeError:
                    out.append("TypeError")
            if v % 5 == 0:
                key = (fields.get("k"),)
                try:
                    out.append(a.due(key))
                    if out[-1] is not None:
                        a.mark_alerted(key)
                except TypeError:
                    out.append("TypeError")
            outs.append(repr(out))
        assert outs[0] == outs[1], (n, outs)
    for x, y in ((a_py, a_nat), (b_py, b_nat)):
        assert json.dumps(x.dump()) == json.dumps(y.dump())
        assert (len(x), x.evicted) == (len(y), y.evicted)


def seeds() -> Iterator[bytes]:
    yield bytes([0, 3, 2, 0, 3]) + bytes([0, 2, 0, 1, 2, 1, 0, 2, 0, 0, 250, 0, 0x10, 2, 0])
    yield bytes([1, 4, 3, 0, 2]) + bytes([0, 2, 0, 0, 2, 1, 0, 2, 4, 3, 2, 6, 0xFF, 2, 1])
    yield bytes([0, 7, 1, 4, 2]) + bytes([2, 1, 0, 3, 0, 0, 4, 0, 0, 2, 200, 0, 3, 2, 0])
    yield bytes([1, 1, 5, 1, 1]) + bytes([5, 1, 5, 0xFF, 1, 1, 7, 30, 2, 3, 0, 3, 4, 0, 3])
    yield bytes([2, 1, 3, 0, 0]) + bytes([0, 2, 0, 0, 2, 1, 0, 2, 2, 1, 2, 0, 1, 2, 1, 1, 2, 2])
