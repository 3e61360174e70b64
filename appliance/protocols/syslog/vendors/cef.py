"""ArcSight Common Event Format: ``CEF:Version|Vendor|Product|Version|SignatureID|Name|
Severity|key=value ...`` (header pipes escaped as ``\\|``; extension values may hold spaces
and escape ``\\=``, ``\\\\``, ``\\n``).

Still code, not a decoder file: a decoder file's ``cef`` step reads the same layout
(``cef_format.py``) for a site's product, but this generic decoder maps every extension key
in the message's order, names unmapped ones by their ``*Label`` (``cef.extensions.<label>``:
field names from the data, which files do not make), sums the byte counts and takes ``rt``
as the event time (both expressible now: ``sum``, ``[[time]]``), and hands antivirus
products to ``av_products``.
"""

from __future__ import annotations

from appliance.protocols.syslog.message import SyslogMessage
from appliance.protocols.syslog.vendors import av_products
from appliance.protocols.syslog.vendors.base import (
    Fields,
    VendorDecoder,
    epoch_digits,
    intrusion_alert,
    local_time,
    set_int,
    set_ip,
    transport,
)
from appliance.protocols.syslog.vendors.cef_format import extensions, split_header

# CEF dictionary key → ECS field (the common subset; others are kept under cef.extensions).
IP_KEYS = {
    "src": "source.ip",
    "dst": "destination.ip",
    "dvc": "observer.ip",
    "sourceTranslatedAddress": "source.nat.ip",
    "destinationTranslatedAddress": "destination.nat.ip",
}
INT_KEYS = {
    "spt": "source.port",
    "dpt": "destination.port",
    "in": "source.bytes",
    "out": "destination.bytes",
    "cnt": "event.count",
}
STR_KEYS = {
    "suser": "source.user.name",
    "duser": "destination.user.name",
    "shost": "source.domain",
    "dhost": "destination.domain",
    "act": "event.action",
    "request": "url.original",
    "requestMethod": "http.request.method",
    "requestClientApplication": "user_agent.original",
    "msg": "message",
    "fname": "file.name",
    "filePath": "file.path",
    "fileHash": "file.hash.md5",
    "dvchost": "observer.hostname",
    "deviceExternalId": "observer.serial_number",
    "outcome": "event.outcome",
    "cat": "rule.category",
    "smac": "source.mac",
    "dmac": "destination.mac",
    "sproc": "process.name",
    "deviceInboundInterface": "observer.ingress.interface.name",
    "deviceOutboundInterface": "observer.egress.interface.name",
}
SEVERITY = {"low": 3, "medium": 2, "high": 1, "very-high": 1, "unknown": 3}


def decode(msg: SyslogMessage, fields: Fields) -> bool:
    text = msg.message
    at = text.find("CEF:", 0, 40)
    if at < 0:
        return False
    parts = split_header(text[at:])
    if parts is None:
        return False
    _version, vendor, product, dev_version, sig, name, severity, ext = parts
    fields["observer.vendor"] = vendor
    fields["observer.product"] = product
    fields["observer.version"] = dev_version
    fields["rule.id"] = sig
    fields["rule.name"] = name
    fields["event.code"] = sig
    sev = severity.strip().lower()
    if sev in SEVERITY:
        fields["event.severity"] = SEVERITY[sev]
    else:
        set_int(fields, "event.severity", sev)
    kv = extensions(ext)
    rt = kv.get("rt", "")
    msg.payload_time = epoch_digits(rt) or local_time(rt, "%b %d %Y %H:%M:%S")
    labels = {k[:-5]: v for k, v in kv.items() if k.endswith("Label")}
    for key, value in kv.items():
        if not value:
            continue
        if key in IP_KEYS:
            set_ip(fields, IP_KEYS[key], value)
        elif key in INT_KEYS:
            set_int(fields, INT_KEYS[key], value)
        elif key in STR_KEYS:
            fields[STR_KEYS[key]] = value
        elif key == "proto":
            fields["network.transport"] = transport(value)
        elif not key.endswith("Label"):
            fields[f"cef.extensions.{labels.get(key, key)}"] = value
    user = fields.get("destination.user.name") or fields.get("source.user.name")
    if user:
        fields["user.name"] = user
    if "source.bytes" in fields or "destination.bytes" in fields:
        fields["network.bytes"] = fields.get("source.bytes", 0) + fields.get("destination.bytes", 0)
    cat = kv.get("categoryDeviceGroup", "") + kv.get("cat", "")
    if "/IDS" in cat or "Intrusion" in cat:
        intrusion_alert(fields)
    elif "/Firewall" in cat:
        fields["event.category"] = ["network"]
    if (vendor, product) in av_products.PRODUCTS:
        named = {labels.get(k, k): v for k, v in kv.items()}
        named.setdefault("name", name)
        av_products.apply(vendor, product, sig, named, fields)
    return True


DECODER = VendorDecoder(
    name="cef",
    decode=decode,
    programs=("cef", "CEF"),
    prefixes=("CEF:",),
    fallback=True,
    needle="CEF:",
    order=15,
)
