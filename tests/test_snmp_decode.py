"""The v1/v2c BER decoder: golden messages, RFC 3584 mapping, and the C2 bad-input cases."""

from __future__ import annotations

import random

import pytest

from appliance.event import Event
from appliance.mibs import MibResolver
from appliance.protocols.snmp import ber
from appliance.protocols.snmp.ber import BerError
from appliance.protocols.snmp.ecs import SeverityTable, trap_event
from appliance.protocols.snmp.message import (
    PDU_INFORM,
    PDU_RESPONSE,
    PDU_TRAP_V2,
    SNMP_TRAP_OID_0,
    CommunityMessage,
    UnsupportedPdu,
    decode_message,
    encode_inform_response,
    encode_trap_v2c,
    message_version,
    v2_varbinds,
)

LINK_DOWN = "1.3.6.1.6.3.1.1.5.3"
IF_INDEX_2 = "1.3.6.1.2.1.2.2.1.1.2"
IF_DESCR_2 = "1.3.6.1.2.1.2.2.1.2.2"


def link_down(**kw: object) -> bytes:
    return encode_trap_v2c(
        b"public",
        LINK_DOWN,
        [(IF_INDEX_2, ber.INTEGER, b"\x02"), (IF_DESCR_2, ber.OCTET_STRING, b"Gi0/2")],
        **kw,  # type: ignore[arg-type]
    )


def tlv(tag: int, content: bytes) -> bytes:
    return ber.encode_tlv(tag, content)


def v2c_with_varbinds(varbinds: bytes, version: int = 1, pdu: int = PDU_TRAP_V2) -> bytes:
    body = ber.encode_integer(1) + ber.encode_integer(0) + ber.encode_integer(0)
    body += tlv(ber.SEQUENCE, varbinds)
    msg = ber.encode_integer(version) + tlv(ber.OCTET_STRING, b"public") + tlv(pdu, body)
    return tlv(ber.SEQUENCE, msg)


def varbind(oid: str, value: bytes) -> bytes:
    return tlv(ber.SEQUENCE, ber.encode_oid(oid) + value)


def trap_oid_vb(oid: str = LINK_DOWN) -> bytes:
    return varbind(SNMP_TRAP_OID_0, ber.encode_oid(oid))


def event_of(msg: CommunityMessage, peer_ip: str, agent_ip: str | None = None) -> Event:
    return trap_event(
        v2_varbinds(msg),
        version="1" if msg.v1 else "2c",
        pdu="trap",
        peer_ip=peer_ip,
        peer_port=1,
        agent_ip=agent_ip,
        now=0.0,
        resolver=MibResolver(),
        severities=SeverityTable({}),
    )


# ------------------------------------------------------------------------------ good input


def test_v2c_trap_decodes_to_its_varbinds() -> None:
    msg = decode_message(link_down(uptime=12345, request_id=77))
    assert msg.version == 1
    assert msg.community == b"public"
    assert msg.pdu_type == PDU_TRAP_V2
    assert msg.request_id == 77
    assert [(v.oid, v.type, v.value) for v in msg.varbinds] == [
        ("1.3.6.1.2.1.1.3.0", "TimeTicks", 12345),
        (SNMP_TRAP_OID_0, "ObjectIdentifier", LINK_DOWN),
        (IF_INDEX_2, "Integer32", 2),
        (IF_DESCR_2, "OctetString", b"Gi0/2"),
    ]


