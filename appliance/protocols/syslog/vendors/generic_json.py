"""Generic JSON payloads no vendor decoder claimed: scalars flattened under ``json.`` (depth 3,
at most 128 keys); the names vendors commonly use map to ECS (:mod:`.generic`)."""

from __future__ import annotations

import json
from typing import Any

from appliance.protocols.syslog.message import SyslogMessage
from appliance.protocols.syslog.vendors.base import Fields, VendorDecoder, json_int
from appliance.protocols.syslog.vendors.generic import map_common

MAX_KEYS = 128
MAX_DEPTH = 3


def _flatten(doc: dict[str, Any], prefix: str, out: dict[str, Any], depth: int) -> None:
    for key, value in doc.items():
        if len(out) >= MAX_KEYS:
            return
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            if depth < MAX_DEPTH:
                _flatten(value, name + ".", out, depth + 1)
        elif isinstance(value, str | int | float | bool) or value is None:
            out[name] = value
        elif isinstance(value, list) and all(isinstance(v, str | int | float) for v in value):
            out[name] = value[:32]


def decode(msg: SyslogMessage, fields: Fields) -> bool:
    text = msg.message
    if not text.startswith("{"):
        return False
    try:
        doc: Any = json.loads(text, parse_int=json_int)
    except (ValueError, RecursionError):  # RecursionError: hostile nesting depth
        return False
    if not isinstance(doc, dict):
        return False
    flat: dict[str, Any] = {}
    _flatten(doc, "", flat, 1)
    used = map_common(flat.items(), fields, msg)
    for key, value in flat.items():
        if key not in used:
            fields[f"json.{key}"] = value
    return True


DECODER = VendorDecoder(name="json", decode=decode, prefixes=("{",), order=90)
