"""Snort (and Suricata's fast.log) alerts: ``[**] [gid:sid:rev] msg [**] [Classification: c]
[Priority: n] {PROTO} src[:port] -> dst[:port]``, with or without the leading stamp."""

from __future__ import annotations

import re

from appliance.protocols.syslog.message import SyslogMessage
from appliance.protocols.syslog.vendors.base import (
    Fields,
    VendorDecoder,
    intrusion_alert,
    set_int,
    set_ip,
    transport,
)

_ALERT = re.compile(
    r"(?:\[\*\*\] )?\[(\d+):(\d+):(\d+)\] (.*?)(?: \[\*\*\])?"
    r"(?: \[Classification: ([^\]]*)\])?(?: \[Priority: (\d+)\])?"
    r"(?: \[Xref[^\]]*\])* ?\{(\w+)\} ([0-9a-fA-F.:]+?)(?::(\d+))? -> ([0-9a-fA-F.:]+?)(?::(\d+))?$"
)


def decode(msg: SyslogMessage, fields: Fields) -> bool:
    text = msg.message
    at = text.find("[", 0, 40)
    if at < 0:
        return False
    m = _ALERT.match(text, at)
    if m is None:
        return False
    gid, sid, rev, name, classification, priority, proto, src, sport, dst, dport = m.groups()
    fields["observer.vendor"] = "Snort"
    fields["observer.product"] = "Snort"
    fields["observer.type"] = "ids"
    intrusion_alert(fields)
    fields["rule.id"] = sid
    fields["rule.name"] = name
    fields["rule.version"] = rev
    set_int(fields, "snort.gid", gid)
    if classification:
        fields["rule.category"] = classification
    set_int(fields, "event.severity", priority)
    fields["network.transport"] = transport(proto)
    set_ip(fields, "source.ip", src)
    set_int(fields, "source.port", sport)
    set_ip(fields, "destination.ip", dst)
    set_int(fields, "destination.port", dport)
    return True


DECODER = VendorDecoder(
    name="snort",
    decode=decode,
    programs=("snort", "suricata"),
    prefixes=("[**]", "[1:", "[3:", *(f"{m:02d}/" for m in range(1, 13))),
    order=25,
)
