"""The asset inventory: which network or address is what, whose, in which zone, how critical.

Sources are the files a site already has: a CSV or TOML list, Nmap XML (hosts, names, OS
guess, open ports) and the hosts of vulnerability scan reports (``appliance.analysis.vulns``).
Entries for the same network from several files are merged field by field, the first file that
sets a field winning (the site's own list comes before the scanners, see ``context``), and
open services are united.

Lookup is longest-prefix match over IPv4 and IPv6 networks. The index keeps one dict per prefix
length present, keyed by the masked address as an integer, and probes the lengths longest first:
an inventory has few distinct lengths (/32, /24, /16, ...), so a lookup is a handful of dict
probes, whatever the number of entries (``scripts/bench analysis-assets``).
"""

from __future__ import annotations

import csv
import io
import ipaddress
import socket
import tomllib
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from typing import Any
from xml.etree.ElementTree import Element

ZONES = ("internal", "dmz", "guest", "external")
INTERNAL_ZONES = frozenset({"internal", "dmz", "guest"})  # the site's side of the boundary
CRITICALITY = range(1, 6)
MAX_FIELD = 200  # characters kept of a name, owner or OS string


class AssetFileError(ValueError):
    """A file (or one of its entries) that cannot be read as an asset list; says where."""


@dataclass(frozen=True, slots=True)
class Service:
    """An open port: ``port`` 0 when only the service name is known."""

    port: int
    proto: str = "tcp"
    name: str = ""


@dataclass(frozen=True, slots=True)
class Asset:
    network: str  # "192.0.2.10/32", "10.1.0.0/16", "2001:db8::/64"
    name: str = ""
    owner: str = ""
    zone: str = ""  # one of ZONES, or "" when the file does not say
    criticality: int | None = None  # 1 (lowest) .. 5 (most critical)
    os: str = ""
    services: tuple[Service, ...] = ()
    # Covered by a vulnerability scan: a CVE the scan does not list is one the host lacks.
    scanned: bool = False
    sources: tuple[str, ...] = ()  # the files that said something about it

    def merged(self, other: Asset) -> Asset:
        """This entry, with the fields it lacks taken from ``other`` and services united."""
        services = self.services + tuple(s for s in other.services if s not in self.services)
        return replace(
            self,
            name=self.name or other.name,
            owner=self.owner or other.owner,
            zone=self.zone or other.zone,
            criticality=self.criticality if self.criticality is not None else other.criticality,
            os=self.os or other.os,
            services=services,
            scanned=self.scanned or other.scanned,
            sources=self.sources + tuple(s for s in other.sources if s not in self.sources),
        )

    def has_port(self, port: int, proto: str | None = None) -> bool:
        return any(
            s.port == port and (proto is None or not s.proto or s.proto == proto)
            for s in self.services
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "network": self.network,
            "name": self.name,
            "owner": self.owner,
            "zone": self.zone,
            "criticality": self.criticality,
            "os": self.os,
            "services": [
                f"{s.port}/{s.proto}" + (f" {s.name}" if s.name else "") for s in self.services
            ],
            "scanned": self.scanned,
        }


# ------------------------------------------------------------------------------------ parsing


def _network(text: str, where: str) -> str:
    try:
        return str(ipaddress.ip_network(text.strip(), strict=False))
    except ValueError:
        raise AssetFileError(f"{where}: {text!r} is not an IP address or network") from None


def _criticality(value: Any, where: str) -> int | None:
    if value is None or value == "":
        return None
    try:
        n = int(value)
    except (TypeError, ValueError):
        raise AssetFileError(f"{where}: criticality {value!r} is not a number 1-5") from None
    if n not in CRITICALITY or isinstance(value, bool):
        raise AssetFileError(f"{where}: criticality {value!r} is not a number 1-5")
    return n


def _zone(value: Any, where: str) -> str:
    if value is None or value == "":
        return ""
    zone = str(value).strip().lower()
    if zone not in ZONES:
        raise AssetFileError(f"{where}: zone {value!r} is not one of {', '.join(ZONES)}")
    return zone


def parse_services(text: str, where: str = "services") -> tuple[Service, ...]:
    """``"22/tcp ssh; 443/tcp https; 53/udp; smtp"``: entries split by ``;`` or ``,``, each a
    ``port/proto`` (proto defaults to tcp) with an optional name, or a bare service name."""
    out: list[Service] = []
    for raw in text.replace(",", ";").split(";"):
        entry = raw.strip()
        if not entry:
            continue
        head, _, name = entry.partition(" ")
        port_text, _, proto = head.partition("/")
        if port_text.isdigit():
            port = int(port_text)
            if not 0 < port < 65536:
                raise AssetFileError(f"{where}: port {port} out of range")
            out.append(Service(port, (proto or "tcp").lower(), name.strip()[:MAX_FIELD]))
        else:
            out.append(Service(0, "", entry[:MAX_FIELD]))
    return tuple(out)


def _entry(row: dict[str, Any], where: str, source: str) -> Asset:
    addr = row.get("cidr") or row.get("ip") or row.get("network")
    if not addr:
        raise AssetFileError(f"{where}: no ip or cidr")
    services = row.get("services") or ""
    if isinstance(services, str):
        parsed = parse_services(services, f"{where}: services")
    elif isinstance(services, list):
        parsed = parse_services(";".join(str(s) for s in services), f"{where}: services")
    else:
        raise AssetFileError(f"{where}: services must be a string or a list")
    return Asset(
        network=_network(str(addr), where),
        name=str(row.get("name") or "")[:MAX_FIELD],
        owner=str(row.get("owner") or "")[:MAX_FIELD],
        zone=_zone(row.get("zone"), where),
        criticality=_criticality(row.get("criticality"), where),
        os=str(row.get("os") or "")[:MAX_FIELD],
        services=parsed,
        sources=(source,),
    )


