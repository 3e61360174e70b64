"""net-snmp's snmptrap/snmpinform against the trap source: every version and security level
arrives as an event with its trap name; wrong community, key and user are counted, not stored."""

from __future__ import annotations

import asyncio
import random
import socket
from typing import Any

import pytest

from tests.conftest import need_tool

pytestmark = pytest.mark.interop

ENGINE = "0x8000000001020304"
LINK_DOWN = "1.3.6.1.6.3.1.1.5.3"
IF_INDEX_3 = "1.3.6.1.2.1.2.2.1.1.3"
IF_DESCR_3 = "1.3.6.1.2.1.2.2.1.2.3"

USERS = [
    {"name": "plain", "engine_id": ENGINE},
    {"name": "authsha", "engine_id": ENGINE, "auth_protocol": "sha", "auth_key": "authkey-sha1"},
    {
        "name": "shaaes",
        "engine_id": ENGINE,
        "auth_protocol": "sha",
        "auth_key": "authkey-sha1",
        "priv_protocol": "aes",
        "priv_key": "privkey-aes1",
    },
    {
        "name": "md5des",
        "engine_id": ENGINE,
        "auth_protocol": "md5",
        "auth_key": "authkey-md51",
        "priv_protocol": "des",
        "priv_key": "privkey-des1",
    },
    {
        # Informs: this receiver is authoritative, so no device engine ID.
        "name": "informer",
        "auth_protocol": "sha256",
        "auth_key": "authkey-sha256",
        "priv_protocol": "aes",
        "priv_key": "privkey-aes2",
    },
]


