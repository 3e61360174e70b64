"""Cisco ASA, Firepower Threat Defense and PIX: ``%ASA-6-302013: Built outbound TCP ...``.

The message ID picks the handler: connection and ACL messages share one endpoint pattern
(``iface:ip/port`` pairs after from/to or src/dst), authentication and configuration
messages have their own. Unknown IDs still get vendor, product, code and severity.
"""

from __future__ import annotations

import re

from appliance.protocols.syslog.message import SyslogMessage
from appliance.protocols.syslog.vendors.base import (
    Fields,
    VendorDecoder,
    authentication,
    config_change,
    network_verdict,
    observer,
    set_int,
    set_ip,
    transport,
)

_HEAD = re.compile(r"%(ASA|FTD|PIX|FWSM)-(?:\w+-)?([0-7])-(\d{6}): ?")
_ENDPOINTS = re.compile(
    r"(?:from|src|for|faddr) (?:([A-Za-z][\w\-.]*):)?([0-9a-fA-F.:]*[0-9a-fA-F])(?:/(\w+))?"
    r"(?: \([^)]*\))? (?:to|dst|gaddr|laddr) (?:([A-Za-z][\w\-.]*):)?"
    r"([0-9a-fA-F.:]*[0-9a-fA-F])(?:/(\w+))?"
)
_PROTO = re.compile(r"\b(TCP|UDP|ICMP|GRE|ESP|tcp|udp|icmp|gre|esp|icmp6|ICMPv6)\b")
_PROTO_NUM = re.compile(r"protocol (\d+)")
_BYTES = re.compile(r"bytes (\d+)")
_ACL = re.compile(r'(?:access-group|access-list) "?([\w\-.]+)"?')
_IFACE = re.compile(r"on interface ([\w\-./]+)")
_LOGIN = re.compile(
    r'Login (denied|permitted) from ([0-9a-fA-F.:]+)/(\d+) to .*? for user "([^"]*)"'
)
_AAA = re.compile(r"AAA user \w+ (Successful|Rejected).*?[Uu]ser = ([^:,]+?)(?:[:,]|$)")
_AAA_IP = re.compile(r"user IP = ([0-9a-fA-F.:]+)")
_UNAME = re.compile(r"(?:Uname|Username|User|user)[:=]? '?([\w\-.@\\]+)'?")
# "User logged out: Uname: x", "User priv level changed: Uname: x": the labelled name wins.
_UNAME_LABEL = re.compile(r"Uname: '?([\w\-.@\\]+)'?")
# 716xxx/722xxx WebVPN/AnyConnect sessions: "Group <g> User <u> IP <a>" (brackets optional).
_VPN_USER = re.compile(r"User <([^>]*)> IP <([0-9a-fA-F.:]+)>|User (\S+) IP ([0-9a-fA-F.:]+)")
_USER_CMD = re.compile(r"User '([^']*)'(?:, running '[^']*' from IP ([0-9a-fA-F.:]+),)? executed")

PRODUCTS = {"ASA": "asa", "FTD": "ftd", "PIX": "pix", "FWSM": "fwsm"}
# Message IDs about connections/ACLs whose text has the endpoint shape above.
DENY_IDS = {
    "106001",
    "106002",
    "106011",
    "106006",
    "106007",
    "106010",
    "106014",
    "106015",
    "106016",
    "106017",
    "106020",
    "106021",
    "106022",
    "106023",
    "710003",
    "419002",
    "313001",
    "313004",
    "733100",
    "710005",
}
ALLOW_IDS = {"710001", "710002", "106100", "302020", "302013", "302015", "302017"}
END_IDS = {"302014", "302016", "302018", "302021", "302023", "302304"}
CONFIG_IDS = {
    "111001",
    "111002",
    "111003",
    "111004",
    "111005",
    "111007",
    "111008",
    "111009",
    "111010",
    "502101",
    "502102",
    "502103",
    "505015",
}


