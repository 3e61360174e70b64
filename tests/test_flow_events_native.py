"""Flows kept native (``FlowEvents``, from ``decode_flows``) against the events the Python
source makes from the decoder's records: the same events when Python reads them, made once
and kept (what a stage adds to one is what the next reads), a sequence that slices and joins
like the list it stands for; and the native stages (the baselines loop, the correlation
engine's candidate groups and ``DetectionFeeds``) reading the flows in place give the
reference's alerts, state and stamps while making no event for a flow nobody in Python
reads."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from appliance import dataplane
from appliance.analysis.baselines import BaselineStage
from appliance.config import AnalysisSection
from appliance.correlate import Engine, Limits, load_rules
from appliance.correlate.component import YIELD_EVERY
from appliance.correlate.rules import RuleSet
from appliance.event import Event
from appliance.flows.path import joined
from appliance.protocols.netflow import template
from appliance.protocols.netflow.native import NativeNetflowDecoder
from tests.test_baselines_native import seen, state
from tests.test_correlation_windows_equivalence import Pair, corr
from tests.test_flow_rules_native import T0, Traffic, flow_rules, v9

pytestmark = pytest.mark.skipif(
    dataplane.native is None,
    reason="native data plane not loaded (not built, or APPLIANCE_NATIVE=0)",
)

EXPORTER = ("192.0.2.1", 2055)


def traffic(seed: int, n: int) -> list[bytes]:
    t = Traffic(seed)
    return [t.datagram(i == 0) for i in range(n)]


def full(n: int) -> list[bytes]:
    """``n`` datagrams of 20 flows each (a template in the first)."""
    return [
        v9([(f"10.0.0.{k % 7 + 1}", f"10.0.1.{k + 1}", 22 + k, 100 * k, 0) for k in range(20)],
           int(T0), 10_000 + i, i, i == 0)
        for i in range(n)
    ]  # fmt: skip


def made(dec: NativeNetflowDecoder, todo: list[tuple[bytes, str, int, float]]) -> list[Any]:
    """Each datagram's flows as the Python source makes their events from the decoder's
    records (``decode_batch``): ``Event(ts, received, "netflow", fields)``, listener set."""
    return [
        None if x is None else [Event(ts, now, "netflow", f, listener="nf") for ts, f in x[0]]
        for (_d, _ip, _port, now), x in zip(todo, dec.decode_batch(todo), strict=True)
    ]


def both(
    datagrams: list[bytes], dec: NativeNetflowDecoder | None = None
) -> tuple[list[list[Event]], list[Any]]:
    """Each datagram's flows as their events are made from the records (:func:`made`) and
    as ``decode_flows`` keeps them (two decoders with the same state), in slices of 64 as
    the listener calls."""
    ref, kept = NativeNetflowDecoder(), dec or NativeNetflowDecoder()
    events: list[list[Event]] = []
    flows: list[Any] = []
    now = T0
    for i in range(0, len(datagrams), 64):
        todo = [(d, *EXPORTER, now) for d in datagrams[i : i + 64]]
        a, b = made(ref, todo), kept.decode_flows(todo, "nf")
        for x, y in zip(a, b, strict=True):
            assert (x is None) == (y is None)
            if x is not None and x:
                events.append(x)
                flows.append(y[0])
        now += 1.0
    return events, flows


def form(e: Event) -> tuple[Any, ...]:
    """An event as what it holds, field order and value types included."""
    fields = [(k, type(v).__name__, v) for k, v in e.fields.items()]
    return (e.timestamp, e.created, e.module, e.raw, e.id, e.listener, fields)


def test_a_flows_event_is_the_one_made_from_its_record() -> None:
    events, flows = both(traffic(1, 40))
    assert sum(map(len, events)) > 300
    for evs, fe in zip(events, flows, strict=True):
        assert fe.made == 0
        assert len(fe) == len(evs)
        assert [form(fe[i]) for i in range(len(fe))] == [form(e) for e in evs]
        assert fe.made == len(fe)


def test_a_flows_event_is_made_once_and_kept() -> None:
    _, flows = both(full(2))
    fe = flows[0]
    first = fe[3]
    first.fields["baseline.rarity"] = 0.5  # what a stage adds
    assert fe[3] is first and fe[3].fields["baseline.rarity"] == 0.5
    assert fe[3:5][0] is first and fe[-len(fe) + 3] is first
    assert fe.made == 1


def test_each_flows_event_has_lists_of_its_own() -> None:
    """The records share their ``event.category`` and ``event.type`` lists; a stage that
    changes one event's list changes no other flow's."""
    events, flows = both(full(1))
    fe = flows[0]
    fe[0].fields["event.category"].append("intrusion_detection")
    fe[1].fields["event.type"].clear()
    assert fe[0].fields["event.category"] is not fe[2].fields["event.category"]
    for i in range(2, len(fe)):
        assert fe[i].fields["event.category"] == ["network"]
        assert fe[i].fields["event.type"] == ["connection"]
    assert form(fe[0]) != form(events[0][0])


def test_slices_negative_indices_and_iteration_are_a_lists() -> None:
    _, flows = both(full(2))
    fe = flows[0]
    assert len(fe) >= 10
    as_list = [fe[i] for i in range(len(fe))]
    for s in [slice(None), slice(2, 7), slice(-4, None), slice(5, 2), slice(1, None, 3),
              slice(None, None, -1), slice(-100, 100)]:  # fmt: skip
        part = fe[s]
        assert [id(e) for e in part] == [id(e) for e in as_list[s]]
        assert len(part) == len(as_list[s])
    assert [id(e) for e in fe] == [id(e) for e in as_list]
    assert fe[-1] is as_list[-1]
    with pytest.raises(IndexError):
        fe[len(fe)]
    with pytest.raises(TypeError):
        fe["0"]


def test_joined_flows_are_the_parts_in_order_and_share_their_events() -> None:
    events, flows = both(full(3))
    first = flows[1][0]
    one = joined(flows)
    assert type(one) is type(flows[0])
    assert len(one) == sum(map(len, flows))
    assert one[len(flows[0])] is first
    assert [form(e) for e in one] == [form(e) for evs in events for e in evs]
    # a list among the parts: the batch is a list of the events (the native ones made now)
    mixed = joined([flows[0], events[1]])
    assert type(mixed) is list and mixed[0] is flows[0][0] and mixed[-1] is events[1][-1]


def renaming(old: str, new: str) -> NativeNetflowDecoder:
    """A native decoder whose templates name ``old``'s field ``new``."""

    def plan(fields: list[tuple[int, int, int]], scope: int) -> Any:
        codes, direct, slots, kind = template.native_plan(fields, scope)
        direct = [(new if n == old else n, i) for n, i in direct]
        return codes, direct, slots, kind

    assert dataplane.native is not None
    d = NativeNetflowDecoder()
    lim = d.limits
    d._native = dataplane.native.NetflowBatchDecoder(
        (lim.max_exporters, lim.max_domains_per_exporter, lim.max_templates_per_exporter,
         lim.max_templates, lim.max_fields_per_template, lim.max_field_length,
         lim.template_lifetime, lim.pending_max_sets, lim.pending_max_age,
         lim.compiles_per_second),
        [], plan, template.TRANSPORT,
    )  # fmt: skip
    return d


