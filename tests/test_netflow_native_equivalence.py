"""The native NetFlow record decoder against the Python reference, datagram for datagram: the
corpus exports and a few thousand generated hostile datagrams (template withdrawals and
changes mid-stream, truncated records, variable-length IPFIX fields, enterprise IEs, options
templates, sequence gaps, flipped bytes) give the same records (values, types and key order),
the same counters and the same saved template state on both backends."""

from __future__ import annotations

import contextlib
import random
import socket
import struct
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from appliance import dataplane
from appliance.protocols.netflow import DecoderLimits, NetflowDecoder, template
from tests.conftest import corpus_dir
from tests.netflow_packets import ipfix, pad4, set_, v5, v5_record, v9
from tests.pcap_reader import udp_packets

NOW = 1_700_000_100.0
NATIVE = dataplane.native

pytestmark = pytest.mark.skipif(
    NATIVE is None, reason="native data plane not loaded (not built, or APPLIANCE_NATIVE=0)"
)

Datagram = tuple[bytes, str, int]  # (payload, exporter address, exporter port)


@contextlib.contextmanager
def backend(native: bool) -> Iterator[None]:
    saved = dataplane.native
    dataplane.native = NATIVE if native else None
    try:
        yield
    finally:
        dataplane.native = saved


def run(datagrams: list[Datagram], native: bool, limits: DecoderLimits | None = None) -> Any:
    """Decode everything on one backend: records as (ts, [(key, value)...]), counters, state."""
    template._EMITTERS.clear()  # the compile budget counts layouts not compiled before
    with backend(native):
        dec = NetflowDecoder(limits or DecoderLimits(pending_max_age=1e9))
        records = []
        for i, (payload, exporter, port) in enumerate(datagrams):
            for ts, fields in dec.decode(payload, exporter, NOW + i * 0.01, port):
                records.append((ts, list(fields.items())))
        natively = any(t.native is not None for d in dec.domains.values()
                       for t in d.templates.values())  # fmt: skip
        if any(key[1] == 5 for key in dec.domains):  # v5's fixed record is a template too
            natively = natively or dec._v5_template.native is not None
        return records, dict(dec.counts), dec.export_state(), natively


def assert_same(datagrams: list[Datagram], limits: DecoderLimits | None = None) -> bool:
    native_records, native_counts, native_state, used = run(datagrams, True, limits)
    records, counts, state = run(datagrams, False, limits)[:3]
    assert len(native_records) == len(records)
    for got, want in zip(native_records, records, strict=True):
        assert got == want
        # Same types too (an int is not a float, a str not bytes): repr tells them apart.
        assert repr(got) == repr(want)
    assert native_counts == counts
    assert native_state == state
    return bool(used)


# ------------------------------------------------------------------------------- corpus


def _corpus_streams() -> list[str]:
    try:
        root = corpus_dir("netflow")
    except pytest.skip.Exception:
        return []
    pcaps = sorted({p.name.rsplit("_traffic", 1)[0] for p in root.glob("pmacct_*_traffic-*.pcap")})
    return [*pcaps, "python-netflow"]


def _corpus_datagrams(name: str) -> list[Datagram]:
    root = corpus_dir("netflow")
    out: list[Datagram] = []
    if name == "python-netflow":
        # Every hex export, templates first, as one exporter's stream.
        hexes = sorted(root.glob("python-netflow_*.hex"), key=lambda p: ("template" not in p.name,
                                                                          p.name))  # fmt: skip
        for path in hexes:
            out += [(bytes.fromhex(x), "192.0.2.1", 2055) for x in path.read_text().split()]
        return out
    for pcap in sorted(root.glob(f"{name}_traffic-*.pcap")):
        out += [(dg.payload, dg.src, dg.sport) for dg in udp_packets(pcap)]
    return out


@pytest.mark.corpus
@pytest.mark.parametrize("name", _corpus_streams())
def test_corpus_exports_decode_identically(name: str) -> None:
    datagrams = _corpus_datagrams(name)
    assert datagrams
    assert assert_same(datagrams), "the native decoder was not used"


# ---------------------------------------------------------------------------- generated

# (IE, length, enterprise number) building blocks; 0xFFFF = variable length (IPFIX only).
VAR = 0xFFFF
POOL: list[tuple[int, int, int]] = [
    (8, 4, 0), (12, 4, 0), (27, 16, 0), (28, 16, 0), (7, 2, 0), (11, 2, 0), (4, 1, 0),
    (1, 8, 0), (2, 4, 0), (1, 3, 0), (2, 8, 0), (6, 1, 0), (56, 6, 0), (80, 6, 0), (8, 3, 0),
    (22, 4, 0), (21, 4, 0), (150, 4, 0), (151, 4, 0), (152, 8, 0), (153, 8, 0), (158, 4, 0),
    (159, 4, 0), (34, 4, 0), (48, 1, 0), (302, 2, 0), (160, 8, 0), (10, 2, 0), (210, 2, 0),
    (96, 12, 0), (1000, 4, 9), (1001, 2, 32473), (60, 1, 0), (5, 1, 0), (12, 16, 0),
]  # fmt: skip
VAR_POOL = [(82, VAR, 0), (94, VAR, 0), (210, VAR, 0), (95, VAR, 0), (1002, VAR, 9),
            (8, VAR, 0), (1, VAR, 0)]  # fmt: skip
