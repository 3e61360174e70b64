"""Events on disk: JSON lines packed into segments, one SQLite row per segment.

Why segments: a row per event cost ~13 µs of SQLite work per event on a 2-core box (ten bound
columns, a B-tree insert and an index entry each), more than receiving and decoding the
message. One row per segment of up to :data:`SEGMENT_EVENTS` events makes the store's work per
event a memory copy, and retention deletes whole rows. Event ids are implicit: the event at
line ``k`` of the segment starting at ``first_id`` has id ``first_id + k``.

A line is ``orjson`` of ``[ts, created, module, fields, raw]`` where ``raw`` is the original
bytes as text when they are UTF-8, else ``[base64]``. JSON text never holds a raw newline, so
``\\n`` separates lines, and a value's JSON form is a substring of its line: a query can ask
SQLite's ``instr`` which segments may hold a match before any line is parsed, and a segment's
search index (:mod:`appliance.store.segindex`) is built from these bytes alone.
"""

from __future__ import annotations

import base64
from collections.abc import Callable, Iterator
from typing import Any

import orjson

from appliance import dataplane
from appliance.event import Event
from appliance.store import segindex

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


def index_rows(rows: list[tuple[Any, ...]]) -> list[tuple[int, bytes]]:
    """``event_index`` rows for ``segment_rows``' rows (none without the native builder)."""
    out = []
    for row in rows:
        bloom = segindex.segment_bloom(row[7])
        if bloom is not None:
            out.append((row[0], bloom))
    return out


def segment_lines(first_id: int, body: bytes) -> Iterator[tuple[int, bytes]]:
    """``(id, line)`` of every event in a segment, newest first."""
    lines = body.split(b"\n")
    for k in range(len(lines) - 1, -1, -1):
        yield first_id + k, lines[k]


def json_needle(value: str) -> bytes:
    """How ``value`` appears inside a stored line (for ``instr`` pre-filters)."""
    return orjson.dumps(value)[1:-1]