def test_flows_whose_key_is_also_an_exporters_are_made_at_once() -> None:
    """A template field named as one of the exporter's keys: the record's dict is built as
    the reference builds it (the exporter's value wins), so its event is made in the call."""
    dec, renamed = (
        renaming("destination.ip", "observer.ip"),
        renaming("destination.ip", "observer.ip"),
    )
    todo = [(d, *EXPORTER, T0) for d in full(3)]
    events = [x for x in made(dec, todo) if x]
    flows = [x[0] for x in renamed.decode_flows(todo, "nf") if x and x[0]]
    assert events and all(fe.made == len(fe) for fe in flows)
    assert [form(e) for fe in flows for e in fe] == [form(e) for evs in events for e in evs]
    assert all(e.fields["observer.ip"] == EXPORTER[0] for fe in flows for e in fe)


@pytest.mark.parametrize("named", ["destination.port", "event.action"])
def test_a_flows_candidate_group_is_its_events(tmp_path: Path, named: str) -> None:
    """The signature memo read over a native batch (flows of a shape share a signature
    unless the shape has one of its scalar fields: here a template field named
    ``event.action``) gives each flow its event's group."""
    engine = Engine(flow_rules(tmp_path))
    assert engine._native is not None
    impl = engine._native.impl
    dec, kept = renaming("destination.port", named), renaming("destination.port", named)
    todo = [(d, *EXPORTER, T0) for d in full(4)]
    flat = [e for x in made(dec, todo) if x for e in x]
    batch = joined([x[0] for x in kept.decode_flows(todo, "nf") if x])
    sigs = [Engine._signature(e) for e in flat]
    memo = {sig: g for g, sig in enumerate(dict.fromkeys(sigs))}
    assert (len(memo) == 1) == (named == "destination.port")  # one signature, or one a port
    want = [memo[sig] for sig in sigs]
    assert impl.memo_groups(batch, memo) == want
    assert impl.memo_groups(flat, memo) == want
    assert batch.made == 0