def test_v1_trap_maps_to_v2_form_per_rfc3584() -> None:
    pdu = (
        ber.encode_oid("1.3.6.1.4.1.9")
        + tlv(ber.IP_ADDRESS, bytes([10, 1, 2, 3]))
        + ber.encode_integer(6)
        + ber.encode_integer(42)
        + ber.encode_unsigned(500, ber.TIMETICKS)
        + tlv(ber.SEQUENCE, varbind(IF_INDEX_2, ber.encode_integer(2)))
    )
    data = tlv(
        ber.SEQUENCE,
        ber.encode_integer(0) + tlv(ber.OCTET_STRING, b"public") + tlv(0xA4, pdu),
    )
    msg = decode_message(data)
    vbs = [(v.oid, v.value) for v in v2_varbinds(msg)]
    assert vbs == [
        ("1.3.6.1.2.1.1.3.0", 500),
        (SNMP_TRAP_OID_0, "1.3.6.1.4.1.9.0.42"),
        (IF_INDEX_2, 2),
        ("1.3.6.1.6.3.18.1.3.0", "10.1.2.3"),
        ("1.3.6.1.6.3.1.1.4.3.0", "1.3.6.1.4.1.9"),
    ]


def test_v1_generic_trap_maps_to_snmp_traps_subtree() -> None:
    pdu = (
        ber.encode_oid("1.3.6.1.4.1.9")
        + tlv(ber.IP_ADDRESS, bytes(4))
        + ber.encode_integer(2)  # linkDown
        + ber.encode_integer(0)
        + ber.encode_unsigned(0, ber.TIMETICKS)
        + tlv(ber.SEQUENCE, b"")
    )
    data = tlv(ber.SEQUENCE, ber.encode_integer(0) + tlv(ber.OCTET_STRING, b"c") + tlv(0xA4, pdu))
    vbs = v2_varbinds(decode_message(data))
    assert vbs[1].value == LINK_DOWN


def test_inform_response_echoes_request_id_and_varbinds() -> None:
    data = link_down(inform=True, request_id=4242)
    msg = decode_message(data)
    assert msg.pdu_type == PDU_INFORM
    response = encode_inform_response(data, msg)
    # Our own reader must see a Response-PDU with the same request-id and varbinds.
    _, start, stop = ber.read_header(response, 0, len(response))
    _, _, vstop = ber.read_header(response, start, stop)
    _, _, cstop = ber.read_header(response, vstop, stop)
    tag, pstart, pstop = ber.read_header(response, cstop, stop)
    assert tag == PDU_RESPONSE
    s, e = ber.expect(response, pstart, pstop, ber.INTEGER, "request_id")
    assert ber.decode_signed(response, s, e) == 4242
    s, e = msg.varbind_span
    assert response.endswith(data[s:e])


def test_message_version_reads_v3() -> None:
    data = tlv(ber.SEQUENCE, ber.encode_integer(3) + tlv(ber.SEQUENCE, b""))
    assert message_version(data) == 3


def test_get_request_is_unsupported_not_malformed() -> None:
    with pytest.raises(UnsupportedPdu):
        decode_message(v2c_with_varbinds(b"", pdu=0xA0))


# ------------------------------------------------------------------- C2 bad input (SNMP 9/10)


def reason(data: bytes) -> str:
    with pytest.raises(BerError) as info:
        decode_message(data)
    return info.value.reason


def test_truncated_ber_is_malformed() -> None:
    data = link_down()
    assert reason(data[:-5]) == "length_past_end"
    assert reason(data[:1]) == "truncated"


def test_length_larger_than_datagram_is_malformed() -> None:
    data = bytearray(link_down())
    data[1:2] = b"\x84\x7f\xff\xff\xff"  # outer length 2 GiB
    assert reason(bytes(data)) == "length_past_end"


def test_indefinite_length_is_malformed() -> None:
    assert reason(b"\x30\x80" + link_down()[2:] + b"\x00\x00") == "indefinite_length"


def test_length_of_more_than_four_octets_is_malformed() -> None:
    assert reason(b"\x30\x89" + b"\x00" * 9) == "length_too_long"


def test_65535_deep_nested_sequence_is_rejected_without_recursion() -> None:
    nested = b""
    for _ in range(65535):
        nested = b"\x30\x84" + len(nested).to_bytes(4, "big") + nested
    data = v2c_with_varbinds(
        trap_oid_vb() + tlv(ber.SEQUENCE, ber.encode_oid("1.3.6.1.2") + nested)
    )
    assert reason(data) == "constructed_value"


