"""GeoIP/ASN enrichment from MaxMind-format databases the test writes itself (mmdb-writer),
read by the maxminddb library as a site's GeoLite2 files would be."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mmdb_writer import MMDBWriter
from netaddr import IPSet

from appliance.analysis.geoip import GeoEnricher, asn_fields, city_fields, open_reader
from appliance.event import Event
from tests.ruletools import T0, fw
from tests.test_incidents_api import feed

LONDON = {
    "country": {"iso_code": "GB", "names": {"en": "United Kingdom"}},
    "continent": {"code": "EU"},
    "city": {"names": {"en": "London"}},
    "location": {"latitude": 51.5142, "longitude": -0.0931},
}


def write_databases(folder: Path) -> tuple[Path, Path]:
    city = MMDBWriter(ip_version=6, ipv4_compatible=True, database_type="GeoLite2-City")
    city.insert_network(IPSet(["81.2.69.0/24"]), LONDON)
    city.insert_network(
        IPSet(["2a02:c7f::/32"]), {"country": {"iso_code": "GB", "names": {"en": "UK"}}}
    )
    asn = MMDBWriter(
        ip_version=6, ipv4_compatible=True, database_type="GeoLite2-ASN", int_type="u32"
    )
    asn.insert_network(
        IPSet(["81.2.69.0/24"]),
        {"autonomous_system_number": 20712, "autonomous_system_organization": "Andrews & Arnold"},
    )
    paths = folder / "city.mmdb", folder / "asn.mmdb"
    city.to_db_file(str(paths[0]))
    asn.to_db_file(str(paths[1]))
    return paths


def test_city_and_asn_records_become_ecs_fields() -> None:
    assert dict(city_fields(LONDON)) == {
        "geo.country_iso_code": "GB",
        "geo.country_name": "United Kingdom",
        "geo.continent_code": "EU",
        "geo.city_name": "London",
        "geo.location.lat": 51.5142,
        "geo.location.lon": -0.0931,
    }
    assert asn_fields({"autonomous_system_number": 1, "autonomous_system_organization": "x"}) == [
        ("as.number", 1),
        ("as.organization.name", "x"),
    ]
    assert city_fields(None) == [] and asn_fields("garbage") == []


async def test_public_addresses_get_geo_and_as_fields_private_ones_do_not(
    tmp_path: Path,
) -> None:
    city, asn = write_databases(tmp_path)
    stage = GeoEnricher(open_reader(city), open_reader(asn))
    outside = Event(T0, T0, "syslog", {"source.ip": "81.2.69.160", "destination.ip": "10.0.0.1"})
    v6 = Event(T0, T0, "syslog", {"source.ip": "2a02:c7f:1::9"})
    unknown = Event(T0, T0, "syslog", {"source.ip": "192.0.2.1"}, line=b"kept")
    await stage.process([outside, v6, unknown], T0)
    f = outside.fields
    assert f["source.geo.country_iso_code"] == "GB" and f["source.geo.city_name"] == "London"
    assert f["source.as.number"] == 20712
    assert f["source.as.organization.name"] == "Andrews & Arnold"
    assert not any(k.startswith("destination.geo") for k in f)
    assert outside.line is None  # changed: its stored line is encoded again
    assert v6.fields["source.geo.country_iso_code"] == "GB"
    assert unknown.line == b"kept" and "source.geo.country_iso_code" not in unknown.fields


async def test_the_appliance_stores_events_with_geo_fields(
    start_appliance: Any, tmp_path: Path
) -> None:
    write_databases(tmp_path)
    run = await start_appliance(
        analysis={"geoip_database": "city.mmdb", "asn_database": "asn.mmdb"}
    )
    await feed(run, [fw(0, "81.2.69.160", "10.0.0.1", 22)])
    (ev,) = (await run.get_json("/api/v1/events"))["events"]
    assert ev["source"]["geo"]["country_iso_code"] == "GB"
    assert ev["source"]["as"]["number"] == 20712


async def test_a_database_that_cannot_be_opened_is_counted_and_ingest_goes_on(
    start_appliance: Any, tmp_path: Path
) -> None:
    (tmp_path / "broken.mmdb").write_bytes(b"not a maxmind database")
    run = await start_appliance(analysis={"geoip_database": "broken.mmdb"})
    assert 'appliance_geoip_errors_total{reason="open"} 1' in await run.metrics()
    await feed(run, [fw(0, "81.2.69.160", "10.0.0.1", 22)])
