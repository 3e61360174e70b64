"""IBM QRadar Log Event Extended Format: ``LEEF:1.0|Vendor|Product|Version|EventID|`` then
tab-separated ``key=value`` (LEEF 2.0 names its delimiter in a sixth header field).

Still code, not a decoder file (docs/decoders.md): the delimiter is data (LEEF 2.0's sixth
header field, a character or ``0xNN``), unmapped keys keep their own names as fields, and
antivirus products are handed to ``av_products``.
"""

from __future__ import annotations

from appliance.protocols.syslog.message import SyslogMessage
from appliance.protocols.syslog.vendors import av_products
from appliance.protocols.syslog.vendors.base import (
    Fields,
    VendorDecoder,
    set_int,
    set_ip,
    transport,
)
from appliance.protocols.syslog.vendors.cef_format import leef_delimiter

IP_KEYS = {
    "src": "source.ip",
    "dst": "destination.ip",
    "srcPreNAT": "source.ip",
    "dstPreNAT": "destination.ip",
    "srcPostNAT": "source.nat.ip",
    "dstPostNAT": "destination.nat.ip",
    "identSrc": "source.ip",
}
INT_KEYS = {
    "srcPort": "source.port",
    "dstPort": "destination.port",
    "srcBytes": "source.bytes",
    "dstBytes": "destination.bytes",
    "srcPackets": "source.packets",
    "dstPackets": "destination.packets",
    "sev": "event.severity",
}
STR_KEYS = {
    "usrName": "user.name",
    "cat": "rule.category",
    "identHostName": "host.name",
    "url": "url.original",
    "action": "event.action",
    "domain": "user.domain",
    "srcMAC": "source.mac",
    "dstMAC": "destination.mac",
    "policy": "rule.name",
    "resource": "file.path",
}
MAX_KEYS = 256


def decode(msg: SyslogMessage, fields: Fields) -> bool:
    text = msg.message
    at = text.find("LEEF:", 0, 40)
    if at < 0:
        return False
    head = text[at:].split("|", 6)
    if len(head) < 6:
        return False
    version = head[0][5:]
    delim = "\t"
    if version.startswith("2") and len(head) == 7:
        delim = leef_delimiter(head[5])
        ext = head[6]
    else:
        ext = "|".join(head[5:])
    fields["observer.vendor"] = head[1]
    fields["observer.product"] = head[2]
    fields["observer.version"] = head[3]
    fields["event.code"] = head[4]
    product = (head[1], head[2]) in av_products.PRODUCTS
    pairs: dict[str, str] = {}
    for n, pair in enumerate(ext.split(delim)):
        if n >= MAX_KEYS:
            break
        key, eq, value = pair.partition("=")
        if not eq or not value:
            continue
        if product:
            pairs.setdefault(key, value)
        if key in IP_KEYS:
            set_ip(fields, IP_KEYS[key], value)
        elif key in INT_KEYS:
            set_int(fields, INT_KEYS[key], value)
        elif key in STR_KEYS:
            fields[STR_KEYS[key]] = value
        elif key == "proto":
            fields["network.transport"] = transport(value)
        else:
            fields[f"leef.{key}"] = value
    if product:
        av_products.apply(head[1], head[2], head[4], pairs, fields)
    return True


DECODER = VendorDecoder(
    name="leef", decode=decode, programs=("LEEF",), prefixes=("LEEF:",), order=15
)
