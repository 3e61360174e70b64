"""Active response: on incident open, block the source at a firewall (HTTP API) or run an
argv program, and lift the block when its TTL passes (``[[respond.actions]]``).

:class:`RespondComponent` wires the :class:`~appliance.respond.responder.Responder` into a
running appliance: its incident hook, its worker, and the API routes
(:mod:`appliance.respond.api`). See the responder for the guarantees.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from appliance.config import AppConfig

if TYPE_CHECKING:
    from appliance.app import Appliance
    from appliance.respond.responder import Responder

__all__ = ["RespondComponent", "Responder", "build_respond", "responder_of"]

log = logging.getLogger(__name__)


def __getattr__(name: str) -> Any:
    # The responder (and the HTTP client it brings) loads on first use, not with the package:
    # every CLI command imports ``appliance.respond.cli`` to build its parser.
    if name == "Responder":
        from appliance.respond.responder import Responder

        return Responder
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


class RespondComponent:
    name = "respond"

    def __init__(self, app: Appliance) -> None:
        from appliance.respond.responder import Responder

        self.app = app
        self.responder = Responder(app.store, app.config, app.metrics, app.clock)

    async def start(self) -> None:
        self.app.incident_hooks.append(self.responder.hook)
        await self.responder.start()
        actions = self.app.config.respond.actions
        if actions:
            live = [a.name for a in actions if not a.dry_run]
            log.info(
                "respond: %d action(s); live (not dry-run): %s",
                len(actions),
                ", ".join(live) or "none",
            )

    async def stop(self) -> None:
        if self.responder.hook in self.app.incident_hooks:
            self.app.incident_hooks.remove(self.responder.hook)
        await self.responder.stop()

    async def reload(self, cfg: AppConfig) -> None:
        self.responder.configure(cfg)
        self.responder.wake()


def responder_of(app: Appliance) -> Responder | None:
    component = app.component(RespondComponent)
    return component.responder if component is not None else None


def build_respond(app: Appliance) -> RespondComponent:
    return RespondComponent(app)
