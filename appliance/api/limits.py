"""Bounds on what the API may hold at once: requests being served and response bytes in flight.

Without them the API was the one unbounded thing in the process: a thousand concurrent
``limit=1000`` pages took the RSS from 173 MB to 1.39 GB and kept the event loop (and so UDP
intake) busy for tens of seconds. A request beyond ``api.max_concurrent_requests`` is refused
at once with 503 and ``Retry-After`` instead of waiting in a queue, because a queue of pages is
the memory this is meant to bound; a response whose body would take the bytes in flight past
``api.max_response_bytes_in_flight`` is refused the same way. Both are counted by reason.

A request counts until its body has been handed to the kernel (the middleware writes the
response itself and waits for the transport to drain), because a slow or stalled reader keeps
the body in our memory long after the handler returned. ``/healthz`` and ``/metrics`` are
exempt: they are small, and they must answer while the API is saturated, which is exactly
when someone looks at them.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from appliance.config import ApiSection
from appliance.metrics import Registry

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
EXEMPT_PATHS = frozenset({"/healthz", "/metrics"})
RETRY_AFTER_SECONDS = 1
REASONS = ("max_concurrent_requests", "max_response_bytes_in_flight")


class ApiLimiter:
    """Counts requests being served and response bytes not yet handed to the kernel."""

    def __init__(self, cfg: ApiSection, metrics: Registry) -> None:
        self.max_requests = cfg.max_concurrent_requests
        self.max_bytes = cfg.max_response_bytes_in_flight
        self.in_flight = 0
        self.bytes_in_flight = 0
        self.rejected = metrics.counter(
            "api_requests_rejected_total",
            "API requests answered 503 because a configured API limit was reached, by limit.",
            ["reason"],
        )
        for reason in REASONS:
            self.rejected.inc(reason, n=0)  # present from the start, so alerts can rate() it
        metrics.gauge(
            "api_requests_in_flight",
            "API requests being served (excluding /healthz and /metrics).",
            callback=lambda: float(self.in_flight),
        )
        metrics.gauge(
            "api_response_bytes_in_flight",
            "Bytes of API response bodies built but not yet handed to the kernel.",
            callback=lambda: float(self.bytes_in_flight),
        )

    def try_enter(self) -> bool:
        if self.in_flight >= self.max_requests:
            return False
        self.in_flight += 1
        return True

    def leave(self) -> None:
        self.in_flight -= 1

    def try_reserve(self, n: int) -> bool:
        """Take ``n`` bytes of the budget. A body larger than the whole budget still passes
        when nothing else is in flight, so every page stays servable one at a time."""
        if self.bytes_in_flight and self.bytes_in_flight + n > self.max_bytes:
            return False
        self.bytes_in_flight += n
        return True

    def release(self, n: int) -> None:
        self.bytes_in_flight -= n

    def reject(self, reason: str) -> web.Response:
        self.rejected.inc(reason)
        return web.json_response(
            {"error": f"busy: api.{reason} reached, retry later"},
            status=503,
            headers={"Retry-After": str(RETRY_AFTER_SECONDS)},
        )


def _body_size(resp: web.StreamResponse) -> int:
    body: Any = getattr(resp, "body", None)
    return len(body) if isinstance(body, bytes | bytearray) else 0


def make_limit_middleware(limiter: ApiLimiter) -> Callable[[web.Request, Handler], Awaitable[Any]]:
    @web.middleware
    async def limit(request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.path in EXEMPT_PATHS:
            return await handler(request)
        if not limiter.try_enter():
            return limiter.reject("max_concurrent_requests")
        try:
            resp = await handler(request)
            size = _body_size(resp)
            if not limiter.try_reserve(size):
                return limiter.reject("max_response_bytes_in_flight")
            try:
                # Written here, not after we return, so the request and its bytes count until
                # the transport has drained; aiohttp's own prepare/write_eof are then no-ops.
                await resp.prepare(request)
                await resp.write_eof()
            except ConnectionError:
                pass  # the client went away; aiohttp sees the same error and logs the access
            finally:
                limiter.release(size)
            return resp
        finally:
            limiter.leave()

    return limit
