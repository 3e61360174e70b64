"""The native correlation windows (event_count, value_count) against the Python ones, alert
for alert and snapshot for snapshot: the built-in rules and the corpus' Sigma rules over
every corpus event, then generated streams (late and out-of-order times, missing and null
group fields, values of every type Python keys dicts by, lists, eviction and keep pressure,
chained correlations, sweeps) through one engine of each backend, comparing every alert
field, the counters and the snapshots byte for byte; snapshots written by one backend load
in the other."""

from __future__ import annotations

import json
import math
import random
import sys
from pathlib import Path
from typing import Any

import pytest

from appliance import dataplane
from appliance.correlate import Alert, Engine, Limits, load_rules
from appliance.correlate.engine import CorrelationRuntime, NativeCorrelationRuntime
from appliance.correlate.rules import RuleSet
from appliance.event import Event
from tests.conftest import CORPUS
from tests.ruletools import detection
from tests.test_rule_matcher_equivalence import corpus_events

pytestmark = pytest.mark.skipif(
    dataplane.native is None,
    reason="native data plane not loaded (not built, or APPLIANCE_NATIVE=0)",
)

T0 = 1_790_000_000.0


def python_engine(rs: RuleSet, limits: Limits | None) -> Engine:
    """An engine on the Python backend in this process (the reference)."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(dataplane, "native", None)
        eng = Engine(rs, limits)
    assert not any(isinstance(rt, NativeCorrelationRuntime) for rt in eng.correlations.values())
    return eng


def native_engine(rs: RuleSet, limits: Limits | None) -> Engine:
    eng = Engine(rs, limits)
    assert any(isinstance(rt, NativeCorrelationRuntime) for rt in eng.correlations.values())
    return eng


def alert_form(a: Alert) -> str:
    """Every observable field of an alert (repr keeps True apart from 1 and 1.0)."""
    return repr(
        (
            a.rule.id,
            a.kind,
            list(a.group.items()),
            a.first_seen,
            a.last_seen,
            a.count,
            a.event_ids,
            a.samples,
            a.suppressed,
            a.detail,
        )
    )


def state_form(eng: Engine) -> str:
    rts = {
        rid: (rt.evicted, rt.fired, rt.ungrouped, rt.dropped_on_restore, rt.group_count())
        for rid, rt in eng.correlations.items()
    }
    return repr(
        (
            json.dumps(eng.snapshot()),
            rts,
            sorted((k, repr(v)) for k, v in eng.stats.items()),
            eng.late_events,
            eng.tracked_groups(),
            eng.evicted(),
            # the absence deadlines, push numbers included (the order they were armed in)
            sorted(eng._absence_heap),
        )
    )


class Pair:
    """The two engines fed the same slices, as the correlation component feeds one."""

    def __init__(self, rs: RuleSet, limits: Limits | None = None, backoff: int = 0) -> None:
        self.native = native_engine(rs, limits)
        # every slice through the native calls, unless the test wants the back-off too
        self.native.feeds_backoff_slices = backoff
        self.python = python_engine(rs, limits)
        self.alerts = 0
        self.fired: set[str | None] = set()  # the names of the rules that fired

    def feed(self, events: list[Event], now: float, native_events: Any = None) -> None:
        """The reference observes each event; the native engine takes the slice in one
        ``observe_batch`` (as the correlation component calls it): the same alerts in the
        same order, and the same events failing (an unhashable group-by value raises).
        ``native_events``: the same events as the native engine gets them (a native flow
        batch), else ``events`` itself."""
        ref: list[str] = []
        ref_failed: list[str] = []
        self.python.prepare(events)
        for i, e in enumerate(events):
            try:
                for a in self.python.observe(e, now):
                    ref.append(alert_form(a))
                    self.fired.add(a.rule.name)
            except TypeError as exc:
                ref_failed.append(f"{i} {exc.__class__.__name__}")
        self.python.prepare([])
        failed: list[str] = []
        theirs = events if native_events is None else native_events

        def on_error(e: Event) -> None:
            exc = sys.exc_info()[1]
            at = next(i for i in range(len(theirs)) if theirs[i] is e)
            failed.append(f"{at} {exc.__class__.__name__}")

        got = [alert_form(a) for a in self.native.observe_batch(theirs, now, on_error)]
        assert got == ref
        assert failed == ref_failed
        self.alerts += len(ref)

    def timer(self, now: float) -> None:
        a = [alert_form(x) for x in self.native.on_timer(now)]
        b = [alert_form(x) for x in self.python.on_timer(now)]
        assert a == b

    def check(self) -> None:
        assert state_form(self.native) == state_form(self.python)


# ------------------------------------------------------------------------------ the corpus


def corpus_rules() -> RuleSet:
    paths = [CORPUS / "sigma"] if (CORPUS / "sigma").is_dir() else []
    return load_rules(paths, builtin=True)


@pytest.mark.skipif(not (CORPUS / "syslog").is_dir(), reason="shared corpus not present")
@pytest.mark.parametrize("max_groups", [10_000, 3])
def test_corpus_events_raise_the_same_alerts_and_state(max_groups: int) -> None:
    rs = corpus_rules()
    pair = Pair(rs, Limits(max_groups=max_groups))
    events = list(corpus_events())
    assert events
    # the corpus three times over, a minute later each pass (windows fill and fire)
    for rep in range(3):
        batch: list[Event] = []
        for i, e in enumerate(events):
            copy = Event(e.timestamp + 60 * rep, e.created, e.module, e.fields, e.raw, id=i)
            batch.append(copy)
            if len(batch) == 256:
                pair.feed(batch, max(x.timestamp for x in batch))
                batch = []
        if batch:
            pair.feed(batch, max(x.timestamp for x in batch))
    pair.check()
    assert pair.alerts > 0


# ------------------------------------------------------------------------------ generated


def corr(name: str, ctype: str, rules: list[str], group: list[str], span: str, cond: str) -> str:
    return (
        f"title: {name}\nname: {name}\nstatus: test\nlevel: high\n"
        f"correlation:\n  type: {ctype}\n  rules: {json.dumps(rules)}\n"
        f"  group-by: {json.dumps(group)}\n  timespan: {span}\n  condition: {cond}\n"
    )


def generated_rules(tmp: Path) -> RuleSet:
    files = {
        "fail": detection(1, "fail", "fail"),
        "ok": detection(2, "ok", "ok"),
        "probe": detection(3, "probe", "probe"),
        "c_count": corr("c_count", "event_count", ["fail"], ["source.ip"], "1m", "{gte: 3}"),
        "c_range": corr(
            "c_range",
            "event_count",
            ["fail", "ok"],
            ["source.ip", "user.name"],
            "30s",
            "{gt: 1, lte: 4}",
        ),
        "c_eq": corr("c_eq", "event_count", ["ok"], ["source.ip"], "20s", "{eq: 2}"),
        "c_lt": corr("c_lt", "event_count", ["probe"], ["user.name"], "15s", "{lt: 3}"),
        "c_distinct": corr(
            "c_distinct",
            "value_count",
            ["fail"],
            ["source.ip"],
            "2m",
            "{gte: 3, field: user.name}",
        ),
        "c_tuple": corr(
            "c_tuple",
            "value_count",
            ["fail", "probe"],
            ["source.ip"],
            "1m",
            "{gte: 2, field: [user.name, destination.port]}",
        ),
        "c_alias": corr("c_alias", "event_count", ["fail", "probe"], ["ip"], "40s", "{gte: 2}")
        + "  aliases:\n    ip:\n      fail: source.ip\n      probe: destination.ip\n",
        "c_nogroup": corr("c_nogroup", "event_count", ["probe"], [], "10s", "{gte: 4}"),
        # a correlation of a correlation (stays fed through the fired result) and a Python
        # window beside the native ones on the same detection
        "c_chain": corr("c_chain", "event_count", ["c_distinct"], ["source.ip"], "10m", "{gte: 2}")
        + "  generate: true\n",
        # a chain above a window of a batched detection (ok's windows are all native), and
        # one whose parent the same detection also feeds, after it (probe's: not batched, as
        # the parent's order of entries would change; forcing a batch there fails this test)
        "c_chain_eq": corr("c_chain_eq", "event_count", ["c_eq"], ["source.ip"], "5m", "{gte: 2}")
        + "  generate: true\n",
        "c_tuple_chain": corr(
            "c_tuple_chain", "event_count", ["c_tuple", "probe"], ["source.ip"], "1m", "{gte: 3}"
        )
        + "  generate: true\n",
        "c_seq": corr(
            "c_seq", "temporal_ordered", ["probe", "fail", "ok"], ["source.ip"], "1m", "{gte: 3}"
        ),
        "c_seq_again": corr(
            "c_seq_again",
            "temporal_ordered",
            ["fail", "fail", "ok"],
            ["user.name"],
            "30s",
            "{gte: 3}",
        ),
        # a sequence over a correlation's alerts, as the built-in ssh_success_after_failures
        "c_seq_chain": corr(
            "c_seq_chain", "temporal_ordered", ["c_count", "ok"], ["source.ip"], "5m", "{gte: 2}"
        ),
        "c_sum": corr(
            "c_sum", "value_sum", ["fail"], ["source.ip"], "1m", "{gte: 10, field: network.bytes}"
        ),
        "c_suppressed": corr("c_suppressed", "event_count", ["ok"], ["user.name"], "1m", "{gte: 2}")
        + "appliance:\n  suppress: {by: [user.name], for: 30s}\n",
    }
    for name, text in files.items():
        (tmp / f"{name}.yml").write_text(text)
    rs = load_rules([tmp], builtin=False)
    assert not rs.failures, rs.failures
    assert len(rs.correlations) == len(files) - 3
    return rs


GROUP_VALUES: list[Any] = [
    "10.0.0.1", "10.0.0.2", "10.0.0.3", 1, True, 1.0, 0, False, -0.0, 2.5, 10**20,
    float(10**20), "1", None, "ünï", "a\udcff",
    # keys past the native side's inline bytes, one with a length of two LEB128 bytes
    "2001:db8:ffff:ffff:ffff:ffff:ffff:fffe", "h" * 47, "n" * 130,
]  # fmt: skip
VALUES: list[Any] = [
    "root", "admin", "k", 1, True, 1.0, "1", None, 3.25, -1, 2**70, "u" * 46, "v" * 200,
]  # fmt: skip
# value_count keys these by their str(); a group-by on them raises TypeError (both backends)
UNHASHABLE: list[Any] = [["x", "y"], {"a": 1}]


class Stream:
    def __init__(self, seed: int, hostile: bool) -> None:
        self.r = random.Random(seed)
        self.t = T0
        self.id = 0
        self.hostile = hostile

    def pick(self, values: list[Any], missing: float = 0.1) -> Any:
        r = self.r
        if r.random() < missing:
            return _MISSING
        v = r.choice(values)
        if self.hostile and r.random() < 0.03:
            return float("nan")
        if self.hostile and r.random() < 0.02:
            return ["l", "ist"]  # unhashable: the reference raises TypeError
        return v

    def event(self) -> Event:
        r = self.r
        step = r.choice([0.0, 0.5, 1.0, 2.0, 5.0, 17.0, -3.0, -30.0, -200.0])
        self.t += step if step >= 0 or r.random() < 0.3 else -step
        ts = self.t
        if self.hostile and r.random() < 0.01:
            ts = float("nan")
        fields: dict[str, Any] = {"event.action": r.choice(["fail", "fail", "ok", "probe"])}
        for name, vals in (
            ("source.ip", GROUP_VALUES),
            ("destination.ip", GROUP_VALUES),
            ("user.name", VALUES + UNHASHABLE if self.hostile else VALUES),
            ("destination.port", [22, 80, 443, "22", 22.0]),
            ("network.bytes", [1, 5, "7", 2.5, None, "x"]),
        ):
            v = self.pick(vals)
            if v is not _MISSING:
                fields[name] = v
        self.id += 1
        raw = b"" if r.random() < 0.2 else f"line {self.id} {fields['event.action']}".encode()
        if not raw:
            fields["message"] = f"msg {self.id}"
        return Event(ts, ts, "syslog", fields, raw, id=None if r.random() < 0.1 else self.id)


_MISSING = object()


@pytest.mark.parametrize("seed", range(6))
def test_generated_streams_raise_the_same_alerts_and_state(tmp_path: Path, seed: int) -> None:
    rs = generated_rules(tmp_path)
    limits = Limits(
        allowed_lateness=20.0,
        max_groups=4 if seed % 2 else 50,
        max_window_events=7,
        evidence_events=5,
        evidence_samples=3,
    )
    pair = Pair(rs, limits, backoff=seed % 3)  # slices to the reference loop now and then
    ok = next(d.meta.id for d in rs.detections if d.meta.name == "ok")
    probe = next(d.meta.id for d in rs.detections if d.meta.name == "probe")
    assert ok in pair.native._batches and probe not in pair.native._batches
    s = Stream(seed, hostile=seed >= 3)
    for n in range(60):
        batch = [s.event() for _ in range(s.r.randint(1, 40))]
        now = s.t + s.r.choice([0.0, 1.0, 30.0])
        pair.feed(batch, now)
        if n % 7 == 0:
            pair.timer(now + 61 * n)  # a sweep now and then
        if n % 10 == 0:
            pair.check()
    pair.check()
    assert pair.alerts > 0


@pytest.mark.parametrize("seed", range(3))
def test_snapshots_load_across_backends(tmp_path: Path, seed: int) -> None:
    """A snapshot written by either backend restores into the other, and both go on alike."""
    rs = generated_rules(tmp_path)
    limits = Limits(allowed_lateness=20.0, max_groups=6, max_window_events=7)
    pair = Pair(rs, limits)
    s = Stream(100 + seed, hostile=False)
    for _ in range(20):
        pair.feed([s.event() for _ in range(20)], s.t)
    pair.check()
    snap_native, snap_python = pair.native.snapshot(), pair.python.snapshot()
    assert json.dumps(snap_native) == json.dumps(snap_python)
    crossed = Pair(rs, limits)
    crossed.native.restore(json.loads(json.dumps(snap_python)))
    crossed.python.restore(json.loads(json.dumps(snap_native)))
    crossed.native.carry_stats(pair.native)
    crossed.python.carry_stats(pair.python)
    crossed.check()
    assert json.dumps(crossed.native.snapshot()) == json.dumps(snap_python)
    for _ in range(20):
        crossed.feed([s.event() for _ in range(20)], s.t)
    crossed.check()


def test_tampered_snapshot_restores_the_same_on_both(tmp_path: Path) -> None:
    """Windows of another shape are dropped and counted alike; a NaN time keeps that rule
    on the Python windows, which order it as they always did."""
    rs = generated_rules(tmp_path)
    pair = Pair(rs)
    ids = {c.meta.name: c.meta.id for c in rs.correlations}
    snap = {
        "version": 1,
        "newest": T0,
        "correlations": {
            ids["c_count"]: [
                [["10.0.0.1"], [[T0, [1], ["a"]], [T0 + 1, [2], []]]],
                [["10.0.0.2"], {"not": "a list"}],
                [["10.0.0.1"], [[T0 + 2, [3], ["b"]]]],  # the same key again: replaced
            ],
            ids["c_distinct"]: [
                [[True], [["root", [T0, [1], ["x"]]], [["un", "hashable"], [T0, [], []]]]],
                [[1], [["admin", [T0 + 1, [4], []]]]],
            ],
            ids["c_tuple"]: [
                [["10.0.0.9"], [[["root", 22], [T0, [5], []]], ["bare", [T0, [], []]]]],
            ],
            ids["c_range"]: [[["10.0.0.1", "root"], [[math.nan, [1], []], [T0, [2], []]]]],
        },
    }
    for eng in (pair.native, pair.python):
        eng.restore(json.loads(json.dumps(snap)))
    assert isinstance(pair.native.correlations[ids["c_range"]], CorrelationRuntime)
    assert not isinstance(pair.native.correlations[ids["c_range"]], NativeCorrelationRuntime)
    pair.check()
    s = Stream(7, hostile=False)
    for _ in range(10):
        pair.feed([s.event() for _ in range(20)], s.t)
    pair.check()


def test_a_caught_panic_moves_the_rule_to_python_without_losing_state(tmp_path: Path) -> None:
    rs = generated_rules(tmp_path)
    pair = Pair(rs, Limits(max_window_events=7))
    s = Stream(11, hostile=False)
    for _ in range(10):
        pair.feed([s.event() for _ in range(20)], s.t)
    rid = next(c.meta.id for c in rs.correlations if c.meta.name == "c_count")
    rt = pair.native.correlations[rid]
    assert isinstance(rt, NativeCorrelationRuntime)
    rt.impl.inject_panic()
    before = dataplane.native_panics()
    for _ in range(10):
        pair.feed([s.event() for _ in range(20)], s.t)
    assert dataplane.native_panics() == before + 1
    assert not isinstance(pair.native.correlations[rid], NativeCorrelationRuntime)
    pair.check()


def test_a_panic_inside_a_batch_hands_that_window_and_the_rest_to_python(tmp_path: Path) -> None:
    rs = generated_rules(tmp_path)
    pair = Pair(rs, Limits(max_window_events=7))
    ok = next(d.meta.id for d in rs.detections if d.meta.name == "ok")
    assert ok in pair.native._batches
    s = Stream(12, hostile=False)
    for _ in range(10):
        pair.feed([s.event() for _ in range(20)], s.t)
    feeders = pair.native._feeders[ok]
    victim = feeders[1]  # the rest of the batch after it goes one by one for that event
    assert isinstance(victim, NativeCorrelationRuntime)
    victim.impl.inject_panic()
    before = dataplane.native_panics()
    for _ in range(10):
        pair.feed([s.event() for _ in range(20)], s.t)
    assert dataplane.native_panics() == before + 1
    assert not isinstance(victim, NativeCorrelationRuntime)
    assert ok not in pair.native._batches
    pair.check()


# ------------------------------------------------------------------------------ syslog streams

# A copy of the built-in log_rate_spike that spikes sooner and is suppressed per device: the
# baseline alerts' cooldowns in the stream's order.
RATE_SUPPRESSED = """\
title: rate_suppressed
name: rate_suppressed
status: test
logsource: {product: appliance, service: syslog}
detection:
  sel: {observer.ip|exists: true}
  condition: sel
