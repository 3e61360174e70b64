"""The SNMP trap source on real loopback sockets: corpus replay, limits, allow-lists, MIBs."""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path
from typing import Any

import pytest

from appliance.cli import main as cli_main
from appliance.config import ConfigError, parse_config
from appliance.protocols.snmp import ber
from appliance.protocols.snmp.message import encode_trap_v2c
from appliance.sources.udp import BindError
from tests.conftest import corpus_dir, free_port
from tests.pcap_reader import udp_packets

LINK_DOWN = "1.3.6.1.6.3.1.1.5.3"


def trap(community: bytes = b"public", oid: str = LINK_DOWN, **kw: Any) -> bytes:
    return encode_trap_v2c(community, oid, [("1.3.6.1.2.1.2.2.1.1.5", ber.INTEGER, b"\x05")], **kw)


def send(addr: tuple[str, int], *payloads: bytes) -> None:
    family = socket.AF_INET6 if ":" in addr[0] else socket.AF_INET
    with socket.socket(family, socket.SOCK_DGRAM) as s:
        for p in payloads:
            s.sendto(p, addr)


async def snmp(start_appliance: Any, **cfg: Any) -> Any:
    source = {"listen": "127.0.0.1:0", "communities": ["public"], **cfg}
    return await start_appliance(sources={"snmp": [source]})


def dropped(run: Any, reason: str) -> float:
    return run.app.pipeline.dropped.value("snmp", reason)


async def test_zeek_v1_trap_decodes_to_its_expected_trap(start_appliance) -> None:
    (pkt,) = udp_packets(corpus_dir("snmp") / "zeek_snmpv1_trap.pcap")
    run = await snmp(start_appliance)
    send(run.source("snmp").address, pkt.payload)
    await run.wait_stored(1)
    (ev,) = (await run.get_json("/api/v1/events"))["events"]
    # zeek_snmpv1_trap.expected.txt: enterprise 1.3.6.1.4.1.31337.0, agent 127.0.0.1,
    # generic 0 (coldStart), specific 0, time_stamp 0, one varbind 1.3.6.1.2.1.2.1.0 = 33.
    assert ev["event"]["action"] == "coldStart"
    assert ev["snmp"]["v1"] == {
        "enterprise": "1.3.6.1.4.1.31337.0",
        "agent_addr": "127.0.0.1",
        "generic_trap": 0,
        "specific_trap": 0,
    }
    assert ev["observer"]["ip"] == "127.0.0.1"
    assert ev["snmp"]["uptime"] == 0
    body = [vb for vb in ev["snmp"]["varbinds"] if vb["oid"] == "1.3.6.1.2.1.2.1.0"]
    assert body == [
        {"oid": "1.3.6.1.2.1.2.1.0", "name": "1.3.6.1.2.1.2.1.0", "type": "Integer32", "value": 33}
    ]


async def test_malformed_corpus_captures_are_counted_and_survived(start_appliance) -> None:
    folder = corpus_dir("snmp")
    payloads = [
        p.payload for f in sorted(folder.glob("tcpdump_malformed_*.pcap")) for p in udp_packets(f)
    ]
    assert len(payloads) == 4
    run = await snmp(start_appliance)
    addr = run.source("snmp").address
    send(addr, *payloads)
    await run.wait_for(lambda: dropped(run, "malformed") >= len(payloads))
    send(addr, trap())  # still listening, still decoding
    await run.wait_stored(1)
    assert 'appliance_snmp_malformed_total{source="snmp",reason=' in await run.metrics()


async def test_malformed_v3_capture_is_dropped_and_survived(start_appliance) -> None:
    payloads = [p.payload for p in udp_packets(corpus_dir("snmp") / "zeek_snmp-crash-62790.pcap")]
    run = await snmp(
        start_appliance, users=[{"name": "u", "auth_protocol": "sha", "auth_key": "12345678"}]
    )
    send(run.source("snmp").address, *payloads)
    await run.wait_for(lambda: run.app.pipeline.dropped.total() >= len(payloads))
    send(run.source("snmp").address, trap())
    await run.wait_stored(1)
    assert run.app.pipeline.stored.total() == 1


