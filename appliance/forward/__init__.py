"""Forwarding incidents upstream: a durable SQLite outbox and one HTTPS sender per upstream.

Guarantee: at-least-once. Every incident create/update writes one outbox row per enabled
upstream inside the incident's own durable transaction (one of the appliance's ``incident_hooks``),
so a committed incident always has its rows and a rolled-back one never does. The senders
delete a row only after the upstream acknowledged it, so a crash between send and
acknowledgement re-sends it after restart; every copy carries the same idempotency key
``sensor_id:incident_id:revision`` for the console to dedupe with. What is not delivered is
either still queued, dead-lettered after repeated 4xx, or dropped by the spool limits, and
each of those is counted in /metrics and shown by ``GET /api/v1/upstreams``.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import random
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import aiosqlite

from appliance import __version__, dataplane
from appliance.config import AppConfig, ConfigError, UpstreamSection
from appliance.event import Event
from appliance.forward.document import (
    Identity,
    build_document,
    build_event_document,
    drop_class,
    event_drop_class,
)
from appliance.forward.formats import make_format
from appliance.forward.formats.base import FormatContext
from appliance.forward.outbox import Outbox
from appliance.forward.sender import Credentials, ForwardMetrics, UpstreamSender
from appliance.forward.transport import read_secret, ssl_context, webhook_key

if TYPE_CHECKING:
    from appliance.app import Appliance

__all__ = ["Forwarder", "build_forwarder"]

log = logging.getLogger(__name__)


def identity_of(cfg: AppConfig) -> Identity:
    a = cfg.appliance
    return Identity(a.sensor_id, a.tenant, a.site)


class Forwarder:
    """The forwarding component: owns the senders and the incident transaction hook."""

    def __init__(
        self,
        app: Appliance,
        *,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        rand: random.Random | None = None,
    ) -> None:
        self.app = app
        self.store = app.store
        self.outbox = Outbox(app.store)
        self.m = ForwardMetrics(app.metrics)
        self.sleep = sleep
        self.rand = rand
        self.config = app.config
        self.identity = identity_of(app.config)
        self.senders: dict[str, UpstreamSender] = {}
        self.event_stage = EventStage(self)
        self._register_gauges()

    # ---------------------------------------------------------------------------- metrics

    def _per_upstream(self, fn: Callable[[UpstreamSender], float | None]) -> Callable[[], Any]:
        def collect() -> dict[tuple[str, ...], float]:
            out: dict[tuple[str, ...], float] = {}
            for name, s in self.senders.items():
                value = fn(s)
                if value is not None:
                    out[(name,)] = float(value)
            return out

        return collect

    def _register_gauges(self) -> None:
        reg = self.app.metrics
        up = ["upstream"]
        clock = self.app.clock
        reg.gauge(
            "forward_backlog_rows",
            "Outbox rows waiting for delivery.",
            up,
            callback=self._per_upstream(lambda s: s.stats.pending),
        )
        reg.gauge(
            "forward_backlog_age_seconds",
            "Age of the oldest row waiting for delivery (0 when empty).",
            up,
            callback=self._per_upstream(
                lambda s: (
                    max(0.0, clock() - s.stats.oldest_created)
                    if s.stats.oldest_created is not None
                    else 0.0
                )
            ),
        )
        reg.gauge(
            "forward_dead_letter_rows",
            "Outbox rows parked after repeated 4xx.",
            up,
            callback=self._per_upstream(lambda s: s.stats.dead),
        )
        reg.gauge(
            "forward_spool_bytes",
            "Bytes of documents in the spool.",
            up,
            callback=self._per_upstream(lambda s: s.stats.bytes),
        )
        reg.gauge(
            "forward_spool_max_bytes",
            "Configured spool_max_bytes.",
            up,
            callback=self._per_upstream(lambda s: s.cfg.spool_max_bytes),
        )
        reg.gauge(
            "forward_spool_max_age_seconds",
            "Configured spool_max_age.",
            up,
            callback=self._per_upstream(lambda s: s.cfg.spool_max_age),
        )
        reg.gauge(
            "forward_last_success_timestamp_seconds",
            "Wall-clock time of the last acknowledged delivery.",
            up,
            callback=self._per_upstream(lambda s: s.last_success),
        )
        reg.gauge(
            "forward_consecutive_failures",
            "Failed attempts since the last success.",
            up,
            callback=self._per_upstream(lambda s: s.failures),
        )

    # -------------------------------------------------------------------------- lifecycle

    def build_senders(self, cfg: AppConfig) -> dict[str, UpstreamSender]:
        """Senders for the enabled upstreams; reads TLS files and secrets (ConfigError)."""
        senders: dict[str, UpstreamSender] = {}
        errors: list[str] = []
        for up in cfg.upstream:
            if not up.enabled:
                continue
            try:
                senders[up.name] = self._sender(cfg, up)
                if up.events:
                    lane = dataclasses.replace(
                        up,
                        batch_size=up.events_batch_size,
                        spool_max_bytes=up.events_spool_max_bytes,
                        spool_max_age=up.events_spool_max_age,
                    )
                    s = self._sender(cfg, lane, stream="events")
                    senders[s.name] = s
            except ConfigError as exc:
                errors.extend(exc.errors)
        if errors:
            raise ConfigError(errors)
        return senders

    def _sender(
        self, cfg: AppConfig, up: UpstreamSection, stream: str = "incident"
    ) -> UpstreamSender:
        token = read_secret(up, up.token, up.token_file, up.token_env, "token", cfg.path)
        secret = read_secret(
            up, up.hmac_secret, up.hmac_secret_file, up.hmac_secret_env, "hmac_secret", cfg.path
        )
        key = b""
        if secret:
            try:
                key = webhook_key(secret)
            except ValueError as exc:
                raise ConfigError([f"upstream {up.name}: hmac_secret: {exc}"]) from None
        fmt = make_format(FormatContext(up, identity_of(cfg), __version__))
        return UpstreamSender(
            up,
            self.outbox,
            fmt,
            ssl_ctx=ssl_context(up, cfg.path),
            creds=Credentials(token, key),
            metrics=self.m,
            clock=self.app.clock,
            sleep=self._sleep,
            rand=self.rand,
            barrier=self._barrier,
            stream=stream,
        )

    async def _sleep(self, seconds: float) -> None:
        # Indirection so tests can swap ``forwarder.sleep`` on a running appliance.
        await self.sleep(seconds)

    async def _barrier(self) -> None:
        async with self.store.transaction():
            pass

    async def start(self) -> None:
        self.senders = self.build_senders(self.config)
        configured = {up.name for up in self.config.upstream}
        configured |= {f"{name}/events" for name in configured}
        for name, n in (await self.outbox.drop_unconfigured(configured)).items():
            # Rows of a disabled upstream stay; those of an upstream removed from the
            # config can never be delivered: drop them, counted, once at start.
            self.m.dropped.inc(name, "upstream_removed", n=n)
            log.warning("forward: dropped %d queued row(s) of removed upstream %s", n, name)
        started: list[UpstreamSender] = []
        try:
            for s in self.senders.values():
                await s.start()
                started.append(s)
        except BaseException:
            for s in started:
                await s.stop()
            raise
        self.app.incident_hooks.append(self.hook)
        self.app.pipeline.after_store.append(self.event_stage)

    async def stop(self) -> None:
        if self.hook in self.app.incident_hooks:
            self.app.incident_hooks.remove(self.hook)
        if self.event_stage in self.app.pipeline.after_store:
            self.app.pipeline.after_store.remove(self.event_stage)
        for s in self.senders.values():
            await s.stop()

    async def reload(self, cfg: AppConfig) -> None:
        """Rebuild the senders when ``[[upstream]]`` or the identity changed.

        The new senders are built (files and secrets read) before the old ones stop, so a
        reload with a missing certificate raises and leaves forwarding as it was.
        """
        if cfg.upstream == self.config.upstream and identity_of(cfg) == self.identity:
            self.config = cfg
            return
        new = self.build_senders(cfg)
        for s in self.senders.values():
            await s.stop()
        self.config, self.identity, self.senders = cfg, identity_of(cfg), new
        for s in new.values():
            await s.start()

    # ------------------------------------------------------------------- the incident hook

    async def hook(self, conn: aiosqlite.Connection, incident: dict[str, Any]) -> None:
        """Queue the incident revision for every enabled upstream, in the caller's txn."""
        if conn is not self.store.writer or not self.senders:
            return  # another appliance in the same process (tests), or nothing to forward
        if "id" not in incident or "revision" not in incident:
            raise ValueError("incident document without id or revision cannot be forwarded")
        doc = build_document(incident, self.identity)
        key = doc["idempotency_key"]
        cls = drop_class(incident)
        now = self.app.clock()
        for s in self.senders.values():
            if s.stream != "incident":
                continue
            size = await Outbox.enqueue(conn, s.name, key, doc, cls, now)
            if size:
                self.m.enqueued.inc(s.name)
                s.stats.pending += 1  # estimates until the sender's next refresh
                s.stats.bytes += size
                if s.stats.oldest_created is None:
                    s.stats.oldest_created = now
                if s.stats.bytes > s.cfg.spool_max_bytes:
                    dropped = await Outbox.trim(
                        conn,
                        s.name,
                        max_bytes=s.cfg.spool_max_bytes,
                        max_age=s.cfg.spool_max_age,
                        now=now,
                    )
                    s.count_drops(dropped)
                    s.stats.bytes = await Outbox.spool_bytes(conn, s.name)
            s.wake()

    # ----------------------------------------------------------------------------- status

    def status(self) -> list[dict[str, object]]:
        now = self.app.clock()
        out = [s.snapshot(now) for s in self.senders.values()]
        for up in self.config.upstream:
            if not up.enabled:
                out.append({"name": up.name, "type": up.type, "status": "disabled"})
        return out


