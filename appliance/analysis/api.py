"""``GET /api/v1/analysis/files`` and ``GET /api/v1/analysis/assets/{ip}``: what the
``[analysis]`` data holds, so an operator can check that an import or a SIGHUP took effect and
see what the appliance knows about one address (its asset, and the CVEs scans list for it)."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from appliance.analysis.assets import ip_int
from appliance.analysis.context import AnalysisComponent
from appliance.api.components import ANALYSIS_KEY, publish_running
from appliance.api.server import json_error

MAX_FINDINGS = 1000  # per address in one answer


def _component(request: web.Request) -> AnalysisComponent:
    component = request.app.get(ANALYSIS_KEY)
    if component is not None:
        return component
    raise web.HTTPServiceUnavailable(
        text='{"error": "analysis is not running"}', content_type="application/json"
    )


async def files(request: web.Request) -> web.Response:
    comp = _component(request)
    ctx = comp.context
    return web.json_response(
        {
            "files": [{"path": p, **counts} for p, counts in ctx.files.items()],
            "failed": ctx.failed,
            "totals": {k[0]: v for k, v in comp.loaded_counts().items()},
            "policy": {
                "vuln_match_raise": comp.policy.vuln_match_raise,
                "kev_raise": comp.policy.kev_raise,
                "unmatched_ids": comp.policy.unmatched_ids,
                "unmatched_lower": comp.policy.unmatched_lower,
            },
        }
    )


async def asset(request: web.Request) -> web.Response:
    comp = _component(request)
    ip = request.match_info["ip"]
    if ip_int(ip) is None:
        return json_error(400, "ip: not an IPv4 or IPv6 address")
    ctx = comp.context
    found = ctx.assets.lookup(ip)
    cves: list[dict[str, Any]] = []
    for cve, items in sorted(ctx.vulns.host_cves(ip).items()):
        info = ctx.vulns.info(cve)
        for f in items:
            cves.append(
                {
                    "cve": cve,
                    "port": f.port or None,
                    "proto": f.proto or None,
                    "service": f.service or None,
                    "cvss": f.cvss if f.cvss is not None else (info.cvss if info else None),
                    "kev": bool(info and info.kev),
                    "plugin": f.plugin,
                    "source": f.source,
                }
            )
    if found is None and not cves:
        return json_error(404, "nothing known about this address")
    return web.json_response(
        {
            "ip": ip,
            "asset": found.to_dict() if found is not None else None,
            "vulnerabilities": cves[:MAX_FINDINGS],
            "count": len(cves),
        }
    )


def setup(app: web.Application) -> None:
    publish_running(app, ANALYSIS_KEY, AnalysisComponent)
    app.router.add_get("/api/v1/analysis/files", files)
    app.router.add_get("/api/v1/analysis/assets/{ip}", asset)
