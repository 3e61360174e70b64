"""``GET /api/v1/events``: stored events, newest first, ECS-shaped, with a paging cursor."""

from __future__ import annotations

from aiohttp import web

from appliance.api.params import parse_int, parse_time
from appliance.api.server import APPLIANCE_KEY, json_page_built_off_loop


async def list_events(request: web.Request) -> web.Response:
    app = request.app[APPLIANCE_KEY]
    q = request.query
    max_page = app.config.api.max_page
    limit = parse_int("limit", q.get("limit"), 100, 1, max_page)
    cursor = parse_int("cursor", q.get("cursor"), 0, 0, 2**62) or None
    events = await app.store.query_events(
        since=parse_time("since", q.get("since")),
        until=parse_time("until", q.get("until")),
        source_ip=q.get("source.ip") or None,
        observer_ip=q.get("observer.ip") or None,
        hostname=q.get("host.hostname") or None,
        module=q.get("event.module") or None,
        text=q.get("q") or None,
        before_id=cursor,
        limit=limit,
    )
    sensor = app.config.appliance.sensor_id
    return await json_page_built_off_loop(
        lambda: {
            "events": [e.to_ecs(sensor) for e in events],
            "count": len(events),
            "next_cursor": str(events[-1].id) if len(events) == limit else None,
        }
    )


def setup(app: web.Application) -> None:
    app.router.add_get("/api/v1/events", list_events)
