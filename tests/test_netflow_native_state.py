"""The native stateful NetFlow decoder (template state in the extension, a batch per call)
against the Python reference: the corpus exports and generated hostile streams (templates
withdrawn, changed and missing, oversize templates, truncated sets and datagrams, IPFIX
variable-length and enterprise fields, options templates and sampling, v5, sequence gaps,
tight limits) give the same records (values, types, key order), counters, template counts
and saved state; and the saved state of each loads into the other, so a restart across
backends keeps the templates."""

from __future__ import annotations

import random
import struct
from typing import Any

import pytest

from appliance.protocols.netflow import DecoderLimits, NetflowDecoder, template
from appliance.protocols.netflow.native import NativeNetflowDecoder, available
from tests.netflow_packets import ipfix, pad4, set_, v5, v5_record, v9
from tests.test_netflow_native_equivalence import (
    NOW,
    Datagram,
    _corpus_datagrams,
    _corpus_streams,
    _stream,
    backend,
)

pytestmark = pytest.mark.skipif(
    not available(), reason="native data plane not loaded (not built, or APPLIANCE_NATIVE=0)"
)

Decoder = NativeNetflowDecoder | NetflowDecoder


def _reference(limits: DecoderLimits) -> NetflowDecoder:
    template._EMITTERS.clear()  # the compile budget counts layouts not compiled before
    return NetflowDecoder(limits)


def _feed(dec: Decoder, datagrams: list[Datagram], start: int = 0) -> list[Any]:
    out = []
    for i, (payload, exporter, port) in enumerate(datagrams, start):
        for ts, fields in dec.decode(payload, exporter, NOW + i * 0.01, port):
            out.append(repr((ts, list(fields.items()))))
    return out


def _outcome(dec: Decoder, records: list[Any]) -> Any:
    return records, dict(dec.counts), dec.template_count, dec.dirty, dec.refreshed


def assert_same(datagrams: list[Datagram], limits: DecoderLimits | None = None) -> int:
    """Both backends over ``datagrams``; the number of records (so a test can see work)."""
    limits = limits or DecoderLimits(pending_max_age=1e9)
    with backend(False):
        ref = _reference(limits)
        want = _outcome(ref, _feed(ref, datagrams))
    nat = NativeNetflowDecoder(limits)
    got = _outcome(nat, _feed(nat, datagrams))
    assert got[0] == want[0]
    assert got[1:] == want[1:]
    assert nat.export_state() == ref.export_state()
    assert (nat.dirty, nat.refreshed) == (ref.dirty, ref.refreshed) == (False, False)
    return len(want[0])


# ------------------------------------------------------------------------------- corpus


@pytest.mark.corpus
@pytest.mark.parametrize("name", _corpus_streams())
def test_corpus_exports_decode_identically(name: str) -> None:
    assert assert_same(_corpus_datagrams(name)) > 0


# ---------------------------------------------------------------------------- generated


@pytest.mark.parametrize("seed", range(8))
def test_generated_hostile_streams_decode_identically(seed: int) -> None:
    assert assert_same(_stream(random.Random(seed), 400)) > 0


@pytest.mark.parametrize("seed", range(3))
def test_tight_limits_evict_and_count_identically(seed: int) -> None:
    limits = DecoderLimits(max_templates_per_exporter=2, max_templates=3, max_exporters=2,
                           max_domains_per_exporter=1, max_field_length=8,
                           max_fields_per_template=6, pending_max_sets=2, pending_max_age=0.05,
                           template_lifetime=1.0, compiles_per_second=2.0)  # fmt: skip
    assert_same(_stream(random.Random(100 + seed), 600), limits)


def test_oversize_and_withdrawn_templates_count_identically() -> None:
    big = set_(2, pad4(struct.pack(">HH", 256, 2) + struct.pack(">HHHH", 8, 4, 82, 300)))
    long_ = set_(0, pad4(struct.pack(">HH", 257, 1) + struct.pack(">HH", 1, 0xFFFF)))
    withdraw = set_(2, struct.pack(">HH", 256, 0))
    zero = set_(2, pad4(struct.pack(">HH", 258, 1) + struct.pack(">HH", 210, 0)))
    data = set_(256, b"\x0a\x00\x00\x01" + b"\x03abc")
    stream = [(ipfix([big, withdraw, zero, data]), "192.0.2.1", 4739),
              (v9([long_, set_(257, b"\x00" * 8)]), "192.0.2.1", 2055)]  # fmt: skip
    assert_same(stream, DecoderLimits(max_field_length=128))


