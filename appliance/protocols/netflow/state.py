"""What a flow collector remembers between datagrams, bounded: exporters (observation domains),
their templates, sequence numbers and sampling, and data that arrived before its template.

Every piece is bounded (exporters, domains per exporter, templates per exporter and in total,
fields per template, fixed field length, held data) and every bound that bites is counted
through ``count``. Templates are keyed by (exporter address, version, source ID / observation
domain, template ID) and live ``template_lifetime`` seconds from their last (re)send; IPFIX
withdrawals never reach here (:mod:`.wire` reports them, the decoder only counts them) because
over UDP anyone can spoof them (RFC 7011 §8.4). Pure: ``now`` is always passed in.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from appliance.protocols.netflow.ie import LARGE_IES
from appliance.protocols.netflow.template import SCOPE_PEN, VARLEN, Field, Template

CountFn = Callable[[str, str, int], None]
DomainKey = tuple[str, int, int]  # (exporter address, version, source id / observation domain)
MAX_SAMPLERS = 256


@dataclass(frozen=True, slots=True)
class DecoderLimits:
    """Bounds on decoder state (reference C3 defaults); each is a config key of the source."""

    max_exporters: int = 1000
    max_domains_per_exporter: int = 64
    max_templates_per_exporter: int = 256
    max_templates: int = 10_000
    max_fields_per_template: int = 256
    max_field_length: int = 128
    template_lifetime: float = 1800.0
    pending_max_sets: int = 256
    pending_max_age: float = 10.0
    compiles_per_second: float = 50.0


class DomainState:
    """What one (exporter, version, source id / observation domain) has told us."""

    __slots__ = (
        "default_rate",
        "init_time",
        "key",
        "last_seen",
        "next_seq",
        "sampler_rates",
        "templates",
    )

    def __init__(self, key: DomainKey, now: float) -> None:
        self.key = key
        self.templates: dict[int, Template] = {}  # insertion order = least recently (re)sent first
        self.next_seq: int | None = None
        self.default_rate = 1
        self.sampler_rates: dict[int, int] = {}
        self.init_time: float | None = None  # IPFIX systemInitTimeMilliseconds, in seconds
        self.last_seen = now


class TemplateState:
    """Exporters, templates and held data of one listener, within :class:`DecoderLimits`."""

    def __init__(self, limits: DecoderLimits, count: Callable[..., None]) -> None:
        self.limits = limits
        self.count = count  # count(family, reason, n=1)
        # Least recently heard first, in all and per exporter address (see domain()).
        self.domains: OrderedDict[DomainKey, DomainState] = OrderedDict()
        self.by_address: dict[str, OrderedDict[DomainKey, None]] = {}
        self.lru: OrderedDict[tuple[DomainKey, int], None] = OrderedDict()
        # Data sets waiting for their template: (domain, template id, body, context, held at).
        self.pending: OrderedDict[int, tuple[DomainKey, int, bytes, Any, float]] = OrderedDict()
        self._pending_seq = 0
        self.dirty = False  # templates or sampling changed since the last export()
        self.refreshed = False  # only lifetimes moved since the last export()
        self._loss_labels: set[str] = set()

    @property
    def template_count(self) -> int:
        return len(self.lru)

    # ------------------------------------------------------------------------- domains

    def domain(self, key: DomainKey, now: float) -> DomainState:
        """The state of ``key``, made room for when new.

        Why evict rather than refuse: the table is keyed by (address, version, domain), and
        the domain is a number the exporter picks, so one allowed exporter cycling through
        observation domains could fill it and lock every new exporter out until its entries
        idled out. So each address holds at most ``max_domains_per_exporter`` (a flood
        evicts its own stalest), and a full table evicts the least recently heard domain,
        so a new exporter is decoded at once. Each eviction is a counted limit hit.
        """
        domain = self.domains.get(key)
        if domain is not None:
            domain.last_seen = now
            self.domains.move_to_end(key)
            self.by_address[key[0]].move_to_end(key)
            return domain
        limits = self.limits
        mine = self.by_address.get(key[0])
        if mine is not None and len(mine) >= limits.max_domains_per_exporter:
            self.drop_domain(next(iter(mine)))
            self.count("limit", "domains_per_exporter")
        if len(self.domains) >= limits.max_exporters:
            self.forget_idle(now)
            if len(self.domains) >= limits.max_exporters:
                self.drop_domain(next(iter(self.domains)))
                self.count("limit", "exporters")
        domain = self.domains[key] = DomainState(key, now)
        self.by_address.setdefault(key[0], OrderedDict())[key] = None
        return domain

    def forget_idle(self, now: float) -> None:
        """Drop exporters silent for a template lifetime (their templates would be expired);
        the table is in order of last arrival, so they are at its front."""
        cutoff = now - self.limits.template_lifetime
        domains = self.domains
        while domains:
            key, first = next(iter(domains.items()))
            if first.last_seen >= cutoff:
                break
            self.drop_domain(key)

    def drop_domain(self, key: DomainKey) -> None:
        domain = self.domains.pop(key)
        mine = self.by_address.get(key[0])
        if mine is not None:
            mine.pop(key, None)
            if not mine:
                del self.by_address[key[0]]
        for tid in domain.templates:
            self.lru.pop((key, tid), None)
        self.dirty = True

    def sequence(
        self, domain: DomainState, exporter: str, seq: int, advance: int, unit: str
    ) -> None:
        """Check ``seq`` against what the domain's last export promised; count the gap."""
        expected = domain.next_seq
        domain.next_seq = (seq + advance) & 0xFFFFFFFF
        if expected is None or seq == expected:
            return
        gap = (seq - expected) & 0xFFFFFFFF
        if gap < 0x80000000:
            # Exporter labels are bounded like the exporters themselves: churn from many
            # (spoofed) addresses lands on one "other" label instead of growing /metrics.
            labels = self._loss_labels
            if exporter not in labels:
                if len(labels) >= self.limits.max_exporters:
                    exporter = "other"
                else:
                    labels.add(exporter)
            self.count(f"lost_{unit}", exporter, gap)
        else:  # behind us: reordered, duplicated, or the exporter restarted
            self.count("sequence", "reordered_or_reset")

    # ----------------------------------------------------------------------- templates

    def install(
        self, domain: DomainState, tid: int, fields: tuple[Field, ...], scope: int, now: float
    ) -> bool:
        """Install (or refresh) a template within the limits; ``True`` when a new or changed
        template now holds the id (data held for it can be decoded)."""
        limits = self.limits
        if len(fields) > limits.max_fields_per_template:
            self.count("limit", "fields_per_template")
            return False
        version = domain.key[1]
        total = 0
        for ie, length, pen in fields:
            if length == VARLEN and version == 10 and pen != SCOPE_PEN:
                total += 1
                continue
            if length > limits.max_field_length and not (pen == 0 and ie in LARGE_IES):
                self.count("limit", "field_length")
                return False
            total += length
        if total > 65535 - 20:
            self.count("error", "template_too_long")
            return False
        if total == 0:
            self.count("error", "zero_length_record")
            return False
        key = domain.key
        old = domain.templates.pop(tid, None)
        if old is not None and old.same_as(fields, scope):
            old.last_seen = now
            if old.emit is not None and not old.is_compiled():
                old.emit = None  # on the generic emitter: try compiling again
            domain.templates[tid] = old
            self.lru.move_to_end((key, tid))
            self.count("template", "refreshed")
            self.refreshed = True
            return False
        if old is not None:
            self.lru.pop((key, tid), None)
            self.count("template", "changed")
        else:
            if len(domain.templates) >= limits.max_templates_per_exporter:
                victim = next(iter(domain.templates))
                del domain.templates[victim]
                self.lru.pop((key, victim), None)
                self.count("limit", "templates_per_exporter")
            if len(self.lru) >= limits.max_templates:
                (vkey, vtid), _ = self.lru.popitem(last=False)
                victim_domain = self.domains.get(vkey)
                if victim_domain is not None:
                    victim_domain.templates.pop(vtid, None)
                self.count("limit", "templates_total")
            self.count("template", "new")
        domain.templates[tid] = Template(tid, fields, scope, now)
        self.lru[(key, tid)] = None
        self.dirty = True
        return True

    def template(self, domain: DomainState, tid: int, now: float) -> Template | None:
        """The live template ``tid`` of ``domain`` (one past its lifetime is dropped here)."""
        tpl = domain.templates.get(tid)
        if tpl is not None and now - tpl.last_seen > self.limits.template_lifetime:
            del domain.templates[tid]
            self.lru.pop((domain.key, tid), None)
            self.count("template", "expired")
            self.dirty = True
            return None
        return tpl

    # ------------------------------------------------------------- data before template

    def hold(self, key: DomainKey, tid: int, body: bytes, context: Any, now: float) -> None:
        """Keep a data set whose template has not arrived yet, briefly and boundedly."""
        self.count("data", "no_template")
        limits = self.limits
        if limits.pending_max_sets <= 0:
            return
        self.expire_pending(now)
        if len(self.pending) >= limits.pending_max_sets:
            self.pending.popitem(last=False)
            self.count("data", "pending_evicted")
        self._pending_seq += 1
        self.pending[self._pending_seq] = (key, tid, body, context, now)

    def expire_pending(self, now: float) -> None:
        cutoff = now - self.limits.pending_max_age
        while self.pending:
            first = next(iter(self.pending.values()))
            if first[4] >= cutoff:
                break
            self.pending.popitem(last=False)
            self.count("data", "pending_expired")

    def take_pending(self, key: DomainKey, tid: int, now: float) -> list[tuple[bytes, Any]]:
        """The held data sets for a template that just arrived, oldest first: (body, context)."""
        self.expire_pending(now)
        ready = [s for s, (k, t, *_rest) in self.pending.items() if k == key and t == tid]
        out = []
        for s in ready:
            _k, _t, body, context, _ts = self.pending.pop(s)
            out.append((body, context))
        return out

    # --------------------------------------------------------------------- maintenance

    def expire(self, now: float) -> int:
        """Drop templates past their lifetime, idle exporters and stale held data."""
        lifetime = self.limits.template_lifetime
        expired = 0
        for key, tid in list(self.lru):
            domain = self.domains.get(key)
            tpl = domain.templates.get(tid) if domain is not None else None
            if tpl is None or now - tpl.last_seen > lifetime:
                self.lru.pop((key, tid), None)
                if domain is not None:
                    domain.templates.pop(tid, None)
                expired += 1
            else:
                break  # LRU order: the rest were (re)sent later
        if expired:
            self.count("template", "expired", expired)
            self.dirty = True
        self.forget_idle(now)
        self.expire_pending(now)
        return expired

    def export(self) -> dict[str, Any]:
        """Templates and sampling state as JSON-able data (saved so a restart can decode)."""
        domains = []
        for (addr, version, dom), state in self.domains.items():
            if not state.templates and state.default_rate == 1 and not state.sampler_rates:
                continue
            domains.append(
                {
                    "exporter": addr,
                    "version": version,
                    "domain": dom,
                    "default_rate": state.default_rate,
                    "sampler_rates": [[k, v] for k, v in state.sampler_rates.items()],
                    "init_time": state.init_time,
                    "templates": [t.to_json() for t in state.templates.values()],
                }
            )
        self.dirty = self.refreshed = False
        return {"format": 1, "domains": domains}
