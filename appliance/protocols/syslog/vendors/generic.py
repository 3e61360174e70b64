"""The generic layer: the field names vendors commonly use, mapped to ECS for lines no vendor
decoder claims (key=value, JSON, RFC 5424 structured data, ``[key:"value"; ...]`` blocks).

A device nobody wrote a decoder for still says ``src=``, ``dst_ip=``, ``sport=``, ``user=``,
``action=``, ``proto=tcp/443``, ``sent=``/``rcvd=`` and when it happened; those are the fields
the rules and the console need. Every value is validated on the way (an address field only
ever holds a valid address, a port a number in range), and the raw pairs stay beside them.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

from appliance.protocols.syslog.message import SyslogMessage
from appliance.protocols.syslog.vendors.base import (
    Fields,
    canonical_ip,
    epoch_digits,
    iso_time,
    local_time,
    network_verdict,
    transport,
)


def _keys(*names: str) -> frozenset[str]:
    """Names compare lower-cased and without ``_``, ``-`` and ``.``: ``src_ip``, ``SrcIP``,
    ``src-ip`` and ``srcip`` are one key."""
    return frozenset(norm(n) for n in names)


def norm(key: str) -> str:
    return key.lower().replace("_", "").replace("-", "").replace(".", "")


SOURCE_IP = _keys(
    "src", "srcip", "sip", "source_ip", "source_address", "src_addr", "saddr", "source",
    "client_ip", "c_ip", "cip", "clientaddr", "src_host_ip", "orig_h", "id.orig_h", "csip",
    "sourceip", "sourceaddress", "remote_ip", "remoteaddr", "remote_addr", "ipaddr",
)  # fmt: skip
DEST_IP = _keys(
    "dst", "dstip", "dip", "dest", "dest_ip", "destip", "destination", "destination_ip",
    "destination_address", "dst_addr", "daddr", "server_ip", "s_ip", "resp_h", "id.resp_h",
    "destinationaddress", "target_ip", "dsthost_ip",
)  # fmt: skip
SOURCE_PORT = _keys(
    "spt", "sport", "src_port", "srcport", "source_port", "s_port", "client_port", "orig_p",
    "id.orig_p", "sourceport", "csport",
)  # fmt: skip
DEST_PORT = _keys(
    "dpt", "dport", "dst_port", "dstport", "dest_port", "destport", "destination_port",
    "d_port", "server_port", "resp_p", "id.resp_p", "destinationport", "service_port",
    "cdport",
)  # fmt: skip
USER = _keys(
    "user", "usr", "username", "user_name", "suser", "login", "account", "uname", "userid",
    "src_user", "srcuser", "cs_username", "cs-username", "usrname", "account_name",
)  # fmt: skip
TARGET_USER = _keys("duser", "dst_user", "dstuser", "target_user", "targetuser")
ACTION = _keys(
    "action", "act", "fw_action", "fwaction", "disposition", "verdict", "policy_action",
    "log_action", "rule_action", "decision",
)  # fmt: skip
# Keys that carry an action only when their value is a verdict word ("status=200" is not one).
MAYBE_ACTION = _keys("status", "result", "outcome", "type", "event", "msg", "log_subtype",
                     "subtype", "event_type", "pattern")  # fmt: skip
PROTO = _keys(
    "proto", "protocol", "ipprotocol", "ip_proto", "ipproto", "transport", "proto_name",
    "protoname", "l4_proto", "network_protocol",
)  # fmt: skip
SOURCE_BYTES = _keys(
    "sent", "sentbyte", "sent_bytes", "bytes_sent", "bytes_out", "out_bytes", "bytesout",
    "src_bytes", "orig_bytes", "cs_bytes", "tx_bytes", "txbytes", "bytes_to_server",
    "sendbytes", "send_bytes",
)  # fmt: skip
DEST_BYTES = _keys(
    "rcvd", "rcvdbyte", "rcvd_bytes", "received", "recv", "recv_bytes", "bytes_received",
    "bytes_in", "in_bytes", "bytesin", "dst_bytes", "resp_bytes", "sc_bytes", "rx_bytes",
    "rxbytes", "bytes_to_client", "rcvbytes", "recvbytes",
)  # fmt: skip
BYTES = _keys("bytes", "len", "length", "total_bytes", "totalbytes", "size", "octets")
RULE_ID = _keys(
    "rule_id", "ruleid", "rule_uid", "policy_id", "policyid", "fw_rule_id", "acl_id", "sid",
    "signature_id",
)  # fmt: skip
RULE_NAME = _keys(
    "rule_name", "rulename", "policy_name", "policyname", "acl", "fw_rule", "signature",
    "rule_description",
)  # fmt: skip
RULE = _keys("rule", "policy", "fw_rule_name", "firewall_rule", "fwrule")
IN_IFACE = _keys("in", "inif", "in_if", "in_iface", "srcintf", "src_intf", "ingress_interface",
                 "inbound_interface", "iif", "src_zone_interface", "interface_in")  # fmt: skip
OUT_IFACE = _keys("out", "outif", "out_if", "out_iface", "dstintf", "dst_intf",
                  "egress_interface", "outbound_interface", "oif", "interface_out")  # fmt: skip
TIME = _keys(
    "time", "timestamp", "datetime", "date_time", "devtime", "device_time", "eventtime",
    "event_time", "logtime", "log_time", "generated_time", "start_time", "starttime", "ts",
    "rt", "@timestamp", "time_generated", "timegenerated", "receive_time",
)  # fmt: skip
DATE = _keys("date", "log_date", "logdate")
ZONE = _keys("tz", "timezone", "time_zone", "tzoffset", "tz_offset", "utc_offset")
# A service given as a port number ("service=443"); a name ("https") is not a port.
SERVICE_PORT = _keys("service", "svc", "service_id", "dst_service")

KNOWN = frozenset().union(
    SOURCE_IP, DEST_IP, SOURCE_PORT, DEST_PORT, USER, TARGET_USER, ACTION, MAYBE_ACTION, PROTO,
    SOURCE_BYTES, DEST_BYTES, BYTES, RULE_ID, RULE_NAME, RULE, IN_IFACE, OUT_IFACE, TIME, DATE,
    ZONE, SERVICE_PORT,
)  # fmt: skip
ALLOW_WORDS = frozenset({
    "allow", "allowed", "accept", "accepted", "permit", "permitted", "pass", "passed",
    "forward", "forwarded", "pass-through", "passthrough",
})  # fmt: skip
DENY_WORDS = {
    "deny": "deny", "denied": "deny", "block": "deny", "blocked": "deny", "refuse": "deny",
    "refused": "deny", "prevent": "deny", "prevented": "deny", "discard": "drop",
    "discarded": "drop", "drop": "drop", "dropped": "drop", "reject": "reject",
    "rejected": "reject", "reset": "reject",
}  # fmt: skip
TRANSPORTS = frozenset({"tcp", "udp", "icmp", "ipv6-icmp", "icmpv6", "gre", "esp", "ah", "sctp",
                        "igmp", "ipip", "l2tp"})  # fmt: skip

_DATE_ONLY = re.compile(r"\d{4}-\d{2}-\d{2}|\d{4}/\d{2}/\d{2}")
# "2018/10/5 09:52:19": unpadded month and day
_LOOSE = re.compile(r"(\d{4})[-/](\d{1,2})[-/](\d{1,2})[ T](\d{1,2}):(\d{2}):(\d{2})")
_CLOCK = re.compile(r"\d{2}:\d{2}:\d{2}")


def verdict(word: str) -> str | None:
    """``allow``, ``deny``, ``drop`` or ``reject`` for a vendor's action word."""
    w = word.strip().lower()
    if w in ALLOW_WORDS:
        return "allow"
    return DENY_WORDS.get(w)


