"""``GET /api/v1/rules``: loaded rules with hits and last firing, and failed ones with why."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from appliance.api.incidents import _component
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
                "filters": list(getattr(r, "filters", [])),
                "path": r.meta.path,
                "hits": st.hits if st else 0,
                "alerts": st.alerts if st else 0,
                "suppressed": st.suppressed if st else 0,
                "last_fired": iso8601(st.last_fired) if st and st.last_fired else None,
            }
        )
    return web.json_response(
        {
            "loaded": loaded,
            "failed": [f.to_dict() for f in rs.failures],
            "count": {"loaded": len(loaded), "failed": len(rs.failures)},
        }
    )


def setup(app: web.Application) -> None:
    app.router.add_get("/api/v1/rules", list_rules)