@pytest.mark.parametrize("seed", range(3))
def test_the_engine_reading_flows_in_place_raises_the_reference_alerts(
    tmp_path: Path, seed: int
) -> None:
    pair = Pair(flow_rules(tmp_path), Limits(max_groups=5 if seed % 2 else 10_000))
    events, flows = both(traffic(seed, 300))
    flat: list[Event] = [e for evs in events for e in evs]
    batch = joined(flows)
    n = len(batch)
    assert n == len(flat) > 3000
    for i in range(0, n, YIELD_EVERY):
        pair.feed(flat[i : i + YIELD_EVERY], T0 + 5, batch[i : i + YIELD_EVERY])
        if i % (YIELD_EVERY * 4) == 0:
            pair.timer(T0 + 70 + i)
    pair.check()
    assert pair.alerts > 0
    # Python read (and so made) only the flows the engine had to observe itself: the
    # outbound ones (a Python window) and those of the fired windows' alerts.
    assert pair.native.natively_observed > n // 2
    assert batch.made < n // 2


def shape_rules(tmp: Path) -> RuleSet:
    """Flow detections a flow's shape decides in part or whole (the exporter's address every
    record shares, a field no record has, a field every record has) feeding native windows."""
    head = "status: test\nlevel: low\nlogsource: {product: appliance, category: flow}\n"
    files = {
        "from_exporter": "detection: {sel: {observer.ip: 192.0.2.1, "
        "destination.port|exists: true}, condition: sel}",
        "other_exporter": "detection: {sel: {observer.ip: 198.51.100.9}, condition: sel}",
        "no_user_big": "detection: {sel: {user.name|exists: false, network.bytes|gt: 1500}, "
        "condition: sel}",
    }
    for name, body in files.items():
        (tmp / f"{name}.yml").write_text(f"title: {name}\nname: {name}\n{head}{body}\n")
    for name in files:
        text = corr(f"c_{name}", "event_count", [name], ["source.ip"], "20s", "{gte: 3}")
        (tmp / f"c_{name}.yml").write_text(text)
    rs = load_rules([tmp], builtin=False)
    assert not rs.failures, rs.failures
    return rs


def test_rules_a_flows_shape_decides_raise_the_reference_alerts(tmp_path: Path) -> None:
    """What a shape answers once for its flows (a match on the exporter's address, a field
    no flow has, one every flow has beside a test of each flow's bytes) is each flow's own
    answer: the alerts and windows are the reference's, and the flows stay unmade."""
    pair = Pair(shape_rules(tmp_path))
    events, flows = both(traffic(4, 200))
    flat: list[Event] = [e for evs in events for e in evs]
    batch = joined(flows)
    n = len(batch)
    for i in range(0, n, YIELD_EVERY):
        pair.feed(flat[i : i + YIELD_EVERY], T0 + 5, batch[i : i + YIELD_EVERY])
    pair.check()
    assert {"c_from_exporter", "c_no_user_big"} <= pair.fired
    assert "c_other_exporter" not in pair.fired
    assert pair.native.natively_observed > n // 2
    assert batch.made < n // 2


