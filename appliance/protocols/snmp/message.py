"""SNMPv1/v2c community messages: decode traps and informs, map v1 to v2 (RFC 3584), answer
informs. Pure and sans-I/O: bytes in, :class:`CommunityMessage` out.

SNMPv3 is not decoded here: USM (authentication, privacy, engine IDs, time windows) is left to
pysnmp, which the trap source feeds with v3 datagrams only. :func:`message_version` tells the
two apart with a few byte reads.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from typing import Any

from appliance.protocols.snmp import ber
from appliance.protocols.snmp.ber import BerError

VERSION_1 = 0
VERSION_2C = 1
VERSION_3 = 3

PDU_GET = 0xA0
PDU_RESPONSE = 0xA2
PDU_TRAP_V1 = 0xA4
PDU_INFORM = 0xA6
PDU_TRAP_V2 = 0xA7

SYS_UPTIME_0 = "1.3.6.1.2.1.1.3.0"
SNMP_TRAP_OID_0 = "1.3.6.1.6.3.1.1.4.1.0"
SNMP_TRAP_ENTERPRISE_0 = "1.3.6.1.6.3.1.1.4.3.0"
SNMP_TRAP_ADDRESS_0 = "1.3.6.1.6.3.18.1.3.0"
SNMP_TRAPS = "1.3.6.1.6.3.1.1.5"  # coldStart is .1; generic trap g maps to .(g+1)

DEFAULT_MAX_VARBINDS = 256

# Wire tag → SMI type name (the names pysnmp uses, so v3 and v1/v2c events read alike).
TYPE_NAMES = {
    ber.INTEGER: "Integer32",
    ber.OCTET_STRING: "OctetString",
    ber.NULL: "Null",
    ber.OBJECT_IDENTIFIER: "ObjectIdentifier",
    ber.IP_ADDRESS: "IpAddress",
    ber.COUNTER32: "Counter32",
    ber.GAUGE32: "Gauge32",
    ber.TIMETICKS: "TimeTicks",
    ber.OPAQUE: "Opaque",
    ber.COUNTER64: "Counter64",
    ber.NO_SUCH_OBJECT: "noSuchObject",
    ber.NO_SUCH_INSTANCE: "noSuchInstance",
    ber.END_OF_MIB_VIEW: "endOfMibView",
}


class UnsupportedPdu(ValueError):
    """Well-formed, but not a notification (a get, a response, a v2 PDU in a v1 message)."""

    def __init__(self, pdu_type: int) -> None:
        super().__init__(f"PDU type 0x{pdu_type:02x} is not a notification")
        self.pdu_type = pdu_type


@dataclass(slots=True)
class VarBind:
    oid: str
    type: str
    value: Any  # int | bytes | str (OID, IpAddress) | None


@dataclass(slots=True)
class TrapV1:
    """The SNMPv1 Trap-PDU header fields RFC 3584 maps into varbinds."""

    enterprise: str
    agent_addr: str | None  # None when the field is not a usable IPv4 address
    generic_trap: int
    specific_trap: int
    time_stamp: int


@dataclass(slots=True)
class CommunityMessage:
    version: int  # VERSION_1 or VERSION_2C
    community: bytes
    pdu_type: int
    request_id: int
    varbinds: list[VarBind] = field(default_factory=list)
    v1: TrapV1 | None = None
    varbind_span: tuple[int, int] = (0, 0)  # the varbind-list TLV in the datagram (informs)

    @property
    def is_inform(self) -> bool:
        return self.pdu_type == PDU_INFORM


def message_version(data: bytes) -> int:
    """The msgVersion of an SNMP message (0 v1, 1 v2c, 3 v3); :class:`BerError` if the
    envelope is not a SEQUENCE starting with a small INTEGER."""
    end = len(data)
    start, stop = ber.expect(data, 0, end, ber.SEQUENCE, "message")
    vstart, vstop = ber.expect(data, start, stop, ber.INTEGER, "version")
    return ber.decode_signed(data, vstart, vstop, 4)


def _value(data: bytes, tag: int, start: int, stop: int) -> Any:
    if tag == ber.OCTET_STRING or tag == ber.OPAQUE:
        return data[start:stop]
    if tag == ber.INTEGER:
        # Integer32 on the wire is at most 4 octets, but agents that send an unsigned value as
        # INTEGER need 5; up to 8 is kept rather than losing the trap, beyond that is malformed.
        return ber.decode_signed(data, start, stop, 8)
    if tag in (ber.COUNTER32, ber.GAUGE32, ber.TIMETICKS):
        return ber.decode_unsigned(data, start, stop, 5)
    if tag == ber.OBJECT_IDENTIFIER:
        return ber.decode_oid(data, start, stop)
    if tag == ber.IP_ADDRESS:
        if stop - start != 4:
            raise BerError("bad_ipaddress", start)
        return str(ipaddress.IPv4Address(data[start:stop]))
    if tag == ber.COUNTER64:
        return ber.decode_unsigned(data, start, stop, 9)
    if tag in (ber.NULL, ber.NO_SUCH_OBJECT, ber.NO_SUCH_INSTANCE, ber.END_OF_MIB_VIEW):
        if stop != start:
            raise BerError("bad_null", start)
        return None
    if tag & 0x20:
        raise BerError("constructed_value", start)  # nesting where SMI allows only scalars
    raise BerError("unknown_value_type", start)


def _varbinds(data: bytes, pos: int, end: int, max_varbinds: int) -> list[VarBind]:
    out: list[VarBind] = []
    read_header = ber.read_header
    names = TYPE_NAMES
    while pos < end:
        tag, vb_start, vb_stop = read_header(data, pos, end)
        if tag != ber.SEQUENCE:
            raise BerError("unexpected_varbind_tag", pos)
        if len(out) >= max_varbinds:
            raise BerError("too_many_varbinds", pos)
        tag, ostart, ostop = read_header(data, vb_start, vb_stop)
        if tag != ber.OBJECT_IDENTIFIER:
            raise BerError("unexpected_name_tag", vb_start)
        oid = ber.decode_oid(data, ostart, ostop)
        tag, vstart, vstop = read_header(data, ostop, vb_stop)
        if vstop != vb_stop:
            raise BerError("trailing_bytes", vstop)
        out.append(VarBind(oid, names.get(tag, ""), _value(data, tag, vstart, vstop)))
        pos = vb_stop
    return out


def decode_message(data: bytes, max_varbinds: int = DEFAULT_MAX_VARBINDS) -> CommunityMessage:
    """Decode one SNMPv1/v2c datagram carrying a notification.

    Raises :class:`BerError` (malformed, with a reason) or :class:`UnsupportedPdu`
    (well-formed but not a trap or inform for this version).
    """
    end = len(data)
    read_header = ber.read_header
    tag, start, stop = read_header(data, 0, end)
    if tag != ber.SEQUENCE:
        raise BerError("unexpected_message_tag", 0)
    if stop != end:
        raise BerError("trailing_bytes", stop)
    tag, vstart, vstop = read_header(data, start, stop)
    if tag != ber.INTEGER:
        raise BerError("unexpected_version_tag", start)
    version = ber.decode_signed(data, vstart, vstop, 4)
    if version not in (VERSION_1, VERSION_2C):
        raise BerError("bad_version", vstart)
    tag, cstart, cstop = read_header(data, vstop, stop)
    if tag != ber.OCTET_STRING:
        raise BerError("unexpected_community_tag", vstop)
    community = data[cstart:cstop]
    pdu_type, pstart, pstop = read_header(data, cstop, stop)
    if pstop != stop:
        raise BerError("trailing_bytes", pstop)
    if pdu_type & 0xE0 != 0xA0:
        raise BerError("unexpected_pdu_tag", cstop)
    if version == VERSION_1:
        if pdu_type != PDU_TRAP_V1:
            raise UnsupportedPdu(pdu_type)
        return _trap_v1(data, pstart, pstop, community, max_varbinds)
    if pdu_type not in (PDU_TRAP_V2, PDU_INFORM):
        raise UnsupportedPdu(pdu_type)
    s, e = ber.expect(data, pstart, pstop, ber.INTEGER, "request_id")
    request_id = ber.decode_signed(data, s, e, 4)
    s, e = ber.expect(data, e, pstop, ber.INTEGER, "error_status")
    ber.decode_signed(data, s, e, 4)
    s, e = ber.expect(data, e, pstop, ber.INTEGER, "error_index")
    ber.decode_signed(data, s, e, 4)
    list_pos = e
    s, e = ber.expect(data, list_pos, pstop, ber.SEQUENCE, "varbind_list")
    if e != pstop:
        raise BerError("trailing_bytes", e)
    varbinds = _varbinds(data, s, e, max_varbinds)
    return CommunityMessage(
        VERSION_2C, community, pdu_type, request_id, varbinds, None, (list_pos, e)
    )


def _trap_v1(
    data: bytes, pos: int, end: int, community: bytes, max_varbinds: int
) -> CommunityMessage:
    s, e = ber.expect(data, pos, end, ber.OBJECT_IDENTIFIER, "enterprise")
    enterprise = ber.decode_oid(data, s, e)
    tag, s, e = ber.read_header(data, e, end)
    # RFC 1157 says IpAddress; some agents send an OCTET STRING. A bad address keeps the trap
    # (the packet source stands in for the agent) rather than losing it.
    if tag not in (ber.IP_ADDRESS, ber.OCTET_STRING):
        raise BerError("unexpected_agent_addr_tag", s)
    agent_addr = str(ipaddress.IPv4Address(data[s:e])) if e - s == 4 else None
    s, e = ber.expect(data, e, end, ber.INTEGER, "generic_trap")
    generic = ber.decode_signed(data, s, e, 4)
    if not 0 <= generic <= 6:
        raise BerError("bad_generic_trap", s)
    s, e = ber.expect(data, e, end, ber.INTEGER, "specific_trap")
    specific = ber.decode_signed(data, s, e, 4)
    s, e = ber.expect(data, e, end, ber.TIMETICKS, "time_stamp")
    time_stamp = ber.decode_unsigned(data, s, e, 5)
    list_pos = e
    s, e = ber.expect(data, list_pos, end, ber.SEQUENCE, "varbind_list")
    if e != end:
        raise BerError("trailing_bytes", e)
    varbinds = _varbinds(data, s, e, max_varbinds)
    v1 = TrapV1(enterprise, agent_addr, generic, specific, time_stamp)
    return CommunityMessage(VERSION_1, community, PDU_TRAP_V1, 0, varbinds, v1, (list_pos, e))


def v1_trap_oid(v1: TrapV1) -> str:
    """RFC 3584 §3.1.1 (2): the snmpTrapOID.0 value of an SNMPv1 trap."""
    if v1.generic_trap == 6:
        return f"{v1.enterprise}.0.{v1.specific_trap}"
    return f"{SNMP_TRAPS}.{v1.generic_trap + 1}"


def v2_varbinds(msg: CommunityMessage) -> list[VarBind]:
    """The notification's varbinds in SNMPv2 form: sysUpTime.0, snmpTrapOID.0, the rest.

    For v1 this is the RFC 3584 §3.1.1 translation (snmpTrapAddress.0 and
    snmpTrapEnterprise.0 appended; snmpTrapCommunity.0 deliberately not, so the community
    never reaches storage). v2c varbinds are returned as received.
    """
    v1 = msg.v1
    if v1 is None:
        return msg.varbinds
    out = [
        VarBind(SYS_UPTIME_0, "TimeTicks", v1.time_stamp),
        VarBind(SNMP_TRAP_OID_0, "ObjectIdentifier", v1_trap_oid(v1)),
        *msg.varbinds,
    ]
    if v1.agent_addr is not None:
        out.append(VarBind(SNMP_TRAP_ADDRESS_0, "IpAddress", v1.agent_addr))
    out.append(VarBind(SNMP_TRAP_ENTERPRISE_0, "ObjectIdentifier", v1.enterprise))
    return out


def encode_inform_response(data: bytes, msg: CommunityMessage) -> bytes:
    """The Response-PDU acknowledging a v2c InformRequest (RFC 3416 §4.2.7): same request-id,
    no error, the request's varbind list copied byte for byte."""
    s, e = msg.varbind_span
    pdu = (
        ber.encode_integer(msg.request_id)
        + ber.encode_integer(0)
        + ber.encode_integer(0)
        + data[s:e]
    )
    body = (
        ber.encode_integer(msg.version)
        + ber.encode_tlv(ber.OCTET_STRING, msg.community)
        + ber.encode_tlv(PDU_RESPONSE, pdu)
    )
    return ber.encode_tlv(ber.SEQUENCE, body)


