"""The correlation component: rules + engine + incidents wired into a running appliance.

It is a pipeline ``after_store`` stage (events already have ids, so incidents can cite them),
plus one timer task that calls the engine when its next deadline passes (silent sources) and
snapshots the engine's windows to the ``state`` table every ``rules.snapshot_interval``
seconds and at stop, so a restart continues the windows where they were.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from typing import TYPE_CHECKING, Any

from appliance.config import AppConfig, RulesSection
from appliance.correlate.engine import Alert, Engine, Limits
from appliance.correlate.rules import RuleSet, load_rules
from appliance.event import Event
from appliance.incidents.manager import EvidenceLimits, IncidentManager
from appliance.logutil import RateLimitedLog
from appliance.store.state import json_codec

if TYPE_CHECKING:
    from appliance.app import Appliance

log = logging.getLogger(__name__)
_rl = RateLimitedLog(log)
STATE_COMPONENT = "correlate"
STATE_KEY = "engine"
# The windows hold a few values JSON has no type for: they are kept as their text.
SNAPSHOT_CODEC = json_codec(default=str)
PURGE_INTERVAL = 3600.0  # seconds between deletions of old resolved incidents
YIELD_EVERY = 256  # events evaluated between yields to the event loop
MAX_PENDING_ALERTS = 10_000  # alerts held for retry while incidents cannot be written
CLOCK_STEP_TOLERANCE = 30.0  # seconds the wall clock may drift from monotonic between reads


def limits_of(cfg: RulesSection) -> Limits:
    return Limits(
        allowed_lateness=cfg.allowed_lateness,
        max_groups=cfg.max_groups_per_rule,
        max_window_events=cfg.max_window_events,
        evidence_events=min(cfg.evidence_events, 1000),
        evidence_samples=min(cfg.evidence_samples, 100),
    )


def load_configured_rules(config: AppConfig) -> RuleSet:
    r = config.rules
    return load_rules(
        [config.path(p) for p in r.paths],
        builtin=r.builtin,
        max_regex_length=r.max_regex_length,
    )


class CorrelationComponent:
    name = "correlate"

    def __init__(self, app: Appliance) -> None:
        self.app = app
        self.config = app.config
        self.ruleset = RuleSet()
        self.engine = Engine(self.ruleset, limits_of(self.config.rules))
        # Shared by every engine this component builds (start, reload): see Engine.disabled.
        self.disabled_rules: set[str] = set()
        r = self.config.rules
        self.incidents = IncidentManager(
            app.store,
            self.config.appliance.sensor_id,
            clock=app.clock,
            evidence=EvidenceLimits(r.evidence_events, r.evidence_samples),
            hooks=app.incident_hooks,  # the forwarder's, notify's and respond's, by then
        )
        self._task: asyncio.Task[None] | None = None
        self._pending: list[Alert] = []
        self._stopping = False
        self._wake = asyncio.Event()
        self._last_snapshot = 0.0
        self.snapshot_slot = app.store.state(STATE_COMPONENT, STATE_KEY, SNAPSHOT_CODEC)
        self._last_purge = 0.0
        self._clock_seen: tuple[float, float] | None = None  # (clock, monotonic) last read
        m = app.metrics
        self.clock_steps = m.counter(
            "correlation_clock_steps_total",
            f"Wall-clock steps of more than {CLOCK_STEP_TOLERANCE:g} s (NTP, an operator) that"
            " silent-source timers were moved by, by direction.",
            ["direction"],
        )
        self.alerts = m.counter(
            "correlation_alerts_total",
            "Rule firings, by rule and whether suppressed.",
            ["rule", "suppressed"],
        )
        self.errors = m.counter(
            "correlation_errors_total", "Failures in correlation, by reason.", ["reason"]
        )
        self.incident_changes = m.counter(
            "incident_changes_total", "Incident documents committed, by kind.", ["kind"]
        )
        m.gauge("rules_loaded", "Rules loaded, by kind.", ["kind"], callback=self._rule_counts)
        m.gauge(
            "rules_failed",
            "Rules that failed to load.",
            callback=lambda: float(len(self.ruleset.failures)),
        )
        m.gauge(
            "correlation_groups",
            "Groups tracked by correlation windows.",
            callback=lambda: float(self.engine.tracked_groups()),
        )
        m.gauge(
            "correlation_groups_evicted",
            "Groups evicted at rules.max_groups_per_rule since start (counter).",
            callback=lambda: float(self.engine.evicted()),
        )
        m.gauge(
            "correlation_events_not_correlated",
            "Matching events a correlation did not count (counter since start), by reason: "
            "late = older than the watermark, ungrouped = none of the group-by fields.",
            ["reason"],
            callback=self._not_correlated,
        )
        m.gauge(
            "correlation_limit",
            "The [rules] limits in force, by config key.",
            ["name"],
            callback=self._limits,
        )
        m.gauge(
            "rules_native_fallbacks",
            "Matching the native rule matcher left to the Python predicates, by reason:"
            " undecided = (event, rule) pairs and batch_failed = slices since the ruleset"
            " loaded, rule_unsupported = rules it does not evaluate.",
            ["reason"],
            callback=self._native_fallbacks,
        )
        m.gauge(
            "correlation_events_native",
            "Matching events the native data plane observed whole (matches, watermark and"
            " windows, no Python per event; every flow with the built-in rules), since the"
            " ruleset loaded.",
            callback=lambda: float(self.engine.natively_observed),
        )
        m.gauge(
            "incident_alerts_pending",
            "Alerts held for retry while incidents cannot be written.",
            callback=lambda: float(len(self._pending)),
        )

    def _native_fallbacks(self) -> dict[tuple[str, ...], float]:
        native = self.engine._native
        if native is None:
            return {}
        return {
            ("undecided",): float(native.undecided),
            ("batch_failed",): float(native.failures),
            ("rule_unsupported",): float(len(native.python_only)),
        }

    def _not_correlated(self) -> dict[tuple[str, ...], float]:
        ungrouped = sum(rt.ungrouped for rt in self.engine.correlations.values())
        return {("late",): float(self.engine.late_events), ("ungrouped",): float(ungrouped)}

    def _limits(self) -> dict[tuple[str, ...], float]:
        r = self.config.rules
        return {
            ("allowed_lateness",): r.allowed_lateness,
            ("max_groups_per_rule",): float(r.max_groups_per_rule),
            ("max_window_events",): float(r.max_window_events),
            ("max_regex_length",): float(r.max_regex_length),
            ("snapshot_interval",): r.snapshot_interval,
            ("evidence_events",): float(r.evidence_events),
            ("evidence_samples",): float(r.evidence_samples),
            ("max_pending_alerts",): float(MAX_PENDING_ALERTS),
            ("incident_retention_days",): r.incident_retention_days,
        }

    def _rule_counts(self) -> dict[tuple[str, ...], float]:
        return {
            ("detection",): float(len(self.ruleset.detections)),
            ("correlation",): float(len(self.ruleset.correlations)),
        }

    # ---------------------------------------------------------------------------- lifecycle

    async def start(self) -> None:
        self.ruleset = await asyncio.to_thread(load_configured_rules, self.config)
        for f in self.ruleset.failures:
            log.warning("rule not loaded: %s %s: %s", f.path, f.title, f.reason)
        self.engine = Engine(self.ruleset, limits_of(self.config.rules))
        self.disabled_rules |= await load_disabled_rules(self.app.store)
        self.engine.disabled = self.disabled_rules
        await self._restore()
        await self.incidents.load()
        self.app.pipeline.after_store.append(self)
        self._last_snapshot = time.monotonic()
        self._last_purge = 0.0
        self._stopping = False
        self._task = asyncio.create_task(self._timer(), name="correlate-timer")
        log.info(
            "correlation: %d detection and %d correlation rules loaded, %d failed",
            len(self.ruleset.detections),
            len(self.ruleset.correlations),
            len(self.ruleset.failures),
        )

    async def stop(self) -> None:
        if self in self.app.pipeline.after_store:
            self.app.pipeline.after_store.remove(self)
        if self._task is not None:
            # Let the timer finish what it is doing (a snapshot or an incident write) rather
            # than cancel it halfway through a database call.
            self._stopping = True
            self._wake.set()
            try:
                await asyncio.wait_for(asyncio.shield(self._task), 10.0)
            except TimeoutError:
                self._task.cancel()
                with contextlib.suppress(BaseException):
                    await self._task
            self._task = None
        await self.save_snapshot()

    async def reload(self, config: AppConfig) -> None:
        if config.rules == self.config.rules and config.base_dir == self.config.base_dir:
            self.config = config
            return
        ruleset = await asyncio.to_thread(load_configured_rules, config)
        engine = Engine(ruleset, limits_of(config.rules))
        engine.restore(json.loads(json.dumps(self.engine.snapshot())))
        self._count_dropped(engine)
        engine.carry_stats(self.engine)
        engine.disabled = self.disabled_rules
        self.config, self.ruleset, self.engine = config, ruleset, engine
        self._wake.set()
        log.info(
            "correlation rules reloaded: %d loaded, %d failed",
            len(ruleset.detections) + len(ruleset.correlations),
            len(ruleset.failures),
        )

    # ------------------------------------------------------------------------------- stage

    def _follow_clock(self, now: float) -> None:
        """Compare the wall clock's progress with the monotonic clock's since the last read;
        a difference past the tolerance is a step, and the silent-source timers move with
        it (event-time windows need nothing: they follow the events' own times)."""
        mono = time.monotonic()
        seen = self._clock_seen
        self._clock_seen = (now, mono)
        if seen is None:
            return
        step = (now - seen[0]) - (mono - seen[1])
        if abs(step) <= CLOCK_STEP_TOLERANCE:
            return
        self.engine.shift_clock(step)
        self.clock_steps.inc("forward" if step > 0 else "back")
        _rl.warning(
            "clock-step", "wall clock stepped by %+.0f s: silent-source timers moved with it", step
        )

    async def process(self, events: list[Event], now: float) -> None:
        """Correlate a stored batch, yielding to the loop between slices so the listeners keep
        reading their sockets while a large batch is evaluated."""
        self._follow_clock(now)
        engine = self.engine
        alerts: list[Alert] = []
        for start in range(0, len(events), YIELD_EVERY):
            if start:
                await asyncio.sleep(0)
            # One native call a slice where it can (matching and native windows).
            alerts.extend(
                engine.observe_batch(events[start : start + YIELD_EVERY], now, self._failed)
            )
        if alerts:
            await self.commit(alerts)
        if engine.next_deadline() is not None:
            self._wake.set()

    def _failed(self, ev: Event) -> None:
        self.errors.inc("rule_exception")
        _rl.error("observe", "correlation failed on event %s", ev.id, exc_info=True)

    async def commit(self, alerts: list[Alert]) -> list[dict[str, Any]]:
        """Apply alerts to incidents; on a write failure keep them (bounded) to retry."""
        for a in alerts:
            self.alerts.inc(a.rule.id, "true" if a.suppressed else "false")
        batch = self._pending + alerts
        self._pending = []
        if not batch:
            return []
        try:
            docs = await self.incidents.apply(batch)
        except Exception:
            self.errors.inc("incident_write")
            keep = batch[-MAX_PENDING_ALERTS:]
            if len(batch) > len(keep):
                self.errors.inc("alerts_dropped", n=len(batch) - len(keep))
            self._pending = keep
            _rl.error(
                "incident",
                "incident write failed; %d alert(s) kept for retry",
                len(keep),
                exc_info=True,
            )
            return []
        for d in docs:
            self.incident_changes.inc("created" if d["revision"] == 1 else "updated")
        return docs

    # ------------------------------------------------------------------------------- timer

    async def _timer(self) -> None:
        while not self._stopping:
            now = self.app.clock()
            deadline = self.engine.next_deadline()
            wait = self.config.rules.snapshot_interval - (time.monotonic() - self._last_snapshot)
            if deadline is not None:
                wait = min(wait, deadline - now)
            if self._pending:
                wait = min(wait, 1.0)  # retry held alerts soon
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), max(0.01, min(wait, 5.0)))
            if self._stopping:
                return
            now = self.app.clock()
            try:
                self._follow_clock(now)
                alerts = self.engine.on_timer(now)
                if alerts or self._pending:
                    await self.commit(alerts)
                if time.monotonic() - self._last_snapshot >= self.config.rules.snapshot_interval:
                    await self.save_snapshot()
                if time.monotonic() - self._last_purge >= PURGE_INTERVAL:
                    self._last_purge = time.monotonic()
                    n = await self.incidents.purge(
                        self.config.rules.incident_retention_days * 86400
                    )
                    if n:
                        self.incident_changes.inc("purged", n=n)
            except Exception:
                self.errors.inc("timer")
                _rl.error("timer", "correlation timer failed", exc_info=True)

    # --------------------------------------------------------------------------- snapshots

    async def save_snapshot(self) -> None:
        self._last_snapshot = time.monotonic()
        if self.app.store.writer is None:
            return
        try:
            await self.snapshot_slot.save(self.engine.snapshot())
        except Exception:
            self.errors.inc("snapshot")
            _rl.error("snapshot", "correlation snapshot failed", exc_info=True)

    async def _restore(self) -> None:
        try:
            snapshot = await self.snapshot_slot.load()
            if snapshot is not None:
                self.engine.restore(snapshot, now=self.app.clock())
        except (ValueError, TypeError, KeyError) as exc:
            self.errors.inc("snapshot_restore")
            log.warning("correlation snapshot not restored (%s); starting with empty windows", exc)
            return
        self._count_dropped(self.engine)

    def _count_dropped(self, engine: Engine) -> None:
        """Windows saved under a rule whose type or condition has changed start empty."""
        dropped = sum(rt.dropped_on_restore for rt in engine.correlations.values())
        if dropped:
            self.errors.inc("snapshot_window_dropped", n=dropped)
            log.info("correlation: %d saved windows of changed rules start empty", dropped)


async def load_disabled_rules(store: Any) -> set[str]:
    """The rule ids an operator disabled (``rule_state``, migration 0013)."""
    conn = store.reader
    if conn is None:
        return set()
    async with conn.execute("SELECT rule_id FROM rule_state WHERE enabled = 0") as cur:
        return {str(r[0]) for r in await cur.fetchall()}


def build_correlation(app: Appliance) -> CorrelationComponent:
    return CorrelationComponent(app)


def correlation_of(app: Appliance) -> CorrelationComponent | None:
    return app.component(CorrelationComponent)
