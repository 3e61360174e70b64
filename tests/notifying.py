"""Helpers for the notification tests: a loopback channel and its receiver, a movable clock,
and alerts that become real incidents through the incident manager.

The loopback channel is a real client of a real HTTP server on 127.0.0.1: it POSTs the
rendered message as JSON, a 2xx is delivered, a 5xx or a refused connection is a retryable
:class:`DeliveryError`, a 4xx a permanent one. The receiver can be stopped and restarted on
the same port to simulate an outage.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web

from appliance.config import NotifyChannel
from appliance.correlate.engine import Alert
from appliance.correlate.rules import RuleMeta
from appliance.notify.channels.base import DeliveryError, Message
from tests import conftest


class Clock:
    """Real time plus an offset the test moves (``advance``)."""

    def __init__(self) -> None:
        self.offset = 0.0

    def __call__(self) -> float:
        return time.time() + self.offset

    def advance(self, seconds: float) -> None:
        self.offset += seconds


class Inbox:
    """An HTTP server on loopback that records each message a loopback channel posts."""

    def __init__(self) -> None:
        self.messages: list[dict[str, Any]] = []
        self.status = 200
        self.port = 0
        self.runner: web.AppRunner | None = None

    async def _handle(self, request: web.Request) -> web.Response:
        body = await request.json()
        if self.status >= 300:
            return web.json_response({"error": "down"}, status=self.status)
        body["received_at"] = time.time()
        self.messages.append(body)
        return web.json_response({"ok": True})

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/{channel}", self._handle)
        self.runner = web.AppRunner(app, access_log=None)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", self.port, reuse_address=True)
        await site.start()
        self.port = int(self.runner.addresses[0][1])

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()
            self.runner = None

    def to(self, channel: str) -> list[dict[str, Any]]:
        return [m for m in self.messages if m["channel"] == channel]


@dataclasses.dataclass
class LoopbackChannel:
    """A channel that POSTs the message to ``Inbox`` at ``/<channel name>``."""

    name: str
    type: str
    url: str
    on_reply: Any = None
    session: aiohttp.ClientSession | None = None

    async def send(self, message: Message) -> None:
        if self.session is None:
            self.session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5))
        body = {"channel": self.name, **dataclasses.asdict(message)}
        try:
            async with self.session.post(f"{self.url}/{self.name}", json=body) as resp:
                if resp.status >= 300:
                    raise DeliveryError(
                        f"HTTP {resp.status}", retryable=resp.status >= 500 or resp.status == 429
                    )
        except aiohttp.ClientError as exc:
            raise DeliveryError(f"{type(exc).__name__}: {exc}") from None

    async def close(self) -> None:
        if self.session is not None:
            await self.session.close()


def loopback_factory(inbox: Inbox, built: dict[str, LoopbackChannel] | None = None) -> Any:
    def factory(cfg: NotifyChannel, base_dir: Path, metrics: Any = None) -> LoopbackChannel:
        ch = LoopbackChannel(cfg.name, cfg.type, f"http://127.0.0.1:{inbox.port}")
        if built is not None:
            built[cfg.name] = ch
        return ch

    return factory


def rule(id_: str = "ssh-bruteforce", level: str = "high", tags: list[str] | None = None) -> Any:
    return RuleMeta(
        id=id_, title=f"Rule {id_}", level=level, tags=tags or ["attack.t1110"], path="x"
    )


def alert(ip: str, *, rule_id: str = "ssh-bruteforce", level: str = "high") -> Alert:
    t = time.time()
    return Alert(rule(rule_id, level), "event_count", {"source.ip": ip}, t, t, 10, [1], ["l"])


async def wait_until(cond: Any, timeout: float = 10.0, what: str = "") -> None:
    await conftest.wait_until(cond, timeout, what)


def channels(*names: str) -> list[dict[str, Any]]:
    """Channel tables for the loopback factory (which ignores the url: it posts to Inbox)."""
    return [{"name": n, "type": "webhook", "url": "http://127.0.0.1:9/unused"} for n in names]
