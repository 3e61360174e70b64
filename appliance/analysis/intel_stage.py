"""The threat-intel enrichment stage and the component that keeps its index current.

The stage runs ``before_store`` (syslog events and, through the flow path, flows): an event
whose address, domain, URL or file hash is a live indicator gets ECS threat fields, so the
stored event, the API and Sigma rules all see the hit (the built-in
``intel_indicator_match`` rule turns it into an incident). The component loads the index in a
worker thread at start, on SIGHUP and when a list changes on disk (a feed update from the
appliance's own timer or from ``appliance intel update``), and swaps it in one assignment.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from appliance import dataplane
from appliance.analysis.feeds import read_sources, sources_stamp, update_feeds
from appliance.analysis.intel import NONE, IntelIndex, LoadReport, build_index
from appliance.config import AppConfig
from appliance.event import Event, iso8601
from appliance.logutil import RateLimitedLog
from appliance.metrics import Registry

if TYPE_CHECKING:
    from appliance.app import Appliance

log = logging.getLogger(__name__)
_rl = RateLimitedLog(log)

# Event fields looked up, in priority order (the first hit is the one recorded).
IP_FIELDS = ("source.ip", "destination.ip", "client.ip", "server.ip")
DOMAIN_FIELDS = ("dns.question.name", "url.domain", "destination.domain", "server.domain")
URL_FIELDS = ("url.full", "url.original")
HASH_FIELDS = ("file.hash.sha256", "file.hash.sha1", "file.hash.md5")
MISS_CACHE = 65_536  # values known to match nothing (see IntelEnricher)
CHECK_INTERVAL = 10.0  # seconds between looks at the lists' files and the feeds' schedules


class IntelEnricher:
    """The ``before_store`` stage: threat fields on events that hit an indicator.

    Most events hit nothing, and a site sees the same addresses again and again, so the stage
    remembers values that match no indicator of any kind, live or expired (``_miss``; ``None``
    stands for an absent field), until the index is swapped. An event whose ``source.ip`` and
    ``destination.ip`` are both remembered and that has none of the other looked-up fields is
    passed over with two dict probes, two set probes and one key-view test (callgrind: 4,500
    instructions per firewall event, against 10,400 to look at every field in turn); any
    other event gets the full look in priority order (:meth:`enrich`), which fills the
    memory.
    """

    name = "intel"

    def __init__(self, index: IntelIndex, metrics: Registry) -> None:
        self.hits = metrics.counter(
            "intel_hits_total", "Events that matched a threat-intel indicator, by feed.", ["feed"]
        )
        self.index = index
        self._miss: set[object] = {None}
        self._others: tuple[tuple[str, Callable[[str, float], int], str], ...] = ()
        self._rare: frozenset[str] = frozenset()
        self._rare_keys: tuple[str, ...] = ()
        # The batch test in Rust when the data plane is native; None: the loop below.
        self.native_select: Callable[..., list[int] | None] | None = (
            dataplane.native.intel_select if dataplane.native is not None else None
        )
        self.use(index)

    def use(self, index: IntelIndex) -> None:
        """Swap in a new index; only the field groups it has indicators for are looked at."""
        others: list[tuple[str, Callable[[str, float], int], str]] = []
        if index.domains:
            others += [(n, index.lookup_domain, "threat.indicator.domain") for n in DOMAIN_FIELDS]
        if index.urls:
            others += [(n, index.lookup_url, "threat.indicator.url.full") for n in URL_FIELDS]
        if index.hashes:
            others += [(n, index.lookup_hash, "threat.indicator." + n) for n in HASH_FIELDS]
        self._miss = {None}
        self._others = tuple(others)
        # The looked-up fields besides the first two addresses: rare on most events.
        self._rare = frozenset(IP_FIELDS[2:]) | {n for n, _, _ in others}
        self._rare_keys = tuple(self._rare)
        self.index = index

    async def process(self, events: list[Event], now: float) -> None:
        self.enrich_batch(events, now)

    def enrich_batch(self, events: list[Event], now: float) -> int:
        """:meth:`enrich` every event that may hit (see the class docstring); the hits.

        With the native data plane the test is one call over the batch
        (``_dataplane.intel_select``, reading the same memory); the events it picks then get
        :meth:`enrich` in order. Values remembered while the batch is enriched only let later
        batches pass over more, so the hits are those of the loop below, the reference and the
        fallback (``APPLIANCE_NATIVE=0``, or a panic in the extension, counted).
        """
        if len(self.index) == 0:
            return 0
        enrich = self.enrich
        if self.native_select is not None:
            picked = self.native_select(
                events, self._miss, IP_FIELDS[0], IP_FIELDS[1], self._rare_keys
            )
            if picked is not None:
                return sum(1 for i in picked if enrich(events[i], now))
        miss = self._miss  # cleared in place when full, replaced only by use()
        rare = self._rare
        first, second = IP_FIELDS[0], IP_FIELDS[1]
        hits = 0
        for ev in events:
            f = ev.fields
            try:
                if f.get(first) in miss and f.get(second) in miss and f.keys().isdisjoint(rare):
                    continue
            except TypeError:  # an unhashable value (a list): the full look decides
                pass
            if enrich(ev, now):
                hits += 1
        return hits

    def select(self, events: list[Event]) -> list[int]:
        """The indices the batch test picks with the memory as it is now: the reference
        ``_dataplane.intel_select`` is held to (``enrich_batch`` runs the same test inline)."""
        miss, rare = self._miss, self._rare
        first, second = IP_FIELDS[0], IP_FIELDS[1]
        picked = []
        for i, ev in enumerate(events):
            f = ev.fields
            try:
                if f.get(first) in miss and f.get(second) in miss and f.keys().isdisjoint(rare):
                    continue
            except TypeError:
                pass
            picked.append(i)
        return picked

    def enrich(self, event: Event, now: float) -> bool:
        """Stamp the first live indicator among the event's fields; ``True`` on a hit."""
        f = event.fields
        if "threat.indicator.type" in f:
            return False  # the device itself reported a threat indicator: keep its fields
        index = self.index
        miss = self._miss
        for name in IP_FIELDS:
            v = f.get(name)
            if v is None or not isinstance(v, str) or v in miss:
                continue
            idx = index.lookup_ip(v, now)
            if idx >= 0:
                self._stamp(event, idx, name, v, "threat.indicator.ip")
                return True
            # Not even an expired block covers it, and it is no listed name: it never hits.
            if idx == NONE and index.unlisted_name(v):
                self._remember(v)
        for name, lookup, target in self._others:
            v = f.get(name)
            if v is None or not isinstance(v, str) or v in miss:
                continue
            idx = lookup(v, now)
            if idx >= 0:
                self._stamp(event, idx, name, v, target)
                return True
            if index.absent(v):
                self._remember(v)
        return False

    def _remember(self, value: str) -> None:
        miss = self._miss
        if len(miss) >= MISS_CACHE:
            miss.clear()
            miss.add(None)
        miss.add(value)

    def _stamp(self, event: Event, idx: int, field: str, value: str, target: str) -> None:
        m = self.index.match(idx, value)
        f = event.fields
        f["threat.indicator.type"] = m.kind
        f[target] = value
        f["threat.indicator.name"] = m.value
        f["threat.indicator.confidence"] = m.confidence
        if m.first_seen is not None:
            f["threat.indicator.first_seen"] = iso8601(m.first_seen)
        if m.last_seen is not None:
            f["threat.indicator.last_seen"] = iso8601(m.last_seen)
        if m.description:
            f["threat.indicator.description"] = m.description
        f["threat.feed.name"] = m.feed
        f["threat.enrichments.matched.field"] = field
        f["threat.enrichments.matched.atomic"] = value
        f["threat.enrichments.matched.type"] = "indicator_match_rule"
        event.changed()
        self.hits.inc(m.feed)


