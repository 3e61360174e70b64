"""Syslog over UDP into SQLite, visible through the API: real sockets on loopback."""

from __future__ import annotations

import socket

import aiohttp
import pytest

from appliance.protocols.syslog.vendors import BUILTIN, VendorRegistry
from appliance.protocols.syslog.vendors.base import VendorDecoder
from tests.conftest import TOKEN


def send_udp(addr: tuple[str, int], *payloads: bytes) -> None:
    family = socket.AF_INET6 if ":" in addr[0] else socket.AF_INET
    with socket.socket(family, socket.SOCK_DGRAM) as s:
        for p in payloads:
            s.sendto(p, addr)


async def test_rfc5424_datagram_is_stored_and_listed(start_appliance) -> None:
    run = await start_appliance()
    send_udp(run.source().address, b"<34>1 2026-11-29T10:00:00Z fw1 sshd 42 ID7 - auth failed")
    await run.wait_stored(1)
    body = await run.get_json("/api/v1/events")
    (ev,) = body["events"]
    assert ev["message"] == "auth failed"
    assert ev["host"]["hostname"] == "fw1"
    assert ev["process"] == {"name": "sshd", "pid": 42}
    assert ev["log"]["syslog"]["severity"] == {"code": 2, "name": "critical"}
    assert ev["log"]["syslog"]["facility"] == {"code": 4, "name": "auth"}
    assert ev["@timestamp"] == "2026-11-29T10:00:00.000000Z"
    assert ev["observer"]["ip"] == "127.0.0.1"
    assert ev["event"]["original"].startswith("<34>1 ")
    assert ev["agent"]["id"] == "test-01"


async def test_ipv6_listener_receives(start_appliance) -> None:
    if not socket.has_ipv6:
        pytest.skip("no IPv6 on this host")
    try:
        run = await start_appliance(sources={"syslog": [{"listen": "[::1]:0"}]})
    except OSError as exc:
        pytest.skip(f"cannot bind ::1: {exc}")
    send_udp(run.source().address, b"<13>Nov 29 10:00:00 v6host app: over v6")
    await run.wait_stored(1)
    (ev,) = (await run.get_json("/api/v1/events"))["events"]
    assert (ev["message"], ev["observer"]["ip"]) == ("over v6", "::1")


async def test_api_requires_the_bearer_token(start_appliance) -> None:
    run = await start_appliance()
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": TOKEN}):
        async with run.session.get(run.api + "/api/v1/events", headers=headers) as resp:
            assert resp.status == 401


async def test_healthz_and_metrics_need_no_token(start_appliance) -> None:
    run = await start_appliance()
    send_udp(run.source().address, b"<13>hello")
    await run.wait_stored(1)
    async with aiohttp.ClientSession() as s, s.get(run.api + "/healthz") as resp:
        health = await resp.json()
    assert health["status"] == "ok"
    assert health["sources"]["syslog-udp"] == {"received": 1, "dropped": 0}
    text = await run.metrics()
    assert 'appliance_events_received_total{source="syslog-udp"} 1' in text
    assert "appliance_events_stored_total 1" in text
    assert "appliance_queue_depth 0" in text
    assert "appliance_database_size_bytes" in text


async def test_sender_outside_allow_list_is_dropped_and_counted(start_appliance) -> None:
    run = await start_appliance(
        sources={"syslog": [{"listen": "127.0.0.1:0", "allowed": ["10.0.0.0/8"]}]}
    )
    send_udp(run.source().address, b"<13>not allowed")
    await run.wait_for(lambda: run.app.pipeline.dropped.total() >= 1)
    assert run.app.pipeline.dropped.value("syslog-udp", "not_allowed") == 1
    assert run.app.pipeline.stored.total() == 0


