"""The baselines stage's native per-event loop (``_dataplane.BaselineBatch``) against the
Python reference (``BaselineStage._count_and_learn``): the same fields stamped on the same
events, the same events marked changed, the same counters, recent lists and snapshot (byte
for byte as JSON, so dict order too) after every batch of generated streams that run through
the learning period's end, the key, value and action bounds, rare actions and rate anomalies
after warm-up; values the loop cannot mirror leave their batch to the reference."""

from __future__ import annotations

import copy
import json
import random
from typing import Any

import pytest

from appliance import dataplane
from appliance.analysis import baselines
from appliance.analysis.baselines import BaselineStage
from appliance.config import AnalysisSection
from appliance.event import Event

pytestmark = pytest.mark.skipif(
    dataplane.native is None,
    reason="native data plane not loaded (not built, or APPLIANCE_NATIVE=0)",
)

HOUR = 3600
T0 = 1_790_000_000.0 // HOUR * HOUR  # an hour boundary


class Text(str):
    """A str subclass: isinstance() takes it for a str, the native loop declines it."""


def pair(cfg: AnalysisSection) -> tuple[BaselineStage, BaselineStage]:
    reference, native = BaselineStage(cfg), BaselineStage(cfg)
    reference.native = None
    assert native.native is not None
    return reference, native


def state(stage: BaselineStage) -> str:
    """Everything the stage keeps, as JSON in its dicts' order."""
    return json.dumps(
        {
            "snapshot": stage.snapshot(),
            "refused": [stage.rates.refused, stage.terms.refused, stage.actions_refused],
            "evicted": stage.rates.evicted,
            "anomalies": list(stage.rates.anomalies),
            "recent": list(stage.terms.recent),
            "total": stage.total,
        },
        default=repr,
    )


def seen(events: list[Event]) -> list[tuple[list[tuple[str, Any]], bool]]:
    """Each event's fields in order (with their types) and whether it was marked changed."""
    return [
        ([(k, (type(v).__name__, v)) for k, v in e.fields.items()], e.line is None) for e in events
    ]


def outcome(stage: BaselineStage, events: list[Event], hour: int, now: float) -> object:
    """What the batch returns, or the type of the error it raises (an unhashable key: the
    pipeline counts a stage error, and the stage keeps what it did before)."""
    try:
        return stage.observe_batch(events, hour, now)
    except TypeError as exc:
        return type(exc)


def run_both(
    reference: BaselineStage,
    native: BaselineStage,
    events: list[Event],
    hour: int,
    now: float,
    whole_state: bool = True,
) -> bool:
    """One batch through both; True when the native loop took it. The returns and the
    events are compared every batch, the whole state (a JSON of every series) when
    ``whole_state``: a difference in it stays until it is compared."""
    a, b = copy.deepcopy(events), copy.deepcopy(events)
    declined = native.native.declined
    got_a, got_b = outcome(reference, a, hour, now), outcome(native, b, hour, now)
    assert got_a == got_b
    assert seen(a) == seen(b)
    if whole_state:
        assert state(reference) == state(native)
    return native.native.declined == declined


POOL = {
    "observer.ip": ["10.0.0.1", "10.0.0.2", "10.0.0.3", "", "192.0.2.9"],
    "host.hostname": ["fw1", "fw2", "srv1", "srv2", ""],
    "host.name": ["h1", "h2"],
    "event.dataset": ["sshd", "asa", "fortigate", ""],
    "user.name": ["alice", "bob", "carol", "dave", "erin", "mallory", "ütf8-ünïcode"],
    "source.geo.country_iso_code": ["DE", "FR", "US", "KP", "BR"],
    "destination.ip": ["10.1.0.1", "10.1.0.2", "10.1.0.3"],
    "labels.site": ["dmz", "hq", "lab"],
}
ACTIONS = ["allow", "deny", "start", "ssh_login"]
RARE_ACTIONS = ["reboot", "config_change", "wipe", "Überraschung"]


def event(rnd: random.Random, ts: float, hostile: bool) -> Event:
    f: dict[str, Any] = {}
    for name, pool in POOL.items():
        if rnd.random() < 0.55:
            f[name] = rnd.choice(pool)
    if rnd.random() < 0.6:
        f["destination.port"] = rnd.choice([22, 80, 443, 8080, 3389, 0]) + rnd.randint(0, 3)
    if rnd.random() < 0.5:
        f["event.category"] = rnd.choice(
            ["authentication", ["authentication"], ["network", "authentication"], ["network"]]
        )
    if rnd.random() < 0.6:
        f["event.outcome"] = rnd.choice(["success", "success", "failure"])
    r = rnd.random()
    if r < 0.85:
        f["event.action"] = rnd.choice(ACTIONS)
    elif r < 0.87:
        f["event.action"] = rnd.choice(RARE_ACTIONS)
    elif r < 0.9:
        f["event.action"] = f"act{rnd.randint(0, 400)}"  # many actions: the bound
    if rnd.random() < 0.1:
        f["event.module"] = "netflow"
    if rnd.random() < 0.05:
        f["observer.ip"] = None
    if rnd.random() < 0.03:
        f["destination.port"] = str(rnd.randint(1, 3))  # a port as text: the same term as 1..3
    if hostile and rnd.random() < 0.08:
        name = rnd.choice([*POOL, "event.action", "event.category", "event.outcome"])
        f[name] = rnd.choice(
            [1.5, True, 7, 2**70, ["x"], ("authentication",), {"a": 1}, Text("alice"), b"x", None]
        )
    module = rnd.choice(["syslog", "netflow", "snmp"])
    listener = rnd.choice(["syslog-udp", "dmz", "", "netflow"])
    return Event(ts, ts, module, f, b"x", line=b"{}", listener=listener)


