"""NetFlow v5/v9/IPFIX decoder on the shared real-export corpus and on crafted datagrams."""

from __future__ import annotations

import collections
import json
from pathlib import Path

import pytest

from appliance import dataplane
from appliance.protocols.netflow import DecoderLimits, NetflowDecoder, template
from tests.conftest import corpus_dir
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
from tests.pcap_reader import udp_packets

NOW = 1_700_000_100.0
pytestmark = pytest.mark.corpus


def _errors(dec: NetflowDecoder) -> dict[str, int]:
    return {r: n for (fam, r), n in dec.counts.items() if fam == "error"}


def _hex_lines(path: Path) -> list[bytes]:
    return [bytes.fromhex(line) for line in path.read_text().split()]


# Which corpus hex files need which template file first (per the corpus README).
_TEMPLATES_FOR = {
    "python-netflow_nf_v9.hex": "python-netflow_nf_v9_template.hex",
    "python-netflow_nf_ipfix.hex": "python-netflow_nf_ipfix_template.hex",
    "python-netflow_nf_ipfix_ether.hex": "python-netflow_nf_ipfix_template_ether.hex",
    "python-netflow_nf_ipfix_padding.hex": "python-netflow_nf_ipfix_template.hex",
}
_REJECTED = {"python-netflow_nf_invalid.hex", "python-netflow_nf_v1.hex"}
# Data sets whose template (source id 0x01020000, id 260) is not in the corpus: each is counted
# as "no template", and the zero padding after them is not an error.
_TEMPLATE_NOT_IN_CORPUS = {"python-netflow_nf_v9_with_zeros.hex": 5}


def _corpus_files() -> list[str]:
    try:
        root = corpus_dir("netflow")
    except pytest.skip.Exception:
        return []
    return sorted(p.name for p in root.iterdir() if p.suffix in (".pcap", ".hex"))


def _decode_file(dec: NetflowDecoder, path: Path) -> list[dict]:
    flows = []
    if path.suffix == ".pcap":
        for dg in udp_packets(path):
            flows += [f for _ts, f in dec.decode(dg.payload, dg.src, NOW, dg.sport)]
    else:
        for dg in _hex_lines(path):
            flows += [f for _ts, f in dec.decode(dg, "192.0.2.1", NOW, 2055)]
    return flows


@pytest.mark.parametrize("name", _corpus_files())
def test_corpus_file_decodes_without_errors(name: str) -> None:
    root = corpus_dir("netflow")
    dec = NetflowDecoder()
    if name in _TEMPLATES_FOR:
        _decode_file(dec, root / _TEMPLATES_FOR[name])
    flows = _decode_file(dec, root / name)
    if name in _REJECTED:
        assert flows == []
        assert _errors(dec) == {"unsupported_version": 1}
        return
    assert _errors(dec) == {}
    if name in _TEMPLATE_NOT_IN_CORPUS:
        assert flows == []
        assert dec.counts[("data", "no_template")] == _TEMPLATE_NOT_IN_CORPUS[name]
        return
    assert flows, "every valid corpus export carries flows"
    for f in flows:
        assert f["event.category"] == ["network"] and f["event.type"] == ["connection"]
        assert f["observer.ip"] == f["netflow.exporter.address"]
        assert "source.ip" in f and "destination.ip" in f
        assert isinstance(f["network.bytes"], int) and isinstance(f["network.packets"], int)


@pytest.mark.parametrize(
    ("name", "flows"),
    [  # flow counts stated by the upstream test data (python-netflow tests/lib.py comments)
        ("python-netflow_nf_v5.hex", 3),
        ("python-netflow_nf_v9.hex", 36),
    ],
)
def test_corpus_flow_counts_match_upstream(name: str, flows: int) -> None:
    root = corpus_dir("netflow")
    dec = NetflowDecoder()
    if name in _TEMPLATES_FOR:
        _decode_file(dec, root / _TEMPLATES_FOR[name])
    assert len(_decode_file(dec, root / name)) == flows


def _pmacct_tests() -> list[str]:
    names = _corpus_files()
    return sorted({n.split("_")[1] for n in names if n.startswith("pmacct_")})


@pytest.mark.parametrize("test_id", _pmacct_tests())
def test_pmacct_corpus_matches_nfacctd_output(test_id: str) -> None:
    """Same flows (by 4-tuple) and same byte/packet sums as nfacctd, sampling renormalised."""
    root = corpus_dir("netflow")
    dec = NetflowDecoder()
    ours: dict[tuple, list[int]] = collections.defaultdict(lambda: [0, 0])
    for pcap in sorted(root.glob(f"pmacct_{test_id}_traffic-*.pcap")):
        for f in _decode_file(dec, pcap):
            key = (f["source.ip"], f["destination.ip"], f["source.port"], f["destination.port"])
            ours[key][0] += f["network.bytes"]
            ours[key][1] += f["network.packets"]
    theirs: dict[tuple, list[int]] = collections.defaultdict(lambda: [0, 0])
    expected = root / f"pmacct_{test_id}_output-flow-00.json"
    for line in expected.read_text().splitlines():
        if line.strip():
            j = json.loads(line)
            key = (j["ip_src"], j["ip_dst"], j["port_src"], j["port_dst"])
            theirs[key][0] += j["bytes"]
            theirs[key][1] += j["packets"]
    assert dict(ours) == dict(theirs)


