"""The incident manager's use of the analysis assessor, on a real SQLite file (issue 16)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from appliance.analysis import risk
from appliance.correlate.engine import Alert
from appliance.correlate.rules import RuleMeta
from appliance.incidents.manager import IncidentManager
from appliance.store import Store

RULE = RuleMeta(id="r-ids", title="IDS alert", level="medium", tags=[], path="x")


def alert(fields: dict[str, object] | None = None) -> Alert:
    return Alert(
        RULE, "detection", {"destination.ip": "192.0.2.5"}, 1000.0, 1000.0, 1, [1], ["raw"],
        fields=fields,
    )  # fmt: skip


@pytest.fixture
async def manager(tmp_path: Path) -> AsyncIterator[IncidentManager]:
    store = Store(tmp_path / "appliance.db")
    await store.open()
    m = IncidentManager(store, "t", clock=lambda: 5000.0, hooks=[])
    await m.load()
    yield m
    await store.close()


def verdict(match: str, policy: risk.Policy | None = None) -> risk.Assessment:
    inputs = risk.RiskInputs(rule_level="medium", asset="db1", vuln_match=match, cves=["CVE-1"])
    inputs.matched_cves = ["CVE-1"] if match == risk.MATCHED else []
    return risk.assess(inputs, policy or risk.Policy())


async def test_every_incident_gets_a_risk_score_without_analysis_data(
    manager: IncidentManager,
) -> None:
    fields = {"destination.asset.criticality": 5, "destination.asset.name": "db1"}
    (doc,) = await manager.apply([alert({**fields, "threat.indicator.confidence": 80})])
    # 0.6 x 1.0 x 0.75 + 0.2 x 0.8 = 0.61
    assert doc["risk_score"] == 61 and doc["severity"] == "medium"
    assert "asset db1 criticality 5 (1)" in doc["risk"]["reasons"]


async def test_suppressed_hit_on_an_open_incident_is_counted_on_it(
    manager: IncidentManager,
) -> None:
    (doc,) = await manager.apply([alert()])
    manager.assess = lambda a: verdict(risk.UNMATCHED, risk.Policy(unmatched_ids="suppress"))
    (after,) = await manager.apply([alert()])
    assert after["id"] == doc["id"] and after["hit_count"] == 1
    assert after["suppressed_count"] == 1 and after["risk"]["unmatched_hits"] == 1


async def test_suppressed_first_hit_opens_no_incident(manager: IncidentManager) -> None:
    manager.assess = lambda a: verdict(risk.UNMATCHED, risk.Policy(unmatched_ids="suppress"))
    assert await manager.apply([alert()]) == []
    assert await manager.list() == []


async def test_a_later_matched_hit_raises_a_lowered_incident(manager: IncidentManager) -> None:
    manager.assess = lambda a: verdict(risk.UNMATCHED)
    (low,) = await manager.apply([alert()])
    assert low["severity"] == "low"
    manager.assess = lambda a: verdict(risk.MATCHED)
    (high,) = await manager.apply([alert()])
    assert high["id"] == low["id"] and high["severity"] == "high"
    assert high["risk"]["severity_reasons"] == ["medium → high: target db1 has CVE-1 (scan)"]
    stored = await manager.get(high["id"])
    assert stored is not None and stored["risk_score"] == high["risk_score"]


async def test_an_assessor_that_fails_still_lets_the_incident_through(
    manager: IncidentManager,
) -> None:
    def broken(a: Alert) -> risk.Assessment:
        raise KeyError("bug")

    manager.assess = broken
    (doc,) = await manager.apply([alert()])
    assert doc["severity"] == "medium" and "risk_score" in doc
    assert manager.assess_errors == 1


async def test_list_sorts_by_risk_score(manager: IncidentManager) -> None:
    for n, match in enumerate((risk.UNMATCHED, risk.MATCHED, risk.UNKNOWN)):
        manager.assess = lambda a, m=match: verdict(m)
        await manager.apply(
            [Alert(RULE, "detection", {"n": n}, 1000.0 + n, 1000.0 + n, 1, [n], ["raw"])]
        )
    by_risk = [d["risk"]["inputs"]["vuln_match"] for d in await manager.list(sort="risk_score")]
    assert by_risk == [risk.MATCHED, risk.UNKNOWN, risk.UNMATCHED]
