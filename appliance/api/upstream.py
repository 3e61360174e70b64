"""``GET /api/v1/upstreams``: per upstream, is forwarding healthy and how far behind is it."""

from __future__ import annotations

from aiohttp import web

from appliance.api.server import APPLIANCE_KEY


async def list_upstreams(request: web.Request) -> web.Response:
    app = request.app[APPLIANCE_KEY]
    from appliance.forward import Forwarder

    forwarder = next((c for c in app.components if isinstance(c, Forwarder)), None)
    upstreams = forwarder.status() if forwarder is not None else []
    return web.json_response({"upstreams": upstreams, "count": len(upstreams)})


def setup(app: web.Application) -> None:
    app.router.add_get("/api/v1/upstreams", list_upstreams)
