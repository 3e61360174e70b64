"""Interop with real senders from Debian's packages: util-linux ``logger``, syslog-ng's
``loggen`` and ``rsyslogd`` forwarding over TLS with a client certificate. Every numbered
message must arrive exactly once. Each test skips when its tool is missing."""

from __future__ import annotations

import asyncio
import re
import shutil
import socket
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import trustme

from tests.conftest import need_tool

pytestmark = pytest.mark.interop


async def all_messages(run: Any) -> list[str]:
    out: list[str] = []
    cursor = None
    while True:
        params: dict[str, Any] = {"limit": 1000}
        if cursor:
            params["cursor"] = cursor
        body = await run.get_json("/api/v1/events", **params)
        out.extend(e.get("message", "") for e in body["events"])
        cursor = body.get("next_cursor")
        if not cursor or not body["events"]:
            return out


def exactly_once(messages: list[str], pattern: str, n: int) -> None:
    seen = Counter(int(m.group(1)) for m in map(re.compile(pattern).search, messages) if m)
    assert sorted(seen) == list(range(n)), f"missing {set(range(n)) - set(seen)}"
    assert max(seen.values()) == 1, "duplicates"


async def run_tool(*argv: str, env: dict[str, str] | None = None, timeout: float = 60) -> str:
    proc = await asyncio.create_subprocess_exec(
        *argv, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT, env=env
    )
    out, _ = await asyncio.wait_for(proc.communicate(), timeout)
    assert proc.returncode == 0, out.decode(errors="replace")
    return out.decode(errors="replace")


# -------------------------------------------------------------------------------------- logger


@pytest.mark.parametrize(
    ("transport", "fmt", "octet"),
    [
        ("udp", "rfc3164", False),
        ("udp", "rfc5424", False),
        ("tcp", "rfc3164", False),
        ("tcp", "rfc5424", False),
        ("tcp", "rfc5424", True),
    ],
)
async def test_logger_numbered_messages_arrive_once(
    start_appliance, tmp_path: Path, transport: str, fmt: str, octet: bool
) -> None:
    logger = need_tool("logger")
    run = await start_appliance(
        sources={"syslog": [{"protocol": transport, "listen": "127.0.0.1:0", "name": "in"}]}
    )
    host, port = run.source().address
    n = 300
    lines = tmp_path / "lines.txt"
    lines.write_text("".join(f"interop message {i}\n" for i in range(n)))
    argv = [
        logger,
        f"--{transport}",
        "--server",
        host,
        "--port",
        str(port),
        f"--{fmt}",
        "--tag",
        "interop",
        "--file",
        str(lines),
    ]
    if octet:
        argv.append("--octet-count")
    await run_tool(*argv)
    await run.wait_stored(n, timeout=20)
    exactly_once(await all_messages(run), r"interop message (\d+)$", n)
    body = await run.get_json("/api/v1/events", limit=1)
    assert body["events"][0]["process"]["name"] == "interop"


# -------------------------------------------------------------------------------------- loggen


@pytest.mark.parametrize("tls", [False, True], ids=["tcp", "tls"])
async def test_loggen_stream_arrives_once(start_appliance, tmp_path: Path, tls: bool) -> None:
    path = need_tool("loggen")  # .ci/run installs it privately (scripts/install-loggen)
    src: dict[str, Any] = {
        "protocol": "tls" if tls else "tcp",
        "listen": "127.0.0.1:0",
        "name": "in",
    }
    if tls:
        ca = trustme.CA()
        ca.issue_cert("localhost", "127.0.0.1").private_key_and_cert_chain_pem.write_to_path(
            str(tmp_path / "server.pem")
        )
        src.update(tls_cert="server.pem", tls_key="server.pem")
    run = await start_appliance(sources={"syslog": [src]})
    host, port = run.source().address
    n = 1000  # per connection
    # loggen's transports are plugins and exactly one may be active: --use-ssl is its TLS.
    transport = ["--use-ssl"] if tls else ["--inet", "--stream"]
    argv = [path, *transport, "-n", str(n), "-r", "20000", "-Q", "--active-connections", "2"]
    await run_tool(*argv, host, str(port))
    await run.wait_stored(2 * n, timeout=30)
    messages = await all_messages(run)
    assert len(messages) == 2 * n
    # loggen numbers messages per connection (thread): each thread's 0..n-1 exactly once.
    for thread in ("0000", "0001"):
        exactly_once([m for m in messages if f"thread: {thread}" in m], r"seq: (\d+),", n)