async def test_v3_without_users_is_counted(start_appliance) -> None:
    (pkt, *_) = udp_packets(corpus_dir("snmp") / "zeek_snmpv3_get_next.pcap")
    run = await snmp(start_appliance)
    send(run.source("snmp").address, pkt.payload)
    await run.wait_for(lambda: dropped(run, "v3_not_configured") == 1)


async def test_get_request_is_dropped_as_not_a_notification(start_appliance) -> None:
    (pkt, *_) = udp_packets(corpus_dir("snmp") / "zeek_snmpv2_get.pcap")
    run = await snmp(start_appliance)
    send(run.source("snmp").address, pkt.payload)
    await run.wait_for(lambda: dropped(run, "not_a_notification") == 1)


async def test_community_rule_accepts_only_from_its_networks(start_appliance) -> None:
    run = await snmp(
        start_appliance,
        communities=[],
        community_rules=[
            {"networks": ["10.0.0.0/8"], "communities": ["branch"]},
            {"networks": ["127.0.0.0/8"], "communities": ["lab"]},
        ],
    )
    addr = run.source("snmp").address
    send(addr, trap(b"branch"))  # valid community, wrong network for it
    await run.wait_for(lambda: dropped(run, "bad_community") == 1)
    send(addr, trap(b"lab"))
    await run.wait_stored(1)
    (ev,) = (await run.get_json("/api/v1/events"))["events"]
    assert ev["snmp"]["community_index"] == "community_rules[1].communities[0]"


async def test_sender_outside_allowed_networks_is_dropped(start_appliance) -> None:
    run = await snmp(start_appliance, allowed=["10.0.0.0/8"])
    send(run.source("snmp").address, trap())
    await run.wait_for(lambda: dropped(run, "not_allowed") == 1)


async def test_rate_limit_drops_and_counts_the_excess(start_appliance) -> None:
    run = await snmp(start_appliance, rate_limit=0.001, rate_burst=3)
    send(run.source("snmp").address, *[trap(request_id=i) for i in range(10)])
    await run.wait_for(lambda: dropped(run, "rate_limited") == 7)
    await run.wait_stored(3)
    assert run.app.pipeline.stored.total() == 3


async def test_oversized_datagram_is_dropped(start_appliance) -> None:
    run = await snmp(start_appliance, max_message_bytes=100)
    big = encode_trap_v2c(b"public", LINK_DOWN, [("1.3.6.1.4.1.1", ber.OCTET_STRING, b"x" * 200)])
    send(run.source("snmp").address, big)
    await run.wait_for(lambda: dropped(run, "too_large") == 1)


async def test_empty_and_garbage_datagrams_are_malformed(start_appliance) -> None:
    run = await snmp(start_appliance)
    send(run.source("snmp").address, b"", b"\x00", b"hello world")
    await run.wait_for(lambda: dropped(run, "malformed") == 3)


async def test_ipv6_listener_receives_traps(start_appliance) -> None:
    if not socket.has_ipv6:
        pytest.skip("no IPv6 on this host")
    try:
        free_port(socket.SOCK_DGRAM, "::1")
    except OSError:
        pytest.skip("no ::1 on this host")
    run = await start_appliance(
        sources={"snmp": [{"listen": "[::1]:0", "communities": ["public"]}]}
    )
    send(run.source("snmp").address, trap())
    await run.wait_stored(1)
    (ev,) = (await run.get_json("/api/v1/events"))["events"]
    assert ev["observer"]["ip"] == "::1"


async def test_busy_port_fails_at_start(start_appliance) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as busy:
        busy.bind(("127.0.0.1", 0))
        port = busy.getsockname()[1]
        with pytest.raises(BindError):
            await snmp(start_appliance, listen=f"127.0.0.1:{port}")


