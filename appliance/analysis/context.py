"""The running analysis: files loaded into indexes, the enrichment stage, the incident assessor.

Files come from ``[analysis]`` (``asset_files``, ``vuln_files``, ``ids_rule_files``) and from
``data_dir/analysis/imported`` (what ``appliance vuln import`` copied there). They are read at
start and again on every SIGHUP (files change without the config changing), in a thread, into
a new :class:`Context` that replaces the old one in one assignment: a lookup sees the old data
or the new, never half of each. A file that fails to load is logged with its reason and
counted, and the others still load.

Formats are told apart by content (JSON catalogs; XML by root element; Snort/Suricata rules by
their ``sid``), CSV and TOML asset lists by extension, so any file may be listed under any key;
the keys say what the site means them for.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

from appliance import dataplane
from appliance.analysis import risk
from appliance.analysis.assets import (
    INTERNAL_ZONES,
    Asset,
    AssetFileError,
    AssetIndex,
    parse_csv,
    parse_toml,
)
from appliance.analysis.idsrules import IdsRuleError, Signature, SignatureIndex, parse_rules
from appliance.analysis.vulns import (
    Report,
    VulnFileError,
    VulnIndex,
    parse_json_catalog,
    parse_report_xml,
)
from appliance.config import AppConfig
from appliance.event import Event
from appliance.logutil import RateLimitedLog

if TYPE_CHECKING:
    from appliance.app import Appliance
    from appliance.correlate.engine import Alert

log = logging.getLogger(__name__)
_rl = RateLimitedLog(log)

IMPORT_DIR = Path("analysis") / "imported"  # under data_dir
MAX_FILE_BYTES = 256 * 1024 * 1024  # a larger non-XML file is refused (memory), not half-read


class AnalysisFileError(ValueError):
    """A file that cannot be loaded; the message names the file and the reason."""


@dataclass(slots=True)
class Loaded:
    """What one file contributed, and how much (for logs and ``appliance vuln import``)."""

    path: str
    kind: str
    assets: list[Asset] = field(default_factory=list)
    report: Report | None = None
    signatures: list[Signature] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)  # entries skipped (bad rules)

    def counts(self) -> dict[str, int]:
        rep = self.report
        out = {
            "assets": len(self.assets) + (len(rep.hosts) if rep else 0),
            "findings": len(rep.findings) if rep else 0,
            "cves": len(rep.cves) if rep else 0,
            "kev": sum(1 for c in rep.cves.values() if c.kev) if rep else 0,
            "signatures": len(self.signatures),
            "signatures_with_cve": sum(1 for s in self.signatures if s.cves),
            "skipped": len(self.errors),
        }
        return {k: v for k, v in out.items() if v}


def _first_byte(data: bytes) -> bytes:
    return data.removeprefix(b"\xef\xbb\xbf").lstrip()[:1]


def parse_file(name: str, data: bytes, xml: BinaryIO | None = None) -> Loaded:
    """Any supported file, told apart by content and extension (module docstring). ``data``
    is the file, or (with ``xml``, the open file to stream an XML report from) its head."""
    head = _first_byte(data)
    suffix = Path(name).suffix.lower()
    try:
        if head in (b"{", b"["):
            rep = parse_json_catalog(data, name)
            return Loaded(name, rep.kind, report=rep)
        if head == b"<":
            rep = parse_report_xml(xml if xml is not None else data, name)
            return Loaded(name, rep.kind, report=rep)
        text = data.decode("utf-8-sig")
        if suffix == ".csv":
            return Loaded(name, "csv", assets=parse_csv(text, name))
        if suffix == ".toml":
            return Loaded(name, "toml", assets=parse_toml(text, name))
        sigs, errors = parse_rules(text, name)
        if sigs or suffix == ".rules":
            return Loaded(name, "ids_rules", signatures=sigs, errors=errors)
    except UnicodeDecodeError:
        raise AnalysisFileError(f"{name}: not UTF-8 text") from None
    except (VulnFileError, AssetFileError, IdsRuleError) as exc:
        raise AnalysisFileError(str(exc)) from None
    raise AnalysisFileError(
        f"{name}: not a known format (CSV/TOML asset list, Nmap/Nessus/OpenVAS XML,"
        " KEV or NVD JSON, Snort/Suricata rules)"
    )


def read_file(path: Path) -> Loaded:
    """A file from disk: XML reports are streamed (scans of big networks are hundreds of MB),
    the other formats read whole, up to ``MAX_FILE_BYTES``."""
    try:
        with path.open("rb") as f:
            head = f.read(4096)
            if _first_byte(head) == b"<":
                f.seek(0)
                return parse_file(str(path), head, xml=f)
            size = os.fstat(f.fileno()).st_size
            if size > MAX_FILE_BYTES:
                raise AnalysisFileError(f"{path}: {size} bytes, more than {MAX_FILE_BYTES}")
            data = head + f.read()
    except OSError as exc:
        raise AnalysisFileError(f"{path}: {exc.strerror or exc}") from None
    return parse_file(str(path), data)


@dataclass(slots=True)
class Context:
    """One consistent set of loaded data (replaced whole on reload)."""

    assets: AssetIndex = field(default_factory=AssetIndex)
    vulns: VulnIndex = field(default_factory=VulnIndex)
    signatures: SignatureIndex = field(default_factory=SignatureIndex)
    files: dict[str, dict[str, int]] = field(default_factory=dict)  # path -> what it held
    failed: list[str] = field(default_factory=list)
    # network -> (source stamp, destination stamp): the fields each asset puts on an event
    stamps: dict[str, tuple[dict[str, Any], dict[str, Any]]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.stamps = {
            a.network: (stamp(a, "source"), stamp(a, "destination")) for a in self.assets.assets
        }

    @property
    def empty(self) -> bool:
        return not len(self.assets) and not len(self.signatures)


def configured_paths(config: AppConfig) -> list[Path]:
    """The site's files in precedence order (asset lists first: their fields win), then the
    imported ones (newest name order is irrelevant: they only add scans and catalogs)."""
    a = config.analysis
    paths = [config.path(p) for p in (*a.asset_files, *a.vuln_files, *a.ids_rule_files)]
    imported = config.data_dir / IMPORT_DIR
    if imported.is_dir():
        paths += sorted(p for p in imported.iterdir() if p.is_file() and not p.name.startswith("."))
    return list(dict.fromkeys(paths))


def load_context(paths: Iterable[Path]) -> Context:
    """Read every file; a bad one is logged, listed in ``failed`` and left out."""
    files: list[Loaded] = []
    failed: list[str] = []
    for path in paths:
        try:
            loaded = read_file(path)
        except AnalysisFileError as exc:
            failed.append(str(exc))
            log.error("analysis file skipped: %s", exc)
            continue
        for err in loaded.errors[:20]:
            log.warning("analysis: entry skipped: %s", err)
        files.append(loaded)
    assets: list[Asset] = []
    for f in files:
        assets += f.assets
    for f in files:
        if f.report is not None:
            assets += f.report.hosts
    reports = [f.report for f in files if f.report is not None]
    sigs = [s for f in files for s in f.signatures]
    summary = {f.path: f.counts() for f in files}  # the parsed lists go once indexed
    return Context(AssetIndex(assets), VulnIndex(reports), SignatureIndex(sigs), summary, failed)


# ------------------------------------------------------------------------------ enrichment


def direction(src: Asset | None, dst: Asset | None) -> str:
    """``network.direction`` from the zones: the site's side is internal/dmz/guest; an
    address outside the inventory, or in an ``external`` zone, is outside."""
    src_in = src is not None and src.zone in INTERNAL_ZONES
    dst_in = dst is not None and dst.zone in INTERNAL_ZONES
    if src_in and dst_in:
        return "internal"
    if dst_in:
        return "inbound"
    if src_in:
        return "outbound"
    return "external"


def stamp(asset: Asset, side: str) -> dict[str, Any]:
    """The fields an asset puts on one side (``source`` or ``destination``) of an event."""
    out: dict[str, Any] = {}
    if asset.name:
        out[f"{side}.asset.name"] = asset.name
    if asset.zone:
        out[f"{side}.asset.zone"] = asset.zone
    if asset.criticality is not None:
        out[f"{side}.asset.criticality"] = asset.criticality
    if asset.owner:
        out[f"{side}.asset.owner"] = asset.owner
    return out


def enrich(fields: dict[str, Any], ctx: Context) -> bool:
    """Stamp what the inventory and the rule files know onto one event; ``True`` if changed.

    ``source.asset.*`` / ``destination.asset.*`` (name, zone, criticality, owner),
    ``network.direction`` when the decoder did not set one, and on an IDS alert whose
    signature names CVEs, ``vulnerability.id`` (the list) for rules and searches. The stamps
    are built once per asset (``Context.stamps``): an event costs two cached lookups and two
    dict updates (``scripts/bench budget``).
    """
    lookup = ctx.assets.lookup
    ip = fields.get("source.ip")
    src = lookup(ip) if ip.__class__ is str else None
    ip = fields.get("destination.ip")
    dst = lookup(ip) if ip.__class__ is str else None
    changed = False
    if src is not None or dst is not None:
        stamps = ctx.stamps
        if src is not None:
            fields.update(stamps[src.network][0])
        if dst is not None:
            fields.update(stamps[dst.network][1])
        if "network.direction" not in fields:
            fields["network.direction"] = direction(src, dst)
        changed = True
    if fields.get("event.kind") == "alert":
        rule_id = fields.get("rule.id")
        cves = ctx.signatures.cves(rule_id) if rule_id is not None else ()
        if cves and "vulnerability.id" not in fields:
            fields["vulnerability.id"] = list(cves)
            changed = True
    return changed


class EnrichStage:
    """The ``before_store`` stage (appliance.pipeline.bus) running :func:`enrich`."""

    name = "analysis"

    def __init__(self, component: AnalysisComponent) -> None:
        self.component = component

    async def process(self, events: list[Event], now: float) -> None:
        ctx = self.component.context
        flows = self.component.config.analysis.enrich_flows
        if not flows and isinstance(events, dataplane.NATIVE_SEQUENCES):
            return  # a native flow batch (flows only): none of its events is made
        n = 0
        for ev in events:
            if ev.module == "netflow" and not flows:
                continue
            if enrich(ev.fields, ctx):
                ev.changed()
                n += 1
        if n:
            self.component.enriched.inc(n=n)


# -------------------------------------------------------------------------------- incidents


def is_ids_alert(fields: dict[str, Any]) -> bool:
    category = fields.get("event.category")
    return fields.get("event.kind") == "alert" and (
        category == "intrusion_detection"
        or (isinstance(category, list) and "intrusion_detection" in category)
    )


def risk_inputs(rule_level: str, fields: dict[str, Any], ctx: Context) -> risk.RiskInputs:
    """The inputs of the risk score for one hit (appliance.analysis.risk), from the evidence
    event's fields (or a correlation's group values) and the loaded data."""
    inputs = risk.RiskInputs(
        rule_level=rule_level,
        intel_confidence=risk.intel_confidence(fields.get(risk.INTEL_CONFIDENCE_FIELD)),
        rarity=risk.rarity(fields.get(risk.RARITY_FIELD)),
    )
    for side in ("destination", "source"):  # the most critical asset the evidence touches
        ip = fields.get(f"{side}.ip")
        asset = ctx.assets.lookup(ip) if isinstance(ip, str) and ip else None
        crit = asset.criticality if asset is not None else None
        if crit is not None and (
            inputs.asset_criticality is None or crit > inputs.asset_criticality
        ):
            inputs.asset_criticality = crit
            inputs.asset = (asset.name if asset is not None else "") or str(ip)
    if not is_ids_alert(fields):
        return inputs
    cves = list(ctx.signatures.cves(fields.get("rule.id")))
    target = fields.get("destination.ip")
    if not cves or not isinstance(target, str):
        return inputs
    inputs.cves = cves
    asset = ctx.assets.lookup(target)
    label = (asset.name if asset is not None and asset.name else "") or target
    port = fields.get("destination.port")
    port = port if isinstance(port, int) and not isinstance(port, bool) else None
    findings = [f for cve in cves for f in ctx.vulns.host_findings(target, cve)]
    on_port = [f for f in findings if not f.port or port is None or f.port == port]
    scanned = (asset is not None and asset.scanned) or bool(ctx.vulns.host_cves(target))
    if on_port:
        matched = list(dict.fromkeys(f.cve for f in on_port))
        scores = [f.cvss for f in on_port if f.cvss is not None]
        for cve in matched:
            info = ctx.vulns.info(cve)
            if info is not None:
                inputs.kev = inputs.kev or info.kev
                if info.cvss is not None:
                    scores.append(info.cvss)
        inputs.vuln_match = risk.MATCHED
        inputs.matched_cves = matched
        inputs.cvss = max(scores) if scores else None
        inputs.asset = label
        if asset is not None and asset.criticality is not None:
            inputs.asset_criticality = asset.criticality
    elif findings or (
        port is not None and asset is not None and asset.services and not asset.has_port(port)
    ):
        inputs.vuln_match = risk.UNMATCHED
        inputs.unmatched_why = "no_service"
        inputs.asset = label
    elif scanned:
        inputs.vuln_match = risk.UNMATCHED
        inputs.unmatched_why = "no_cve"
        inputs.asset = label
    return inputs


# -------------------------------------------------------------------------------- component


def policy_of(config: AppConfig) -> risk.Policy:
    a = config.analysis
    return risk.Policy(
        vuln_match_raise=a.vuln_match_raise,
        kev_raise=a.kev_raise,
        unmatched_ids=a.unmatched_ids,
        unmatched_lower=a.unmatched_lower,
    )


class AnalysisComponent:
    """Loads the files, runs the enrichment stage, and weighs incidents (module docstring)."""

    name = "analysis"

    def __init__(self, app: Appliance) -> None:
        self.app = app
        self.config = app.config
        self.policy = policy_of(app.config)
        self.context = Context()
        self.stage = EnrichStage(self)
        m = app.metrics
        self.enriched = m.counter(
            "analysis_events_enriched_total", "Events stamped with asset or CVE fields."
        )
        self.ids_verdicts = m.counter(
            "analysis_ids_alerts_total",
            "IDS alert hits weighed against the target's vulnerability scan, by outcome:"
            " matched, matched_kev, unmatched_lowered, unmatched_suppressed, unmatched_kept,"
            " unknown.",
            ["outcome"],
        )
        self.reloads = m.counter(
            "analysis_reloads_total", "Loads of the analysis files, by result.", ["result"]
        )
        m.gauge(
            "analysis_loaded",
            "What the analysis files hold now, by kind: files, failed_files, assets, findings,"
            " scanned_hosts, cves, kev, signatures, signatures_with_cve.",
            ["kind"],
            callback=self.loaded_counts,
        )

    def loaded_counts(self) -> dict[tuple[str, ...], float]:
        c = self.context
        return {
            ("files",): float(len(c.files)),
            ("failed_files",): float(len(c.failed)),
            ("assets",): float(len(c.assets)),
            ("findings",): float(c.vulns.findings),
            ("scanned_hosts",): float(len(c.vulns.by_host)),
            ("cves",): float(len(c.vulns.cves)),
            ("kev",): float(c.vulns.kev_count),
            ("signatures",): float(len(c.signatures)),
            ("signatures_with_cve",): float(c.signatures.with_cves),
        }

    async def load(self, config: AppConfig) -> None:
        paths = configured_paths(config)
        ctx = await asyncio.to_thread(load_context, paths)
        self.context = ctx
        self.reloads.inc("partial" if ctx.failed else "ok")
        log.info(
            "analysis: %d file(s) loaded, %d failed: %d assets, %d findings on %d hosts,"
            " %d CVEs (%d in KEV), %d IDS signatures (%d with CVEs)",
            len(ctx.files),
            len(ctx.failed),
            len(ctx.assets),
            ctx.vulns.findings,
            len(ctx.vulns.by_host),
            len(ctx.vulns.cves),
            ctx.vulns.kev_count,
            len(ctx.signatures),
            ctx.signatures.with_cves,
        )
        self._place_stage()

    def _place_stage(self) -> None:
        """Run the stage only when there is something to stamp: no cost for sites without."""
        stages = self.app.pipeline.before_store
        if self.context.empty:
            if self.stage in stages:
                stages.remove(self.stage)
        elif self.stage not in stages:
            stages.append(self.stage)

    async def start(self) -> None:
        try:
            await self.load(self.config)
        except Exception:  # a bug in a parser must not keep the appliance from starting
            self.reloads.inc("failed")
            log.exception("analysis: files not loaded; running without them")
        from appliance.correlate.component import correlation_of

        corr = correlation_of(self.app)
        if corr is not None:
            manager = corr.incidents
            manager.assess = self.assess
            self.app.metrics.gauge(
                "analysis_assess_failures",
                "Incident hits whose analysis raised (scored from the rule alone; each logged),"
                " since start.",
                callback=lambda: float(manager.assess_errors),
            )

    async def stop(self) -> None:
        if self.stage in self.app.pipeline.before_store:
            self.app.pipeline.before_store.remove(self.stage)

    async def reload(self, config: AppConfig) -> None:
        """SIGHUP: re-read every file (they change without the config changing)."""
        self.config = config
        self.policy = policy_of(config)
        try:
            await self.load(config)
        except Exception:
            self.reloads.inc("failed")
            log.exception("analysis: reload failed; the previous data stays in force")

    def assess(self, alert: Alert) -> risk.Assessment:
        """The incident manager's assessor: risk inputs from the loaded data, the policy."""
        fields = alert.fields if alert.fields is not None else alert.group
        level = alert.rule.level if alert.rule.level in risk.SEVERITIES else "medium"
        inputs = risk_inputs(level, fields, self.context)
        verdict = risk.assess(inputs, self.policy)
        if inputs.vuln_match == risk.MATCHED:
            self.ids_verdicts.inc("matched_kev" if inputs.kev else "matched")
        elif inputs.vuln_match == risk.UNMATCHED:
            action = {"suppress": "suppressed", "lower": "lowered", "keep": "kept"}
            self.ids_verdicts.inc(f"unmatched_{action[self.policy.unmatched_ids]}")
        elif inputs.cves:
            self.ids_verdicts.inc("unknown")
        return verdict


def build_analysis(app: Appliance) -> AnalysisComponent:
    return AnalysisComponent(app)
