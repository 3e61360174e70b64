"""Incidents API: list and read incidents, and move them through their lifecycle.

``GET /api/v1/incidents`` (filters ``status``, ``severity``, ``since``/``until`` = last seen
in range, ``rule`` = rule id, ``assignee``; ``sort`` = last_seen | first_seen | updated |
severity | risk_score, ``order`` = desc | asc; ``limit``; evidence left out),
``GET /api/v1/incidents/{id}`` (with evidence ids and samples),
``GET /api/v1/incidents/{id}/events`` (the evidence events themselves, those still stored),
``POST /api/v1/incidents/{id}/ack``, ``/resolve``, ``/false-positive`` and ``/reopen`` (JSON
body optional: ``{"note": "...", "suppress_for": seconds}``; a false positive with
``"scope"`` creates a scoped suppression, see appliance/analysis/feedback_api.py), ``/assign``
(``{"assignee": "name"}``, empty to clear) and ``/comment`` (``{"text": "..."}``). A
transition not allowed from the current status is a 409. Every change bumps the revision,
adds a history entry (with the token id that made it) and is forwarded upstream like the
changes correlation makes.
"""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web

from appliance.api.components import CORRELATION_KEY, publish_running
from appliance.api.params import BadParam, parse_int, parse_time
from appliance.api.server import (
    APPLIANCE_KEY,
    TOKEN_KEY,
    json_error,
    json_page,
    json_page_built_off_loop,
)
from appliance.correlate.component import CorrelationComponent
from appliance.incidents.manager import (
    MAX_COMMENT,
    MAX_TEXT_SHORT,
    SEVERITIES,
    SORTS,
    TransitionError,
)
from appliance.store.search import events_by_ids

STATUSES = ("open", "acknowledged", "resolved", "suppressed")


def _component(request: web.Request) -> CorrelationComponent:
    comp = request.app.get(CORRELATION_KEY)
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
        until=parse_time("until", q.get("until")),
        rule=q.get("rule") or None,
        assignee=q.get("assignee") or None,
        sort=_choice("sort", q.get("sort"), tuple(SORTS)) or "last_seen",
        descending=(_choice("order", q.get("order"), ("desc", "asc")) or "desc") == "desc",
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


def _who(request: web.Request) -> str:
    token = request.get(TOKEN_KEY)
    return token.id if token is not None else ""


async def incident_events(request: web.Request) -> web.Response:
    comp = _component(request)
    doc = await comp.incidents.get(request.match_info["id"])
    if doc is None:
        return json_error(404, "no such incident")
    app = request.app[APPLIANCE_KEY]
    ids = doc.get("evidence", {}).get("event_ids", [])
    events = await events_by_ids(app.store, ids)
    sensor = app.config.appliance.sensor_id
    return await json_page_built_off_loop(
        lambda: {
            "incident": doc["id"],
            "events": [e.to_ecs(sensor) for e in events],
            "count": len(events),
            "missing": len(ids) - len(events),
        }
    )


def _text(body: dict[str, Any], name: str, limit: int, *, required: bool) -> str:
    value = body.get(name)
    if value is None and not required:
        return ""
    if not isinstance(value, str):
        raise BadParam(name, "must be a string")
    if required and not value.strip():
        raise BadParam(name, "must not be empty")
    if len(value) > limit:
        raise BadParam(name, f"longer than {limit} characters")
    return value


async def assign(request: web.Request) -> web.Response:
    comp = _component(request)
    body = await _body(request)
    if "assignee" not in body:
        raise BadParam("assignee", "required (an empty string clears it)")
    who = _text(body, "assignee", MAX_TEXT_SHORT, required=False)
    if not who.isprintable():
        raise BadParam("assignee", "must not contain control or unprintable characters")
    doc = await comp.incidents.assign(request.match_info["id"], who, by=_who(request))
    if doc is None:
        return json_error(404, "no such incident")
    return web.json_response(doc)


async def comment(request: web.Request) -> web.Response:
    comp = _component(request)
    body = await _body(request)
    text = _text(body, "text", MAX_COMMENT, required=True)
    doc = await comp.incidents.comment(request.match_info["id"], text, by=_who(request))
    if doc is None:
        return json_error(404, "no such incident")
    return web.json_response(doc)


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
                request.match_info["id"],
                action,
                note=note,
                suppress_for=suppress_for,
                by=_who(request),
            )
        except TransitionError as exc:
            return json_error(409, str(exc))
        if doc is None:
            return json_error(404, "no such incident")
        return web.json_response(doc)

    return handler


def setup(app: web.Application) -> None:
    publish_running(app, CORRELATION_KEY, CorrelationComponent)
    app.router.add_get("/api/v1/incidents", list_incidents)
    app.router.add_get("/api/v1/incidents/{id}", get_incident)
    app.router.add_get("/api/v1/incidents/{id}/events", incident_events)
    for action in ("ack", "resolve", "false-positive", "reopen"):
        app.router.add_post(f"/api/v1/incidents/{{id}}/{action}", _transition(action))
    app.router.add_post("/api/v1/incidents/{id}/assign", assign)
    app.router.add_post("/api/v1/incidents/{id}/comment", comment)
