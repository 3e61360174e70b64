"""A bounded BER reader for the SNMP message grammar (RFC 1157, RFC 3416), and a small writer.

Why hand-written: pyasn1's generic decoder costs about a millisecond per trap, which caps a
pysnmp receiver well below a trap storm. SNMP messages use a fixed, shallow grammar, so a
reader that walks exactly that grammar over the datagram with an index is an order of magnitude
faster, and it is bounded by construction: it never recurses into an arbitrary constructed
type, never allocates more than the datagram, and every length is checked against the end of
the enclosing element before it is used.

Every problem raises :class:`BerError` with a short fixed ``reason`` (a metrics label), never
another exception.
"""

from __future__ import annotations

# Universal and SNMP application tags (RFC 2578 / RFC 3416).
INTEGER = 0x02
OCTET_STRING = 0x04
NULL = 0x05
OBJECT_IDENTIFIER = 0x06
SEQUENCE = 0x30
IP_ADDRESS = 0x40
COUNTER32 = 0x41
GAUGE32 = 0x42
TIMETICKS = 0x43
OPAQUE = 0x44
COUNTER64 = 0x46
NO_SUCH_OBJECT = 0x80
NO_SUCH_INSTANCE = 0x81
END_OF_MIB_VIEW = 0x82

# RFC 2578 §3.5: at most 128 sub-identifiers, each at most 2^32-1.
MAX_OID_ARCS = 128
MAX_ARC = 0xFFFFFFFF


class BerError(ValueError):
    """The bytes are not a well-formed SNMP message; ``reason`` is a fixed metrics label."""

    def __init__(self, reason: str, offset: int = -1) -> None:
        super().__init__(f"{reason} at offset {offset}")
        self.reason = reason
        self.offset = offset


def read_header(data: bytes, pos: int, end: int) -> tuple[int, int, int]:
    """Tag, content start and content end of the element at ``pos`` (which must fit in
    ``end``). Only single-byte tags and definite lengths of at most 4 bytes exist in SNMP."""
    if pos + 2 > end:
        raise BerError("truncated", pos)
    tag = data[pos]
    if tag & 0x1F == 0x1F:
        raise BerError("multibyte_tag", pos)
    first = data[pos + 1]
    pos += 2
    if first < 0x80:
        length = first
    elif first == 0x80:
        raise BerError("indefinite_length", pos - 1)
    else:
        n = first & 0x7F
        if n > 4:
            raise BerError("length_too_long", pos - 1)
        if pos + n > end:
            raise BerError("truncated", pos)
        length = int.from_bytes(data[pos : pos + n], "big")
        pos += n
    stop = pos + length
    if stop > end:
        raise BerError("length_past_end", pos)
    return tag, pos, stop


def expect(data: bytes, pos: int, end: int, want: int, what: str) -> tuple[int, int]:
    tag, start, stop = read_header(data, pos, end)
    if tag != want:
        raise BerError(f"unexpected_{what}_tag", pos)
    return start, stop


def decode_signed(data: bytes, start: int, stop: int, max_len: int = 4) -> int:
    n = stop - start
    if n == 0:
        raise BerError("empty_integer", start)
    if n > max_len:
        raise BerError("integer_too_large", start)
    return int.from_bytes(data[start:stop], "big", signed=True)


def decode_unsigned(data: bytes, start: int, stop: int, max_len: int = 5) -> int:
    """Counter32/Gauge32/TimeTicks (and Counter64 with ``max_len`` 9): one leading zero octet
    is allowed so the top bit can be set; the value must fit the type's width."""
    n = stop - start
    if n == 0:
        raise BerError("empty_integer", start)
    if n > max_len:
        raise BerError("integer_too_large", start)
    value = int.from_bytes(data[start:stop], "big", signed=True)
    if value < 0:
        raise BerError("negative_unsigned", start)
    if value >> ((max_len - 1) * 8):
        raise BerError("integer_too_large", start)
    return value


_OID_CACHE: dict[bytes, str] = {}
_OID_CACHE_MAX = 16_384


def decode_oid(data: bytes, start: int, stop: int) -> str:
    """Dotted text of an OBJECT IDENTIFIER; at most 128 arcs of at most 2^32-1 each.

    Traps repeat the same few OIDs, so decoded ones are cached (bounded; only valid OIDs)."""
    raw = data[start:stop]
    hit = _OID_CACHE.get(raw)
    if hit is not None:
        return hit
    text = _decode_oid(data, start, stop)
    if len(_OID_CACHE) >= _OID_CACHE_MAX:
        _OID_CACHE.clear()
    _OID_CACHE[raw] = text
    return text


def _decode_oid(data: bytes, start: int, stop: int) -> str:
    if start == stop:
        raise BerError("empty_oid", start)
    if stop - start > MAX_OID_ARCS * 5:
        raise BerError("oid_too_long", start)
    arcs: list[int] = []
    value = 0
    pending = False
    for i in range(start, stop):
        b = data[i]
        if not pending and b == 0x80:
            raise BerError("oid_padding", i)  # a leading 0x80 octet is not minimal (X.690 8.19.2)
        value = (value << 7) | (b & 0x7F)
        if value > MAX_ARC * 80 + 80:  # the first subidentifier folds two arcs
            raise BerError("oid_arc_too_large", i)
        if b & 0x80:
            pending = True
            continue
        pending = False
        if not arcs:
            if value < 40:
                arcs.extend((0, value))
            elif value < 80:
                arcs.extend((1, value - 40))
            else:
                arcs.extend((2, value - 80))
        else:
            arcs.append(value)
        if arcs[-1] > MAX_ARC:
            raise BerError("oid_arc_too_large", i)
        value = 0
        if len(arcs) > MAX_OID_ARCS:
            raise BerError("oid_too_long", i)
    if pending:
        raise BerError("truncated_oid", stop)
    return ".".join(map(str, arcs))


# ------------------------------------------------------------------------------------- writer


def encode_length(n: int) -> bytes:
    if n < 0x80:
        return bytes((n,))
    body = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes((0x80 | len(body),)) + body


def encode_tlv(tag: int, content: bytes) -> bytes:
    return bytes((tag,)) + encode_length(len(content)) + content


def encode_integer(value: int, tag: int = INTEGER) -> bytes:
    length = max(1, (value + (value < 0)).bit_length() // 8 + 1)
    return encode_tlv(tag, value.to_bytes(length, "big", signed=True))


def encode_unsigned(value: int, tag: int) -> bytes:
    length = max(1, value.bit_length() // 8 + 1)
    return encode_tlv(tag, value.to_bytes(length, "big", signed=False))


def encode_oid(oid: str) -> bytes:
    arcs = [int(a) for a in oid.split(".")]
    if len(arcs) < 2:
        raise ValueError(f"OID {oid!r} needs at least two arcs")
    out = bytearray()
    for arc in [arcs[0] * 40 + arcs[1], *arcs[2:]]:
        chunk = [arc & 0x7F]
        arc >>= 7
        while arc:
            chunk.append(0x80 | (arc & 0x7F))
            arc >>= 7
        out.extend(reversed(chunk))
    return encode_tlv(OBJECT_IDENTIFIER, bytes(out))
