"""Reference C2 #12-13: every flow bad-input case is counted, bounded, and never raises."""

from __future__ import annotations

import struct

import pytest

from appliance.protocols.netflow import DecoderLimits, NetflowDecoder
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

NOW = 1_700_000_100.0
EXP = "192.0.2.1"
REC = v5_record("10.0.0.1", "10.0.0.2", 1, 2, 6, 100, 1)


def _decode(dec: NetflowDecoder, data: bytes, exporter: str = EXP) -> list:
    return dec.decode(data, exporter, NOW)


def _still_decodes(dec: NetflowDecoder) -> None:
    """The decoder keeps working for a good exporter after the bad input."""
    assert len(_decode(dec, v9_flows(2), "198.51.100.77")) == 2


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (v5([], count=0), "v5_count"),
        (v5([REC] * 31), "v5_count"),
        (v5([REC, REC], count=3), "v5_length"),
        (v5([REC])[:-1], "v5_length"),
        (v5([REC]) + b"\0", "v5_length"),
    ],
    ids=["count0", "count31", "count_more_than_records", "short", "trailing"],
)
def test_v5_bad_count_or_length_is_counted(data: bytes, reason: str) -> None:
    dec = NetflowDecoder()
    assert _decode(dec, data) == []
    assert dec.counts[("error", reason)] == 1
    _still_decodes(dec)


@pytest.mark.parametrize("data", [b"", b"\x00", b"\x00\x09", b"\x00\x0a\x00"])
def test_tiny_datagrams_are_counted(data: bytes) -> None:
    dec = NetflowDecoder()
    assert _decode(dec, data) == []
    assert sum(n for (fam, _r), n in dec.counts.items() if fam == "error") == 1


def test_template_with_zero_fields_is_rejected_v9() -> None:
    dec = NetflowDecoder()
    _decode(dec, v9([set_(0, struct.pack(">HH", 256, 0))]))
    assert dec.counts[("error", "empty_template")] == 1
    assert dec.template_count == 0


def test_template_whose_fields_sum_past_65535_is_rejected() -> None:
    dec = NetflowDecoder(DecoderLimits(max_field_length=65535))
    tpl = template_record(256, [(82, 40000), (83, 40000)])
    _decode(dec, ipfix([set_(2, tpl)]))
    assert dec.counts[("error", "template_too_long")] == 1
    assert dec.template_count == 0


def test_field_length_50_for_a_4_byte_ie_is_refused() -> None:
    """pmacct #934: a declared length past the fixed-field cap never reaches a decode."""
    dec = NetflowDecoder(DecoderLimits(max_field_length=32))
    _decode(dec, v9([set_(0, template_record(256, [(8, 50), (12, 4)]))]))
    assert dec.counts[("limit", "field_length")] == 1
    assert dec.template_count == 0


def test_field_length_50_under_the_cap_decodes_as_hex() -> None:
    dec = NetflowDecoder()
    tpl = set_(0, template_record(256, [(8, 50), (12, 4)]))
    data = set_(256, pad4(b"\x0a" * 50 + bytes([10, 0, 0, 2])))
    [(_ts, f)] = _decode(dec, v9([tpl, data]))
    assert f["netflow.sourceIPv4Address"] == "0a" * 50
    assert f["destination.ip"] == "10.0.0.2"


def test_data_set_shorter_than_one_record_is_counted() -> None:
    dec = NetflowDecoder()
    _decode(dec, v9_flows(1))
    _decode(dec, v9([set_(256, b"\x01" * 12)], seq=1))
    assert dec.counts[("error", "short_data_set")] == 1


@pytest.mark.parametrize("length", [0, 1, 3])
def test_set_length_below_header_is_counted(length: int) -> None:
    dec = NetflowDecoder()
    bad = struct.pack(">HH", 256, length) + b"\x01" * 8
    assert _decode(dec, v9([bad])) == []
    assert dec.counts[("error", "set_length")] == 1
    _still_decodes(dec)


def test_set_length_past_datagram_end_is_counted() -> None:
    dec = NetflowDecoder()
    _decode(dec, v9_flows(1))
    good = set_(256, pad4(flow_record("10.0.0.1", "10.0.0.2", 1, 2, 6, 1, 1)))
    bad = struct.pack(">HH", 256, 2000) + b"\x01" * 40
    flows = _decode(dec, v9([good, bad], seq=1))
    assert len(flows) == 1  # the good set before it is kept
    assert dec.counts[("error", "set_past_end")] == 1


def test_ipfix_withdrawal_with_remaining_length_1_does_not_underflow() -> None:
    """nfdump CVE-2019-14459: a withdrawal set with one byte left."""
    dec = NetflowDecoder()
    _decode(dec, ipfix_flows(1))
    withdrawal = set_(2, struct.pack(">HH", 256, 0) + b"\x00")
    _decode(dec, ipfix([withdrawal], seq=1))
    assert dec.counts[("template", "withdrawal_ignored")] == 1
    assert len(_decode(dec, ipfix_flows(1, with_template=False, seq=2))) == 1


