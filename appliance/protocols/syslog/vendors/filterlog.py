"""pfSense / OPNsense ``filterlog``: one CSV line per packet the packet filter logged.

Layout (pfSense ``filterlog`` format): rule, sub-rule, anchor, tracker, interface, reason,
action, direction, IP version, then IPv4 or IPv6 header fields, then per-protocol fields.
"""

from __future__ import annotations

from appliance.protocols.syslog.message import SyslogMessage
from appliance.protocols.syslog.vendors.base import (
    Fields,
    VendorDecoder,
    network_verdict,
    observer,
    set_int,
    set_ip,
)

ACTIONS = {"pass": "allow", "block": "deny", "reject": "reject", "match": "allow"}


def decode(msg: SyslogMessage, fields: Fields) -> bool:
    cols = msg.message.split(",")
    if len(cols) < 9 or cols[8] not in ("4", "6"):
        return False
    observer(fields, "Netgate", "pfSense", "firewall")
    network_verdict(fields, ACTIONS.get(cols[6], cols[6]))
    fields["rule.id"] = cols[3] or cols[0]
    fields["rule.name"] = cols[0]
    fields["observer.ingress.interface.name"] = cols[4]
    fields["network.direction"] = {"in": "inbound", "out": "outbound"}.get(cols[7], cols[7])
    if cols[8] == "4":
        fields["network.type"] = "ipv4"
        if len(cols) < 20:
            return True
        proto, src, dst, nxt = cols[16].lower(), cols[18], cols[19], 20
        fields["network.iana_number"] = cols[15]
    else:
        fields["network.type"] = "ipv6"
        if len(cols) < 17:
            return True
        proto, src, dst, nxt = cols[12].lower(), cols[15], cols[16], 17
        fields["network.iana_number"] = cols[13]
    fields["network.transport"] = proto
    set_ip(fields, "source.ip", src)
    set_ip(fields, "destination.ip", dst)
    if proto in ("tcp", "udp") and len(cols) > nxt + 1:
        set_int(fields, "source.port", cols[nxt])
        set_int(fields, "destination.port", cols[nxt + 1])
    return True


DECODER = VendorDecoder(name="pfsense_filterlog", decode=decode, programs=("filterlog",))
