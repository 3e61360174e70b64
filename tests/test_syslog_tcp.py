"""Syslog over TCP and TLS: real sockets on loopback, real TLS (trustme), real SQLite."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import socket
import ssl
import struct
from pathlib import Path
from typing import Any

import pytest
import trustme

from appliance.sources import syslog_tcp
from tests.conftest import LOOPS, run_on_loop, running_appliance, uvloop

pytestmark = pytest.mark.usefixtures("backend")


def tcp_source(**kw: Any) -> dict[str, Any]:
    return {"sources": {"syslog": [{"protocol": "tcp", "listen": "127.0.0.1:0", **kw}]}}


async def send_tcp(addr: tuple[str, int], data: bytes, *, close: bool = True) -> socket.socket:
    family = socket.AF_INET6 if ":" in addr[0] else socket.AF_INET
    s = socket.socket(family, socket.SOCK_STREAM)
    s.setblocking(False)
    loop = asyncio.get_running_loop()
    await loop.sock_connect(s, addr)
    await loop.sock_sendall(s, data)
    if close:
        s.close()
    return s


def send_and_reset(addr: tuple[str, int], data: bytes) -> None:
    """Connect, send and reset (SO_LINGER 0) without yielding to the event loop, so the
    appliance meets the connection only after the reset, like a listener behind on accepts."""
    with socket.create_connection(addr) as s:
        s.sendall(data)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))


def tracebacks(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.exc_info]


async def messages(run: Any) -> list[str]:
    body = await run.get_json("/api/v1/events", limit=1000)
    return sorted(e.get("message", "") for e in body["events"])


def metric(text: str, line_start: str) -> float:
    for line in text.splitlines():
        if line.startswith(line_start + " "):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


async def test_lf_and_octet_counted_frames_are_stored(start_appliance) -> None:
    run = await start_appliance(**tcp_source())
    await send_tcp(run.source().address, b"<13>Nov 29 10:00:00 h app: one\n12 <13>app: two\n")
    await run.wait_stored(2)
    assert await messages(run) == ["one", "two"]
    ev = (await run.get_json("/api/v1/events"))["events"][0]
    assert ev["log"]["source"]["transport"] == "tcp"


async def test_ipv6_tcp_listener(start_appliance) -> None:
    try:
        run = await start_appliance(**tcp_source(listen="[::1]:0"))
    except OSError as exc:
        pytest.skip(f"no IPv6 loopback: {exc}")
    await send_tcp(run.source().address, b"<13>v6 app: hello\n")
    await run.wait_stored(1)
    ev = (await run.get_json("/api/v1/events"))["events"][0]
    assert ev["observer"]["ip"] == "::1"


async def test_unterminated_last_line_is_kept_at_close(start_appliance) -> None:
    run = await start_appliance(**tcp_source())
    await send_tcp(run.source().address, b"<13>app: no newline at the end")
    await run.wait_stored(1)
    assert await messages(run) == ["no newline at the end"]


async def test_half_an_octet_counted_frame_at_close_is_counted(start_appliance) -> None:
    run = await start_appliance(**tcp_source())
    await send_tcp(run.source().address, b"5 <13>a500 <13>cut")
    await run.wait_stored(1)
    name = "syslog-tcp"
    await run.wait_for(lambda: run.app.pipeline.dropped.value(name, "incomplete_frame") == 1)
    assert run.app.pipeline.received.value(name) == 2


async def test_digit_run_is_dropped_and_good_frames_on_the_connection_survive(
    start_appliance,
) -> None:
    run = await start_appliance(**tcp_source())
    await send_tcp(run.source().address, b"99999999999999999999 <13>x\n<13>app: after\n")
    await run.wait_stored(1)
    assert await messages(run) == ["after"]
    text = await run.metrics()
    assert (
        'appliance_syslog_frame_errors_total{reason="octet_count_invalid",source="syslog-tcp"}'
        in text
        or 'reason="octet_count_invalid"' in text
    )
    assert run.app.pipeline.dropped.value("syslog-tcp", "octet_count_invalid") == 1


async def test_megabyte_line_is_cut_and_counted(start_appliance) -> None:
    run = await start_appliance(**tcp_source(max_frame_bytes=4096))
    await send_tcp(run.source().address, b"<13>app: " + b"Z" * 1_000_000 + b"\n<13>app: ok\n")
    await run.wait_stored(2)
    src = run.source()
    assert src.truncated.value("syslog-tcp") == 1
    assert src.frame_errors.value("syslog-tcp", "frame_too_long") == 1
    assert "ok" in await messages(run)


async def test_connection_limit_per_ip_rejects_and_counts(start_appliance) -> None:
    run = await start_appliance(**tcp_source(max_connections_per_ip=2))
    addr = run.source().address
    socks = [await send_tcp(addr, b"", close=False) for _ in range(3)]
    src = run.source()
    await run.wait_for(lambda: src.rejected.value("syslog-tcp", "too_many_per_ip") == 1)
    assert len(src.connections) == 2
    for s in socks:
        s.close()


async def test_total_connection_limit(start_appliance) -> None:
    run = await start_appliance(**tcp_source(max_connections=1, max_connections_per_ip=1))
    addr = run.source().address
    socks = [await send_tcp(addr, b"", close=False) for _ in range(2)]
    src = run.source()
    await run.wait_for(lambda: src.rejected.total() == 1)
    for s in socks:
        s.close()


async def test_sender_outside_allow_list_is_refused(start_appliance) -> None:
    run = await start_appliance(**tcp_source(allowed=["10.0.0.0/8"]))
    await send_tcp(run.source().address, b"<13>app: denied\n")
    src = run.source()
    await run.wait_for(lambda: src.rejected.value("syslog-tcp", "not_allowed") == 1)
    assert run.app.pipeline.stored.total() == 0


@pytest.mark.parametrize("loop", LOOPS)
def test_frames_of_a_connection_reset_before_accept_are_stored(
    loop: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    n = 20

    async def main() -> None:
        async with running_appliance(tmp_path, **tcp_source()) as run:
            addr = run.source().address
            for i in range(n):
                send_and_reset(addr, b"<13>app: m%d\n" % i)
            await run.wait_stored(n)
            assert await messages(run) == sorted(f"m{i}" for i in range(n))
            pipeline = run.app.pipeline
            assert pipeline.received.value("syslog-tcp") == n
            assert pipeline.dropped.total() == 0

    run_on_loop(loop, main)
    assert tracebacks(caplog) == []


@pytest.mark.skipif(uvloop is None, reason="uvloop is not installed")
def test_connection_from_an_unknown_peer_is_refused_counted_and_logged_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    # uvloop on a platform without SO_PEERNAME: a reset-before-accept peer has no address.
    monkeypatch.setattr(syslog_tcp, "_SO_PEERNAME", None, raising=False)
    # A fresh rate limiter: an earlier test (or backend) may have logged this key just now.
    monkeypatch.setattr(syslog_tcp, "_rl", syslog_tcp.RateLimitedLog(syslog_tcp.log))

    async def main() -> None:
        async with running_appliance(tmp_path, **tcp_source()) as run:
            src = run.source()
            for _ in range(3):
                send_and_reset(src.address, b"<13>app: from nowhere\n")
            await run.wait_for(lambda: src.rejected.value("syslog-tcp", "peer_unknown") == 3)
            assert run.app.pipeline.received.total() == 0

    run_on_loop("uvloop", main)
    assert tracebacks(caplog) == []
    lines = [r for r in caplog.records if "unknown peer" in r.getMessage()]
    assert 1 <= len(lines) < 3  # rate-limited, not one line per connection


@pytest.mark.parametrize("loop", LOOPS)
def test_unterminated_tail_of_a_reset_connection_is_counted_not_stored(
    loop: str, tmp_path: Path
) -> None:
    async def main() -> None:
        async with running_appliance(tmp_path, **tcp_source()) as run:
            send_and_reset(run.source().address, b"<13>app: whole\n<13>app: cut o")
            pipeline, name = run.app.pipeline, "syslog-tcp"
            await run.wait_for(lambda: pipeline.dropped.value(name, "incomplete_frame") == 1)
            await run.wait_stored(1)
            assert await messages(run) == ["whole"]
            assert pipeline.received.value(name) == 2
            assert run.source().frame_errors.value(name, "incomplete_frame") == 1

    run_on_loop(loop, main)


async def test_idle_connection_is_closed(start_appliance) -> None:
    run = await start_appliance(**tcp_source(idle_timeout=0.2))
    s = await send_tcp(run.source().address, b"<13>app: hi\n", close=False)
    src = run.source()
    await run.wait_for(lambda: src.closed.value("syslog-tcp", "idle_timeout") == 1)
    s.close()


async def test_slowloris_count_never_completed_is_closed(start_appliance) -> None:
    run = await start_appliance(**tcp_source(frame_timeout=0.3, idle_timeout=60))
    s = await send_tcp(run.source().address, b"60000 <13>never finished", close=False)
    loop = asyncio.get_running_loop()
    src = run.source()
    for _ in range(8):  # keeps the connection active, never finishes the frame
        await asyncio.sleep(0.1)
        with contextlib.suppress(OSError):
            await loop.sock_sendall(s, b"x")
    await run.wait_for(lambda: src.closed.value("syslog-tcp", "frame_timeout") == 1)
    s.close()


async def test_full_queue_pauses_reading_and_loses_nothing(start_appliance) -> None:
    run = await start_appliance(
        pipeline={"queue_size": 50, "batch_size": 10, "flush_interval": 0.01},
        **tcp_source(),
    )
    n = 3000
    payload = b"".join(b"<13>app: msg %d\n" % i for i in range(n))
    await send_tcp(run.source().address, payload)
    await run.wait_stored(n, timeout=20)
    assert run.app.pipeline.dropped.total() == 0
    assert run.source().paused.value("syslog-tcp") >= 1
    body = await run.get_json("/api/v1/events", limit=1000, q="msg 2999")
    assert [e["message"] for e in body["events"]] == ["msg 2999"]


async def test_rate_limit_per_sender_counts_excess(start_appliance) -> None:
    run = await start_appliance(**tcp_source(rate_limit=0.001, rate_burst=5))
    payload = b"".join(b"<13>app: m%d\n" % i for i in range(20))
    await send_tcp(run.source().address, payload)
    await run.wait_stored(5)
    await run.wait_for(lambda: run.app.pipeline.dropped.value("syslog-tcp", "rate_limited") == 15)
    assert run.app.pipeline.stored.total() == 5


# ------------------------------------------------------------------------------------------ TLS


@pytest.fixture
def pki(tmp_path: Path) -> dict[str, Any]:
    ca = trustme.CA()
    client_ca = trustme.CA()
    server = ca.issue_cert("localhost", "127.0.0.1")
    server.private_key_and_cert_chain_pem.write_to_path(str(tmp_path / "server.pem"))
    client_ca.cert_pem.write_to_path(str(tmp_path / "clients-ca.pem"))
    good = client_ca.issue_cert("sender-1.example")
    other = client_ca.issue_cert("sender-2.example")
    rogue = trustme.CA().issue_cert("sender-1.example")
    return {"ca": ca, "good": good, "other": other, "rogue": rogue, "dir": tmp_path}


def tls_source(**kw: Any) -> dict[str, Any]:
    return tcp_source(protocol="tls", tls_cert="server.pem", tls_key="server.pem", **kw)


def client_context(pki: dict[str, Any], cert: Any = None) -> ssl.SSLContext:
    ctx = ssl.create_default_context()
    pki["ca"].configure_trust(ctx)
    if cert is not None:
        cert.configure_cert(ctx)
    return ctx


async def send_tls(addr: tuple[str, int], ctx: ssl.SSLContext, data: bytes) -> None:
    _reader, writer = await asyncio.open_connection(*addr, ssl=ctx, server_hostname="localhost")
    writer.write(data)
    await writer.drain()
    writer.close()
    with contextlib.suppress(Exception):
        await writer.wait_closed()


async def test_tls_frames_are_stored(start_appliance, pki) -> None:
    run = await start_appliance(**tls_source())
    await send_tls(run.source().address, client_context(pki), b"<13>app: over tls\n10 <13>app: x")
    await run.wait_stored(2)
    assert await messages(run) == ["over tls", "x"]


async def test_tls_client_certificate_required_and_checked(start_appliance, pki) -> None:
    run = await start_appliance(**tls_source(tls_client_ca="clients-ca.pem"))
    addr = run.source().address
    await send_tls(addr, client_context(pki, pki["good"]), b"<13>app: with cert\n")
    await run.wait_stored(1)
    src = run.source()
    for cert in (None, pki["rogue"]):
        with contextlib.suppress(ssl.SSLError, ConnectionError):
            await send_tls(addr, client_context(pki, cert), b"<13>app: refused\n")
    await run.wait_for(lambda: src.tls_errors.total() >= 2)
    assert src.tls_errors.value("syslog-tls", "no_client_cert") >= 1
    assert src.tls_errors.value("syslog-tls", "bad_client_cert") >= 1
    assert await messages(run) == ["with cert"]


async def test_tls_client_allow_list_by_name_and_fingerprint(start_appliance, pki) -> None:
    other_der = ssl.PEM_cert_to_DER_cert(pki["other"].cert_chain_pems[0].bytes().decode())
    fingerprint = hashlib.sha256(other_der).hexdigest()
    run = await start_appliance(
        **tls_source(tls_client_ca="clients-ca.pem", tls_client_allowed=["sender-1.example"])
    )
    addr = run.source().address
    await send_tls(addr, client_context(pki, pki["good"]), b"<13>app: by name\n")
    await run.wait_stored(1)
    with contextlib.suppress(ssl.SSLError, ConnectionError):
        await send_tls(addr, client_context(pki, pki["other"]), b"<13>app: not listed\n")
    src = run.source()
    await run.wait_for(lambda: src.tls_errors.value("syslog-tls", "client_not_allowed") == 1)
    await run.app.stop()
    run2 = await start_appliance(
        **tls_source(tls_client_ca="clients-ca.pem", tls_client_allowed=[fingerprint])
    )
    await send_tls(run2.source().address, client_context(pki, pki["other"]), b"<13>app: fp\n")
    await run2.wait_stored(1)


async def test_plaintext_to_tls_port_is_counted_and_closed(start_appliance, pki) -> None:
    run = await start_appliance(**tls_source())
    addr = run.source().address
    await send_tcp(addr, b"<13>app: plaintext\n")
    src = run.source()
    await run.wait_for(lambda: src.tls_errors.value("syslog-tls", "plaintext") == 1)
    await send_tls(addr, client_context(pki), b"<13>app: good\n")
    await run.wait_stored(1)
    assert await messages(run) == ["good"]


async def test_stalled_handshake_is_counted_and_closed(start_appliance, pki) -> None:
    run = await start_appliance(**tls_source(tls_handshake_timeout=0.3))
    s = await send_tcp(run.source().address, b"\x16\x03\x01", close=False)
    src = run.source()
    await run.wait_for(lambda: src.tls_errors.value("syslog-tls", "handshake_timeout") == 1)
    s.close()
