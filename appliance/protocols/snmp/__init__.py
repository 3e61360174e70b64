"""Sans-I/O SNMPv1/v2c notifications: datagram bytes to :class:`CommunityMessage`, v1 mapped to
the v2 form (RFC 3584), and the normalized event; no sockets here. SNMPv3 is pysnmp's job
(:mod:`appliance.sources.snmp_v3`)."""

from appliance.protocols.snmp.ber import BerError
from appliance.protocols.snmp.ecs import SeverityTable, trap_event
from appliance.protocols.snmp.message import (
    CommunityMessage,
    TrapV1,
    UnsupportedPdu,
    VarBind,
    decode_message,
    encode_inform_response,
    message_version,
    v2_varbinds,
)

__all__ = [
    "BerError",
    "CommunityMessage",
    "SeverityTable",
    "TrapV1",
    "UnsupportedPdu",
    "VarBind",
    "decode_message",
    "encode_inform_response",
    "message_version",
    "trap_event",
    "v2_varbinds",
]
