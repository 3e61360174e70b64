"""Incidents API: list and read incidents, and move them through their lifecycle.

``GET /api/v1/incidents`` (filters ``status``, ``severity``, ``since`` = last seen at or after,
``rule`` = rule id, ``limit``; newest last-seen first, evidence left out),
``GET /api/v1/incidents/{id}`` (with evidence), ``POST /api/v1/incidents/{id}/ack``,
``/resolve`` and ``/false-positive`` (JSON body optional: ``{"note": "...",
"suppress_for": seconds}``; with ``"scope"`` the false positive creates a scoped suppression,
see appliance/analysis/feedback_api.py). A transition not allowed from the current status is
a 409.
"""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web

from appliance.api.params import BadParam, parse_int, parse_time
from appliance.api.server import APPLIANCE_KEY, json_error, json_page
from appliance.correlate.component import CorrelationComponent, correlation_of
from appliance.incidents.manager import SEVERITIES, TransitionError

STATUSES = ("open", "acknowledged", "resolved", "suppressed")


def _component(request: web.Request) -> CorrelationComponent:
    comp = correlation_of(request.app[APPLIANCE_KEY])
    if comp is None:
        raise web.HTTPServiceUnavailable(
            text='{"error": "correlation is not running"}', content_type="application/json"
        )
    return comp


def _choice(name: str, value: str | None, allowed: tuple[str, ...]) -> str | None:
    if value is None or value == "":
        return None
    if value not in allowed:
        raise BadParam(name, f"must be one of {', '.join(allowed)}")
    return value


async def list_incidents(request: web.Request) -> web.Response:
    comp = _component(request)
    q = request.query
    app = request.app[APPLIANCE_KEY]
    docs = await comp.incidents.list(
        status=_choice("status", q.get("status"), STATUSES),
        severity=_choice("severity", q.get("severity"), SEVERITIES),
        since=parse_time("since", q.get("since")),
        rule=q.get("rule") or None,
        limit=parse_int("limit", q.get("limit"), 100, 1, app.config.api.max_page),
    )
    for d in docs:
        d.pop("evidence", None)
    return json_page({"incidents": docs, "count": len(docs)})


async def get_incident(request: web.Request) -> web.Response:
    comp = _component(request)
    doc = await comp.incidents.get(request.match_info["id"])
    if doc is None:
        return json_error(404, "no such incident")
    return web.json_response(doc)


async def _body(request: web.Request) -> dict[str, Any]:
    if not request.can_read_body:
        return {}
    try:
        body = await request.json()
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise BadParam("body", "not JSON") from None
    if not isinstance(body, dict):
        raise BadParam("body", "expected a JSON object")
    return body


def _transition(action: str) -> Any:
    async def handler(request: web.Request) -> web.Response:
        comp = _component(request)
        body = await _body(request)
        if action == "false-positive" and "scope" in body:
            from appliance.analysis.feedback_api import scoped_false_positive

            return await scoped_false_positive(request, comp.incidents, body)
        note = body.get("note", "")
        suppress_for = body.get("suppress_for")
        if not isinstance(note, str):
            raise BadParam("note", "must be a string")
        if suppress_for is not None and (
            isinstance(suppress_for, bool)
            or not isinstance(suppress_for, int | float)
            or suppress_for <= 0
        ):
            raise BadParam("suppress_for", "must be a positive number of seconds")
        try:
            doc = await comp.incidents.transition(
                request.match_info["id"], action, note=note, suppress_for=suppress_for
            )
        except TransitionError as exc:
            return json_error(409, str(exc))
        if doc is None:
            return json_error(404, "no such incident")
        return web.json_response(doc)

    return handler


def setup(app: web.Application) -> None:
    app.router.add_get("/api/v1/incidents", list_incidents)
    app.router.add_get("/api/v1/incidents/{id}", get_incident)
    for action in ("ack", "resolve", "false-positive"):
        app.router.add_post(f"/api/v1/incidents/{{id}}/{action}", _transition(action))
