"""Generic ``key=value`` payloads no vendor decoder claimed (appliances, scripts, loggers).

Only a message whose first word is ``key=value`` is read this way, so free text that merely
contains an ``=`` stays as it is. Well-known keys map to ECS; the rest are kept under
``kv.<key>`` (at most 64 keys).
"""

from __future__ import annotations

from appliance.protocols.syslog.message import SyslogMessage
from appliance.protocols.syslog.vendors.base import (
    Fields,
    VendorDecoder,
    kv_pairs,
    set_int,
    set_ip,
    transport,
)

MAX_KEYS = 64
IP_KEYS = {
    "src": "source.ip",
    "srcip": "source.ip",
    "src_ip": "source.ip",
    "source_ip": "source.ip",
    "client_ip": "source.ip",
    "dst": "destination.ip",
    "dstip": "destination.ip",
    "dst_ip": "destination.ip",
    "dest_ip": "destination.ip",
    "destination_ip": "destination.ip",
}
PORT_KEYS = {
    "spt": "source.port",
    "srcport": "source.port",
    "src_port": "source.port",
    "sport": "source.port",
    "dpt": "destination.port",
    "dstport": "destination.port",
    "dst_port": "destination.port",
    "dest_port": "destination.port",
    "dport": "destination.port",
}
STR_KEYS = {
    "user": "user.name",
    "username": "user.name",
    "usr": "user.name",
    "action": "event.action",
    "url": "url.original",
    "host": "host.name",
    "hostname": "host.name",
    "msg": "message",
    "rule": "rule.name",
}


def decode(msg: SyslogMessage, fields: Fields) -> bool:
    text = msg.message
    sp = text.find(" ")
    eq = text.find("=", 0, sp if sp > 0 else len(text))
    if eq <= 0:
        return False
    kv = kv_pairs(text, limit=MAX_KEYS)
    if len(kv) < 2:
        return False
    for key, value in kv.items():
        low = key.lower()
        if low in IP_KEYS:
            set_ip(fields, IP_KEYS[low], value)
        elif low in PORT_KEYS:
            set_int(fields, PORT_KEYS[low], value)
        elif low in STR_KEYS and value:
            fields[STR_KEYS[low]] = value
        elif low in ("proto", "protocol") and value:
            fields["network.transport"] = transport(value)
        else:
            fields[f"kv.{key}"] = value
    return True


DECODER = VendorDecoder(name="kv", decode=decode, fallback=True, needle="=", order=90)
