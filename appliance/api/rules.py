"""``GET /api/v1/rules``: loaded rules with hits and last firing, and failed ones with why;
``POST /api/v1/rules/{id}/disable`` and ``/enable`` (write): a disabled rule stays loaded and
evaluated (its hits still count) but raises no incident, until enabled again; the state is
kept in the database (``rule_state``) across restarts and rule reloads.
``GET /api/v1/rules/{id}/test?limit=N`` runs the loaded rules over the newest N stored events
(default 1000) in a private engine, off the event loop, and says which events the rule matched
and what it would have raised: nothing is written, the live engine is untouched."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from aiohttp import web

from appliance.api.incidents import _component
from appliance.api.params import parse_int
from appliance.api.server import APPLIANCE_KEY, TOKEN_KEY, json_error
from appliance.correlate.engine import Engine
from appliance.correlate.replay import Replay
from appliance.correlate.rules import RuleSet
from appliance.event import Event, iso8601


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
                "filters": list(getattr(r, "filters", [])),
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


def _test_rule(ruleset: RuleSet, rule_id: str, events: list[Event]) -> dict[str, Any]:
    """Replay ``events`` (oldest first) through a fresh engine: the rule's matches and alerts.
    The whole ruleset runs, as correlations are fed by other rules' detections."""
    rp = Replay(Engine(ruleset))
    stored_ids = [ev.id for ev in events]
    matched: list[dict[str, Any]] = []
    n_matched = 0
    alerts = []
    for ev in events:
        # A detection matches itself; a correlation matches what its detections feed it.
        if any(
            d.meta.id == rule_id or any(p.meta.id == rule_id for p in d.parents)
            for d in rp.engine.matches(ev)
        ):
            n_matched += 1
            if len(matched) < 20:
                matched.append(
                    {
                        "id": str(ev.id),
                        "@timestamp": iso8601(ev.timestamp),
                        "message": str(
                            ev.fields.get("message") or ev.raw[:300].decode("utf-8", "replace")
                        ),
                    }
                )
        alerts += [a for a in rp.feed(ev) if a.rule.id == rule_id]
    alerts += [a for a in rp.finish() if a.rule.id == rule_id]
    return {
        "rule": rule_id,
        "events": len(events),
        "matched": n_matched,
        "matched_events": matched,
        "alerts": [
            {
                "group_key": a.group_key,
                "count": a.count,
                "first_seen": iso8601(a.first_seen),
                "last_seen": iso8601(a.last_seen),
                "suppressed": a.suppressed,
                "event_ids": [
                    str(stored_ids[i - 1]) for i in a.event_ids[:50] if 0 < i <= len(stored_ids)
                ],
            }
            for a in alerts[:100]
        ],
    }


async def try_rule(request: web.Request) -> web.Response:
    comp = _component(request)
    rule_id = request.match_info["id"]
    if not any(r.meta.id == rule_id for r in comp.ruleset.all_rules()):
        return json_error(404, "no such rule")
    app = request.app[APPLIANCE_KEY]
    limit = parse_int("limit", request.query.get("limit"), 1000, 1, 10 * app.config.api.max_page)
    events = await app.store.query_events(limit=limit)
    events.reverse()
    ruleset = comp.ruleset
    result = await asyncio.to_thread(_test_rule, ruleset, rule_id, events)
    return web.json_response(result)


def setup(app: web.Application) -> None:
    app.router.add_get("/api/v1/rules", list_rules)
    app.router.add_post("/api/v1/rules/{id}/disable", _switch(False))
    app.router.add_post("/api/v1/rules/{id}/enable", _switch(True))
    app.router.add_get("/api/v1/rules/{id}/test", try_rule)