async def test_severity_table_overrides_by_oid_and_name(start_appliance) -> None:
    run = await snmp(
        start_appliance,
        severity={"linkDown": "critical", "1.3.6.1.4.1.9.0.1": "alert"},
        default_severity="debug",
    )
    addr = run.source("snmp").address
    send(addr, trap(oid=LINK_DOWN))
    await run.wait_stored(1)
    send(addr, trap(oid="1.3.6.1.4.1.9.0.1"))
    await run.wait_stored(2)
    send(addr, trap(oid="1.3.6.1.4.1.9.0.2"))
    await run.wait_stored(3)
    events = (await run.get_json("/api/v1/events"))["events"]
    levels = {e["snmp"]["trap_oid"]: (e["log"]["level"], e["event"]["severity"]) for e in events}
    assert levels == {
        LINK_DOWN: ("critical", 2),
        "1.3.6.1.4.1.9.0.1": ("alert", 1),
        "1.3.6.1.4.1.9.0.2": ("debug", 7),
    }
    unknown = next(e for e in events if e["snmp"]["trap_oid"] == "1.3.6.1.4.1.9.0.2")
    assert unknown["event"]["action"] == "1.3.6.1.4.1.9.0.2"  # unknown OIDs stay numeric


async def test_compiled_user_mib_names_a_trap_without_restart(
    start_appliance, tmp_path: Path, capsys, monkeypatch
) -> None:
    monkeypatch.setattr("appliance.sources.snmp_trap.MIB_CACHE_POLL", 0.05)
    run = await snmp(start_appliance)
    mibs = tmp_path / "mibs"
    mibs.mkdir()
    (mibs / "ACME-MIB.txt").write_text(ACME_MIB)
    cfg = tmp_path / "appliance.toml"
    cfg.write_text(
        f'[appliance]\ndata_dir = "{tmp_path / "data"}"\n'
        f'[[sources.snmp]]\nlisten = "127.0.0.1:0"\nmib_dir = "mibs"\n'
    )
    # The base modules ACME-MIB imports (SNMPv2-SMI, ...) come from a second folder, as from
    # net-snmp's MIB folder on a real box.
    base = corpus_dir("snmp") / "mibs"
    args = ["mibs", "compile", "-c", str(cfg), "--source", str(mibs), "--source", str(base)]
    assert await asyncio.to_thread(cli_main, args) == 0
    assert "ACME-MIB: compiled" in capsys.readouterr().out
    source = run.source("snmp")
    await run.wait_for(lambda: source.resolver.name("1.3.6.1.4.1.99999.0.1") is not None)
    send(source.address, trap(oid="1.3.6.1.4.1.99999.0.1"))
    await run.wait_stored(1)
    (ev,) = (await run.get_json("/api/v1/events"))["events"]
    assert ev["event"]["action"] == "acmeFanFailure"


def test_user_with_priv_but_no_auth_is_a_config_error() -> None:
    with pytest.raises(ConfigError) as info:
        parse_config(
            {
                "sources": {
                    "snmp": [
                        {
                            "users": [
                                {"name": "x", "priv_protocol": "aes", "priv_key": "12345678"}
                            ],
                            "engine_id": "0x12",
                        }
                    ]
                }
            }
        )
    text = "\n".join(info.value.errors)
    assert "sources.snmp[0].users[0].priv_protocol: privacy needs an auth_protocol" in text
    assert "sources.snmp[0].engine_id: not an engine ID" in text


ACME_MIB = """ACME-MIB DEFINITIONS ::= BEGIN
IMPORTS
    MODULE-IDENTITY, NOTIFICATION-TYPE, enterprises FROM SNMPv2-SMI;

acme MODULE-IDENTITY
    LAST-UPDATED "202601010000Z"
    ORGANIZATION "Acme"
    CONTACT-INFO "noc@acme.example"
    DESCRIPTION "Test MIB."
    ::= { enterprises 99999 }

acmeTraps OBJECT IDENTIFIER ::= { acme 0 }

acmeFanFailure NOTIFICATION-TYPE
    STATUS current
    DESCRIPTION "A fan failed."
    ::= { acmeTraps 1 }

END
"""


