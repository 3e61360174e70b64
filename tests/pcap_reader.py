"""A tiny classic-pcap reader for tests: UDP payloads out of captured frames, no scapy.

Handles Ethernet (with 802.1Q tags), raw IP, Linux cooked (SLL) and BSD loopback link types,
IPv4 and IPv6 (no extension headers). Truncated captures yield the bytes that were captured.
"""

from __future__ import annotations

import ipaddress
import struct
from dataclasses import dataclass
from pathlib import Path


@dataclass
class UdpPacket:
    src: str
    sport: int
    dst: str
    dport: int
    payload: bytes


def _ip(frame: bytes, off: int) -> UdpPacket | None:
    if off >= len(frame):
        return None
    version = frame[off] >> 4
    if version == 4:
        ihl = (frame[off] & 0x0F) * 4
        if len(frame) < off + 20 or frame[off + 9] != 17:
            return None
        src = str(ipaddress.IPv4Address(frame[off + 12 : off + 16]))
        dst = str(ipaddress.IPv4Address(frame[off + 16 : off + 20]))
        udp = off + ihl
    elif version == 6:
        if len(frame) < off + 40 or frame[off + 6] != 17:
            return None
        src = str(ipaddress.IPv6Address(frame[off + 8 : off + 24]))
        dst = str(ipaddress.IPv6Address(frame[off + 24 : off + 40]))
        udp = off + 40
    else:
        return None
    if len(frame) < udp + 8:
        return None
    sport, dport, length = struct.unpack_from("!HHH", frame, udp)
    end = min(len(frame), udp + length) if length >= 8 else len(frame)
    return UdpPacket(src, sport, dst, dport, frame[udp + 8 : end])


def udp_packets(path: Path) -> list[UdpPacket]:
    data = path.read_bytes()
    magic = data[:4]
    if magic in (b"\xd4\xc3\xb2\xa1", b"\x4d\x3c\xb2\xa1"):
        endian = "<"
    elif magic in (b"\xa1\xb2\xc3\xd4", b"\xa1\xb2\x3c\x4d"):
        endian = ">"
    else:
        raise ValueError(f"{path}: not a classic pcap file")
    linktype = struct.unpack_from(endian + "I", data, 20)[0] & 0xFFFF
    out: list[UdpPacket] = []
    pos = 24
    while pos + 16 <= len(data):
        caplen = struct.unpack_from(endian + "I", data, pos + 8)[0]
        frame = data[pos + 16 : pos + 16 + caplen]
        pos += 16 + caplen
        if linktype == 1:  # Ethernet
            off, ethertype = 14, frame[12:14]
            while ethertype == b"\x81\x00" and len(frame) >= off + 4:
                ethertype = frame[off + 2 : off + 4]
                off += 4
            if ethertype not in (b"\x08\x00", b"\x86\xdd"):
                continue
        elif linktype in (101, 12, 14):  # raw IP
            off = 0
        elif linktype == 113:  # Linux cooked
            off = 16
        elif linktype == 0:  # BSD loopback
            off = 4
        else:
            continue
        pkt = _ip(frame, off)
        if pkt is not None:
            out.append(pkt)
    return out
