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
    if not isinstance(doc, dict) or (kind := _text(doc, "event_type")) is None:
        return False
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
    if (proto := _text(doc, "proto")) is not None:
        fields["network.transport"] = transport(proto)
    if (app_proto := _text(doc, "app_proto")) is not None:
        fields["network.protocol"] = app_proto
    if (in_iface := _text(doc, "in_iface")) is not None:
        fields["observer.ingress.interface.name"] = in_iface
    if isinstance(doc.get("flow_id"), int):
        fields["suricata.eve.flow_id"] = doc["flow_id"]
    if (timestamp := _text(doc, "timestamp")) is not None:
        fields["event.start"] = timestamp
        msg.payload_time = iso_time(timestamp)
    alert = doc.get("alert")
    if kind == "alert" and isinstance(alert, dict):
        intrusion_alert(fields)
        if alert.get("signature_id") is not None:
            fields["rule.id"] = str(alert["signature_id"])
        if (signature := _text(alert, "signature")) is not None:
            fields["rule.name"] = signature
        if (category := _text(alert, "category")) is not None:
            fields["rule.category"] = category
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
        if (hostname := _text(http, "hostname")) is not None:
            fields["url.domain"] = hostname
        if (url := _text(http, "url")) is not None:
            fields["url.original"] = url
        if (method := _text(http, "http_method")) is not None:
            fields["http.request.method"] = method
        set_int(fields, "http.response.status_code", str(http.get("status", "")))
        if (agent := _text(http, "http_user_agent")) is not None:
            fields["user_agent.original"] = agent
    elif kind == "dns" and isinstance(doc.get("dns"), dict):
        dns = doc["dns"]
        fields["event.category"] = ["network"]
        if (rrname := _text(dns, "rrname")) is not None:
            fields["dns.question.name"] = rrname
        if (rrtype := _text(dns, "rrtype")) is not None:
            fields["dns.question.type"] = rrtype
    elif kind == "tls" and isinstance(doc.get("tls"), dict):
        tls = doc["tls"]
        fields["event.category"] = ["network"]
        if (sni := _text(tls, "sni")) is not None:
            fields["tls.client.server_name"] = sni
        if (version := _text(tls, "version")) is not None:
            fields["tls.version"] = version
    else:
        fields["event.category"] = ["network"]
    return True


DECODER = VendorDecoder(
    name="suricata_eve", decode=decode, programs=("suricata",), prefixes=("{",), order=20
)