TEXTS = [b"", b"eth0", b"Gi0/0/1\x00\x00", b"\xff\xfebad", "caf\u00e9".encode(), b"x" * 300,
         b"a\x00b", b"\xe2\x82"]  # fmt: skip


def _value(rng: random.Random, ie: int, length: int) -> bytes:
    if length == VAR:
        text = rng.choice(TEXTS)
        if len(text) < 255 and rng.random() < 0.9:
            return bytes([len(text)]) + text
        return b"\xff" + struct.pack(">H", len(text)) + text
    if ie in (8, 12) and length == 4:
        first = rng.choice([10, 192, 8, 172])
        return socket.inet_aton(f"{first}.{rng.randrange(256)}.0.{rng.randrange(256)}")
    if ie in (27, 28) and length == 16:
        v4 = b"\xc0\x00\x02\x01"
        return rng.choice([bytes(16), bytes(15) + b"\x01", bytes(10) + b"\xff\xff" + v4,
                           bytes(12) + v4, b"\x20\x01\x0d\xb8" + bytes(11) + b"\x01",
                           rng.randbytes(16)])  # fmt: skip
    if ie == 4:
        return bytes([rng.choice([6, 17, 1, 58, 47, 255, 132])])
    if ie in (34, 48, 302) and rng.random() < 0.3:
        return bytes(length)  # a zero sampling interval falls back to the domain's rate
    if rng.random() < 0.05:
        return b"\xff" * length  # all ones: counters at the top of their range
    return rng.randbytes(length)


def _template(rng: random.Random, ipfix_: bool) -> list[tuple[int, int, int]]:
    n = rng.randint(1, 12)
    fields = [rng.choice(POOL) for _ in range(n)]
    if ipfix_ and rng.random() < 0.4:
        for _ in range(rng.randint(1, 3)):
            fields.insert(rng.randrange(len(fields) + 1), rng.choice(VAR_POOL))
    if not ipfix_:
        fields = [(ie, length, 0) for ie, length, pen in fields if not pen]
    return fields or [(8, 4, 0)]


def _template_record(tid: int, fields: list[tuple[int, int, int]], ipfix_: bool) -> bytes:
    out = struct.pack(">HH", tid, len(fields))
    for ie, length, pen in fields:
        if ipfix_ and pen:
            out += struct.pack(">HHI", ie | 0x8000, length, pen)
        else:
            out += struct.pack(">HH", ie, length)
    return out


def _options(rng: random.Random, tid: int, ipfix_: bool) -> tuple[bytes, bytes]:
    """An options template for a sampler's rate (and a record of it)."""
    rate = rng.choice([0, 1, 10, 100, 4096])
    sampler = rng.randrange(4)
    if ipfix_:
        tpl = struct.pack(">HHH", tid, 3, 1) + struct.pack(">HHHHHH", 302, 2, 34, 4, 160, 8)
        rec = struct.pack(">HIQ", sampler, rate, 1_699_999_000_000)
        return set_(3, pad4(tpl)), set_(tid, pad4(rec))
    tpl = struct.pack(">HHH", tid, 4, 8) + struct.pack(">HHHHHH", 1, 4, 48, 1, 34, 4)
    rec = struct.pack(">IBI", 1, sampler, rate)
    return set_(1, pad4(tpl)), set_(tid, pad4(rec))