def test_v5_and_a_value_past_64_bits_after_sampling_decode_identically() -> None:
    recs = [v5_record("10.0.0.1", "10.0.0.2", 1, 2, 6, 100, 1)] * 3
    fields = [(8, 4), (12, 4), (1, 8), (2, 8), (34, 4)]
    tpl = set_(2, pad4(struct.pack(">HH", 256, len(fields))
                       + b"".join(struct.pack(">HH", *f) for f in fields)))  # fmt: skip
    rec = bytes([10, 0, 0, 1, 10, 0, 0, 2]) + b"\xff" * 16 + struct.pack(">I", 1000)
    stream = [(v5(recs, sampling=0x4000 | 10), "192.0.2.1", 2055),
              (ipfix([tpl, set_(256, rec)]), "192.0.2.9", 4739)]  # fmt: skip
    assert assert_same(stream) == 4


# -------------------------------------------------------------------------- persistence


@pytest.mark.parametrize("native_first", [True, False])
def test_saved_state_loads_across_backends(native_first: bool) -> None:
    """A restart from one backend onto the other decodes the next datagrams without waiting
    for templates, exactly as the same backend would."""
    rng = random.Random(7)
    before, after = _stream(rng, 300), _stream(rng, 200)
    limits = DecoderLimits(pending_max_age=1e9)
    later = NOW + 10.0
    with backend(False):
        ref = _reference(limits)
        _feed(ref, before)
        saved_ref = ref.export_state()
    nat = NativeNetflowDecoder(limits)
    _feed(nat, before)
    saved = nat.export_state()
    assert saved == saved_ref
    assert any(d["templates"] for d in saved["domains"])
    results = []
    for native in (native_first, not native_first):
        if native:
            dec: Decoder = NativeNetflowDecoder(limits)
            loaded = dec.import_state(saved, later)
            results.append((loaded, _outcome(dec, _feed(dec, after, 1000)), dec.export_state()))
        else:
            with backend(False):
                dec = _reference(limits)
                loaded = dec.import_state(saved, later)
                results.append((loaded, _outcome(dec, _feed(dec, after, 1000)),
                                dec.export_state()))  # fmt: skip
    assert results[0][0] > 0
    assert results[0] == results[1]


def test_tampered_saved_state_counts_like_the_reference() -> None:
    state = {"format": 1, "domains": [
        {"exporter": "192.0.2.1", "version": 9, "domain": 1, "default_rate": "x"},
        {"exporter": "192.0.2.2", "version": 9, "domain": 1, "templates": [[256, 0, [[8, 4, 0]]]]},
        {"exporter": "192.0.2.3", "version": 10, "domain": 1, "sampler_rates": [[1, 10]],
         "init_time": 5.0, "templates": [[300, 0, [[8, 4, 0], [1, 4, 0]], NOW]]},
    ]}  # fmt: skip
    with backend(False):
        ref = _reference(DecoderLimits())
        want = (ref.import_state(state, NOW), dict(ref.counts), ref.export_state())
    nat = NativeNetflowDecoder(DecoderLimits())
    assert (nat.import_state(state, NOW), dict(nat.counts), nat.export_state()) == want


# ------------------------------------------------------------------------------- batches


def test_a_batch_decodes_as_the_datagrams_one_by_one() -> None:
    stream = _stream(random.Random(11), 300)
    one = NativeNetflowDecoder()
    want = [one.decode(p, e, NOW + i, port) for i, (p, e, port) in enumerate(stream)]
    many = NativeNetflowDecoder()
    got = many.decode_batch([(p, e, port, NOW + i) for i, (p, e, port) in enumerate(stream)])
    assert repr([g[0] if g is not None else None for g in got]) == repr(want)
    assert many.counts == one.counts


