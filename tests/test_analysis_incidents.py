"""IDS alerts weighed against the target's vulnerability scan, end to end (issue 16).

A real appliance on loopback: the Snort line from the shared corpus arrives over UDP syslog,
is decoded, enriched from the asset list, stored, matched by the built-in IDS rules, and the
incident it raises is read back from ``/api/v1/incidents``. Only the analysis files differ
between the runs: a scan that lists the signature's CVE on the target, one that does not, and
the CISA KEV catalog.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.conftest import TOKEN, corpus_dir
from tests.test_syslog_udp import send_udp

DATA = Path(__file__).parent / "data" / "analysis"
SIGNATURE = "[1:2012811:2]"  # -> 4.2.2.3:53/udp; our local.rules gives it CVE-2020-1350
RULE = "IDS alert, severity 2 (medium)"

pytestmark = pytest.mark.corpus


def corpus_line() -> bytes:
    text = (corpus_dir("syslog") / "snort_fast-alert_elastic.log").read_text()
    return next(ln for ln in text.splitlines() if SIGNATURE in ln).encode()


def analysis(*vuln_files: str, **policy: Any) -> dict[str, Any]:
    return {
        "asset_files": [str(DATA / "assets.csv")],
        "vuln_files": [str(DATA / f) for f in vuln_files],
        "ids_rule_files": [str(DATA / "local.rules")],
        **policy,
    }


async def incident_for(run: Any, line: bytes) -> dict[str, Any]:
    send_udp(run.source().address, line)
    found: list[dict[str, Any]] = []

    async def check() -> bool:
        body = await run.get_json("/api/v1/incidents")
        found[:] = [i for i in body["incidents"] if i["rule"]["title"] == RULE]
        return bool(found)

    await run.wait_for(check)
    return found[0]


async def test_alert_against_a_host_whose_scan_lists_the_cve_is_raised(
    start_appliance: Any,
) -> None:
    run = await start_appliance(analysis=analysis("vulnerable.nessus"))
    inc = await incident_for(run, corpus_line())
    assert inc["severity"] == "high"
    assert inc["risk"]["severity_base"] == "medium"
    assert inc["risk"]["severity_reasons"] == [
        "medium → high: target dns-edge-1 has CVE-2020-1350 (scan)"
    ]
    assert inc["risk"]["inputs"]["vuln_match"] == "matched"
    assert inc["risk"]["inputs"]["cvss"] == 10.0
    assert "target has CVE-2020-1350 (CVSS 10" in " ".join(inc["risk"]["reasons"])


async def test_same_alert_against_a_host_whose_scan_lacks_the_cve_is_lowered(
    start_appliance: Any,
) -> None:
    run = await start_appliance(analysis=analysis("patched.nessus"))
    inc = await incident_for(run, corpus_line())
    assert inc["severity"] == "low"
    assert inc["risk"]["severity_reasons"] == [
        "medium → low: the scan of dns-edge-1 does not list CVE-2020-1350"
    ]
    assert inc["risk"]["inputs"]["vuln_match"] == "unmatched"
    assert inc["risk"]["unmatched_hits"] == 1
    assert 'appliance_analysis_ids_alerts_total{outcome="unmatched_lowered"} 1' in (
        await run.metrics()
    )


async def test_kev_listed_cve_raises_the_incident_further(start_appliance: Any) -> None:
    run = await start_appliance(analysis=analysis("vulnerable.nessus", "kev.json"))
    inc = await incident_for(run, corpus_line())
    assert inc["severity"] == "critical"
    assert inc["risk"]["severity_reasons"] == [
        "medium → high: target dns-edge-1 has CVE-2020-1350 (scan)",
        "high → critical: CVE-2020-1350 known exploited (CISA KEV)",
    ]
    assert inc["risk"]["inputs"]["kev"] is True


async def test_risk_score_orders_kev_match_over_match_over_unmatched(
    start_appliance: Any, tmp_path: Path
) -> None:
    scores = []
    for n, files in enumerate(
        (("vulnerable.nessus", "kev.json"), ("vulnerable.nessus",), ("patched.nessus",))
    ):
        run = await start_appliance(
            appliance={"data_dir": str(tmp_path / f"data{n}"), "sensor_id": "test-01"},
            analysis=analysis(*files),
        )
        scores.append((await incident_for(run, corpus_line()))["risk_score"])
        await run.app.stop()
    assert 100 >= scores[0] > scores[1] > scores[2] >= 0


async def test_suppress_policy_raises_no_incident_and_counts_the_alert(
    start_appliance: Any,
) -> None:
    run = await start_appliance(analysis=analysis("patched.nessus", unmatched_ids="suppress"))
    send_udp(run.source().address, corpus_line())
    await run.wait_stored(1)
    counted = 'appliance_analysis_ids_alerts_total{outcome="unmatched_suppressed"} 1'

    async def check() -> bool:
        return counted in await run.metrics()

    await run.wait_for(check)
    body = await run.get_json("/api/v1/incidents")
    assert [i for i in body["incidents"] if i["rule"]["title"] == RULE] == []


async def test_keep_policy_leaves_the_severity_but_the_risk_shows_the_miss(
    start_appliance: Any,
) -> None:
    run = await start_appliance(analysis=analysis("patched.nessus", unmatched_ids="keep"))
    inc = await incident_for(run, corpus_line())
    assert inc["severity"] == "medium" and inc["risk"]["severity_reasons"] == []
    assert any("target not vulnerable" in r for r in inc["risk"]["reasons"])


async def test_stored_alert_carries_asset_fields_direction_and_cve(start_appliance: Any) -> None:
    run = await start_appliance(analysis=analysis("vulnerable.nessus"))
    send_udp(run.source().address, corpus_line())
    await run.wait_stored(1)
    (ev,) = (await run.get_json("/api/v1/events"))["events"]
    assert ev["destination"]["asset"] == {
        "name": "dns-edge-1",
        "zone": "dmz",
        "criticality": 4,
        "owner": "netops",
    }
    assert ev["source"]["asset"]["name"] == "ws-finance-07"
    assert ev["network"]["direction"] == "internal"
    assert ev["vulnerability"]["id"] == ["CVE-2020-1350"]


async def test_sighup_rereads_a_scan_that_changed(start_appliance: Any, tmp_path: Path) -> None:
    scan = tmp_path / "scan.nessus"
    scan.write_bytes((DATA / "patched.nessus").read_bytes())
    cfg = analysis()
    cfg["vuln_files"] = [str(scan)]
    run = await start_appliance(analysis=cfg)
    first = await incident_for(run, corpus_line())
    assert first["severity"] == "low"
    scan.write_bytes((DATA / "vulnerable.nessus").read_bytes())  # the weekly rescan
    await run.app.reload(run.app.config)
    send_udp(run.source().address, corpus_line())

    async def raised() -> bool:
        doc = await run.get_json(f"/api/v1/incidents/{first['id']}")
        return doc["severity"] == "high"

    await run.wait_for(raised)


async def test_incidents_api_sorts_by_risk_score(start_appliance: Any) -> None:
    run = await start_appliance(analysis=analysis("vulnerable.nessus"))
    lines = (corpus_dir("syslog") / "snort_fast-alert_elastic.log").read_bytes().splitlines()
    send_udp(run.source().address, *lines)
    await run.wait_stored(len(lines))

    async def settled() -> bool:
        return len((await run.get_json("/api/v1/incidents"))["incidents"]) >= 3

    await run.wait_for(settled)
    docs = (await run.get_json("/api/v1/incidents", sort="risk_score"))["incidents"]
    scores = [d["risk_score"] for d in docs]
    assert scores == sorted(scores, reverse=True)
    assert docs[0]["risk"]["inputs"]["vuln_match"] == "matched"
    status = await run.session.get(
        run.api + "/api/v1/incidents",
        params={"sort": "severity; DROP"},
        headers={"Authorization": "Bearer " + TOKEN},
    )
    assert status.status == 400


async def test_suricata_eve_alert_is_scored_with_its_target_asset(
    start_appliance: Any, tmp_path: Path
) -> None:
    text = (corpus_dir("json") / "suricata_eve_elastic-small.jsonl").read_text()
    line = next(ln for ln in text.splitlines() if '"event_type":"alert"' in ln)
    inventory = tmp_path / "assets.csv"
    inventory.write_text("ip,name,zone,criticality\n192.168.156.70,web-l2,dmz,5\n")
    run = await start_appliance(analysis={"asset_files": [str(inventory)]})
    send_udp(run.source().address, line.encode())
    found: list[dict[str, Any]] = []

    async def check() -> bool:
        found[:] = (await run.get_json("/api/v1/incidents"))["incidents"]
        return bool(found)

    await run.wait_for(check)
    (inc,) = found
    assert inc["rule"]["title"] == "IDS alert, severity 1 (high)"
    assert inc["risk"]["inputs"]["asset"] == "web-l2"
    assert inc["risk"]["inputs"]["asset_criticality"] == 5
    assert inc["risk"]["inputs"]["vuln_match"] == "unknown"  # no rule file, no scan
    assert inc["risk_score"] == 60  # 0.8 (high) x 1.0 (criticality 5) x 0.75 (unknown)
