"""Incident handling through the API: evidence events by id, reopen, assign, comment, and the
list's filters and sorting. Incidents are raised by the real pipeline and correlation."""

from __future__ import annotations

from typing import Any

from tests.conftest import TOKEN
from tests.ruletools import ssh
from tests.test_incidents_api import BRUTE, feed, incidents, post, wait_incident


async def brute(start_appliance: Any, ip: str = "203.0.113.9", **kw: Any) -> tuple[Any, dict]:
    run = await start_appliance(**kw)
    await feed(run, [ssh(i, ip, f"user{i % 2}") for i in range(10)])
    return run, await wait_incident(run, BRUTE)


async def test_evidence_events_come_back_by_incident_id(start_appliance: Any) -> None:
    run, inc = await brute(start_appliance)
    body = await run.get_json(f"/api/v1/incidents/{inc['id']}/events")
    assert body["count"] == 10 and body["missing"] == 0
    assert {e["source"]["ip"] for e in body["events"]} == {"203.0.113.9"}
    assert all("Failed password" in e["message"] for e in body["events"])


async def test_evidence_of_an_unknown_incident_is_a_404(start_appliance: Any) -> None:
    run = await start_appliance()
    status, _ = await post(run, "/api/v1/incidents/nope/comment", {"text": "x"})
    assert status == 404


async def test_a_resolved_incident_can_be_reopened(start_appliance: Any) -> None:
    run, inc = await brute(start_appliance)
    await post(run, f"/api/v1/incidents/{inc['id']}/resolve", {"note": "done"})
    status, doc = await post(run, f"/api/v1/incidents/{inc['id']}/reopen", {"note": "again"})
    assert status == 200
    assert doc["status"] == "open"
    assert [h["action"] for h in doc["history"]] == ["resolve", "reopen"]
    assert doc["resolved_at"]  # the first resolution stays on record (MTTR)


async def test_reopening_an_open_incident_is_a_409(start_appliance: Any) -> None:
    run, inc = await brute(start_appliance)
    status, body = await post(run, f"/api/v1/incidents/{inc['id']}/reopen")
    assert status == 409 and "open" in body["error"]


async def test_reopening_a_false_positive_lifts_its_suppression(start_appliance: Any) -> None:
    run, inc = await brute(start_appliance)
    await post(run, f"/api/v1/incidents/{inc['id']}/false-positive", {"note": "scanner"})
    status, doc = await post(run, f"/api/v1/incidents/{inc['id']}/reopen")
    assert status == 200 and doc["status"] == "open"
    comp = next(c for c in run.app.components if hasattr(c, "incidents"))
    assert comp.incidents.suppressions == {}


async def test_assign_sets_and_clears_the_assignee(start_appliance: Any) -> None:
    run, inc = await brute(start_appliance)
    status, doc = await post(run, f"/api/v1/incidents/{inc['id']}/assign", {"assignee": "dana"})
    assert status == 200 and doc["assignee"] == "dana"
    assert doc["revision"] == inc["revision"] + 1
    assert [i["id"] for i in await incidents(run, assignee="dana")] == [inc["id"]]
    _s, doc = await post(run, f"/api/v1/incidents/{inc['id']}/assign", {"assignee": ""})
    assert doc["assignee"] is None


async def test_assign_without_an_assignee_is_a_400(start_appliance: Any) -> None:
    run, inc = await brute(start_appliance)
    status, body = await post(run, f"/api/v1/incidents/{inc['id']}/assign", {"who": "x"})
    assert status == 400 and body["error"].startswith("assignee:")


async def test_an_assignee_with_control_characters_is_a_400(start_appliance: Any) -> None:
    run, inc = await brute(start_appliance)
    status, body = await post(run, f"/api/v1/incidents/{inc['id']}/assign", {"assignee": "a\nb"})
    assert status == 400 and body["error"].startswith("assignee: must not contain control")


async def test_comments_are_kept_with_who_wrote_them(start_appliance: Any) -> None:
    run, inc = await brute(start_appliance)
    _s, doc = await post(run, f"/api/v1/incidents/{inc['id']}/comment", {"text": "looking"})
    status, doc = await post(run, f"/api/v1/incidents/{inc['id']}/comment", {"text": "blocked"})
    assert status == 200
    assert [c["text"] for c in doc["comments"]] == ["looking", "blocked"]
    assert doc["comments"][0]["by"]  # the token's id
    full = await run.get_json(f"/api/v1/incidents/{inc['id']}")
    assert full["comments"] == doc["comments"]


async def test_an_empty_comment_is_a_400(start_appliance: Any) -> None:
    run, inc = await brute(start_appliance)
    status, body = await post(run, f"/api/v1/incidents/{inc['id']}/comment", {"text": "  "})
    assert status == 400 and body["error"] == "text: must not be empty"


async def test_every_change_runs_the_transaction_hooks(start_appliance: Any) -> None:
    """What the forwarding outbox relies on: each change is seen inside its transaction."""
    seen: list[tuple[bool, int, str]] = []

    async def hook(conn: Any, doc: dict) -> None:
        seen.append((conn.in_transaction, doc["revision"], doc["status"]))

    run, inc = await brute(start_appliance, incident_hooks=[hook])
    base = f"/api/v1/incidents/{inc['id']}"
    await post(run, base + "/assign", {"assignee": "dana"})
    await post(run, base + "/comment", {"text": "hm"})
    await post(run, base + "/resolve")
    await post(run, base + "/reopen")
    assert seen == [
        (True, 1, "open"),
        (True, 2, "open"),
        (True, 3, "open"),
        (True, 4, "resolved"),
        (True, 5, "open"),
    ]


async def test_the_list_sorts_by_severity_and_filters_by_range(start_appliance: Any) -> None:
    run, inc = await brute(start_appliance)
    listed = await incidents(run, sort="severity", order="asc")
    assert inc["id"] in [i["id"] for i in listed]
    assert await incidents(run, until="1") == []
    async with run.session.get(
        run.api + "/api/v1/incidents",
        params={"sort": "colour"},
        headers={"Authorization": f"Bearer {TOKEN}"},
    ) as resp:
        assert resp.status == 400
        assert (await resp.json())["error"].startswith("sort: must be one of")
