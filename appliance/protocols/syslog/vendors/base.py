"""What a vendor decoder is, and the small helpers they share.

A decoder is a pure function ``decode(msg, fields) -> bool`` that adds ECS fields for one
vendor's message shapes to the flat ``fields`` dict the syslog header already filled, and says
whether the message was one of its own. It is selected cheaply (program name, first bytes of the
message), never by trying every decoder's regex on every line.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from functools import lru_cache
from ipaddress import ip_address
from typing import Any

from appliance import dataplane
from appliance.protocols.syslog.message import SyslogMessage

Fields = dict[str, Any]
DecodeFn = Callable[[SyslogMessage, Fields], bool]


@dataclass(frozen=True, slots=True)
class VendorDecoder:
    """``programs``: syslog APP-NAMEs (TAG) that select it; ``prefixes``: message starts that
    select it (dispatched on the first character); ``fallback``: tried, in ``order``, only for
    messages nothing else claimed and in which its ``needle`` occurs."""

    name: str
    decode: DecodeFn
    programs: tuple[str, ...] = ()
    prefixes: tuple[str, ...] = ()
    fallback: bool = False
    order: int = 50
    # Fallbacks only: a literal that any line this decoder claims contains. The registry tries
    # the fallbacks only when a needle occurs, so a plain line pays a few substring scans.
    needle: str = ""
    # A literal that any line this decoder claims by one of its ``prefixes`` contains: the
    # registry tries it for such a line only when this occurs (a kernel line's "[ 35958.12]"
    # is no bracket block of pairs, which all hold a quote).
    prefix_needle: str = ""
    # Tried for every line nothing else claimed (cheap tests only: it runs on plain lines).
    last_resort: bool = False
    # Claims only messages with RFC 5424 structured data: the registry skips it for the
    # others, so the native batch path makes no message object for a line nobody decodes.
    structured_only: bool = False
    # A decoder file's native interpreter (``_dataplane.FileDecoder``): the native batch path
    # hands it the message text itself, with no message object and no Python frame, and
    # calls ``decode`` only for what it defers. ``decode`` stays the reference.
    native: Any = None


def epoch_digits(value: str | None) -> float | None:
    """Epoch seconds from a vendor's integer time stamp in s, ms, µs or ns (FortiOS and CEF
    ``rt`` use several); ``None`` when it is not one or is outside 2000-2100."""
    if not value or not value.isdigit() or not value.isascii():
        return None
    n = len(value)
    scale = 1 if n <= 10 else 1e3 if n <= 13 else 1e6 if n <= 16 else 1e9 if n <= 19 else 0
    if not scale:
        return None
    ts = int(value) / scale
    return ts if 946_684_800 <= ts < 4_102_444_800 else None


@lru_cache(maxsize=4096)
def local_time(value: str, fmt: str) -> datetime | None:
    """A device's wall-clock time in ``fmt`` (naive unless ``fmt`` has ``%z``); ``None`` when it
    does not parse. The intake applies the sender's configured time zone to a naive one.

    Cached (bounded): a device stamps many lines with the same second, and ``strptime``
    measured a third of the FortiGate decoder's time."""
    try:
        return datetime.strptime(value, fmt)
    except ValueError:
        return None


def iso_time(value: str | None) -> float | datetime | None:
    """ISO 8601 with an offset → epoch seconds; without one → local :class:`datetime`."""
    if not value:
        return None
    try:
        dt = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return dt if dt.tzinfo is None else dt.timestamp()


# Transport names as ECS writes them, from IANA numbers and vendor spellings.
IANA_TRANSPORT = {"1": "icmp", "6": "tcp", "17": "udp", "58": "ipv6-icmp", "47": "gre", "50": "esp"}


def transport(value: str) -> str:
    """ECS ``network.transport`` from a number or name; ``tcp/443`` (name/port, as SonicWall
    and others write it) gives ``tcp``."""
    v = value.lower()
    name, slash, port = v.partition("/")
    if slash and port.isdigit():
        v = name
    return IANA_TRANSPORT.get(v, v)


@lru_cache(maxsize=65_536)
def canonical_ip(value: str) -> str | None:
    """The canonical text of an IP address, or ``None`` when ``value`` is not one.

    Cached (bounded): logs repeat the same few thousand addresses, and parsing one with
    :mod:`ipaddress` costs more than the rest of a vendor decode.
    """
    if value and len(value) <= 45 and value[0] in "0123456789abcdefABCDEF:":
        try:
            return str(ip_address(value))
        except ValueError:
            return None
    return None


def set_ip(fields: Fields, key: str, value: str | None) -> None:
    if value:
        ip = canonical_ip(value)
        if ip is not None:
            fields[key] = ip


