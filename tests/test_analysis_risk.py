"""The risk score and the severity policy (appliance.analysis.risk), and the IDS-to-scan match
that feeds them (appliance.analysis.context.risk_inputs) — pure functions, no appliance."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from appliance.analysis import risk
from appliance.analysis.context import load_context, risk_inputs
from appliance.analysis.risk import MATCHED, UNKNOWN, UNMATCHED, Policy, RiskInputs

DATA = Path(__file__).parent / "data" / "analysis"


def score(**kw: Any) -> int:
    return risk.risk_score(RiskInputs(**kw))[0]


def test_documented_worked_examples() -> None:
    assert score(rule_level="medium", asset_criticality=3) == 36
    assert score(rule_level="medium", asset_criticality=3, vuln_match=MATCHED, cvss=9.8) == 60
    kev = score(rule_level="medium", asset_criticality=3, vuln_match=MATCHED, cvss=9.8, kev=True)
    assert kev == 72
    assert score(rule_level="medium", asset_criticality=3, vuln_match=UNMATCHED) == 12


def test_score_grows_with_each_input_and_stays_within_0_to_100() -> None:
    base = score(rule_level="low", asset_criticality=1)
    assert score(rule_level="high", asset_criticality=1) > base
    assert score(rule_level="low", asset_criticality=5) > base
    assert score(rule_level="low", asset_criticality=1, intel_confidence=0.9) > base
    assert score(rule_level="low", asset_criticality=1, rarity=1.0) > base
    top = score(
        rule_level="critical",
        asset_criticality=5,
        vuln_match=MATCHED,
        cvss=10.0,
        kev=True,
        intel_confidence=1.0,
        rarity=1.0,
    )
    assert top == 100
    assert score(rule_level="informational", asset_criticality=1, vuln_match=UNMATCHED) >= 0


@pytest.mark.parametrize(
    ("value", "expected"),
    [(80, 0.8), ("High", 0.9), ("low", 0.3), ("55", 0.55), (None, None), ("?", None), (250, 1.0)],
)
def test_intel_confidence_accepts_numbers_and_words(value: Any, expected: float | None) -> None:
    assert risk.intel_confidence(value) == expected


def test_match_raises_and_kev_raises_further_with_reasons() -> None:
    i = RiskInputs(
        rule_level="medium", asset="db1", vuln_match=MATCHED, matched_cves=["CVE-1"], kev=True
    )
    a = risk.assess(i, Policy())
    assert a.severity == "critical"
    assert a.severity_reasons == [
        "medium → high: target db1 has CVE-1 (scan)",
        "high → critical: CVE-1 known exploited (CISA KEV)",
    ]
    assert risk.assess(i, Policy(vuln_match_raise=0, kev_raise=2)).severity == "critical"
    assert risk.assess(i, Policy(vuln_match_raise=0, kev_raise=0)).severity == "medium"


def test_unmatched_policy_lowers_suppresses_or_keeps() -> None:
    i = RiskInputs(rule_level="high", asset="db1", vuln_match=UNMATCHED, cves=["CVE-1"])
    lowered = risk.assess(i, Policy(unmatched_ids="lower", unmatched_lower=2))
    assert lowered.severity == "low" and not lowered.suppress
    assert lowered.severity_reasons == ["high → low: the scan of db1 does not list CVE-1"]
    assert risk.assess(i, Policy(unmatched_ids="suppress")).suppress
    kept = risk.assess(i, Policy(unmatched_ids="keep"))
    assert kept.severity == "high" and kept.severity_reasons == [] and not kept.suppress


def test_severity_never_leaves_the_scale() -> None:
    assert risk.shift("critical", 3) == "critical"
    assert risk.shift("informational", -2) == "informational"


def test_incident_keeps_its_worst_hit() -> None:
    doc: dict[str, Any] = {"severity": "medium"}
    hi = risk.assess(
        RiskInputs(rule_level="medium", vuln_match=MATCHED, matched_cves=["CVE-1"]), Policy()
    )
    lo = risk.assess(RiskInputs(rule_level="medium", vuln_match=UNMATCHED), Policy())
    risk.apply(doc, hi, new=True)
    risk.apply(doc, lo, new=False)
    assert doc["severity"] == "high" and doc["risk_score"] == hi.score
    assert doc["risk"]["inputs"]["vuln_match"] == MATCHED
    assert doc["risk"]["unmatched_hits"] == 1


# ------------------------------------------------------------------- IDS alert vs the scans

CTX = load_context(
    [
        DATA / "assets.csv",
        DATA / "vulnerable.nessus",
        DATA / "nmap-vulners.xml",
        DATA / "local.rules",
    ]
)


def alert(sid: str, dst: str, port: int | None) -> dict[str, Any]:
    fields: dict[str, Any] = {
        "event.kind": "alert",
        "event.category": ["intrusion_detection"],
        "rule.id": sid,
        "source.ip": "192.168.88.10",
        "destination.ip": dst,
    }
    if port is not None:
        fields["destination.port"] = port
    return fields


def test_cve_on_the_attacked_port_is_a_match_with_the_asset_criticality() -> None:
    i = risk_inputs("medium", alert("2012811", "4.2.2.3", 53), CTX)
    assert (i.vuln_match, i.matched_cves, i.cvss) == (MATCHED, ["CVE-2020-1350"], 10.0)
    assert (i.asset, i.asset_criticality) == ("dns-edge-1", 4)


def test_cve_on_another_port_is_not_the_attacked_service() -> None:
    i = risk_inputs("medium", alert("2012811", "4.2.2.3", 5353), CTX)
    assert (i.vuln_match, i.unmatched_why) == (UNMATCHED, "no_service")


def test_closed_port_on_a_port_scanned_host_means_no_service() -> None:
    # 10.20.1.15: Nmap saw 22/tcp open only; the log4j signature hits it on 80.
    i = risk_inputs("medium", alert("2034647", "10.20.1.15", 80), CTX)
    assert (i.vuln_match, i.unmatched_why) == (UNMATCHED, "no_service")


def test_scanned_host_without_the_cve_is_unmatched() -> None:
    i = risk_inputs("medium", alert("2034647", "4.2.2.3", 53), CTX)
    assert (i.vuln_match, i.unmatched_why) == (UNMATCHED, "no_cve")


def test_unscanned_target_or_signature_without_cve_is_unknown() -> None:
    assert risk_inputs("medium", alert("2012811", "198.51.100.7", 53), CTX).vuln_match == UNKNOWN
    assert risk_inputs("medium", alert("477", "4.2.2.3", None), CTX).vuln_match == UNKNOWN
    not_ids = {**alert("2012811", "4.2.2.3", 53), "event.category": ["network"]}
    assert risk_inputs("medium", not_ids, CTX).vuln_match == UNKNOWN
