"""Event search: ``GET /api/v1/events`` (newest first, ECS-shaped, paged),
``GET /api/v1/events/aggregate`` (counts by a field) and ``GET /api/v1/events/histogram``
(counts per time bucket).

All three take the same filters: ``since``/``until`` (event time), ``q`` (text in the
message) and any field by name (``user.name=alice``, ``source.ip=10.0.0.0/8``,
``destination.port=1..1023``, ``event.severity=>=5``; a repeated field means any of its
values). An unknown field or a malformed value is a 400 naming it. Each request reads at most
``max_scan`` stored events (:data:`appliance.store.search.MAX_SCAN_EVENTS`); an answer that
stopped there says ``complete: false`` and gives ``next_cursor`` to continue (see
:mod:`appliance.store.search`).
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from appliance.api.params import BadParam, parse_int, parse_time
from appliance.api.server import APPLIANCE_KEY, json_page, json_page_built_off_loop
from appliance.event import iso8601
from appliance.store import search
from appliance.store.fields import FieldRegistry
from appliance.store.search import FilterError, Query
from appliance.store.segments import json_needle

FIELDS_KEY: web.AppKey[FieldRegistry] = web.AppKey("event_fields", FieldRegistry)
# Newest segments a probe for a not-yet-known field name reads (SQL's substring test only, no
# decoding).
PROBE_SEGMENTS = 64
MAX_BUCKETS = 2000
MAX_FILTERS = 32
DEFAULT_RANGE = 24 * 3600


async def _known(request: web.Request, names: list[str]) -> set[str]:
    """The names among ``names`` that stored events have, by a bounded probe of the newest
    segments (for fields a user's decoder emits before any search has read one)."""
    app = request.app[APPLIANCE_KEY]
    registry = request.app[FIELDS_KEY]
    conn = app.store.reader
    found = set()
    for name in names:
        if registry.known(name) or conn is None:
            continue
        needle = b'"' + json_needle(name) + b'":'
        async with conn.execute(
            "SELECT 1 FROM (SELECT body FROM event_segments ORDER BY first_id DESC LIMIT ?)"
            " WHERE seg_holds(body, ?) LIMIT 1",
            (PROBE_SEGMENTS, needle),
        ) as cur:
            if await cur.fetchone() is not None:
                found.add(name)
    registry.learn(found)
    return found


async def parse_query(request: web.Request) -> Query:
    """The filters of a search request, checked: 400 for an unknown or malformed one."""
    q = request.query
    registry = request.app[FIELDS_KEY]
    names = list(dict.fromkeys(k for k in q if k not in search.RESERVED))
    if len(names) > MAX_FILTERS:
        raise BadParam(names[MAX_FILTERS][:80], f"at most {MAX_FILTERS} field filters")
    for name in names:
        # One probe at a time, and the first unknown name ends the request: a client cannot
        # make one request read the newest segments once per made-up parameter.
        if not registry.known(name) and not await _known(request, [name]):
            break
    try:
        conditions = search.parse_filters(q.items(), registry.known)
    except FilterError as exc:
        raise BadParam(exc.name, exc.problem) from None
    since = parse_time("since", q.get("since"))
    until = parse_time("until", q.get("until"))
    if since is not None and until is not None and since > until:
        raise BadParam("since", "is after until")
    text = q.get("q") or None
    if text is not None and len(text) > search.MAX_VALUE_LEN:
        raise BadParam("q", f"longer than {search.MAX_VALUE_LEN}")
    return Query(since=since, until=until, conditions=conditions, text=text)


def _paging(request: web.Request) -> tuple[int | None, int]:
    q = request.query
    cursor = parse_int("cursor", q.get("cursor"), 0, 0, 2**62) or None
    max_scan = parse_int(
        "max_scan", q.get("max_scan"), search.MAX_SCAN_EVENTS, 1, search.MAX_SCAN_EVENTS
    )
    return cursor, max_scan


def _learn(request: web.Request, result: search.ScanResult) -> None:
    request.app[FIELDS_KEY].learn(result.seen_fields)


async def list_events(request: web.Request) -> web.Response:
    app = request.app[APPLIANCE_KEY]
    query = await parse_query(request)
    limit = parse_int("limit", request.query.get("limit"), 100, 1, app.config.api.max_page)
    cursor, max_scan = _paging(request)
    result = await search.find_events(
        app.store, query, limit=limit, before_id=cursor, max_scan=max_scan
    )
    _learn(request, result)
    sensor = app.config.appliance.sensor_id
    events = result.events
    return await json_page_built_off_loop(
        lambda: {
            "events": [e.to_ecs(sensor) for e in events],
            "count": len(events),
            "scanned": result.scanned,
            "complete": result.next_cursor is None or len(events) >= limit,
            "next_cursor": str(result.next_cursor) if result.next_cursor is not None else None,
        }
    )


def _range(request: web.Request, query: Query) -> tuple[float, float]:
    """Aggregations cover a bounded range: default the last 24 hours up to now."""
    app = request.app[APPLIANCE_KEY]
    until = query.until if query.until is not None else app.clock()
    since = query.since if query.since is not None else until - DEFAULT_RANGE
    if since > until:
        raise BadParam("since", "is after until")
    query.since, query.until = since, until
    return since, until


async def aggregate_events(request: web.Request) -> web.Response:
    app = request.app[APPLIANCE_KEY]
    q = request.query
    name = q.get("field")
    if not name:
        raise BadParam("field", "required: the field to count by")
    await _known(request, [name])
    if not search.FIELD_NAME.fullmatch(name) or not request.app[FIELDS_KEY].known(name):
        raise BadParam("field", "unknown field (no decoder emits it, none stored has it)")
    query = await parse_query(request)
    since, until = _range(request, query)
    limit = parse_int("limit", q.get("limit"), 10, 1, app.config.api.max_page)
    cursor, max_scan = _paging(request)
    result = await search.count_by(app.store, query, name, before_id=cursor, max_scan=max_scan)
    _learn(request, result)
    ranked = result.counts.most_common()
    top = ranked[:limit]
    return json_page(
        {
            "field": name,
            "since": iso8601(since),
            "until": iso8601(until),
            "buckets": [{"value": v, "count": n} for v, n in top],
            "other": sum(n for _v, n in ranked[limit:]),
            "missing": result.missing,
            "matched": result.matched,
            "scanned": result.scanned,
            "complete": result.next_cursor is None,
            "next_cursor": str(result.next_cursor) if result.next_cursor is not None else None,
        }
    )


async def histogram_events(request: web.Request) -> web.Response:
    app = request.app[APPLIANCE_KEY]
    query = await parse_query(request)
    since, until = _range(request, query)
    interval = parse_int("interval", request.query.get("interval"), 3600, 1, 366 * 86400)
    start = since // interval * interval
    n_buckets = int((until - start) // interval) + 1
    if n_buckets > MAX_BUCKETS:
        raise BadParam("interval", f"too small for the range: more than {MAX_BUCKETS} buckets")
    cursor, max_scan = _paging(request)
    result = await search.histogram(
        app.store, query, start, interval, before_id=cursor, max_scan=max_scan
    )
    _learn(request, result)
    buckets: list[dict[str, Any]] = [
        {"start": iso8601(start + k * interval), "count": result.counts.get(k, 0)}
        for k in range(n_buckets)
    ]
    return json_page(
        {
            "interval": interval,
            "since": iso8601(since),
            "until": iso8601(until),
            "buckets": buckets,
            "matched": result.matched,
            "scanned": result.scanned,
            "complete": result.next_cursor is None,
            "next_cursor": str(result.next_cursor) if result.next_cursor is not None else None,
        }
    )


def setup(app: web.Application) -> None:
    app[FIELDS_KEY] = FieldRegistry()
    app.router.add_get("/api/v1/events", list_events)
    app.router.add_get("/api/v1/events/aggregate", aggregate_events)
    app.router.add_get("/api/v1/events/histogram", histogram_events)
