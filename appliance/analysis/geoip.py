"""GeoIP and ASN enrichment from user-provided MaxMind-format databases (optional).

``analysis.geoip_database`` (GeoLite2/GeoIP2 City or Country, or any MMDB with their record
shape: ``country.iso_code``, ``country.names.en``, ``city.names.en``, ``continent.code``,
``location.latitude/longitude``) and ``analysis.asn_database`` (GeoLite2 ASN shape:
``autonomous_system_number``, ``autonomous_system_organization``) stamp ECS ``source.geo.*``,
``source.as.*`` and the same for ``destination``. The ``maxminddb`` library reads them (its C
extension memory-maps the file); answers are cached per address (bounded), since a site's
traffic comes from the same addresses again and again. Private, loopback and link-local
addresses are never in these databases and are not looked up.

A database that cannot be opened is logged and counted and leaves the stage off; the files
are re-opened on SIGHUP when their path or modification time changed.
"""

from __future__ import annotations

import ipaddress
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

import maxminddb

from appliance.config import AppConfig
from appliance.event import Event
from appliance.logutil import RateLimitedLog

if TYPE_CHECKING:
    from appliance.app import Appliance

log = logging.getLogger(__name__)
_rl = RateLimitedLog(log)

SIDES = ("source", "destination")
CACHE_SIZE = 65_536
Fields = tuple[tuple[str, Any], ...]  # (field suffix, value) pairs stamped under a side


def city_fields(rec: Any) -> list[tuple[str, Any]]:
    """The ECS ``geo.*`` fields of a City/Country record (pure)."""
    if not isinstance(rec, dict):
        return []
    out: list[tuple[str, Any]] = []
    country = rec.get("country") or rec.get("registered_country")
    if isinstance(country, dict):
        if isinstance(country.get("iso_code"), str):
            out.append(("geo.country_iso_code", country["iso_code"]))
        name = (country.get("names") or {}).get("en")
        if isinstance(name, str):
            out.append(("geo.country_name", name))
    continent = rec.get("continent")
    if isinstance(continent, dict) and isinstance(continent.get("code"), str):
        out.append(("geo.continent_code", continent["code"]))
    city = rec.get("city")
    if isinstance(city, dict):
        name = (city.get("names") or {}).get("en")
        if isinstance(name, str):
            out.append(("geo.city_name", name))
    loc = rec.get("location")
    if isinstance(loc, dict):
        lat, lon = loc.get("latitude"), loc.get("longitude")
        if isinstance(lat, int | float) and isinstance(lon, int | float):
            out.append(("geo.location.lat", float(lat)))
            out.append(("geo.location.lon", float(lon)))
    return out


def asn_fields(rec: Any) -> list[tuple[str, Any]]:
    """The ECS ``as.*`` fields of an ASN record (pure)."""
    if not isinstance(rec, dict):
        return []
    out: list[tuple[str, Any]] = []
    number = rec.get("autonomous_system_number")
    if isinstance(number, int) and not isinstance(number, bool):
        out.append(("as.number", number))
    org = rec.get("autonomous_system_organization")
    if isinstance(org, str):
        out.append(("as.organization.name", org))
    return out


def _public(address: str) -> bool:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return ip.is_global


