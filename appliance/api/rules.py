"""``GET /api/v1/rules``: loaded rules with hits and last firing, and failed ones with why;
``POST /api/v1/rules/{id}/disable`` and ``/enable`` (write): a disabled rule stays loaded and
evaluated (its hits still count) but raises no incident, until enabled again; the state is
kept in the database (``rule_state``) across restarts and rule reloads."""

from __future__ import annotations

import time
from typing import Any

from aiohttp import web

from appliance.api.incidents import _component
from appliance.api.server import APPLIANCE_KEY, TOKEN_KEY, json_error
from appliance.event import iso8601


async def list_rules(request: web.Request) -> web.Response:
    comp = _component(request)
    rs, engine = comp.ruleset, comp.engine
    loaded: list[dict[str, Any]] = []
    for r in rs.all_rules():
        st = engine.stats.get(r.meta.id)
        loaded.append(
            {
                **r.meta.to_dict(),
                "kind": r.kind,
                "path": r.meta.path,
                "hits": st.hits if st else 0,
                "alerts": st.alerts if st else 0,
                "suppressed": st.suppressed if st else 0,
                "last_fired": iso8601(st.last_fired) if st and st.last_fired else None,
                "enabled": r.meta.id not in comp.disabled_rules,
            }
        )
    return web.json_response(
        {
            "loaded": loaded,
            "failed": [f.to_dict() for f in rs.failures],
            "count": {"loaded": len(loaded), "failed": len(rs.failures)},
        }
    )


def _switch(enabled: bool) -> Any:
    async def handler(request: web.Request) -> web.Response:
        comp = _component(request)
        rule_id = request.match_info["id"]
        if not any(r.meta.id == rule_id for r in comp.ruleset.all_rules()):
            return json_error(404, "no such rule")
        token = request.get(TOKEN_KEY)
        actor = token.name if token is not None else ""
        async with request.app[APPLIANCE_KEY].store.transaction() as conn:
            await conn.execute(
                "INSERT INTO rule_state (rule_id, enabled, changed, actor) VALUES (?, ?, ?, ?)"
                " ON CONFLICT (rule_id) DO UPDATE SET enabled = excluded.enabled,"
                " changed = excluded.changed, actor = excluded.actor",
                (rule_id, int(enabled), time.time(), actor),
            )
        if enabled:
            comp.disabled_rules.discard(rule_id)
        else:
            comp.disabled_rules.add(rule_id)
        return web.json_response({"id": rule_id, "enabled": enabled})

    return handler


def setup(app: web.Application) -> None:
    app.router.add_get("/api/v1/rules", list_rules)
    app.router.add_post("/api/v1/rules/{id}/disable", _switch(False))
    app.router.add_post("/api/v1/rules/{id}/enable", _switch(True))
