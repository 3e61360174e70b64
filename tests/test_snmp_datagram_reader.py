"""The SNMP trap source reads its socket like the other datagram sources: the batch reader and
its backlog (``backlog_bytes``) hold a trap storm while the pipeline has no room, for v1, v2c
and v3 alike; v3 answers (Reports for engine-ID discovery, inform responses) leave from the
listening socket; what the socket holds at stop is stored; without ``recvmmsg`` asyncio reads
it and everything works the same."""

from __future__ import annotations

import asyncio
import socket
from typing import Any

import pytest

from appliance.event import Event
from appliance.protocols.snmp import ber
from appliance.protocols.snmp.message import encode_trap_v2c
from appliance.sources.udp import UdpBatchReader
from tests.conftest import need_tool
from tests.test_snmp_interop import ENGINE, USERS, link_down_args, run_tool

LINK_DOWN = "1.3.6.1.6.3.1.1.5.3"


def trap(i: int) -> bytes:
    varbinds = [("1.3.6.1.2.1.2.2.1.1.5", ber.INTEGER, b"\x05")]
    return encode_trap_v2c(b"public", LINK_DOWN, varbinds, request_id=i)


def send(addr: tuple[str, int], payloads: list[bytes]) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        for p in payloads:
            s.sendto(p, addr)


class Stall:
    """A pre-store stage that holds its batch until ``gate`` opens: a stalled store, as the
    pipeline sees it (its queue fills, ``wants_more`` turns False)."""

    name = "stall"

    def __init__(self) -> None:
        self.gate = asyncio.Event()
        self.entered = asyncio.Event()

    async def process(self, events: list[Event], now: float) -> None:
        self.entered.set()
        await self.gate.wait()


async def snmp_app(start_appliance: Any, *, pipeline: dict[str, Any] | None = None, **cfg: Any):
    source = {"listen": "127.0.0.1:0", "communities": ["public"], "users": USERS, **cfg}
    sections: dict[str, Any] = {"sources": {"snmp": [source]}}
    if pipeline:
        sections["pipeline"] = {"flush_interval": 0.05, **pipeline}
    run = await start_appliance(**sections)
    return run, run.source("snmp")


def books_balance(run: Any) -> bool:
    p = run.app.pipeline
    return p.received.total() == p.stored.total() + p.dropped.total()


async def versions(run: Any) -> list[str]:
    body = await run.get_json("/api/v1/events", limit=100)
    return sorted(ev["snmp"]["version"] for ev in body["events"])


needs_recvmmsg = pytest.mark.skipif(
    not UdpBatchReader.available, reason="recvmmsg is not available (the fallback tests run)"
)


@needs_recvmmsg
async def test_a_trap_storm_while_the_store_is_stalled_waits_in_the_backlog_then_is_stored(
    start_appliance: Any,
) -> None:
    # A queue of 100 events: without the backlog, most of 2,000 traps offered meanwhile would
    # be dropped as queue_full. (The reader hands over a slice, up to 64 datagrams, whenever
    # the pipeline wants more, so the queue must hold two batches and a slice.)
    run, src = await snmp_app(start_appliance, pipeline={"queue_size": 100, "batch_size": 10})
    stall = Stall()
    run.app.pipeline.before_store.append(stall)
    p = run.app.pipeline
    try:
        send(src.address, [trap(0)])
        await asyncio.wait_for(stall.entered.wait(), 10)
        send(src.address, [trap(i) for i in range(1, 2000)])
        await run.wait_for(lambda: len(p) + len(src.reader.backlog) == 1999, timeout=20)
        assert len(p) <= 20 + 64  # two batches, plus at most the slice that crossed the line
        assert src.reader.held > 0
        assert p.dropped.total() == 0
    finally:
        stall.gate.set()
    await run.wait_stored(2000, timeout=30)
    assert p.dropped.total() == 0 and books_balance(run)
    assert src.reader.held == 0 and not src.reader.backlog


