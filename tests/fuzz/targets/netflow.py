"""NetFlow v5/v9/IPFIX, template compilation included: a sequence of datagrams from two
exporters never raises, yields no more records than it had bytes, keeps every bound of
``DecoderLimits``, produces storable flows, maps records through generated code (or the native
record decoder, when the extension is loaded) exactly as the interpreted Python fallback does,
gives the flows the extension's stateful decoder keeps native (``decode_flows``, made into
events) exactly, and saves state that a fresh decoder loads without complaint.

Input: one flags byte, then datagrams as ``length (2 bytes, big-endian) + bytes``; flags bit i
sends datagram i from the second exporter. Small limits make the eviction paths reachable.
"""

from __future__ import annotations

import contextlib
import math
import struct
from collections.abc import Iterator
from typing import Any

import orjson

from appliance import dataplane
from appliance.event import Event
from appliance.flows.store import flow_row
from appliance.protocols.netflow import DecoderLimits, NetflowDecoder, Record
from appliance.protocols.netflow.native import NativeNetflowDecoder
from appliance.protocols.netflow.native import available as native_available
from appliance.protocols.netflow.template import Template
from tests.fuzz.harness import committed_seeds, corpus_dir, spread
from tests.netflow_packets import (
    FLOW_FIELDS,
    flow_record,
    ipfix,
    ipfix_flows,
    pad4,
    set_,
    template_record,
    v5,
    v5_record,
    v9,
    v9_flows,
)

MAX_LEN = 16384
NOW = 1_700_000_100.0
EXPORTERS = ("192.0.2.1", "2001:db8::2")
LIMITS = DecoderLimits(
    max_exporters=3,
    max_domains_per_exporter=2,
    max_templates_per_exporter=6,
    max_templates=10,
    max_fields_per_template=64,
    pending_max_sets=4,
    compiles_per_second=1e9,
)


@contextlib.contextmanager
def _python_only() -> Iterator[None]:
    """Templates made inside use the Python emitters even when the extension is loaded."""
    saved = dataplane.native
    dataplane.native = None
    try:
        yield
    finally:
        dataplane.native = saved


class _Interpreted(NetflowDecoder):
    """Maps every record with the generic emitter, never generated code nor the extension
    (the ``compiled`` decoder uses the extension when it is loaded: the two are compared)."""

    def _emitter(self, tpl: Template, now: float) -> Any:
        return tpl.generic()


def stream(datagrams: list[bytes], flags: int = 0) -> bytes:
    return bytes([flags]) + b"".join(struct.pack(">H", len(d)) + d for d in datagrams)


def datagrams(data: bytes) -> Iterator[tuple[str, bytes]]:
    flags = data[0] if data else 0
    pos, i = 1, 0
    while pos + 2 <= len(data):
        (n,) = struct.unpack_from(">H", data, pos)
        pos += 2
        yield EXPORTERS[(flags >> (i % 8)) & 1], data[pos : pos + n]
        pos += n
        i += 1


def _hand_made() -> Iterator[bytes]:
    yield stream([v5([v5_record("10.0.0.1", "10.0.0.2", 1, 2, 6, 100, 1)] * 2, sampling=0x4010)])
    yield stream([v9_flows(3), v9_flows(2, with_template=False, seq=1)])
    yield stream([v9_flows(2, with_template=False), v9_flows(1, seq=1)])  # data before template
    yield stream([ipfix_flows(3), ipfix_flows(1, with_template=False, seq=3)], flags=0b10)
    var = template_record(300, [(8, 4), (82, 0xFFFF), (1, 4), (210, 3)])
    rec = bytes([10, 0, 0, 1]) + b"\x04eth0" + struct.pack(">I", 99) + b"\0\0\0"
    yield stream([ipfix([set_(2, var), set_(300, pad4(rec))])])
    pen = template_record(301, [*FLOW_FIELDS, (100, 4)], pens={7: 2011})
    yield stream([ipfix([set_(2, pen), set_(301, flow_record("10.0.0.1", "10.0.0.2", 1, 2, 6,
                                                              5, 1) + b"abcd")])])  # fmt: skip
    opt_tpl = set_(1, pad4(struct.pack(">HHHHHHHHH", 300, 4, 8, 1, 4, 48, 1, 34, 4)))
    opt_data = set_(300, pad4(struct.pack(">IBI", 0, 7, 100)))
    fields = [*FLOW_FIELDS, (48, 1)]
    rec7 = flow_record("10.0.0.1", "10.0.0.2", 1, 2, 6, 50, 1) + b"\x07"
    yield stream([v9([set_(0, template_record(256, fields)), opt_tpl, opt_data]),
                  v9([set_(256, pad4(rec7))], seq=1)])  # fmt: skip


