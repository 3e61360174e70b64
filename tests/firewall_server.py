"""A firewall API on loopback for the active-response tests: it really keeps alias tables.

It speaks OPNsense's ``alias_util`` add/delete (basic auth with the API key and secret,
``{"address": ip}`` bodies, ``{"status": "done"}`` answers) and the pfSense-API alias entry
endpoint, and records every call it got, so a test can check both the table's contents and
what crossed the wire.
"""

from __future__ import annotations

import base64
import ipaddress
import json
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

KEY, SECRET = "opn-key", "opn-secret"


@dataclass
class Recorded:
    method: str
    path: str
    body: Any
    authorization: str


@dataclass
class Firewall:
    aliases: dict[str, set[str]] = field(default_factory=lambda: {"sem_blocklist": set()})
    calls: list[Recorded] = field(default_factory=list)
    fail_next: int = 0  # answer this many calls with a 503 first
    runner: web.AppRunner | None = None
    port: int = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _authorized(self, request: web.Request) -> bool:
        want = "Basic " + base64.b64encode(f"{KEY}:{SECRET}".encode()).decode()
        return request.headers.get("Authorization", "") == want

    async def _record(self, request: web.Request) -> Any:
        raw = await request.read()
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            body = raw.decode(errors="replace")
        self.calls.append(
            Recorded(request.method, request.path, body, request.headers.get("Authorization", ""))
        )
        return body

    async def opnsense(self, request: web.Request) -> web.Response:
        body = await self._record(request)
        if not self._authorized(request):
            return web.json_response(
                {"status": 401, "message": "Authentication Failed"}, status=401
            )
        if self.fail_next:
            self.fail_next -= 1
            return web.json_response({"error": "busy"}, status=503)
        alias = request.match_info["alias"]
        if alias not in self.aliases or not isinstance(body, dict):
            return web.json_response({"status": "failed"})
        try:
            address = str(ipaddress.ip_address(body.get("address", "")))
        except ValueError:
            return web.json_response({"status": "failed"})
        if request.match_info["verb"] == "add":
            self.aliases[alias].add(address)
        else:
            self.aliases[alias].discard(address)
        return web.json_response({"status": "done"})

    async def pfsense(self, request: web.Request) -> web.Response:
        body = await self._record(request)
        if not self._authorized(request):
            return web.json_response({"code": 401}, status=401)
        if not isinstance(body, dict) or body.get("name") not in self.aliases:
            return web.json_response({"code": 400}, status=400)
        table = self.aliases[body["name"]]
        if request.method == "POST":
            table.update(str(ipaddress.ip_address(a)) for a in body.get("address", []))
        else:
            table.discard(str(ipaddress.ip_address(body.get("address", ""))))
        return web.json_response({"code": 200, "return": 0})

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/api/firewall/alias_util/{verb:add|delete}/{alias}", self.opnsense)
        app.router.add_route("POST", "/api/v1/firewall/alias/entry", self.pfsense)
        app.router.add_route("DELETE", "/api/v1/firewall/alias/entry", self.pfsense)
        self.runner = web.AppRunner(app, access_log=None)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        server = site._server
        assert server is not None
        self.port = server.sockets[0].getsockname()[1]  # type: ignore[attr-defined]

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()
