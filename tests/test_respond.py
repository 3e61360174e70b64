"""Active response end to end: incident → planned row (in the incident's transaction) →
worker → a real firewall API on loopback or a real program → timed undo, with the audit."""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Any

import pytest

from appliance.respond import responder_of
from tests.conftest import TOKEN
from tests.firewall_server import KEY, SECRET, Firewall
from tests.ruletools import ssh

TOOL = str(Path(__file__).with_name("blocklist_tool.py"))
ATTACKER = "203.0.113.9"


@pytest.fixture
async def firewall() -> Any:
    fw = Firewall()
    await fw.start()
    yield fw
    await fw.stop()


def opnsense(fw: Firewall, **kw: Any) -> dict[str, Any]:
    return {
        "name": "opn",
        "type": "http",
        "preset": "opnsense",
        "url": fw.url,
        "username": KEY,
        "password": SECRET,
        "dry_run": False,
        "ttl": 0,
        "backoff_base": 0.05,
        "backoff_cap": 0.2,
        **kw,
    }


def exec_action(blocklist: Path, **kw: Any) -> dict[str, Any]:
    return {
        "name": "file",
        "type": "exec",
        "argv": [sys.executable, TOOL, str(blocklist), "add", "{ip}"],
        "undo_argv": [sys.executable, TOOL, str(blocklist), "del", "{ip}"],
        "dry_run": False,
        "ttl": 0,
        **kw,
    }


async def start(start_appliance: Any, *actions: dict[str, Any], **respond: Any) -> Any:
    return await start_appliance(respond={"actions": list(actions), **respond})


async def brute_force(run: Any, ip: str = ATTACKER, base: int = 0) -> None:
    before = run.app.pipeline.stored.total()
    for i in range(10):
        e = ssh(base + i, ip, f"user{i % 2}")
        e.id = None
        assert run.app.pipeline.offer(e, "test")
    await run.wait_stored(before + 10)


async def actions(run: Any, **params: str) -> list[dict[str, Any]]:
    return (await run.get_json("/api/v1/respond/actions", **params))["actions"]


async def audit(run: Any, **params: str) -> list[dict[str, Any]]:
    return (await run.get_json("/api/v1/respond/audit", **params))["audit"]


async def wait_state(run: Any, state: str, n: int = 1, timeout: float = 10.0) -> list[dict]:
    found: list[dict] = []

    async def check() -> bool:
        found[:] = await actions(run, state=state)
        return len(found) >= n

    await run.wait_for(check, timeout)
    return found


async def events_of(run: Any, action_id: int) -> list[str]:
    return [a["event"] for a in reversed(await audit(run, action_id=str(action_id)))]


async def test_incident_open_blocks_the_source_in_the_firewall_alias(
    start_appliance: Any, firewall: Firewall
) -> None:
    run = await start(start_appliance, opnsense(firewall))
    await brute_force(run)
    [row] = await wait_state(run, "active")
    assert row["value"] == ATTACKER and row["expires"] is None and not row["dry_run"]
    assert firewall.aliases["sem_blocklist"] == {ATTACKER}
    [call] = firewall.calls
    assert (call.method, call.path) == ("POST", "/api/firewall/alias_util/add/sem_blocklist")
    assert call.body == {"address": ATTACKER}
    assert await events_of(run, row["id"]) == ["planned", "executed"]


async def test_block_is_lifted_when_its_ttl_passes(
    start_appliance: Any, firewall: Firewall
) -> None:
    run = await start(start_appliance, opnsense(firewall, ttl=1))
    await brute_force(run)
    [row] = await wait_state(run, "active")
    assert row["expires"] == pytest.approx(row["executed"] + 1)
    assert firewall.aliases["sem_blocklist"] == {ATTACKER}
    await wait_state(run, "undone")
    assert firewall.aliases["sem_blocklist"] == set()
    assert firewall.calls[-1].path == "/api/firewall/alias_util/delete/sem_blocklist"
    assert await events_of(run, row["id"]) == ["planned", "executed", "expired", "undone"]


async def test_pfsense_preset_adds_and_deletes_the_alias_entry(
    start_appliance: Any, firewall: Firewall
) -> None:
    run = await start(start_appliance, opnsense(firewall, preset="pfsense", ttl=1))
    await brute_force(run)
    await wait_state(run, "active")
    assert firewall.aliases["sem_blocklist"] == {ATTACKER}
    assert firewall.calls[0].body == {"name": "sem_blocklist", "address": [ATTACKER], "apply": True}
    await wait_state(run, "undone")
    assert firewall.aliases["sem_blocklist"] == set()
    assert firewall.calls[-1].method == "DELETE"


