"""The native absence and baseline bookkeeping (``AbsenceGroups``, ``BaselineGroups``) against
the Python reference, through one engine of each backend: alert for alert (every field),
snapshot for snapshot (byte for byte) and counter for counter, over generated streams (late
and out-of-order times, infinite times, missing, null, mixed-type and unhashable group
values, eviction pressure), silence timers, clock steps, restarts, snapshots crossing
backends, tampered snapshots and injected panics."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import pytest

from appliance import dataplane
from appliance.correlate import Engine, Limits, load_rules
from appliance.correlate.engine import (
    AbsenceRuntime,
    BaselineRuntime,
    NativeAbsenceRuntime,
    NativeBaselineRuntime,
)
from appliance.correlate.rules import RuleSet
from appliance.event import Event
from tests.test_correlation_windows_equivalence import T0, Pair, Stream, alert_form

pytestmark = pytest.mark.skipif(
    dataplane.native is None,
    reason="native data plane not loaded (not built, or APPLIANCE_NATIVE=0)",
)

RULE = """\
title: {name}
name: {name}
status: test
logsource: {{product: appliance}}
detection:
  sel: {{event.action: {actions}}}
  condition: sel
level: medium
appliance:
{ext}
"""


def bookkeeping_rules(tmp: Path) -> RuleSet:
    files = {
        "quiet_ip": ("[fail, ok, probe]", "  absence: {by: [source.ip], for: 30s}"),
        "quiet_pair": ("[fail, ok]", "  absence: {by: [source.ip, user.name], for: 2m}"),
        "quiet_all": ("[probe]", "  absence: {by: [], for: 45s}"),  # one group: ()
        "rate_ip": (
            "[fail, ok, probe]",
            "  baseline: {by: [source.ip], interval: 10s, k: 1, alpha: 0.3, warmup: 2,"
            " min_count: 2}",
        ),
        "rate_user": (
            "[fail]",
            "  baseline: {by: [user.name, destination.port], interval: 7s, k: 0.5,"
            " warmup: 1, min_count: 1}\n  suppress: {by: [user.name], for: 20s}",
        ),
    }
    for name, (actions, ext) in files.items():
        (tmp / f"{name}.yml").write_text(RULE.format(name=name, actions=actions, ext=ext))
    rs = load_rules([tmp], builtin=False)
    assert not rs.failures, rs.failures
    return rs


class BookPair(Pair):
    """The windows' pair, also comparing the errors the bookkeeping raises (int() of an
    infinite time's bucket: ValueError / OverflowError; an unhashable key: TypeError)."""

    def __init__(self, rs: RuleSet, limits: Limits | None = None, batch: bool = False) -> None:
        self.native = Engine(rs, limits)
        self.native.feeds_backoff_slices = 0
        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(dataplane, "native", None)
            self.python = Engine(rs, limits)
        self.alerts = 0
        self.batch = batch

    def feed(self, events: list[Event], now: float) -> None:
        """Each event observed by both; with ``batch`` the native engine takes the slice in
        one ``observe_batch`` (the groups' steps inside the native call): the same alerts
        in the same order and the same events failing with the same errors."""
        if self.batch:
            self.feed_batch(events, now)
            return
        outs = []
        for eng in (self.native, self.python):
            eng.prepare(events)
            out: list[str] = []
            for e in events:
                try:
                    out.extend(alert_form(a) for a in eng.observe(e, now))
                except (TypeError, ValueError, OverflowError) as exc:
                    out.append(f"{exc.__class__.__name__} {exc}")
            eng.prepare([])
            outs.append(out)
        assert outs[0] == outs[1]
        self.alerts += len(outs[0])

    def feed_batch(self, events: list[Event], now: float) -> None:
        ref: list[str] = []
        ref_failed: list[str] = []
        self.python.prepare(events)
        for e in events:
            try:
                ref.extend(alert_form(a) for a in self.python.observe(e, now))
            except (TypeError, ValueError, OverflowError) as exc:
                ref_failed.append(f"{id(e)} {exc.__class__.__name__} {exc}")
        self.python.prepare([])
        failed: list[str] = []

        def on_error(e: Event) -> None:
            exc = sys.exc_info()[1]
            failed.append(f"{id(e)} {exc.__class__.__name__} {exc}")

        got = [alert_form(a) for a in self.native.observe_batch(events, now, on_error)]
        assert got == ref
        assert failed == ref_failed
        self.alerts += len(ref)


def pair_of(rs: RuleSet, limits: Limits | None = None, batch: bool = False) -> BookPair:
    pair = BookPair(rs, limits, batch)
    assert pair.native.absence and pair.native.baseline
    for rt in [*pair.native.absence.values(), *pair.native.baseline.values()]:
        if rt.rule.meta.name != "quiet_all":  # no `by`: the reference's key (), left to it
            assert isinstance(rt, (NativeAbsenceRuntime, NativeBaselineRuntime))
    for rt in [*pair.python.absence.values(), *pair.python.baseline.values()]:
        assert not isinstance(rt, (NativeAbsenceRuntime, NativeBaselineRuntime))
    return pair


def odd_times(s: Stream, events: list[Event]) -> list[Event]:
    """Some events of hostile streams at infinite times (ahead: clamped; behind: no bucket)."""
    for e in events:
        if s.hostile and s.r.random() < 0.02:
            e.timestamp = s.r.choice([math.inf, -math.inf])
    return events


