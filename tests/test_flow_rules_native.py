"""The flow rules observed natively (``Engine.observe_batch`` over ``DetectionFeeds``) against
the reference engine, alert for alert and state for state: flows decoded by the listener's
decoder from generated v9 exports (port scans, outbound transfers, single large flows, late
and reordered times, tight group bounds) and from the corpus's flow exports, through the
built-in ruleset and low-threshold flow correlations, in the component's slices. The native
engine must also have observed most flows itself (no Python frame per flow)."""

from __future__ import annotations

import random
import socket
import struct
from pathlib import Path
from typing import Any

import pytest

from appliance import dataplane
from appliance.correlate import Limits, load_rules
from appliance.correlate.component import YIELD_EVERY
from appliance.correlate.engine import NativeCorrelationRuntime
from appliance.correlate.rules import RuleSet
from appliance.event import Event
from appliance.protocols.netflow.native import NativeNetflowDecoder
from tests.test_correlation_windows_equivalence import Pair, corr
from tests.test_netflow_native_equivalence import _corpus_datagrams, _corpus_streams

pytestmark = pytest.mark.skipif(
    dataplane.native is None,
    reason="native data plane not loaded (not built, or APPLIANCE_NATIVE=0)",
)

T0 = 1_790_000_000.0
# A router's v9 template: addresses, ports, proto, flags, tos, interfaces, counters, times.
FIELDS = [(8, 4), (12, 4), (7, 2), (11, 2), (4, 1), (6, 1), (5, 1), (10, 4), (14, 4), (1, 8),
          (2, 8), (22, 4), (21, 4)]  # fmt: skip
RECORD = struct.Struct(">4s4sHHBBBIIQQII")
Flow = tuple[str, str, int, int, int]  # source, destination, destination port, bytes, age (s)


def v9(flows: list[Flow], unix: int, uptime_ms: int, seq: int, template: bool) -> bytes:
    sets = b""
    if template:
        body = struct.pack(">HH", 256, len(FIELDS)) + b"".join(
            struct.pack(">HH", *f) for f in FIELDS
        )
        sets += struct.pack(">HH", 0, 4 + len(body)) + body
    recs = b"".join(
        RECORD.pack(
            socket.inet_aton(src),
            socket.inet_aton(dst),
            40_000 + port % 1000,
            port,
            6,
            0x18,
            0,
            1,
            2,
            nbytes,
            nbytes // 500 + 1,
            max(0, uptime_ms - age * 1000 - 500),
            max(0, uptime_ms - age * 1000),
        )
        for src, dst, port, nbytes, age in flows
    )
    if recs:
        sets += struct.pack(">HH", 256, 4 + len(recs)) + recs
    count = len(flows) + (1 if template else 0)
    return struct.pack(">HHIIII", 9, count, uptime_ms, unix, seq, 1) + sets


def flow_rules(tmp: Path) -> RuleSet:
    """The built-in ruleset plus flow correlations that fire on a few flows: two native
    windows beside the built-in ones on flow_record, and one on flow_outbound (Python)."""
    extra = {
        "few_ports": corr(
            "few_ports", "value_count", ["flow_record"], ["source.ip"], "30s",
            "{gte: 4, field: destination.port}",
        ),
        "busy_pair": corr(
            "busy_pair", "event_count", ["flow_record"], ["source.ip", "destination.ip"],
            "20s", "{gte: 3}",
        ),
        "out_count": corr(
            "out_count", "event_count", ["flow_outbound"], ["source.ip"], "1m", "{gte: 3}"
        ),
    }  # fmt: skip
    for name, text in extra.items():
        (tmp / f"{name}.yml").write_text(text)
    rs = load_rules([tmp], builtin=True)
    assert not rs.failures, rs.failures
    return rs


class Traffic:
    """Flows of a small network: internal chatter, scanners (ports of one host, hosts on one
    port), outbound transfers (some over 500 MB), exported by one router."""

    def __init__(self, seed: int) -> None:
        self.r = random.Random(seed)
        self.unix = int(T0)
        self.uptime = 3_600_000
        self.seq = 0

    def flow(self) -> Flow:
        r = self.r
        inside = [f"10.0.{r.randrange(3)}.{r.randrange(1, 8)}" for _ in range(2)]
        kind = r.random()
        age = r.choice([0, 0, 0, 1, 3, 20, 90, 400])  # some flows end long before export
        if kind < 0.3:  # a vertical scan: many ports of one host
            return inside[0], "10.0.9.9", r.randrange(1, 80), 60, age
        if kind < 0.5:  # a horizontal scan: one port of many hosts
            return "10.0.5.5", f"10.0.{r.randrange(4)}.{r.randrange(1, 70)}", 445, 60, age
        if kind < 0.7:  # outbound, now and then huge
            nbytes = r.choice([1_500, 90_000, 700_000_000, 2_000_000_000])
            return inside[0], f"198.51.100.{r.randrange(1, 5)}", 443, nbytes, age
        return inside[0], inside[1], r.choice([22, 53, 80, 443]), r.randrange(40, 9000), age

    def datagram(self, first: bool) -> bytes:
        r = self.r
        self.unix += r.choice([0, 0, 1, 2, 5])
        self.uptime += r.choice([0, 500, 1000, 2000])
        self.seq += 1
        flows = [self.flow() for _ in range(r.randint(0, 30))]
        return v9(flows, self.unix, self.uptime, self.seq, template=first or r.random() < 0.05)