async def test_oversized_datagram_is_truncated_and_counted(start_appliance) -> None:
    run = await start_appliance(
        sources={"syslog": [{"listen": "127.0.0.1:0", "max_message_bytes": 100}]}
    )
    send_udp(run.source().address, b"<13>" + b"A" * 5000)
    await run.wait_stored(1)
    (ev,) = (await run.get_json("/api/v1/events"))["events"]
    assert ev["message"] == "A" * 96
    assert 'appliance_syslog_truncated_total{source="syslog-udp"} 1' in await run.metrics()


async def test_empty_datagram_is_counted(start_appliance) -> None:
    run = await start_appliance()
    send_udp(run.source().address, b"", b"<13>ok")
    await run.wait_stored(1)
    assert run.app.pipeline.dropped.value("syslog-udp", "empty") == 1


async def test_filters_and_cursor_paging(start_appliance) -> None:
    run = await start_appliance()
    send_udp(
        run.source().address,
        *[b"<13>1 2026-11-29T10:00:%02dZ h%d app - - - msg %d" % (i, i % 2, i) for i in range(10)],
    )
    await run.wait_stored(10)
    page = await run.get_json("/api/v1/events", limit=4)
    assert [e["message"] for e in page["events"]] == ["msg 9", "msg 8", "msg 7", "msg 6"]
    page2 = await run.get_json("/api/v1/events", limit=4, cursor=page["next_cursor"])
    assert [e["message"] for e in page2["events"]] == ["msg 5", "msg 4", "msg 3", "msg 2"]
    h1 = await run.get_json("/api/v1/events", **{"host.hostname": "h1"})
    assert {e["message"] for e in h1["events"]} == {f"msg {i}" for i in (1, 3, 5, 7, 9)}
    q = await run.get_json("/api/v1/events", q="msg 7")
    assert [e["message"] for e in q["events"]] == ["msg 7"]
    since = await run.get_json("/api/v1/events", since="2026-11-29T10:00:08Z")
    assert [e["message"] for e in since["events"]] == ["msg 9", "msg 8"]
    until = await run.get_json("/api/v1/events", until="2026-11-29T10:00:02Z")
    assert [e["message"] for e in until["events"]] == ["msg 1", "msg 0"]
    by_ip = await run.get_json("/api/v1/events", **{"source.ip": "127.0.0.1"})
    assert by_ip["count"] == 10


async def test_bad_query_parameter_is_a_400(start_appliance) -> None:
    run = await start_appliance()
    headers = {"Authorization": f"Bearer {TOKEN}"}
    for params in ({"since": "yesterday"}, {"limit": "-1"}, {"limit": "100000"}):
        async with run.session.get(
            run.api + "/api/v1/events", params=params, headers=headers
        ) as resp:
            assert resp.status == 400
            assert "error" in await resp.json()


async def test_port_in_use_fails_at_start(start_appliance) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as busy:
        busy.bind(("127.0.0.1", 0))
        port = busy.getsockname()[1]
        with pytest.raises(OSError, match="cannot bind udp"):
            await start_appliance(sources={"syslog": [{"listen": f"127.0.0.1:{port}"}]})


async def test_a_decoder_bug_costs_one_message_not_the_listener(
    start_appliance, monkeypatch, caplog
) -> None:
    run = await start_appliance()
    src = run.source()

    def flaky(msg, fields):
        if "boom" in msg.message:
            raise RuntimeError("decoder bug")
        return False

    # A vendor decoder with a bug, tried on every line: both the per-message path and the
    # native batch path run the registry, so both must contain it.
    bug = VendorDecoder(name="flaky", decode=flaky, last_resort=True)
    src.intake.use_decoders(VendorRegistry([*BUILTIN, bug]))
    send_udp(src.address, b"<13>boom", b"<13>fine")
    await run.wait_stored(1)
    assert run.app.pipeline.dropped.value("syslog-udp", "decode_error") == 1
    assert "decoder failed on a datagram from 127.0.0.1" in caplog.text
    assert [e["message"] for e in (await run.get_json("/api/v1/events"))["events"]] == ["fine"]
