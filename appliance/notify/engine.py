"""The notification engine: incidents in, messages queued durably, one delivery loop per channel.

Flow. Every incident change runs :meth:`NotifyEngine.hook` inside the incident's durable
transaction (one of the appliance's ``incident_hooks``). A new incident is
routed (:mod:`appliance.notify.match`); unless a silence covers it, each route it takes either
queues a message at once or parks the incident in ``notify_pending`` (group window, digest,
quiet hours) and sets its escalation and repeat deadlines in ``notify_timers``. A later change
to acknowledged, resolved or suppressed deletes those deadlines in the same transaction, which
is what "acknowledging stops the escalation" rests on.

Messages are rendered when queued and wait in the forwarder's ``outbox`` table (its
:class:`~appliance.forward.outbox.Outbox` code: ``upstream = notify/<channel>``, ``stream =
notify``), so a committed incident always has its messages, a crash re-sends what was not
acknowledged by the channel (at-least-once) and a row is deleted only after the channel took
it. Each channel has its own loop (:class:`Lane`), so a dead channel only backs up itself.

Time. Every deadline (group windows, digests, quiet hours, escalation, repeats, retry backoff,
rate-limit windows) is a clock time compared with the appliance's injectable clock, polled
every ``notify.tick`` seconds; no timer is a long ``sleep``. So a test can move the clock an
hour on, and a restart finds every deadline where it was, in SQLite.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
import sqlite3
import time
import uuid
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

import aiosqlite

from appliance.config import AppConfig, NotifyChannel, NotifyRoute, NotifySection
from appliance.forward.formats.base import Outcome
from appliance.forward.outbox import Outbox, SpoolStats
from appliance.forward.transport import backoff_delay
from appliance.logutil import RateLimitedLog, printable
from appliance.metrics import Registry
from appliance.notify import acklink
from appliance.notify.channels.base import Channel, DeliveryError, Message
from appliance.notify.match import (
    Silence,
    group_bucket,
    in_quiet_hours,
    rank,
    select_routes,
    window_end,
)
from appliance.notify.render import render, summary

if TYPE_CHECKING:
    from appliance.app import Appliance

log = logging.getLogger(__name__)
_rl = RateLimitedLog(log, 30.0)

STREAM = "notify"
PREFIX = "notify/"
LOG_KEEP = 1000  # rows of notify_log kept for the API
FLUSH_BATCH = 500  # pending buckets / timers handled per scheduler pass
CLEANUP_INTERVAL = 60.0  # seconds (monotonic) between deletions of expired state
STATS_INTERVAL = 0.5  # seconds between re-reads of a lane's backlog while it drains

ChannelFactory = Callable[[NotifyChannel, Path, Registry], Channel]


def default_channel_factory(cfg: NotifyChannel, base_dir: Path, metrics: Registry) -> Channel:
    from appliance.notify.channels import build_channel

    return build_channel(cfg, base_dir, metrics)


def route_keys(routes: list[NotifyRoute]) -> dict[str, NotifyRoute]:
    """Stable names for routes in the state tables: the route's name, else its position and
    channels (so a state row of a route that was changed in the config is not misapplied)."""
    return {(r.name or f"#{i}:{r.label}"): r for i, r in enumerate(routes)}


class NotifyMetrics:
    def __init__(self, metrics: Registry) -> None:
        ch = ["channel"]
        self.queued = metrics.counter("notify_queued_total", "Messages queued.", ch)
        self.sent = metrics.counter("notify_sent_total", "Messages a channel accepted.", ch)
        self.failed = metrics.counter(
            "notify_failed_total",
            "Failed delivery attempts by reason (retryable, rejected, timeout, internal).",
            ["channel", "reason"],
        )
        self.retried = metrics.counter(
            "notify_retried_total", "Attempts that will be retried after a backoff.", ch
        )
        self.dropped = metrics.counter(
            "notify_dropped_total",
            "Notifications not sent, by reason (dead after max_rejections, quiet_hours,"
            " channel_removed, route_removed).",
            ["reason"],
        )
        self.silenced = metrics.counter(
            "notify_silenced_total", "New incidents a silence kept from notifying."
        )
        self.held = metrics.counter(
            "notify_held_total",
            "Incidents held for one later message (group, digest, quiet).",
            ["kind"],
        )
        self.rate_limited = metrics.counter(
            "notify_rate_limited_total", "Messages deferred by a channel's rate limit.", ch
        )
        self.recipient_limited = metrics.counter(
            "notify_recipient_limited_total",
            "Recipients left out of a message because they reached their rate limit.",
            ch,
        )
        self.escalated = metrics.counter(
            "notify_escalations_total", "Escalation levels reached.", ["level"]
        )
        self.acks = metrics.counter(
            "notify_acks_total", "Incidents acknowledged from a message.", ["via"]
        )
        self.ack_refused = metrics.counter(
            "notify_ack_refused_total",
            "Acknowledgement links or SMS codes refused (forged, expired, malformed,"
            " unknown_code, sender).",
            ["reason"],
        )
        for reason in ("forged", "expired", "malformed"):
            self.ack_refused.inc(reason, n=0)


@dataclass(slots=True)
class Lane:
    """One channel's delivery loop and its figures."""

    engine: NotifyEngine
    name: str
    channel: Channel
    limit: tuple[int, float] | None = None  # (max messages, per seconds)
    stats: SpoolStats = field(default_factory=SpoolStats)
    failures: int = 0
    not_before: float = 0.0
    last_error: str = ""
    last_success: float | None = None
    sends: deque[float] = field(default_factory=deque)
    task: asyncio.Task[None] | None = None
    wake_event: asyncio.Event = field(default_factory=asyncio.Event)
    _deferred: int = -1
    _stats_read: float = 0.0

    @property
    def queue(self) -> str:
        return PREFIX + self.name

    def wake(self) -> None:
        self.wake_event.set()

    async def idle(self) -> None:
        eng = self.engine
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.wake_event.wait(), eng.cfg.tick)
        if self.wake_event.is_set():
            self.wake_event.clear()
            # Woken from inside an incident transaction: let it commit before reading.
            async with eng.store.transaction():
                pass

    def rate_limited(self, now: float) -> bool:
        if self.limit is None:
            return False
        max_messages, per = self.limit
        while self.sends and self.sends[0] <= now - per:
            self.sends.popleft()
        return len(self.sends) >= max_messages

    async def run(self) -> None:
        eng = self.engine
        while True:
            try:
                mono = time.monotonic()
                if mono - self._stats_read >= STATS_INTERVAL or not self.stats.pending:
                    # A scan of the channel's rows: not once per message of a deep backlog.
                    self._stats_read = mono
                    self.stats = await eng.outbox.stats(self.queue)
                now = eng.clock()
                if now < self.not_before or not self.stats.pending:
                    await self.idle()
                    continue
                items = await eng.outbox.head(self.queue, 1, 1 << 30)
                if not items:
                    await self.idle()
                    continue
                item = items[0]
                if self.rate_limited(now):
                    if self._deferred != item.id:
                        self._deferred = item.id
                        eng.m.rate_limited.inc(self.name)
                    await self.idle()
                    continue
                await self.deliver(item.id, item.key, item.document, item.attempts)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self.failures += 1
                eng.m.failed.inc(self.name, "internal")
                _rl.error(f"lane:{self.name}", "notify %s: %r", self.name, exc, exc_info=True)
                await asyncio.sleep(eng.cfg.tick)

    async def deliver(self, row_id: int, key: str, doc: dict[str, Any], attempts: int) -> None:
        eng = self.engine
        message = message_of(doc)
        to = eng.limited_recipients.get(self.name)
        if to:  # some of this channel's recipients have a rate limit of their own
            now = eng.clock()
            allowed = tuple(r for r in to if not eng.recipient_over_limit(r, now))
            if len(allowed) < len(to):
                eng.m.recipient_limited.inc(self.name, n=len(to) - len(allowed))
                if not allowed:  # nobody left to tell: settled, and shown as such
                    await eng.outbox.settle(
                        self.queue,
                        {row_id: Outcome.DELIVERED},
                        error="",
                        max_rejections=eng.cfg.max_rejections,
                        now=now,
                        per_item=True,
                    )
                    self.stats.pending = max(0, self.stats.pending - 1)
                    await eng.log_delivery(self.name, key, doc, "limited", attempts, None)
                    return
                message = replace(message, recipients=allowed)
        reason = ""
        retry_after: float | None = None
        try:
            await asyncio.wait_for(self.channel.send(message), eng.cfg.send_timeout)
            outcome = Outcome.DELIVERED
        except DeliveryError as exc:
            outcome = Outcome.RETRY if exc.retryable else Outcome.REJECT
            reason = "retryable" if exc.retryable else "rejected"
            retry_after = exc.retry_after
            self.last_error = printable(str(exc), 300)
        except TimeoutError:
            outcome, reason = Outcome.RETRY, "timeout"
            self.last_error = f"no answer in {eng.cfg.send_timeout:g}s"
        except Exception as exc:  # a channel bug must not stop its lane
            outcome, reason = Outcome.RETRY, "internal"
            self.last_error = printable(f"{type(exc).__name__}: {exc}", 300)
        now = eng.clock()
        settled = await eng.outbox.settle(
            self.queue,
            {row_id: outcome},
            error=self.last_error,
            max_rejections=eng.cfg.max_rejections,
            now=now,
            per_item=True,
        )
        if outcome is Outcome.DELIVERED:
            self.failures = 0
            self.not_before = 0.0
            self.last_success = now
            self.sends.append(now)
            eng.recipients_sent(message.recipients or to or (), now)
            self.stats.pending = max(0, self.stats.pending - 1)
            eng.m.sent.inc(self.name)
            await eng.log_delivery(self.name, key, doc, "sent", attempts + 1, None)
            return
        self.failures += 1
        eng.m.failed.inc(self.name, reason)
        if settled.dead:
            self.stats.pending = max(0, self.stats.pending - 1)
            self.stats.dead += 1
            eng.m.dropped.inc("dead")
            await eng.log_delivery(self.name, key, doc, "dead", attempts + 1, self.last_error)
            _rl.warning(
                f"dead:{self.name}", "notify %s: gave up on %s: %s", self.name, key, self.last_error
            )
        else:
            eng.m.retried.inc(self.name)
        delay = backoff_delay(
            self.failures,
            retry_after,
            base=eng.cfg.backoff_base,
            cap=eng.cfg.backoff_cap,
            retry_after_max=eng.cfg.backoff_cap,
            rand=eng.rand,
        )
        self.not_before = now + delay
        _rl.warning(
            f"fail:{self.name}",
            "notify %s: %s; %d failure(s) in a row, next try in %.1fs",
            self.name,
            self.last_error,
            self.failures,
            delay,
        )

    def snapshot(self, now: float) -> dict[str, Any]:
        return {
            "channel": self.name,
            "status": "failing" if self.failures else "ok",
            "backlog": self.stats.pending,
            "dead": self.stats.dead,
            "consecutive_failures": self.failures,
            "last_error": self.last_error,
            "last_success": self.last_success,
            "next_try_in": round(max(0.0, self.not_before - now), 3),
        }