@pytest.mark.parametrize("seed", range(3))
def test_events_made_from_the_kept_flows_are_the_listeners_events(seed: int) -> None:
    """``decode_flows`` (the listener's call: the flows kept native, each event made in Rust
    when read, listener set) against ``Event(ts, now, "netflow", fields)`` over
    ``decode_batch``'s records: the same events (fields in the same key order and value
    types), columns and counters."""
    from appliance.event import Event

    stream = _stream(random.Random(300 + seed), 300)
    stream.append(_big_sampled_counter())
    batch = [(p, e, port, NOW + i) for i, (p, e, port) in enumerate(stream)]
    by_records, by_events = NativeNetflowDecoder(), NativeNetflowDecoder()
    want, got = by_records.decode_batch(batch), by_events.decode_flows(batch, "nf-test")
    n = 0
    for (_p, _e, _port, now), w, g in zip(batch, want, got, strict=True):
        assert (w is None) == (g is None)
        if w is None or g is None:
            continue
        events = [Event(ts, now, "netflow", f, listener="nf-test") for ts, f in w[0]]
        made = list(g[0])
        assert made == events
        assert [repr([(k, type(v), v) for k, v in e.fields.items()]) for e in made] == [
            repr([(k, type(v), v) for k, v in e.fields.items()]) for e in events
        ]
        assert len(g[1]) == len(w[1])
        n += len(events)
    assert n > 0
    assert by_events.counts == by_records.counts


# ----------------------------------------------------------------------- rollup columns


@pytest.mark.parametrize("seed", range(4))
def test_rollup_columns_give_the_rows_the_events_give(seed: int) -> None:
    """The decoder's columns (no dict read) against the same flows' events in the native
    rollup and the reference rollup: the same rows, in the same order (small bounds, so
    folding into "other" happens too; sampled counters past 64 bits included)."""
    from appliance import dataplane
    from appliance.event import Event
    from appliance.flows.rollup import FlowRollup as ReferenceRollup

    stream = _stream(random.Random(200 + seed), 300)
    stream.append(_big_sampled_counter())
    dec = NativeNetflowDecoder()
    batch = [(p, e, port, NOW + 20 * i) for i, (p, e, port) in enumerate(stream)]
    assert dataplane.native is not None
    by_columns = dataplane.native.FlowRollup(4, 16)
    by_events = dataplane.native.FlowRollup(4, 16)
    reference = ReferenceRollup(4, 16)
    n = 0
    for (_p, _e, _port, now), got in zip(batch, dec.decode_batch(batch), strict=True):
        assert got is not None
        records, columns = got
        assert len(columns) == len(records)
        events = [Event(ts, now, "netflow", f) for ts, f in records]
        by_columns.add_columns([columns])
        by_events.add(events)
        reference.add(events)
        n += len(records)
    assert n > 0
    want = by_events.take_all()
    assert want
    assert by_columns.take_all() == want
    assert reference.take_all() == want


def _big_sampled_counter() -> Datagram:
    fields = [(8, 4), (12, 4), (11, 2), (4, 1), (1, 8), (2, 8), (34, 4)]
    tpl = set_(2, pad4(struct.pack(">HH", 256, len(fields))
                       + b"".join(struct.pack(">HH", *f) for f in fields)))  # fmt: skip
    rec = bytes([10, 0, 0, 1, 10, 0, 0, 2, 0, 53, 17]) + b"\xff" * 16 + struct.pack(">I", 1000)
    return (ipfix([tpl, set_(256, rec)]), "192.0.2.9", 4739)


def test_columns_are_taken_once() -> None:
    from appliance import dataplane

    dec = NativeNetflowDecoder()
    got = dec.decode_batch([(*_big_sampled_counter()[:1], "192.0.2.9", 4739, NOW)])[0]
    assert got is not None and len(got[1]) == 1
    assert dataplane.native is not None
    rollup = dataplane.native.FlowRollup()
    rollup.add_columns([got[1], got[1]])
    assert rollup.flows == 1 and len(got[1]) == 0


# ------------------------------------------------------------------ the reader's slices