async def test_never_block_address_is_refused_and_audited_with_the_reason(
    start_appliance: Any, firewall: Firewall
) -> None:
    run = await start(start_appliance, opnsense(firewall), never_block=["198.51.100.0/24"])
    await brute_force(run, "198.51.100.7")
    [row] = await wait_state(run, "refused")
    assert "never_block (198.51.100.0/24)" in row["last_error"]
    [entry] = await audit(run, action_id=str(row["id"]))
    assert entry["event"] == "refused" and entry["detail"].startswith("never_block:")
    assert firewall.calls == [] and firewall.aliases["sem_blocklist"] == set()
    assert 'appliance_respond_refused_total{reason="never_block"} 1' in await run.metrics()


async def test_management_network_is_never_blocked(
    start_appliance: Any, firewall: Firewall
) -> None:
    run = await start(start_appliance, opnsense(firewall), management_networks=["203.0.113.0/28"])
    await brute_force(run)
    [row] = await wait_state(run, "refused")
    assert "management network (203.0.113.0/28)" in row["last_error"]
    assert firewall.calls == []


async def test_dry_run_logs_and_audits_what_it_would_do_and_calls_nothing(
    start_appliance: Any, firewall: Firewall, caplog: pytest.LogCaptureFixture
) -> None:
    action = opnsense(firewall, ttl=1)
    del action["dry_run"]  # the default
    run = await start(start_appliance, action)
    with caplog.at_level(logging.WARNING, logger="appliance.respond"):
        await brute_force(run)
        [row] = await wait_state(run, "undone")
    assert row["dry_run"] is True
    assert firewall.calls == []
    assert await events_of(run, row["id"]) == ["planned", "dry_run", "expired", "undone"]
    said = [r.getMessage() for r in caplog.records]
    assert any("dry run: would run POST" in m and "alias_util/add/sem_blocklist" in m for m in said)
    assert any("dry run: would undo POST" in m for m in said)


async def test_exec_action_gets_the_address_as_one_argv_element(
    start_appliance: Any, tmp_path: Path
) -> None:
    blocklist = tmp_path / "blocked.txt"
    run = await start(start_appliance, exec_action(blocklist, ttl=1))
    await brute_force(run, "2001:db8::0:7")
    await wait_state(run, "active")
    assert blocklist.read_text() == "2001:db8::7\n"  # the canonical form, one element
    await wait_state(run, "undone")
    assert blocklist.read_text() == ""
    calls = blocklist.with_suffix(".calls").read_text().splitlines()
    assert calls == [
        f'["{blocklist}", "add", "2001:db8::7"]',
        f'["{blocklist}", "del", "2001:db8::7"]',
    ]


async def test_ip_with_shell_metacharacters_is_refused_and_audited(
    start_appliance: Any, tmp_path: Path
) -> None:
    blocklist = tmp_path / "blocked.txt"
    run = await start(start_appliance, exec_action(blocklist))
    await brute_force(run, "203.0.113.9; touch /tmp/pwned")
    [row] = await wait_state(run, "refused")
    assert row["value"] == "203.0.113.9; touch /tmp/pwned"
    assert "IP address" in row["last_error"]
    [entry] = await audit(run, action_id=str(row["id"]))
    assert entry["detail"].startswith("bad_value:")
    assert not blocklist.exists()
    assert 'appliance_respond_refused_total{reason="bad_value"} 1' in await run.metrics()


async def test_a_held_value_is_not_blocked_twice(start_appliance: Any, firewall: Firewall) -> None:
    run = await start(start_appliance, opnsense(firewall))
    await brute_force(run)
    [first] = await wait_state(run, "active")
    incident = (await run.get_json("/api/v1/incidents"))["incidents"][0]
    async with run.session.post(
        f"{run.api}/api/v1/incidents/{incident['id']}/resolve",
        headers={"Authorization": f"Bearer {TOKEN}"},
    ) as resp:
        assert resp.status == 200
    await brute_force(run, base=3000)  # a new incident for the same source
    [dup] = await wait_state(run, "duplicate")
    assert dup["incident_id"] != first["incident_id"]
    assert dup["last_error"] == f"already held by action {first['id']}"
    assert len(firewall.calls) == 1