def test_integer_of_1000_bytes_is_malformed() -> None:
    vb = varbind("1.3.6.1.4.1.1", tlv(ber.INTEGER, b"\x01" * 1000))
    assert reason(v2c_with_varbinds(trap_oid_vb() + vb)) == "integer_too_large"


def test_oid_with_10k_arcs_is_malformed() -> None:
    oid = tlv(ber.OBJECT_IDENTIFIER, b"\x2b" + b"\x01" * 10_000)
    data = v2c_with_varbinds(trap_oid_vb() + tlv(ber.SEQUENCE, oid + b"\x05\x00"))
    assert reason(data) == "oid_too_long"


def test_oid_arc_above_2_64_is_malformed() -> None:
    huge = b"\x82" + b"\x80" * 9 + b"\x00"  # 2^64 in base 128
    oid = tlv(ber.OBJECT_IDENTIFIER, b"\x2b" + huge)
    data = v2c_with_varbinds(trap_oid_vb() + tlv(ber.SEQUENCE, oid + b"\x05\x00"))
    assert reason(data) == "oid_arc_too_large"


def test_oid_arc_just_above_2_32_is_malformed() -> None:
    arc = b"\x90\x80\x80\x80\x00"  # 2^32
    oid = tlv(ber.OBJECT_IDENTIFIER, b"\x2b" + arc)
    data = v2c_with_varbinds(trap_oid_vb() + tlv(ber.SEQUENCE, oid + b"\x05\x00"))
    assert reason(data) == "oid_arc_too_large"


def test_trailing_bytes_after_message_are_malformed() -> None:
    assert reason(link_down() + b"\x00") == "trailing_bytes"


def test_too_many_varbinds_is_malformed() -> None:
    vbs = b"".join(varbind(f"1.3.6.1.4.1.{i}", b"\x05\x00") for i in range(10))
    with pytest.raises(BerError) as info:
        decode_message(v2c_with_varbinds(vbs), max_varbinds=5)
    assert info.value.reason == "too_many_varbinds"


def test_v1_trap_with_bogus_agent_addr_is_kept_with_packet_source_as_agent() -> None:
    pdu = (
        ber.encode_oid("1.3.6.1.4.1.9")
        + tlv(ber.IP_ADDRESS, b"\x01\x02")  # two octets: not an address
        + ber.encode_integer(0)
        + ber.encode_integer(0)
        + ber.encode_unsigned(0, ber.TIMETICKS)
        + tlv(ber.SEQUENCE, b"")
    )
    data = tlv(ber.SEQUENCE, ber.encode_integer(0) + tlv(ber.OCTET_STRING, b"c") + tlv(0xA4, pdu))
    msg = decode_message(data)
    assert msg.v1 is not None and msg.v1.agent_addr is None
    event = event_of(msg, "192.0.2.7", agent_ip=msg.v1.agent_addr)
    assert event.fields["observer.ip"] == "192.0.2.7"
    assert event.fields["event.action"] == "coldStart"


def test_v2c_trap_without_snmp_trap_oid_is_kept_as_unknown() -> None:
    msg = decode_message(v2c_with_varbinds(varbind(IF_INDEX_2, ber.encode_integer(2))))
    event = event_of(msg, "192.0.2.7")
    assert event.fields["event.action"] == "unknown"
    assert "snmp.trap_oid" not in event.fields


def test_varbind_type_disagreeing_with_mib_is_stored_as_sent() -> None:
    # ifDescr as an INTEGER, ifIndex as an OCTET STRING (the CVE-2014-3565 shape).
    vbs = trap_oid_vb() + varbind(IF_DESCR_2, ber.encode_integer(7))
    vbs += varbind(IF_INDEX_2, tlv(ber.OCTET_STRING, b"x"))
    msg = decode_message(v2c_with_varbinds(vbs))
    event = event_of(msg, "192.0.2.7")
    docs = {d["name"]: d for d in event.fields["snmp.varbinds"]}
    assert docs["ifDescr.2"] == {
        "oid": IF_DESCR_2,
        "name": "ifDescr.2",
        "type": "Integer32",
        "value": 7,
    }
    assert docs["ifIndex.2"]["value"] == "x"
    assert "observer.ingress.interface.name" not in event.fields


