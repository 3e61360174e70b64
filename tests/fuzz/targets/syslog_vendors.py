"""Vendor decoders through ``REGISTRY.decode`` as the intake calls them, after the header and
``syslog_fields``: any line gives a decoder name (or ``""``) and fields the store can write,
with addresses that are addresses, ports that are ports, and a bounded field count.

Input: one byte naming the decoder to force as the sender's configured ``vendor`` (0: none,
the registry picks by program name and first characters), then the line. One target for all
decoders so the fuzzer can carry what it learns of one vendor's shapes to the others;
``APPLIANCE_FUZZ_VENDOR=name`` pins one decoder for a long run on it.
"""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Iterator
from datetime import datetime

from appliance.protocols.syslog.decode import decode_syslog_reference
from appliance.protocols.syslog.ecs import syslog_fields
from appliance.protocols.syslog.message import device_time
from appliance.protocols.syslog.vendors import REGISTRY, VendorDecoder
from tests.fuzz.harness import committed_seeds, corpus_lines, finite_or_none, stored_json
from tests.fuzz.targets._syslog import DICTIONARY as HEADER_TOKENS
from tests.fuzz.targets._syslog import NOWS, ZONES

MAX_LEN = 4096
NAMES = sorted(REGISTRY.by_name)
PINNED = os.environ.get("APPLIANCE_FUZZ_VENDOR") or None
if PINNED is not None and PINNED not in REGISTRY.by_name:
    raise SystemExit(f"APPLIANCE_FUZZ_VENDOR={PINNED!r}: not one of {', '.join(NAMES)}")
# Corpus files whose lines are known to be one decoder's (the seed then forces it half the time).
_FILE_DECODER = {
    "cef_elastic-vaporware": "cef", "cef_fireeye": "cef", "cisco_asa": "cisco_asa",
    "cisco_pix": "cisco_asa", "cisco_ios": "cisco_ios", "f5_bigip": "f5_bigip",
    "fortinet_fortigate": "fortigate", "juniper_junos": "juniper_srx",
    "juniper_netscreen": "netscreen", "leef_panda_adaptive_defense": "leef",
    "linux_iptables": "netfilter", "linux_firewalld": "netfilter", "linux_sshd": "linux_auth",
    "linux_pam": "linux_auth", "linux_su": "linux_auth", "linux_sudo": "linux_auth",
    "dropbear_sshd": "linux_auth", "paloalto_panos": "paloalto",
    "pfsense_filterlog": "pfsense_filterlog", "snort_fast-alert_elastic": "snort",
    "suricata_eve_elastic-small": "suricata_eve",
    "windows_security_eventchannel_json": "windows",
    "windows_snare_rsyslog-win2022": "windows", "windows_snare_rfc5424_rsyslog-events": "windows",
}  # fmt: skip
DICTIONARY = (
    *HEADER_TOKENS, *(p.encode() for d in REGISTRY.by_name.values() for p in d.prefixes),
    *(p.encode() for d in REGISTRY.by_name.values() for p in d.programs),
    b"=", b'="', b"|", b"\\|", b'{"', b'":', b"src=", b"dst=", b"spt=", b"dpt=", b"SRC=",
    b"sentbyte=", b"rcvdbyte=", b"action=", b'"event_type":"alert"', b'"win":', b"rt=",
    b" from ", b" port ", b" for ", b"99999999999999999999", b"-1", b"1e999",
)  # fmt: skip
_ECS_ENDPOINTS = {"source", "destination", "client", "server", "observer", "host"}
_OUTCOMES = {"success", "failure", "unknown"}
MAX_FIELDS = 512  # kv/json decoders keep at most 256/128 keys; the header adds ~20


def _selector(name: str | None) -> int:
    return 0 if name is None or name not in REGISTRY.by_name else NAMES.index(name) + 1


def seeds() -> Iterator[bytes]:
    for stem, line in corpus_lines("syslog"):
        yield b"\0" + line
        yield bytes([_selector(_FILE_DECODER.get(stem))]) + line
    for stem, line in corpus_lines("json", suffixes=(".log", ".jsonl")):
        yield b"\0<14>Nov 29 11:59:00 host app: " + line
        yield bytes([_selector(_FILE_DECODER.get(stem))]) + line
    yield from committed_seeds("syslog-vendors")


def _hint(selector: int) -> VendorDecoder | None:
    if PINNED is not None:
        return REGISTRY.by_name[PINNED]
    if selector == 0 or selector > len(NAMES):
        return None
    return REGISTRY.by_name[NAMES[selector - 1]]


def one_input(data: bytes) -> None:
    if not data:
        return
    line = data[1:]
    msg = decode_syslog_reference(line, NOWS[0], None)
    fields = syslog_fields(msg, "192.0.2.1")
    name = REGISTRY.decode(msg, fields, _hint(data[0]))
    assert name == "" or name in REGISTRY.by_name, name
    assert len(fields) <= MAX_FIELDS, len(fields)
    for key, value in fields.items():
        assert isinstance(key, str), key
        if key.partition(".")[0] not in _ECS_ENDPOINTS:
            continue  # vendor namespaces (kv.port, json.src_ip) keep what the device sent
        if key.endswith(".ip"):
            assert isinstance(value, str), (key, value)
            ipaddress.ip_address(value)  # raises ValueError: not an address
        elif key.endswith(".port"):
            assert isinstance(value, int) and not isinstance(value, bool), (key, value)
    outcome = fields.get("event.outcome")
    assert outcome is None or outcome in _OUTCOMES, outcome
    t = msg.payload_time
    assert t is None or isinstance(t, datetime | float), t
    for tz in (None, ZONES[3]):
        finite_or_none(device_time(msg, tz), "device time")
    stored_json(fields, f"fields of decoder {name!r}")
