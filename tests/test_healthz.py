"""/healthz: what a load balancer or an operator sees of the appliance's state."""

from __future__ import annotations

from typing import Any

SOURCES = {
    "syslog": [
        {"listen": "127.0.0.1:0", "name": "udp"},
        {"protocol": "tcp", "listen": "127.0.0.1:0", "name": "tcp"},
    ],
    "snmp": [{"listen": "127.0.0.1:0", "name": "traps"}],
    "netflow": [{"listen": "127.0.0.1:0", "name": "flows", "allowed": ["127.0.0.0/8"]}],
}


async def test_healthz_is_degraded_and_names_configured_sources_not_listening(
    start_appliance: Any,
) -> None:
    run = await start_appliance(sources=SOURCES)
    health = await run.get_json("/healthz")
    assert (health["status"], health["not_listening"]) == ("ok", [])
    stopped: list[str] = []
    for name in ("flows", "traps", "tcp", "udp"):
        await run.source(name).stop()
        stopped.append(name)
        health = await run.get_json("/healthz")
        assert health["status"] == "degraded"
        assert sorted(health["not_listening"]) == sorted(stopped)
