"""Palo Alto Networks PAN-OS CSV logs: TRAFFIC, THREAT, SYSTEM (and CONFIG) by position.

``FUTURE_USE,receive_time,serial,TYPE,subtype,...``: the type (4th field) selects the column
map of the PAN-OS syslog field reference; short (truncated) lines keep what they have.

Still code, not a decoder file (docs/decoders.md): the file format's CSV step has the per-type
column lists, but PAN-OS quotes fields holding commas (read with :mod:`csv`), the generated or
receive time is the event time (files cannot set it), a threat's ``name(id)`` is split at its
last parenthesis, severities map to integers, and a session end adds ``end`` to the event type.
"""

from __future__ import annotations

import csv

from appliance.protocols.syslog.message import SyslogMessage
from appliance.protocols.syslog.vendors.base import (
    Fields,
    VendorDecoder,
    config_change,
    local_time,
    network_verdict,
    observer,
    set_int,
    set_ip,
    transport,
)

TYPES = (
    "TRAFFIC",
    "THREAT",
    "SYSTEM",
    "CONFIG",
    "GLOBALPROTECT",
    "USERID",
    "HIPMATCH",
    "AUTHENTICATION",
    "DECRYPTION",
    "CORRELATION",
    "OTHERS",
)
ACTIONS = {
    "allow": "allow",
    "deny": "deny",
    "drop": "drop",
    "drop-icmp": "drop",
    "reset-both": "reject",
    "reset-client": "reject",
    "reset-server": "reject",
    "block-url": "deny",
    "block-continue": "deny",
    "alert": "allow",
    "sinkhole": "drop",
    "drop-all-packets": "drop",
    "block-ip": "deny",
    "blocked": "deny",
}
SEVERITY = {"critical": 1, "high": 2, "medium": 3, "low": 4, "informational": 5}


def _cols(text: str) -> list[str]:
    if '"' not in text:
        return text.split(",")
    try:
        return next(csv.reader([text]))
    except csv.Error:  # a stray CR outside quotes: read it unquoted
        return text.split(",")


def _get(cols: list[str], i: int) -> str:
    return cols[i] if i < len(cols) else ""


def _session(cols: list[str], fields: Fields) -> None:
    set_ip(fields, "source.ip", _get(cols, 7))
    set_ip(fields, "destination.ip", _get(cols, 8))
    set_ip(fields, "source.nat.ip", _get(cols, 9))
    set_ip(fields, "destination.nat.ip", _get(cols, 10))
    for i, key in (
        (11, "rule.name"),
        (12, "source.user.name"),
        (13, "destination.user.name"),
        (14, "network.application"),
        (16, "observer.ingress.zone"),
        (17, "observer.egress.zone"),
        (18, "observer.ingress.interface.name"),
        (19, "observer.egress.interface.name"),
    ):
        v = _get(cols, i)
        if v:
            fields[key] = v
    if fields.get("source.user.name"):
        fields["user.name"] = fields["source.user.name"]
    set_int(fields, "source.port", _get(cols, 24))
    set_int(fields, "destination.port", _get(cols, 25))
    proto = _get(cols, 29)
    if proto:
        fields["network.transport"] = transport(proto)


def decode(msg: SyslogMessage, fields: Fields) -> bool:
    text = msg.message
    if text[1:2] != "," or text.count(",", 0, 64) < 4:
        return False
    cols = _cols(text)
    kind = _get(cols, 3)
    if kind not in TYPES:
        return False
    observer(fields, "Palo Alto Networks", "PAN-OS", "firewall")
    fields["panw.panos.type"] = kind
    sub = _get(cols, 4)
    if sub:
        fields["panw.panos.sub_type"] = sub
    if _get(cols, 2):
        fields["observer.serial_number"] = cols[2]
    # Generated Time (column 6) else Receive Time (column 1): the firewall's local time.
    stamp = _get(cols, 6) or _get(cols, 1)
    if stamp:
        msg.payload_time = local_time(stamp, "%Y/%m/%d %H:%M:%S")
    if kind == "TRAFFIC":
        _session(cols, fields)
        action = _get(cols, 30)
        network_verdict(fields, ACTIONS.get(action, action or "allow"))
        set_int(fields, "network.bytes", _get(cols, 31))
        set_int(fields, "source.bytes", _get(cols, 32))
        set_int(fields, "destination.bytes", _get(cols, 33))
        set_int(fields, "network.packets", _get(cols, 34))
        if sub == "end":
            fields["event.type"] = [*fields["event.type"], "end"]
    elif kind == "THREAT":
        _session(cols, fields)
        action = _get(cols, 30)
        fields["event.kind"] = "alert"
        fields["event.category"] = ["intrusion_detection"] if sub != "url" else ["network"]
        verdict = ACTIONS.get(action, action)
        if verdict:
            fields["event.action"] = verdict
            fields["event.outcome"] = (
                "failure" if verdict in ("deny", "drop", "reject") else "success"
            )
        misc = _get(cols, 31)
        if misc:
            fields["url.original" if sub == "url" else "file.name"] = misc
        threat = _get(cols, 32)
        if threat:
            name, _, tid = threat.rpartition("(")
            if name and tid.endswith(")"):
                fields["rule.name"] = name
                fields["rule.id"] = tid[:-1]
            else:
                fields["rule.name"] = threat
        sev = _get(cols, 34)
        if sev in SEVERITY:
            fields["event.severity"] = SEVERITY[sev]
            fields["log.level"] = sev
    elif kind == "SYSTEM":
        for i, key in (
            (8, "event.code"),
            (9, "panw.panos.object"),
            (12, "panw.panos.module"),
            (14, "message"),
        ):
            v = _get(cols, i)
            if v:
                fields[key] = v
        sev = _get(cols, 13)
        if sev in SEVERITY:
            fields["event.severity"] = SEVERITY[sev]
        eid = _get(cols, 8)
        if eid.startswith("auth-") or eid in ("globalprotectgateway-auth-fail",):
            fields["event.category"] = ["authentication"]
            fields["event.outcome"] = "failure" if "fail" in eid else "success"
    elif kind == "CONFIG":
        config_change(fields)
        set_ip(fields, "source.ip", _get(cols, 7))
        if _get(cols, 12):
            fields["user.name"] = cols[12]
    return True


DECODER = VendorDecoder(
    name="paloalto",
    decode=decode,
    prefixes=tuple(f"{d}," for d in "0123456789"),
    order=30,
)
