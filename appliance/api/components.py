"""The components the API serves, each under its own typed aiohttp ``AppKey``.

Why keys: handlers used to find their component by scanning the appliance's components on
every request (a service locator, and an ``X | None`` to check each time). Now each route
setup puts the running component under its key once, when the routes are set up (the
components exist by then: the API starts after them), and a handler reads
``request.app.get(KEY)``: typed, and ``None`` exactly when the component does not run.

The component types are imported for the type checker only, so this module adds no import
edge from the API to the features (and no cycle through them).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, TypeVar

from aiohttp import web

from appliance.api.server import APPLIANCE_KEY

if TYPE_CHECKING:
    from appliance.analysis.baselines import BaselineComponent
    from appliance.analysis.context import AnalysisComponent
    from appliance.analysis.feedback import FeedbackComponent
    from appliance.analysis.intel_stage import IntelComponent
    from appliance.correlate.component import CorrelationComponent
    from appliance.forward import Forwarder
    from appliance.notify.engine import NotifyEngine
    from appliance.respond.responder import Responder

C = TypeVar("C")

CORRELATION_KEY: web.AppKey[CorrelationComponent] = web.AppKey("correlation")
FORWARDER_KEY: web.AppKey[Forwarder] = web.AppKey("forwarder")
NOTIFY_KEY: web.AppKey[NotifyEngine] = web.AppKey("notify")
RESPONDER_KEY: web.AppKey[Responder] = web.AppKey("responder")
ANALYSIS_KEY: web.AppKey[AnalysisComponent] = web.AppKey("analysis")
INTEL_KEY: web.AppKey[IntelComponent] = web.AppKey("intel")
FEEDBACK_KEY: web.AppKey[FeedbackComponent] = web.AppKey("feedback")
BASELINES_KEY: web.AppKey[BaselineComponent] = web.AppKey("baselines")


def publish(app: web.Application, key: web.AppKey[C], component: C | None) -> None:
    """Serve ``component`` under ``key``; a component that does not run leaves it unset."""
    if component is not None:
        app[key] = component


def publish_running(app: web.Application, key: web.AppKey[C], kind: type[C]) -> None:
    """Serve the appliance's running component of ``kind`` under ``key``."""
    publish(app, key, app[APPLIANCE_KEY].component(kind))