def load_index(config: AppConfig) -> tuple[IntelIndex, LoadReport, list[str]]:
    """Read and parse every configured list (blocking: run it in a thread)."""
    sources, errors = read_sources(config)
    index, report = build_index(sources, config.analysis.intel_max_indicators)
    return index, report, errors


class IntelComponent:
    name = "intel"

    def __init__(self, app: Appliance) -> None:
        self.app = app
        self.config = app.config
        self.stage = IntelEnricher(IntelIndex().finish(), app.metrics)
        self.report = LoadReport()
        self.errors: list[str] = []
        self.loaded_at: float | None = None
        self._stamp: tuple[tuple[str, float, int], ...] = ()
        self._task: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()
        m = app.metrics
        m.gauge(
            "intel_indicators",
            "Threat-intel indicators loaded, by feed.",
            ["feed"],
            callback=lambda: {(k,): float(v) for k, v in self.report.loaded.items()},
        )
        self.malformed = m.counter(
            "intel_malformed_total",
            "Threat-intel entries that could not be read (skipped), by feed.",
            ["feed"],
        )
        self.refused = m.counter(
            "intel_refused_total",
            "Indicators left out because analysis.intel_max_indicators was reached.",
        )
        self.fetches = m.counter(
            "intel_fetches_total", "Feed downloads, by feed and result.", ["feed", "result"]
        )
        self.loads = m.counter("intel_loads_total", "Index (re)loads, by result.", ["result"])

    def enabled(self, config: AppConfig) -> bool:
        return bool(config.analysis.intel_files or config.analysis.feeds)

    async def start(self) -> None:
        if self.stage not in self.app.pipeline.before_store:
            self.app.pipeline.before_store.append(self.stage)
        if self.enabled(self.config):
            await self.reload_index()
        self._task = asyncio.create_task(self._timer(), name="intel-timer")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(BaseException):
                await self._task
            self._task = None
        if self.stage in self.app.pipeline.before_store:
            self.app.pipeline.before_store.remove(self.stage)

    async def reload(self, config: AppConfig) -> None:
        """SIGHUP: the lists are read again whether or not the config changed."""
        self.config = config
        await self.reload_index()
        self._wake.set()

    async def reload_index(self) -> None:
        config = self.config
        stamp = sources_stamp(config)
        t0 = time.monotonic()
        try:
            index, report, errors = await asyncio.to_thread(load_index, config)
        except Exception:
            self.loads.inc("failed")
            _rl.error("load", "threat intel not reloaded; the old lists stay", exc_info=True)
            return
        self.stage.use(index)
        self.report, self.errors, self._stamp = report, errors, stamp
        self.loaded_at = self.app.clock()
        self.loads.inc("ok")
        for feed, n in report.malformed.items():
            if n:
                self.malformed.inc(feed, n=n)
                _rl.warning(
                    f"malformed:{feed}",
                    "threat intel %s: %d malformed entries skipped (e.g. %s)",
                    feed,
                    n,
                    "; ".join(report.samples.get(feed, [])[:2]),
                )
        if report.refused:
            self.refused.inc(n=report.refused)
            _rl.warning(
                "refused",
                "threat intel: %d indicators beyond analysis.intel_max_indicators left out",
                report.refused,
            )
        for err in errors:
            _rl.warning(f"read:{err}", "threat intel: cannot read %s", err)
        log.info(
            "threat intel: %d indicators from %d list(s) in %.2f s",
            len(index),
            len(report.loaded),
            time.monotonic() - t0,
        )

    async def _timer(self) -> None:
        while True:
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), CHECK_INTERVAL)
            try:
                await self.tick()
            except asyncio.CancelledError:
                raise
            except Exception:
                _rl.error("timer", "threat intel update failed", exc_info=True)

    async def tick(self) -> None:
        """Fetch the feeds that are due, then reload if any list changed on disk."""
        config = self.config
        if config.analysis.feeds:
            for r in await update_feeds(config, only_due=True, clock=self.app.clock):
                self.fetches.inc(r.feed, r.status)
                if r.status == "failed":
                    _rl.warning(f"fetch:{r.feed}", "feed %s: %s", r.feed, r.detail)
        if self.enabled(config) and sources_stamp(config) != self._stamp:
            await self.reload_index()

    def status(self) -> dict[str, Any]:
        return {
            **self.stage.index.summary(),
            "malformed": dict(self.report.malformed),
            "refused": self.report.refused,
            "errors": list(self.errors),
            "loaded_at": iso8601(self.loaded_at) if self.loaded_at else None,
        }


def build_intel(app: Appliance) -> IntelComponent:
    return IntelComponent(app)


def intel_of(app: Appliance) -> IntelComponent | None:
    return app.component(IntelComponent)