@needs_recvmmsg
@pytest.mark.interop  # net-snmp's tools
async def test_v1_v2c_and_v3_traps_sent_while_the_store_is_stalled_are_stored_after(
    start_appliance: Any,
) -> None:
    need_tool("snmptrap")
    run, src = await snmp_app(start_appliance, pipeline={"batch_size": 1})
    stall = Stall()
    run.app.pipeline.before_store.append(stall)
    host, port = src.address
    target = f"udp:{host}:{port}"
    try:
        # One stuck in the stage, two queued: two batches of one, the pipeline wants no more.
        send(src.address, [trap(0), trap(1), trap(2)])
        await asyncio.wait_for(stall.entered.wait(), 10)
        await run.wait_for(lambda: len(run.app.pipeline) == 2, timeout=10)
        sent = [
            ("snmptrap", "-v1", "-c", "public", target, "1.3.6.1.4.1.8072", "192.0.2.9", "2",
             "0", ""),
            ("snmptrap", "-v2c", "-c", "public", *link_down_args(target)),
            ("snmptrap", "-v3", "-u", "shaaes", "-e", ENGINE, "-l", "authPriv", "-a", "SHA",
             "-A", "authkey-sha1", "-x", "AES", "-X", "privkey-aes1", *link_down_args(target)),
        ]  # fmt: skip
        for args in sent:
            rc, out = await run_tool(*args)
            assert rc == 0, out
        await run.wait_for(lambda: len(src.reader.backlog) == 3, timeout=10)
        assert run.app.pipeline.received.total() == 3  # held raw: not yet decoded
    finally:
        stall.gate.set()
    await run.wait_stored(6, timeout=20)
    assert await versions(run) == ["1", "2c", "2c", "2c", "2c", "3"]
    assert books_balance(run) and run.app.pipeline.dropped.total() == 0


@needs_recvmmsg
@pytest.mark.interop  # net-snmp's tools
async def test_v3_inform_discovers_the_engine_id_through_the_batch_reader(
    start_appliance: Any,
) -> None:
    """snmpinform first sends a discovery probe; the Report carrying our engine ID, boots and
    time, then the Response to the inform, both go out of the listening socket."""
    need_tool("snmpinform")
    run, src = await snmp_app(start_appliance)
    assert src.reader is not None and src.transport is None
    host, port = src.address
    rc, out = await run_tool(
        "snmpinform", "-v3", "-u", "informer", "-l", "authPriv", "-a", "SHA-256", "-A",
        "authkey-sha256", "-x", "AES", "-X", "privkey-aes2", "-t", "3", "-r", "1",
        f"udp:{host}:{port}", "", "1.3.6.1.6.3.1.1.5.2",
    )  # fmt: skip
    assert rc == 0, out  # non-zero without the Report or without the Response
    await run.wait_stored(1)
    assert await versions(run) == ["3"]
    assert src.informs_answered.value("snmp") == 1
    assert run.app.pipeline.dropped.value("snmp", "engine_discovery") == 1  # the probe


@pytest.mark.filterwarnings("ignore::DeprecationWarning:pysnmp.smi.compiler")  # its pysmi use
async def test_a_pysnmp_sender_v2c_trap_and_v3_authpriv_inform_are_stored(
    start_appliance: Any,
) -> None:
    from pysnmp.hlapi.v3arch import asyncio as hl

    run, src = await snmp_app(start_appliance)
    host, port = src.address
    notification = hl.NotificationType(hl.ObjectIdentity(LINK_DOWN))
    informer = hl.UsmUserData(
        "informer",
        "authkey-sha256",
        "privkey-aes2",
        authProtocol=hl.USM_AUTH_HMAC192_SHA256,
        privProtocol=hl.USM_PRIV_CFB128_AES,
    )
    # One engine per message: an engine sends a notification to every target it knows.
    for auth, kind in ((hl.CommunityData("public"), "trap"), (informer, "inform")):
        engine = hl.SnmpEngine()
        try:
            target = await hl.UdpTransportTarget.create((host, port), timeout=3, retries=1)
            # For the inform, pysnmp first discovers our engine ID (a Report from our socket).
            error, status, _index, _binds = await hl.send_notification(
                engine, auth, target, hl.ContextData(), kind, notification
            )
            assert error is None and not status, (kind, error, status)
        finally:
            engine.close_dispatcher()
    await run.wait_stored(2)
    assert await versions(run) == ["2c", "3"]
    assert src.informs_answered.value("snmp") == 1


