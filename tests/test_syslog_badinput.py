"""Reference section C2 (syslog, TCP framing, TLS): for each hostile input the appliance keeps
running, counts the case by reason in /metrics, stays within bounded memory, and good traffic on
other connections is stored in full."""

from __future__ import annotations

import asyncio
import contextlib
import resource
import socket
import ssl
from pathlib import Path
from typing import Any

import pytest
import trustme

from tests.conftest import need_tool
from tests.test_syslog_tcp import send_tcp
from tests.test_syslog_udp import send_udp

pytestmark = pytest.mark.usefixtures("backend")

GOOD = 200

# C2.2-C2.6: (payload, reason that must be counted in appliance_syslog_parse_errors_total)
HEADER_CASES: list[tuple[bytes, str]] = [
    (b"<>1 2026-11-29T10:00:00Z h a - - - empty pri", "pri_invalid"),
    (b"<999>1 2026-11-29T10:00:00Z h a - - - big pri", "pri_invalid"),
    (b"<-1>x", "pri_invalid"),
    (b"<2147483648>x", "pri_invalid"),
    (b"<13 missing bracket", "pri_invalid"),
    (b"<13>", "timestamp_missing"),
    (b"<13>2 2026-11-29T10:00:00Z h a - - - version two", "version_unsupported"),
    (b"<13>1 2024-13-45T10:00:00Z h a - - - bad date", "timestamp_invalid"),
    (
        b"<13>1 " + b"2026-11-29T10:00:00Z " + b"H" * 256 + b" a - - - long host",
        "hostname_too_long",
    ),
    (b"<13>1 2026-11-29T10:00:00Z h " + b"A" * 49 + b" - - - long app", "app_name_too_long"),
    (b'<13>1 2026-11-29T10:00:00Z h a - - [x@1 a="1" msg', "sd_unterminated"),
    (b'<13>1 2026-11-29T10:00:00Z h a - - [x@1 a="1"][x@1 a="2"] dup', "sd_duplicate_id"),
    (
        b"<13>1 2026-11-29T10:00:00Z h a - - [x@1"
        + b"".join(b' p%d="v"' % i for i in range(10_000))
        + b"] many",
        "sd_too_many_params",
    ),
    (b'<13>1 2026-11-29T10:00:00Z h a - - [x=1@1 a="1"] eq in id', "sd_invalid"),
    (b'<13>1 2026-11-29T10:00:00Z h a - - [x@1 a="tail\\"] backslash', "sd_unterminated"),
]
# Messages that are odd but valid: stored, nothing to count beyond the message itself.
ODD_BUT_VALID = [
    b"<13>1 2026-11-29T10:00:00Z h a - - - \xef\xbb\xbf\xff\xfe bom then invalid utf-8",
    b"<13>Nov 29 10:00:00 h a: nul\x00inside",
    b"<13>Nov 29 10:00:00 h a: cr\rinside",
    b"<13>Nov 29 10:00:00 h a: \x1b[31mred\x1b[0m \x1b]0;title\x07 \xc2\x9b c1 \xe2\x80\xae rlo",
    b'<13>1 2026-11-29T10:00:00Z h a - - [x@1 a="\xff\xfe"] invalid utf-8 in value',
    b"<13>Aug 7 10:00:00 h a: one-space day",
    b"<13>Aug  7 10:00:00 2025 h a: year in stamp",
    b"<13>Nov 29 10:00:00 a[1]: no hostname",
    b"<189>77: Nov 29 10:00:00.123: %SYS-5-CONFIG_I: Configured from console by u",
    b"<13>Nov 29 10:00:00 Message forwarded from aix1: sshd[4]: relayed",
    b"<13>1 2026-11-29T10:00:60Z h a - - - leap second",
    b"<13>1 2026-11-29T10:00:00 h a - - - no zone",
]


def rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def good_stream(n: int, tag: bytes) -> bytes:
    return b"".join(b"<13>Nov 29 10:00:00 good app: %s %d\n" % (tag, i) for i in range(n))


async def stored_count(run: Any, q: str) -> int:
    body = await run.get_json("/api/v1/events", limit=1000, q=q)
    return len(body["events"])


def sources(**tcp: Any) -> dict[str, Any]:
    return {
        "sources": {
            "syslog": [
                {
                    "protocol": "udp",
                    "listen": "127.0.0.1:0",
                    "name": "udp",
                    "max_message_bytes": 65535,
                },
                {"protocol": "tcp", "listen": "127.0.0.1:0", "name": "tcp", **tcp},
            ]
        }
    }