def parse_csv(text: str, source: str = "csv") -> list[Asset]:
    """A CSV with a header row: ``ip`` or ``cidr``, and any of ``name, owner, zone,
    criticality, os, services``; other columns are ignored, ``#`` lines are comments."""
    lines = [ln for ln in text.splitlines() if ln.strip() and not ln.lstrip().startswith("#")]
    reader = csv.DictReader(io.StringIO("\n".join(lines)))
    header = [h.strip().lower() for h in (reader.fieldnames or [])]
    if "ip" not in header and "cidr" not in header:
        raise AssetFileError(f"{source}: the header has no ip or cidr column")
    reader.fieldnames = header
    out = []
    for n, row in enumerate(reader, start=2):
        out.append(
            _entry({k: (v or "").strip() for k, v in row.items() if k}, f"{source}:{n}", source)
        )
    return out


def parse_toml(text: str, source: str = "toml") -> list[Asset]:
    """``[[asset]]`` tables with the CSV's keys (``services`` a string or a list)."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise AssetFileError(f"{source}: {exc}") from None
    tables = data.get("asset", data.get("assets"))
    if not isinstance(tables, list):
        raise AssetFileError(f"{source}: expected [[asset]] tables")
    out = []
    for i, table in enumerate(tables):
        if not isinstance(table, dict):
            raise AssetFileError(f"{source}: asset[{i}] is not a table")
        out.append(_entry(table, f"{source}: asset[{i}]", source))
    return out


def nmap_hosts(root: Element, source: str = "nmap", *, scanned: bool = False) -> list[Asset]:
    """The up hosts of an Nmap XML report (``nmap -oX``): addresses, first hostname, best OS
    match and open ports with their service names. ``scanned`` marks them as covered by a
    vulnerability scan (the report ran the ``vulners`` script)."""
    out = []
    for host in root.iter("host"):
        status = host.find("status")
        if status is not None and status.get("state") not in (None, "up"):
            continue
        addrs = [
            a.get("addr", "")
            for a in host.findall("address")
            if a.get("addrtype") in ("ipv4", "ipv6")
        ]
        if not addrs:
            continue
        hn = host.find("hostnames/hostname")
        osmatch = host.find("os/osmatch")
        services = []
        for port in host.findall("ports/port"):
            state = port.find("state")
            if state is None or state.get("state") != "open":
                continue
            svc = port.find("service")
            try:
                number = int(port.get("portid", ""))
            except ValueError:
                continue
            services.append(
                Service(
                    number,
                    port.get("protocol", "tcp"),
                    (svc.get("name", "") if svc is not None else "")[:MAX_FIELD],
                )
            )
        for addr in addrs:
            out.append(
                Asset(
                    network=_network(addr, source),
                    name=(hn.get("name", "") if hn is not None else "")[:MAX_FIELD],
                    os=(osmatch.get("name", "") if osmatch is not None else "")[:MAX_FIELD],
                    services=tuple(services),
                    scanned=scanned,
                    sources=(source,),
                )
            )
    return out


def merge(assets: Iterable[Asset]) -> list[Asset]:
    """One entry per network, earlier entries' fields winning (see the module docstring)."""
    by_net: dict[str, Asset] = {}
    for a in assets:
        old = by_net.get(a.network)
        by_net[a.network] = a if old is None else old.merged(a)
    return list(by_net.values())


# ------------------------------------------------------------------------------------- lookup


def ip_int(text: str) -> tuple[int, int] | None:
    """``(version, integer)`` of an address string, ``None`` when it is not one."""
    try:
        if ":" in text:
            return 6, int.from_bytes(socket.inet_pton(socket.AF_INET6, text.split("%", 1)[0]))
        return 4, int.from_bytes(socket.inet_pton(socket.AF_INET, text))
    except (OSError, ValueError):
        return None


@dataclass(slots=True)
class _Family:
    bits: int
    # prefix length -> {network address as int -> asset}, probed longest first
    tables: list[tuple[int, int, dict[int, Asset]]] = field(default_factory=list)


class AssetIndex:
    """Longest-prefix match from an address to its asset (see the module docstring)."""

    CACHE_MAX = 65_536  # recent addresses remembered (hit or miss); cleared when full

    def __init__(self, assets: Iterable[Asset] = ()) -> None:
        self.assets = merge(assets)
        fams = {4: _Family(32), 6: _Family(128)}
        by_len: dict[tuple[int, int], dict[int, Asset]] = {}
        for a in self.assets:
            net = ipaddress.ip_network(a.network)
            by_len.setdefault((net.version, net.prefixlen), {})[int(net.network_address)] = a
        for (version, plen), table in sorted(by_len.items(), key=lambda kv: -kv[0][1]):
            fam = fams[version]
            mask = ((1 << plen) - 1) << (fam.bits - plen) if plen else 0
            fam.tables.append((plen, mask, table))
        self._families = fams
        self._cache: dict[str, Asset | None] = {}

    def __len__(self) -> int:
        return len(self.assets)

    def lookup(self, address: str) -> Asset | None:
        cache = self._cache
        try:
            return cache[address]
        except KeyError:
            pass
        found = None
        parsed = ip_int(address)
        if parsed is not None:
            version, n = parsed
            for _plen, mask, table in self._families[version].tables:
                found = table.get(n & mask)
                if found is not None:
                    break
        if len(cache) >= self.CACHE_MAX:
            cache.clear()
        cache[address] = found
        return found