def test_ipfix_sampling_option_scales_bytes_and_keeps_raw_counts() -> None:
    root = corpus_dir("netflow")
    dec = NetflowDecoder()
    flows = _decode_file(dec, root / "pmacct_104_traffic-00.pcap")
    assert flows
    for f in flows:
        rate = f["netflow.sampling_rate"]
        assert rate > 1
        assert f["network.bytes"] == f["netflow.octetDeltaCount"] * rate
        assert f["network.packets"] == f["netflow.packetDeltaCount"] * rate


def test_enterprise_fields_are_kept_as_pen_and_id() -> None:
    root = corpus_dir("netflow")
    flows = _decode_file(NetflowDecoder(), root / "pmacct_106_traffic-00.pcap")
    assert any(k.startswith("netflow.enterprise.2011:") for k in flows[0])


def test_v9_template_mixed_order_holds_data_until_its_template() -> None:
    root = corpus_dir("netflow")
    dec = NetflowDecoder()
    flows = _decode_file(dec, root / "python-netflow_nf_v9_template_mixed.hex")
    assert len(flows) == 8
    assert dec.counts[("data", "no_template")] == 1


# ------------------------------------------------------------------- crafted datagrams


def test_v5_fields_map_to_ecs() -> None:
    dec = NetflowDecoder()
    [(ts, f)] = dec.decode(v5([v5_record("10.0.0.1", "10.0.0.2", 1234, 22, 6, 5000, 7)]),
                           "192.0.2.9", NOW)  # fmt: skip
    assert f["source.ip"] == "10.0.0.1" and f["destination.ip"] == "10.0.0.2"
    assert (f["source.port"], f["destination.port"]) == (1234, 22)
    assert (f["network.transport"], f["network.iana_number"]) == ("tcp", "6")
    assert (f["network.bytes"], f["network.packets"]) == (5000, 7)
    # boot = 1_700_000_000 - 100 s of uptime; the flow ran from uptime 90 s to 99 s
    assert f["event.start"] == pytest.approx(1_699_999_990.0)
    assert ts == f["event.end"] == pytest.approx(1_699_999_999.0)
    assert f["observer.ip"] == "192.0.2.9" and f["netflow.exporter.version"] == 5


def test_v5_header_sampling_interval_scales_estimates() -> None:
    dec = NetflowDecoder()
    rec = v5_record("10.0.0.1", "10.0.0.2", 1, 2, 17, 100, 2)
    [(_ts, f)] = dec.decode(v5([rec], sampling=(1 << 14) | 64), "192.0.2.9", NOW)
    assert (f["network.bytes"], f["network.packets"]) == (6400, 128)
    assert (f["netflow.octetDeltaCount"], f["netflow.packetDeltaCount"]) == (100, 2)


def test_v9_options_sampling_applies_to_flows_of_that_sampler() -> None:
    dec = NetflowDecoder()
    fields = [*FLOW_FIELDS, (48, 1)]
    opt_tpl = set_(1, pad4(struct_pack(">HHH", 300, 4, 8) + struct_pack(">HHHHHH", 1, 4, 48, 1,
                                                                        34, 4)))  # fmt: skip
    opt_data = set_(300, pad4(struct_pack(">IBI", 0, 7, 100)))
    dec.decode(v9([set_(0, template_record(256, fields)), opt_tpl, opt_data]), "192.0.2.1", NOW)
    rec = flow_record("10.0.0.1", "10.0.0.2", 1, 2, 6, 50, 1) + b"\x07"
    [(_ts, f)] = dec.decode(v9([set_(256, pad4(rec))], seq=1), "192.0.2.1", NOW)
    assert f["network.bytes"] == 5000 and f["netflow.octetDeltaCount"] == 50


def struct_pack(fmt: str, *values: int) -> bytes:
    import struct

    return struct.pack(fmt, *values)


def test_templates_are_keyed_by_exporter_and_source_id() -> None:
    dec = NetflowDecoder()
    dec.decode(v9_flows(1), "192.0.2.1", NOW)
    data_only = v9_flows(3, with_template=False, seq=1)
    assert dec.decode(data_only, "192.0.2.2", NOW) == []  # other exporter: no template
    assert len(dec.decode(data_only, "192.0.2.1", NOW)) == 3


def test_ipfix_variable_length_fields_decode() -> None:
    dec = NetflowDecoder()
    tpl = template_record(300, [(8, 4), (82, 0xFFFF), (1, 4), (96, 0xFFFF)])
    name2 = b"x" * 300
    rec = (bytes([10, 0, 0, 1]) + b"\x04eth0" + struct_pack(">I", 99) + b"\xff"
           + struct_pack(">H", len(name2)) + name2)  # fmt: skip
    [(_ts, f)] = dec.decode(ipfix([set_(2, tpl), set_(300, rec)]), "192.0.2.1", NOW)
    assert f["netflow.interfaceName"] == "eth0"
    assert f["netflow.applicationName"] == "x" * 300
    assert f["network.bytes"] == 99


