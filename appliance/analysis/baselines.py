"""Statistics and baselines: event rates with hour-of-week seasonality, new terms, rarity.

**Rates.** Per device (``observer.ip``, else ``host.hostname``), per source (the decoder,
``event.dataset``, else the module) and per listener (the configured source that received the
event, :attr:`Event.listener`) the stage counts events per clock hour, a batch at a time (one
series update per key and batch). When an hour closes its count updates that key's slot for the
hour of the week (Monday 00-01 UTC is slot 0): an EWMA of the count and of its squared
deviation across weeks (weight ``alpha``), so Monday 09:00 is compared with earlier Mondays at
09:00, not with Sunday night. Once a slot has ``warmup_weeks`` of history, an hour whose count
passes ``max(factor * expected, expected + 3 * stddev, min_count)`` is an anomaly: the event
that crosses the line (once per key and hour) gets ``baseline.rate.*`` fields, which the
built-in ``baseline_rate_anomaly`` rule turns into an incident. Hours a key sends nothing count
as zero. Per rule, the hourly hits of the correlation engine are kept the same way (shown in
the API; no incident).

**New terms.** For each kind (user per host, country per user, port per host, device per
site) the stage remembers the values seen per key. During a learning period (from the first
value a kind sees) values are only learned; after it, a value never seen for its key stamps
``baseline.new_term.*`` on the event once (it is learned at the same time), and the built-in
``baseline_new_term`` rule raises an incident.

**Rarity.** ``event.action`` values are counted; an event whose action has been seen in less
than 1 in 1,000 events (after 10,000 events) gets ``baseline.rarity`` (0-100, higher is rarer).

State is bounded (``baseline_max_keys`` rate keys, ``new_term_max_keys`` keys per kind,
``new_term_max_values`` values per key; beyond them new keys are refused and counted, rate keys
idle for 5 weeks are evicted and counted) and snapshotted to the ``state`` table every
``baseline_snapshot_interval`` seconds and at stop. Only events that get a field are encoded
again for the store: the common case costs a few dict operations.

With the native data plane the per-event loop (rate counts, new terms, rarity) is one call per
batch (``_dataplane.BaselineBatch``) over the same Python state; the loop here is the
reference and runs a batch the native call declines, and every batch with
``APPLIANCE_NATIVE=0``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from array import array
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from appliance import dataplane
from appliance.config import AnalysisSection, AppConfig
from appliance.event import Event, iso8601
from appliance.logutil import RateLimitedLog
from appliance.store.state import JSON

if TYPE_CHECKING:
    from appliance.app import Appliance

log = logging.getLogger(__name__)
_rl = RateLimitedLog(log)

HOUR = 3600
WEEK_HOURS = 168
EPOCH_HOUR_OF_WEEK = 72  # 1970-01-01 00:00 UTC was a Thursday: 72 hours after Monday 00:00
IDLE_HOURS = 5 * WEEK_HOURS  # a rate key unseen this long is forgotten
STATE_COMPONENT = "baselines"
STATE_KEY = "state"
RECENT = 100  # new terms and anomalies kept for the API
RARE_SHARE = 0.001
RARE_AFTER = 10_000
MAX_ACTIONS = 5_000
RATE_KINDS = ("device", "source", "listener")  # the order a batch's rates are updated in


def hour_of_week(hour: int) -> int:
    """Slot 0-167 of an absolute hour number (epoch hours): Monday 00-01 UTC is 0."""
    return (hour + EPOCH_HOUR_OF_WEEK) % WEEK_HOURS


# ------------------------------------------------------------------------------------ rates


class Series:
    """One key's hourly counts: this hour's count, and per hour-of-week slot the EWMA mean,
    EWMA variance and how many weeks fed it."""

    __slots__ = ("count", "flagged", "hour", "limit", "mean", "var", "weeks")

    def __init__(self, hour: int) -> None:
        self.hour = hour
        self.count = 0
        self.flagged = False
        self.limit = math.inf  # this hour's threshold (set when the hour starts)
        self.mean = array("d", bytes(8 * WEEK_HOURS))
        self.var = array("d", bytes(8 * WEEK_HOURS))
        self.weeks = array("H", bytes(2 * WEEK_HOURS))

    def close(self, alpha: float) -> None:
        """Fold the current hour's count into its slot."""
        self._fold(hour_of_week(self.hour), float(self.count), alpha)

    def _fold(self, slot: int, x: float, alpha: float) -> None:
        if self.weeks[slot] == 0:
            self.mean[slot] = x
            self.var[slot] = 0.0
        else:
            d = x - self.mean[slot]
            self.mean[slot] += alpha * d
            self.var[slot] = (1 - alpha) * (self.var[slot] + alpha * d * d)
        if self.weeks[slot] < 65535:
            self.weeks[slot] += 1

    def advance(self, hour: int, alpha: float) -> None:
        """Move to ``hour``: close the current one, and fold zeros for the silent hours in
        between (at most a week of them: more would only repeat the same slots)."""
        if hour <= self.hour:
            return
        self.close(alpha)
        for h in range(max(self.hour + 1, hour - WEEK_HOURS), hour):
            self._fold(hour_of_week(h), 0.0, alpha)
        self.hour, self.count, self.flagged = hour, 0, False

    def expected(self, hour: int) -> tuple[float, float, int]:
        slot = hour_of_week(hour)
        return self.mean[slot], math.sqrt(max(self.var[slot], 0.0)), self.weeks[slot]

    def to_json(self) -> dict[str, Any]:
        return {
            "hour": self.hour,
            "count": self.count,
            "flagged": self.flagged,
            "mean": [round(x, 3) for x in self.mean],
            "var": [round(x, 3) for x in self.var],
            "weeks": list(self.weeks),
        }

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Series:
        s = cls(int(d["hour"]))
        s.count, s.flagged = int(d["count"]), bool(d["flagged"])
        for name in ("mean", "var", "weeks"):
            values = d[name]
            if not isinstance(values, list) or len(values) != WEEK_HOURS:
                raise ValueError(f"{name}: not {WEEK_HOURS} values")
            getattr(s, name)[:] = array("H" if name == "weeks" else "d", values)
        return s


