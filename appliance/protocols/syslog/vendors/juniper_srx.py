"""Juniper SRX (Junos) structured logs: ``RT_FLOW``, ``RT_IDS``/``RT_SCREEN``, ``RT_UTM``.

Native RFC 5424 (the SD-ELEMENT ``junos@2636...`` is already parsed by the core) or the same
text relayed inside a 3164 line (``junos-flow: 2017-...Z host RT_FLOW - RT_FLOW_SESSION_DENY
[junos@... k="v"]``), whose SD we parse here with the core's parser.

Still code, not a decoder file (docs/decoders.md): its input is the RFC 5424 structured data
the header decoder parsed (``msg.structured_data``) and the MSGID, and for relayed lines the
tag before the ``[junos@`` element; decoder files (and the native interpreter, which is handed
the message text) read the message text only. The sums are expressible now (``sum``); a step
reading an SD element's parameters as captures, with the MSGID as one, is what would move it.
"""

from __future__ import annotations

from appliance.protocols.syslog.message import SyslogMessage
from appliance.protocols.syslog.rfc5424 import parse_structured_data
from appliance.protocols.syslog.vendors.base import (
    Fields,
    VendorDecoder,
    intrusion_alert,
    network_verdict,
    observer,
    set_int,
    set_ip,
    small_int,
    transport,
)

FLOW_ACTIONS = {
    "RT_FLOW_SESSION_CREATE": "start",
    "RT_FLOW_SESSION_CLOSE": "end",
    "RT_FLOW_SESSION_DENY": "deny",
    "APPTRACK_SESSION_CREATE": "start",
    "APPTRACK_SESSION_CLOSE": "end",
}


def _sd(msg: SyslogMessage) -> tuple[str, dict[str, str]] | None:
    if msg.structured_data:
        for sd_id, params in msg.structured_data.items():
            if sd_id.startswith("junos@"):
                return msg.msgid or "", params
    text = msg.message
    lb = text.find("[junos@")
    if lb < 0:
        return None
    head = text[:lb].split()
    tag = head[-1] if head else ""
    if tag == "-" and len(head) >= 2:
        tag = head[-2]
    sd, _ = parse_structured_data(text, lb, [])
    if not sd:
        return None
    return tag, next(iter(sd.values()))


def decode(msg: SyslogMessage, fields: Fields) -> bool:
    got = _sd(msg)
    if got is None:
        return False
    tag, p = got
    observer(fields, "Juniper", "SRX", "firewall")
    fields["event.code"] = tag
    set_ip(fields, "source.ip", p.get("source-address"))
    set_ip(fields, "destination.ip", p.get("destination-address"))
    set_int(fields, "source.port", p.get("source-port"))
    set_int(fields, "destination.port", p.get("destination-port"))
    set_ip(fields, "source.nat.ip", p.get("nat-source-address"))
    set_ip(fields, "destination.nat.ip", p.get("nat-destination-address"))
    proto = p.get("protocol-name") or p.get("protocol-id")
    if proto:
        fields["network.transport"] = transport(proto)
    for key, target in (
        ("policy-name", "rule.name"),
        ("source-zone-name", "observer.ingress.zone"),
        ("destination-zone-name", "observer.egress.zone"),
        ("interface-name", "observer.ingress.interface.name"),
        ("application", "network.application"),
        ("username", "user.name"),
        ("url", "url.domain"),
    ):
        v = p.get(key)
        if v and v != "N/A" and v != "UNKNOWN":
            fields[target] = v
    if tag in FLOW_ACTIONS:
        network_verdict(fields, FLOW_ACTIONS[tag])
        sent, rcvd = small_int(p.get("bytes-from-client")), small_int(p.get("bytes-from-server"))
        if sent is not None and rcvd is not None:
            fields["network.bytes"] = sent + rcvd
        ps, pr = small_int(p.get("packets-from-client")), small_int(p.get("packets-from-server"))
        if ps is not None and pr is not None:
            fields["network.packets"] = ps + pr
    elif tag.startswith(("RT_SCREEN", "RT_IDS", "IDP_")) or "attack-name" in p:
        intrusion_alert(fields)
        if p.get("attack-name"):
            fields["rule.name"] = p["attack-name"]
        if p.get("action"):
            fields["event.action"] = p["action"]
            fields["event.outcome"] = (
                "failure" if p["action"] in ("drop", "deny", "reject", "close") else "success"
            )
    else:
        fields["event.category"] = ["network"]
    return True


DECODER = VendorDecoder(
    name="juniper_srx",
    decode=decode,
    programs=(
        "RT_FLOW",
        "RT_IDS",
        "RT_UTM",
        "RT_SCREEN",
        "RT_IDP",
        "RT_AAMW",
        "RT_SECINTEL",
        "junos-flow",
        "junos-ids",
        "junos-utm",
        "junos-idp",
    ),
)