async def run_tool(*args: str) -> tuple[int, str]:
    proc = await asyncio.create_subprocess_exec(
        *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    try:
        out, err = await asyncio.wait_for(proc.communicate(), 15)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise
    return proc.returncode or 0, (out + err).decode(errors="replace")


async def snmp_app(start_appliance: Any, **extra: Any) -> tuple[Any, str]:
    need_tool("snmptrap")
    cfg = {"listen": "127.0.0.1:0", "communities": ["public"], "users": USERS, **extra}
    run = await start_appliance(sources={"snmp": [cfg]})
    host, port = run.source("snmp").address
    return run, f"udp:{host}:{port}"


def link_down_args(target: str) -> list[str]:
    return [target, "", LINK_DOWN, IF_INDEX_3, "i", "3", IF_DESCR_3, "s", "Gi0/3"]


async def only_event(run: Any) -> dict[str, Any]:
    await run.wait_stored(1)
    body = await run.get_json("/api/v1/events")
    (event,) = body["events"]
    return event


def dropped(run: Any, reason: str) -> float:
    return run.app.pipeline.dropped.value("snmp", reason)


async def test_v2c_trap_arrives_with_name_and_interface(start_appliance) -> None:
    run, target = await snmp_app(start_appliance)
    rc, out = await run_tool("snmptrap", "-v2c", "-c", "public", *link_down_args(target))
    assert rc == 0, out
    ev = await only_event(run)
    assert ev["event"]["action"] == "linkDown"
    assert ev["event"]["module"] == "snmp"
    assert ev["snmp"]["version"] == "2c"
    assert ev["snmp"]["trap_oid"] == LINK_DOWN
    assert ev["snmp"]["community_index"] == "communities[0]"
    assert "public" not in str(ev)
    assert ev["observer"]["ip"] == "127.0.0.1"
    assert ev["observer"]["ingress"]["interface"] == {"name": "Gi0/3", "id": "3"}
    assert ev["log"]["level"] == "error"
    names = [vb["name"] for vb in ev["snmp"]["varbinds"]]
    assert names == ["sysUpTime.0", "snmpTrapOID.0", "ifIndex.3", "ifDescr.3"]


async def test_v1_trap_uses_agent_addr_and_rfc3584_trap_oid(start_appliance) -> None:
    run, target = await snmp_app(start_appliance)
    rc, out = await run_tool(
        "snmptrap", "-v1", "-c", "public", target, "1.3.6.1.4.1.8072", "192.0.2.9", "2", "0",
        "", IF_INDEX_3, "i", "3",
    )  # fmt: skip
    assert rc == 0, out
    ev = await only_event(run)
    assert ev["event"]["action"] == "linkDown"
    assert ev["snmp"]["version"] == "1"
    assert ev["observer"]["ip"] == "192.0.2.9"
    assert ev["source"]["ip"] == "127.0.0.1"
    assert ev["snmp"]["v1"]["enterprise"] == "1.3.6.1.4.1.8072"


async def test_v2c_inform_is_answered_and_stored(start_appliance) -> None:
    run, target = await snmp_app(start_appliance)
    # snmpinform exits non-zero when no Response-PDU comes back.
    rc, out = await run_tool(
        "snmpinform", "-v2c", "-c", "public", "-t", "3", "-r", "0", target, "",
        "1.3.6.1.6.3.1.1.5.1",
    )  # fmt: skip
    assert rc == 0, out
    ev = await only_event(run)
    assert ev["event"]["action"] == "coldStart"
    assert ev["snmp"]["pdu"] == "inform"
    assert run.source("snmp").informs_answered.value("snmp") == 1


@pytest.mark.parametrize(
    ("user", "level", "auth", "priv"),
    [
        ("plain", "noAuthNoPriv", [], []),
        ("authsha", "authNoPriv", ["-a", "SHA", "-A", "authkey-sha1"], []),
        ("shaaes", "authPriv", ["-a", "SHA", "-A", "authkey-sha1"],
         ["-x", "AES", "-X", "privkey-aes1"]),
        ("md5des", "authPriv", ["-a", "MD5", "-A", "authkey-md51"],
         ["-x", "DES", "-X", "privkey-des1"]),
    ],
)  # fmt: skip
async def test_v3_trap_arrives(
    start_appliance, user: str, level: str, auth: list[str], priv: list[str]
) -> None:
    run, target = await snmp_app(start_appliance)
    rc, out = await run_tool(
        "snmptrap", "-v3", "-u", user, "-e", ENGINE, "-l", level, *auth, *priv,
        *link_down_args(target),
    )  # fmt: skip
    assert rc == 0, out
    ev = await only_event(run)
    assert ev["event"]["action"] == "linkDown"
    assert ev["snmp"]["version"] == "3"
    assert ev["snmp"]["security_level"] == level
    assert ev["user"]["name"] == user
    assert ev["observer"]["ingress"]["interface"]["name"] == "Gi0/3"


async def test_v3_inform_is_acknowledged(start_appliance) -> None:
    run, target = await snmp_app(start_appliance)
    rc, out = await run_tool(
        "snmpinform", "-v3", "-u", "informer", "-l", "authPriv", "-a", "SHA-256", "-A",
        "authkey-sha256", "-x", "AES", "-X", "privkey-aes2", "-t", "3", "-r", "1", target, "",
        "1.3.6.1.6.3.1.1.5.2",
    )  # fmt: skip
    assert rc == 0, out
    ev = await only_event(run)
    assert ev["event"]["action"] == "warmStart"
    assert ev["snmp"]["pdu"] == "inform"
    assert run.source("snmp").informs_answered.value("snmp") == 1


async def wait_dropped(run: Any, reason: str) -> None:
    await run.wait_for(lambda: dropped(run, reason) >= 1)
    await asyncio.sleep(0.1)
    assert run.app.pipeline.stored.total() == 0


async def test_wrong_community_is_counted_not_stored(start_appliance) -> None:
    run, target = await snmp_app(start_appliance)
    await run_tool("snmptrap", "-v2c", "-c", "private", *link_down_args(target))
    await wait_dropped(run, "bad_community")
    assert 'reason="bad_community"' in await run.metrics()


async def test_wrong_auth_key_is_counted_not_stored(start_appliance) -> None:
    run, target = await snmp_app(start_appliance)
    await run_tool(
        "snmptrap", "-v3", "-u", "authsha", "-e", ENGINE, "-l", "authNoPriv", "-a", "SHA",
        "-A", "not-the-key", *link_down_args(target),
    )  # fmt: skip
    await wait_dropped(run, "auth_failure")


async def test_wrong_priv_key_is_counted_not_stored(start_appliance) -> None:
    run, target = await snmp_app(start_appliance)
    await run_tool(
        "snmptrap", "-v3", "-u", "shaaes", "-e", ENGINE, "-l", "authPriv", "-a", "SHA",
        "-A", "authkey-sha1", "-x", "AES", "-X", "not-the-priv-key", *link_down_args(target),
    )  # fmt: skip
    await wait_dropped(run, "decrypt_failure")


async def test_unknown_user_is_counted_not_stored(start_appliance) -> None:
    run, target = await snmp_app(start_appliance)
    await run_tool(
        "snmptrap", "-v3", "-u", "mallory", "-e", ENGINE, "-l", "noAuthNoPriv",
        *link_down_args(target),
    )  # fmt: skip
    await wait_dropped(run, "unknown_user")


async def test_known_user_from_unknown_engine_is_counted_not_stored(start_appliance) -> None:
    run, target = await snmp_app(start_appliance)
    await run_tool(
        "snmptrap", "-v3", "-u", "plain", "-e", "0x80000000aabbccdd", "-l", "noAuthNoPriv",
        *link_down_args(target),
    )  # fmt: skip
    await wait_dropped(run, "unknown_engine_id")


async def test_v2c_dropped_and_counted_in_snmpv3_only_mode(start_appliance) -> None:
    run, target = await snmp_app(start_appliance, snmpv3_only=True)
    await run_tool("snmptrap", "-v2c", "-c", "public", *link_down_args(target))
    await wait_dropped(run, "v1v2c_in_v3_only")


async def test_noauth_when_user_requires_auth_is_counted_not_stored(start_appliance) -> None:
    run, target = await snmp_app(start_appliance)
    await run_tool(
        "snmptrap", "-v3", "-u", "shaaes", "-e", ENGINE, "-l", "noAuthNoPriv",
        *link_down_args(target),
    )  # fmt: skip
    await wait_dropped(run, "unsupported_security_level")


async def test_v3_trap_replayed_outside_time_window_is_counted(start_appliance) -> None:
    run, target = await snmp_app(start_appliance)
    base = ["snmptrap", "-v3", "-u", "authsha", "-e", ENGINE, "-l", "authNoPriv", "-a", "SHA",
            "-A", "authkey-sha1"]  # fmt: skip
    # The receiver learns the device's boots/time from the first trap; one that claims to be
    # 500 s older falls outside RFC 3414's 150-second window.
    rc, out = await run_tool(*base, "-Z", "5,1000", *link_down_args(target))
    assert rc == 0, out
    await run.wait_stored(1)
    await run_tool(*base, "-Z", "5,500", *link_down_args(target))
    await run.wait_for(lambda: dropped(run, "not_in_time_window") >= 1)
    assert run.app.pipeline.stored.total() == 1


async def test_v3_trap_over_ipv6_arrives(start_appliance) -> None:
    need_tool("snmptrap")
    run = await start_appliance(sources={"snmp": [{"listen": "[::1]:0", "users": USERS}]})
    _host, port = run.source("snmp").address
    rc, out = await run_tool(
        "snmptrap", "-v3", "-u", "shaaes", "-e", ENGINE, "-l", "authPriv", "-a", "SHA", "-A",
        "authkey-sha1", "-x", "AES", "-X", "privkey-aes1", *link_down_args(f"udp6:[::1]:{port}"),
    )  # fmt: skip
    assert rc == 0, out
    ev = await only_event(run)
    assert ev["event"]["action"] == "linkDown"
    assert ev["observer"]["ip"] == "::1"


async def test_v2c_inform_with_wrong_community_gets_no_answer(start_appliance) -> None:
    run, target = await snmp_app(start_appliance)
    rc, _out = await run_tool(
        "snmpinform", "-v2c", "-c", "guess", "-t", "1", "-r", "0", target, "",
        "1.3.6.1.6.3.1.1.5.1",
    )  # fmt: skip
    assert rc != 0  # snmpinform timed out: nothing was sent back
    assert dropped(run, "bad_community") == 1
    assert run.app.pipeline.stored.total() == 0


async def test_v3_inform_from_unknown_user_is_not_delivered(start_appliance) -> None:
    run, target = await snmp_app(start_appliance)
    rc, _out = await run_tool(
        "snmpinform", "-v3", "-u", "mallory", "-l", "authNoPriv", "-a", "SHA", "-A",
        "whatever-key", "-t", "1", "-r", "0", target, "", "1.3.6.1.6.3.1.1.5.1",
    )  # fmt: skip
    assert rc != 0
    await run.wait_for(lambda: dropped(run, "unknown_user") >= 1)
    assert run.app.pipeline.stored.total() == 0


async def test_downgraded_v3_inform_is_not_acknowledged(start_appliance) -> None:
    run, target = await snmp_app(start_appliance)
    rc, _out = await run_tool(
        "snmpinform", "-v3", "-u", "informer", "-l", "authNoPriv", "-a", "SHA-256", "-A",
        "authkey-sha256", "-t", "1", "-r", "0", target, "", "1.3.6.1.6.3.1.1.5.1",
    )  # fmt: skip
    assert rc != 0  # no acknowledgement for a user configured for authPriv
    assert dropped(run, "unsupported_security_level") >= 1
    assert run.app.pipeline.stored.total() == 0


async def capture_datagram(*tool_args: str) -> bytes:
    """Run a net-snmp sender against a plain socket of ours and return what it sent."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sink:
        sink.bind(("127.0.0.1", 0))
        sink.setblocking(False)
        port = sink.getsockname()[1]
        args = [a.replace("TARGET", f"udp:127.0.0.1:{port}") for a in tool_args]
        await run_tool(*args)
        return sink.recv(65535)


async def test_mutated_v3_datagrams_never_stop_the_listener(start_appliance) -> None:
    need_tool("snmptrap")
    good = await capture_datagram(
        "snmptrap", "-v3", "-u", "shaaes", "-e", ENGINE, "-l", "authPriv", "-a", "SHA", "-A",
        "authkey-sha1", "-x", "AES", "-X", "privkey-aes1", "TARGET", "", LINK_DOWN,
    )  # fmt: skip
    rng = random.Random(3)
    mutants = []
    for _ in range(1500):
        data = bytearray(good)
        for _ in range(rng.randint(1, 3)):
            data[rng.randrange(len(data))] = rng.randrange(256)
        mutants.append(bytes(data))
    run, _target = await snmp_app(start_appliance)
    addr = run.source("snmp").address
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        for i, m in enumerate(mutants):
            s.sendto(m, addr)
            if i % 100 == 0:
                await asyncio.sleep(0.01)  # stay under the socket buffer
        await run.wait_for(lambda: run.app.pipeline.received.total() >= len(mutants), 30)
        s.sendto(good, addr)  # the original still gets through afterwards
    await run.wait_for(lambda: run.app.pipeline.stored.total() >= 1, 10)
    p = run.app.pipeline
    await run.wait_for(lambda: p.received.total() == p.stored.total() + p.dropped.total())
    assert p.dropped.value("snmp", "decode_error") == 0
