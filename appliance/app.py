"""The appliance: builds store, pipeline, sources and API from a config; starts, reloads, stops.

Start order is store → pipeline → sources → API, so nothing is accepted before it can be stored
and the API never reports on half a system. Stop is the reverse with a drain in the middle:
sources stop accepting, the pipeline empties its queue into SQLite, then SQLite is closed.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from appliance import dataplane
from appliance.api.server import ApiServer, load_or_create_token
from appliance.composition import (
    ComponentBuilder,
    RouteSetup,
    api_route_setups,
    component_builders,
)
from appliance.config import AppConfig
from appliance.datalock import DataDirLock
from appliance.flows import FlowPath
from appliance.incidents import IncidentTxnHook
from appliance.logutil import RateLimitedLog
from appliance.metrics import Registry
from appliance.pipeline.bus import Pipeline
from appliance.protocols.syslog.decode import header_templates as syslog_header_templates
from appliance.protocols.syslog.vendors import Decoders, build_registry
from appliance.sources.base import Source, SourceContext
from appliance.sources.netflow_udp import NetflowUdpSource
from appliance.sources.snmp_trap import SnmpTrapSource
from appliance.sources.syslog_tcp import SyslogStreamSource
from appliance.sources.syslog_udp import SyslogUdpSource
from appliance.sources.udp import host_rcvbuf_errors
from appliance.store import Store
from appliance.store.segments import corrupt_segment_reads
from appliance.store.space import SHED_MIN_FS_SHARE

log = logging.getLogger(__name__)
_rl = RateLimitedLog(log)

STORAGE_WATCH_INTERVAL = 2.0  # seconds between checks that the database file is still ours


_C = TypeVar("_C")


class ReloadRefused(Exception):
    """A valid new config that a reload will not apply (the old one stays in force)."""


def build_sources(
    config: AppConfig, ctx: SourceContext, flows: FlowPath | None = None
) -> list[Source]:
    sources: list[Source] = []
    for cfg in config.sources.syslog:
        if cfg.protocol == "udp":
            sources.append(SyslogUdpSource(cfg, ctx))
        else:
            sources.append(SyslogStreamSource(cfg, ctx))
    for snmp in config.sources.snmp:
        sources.append(SnmpTrapSource(snmp, ctx))
    if flows is not None:
        for nf in config.sources.netflow:
            sources.append(NetflowUdpSource(nf, ctx, flows))
    return sources


def _same(a: Source, b: Source) -> bool:
    """Two sources are the same listener when their configs (and, for syslog, the sender
    profiles they apply) are equal."""
    return (
        type(a) is type(b)
        and getattr(a, "cfg", None) == getattr(b, "cfg", None)
        and getattr(a, "senders", None) == getattr(b, "senders", None)
    )


class Appliance:
    def __init__(
        self,
        config: AppConfig,
        *,
        clock: Callable[[], float] = time.time,
        builders: list[ComponentBuilder] | None = None,
    ) -> None:
        self.config = config
        self.clock = clock
        # What this appliance is made of (appliance.composition), its own lists: components
        # add their incident hooks and tests their routes here, never to process-wide ones.
        self.builders = component_builders() if builders is None else builders
        self.incident_hooks: list[IncidentTxnHook] = []
        self.route_setups: list[RouteSetup] = api_route_setups()
        self.metrics = Registry()
        self.data_lock = DataDirLock(config.data_dir)
        data_dir = config.data_dir
        self.store = Store(
            data_dir / "appliance.db",
            raw_max_bytes=config.storage.raw_max_bytes,
            reserve_bytes=config.storage.reserve_bytes,
            metrics=self.metrics,
            clock=clock,
        )
        p = config.pipeline
        self.pipeline = Pipeline(
            self.store,
            self.metrics,
            queue_size=p.queue_size,
            queue_bytes=p.queue_bytes,
            batch_size=p.batch_size,
            flush_interval=p.flush_interval,
            clock=clock,
        )
        self.pipeline.on_store_full = self._make_room
        self.pipeline.before_insert = self._keep_headroom
        # Flows bypass the events table (see appliance.flows.path) but run the same stages.
        self.flows = FlowPath(self.pipeline, self.metrics, config.flows, config.storage, clock)
        self.sources: list[Source] = []
        self.components: list[Any] = []
        self.api: ApiServer | None = None
        self.running = False
        self._started = time.monotonic()
        self._tasks: list[asyncio.Task[None]] = []
        self.config_reloads = self.metrics.counter(
            "config_reloads_total",
            "Config reloads (SIGHUP) by result: applied, invalid, refused, failed.",
            ["result"],
        )
        self.decoder_files = self.metrics.gauge(
            "decoder_files",
            "Vendor decoder files in force (loaded: built-in and site) and site files that"
            " failed to load (failed; each logged with its file and key).",
            ["state"],
        )
        self.decoders = self._load_decoders(config)
        self._decoder_digests = [(f.path, f.digest) for f in self.decoders.files]
        self.retention_deleted = self.metrics.counter(
            "retention_deleted_total", "Events deleted by retention (age or size).", ["reason"]
        )
        self.metrics.gauge(
            "database_size_bytes",
            "SQLite database + WAL size on disk.",
            callback=lambda: float(self.store.size_bytes()),
        )
        self.metrics.gauge(
            "storage_disk_full",
            "1 while data_dir's filesystem is full (writes fail; new events are shed).",
            callback=lambda: float("disk_full" in self.degraded()),
        )
        self.metrics.gauge("uptime_seconds", "Seconds since start.", callback=self.uptime)
        self.metrics.counter(
            "native_panics_total",
            "Panics the native data plane caught at its boundary (that message went to the"
            " Python reference or counted as a decode error; that window or group went on in"
            " Python): each is a bug to report.",
            callback=dataplane.native_panics,
        )
        self.metrics.counter(
            "storage_corrupt_segment_reads_total",
            "Reads (searches, pages, reports, retention) that skipped an event segment whose"
            " stored body was corrupt (neither JSON lines nor a zstd frame that unpacks within"
            " its bound); the log names the segment.",
            callback=corrupt_segment_reads,
        )
        self.metrics.counter(
            "syslog_fields_records_past_bound_total",
            "Syslog messages whose fields were made a dict up front because they passed a"
            " fields record's bound (more than 24 header keys or 48 items): more CPU a"
            " message, the same event.",
            callback=dataplane.records_past_bound,
        )
        self.metrics.gauge(
            "syslog_header_templates",
            "Syslog header templates held (one per header shape and priority seen; bounded).",
            callback=lambda: float(syslog_header_templates()[0]),
        )
        self.metrics.counter(
            "syslog_header_untemplated_total",
            "Syslog messages whose header fields were made whole because the templates were"
            " at their bound (more CPU a message, the same event).",
            callback=lambda: float(syslog_header_templates()[1]),
        )
        self.metrics.gauge(
            "udp_rcvbuf_errors",
            "Host-wide UDP RcvbufErrors (/proc/net/snmp).",
            ["proto"],
            callback=lambda: {(k,): float(v) for k, v in host_rcvbuf_errors().items()},
        )
        self.metrics.gauge(
            "udp_socket_drops",
            "Datagrams the kernel dropped on a source socket.",
            ["source"],
            callback=self._socket_drops,
        )
        from appliance import __version__

        self.metrics.gauge("build_info", "Version of the running appliance.", ["version"]).set(
            1, __version__
        )

    def component(self, kind: type[_C]) -> _C | None:
        """The running component of this type, or ``None`` (a handful: a scan costs nothing)."""
        for c in self.components:
            if isinstance(c, kind):
                return c
        return None

    def uptime(self) -> float:
        return time.monotonic() - self._started

    def not_listening(self) -> list[str]:
        """Configured sources whose socket is not open (stopped by a failed reload, or their
        server gone): events are being refused at the network."""
        listening = {src.name for src in self.sources if src.listening}
        return [label for label in self.config.source_labels if label not in listening]

    def degraded(self) -> list[str]:
        """Why the appliance runs but does not do all its job (``/healthz`` lists them)."""
        reasons = []
        if self.store.disk_full or self.pipeline.full:
            reasons.append("disk_full")
        if self.not_listening():
            reasons.append("not_listening")
        return reasons

    def _socket_drops(self) -> dict[tuple[str, ...], float]:
        out: dict[tuple[str, ...], float] = {}
        for src in self.sources:
            drops = getattr(src, "kernel_drops", None)
            value = drops() if drops is not None else None
            if value is not None:
                out[(src.name,)] = float(value)
        return out

    def source_context(self) -> SourceContext:
        return SourceContext(
            self.config, self.pipeline, self.metrics, self.clock, self.decoders.registry
        )

    def _load_decoders(self, config: AppConfig) -> Decoders:
        """Built-in decoders plus the config's site files; a bad file is logged and skipped."""
        decoders = build_registry(config.decoder_paths)
        for error in decoders.errors:
            log.error("decoder file skipped: %s", error)
        self.decoder_files.set(float(len(decoders.files)), "loaded")
        self.decoder_files.set(float(len(decoders.errors)), "failed")
        return decoders

    async def _reload_decoders(self, new: AppConfig) -> bool:
        """Re-read the decoder files (they change without the config changing) and switch the
        running listeners to them; ``True`` when decode worker processes must restart for it."""
        decoders = self._load_decoders(new)
        before = {d.name: d for d in self.decoders.registry.by_name.values()}
        self.decoders = decoders
        if [(f.path, f.digest) for f in decoders.files] == self._decoder_digests:
            return False
        self._decoder_digests = [(f.path, f.digest) for f in decoders.files]
        log.info(
            "decoders reloaded: %d files (%s)",
            len(decoders.files),
            ", ".join(sorted(set(decoders.registry.by_name) - set(before))) or "no new names",
        )
        restart = False
        for src in self.sources:
            intake = getattr(src, "intake", None)
            if intake is not None:
                intake.use_decoders(decoders.registry)
            if getattr(getattr(src, "cfg", None), "workers", 0):
                restart = True
        return restart

    # --------------------------------------------------------------------------- lifecycle

    async def start(self) -> None:
        cfg = self.config
        cfg.data_dir.mkdir(parents=True, exist_ok=True)
        self.data_lock.acquire()  # one appliance per data_dir; `db restore` checks it
        try:
            await self.store.open()
        except BaseException:
            self.data_lock.release()
            raise
        try:
            self.pipeline.start()
            await self.flows.start(tune_gc=False)  # the process-wide policy is runtime's
            for builder in self.builders:
                component = builder(self)
                if component is not None:
                    self.components.append(component)
            for component in self.components:
                await component.start()
            self.sources = await self._start_sources(
                build_sources(cfg, self.source_context(), self.flows)
            )
            token = load_or_create_token(cfg.api, cfg.data_dir, lambda p: cfg.path(p))
            self.api = ApiServer(self, token)
            await self.api.start(cfg.api.listen)
        except BaseException:
            await self.stop()
            raise
        self._tasks.append(asyncio.create_task(self._retention_loop(), name="retention"))
        self._tasks.append(asyncio.create_task(self._storage_watch(), name="storage-watch"))
        self.running = True
        log.info(
            "appliance %s started: %d source(s), data in %s",
            cfg.appliance.sensor_id,
            len(self.sources),
            cfg.data_dir,
        )

    def reload_tokens(self) -> None:
        """SIGHUP: re-read the API token file now (it is also re-read when it changes)."""
        if self.api is not None:
            try:
                self.api.tokens.reload("SIGHUP", force=True)
            except Exception:
                log.exception("api tokens: reload failed")

    async def _start_sources(self, sources: list[Source]) -> list[Source]:
        started: list[Source] = []
        try:
            for src in sources:
                await src.start()
                started.append(src)
        except BaseException:
            for src in started:
                await src.stop()
            raise
        return started

    async def stop(self) -> None:
        """Stop accepting, drain the queue into SQLite, close; bounded by shutdown_timeout."""
        self.running = False
        deadline = time.monotonic() + self.config.appliance.shutdown_timeout
        for src in self.sources:
            with contextlib.suppress(Exception):
                await src.stop()
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(BaseException):
                await task
        self._tasks.clear()
        drained = await self.pipeline.stop(max(0.5, deadline - time.monotonic()))
        if not drained:
            log.error("shutdown: queue not drained in time; the rest was counted as dropped")
        with contextlib.suppress(Exception):
            await self.flows.stop(max(0.5, deadline - time.monotonic()))
        for component in reversed(self.components):
            with contextlib.suppress(Exception):
                await asyncio.wait_for(component.stop(), max(0.5, deadline - time.monotonic()))
        if self.api is not None:
            await self.api.stop()
        await self.store.close()
        self.data_lock.release()
        p = self.pipeline
        log.info(
            "appliance stopped: received=%d stored=%d dropped=%d",
            p.received.total(),
            p.stored.total(),
            p.dropped.total(),
        )

    async def reload(self, new: AppConfig) -> None:
        """Apply a new (already validated) config: restart the sources if they changed.

        If the new sources cannot start (a port in use), the old ones are restarted and the
        error is raised, so a bad reload never leaves the appliance deaf. A new config that
        would close every listener is refused outright (:class:`ReloadRefused`), even with
        ``allow_empty``: a file caught half-written looks exactly like that, and going deaf
        on purpose is rare enough to ask for a restart.
        """
        old = self.config
        if old.source_labels and not new.source_labels:
            self.config_reloads.inc("refused")
            raise ReloadRefused(
                "the new config has no source and would close every listener"
                f" ({', '.join(old.source_labels)}); restart to run without sources"
            )
        try:
            await self._apply(old, new)
        except Exception:
            self.config_reloads.inc("failed")
            raise
        self.config_reloads.inc("applied")

    async def _apply(self, old: AppConfig, new: AppConfig) -> None:
        changed = [
            f.name
            for f in dataclasses.fields(AppConfig)
            if getattr(old, f.name) != getattr(new, f.name)
        ]
        for name in ("api", "pipeline"):
            if name in changed:
                log.warning("reload: [%s] changes take effect at the next restart", name)
        self.config = dataclasses.replace(new, api=old.api, pipeline=old.pipeline)
        workers_need_restart = await self._reload_decoders(self.config)
        if old.sources != new.sources or old.base_dir != new.base_dir or workers_need_restart:
            await self._reload_sources(old)
        for component in self.components:
            hook: Callable[[AppConfig], Awaitable[None]] | None = getattr(component, "reload", None)
            if hook is not None:
                await hook(self.config)
        log.info("configuration reloaded (%s)", ", ".join(changed) or "no changes")

    async def _reload_sources(self, old: AppConfig) -> None:
        """Keep listeners whose config did not change; stop removed ones; start new ones.

        If a new listener cannot start, everything goes back to the old set, so a bad reload
        never leaves the appliance deaf.
        """
        wanted = build_sources(self.config, self.source_context(), self.flows)
        same_dir = old.base_dir == self.config.base_dir
        keep = [s for s in self.sources if same_dir and any(_same(s, w) for w in wanted)]
        gone = [s for s in self.sources if s not in keep]
        fresh = [w for w in wanted if not any(_same(k, w) for k in keep)]
        for src in gone:
            await src.stop()
        await asyncio.sleep(0.05)  # let the loop close the old sockets before rebinding ports
        try:
            started = await self._start_sources(fresh)
        except BaseException:
            self.config = old
            self.sources = keep + await self._start_sources(
                [
                    s
                    for s in build_sources(old, self.source_context(), self.flows)
                    if not any(_same(k, s) for k in keep)
                ]
            )
            raise
        self.sources = keep + started

    async def _make_room(self) -> bool:
        """The disk is full: give back the WAL's space, then delete the oldest events if the
        database is what fills the disk; ``True`` if events were deleted.

        The ballast goes first, because deleting rows and checkpointing the WAL need a little
        free space themselves; it is taken back once there is room for it twice over. When
        something else fills the filesystem (the database holds less than
        ``SHED_MIN_FS_SHARE`` of it), deleting history would not make lasting room: the
        appliance keeps its events and waits for space, shedding new ones (the pipeline).
        """
        store = self.store
        store.release_reserve()
        await store.checkpoint(truncate=True)
        share = store.fs_share()
        if share < SHED_MIN_FS_SHARE:
            _rl.warning(
                "disk-full-foreign",
                "disk full, but the database is only %.0f%% of the filesystem: keeping its"
                " events and waiting for space",
                100 * share,
            )
            return False
        deleted = await store.make_room()
        store.ensure_reserve()
        if deleted:
            self.retention_deleted.inc("disk_full", n=deleted)
        _rl.warning("disk-full", "disk full: deleted the %d oldest events to make room", deleted)
        return deleted > 0

    async def _keep_headroom(self, batch_bytes: int) -> bool:
        """Before a batch: if the filesystem could not take it twice (WAL frames, then the
        checkpoint's pages), a WAL's worth of checkpoint and the ballast, delete the oldest
        events for it now.

        On the cliff itself this is much harder: a checkpoint cannot copy the WAL into a
        database file that has no room to grow, so the WAL keeps what little space there was.
        A ``statvfs`` per batch keeps the appliance off it when its own data fills the disk.
        ``True`` when space is short: the pipeline then stores the batch in small pieces, so
        the WAL never holds more than the ballast can let a checkpoint copy.
        """
        store = self.store
        need = 2 * batch_bytes + store.wal_checkpoint_bytes() + store.effective_reserve()
        if store.free_bytes() >= need:
            return False
        if store.fs_share() < SHED_MIN_FS_SHARE:
            return True
        deleted = await store.make_room(goal_bytes=2 * batch_bytes, full=False)
        if deleted:
            self.retention_deleted.inc("disk_full", n=deleted)
            _rl.warning(
                "disk-low", "disk almost full: deleted the %d oldest events to make room", deleted
            )
        return store.free_bytes() < need

    async def _storage_watch(self) -> None:
        """Every few seconds: is the database still the file its path names (an operator's
        ``rm``, a restore copied over it)? If not, reopen it. And retake the ballast once a
        disk-full episode left room for it."""
        while True:
            await asyncio.sleep(STORAGE_WATCH_INTERVAL)
            try:
                reason = self.store.files_changed()
                if reason is not None:
                    # Shielded: a stop arriving meanwhile waits on the store's lock for the
                    # new connections, and closes them, instead of leaking half-open ones.
                    await asyncio.shield(self.store.reopen(reason))
                if not self.degraded():
                    self.store.ensure_reserve()
            except Exception:
                _rl.log(logging.ERROR, "storage-watch", "storage check failed", exc_info=True)

    async def _retention_loop(self) -> None:
        while True:
            await asyncio.sleep(self.config.storage.retention_interval)
            st = self.config.storage
            try:
                self.store.ensure_reserve()  # after a disk-full episode, once there is room
                by_age, by_size = await self.store.enforce_retention(
                    max_age=st.retention_days * 86400, max_bytes=st.max_db_bytes, now=self.clock()
                )
                if by_age:
                    self.retention_deleted.inc("age", n=by_age)
                if by_size:
                    self.retention_deleted.inc("size", n=by_size)
                if by_age or by_size:
                    log.info("retention deleted %d events by age, %d by size", by_age, by_size)
            except Exception:
                log.exception("retention run failed")
