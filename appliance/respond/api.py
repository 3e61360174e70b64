"""Active response API.

``GET /api/v1/respond/actions`` (read; filters ``state``, ``action``, ``limit``; newest
first): every planned, active and past action with its state, expiry and last error.
``POST /api/v1/respond/actions/{id}/undo`` (write): lift the block now (202 with the row, the
worker makes the call; 409 when there is nothing to undo). ``GET /api/v1/respond/audit``
(read; ``action_id``, ``since``, ``limit``): the audit log, newest first.
"""

from __future__ import annotations

from aiohttp import web

from appliance.api.components import RESPONDER_KEY, publish
from appliance.api.params import BadParam, parse_int, parse_time
from appliance.api.server import APPLIANCE_KEY, TOKEN_KEY, json_error, json_page
from appliance.respond.ledger import STATES
from appliance.respond.responder import Responder, UndoRefused


def _responder(request: web.Request) -> Responder:
    r = request.app.get(RESPONDER_KEY)
    if r is None:
        raise web.HTTPServiceUnavailable(
            text='{"error": "respond is not running"}', content_type="application/json"
        )
    return r


def _max_page(request: web.Request) -> int:
    return request.app[APPLIANCE_KEY].config.api.max_page


async def list_actions(request: web.Request) -> web.Response:
    r = _responder(request)
    q = request.query
    state = q.get("state") or None
    if state is not None and state not in STATES:
        raise BadParam("state", f"must be one of {', '.join(STATES)}")
    rows = await r.list_actions(
        state=state,
        action=q.get("action") or None,
        limit=parse_int("limit", q.get("limit"), 100, 1, _max_page(request)),
    )
    return json_page({"actions": [row.to_json() for row in rows], "count": len(rows)})


async def undo_action(request: web.Request) -> web.Response:
    r = _responder(request)
    raw = request.match_info["id"]
    action_id = parse_int("id", raw, 0, 1, 2**63 - 1)
    token = request.get(TOKEN_KEY)
    try:
        row = await r.undo(action_id, f"api:{token.id if token else '?'}")
    except UndoRefused as exc:
        return json_error(409, str(exc))
    if row is None:
        return json_error(404, "no such action")
    return web.json_response(row.to_json(), status=202)


async def list_audit(request: web.Request) -> web.Response:
    r = _responder(request)
    q = request.query
    raw_id = q.get("action_id")
    conn = r.store.reader
    assert conn is not None
    from appliance.respond import ledger

    rows = await ledger.list_audit(
        conn,
        action_id=parse_int("action_id", raw_id, 0, 1, 2**63 - 1) if raw_id else None,
        since=parse_time("since", q.get("since")),
        limit=parse_int("limit", q.get("limit"), 100, 1, _max_page(request)),
    )
    return json_page({"audit": rows, "count": len(rows)})


def setup(app: web.Application) -> None:
    from appliance.respond import responder_of

    publish(app, RESPONDER_KEY, responder_of(app[APPLIANCE_KEY]))
    app.router.add_get("/api/v1/respond/actions", list_actions)
    app.router.add_post("/api/v1/respond/actions/{id}/undo", undo_action)
    app.router.add_get("/api/v1/respond/audit", list_audit)
