"""Events on disk: JSON lines packed into segments, one SQLite row per segment.

Why segments: a row per event cost ~13 µs of SQLite work per event on a 2-core box (ten bound
columns, a B-tree insert and an index entry each), more than receiving and decoding the
message. One row per segment of up to :data:`SEGMENT_EVENTS` events makes the store's work per
event a memory copy, and retention deletes whole rows. Event ids are implicit: the event at
line ``k`` of the segment starting at ``first_id`` has id ``first_id + k``.

A line is ``orjson`` of ``[ts, created, module, fields, raw]`` where ``raw`` is the original
bytes as text when they are UTF-8, else ``[base64]``. JSON text never holds a raw newline, so
``\\n`` separates lines, and a value's JSON form is a substring of its line: a query asks
which segments may hold a match before any line is parsed (``seg_holds``, a substring test on
the segment's text), and a segment's search index (:mod:`appliance.store.segindex`) is built
from these bytes alone.

A segment's body is stored packed: its lines as one zstd frame (level 1), which records its
size and a checksum of its content. Why: most of a line repeats from line to line (the ECS
keys, a sender's header values), and every byte stored is written twice (the WAL, then the
checkpoint's copy); on syslog/UDP at 100,000 msg/s those copies were ~40 % of the
appliance's CPU, and on an edge box they are flash wear. The rules bench's sshd segments
pack ~24x at ~1 GB/s and unpack at ~3 GB/s. A body that would not shrink, and every body
stored before 2026-12-07, is plain; the two forms tell themselves apart by their first bytes
(``[`` against zstd's magic number), so :func:`segment_text` reads both.
"""

from __future__ import annotations

import base64
import logging
from collections.abc import Callable, Iterator
from typing import Any

import orjson
import zstandard

from appliance import dataplane
from appliance.event import Event
from appliance.logutil import RateLimitedLog
from appliance.store import segindex

log = logging.getLogger(__name__)
_rl = RateLimitedLog(log)

SEGMENT_EVENTS = 1024
INSERT_SEGMENT = (
    "INSERT OR REPLACE INTO event_segments"
    " (first_id, last_id, count, min_ts, max_ts, min_created, max_created, body)"
    " VALUES (?,?,?,?,?,?,?,?)"
)
INSERT_INDEX = "INSERT OR REPLACE INTO event_index (first_id, bloom) VALUES (?,?)"


def _json_default(value: Any) -> Any:
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value).decode("utf-8", "backslashreplace")
    if isinstance(value, (set, frozenset)):
        return list(value)
    return str(value)


def encode_line_reference(
    ts: float, created: float, module: str, fields: dict[str, Any], raw: bytes
) -> bytes:
    """One event as its stored line; ``raw`` must already be bounded by the caller.

    The reference: :data:`encode_line` is the extension's writer on the native backend,
    which writes the same bytes itself and hands what it does not write to this."""
    try:
        raw_value: Any = raw.decode("utf-8") if raw else None
    except UnicodeDecodeError:
        raw_value = [base64.b64encode(raw).decode("ascii")]
    value = (ts, created, module, fields, raw_value)
    try:
        line = orjson.dumps(value, default=_json_default)
    except orjson.JSONEncodeError:
        # A key that is not text (a decoder keying by number) needs orjson's slower option;
        # asking for it on every event measured 28 % more instructions per line (callgrind).
        line = orjson.dumps(value, default=_json_default, option=orjson.OPT_NON_STR_KEYS)
    # orjson (3.10+) returns its output buffer as it grew, never shrunk: at least 4 KiB, 8 KiB
    # for a 1 KB line (tracemalloc). A line waits in the pipeline queue, so that slack was
    # most of the appliance's memory under load (scripts/bench rss: 9.2 KB per queued event,
    # 4.1 KB with this copy). One exact-sized copy costs ~0.25 µs.
    return bytes(memoryview(line))


encode_line: Callable[[float, float, str, dict[str, Any], bytes], bytes] = (
    dataplane.native.LineEncoder(encode_line_reference)
    if dataplane.native is not None
    else encode_line_reference
)


