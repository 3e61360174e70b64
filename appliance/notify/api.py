"""Notification API: deliveries, channel status, silences, and the acknowledgement page.

``GET /api/v1/notify/deliveries`` (``status`` = pending | dead | sent | limited, ``channel``,
``limit``) and ``GET /api/v1/notify/channels`` need the read scope;
``GET/POST /api/v1/notify/silences`` and ``DELETE /api/v1/notify/silences/{id}`` read and
write. ``/ack/{token}`` needs no API
token (the signed link is the credential): GET shows a page with a button, and only the POST
acknowledges, so a mail system's link scanner that prefetches the URL acknowledges nothing.
"""

from __future__ import annotations

import html
import json
from typing import Any

from aiohttp import web

from appliance.api.components import CORRELATION_KEY, NOTIFY_KEY, publish_running
from appliance.api.params import BadParam, parse_int
from appliance.api.server import APPLIANCE_KEY, TOKEN_KEY, json_error
from appliance.incidents.manager import TransitionError
from appliance.notify.acklink import AckRefused
from appliance.notify.engine import NotifyEngine
from appliance.notify.match import check_matchers

MAX_SILENCE = 366 * 86400.0
PAGE_HEADERS = {
    "Cache-Control": "no-store",
    "Referrer-Policy": "no-referrer",
    "Content-Security-Policy": "default-src 'none'; form-action 'self'; style-src 'unsafe-inline'",
    "X-Frame-Options": "DENY",
}


def _engine(request: web.Request) -> NotifyEngine:
    engine = request.app.get(NOTIFY_KEY)
    if engine is None:
        raise web.HTTPServiceUnavailable(
            text='{"error": "notifications are not configured"}', content_type="application/json"
        )
    return engine


async def list_deliveries(request: web.Request) -> web.Response:
    engine = _engine(request)
    q = request.query
    status = q.get("status") or None
    if status not in (None, "pending", "dead", "sent", "limited"):
        raise BadParam("status", "must be one of pending, dead, sent, limited")
    app = request.app[APPLIANCE_KEY]
    limit = parse_int("limit", q.get("limit"), 100, 1, app.config.api.max_page)
    items = await engine.deliveries(status=status, channel=q.get("channel") or None, limit=limit)
    return web.json_response({"deliveries": items, "count": len(items)})


async def list_channels(request: web.Request) -> web.Response:
    engine = _engine(request)
    channels = engine.status()
    return web.json_response({"channels": channels, "count": len(channels)})


async def list_silences(request: web.Request) -> web.Response:
    engine = _engine(request)
    now = engine.clock()
    items = [s.to_dict() for s in engine.silences.values() if s.expires > now]
    return web.json_response({"silences": items, "count": len(items)})


async def create_silence(request: web.Request) -> web.Response:
    engine = _engine(request)
    try:
        body: Any = await request.json()
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise BadParam("body", "not JSON") from None
    if not isinstance(body, dict):
        raise BadParam("body", "expected a JSON object")
    problem = check_matchers(body.get("matchers"))
    if problem:
        raise BadParam("matchers", problem)
    duration = body.get("duration")
    if (
        isinstance(duration, bool)
        or not isinstance(duration, int | float)
        or not 0 < duration <= MAX_SILENCE
    ):
        raise BadParam("duration", f"seconds, more than 0 and at most {MAX_SILENCE:.0f}")
    comment = body.get("comment", "")
    if not isinstance(comment, str):
        raise BadParam("comment", "must be a string")
    token = request.get(TOKEN_KEY)
    silence = await engine.add_silence(
        body["matchers"], float(duration), token.id if token else "", comment
    )
    return web.json_response(silence.to_dict(), status=201)


async def delete_silence(request: web.Request) -> web.Response:
    engine = _engine(request)
    if not await engine.delete_silence(request.match_info["id"]):
        return json_error(404, "no such silence")
    return web.json_response({"deleted": request.match_info["id"]})


# ------------------------------------------------------------------------- the ack page


def _page(title: str, body: str, status: int = 200) -> web.Response:
    doc = (
        "<!doctype html><html><head><meta charset=utf-8>"
        '<meta name=viewport content="width=device-width">'
        f"<title>{html.escape(title)}</title></head>"
        f'<body style="font-family:sans-serif;max-width:40em;margin:2em auto">'
        f"<h1>{html.escape(title)}</h1>{body}</body></html>"
    )
    return web.Response(text=doc, status=status, content_type="text/html", headers=PAGE_HEADERS)


def _refused(exc: AckRefused) -> web.Response:
    if exc.status == 410:
        return _page("Link expired", "<p>This acknowledgement link has expired.</p>", 410)
    return _page("Invalid link", "<p>This acknowledgement link is not valid.</p>", 403)


async def ack_page(request: web.Request) -> web.Response:
    engine = _engine(request)
    token = request.match_info["token"]
    try:
        incident_id = engine.verify_link(token)
    except AckRefused as exc:
        return _refused(exc)
    comp = _incidents(request)
    doc = await comp.get(incident_id) if comp is not None else None
    if doc is None:
        return _page("Unknown incident", "<p>This incident no longer exists.</p>", 404)
    e = html.escape
    return _page(
        "Acknowledge incident",
        f"<p><b>[{e(str(doc.get('severity', '')).upper())}]</b> {e(str(doc.get('title', '')))}"
        f"<br>group {e(str(doc.get('group_key', '')))}; status"
        f" <b>{e(str(doc.get('status', '')))}</b>; {e(str(doc.get('hit_count', '')))} hit(s),"
        f" last seen {e(str(doc.get('last_seen', '')))}</p>"
        '<form method=post><button type=submit style="font-size:1.3em">Acknowledge</button>'
        "</form>",
    )


def _incidents(request: web.Request) -> Any:
    comp = request.app.get(CORRELATION_KEY)
    return comp.incidents if comp is not None else None


async def ack_post(request: web.Request) -> web.Response:
    engine = _engine(request)
    try:
        incident_id = engine.verify_link(request.match_info["token"])
    except AckRefused as exc:
        return _refused(exc)
    try:
        doc = await engine.acknowledge(incident_id, "link")
    except TransitionError as exc:
        return _page("Not acknowledged", f"<p>{html.escape(str(exc))}.</p>", 409)
    if doc is None:
        return _page("Unknown incident", "<p>This incident no longer exists.</p>", 404)
    return _page(
        "Acknowledged",
        f"<p>{html.escape(str(doc.get('title', '')))} is acknowledged; escalation stopped.</p>",
    )


def setup(app: web.Application) -> None:
    publish_running(app, NOTIFY_KEY, NotifyEngine)
    app.router.add_get("/api/v1/notify/deliveries", list_deliveries)
    app.router.add_get("/api/v1/notify/channels", list_channels)
    app.router.add_get("/api/v1/notify/silences", list_silences)
    app.router.add_post("/api/v1/notify/silences", create_silence)
    app.router.add_delete("/api/v1/notify/silences/{id}", delete_silence)
    app.router.add_get("/ack/{token}", ack_page)
    app.router.add_post("/ack/{token}", ack_post)