async def test_v3_engine_id_is_stable_and_boots_persist(start_appliance) -> None:
    users = [{"name": "u", "auth_protocol": "sha", "auth_key": "12345678"}]
    first = await snmp(start_appliance, users=users)
    v3 = first.source("snmp").v3
    engine_id, boots = v3.engine_id, v3.boots
    await first.app.stop()
    second = await snmp(start_appliance, users=users)
    v3 = second.source("snmp").v3
    assert v3.engine_id == engine_id
    assert v3.boots == boots + 1


def test_snmpv3_only_without_users_is_a_config_error() -> None:
    with pytest.raises(ConfigError) as info:
        parse_config({"sources": {"snmp": [{"snmpv3_only": True}]}})
    assert any(e.startswith("sources.snmp[0].snmpv3_only:") for e in info.value.errors)


def test_every_snmp_key_in_the_example_config_exists() -> None:
    import dataclasses
    import re

    from appliance.config import EXAMPLE_CONFIG, SnmpCommunityRule, SnmpSource, SnmpUser

    text = EXAMPLE_CONFIG.read_text()
    section = text[text.index("[[sources.snmp]]") :]
    # The SNMP examples end where the next commented block (notification channels) begins.
    section = section.split("\n# ------", 1)[0]
    keys = set(re.findall(r"^#? ?(\w+) = ", section, re.MULTILINE))
    known = {
        f.name for cls in (SnmpSource, SnmpUser, SnmpCommunityRule) for f in dataclasses.fields(cls)
    }
    documented_table_keys = {"linkDown"}  # the severity table's example entry
    assert keys - known - documented_table_keys == set()
    tables = {"severity", "users", "community_rules"}  # documented as [sources.snmp.<table>]
    assert {f.name for f in dataclasses.fields(SnmpSource)} <= keys | tables
    assert all(f"sources.snmp.{t}]" in section for t in tables)


async def test_every_datagram_is_stored_or_counted(start_appliance) -> None:
    run = await snmp(start_appliance, allowed=["127.0.0.1/32"])
    good = [trap(request_id=i) for i in range(20)]
    bad = [trap(b"nope"), b"\x30\x80", trap()[:-3], b"", trap(oid="1.3.6.1.4.1.1.0.1") + b"\x00"]
    send(run.source("snmp").address, *good, *bad, *good[:5])
    p = run.app.pipeline
    await run.wait_for(lambda: p.received.total() == 30)
    await run.wait_stored(25)
    await run.wait_for(lambda: p.received.total() == p.stored.total() + p.dropped.total())
    assert p.dropped.value("snmp", "bad_community") == 1
    assert p.dropped.value("snmp", "malformed") == 4


async def test_reload_applies_new_communities(start_appliance, tmp_path: Path) -> None:
    from tests.conftest import make_config

    run = await snmp(start_appliance, communities=["old"])
    source = {"listen": "127.0.0.1:0", "communities": ["new"]}
    new = parse_config(make_config(tmp_path, sources={"snmp": [source]}), base_dir=tmp_path)
    await run.app.reload(new)
    send(run.source("snmp").address, trap(b"old"), trap(b"new"))
    await run.wait_stored(1)
    await run.wait_for(lambda: dropped(run, "bad_community") == 1)
    (ev,) = (await run.get_json("/api/v1/events"))["events"]
    assert ev["snmp"]["community_index"] == "communities[0]"


def test_sender_rate_limit_refills_over_time() -> None:
    from appliance.sources.policy import SenderRateLimit

    bucket = SenderRateLimit(rate=10.0, burst=2, max_senders=10)
    assert [bucket.allow("10.0.0.1", 0.0) for _ in range(3)] == [True, True, False]
    assert bucket.allow("10.0.0.2", 0.0)  # per sender
    assert bucket.allow("10.0.0.1", 0.1)  # one token back after 1/rate seconds


def test_sender_rate_limit_tracks_a_bounded_number_of_senders() -> None:
    from appliance.sources.policy import SenderRateLimit

    bucket = SenderRateLimit(rate=10.0, burst=2, max_senders=100)
    for i in range(10_000):  # a spoofed-source flood
        bucket.allow(f"10.{i // 65536}.{i // 256 % 256}.{i % 256}", 0.0)
    assert len(bucket._buckets) <= 100
