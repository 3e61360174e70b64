"""Cisco IOS / IOS-XE / NX-OS: ``%FACILITY-SEVERITY-MNEMONIC: text``.

The mnemonic picks the handler (interface up/down, configuration, ACL log, login, IPS
signatures); any other mnemonic still gets vendor, product, code and severity. The core syslog
decoder already took off the sequence number and the device's own stamp.
"""

from __future__ import annotations

import re

from appliance.protocols.syslog.message import SyslogMessage
from appliance.protocols.syslog.vendors.base import (
    Fields,
    VendorDecoder,
    authentication,
    config_change,
    intrusion_alert,
    network_verdict,
    observer,
    set_int,
    set_ip,
    transport,
)

_HEAD = re.compile(r"%([A-Z][A-Z0-9_]*(?:-[A-Z0-9_]+)?)-([0-7])-([A-Z0-9_]+): ?")
_IFACE_STATE = re.compile(r"Interface ([^,]+), changed state to (?:administratively )?(\w+)")
_CONFIG = re.compile(r"Configured from (\S+)(?: by (\S+))?(?: on (\S+))?(?: \(([0-9a-fA-F.:]+)\))?")
_ACL = re.compile(
    r"list (\S+) (permitted|denied) (\w+) ([0-9a-fA-F.:]+)(?:\((\d+)\))?(?: \([^)]*\))? -> "
    r"([0-9a-fA-F.:]+)(?:\((\d+)\))?(?:, (\d+) packets?)?"
)
_LOGIN = re.compile(
    r"Login (failed|Success) \[user: ([^\]]*)\] \[Source: ([^\]]*)\]"
    r"(?: \[localport: (\d+)\])?"
)
_SIG = re.compile(
    r"Sig:(\d+) Subsig:(\d+) Sev:(\d+) (.*?) \[([0-9a-fA-F.:]+):(\d+) -> "
    r"([0-9a-fA-F.:]+):(\d+)\]"
)


def decode(msg: SyslogMessage, fields: Fields) -> bool:
    text = msg.message
    m = _HEAD.match(text)
    if m is None:
        return False
    facility, severity, mnemonic = m.groups()
    body = text[m.end() :]
    observer(fields, "Cisco", "ios")
    fields["event.code"] = f"{facility}-{severity}-{mnemonic}"
    fields["event.severity"] = int(severity)
    fields["cisco.ios.facility"] = facility
    fields["message"] = body
    if mnemonic in ("UPDOWN", "CHANGED"):
        im = _IFACE_STATE.search(body)
        if im is not None:
            fields["observer.ingress.interface.name"] = im.group(1)
            fields["event.action"] = "interface_up" if im.group(2) == "up" else "interface_down"
            fields["event.category"] = ["network"]
            fields["event.type"] = ["change"]
    elif mnemonic in ("CONFIG_I", "CONFIG"):
        config_change(fields)
        cm = _CONFIG.search(body)
        if cm is not None:
            if cm.group(2):
                fields["user.name"] = cm.group(2)
            set_ip(fields, "source.ip", cm.group(4))
    elif mnemonic.startswith("IPACCESSLOG"):
        am = _ACL.search(body)
        if am is not None:
            rule, verdict, proto, src, sport, dst, dport, packets = am.groups()
            network_verdict(fields, "allow" if verdict == "permitted" else "deny")
            fields["rule.name"] = rule
            fields["network.transport"] = transport(proto)
            set_ip(fields, "source.ip", src)
            set_int(fields, "source.port", sport)
            set_ip(fields, "destination.ip", dst)
            set_int(fields, "destination.port", dport)
            set_int(fields, "network.packets", packets)
    elif mnemonic.startswith("LOGIN_"):
        lm = _LOGIN.search(body)
        ok = mnemonic == "LOGIN_SUCCESS"
        authentication(fields, "login", "success" if ok else "failure", lm.group(2) if lm else None)
        if lm is not None:
            set_ip(fields, "source.ip", lm.group(3))
            set_int(fields, "destination.port", lm.group(4))
    elif facility == "IPS" and mnemonic == "SIGNATURE":
        sm = _SIG.search(body)
        intrusion_alert(fields)
        if sm is not None:
            fields["rule.id"] = sm.group(1)
            fields["rule.name"] = sm.group(4)
            set_ip(fields, "source.ip", sm.group(5))
            set_int(fields, "source.port", sm.group(6))
            set_ip(fields, "destination.ip", sm.group(7))
            set_int(fields, "destination.port", sm.group(8))
    return True


DECODER = VendorDecoder(name="cisco_ios", decode=decode, prefixes=("%",), order=60)