def split_address(value: str) -> tuple[str | None, int | None, str | None]:
    """``203.0.113.7``, ``203.0.113.7:51234``, ``203.0.113.7:51234:X1``, ``[2001:db8::1]:443``
    or a bare IPv6 address → (address, port, interface)."""
    ip = canonical_ip(value)
    if ip is not None:
        return ip, None, None
    if value.startswith("["):
        end = value.find("]")
        ip = canonical_ip(value[1:end]) if end > 0 else None
        rest = value[end + 2 :] if ip is not None and value[end + 1 : end + 2] == ":" else ""
    else:
        head, _, rest = value.partition(":")
        ip = canonical_ip(head)
    if ip is None:
        return None, None, None
    port_text, _, iface = rest.partition(":")
    return ip, _port(port_text), iface or None


def _port(value: Any) -> int | None:
    if isinstance(value, int) and not isinstance(value, bool):
        return value if 0 <= value <= 65535 else None
    if isinstance(value, str) and value.isascii() and value.isdigit() and len(value) <= 5:
        n = int(value)
        return n if n <= 65535 else None
    return None


def _count(value: Any) -> int | None:
    if isinstance(value, int) and not isinstance(value, bool):
        return value if value >= 0 else None
    if isinstance(value, str) and value.isascii() and value.isdigit() and len(value) < 19:
        return int(value)
    return None