def stream(
    seed: int, hostile: bool, cfg: AnalysisSection, hours: int, per_hour: int
) -> tuple[int, int]:
    """Batches over ``hours`` hours through both stages; how many the native loop took, of
    how many."""
    rnd = random.Random(seed)
    reference, native = pair(cfg)
    taken = batches = 0
    for h in range(hours):
        now = T0 + h * HOUR
        hour = int(now // HOUR)
        n = per_hour * (8 if h == hours - 2 else 1)  # a spike near the end, after warm-up
        events = [event(rnd, now + i, hostile) for i in range(n)]
        step = rnd.choice([1, 7, 64, 300])
        for i in range(0, len(events), step):
            batch = events[i : i + 300]
            batches += 1
            # The whole state after each day's and the last hours' last batch.
            whole = i + step >= len(events) and (h % 24 == 23 or h >= hours - 3)
            if run_both(reference, native, batch, hour, now + i, whole_state=whole):
                taken += 1
        if h % 24 == 23:
            reference.rates.roll(hour + 1)
            native.rates.roll(hour + 1)
    assert native.rates.anomalies, "the stream raised no rate anomaly"
    assert native.terms.recent and native.terms.refused, "no new term, or no key bound hit"
    assert native.actions_refused and native.rates.refused, "no action or rate key bound hit"
    assert any(len(v) == 4 for t in native.terms.seen.values() for v in t.values())
    return taken, batches


@pytest.fixture
def small_bounds(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(baselines, "RARE_AFTER", 200)
    monkeypatch.setattr(baselines, "MAX_ACTIONS", 40)


def tight() -> AnalysisSection:
    return AnalysisSection(
        new_term_learning=5 * HOUR,
        new_term_max_keys=3,
        new_term_max_values=4,
        baseline_max_keys=12,
        baseline_warmup_weeks=1,
        baseline_min_count=5,
    )


@pytest.mark.parametrize("seed", range(4))
def test_native_loop_gives_the_reference_state_and_stamps(small_bounds: None, seed: int) -> None:
    taken, batches = stream(seed, hostile=False, cfg=tight(), hours=2 * 168 + 6, per_hour=6)
    assert taken == batches  # the native loop took every clean batch


@pytest.mark.parametrize("seed", range(3))
def test_values_the_loop_cannot_mirror_leave_the_batch_to_the_reference(
    small_bounds: None, seed: int
) -> None:
    taken, batches = stream(100 + seed, hostile=True, cfg=tight(), hours=170, per_hour=8)
    assert 0 < taken < batches


def test_default_bounds_with_learning_ending_mid_stream() -> None:
    cfg = AnalysisSection(new_term_learning=3 * HOUR, baseline_warmup_weeks=1)
    rnd = random.Random(7)
    reference, native = pair(cfg)
    for h in range(8):
        now = T0 + h * HOUR
        events = [event(rnd, now, False) for _ in range(400)]
        assert run_both(reference, native, events, int(now // HOUR), now)
    assert native.terms.recent  # new terms after the learning period


def test_rare_actions_are_scored_as_the_reference_scores_them(small_bounds: None) -> None:
    reference, native = pair(AnalysisSection())
    common = [Event(T0, T0, "syslog", {"event.action": "allow"}) for _ in range(250)]
    assert run_both(reference, native, common, int(T0 // HOUR), T0)
    rare = [Event(T0, T0, "syslog", {"event.action": a}) for a in ("wipe", "allow", "wipe")]
    assert run_both(reference, native, rare, int(T0 // HOUR), T0)
    assert native.actions["wipe"] == 2


def test_an_int_clock_and_restored_state_go_on_alike() -> None:
    cfg = tight()
    rnd = random.Random(3)
    reference, native = pair(cfg)
    for h in range(10):
        now = int(T0) + h * HOUR
        events = [event(rnd, now, False) for _ in range(50)]
        assert run_both(reference, native, events, now // HOUR, now)
    snap = json.loads(json.dumps(reference.snapshot()))
    reference, native = pair(cfg)
    reference.restore(snap)
    native.restore(copy.deepcopy(snap))
    for h in range(10, 16):
        now = int(T0) + h * HOUR
        events = [event(rnd, now, False) for _ in range(50)]
        assert run_both(reference, native, events, now // HOUR, now)


def test_a_panic_is_counted_and_the_batch_goes_to_the_reference() -> None:
    reference, native = pair(tight())
    before = dataplane.native_panics()
    assert native.native is not None
    native.native.inject_panic()
    rnd = random.Random(5)
    events = [event(rnd, T0, False) for _ in range(100)]
    assert not run_both(reference, native, events, int(T0 // HOUR), T0)
    assert dataplane.native_panics() == before + 1
    assert run_both(reference, native, events, int(T0 // HOUR), T0)


def test_a_str_subclass_action_declines_the_batch() -> None:
    reference, native = pair(tight())
    events = [Event(T0, T0, "syslog", {"event.action": Text("allow")})]
    assert not run_both(reference, native, events, int(T0 // HOUR), T0)
    assert native.native is not None and native.native.declined == 1
