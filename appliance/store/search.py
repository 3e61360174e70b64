"""Event search over the segment store: field filters, free text, counts by field, histograms.

Events are JSON lines in segments (:mod:`appliance.store.segments`), so a filter on an
arbitrary field means reading lines. What keeps that bounded:

* SQL skips segments first: by time range, by id (the paging cursor), by the segment's search
  index (:mod:`appliance.store.segindex`: a few KB read per segment instead of its blob) and
  by ``seg_holds`` of each filter's JSON form (``"user.name":"alice"``), a substring test on the
  segment's text (unpacked once for the query's tests and its scan) before any line is parsed;
* every request reads at most ``max_scan`` events (default :data:`MAX_SCAN_EVENTS`); when the
  budget runs out before the page is full (or before the range is covered, for counts) the
  answer says so (``complete: false``) and carries the cursor to continue from;
* SQL reads the blobs of at most :data:`SQL_SPAN_FACTOR` x ``max_scan`` ids of segments that
  have no index; a query the index can answer goes on past that through indexed segments (up
  to :data:`INDEXED_WINDOWS` such spans), since skipping one costs a filter, not a blob.

The index only ever skips segments that cannot hold a match; what is returned is decided by
parsing the lines, so an answer holds the same events with or without it (a request may just
cover more of the store before it hands back a cursor).

Filters are parsed here, purely (:func:`parse_filters`), so a malformed or unknown filter is a
:class:`FilterError` naming it before anything is read. Which field names are known: see
:mod:`appliance.store.fields`.
"""

from __future__ import annotations

import asyncio
import functools
import ipaddress
import math
import re
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, cast

import orjson

from appliance.store import segindex
from appliance.store.segments import decode_line, json_needle, readable_text

if TYPE_CHECKING:
    from appliance.event import Event
    from appliance.store.db import Store

# Events decoded per request at most. Measured (scripts/bench_search.py) at ~0.4 s of one core
# for 200k lines: the page answers in well under a second whatever the filter, and a client
# that wants more follows the cursor.
MAX_SCAN_EVENTS = 200_000
# Ids SQL's substring pre-filter (seg_holds) may look at per request, as a multiple of max_scan
# (measured on 1M events: reading every blob for a text no event has took 1.3 s; see
# scripts/bench_search).
SQL_SPAN_FACTOR = 5
# Spans of SQL_SPAN_FACTOR x max_scan ids one request may cover when the index answers the
# query (each further span only if its unindexed segments fit what is left of one span's).
INDEXED_WINDOWS = 50
# Segments fetched per SQL round trip (each up to 1024 events).
_BATCH_SEGMENTS = 8
# Values one filter may list (OR), and the length of one value.
MAX_VALUES = 50
MAX_VALUE_LEN = 1024
# Parameters of the search endpoints that are not field filters.
RESERVED = frozenset({"since", "until", "limit", "cursor", "q", "field", "interval", "max_scan"})
FIELD_NAME = re.compile(r"[A-Za-z0-9_@][A-Za-z0-9_@\-]*(\.[A-Za-z0-9_@\-]+)*")
_RANGE = re.compile(r"(>=|<=|>|<)(.+)")
# Fields read from the line's columns rather than the fields object.
_MODULE = "event.module"


class FilterError(ValueError):
    """A filter the API refuses; ``name`` is the parameter, the message says what is wrong."""

    def __init__(self, name: str, problem: str) -> None:
        super().__init__(f"{name}: {problem}")
        self.name = name
        self.problem = problem


