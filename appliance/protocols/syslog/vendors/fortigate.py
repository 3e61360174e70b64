"""Fortinet FortiGate: ``date=... time=... devname=... type=traffic subtype=forward ...``.

One key=value pass, then the log type picks the mapping (traffic, admin and VPN events,
configuration, UTM/IPS/anomaly). Old FortiOS spellings (``src``, ``src_port``, ``status``)
are read too.

Still code, not a decoder file (docs/decoders.md): the device time (``eventtime`` in s/ms/µs/ns,
else ``date`` + ``time`` with an optional ``tz``) is the event time, which files cannot set;
byte and packet totals are sums of two values; the login/VPN/config/UTM branches test
substrings of the action word ("login" in it, "ssl-" prefix, "fail" in it) and skip ``N/A``
values; the mapped string keys follow the set of keys present (no fixed field order).
"""

from __future__ import annotations

import re
from datetime import datetime

from appliance.protocols.syslog.message import SyslogMessage
from appliance.protocols.syslog.vendors.base import (
    Fields,
    VendorDecoder,
    authentication,
    config_change,
    epoch_digits,
    kv_pairs,
    local_time,
    network_verdict,
    observer,
    set_int,
    set_ip,
    small_int,
    transport,
)

_UI = re.compile(r"\w+\(([0-9a-fA-F.:]+)\)")
ACTIONS = {
    "deny": "deny",
    "blocked": "deny",
    "block": "deny",
    "dropped": "drop",
    "drop": "drop",
    "reject": "reject",
    "accept": "allow",
    "pass": "allow",
    "passthrough": "allow",
    "allowed": "allow",
    "close": "end",
    "timeout": "end",
    "client-rst": "end",
    "server-rst": "end",
    "start": "start",
    "ip-conn": "start",
}


STRINGS = {
    "devname": "observer.name",
    "devid": "observer.serial_number",
    "device_id": "observer.serial_number",
    "logid": "event.code",
    "log_id": "event.code",
    "msg": "message",
    "logdesc": "event.reason",
    "policyid": "rule.id",
    "policyname": "rule.name",
    "srcintf": "observer.ingress.interface.name",
    "dstintf": "observer.egress.interface.name",
    "service": "network.protocol",
    "app": "network.application",
    "url": "url.original",
    "hostname": "url.domain",
    "attack": "rule.name",
    "virus": "rule.name",
}


def _device_time(kv: dict[str, str]) -> float | datetime | None:
    """``eventtime`` (epoch in s, ms, µs or ns by FortiOS version), else ``date`` + ``time``
    with ``tz`` ("+0100") when given, else as the device's local time."""
    ts = epoch_digits(kv.get("eventtime"))
    if ts is not None:
        return ts
    date, clock = kv.get("date"), kv.get("time")
    if not date or not clock:
        return None
    tz = kv.get("tz", "")
    if len(tz) == 5 and tz[0] in "+-" and tz[1:].isdigit():
        zoned = local_time(f"{date} {clock} {tz}", "%Y-%m-%d %H:%M:%S %z")
        return zoned.timestamp() if zoned is not None else None
    return local_time(f"{date} {clock}", "%Y-%m-%d %H:%M:%S")


def _first(kv: dict[str, str], *keys: str) -> str | None:
    for k in keys:
        v = kv.get(k)
        if v and v != "N/A":
            return v
    return None


def decode(msg: SyslogMessage, fields: Fields) -> bool:
    text = msg.message
    start = text.find("date=", 0, 200)
    if start < 0 or not ("devid=" in text or "logid=" in text or "device_id=" in text):
        return False
    kv = kv_pairs(text[start:])
    if "type" not in kv or not ("devid" in kv or "logid" in kv or "device_id" in kv):
        return False
    observer(fields, "Fortinet", "FortiGate", "firewall")
    msg.payload_time = _device_time(kv)
    kind, sub = kv.get("type", ""), kv.get("subtype", "")
    fields["fortinet.firewall.type"] = kind
    if sub:
        fields["fortinet.firewall.subtype"] = sub
    for key in STRINGS.keys() & kv.keys():
        v = kv[key]
        if v and v != "N/A":
            fields[STRINGS[key]] = v
    set_ip(fields, "source.ip", _first(kv, "srcip", "src", "remip"))
    set_ip(fields, "destination.ip", _first(kv, "dstip", "dst"))
    set_int(fields, "source.port", _first(kv, "srcport", "src_port"))
    set_int(fields, "destination.port", _first(kv, "dstport", "dst_port"))
    proto = kv.get("proto")
    if proto:
        fields["network.transport"] = transport(proto)
        fields["network.iana_number"] = proto
    sent, rcvd = small_int(kv.get("sentbyte")), small_int(kv.get("rcvdbyte"))
    if sent is not None and rcvd is not None:
        fields["network.bytes"] = sent + rcvd
        fields["source.bytes"] = sent
        fields["destination.bytes"] = rcvd
    spk, rpk = small_int(kv.get("sentpkt")), small_int(kv.get("rcvdpkt"))
    if spk is not None and rpk is not None:
        fields["network.packets"] = spk + rpk
    user = _first(kv, "user", "srcuser", "xauthuser")
    action = (kv.get("action") or kv.get("status") or "").lower()
    if kind == "traffic":
        network_verdict(fields, ACTIONS.get(action, "allow"))
        if action and action not in ACTIONS:
            fields["fortinet.firewall.action"] = action
        if user:
            fields["user.name"] = user
    elif (kind == "event" and action == "login") or "login" in action:
        vpn = sub == "vpn" or action.startswith("ssl-")
        failed = "fail" in action or kv.get("status", "") in ("failed", "failure")
        authentication(
            fields, "vpn_login" if vpn else "login", "failure" if failed else "success", user
        )
        ui = kv.get("ui", "")
        m = _UI.search(ui)
        if m is not None:
            set_ip(fields, "source.ip", m.group(1))
            fields["network.protocol"] = ui[: ui.find("(")].lower()
    elif kind == "event" and (
        action in ("edit", "add", "delete")
        or "cfgpath" in kv
        or "onfiguration" in kv.get("logdesc", "")
    ):
        config_change(fields, user)
        m = _UI.search(kv.get("ui", ""))
        if m is not None:
            set_ip(fields, "source.ip", m.group(1))
    elif kind == "event" and sub == "vpn":
        fields["event.category"] = ["network"]
        fields["event.type"] = ["connection"]
        fields["event.action"] = action or "vpn"
        if user:
            fields["user.name"] = user
    elif kind in ("utm", "anomaly", "ips", "attack", "virus", "webfilter"):
        fields["event.kind"] = (
            "alert" if sub in ("ips", "anomaly", "virus") or kind != "utm" else "event"
        )
        fields["event.category"] = (
            ["intrusion_detection"]
            if sub in ("ips", "anomaly") or kind == "anomaly"
            else ["network"]
        )
        verdict = ACTIONS.get(action)
        if verdict is not None:
            fields["event.action"] = verdict
            fields["event.outcome"] = (
                "failure" if verdict in ("deny", "drop", "reject") else "success"
            )
        elif action:
            fields["event.action"] = action
        if user:
            fields["user.name"] = user
    return True


DECODER = VendorDecoder(
    name="fortigate",
    decode=decode,
    prefixes=("date=", "devname=", "logver="),
    fallback=True,  # relayed lines put a relay header before "date="
    needle="date=",
    order=20,
)