async def test_malformed_headers_over_udp_and_tcp_are_kept_and_counted(start_appliance) -> None:
    run = await start_appliance(**sources(max_frame_bytes=262_144))
    udp, tcp = run.source("udp").address, run.source("tcp").address
    before = rss_mb()
    payloads = [p for p, _ in HEADER_CASES] + ODD_BUT_VALID
    fits = [p for p in payloads if len(p) <= 65_507]  # 10,000 SD-PARAMs only fit in a stream
    send_udp(udp, *fits)
    good = asyncio.create_task(send_tcp(tcp, good_stream(GOOD, b"alongside")))
    await send_tcp(tcp, b"".join(b"%d %s" % (len(p), p) for p in payloads))
    await good
    await run.wait_stored(len(fits) + len(payloads) + GOOD, timeout=20)
    metrics = await run.metrics()
    for payload, reason in HEADER_CASES:
        for src in ("udp", "tcp") if len(payload) <= 65_507 else ("tcp",):
            assert (
                f'appliance_syslog_parse_errors_total{{source="{src}",reason="{reason}"}}'
                in metrics
            ), (reason, payload[:40])
    assert await stored_count(run, "alongside") == GOOD
    assert run.app.pipeline.dropped.total() == 0
    assert rss_mb() - before < 200


async def test_udp_sizes_zero_one_max_and_over(start_appliance) -> None:
    run = await start_appliance(
        sources={"syslog": [{"listen": "127.0.0.1:0", "name": "udp", "max_message_bytes": 8192}]}
    )
    addr = run.source().address
    exact = b"<13>" + b"E" * (8192 - 4)
    send_udp(addr, b"", b"x", exact, exact + b"+", b"<13>" + b"B" * 65_503)
    await run.wait_stored(4)
    assert run.app.pipeline.dropped.value("udp", "empty") == 1
    assert run.source().truncated.value("udp") == 2  # max+1 and 65507 bytes


async def test_octet_counting_attacks_leave_other_connections_untouched(start_appliance) -> None:
    run = await start_appliance(**sources(max_frame_bytes=1024, frame_timeout=0.5))
    addr = run.source("tcp").address
    good = asyncio.create_task(send_tcp(addr, good_stream(GOOD, b"steady")))
    attacks = [
        b"99999999999999999999 <13>digit run\n",
        b"0 ",
        b"5000 <13>" + b"C" * 4996,  # count over max frame: head kept, rest skipped
        b"1234567",  # digits then close
        b"000002 ab",  # leading zeros (OpenBSD)
        b"<13>app: lf\n12 <13>app: oc\n<13>app: lf2\n",  # mixed framing
        b"<13>app: " + b"M" * 1_000_000 + b"\n",  # 1 MB line
    ]
    for data in attacks:
        await send_tcp(addr, data)
    slow = await send_tcp(addr, b"60000 <13>slowloris", close=False)  # never completed
    await good
    src = run.source("tcp")
    await run.wait_for(lambda: src.closed.value("tcp", "frame_timeout") == 1, timeout=10)
    slow.close()
    await run.wait_for(lambda: run.app.pipeline.stored.total() >= GOOD + 6, timeout=10)
    assert await stored_count(run, "steady") == GOOD
    for reason in (
        "octet_count_invalid",
        "octet_count_zero",
        "frame_too_long",
        "incomplete_frame",
        "frame_timeout",
    ):
        assert src.frame_errors.value("tcp", reason) >= 1, reason
    assert (
        'appliance_syslog_frame_errors_total{source="tcp",reason="frame_too_long"}'
        in await run.metrics()
    )


async def test_many_half_open_connections_are_capped(start_appliance) -> None:
    run = await start_appliance(**sources(max_connections=50, max_connections_per_ip=50))
    addr = run.source("tcp").address
    socks = []
    for _ in range(120):
        s = socket.socket()
        s.setblocking(False)
        with contextlib.suppress(BlockingIOError):
            s.connect(addr)
        socks.append(s)
    src = run.source("tcp")
    await run.wait_for(lambda: src.rejected.value("tcp", "too_many_connections") >= 60, 10)
    assert len(src.connections) <= 50
    for s in socks:
        s.close()
    await run.wait_for(lambda: len(src.connections) == 0, 10)
    await send_tcp(addr, good_stream(10, b"after"))
    await run.wait_stored(10)