class EventStage:
    """Pipeline stage (after store) feeding the optional raw-event lanes.

    Best effort by design: events are queued in the ingest path's own kind of transaction
    (not ``durable``), a stage failure is counted by the pipeline and the events stay stored,
    and each lane has its own spool limits so a flood of events never pushes out incidents.
    """

    name = "forward-events"

    def __init__(self, forwarder: Forwarder) -> None:
        self.fwd = forwarder

    async def process(self, events: list[Event], now: float) -> None:
        lanes = [s for s in self.fwd.senders.values() if s.stream == "events"]
        if not lanes or not events or isinstance(events, dataplane.NATIVE_SEQUENCES):
            return  # (a native flow batch: flows are not rows of events, none has an id)
        identity = self.fwd.identity
        rows = []
        for ev in events:
            if ev.id is None:
                continue
            doc = build_event_document(ev, identity)
            body = json.dumps(doc, separators=(",", ":"), ensure_ascii=False, default=str)
            rows.append((doc["idempotency_key"], body, event_drop_class(ev)))
        if not rows:
            return
        async with self.fwd.store.transaction() as conn:
            for lane in lanes:
                added = await Outbox.enqueue_many(conn, lane.name, "event", rows, now)
                self.fwd.m.enqueued.inc(lane.name, n=len(rows))
                lane.stats.pending += len(rows)
                lane.stats.bytes += added
                if lane.stats.oldest_created is None:
                    lane.stats.oldest_created = now
                if lane.stats.bytes > lane.cfg.spool_max_bytes:
                    dropped = await Outbox.trim(
                        conn,
                        lane.name,
                        max_bytes=lane.cfg.spool_max_bytes,
                        max_age=lane.cfg.spool_max_age,
                        now=now,
                    )
                    lane.count_drops(dropped)
                    lane.stats.bytes = await Outbox.spool_bytes(conn, lane.name)
        for lane in lanes:
            lane.wake()


def build_forwarder(app: Appliance) -> Forwarder:
    return Forwarder(app)