def _stream(rng: random.Random, n: int) -> list[Datagram]:
    out: list[Datagram] = []
    templates: dict[tuple[str, int, int], list[tuple[int, int, int]]] = {}
    seq: dict[tuple[str, int], int] = {}
    exporters = ["192.0.2.1", "192.0.2.2", "2001:db8::7"]
    for _ in range(n):
        exporter = rng.choice(exporters)
        version = rng.choice([5, 9, 10, 10])
        key = (exporter, version)
        s = seq.get(key, rng.randrange(1 << 32))
        if rng.random() < 0.1:
            s = (s + rng.randrange(1, 1000)) & 0xFFFFFFFF  # a gap
        elif rng.random() < 0.05:
            s = (s - rng.randrange(1, 10)) & 0xFFFFFFFF  # behind: reordered or reset
        if version == 5:
            u32 = 1 << 32
            recs = [v5_record(f"10.0.0.{rng.randrange(256)}", "8.8.8.8", rng.randrange(65536),
                              rng.randrange(65536), rng.choice([6, 17]), rng.randrange(u32),
                              rng.randrange(u32), rng.randrange(u32), rng.randrange(u32))
                    for _ in range(rng.randint(1, 30))]  # fmt: skip
            dg = v5(recs, seq=s, sampling=rng.choice([0, 0, 0x4000 | 100, 0x3FFF]))
            seq[key] = (s + len(recs)) & 0xFFFFFFFF
        else:
            ipfix_ = version == 10
            sets: list[bytes] = []
            for _ in range(rng.randint(1, 4)):
                tid = rng.choice([256, 257, 258, 300])
                tkey = (exporter, version, tid)
                roll = rng.random()
                if roll < 0.25 or (tkey not in templates and roll < 0.6):
                    fields = _template(rng, ipfix_)  # new, or changed mid-stream
                    templates[tkey] = fields
                    sets.append(set_(2 if ipfix_ else 0,
                                     pad4(_template_record(tid, fields, ipfix_))))  # fmt: skip
                elif roll < 0.3 and ipfix_:
                    sets.append(set_(2, struct.pack(">HH", tid, 0)))  # withdrawal
                elif roll < 0.35:
                    tpl, rec = _options(rng, 400 + tid % 4, ipfix_)
                    sets += [tpl, rec]
                elif tkey in templates or roll < 0.4:
                    fields = templates.get(tkey, [(8, 4, 0)])
                    recs = b"".join(
                        b"".join(_value(rng, ie, length) for ie, length, _pen in fields)
                        for _ in range(rng.randint(1, 8))
                    )
                    if rng.random() < 0.1:
                        recs = recs[: rng.randrange(len(recs) + 1)]  # a truncated record
                    sets.append(set_(tid, pad4(recs) if rng.random() < 0.8 else recs))
            port = rng.choice([2055, 4739])
            dg = ipfix(sets, seq=s, odid=rng.choice([1, 2])) if ipfix_ else v9(sets, seq=s)
            seq[key] = (s + 1) & 0xFFFFFFFF
        if rng.random() < 0.05:
            dg = dg[: rng.randrange(len(dg) + 1)]  # a truncated datagram
        elif rng.random() < 0.05:
            b = bytearray(dg)
            for _ in range(rng.randint(1, 4)):
                b[rng.randrange(len(b))] = rng.randrange(256)
            dg = bytes(b)
        out.append((dg, exporter, port if version != 5 else 2055))
    return out


@pytest.mark.parametrize("seed", range(8))
def test_generated_hostile_streams_decode_identically(seed: int) -> None:
    rng = random.Random(seed)
    assert assert_same(_stream(rng, 400)), "the native decoder was not used"


def test_tight_limits_evict_and_count_identically() -> None:
    """Bounds that bite (templates per exporter and in total, field lengths, held data)."""
    limits = DecoderLimits(max_templates_per_exporter=2, max_templates=3, max_exporters=2,
                           max_field_length=8, pending_max_sets=2,
                           pending_max_age=0.05)  # fmt: skip
    assert_same(_stream(random.Random(99), 600), limits)


def test_values_past_64_bits_after_sampling_match() -> None:
    """An 8-byte counter at its maximum times a sampling rate: exact Python integers."""
    fields = [(8, 4), (12, 4), (1, 8), (2, 8), (34, 4)]
    tpl = set_(2, pad4(struct.pack(">HH", 256, len(fields))
                       + b"".join(struct.pack(">HH", *f) for f in fields)))  # fmt: skip
    rec = socket.inet_aton("10.0.0.1") + socket.inet_aton("10.0.0.2") + b"\xff" * 16
    data = set_(256, rec + struct.pack(">I", 1000))
    assert assert_same([(ipfix([tpl, data]), "192.0.2.1", 4739)])


def test_v5_datagram_decodes_identically() -> None:
    recs = [v5_record("10.0.0.1", "10.0.0.2", 1, 2, 6, 100, 1)] * 3
    assert assert_same([(v5(recs, sampling=0x4000 | 10), "192.0.2.1", 2055)])


def test_corpus_path_is_read_from_the_shared_corpus() -> None:
    """A guard for the corpus test above: the streams list is not silently empty."""
    try:
        root = corpus_dir("netflow")
    except pytest.skip.Exception:
        pytest.skip("corpus not present")
    assert Path(root).is_dir() and _corpus_streams()


def test_a_rate_past_what_the_extension_holds_is_decoded_by_the_reference() -> None:
    """A saved sampling rate past 128 bits (only a tampered state row could hold one): the
    extension refuses the set, appends nothing, and the Python emitter decodes it."""
    fields = [(8, 4), (12, 4), (1, 8), (2, 8)]
    tpl = set_(0, pad4(struct.pack(">HH", 256, len(fields))
                       + b"".join(struct.pack(">HH", *f) for f in fields)))  # fmt: skip
    rec = socket.inet_aton("10.0.0.1") + socket.inet_aton("10.0.0.2") + struct.pack(">QQ", 5, 1)
    state = {"format": 1, "domains": [{"exporter": "192.0.2.1", "version": 9, "domain": 1,
                                       "default_rate": 1 << 130, "templates": []}]}  # fmt: skip
    got = []
    for native in (True, False):
        with backend(native):
            dec = NetflowDecoder()
            dec.import_state(state, NOW)
            flows = dec.decode(v9([tpl, set_(256, rec)]), "192.0.2.1", NOW)
            tpl_obj = dec.domains[("192.0.2.1", 9, 1)].templates[256]
            assert (tpl_obj.native is not None) == native
            got.append(repr(flows))
    assert got[0] == got[1]
    assert "'network.bytes': " + str(5 << 130) in got[0]
