"""F5 BIG-IP: ``[level] process[pid]: 01010038:5: text`` (message code, then severity digit).

The core takes ``process[pid]:`` as the tag when BIG-IP's level word is absent; otherwise the
level word comes first. The 8-hex-digit code is what identifies a BIG-IP line.
"""

from __future__ import annotations

import re

from appliance.protocols.syslog.message import SyslogMessage
from appliance.protocols.syslog.vendors.base import (
    Fields,
    VendorDecoder,
    authentication,
    config_change,
    observer,
    set_int,
    set_ip,
)

_CODE = re.compile(r"([0-9a-f]{8}):([0-7]): ")
_LEVEL_PROC = re.compile(r"(\w+) ([\w\-./]+)\[(\d+)\]: ")
_IP_PORT = re.compile(r"(\d{1,3}(?:\.\d{1,3}){3})(?::|\.|%\d+:)(\d{1,5})\b")
_AUDIT_USER = re.compile(r"user (\S+)")
_LOGIN = re.compile(
    r"(?:Login|login|authentication) (?:failed|failure|succeeded|success)"
    r"(?: for user \"?([^\"\s]+)\"?)?(?: from ([0-9a-fA-F.:]+))?"
)


def decode(msg: SyslogMessage, fields: Fields) -> bool:
    text = msg.message
    m = _CODE.match(text)
    if m is None:
        lp = _LEVEL_PROC.match(text)
        if lp is None:
            return False
        m = _CODE.match(text, lp.end())
        if m is None:
            return False
        fields["log.level"] = lp.group(1)
        fields["process.name"] = lp.group(2)
        set_int(fields, "process.pid", lp.group(3))
    observer(fields, "F5", "BIG-IP")
    fields["event.code"] = m.group(1)
    fields["event.severity"] = int(m.group(2))
    body = text[m.end() :]
    fields["message"] = body
    ipp = _IP_PORT.search(body)
    if ipp is not None:  # a virtual server or pool member the message is about
        set_ip(fields, "destination.ip", ipp.group(1))
        set_int(fields, "destination.port", ipp.group(2))
    if body.startswith("AUDIT"):
        config_change(fields)
        u = _AUDIT_USER.search(body)
        if u is not None:
            fields["user.name"] = u.group(1)
    else:
        lm = _LOGIN.search(body)
        if lm is not None:
            ok = "succe" in lm.group(0)
            authentication(fields, "login", "success" if ok else "failure", lm.group(1))
            set_ip(fields, "source.ip", lm.group(2))
    return True


def _claims(msg: SyslogMessage, fields: Fields) -> bool:
    """Fallback entry: only a line whose first 60 characters hold ``]: `` plus a code."""
    text = msg.message
    if "]: " not in text[:60] and not (text[8:9] == ":" and text[10:12] == ": "):
        return False
    return decode(msg, fields)


DECODER = VendorDecoder(
    name="f5_bigip",
    decode=_claims,
    programs=(
        "tmm",
        "tmm1",
        "mcpd",
        "apmd",
        "bigd",
        "sod",
        "tmsh",
        "httpd",
        "logger",
        "asm_config_server.pl",
        "chmand",
        "lacpd",
        "csyncd",
    ),
    fallback=True,
    needle="]: ",  # "level process[pid]: code:n: ": the core found no tag in it
    order=40,
)