def test_empty_octet_string_is_an_empty_value() -> None:
    vbs = trap_oid_vb() + varbind("1.3.6.1.4.1.1.1", tlv(ber.OCTET_STRING, b""))
    msg = decode_message(v2c_with_varbinds(vbs))
    assert msg.varbinds[-1].value == b""


def test_wrong_version_is_malformed() -> None:
    assert reason(v2c_with_varbinds(trap_oid_vb(), version=7)) == "bad_version"


# ------------------------------------------------------------------------------------ fuzzing


def test_random_mutations_raise_only_decode_errors() -> None:
    rng = random.Random(4)
    seeds = [link_down(), link_down(inform=True)]
    outcomes = {"decoded": 0, "rejected": 0}
    for _ in range(20_000):
        data = bytearray(rng.choice(seeds))
        for _ in range(rng.randint(1, 4)):
            if not data:
                data = bytearray(b"\x30")
            op = rng.random()
            i = rng.randrange(len(data))
            if op < 0.5:
                data[i] = rng.randrange(256)
            elif op < 0.7:
                del data[i]
            elif op < 0.9:
                data.insert(i, rng.randrange(256))
            else:
                data = data[:i]
        try:
            decode_message(bytes(data))
            outcomes["decoded"] += 1
        except (BerError, UnsupportedPdu):
            outcomes["rejected"] += 1
    # Anything else would have escaped above; both paths must have been exercised.
    assert outcomes["decoded"] > 0 and outcomes["rejected"] > 0


def test_v2c_trap_relayed_with_snmp_trap_address_names_the_original_agent() -> None:
    vbs = trap_oid_vb() + varbind("1.3.6.1.6.3.18.1.3.0", tlv(ber.IP_ADDRESS, bytes([10, 9, 8, 7])))
    msg = decode_message(v2c_with_varbinds(vbs))
    event = event_of(msg, "192.0.2.1")
    assert event.fields["observer.ip"] == "10.9.8.7"
    assert event.fields["source.ip"] == "192.0.2.1"


def test_unsigned_types_decode_to_their_full_width() -> None:
    vbs = trap_oid_vb()
    vbs += varbind("1.3.6.1.4.1.1.1", tlv(ber.COUNTER32, b"\x00\xff\xff\xff\xff"))
    vbs += varbind("1.3.6.1.4.1.1.2", tlv(ber.COUNTER64, b"\x00" + b"\xff" * 8))
    vbs += varbind("1.3.6.1.4.1.1.3", tlv(ber.IP_ADDRESS, bytes([192, 0, 2, 1])))
    values = [v.value for v in decode_message(v2c_with_varbinds(vbs)).varbinds[1:]]
    assert values == [2**32 - 1, 2**64 - 1, "192.0.2.1"]


def test_negative_or_too_wide_unsigned_is_malformed() -> None:
    negative = varbind("1.3.6.1.4.1.1.1", tlv(ber.GAUGE32, b"\xff"))
    assert reason(v2c_with_varbinds(trap_oid_vb() + negative)) == "negative_unsigned"
    wide = varbind("1.3.6.1.4.1.1.1", tlv(ber.COUNTER32, b"\x01\x00\x00\x00\x00"))
    assert reason(v2c_with_varbinds(trap_oid_vb() + wide)) == "integer_too_large"


def test_ip_address_of_wrong_length_in_a_varbind_is_malformed() -> None:
    bad = varbind("1.3.6.1.4.1.1.1", tlv(ber.IP_ADDRESS, b"\x01\x02\x03"))
    assert reason(v2c_with_varbinds(trap_oid_vb() + bad)) == "bad_ipaddress"
