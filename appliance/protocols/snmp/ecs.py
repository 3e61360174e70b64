"""Notification → normalized event: one shape for v1 (already in v2 form), v2c and v3.

Pure: takes the varbinds, who sent them and the receive time. Values that disagree with what
the MIB says (an ``ifDescr`` sent as an INTEGER, the CVE-2014-3565 shape) are stored as sent
with their wire type and simply not used for the interface fields.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from appliance.event import Event
from appliance.mibs import MibResolver
from appliance.protocols.snmp.message import (
    SNMP_TRAP_ADDRESS_0,
    SNMP_TRAP_OID_0,
    SYS_UPTIME_0,
    VarBind,
)

SEVERITY_CODES = {
    "emergency": 0,
    "alert": 1,
    "critical": 2,
    "error": 3,
    "warning": 4,
    "notice": 5,
    "info": 6,
    "debug": 7,
}

IF_INDEX = "1.3.6.1.2.1.2.2.1.1."
IF_DESCR = "1.3.6.1.2.1.2.2.1.2."
IF_ADMIN_STATUS = "1.3.6.1.2.1.2.2.1.7."
IF_OPER_STATUS = "1.3.6.1.2.1.2.2.1.8."
IF_NAME = "1.3.6.1.2.1.31.1.1.1.1."
IF_STATUS_NAMES = {
    1: "up",
    2: "down",
    3: "testing",
    4: "unknown",
    5: "dormant",
    6: "notPresent",
    7: "lowerLayerDown",
}

MAX_TEXT = 2048  # an OCTET STRING longer than this is cut in the event (the count says so)


class SeverityTable:
    """Trap OID or name → syslog severity name; the OID wins over the name."""

    def __init__(self, table: Mapping[str, str], default: str = "info") -> None:
        self.table = dict(table)
        self.default = default

    def lookup(self, trap_oid: str | None, trap_name: str | None) -> str:
        if trap_oid is not None:
            hit = self.table.get(trap_oid)
            if hit is not None:
                return hit
        if trap_name is not None:
            hit = self.table.get(trap_name)
            if hit is not None:
                return hit
        return self.default


def octets_value(raw: bytes) -> tuple[str, bool]:
    """Text when the octets are printable UTF-8, else colon-separated hex (net-snmp's
    Hex-STRING form); the flag says which."""
    if len(raw) > MAX_TEXT:
        raw = raw[:MAX_TEXT]
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        return raw.hex(":"), True
    if text.isprintable() or all(c.isprintable() or c in "\t\r\n" for c in text):
        return text, False
    return raw.hex(":"), True


def varbind_doc(vb: VarBind, resolver: MibResolver) -> dict[str, Any]:
    value = vb.value
    doc: dict[str, Any] = {"oid": vb.oid, "name": resolver.resolve(vb.oid), "type": vb.type}
    if isinstance(value, bytes):
        text, is_hex = octets_value(value)
        doc["value"] = text
        if is_hex:
            doc["encoding"] = "hex"
    else:
        doc["value"] = value
    return doc


def trap_event(
    varbinds: list[VarBind],
    *,
    version: str,
    pdu: str,
    peer_ip: str,
    peer_port: int,
    agent_ip: str | None,
    now: float,
    resolver: MibResolver,
    severities: SeverityTable,
    extra: dict[str, Any] | None = None,
) -> Event:
    """The event for one notification whose varbinds are in SNMPv2 order."""
    trap_oid: str | None = None
    uptime: int | None = None
    docs = []
    if_index: int | None = None
    if_descr: str | None = None
    if_name: str | None = None
    admin: int | None = None
    oper: int | None = None
    trap_address: str | None = None
    for vb in varbinds:
        oid = vb.oid
        value = vb.value
        if oid == SNMP_TRAP_OID_0 and trap_oid is None and isinstance(value, str):
            trap_oid = value
        elif oid == SYS_UPTIME_0 and isinstance(value, int):
            uptime = value
        elif oid == SNMP_TRAP_ADDRESS_0 and vb.type == "IpAddress" and value != "0.0.0.0":
            trap_address = value
        elif isinstance(value, int):
            if oid.startswith(IF_INDEX):
                if_index = value
            elif oid.startswith(IF_ADMIN_STATUS):
                admin = value
            elif oid.startswith(IF_OPER_STATUS):
                oper = value
        elif isinstance(value, bytes) and value:
            if oid.startswith(IF_DESCR):
                if_descr = octets_value(value)[0]
            elif oid.startswith(IF_NAME):
                if_name = octets_value(value)[0]
        docs.append(varbind_doc(vb, resolver))
    trap_name = resolver.name(trap_oid) if trap_oid is not None else None
    action = trap_name or trap_oid or "unknown"
    severity = severities.lookup(trap_oid, trap_name)
    # The device the trap is about: v1 agent-addr, else snmpTrapAddress.0 (RFC 3584, set by
    # proxies and relays), else whoever sent the datagram.
    observer_ip = agent_ip or trap_address or peer_ip
    fields: dict[str, Any] = {
        "event.kind": "event",
        "event.dataset": "snmp.trap",
        "event.action": action,
        "event.severity": SEVERITY_CODES[severity],
        "log.level": severity,
        "observer.ip": observer_ip,
        "source.ip": peer_ip,
        "source.port": peer_port,
        "network.transport": "udp",
        "network.protocol": "snmp",
        "snmp.version": version,
        "snmp.pdu": pdu,
        "snmp.varbinds": docs,
    }
    if trap_oid is not None:
        fields["snmp.trap_oid"] = trap_oid
    if uptime is not None:
        fields["snmp.uptime"] = uptime
    # The interface the notification is about: index from ifIndex (or the instance suffix of
    # ifDescr), the name from ifName or else ifDescr.
    if if_index is None:
        for vb in varbinds:
            if vb.oid.startswith((IF_DESCR, IF_ADMIN_STATUS, IF_OPER_STATUS)):
                suffix = vb.oid.rpartition(".")[2]
                if suffix.isdigit():
                    if_index = int(suffix)
                break
    iface = if_name or if_descr
    if if_index is not None:
        fields["observer.ingress.interface.id"] = str(if_index)
    if iface:
        fields["observer.ingress.interface.name"] = iface
    if admin is not None:
        fields["snmp.interface.admin_status"] = IF_STATUS_NAMES.get(admin, str(admin))
    if oper is not None:
        fields["snmp.interface.oper_status"] = IF_STATUS_NAMES.get(oper, str(oper))
    if extra:
        fields.update(extra)
    summary = f"{action} from {observer_ip}"
    if iface:
        summary += f" interface {iface}"
    fields["message"] = summary
    return Event(timestamp=now, created=now, module="snmp", fields=fields)