@pytest.mark.parametrize("batch", [False, True], ids=["observe", "observe_batch"])
@pytest.mark.parametrize("seed", range(6))
def test_generated_streams_give_the_same_alerts_timers_and_state(
    tmp_path: Path, seed: int, batch: bool
) -> None:
    rs = bookkeeping_rules(tmp_path)
    limits = Limits(allowed_lateness=20.0, max_groups=3 if seed % 2 else 50)
    pair = pair_of(rs, limits, batch)
    s = Stream(seed, hostile=seed >= 3)
    now = T0
    for n in range(80):
        batch = odd_times(s, [s.event() for _ in range(s.r.randint(1, 40))])
        now = max(now, s.t) + s.r.choice([0.0, 1.0, 30.0, 200.0])
        # an int clock now and then: the snapshots keep the type the reference keeps
        pair.feed(batch, int(now) if n % 5 == 0 else now)
        if n % 3 == 0:
            pair.timer(now + s.r.choice([0.0, 31.0, 121.0]))
        if n % 11 == 0:
            step = s.r.choice([-40.0, 15.0, 3600.0])
            pair.native.shift_clock(step)
            pair.python.shift_clock(step)
        if n % 10 == 0:
            pair.check()
    pair.timer(now + 10_000)
    pair.check()
    assert pair.alerts > 0


@pytest.mark.parametrize("seed", range(3))
def test_snapshots_cross_backends_and_restart(tmp_path: Path, seed: int) -> None:
    rs = bookkeeping_rules(tmp_path)
    limits = Limits(allowed_lateness=20.0, max_groups=6)
    pair = pair_of(rs, limits)
    s = Stream(200 + seed, hostile=False)
    for _ in range(20):
        pair.feed([s.event() for _ in range(20)], s.t)
    pair.timer(s.t + 40)
    snap_native, snap_python = pair.native.snapshot(), pair.python.snapshot()
    assert json.dumps(snap_native) == json.dumps(snap_python)
    crossed = pair_of(rs, limits)
    restart = s.t + 5.5 if seed else None
    crossed.native.restore(json.loads(json.dumps(snap_python)), now=restart)
    crossed.python.restore(json.loads(json.dumps(snap_native)), now=restart)
    crossed.check()
    assert [type(rt) for rt in crossed.native.absence.values()] == [
        type(rt) for rt in pair.native.absence.values()
    ]
    for _ in range(20):
        crossed.feed([s.event() for _ in range(20)], s.t)
        crossed.timer(s.t + 31)
    crossed.check()


def test_tampered_snapshot_rows_go_on_in_python_alike(tmp_path: Path) -> None:
    """Rows the native side cannot hold exactly (a float count, an int mean, an int flag)
    leave that rule to the reference, with what was loaded before them; int times and
    truthy non-bool flags are kept as the reference keeps them."""
    rs = bookkeeping_rules(tmp_path)
    pair = pair_of(rs)
    ids = {d.meta.name: d.meta.id for d in rs.detections}
    t = int(T0)
    snap = {
        "version": 1,
        "newest": T0,
        "absence": {
            ids["quiet_ip"]: [
                [["10.0.0.1"], t, t, False],
                [["10.0.0.2"], T0 + 1, T0, 1],
                [["10.0.0.1"], T0 + 2, T0 + 2, "yes"],  # the same key again: in place
            ],
            ids["quiet_pair"]: [[[1, "root"], T0, T0, False], [[True, "root"], t, t, False]],
        },
        "baseline": {
            ids["rate_ip"]: [
                [["10.0.0.1"], [int(T0 // 10), 3, 2.0, 0.5, 4, False]],
                [["10.0.0.2"], [int(T0 // 10), 3.0, 2.0, 0.5, 4, False]],  # float count
                [["10.0.0.3"], [int(T0 // 10), 1, 2, 0.5, 4, False]],
            ],
            ids["rate_user"]: [[["root", 22], [int(T0 // 7), 1, 1.0, 0.0, 2, 0]]],  # int flag
        },
    }
    for eng in (pair.native, pair.python):
        eng.restore(json.loads(json.dumps(snap)))
    assert isinstance(pair.native.absence[ids["quiet_ip"]], NativeAbsenceRuntime)
    assert type(pair.native.baseline[ids["rate_ip"]]) is BaselineRuntime
    pair.check()
    s = Stream(9, hostile=False)
    for _ in range(5):
        pair.feed([s.event() for _ in range(20)], s.t)
        pair.timer(s.t + 50)
    pair.check()


@pytest.mark.parametrize("batch", [False, True], ids=["observe", "observe_batch"])
@pytest.mark.parametrize("kind", ["absence", "baseline"])
def test_a_caught_panic_moves_the_rule_to_python_without_losing_state(
    tmp_path: Path, kind: str, batch: bool
) -> None:
    """Also inside the native call of a slice: the panicking step goes on in Python, and the
    slices after it no longer feed the native groups (they are stale)."""
    rs = bookkeeping_rules(tmp_path)
    pair = pair_of(rs, Limits(max_groups=20), batch)
    s = Stream(13, hostile=False)
    for _ in range(10):
        pair.feed([s.event() for _ in range(20)], s.t)
    name = "quiet_ip" if kind == "absence" else "rate_ip"
    rid = next(d.meta.id for d in rs.detections if d.meta.name == name)
    table = pair.native.absence if kind == "absence" else pair.native.baseline
    rt = table[rid]
    assert isinstance(rt, (NativeAbsenceRuntime, NativeBaselineRuntime))
    rt.impl.inject_panic()
    before = dataplane.native_panics()
    for _ in range(10):
        pair.feed([s.event() for _ in range(20)], s.t)
        pair.timer(s.t + 31)
    assert dataplane.native_panics() == before + 1
    assert type(table[rid]) in (AbsenceRuntime, BaselineRuntime)
    assert table[rid] not in pair.native._feeds_groups
    pair.check()
