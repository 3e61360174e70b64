"""Vulnerability data: which host has which CVE on which port, and what is known of each CVE.

Per-host findings come from scanner reports: Nessus ``.nessus`` (v2), OpenVAS/Greenbone XML
reports, and Nmap XML with the NSE ``vulners`` script. Facts about CVEs come from offline
catalog files: the CISA Known Exploited Vulnerabilities (KEV) catalog and NVD CVE JSON 2.0
(CVSS base score, publication date). Formats follow the vendors' public documentation; the
parsers take only the elements they need and ignore the rest, so newer versions still load.

Reports come from other machines and are XML: they are parsed with ``defusedxml``, which refuses
DTDs, entity expansion and external entities (billion laughs, XXE) instead of trusting them.
"""

from __future__ import annotations

import io
import ipaddress
import json
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from typing import Any, BinaryIO
from xml.etree.ElementTree import Element

import defusedxml.ElementTree as SafeET
from defusedxml import DefusedXmlException

from appliance.analysis.assets import MAX_FIELD, Asset, AssetFileError, ip_int, nmap_hosts

CVE_RE = re.compile(r"\bCVE-(\d{4})-(\d{4,7})\b", re.IGNORECASE)


class VulnFileError(ValueError):
    """A file that cannot be read as a scan report or catalog; says where and why."""


@dataclass(frozen=True, slots=True)
class Finding:
    """One CVE on one host, as a scanner reported it (``port`` 0 when not tied to a port)."""

    ip: str
    cve: str
    port: int = 0
    proto: str = ""
    service: str = ""
    cvss: float | None = None
    plugin: str = ""  # the scanner's check: Nessus plugin id, OpenVAS NVT OID, Nmap script
    source: str = ""


@dataclass(frozen=True, slots=True)
class CveInfo:
    cve: str
    cvss: float | None = None
    published: str = ""
    kev: bool = False
    kev_added: str = ""
    ransomware: bool = False  # KEV: knownRansomwareCampaignUse == "Known"
    name: str = ""

    def merged(self, other: CveInfo) -> CveInfo:
        return replace(
            self,
            cvss=self.cvss if self.cvss is not None else other.cvss,
            published=self.published or other.published,
            kev=self.kev or other.kev,
            kev_added=self.kev_added or other.kev_added,
            ransomware=self.ransomware or other.ransomware,
            name=self.name or other.name,
        )


@dataclass(slots=True)
class Report:
    """What one file contributed: scanned hosts, findings and CVE facts."""

    kind: str
    hosts: list[Asset] = field(default_factory=list)
    findings: list[Finding] = field(default_factory=list)
    cves: dict[str, CveInfo] = field(default_factory=dict)


def normalize_cve(text: str) -> str | None:
    m = CVE_RE.search(text)
    return f"CVE-{m.group(1)}-{m.group(2)}" if m else None


def _float(text: str | None) -> float | None:
    if text is None:
        return None
    try:
        value = float(text.strip())
    except ValueError:
        return None
    return value if 0.0 <= value <= 10.0 else None


def _ip(text: str) -> str | None:
    """The canonical form of an address (IPv6 compressed), ``None`` when not an address."""
    if ip_int(text.strip()) is None:
        return None
    return str(ipaddress.ip_address(text.strip()))


# ---------------------------------------------------------------------------------- Nessus


def parse_nessus(root: Element, source: str) -> Report:
    """``NessusClientData_v2``: ``Report/ReportHost`` (name, ``HostProperties`` tags host-ip,
    host-fqdn, operating-system) with ``ReportItem`` (port, protocol, svc_name, pluginID,
    ``cve`` elements, ``cvss3_base_score`` or ``cvss_base_score``)."""
    rep = Report("nessus")
    for host in root.iter("ReportHost"):
        props = {t.get("name", ""): (t.text or "").strip() for t in host.iter("tag")}
        ip = _ip(props.get("host-ip") or host.get("name") or "")
        if ip is None:
            continue
        rep.hosts.append(
            Asset(
                network=f"{ip}/{32 if ':' not in ip else 128}",
                name=(props.get("host-fqdn") or props.get("netbios-name") or "")[:MAX_FIELD],
                os=props.get("operating-system", "").split("\n")[0][:MAX_FIELD],
                scanned=True,
                sources=(source,),
            )
        )
        for item in host.iter("ReportItem"):
            cvss = _float(item.findtext("cvss3_base_score")) or _float(
                item.findtext("cvss_base_score")
            )
            try:
                port = int(item.get("port", "0"))
            except ValueError:
                port = 0
            for cve_el in item.iter("cve"):
                cve = normalize_cve(cve_el.text or "")
                if cve is None:
                    continue
                rep.findings.append(
                    Finding(
                        ip,
                        cve,
                        port,
                        item.get("protocol", ""),
                        item.get("svc_name", "")[:MAX_FIELD],
                        cvss,
                        f"nessus:{item.get('pluginID', '')}",
                        source,
                    )
                )
                if cvss is not None:
                    rep.cves.setdefault(cve, CveInfo(cve, cvss=cvss))
    return rep