# ------------------------------------------------------------------------------------------ TLS


@pytest.fixture
def tls_files(tmp_path: Path) -> dict[str, Any]:
    ca, clients = trustme.CA(), trustme.CA()
    ca.issue_cert("localhost").private_key_and_cert_chain_pem.write_to_path(
        str(tmp_path / "server.pem")
    )
    clients.cert_pem.write_to_path(str(tmp_path / "clients.pem"))
    import datetime as dt

    expired = clients.issue_cert("old.example", not_after=dt.datetime(2020, 1, 1, tzinfo=dt.UTC))
    return {
        "ca": ca,
        "good": clients.issue_cert("ok.example"),
        "expired": expired,
        "self_signed": trustme.CA().issue_cert("self.example"),
        "wrong_ca": trustme.CA().issue_cert("wrong.example"),
    }


async def tls_send(addr: tuple[str, int], files: dict[str, Any], cert: Any, data: bytes) -> bool:
    ctx = ssl.create_default_context()
    files["ca"].configure_trust(ctx)
    if cert is not None:
        cert.configure_cert(ctx)
    try:
        _r, w = await asyncio.open_connection(*addr, ssl=ctx, server_hostname="localhost")
        w.write(data)
        await w.drain()
        w.close()
        with contextlib.suppress(Exception):
            await w.wait_closed()
        return True
    except (ssl.SSLError, ConnectionError):
        return False


async def test_tls_bad_clients_are_counted_and_good_clients_flow(
    start_appliance, tls_files
) -> None:
    run = await start_appliance(
        sources={
            "syslog": [
                {
                    "protocol": "tls",
                    "listen": "127.0.0.1:0",
                    "name": "tls",
                    "tls_cert": "server.pem",
                    "tls_key": "server.pem",
                    "tls_client_ca": "clients.pem",
                    "tls_handshake_timeout": 0.5,
                }
            ]
        }
    )
    addr = run.source().address
    src = run.source()
    good = asyncio.create_task(
        tls_send(addr, tls_files, tls_files["good"], good_stream(GOOD, b"tlsgood"))
    )
    for bad in ("expired", "self_signed", "wrong_ca"):
        await tls_send(addr, tls_files, tls_files[bad], b"<13>app: must not arrive\n")
    await tls_send(addr, tls_files, None, b"<13>app: no cert\n")
    await send_tcp(addr, b"<13>app: plaintext\n")
    stalled = await send_tcp(addr, b"\x16\x03\x01\x00", close=False)
    assert await good
    await run.wait_for(lambda: src.tls_errors.value("tls", "handshake_timeout") == 1, 10)
    stalled.close()
    await run.wait_stored(GOOD)
    assert src.tls_errors.value("tls", "bad_client_cert") >= 3
    assert src.tls_errors.value("tls", "no_client_cert") >= 1
    assert src.tls_errors.value("tls", "plaintext") == 1
    assert await stored_count(run, "tlsgood") == GOOD
    assert await stored_count(run, "must not arrive") == 0
    assert (
        'appliance_syslog_tls_errors_total{source="tls",reason="plaintext"} 1'
        in await run.metrics()
    )


async def test_tls_renegotiation_is_refused_and_counted(start_appliance, tls_files) -> None:
    openssl = need_tool("openssl")
    run = await start_appliance(
        sources={
            "syslog": [
                {
                    "protocol": "tls",
                    "listen": "127.0.0.1:0",
                    "name": "tls",
                    "tls_cert": "server.pem",
                    "tls_key": "server.pem",
                }
            ]
        }
    )
    host, port = run.source().address
    # s_client renegotiates when it reads a line "R" (renegotiation exists up to TLS 1.2).
    proc = await asyncio.create_subprocess_exec(
        openssl,
        "s_client",
        "-connect",
        f"{host}:{port}",
        "-tls1_2",
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )
    assert proc.stdin is not None
    proc.stdin.write(b"<13>app: before renegotiation\n")
    await run.wait_stored(1)
    proc.stdin.write(b"R\n")
    src = run.source()
    await run.wait_for(lambda: src.tls_errors.value("tls", "renegotiation") == 1)
    with contextlib.suppress(ConnectionError):
        proc.stdin.close()
    await asyncio.wait_for(proc.wait(), 10)
    await tls_send((host, port), tls_files, None, b"<13>app: next client\n")
    await run.wait_stored(2)