def decode(datagrams: list[tuple[bytes, str, int]]) -> list[Event]:
    """The flows as the listener decodes them (one decode_flows call per 64 datagrams), each
    flow's event made."""
    dec = NativeNetflowDecoder()
    events: list[Event] = []
    now = T0
    for i in range(0, len(datagrams), 64):
        todo = [(d, ip, port, now) for d, ip, port in datagrams[i : i + 64]]
        for got in dec.decode_flows(todo, "netflow"):
            if got is not None:
                events += list(got[0])
        now += 1.0
    return events


def feed(pair: Pair, events: list[Event], passes: int = 1) -> None:
    """The flows in the component's slices, ``passes`` times (a minute later each time)."""
    for rep in range(passes):
        for i in range(0, len(events), YIELD_EVERY):
            chunk = [
                Event(e.timestamp + 60 * rep, e.created + 60 * rep, e.module, e.fields)
                for e in events[i : i + YIELD_EVERY]
            ]
            pair.feed(chunk, max(T0, *(e.created for e in chunk)))
            if i % (YIELD_EVERY * 8) == 0:
                pair.timer(chunk[-1].created + 61)
        pair.check()


@pytest.mark.parametrize("seed", range(4))
def test_generated_flows_raise_the_same_alerts_and_state(tmp_path: Path, seed: int) -> None:
    rs = flow_rules(tmp_path)
    limits = Limits(max_groups=5 if seed % 2 else 10_000, allowed_lateness=30.0)
    pair = Pair(rs, limits)
    traffic = Traffic(seed)
    datagrams = [(traffic.datagram(i == 0), "192.0.2.1", 2055) for i in range(400)]
    events = decode(datagrams)
    assert len(events) > 4000
    feed(pair, events, passes=2)
    assert pair.alerts > 0
    feeds = pair.native._feeds
    assert feeds is not None
    # the internal flows and the scans are observed in Rust; outbound ones by the engine
    assert pair.native.natively_observed > len(events)


@pytest.mark.skipif(not _corpus_streams(), reason="shared corpus not present")
def test_corpus_flow_exports_raise_the_same_alerts_and_state(tmp_path: Path) -> None:
    rs = flow_rules(tmp_path)
    events: list[Event] = []
    for name in _corpus_streams():
        events += decode(_corpus_datagrams(name))
    assert events
    for limits in (Limits(), Limits(max_groups=3, allowed_lateness=5.0)):
        pair = Pair(rs, limits)
        feed(pair, events, passes=3)
        assert pair.native._feeds is not None
        assert pair.native.natively_observed > 0


def test_the_built_in_flow_rules_are_observed_natively() -> None:
    """With the built-in ruleset a flow's matches (flow_record: two value_count windows)
    need no Python; flow_outbound's value_sum window does."""
    rs = load_rules([], builtin=True)
    pair = Pair(rs)
    engine = pair.native
    names = {d.meta.name: i for i, d in enumerate(rs.detections)}
    record = engine._feeders[rs.detections[names["flow_record"]].meta.id]
    assert len(record) == 2 and engine._feeds is not None
    events = decode([(v9([("10.0.0.1", "10.0.0.2", 22, 100, 0)] * 3, int(T0), 10_000, 1, True),
                      "192.0.2.1", 2055)])  # fmt: skip
    pair.feed(events, T0)
    assert engine.natively_observed == 3
    pair.check()


class CountingRuns:
    """An engine's feeds, counting the native calls."""

    def __init__(self, feeds: Any) -> None:
        self.feeds = feeds
        self.calls = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self.feeds, name)

    def run(self, *args: Any) -> Any:
        self.calls += 1
        return self.feeds.run(*args)


def test_a_syslog_slice_goes_through_one_native_call() -> None:
    """Every syslog event matches the absence rule silent_source and the baseline rule
    log_rate_spike; their groups are native, so the slice needs no Python per event: one
    call, the deadlines armed in the reference's order."""
    pair = Pair(load_rules([], builtin=True))
    engine = pair.native
    counting = CountingRuns(engine._feeds)
    engine._feeds = counting
    syslog = [
        Event(T0 + i, T0 + i, "syslog", {"observer.ip": f"192.0.2.{i % 3}", "message": f"l {i}"})
        for i in range(20)
    ]
    pair.feed(syslog, T0 + 20)
    assert counting.calls == 1 and engine.natively_observed == 20
    assert [k for _w, _n, _r, k in engine._absence_heap] == [(f"192.0.2.{i}",) for i in range(3)]
    pair.check()


SSH_LOGIN = {"process.name": "sshd", "event.action": "ssh_login", "source.ip": "198.51.100.7",
             "user.name": "alice", "observer.ip": "192.0.2.9", "host.hostname": "srv1"}  # fmt: skip


