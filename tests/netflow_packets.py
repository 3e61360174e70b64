"""Builders for NetFlow v5/v9 and IPFIX datagrams used by the flow tests (wire format by hand)."""

from __future__ import annotations

import socket
import struct
from collections.abc import Iterable, Sequence

# A small v9/IPFIX data template: src, dst, sport, dport, proto, bytes, packets.
FLOW_FIELDS: list[tuple[int, int]] = [(8, 4), (12, 4), (7, 2), (11, 2), (4, 1), (1, 8), (2, 8)]


def pad4(b: bytes) -> bytes:
    return b + b"\0" * (-len(b) % 4)


def set_(set_id: int, body: bytes, length: int | None = None) -> bytes:
    return struct.pack(">HH", set_id, 4 + len(body) if length is None else length) + body


def template_record(tid: int, fields: Sequence[tuple[int, int]], pens: dict[int, int] | None = None
                    ) -> bytes:  # fmt: skip
    out = struct.pack(">HH", tid, len(fields))
    for i, (ie, length) in enumerate(fields):
        pen = (pens or {}).get(i)
        if pen is not None:
            out += struct.pack(">HHI", ie | 0x8000, length, pen)
        else:
            out += struct.pack(">HH", ie, length)
    return out


def flow_record(src: str, dst: str, sport: int, dport: int, proto: int, nbytes: int,
                packets: int) -> bytes:  # fmt: skip
    return struct.pack(
        ">4s4sHHBQQ", socket.inet_aton(src), socket.inet_aton(dst), sport, dport, proto, nbytes,
        packets,
    )  # fmt: skip


def v9(sets: Iterable[bytes], *, seq: int = 0, source_id: int = 1, uptime: int = 100_000,
       secs: int = 1_700_000_000) -> bytes:  # fmt: skip
    sets = list(sets)
    return struct.pack(">HHIIII", 9, len(sets), uptime, secs, seq, source_id) + b"".join(sets)


def ipfix(sets: Iterable[bytes], *, seq: int = 0, odid: int = 1, export: int = 1_700_000_000,
          length: int | None = None) -> bytes:  # fmt: skip
    body = b"".join(sets)
    total = 16 + len(body) if length is None else length
    return struct.pack(">HHIII", 10, total, export, seq, odid) + body


def v5(records: Sequence[bytes], *, seq: int = 0, count: int | None = None, sampling: int = 0,
       uptime: int = 100_000, secs: int = 1_700_000_000) -> bytes:  # fmt: skip
    n = len(records) if count is None else count
    head = struct.pack(">HHIIIIBBH", 5, n, uptime, secs, 0, seq, 0, 0, sampling)
    return head + b"".join(records)


def v5_record(src: str, dst: str, sport: int, dport: int, proto: int, nbytes: int, packets: int,
              first: int = 90_000, last: int = 99_000) -> bytes:  # fmt: skip
    return struct.pack(
        ">4s4s4sHHIIIIHHBBBBHHBBH", socket.inet_aton(src), socket.inet_aton(dst), b"\0" * 4, 1, 2,
        packets, nbytes, first, last, sport, dport, 0, 0x18, proto, 0, 0, 0, 24, 24, 0,
    )  # fmt: skip


def v9_flows(n: int, *, tid: int = 256, seq: int = 0, with_template: bool = True,
             base: int = 0) -> bytes:  # fmt: skip
    """A v9 datagram with ``n`` flows (10.0.<i>.1 → 10.1.0.2:443), optionally its template."""
    sets = []
    if with_template:
        sets.append(set_(0, template_record(tid, FLOW_FIELDS)))
    recs = b"".join(
        flow_record(f"10.0.{(base + i) % 250}.1", "10.1.0.2", 40000 + i, 443, 6, 1000 + i, 10)
        for i in range(n)
    )
    sets.append(set_(tid, pad4(recs)))
    return v9(sets, seq=seq)


def ipfix_flows(n: int, *, tid: int = 256, seq: int = 0, with_template: bool = True) -> bytes:
    sets = []
    if with_template:
        sets.append(set_(2, template_record(tid, FLOW_FIELDS)))
    recs = b"".join(
        flow_record(f"10.0.{i % 250}.1", "10.1.0.2", 40000 + i, 443, 6, 1000 + i, 10)
        for i in range(n)
    )
    sets.append(set_(tid, pad4(recs)))
    return ipfix(sets, seq=seq)
