"""Syslog framing (RFC 6587): a stream cut at arbitrary points frames exactly as the whole
stream does, frames and held bytes stay within the limits, and the native framer agrees with
the Python one frame for frame and error for error.

Input: ``max_length`` selector, ``max_digits`` selector, chunking seed, then the stream; the
Rust target ``rust-framer`` reads the same layout and cuts with the same xorshift.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from appliance import dataplane
from appliance.protocols.syslog.framing import SyslogFramer
from tests.fuzz.harness import committed_seeds, corpus_dir, corpus_lines

MAX_LEN = 4096
REASONS = {"octet_count_invalid", "octet_count_zero", "frame_too_long", "incomplete_frame"}


def limits(data: bytes) -> tuple[int, int, int, bytes]:
    """``(max_length, max_digits, chunk seed, stream)`` from an input."""
    head = data[:3].ljust(3, b"\0")
    max_length = 65536 if head[0] >= 250 else head[0] + 1
    return max_length, head[1] % 10 + 1, head[2], data[3:]


def chunks(stream: bytes, seed: int) -> Iterator[bytes]:
    """Seed 0: the whole stream at once; else pieces of 1..(seed % 64 + 1) bytes (xorshift32)."""
    if seed == 0:
        yield stream
        return
    state = seed * 0x9E3779B1 & 0xFFFFFFFF or 1
    top = seed % 64 + 1
    pos = 0
    while pos < len(stream):
        state ^= (state << 13) & 0xFFFFFFFF
        state ^= state >> 17
        state ^= (state << 5) & 0xFFFFFFFF
        size = state % top + 1
        yield stream[pos : pos + size]
        pos += size


def run(
    new: Callable[[int, int], Any], data: bytes, cut: bool
) -> tuple[list[bytes], dict[str, int]]:
    max_length, max_digits, seed, stream = limits(data)
    framer = new(max_length, max_digits)
    frames: list[bytes] = []
    for piece in chunks(stream, seed if cut else 0):
        framer.feed(piece)
        while (frame := framer.next_frame()) is not None:
            assert 0 < len(frame) <= max_length, (len(frame), max_length)
            frames.append(frame)
        assert framer.buffered <= max_length + max_digits + 1, (framer.buffered, max_length)
    assert framer.frames == len(frames), (framer.frames, len(frames))
    last = framer.close()
    if last is not None:
        assert 0 < len(last) <= max_length, (len(last), max_length)
        frames.append(last)
    assert framer.buffered == 0
    errors = dict(framer.errors)
    assert set(errors) <= REASONS, errors
    return frames, errors


def seeds() -> Iterator[bytes]:
    lines = [line for _stem, line in corpus_lines("syslog", per_file=20)]
    hand = [
        b"<13>1 - h a - - - one\n",
        b"17 <13>1 - - - - - x\n",
        b"05 <13>x\r\n\x00",
        b"999999999 <13>too many digits\n",
        b"0 \n",
        b"2024-01-05T10:00:00Z starts with a digit\n",
        b"30 <13>cut in the middle",
    ]
    for i, line in enumerate(hand):
        yield bytes([i * 37 % 256, i, i * 5]) + line * 3
    for i in range(0, len(lines), 6):
        group = lines[i : i + 6]
        lf = b"\n".join(group) + b"\n"
        octet = b"".join(b"%d %s" % (len(m), m) for m in group)
        mixed = b"".join(b"%d %s" % (len(m), m) if j % 2 else m + b"\n"
                         for j, m in enumerate(group))  # fmt: skip
        for j, stream in enumerate((lf, octet, mixed)):
            yield bytes([255 if j == 0 else 200, 7, (i + j) % 256]) + stream
    root = corpus_dir("syslog_pcap")
    if root is not None:
        from tests.pcap_reader import udp_packets  # only the pcaps need it

        for pcap in sorted(root.glob("*.pcap")):
            try:
                payloads = [p.payload for p in udp_packets(pcap)]
            except ValueError:
                continue
            if payloads:
                yield b"\xff\x07\x01" + b"\n".join(payloads)[:MAX_LEN]
    yield from committed_seeds("syslog-framing")


def one_input(data: bytes) -> None:
    whole = run(SyslogFramer, data, cut=False)
    cut = run(SyslogFramer, data, cut=True)
    assert cut == whole, f"cut stream framed differently: {cut!r} != {whole!r}"
    if dataplane.native is not None:
        native = run(dataplane.native.SyslogFramer, data, cut=True)
        assert native == whole, f"native framer differs: {native!r} != {whole!r}"