# --------------------------------------------------------------------------------- OpenVAS


def _port(text: str) -> tuple[int, str]:
    """OpenVAS ``443/tcp`` or ``general/tcp`` → (port or 0, proto)."""
    head, _, proto = text.strip().partition("/")
    return (int(head) if head.isdigit() else 0), proto


def parse_openvas(root: Element, source: str) -> Report:
    """Greenbone/OpenVAS report XML (``get_reports`` response or an exported ``report``):
    ``result`` elements with ``host``, ``port`` (``443/tcp``), ``severity`` and ``nvt`` (oid,
    ``refs/ref type="cve"``, or the older comma list in ``nvt/cve``); hosts scanned are the
    report's ``host/ip`` entries plus every result's host."""
    rep = Report("openvas")
    seen: set[str] = set()

    def add_host(ip: str, name: str = "") -> None:
        if ip not in seen:
            seen.add(ip)
            bits = 128 if ":" in ip else 32
            rep.hosts.append(
                Asset(
                    network=f"{ip}/{bits}", name=name[:MAX_FIELD], scanned=True, sources=(source,)
                )
            )

    for host in root.iter("host"):
        ip = _ip(host.findtext("ip") or "")
        if ip is not None:
            add_host(ip)
    for result in root.iter("result"):
        host_el = result.find("host")
        if host_el is None:
            continue
        ip = _ip(host_el.text or "")
        if ip is None:
            continue
        add_host(ip, host_el.findtext("hostname") or "")
        nvt = result.find("nvt")
        if nvt is None:
            continue
        cves = [r.get("id", "") for r in nvt.iter("ref") if r.get("type", "").lower() == "cve"] or (
            nvt.findtext("cve") or ""
        ).split(",")
        cvss = _float(result.findtext("severity")) or _float(nvt.findtext("cvss_base"))
        port, proto = _port(result.findtext("port") or "")
        for text in cves:
            cve = normalize_cve(text)
            if cve is None:
                continue
            rep.findings.append(
                Finding(ip, cve, port, proto, "", cvss, f"openvas:{nvt.get('oid', '')}", source)
            )
            if cvss is not None:
                rep.cves.setdefault(cve, CveInfo(cve, cvss=cvss))
    return rep


# ------------------------------------------------------------------------------------ Nmap


def parse_nmap(root: Element, source: str) -> Report:
    """Nmap XML: the hosts (``assets.nmap_hosts``) and, per open port, the CVEs the NSE
    ``vulners`` script listed (``script id="vulners"``: tables of ``id``, ``type``, ``cvss``).
    A report that ran ``vulners`` counts as a vulnerability scan of its hosts."""
    rep = Report("nmap")
    rep.hosts = nmap_hosts(root, source)  # scanned: set by the caller that sees the whole run
    for host in root.iter("host"):
        ips = [
            ip
            for a in host.findall("address")
            if a.get("addrtype") in ("ipv4", "ipv6") and (ip := _ip(a.get("addr", ""))) is not None
        ]
        for port in host.findall("ports/port"):
            svc = port.find("service")
            name = svc.get("name", "") if svc is not None else ""
            try:
                number = int(port.get("portid", "0"))
            except ValueError:
                number = 0
            for script in port.findall("script"):
                if script.get("id") != "vulners":
                    continue
                for entry in script.iter("table"):
                    elems = {e.get("key", ""): (e.text or "") for e in entry.findall("elem")}
                    if elems.get("type", "cve").lower() != "cve":
                        continue
                    cve = normalize_cve(elems.get("id", ""))
                    if cve is None:
                        continue
                    cvss = _float(elems.get("cvss"))
                    for ip in ips:
                        rep.findings.append(
                            Finding(
                                ip,
                                cve,
                                number,
                                port.get("protocol", "tcp"),
                                name[:MAX_FIELD],
                                cvss,
                                "nmap:vulners",
                                source,
                            )
                        )
                    if cvss is not None:
                        rep.cves.setdefault(cve, CveInfo(cve, cvss=cvss))
    return rep