def ssh_logins(outcomes: list[str], first: int = 0) -> list[Event]:
    return [
        Event(T0 + i, T0 + i, "syslog", {**SSH_LOGIN, "event.outcome": o}, f"l {i}".encode())
        for i, o in enumerate(outcomes, first)
    ]


def test_ssh_failures_feeding_a_sequence_stay_in_the_native_call() -> None:
    """ssh_auth_failure feeds ssh_failures_before_success, whose fire feeds the sequence
    ssh_success_after_failures, which ssh_auth_success feeds natively too: the inner step's
    fires feed the sequence inside the call (as the engine's _fired and _feed would, at
    once), so the whole slice is one call, and the alerts come in the reference's order."""
    pair = Pair(load_rules([], builtin=True))
    engine = pair.native
    counting = CountingRuns(engine._feeds)
    engine._feeds = counting
    events = ssh_logins(["failure"] * 12 + ["success"] + ["failure"] * 7)
    alerts = engine.observe_batch(events, T0 + 20, print)
    ref = pair.python
    assert [a.rule.name for a in alerts] == [
        a.rule.name for e in events for a in ref.observe(e, T0 + 20)
    ]
    assert "ssh_success_after_failures" in {a.rule.name for a in alerts}
    assert counting.calls == 1 and engine.natively_observed == 20
    pair.check()


def test_a_sequence_step_that_raises_in_the_call_goes_on_in_python_as_the_reference_does() -> None:
    """The sequence's window panics on the step an inner fire feeds it inside the call: the
    panic is caught and counted, the engine turns that window to Python with its state and
    feeds it the step there, the event's other windows are fed one by one, the calls go on
    without the chain, and alerts and state stay the reference's."""
    rules = load_rules([], builtin=True)
    pair = Pair(rules)
    engine = pair.native
    seq = next(c.meta.id for c in rules.correlations if c.meta.name == "ssh_success_after_failures")
    rt = engine.correlations[seq]
    assert isinstance(rt, NativeCorrelationRuntime)
    pair.feed(ssh_logins(["failure"] * 4), T0 + 4)  # one short of the inner step's threshold
    rt.impl.inject_panic()
    before = dataplane.native_panics()
    pair.feed(ssh_logins(["failure"] * 3 + ["success"] + ["failure"] * 3, 4), T0 + 11)
    assert dataplane.native_panics() == before + 1
    assert not isinstance(engine.correlations[seq], NativeCorrelationRuntime)
    assert "ssh_success_after_failures" in pair.fired
    pair.check()


def test_slices_that_mostly_stop_the_native_calls_take_the_reference_loop_for_a_while() -> None:
    """A root login raises an alert of its own, which only the engine builds: a slice of
    them stops each call, so the next slices skip the calls."""
    from appliance.correlate.engine import FEEDS_BACKOFF_SLICES

    engine = Pair(load_rules([], builtin=True)).native
    engine.feeds_backoff_slices = FEEDS_BACKOFF_SLICES
    counting = CountingRuns(engine._feeds)
    engine._feeds = counting
    root = {"process.name": "sshd", "event.action": "ssh_login", "event.outcome": "success",
            "user.name": "root", "source.ip": "198.51.100.7", "host.hostname": "srv1"}  # fmt: skip
    logins = [Event(T0 + i, T0 + i, "syslog", {**root, "message": f"l {i}"}) for i in range(20)]
    assert len(engine.observe_batch(logins, T0 + 20, print)) == 20
    assert counting.calls == 20
    for _ in range(FEEDS_BACKOFF_SLICES):
        engine.observe_batch(logins, T0 + 20, print)
    assert counting.calls == 20
    flows = decode([(v9([("10.0.0.1", "10.0.0.2", 22, 100, 0)] * 5, int(T0), 10_000, 1, True),
                     "192.0.2.1", 2055)])  # fmt: skip
    engine.observe_batch(flows, T0 + 20, print)  # tried natively again: one call
    assert counting.calls == 21 and engine._feeds_backoff == 0


def test_a_failed_native_call_leaves_the_rest_of_its_slice_to_the_reference_loop(
    tmp_path: Path,
) -> None:
    """A call that raises (nothing changed by it) costs speed only: the rest of that slice
    is observed one by one, with the same alerts and state."""
    pair = Pair(flow_rules(tmp_path), Limits(max_groups=5))
    engine = pair.native
    feeds = engine._feeds
    calls = {"n": 0}

    class Failing:
        def __getattr__(self, name: str) -> Any:
            return getattr(feeds, name)

        def run(self, *args: Any) -> Any:
            calls["n"] += 1
            if calls["n"] % 3 == 0:
                raise RuntimeError("panic caught in DetectionFeeds.run")
            return feeds.run(*args)

    engine._feeds = Failing()
    assert engine._native is not None
    before = engine._native.failures
    traffic = Traffic(7)
    events = decode([(traffic.datagram(i == 0), "192.0.2.1", 2055) for i in range(120)])
    for i in range(0, len(events), YIELD_EVERY):
        pair.feed(events[i : i + YIELD_EVERY], T0 + i)
    pair.check()
    assert engine._native.failures > before and pair.alerts > 0