@dataclass(slots=True)
class RateSettings:
    alpha: float = 0.3
    factor: float = 2.0
    k: float = 3.0
    min_count: int = 20
    warmup_weeks: int = 2
    max_keys: int = 10_000


class RateBaselines:
    """Every rate key's :class:`Series`, bounded."""

    def __init__(self, settings: RateSettings) -> None:
        self.s = settings
        self.series: dict[tuple[str, str], Series] = {}
        self.refused = 0
        self.evicted = 0
        self.anomalies: deque[dict[str, Any]] = deque(maxlen=RECENT)

    def observe(self, kind: str, key: str, hour: int, n: int = 1) -> dict[str, Any] | None:
        """Count ``n`` events; the anomaly (once per key and hour) when they cross."""
        got = self._count(kind, key, hour, n, False)
        return None if got is None else got[0]

    def count(self, kind: str, key: str, hour: int, n: int) -> tuple[dict[str, Any], int] | None:
        """Count ``n`` events of a batch; the anomaly and which of them crossed the line (1:
        the first), so a batch counted at once stamps the event, and reports the count, that
        counting one by one would have."""
        return self._count(kind, key, hour, n, True)

    def _count(
        self, kind: str, key: str, hour: int, n: int, at_crossing: bool
    ) -> tuple[dict[str, Any], int] | None:
        series = self.series.get((kind, key))
        if series is None:
            if len(self.series) >= self.s.max_keys:
                self.refused += 1
                return None
            series = self.series[(kind, key)] = Series(hour)
            series.limit = self.limit(series, hour)
        elif series.hour != hour:
            series.advance(hour, self.s.alpha)
            series.limit = self.limit(series, hour)
        before = series.count
        series.count += n
        if series.count <= series.limit or series.flagged:
            return None  # the common case: one comparison
        mean, sd, weeks = series.expected(hour)
        series.flagged = True
        at = min(n, max(1, math.floor(series.limit) - before + 1))
        info = {
            "kind": kind,
            "key": key,
            "observed": before + at if at_crossing else series.count,
            "expected": round(mean, 2),
            "stddev": round(sd, 2),
            "hour_of_week": hour_of_week(hour),
            "weeks": weeks,
        }
        self.anomalies.append({**info, "hour": iso8601(hour * HOUR)})
        return info, at

    def limit(self, series: Series, hour: int) -> float:
        """The count above which ``hour`` is an anomaly for ``series`` (infinite while its
        hour-of-week slot has less than ``warmup_weeks`` of history)."""
        s = self.s
        mean, sd, weeks = series.expected(hour)
        if weeks < s.warmup_weeks:
            return math.inf
        return max(s.factor * mean, mean + s.k * sd, float(s.min_count))

    def roll(self, hour: int) -> None:
        """Close every series up to ``hour`` (so silent keys see their zeros) and forget keys
        idle for five weeks."""
        for key, series in list(self.series.items()):
            if hour - series.hour > IDLE_HOURS:
                del self.series[key]
                self.evicted += 1
            elif series.hour < hour:
                series.advance(hour, self.s.alpha)
                series.limit = self.limit(series, hour)