def encode_trap_v2c(
    community: bytes,
    trap_oid: str,
    varbinds: list[tuple[str, int, bytes]],
    *,
    request_id: int = 1,
    uptime: int = 0,
    inform: bool = False,
) -> bytes:
    """A v2c SNMPv2-Trap (or InformRequest) message; ``varbinds`` are (oid, tag, content).

    Used by the benchmark and tests to make traps without a third-party encoder.
    """
    vbs = [
        ber.encode_tlv(
            ber.SEQUENCE, ber.encode_oid(SYS_UPTIME_0) + ber.encode_unsigned(uptime, ber.TIMETICKS)
        ),
        ber.encode_tlv(ber.SEQUENCE, ber.encode_oid(SNMP_TRAP_OID_0) + ber.encode_oid(trap_oid)),
    ]
    for oid, tag, content in varbinds:
        vbs.append(ber.encode_tlv(ber.SEQUENCE, ber.encode_oid(oid) + ber.encode_tlv(tag, content)))
    pdu = (
        ber.encode_integer(request_id)
        + ber.encode_integer(0)
        + ber.encode_integer(0)
        + ber.encode_tlv(ber.SEQUENCE, b"".join(vbs))
    )
    body = (
        ber.encode_integer(VERSION_2C)
        + ber.encode_tlv(ber.OCTET_STRING, community)
        + ber.encode_tlv(PDU_INFORM if inform else PDU_TRAP_V2, pdu)
    )
    return ber.encode_tlv(ber.SEQUENCE, body)
