"""``GET /api/v1/intel`` (what is loaded, per feed, and each feed's fetch state) and
``GET /api/v1/intel/lookup?value=`` (is this address, domain, URL or hash listed, and why)."""

from __future__ import annotations

import json
import time
from typing import Any

from aiohttp import web

from appliance.analysis.feeds import feed_paths, read_meta
from appliance.analysis.intel import HASH_TYPES, NONE
from appliance.analysis.intel_stage import IntelComponent
from appliance.api.components import INTEL_KEY, publish_running
from appliance.api.params import BadParam
from appliance.event import iso8601

MAX_VALUE = 512  # percent-encoded, 4-byte characters still fit the 8 KiB request line


def _component(request: web.Request) -> IntelComponent:
    comp = request.app.get(INTEL_KEY)
    if comp is None:
        raise web.HTTPServiceUnavailable(
            text=json.dumps({"error": "threat intel is not running"}),
            content_type="application/json",
        )
    return comp


def _when(value: Any) -> str | None:
    return iso8601(float(value)) if isinstance(value, int | float) else None


async def intel_status(request: web.Request) -> web.Response:
    comp = _component(request)
    config = comp.config
    feeds = []
    for feed in config.analysis.feeds:
        data, meta_path = feed_paths(config.data_dir, feed.name)
        meta = read_meta(meta_path)
        feeds.append(
            {
                "name": feed.name,
                "url": feed.url,
                "enabled": feed.enabled,
                "fetched": data.exists(),
                "etag": meta.get("etag"),
                "last_checked": _when(meta.get("checked")),
                "last_changed": _when(meta.get("changed")),
                "bytes": meta.get("bytes"),
            }
        )
    return web.json_response({**comp.status(), "feeds": feeds})


async def intel_lookup(request: web.Request) -> web.Response:
    value = request.query.get("value", "").strip()
    if not value or len(value) > MAX_VALUE:
        raise BadParam("value", f"required, at most {MAX_VALUE} characters")
    index = _component(request).stage.index
    now = time.time()
    low = value.lower()
    if "://" in value:
        idx = index.lookup_url(value, now)
    elif len(low) in HASH_TYPES and all(c in "0123456789abcdef" for c in low):
        idx = index.lookup_hash(low, now)
    else:
        idx = index.lookup_ip(value, now)
        if idx == NONE and ":" not in value:
            idx = index.lookup_domain(value, now)
    if idx < 0:
        return web.json_response({"value": value, "listed": False})
    m = index.match(idx, value)
    return web.json_response(
        {
            "value": value,
            "listed": True,
            "indicator": {
                "type": m.kind,
                "name": m.value,
                "feed": m.feed,
                "confidence": m.confidence,
                "first_seen": iso8601(m.first_seen) if m.first_seen is not None else None,
                "last_seen": iso8601(m.last_seen) if m.last_seen is not None else None,
                "description": m.description,
            },
        }
    )


def setup(app: web.Application) -> None:
    publish_running(app, INTEL_KEY, IntelComponent)
    app.router.add_get("/api/v1/intel", intel_status)
    app.router.add_get("/api/v1/intel/lookup", intel_lookup)