# -------------------------------------------------------------------------------- new terms


@dataclass(frozen=True, slots=True)
class TermKind:
    name: str
    keys: tuple[str, ...]  # the first of these fields present is the key
    value: str
    when: Callable[[dict[str, Any]], bool]


def _auth_success(f: dict[str, Any]) -> bool:
    cat = f.get("event.category")
    is_auth = cat == "authentication" or (isinstance(cat, list) and "authentication" in cat)
    return is_auth and f.get("event.outcome") == "success"


def _allowed_connection(f: dict[str, Any]) -> bool:
    return f.get("event.action") in ("allow", "start") or f.get("event.module") == "netflow"


def _always(f: dict[str, Any]) -> bool:
    return True


# The predicates the native loop implements, by name (``BaselineBatch``).
_NATIVE_WHEN: dict[Callable[[dict[str, Any]], bool], str] = {
    _auth_success: "auth_success",
    _allowed_connection: "allowed_connection",
    _always: "always",
}

TERM_KINDS = (
    TermKind(
        "user_per_host", ("host.hostname", "host.name", "observer.ip"), "user.name", _auth_success
    ),
    TermKind("country_per_user", ("user.name",), "source.geo.country_iso_code", _auth_success),
    TermKind("port_per_host", ("destination.ip",), "destination.port", _allowed_connection),
    TermKind("device_per_site", ("labels.site",), "observer.ip", _always),
)


class NewTerms:
    def __init__(self, learning: float, max_keys: int, max_values: int) -> None:
        self.learning = learning
        self.max_keys = max_keys
        self.max_values = max_values
        self.started: dict[str, float] = {}
        self.seen: dict[str, dict[str, set[str]]] = {k.name: {} for k in TERM_KINDS}
        self.refused = 0
        self.recent: deque[dict[str, Any]] = deque(maxlen=RECENT)

    def observe(self, kind: TermKind, key: str, value: str, now: float) -> bool:
        """Learn ``value`` for ``key``; ``True`` when it is new after the learning period."""
        started = self.started.get(kind.name)
        if started is None:
            started = self.started[kind.name] = now
        table = self.seen[kind.name]
        values = table.get(key)
        if values is None:
            if len(table) >= self.max_keys:
                self.refused += 1
                return False
            values = table[key] = set()
        if value in values:
            return False
        if len(values) >= self.max_values:
            self.refused += 1
            return False
        values.add(value)
        if now - started < self.learning:
            return False
        self.recent.append({"kind": kind.name, "key": key, "value": value, "at": iso8601(now)})
        return True

    def learning_until(self, kind: str) -> float | None:
        started = self.started.get(kind)
        return None if started is None else started + self.learning


