"""Syslog message to normalized event: the ECS fields every syslog event carries.

Vendor decoders (Cisco, FortiGate, ...) add their fields on top of these; this module only maps
the syslog header. Pure: takes the receive time and sender, reads no clock.
"""

from __future__ import annotations

from typing import Any

from appliance.protocols.syslog.message import FACILITY_NAMES, SEVERITY_NAMES, SyslogMessage


def syslog_fields(msg: SyslogMessage, peer_ip: str) -> dict[str, Any]:
    severity = msg.severity
    facility = msg.facility
    fields: dict[str, Any] = {
        "message": msg.message,
        "event.kind": "event",
        "event.dataset": "syslog",
        "observer.ip": peer_ip,
        "log.level": SEVERITY_NAMES[severity],
        "log.syslog.priority": facility * 8 + severity,
        "log.syslog.severity.code": severity,
        "log.syslog.severity.name": SEVERITY_NAMES[severity],
        "log.syslog.facility.code": facility,
        "log.syslog.facility.name": FACILITY_NAMES[facility],
        "log.syslog.format": msg.format,
    }
    if msg.hostname is not None:
        fields["host.hostname"] = msg.hostname
        fields["log.syslog.hostname"] = msg.hostname
    if msg.app_name is not None:
        fields["process.name"] = msg.app_name
        fields["log.syslog.appname"] = msg.app_name
    if msg.procid is not None:
        fields["log.syslog.procid"] = msg.procid
        if msg.procid.isascii() and msg.procid.isdigit() and len(msg.procid) < 10:
            fields["process.pid"] = int(msg.procid)
    if msg.msgid is not None:
        fields["log.syslog.msgid"] = msg.msgid
    if msg.version is not None:
        fields["log.syslog.version"] = msg.version
    if msg.structured_data:
        fields["log.syslog.structured_data"] = msg.structured_data
    if msg.sequence is not None:
        fields["event.sequence"] = msg.sequence
    if msg.errors:
        fields["tags"] = ["syslog_" + e for e in msg.errors]
    return fields
