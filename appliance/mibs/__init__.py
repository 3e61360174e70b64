"""OID → name resolution for traps: a small built-in table for the standard notifications, plus
user MIBs compiled with pysmi into a JSON cache (``appliance mibs compile``).

Why not load MIBs into pysnmp's MIB builder at run time: that costs seconds at start and
megabytes of objects for what a trap receiver needs, which is one dictionary from OID to name.
Unknown OIDs stay numeric; resolution never fails.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Mapping
from pathlib import Path

log = logging.getLogger(__name__)

INDEX_FILE = "oid-names.json"

# Where net-snmp keeps MIB files (snmp-mibs-downloader puts the IETF/IANA base modules in the
# sub-folders): searched for the modules user MIBs import (SNMPv2-SMI, SNMPv2-TC, ...).
SYSTEM_MIB_DIRS = [
    Path("/usr/share/snmp/mibs"),
    Path("/usr/share/snmp/mibs/ietf"),
    Path("/usr/share/snmp/mibs/iana"),
    Path("/var/lib/mibs/ietf"),
    Path("/var/lib/mibs/iana"),
]

# The standard notifications and the objects they carry (SNMPv2-MIB, IF-MIB, ENTITY-MIB,
# BGP4-MIB, SNMP-COMMUNITY-MIB), so a box with no MIB folder still names what matters.
BUILTIN_NAMES: dict[str, str] = {
    # SNMPv2-MIB
    "1.3.6.1.2.1.1.1": "sysDescr",
    "1.3.6.1.2.1.1.2": "sysObjectID",
    "1.3.6.1.2.1.1.3": "sysUpTime",
    "1.3.6.1.2.1.1.4": "sysContact",
    "1.3.6.1.2.1.1.5": "sysName",
    "1.3.6.1.2.1.1.6": "sysLocation",
    "1.3.6.1.6.3.1.1.4.1": "snmpTrapOID",
    "1.3.6.1.6.3.1.1.4.3": "snmpTrapEnterprise",
    "1.3.6.1.6.3.1.1.5.1": "coldStart",
    "1.3.6.1.6.3.1.1.5.2": "warmStart",
    "1.3.6.1.6.3.1.1.5.3": "linkDown",
    "1.3.6.1.6.3.1.1.5.4": "linkUp",
    "1.3.6.1.6.3.1.1.5.5": "authenticationFailure",
    "1.3.6.1.6.3.1.1.5.6": "egpNeighborLoss",
    # SNMP-COMMUNITY-MIB (RFC 3584 proxy varbinds)
    "1.3.6.1.6.3.18.1.3": "snmpTrapAddress",
    "1.3.6.1.6.3.18.1.4": "snmpTrapCommunity",
    # IF-MIB
    "1.3.6.1.2.1.2.2.1.1": "ifIndex",
    "1.3.6.1.2.1.2.2.1.2": "ifDescr",
    "1.3.6.1.2.1.2.2.1.3": "ifType",
    "1.3.6.1.2.1.2.2.1.4": "ifMtu",
    "1.3.6.1.2.1.2.2.1.5": "ifSpeed",
    "1.3.6.1.2.1.2.2.1.6": "ifPhysAddress",
    "1.3.6.1.2.1.2.2.1.7": "ifAdminStatus",
    "1.3.6.1.2.1.2.2.1.8": "ifOperStatus",
    "1.3.6.1.2.1.2.2.1.9": "ifLastChange",
    "1.3.6.1.2.1.31.1.1.1.1": "ifName",
    "1.3.6.1.2.1.31.1.1.1.18": "ifAlias",
    # ENTITY-MIB
    "1.3.6.1.2.1.47.2.0.1": "entConfigChange",
    # BGP4-MIB (v1-style TRAP-TYPE numbering and the RFC 4273 v2 notifications)
    "1.3.6.1.2.1.15.7.1": "bgpEstablished",
    "1.3.6.1.2.1.15.7.2": "bgpBackwardTransition",
    "1.3.6.1.2.1.15.0.1": "bgpEstablishedNotification",
    "1.3.6.1.2.1.15.0.2": "bgpBackwardTransNotification",
    "1.3.6.1.2.1.15.3.1.2": "bgpPeerState",
    "1.3.6.1.2.1.15.3.1.7": "bgpPeerRemoteAddr",
    "1.3.6.1.2.1.15.3.1.14": "bgpPeerLastError",
}

# Default severities (syslog names) by notification name; config overrides by name or OID.
DEFAULT_SEVERITIES: dict[str, str] = {
    "coldStart": "warning",
    "warmStart": "notice",
    "linkDown": "error",
    "linkUp": "notice",
    "authenticationFailure": "warning",
    "egpNeighborLoss": "warning",
    "entConfigChange": "notice",
    "bgpEstablished": "notice",
    "bgpEstablishedNotification": "notice",
    "bgpBackwardTransition": "error",
    "bgpBackwardTransNotification": "error",
}


class MibResolver:
    """OID text → name. ``name`` is exact (notification names); ``resolve`` finds the longest
    known prefix and keeps the instance suffix (``ifDescr.2``), else returns the OID."""

    MAX_CACHE = 65_536
    MAX_SUFFIX_ARCS = 16  # instance suffixes are short; stop walking up after this many

    def __init__(self, names: Mapping[str, str] | None = None) -> None:
        self.names: dict[str, str] = dict(BUILTIN_NAMES)
        if names:
            self.names.update(names)
        self._cache: dict[str, str] = {}

    def name(self, oid: str) -> str | None:
        return self.names.get(oid)

    def resolve(self, oid: str) -> str:
        hit = self._cache.get(oid)
        if hit is not None:
            return hit
        names = self.names
        result = oid
        prefix = oid
        for _ in range(self.MAX_SUFFIX_ARCS + 1):
            name = names.get(prefix)
            if name is not None:
                result = name + oid[len(prefix) :]
                break
            prefix, sep, _arc = prefix.rpartition(".")
            if not sep:
                break
        if len(self._cache) >= self.MAX_CACHE:
            self._cache.clear()
        self._cache[oid] = result
        return result


def load_index(cache_dir: Path) -> dict[str, str]:
    """The OID → name index written by :func:`compile_mibs`; empty when there is none."""
    path = cache_dir / INDEX_FILE
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        log.warning("MIB name cache %s is unreadable (%s): run `appliance mibs compile`", path, exc)
        return {}
    return {str(k): str(v) for k, v in data.items()} if isinstance(data, dict) else {}


def _mib_names(source_dir: Path) -> list[str]:
    return sorted(
        {p.name.split(".")[0] for p in source_dir.iterdir() if p.is_file() and p.name[0] != "."}
    )


def compile_mibs(
    source_dirs: Iterable[Path],
    cache_dir: Path,
    dependency_dirs: Iterable[Path] = SYSTEM_MIB_DIRS,
) -> dict[str, str]:
    """Compile every MIB file in ``source_dirs`` with pysmi to JSON in ``cache_dir``, then write
    the OID → name index the trap source loads. Imported modules are looked up in the same
    folders, then in ``dependency_dirs``. Returns {module: status} from pysmi."""
    from pysmi.codegen import JsonCodeGen
    from pysmi.compiler import MibCompiler
    from pysmi.parser import SmiStarParser
    from pysmi.reader import FileReader
    from pysmi.writer import FileWriter

    cache_dir.mkdir(parents=True, exist_ok=True)
    json_dir = cache_dir / "json"
    json_dir.mkdir(exist_ok=True)
    compiler = MibCompiler(
        SmiStarParser(), JsonCodeGen(), FileWriter(str(json_dir)).set_options(suffix=".json")
    )
    names: list[str] = []
    for src in source_dirs:
        compiler.add_sources(FileReader(str(src)))
        names.extend(_mib_names(src))
    for dep in dependency_dirs:
        if dep.is_dir():
            compiler.add_sources(FileReader(str(dep)))
    results = compiler.compile(*names, genTexts=False, ignoreErrors=True, rebuild=True)
    index: dict[str, str] = {}
    for path in sorted(json_dir.glob("*.json")):
        try:
            doc = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        for entry in doc.values():
            if isinstance(entry, dict) and isinstance(entry.get("oid"), str) and entry.get("name"):
                index.setdefault(entry["oid"], str(entry["name"]))
    tmp = cache_dir / (INDEX_FILE + ".tmp")
    tmp.write_text(json.dumps(index, sort_keys=True), encoding="utf-8")
    tmp.replace(cache_dir / INDEX_FILE)
    return {str(k): str(v) for k, v in results.items()}
