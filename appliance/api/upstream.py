"""``GET /api/v1/upstreams``: per upstream, is forwarding healthy and how far behind is it."""

from __future__ import annotations

from aiohttp import web

from appliance.api.components import FORWARDER_KEY, publish_running
from appliance.api.params import parse_int
from appliance.api.server import APPLIANCE_KEY, json_error
from appliance.forward import Forwarder
from appliance.logutil import printable


def _forwarder(request: web.Request) -> Forwarder | None:
    return request.app.get(FORWARDER_KEY)


async def list_upstreams(request: web.Request) -> web.Response:
    forwarder = _forwarder(request)
    upstreams = forwarder.status() if forwarder is not None else []
    return web.json_response({"upstreams": upstreams, "count": len(upstreams)})


async def list_dead_letters(request: web.Request) -> web.Response:
    """Items the upstream refused ``max_rejections`` times: what, when, and its last answer."""
    forwarder = _forwarder(request)
    name = request.match_info["name"]
    if forwarder is None or name not in forwarder.senders:
        return json_error(404, f"no enabled upstream lane {printable(name, 80)!r}")
    app = request.app[APPLIANCE_KEY]
    limit = parse_int("limit", request.query.get("limit"), 100, 1, app.config.api.max_page)
    items = await forwarder.outbox.dead_letters(name, limit)
    return web.json_response({"upstream": name, "dead_letters": items, "count": len(items)})


def setup(app: web.Application) -> None:
    publish_running(app, FORWARDER_KEY, Forwarder)
    app.router.add_get("/api/v1/upstreams", list_upstreams)
    app.router.add_get("/api/v1/upstreams/{name:[^{}]+}/dead-letters", list_dead_letters)
