"""What a vendor decoder is, and the small helpers they share.

A decoder is a pure function ``decode(msg, fields) -> bool`` that adds ECS fields for one
vendor's message shapes to the flat ``fields`` dict the syslog header already filled, and says
whether the message was one of its own. It is selected cheaply (program name, first bytes of the
message), never by trying every decoder's regex on every line.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from ipaddress import ip_address
from typing import Any

from appliance.protocols.syslog.message import SyslogMessage

Fields = dict[str, Any]
DecodeFn = Callable[[SyslogMessage, Fields], bool]


@dataclass(frozen=True, slots=True)
class VendorDecoder:
    """``programs``: syslog APP-NAMEs (TAG) that select it; ``prefixes``: message starts that
    select it (dispatched on the first character); ``fallback``: tried, in ``order``, only for
    messages nothing else claimed (cheap content checks such as JSON or key=value)."""

    name: str
    decode: DecodeFn
    programs: tuple[str, ...] = ()
    prefixes: tuple[str, ...] = ()
    fallback: bool = False
    order: int = 50


# Transport names as ECS writes them, from IANA numbers and vendor spellings.
IANA_TRANSPORT = {"1": "icmp", "6": "tcp", "17": "udp", "58": "ipv6-icmp", "47": "gre", "50": "esp"}


def transport(value: str) -> str:
    v = value.lower()
    return IANA_TRANSPORT.get(v, v)


def canonical_ip(value: str) -> str | None:
    """The canonical text of an IP address, or ``None`` when ``value`` is not one."""
    if not value or len(value) > 45 or value[0] not in "0123456789abcdefABCDEF:":
        return None
    try:
        return str(ip_address(value))
    except ValueError:
        return None


def set_ip(fields: Fields, key: str, value: str | None) -> None:
    if value:
        ip = canonical_ip(value)
        if ip is not None:
            fields[key] = ip


def set_int(fields: Fields, key: str, value: str | None) -> None:
    if value and value.isdigit() and len(value) < 19:
        fields[key] = int(value)


def network_verdict(fields: Fields, action: str) -> None:
    """The shared firewall contract: category, type and outcome from the action."""
    denied = action in ("deny", "drop", "reject", "block")
    fields["event.category"] = ["network"]
    fields["event.type"] = ["connection", "denied" if denied else "allowed"]
    fields["event.action"] = action
    fields["event.outcome"] = "failure" if denied else "success"


def authentication(
    fields: Fields, action: str, outcome: str, user: str | None = None, kind: str = "start"
) -> None:
    fields["event.category"] = ["authentication"]
    fields["event.type"] = [kind]
    fields["event.action"] = action
    fields["event.outcome"] = outcome
    if user:
        fields["user.name"] = user


def observer(fields: Fields, vendor: str, product: str, kind: str | None = None) -> None:
    fields["observer.vendor"] = vendor
    fields["observer.product"] = product
    if kind:
        fields["observer.type"] = kind


def kv_pairs(text: str, sep: str = " ", limit: int = 256) -> dict[str, str]:
    """``k=v k2="v 2"`` to a dict: quoted values may hold spaces; at most ``limit`` pairs."""
    out: dict[str, str] = {}
    i, n = 0, len(text)
    while i < n and len(out) < limit:
        while i < n and text[i] == sep:
            i += 1
        eq = text.find("=", i)
        if eq < 0:
            break
        key = text[i:eq]
        if sep in key:  # a word without '=': skip it
            i = i + key.index(sep) + 1
            continue
        j = eq + 1
        if j < n and text[j] == '"':
            end = text.find('"', j + 1)
            while end > 0 and text[end - 1] == "\\":
                end = text.find('"', end + 1)
            if end < 0:
                end = n
            value = text[j + 1 : end]
            i = end + 1
        else:
            end = text.find(sep, j)
            if end < 0:
                end = n
            value = text[j:end]
            i = end
        if key:
            out[key] = value
    return out
