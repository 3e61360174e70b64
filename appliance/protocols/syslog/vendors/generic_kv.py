"""Generic ``key=value`` payloads no vendor decoder claimed (appliances, scripts, loggers), and
the ``[key:"value"; key2:"value2"]`` blocks some devices write where RFC 5424 wants structured
data.

A line is read this way when its first word is ``key=value`` (two pairs at least) or it holds
three pairs or more, so free text that merely contains an ``=`` stays as it is. Values may be
bare, double- or single-quoted, with backslash escapes. The names vendors commonly use map to
ECS (:mod:`.generic`); the other pairs are kept under ``kv.<key>`` (at most 64).
"""

from __future__ import annotations

import re

from appliance.protocols.syslog.message import SyslogMessage
from appliance.protocols.syslog.vendors.base import Fields, VendorDecoder
from appliance.protocols.syslog.vendors.generic import bracket_pairs, map_common, verdict

MAX_KEYS = 64
_PAIR = re.compile(r"""([\w.\-]+)=(?:"((?:[^"\\]|\\.)*)"|'((?:[^'\\]|\\.)*)'|([^\s"']\S*|))""")
_ESCAPE = re.compile(r"\\(.)")


def kv_pairs(text: str, limit: int = MAX_KEYS) -> dict[str, str]:
    """``k=v k2="v 2" k3='v 3'`` to a dict; the first of a repeated key wins."""
    out: dict[str, str] = {}
    for m in _PAIR.finditer(text):
        key, dq, sq, bare = m.groups()
        if key in out:
            continue
        if dq is not None or sq is not None:
            value = dq if dq is not None else sq
            if "\\" in value:
                value = _ESCAPE.sub(r"\1", value)
        else:
            # "SrcIp=203.0.113.30, DstIp=..." and "(..., Action=Alert)": list punctuation.
            value = bare.rstrip(",;)")
        out[key] = value
        if len(out) == limit:
            break
    return out


# "k=v, k2=v 2, k3=v3" (Huawei and others): values may hold spaces, a comma ends them.
_COMMA_SEP = re.compile(r",\s*(?=[\w.\-]+=)")
_COMMA_PAIR = re.compile(r"([\w.\-]+)=(.*)", re.S)


def comma_pairs(text: str, limit: int = MAX_KEYS) -> dict[str, str]:
    """Pairs of a comma-separated list (at least three commas before keys), else empty."""
    parts = _COMMA_SEP.split(text)
    if len(parts) < 4:
        return {}
    out: dict[str, str] = {}
    for i, part in enumerate(parts):
        if i == 0:  # the text before the list: "...matched. (SyslogId=1906054" / "...:vsys=x"
            at = max(part.rfind("("), part.rfind(":"), part.rfind(" "))
            part = part[at + 1 :]
        m = _COMMA_PAIR.match(part.strip())
        if m is None:
            continue
        key, value = m.group(1), m.group(2).strip()
        if i == len(parts) - 1:
            value = value.rstrip(").").rstrip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
            value = value[1:-1]
        out.setdefault(key, value)
        if len(out) == limit:
            break
    return out


def _decode(pairs: dict[str, str], msg: SyslogMessage, fields: Fields) -> bool:
    used = map_common(pairs.items(), fields, msg)
    for key, value in pairs.items():
        if key not in used:
            fields[f"kv.{key}"] = value
    return True


def decode(msg: SyslogMessage, fields: Fields) -> bool:
    text = msg.message
    header_action = None
    if msg.format == "rfc5424":
        # Pairs that begin in the RFC 5424 header (Cisco Meraki: "<134>1 TS host flows allow
        # src=... dst=..." puts an event word in PROCID and the first pairs in PROCID/MSGID).
        head = [f for f in (msg.procid, msg.msgid) if f and "=" in f]
        if head:
            text = " ".join((*head, text))
            if msg.procid and "=" not in msg.procid:
                header_action = msg.procid
    sp = text.find(" ")
    eq = text.find("=", 0, sp if sp > 0 else len(text))
    pairs = comma_pairs(text) or kv_pairs(text)
    if len(pairs) < (2 if eq > 0 else 3):
        return False
    if header_action and verdict(header_action) is not None:
        pairs.setdefault("action", header_action)
    return _decode(pairs, msg, fields)


def decode_brackets(msg: SyslogMessage, fields: Fields) -> bool:
    pairs = dict(reversed(bracket_pairs(msg.message, MAX_KEYS)))
    return len(pairs) >= 2 and _decode(pairs, msg, fields)


def decode_structured_data(msg: SyslogMessage, fields: Fields) -> bool:
    """RFC 5424 structured data of a line nobody claimed: its params in the common names
    (``[origin ip="..."]``, ``[meta src="..." dst_port="..."]``) fill ECS fields too."""
    sd = msg.structured_data
    if not sd:
        return False
    pairs = [(k, v) for params in sd.values() for k, v in params.items()]
    return bool(map_common(pairs, fields, msg))


DECODERS = (
    VendorDecoder(name="kv", decode=decode, fallback=True, needle="=", order=90),
    # '[key:"value"; ...]' where RFC 5424 wants SD-ELEMENTs (the header left it in the text).
    VendorDecoder(
        name="kv_brackets",
        decode=decode_brackets,
        prefixes=("[",),
        prefix_needle='"',
        order=91,
    ),
    VendorDecoder(
        name="structured_data",
        decode=decode_structured_data,
        last_resort=True,
        structured_only=True,
    ),
)
