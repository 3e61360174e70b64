"""The native syslog batch entry point against the per-message reference path.

Input: one parameter byte (bits 0-2: the sender, one of them denied, some with a vendor hint
and a zone; bit 3: a rate limit; bits 4-7: the size limit), then datagrams separated by 0x1e.
The batch goes through ``SyslogIntake.datagrams`` (one native call) and, one datagram at a
time, through ``SyslogIntake.datagram`` with the Python header reference. Events, stored lines
and counters must be equal, and no panic may be caught and hidden. The Rust policy and header
of the same input are fuzzed with their own coverage by ``rust-batch``.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import orjson

from appliance import dataplane
from appliance.config import SyslogSender, SyslogSource
from appliance.metrics import Registry
from appliance.protocols.syslog import decode
from appliance.sources.syslog_intake import SyslogIntake
from appliance.store.segments import encode_line_reference
from tests.fuzz.targets._syslog import DICTIONARY, syslog_seeds

MAX_LEN = 4096
__all__ = ["AVAILABLE", "DICTIONARY", "MAX_LEN", "one_input", "seeds"]
AVAILABLE = dataplane.native is not None
NOW = 1_795_940_000.25
RAW_MAX = 512
SENDERS = [
    SyslogSender(networks=["10.0.1.0/24"], vendor="cisco_asa", timezone="Europe/Berlin"),
    SyslogSender(networks=["10.0.2.0/24"], vendor="fortigate", tags=["edge"], site="hq"),
    SyslogSender(networks=["10.0.3.0/24"], vendor="linux_auth", timezone="America/New_York"),
]
# Three profiled senders, one allowed without a profile, a denied one, IPv6, a second sender
# of the first profile.
IPS = ["10.0.1.5", "10.0.2.5", "10.0.3.5", "10.0.4.5", "192.0.2.1", "203.0.113.9", "::1"]
IPS.append("10.0.1.6")


def seeds() -> Iterator[bytes]:
    return syslog_seeds("syslog-batch")


def _intake(rate: float, max_bytes: int) -> SyslogIntake:
    cfg = SyslogSource(
        listen="127.0.0.1:0",
        name="batch-test",  # its own rate-limited log key: other tests look for their lines
        allowed=["10.0.0.0/8", "192.0.2.0/24", "::1/128"],
        rate_limit=rate,
        rate_burst=3,
        max_message_bytes=max_bytes,
    )
    return SyslogIntake(cfg, SENDERS, Registry(), "udp")


def _books(intake: SyslogIntake, dropped: Any, truncated: Any) -> list[Any]:
    return [
        dropped.values,
        truncated.values,
        intake.parse_errors.values,
        intake.decoded.values,
        intake.skew.values,
    ]


def one_input(data: bytes) -> None:
    if not data:
        return
    param, body = data[0], data[1:]
    ip = IPS[param & 7]
    rate = 1.0 if param & 8 else 0.0
    max_bytes = 16 + (param >> 4) * 128
    items = [(d, (ip, 514)) for d in body.split(b"\x1e")]
    native, reference = _intake(rate, max_bytes), _intake(rate, max_bytes)
    books = []
    for _ in range(2):
        metrics = Registry()
        books.append(
            (
                metrics.counter("dropped", "", ["source", "reason"]),
                metrics.counter("truncated", "", ["source"]),
            )
        )
    panics = dataplane.native_panics()
    got = native.datagrams(items, NOW, max_bytes, RAW_MAX, *books[0])
    assert dataplane.native_panics() == panics, "the batch path panicked"
    saved = decode._native
    decode._native = None
    try:
        want = [
            e
            for d, addr in items
            if (e := reference.datagram(d, addr[0], NOW, max_bytes, *books[1])) is not None
        ]
    finally:
        decode._native = saved
    assert len(got) == len(want), (len(got), len(want))
    for g, w in zip(got, want, strict=True):
        assert g.raw == w.raw and g.timestamp == w.timestamp, g.raw
        assert orjson.dumps(g.fields) == orjson.dumps(w.fields), g.raw
        assert g.line == encode_line_reference(
            w.timestamp, w.created, w.module, w.fields, w.raw[:RAW_MAX]
        )
    assert _books(native, *books[0]) == _books(reference, *books[1])