# ------------------------------------------------------------------------------------- rsyslog


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_rsyslog_forwards_over_tls_with_client_certificate(
    start_appliance, tmp_path: Path
) -> None:
    rsyslogd = shutil.which("rsyslogd") or need_tool("rsyslogd")
    if not Path("/usr/lib/x86_64-linux-gnu/rsyslog/lmnsd_gtls.so").exists() and not list(
        Path("/usr/lib").rglob("lmnsd_gtls.so")
    ):
        pytest.skip("rsyslog-gnutls is not installed")
    server_ca, client_ca = trustme.CA(), trustme.CA()
    server_ca.issue_cert("localhost", "127.0.0.1").private_key_and_cert_chain_pem.write_to_path(
        str(tmp_path / "server.pem")
    )
    client_ca.cert_pem.write_to_path(str(tmp_path / "clients-ca.pem"))
    server_ca.cert_pem.write_to_path(str(tmp_path / "server-ca.pem"))
    client = client_ca.issue_cert("rsyslog-client.example")
    client.private_key_pem.write_to_path(str(tmp_path / "client.key"))
    client.cert_chain_pems[0].write_to_path(str(tmp_path / "client.pem"))

    run = await start_appliance(
        sources={
            "syslog": [
                {
                    "protocol": "tls",
                    "listen": "127.0.0.1:0",
                    "name": "tls",
                    "tls_cert": "server.pem",
                    "tls_key": "server.pem",
                    "tls_client_ca": "clients-ca.pem",
                    "tls_client_allowed": ["rsyslog-client.example"],
                }
            ]
        }
    )
    _host, port = run.source().address
    in_port = free_port()
    work = tmp_path / "rsyslog"
    work.mkdir()
    conf = tmp_path / "rsyslog.conf"
    conf.write_text(f"""
global(workDirectory="{work}"
       DefaultNetstreamDriver="gtls"
       DefaultNetstreamDriverCAFile="{tmp_path / "server-ca.pem"}"
       DefaultNetstreamDriverCertFile="{tmp_path / "client.pem"}"
       DefaultNetstreamDriverKeyFile="{tmp_path / "client.key"}")
module(load="imtcp")
input(type="imtcp" address="127.0.0.1" port="{in_port}")
action(type="omfwd" target="127.0.0.1" port="{port}" protocol="tcp"
       StreamDriver="gtls" StreamDriverMode="1" StreamDriverAuthMode="x509/name"
       StreamDriverPermittedPeers="localhost" TCP_Framing="octet-counted"
       template="RSYSLOG_SyslogProtocol23Format")
""")
    proc = await asyncio.create_subprocess_exec(
        rsyslogd,
        "-n",
        "-f",
        str(conf),
        "-i",
        str(tmp_path / "rsyslogd.pid"),
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        for _ in range(100):  # wait for rsyslog's input port
            try:
                _r, w = await asyncio.open_connection("127.0.0.1", in_port)
                break
            except OSError:
                if proc.returncode is not None:
                    raise AssertionError("rsyslogd exited") from None
                await asyncio.sleep(0.1)
        else:
            raise AssertionError("rsyslogd did not listen")
        n = 500
        w.write(b"".join(b"<13>Nov 29 10:00:00 relayhost app: relayed %d\n" % i for i in range(n)))
        await w.drain()
        w.close()
        await run.wait_stored(n, timeout=30)
        exactly_once(await all_messages(run), r"relayed (\d+)$", n)
        src = run.source()
        assert src.tls_errors.total() == 0
        body = await run.get_json("/api/v1/events", limit=1)
        assert body["events"][0]["log"]["syslog"]["format"] == "rfc5424"
    finally:
        proc.terminate()  # stop our own child by its PID
        await asyncio.wait_for(proc.wait(), 15)
