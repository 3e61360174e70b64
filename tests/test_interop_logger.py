"""Interop: util-linux `logger` (Debian bsdutils) as the sender, both RFCs, IPv4 and IPv6."""

from __future__ import annotations

import asyncio
import socket

import pytest

from tests.conftest import need_tool

pytestmark = pytest.mark.interop


async def logger_send(*args: str) -> None:
    proc = await asyncio.create_subprocess_exec(need_tool("logger"), *args)
    assert await asyncio.wait_for(proc.wait(), 10) == 0


@pytest.mark.parametrize("rfc,fmt", [("--rfc5424", "rfc5424"), ("--rfc3164", "rfc3164")])
async def test_logger_udp_message_is_listed_within_2s(start_appliance, rfc: str, fmt: str) -> None:
    run = await start_appliance()
    host, port = run.source().address
    await logger_send(
        "-n",
        host,
        "-P",
        str(port),
        "-d",
        rfc,
        "-t",
        "mytag",
        "-p",
        "auth.warning",
        "-i",
        "hello from logger",
    )

    async def listed() -> bool:
        return bool((await run.get_json("/api/v1/events"))["events"])

    await run.wait_for(listed, timeout=2.0)
    (ev,) = (await run.get_json("/api/v1/events"))["events"]
    assert ev["message"] == "hello from logger"
    assert ev["process"]["name"] == "mytag"
    assert isinstance(ev["process"]["pid"], int)
    assert ev["log"]["syslog"]["severity"]["name"] == "warning"
    assert ev["log"]["syslog"]["facility"]["name"] == "auth"
    assert ev["log"]["syslog"]["format"] == fmt
    assert ev["host"]["hostname"] in (socket.gethostname(), socket.gethostname().split(".")[0])


async def test_logger_over_ipv6(start_appliance) -> None:
    try:
        run = await start_appliance(sources={"syslog": [{"listen": "[::1]:0"}]})
    except OSError as exc:
        pytest.skip(f"no IPv6 loopback: {exc}")
    _, port = run.source().address
    await logger_send("-n", "::1", "-P", str(port), "-d", "--rfc5424", "v6 hello")
    await run.wait_stored(1, timeout=2.0)
    (ev,) = (await run.get_json("/api/v1/events"))["events"]
    assert (ev["message"], ev["observer"]["ip"]) == ("v6 hello", "::1")
