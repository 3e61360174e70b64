"""SNMP v1/v2c BER (``ber.py``, ``message.py``): any datagram is a notification, or
``BerError`` / ``UnsupportedPdu`` and nothing else; a decoded one has at most ``max_varbinds``
varbinds, OIDs within RFC 2578's bounds, values of their wire type, an event the store can
write, and (for an inform) a response that parses back as one.

Input: the UDP payload, as the trap source receives it.
"""

from __future__ import annotations

from collections.abc import Iterator

from appliance.mibs import MibResolver
from appliance.protocols.snmp import ber
from appliance.protocols.snmp.ber import BerError
from appliance.protocols.snmp.ecs import SeverityTable, trap_event
from appliance.protocols.snmp.message import (
    PDU_RESPONSE,
    TYPE_NAMES,
    UnsupportedPdu,
    decode_message,
    encode_inform_response,
    encode_trap_v2c,
    message_version,
    v2_varbinds,
)
from tests.fuzz.harness import committed_seeds, corpus_dir, stored_json

MAX_LEN = 4096
MAX_VARBINDS = 32
_RESOLVER = MibResolver()
_SEVERITIES = SeverityTable({})
_TYPES = set(TYPE_NAMES.values())
_INT_TYPES = {"Integer32", "Counter32", "Gauge32", "TimeTicks", "Counter64"}


def _v1_trap(generic: int, varbinds: bytes) -> bytes:
    tlv = ber.encode_tlv
    pdu = (
        ber.encode_oid("1.3.6.1.4.1.9")
        + tlv(ber.IP_ADDRESS, bytes([10, 1, 2, 3]))
        + ber.encode_integer(generic)
        + ber.encode_integer(42)
        + ber.encode_unsigned(500, ber.TIMETICKS)
        + tlv(ber.SEQUENCE, varbinds)
    )
    return tlv(ber.SEQUENCE, ber.encode_integer(0) + tlv(ber.OCTET_STRING, b"public")
               + tlv(0xA4, pdu))  # fmt: skip


def seeds() -> Iterator[bytes]:
    if_descr = ("1.3.6.1.2.1.2.2.1.2.3", ber.OCTET_STRING, b"Gi0/3")
    yield encode_trap_v2c(b"public", "1.3.6.1.6.3.1.1.5.3", [
        ("1.3.6.1.2.1.2.2.1.1.3", ber.INTEGER, b"\x03"), if_descr,
        ("1.3.6.1.2.1.2.2.1.7.3", ber.INTEGER, b"\x02"),
        ("1.3.6.1.4.1.9.9.1", ber.COUNTER64, b"\x00\xff" * 4 + b"\x01"),
        ("1.3.6.1.4.1.9.9.2", ber.IP_ADDRESS, b"\xc0\x00\x02\x01"),
        ("1.3.6.1.4.1.9.9.3", ber.OBJECT_IDENTIFIER, b"\x2b\x06\x01\x82\x37"),
        ("1.3.6.1.4.1.9.9.4", ber.NULL, b""),
    ])  # fmt: skip
    yield encode_trap_v2c(b"c", "1.3.6.1.4.1.8072.2.3.0.1", [if_descr], inform=True)
    vb = ber.encode_tlv(ber.SEQUENCE, ber.encode_oid("1.3.6.1.2.1.2.2.1.1.2")
                        + ber.encode_integer(2))  # fmt: skip
    yield _v1_trap(6, vb)
    yield _v1_trap(2, b"")
    root = corpus_dir("snmp")
    if root is not None:
        from tests.pcap_reader import udp_packets  # only the corpus needs it

        for pcap in sorted(root.glob("*.pcap")):
            for packet in udp_packets(pcap)[:20]:
                yield packet.payload
    yield from committed_seeds("snmp")


def _check_oid(oid: object) -> None:
    assert isinstance(oid, str), oid
    arcs = [int(a) for a in oid.split(".")]
    assert 2 <= len(arcs) <= ber.MAX_OID_ARCS + 1, oid
    assert all(0 <= a <= ber.MAX_ARC for a in arcs), oid


def one_input(data: bytes) -> None:
    try:
        assert isinstance(message_version(data), int)
    except BerError as exc:
        assert isinstance(exc.reason, str) and exc.reason
    try:
        msg = decode_message(data, MAX_VARBINDS)
    except BerError as exc:
        assert isinstance(exc.reason, str) and exc.reason
        return
    except UnsupportedPdu:
        return
    assert msg.version in (0, 1), msg.version
    assert len(msg.varbinds) <= MAX_VARBINDS, len(msg.varbinds)
    for vb in msg.varbinds:
        _check_oid(vb.oid)
        assert vb.type in _TYPES, vb.type
        if vb.type in _INT_TYPES:
            assert isinstance(vb.value, int) and -(2**63) <= vb.value < 2**64, vb.value
        elif vb.type == "ObjectIdentifier":
            _check_oid(vb.value)
    if msg.v1 is not None:
        _check_oid(msg.v1.enterprise)
    varbinds = v2_varbinds(msg)
    event = trap_event(varbinds, version="1" if msg.v1 else "2c", pdu="trap",
                       peer_ip="192.0.2.1", peer_port=1, agent_ip=msg.v1 and msg.v1.agent_addr,
                       now=0.0, resolver=_RESOLVER, severities=_SEVERITIES)  # fmt: skip
    stored_json(event.fields, "trap event fields")
    if msg.is_inform:
        response = encode_inform_response(data, msg)
        assert message_version(response) == msg.version
        try:
            decode_message(response)
        except UnsupportedPdu as exc:
            assert exc.pdu_type == PDU_RESPONSE
        else:
            raise AssertionError("an inform response decoded as a notification")