def test_options_template_with_scope_count_above_field_count_is_rejected() -> None:
    dec = NetflowDecoder()
    body = struct.pack(">HHH", 300, 2, 5) + struct.pack(">HHHH", 149, 4, 34, 4)
    _decode(dec, ipfix([set_(3, body)]))
    assert dec.counts[("error", "bad_scope_count")] == 1
    assert dec.template_count == 0


def test_variable_length_0xffff_after_ff_prefix_at_end_of_packet() -> None:
    dec = NetflowDecoder()
    tpl = template_record(300, [(8, 4), (82, 0xFFFF)])
    rec = bytes([10, 0, 0, 1]) + b"\xff\xff\xff" + b"abc"
    assert _decode(dec, ipfix([set_(2, tpl), set_(300, rec)])) == []
    assert dec.counts[("error", "varlen_past_end")] == 1


def test_enterprise_bit_with_no_pen_bytes_left() -> None:
    dec = NetflowDecoder()
    tpl = struct.pack(">HH", 256, 1) + struct.pack(">HH", 0x8000 | 100, 4)
    _decode(dec, ipfix([set_(2, tpl)]))
    assert dec.counts[("error", "truncated_enterprise")] == 1
    assert dec.template_count == 0


@pytest.mark.parametrize("delta", [-1, 1, 100])
def test_ipfix_message_length_not_datagram_length(delta: int) -> None:
    dec = NetflowDecoder()
    msg = ipfix_flows(2)
    bad = msg[:2] + struct.pack(">H", len(msg) + delta) + msg[4:]
    assert _decode(dec, bad) == []
    assert dec.counts[("error", "length_mismatch")] == 1


def test_data_for_a_template_never_seen_is_counted_and_held_bounded() -> None:
    dec = NetflowDecoder(DecoderLimits(pending_max_sets=4))
    for seq in range(10):
        assert _decode(dec, v9_flows(3, tid=999, with_template=False, seq=seq)) == []
    assert dec.counts[("data", "no_template")] == 10
    assert dec.counts[("data", "pending_evicted")] == 6
    assert len(dec._pending) == 4
    flows = _decode(dec, v9([set_(0, template_record(999, FLOW_FIELDS))], seq=10))
    assert len(flows) == 12  # the four held sets, decoded once their template came


def test_held_data_expires() -> None:
    dec = NetflowDecoder(DecoderLimits(pending_max_age=5))
    dec.decode(v9_flows(3, tid=999, with_template=False), EXP, NOW)
    dec.expire(NOW + 6)
    assert dec.counts[("data", "pending_expired")] == 1
    assert dec.decode(v9([set_(0, template_record(999, FLOW_FIELDS))]), EXP, NOW + 7) == []