# ------------------------------------------------------------------------------------ stage


class BaselineStage:
    """The ``before_store`` stage: counts, learns, and stamps the rare events that stand out."""

    name = "baselines"

    def __init__(self, cfg: AnalysisSection) -> None:
        self.rates = RateBaselines(settings_of(cfg))
        self.terms = NewTerms(cfg.new_term_learning, cfg.new_term_max_keys, cfg.new_term_max_values)
        self.actions: dict[str, int] = {}
        self.total = 0
        self.actions_refused = 0
        self.rule_rates = RateBaselines(settings_of(cfg))
        self.native = native_batch()

    async def process(self, events: list[Event], now: float) -> None:
        self.observe_batch(events, int(now // HOUR), now)

    def observe(self, ev: Event, hour: int, now: float) -> bool:
        """Count and learn one event; ``True`` if it got baseline fields."""
        return self.observe_batch([ev], hour, now) > 0

    def observe_batch(self, events: list[Event], hour: int, now: float) -> int:
        """Count and learn a batch of ``hour``; events that get baseline fields are marked
        changed; how many did.

        Rates are counted per key over the batch, then each key's series is updated once
        (:meth:`RateBaselines.count` says which event crossed the line): per event that is a
        few dict operations instead of a series update per rate kind. With the native data
        plane the per-event loop is one call (``_dataplane.BaselineBatch``) over the same
        objects; a batch it declines (nothing changed) takes :meth:`_count_and_learn`, the
        reference."""
        counts: list[Iterable[tuple[str, int]]]
        got = self._native_batch(events, now) if self.native is not None else None
        if got is None:
            devices, sources, listeners, marked = self._count_and_learn(events, now)
            counts = [_by_text(c).items() for c in (devices, sources, listeners)]
        else:
            counts, marked = got
        # A device's anomaly takes precedence on an event that crosses two lines at once.
        for rate, pairs in zip(RATE_KINDS, counts, strict=True):
            for text, n in pairs:
                got_rate = self.rates.count(rate, text, hour, n)
                if got_rate is not None:
                    at = _nth(events, rate, text, got_rate[1])
                    if at is not None and "baseline.rate.kind" not in events[at].fields:
                        _stamp_rate(events[at].fields, got_rate[0])
                        marked.add(at)
        for i in marked:
            events[i].changed()
        return len(marked)

    def _native_batch(
        self, events: list[Event], now: float
    ) -> tuple[list[Iterable[tuple[str, int]]], set[int]] | None:
        """The per-event loop in one native call: the rate counts by text and the positions
        of the events that got fields; None when the batch is left to the reference."""
        assert self.native is not None
        terms = self.terms
        got = self.native.observe(
            events
            if type(events) is list or isinstance(events, dataplane.NATIVE_SEQUENCES)
            else list(events),
            now,
            terms.learning,
            terms.max_keys,
            terms.max_values,
            MAX_ACTIONS,
            terms.started,
            terms.seen,
            self.actions,
            self.total,
            RARE_AFTER,
            RARE_SHARE,
        )
        if got is None:
            return None
        counts, stamped, new_terms, self.total, refused, actions_refused = got
        terms.refused += refused
        self.actions_refused += actions_refused
        if new_terms:
            at = iso8601(now)
            for kind, key, value in new_terms:
                terms.recent.append({"kind": kind, "key": key, "value": value, "at": at})
        return counts, set(stamped)

    def _count_and_learn(
        self, events: list[Event], now: float
    ) -> tuple[dict[Any, int], dict[Any, int], dict[str, int], set[int]]:
        """The reference of the per-event loop: rate counts per key (devices, sources,
        listeners), new terms learned and rarity counted, fields stamped; the positions of
        the events that got fields."""
        devices: dict[Any, int] = {}
        sources: dict[Any, int] = {}
        listeners: dict[str, int] = {}
        marked: set[int] = set()  # positions of events that got fields
        new_term = self.terms.observe
        actions = self.actions
        total = self.total
        try:
            for i, ev in enumerate(events):
                f = ev.fields
                stamped = False
                key = f.get("observer.ip") or f.get("host.hostname")
                if key is not None:
                    devices[key] = devices.get(key, 0) + 1
                key = f.get("event.dataset") or ev.module  # the decoder, else the module
                sources[key] = sources.get(key, 0) + 1
                key = ev.listener
                if key:
                    listeners[key] = listeners.get(key, 0) + 1
                for kind in TERM_KINDS:
                    value = f.get(kind.value)
                    if value is None:
                        continue
                    for name in kind.keys:
                        key = f.get(name)
                        if key is not None:
                            break
                    else:
                        continue
                    if kind.when(f) and new_term(kind, str(key), str(value), now):
                        f["baseline.new_term.kind"] = kind.name
                        f["baseline.new_term.field"] = kind.value
                        f["baseline.new_term.key"] = str(key)
                        f["baseline.new_term.value"] = str(value)
                        stamped = True
                # Rarity, inline (a call per event measured a tenth of the stage).
                action = f.get("event.action")
                if isinstance(action, str):
                    n = actions.get(action)
                    if n is None and len(actions) >= MAX_ACTIONS:
                        self.actions_refused += 1
                    else:
                        n = 1 if n is None else n + 1
                        actions[action] = n
                        total += 1
                        if total >= RARE_AFTER and n / total < RARE_SHARE:
                            # 1e-3: 60, 1e-5: 100
                            f["baseline.rarity"] = min(100, round(-20 * math.log10(n / total)))
                            stamped = True
                if stamped:
                    marked.add(i)
        finally:
            self.total = total
        return devices, sources, listeners, marked

    # ---------------------------------------------------------------------- persistence

    def snapshot(self) -> dict[str, Any]:
        return {
            "version": 1,
            "rates": [[k, v, s.to_json()] for (k, v), s in self.rates.series.items()],
            "rule_rates": [[k, v, s.to_json()] for (k, v), s in self.rule_rates.series.items()],
            "terms": {
                "started": self.terms.started,
                "seen": {
                    k: {key: sorted(v) for key, v in t.items()} for k, t in self.terms.seen.items()
                },
            },
            "actions": self.actions,
            "total": self.total,
        }

    def restore(self, data: dict[str, Any]) -> None:
        if data.get("version") != 1:
            raise ValueError("unknown baseline snapshot version")
        for target, items in ((self.rates, data["rates"]), (self.rule_rates, data["rule_rates"])):
            for kind, key, s in items[: target.s.max_keys]:
                series = target.series[(str(kind), str(key))] = Series.from_json(s)
                series.limit = target.limit(series, series.hour)
        terms = data["terms"]
        self.terms.started = {str(k): float(v) for k, v in terms["started"].items()}
        for kind, table in terms["seen"].items():
            if kind in self.terms.seen:
                self.terms.seen[kind] = {
                    str(key): set(map(str, values[: self.terms.max_values]))
                    for key, values in list(table.items())[: self.terms.max_keys]
                }
        self.actions = {str(k): int(v) for k, v in list(data["actions"].items())[:MAX_ACTIONS]}
        self.total = int(data["total"])


def native_batch() -> Any:
    """The native per-event loop (``_dataplane.BaselineBatch``) for :data:`TERM_KINDS`, or
    None: the Python reference (``APPLIANCE_NATIVE=0``, no extension, or a predicate it
    does not know)."""
    if dataplane.native is None or any(k.when not in _NATIVE_WHEN for k in TERM_KINDS):
        return None
    kinds = [(k.name, list(k.keys), k.value, _NATIVE_WHEN[k.when]) for k in TERM_KINDS]
    return dataplane.native.BaselineBatch(kinds)


def rate_key(kind: str, ev: Event) -> str | None:
    """The key an event counts under for a rate kind (``None``: it does not count)."""
    if kind == "device":
        f = ev.fields
        device = f.get("observer.ip") or f.get("host.hostname")
        return None if device is None else str(device)
    if kind == "source":
        return str(ev.fields.get("event.dataset") or ev.module)
    return ev.listener or None


def _by_text(counts: dict[Any, int]) -> dict[str, int]:
    """Counts keyed by the text of each key (a key is counted under ``str(key)``)."""
    if all(type(k) is str for k in counts):
        return counts
    out: dict[str, int] = {}
    for k, n in counts.items():
        text = str(k)
        out[text] = out.get(text, 0) + n
    return out


def _nth(events: list[Event], kind: str, key: str, n: int) -> int | None:
    """The position of the ``n``-th event (1: the first) counted under ``kind`` and ``key``."""
    for i, ev in enumerate(events):
        if rate_key(kind, ev) == key:
            n -= 1
            if n == 0:
                return i
    return None


def _stamp_rate(f: dict[str, Any], info: dict[str, Any]) -> None:
    f["baseline.rate.kind"] = info["kind"]
    f["baseline.rate.key"] = info["key"]
    f["baseline.rate.observed"] = info["observed"]
    f["baseline.rate.expected"] = info["expected"]
    f["baseline.rate.hour_of_week"] = info["hour_of_week"]


def settings_of(cfg: AnalysisSection) -> RateSettings:
    return RateSettings(
        alpha=cfg.baseline_alpha,
        factor=cfg.baseline_factor,
        min_count=cfg.baseline_min_count,
        warmup_weeks=cfg.baseline_warmup_weeks,
        max_keys=cfg.baseline_max_keys,
    )


# -------------------------------------------------------------------------------- component


class BaselineComponent:
    name = "baselines"

    def __init__(self, app: Appliance) -> None:
        self.app = app
        self.config = app.config
        self.stage = BaselineStage(app.config.analysis)
        self.snapshot_slot = app.store.state(STATE_COMPONENT, STATE_KEY, JSON)
        self._task: asyncio.Task[None] | None = None
        self._rule_hits: dict[str, int] = {}
        m = app.metrics
        m.gauge(
            "baseline_keys",
            "Keys tracked by the baselines, by kind (rate, rule_rate, new-term kinds).",
            ["kind"],
            callback=self._keys,
        )
        m.gauge(
            "baseline_refused",
            "Keys or values the baselines refused at their bounds since start (counter).",
            callback=lambda: float(
                self.stage.rates.refused + self.stage.terms.refused + self.stage.actions_refused
            ),
        )
        m.gauge(
            "baseline_evicted",
            "Rate keys forgotten after five idle weeks since start (counter).",
            callback=lambda: float(self.stage.rates.evicted),
        )
        m.gauge(
            "baseline_native_declined",
            "Batches the native baselines loop left to the Python reference since start "
            "(a value it cannot mirror exactly, or a caught panic; counter).",
            callback=lambda: float(self.stage.native.declined if self.stage.native else 0),
        )

    def _keys(self) -> dict[tuple[str, ...], float]:
        out: dict[tuple[str, ...], float] = {
            ("rate",): float(len(self.stage.rates.series)),
            ("rule_rate",): float(len(self.stage.rule_rates.series)),
        }
        for kind, table in self.stage.terms.seen.items():
            out[(kind,)] = float(len(table))
        return out

    async def start(self) -> None:
        if not self.config.analysis.baselines:
            return
        await self._restore()
        self.app.pipeline.before_store.append(self.stage)
        self._task = asyncio.create_task(self._timer(), name="baselines")

    async def stop(self) -> None:
        if self.stage in self.app.pipeline.before_store:
            self.app.pipeline.before_store.remove(self.stage)
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(BaseException):
                await self._task
            self._task = None
            await self.save()

    async def reload(self, config: AppConfig) -> None:
        self.config = config
        s = settings_of(config.analysis)
        self.stage.rates.s = s
        self.stage.rule_rates.s = settings_of(config.analysis)
        self.stage.terms.learning = config.analysis.new_term_learning

    def tick(self, now: float) -> None:
        """Close hours that ended (silent keys get their zeros) and record rule hits."""
        hour = int(now // HOUR)
        self.stage.rates.roll(hour)
        from appliance.correlate.component import correlation_of

        corr = correlation_of(self.app)
        if corr is None:
            return
        rr = self.stage.rule_rates
        for rule_id, st in corr.engine.stats.items():
            hits = st.hits
            delta = hits - self._rule_hits.get(rule_id, hits)
            self._rule_hits[rule_id] = hits
            if delta > 0:
                rr.observe("rule", rule_id, hour, delta)  # shown in the API; no incident
        rr.roll(hour)

    async def _timer(self) -> None:
        last_save = time.monotonic()
        while True:
            await asyncio.sleep(min(60.0, self.config.analysis.baseline_snapshot_interval))
            try:
                self.tick(self.app.clock())
                if time.monotonic() - last_save >= self.config.analysis.baseline_snapshot_interval:
                    last_save = time.monotonic()
                    await self.save()
            except Exception:
                _rl.error("timer", "baseline timer failed", exc_info=True)

    async def save(self) -> None:
        if self.app.store.writer is None:
            return
        try:
            snapshot = await asyncio.to_thread(self.stage.snapshot)
            await self.snapshot_slot.save(snapshot, off_loop=True)
        except Exception:
            _rl.error("snapshot", "baseline snapshot failed", exc_info=True)

    async def _restore(self) -> None:
        try:
            snapshot = await self.snapshot_slot.load()
            if snapshot is not None:
                self.stage.restore(snapshot)
        except (ValueError, TypeError, KeyError) as exc:
            log.warning("baseline snapshot not restored (%s); learning from scratch", exc)
            self.stage = BaselineStage(self.config.analysis)

    # ------------------------------------------------------------------------------ reads

    def rates(self, kind: str | None, limit: int) -> list[dict[str, Any]]:
        hour = int(self.app.clock() // HOUR)
        out: list[dict[str, Any]] = []
        for store in (self.stage.rates, self.stage.rule_rates):
            for (k, key), s in store.series.items():
                if kind is not None and k != kind:
                    continue
                mean, sd, weeks = s.expected(hour)
                out.append(
                    {
                        "kind": k,
                        "key": key,
                        "this_hour": s.count if s.hour == hour else 0,
                        "expected": round(mean, 2),
                        "stddev": round(sd, 2),
                        "weeks_learned": weeks,
                        "hour_of_week": hour_of_week(hour),
                    }
                )
        out.sort(key=lambda r: (-r["this_hour"], r["kind"], r["key"]))
        return out[:limit]

    def status(self) -> dict[str, Any]:
        st = self.stage
        return {
            "keys": {k[0]: int(v) for k, v in self._keys().items()},
            "refused": st.rates.refused + st.terms.refused + st.actions_refused,
            "evicted": st.rates.evicted,
            "anomalies": list(st.rates.anomalies),
            "rare_actions": sorted(st.actions.items(), key=lambda kv: kv[1])[:20],
            "events_counted": st.total,
        }

    def new_terms(self) -> dict[str, Any]:
        t = self.stage.terms
        kinds = []
        for k in TERM_KINDS:
            until = t.learning_until(k.name)
            kinds.append(
                {
                    "kind": k.name,
                    "key_fields": list(k.keys),
                    "value_field": k.value,
                    "keys": len(t.seen[k.name]),
                    "learning_until": iso8601(until) if until is not None else None,
                    "learning": until is None or self.app.clock() < until,
                }
            )
        return {"kinds": kinds, "recent": list(t.recent), "refused": t.refused}


def build_baselines(app: Appliance) -> BaselineComponent:
    return BaselineComponent(app)


def baselines_of(app: Appliance) -> BaselineComponent | None:
    return app.component(BaselineComponent)
