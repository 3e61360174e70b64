"""Linux netfilter LOG/NFLOG lines (iptables, nftables, firewalld, ufw) from ``kernel``.

``[uptime] PREFIX IN=eth0 OUT= MAC=... SRC=... DST=... PROTO=TCP SPT=... DPT=...``: the log
prefix is the rule's name and, by convention, says the verdict (DROP, REJECT, ACCEPT, BLOCK).
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
    transport,
)


def _verdict(prefix: str) -> str | None:
    p = prefix.upper()
    if "REJECT" in p:
        return "reject"
    if "DROP" in p:
        return "drop"
    if "BLOCK" in p or "DENY" in p or "DENIED" in p:
        return "deny"
    if "ACCEPT" in p or "ALLOW" in p or "PASS" in p:
        return "allow"
    return None


def decode(msg: SyslogMessage, fields: Fields) -> bool:
    text = msg.message
    at = text.find("IN=")
    if at < 0 or " SRC=" not in text:
        return False
    prefix = text[:at].strip()
    if prefix.startswith("["):  # kernel uptime "[4475569.016000]"
        prefix = prefix[prefix.find("]") + 1 :].strip()
    kv: dict[str, str] = {}
    for token in text[at:].split(" "):
        key, eq, value = token.partition("=")
        if eq and key not in kv:
            kv[key] = value
    observer(fields, "Linux", "netfilter", "firewall")
    verdict = _verdict(prefix)
    if verdict is not None:
        network_verdict(fields, verdict)
    else:
        fields["event.category"] = ["network"]
        fields["event.type"] = ["connection"]
        fields["event.action"] = "log"
    if prefix:
        fields["rule.name"] = prefix.rstrip(":")
    if kv.get("IN"):
        fields["observer.ingress.interface.name"] = kv["IN"]
    if kv.get("OUT"):
        fields["observer.egress.interface.name"] = kv["OUT"]
    set_ip(fields, "source.ip", kv.get("SRC"))
    set_ip(fields, "destination.ip", kv.get("DST"))
    set_int(fields, "source.port", kv.get("SPT"))
    set_int(fields, "destination.port", kv.get("DPT"))
    set_int(fields, "network.bytes", kv.get("LEN"))
    if kv.get("PROTO"):
        fields["network.transport"] = transport(kv["PROTO"])
    if kv.get("MAC"):
        fields["netfilter.mac"] = kv["MAC"]
    return True


DECODER = VendorDecoder(
    name="netfilter",
    decode=decode,
    programs=("kernel", "ufw", "firewalld"),
)