def message_of(doc: dict[str, Any]) -> Message:
    return Message(
        subject=str(doc.get("subject", "")),
        text=str(doc.get("text", "")),
        short=str(doc.get("short", "")),
        severity=str(doc.get("severity", "low")),
        html=doc.get("html"),
        incident_ids=tuple(str(i) for i in doc.get("incident_ids") or ()),
        ack_url=doc.get("ack_url"),
        ack_code=doc.get("ack_code"),
    )


class NotifyEngine:
    name = "notify"

    def __init__(
        self,
        app: Appliance,
        *,
        rand: random.Random | None = None,
        channel_factory: ChannelFactory = default_channel_factory,
    ) -> None:
        self.app = app
        # Builds each configured channel (at start and on reload); tests pass one that
        # builds loopback channels.
        self.channel_factory = channel_factory
        self.store = app.store
        self.clock = app.clock
        self.outbox = Outbox(app.store)
        self.m = NotifyMetrics(app.metrics)
        self.rand = rand or random.Random()
        self.config = app.config
        self.lanes: dict[str, Lane] = {}
        self.silences: dict[str, Silence] = {}
        self.key = b""
        self._task: asyncio.Task[None] | None = None
        self._log_rows = 0
        self._last_cleanup = 0.0
        self._apply_config(app.config)
        app.metrics.gauge(
            "notify_backlog",
            "Messages waiting for delivery, per channel.",
            ["channel"],
            callback=lambda: {(n,): float(lane.stats.pending) for n, lane in self.lanes.items()},
        )
        app.metrics.gauge(
            "notify_dead",
            "Messages given up after max_rejections, per channel (still listed by the API).",
            ["channel"],
            callback=lambda: {(n,): float(lane.stats.dead) for n, lane in self.lanes.items()},
        )

    def _apply_config(self, config: AppConfig) -> None:
        self.config = config
        self.cfg: NotifySection = config.notify
        self.tz = ZoneInfo(self.cfg.timezone or "UTC")
        self.routes = route_keys(self.cfg.routes)
        self.escalations = {e.name: e for e in self.cfg.escalations}
        # Reply codes only mean something where a reply can come back: a modem channel.
        self.reply_codes = any(c.type == "sms_modem" for c in self.cfg.channels)
        # Per-recipient limits (in memory: a restart forgives them), and per channel the
        # recipients of its ``to`` when any of them has one.
        self.recipient_limits = {
            rl.recipient: (rl.max_messages, rl.per) for rl in self.cfg.rate_limits if rl.recipient
        }
        self.limited_recipients: dict[str, tuple[str, ...]] = {
            c.name: tuple(c.to)
            for c in self.cfg.channels
            if any(r in self.recipient_limits for r in c.to)
        }
        kept: dict[str, deque[float]] = getattr(self, "_recipient_sends", {})  # across reloads
        self._recipient_sends = {r: kept.get(r, deque()) for r in self.recipient_limits}

    def recipient_over_limit(self, recipient: str, now: float) -> bool:
        limit = self.recipient_limits.get(recipient)
        if limit is None:
            return False
        max_messages, per = limit
        sends = self._recipient_sends[recipient]
        while sends and sends[0] <= now - per:
            sends.popleft()
        return len(sends) >= max_messages

    def recipients_sent(self, recipients: tuple[str, ...] | list[str], now: float) -> None:
        for r in recipients:
            sends = self._recipient_sends.get(r)
            if sends is not None:
                sends.append(now)

    # -------------------------------------------------------------------------- lifecycle

    def _build_lanes(self, config: AppConfig) -> dict[str, Lane]:
        factory = self.channel_factory
        limits = {rl.channel: (rl.max_messages, rl.per) for rl in config.notify.rate_limits}
        lanes: dict[str, Lane] = {}
        for ch in config.notify.channels:
            channel = factory(ch, Path(config.base_dir), self.app.metrics)
            lanes[ch.name] = Lane(self, ch.name, channel, limits.get(ch.name))
            if hasattr(channel, "on_reply"):
                channel.on_reply = self._reply_handler(ch)
        return lanes

    async def _start_lanes(self) -> None:
        for lane in self.lanes.values():
            start: Callable[[], Awaitable[None]] | None = getattr(lane.channel, "start", None)
            if start is not None:
                await start()  # background work of a channel: the modem's reply polling
            lane.task = asyncio.create_task(lane.run(), name=f"notify-{lane.name}")

    async def start(self) -> None:
        self.key = await asyncio.to_thread(acklink.load_or_create_key, self.config.data_dir)
        await self._load_silences()
        self.lanes = self._build_lanes(self.config)
        await self._drop_removed()
        await self._start_lanes()
        self._task = asyncio.create_task(self._scheduler(), name="notify-scheduler")
        self.app.incident_hooks.append(self.hook)

    async def _stop_lanes(self) -> None:
        for lane in self.lanes.values():
            if lane.task is not None:
                lane.task.cancel()
                with contextlib.suppress(BaseException):
                    await lane.task
            with contextlib.suppress(Exception):
                await lane.channel.close()

    async def stop(self) -> None:
        if self.hook in self.app.incident_hooks:
            self.app.incident_hooks.remove(self.hook)
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(BaseException):
                await self._task
        await self._stop_lanes()

    async def reload(self, config: AppConfig) -> None:
        """Apply a changed ``[notify]``; channels are rebuilt (new ones first, so a channel
        that cannot be built leaves the old ones running)."""
        if config.notify == self.cfg:
            self.config = config
            return
        lanes = self._build_lanes(config)
        await self._stop_lanes()
        self._apply_config(config)
        self.lanes = lanes
        await self._drop_removed()
        await self._start_lanes()

    async def _drop_removed(self) -> None:
        conn = self.store.reader
        assert conn is not None
        async with conn.execute(
            "SELECT upstream, count(*) FROM outbox WHERE stream = ? GROUP BY upstream", (STREAM,)
        ) as cur:
            rows = [(str(r[0]), int(r[1])) for r in await cur.fetchall()]
        gone = [(q, n) for q, n in rows if q.removeprefix(PREFIX) not in self.lanes]
        if not gone:
            return
        async with self.store.transaction(durable=True) as wconn:
            for q, n in gone:
                await wconn.execute("DELETE FROM outbox WHERE upstream = ?", (q,))
                self.m.dropped.inc("channel_removed", n=n)
                log.warning("notify: dropped %d queued message(s) of removed channel %s", n, q)

    # -------------------------------------------------------------------- the incident hook

    async def hook(self, conn: aiosqlite.Connection, incident: dict[str, Any]) -> None:
        """Route a new incident; on acknowledge/resolve/suppress, stop its timers. Runs in
        the incident's transaction: what it writes commits or rolls back with the incident.

        A database error rolls the incident back (it is retried, messages and all); any other
        error is a bug here, and must not cost the incident: counted, logged, not raised.
        """
        if conn is not self.store.writer or not self.cfg.routes:
            return
        try:
            await self._route(conn, incident)
        except sqlite3.Error:
            raise
        except Exception as exc:
            self.m.dropped.inc("internal")
            _rl.error(
                "hook", "notify: incident %s not routed: %r", incident.get("id"), exc, exc_info=True
            )

    async def _route(self, conn: aiosqlite.Connection, incident: dict[str, Any]) -> None:
        incident_id = str(incident.get("id", ""))
        if incident.get("status") != "open":
            await conn.execute("DELETE FROM notify_timers WHERE incident_id = ?", (incident_id,))
            return
        if incident.get("revision") != 1:
            return  # later hits update the incident; reminders come from repeat_interval
        now = self.clock()
        site = self.config.appliance.site
        routes = select_routes(self.cfg.routes, incident, site=site, now=now, tz=self.tz)
        if not routes:
            return
        if any(s.active(now) and s.matches(incident) for s in self.silences.values()):
            self.m.silenced.inc()
            return
        keys = {id(r): k for k, r in self.routes.items()}
        severity = str(incident.get("severity", "medium"))
        summ = summary(incident, site)
        summ_json = json.dumps(summ, separators=(",", ":"), default=str)
        for route in routes:
            rkey = keys[id(route)]
            quiet = route.quiet_hours
            if quiet is not None and in_quiet_hours(quiet, severity, now, self.tz):
                if quiet.action == "drop":
                    self.m.dropped.inc("quiet_hours")
                    continue
                await self._hold(
                    conn,
                    rkey,
                    "quiet",
                    "",
                    incident_id,
                    severity,
                    summ_json,
                    window_end(quiet.hours, now, self.tz),
                )
            elif route.digest_interval and rank(severity) < rank(route.digest_below):
                due = await self._bucket_due(conn, rkey, "digest", "")
                await self._hold(
                    conn,
                    rkey,
                    "digest",
                    "",
                    incident_id,
                    severity,
                    summ_json,
                    due if due is not None else now + route.digest_interval,
                )
            elif route.group_by or route.group_wait:
                bucket = group_bucket(route, incident)
                due = await self._bucket_due(conn, rkey, "group", bucket)
                if due is None:
                    due = now + route.group_wait
                    async with conn.execute(
                        "SELECT last_sent FROM notify_groups WHERE route = ? AND bucket = ?",
                        (rkey, bucket),
                    ) as cur:
                        row = await cur.fetchone()
                    if row is not None and now < float(row[0]) + route.group_interval:
                        due = max(due, float(row[0]) + route.group_interval)
                await self._hold(conn, rkey, "group", bucket, incident_id, severity, summ_json, due)
            else:
                fields = await self._render_one(conn, summ, "incident", now)
                await self.enqueue(conn, route.channels, f"i:{incident_id}:{rkey}", fields, now)
            esc = self.escalations.get(route.escalation) if route.escalation else None
            if esc is not None and esc.levels and rank(severity) >= rank(esc.min_severity):
                await conn.execute(
                    "INSERT OR IGNORE INTO notify_timers (incident_id, kind, route, level, due,"
                    " summary) VALUES (?, 'escalate', ?, 0, ?, ?)",
                    (incident_id, rkey, now + esc.levels[0].after, summ_json),
                )
            if route.repeat_interval:
                await conn.execute(
                    "INSERT OR IGNORE INTO notify_timers (incident_id, kind, route, level, due,"
                    " summary) VALUES (?, 'repeat', ?, 0, ?, ?)",
                    (incident_id, rkey, now + route.repeat_interval, summ_json),
                )

    async def _bucket_due(
        self, conn: aiosqlite.Connection, rkey: str, kind: str, bucket: str
    ) -> float | None:
        async with conn.execute(
            "SELECT min(due) FROM notify_pending WHERE route = ? AND kind = ? AND bucket = ?",
            (rkey, kind, bucket),
        ) as cur:
            row = await cur.fetchone()
        return float(row[0]) if row and row[0] is not None else None

    async def _hold(
        self,
        conn: aiosqlite.Connection,
        rkey: str,
        kind: str,
        bucket: str,
        incident_id: str,
        severity: str,
        summ_json: str,
        due: float,
    ) -> None:
        await conn.execute(
            "INSERT OR IGNORE INTO notify_pending (route, kind, bucket, incident_id, due,"
            " severity, summary) VALUES (?,?,?,?,?,?,?)",
            (rkey, kind, bucket, incident_id, due, severity, summ_json),
        )
        self.m.held.inc(kind)

    async def _ack_code(self, conn: aiosqlite.Connection, incident_id: str, now: float) -> str:
        async with conn.execute(
            "SELECT code FROM notify_ack_codes WHERE incident_id = ? AND expires > ?",
            (incident_id, now),
        ) as cur:
            row = await cur.fetchone()
        if row is not None:
            return str(row[0])
        for _ in range(10):
            code = acklink.new_code()
            cur = await conn.execute(
                "INSERT OR IGNORE INTO notify_ack_codes (code, incident_id, expires)"
                " VALUES (?,?,?)",
                (code, incident_id, now + self.cfg.ack_link_ttl),
            )
            if cur.rowcount:
                return code
        raise RuntimeError("no free acknowledgement code")

    def ack_url(self, incident_id: str, now: float) -> str | None:
        if not self.cfg.public_url:
            return None
        token = acklink.make_token(self.key, incident_id, now + self.cfg.ack_link_ttl)
        return f"{self.cfg.public_url.rstrip('/')}/ack/{token}"

    async def _render_one(
        self,
        conn: aiosqlite.Connection,
        summ: dict[str, Any],
        kind: str,
        now: float,
        note: str = "",
    ) -> dict[str, Any]:
        incident_id = str(summ.get("id"))
        return render(
            [summ],
            kind=kind,
            ack_url=self.ack_url(incident_id, now),
            ack_code=await self._ack_code(conn, incident_id, now) if self.reply_codes else None,
            sms_max=self.cfg.sms_max_chars,
            max_items=self.cfg.digest_max_items,
            note=note,
        )

    async def enqueue(
        self,
        conn: aiosqlite.Connection,
        channels: list[str],
        key: str,
        fields: dict[str, Any],
        now: float,
    ) -> None:
        """One outbox row per channel, in the caller's transaction; a replayed key is
        queued once."""
        cls = rank(str(fields.get("severity", "")))
        for name in channels:
            lane = self.lanes.get(name)
            if lane is None:
                continue
            if await Outbox.enqueue(conn, lane.queue, key, fields, cls, now, stream=STREAM):
                self.m.queued.inc(name)
                lane.stats.pending += 1
                lane.wake()

    # ------------------------------------------------------------------------- scheduler

    async def _scheduler(self) -> None:
        while True:
            try:
                await self.run_due()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                _rl.error("scheduler", "notify scheduler: %r", exc, exc_info=True)
            await asyncio.sleep(self.cfg.tick)

    async def run_due(self) -> None:
        """Send what is due: held groups/digests/quiet buckets, escalations, reminders; and
        forget expired silences and codes."""
        now = self.clock()
        conn = self.store.reader
        assert conn is not None
        buckets: list[tuple[str, str, str]] = []
        async with conn.execute(
            "SELECT 1 FROM notify_pending WHERE due <= ? LIMIT 1", (now,)
        ) as cur:
            pending_due = await cur.fetchone() is not None  # the index, not a scan, every tick
        if pending_due:
            async with conn.execute(
                "SELECT route, kind, bucket FROM notify_pending GROUP BY route, kind, bucket"
                " HAVING min(due) <= ? LIMIT ?",
                (now, FLUSH_BATCH),
            ) as cur:
                buckets = [(str(r[0]), str(r[1]), str(r[2])) for r in await cur.fetchall()]
        async with conn.execute(
            "SELECT 1 FROM notify_timers WHERE due <= ? LIMIT 1", (now,)
        ) as cur:
            timers_due = await cur.fetchone() is not None
        if buckets or timers_due:
            async with self.store.transaction(durable=True) as wconn:
                for rkey, kind, bucket in buckets:
                    await self._flush_bucket(wconn, rkey, kind, bucket, now)
                if timers_due:
                    await self._fire_timers(wconn, now)
        mono = time.monotonic()
        if mono - self._last_cleanup >= CLEANUP_INTERVAL:
            self._last_cleanup = mono
            await self.cleanup(now)

    async def cleanup(self, now: float) -> None:
        """Forget expired silences and reply codes, and group send times too old to matter."""
        longest = max((r.group_interval for r in self.cfg.routes), default=0.0)
        async with self.store.transaction() as wconn:
            await wconn.execute("DELETE FROM notify_silences WHERE expires <= ?", (now,))
            await wconn.execute("DELETE FROM notify_ack_codes WHERE expires <= ?", (now,))
            await wconn.execute(
                "DELETE FROM notify_groups WHERE last_sent < ?", (now - longest - 60.0,)
            )
        self.silences = {k: s for k, s in self.silences.items() if s.expires > now}

    async def _flush_bucket(
        self, conn: aiosqlite.Connection, rkey: str, kind: str, bucket: str, now: float
    ) -> None:
        async with conn.execute(
            "SELECT summary, due FROM notify_pending WHERE route = ? AND kind = ? AND bucket = ?",
            (rkey, kind, bucket),
        ) as cur:
            rows = list(await cur.fetchall())
        await conn.execute(
            "DELETE FROM notify_pending WHERE route = ? AND kind = ? AND bucket = ?",
            (rkey, kind, bucket),
        )
        route = self.routes.get(rkey)
        if route is None or not rows:
            if rows:
                self.m.dropped.inc("route_removed", n=len(rows))
            return
        items = [json.loads(r[0]) for r in rows]
        due = min(float(r[1]) for r in rows)
        if len(items) == 1:
            fields = await self._render_one(
                conn, items[0], "incident" if kind == "group" else kind, now
            )
        else:
            fields = render(
                items,
                kind=kind,
                sms_max=self.cfg.sms_max_chars,
                max_items=self.cfg.digest_max_items,
            )
        await self.enqueue(conn, route.channels, f"{kind}:{rkey}:{bucket}:{due:.6f}", fields, now)
        if kind == "group":
            await conn.execute(
                "INSERT INTO notify_groups (route, bucket, last_sent) VALUES (?,?,?)"
                " ON CONFLICT (route, bucket) DO UPDATE SET last_sent = excluded.last_sent",
                (rkey, bucket, now),
            )

    async def _fire_timers(self, conn: aiosqlite.Connection, now: float) -> None:
        async with conn.execute(
            "SELECT t.incident_id, t.kind, t.route, t.level, t.due, t.summary, i.status, i.doc"
            " FROM notify_timers t LEFT JOIN incidents i ON i.id = t.incident_id"
            " WHERE t.due <= ? ORDER BY t.due LIMIT ?",
            (now, FLUSH_BATCH),
        ) as cur:
            rows = await cur.fetchall()
        site = self.config.appliance.site
        for incident_id, kind, rkey, level, due, summ_json, status, doc in rows:
            route = self.routes.get(rkey)
            pk = (incident_id, kind, rkey)
            if status != "open" or route is None:
                await conn.execute(
                    "DELETE FROM notify_timers WHERE incident_id = ? AND kind = ? AND route = ?",
                    pk,
                )
                continue
            summ = summary(json.loads(doc), site) if doc else json.loads(summ_json)
            if kind == "escalate":
                esc = self.escalations.get(route.escalation)
                if esc is None or level >= len(esc.levels):
                    await conn.execute(
                        "DELETE FROM notify_timers WHERE incident_id = ? AND kind = ?"
                        " AND route = ?",
                        pk,
                    )
                    continue
                step = esc.levels[level]
                fields = await self._render_one(conn, summ, "escalate", now, f"level {level + 1}")
                await self.enqueue(
                    conn, step.channels, f"e:{incident_id}:{rkey}:{level}", fields, now
                )
                self.m.escalated.inc(str(level + 1))
                if level + 1 < len(esc.levels):
                    await conn.execute(
                        "UPDATE notify_timers SET level = ?, due = ? WHERE incident_id = ?"
                        " AND kind = ? AND route = ?",
                        (level + 1, due + esc.levels[level + 1].after, *pk),
                    )
                else:
                    await conn.execute(
                        "DELETE FROM notify_timers WHERE incident_id = ? AND kind = ?"
                        " AND route = ?",
                        pk,
                    )
            else:
                fields = await self._render_one(conn, summ, "repeat", now)
                await self.enqueue(
                    conn, route.channels, f"r:{incident_id}:{rkey}:{level}", fields, now
                )
                # From now, not from the missed deadline: an outage does not send a burst.
                await conn.execute(
                    "UPDATE notify_timers SET level = level + 1, due = ? WHERE incident_id = ?"
                    " AND kind = ? AND route = ?",
                    (now + route.repeat_interval, *pk),
                )

    # ---------------------------------------------------------------------------- history

    async def log_delivery(
        self,
        channel: str,
        key: str,
        doc: dict[str, Any],
        status: str,
        attempts: int,
        error: str | None,
    ) -> None:
        async with self.store.transaction() as conn:
            cur = await conn.execute(
                "INSERT INTO notify_log (channel, key, at, status, attempts, subject, incidents,"
                " last_error) VALUES (?,?,?,?,?,?,?,?)",
                (
                    channel,
                    key,
                    self.clock(),
                    status,
                    attempts,
                    str(doc.get("subject", ""))[:200],
                    json.dumps(list(doc.get("incident_ids") or ())[:100]),
                    error,
                ),
            )
            self._log_rows += 1
            if self._log_rows >= 100 and cur.lastrowid is not None:
                self._log_rows = 0
                await conn.execute(
                    "DELETE FROM notify_log WHERE id <= ?", (cur.lastrowid - LOG_KEEP,)
                )

    async def deliveries(
        self, *, status: str | None, channel: str | None, limit: int
    ) -> list[dict[str, Any]]:
        """Queued and given-up rows from the outbox, then the newest delivered ones."""
        conn = self.store.reader
        assert conn is not None
        out: list[dict[str, Any]] = []
        if status in (None, "pending", "dead"):
            sql = (
                "SELECT id, upstream, key, created, state, attempts, last_error, body FROM outbox"
                " WHERE stream = ?"
            )
            args: list[Any] = [STREAM]
            if status:
                sql += " AND state = ?"
                args.append(status)
            if channel:
                sql += " AND upstream = ?"
                args.append(PREFIX + channel)
            sql += " ORDER BY id LIMIT ?"
            args.append(limit)
            async with conn.execute(sql, args) as cur:
                for id_, q, key, created, state, attempts, err, body in await cur.fetchall():
                    doc = json.loads(body)
                    out.append(
                        {
                            "id": f"q{id_}",
                            "channel": str(q).removeprefix(PREFIX),
                            "key": key,
                            "status": state,
                            "created": created,
                            "attempts": attempts,
                            "last_error": err,
                            "subject": doc.get("subject"),
                            "incident_ids": doc.get("incident_ids", []),
                        }
                    )
        if status in (None, "sent", "dead", "limited") and len(out) < limit:
            sql = (
                "SELECT id, channel, key, at, status, attempts, last_error, subject, incidents"
                " FROM notify_log WHERE 1 = 1"
            )
            args = []
            if status:
                sql += " AND status = ?"
                args.append(status)
            if channel:
                sql += " AND channel = ?"
                args.append(channel)
            sql += " ORDER BY id DESC LIMIT ?"
            args.append(limit - len(out))
            async with conn.execute(sql, args) as cur:
                for id_, ch, key, at, st, attempts, err, subject, incs in await cur.fetchall():
                    out.append(
                        {
                            "id": f"l{id_}",
                            "channel": ch,
                            "key": key,
                            "status": st,
                            "at": at,
                            "attempts": attempts,
                            "last_error": err,
                            "subject": subject,
                            "incident_ids": json.loads(incs),
                        }
                    )
        return out

    def status(self) -> list[dict[str, Any]]:
        now = self.clock()
        return [lane.snapshot(now) for lane in self.lanes.values()]

    # --------------------------------------------------------------------------- silences

    async def _load_silences(self) -> None:
        conn = self.store.reader
        assert conn is not None
        async with conn.execute(
            "SELECT id, created, expires, created_by, comment, matchers FROM notify_silences"
        ) as cur:
            rows = await cur.fetchall()
        self.silences = {
            str(r[0]): Silence(
                str(r[0]), float(r[1]), float(r[2]), str(r[3]), str(r[4]), json.loads(r[5])
            )
            for r in rows
        }

    async def add_silence(
        self, matchers: dict[str, Any], duration: float, created_by: str, comment: str
    ) -> Silence:
        now = self.clock()
        s = Silence(str(uuid.uuid4()), now, now + duration, created_by, comment[:500], matchers)
        async with self.store.transaction(durable=True) as conn:
            await conn.execute(
                "INSERT INTO notify_silences (id, created, expires, created_by, comment,"
                " matchers) VALUES (?,?,?,?,?,?)",
                (s.id, s.created, s.expires, s.created_by, s.comment, json.dumps(matchers)),
            )
        self.silences[s.id] = s
        return s

    async def delete_silence(self, silence_id: str) -> bool:
        async with self.store.transaction(durable=True) as conn:
            cur = await conn.execute("DELETE FROM notify_silences WHERE id = ?", (silence_id,))
        self.silences.pop(silence_id, None)
        return cur.rowcount > 0

    # ----------------------------------------------------------------------- acknowledging

    async def acknowledge(self, incident_id: str, via: str) -> dict[str, Any] | None:
        """Acknowledge through the same incident transition the API uses (its hooks stop the
        escalation). ``None`` if correlation is not running or the incident is unknown;
        :class:`~appliance.incidents.manager.TransitionError` if it is not open."""
        from appliance.correlate.component import correlation_of

        comp = correlation_of(self.app)
        if comp is None:
            return None
        doc = await comp.incidents.transition(incident_id, "ack", note=f"acknowledged via {via}")
        if doc is not None:
            self.m.acks.inc(via)
        return doc

    def verify_link(self, token: str) -> str:
        try:
            return acklink.verify_token(self.key, token, self.clock())
        except acklink.AckRefused as exc:
            self.m.ack_refused.inc(exc.reason)
            _rl.warning(f"ack:{exc.reason}", "notify: acknowledgement link refused: %s", exc.reason)
            raise

    def _reply_handler(self, ch: NotifyChannel) -> Callable[[str, str], Awaitable[None]]:
        allowed = {str(n) for n in getattr(ch, "to", []) or []}

        async def on_reply(sender: str, text: str) -> None:
            await self.sms_reply(sender, text, allowed)

        return on_reply

    async def sms_reply(self, sender: str, text: str, allowed: set[str]) -> bool:
        """An SMS reply from a recipient of the channel: acknowledge the incident its code
        names. Replies from other numbers, or without a known code, are refused (counted)."""
        if allowed and sender not in allowed:
            self.m.ack_refused.inc("sender")
            _rl.warning(
                "ack:sender", "notify: SMS reply from unknown number %s", printable(sender, 32)
            )
            return False
        code = acklink.find_code(text)
        if code is None:
            self.m.ack_refused.inc("malformed")
            return False
        conn = self.store.reader
        assert conn is not None
        async with conn.execute(
            "SELECT incident_id FROM notify_ack_codes WHERE code = ? AND expires > ?",
            (code, self.clock()),
        ) as cur:
            row = await cur.fetchone()
        if row is None:
            self.m.ack_refused.inc("unknown_code")
            return False
        from appliance.incidents.manager import TransitionError

        try:
            return await self.acknowledge(str(row[0]), "sms") is not None
        except TransitionError:
            return False


def notify_of(app: Appliance) -> NotifyEngine | None:
    return app.component(NotifyEngine)


def build_notify(
    app: Appliance, *, channel_factory: ChannelFactory = default_channel_factory
) -> NotifyEngine:
    # Always built, even without [notify]: a reload that adds channels and routes then takes
    # effect without a restart, and the API answers with empty lists rather than 503.
    return NotifyEngine(app, channel_factory=channel_factory)