async def test_rate_limit_refuses_actions_beyond_the_minute_budget(
    start_appliance: Any, firewall: Firewall
) -> None:
    run = await start(start_appliance, opnsense(firewall), max_per_minute=1)
    await brute_force(run, "203.0.113.1")
    await brute_force(run, "203.0.113.2", base=100)
    [refused] = await wait_state(run, "refused")
    await wait_state(run, "active")
    assert refused["value"] == "203.0.113.2" and "rate_limit" not in refused["last_error"]
    assert "more than 1 actions in a minute" in refused["last_error"]
    assert firewall.aliases["sem_blocklist"] == {"203.0.113.1"}


async def test_failed_calls_retry_with_backoff_and_the_error_is_visible(
    start_appliance: Any, firewall: Firewall
) -> None:
    firewall.fail_next = 2
    run = await start(start_appliance, opnsense(firewall))
    await brute_force(run)
    [row] = await wait_state(run, "active")
    assert row["attempts"] == 2 and row["last_error"] is None
    assert await events_of(run, row["id"]) == ["planned", "retry", "retry", "executed"]
    retry = [a for a in await audit(run, action_id=str(row["id"])) if a["event"] == "retry"]
    assert "HTTP 503" in retry[0]["detail"]
    assert firewall.aliases["sem_blocklist"] == {ATTACKER}


async def test_call_that_keeps_failing_ends_failed_after_max_attempts(
    start_appliance: Any, firewall: Firewall
) -> None:
    firewall.fail_next = 100
    run = await start(start_appliance, opnsense(firewall, max_attempts=3))
    await brute_force(run)
    [row] = await wait_state(run, "failed")
    assert row["attempts"] == 3 and "HTTP 503" in row["last_error"]
    assert await events_of(run, row["id"]) == ["planned", "retry", "retry", "failed"]


async def test_manual_undo_through_the_api_lifts_the_block(
    start_appliance: Any, firewall: Firewall
) -> None:
    run = await start(start_appliance, opnsense(firewall))
    await brute_force(run)
    [row] = await wait_state(run, "active")
    url = f"{run.api}/api/v1/respond/actions/{row['id']}/undo"
    async with run.session.post(url, headers={"Authorization": f"Bearer {TOKEN}"}) as resp:
        assert resp.status == 202
        assert (await resp.json())["state"] in ("undo_pending", "undone")
    await wait_state(run, "undone")
    assert firewall.aliases["sem_blocklist"] == set()
    entries = await audit(run, action_id=str(row["id"]))
    assert [e["event"] for e in reversed(entries)][-2:] == ["undo_requested", "undone"]
    assert entries[1]["actor"] == "api:legacy"
    async with run.session.post(url, headers={"Authorization": f"Bearer {TOKEN}"}) as resp:
        assert resp.status == 409  # undone: nothing left to undo
    async with run.session.post(
        f"{run.api}/api/v1/respond/actions/999/undo", headers={"Authorization": f"Bearer {TOKEN}"}
    ) as resp:
        assert resp.status == 404


async def test_respond_api_validates_its_parameters(start_appliance: Any) -> None:
    run = await start_appliance()
    headers = {"Authorization": f"Bearer {TOKEN}"}
    for path in (
        "/api/v1/respond/actions?state=bogus",
        "/api/v1/respond/actions?limit=0",
        "/api/v1/respond/audit?since=yesterday",
        "/api/v1/respond/audit?action_id=-1",
    ):
        async with run.session.get(run.api + path, headers=headers) as resp:
            assert resp.status == 400, path
    async with run.session.post(
        run.api + "/api/v1/respond/actions/abc/undo", headers=headers
    ) as resp:
        assert resp.status == 400
    assert await actions(run) == []


async def test_action_not_matching_severity_or_rule_does_nothing(
    start_appliance: Any, firewall: Firewall
) -> None:
    run = await start(
        start_appliance,
        opnsense(firewall, name="crit", min_severity="critical"),
        opnsense(firewall, name="other", rules=["not-this-rule-*"]),
        opnsense(firewall, name="elsewhere", source_networks=["192.0.2.0/24"]),
    )
    await brute_force(run)
    await run.wait_for(lambda: responder_of(run.app) is not None)
    incidents: list[dict[str, Any]] = []

    async def raised() -> bool:
        # Correlation runs after the store: the incident comes a moment after the events.
        # The responder decides inside the incident's transaction, so once it is visible
        # any action it would have taken is too.
        incidents[:] = (await run.get_json("/api/v1/incidents"))["incidents"]
        return len(incidents) >= 1

    await run.wait_for(raised)
    assert len(incidents) == 1
    assert await actions(run) == [] and firewall.calls == []