class GeoEnricher:
    """The ``before_store`` stage: geo and AS fields for public source/destination addresses."""

    name = "geoip"

    def __init__(
        self,
        city: maxminddb.Reader | None,
        asn: maxminddb.Reader | None,
        errors: Any = None,
    ) -> None:
        self.city = city
        self.asn = asn
        self._cache: dict[str, Fields] = {}
        self.errors = errors  # a Counter by reason, or None

    def lookup(self, address: str) -> Fields:
        """The fields for one address (cached; empty for private or unknown ones)."""
        cached = self._cache.get(address)
        if cached is not None:
            return cached
        fields: list[tuple[str, Any]] = []
        if _public(address):
            try:
                if self.city is not None:
                    fields.extend(city_fields(self.city.get(address)))
                if self.asn is not None:
                    fields.extend(asn_fields(self.asn.get(address)))
            except (ValueError, maxminddb.InvalidDatabaseError) as exc:
                if self.errors is not None:
                    self.errors.inc("lookup")
                _rl.warning("lookup", "geoip lookup failed for %s: %s", address, exc)
        result = tuple(fields)
        if len(self._cache) >= CACHE_SIZE:
            self._cache.clear()
        self._cache[address] = result
        return result

    async def process(self, events: list[Event], now: float) -> None:
        if self.city is None and self.asn is None:
            return
        lookup = self.lookup
        for ev in events:
            f = ev.fields
            changed = False
            for side in SIDES:
                v = f.get(side + ".ip")
                if not isinstance(v, str) or (side + ".geo.country_iso_code") in f:
                    continue
                for suffix, value in lookup(v):
                    f[f"{side}.{suffix}"] = value
                    changed = True
            if changed:
                ev.changed()


def open_reader(path: Path) -> maxminddb.Reader:
    return maxminddb.open_database(str(path), maxminddb.MODE_AUTO)


def _stamp(path: Path | None) -> tuple[str, float] | None:
    if path is None:
        return None
    try:
        return (str(path), path.stat().st_mtime)
    except OSError:
        return (str(path), -1.0)


class GeoComponent:
    name = "geoip"

    def __init__(self, app: Appliance) -> None:
        self.app = app
        self.errors = app.metrics.counter(
            "geoip_errors_total", "GeoIP/ASN database problems, by reason.", ["reason"]
        )
        self.stage = GeoEnricher(None, None, self.errors)
        self.database_types: dict[str, str] = {}
        self._stamps: tuple[Any, Any] = (None, None)

    def _paths(self, config: AppConfig) -> tuple[Path | None, Path | None]:
        a = config.analysis
        return (
            config.path(a.geoip_database) if a.geoip_database else None,
            config.path(a.asn_database) if a.asn_database else None,
        )

    def _open(self, config: AppConfig) -> None:
        city_path, asn_path = self._paths(config)
        stamps = (_stamp(city_path), _stamp(asn_path))
        if stamps == self._stamps:
            return
        readers: list[maxminddb.Reader | None] = []
        types: dict[str, str] = {}
        for kind, path in (("geoip", city_path), ("asn", asn_path)):
            if path is None:
                readers.append(None)
                continue
            try:
                reader = open_reader(path)
            except (OSError, ValueError, maxminddb.InvalidDatabaseError) as exc:
                self.errors.inc("open")
                log.error("analysis.%s_database %s: cannot open: %s", kind, path, exc)
                readers.append(None)
                continue
            types[kind] = str(reader.metadata().database_type)
            readers.append(reader)
        old = self.stage
        self.stage.city, self.stage.asn = readers[0], readers[1]
        self.stage._cache = {}
        for r in (old.city, old.asn):
            if r is not None and r not in readers:
                r.close()
        self.database_types, self._stamps = types, stamps
        if types:
            log.info("geoip: %s", ", ".join(f"{k}={v}" for k, v in types.items()))

    async def start(self) -> None:
        self._open(self.app.config)
        if self.stage not in self.app.pipeline.before_store:
            # First among the enrichments: intel and baselines may read the geo fields.
            self.app.pipeline.before_store.insert(0, self.stage)

    async def reload(self, config: AppConfig) -> None:
        self._open(config)

    async def stop(self) -> None:
        if self.stage in self.app.pipeline.before_store:
            self.app.pipeline.before_store.remove(self.stage)
        for r in (self.stage.city, self.stage.asn):
            if r is not None:
                r.close()
        self.stage.city = self.stage.asn = None
        self._stamps = (None, None)


def build_geoip(app: Appliance) -> GeoComponent:
    return GeoComponent(app)
