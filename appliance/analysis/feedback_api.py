"""Analyst feedback over the API: scoped suppressions and the noisy-rules report.

- ``GET /api/v1/suppressions`` (``rule``, ``active=true``): every suppression with its
  suppressed count; ``POST`` creates one (``rule``, ``scope``, ``value``, ``expires`` or
  ``expires_in`` seconds, ``note``); ``PATCH /api/v1/suppressions/{id}`` changes ``expires``
  (``null``: never) / ``expires_in`` and ``note``; ``DELETE`` ends it.
- ``POST /api/v1/incidents/{id}/false-positive`` with ``scope`` (``group`` | ``source`` |
  ``asset``) marks the incident and creates the suppression in the same transaction; the
  value defaults to the incident's group key, its source address, or its asset.
- ``GET /api/v1/rules/noise``: per rule, incidents and their false-positive share.
"""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web

from appliance.analysis.feedback import (
    ASSET_ADDRESS_FIELDS,
    ASSET_NAME_FIELDS,
    SOURCE_FIELDS,
    FeedbackComponent,
    SuppressionError,
    noise_report,
)
from appliance.api.components import FEEDBACK_KEY, publish_running
from appliance.api.params import BadParam, parse_time
from appliance.api.server import APPLIANCE_KEY, TOKEN_KEY, json_error


def _component(request: web.Request) -> FeedbackComponent:
    comp = request.app.get(FEEDBACK_KEY)
    if comp is None:
        raise web.HTTPServiceUnavailable(
            text=json.dumps({"error": "correlation is not running"}),
            content_type="application/json",
        )
    return comp


async def _body(request: web.Request) -> dict[str, Any]:
    try:
        body = await request.json() if request.can_read_body else {}
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise BadParam("body", "not JSON") from None
    if not isinstance(body, dict):
        raise BadParam("body", "expected a JSON object")
    return body


def _str(body: dict[str, Any], name: str, default: str = "") -> str:
    v = body.get(name, default)
    if not isinstance(v, str):
        raise BadParam(name, "must be a string")
    return v


def _expires(body: dict[str, Any], now: float) -> tuple[bool, float | None]:
    """Whether the body sets an expiry, and which: ``expires`` (a time, or null for never),
    else ``expires_in`` (seconds from now)."""
    if "expires_in" in body:
        v = body["expires_in"]
        if isinstance(v, bool) or not isinstance(v, int | float) or not 0 < v < 1e10:
            raise BadParam("expires_in", "must be a positive number of seconds")
        return True, now + float(v)
    if "expires" in body:
        v = body["expires"]
        if v is None:
            return True, None
        if isinstance(v, bool) or not isinstance(v, str | int | float):
            raise BadParam("expires", "a time (RFC 3339 or epoch seconds) or null")
        return True, parse_time("expires", str(v))
    return False, None


def _who(request: web.Request) -> str:
    """The token id that made a change (as the incident history records it)."""
    token = request.get(TOKEN_KEY)
    return token.id if token is not None else ""


async def list_suppressions(request: web.Request) -> web.Response:
    comp = _component(request)
    active = request.query.get("active", "") in ("1", "true", "yes")
    items = comp.suppressions.list(rule=request.query.get("rule") or None, live_only=active)
    return web.json_response({"suppressions": [s.to_dict() for s in items], "count": len(items)})


async def create_suppression(request: web.Request) -> web.Response:
    comp = _component(request)
    body = await _body(request)
    rule = _str(body, "rule")
    if not rule:
        raise BadParam("rule", "required (a rule id)")
    _given, expires = _expires(body, comp.suppressions.clock())
    try:
        s = await comp.suppressions.create(
            rule,
            _str(body, "scope"),
            _str(body, "value"),
            expires=expires,
            note=_str(body, "note"),
            created_by=_who(request),
        )
    except SuppressionError as exc:
        return json_error(400, str(exc))
    return web.json_response(s.to_dict(), status=201)


async def edit_suppression(request: web.Request) -> web.Response:
    comp = _component(request)
    body = await _body(request)
    note = _str(body, "note") if "note" in body else None
    given, expires = _expires(body, comp.suppressions.clock())
    try:
        s = await comp.suppressions.update(
            request.match_info["id"], expires=expires, keep_expiry=not given, note=note
        )
    except SuppressionError as exc:
        return json_error(400, str(exc))
    if s is None:
        return json_error(404, "no such suppression")
    return web.json_response(s.to_dict())


async def delete_suppression(request: web.Request) -> web.Response:
    comp = _component(request)
    if not await comp.suppressions.delete(request.match_info["id"]):
        return json_error(404, "no such suppression")
    return web.json_response({"deleted": request.match_info["id"]})


def default_value(scope: str, doc: dict[str, Any]) -> str | None:
    """What a false-positive mark's scope means for this incident when no value is given."""
    group = doc.get("group") or {}
    if scope == "group":
        return str(doc["group_key"])
    fields = SOURCE_FIELDS if scope == "source" else ASSET_ADDRESS_FIELDS + ASSET_NAME_FIELDS
    for f in fields:
        if group.get(f):
            return str(group[f])
    return None  # a rule without such a group-by field: the caller must name the value


async def scoped_false_positive(
    request: web.Request, incidents: Any, body: dict[str, Any]
) -> web.Response:
    """The false-positive mark with a scoped suppression, both in one transaction."""
    comp = _component(request)
    scope = _str(body, "scope")
    value = _str(body, "value")
    note = _str(body, "note")
    sup = comp.suppressions
    given, expires = _expires(body, sup.clock())
    if not given and "suppress_for" in body:
        given, expires = _expires({"expires_in": body["suppress_for"]}, sup.clock())
    made: list[Any] = []

    async def write(conn: Any, doc: dict[str, Any]) -> None:
        v = value or default_value(scope, doc)
        if not v:
            raise SuppressionError(f"value: the incident has no {scope} to take it from")
        s = sup.build(
            doc["rule"]["id"],
            scope,
            v,
            expires=expires,
            note=note,
            incident_id=doc["id"],
            created_by=_who(request),
        )
        await sup.insert(conn, s)
        made.append(s)

    from appliance.incidents.manager import TransitionError

    try:
        doc = await incidents.transition(
            request.match_info["id"], "false-positive", note=note, by=_who(request), in_txn=write
        )
    except TransitionError as exc:
        return json_error(409, str(exc))
    except SuppressionError as exc:
        return json_error(400, str(exc))
    if doc is None:
        return json_error(404, "no such incident")
    for s in made:
        sup.add(s)
    return web.json_response({**doc, "suppression": made[0].to_dict() if made else None})


async def rules_noise(request: web.Request) -> web.Response:
    comp = _component(request)
    rules = await noise_report(request.app[APPLIANCE_KEY].store, comp.suppressions)
    return web.json_response({"rules": rules, "count": len(rules)})


def setup(app: web.Application) -> None:
    publish_running(app, FEEDBACK_KEY, FeedbackComponent)
    app.router.add_get("/api/v1/suppressions", list_suppressions)
    app.router.add_post("/api/v1/suppressions", create_suppression)
    app.router.add_patch("/api/v1/suppressions/{id}", edit_suppression)
    app.router.add_delete("/api/v1/suppressions/{id}", delete_suppression)
    app.router.add_get("/api/v1/rules/noise", rules_noise)