def decode_line(line: bytes, id_: int | None = None) -> Event:
    """The event a line holds; ``id_`` None for a line not stored yet (from a decode worker,
    which keeps the line so the store does not encode it again)."""
    ts, created, module, fields, raw_value = orjson.loads(line)
    if raw_value is None:
        raw = b""
    elif isinstance(raw_value, str):
        raw = raw_value.encode("utf-8")
    else:
        raw = base64.b64decode(raw_value[0])
    return Event(
        timestamp=ts,
        created=created,
        module=module,
        fields=fields,
        raw=raw,
        id=id_,
        line=line if id_ is None else None,
    )


def segment_rows(events: list[Event], max_raw: int) -> list[tuple[Any, ...]]:
    """``event_segments`` rows for a batch whose events already carry consecutive ids."""
    rows = []
    for start in range(0, len(events), SEGMENT_EVENTS):
        chunk = events[start : start + SEGMENT_EVENTS]
        lines = [
            e.line
            if e.line is not None
            else encode_line(e.timestamp, e.created, e.module, e.fields, e.raw[:max_raw])
            for e in chunk
        ]
        ts = [e.timestamp for e in chunk]
        created = [e.created for e in chunk]
        first = chunk[0].id
        assert first is not None
        rows.append(
            (
                first,
                first + len(chunk) - 1,
                len(chunk),
                min(ts),
                max(ts),
                min(created),
                max(created),
                b"\n".join(lines),
            )
        )
    return rows


def segment_rows_with_ids(
    events: list[Event], first_id: int, max_raw: int
) -> list[tuple[Any, ...]]:
    """Give ``events`` the ids from ``first_id`` on, then make their :func:`segment_rows`.

    The native builder does both in one pass over the events when every line is already
    ``bytes`` and every time a ``float`` (what the listeners hand over); the reference makes
    the rest. On the syslog/TCP path the pipeline's event loop is the limit, and the
    reference's passes were ~10 % of its time a message."""
    native = dataplane.native
    if native is not None and type(events) is list:
        rows: list[tuple[Any, ...]] | None = native.segment_rows_with_ids(
            events, first_id, SEGMENT_EVENTS
        )
        # None: the ids are given, a line or a time is left to the reference.
        return rows if rows is not None else segment_rows(events, max_raw)
    for i, ev in enumerate(events):
        ev.id = first_id + i
    return segment_rows(events, max_raw)


def line_census(events: list[Event]) -> tuple[int, list[int]]:
    """The bytes of the batch's stored lines that are ``bytes``, and the indices of the events
    whose line is anything else (``None``: a stage changed the event, its line is encoded
    again). One native pass on the native backend: the pipeline asks once a batch."""
    native = dataplane.native
    if native is not None and type(events) is list:
        got: tuple[int, list[int]] = native.line_census(events)
        return got
    total = 0
    odd: list[int] = []
    for i, ev in enumerate(events):
        line = ev.line
        if type(line) is bytes:
            total += len(line)
        else:
            odd.append(i)
    return total, odd


def finish_rows(
    rows: list[tuple[Any, ...]], filters: bool
) -> tuple[list[tuple[Any, ...]], list[tuple[int, bytes]]]:
    """``segment_rows``' rows as stored (each body packed) and, when ``filters``, their
    ``event_index`` rows (none without the native builder).

    The reference of the native ``FinishSegments``, which does the same on its own thread."""
    stored = []
    index = []
    for row in rows:
        body = row[7]
        if filters:
            bloom = segindex.segment_bloom(body)
            if bloom is not None:
                index.append((row[0], bloom))
        stored.append((*row[:7], pack_body(body)))
    return stored, index


#: zstd's level for segment bodies: the fastest of its regular levels (the native packer's too).
PACK_LEVEL = 1

#: The first bytes of every zstd frame (RFC 8878, 3.1.1); a plain body starts with ``[``.
ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"

#: The most a packed body may unpack to: 1024 lines at the line bound with room to spare. A
#: frame that claims more is corrupt, and is refused before anything is allocated.
MAX_TEXT_BYTES = 256 << 20


class CorruptSegment(ValueError):
    """A stored body that is neither plain lines nor a zstd frame of at most
    :data:`MAX_TEXT_BYTES`."""