def test_ipfix_set_padding_is_ignored() -> None:
    dec = NetflowDecoder()
    flows = dec.decode(ipfix_flows(3), "192.0.2.1", NOW)  # 3 x 29-byte records + 1 byte padding
    assert len(flows) == 3
    assert _errors(dec) == {}


def test_template_resend_refreshes_lifetime() -> None:
    dec = NetflowDecoder(DecoderLimits(template_lifetime=60))
    dec.decode(v9_flows(1), "192.0.2.1", NOW)
    dec.decode(v9_flows(1, seq=1), "192.0.2.1", NOW + 50)  # resend refreshes
    assert len(dec.decode(v9_flows(2, with_template=False, seq=2), "192.0.2.1", NOW + 100)) == 2
    assert dec.decode(v9_flows(2, with_template=False, seq=3), "192.0.2.1", NOW + 200) == []
    assert dec.counts[("template", "expired")] == 1


def test_ipfix_withdrawal_is_ignored_over_udp() -> None:
    dec = NetflowDecoder()
    dec.decode(ipfix_flows(1), "192.0.2.1", NOW)
    withdraw_one = set_(2, struct_pack(">HH", 256, 0))
    withdraw_all = set_(2, struct_pack(">HH", 2, 0))
    dec.decode(ipfix([withdraw_one, withdraw_all], seq=1), "192.0.2.1", NOW)
    assert dec.counts[("template", "withdrawal_ignored")] == 2
    assert len(dec.decode(ipfix_flows(2, with_template=False, seq=2), "192.0.2.1", NOW)) == 2


def test_v5_sequence_gap_counts_lost_flows() -> None:
    dec = NetflowDecoder()
    rec = v5_record("10.0.0.1", "10.0.0.2", 1, 2, 6, 1, 1)
    dec.decode(v5([rec, rec], seq=100), "192.0.2.1", NOW)
    dec.decode(v5([rec], seq=110), "192.0.2.1", NOW)  # expected 102: 8 lost
    assert dec.counts[("lost_flows", "192.0.2.1")] == 8


def test_v9_sequence_gap_counts_lost_packets() -> None:
    dec = NetflowDecoder()
    dec.decode(v9_flows(1, seq=5), "192.0.2.1", NOW)
    dec.decode(v9_flows(1, seq=9), "192.0.2.1", NOW)
    assert dec.counts[("lost_packets", "192.0.2.1")] == 3


def test_state_round_trip_decodes_after_restart() -> None:
    dec = NetflowDecoder()
    dec.decode(v9_flows(1), "192.0.2.1", NOW)
    saved = json.loads(json.dumps(dec.export_state()))
    fresh = NetflowDecoder()
    assert fresh.import_state(saved, NOW + 10) == 1
    assert len(fresh.decode(v9_flows(4, with_template=False, seq=1), "192.0.2.1", NOW + 11)) == 4


def test_saved_templates_past_their_lifetime_are_not_restored() -> None:
    dec = NetflowDecoder(DecoderLimits(template_lifetime=60))
    dec.decode(v9_flows(1), "192.0.2.1", NOW)
    fresh = NetflowDecoder(DecoderLimits(template_lifetime=60))
    assert fresh.import_state(dec.export_state(), NOW + 61) == 0


@pytest.mark.parametrize("test_id", _pmacct_tests())
def test_generic_emitter_matches_the_compiled_one(
    test_id: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The fallback used past the compile budget maps records exactly like generated code."""
    monkeypatch.setattr(dataplane, "native", None)  # both Python emitters, not the extension
    root = corpus_dir("netflow")
    pcaps = sorted(root.glob(f"pmacct_{test_id}_traffic-*.pcap"))
    compiled = [f for p in pcaps for f in _decode_file(NetflowDecoder(), p)]
    template._EMITTERS.clear()  # layouts compiled by other tests would skip the budget
    dec = NetflowDecoder(DecoderLimits(compiles_per_second=1e-9))
    dec._compile_tokens = 0
    generic = [f for p in pcaps for f in _decode_file(dec, p)]
    assert dec.counts[("limit", "compile_budget")] >= 1
    assert generic == compiled


def test_compile_budget_bounds_template_churn() -> None:
    template._EMITTERS.clear()
    dec = NetflowDecoder(DecoderLimits(compiles_per_second=5))
    for i in range(40):  # 40 layouts never seen before, each with data
        fields = [*FLOW_FIELDS, (2000 + i, 1)]
        rec = flow_record("10.0.0.1", "10.0.0.2", 1, 2, 6, 1, 1) + b"\x00"
        flows = dec.decode(v9([set_(0, template_record(256 + i, fields)), set_(256 + i, pad4(rec))],
                              seq=i), "192.0.2.1", NOW)  # fmt: skip
        assert len(flows) == 1
    assert dec.counts[("limit", "compile_budget")] >= 30