# -------------------------------------------------------------------------------- catalogs


def parse_kev(data: dict[str, Any], source: str) -> Report:
    """CISA KEV catalog JSON: ``vulnerabilities`` of ``cveID``, ``dateAdded``,
    ``knownRansomwareCampaignUse`` ("Known" | "Unknown"), ``vulnerabilityName``."""
    rep = Report("kev")
    for i, v in enumerate(data.get("vulnerabilities") or []):
        if not isinstance(v, dict):
            raise VulnFileError(f"{source}: vulnerabilities[{i}] is not an object")
        cve = normalize_cve(str(v.get("cveID", "")))
        if cve is None:
            raise VulnFileError(f"{source}: vulnerabilities[{i}] has no cveID")
        rep.cves[cve] = CveInfo(
            cve,
            kev=True,
            kev_added=str(v.get("dateAdded", ""))[:32],
            ransomware=str(v.get("knownRansomwareCampaignUse", "")).lower() == "known",
            name=str(v.get("vulnerabilityName", ""))[:MAX_FIELD],
        )
    return rep


def _nvd_score(metrics: dict[str, Any]) -> float | None:
    """The primary CVSS v3.1 base score, else v3.0, else v4.0, else v2."""
    for key in ("cvssMetricV31", "cvssMetricV30", "cvssMetricV40", "cvssMetricV2"):
        entries = metrics.get(key)
        if not isinstance(entries, list) or not entries:
            continue
        primary = [e for e in entries if isinstance(e, dict) and e.get("type") == "Primary"]
        for e in primary or entries:
            data = e.get("cvssData") if isinstance(e, dict) else None
            if isinstance(data, dict):
                score = _float(str(data.get("baseScore", "")))
                if score is not None:
                    return score
    return None


def parse_nvd(data: dict[str, Any], source: str) -> Report:
    """NVD CVE API 2.0 JSON (a saved response or feed file): ``vulnerabilities[].cve`` with
    ``id``, ``published`` and ``metrics``."""
    rep = Report("nvd")
    for i, v in enumerate(data.get("vulnerabilities") or []):
        cve_obj = v.get("cve") if isinstance(v, dict) else None
        if not isinstance(cve_obj, dict):
            raise VulnFileError(f"{source}: vulnerabilities[{i}] has no cve object")
        cve = normalize_cve(str(cve_obj.get("id", "")))
        if cve is None:
            raise VulnFileError(f"{source}: vulnerabilities[{i}] has no CVE id")
        metrics = cve_obj.get("metrics")
        rep.cves[cve] = CveInfo(
            cve,
            cvss=_nvd_score(metrics) if isinstance(metrics, dict) else None,
            published=str(cve_obj.get("published", ""))[:32],
        )
    return rep


def parse_json_catalog(text: str | bytes, source: str) -> Report:
    """A KEV catalog or an NVD CVE 2.0 file, told apart by their entries' shape."""
    try:
        data = json.loads(text)
    except (ValueError, UnicodeDecodeError) as exc:
        raise VulnFileError(f"{source}: not JSON ({exc})") from None
    if not isinstance(data, dict) or not isinstance(data.get("vulnerabilities"), list):
        raise VulnFileError(f"{source}: expected an object with a vulnerabilities list")
    entries = data["vulnerabilities"]
    first = entries[0] if entries else {}
    if (isinstance(first, dict) and "cve" in first) or data.get("format") == "NVD_CVE":
        return parse_nvd(data, source)
    return parse_kev(data, source)