def seeds() -> Iterator[bytes]:
    yield from _hand_made()
    root = corpus_dir("netflow")
    if root is not None:
        from tests.pcap_reader import udp_packets  # only the corpus needs it

        for pcap in sorted(root.glob("*.pcap")):
            payloads = [p.payload for p in udp_packets(pcap)]
            for i in range(0, len(payloads), 6):
                yield stream(payloads[i : i + 6])
        hexes = {p.stem: p for p in root.glob("*.hex")}
        for stem, path in sorted(hexes.items()):
            packets = [bytes.fromhex(h) for h in path.read_text().split()]
            template = hexes.get(stem + "_template")
            if template is None and stem.endswith("_ether"):
                template = hexes.get(stem.replace("_ether", "_template_ether"))
            before = [bytes.fromhex(h) for h in template.read_text().split()] if template else []
            yield stream(spread(before + packets, 8))
    yield from committed_seeds("netflow")


def _check_records(records: list[Record], now: float) -> None:
    for ts, fields in records:
        assert isinstance(ts, float) and math.isfinite(ts), ts
        assert isinstance(fields, dict) and all(isinstance(k, str) for k in fields), fields
        flow_row(Event(ts, now, "netflow", fields))  # the raw row, as the flow path stores it


def _same_flows(kept: Any, records: list[Record], now: float) -> None:
    """The native stateful decoder's flows, kept native (``decode_flows``), made into
    events: the reference's records, key order and value types included."""
    assert kept is not None, "the native netflow decoder failed on a datagram"
    events = [kept[0][i] for i in range(len(kept[0]))]
    form = [
        (e.timestamp, e.created, [(k, type(v), v) for k, v in e.fields.items()]) for e in events
    ]
    want = [(ts, now, [(k, type(v), v) for k, v in f.items()]) for ts, f in records]
    assert form == want, "decode_flows disagrees with the reference"


def one_input(data: bytes) -> None:
    compiled = NetflowDecoder(LIMITS)
    interpreted = _Interpreted(LIMITS)
    native = NativeNetflowDecoder(LIMITS) if native_available() else None
    fed = flows = 0
    for i, (exporter, datagram) in enumerate(datagrams(data)):
        now = NOW + i * 7.0  # crosses pending_max_age (10 s) every other datagram
        fed += len(datagram)
        panics = dataplane.native_panics()
        records = compiled.decode(datagram, exporter, now)
        assert dataplane.native_panics() == panics, "the native record decoder panicked"
        with _python_only():
            assert interpreted.decode(datagram, exporter, now) == records, "emitters disagree"
        if native is not None:
            (kept,) = native.decode_flows([(datagram, exporter, 0, now)], "fuzz")
            assert dataplane.native_panics() == panics, "the native netflow decoder panicked"
            _same_flows(kept, records, now)
        _check_records(records, now)
        flows += len(records)
        assert compiled.template_count <= LIMITS.max_templates, compiled.template_count
        assert len(compiled.domains) <= LIMITS.max_exporters, len(compiled.domains)
        assert len(compiled._pending) <= LIMITS.pending_max_sets, len(compiled._pending)
    assert flows <= fed, (flows, fed)
    state = orjson.loads(orjson.dumps(compiled.export_state()))
    fresh = NetflowDecoder(LIMITS)
    loaded = fresh.import_state(state, NOW + 100.0)
    assert ("error", "bad_saved_state") not in fresh.counts, fresh.counts
    assert loaded <= compiled.template_count, (loaded, compiled.template_count)