@pytest.fixture
def nft_namespace() -> Any:
    """A network namespace with an nftables set ``inet sem blocklist``; removed afterwards."""
    import os
    import shutil
    import subprocess

    ip, nft = shutil.which("ip"), shutil.which("nft")
    if os.geteuid() != 0 or ip is None or nft is None:
        pytest.skip("needs root, ip (iproute2) and nft (nftables) for a network namespace")
    name = f"sem-respond-{os.getpid()}"
    if subprocess.run([ip, "netns", "add", name], capture_output=True).returncode != 0:
        pytest.skip("cannot create a network namespace here (ip netns add failed)")
    try:
        for cmd in (
            ["add", "table", "inet", "sem"],
            ["add", "set", "inet", "sem", "blocklist", "{ type ipv4_addr; }"],
        ):
            subprocess.run([ip, "netns", "exec", name, nft, *cmd], check=True)
        yield ip, nft, name
    finally:
        subprocess.run([ip, "netns", "del", name], check=False)


def nft_elements(ip: str, nft: str, ns: str) -> list[str]:
    import json
    import subprocess

    out = subprocess.run(
        [ip, "netns", "exec", ns, nft, "-j", "list", "set", "inet", "sem", "blocklist"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    for item in json.loads(out)["nftables"]:
        if "set" in item:
            return [str(e) for e in item["set"].get("elem", [])]
    return []


async def test_nft_set_in_a_network_namespace_is_filled_and_emptied_after_ttl(
    start_appliance: Any, nft_namespace: Any
) -> None:
    ip, nft, ns = nft_namespace
    prefix = [ip, "netns", "exec", ns, nft]
    action = {
        "name": "nft",
        "type": "exec",
        "argv": [*prefix, "add", "element", "inet", "sem", "blocklist", "{ {ip} }"],
        "undo_argv": [*prefix, "delete", "element", "inet", "sem", "blocklist", "{ {ip} }"],
        "dry_run": False,
        "ttl": 1,
    }
    run = await start(start_appliance, action)
    await brute_force(run)
    await wait_state(run, "active")
    assert nft_elements(ip, nft, ns) == [ATTACKER]
    await wait_state(run, "undone")
    assert nft_elements(ip, nft, ns) == []


async def test_a_read_token_lists_actions_but_cannot_undo(
    start_appliance: Any, firewall: Firewall, tmp_path: Path
) -> None:
    from appliance.api import tokens as api_tokens

    run = await start(start_appliance, opnsense(firewall))
    path = tmp_path / "data" / api_tokens.TOKENS_FILE
    reader, _ = api_tokens.add_token(path, "grafana", ["read"])
    await brute_force(run)
    [row] = await wait_state(run, "active")
    listed = await run.get_json("/api/v1/respond/actions", token=reader)
    assert [a["id"] for a in listed["actions"]] == [row["id"]]
    headers = {"Authorization": f"Bearer {reader}"}
    async with run.session.post(
        f"{run.api}/api/v1/respond/actions/{row['id']}/undo", headers=headers
    ) as resp:
        assert resp.status == 403
    assert firewall.aliases["sem_blocklist"] == {ATTACKER}


HOST_RULE = """title: SSH failures on a host
id: 5d0c1a52-0000-4000-8000-000000000001
status: test
logsource:
  product: linux
  service: sshd
detection:
  selection:
    event.action: ssh_login
    event.outcome: failure
  condition: selection
level: high
appliance:
  group_by:
  - host.hostname
"""


async def test_value_missing_from_the_group_is_taken_from_agreeing_evidence(
    start_appliance: Any, firewall: Firewall, tmp_path: Path
) -> None:
    rules = tmp_path / "rules"
    rules.mkdir()
    (rules / "host.yml").write_text(HOST_RULE)
    run = await start_appliance(
        rules={"paths": [str(rules)], "builtin": False},
        respond={"actions": [opnsense(firewall)]},
    )
    await brute_force(run)
    [row] = await wait_state(run, "active")
    assert row["value"] == ATTACKER
    assert firewall.aliases["sem_blocklist"] == {ATTACKER}


async def test_evidence_with_several_sources_is_not_guessed_from(
    start_appliance: Any, firewall: Firewall
) -> None:
    run = await start(start_appliance, opnsense(firewall, rules=["e8bae899-*"]))
    before = run.app.pipeline.stored.total()
    for i in range(12):  # one user name from 12 addresses: the distributed brute force
        e = ssh(i, f"203.0.113.{20 + i}", "admin")
        e.id = None
        assert run.app.pipeline.offer(e, "test")
    await run.wait_stored(before + 12)
    [row] = await wait_state(run, "refused")
    assert "different source.ip values" in row["last_error"]
    assert firewall.calls == []