# Per root element: the report kind, the element that holds one unit of it (a host, a result)
# and the parser of one unit. Units are parsed as they end and then cleared, so a report of
# any size takes the memory of one host, not of the whole tree.
_UNITS: dict[str, tuple[str, str, Callable[[Element, str], Report]]] = {
    "NessusClientData_v2": ("nessus", "ReportHost", lambda el, src: parse_nessus(el, src)),
    "nmaprun": ("nmap", "host", lambda el, src: parse_nmap(el, src)),
    "report": ("openvas", "result host", lambda el, src: parse_openvas(el, src)),
    "get_reports_response": ("openvas", "result host", lambda el, src: parse_openvas(el, src)),
}


def parse_report_xml(data: bytes | BinaryIO, source: str) -> Report:
    """A scanner report, told apart by its root element, read as a stream (see ``_UNITS``)."""
    stream = io.BytesIO(data) if isinstance(data, bytes | bytearray) else data
    try:
        events = SafeET.iterparse(stream, events=("start", "end"), forbid_dtd=True)
        _, root = next(events)
        unit = _UNITS.get(root.tag)
        if unit is None:
            raise VulnFileError(f"{source}: unknown XML report <{root.tag}>")
        kind, tags, parse = unit
        unit_tags = set(tags.split())
        rep = Report(kind)
        seen_hosts: set[str] = set()
        ran_vulners = "vulners" in root.get("args", "")
        inside = 0  # open unit elements: one nested in another (a result's host) is its part
        for event, el in events:
            if el.tag not in unit_tags:
                continue
            if event == "start":
                inside += 1
                continue
            inside -= 1
            if inside:
                continue
            part = parse(el, source)
            ran_vulners = ran_vulners or any(s.get("id") == "vulners" for s in el.iter("script"))
            el.clear()
            for host in part.hosts:
                if host.network not in seen_hosts:
                    seen_hosts.add(host.network)
                    rep.hosts.append(host)
            rep.findings += part.findings
            for cve, info in part.cves.items():
                rep.cves.setdefault(cve, info)
    except DefusedXmlException as exc:
        raise VulnFileError(
            f"{source}: refused ({type(exc).__name__}: DTDs and entities are not accepted)"
        ) from None
    except SafeET.ParseError as exc:
        raise VulnFileError(f"{source}: not well-formed XML ({exc})") from None
    except StopIteration:
        raise VulnFileError(f"{source}: empty XML") from None
    except (LookupError, ValueError) as exc:  # an encoding Python lacks (found by fuzzing)
        if isinstance(exc, VulnFileError | AssetFileError):
            raise VulnFileError(str(exc)) from None
        raise VulnFileError(f"{source}: unreadable XML ({exc})") from None
    if kind == "nmap" and ran_vulners:  # the whole report was a vulnerability scan
        rep.hosts = [replace(h, scanned=True) for h in rep.hosts]
    return rep


# ----------------------------------------------------------------------------------- index


class VulnIndex:
    """Findings by host and CVE facts by id, merged from every loaded report and catalog."""

    def __init__(self, reports: Iterable[Report] = ()) -> None:
        reports = list(reports)
        self.by_host: dict[tuple[int, int], dict[str, list[Finding]]] = {}
        self.cves: dict[str, CveInfo] = {}
        self.findings = 0
        for rep in reports:
            for f in rep.findings:
                key = ip_int(f.ip)
                if key is None:
                    continue
                per_cve = self.by_host.setdefault(key, {}).setdefault(f.cve, [])
                if f not in per_cve:
                    per_cve.append(f)
                    self.findings += 1
        # Catalogs first (NVD's score is the reference), scanners' own scores fill the gaps.
        order = sorted(reports, key=lambda r: r.kind not in ("kev", "nvd"))
        for rep in order:
            for cve, info in rep.cves.items():
                old = self.cves.get(cve)
                self.cves[cve] = info if old is None else old.merged(info)

    def host_findings(self, address: str, cve: str) -> list[Finding]:
        key = ip_int(address)
        if key is None:
            return []
        return self.by_host.get(key, {}).get(cve, [])

    def host_cves(self, address: str) -> dict[str, list[Finding]]:
        key = ip_int(address)
        return {} if key is None else self.by_host.get(key, {})

    def info(self, cve: str) -> CveInfo | None:
        return self.cves.get(cve)

    @property
    def kev_count(self) -> int:
        return sum(1 for c in self.cves.values() if c.kev)