def test_the_baselines_loop_reading_flows_in_place_counts_as_the_reference() -> None:
    """Flows carry no field a built-in term kind or the rarity reads (their rates only), so
    the loop makes none of their events."""
    cfg = AnalysisSection(new_term_learning=2.0, new_term_max_keys=5, new_term_max_values=6)
    reference, native = BaselineStage(cfg), BaselineStage(cfg)
    reference.native = None
    assert native.native is not None
    events, flows = both(traffic(9, 60))
    declined = native.native.declined
    for k, (evs, fe) in enumerate(zip(events, flows, strict=True)):
        now = T0 + 600 * k
        hour = int(now // 3600)
        assert reference.observe_batch(evs, hour, now) == native.observe_batch(fe, hour, now)
        assert fe.made == 0
        assert seen(evs) == seen(list(fe))
    assert state(reference) == state(native)
    assert native.native.declined == declined


@pytest.mark.parametrize(
    ("old", "new"),
    [
        ("destination.ip", "labels.site"),  # device_per_site's key: a new term each
        ("source.ip", "event.dataset"),  # the source rate's key
        ("destination.ip", "event.action"),  # the rarity's action
    ],
)
def test_flows_whose_own_values_the_loop_counts_each_count_as_the_reference(
    old: str, new: str
) -> None:
    """A template field named as a field the baselines loop counts by (a term kind's key, a
    rate's key, the rarity's action): each flow's own value counts, so no flow's work is
    taken over from the first flow of its shape; rates, terms, counts and stamps are the
    reference's."""
    cfg = AnalysisSection(new_term_learning=1.0, new_term_max_keys=50)
    reference, native = BaselineStage(cfg), BaselineStage(cfg)
    reference.native = None
    assert native.native is not None
    dec, renamed = renaming(old, new), renaming(old, new)
    declined = native.native.declined
    for k in range(4):
        now = T0 + 60 * k
        todo = [(d, *EXPORTER, now) for d in full(3)]
        evs = [e for x in made(dec, todo) if x for e in x]
        fe = joined([x[0] for x in renamed.decode_flows(todo, "nf") if x and x[0]])
        hour = int(now // 3600)
        assert reference.observe_batch(evs, hour, now) == native.observe_batch(fe, hour, now)
        assert seen(evs) == seen(list(fe))
    assert state(reference) == state(native)
    assert native.native.declined == declined


def test_the_intel_prefilter_reads_flows_in_place() -> None:
    """``intel_select`` picks the flows of a native batch it picks from their events (a
    flow's addresses both known misses and no rare field: passed over), making none."""
    assert dataplane.native is not None
    events, flows = both(full(3))
    flat = [e for evs in events for e in evs]
    batch = joined(flows)
    miss = {"10.0.0.1", "10.0.0.2", "10.0.1.3", "10.0.1.4", "10.0.1.5", None}
    for rare in [(), ("url.domain",), ("netflow.exporter.port",)]:
        args = (miss, "source.ip", "destination.ip", rare)
        want = dataplane.native.intel_select(flat, *args)
        assert dataplane.native.intel_select(batch, *args) == want
        assert 0 < len(want) <= len(flat)
    assert batch.made == 0


def test_a_flow_batch_past_the_context_stage_is_left_unmade_unless_flows_are_enriched() -> None:
    """The asset/vulnerability context stamps no flow unless ``enrich_flows``: a native batch
    then goes through with no event made."""
    from appliance.analysis.context import EnrichStage

    class Component:
        def __init__(self, enrich_flows: bool) -> None:
            self.context = None
            self.config = type("C", (), {"analysis": AnalysisSection(enrich_flows=enrich_flows)})

    _, flows = both(full(1))
    asyncio.run(EnrichStage(Component(False)).process(flows[0], T0))  # type: ignore[arg-type]
    assert flows[0].made == 0


def test_what_a_stage_adds_to_every_flow_is_what_the_native_stages_read() -> None:
    """A stage that changes every flow (as a GeoIP database does) makes their events; the
    native loop after it reads those events' dicts, not the records: here the site a stage
    stamped, which the ``device_per_site`` term kind keys on."""
    cfg = AnalysisSection(new_term_learning=1.0)
    reference, native = BaselineStage(cfg), BaselineStage(cfg)
    reference.native = None
    events, flows = both(traffic(11, 20))
    for k, (evs, fe) in enumerate(zip(events, flows, strict=True)):
        for e in evs:
            e.fields["labels.site"] = f"site{k % 3}"
        for e in fe:
            e.fields["labels.site"] = f"site{k % 3}"
        assert fe.made == len(fe)
        now = T0 + 60 * k
        hour = int(now // 3600)
        assert reference.observe_batch(evs, hour, now) == native.observe_batch(fe, hour, now)
        assert seen(evs) == seen(list(fe))
    assert state(reference) == state(native)
    assert set(native.terms.seen["device_per_site"]) == {"site0", "site1", "site2"}
