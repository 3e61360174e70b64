"""``/healthz`` and ``/metrics``: unauthenticated, cheap, safe to scrape often."""

from __future__ import annotations

from aiohttp import web

from appliance import __version__, dataplane
from appliance.api.server import APPLIANCE_KEY


async def healthz(request: web.Request) -> web.Response:
    app = request.app[APPLIANCE_KEY]
    pipeline = app.pipeline
    sources = {}
    # Flow sources keep their own books (appliance.flows); a source is in one or the other.
    books = [(pipeline.received, pipeline.dropped), (app.flows.received, app.flows.dropped)]
    for src in app.sources:
        name = src.name
        sources[name] = {
            "received": int(sum(r.value(name) for r, _ in books)),
            "dropped": int(sum(v for _, d in books for k, v in d.values.items() if k[0] == name)),
        }
    not_listening = app.not_listening()
    degraded = app.degraded()
    return web.json_response(
        {
            "status": "starting" if not app.running else "degraded" if degraded else "ok",
            "degraded": degraded,
            "not_listening": not_listening,
            "version": __version__,
            "backend": dataplane.backend(),
            "sensor_id": app.config.appliance.sensor_id,
            "uptime_seconds": round(app.uptime(), 3),
            "events_stored": int(pipeline.stored.total()),
            "queue_depth": len(pipeline),
            "sources": sources,
        }
    )


async def metrics(request: web.Request) -> web.Response:
    app = request.app[APPLIANCE_KEY]
    return web.Response(
        text=app.metrics.render(),
        content_type="text/plain",
        charset="utf-8",
        headers={"X-Content-Type-Options": "nosniff"},
    )


def setup(app: web.Application) -> None:
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/metrics", metrics)
