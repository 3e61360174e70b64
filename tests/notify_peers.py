"""Real peers for the notification channel tests: a recording HTTP(S) server and helpers to
build a channel from a config table the way the appliance does."""

from __future__ import annotations

import json
import ssl
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import web

from appliance.config import NotifyChannel, parse_config
from appliance.metrics import Registry
from appliance.notify.channels import build_channel
from appliance.notify.channels.base import Message
from appliance.notify.channels.core import ChannelBase


@dataclass
class Request:
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)

    def text(self) -> str:
        return self.body.decode()


Answer = Callable[[Request], web.StreamResponse]


@dataclass
class HttpPeer:
    """An HTTP server on 127.0.0.1 (HTTPS with ``ssl_context``) that records each request and
    answers with ``answer`` (default: 200 ``{"ok": true}``)."""

    answer: Answer | None = None
    ssl_context: ssl.SSLContext | None = None
    requests: list[Request] = field(default_factory=list)
    runner: web.AppRunner | None = None
    port: int = 0

    @property
    def url(self) -> str:
        return f"{'https' if self.ssl_context else 'http'}://127.0.0.1:{self.port}"

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        seen = Request(
            request.method,
            request.path,
            dict(request.query),
            dict(request.headers),
            await request.read(),
        )
        self.requests.append(seen)
        if self.answer is not None:
            return self.answer(seen)
        return web.json_response({"ok": True})

    async def start(self) -> HttpPeer:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self.runner = web.AppRunner(app, access_log=None)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0, ssl_context=self.ssl_context)
        await site.start()
        server = site._server
        assert server is not None
        self.port = server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        return self

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()


def channel_config(table: dict[str, Any], base_dir: Path | str = ".") -> NotifyChannel:
    """One ``[[notify.channels]]`` table decoded and validated like the appliance does."""
    cfg = parse_config(
        {"appliance": {"allow_empty": True}, "notify": {"channels": [table]}}, base_dir
    )
    return cfg.notify.channels[0]


def make_channel(
    table: dict[str, Any], base_dir: Path | str = ".", registry: Registry | None = None
) -> ChannelBase:
    return build_channel(channel_config(table, base_dir), base_dir, registry)


def message(**kw: Any) -> Message:
    defaults: dict[str, Any] = {
        "subject": "SSH brute force from 203.0.113.7",
        "text": "12 failed logins for root on gw-01 within 60 s.\nSource: 203.0.113.7",
        "short": "HIGH ssh brute force 203.0.113.7 -> gw-01 (12 failures)",
        "severity": "high",
        "incident_ids": ("inc-1",),
    }
    defaults.update(kw)
    return Message(**defaults)
