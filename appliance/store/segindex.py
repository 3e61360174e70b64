"""The search index: one Bloom filter per event segment, of the terms its lines can match.

Why: a rare value (``source.ip=203.0.113.77``, ``user.name=x``) or a ``q=`` text that few
events hold made a search read every segment's blob with ``instr``: 4 s at 10 M events. A
filter per segment, written in the same transaction as the segment, lets the search skip
every segment that certainly holds no match after reading a few KB instead of ~400 KB.

Why a Bloom filter of tokens of the stored JSON text, not postings or FTS5: postings (a row
per distinct term per segment) and FTS5 cost more SQLite work per event than the whole segment
store (FTS5 measured 2x, see README), paid on every event whether anyone searches or not. The
filter is built from the segment's bytes in one pass in Rust (no JSON parsing), and is one
more row per segment; a false positive only costs reading that segment.

Terms (the tokens are the runs of bytes between :func:`is_delim` bytes):

* the tokens of the module and of every value in the fields object (list items included),
  as the line holds them: a value's escaped JSON form split at the same bytes gives tokens the
  line holds whole (a string value sits between quotes, which are delimiters);
* the byte trigrams of the tokens of ``message``, for ``q=`` (a substring of the message:
  every trigram inside one of its tokens is inside a token of the message).

Keys, the timestamps and the raw text are left out: no filter looks for them. This module is
the reference the Rust builder (``dataplane/src/segindex.rs``) is held to byte for byte, and
the query side (:func:`condition_probe`, :func:`text_probe`, :func:`may_hold`).
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from appliance import dataplane

VERSION = 1
K = 7
BITS_PER_TERM = 10
MIN_LOG2 = 9
MAX_LOG2 = 20

_M64 = (1 << 64) - 1
_SEED = 0x9E3779B97F4A7C15
_MUL = 0xFF51AFD7ED558CCD
_TRIGRAM_SEED = 0xC2B2AE3D27D4EB4F
_DELIMS = frozenset(b'",:[]{}\\ \t\n\r')
_SPLIT = re.compile(rb'[",:\[\]{}\\ \t\n\r]+')
_INTEGER = re.compile(r"-?[0-9]+")
# orjson writes a float of at least this magnitude with an exponent (``1e+16``), below it
# as ``5.0``: an integer filter value also matches a float field holding it.
_PLAIN_FLOAT_LIMIT = 10**16


def is_delim(b: int) -> bool:
    return b in _DELIMS


def _fmix(h: int) -> int:
    h ^= h >> 33
    h = (h * 0xFF51AFD7ED558CCD) & _M64
    h ^= h >> 33
    h = (h * 0xC4CEB9FE1A85EC53) & _M64
    return h ^ (h >> 33)


def _rotl29(h: int) -> int:
    return ((h << 29) | (h >> 35)) & _M64


def token_hash(token: bytes) -> int:
    h = _SEED ^ len(token)
    for k in range(0, len(token), 8):
        w = int.from_bytes(token[k : k + 8].ljust(8, b"\0"), "little")
        h = _rotl29(((h ^ w) * _MUL) & _M64)
    return _fmix(h)


def trigram_hash(t: bytes) -> int:
    return _fmix(_TRIGRAM_SEED ^ (t[0] | t[1] << 8 | t[2] << 16))


def _line_terms(line: bytes, out: set[int], message_tokens: set[int]) -> None:
    """The reference of ``scan_line`` in Rust: same states, same terms."""
    start = line.find(b'"')
    if start < 0:
        return
    depth = 1
    in_string = escape = is_key = expect_key = last_key_message = in_message = False
    key_start = 0
    tok: int | None = None

    def emit(token: bytes, message: bool) -> None:
        if not token:
            return
        h = token_hash(token)
        out.add(h)
        if message and len(token) >= 3 and h not in message_tokens:
            message_tokens.add(h)
            for k in range(len(token) - 2):
                out.add(trigram_hash(token[k : k + 3]))

    i = start
    n = len(line)
    while i < n:
        b = line[i]
        if in_string:
            if escape:
                escape = False
                if b not in _DELIMS and tok is None:
                    tok = i
                i += 1
                continue
            if b in _DELIMS:
                if tok is not None:
                    if not is_key:
                        emit(line[tok:i], in_message)
                    tok = None
                if b == 0x5C:  # backslash
                    escape = True
                elif b == 0x22:  # quote
                    in_string = False
                    if is_key:
                        last_key_message = line[key_start:i] == b"message"
                        is_key = False
                    in_message = False
            elif tok is None:
                tok = i
            i += 1
            continue
        if b in _DELIMS:
            if tok is not None:
                emit(line[tok:i], False)
                tok = None
            if b == 0x22:
                in_string = True
                if depth == 2 and expect_key:
                    is_key, expect_key, key_start = True, False, i + 1
                else:
                    in_message = depth == 2 and last_key_message
            elif b in (0x7B, 0x5B):  # { [
                depth += 1
                if b == 0x7B and depth == 2:
                    expect_key = True
            elif b in (0x7D, 0x5D):  # } ]
                depth = max(0, depth - 1)
                if depth <= 1 and b == 0x7D:
                    return
            elif b == 0x2C and depth == 2:  # ,
                expect_key = True
        elif tok is None:
            tok = i
        i += 1
    if tok is not None and (not in_string or not is_key):
        emit(line[tok:], in_string and in_message)


def terms(body: bytes) -> set[int]:
    out: set[int] = set()
    message_tokens: set[int] = set()
    for line in body.split(b"\n"):
        _line_terms(line, out, message_tokens)
    return out


def log2_bits(n: int) -> int:
    want = max(1, n * BITS_PER_TERM)
    return min(MAX_LOG2, max(MIN_LOG2, (want - 1).bit_length()))


def _positions(h: int, log2: int) -> Iterable[int]:
    mask = (1 << log2) - 1
    h1 = h & 0xFFFFFFFF
    h2 = (h >> 32) | 1
    return (((h1 + i * h2) & 0xFFFFFFFF) & mask for i in range(K))


def bloom_reference(body: bytes) -> bytes:
    """The filter of a segment body: ``[VERSION, log2 bits, bits...]`` (the Rust builder's
    reference: ~15 µs per event, which is why ingest without the extension builds none)."""
    found = terms(body)
    log2 = log2_bits(len(found))
    bits = bytearray((1 << log2) // 8)
    for h in found:
        for p in _positions(h, log2):
            bits[p >> 3] |= 1 << (p & 7)
    return bytes((VERSION, log2)) + bytes(bits)


def segment_bloom(body: bytes) -> bytes | None:
    """The filter to store with a segment, or ``None`` (stored unindexed: searched by
    scanning). Only the native builder indexes at ingest: the reference costs more than the
    rest of ingest together."""
    native = dataplane.native
    if native is None:
        return None
    bloom: bytes | None = native.segment_bloom(body)
    return bloom


def may_hold(filter_: bytes, hashes: Iterable[int]) -> bool:
    """Whether a segment with this filter may hold every term of ``hashes``."""
    if len(filter_) < 2 or filter_[0] != VERSION:
        return True
    log2 = filter_[1]
    bits = memoryview(filter_)[2:]
    if len(bits) != (1 << log2) // 8:
        return True
    for h in hashes:
        for p in _positions(h, log2):
            if not bits[p >> 3] & (1 << (p & 7)):
                return False
    return True


# ------------------------------------------------------------------------------- query side
# A probe is a list of groups; a segment may hold a match only if, for every group, one of its
# alternatives has all its terms in the filter. A condition the index cannot answer (ranges,
# CIDR, a value it may store in another form) gives no group: only the scan decides it.

Alternative = tuple[int, ...]
Group = tuple[Alternative, ...]


def _tokens(escaped: bytes) -> list[bytes]:
    return [t for t in _SPLIT.split(escaped) if t]


def value_alternatives(value: str, escaped: bytes) -> list[Alternative] | None:
    """The term sets one of which a line holding ``value`` (as text, or as the number or
    boolean that reads as it) has; ``None`` when the index cannot tell."""
    forms = [escaped]
    if _INTEGER.fullmatch(value):
        number = int(value)
        if abs(number) >= _PLAIN_FLOAT_LIMIT:
            return None
        forms.append(f"{number}.0".encode())  # a float field: orjson writes 5.0
        if number == 0:
            forms.append(b"-0.0")
    else:
        try:
            float(value)
        except ValueError:
            pass
        else:
            return None  # a float's text (repr) may differ from how orjson wrote it
    alts = []
    for form in forms:
        tokens = _tokens(form)
        if not tokens:
            return None
        alts.append(tuple(sorted({token_hash(t) for t in tokens})))
    return alts


def text_probe(escaped: bytes) -> Group | None:
    """The group for ``q=``: every trigram of every token of the text (at least one token of
    three bytes, or the index cannot help)."""
    hashes = set()
    for token in _tokens(escaped):
        for k in range(len(token) - 2):
            hashes.add(trigram_hash(token[k : k + 3]))
    if not hashes:
        return None
    return (tuple(sorted(hashes)),)


def probe_may_hold(filter_: bytes, probe: Iterable[Group]) -> bool:
    return all(any(may_hold(filter_, alt) for alt in group) for group in probe)


Compiled = tuple[tuple[tuple[tuple[int, int], ...], ...], ...]


def compile_probe(probe: Iterable[Group], log2: int) -> Compiled:
    """The probe as (byte offset in the filter, bit mask) pairs for filters of ``2^log2``
    bits: a search tests thousands of filters of a few sizes, so the positions are worked out
    once per size."""
    return tuple(
        tuple(
            tuple((2 + (p >> 3), 1 << (p & 7)) for h in alt for p in _positions(h, log2))
            for alt in group
        )
        for group in probe
    )


def compiled_may_hold(filter_: bytes, compiled: Compiled) -> bool:
    """:func:`probe_may_hold` for a probe compiled for this filter's size."""
    for group in compiled:
        for alt in group:
            if all(filter_[i] & m for i, m in alt):
                break
        else:
            return False
    return True
