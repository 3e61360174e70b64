"""The composition root: which components an appliance runs, in which order, and which API
routes are served — written down here, in one place.

Why a module of its own: components used to register themselves into process-wide lists as a
side effect of being imported, so what ran depended on what happened to be imported, and a
second appliance in the same process (the tests run many) shared the first one's hooks. Now
:class:`~appliance.app.Appliance` asks this module once and keeps its own lists: its
components, its incident hooks (:attr:`Appliance.incident_hooks`) and its route setups
(:attr:`Appliance.route_setups`). The imports are inside the functions because the
components import the appliance's modules in turn.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from aiohttp import web

    from appliance.app import Appliance

ComponentBuilder = Callable[["Appliance"], Any]
RouteSetup = Callable[["web.Application"], None]


def component_builders() -> list[ComponentBuilder]:
    """Each builder gets the appliance once its store and pipeline exist and returns an
    object with async ``start()``/``stop()`` (or ``None``). Started in this order, stopped in
    reverse:

    - the forwarder, notify and respond first: their incident hooks are in place before the
      first incident, and they stop after correlation raised its last one;
    - geoip and intel before baselines (which learn countries), all of them enrichment stages;
    - analysis after correlation (it installs its assessor on the correlation's incident
      manager), feedback after correlation (it hands over its suppression check).
    """
    from appliance.analysis.baselines import build_baselines
    from appliance.analysis.context import build_analysis
    from appliance.analysis.feedback import build_feedback
    from appliance.analysis.geoip import build_geoip
    from appliance.analysis.intel_stage import build_intel
    from appliance.correlate.component import build_correlation
    from appliance.forward import build_forwarder
    from appliance.notify.engine import build_notify
    from appliance.reports.schedule import build_reports
    from appliance.respond import build_respond

    return [
        build_forwarder,
        build_geoip,
        build_intel,
        build_notify,
        build_respond,
        build_correlation,
        build_analysis,
        build_reports,
        build_feedback,
        build_baselines,
    ]


def api_route_setups() -> list[RouteSetup]:
    """The API's routes beyond the core ones :class:`~appliance.api.server.ApiServer` adds
    itself (health, events, flows, incidents, rules, upstreams, OpenAPI): one setup per
    feature, each putting its running component under its own ``AppKey``
    (:mod:`appliance.api.components`) and adding its handlers to the aiohttp application."""
    from appliance.analysis import api as analysis_api
    from appliance.analysis import baselines_api, feedback_api, intel_api
    from appliance.notify import api as notify_api
    from appliance.respond import api as respond_api

    return [
        notify_api.setup,
        respond_api.setup,
        analysis_api.setup,
        intel_api.setup,
        feedback_api.setup,
        baselines_api.setup,
    ]
