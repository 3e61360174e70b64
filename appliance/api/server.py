"""The local HTTP API (aiohttp): health, Prometheus metrics, and the token-protected JSON API.

``/healthz`` and ``/metrics`` need no token (load balancers and Prometheus scrape them);
everything under ``/api/`` needs ``Authorization: Bearer <token>`` with the scope the route
needs (``appliance.api.tokens``: GET read, other methods write, admin where declared). An
unknown token answers 401, a token without the scope 403; both are counted in
``appliance_api_auth_failures_total{reason}`` and logged (rate-limited). Served over TLS
beyond loopback (``appliance.api.tls``). Feature modules add their routes through the
appliance's ``route_setups`` (listed in :mod:`appliance.composition`); handlers find their
component under its ``AppKey`` (:mod:`appliance.api.components`), set when the routes are.
"""

from __future__ import annotations

import asyncio
import json
import logging
import secrets
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import orjson
from aiohttp import web
from aiohttp.typedefs import Middleware

from appliance.api.limits import ApiLimiter, make_limit_middleware
from appliance.api.tokens import Token, TokenStore, scope_for, tokens_path
from appliance.config import ApiSection, parse_hostport
from appliance.logutil import RateLimitedLog, printable
from appliance.metrics import Registry
from appliance.sources.udp import BindError

if TYPE_CHECKING:
    from appliance.app import Appliance

log = logging.getLogger(__name__)
_rl = RateLimitedLog(log)
AUTH_FAILURES = ("missing_token", "unknown_token", "insufficient_scope")
_READ_METHODS = ("GET", "HEAD", "OPTIONS")

APPLIANCE_KEY: web.AppKey[Appliance] = web.AppKey("appliance")
# The token a request authenticated with (handlers may record who did what).
TOKEN_KEY: web.RequestKey[Token] = web.RequestKey("api_token", Token)
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
# Each hook gets the aiohttp application and adds its routes (``app.router.add_get(...)``).
# Another way for an /api/ request without a bearer token to authenticate (the console's
# session cookie, appliance.console): the Token the request acts as, or None when it carries
# none. It may raise an HTTP error itself (a write without the session's CSRF token: 403).
SessionAuth = Callable[[web.Request], Awaitable[Token | None]]
SESSION_AUTH_KEY: web.AppKey[SessionAuth] = web.AppKey("session_auth")
# Told of every state-changing /api/ request that succeeded (status < 400): the audit log.
AuditHook = Callable[[web.Request, Token], Awaitable[None]]
AUDIT_KEY: web.AppKey[AuditHook] = web.AppKey("audit")


def load_or_create_token(api: ApiSection, data_dir: Path, base: Callable[[str], Path]) -> str:
    """The configured token, else the token file's, else a new random one saved mode 0600."""
    if api.token:
        return api.token
    path = base(api.token_file) if api.token_file else data_dir / "api-token"
    if path.exists():
        token = path.read_text(encoding="utf-8").strip()
        if token:
            return token
    token = secrets.token_urlsafe(32)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = path.open("x", encoding="utf-8") if not path.exists() else path.open("w", encoding="utf-8")
    with fd:
        path.chmod(0o600)
        fd.write(token + "\n")
    log.info("generated API token in %s", path)
    return token


def json_page(body: Any) -> web.Response:
    """A JSON answer encoded with orjson, for the pages that can be large.

    ``web.json_response`` uses the stdlib encoder: 59 ms of event-loop time (plus a str copy
    of the body) for a 1000-event page, against 1 ms for orjson, and the event loop is what
    UDP intake and ``/healthz`` wait on. An int beyond 64 bits, which orjson refuses, falls
    back to the stdlib encoder rather than failing the request.
    """
    try:
        data = orjson.dumps(body, default=str)
    except TypeError:  # orjson.JSONEncodeError is one
        data = json.dumps(body, default=str).encode()
    return web.Response(body=data, content_type="application/json")


async def json_page_built_off_loop(build: Callable[[], Any]) -> web.Response:
    """:func:`json_page` of ``build()``, both run in a worker thread: turning a 1000-event
    page into ECS documents and JSON is tens of ms of CPU, which on the event loop would make
    /healthz and intake wait behind every page being served."""
    return await asyncio.to_thread(lambda: json_page(build()))


def json_error(status: int, message: str) -> web.Response:
    return web.json_response({"error": message}, status=status)