def small_int(value: str | None) -> int | None:
    """A device's decimal number, or ``None`` when it is not one the store can keep.

    ASCII digits only (``str.isdigit`` and regex ``\\d`` also take "²", which ``int`` refuses,
    and Arabic-Indic digits), at most 18 of them, so the value and the sum of two fit SQLite's and
    orjson's signed 64 bits: a longer one made the event's stored line fail to encode."""
    if value and len(value) < 19 and value.isascii() and value.isdigit():
        return int(value)
    return None


_INT64 = 1 << 63


def json_int(text: str) -> int | str:
    """``parse_int`` for ``json.loads`` of a device's JSON: an integer that fits signed 64
    bits, else its exact text (a longer one made the stored line fail to encode)."""
    if len(text) <= 19:
        n = int(text)
        if -_INT64 <= n < _INT64:
            return n
    return text


def set_int(fields: Fields, key: str, value: str | None) -> None:
    n = small_int(value)
    if n is not None:
        fields[key] = n


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


def config_change(fields: Fields, user: str | None = None) -> None:
    """The network-device contract for a configuration change (the ``netdev_*`` rules)."""
    fields["event.category"] = ["configuration"]
    fields["event.type"] = ["change"]
    fields["event.action"] = "config_change"
    if user:
        fields["user.name"] = user


def intrusion_alert(fields: Fields) -> None:
    """The IDS contract the ``ids_*`` rules read (the vendor adds severity and rule)."""
    fields["event.kind"] = "alert"
    fields["event.category"] = ["intrusion_detection"]
    fields["event.type"] = ["info"]


# The antivirus / endpoint-protection contract (the ``av_*`` rules): ``event.action`` is one of
# these words whatever the vendor calls it; kind, type and outcome follow from it. The malware's
# (signature's) name goes to ``rule.name``, as for IDS signatures (docs/decoders.md).
MALWARE_ACTIONS: dict[str, tuple[str, str, str | None]] = {
    # action: (event.kind, event.type, event.outcome or None = not set)
    "detected": ("alert", "info", None),
    "blocked": ("alert", "info", "success"),
    "quarantined": ("alert", "change", "success"),
    "cleaned": ("alert", "change", "success"),
    "deleted": ("alert", "deletion", "success"),
    "clean_failed": ("alert", "info", "failure"),
    "left_alone": ("alert", "info", "failure"),
    "protection_disabled": ("alert", "change", None),
    "signature_update": ("event", "change", "success"),
    "signature_update_failed": ("event", "change", "failure"),
    "signature_outdated": ("event", "info", None),
    "scan_started": ("event", "start", None),
    "scan_completed": ("event", "end", "success"),
    "status": ("event", "info", None),
}


def malware(fields: Fields, action: str, outcome: str | None = None) -> None:
    """The antivirus contract: ``event.category`` malware, ``event.action`` one of
    :data:`MALWARE_ACTIONS` (another word is kept as an informational event)."""
    kind, etype, default = MALWARE_ACTIONS.get(action, ("event", "info", None))
    fields["event.kind"] = kind
    fields["event.category"] = ["malware"]
    fields["event.type"] = [etype]
    fields["event.action"] = action
    outcome = outcome or default
    if outcome:
        fields["event.outcome"] = outcome


def observer(fields: Fields, vendor: str, product: str, kind: str | None = None) -> None:
    fields["observer.vendor"] = vendor
    fields["observer.product"] = product
    if kind:
        fields["observer.type"] = kind


_KV = re.compile(r'([\w.\-]+)=(?:"([^"]*)"|(\S*))')


def kv_pairs(text: str, limit: int = 256) -> dict[str, str]:
    """``k=v k2="v 2"`` to a dict: quoted values may hold spaces; at most ``limit`` pairs,
    the first of a repeated key wins. Words without ``=`` are skipped.

    The native data plane does it when loaded (same dict, key order included; non-ASCII text
    is left to this reference). Here: one ``findall`` (in C) and a reversed dict build,
    measured faster than a split-and-join loop in Python on FortiGate lines (30-60 pairs).
    """
    if dataplane.native is not None:
        got: dict[str, str] | None = dataplane.native.kv_pairs(text, limit)
        if got is not None:
            return got
    return kv_pairs_reference(text, limit)


def kv_pairs_reference(text: str, limit: int = 256) -> dict[str, str]:
    """The Python reference of :func:`kv_pairs`."""
    found = _KV.findall(text)
    if len(found) > limit:
        del found[limit:]
    found.reverse()
    return {k: q or b for k, q, b in found}
