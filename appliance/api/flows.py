"""``GET /api/v1/flows`` (raw flow rows, filtered like events) and ``GET /api/v1/flows/top``
(top keys by bytes or packets from the per-minute rollups, including the open minutes)."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from appliance.api.params import BadParam, parse_int, parse_time
from appliance.api.server import APPLIANCE_KEY, json_page
from appliance.event import iso8601
from appliance.flows import store as flowstore
from appliance.flows.rollup import DIMENSIONS, OTHER
from appliance.protocols.netflow.ie import PROTOCOL_NAMES

_TRANSPORT_NUMBERS = {v: k for k, v in PROTOCOL_NAMES.items()}


def _flow_doc(ev: Any, sensor: str) -> dict[str, Any]:
    for key in ("event.start", "event.end"):
        value = ev.fields.get(key)
        if isinstance(value, int | float):
            ev.fields[key] = iso8601(value)
    return ev.to_ecs(sensor)


def _proto(q: Any) -> int | None:
    transport = q.get("network.transport")
    if transport:
        if transport not in _TRANSPORT_NUMBERS:
            raise BadParam("network.transport", "unknown transport")
        return _TRANSPORT_NUMBERS[transport]
    number = q.get("network.iana_number")
    return parse_int("network.iana_number", number, 0, 0, 255) if number else None


async def list_flows(request: web.Request) -> web.Response:
    app = request.app[APPLIANCE_KEY]
    q = request.query
    limit = parse_int("limit", q.get("limit"), 100, 1, app.config.api.max_page)
    cursor = parse_int("cursor", q.get("cursor"), 0, 0, 2**62) or None
    port = q.get("port")
    flows = await flowstore.query_flows(
        app.store,
        since=parse_time("since", q.get("since")),
        until=parse_time("until", q.get("until")),
        source_ip=q.get("source.ip") or None,
        destination_ip=q.get("destination.ip") or None,
        ip=q.get("ip") or None,
        port=parse_int("port", port, 0, 0, 65535) if port else None,
        exporter=q.get("observer.ip") or None,
        proto=_proto(q),
        before_id=cursor,
        limit=limit,
    )
    sensor = app.config.appliance.sensor_id
    return json_page(
        {
            "flows": [_flow_doc(f, sensor) for f in flows],
            "count": len(flows),
            "next_cursor": str(flows[-1].id) if len(flows) == limit else None,
        }
    )


async def top_flows(request: web.Request) -> web.Response:
    app = request.app[APPLIANCE_KEY]
    q = request.query
    by = q.get("by", "source.ip")
    if by not in DIMENSIONS:
        raise BadParam("by", f"must be one of {', '.join(DIMENSIONS)}")
    order = q.get("order", "bytes")
    if order not in ("bytes", "packets", "flows"):
        raise BadParam("order", "must be bytes, packets or flows")
    limit = parse_int("limit", q.get("limit"), 10, 1, app.config.api.max_page)
    now = app.clock()
    since = parse_time("since", q.get("since"))
    if since is None:
        since = now - 3600
    until = parse_time("until", q.get("until"))
    totals = await app.flows.top(by, since, until)
    other = totals.pop(OTHER, [0, 0, 0])
    col = {"bytes": 0, "packets": 1, "flows": 2}[order]
    ranked = sorted(totals.items(), key=lambda kv: kv[1][col], reverse=True)
    for _key, t in ranked[limit:]:
        other = [other[0] + t[0], other[1] + t[1], other[2] + t[2]]
    return web.json_response(
        {
            "by": by,
            "order": order,
            "since": iso8601(since),
            "until": iso8601(until) if until is not None else None,
            "top": [
                {"key": k, "bytes": t[0], "packets": t[1], "flows": t[2]} for k, t in ranked[:limit]
            ],
            "other": {"bytes": other[0], "packets": other[1], "flows": other[2]},
        }
    )


def setup(app: web.Application) -> None:
    app.router.add_get("/api/v1/flows", list_flows)
    app.router.add_get("/api/v1/flows/top", top_flows)