def pack_body(body: bytes) -> bytes:
    """``body`` as stored: one zstd frame, or the plain lines when that is not smaller.

    The reference: the native backend packs a batch's bodies on its own thread
    (``FinishSegments``), with the same library and level."""
    # The content's checksum (4 bytes): a bit flipped on the disk fails the frame (a corrupt
    # segment, skipped and counted) instead of reading back as other text.
    packed = zstandard.ZstdCompressor(level=PACK_LEVEL, write_checksum=True).compress(body)
    return packed if len(packed) < len(body) else body


def _unpack(body: bytes) -> bytes:
    try:
        size = zstandard.frame_content_size(body)
        if size < 0:  # every frame the store writes records its size
            raise CorruptSegment("packed segment does not record its size")
        if size > MAX_TEXT_BYTES:
            raise CorruptSegment(f"packed segment claims {size} bytes")
        # A decompressor per call: one is not safe to share between threads (the reader's,
        # the scans' workers), and making one is ~1 µs against ~300 µs of unpacking.
        text: bytes = zstandard.ZstdDecompressor().decompress(body)
    except zstandard.ZstdError as exc:
        raise CorruptSegment(f"packed segment does not unpack: {exc}") from exc
    return text


_last_text: tuple[bytes, bytes] = (b"", b"")


def segment_text(body: bytes) -> bytes:
    """A stored body's lines: a packed body unpacked, a plain one as it is.

    The last packed body's text is kept (one pair, replaced as a whole, so the threads that
    read it see either pair, never a mix): a search asks SQL's ``seg_holds`` once a group of
    needles on a segment, then reads the same segment's lines."""
    global _last_text
    if body[:4] != ZSTD_MAGIC:
        return body
    last = _last_text
    if last[0] == body:
        return last[1]
    text = _unpack(body)
    _last_text = (body, text)
    return text


_corrupt_reads = 0


def corrupt_segment_reads() -> int:
    """Reads that skipped a segment because its body was corrupt (``readable_text``)."""
    return _corrupt_reads


def readable_text(first_id: int, body: bytes) -> bytes | None:
    """:func:`segment_text`, or ``None`` for a corrupt body: counted, logged (rate-limited)
    with the segment's first id, and skipped by the read, which goes on with the others.

    Why not fail the read: a frame damaged on the disk would otherwise fail every search,
    report and page that meets it, until retention deletes it."""
    global _corrupt_reads
    try:
        return segment_text(body)
    except CorruptSegment as exc:
        _corrupt_reads += 1
        _rl.warning("corrupt-segment", "event segment %d skipped: %s", first_id, exc)
        return None


def sql_text(body: bytes) -> bytes:
    """SQL function ``seg_text(body)`` on the store's reader: the segment's lines, so a read
    that tested the body with ``seg_holds`` in its WHERE gets the text that test unpacked
    (SQLite evaluates a row's result right after its test: the last text is still kept)
    instead of unpacking the body again. A corrupt body is handed back as it is, for the
    reader to skip and count (:func:`readable_text`)."""
    try:
        return segment_text(body)
    except CorruptSegment:
        return body


def sql_holds(body: bytes, *needles: bytes) -> bool:
    """SQL function ``seg_holds(body, needle, ...)`` on the store's reader: whether the
    segment's text holds any of the needles (SQL's ``instr``, on a body that may be packed).
    A corrupt body may: the read that fetches it skips it and counts it."""
    try:
        text = segment_text(body)
    except CorruptSegment:
        return True
    return any(n in text for n in needles)


def segment_lines(first_id: int, body: bytes) -> Iterator[tuple[int, bytes]]:
    """``(id, line)`` of every event in a stored segment, newest first (none for a corrupt
    one, see :func:`readable_text`)."""
    text = readable_text(first_id, body)
    if text is None:
        return
    lines = text.split(b"\n")
    for k in range(len(lines) - 1, -1, -1):
        yield first_id + k, lines[k]


def json_needle(value: str) -> bytes:
    """How ``value`` appears inside a stored line (for ``seg_holds`` pre-filters)."""
    return orjson.dumps(value)[1:-1]