def _network(text: str, code: str, fields: Fields) -> None:
    lowered = text[:60].lower()
    if code in END_IDS:
        action = "end"
    elif code in ("302013", "302015", "302017", "302020"):
        action = "start"
    elif "permitted" in lowered or code in ("710001", "710002"):
        action = "allow"
    elif "discard" in lowered or "drop" in lowered:
        action = "drop"
    else:
        action = "deny"
    network_verdict(fields, action)
    m = _ENDPOINTS.search(text)
    if m is not None:
        src_if, src, sport, dst_if, dst, dport = m.groups()
        if code in ("302013", "302015") and text.startswith("Built outbound"):
            # "for" names the lower-security (outside) side and "to" the inside one; an
            # outbound connection was opened by the inside host, so it is the source.
            src_if, src, sport, dst_if, dst, dport = dst_if, dst, dport, src_if, src, sport
        set_ip(fields, "source.ip", src)
        set_int(fields, "source.port", sport)
        set_ip(fields, "destination.ip", dst)
        set_int(fields, "destination.port", dport)
        if src_if:
            fields["observer.ingress.interface.name"] = src_if
        if dst_if:
            fields["observer.egress.interface.name"] = dst_if
    p = _PROTO.search(text, 0, 80)
    if p is not None:
        fields["network.transport"] = transport(p.group(1))
    else:
        pn = _PROTO_NUM.search(text)
        if pn is not None:
            fields["network.transport"] = transport(pn.group(1))
            fields["network.iana_number"] = pn.group(1)
    if "bytes " in text:
        b = _BYTES.search(text)
        if b is not None:
            set_int(fields, "network.bytes", b.group(1))
    if "access-" in text:
        a = _ACL.search(text)
        if a is not None:
            fields["rule.name"] = a.group(1)
    if "on interface" in text:
        i = _IFACE.search(text)
        if i is not None:
            fields["observer.ingress.interface.name"] = i.group(1)


def decode(msg: SyslogMessage, fields: Fields) -> bool:
    text = msg.message
    m = _HEAD.match(text)
    if m is None:
        return False
    family, severity, code = m.groups()
    observer(fields, "Cisco", PRODUCTS.get(family, family.lower()), "firewall")
    fields["event.code"] = code
    fields["event.severity"] = int(severity)
    fields["cisco.asa.message_id"] = code
    body = text[m.end() :]
    fields["message"] = body
    if code in DENY_IDS or code in ALLOW_IDS or code in END_IDS:
        _network(body, code, fields)
    elif code in ("605004", "605005"):
        lm = _LOGIN.search(body)
        authentication(
            fields,
            "login",
            "success" if code == "605005" else "failure",
            lm.group(4) if lm else None,
        )
        if lm is not None:
            set_ip(fields, "source.ip", lm.group(2))
            set_int(fields, "source.port", lm.group(3))
    elif code in ("113004", "113005", "113015", "113012"):
        am = _AAA.search(body)
        ok = code in ("113004", "113012")
        authentication(
            fields, "login", "success" if ok else "failure", am.group(2).strip() if am else None
        )
        ip = _AAA_IP.search(body)
        if ip is not None:
            set_ip(fields, "source.ip", ip.group(1))
    elif code in ("611101", "611102", "611103", "113006", "716039", "722051", "716001"):
        vm = _VPN_USER.search(body) if code[:3] in ("716", "722") else None
        um = None if vm else (_UNAME_LABEL.search(body) or _UNAME.search(body))
        user = (vm.group(1) or vm.group(3)) if vm else um.group(1) if um else None
        outcome = "failure" if code in ("611102", "113006", "716039") else "success"
        action = (
            "logout" if code == "611103" else "vpn_login" if code[:3] in ("716", "722") else "login"
        )
        authentication(
            fields,
            action,
            outcome,
            user,
            "end" if action == "logout" else "start",
        )
        if vm is not None:
            set_ip(fields, "source.ip", vm.group(2) or vm.group(4))
    elif code in CONFIG_IDS:
        config_change(fields)
        um = _USER_CMD.search(body)
        if um is not None:
            fields["user.name"] = um.group(1)
            set_ip(fields, "source.ip", um.group(2))
        else:
            un = _UNAME_LABEL.search(body) or _UNAME.search(body)
            if un is not None:
                fields["user.name"] = un.group(1)
    return True


DECODER = VendorDecoder(
    name="cisco_asa",
    decode=decode,
    prefixes=("%ASA-", "%FTD-", "%PIX-", "%FWSM-"),
    order=10,
)