async def test_the_batch_reader_hands_whole_slices_in_arrival_order() -> None:
    """``deliver_batch``: what the listener gives the native decoder, one call per slice."""
    import asyncio
    import socket

    from appliance.sources.udp import UdpBatchReader
    from tests import conftest

    if not UdpBatchReader.available:
        pytest.skip("recvmmsg not available")
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.setblocking(False)
    slices: list[list[tuple[bytes, tuple[str, int]]]] = []

    def per_datagram(data: bytes, addr: tuple[str, int]) -> None:
        raise AssertionError("a reader with deliver_batch delivers slices only")

    reader = UdpBatchReader(sock, per_datagram, max_bytes=2048, backlog_bytes=1 << 20,
                            batch=16, slice_=8, deliver_batch=slices.append)  # fmt: skip
    reader.start(asyncio.get_running_loop())
    out = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        for i in range(40):
            out.sendto(b"%03d" % i, sock.getsockname())
        await conftest.wait_until(lambda: sum(map(len, slices)) == 40, 10.0)
    finally:
        reader.stop()
        out.close()
        sock.close()
    assert all(1 <= len(s) <= 8 for s in slices)
    got = [data for s in slices for data, _addr in s]
    assert got == [b"%03d" % i for i in range(40)]
    assert {addr[0] for s in slices for _d, addr in s} == {"127.0.0.1"}
    assert reader.held == 0


def test_a_panic_costs_its_datagram_only_and_never_reaches_python() -> None:
    from appliance import dataplane

    stream = [_big_sampled_counter()] * 3
    dec = NativeNetflowDecoder()
    before = dataplane.native_panics()
    dec._native.inject_panic()
    got = dec.decode_batch([(p, e, port, NOW + i) for i, (p, e, port) in enumerate(stream)])
    assert got[0] is None
    assert got[1] is not None and got[2] is not None
    assert [len(g[0]) for g in got[1:] if g is not None] == [1, 1]
    assert dataplane.native_panics() == before + 1
    dec._native.inject_panic()
    with pytest.raises(RuntimeError):
        dec.decode(*stream[0][:2], NOW + 5, 4739)
    assert len(dec.decode(*stream[0][:2], NOW + 6, 4739)) == 1


# ------------------------------------------------------------- the listener, both backends


@pytest.mark.parametrize("seed", range(3))
def test_the_listeners_events_raw_rows_and_rollups_match_the_reference(seed: int) -> None:
    """What the listener hands the flow path, native (``decode_flows`` per slice of 64, the
    rollup reading its columns) against the reference (the Python decoder per datagram,
    ``Event(ts, now, "netflow", fields)``, the Python rollup reading the events): the same
    events (fields in key order), the same stored raw rows and the same rollup rows. Receive
    times 7 s apart, so data held for its template is often released in a later minute."""
    from appliance import dataplane
    from appliance.event import Event
    from appliance.flows.rollup import FlowRollup as ReferenceRollup
    from appliance.flows.store import flow_row

    stream = _stream(random.Random(400 + seed), 400)
    stream.append(_big_sampled_counter())
    batch = [(p, e, port, NOW + 7 * i) for i, (p, e, port) in enumerate(stream)]
    limits = DecoderLimits(pending_max_age=1e9)
    with backend(False):
        ref = _reference(limits)
        want: list[Event] = []
        for p, e, port, now in batch:
            want += [
                Event(ts, now, "netflow", f, listener="nf") for ts, f in ref.decode(p, e, now, port)
            ]
    nat = NativeNetflowDecoder(limits)
    got: list[Event] = []
    columns = []
    for i in range(0, len(batch), 64):
        for out in nat.decode_flows(batch[i : i + 64], "nf"):
            assert out is not None
            got += out[0]
            columns.append(out[1])
    assert len(got) == len(want) > 0
    assert [(e.timestamp, e.created, e.listener, repr(list(e.fields.items()))) for e in got] == [
        (e.timestamp, e.created, e.listener, repr(list(e.fields.items()))) for e in want
    ]
    assert [flow_row(e) for e in got] == [flow_row(e) for e in want]
    assert dataplane.native is not None
    by_columns, reference = dataplane.native.FlowRollup(4, 16), ReferenceRollup(4, 16)
    by_columns.add_columns(columns)
    reference.add(want)
    assert by_columns.take_all() == reference.take_all()
