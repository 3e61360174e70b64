"""The enrichment stage in a running appliance: which events it stamps and how (issue 16)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from appliance.analysis.context import AnalysisComponent
from appliance.event import Event
from tests.conftest import TOKEN

DATA = Path(__file__).parent / "data" / "analysis"


def component(run: Any) -> AnalysisComponent:
    return next(c for c in run.app.components if isinstance(c, AnalysisComponent))


def event(module: str, src: str, dst: str, **extra: Any) -> Event:
    return Event(1.0, 1.0, module, {"source.ip": src, "destination.ip": dst, **extra})


async def stamp(run: Any, ev: Event) -> dict[str, Any]:
    await component(run).stage.process([ev], 1.0)
    return ev.fields


async def test_direction_follows_the_zones(start_appliance: Any) -> None:
    run = await start_appliance(analysis={"asset_files": [str(DATA / "assets.csv")]})
    inbound = await stamp(run, event("syslog", "198.51.100.9", "192.168.88.10"))
    assert inbound["network.direction"] == "inbound"
    assert inbound["destination.asset.criticality"] == 3
    assert "source.asset.name" not in inbound
    outbound = await stamp(run, event("syslog", "192.168.88.10", "203.0.113.1"))
    assert outbound["network.direction"] == "outbound"
    guest_to_dmz = await stamp(run, event("syslog", "10.20.3.4", "4.2.2.3"))
    assert guest_to_dmz["network.direction"] == "internal"
    assert guest_to_dmz["source.asset.zone"] == "guest"
    decoder_said = await stamp(
        run, event("syslog", "198.51.100.9", "192.168.88.10", **{"network.direction": "ingress"})
    )
    assert decoder_said["network.direction"] == "ingress"


async def test_unknown_addresses_leave_the_event_as_it_was(start_appliance: Any) -> None:
    run = await start_appliance(analysis={"asset_files": [str(DATA / "assets.csv")]})
    ev = event("syslog", "198.51.100.9", "203.0.113.1")
    ev.line = b"encoded"
    assert await stamp(run, ev) == {"source.ip": "198.51.100.9", "destination.ip": "203.0.113.1"}
    assert ev.line == b"encoded"  # not re-encoded: nothing changed


async def test_flows_are_stamped_only_when_asked(start_appliance: Any, tmp_path: Path) -> None:
    off = await start_appliance(analysis={"asset_files": [str(DATA / "assets.csv")]})
    assert "network.direction" not in await stamp(off, event("netflow", "1.1.1.1", "4.2.2.3"))
    await off.app.stop()
    on = await start_appliance(
        appliance={"data_dir": str(tmp_path / "on"), "sensor_id": "test-01"},
        analysis={"asset_files": [str(DATA / "assets.csv")], "enrich_flows": True},
    )
    fields = await stamp(on, event("netflow", "1.1.1.1", "4.2.2.3"))
    assert fields["network.direction"] == "inbound"
    assert fields["destination.asset.name"] == "dns-edge-1"


async def test_no_analysis_files_means_no_stage(start_appliance: Any) -> None:
    run = await start_appliance()
    assert component(run).stage not in run.app.pipeline.before_store


async def test_reload_swaps_the_inventory(start_appliance: Any, tmp_path: Path) -> None:
    inventory = tmp_path / "assets.csv"
    inventory.write_text("ip,name,zone,criticality\n192.0.2.10,old-name,internal,2\n")
    run = await start_appliance(analysis={"asset_files": [str(inventory)]})
    before = await stamp(run, event("syslog", "198.51.100.1", "192.0.2.10"))
    assert before["destination.asset.name"] == "old-name"
    inventory.write_text("ip,name,zone,criticality\n192.0.2.10,new-name,dmz,5\n")
    await run.app.reload(run.app.config)
    after = await stamp(run, event("syslog", "198.51.100.1", "192.0.2.10"))
    assert (after["destination.asset.name"], after["destination.asset.criticality"]) == (
        "new-name",
        5,
    )
    assert 'appliance_analysis_reloads_total{result="ok"} 2' in await run.metrics()


async def test_api_shows_the_files_in_force_and_what_is_known_of_an_address(
    start_appliance: Any,
) -> None:
    run = await start_appliance(
        analysis={
            "asset_files": [str(DATA / "assets.csv")],
            "vuln_files": [str(DATA / "vulnerable.nessus"), str(DATA / "kev.json")],
        }
    )
    body = await run.get_json("/api/v1/analysis/files")
    assert [f["path"].rsplit("/", 1)[1] for f in body["files"]] == [
        "assets.csv",
        "vulnerable.nessus",
        "kev.json",
    ]
    assert body["totals"]["kev"] == 2 and body["failed"] == []
    assert body["policy"]["unmatched_ids"] == "lower"
    dns = await run.get_json("/api/v1/analysis/assets/4.2.2.3")
    assert dns["asset"]["name"] == "dns-edge-1" and dns["asset"]["scanned"] is True
    sigred = next(v for v in dns["vulnerabilities"] if v["cve"] == "CVE-2020-1350")
    assert (sigred["port"], sigred["proto"], sigred["cvss"], sigred["kev"]) == (
        53,
        "udp",
        10.0,
        True,
    )
    lan = await run.get_json("/api/v1/analysis/assets/192.168.88.200")
    assert lan["asset"]["network"] == "192.168.88.0/24" and lan["vulnerabilities"] == []
    headers = {"Authorization": "Bearer " + TOKEN}
    for ip, status in (("198.51.100.1", 404), ("not-an-ip", 400)):
        async with run.session.get(run.api + f"/api/v1/analysis/assets/{ip}", headers=headers) as r:
            assert r.status == status