def _number(name: str, text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise FilterError(name, f"{text[:40]!r} is not a number") from None
    if not math.isfinite(value):
        raise FilterError(name, "must be a finite number")
    return value


def _is_ip_field(name: str) -> bool:
    return name == "ip" or name.endswith(".ip") or name.endswith("_ip")


@dataclass(slots=True)
class Condition:
    """One field's test: any of ``equals`` (exact, as text or number), inside any of
    ``networks`` (CIDR, for IP fields), or within ``lo``/``hi`` (numbers)."""

    name: str
    equals: list[str] = field(default_factory=list)
    networks: list[ipaddress.IPv4Network | ipaddress.IPv6Network] = field(default_factory=list)
    lo: float | None = None
    lo_incl: bool = True
    hi: float | None = None
    hi_incl: bool = True

    def needles(self) -> list[list[bytes]]:
        """Groups of substrings a matching line must contain (one of each group), or none (no
        pre-filter).

        The key and the value are separate groups, not one ``"key":"value"`` string: a field
        may hold a list (``"event.type":["connection","denied"]``), where the value does not
        follow the key. Numbers are also looked for after ``:``, ``[`` or ``,``; a pre-filter
        may let through lines that do not match (the parsed fields decide), never the reverse.
        """
        if self.networks or self.lo is not None or self.hi is not None:
            return []
        values: list[bytes] = []
        for v in self.equals:
            values.append(b'"' + json_needle(v) + b'"')
            if self.name in ("source.ip", _MODULE):
                continue
            try:
                float(v)
            except ValueError:
                continue
            values += [b":" + v.encode(), b"[" + v.encode(), b"," + v.encode()]  # JSON numbers
        if not values:
            return []
        if self.name in ("source.ip", _MODULE):
            # source.ip may match observer.ip instead (see match_parts); the module is a
            # column of the line, not a key of its fields.
            return [values]
        return [[b'"' + json_needle(self.name) + b'":'], values]

    def index_group(self) -> segindex.Group | None:
        """What the search index must hold for a line to match (``None``: it cannot tell)."""
        if self.networks or self.lo is not None or self.hi is not None or not self.equals:
            return None
        alts: list[segindex.Alternative] = []
        for v in self.equals:
            found = segindex.value_alternatives(v, json_needle(v))
            if found is None:
                return None
            alts += found
        return tuple(alts)

    def matches(self, value: Any) -> bool:
        if value is None:
            return False
        if isinstance(value, list):
            return any(self.matches(v) for v in value)
        if isinstance(value, bool):
            text = "true" if value else "false"
        elif isinstance(value, float) and not value.is_integer():
            text = repr(value)
        elif isinstance(value, int | float):
            text = str(int(value))
        elif isinstance(value, str):
            text = value
        else:
            return False
        if text in self.equals:
            return True
        if self.networks and isinstance(value, str):
            try:
                ip = ipaddress.ip_address(value)
            except ValueError:
                return False
            return any(ip in net for net in self.networks if net.version == ip.version)
        if self.lo is not None or self.hi is not None:
            if isinstance(value, bool):
                return False
            if isinstance(value, int | float):
                num = float(value)
            else:
                try:
                    num = float(text)
                except ValueError:
                    return False
            if self.lo is not None and (num < self.lo or (num == self.lo and not self.lo_incl)):
                return False
            return not (
                self.hi is not None and (num > self.hi or (num == self.hi and not self.hi_incl))
            )
        return False


def parse_condition(name: str, values: list[str]) -> Condition:
    """One filter from its query values: ``v`` (exact; repeated = any of), ``a/n`` (CIDR on
    IP fields), ``a..b`` (inclusive range), ``>=n``, ``>n``, ``<=n``, ``<n``."""
    if not FIELD_NAME.fullmatch(name) or len(name) > 128:
        raise FilterError(name[:80], "not a field name")
    if len(values) > MAX_VALUES:
        raise FilterError(name, f"at most {MAX_VALUES} values")
    cond = Condition(name)
    for raw in values:
        if raw == "":
            raise FilterError(name, "empty value")
        if len(raw) > MAX_VALUE_LEN:
            raise FilterError(name, f"value longer than {MAX_VALUE_LEN}")
        if _is_ip_field(name) and "/" in raw:
            try:
                cond.networks.append(ipaddress.ip_network(raw, strict=False))
            except ValueError:
                raise FilterError(name, f"{raw[:60]!r} is not an address or CIDR") from None
            continue
        rng = _RANGE.fullmatch(raw)
        if rng or ".." in raw:
            if len(values) > 1:
                raise FilterError(name, "a range cannot be combined with other values")
            if rng:
                op, num = rng.groups()
                bound = _number(name, num)
                if op.startswith(">"):
                    cond.lo, cond.lo_incl = bound, op == ">="
                else:
                    cond.hi, cond.hi_incl = bound, op == "<="
            else:
                a, _, b = raw.partition("..")
                if a == "" and b == "":
                    raise FilterError(name, "a range needs a bound")
                cond.lo = _number(name, a) if a else None
                cond.hi = _number(name, b) if b else None
                if cond.lo is not None and cond.hi is not None and cond.lo > cond.hi:
                    raise FilterError(name, "range start is after its end")
            continue
        if _is_ip_field(name):
            try:
                ipaddress.ip_address(raw)
            except ValueError:
                raise FilterError(name, f"{raw[:60]!r} is not an address or CIDR") from None
        cond.equals.append(raw)
    return cond


@dataclass(slots=True)
class Query:
    """What to look for: time range, field conditions (all must hold), free text."""

    since: float | None = None
    until: float | None = None
    conditions: list[Condition] = field(default_factory=list)
    text: str | None = None

    def needles(self) -> list[list[bytes]]:
        """For SQL: a list of alternatives per condition (a segment must contain one of each)."""
        out = []
        for c in self.conditions:
            out += c.needles()
        if self.text:
            out.append([json_needle(self.text)])
        return out

    def index_probe(self) -> list[segindex.Group]:
        """Groups the search index tests (see :func:`segindex.probe_may_hold`); empty when no
        condition can use it."""
        probe = [g for c in self.conditions if (g := c.index_group()) is not None]
        if self.text:
            group = segindex.text_probe(json_needle(self.text))
            if group is not None:
                probe.append(group)
        return probe

    def match_parts(self, ts: float, module: str, fields: Mapping[str, Any]) -> bool:
        if self.since is not None and ts < self.since:
            return False
        if self.until is not None and ts >= self.until:
            return False
        for c in self.conditions:
            if c.name == _MODULE:
                value: Any = module
            else:
                value = fields.get(c.name)
                if value is None and c.name == "source.ip":
                    # Plain syslog and traps carry no source.ip: their source is the device.
                    value = fields.get("observer.ip")
            if not c.matches(value):
                return False
        if self.text:
            message = fields.get("message")
            if not isinstance(message, str) or self.text not in message:
                return False
        return True


def parse_filters(
    params: Iterable[tuple[str, str]], known: Callable[[str], bool]
) -> list[Condition]:
    """Field conditions from query parameters (everything not in :data:`RESERVED`); an unknown
    field (``known`` says no) or a malformed value is a :class:`FilterError`."""
    grouped: dict[str, list[str]] = {}
    for name, value in params:
        if name in RESERVED:
            continue
        grouped.setdefault(name, []).append(value)
    conds = []
    for name, values in grouped.items():
        cond = parse_condition(name, values)
        if not known(name):
            raise FilterError(name[:80], "unknown field (no decoder emits it, none stored has it)")
        conds.append(cond)
    return conds


@dataclass(slots=True)
class ScanResult:
    """What a bounded scan found: ``next_cursor`` is where to continue (``None`` when the
    store holds nothing older that could match)."""

    events: list[Event] = field(default_factory=list)
    counts: Counter[Any] = field(default_factory=Counter)
    matched: int = 0
    missing: int = 0
    scanned: int = 0
    next_cursor: int | None = None
    seen_fields: set[str] = field(default_factory=set)


@functools.lru_cache(maxsize=256)
def _compiled_probe(blob: bytes, log2: int) -> segindex.Compiled:
    groups = [tuple(tuple(alt) for alt in group) for group in orjson.loads(blob)]
    return segindex.compile_probe(groups, log2)


def sql_may_hold(bloom: bytes | None, probe: bytes | None) -> int:
    """SQL function ``seg_may_hold(bloom, probe)`` on the store's reader: 0 when the segment's
    filter rules out the probe (an orjson list of groups; see :meth:`Query.index_probe`).
    Called once per segment a search passes, so it only indexes bytes."""
    if bloom is None or probe is None or len(bloom) < 2 or bloom[0] != segindex.VERSION:
        return 1
    log2 = bloom[1]
    if len(bloom) != 2 + (1 << log2) // 8:
        return 1
    return int(segindex.compiled_may_hold(bloom, _compiled_probe(probe, log2)))


def _segment_sql(
    query: Query, before_id: int | None, floor: int | None = None, probe: bytes | None = None
) -> tuple[str, list[Any]]:
    clauses: list[str] = []
    args: list[Any] = []
    if floor is not None:
        clauses.append("s.first_id >= ?")
        args.append(floor)
    if query.since is not None:
        clauses.append("s.max_ts >= ?")
        args.append(query.since)
    if query.until is not None:
        clauses.append("s.min_ts < ?")
        args.append(query.until)
    if before_id is not None:
        clauses.append("s.first_id < ?")
        args.append(before_id)
    needles: list[str] = []
    needle_args: list[Any] = []
    for alts in query.needles():
        needles.append("seg_holds(s.body" + ", ?" * len(alts) + ")")
        needle_args.extend(alts)
    join = ""
    if probe is not None:
        # One CASE, so the filter is tested before seg_holds reads the blob: as separate terms,
        # SQLite tests those on the segment alone first (measured: every blob read).
        join = " LEFT JOIN event_index i ON i.first_id = s.first_id"
        clauses.append(
            "CASE WHEN i.bloom IS NULL OR seg_may_hold(i.bloom, ?)"
            f" THEN {' AND '.join(needles) or '1'} ELSE 0 END"
        )
        args.append(probe)
    else:
        clauses += needles
    args.extend(needle_args)
    where = f" WHERE {' AND '.join(clauses)}" if clauses else ""
    sql = (
        "SELECT s.first_id, seg_text(s.body) FROM event_segments s"  # noqa: S608 - fixed clauses
        + join
        + where
        + f" ORDER BY s.first_id DESC LIMIT {_BATCH_SEGMENTS}"
    )
    return sql, args


Visit = Callable[[int, bytes, float, str, dict[str, Any]], bool]


def _scan_batch(
    segments: list[tuple[int, bytes]],
    before_id: int | None,
    query: Query,
    visit: Visit,
    budget: int,
    result: ScanResult,
    learn: bool,
) -> tuple[bool, int | None]:
    """Feed matching lines to ``visit`` (which returns ``False`` to stop); newest first.
    Returns (stopped, id of the oldest line read).

    A line without the query's needles (the substrings SQL's ``seg_holds`` tested on the whole
    segment) cannot match and is not parsed: a segment the index let through for one rare
    value holds a few matching lines among a thousand, and a substring test is ~30x cheaper
    than parsing. It still counts as read (``scanned``), so the budget means what it did.
    """
    oldest: int | None = None
    needles = query.needles()
    one = needles[0][0] if len(needles) == 1 and len(needles[0]) == 1 else None
    for first_id, body in segments:
        text = readable_text(first_id, body)
        if text is None:
            continue
        lines = text.split(b"\n")
        # The lines to read, newest first: below the cursor, and no more than the budget.
        hi = len(lines) - 1
        if before_id is not None:
            hi = min(hi, before_id - first_id - 1)
        if hi < 0:
            continue
        room = budget - result.scanned
        if room <= 0:
            return True, oldest
        lo = max(0, hi - room + 1)
        read = range(hi, lo - 1, -1)
        # One comprehension per segment picks the lines holding the needles (a single
        # needle, the common case, is one ``in`` per line): a per-line loop cost more
        # than the test itself.
        if not needles:
            picked: Iterable[int] = read
        elif one is not None:
            picked = [k for k in read if one in lines[k]]
        else:
            picked = [k for k in read if all(any(n in lines[k] for n in alts) for alts in needles)]
        for k in picked:
            line = lines[k]
            ts, _created, module, fields, _raw = orjson.loads(line)
            if learn:
                result.seen_fields.update(fields)
            if query.match_parts(ts, module, fields) and not visit(
                first_id + k, line, ts, module, fields
            ):
                result.scanned += hi - k + 1
                return True, first_id + k
        result.scanned += hi - lo + 1
        oldest = first_id + lo
        if lo > 0:  # the budget ended inside this segment
            return True, oldest
    return False, oldest


async def scan(
    store: Store,
    query: Query,
    visit: Visit,
    *,
    before_id: int | None = None,
    max_scan: int = MAX_SCAN_EVENTS,
    learn: bool = True,
) -> ScanResult:
    """Run ``visit`` on the matching events newest first, reading at most ``max_scan``.

    Two budgets: ``max_scan`` lines parsed, and :data:`SQL_SPAN_FACTOR` x ``max_scan`` ids
    looked at by SQL's ``seg_holds`` pre-filter (which parses nothing, but reads the blobs: a
    text no event has would otherwise read the whole store in one request). A query the
    index answers goes on span by span while the unindexed segments of the spans it covers
    fit that second budget (at most :data:`INDEXED_WINDOWS` spans).
    """
    conn = store.reader
    if conn is None:
        from appliance.store.errors import StoreError

        raise StoreError("store is closed")
    result = ScanResult()
    span = max_scan * SQL_SPAN_FACTOR
    probe_list = query.index_probe()
    probe = orjson.dumps(probe_list) if probe_list else None
    top = before_id
    floor = await _sql_floor(conn, before_id, span)
    cursor = before_id
    windows = 1
    unindexed_left = span
    while True:
        sql, args = _segment_sql(query, cursor, floor, probe)
        async with conn.execute(sql, args) as cur:
            segments = cast("list[tuple[int, bytes]]", await cur.fetchall())
        if not segments:
            # Nothing more down to the floor; below it, older segments wait for the cursor.
            result.next_cursor = None
            if floor is not None and await _any_below(conn, floor):
                if probe is not None and windows < INDEXED_WINDOWS:
                    # Go on below the floor while the index does the skipping: the unindexed
                    # segments of every span covered must fit one span's blob reads.
                    if windows == 1:
                        unindexed_left -= await _unindexed_ids(conn, floor, top)
                    below = await _sql_floor(conn, floor, span)
                    unindexed = await _unindexed_ids(conn, below, floor)
                    if unindexed <= unindexed_left:
                        unindexed_left -= unindexed
                        windows += 1
                        cursor, floor = floor, below
                        continue
                result.next_cursor = floor
            return result
        stopped, oldest = await asyncio.to_thread(
            _scan_batch, segments, cursor, query, visit, max_scan, result, learn
        )
        if stopped:
            # Ids below the last line read (or, when the budget ran out on this batch's first
            # line, below the previous batch) are not read yet.
            result.next_cursor = oldest if oldest is not None else cursor
            return result
        cursor = segments[-1][0]


async def _sql_floor(conn: Any, before_id: int | None, span: int) -> int | None:
    """The first id of the segment where this request's SQL scan stops: ``span`` ids below
    the cursor (or the newest id), rounded down to a segment start. ``None``: no floor."""
    if before_id is None:
        async with conn.execute("SELECT max(last_id) FROM event_segments") as cur:
            row = await cur.fetchone()
        if not row or row[0] is None:
            return None
        top = int(row[0]) + 1
    else:
        top = before_id
    async with conn.execute(
        "SELECT first_id FROM event_segments WHERE first_id <= ? ORDER BY first_id DESC LIMIT 1",
        (top - span,),
    ) as cur:
        row = await cur.fetchone()
    return int(row[0]) if row else None


async def _unindexed_ids(conn: Any, lo: int | None, hi: int | None) -> int:
    """Events in segments from ``lo`` (inclusive) to ``hi`` (exclusive; ``None``: open) that
    have no search index (SQL reads their blobs)."""
    async with conn.execute(
        "SELECT coalesce(sum(s.count), 0) FROM event_segments s"
        " WHERE s.first_id >= ? AND s.first_id < ?"
        " AND NOT EXISTS (SELECT 1 FROM event_index i WHERE i.first_id = s.first_id)",
        (lo if lo is not None else 0, hi if hi is not None else 2**62),
    ) as cur:
        row = await cur.fetchone()
    return int(row[0]) if row else 0


async def _any_below(conn: Any, floor: int) -> bool:
    async with conn.execute(
        "SELECT 1 FROM event_segments WHERE first_id < ? LIMIT 1", (floor,)
    ) as cur:
        return await cur.fetchone() is not None


async def find_events(
    store: Store, query: Query, *, limit: int, before_id: int | None, max_scan: int
) -> ScanResult:
    """The newest ``limit`` matching events before ``before_id``."""
    found: list[Event] = []

    def visit(id_: int, line: bytes, _ts: float, _m: str, _f: dict[str, Any]) -> bool:
        found.append(decode_line(line, id_))
        return len(found) < limit

    result = await scan(store, query, visit, before_id=before_id, max_scan=max_scan)
    result.events = found
    result.matched = len(found)
    if len(found) < limit and result.next_cursor is None:
        return result
    if len(found) >= limit:
        result.next_cursor = found[-1].id
    return result


def _bucket_value(value: Any) -> Any:
    if isinstance(value, list | dict):
        return orjson.dumps(value).decode()
    return value


async def count_by(
    store: Store, query: Query, name: str, *, before_id: int | None, max_scan: int
) -> ScanResult:
    """Matching events counted by the value of field ``name`` (list values count each item)."""
    result_counts: Counter[Any] = Counter()
    missing = 0
    matched = 0

    def visit(_id: int, _line: bytes, _ts: float, module: str, fields: dict[str, Any]) -> bool:
        nonlocal missing, matched
        matched += 1
        value = module if name == _MODULE else fields.get(name)
        if value is None:
            missing += 1
        elif isinstance(value, list):
            for v in value[:MAX_VALUES]:
                result_counts[_bucket_value(v)] += 1
        else:
            result_counts[_bucket_value(value)] += 1
        return True

    result = await scan(store, query, visit, before_id=before_id, max_scan=max_scan)
    result.counts = result_counts
    result.missing = missing
    result.matched = matched
    return result


async def histogram(
    store: Store,
    query: Query,
    start: float,
    interval: float,
    *,
    before_id: int | None,
    max_scan: int,
) -> ScanResult:
    """Matching events counted per ``interval``-second bucket from ``start`` (event time)."""
    buckets: Counter[Any] = Counter()
    matched = 0

    def visit(_id: int, _line: bytes, ts: float, _m: str, _f: dict[str, Any]) -> bool:
        nonlocal matched
        matched += 1
        buckets[int((ts - start) // interval)] += 1
        return True

    result = await scan(store, query, visit, before_id=before_id, max_scan=max_scan)
    result.counts = buckets
    result.matched = matched
    return result


async def events_by_ids(store: Store, ids: Iterable[int]) -> list[Event]:
    """The stored events with these ids (those retention deleted are left out), newest first.
    One indexed segment lookup per distinct segment, so a few hundred ids stay cheap."""
    conn = store.reader
    if conn is None:
        from appliance.store.errors import StoreError

        raise StoreError("store is closed")
    wanted = sorted({int(i) for i in ids if isinstance(i, int) and i > 0}, reverse=True)
    out: list[Event] = []
    segment: tuple[int, list[bytes]] | None = None
    for id_ in wanted:
        if segment is None or not segment[0] <= id_ < segment[0] + len(segment[1]):
            async with conn.execute(
                "SELECT first_id, body FROM event_segments WHERE first_id <= ?"
                " ORDER BY first_id DESC LIMIT 1",
                (id_,),
            ) as cur:
                row = await cur.fetchone()
            if row is None:
                break  # nothing older is stored
            text = readable_text(int(row[0]), bytes(row[1]))
            segment = (int(row[0]), text.split(b"\n") if text is not None else [])
        k = id_ - segment[0]
        if 0 <= k < len(segment[1]):
            out.append(decode_line(segment[1][k], id_))
    return out