def test_70000_template_ids_from_one_exporter_stay_bounded() -> None:
    dec = NetflowDecoder(DecoderLimits(max_templates_per_exporter=256))
    recs = [template_record(256 + (i % 65280), FLOW_FIELDS) for i in range(70_000)]
    per_set = 40
    for i in range(0, len(recs), per_set):
        _decode(dec, v9([set_(0, b"".join(recs[i : i + per_set]))], seq=i // per_set))
    assert dec.template_count == 256
    assert dec.counts[("limit", "templates_per_exporter")] == 70_000 - 256
    _still_decodes(dec)


def test_template_churn_from_10000_spoofed_exporters_is_bounded() -> None:
    dec = NetflowDecoder(DecoderLimits(max_exporters=1000, max_templates=2000))
    for i in range(10_000):
        _decode(dec, v9_flows(1, seq=0), f"10.{i // 65536}.{(i // 256) % 256}.{i % 256}")
    assert len(dec.domains) == 1000
    assert dec.template_count <= 2000
    assert dec.counts[("limit", "exporters")] == 9000


def test_total_template_limit_evicts_oldest() -> None:
    dec = NetflowDecoder(DecoderLimits(max_templates=10))
    for i in range(12):
        _decode(dec, v9_flows(1), f"192.0.2.{i + 1}")
    assert dec.template_count == 10
    assert dec.counts[("limit", "templates_total")] == 2


def test_too_many_fields_is_refused() -> None:
    dec = NetflowDecoder(DecoderLimits(max_fields_per_template=16))
    _decode(dec, v9([set_(0, template_record(256, [(1, 4)] * 17))]))
    assert dec.counts[("limit", "fields_per_template")] == 1
    assert dec.template_count == 0


def test_all_zero_length_fields_template_is_refused() -> None:
    """netflow_parser #28: a record that consumes nothing would loop forever."""
    dec = NetflowDecoder()
    _decode(dec, ipfix([set_(2, template_record(256, [(1, 0), (2, 0)]))]))
    assert dec.counts[("error", "zero_length_record")] == 1


def test_template_count_field_larger_than_the_set() -> None:
    dec = NetflowDecoder()
    body = struct.pack(">HH", 256, 65535) + struct.pack(">HH", 8, 4)
    _decode(dec, v9([set_(0, body)]))
    assert dec.counts[("error", "truncated_template")] == 1


def test_v9_options_template_lengths_past_set_end() -> None:
    dec = NetflowDecoder()
    body = struct.pack(">HHH", 300, 4, 4000) + struct.pack(">HH", 1, 4)
    _decode(dec, v9([set_(1, pad4(body))]))
    assert dec.counts[("error", "bad_options_template")] == 1


def test_udp_withdrawal_of_all_templates_is_ignored() -> None:
    dec = NetflowDecoder()
    _decode(dec, ipfix_flows(1))
    _decode(dec, ipfix([set_(2, struct.pack(">HH", 2, 0)), set_(3, struct.pack(">HH", 3, 0))],
                       seq=1))  # fmt: skip
    assert dec.template_count == 1
    assert dec.counts[("template", "withdrawal_ignored")] == 2


def test_random_garbage_never_raises() -> None:
    import random

    rng = random.Random(5)
    dec = NetflowDecoder()
    seeds = [v5([REC]), v9_flows(3), ipfix_flows(3)]
    for _ in range(3000):
        base = bytearray(rng.choice(seeds))
        for _ in range(rng.randint(1, 6)):
            base[rng.randrange(len(base))] = rng.randrange(256)
        if rng.random() < 0.3:
            base = base[: rng.randrange(len(base))]
        dec.decode(bytes(base), f"192.0.2.{rng.randint(1, 20)}", NOW)
    _still_decodes(dec)


def test_loss_counter_labels_stay_bounded_under_exporter_churn() -> None:
    dec = NetflowDecoder(DecoderLimits(max_exporters=10, template_lifetime=1))
    for i in range(50):
        exporter = f"10.0.0.{i + 1}"
        dec.decode(v9_flows(1, seq=0), exporter, NOW + 2 * i)
        dec.decode(v9_flows(1, seq=5), exporter, NOW + 2 * i)  # 4 packets lost
    labels = {r for (fam, r) in dec.counts if fam == "lost_packets"}
    assert len(labels) == 11 and "other" in labels
    assert sum(n for (fam, _r), n in dec.counts.items() if fam == "lost_packets") == 200


def test_template_of_only_padding_yields_no_flows_and_costs_the_datagram_nothing() -> None:
    dec = NetflowDecoder()
    data = ipfix(
        [
            set_(2, template_record(300, [(210, 4)]) + template_record(256, FLOW_FIELDS)),
            set_(300, b"\0" * 12),
            set_(256, flow_record("10.0.0.1", "10.0.0.2", 1, 2, 6, 100, 1)),
        ]
    )
    out = _decode(dec, data)
    assert [f["source.ip"] for _ts, f in out] == ["10.0.0.1"]
    assert dec.counts[("data", "empty_records")] == 3
    assert not [k for k in dec.counts if k[0] == "error"]
    assert _decode(dec, ipfix([set_(300, b"\0" * 4)], seq=4)) == []
    assert not [k for k in dec.counts if k[0] in ("lost_flows", "sequence")]  # 4 records seen


def _ipfix_flow_from_domain(odid: int) -> bytes:
    record = flow_record("10.0.0.1", "10.0.0.2", 1, 2, 6, 100, 1)
    return ipfix([set_(2, template_record(256, FLOW_FIELDS)), set_(256, record)], odid=odid)


def test_one_exporter_cycling_observation_domains_is_bounded_to_its_own_share() -> None:
    dec = NetflowDecoder(DecoderLimits(max_exporters=100))
    _decode(dec, v9_flows(1), "198.51.100.1")  # heard before the flood, then quiet
    for odid in range(1000):
        _decode(dec, _ipfix_flow_from_domain(odid))
    assert len(_decode(dec, v9_flows(2), "198.51.100.77")) == 2  # a new exporter gets in
    # ... and the one heard before kept its templates: the flood evicted only its own.
    assert len(_decode(dec, v9_flows(2, with_template=False, seq=1), "198.51.100.1")) == 2
    share = dec.limits.max_domains_per_exporter
    assert len([k for k in dec.domains if k[0] == EXP]) == share
    assert dec.counts[("limit", "domains_per_exporter")] == 1000 - share
    assert ("limit", "exporters") not in dec.counts


def test_a_new_exporter_is_decoded_at_once_when_the_exporter_table_is_full() -> None:
    dec = NetflowDecoder(DecoderLimits(max_exporters=10))
    for i in range(10):
        _decode(dec, v9_flows(1), f"192.0.2.{i + 1}")
    _decode(dec, v9_flows(1, seq=1), "192.0.2.1")  # the first is heard again: not stalest
    assert len(_decode(dec, v9_flows(2), "198.51.100.77")) == 2
    assert dec.counts[("limit", "exporters")] == 1
    assert len(dec.domains) == 10
    assert ("192.0.2.2", 9, 1) not in dec.domains  # the least recently heard made room
    assert ("192.0.2.1", 9, 1) in dec.domains
