"""Suricata EVE JSON (``event_type`` alert, flow, dns, http, tls, ssh, fileinfo, ...).

Still code, not a decoder file (docs/decoders.md). The device time (``[[time]]`` with
``as = "iso"``) and the flow sums (``sum``) are expressible now; what is not is the JSON types
this module decides on: a port, flow id, severity or byte count only when the member is a
number (a ``"80"`` string or ``true`` is not), ``proto``, ``event_type`` and the HTTP/DNS/TLS
names only when strings, ``alert`` only when an object (even an empty one), and integers
beyond 64 bits kept as text. The ``json`` step captures every scalar as text, so a file would
change the events of lines whose members have other types; a typed json capture (each
member's JSON type as a condition) is what would move it. The native interpreter does not
take the json step either, so a file would not run natively.
"""

from __future__ import annotations

import json
from typing import Any

from appliance.protocols.syslog.message import SyslogMessage
from appliance.protocols.syslog.vendors.base import (
    Fields,
    VendorDecoder,
    intrusion_alert,
    iso_time,
    json_int,
    set_int,
    set_ip,
    transport,
)

ALERT_ACTIONS = {"allowed": "allow", "blocked": "drop"}


def _text(obj: dict[str, Any], key: str) -> str | None:
    """A member that is a JSON string, else ``None``: a hostile line's object, list or number
    where an address or action belongs must not reach lookups keyed by text."""
    value = obj.get(key)
    return value if isinstance(value, str) else None


def decode(msg: SyslogMessage, fields: Fields) -> bool:
    text = msg.message
    if not text.startswith("{") or '"event_type"' not in text:
        return False
    try:
        doc: Any = json.loads(text, parse_int=json_int)
    except (ValueError, RecursionError):  # RecursionError: hostile nesting depth
        return False
    if not isinstance(doc, dict) or not isinstance(doc.get("event_type"), str):
        return False
    kind = doc["event_type"]
    fields["observer.vendor"] = "OISF"
    fields["observer.product"] = "Suricata"
    fields["observer.type"] = "ids"
    fields["suricata.eve.event_type"] = kind
    set_ip(fields, "source.ip", _text(doc, "src_ip"))
    set_ip(fields, "destination.ip", _text(doc, "dest_ip"))
    for key, target in (("src_port", "source.port"), ("dest_port", "destination.port")):
        v = doc.get(key)
        if isinstance(v, int):
            fields[target] = v
    if isinstance(doc.get("proto"), str):
        fields["network.transport"] = transport(doc["proto"])
    if isinstance(doc.get("app_proto"), str):
        fields["network.protocol"] = doc["app_proto"]
    if isinstance(doc.get("in_iface"), str):
        fields["observer.ingress.interface.name"] = doc["in_iface"]
    if isinstance(doc.get("flow_id"), int):
        fields["suricata.eve.flow_id"] = doc["flow_id"]
    if isinstance(doc.get("timestamp"), str):
        fields["event.start"] = doc["timestamp"]
        msg.payload_time = iso_time(doc["timestamp"])
    alert = doc.get("alert")
    if kind == "alert" and isinstance(alert, dict):
        intrusion_alert(fields)
        if alert.get("signature_id") is not None:
            fields["rule.id"] = str(alert["signature_id"])
        if isinstance(alert.get("signature"), str):
            fields["rule.name"] = alert["signature"]
        if isinstance(alert.get("category"), str):
            fields["rule.category"] = alert["category"]
        if isinstance(alert.get("severity"), int):
            fields["event.severity"] = alert["severity"]
        action = ALERT_ACTIONS.get(_text(alert, "action") or "")
        if action:
            fields["event.action"] = action
            fields["event.outcome"] = "failure" if action == "drop" else "success"
    elif kind == "flow" and isinstance(doc.get("flow"), dict):
        flow = doc["flow"]
        fields["event.category"] = ["network"]
        fields["event.type"] = ["connection", "end"]
        ts, tc = flow.get("bytes_toserver"), flow.get("bytes_toclient")
        if isinstance(ts, int) and isinstance(tc, int):
            fields["network.bytes"] = ts + tc
        ps, pc = flow.get("pkts_toserver"), flow.get("pkts_toclient")
        if isinstance(ps, int) and isinstance(pc, int):
            fields["network.packets"] = ps + pc
    elif kind == "http" and isinstance(doc.get("http"), dict):
        http = doc["http"]
        fields["event.category"] = ["network", "web"]
        if isinstance(http.get("hostname"), str):
            fields["url.domain"] = http["hostname"]
        if isinstance(http.get("url"), str):
            fields["url.original"] = http["url"]
        if isinstance(http.get("http_method"), str):
            fields["http.request.method"] = http["http_method"]
        set_int(fields, "http.response.status_code", str(http.get("status", "")))
        if isinstance(http.get("http_user_agent"), str):
            fields["user_agent.original"] = http["http_user_agent"]
    elif kind == "dns" and isinstance(doc.get("dns"), dict):
        dns = doc["dns"]
        fields["event.category"] = ["network"]
        if isinstance(dns.get("rrname"), str):
            fields["dns.question.name"] = dns["rrname"]
        if isinstance(dns.get("rrtype"), str):
            fields["dns.question.type"] = dns["rrtype"]
    elif kind == "tls" and isinstance(doc.get("tls"), dict):
        tls = doc["tls"]
        fields["event.category"] = ["network"]
        if isinstance(tls.get("sni"), str):
            fields["tls.client.server_name"] = tls["sni"]
        if isinstance(tls.get("version"), str):
            fields["tls.version"] = tls["version"]
    else:
        fields["event.category"] = ["network"]
    return True


DECODER = VendorDecoder(
    name="suricata_eve", decode=decode, programs=("suricata",), prefixes=("{",), order=20
)