@needs_recvmmsg
async def test_what_the_socket_holds_at_stop_is_stored(start_appliance: Any) -> None:
    """A small backlog fills and reading pauses, leaving the rest in the kernel's buffer; at
    stop the backlog is handed over as the pipeline has room and the socket is read dry."""
    run, src = await snmp_app(
        start_appliance, backlog_bytes=4096, rcvbuf_bytes=16 << 20, pipeline={"batch_size": 10}
    )
    stall = Stall()
    p = run.app.pipeline
    p.before_store.append(stall)
    reader = src.reader
    try:
        send(src.address, [trap(0)])
        await asyncio.wait_for(stall.entered.wait(), 10)
        send(src.address, [trap(i) for i in range(1, 1500)])
        await run.wait_for(lambda: reader.full > 0, timeout=10)
        assert src.kernel_drops() == 0
    finally:
        stall.gate.set()
        await run.app.stop()  # runs before the reader can read on: the rest is in the kernel
    assert p.stored.total() == 1500
    assert p.received.total() == 1500 and p.dropped.total() == 0


async def test_backlog_and_receive_buffer_are_visible_in_metrics(start_appliance: Any) -> None:
    run, _src = await snmp_app(start_appliance, backlog_bytes=123_456, rcvbuf_bytes=1 << 20)
    text = await run.metrics()
    assert 'appliance_snmp_limit{source="snmp",limit="backlog_bytes"} 123456' in text
    assert 'appliance_snmp_limit{source="snmp",limit="rcvbuf_bytes"} 1048576' in text
    assert 'appliance_udp_backlog_bytes{source="snmp"} 0' in text
    assert 'appliance_udp_backlog_full{source="snmp"} 0' in text


@pytest.fixture
def no_recvmmsg(monkeypatch: pytest.MonkeyPatch) -> None:
    """The path a platform without ``recvmmsg`` takes: an asyncio datagram endpoint."""
    monkeypatch.setattr(UdpBatchReader, "available", False)


@pytest.mark.usefixtures("no_recvmmsg")
@pytest.mark.interop  # net-snmp's tools
async def test_without_recvmmsg_v1_v2c_and_v3_traps_arrive_through_asyncio(
    start_appliance: Any,
) -> None:
    need_tool("snmptrap")
    run, src = await snmp_app(start_appliance)
    assert src.reader is None and src.transport is not None
    host, port = src.address
    target = f"udp:{host}:{port}"
    sent = [
        ("snmptrap", "-v1", "-c", "public", target, "1.3.6.1.4.1.8072", "192.0.2.9", "2", "0",
         ""),
        ("snmptrap", "-v2c", "-c", "public", *link_down_args(target)),
        ("snmptrap", "-v3", "-u", "shaaes", "-e", ENGINE, "-l", "authPriv", "-a", "SHA", "-A",
         "authkey-sha1", "-x", "AES", "-X", "privkey-aes1", *link_down_args(target)),
    ]  # fmt: skip
    for args in sent:
        rc, out = await run_tool(*args)
        assert rc == 0, out
    await run.wait_stored(3)
    assert await versions(run) == ["1", "2c", "3"]


@pytest.mark.usefixtures("no_recvmmsg")
@pytest.mark.interop  # net-snmp's tools
async def test_without_recvmmsg_a_v3_inform_discovers_the_engine_id(
    start_appliance: Any,
) -> None:
    need_tool("snmpinform")
    run, src = await snmp_app(start_appliance)
    host, port = src.address
    rc, out = await run_tool(
        "snmpinform", "-v3", "-u", "informer", "-l", "authPriv", "-a", "SHA-256", "-A",
        "authkey-sha256", "-x", "AES", "-X", "privkey-aes2", "-t", "3", "-r", "1",
        f"udp:{host}:{port}", "", "1.3.6.1.6.3.1.1.5.2",
    )  # fmt: skip
    assert rc == 0, out
    await run.wait_stored(1)
    assert src.informs_answered.value("snmp") == 1


@pytest.mark.usefixtures("no_recvmmsg")
async def test_without_recvmmsg_what_the_socket_holds_at_stop_is_stored(
    start_appliance: Any,
) -> None:
    run, src = await snmp_app(start_appliance)
    p = run.app.pipeline
    send(src.address, [trap(i) for i in range(300)])
    await run.app.stop()  # before the loop ran the endpoint's reads: the socket is drained
    assert p.stored.total() == 300 and p.received.total() == 300