def _device_time(value: str) -> float | datetime | None:
    """Epoch (s/ms/µs/ns), ISO 8601 (with or without zone), ``YYYY-MM-DD HH:MM:SS``."""
    value = value.strip()
    ts = epoch_digits(value)
    if ts is not None:
        return ts
    if len(value) >= 19 and _DATE_ONLY.match(value):
        text = value.replace("/", "-", 2)
        got = iso_time(text)
        if got is not None:
            return got
        return local_time(text[:19], "%Y-%m-%d %H:%M:%S")
    if len(value) == 24 and value[3] == " ":  # ctime: "Fri Dec 17 07:27:54 2021"
        return local_time(value, "%a %b %d %H:%M:%S %Y")
    m = _LOOSE.fullmatch(value)
    if m is not None:
        try:
            return datetime(*(int(g) for g in m.groups()))  # type: ignore[arg-type]
        except ValueError:
            return None
    return None


def _set_address(fields: Fields, side: str, value: Any) -> bool:
    """Fill ``<side>.ip`` (and port, interface) from an address form; ``False`` when the value
    is not an address (it is then kept as a raw pair)."""
    if not isinstance(value, str):
        return False
    ip, port, iface = split_address(value)
    if ip is None:
        return False
    if f"{side}.ip" in fields:
        return True
    fields[f"{side}.ip"] = ip
    if port is not None:
        fields.setdefault(f"{side}.port", port)
    if iface is not None:
        key = "observer.ingress.interface.name" if side == "source" else (
            "observer.egress.interface.name")  # fmt: skip
        fields.setdefault(key, iface)
    return True


def map_common(
    pairs: Iterable[tuple[str, Any]], fields: Fields, msg: SyslogMessage | None = None
) -> set[str]:
    """Map the pairs whose names vendors commonly use into ECS ``fields`` (a field already set
    is kept); return the keys that were used. With ``msg``, a device time found in the pairs
    becomes its ``payload_time`` (the event time when the header had none)."""
    used: set[str] = set()
    action: str | None = None
    date = clock = zone = None
    for key, value in pairs:
        if value is None or value == "":
            continue
        k = norm(key)
        if k not in KNOWN and "." in key:  # JSON flattened "event.user": the last name counts
            k = norm(key.rsplit(".", 1)[1])
        if k in SOURCE_IP:
            if not _set_address(fields, "source", value):
                continue
        elif k in DEST_IP:
            if not _set_address(fields, "destination", value):
                continue
        elif k in SOURCE_PORT:
            port = _port(value)
            if port is None:
                continue
            fields.setdefault("source.port", port)
        elif k in DEST_PORT:
            port = _port(value)
            if port is None:
                continue
            fields.setdefault("destination.port", port)
        elif k in USER and isinstance(value, str):
            fields.setdefault("user.name", value)
        elif k in TARGET_USER and isinstance(value, str):
            fields.setdefault("user.target.name", value)
        elif isinstance(value, str) and (
            k in ACTION or (k in MAYBE_ACTION and verdict(value) is not None)
        ):
            action = action or value
        elif k in PROTO and isinstance(value, (str, int)):
            _set_protocol(fields, value)
        elif k in SOURCE_BYTES and (n := _count(value)) is not None:
            fields.setdefault("source.bytes", n)
        elif k in DEST_BYTES and (n := _count(value)) is not None:
            fields.setdefault("destination.bytes", n)
        elif k in BYTES and (n := _count(value)) is not None:
            fields.setdefault("network.bytes", n)
        elif k in RULE_ID:
            fields.setdefault("rule.id", str(value))
        elif k in RULE_NAME and isinstance(value, str):
            fields.setdefault("rule.name", value)
        elif k in RULE:
            text = str(value)
            fields.setdefault("rule.id" if text.isdigit() else "rule.name", text)
        elif k in IN_IFACE and isinstance(value, str):
            fields.setdefault("observer.ingress.interface.name", value)
        elif k in OUT_IFACE and isinstance(value, str):
            fields.setdefault("observer.egress.interface.name", value)
        elif k in TIME and isinstance(value, (str, int)):
            clock = clock or str(value)
        elif k in DATE and isinstance(value, str):
            date = date or value
        elif k in ZONE and isinstance(value, str):
            zone = zone or value
        elif k in SERVICE_PORT and (port := _port(value)) is not None:
            fields.setdefault("destination.port", port)
        else:
            continue
        used.add(key)
    if action is not None:
        _set_action(fields, action)
    if msg is not None and msg.payload_time is None:
        # Kept even when the header has a stamp: the intake prefers the header's, the body's
        # is still the device's word (a relay may have stamped the header).
        msg.payload_time = _payload_time(date, clock, zone)
    return used