def make_auth_middleware(
    tokens: TokenStore, metrics: Registry
) -> Callable[[web.Request, Handler], Awaitable[Any]]:
    failures = metrics.counter(
        "api_auth_failures_total",
        "API requests refused by authentication: missing_token and unknown_token (401),"
        " insufficient_scope (403).",
        ["reason"],
    )
    for reason in AUTH_FAILURES:
        failures.inc(reason, n=0)

    def refuse(request: web.Request, reason: str, needed: str = "", who: str = "") -> web.Response:
        failures.inc(reason)
        _rl.warning(
            f"auth:{reason}",
            "api: %s %s from %s refused: %s%s",
            request.method,
            printable(request.path, 100),
            request.remote,
            reason,
            f" (token {who} needs {needed})" if needed else "",
        )
        if not needed:
            return web.json_response(
                {"error": "missing or wrong bearer token"},
                status=401,
                headers={"WWW-Authenticate": 'Bearer realm="appliance"'},
            )
        return web.json_response(
            {"error": f"this token lacks the {needed} scope"},
            status=403,
            headers={
                "WWW-Authenticate": (
                    f'Bearer realm="appliance", error="insufficient_scope", scope="{needed}"'
                )
            },
        )

    @web.middleware
    async def auth(request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.path.startswith("/api/"):
            tokens.maybe_reload()
            header = request.headers.get("Authorization", "")
            token = tokens.authenticate(header) if header else None
            session_auth = request.app.get(SESSION_AUTH_KEY)
            if token is None and not header and session_auth is not None:
                token = await session_auth(request)
            if token is None:
                return refuse(request, "unknown_token" if header else "missing_token")
            needed = scope_for(request.method, request.match_info.handler)
            if not token.allows(needed):
                return refuse(request, "insufficient_scope", needed, token.id)
            request[TOKEN_KEY] = token
            unmatched = request.match_info.http_exception
            if unmatched is not None:
                # No route: aiohttp's own answer is text/plain; the API answers JSON everywhere
                # (an id with a brace, which a route's {id} cannot hold, lands here).
                return web.json_response(
                    {"error": (unmatched.reason or "no such resource").lower()},
                    status=unmatched.status,
                    headers={k: v for k, v in unmatched.headers.items() if k == "Allow"},
                )
            response = await handler(request)
            audit = request.app.get(AUDIT_KEY)
            if audit is not None and request.method not in _READ_METHODS and response.status < 400:
                await audit(request, token)
            return response
        return await handler(request)

    return auth


class ApiServer:
    def __init__(self, appliance: Appliance, token: str) -> None:
        self.appliance = appliance
        cfg = appliance.config
        self.token = token
        self.tokens = TokenStore(tokens_path(cfg.api, cfg.data_dir, cfg.path), legacy=token)
        self.limiter = ApiLimiter(cfg.api, appliance.metrics)
        self.tls = False
        # Auth first: a request without the token is refused before it takes a slot.
        self.app = web.Application(
            middlewares=cast(
                "list[Middleware]",
                [
                    make_auth_middleware(self.tokens, appliance.metrics),
                    make_limit_middleware(self.limiter),
                ],
            ),
            client_max_size=1024 * 1024,
        )
        self.app[APPLIANCE_KEY] = appliance
        from appliance.api import events, flows, health, incidents, openapi, rules, upstream

        health.setup(self.app)
        events.setup(self.app)
        upstream.setup(self.app)
        flows.setup(self.app)
        incidents.setup(self.app)
        rules.setup(self.app)
        openapi.setup(self.app)
        for setup in appliance.route_setups:  # the features' routes (appliance.composition)
            setup(self.app)
        if cfg.console.enabled:
            from appliance.console import web as console_web

            console_web.setup(self.app)
        self.runner: web.AppRunner | None = None
        self.site: web.TCPSite | None = None

    @property
    def scheme(self) -> str:
        return "https" if self.tls else "http"

    async def start(self, listen: str) -> None:
        cfg = self.appliance.config
        host, port = parse_hostport(listen)
        ssl_context = None
        if cfg.api.tls_enabled:  # the TLS module imports cryptography: ~35 ms of every start
            from appliance.api.tls import server_context

            ssl_context = server_context(cfg.api, cfg.data_dir, cfg.path)
        self.tls = ssl_context is not None
        self.runner = web.AppRunner(self.app, access_log=None, handle_signals=False)
        await self.runner.setup()
        # SO_REUSEADDR: restart while old connections sit in TIME_WAIT; a port that another
        # socket is listening on still fails.
        self.site = web.TCPSite(
            self.runner, host, port, reuse_address=True, ssl_context=ssl_context
        )
        try:
            await self.site.start()
        except OSError as exc:
            await self.runner.cleanup()
            self.runner = None
            raise BindError(exc.errno, f"cannot bind api {listen}: {exc.strerror}") from exc
        log.info("api listening on %s://%s", self.scheme, listen)

    @property
    def port(self) -> int:
        assert self.runner is not None
        return int(self.runner.addresses[0][1])

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()
            self.runner = None
