"""Analyst feedback end to end: scoped suppressions from a false-positive mark or the API,
honoured by later alerts for their lifetime and counted; the noisy-rules report."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from appliance.app import Appliance
from appliance.config import parse_config
from tests.conftest import TOKEN, Running, make_config
from tests.ruletools import T0, fw, ssh
from tests.test_incidents_api import feed, incidents, post, wait_incident

BRUTE = "SSH brute force from one source"
CLEARTEXT = "Cleartext management protocol allowed"
CLEARTEXT_ID = "ce8c5b7e-f711-5a50-b034-dc06c6d787f5"
HOUR = 3600.0


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
async def clocked(tmp_path: Path) -> AsyncIterator[tuple[Running, Clock]]:
    """An appliance whose wall clock the test moves (suppression expiry is wall time)."""
    clock = Clock(T0 + 10)
    app = Appliance(parse_config(make_config(tmp_path), base_dir=tmp_path), clock=clock)
    await app.start()
    run = Running(app, aiohttp.ClientSession())
    try:
        yield run, clock
    finally:
        await run.session.close()
        await app.stop()


async def request(run: Running, method: str, path: str, body: Any = None) -> tuple[int, Any]:
    headers = {"Authorization": f"Bearer {TOKEN}"}
    async with run.session.request(method, run.api + path, json=body, headers=headers) as resp:
        return resp.status, await resp.json()


async def open_brute(run: Running, source: str) -> list[dict]:
    return [
        i
        for i in await incidents(run, status="open")
        if i["rule"]["title"] == BRUTE and i["group"]["source.ip"] == source
    ]


async def test_a_source_scoped_false_positive_silences_that_source_until_it_expires(
    clocked: tuple[Running, Clock],
) -> None:
    run, clock = clocked
    await feed(run, [ssh(i, "203.0.113.9") for i in range(10)])
    inc = await wait_incident(run, BRUTE)
    status, marked = await post(
        run,
        f"/api/v1/incidents/{inc['id']}/false-positive",
        {"scope": "source", "expires_in": HOUR, "note": "our vulnerability scanner"},
    )
    assert status == 200 and marked["status"] == "suppressed"
    sup = marked["suppression"]
    assert (sup["scope"], sup["value"], sup["incident_id"]) == ("source", "203.0.113.9", inc["id"])

    # The same pattern after the rule's own 15-minute cooldown: silenced, and counted.
    await feed(run, [ssh(1000 + i, "203.0.113.9") for i in range(10)])
    await run.wait_for(lambda: _count(run, sup["id"]))
    assert await open_brute(run, "203.0.113.9") == []
    # Another source is not in the scope.
    await feed(run, [ssh(1000 + i, "198.51.100.7") for i in range(10)])
    await run.wait_for(lambda: open_brute(run, "198.51.100.7"))

    clock.now += 2 * HOUR  # past the suppression's expiry
    await feed(run, [ssh(2000 + i, "203.0.113.9") for i in range(10)])
    await run.wait_for(lambda: open_brute(run, "203.0.113.9"))


async def _count(run: Running, sid: str, n: int = 1) -> bool:
    _status, body = await request(run, "GET", "/api/v1/suppressions")
    (s,) = [s for s in body["suppressions"] if s["id"] == sid]
    return s["suppressed_count"] >= n


async def test_an_asset_suppression_silences_a_detection_for_that_target_only(
    start_appliance: Any,
) -> None:
    run = await start_appliance()
    status, sup = await request(
        run,
        "POST",
        "/api/v1/suppressions",
        {"rule": CLEARTEXT_ID, "scope": "asset", "value": "10.2.0.9", "note": "lab switch"},
    )
    assert status == 201 and sup["expires"] is None
    # Telnet allowed to the suppressed asset from five sources, and to another asset once.
    await feed(run, [fw(i, f"10.9.9.{i}", "10.2.0.9", 23, "allow") for i in range(5)])
    await feed(run, [fw(10, "10.9.9.1", "10.2.0.7", 23, "allow")])
    inc = await wait_incident(run, CLEARTEXT)
    assert inc["group"]["destination.ip"] == "10.2.0.7"
    await run.wait_for(lambda: _count(run, sup["id"], 5))
    assert len([i for i in await incidents(run) if i["rule"]["title"] == CLEARTEXT]) == 1


async def test_suppressions_are_edited_and_deleted_through_the_api(start_appliance: Any) -> None:
    run = await start_appliance()
    status, sup = await request(
        run,
        "POST",
        "/api/v1/suppressions",
        {"rule": "r1", "scope": "source", "value": "203.0.113.0/24", "expires_in": 60},
    )
    assert status == 201 and sup["value"] == "203.0.113.0/24"
    status, edited = await request(
        run, "PATCH", f"/api/v1/suppressions/{sup['id']}", {"expires": None, "note": "keep it"}
    )
    assert status == 200 and edited["expires"] is None and edited["note"] == "keep it"
    status, _ = await request(run, "DELETE", f"/api/v1/suppressions/{sup['id']}")
    assert status == 200
    _s, body = await request(run, "GET", "/api/v1/suppressions")
    assert body["count"] == 0
    status, _ = await request(run, "DELETE", f"/api/v1/suppressions/{sup['id']}")
    assert status == 404


@pytest.mark.parametrize(
    ("body", "problem"),
    [
        ({"rule": "r1", "scope": "everything", "value": "x"}, "scope must be one of"),
        ({"rule": "r1", "scope": "source", "value": "not-an-address"}, "address or CIDR"),
        ({"rule": "r1", "scope": "group", "value": ""}, "value: required"),
        ({"rule": "r1", "scope": "group", "value": "k", "expires_in": -5}, "expires_in"),
    ],
)
async def test_a_bad_suppression_is_a_400_naming_the_problem(
    start_appliance: Any, body: dict, problem: str
) -> None:
    run = await start_appliance()
    status, answer = await request(run, "POST", "/api/v1/suppressions", body)
    assert status == 400 and problem in answer["error"]


async def test_suppressions_need_the_write_scope_to_change(start_appliance: Any) -> None:
    run = await start_appliance()
    async with run.session.post(
        run.api + "/api/v1/suppressions", json={"rule": "r", "scope": "group", "value": "k"}
    ) as resp:
        assert resp.status == 401


async def test_a_suppression_and_its_count_survive_a_restart(tmp_path: Path) -> None:
    cfg = parse_config(make_config(tmp_path), base_dir=tmp_path)
    app = Appliance(cfg)
    await app.start()
    run = Running(app, aiohttp.ClientSession())
    try:
        _s, sup = await request(
            run,
            "POST",
            "/api/v1/suppressions",
            {"rule": CLEARTEXT_ID, "scope": "source", "value": "10.9.9.0/24"},
        )
        await feed(run, [fw(5, "10.9.9.1", "10.2.0.9", 23, "allow")])
        await run.wait_for(lambda: _count(run, sup["id"]))
    finally:
        await run.session.close()
        await app.stop()
    app = Appliance(cfg)
    await app.start()
    run = Running(app, aiohttp.ClientSession())
    try:
        _s, body = await request(run, "GET", "/api/v1/suppressions")
        (again,) = body["suppressions"]
        assert again["id"] == sup["id"] and again["suppressed_count"] == 1
    finally:
        await run.session.close()
        await app.stop()


async def test_the_noise_report_gives_each_rule_its_false_positive_share(
    start_appliance: Any,
) -> None:
    run = await start_appliance()
    await feed(run, [ssh(i, "203.0.113.9") for i in range(10)])
    await feed(run, [ssh(i, "198.51.100.7") for i in range(10)])
    await run.wait_for(lambda: _brutes(run, 2))
    (one, _two) = [i for i in await incidents(run) if i["rule"]["title"] == BRUTE]
    await post(run, f"/api/v1/incidents/{one['id']}/false-positive", {"scope": "group"})
    _s, body = await request(run, "GET", "/api/v1/rules/noise")
    (brute,) = [r for r in body["rules"] if r["title"] == BRUTE]
    assert brute["incidents"] == 2 and brute["false_positives"] == 1
    assert brute["false_positive_share"] == 0.5 and brute["suppressions"] == 1


async def _brutes(run: Running, n: int) -> bool:
    return len([i for i in await incidents(run) if i["rule"]["title"] == BRUTE]) >= n
