"""``GET /api/v1/baselines`` (rates per device, source, listener and rule against their hour-of-week
baseline, recent anomalies, rare actions, bounds) and ``GET /api/v1/baselines/new-terms``
(kinds, learning periods, recent new terms)."""

from __future__ import annotations

import json

from aiohttp import web

from appliance.analysis.baselines import BaselineComponent
from appliance.api.components import BASELINES_KEY, publish_running
from appliance.api.params import BadParam, parse_int

KINDS = ("device", "source", "listener", "rule")


def _component(request: web.Request) -> BaselineComponent:
    comp = request.app.get(BASELINES_KEY)
    if comp is None or not comp.config.analysis.baselines:
        raise web.HTTPServiceUnavailable(
            text=json.dumps({"error": "baselines are off (analysis.baselines)"}),
            content_type="application/json",
        )
    return comp


async def list_baselines(request: web.Request) -> web.Response:
    comp = _component(request)
    kind = request.query.get("kind") or None
    if kind is not None and kind not in KINDS:
        raise BadParam("kind", f"must be one of {', '.join(KINDS)}")
    limit = parse_int("limit", request.query.get("limit"), 100, 1, 10_000)
    return web.json_response({**comp.status(), "rates": comp.rates(kind, limit)})


async def list_new_terms(request: web.Request) -> web.Response:
    return web.json_response(_component(request).new_terms())


def setup(app: web.Application) -> None:
    publish_running(app, BASELINES_KEY, BaselineComponent)
    app.router.add_get("/api/v1/baselines", list_baselines)
    app.router.add_get("/api/v1/baselines/new-terms", list_new_terms)
