"""net-snmp's ``snmptrap`` → the trap source → the built-in rules → incidents in the API."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from tests.conftest import need_tool

pytestmark = pytest.mark.interop

LINK_DOWN = "1.3.6.1.6.3.1.1.5.3"
LINK_UP = "1.3.6.1.6.3.1.1.5.4"
COLD_START = "1.3.6.1.6.3.1.1.5.1"
AUTH_FAILURE = "1.3.6.1.6.3.1.1.5.5"
IF_INDEX_3 = "1.3.6.1.2.1.2.2.1.1.3"
IF_DESCR_3 = "1.3.6.1.2.1.2.2.1.2.3"


async def snmptrap(target: str, oid: str, *varbinds: str) -> None:
    proc = await asyncio.create_subprocess_exec(
        "snmptrap",
        "-v2c",
        "-c",
        "public",
        target,
        "",
        oid,
        *varbinds,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await asyncio.wait_for(proc.communicate(), 15)
    assert proc.returncode == 0, out


async def titles(run: Any) -> dict[str, dict]:
    body = await run.get_json("/api/v1/incidents")
    return {i["title"]: i for i in body["incidents"]}


async def test_traps_raise_flapping_reboot_and_auth_failure_incidents(start_appliance) -> None:
    need_tool("snmptrap")
    run = await start_appliance(
        sources={"snmp": [{"listen": "127.0.0.1:0", "communities": ["public"]}]}
    )
    host, port = run.source("snmp").address
    target = f"udp:{host}:{port}"
    iface = [IF_INDEX_3, "i", "3", IF_DESCR_3, "s", "Gi0/3"]
    for _ in range(3):
        await snmptrap(target, LINK_DOWN, *iface)
        await snmptrap(target, LINK_UP, *iface)
    await snmptrap(target, COLD_START)
    await snmptrap(target, AUTH_FAILURE)
    want = {
        "Link flapping (3 down/up cycles in 10 minutes)",
        "Network device restarted",
        "SNMP authentication failure trap",
    }
    found: dict[str, dict] = {}

    async def check() -> bool:
        found.update(await titles(run))
        return want <= set(found)

    await run.wait_for(check, timeout=10)
    flap = found["Link flapping (3 down/up cycles in 10 minutes)"]
    assert flap["group_key"] == "observer.ip=127.0.0.1,observer.ingress.interface.name=Gi0/3"
    assert found["Network device restarted"]["group_key"] == "observer.ip=127.0.0.1"
