"""A tiny classic-pcap reader and writer for the flow tests (no scapy).

Reads UDP datagrams out of Ethernet (with 802.1Q tags), Linux cooked (SLL/SLL2), BSD loopback
and raw-IP captures, IPv4 or IPv6; writes Ethernet/IPv4 TCP/UDP packets for softflowd to read.
"""

from __future__ import annotations

import socket
import struct
from collections.abc import Iterator
from pathlib import Path
from typing import NamedTuple


class Datagram(NamedTuple):
    ts: float
    src: str
    sport: int
    dst: str
    dport: int
    payload: bytes


def _ip_udp(pkt: bytes, ts: float) -> Datagram | None:
    if not pkt:
        return None
    version = pkt[0] >> 4
    if version == 4:
        ihl = (pkt[0] & 0x0F) * 4
        total = struct.unpack_from(">H", pkt, 2)[0]
        if pkt[9] != 17:
            return None
        src, dst = socket.inet_ntoa(pkt[12:16]), socket.inet_ntoa(pkt[16:20])
        udp = pkt[ihl:total]
    elif version == 6:
        plen = struct.unpack_from(">H", pkt, 4)[0]
        if pkt[6] != 17:
            return None
        src = socket.inet_ntop(socket.AF_INET6, pkt[8:24])
        dst = socket.inet_ntop(socket.AF_INET6, pkt[24:40])
        udp = pkt[40 : 40 + plen]
    else:
        return None
    sport, dport, ulen = struct.unpack_from(">HHH", udp)
    return Datagram(ts, src, sport, dst, dport, bytes(udp[8:ulen]))


def read_udp(path: Path) -> Iterator[Datagram]:
    data = path.read_bytes()
    magic = data[:4]
    if magic in (b"\xd4\xc3\xb2\xa1", b"\x4d\x3c\xb2\xa1"):
        endian = "<"
    elif magic in (b"\xa1\xb2\xc3\xd4", b"\xa1\xb2\x3c\x4d"):
        endian = ">"
    else:
        raise ValueError(f"{path}: not a classic pcap file")
    nano = magic in (b"\x4d\x3c\xb2\xa1", b"\xa1\xb2\x3c\x4d")
    linktype = struct.unpack_from(endian + "I", data, 20)[0] & 0x0FFFFFFF
    off = 24
    rec = struct.Struct(endian + "IIII")
    while off + 16 <= len(data):
        sec, frac, incl, _orig = rec.unpack_from(data, off)
        off += 16
        pkt = data[off : off + incl]
        off += incl
        ts = sec + frac / (1e9 if nano else 1e6)
        if linktype == 1:  # Ethernet
            etype, p = struct.unpack_from(">H", pkt, 12)[0], 14
            while etype in (0x8100, 0x88A8):
                etype, p = struct.unpack_from(">H", pkt, p + 2)[0], p + 4
            pkt = pkt[p:]
        elif linktype == 113:  # Linux SLL
            pkt = pkt[16:]
        elif linktype == 276:  # Linux SLL2
            pkt = pkt[20:]
        elif linktype == 0:  # BSD loopback
            pkt = pkt[4:]
        elif linktype not in (12, 101, 228, 229):  # raw IP
            raise ValueError(f"{path}: link type {linktype} not supported")
        got = _ip_udp(pkt, ts)
        if got is not None:
            yield got


def _checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    s = sum(struct.unpack(f">{len(data) // 2}H", data))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return ~s & 0xFFFF


def ipv4_packet(src: str, dst: str, proto: int, sport: int, dport: int, payload: bytes) -> bytes:
    """An Ethernet frame carrying one IPv4 TCP (ACK|PSH) or UDP packet."""
    if proto == 6:
        l4 = struct.pack(">HHIIBBHHH", sport, dport, 1, 1, 5 << 4, 0x18, 65535, 0, 0) + payload
    else:
        l4 = struct.pack(">HHHH", sport, dport, 8 + len(payload), 0) + payload
    total = 20 + len(l4)
    hdr = struct.pack(
        ">BBHHHBBH4s4s", 0x45, 0, total, 0, 0, 64, proto, 0,
        socket.inet_aton(src), socket.inet_aton(dst),
    )  # fmt: skip
    hdr = hdr[:10] + struct.pack(">H", _checksum(hdr)) + hdr[12:]
    eth = b"\x02\x00\x00\x00\x00\x02" + b"\x02\x00\x00\x00\x00\x01" + b"\x08\x00"
    return eth + hdr + l4


def write_pcap(path: Path, packets: list[tuple[float, bytes]]) -> None:
    out = [struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1)]
    for ts, frame in packets:
        sec = int(ts)
        out.append(struct.pack("<IIII", sec, int((ts - sec) * 1e6), len(frame), len(frame)))
        out.append(frame)
    path.write_bytes(b"".join(out))