level: low
appliance:
  baseline: {by: [observer.ip], interval: 1m, k: 1, alpha: 0.3, warmup: 3, min_count: 5}
  suppress: {by: [observer.ip], for: 3m}
"""


def syslog_rules(tmp: Path) -> RuleSet:
    (tmp / "rate_suppressed.yml").write_text(RATE_SUPPRESSED)
    rs = load_rules([tmp], builtin=True)
    assert not rs.failures, rs.failures
    return rs


class SyslogStream:
    """What the syslog listeners hand the engine from a few devices: sshd failures (bursts
    from attackers: brute force, sprays), logins (now and then as root: an alert of its
    own), other daemons' lines; devices that go quiet for a while and come back (silent
    sources, re-armed), one that floods (rate spikes), late and reordered lines, times
    ahead of the clock (clamped)."""

    def __init__(self, seed: int) -> None:
        self.r = random.Random(seed)
        self.t = T0
        self.id = 0
        self.devices = [f"192.0.2.{i}" for i in range(1, 6)]

    def event(self) -> Event:
        r = self.r
        minute = int((self.t - T0) // 60)
        flood = 80 <= minute < 85
        self.t += r.choice([0.0, 0.2, 0.5] if flood else [0.0, 0.2, 1.0, 3.0, 8.0])
        # device 5 is quiet from minute 40 to 70; device 4 floods in minutes 80-84
        awake = [d for d in self.devices if not (d.endswith(".5") and 40 <= minute < 70)]
        device = "192.0.2.4" if flood and r.random() < 0.7 else r.choice(awake)
        ts = self.t
        if r.random() < 0.05:
            ts -= r.choice([5.0, 70.0, 400.0])  # reordered, late for the windows
        self.id += 1
        fields: dict[str, Any] = {"observer.ip": device, "host.hostname": f"h{device[-1]}"}
        kind = r.random()
        if kind < 0.45:
            user = r.choice(["root", "admin", "oracle", "alice", "bob"])
            src = r.choice(["198.51.100.7", "198.51.100.8", f"203.0.113.{r.randrange(40)}"])
            fields |= {"process.name": "sshd", "event.action": "ssh_login",
                       "event.outcome": "failure", "user.name": user, "source.ip": src}  # fmt: skip
            text = f"sshd[{self.id}]: Failed password for {user} from {src} port 4000 ssh2"
        elif kind < 0.5:
            user = r.choice(["alice", "bob", "root"])
            src = r.choice(["198.51.100.7", "10.0.0.2"])
            fields |= {"process.name": "sshd", "event.action": "ssh_login",
                       "event.outcome": "success", "user.name": user, "source.ip": src}  # fmt: skip
            text = f"sshd[{self.id}]: Accepted password for {user} from {src} port 4000 ssh2"
        else:
            fields["process.name"] = r.choice(["CRON", "systemd", "kernel"])
            text = f"{fields['process.name']}[{self.id}]: something {self.id}"
        fields["message"] = text
        raw = text.encode() if r.random() < 0.9 else b""
        return Event(ts, ts, "syslog", fields, raw, id=None if r.random() < 0.05 else self.id)


@pytest.mark.parametrize("seed", range(4))
def test_syslog_streams_with_the_built_in_rules_raise_the_same_alerts_and_state(
    tmp_path: Path, seed: int
) -> None:
    """Every line matches silent_source (absence) and log_rate_spike (baseline), observed
    in the native call with the windows: the same alerts (rate spikes among the windows'
    in order, suppressed alike), the same deadlines armed in the same order, the same late
    counts, with the timers run now and then (silent devices alert, then come back)."""
    rs = syslog_rules(tmp_path)
    # 6: the five devices fit, the attackers' groups are evicted
    limits = Limits(max_groups=6 if seed % 2 else 10_000)
    pair = Pair(rs, limits)
    eng = pair.native
    assert eng._feeds is not None
    assert len(eng._feeds_groups) == len(eng.absence) + len(eng.baseline) == 4
    s = SyslogStream(seed)
    before = pair.native.natively_observed
    fed = 0
    timed = T0
    kinds: set[str] = set()
    while s.t < T0 + 100 * 60:
        batch = [s.event() for _ in range(s.r.randint(1, 120))]
        fed += len(batch)
        now: float = s.t + s.r.choice([0.0, 0.5, 2.0])
        if seed == 3 and s.r.random() < 0.05:
            batch[0].timestamp = now + 300  # a device clock ahead: clamped to now + 60
        if s.r.random() < 0.2:
            now = int(now)  # the clock as an int: absence keeps the reference's objects
        pair.feed(batch, now)
        if s.r.random() < 0.5 or now - timed > 240:  # the timers lag the slices at times
            when = timed = now + s.r.choice([0.0, 1.0, 30.0])
            got = pair.native.on_timer(when)
            assert [alert_form(a) for a in got] == [
                alert_form(a) for a in pair.python.on_timer(when)
            ]
            kinds.update(a.kind for a in got)
        pair.check()
    assert "absence" in kinds
    stats = {d.meta.name: pair.native.stats[d.meta.id] for d in rs.detections}
    assert stats["log_rate_spike"].alerts > 0
    assert stats["rate_suppressed"].alerts > 0 and stats["rate_suppressed"].suppressed > 0
    assert pair.native.natively_observed - before > fed // 2  # most lines went through Rust
    assert pair.native.late_events > 0


SSH_ATTEMPTS = """\
title: ssh_attempts
name: ssh_attempts
status: test
correlation:
  type: event_count
  rules: [ssh_auth_failure, ssh_auth_success]
  group-by: [source.ip]
  timespan: 5m
  condition: {gte: 12}
level: medium
"""


def test_a_window_two_detections_feed_is_fed_natively_by_both(tmp_path: Path) -> None:
    """A correlation over two detections is one window in both detections' plans: the
    native call steps it for either (one object, borrowed once a call), with the same alerts
    as the reference and no call falling back."""
    (tmp_path / "ssh_attempts.yml").write_text(SSH_ATTEMPTS)
    rs = load_rules([tmp_path], builtin=True)
    assert not rs.failures, rs.failures
    pair = Pair(rs)
    native = pair.native._native
    assert native is not None and pair.native._feeds is not None
    s = SyslogStream(7)
    before = pair.native.natively_observed
    fed = 0
    while s.t < T0 + 30 * 60:
        batch = [s.event() for _ in range(s.r.randint(1, 120))]
        fed += len(batch)
        pair.feed(batch, s.t)
        pair.check()
    assert "ssh_attempts" in pair.fired
    assert native.failures == 0
    assert pair.native.natively_observed - before > fed // 2