def _set_protocol(fields: Fields, value: str | int) -> None:
    text = str(value).strip().lower()
    name, slash, port = text.partition("/")
    if slash and port.isdigit():
        # "tcp/443": the transport and the service's port
        text = name
        if (p := _port(port)) is not None:
            fields.setdefault("destination.port", p)
    proto = transport(text)
    if proto in TRANSPORTS:
        fields.setdefault("network.transport", proto)
    elif proto and not proto.isdigit():
        fields.setdefault("network.protocol", proto)  # an application protocol (http, dns)


def _set_action(fields: Fields, word: str) -> None:
    """A verdict word on a line with addresses is a firewall decision: the shared contract
    (category network, type, outcome), so the built-in firewall rules see it; other action
    words are kept as the event's action."""
    v = verdict(word)
    has_network = any(k in fields for k in ("source.ip", "destination.ip", "destination.port"))
    if v is not None and has_network and "event.outcome" not in fields:
        network_verdict(fields, v)
        fields.setdefault("observer.type", "firewall")
    else:
        fields.setdefault("event.action", v or word.strip().lower())


def _payload_time(date: str | None, clock: str | None, zone: str | None) -> float | datetime | None:
    got: float | datetime | None = None
    if clock is not None:
        if date is not None and _CLOCK.fullmatch(clock.strip()):
            got = _device_time(f"{date.strip()} {clock.strip()}")
        else:
            got = _device_time(clock)
    elif date is not None:
        got = _device_time(date)
    if isinstance(got, datetime) and zone is not None:
        offset = _offset(zone)
        if offset is not None:
            return got.replace(tzinfo=offset).timestamp()
    return got


_OFFSET = re.compile(r"(?:UTC|GMT)?([+-])(\d{2}):?(\d{2})")


def _offset(zone: str) -> timezone | None:
    """A zone written as an offset (``+0100``, ``-05:00``, ``UTC+01:00``) or ``UTC``/``Z``;
    names (``IST``, ``CET``) are ambiguous and left alone (the sender's zone applies)."""
    z = zone.strip()
    if z.upper() in ("UTC", "GMT", "Z", "+0000", "+00:00"):
        return UTC
    m = _OFFSET.fullmatch(z)
    if m is None:
        return None
    minutes = int(m.group(2)) * 60 + int(m.group(3))
    if minutes >= 24 * 60:
        return None
    return timezone((-1 if m.group(1) == "-" else 1) * timedelta(minutes=minutes))


# ``[key:"value"; key2:"value2"]``: structured data as some devices write it (not RFC 5424).
_BRACKET_PAIR = re.compile(r'([\w.\-]+)\s*[:=]\s*"((?:[^"\\]|\\.)*)"')


def bracket_pairs(text: str, limit: int = 128) -> list[tuple[str, str]]:
    """The pairs of the leading ``[...]`` blocks of ``text`` (the SD a 5424 parser refused)."""
    out: list[tuple[str, str]] = []
    pos = 0
    while pos < len(text) and text[pos] == "[" and len(out) < limit:
        end = text.find("]", pos)
        while end > 0 and text[end - 1] == "\\":
            end = text.find("]", end + 1)
        if end < 0:
            break
        # a pair holds a quote: a block without one (the kernel's "[ 35958.123456]") has none,
        # and the search's backtracking over its digits cost ~2.5 µs a line
        if text.find('"', pos + 1, end) >= 0:
            for m in _BRACKET_PAIR.finditer(text, pos + 1, end):
                out.append((m.group(1), m.group(2).replace('\\"', '"').replace("\\\\", "\\")))
        pos = end + 1
        while pos < len(text) and text[pos] == " ":
            pos += 1
    return out[:limit]
