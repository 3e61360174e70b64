"""Interop: softflowd exports a pcap we generate, as v5, v9 and IPFIX, to the appliance and to
nfcapd side by side; both must count the same flows, packets and bytes."""

from __future__ import annotations

import asyncio
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import free_port, need_tool
from tests.pcap_writer import ipv4_packet, write_pcap

pytestmark = pytest.mark.interop


def _traffic(path: Path) -> int:
    """60 flows (TCP and UDP, 10 sources) of 2-6 packets of varied sizes."""
    packets = []
    t = 1_700_000_000.0
    for i in range(60):
        for j in range(2 + i % 5):
            proto = 6 if i % 2 else 17
            payload = b"p" * (7 * j + i)
            packets.append((t, ipv4_packet(f"10.0.0.{i % 10 + 1}", f"10.0.1.{i + 1}", proto,
                                           30000 + i, 80 + i % 3, payload)))  # fmt: skip
            t += 0.01
    write_pcap(path, packets)
    return len(packets)


def _softflowd(pcap: Path, port: int, version: int) -> None:
    subprocess.run(
        ["softflowd", "-d", "-r", str(pcap), "-n", f"127.0.0.1:{port}", "-v", str(version)],
        check=True,
        capture_output=True,
        timeout=30,
    )


def _nfdump_totals(directory: Path) -> dict[str, int]:
    out = subprocess.run(
        ["nfdump", "-R", str(directory), "-I"], check=True, capture_output=True, text=True,
        timeout=30,
    ).stdout  # fmt: skip
    totals = {}
    for key in ("Flows", "Packets", "Bytes"):
        m = re.search(rf"^{key}: (\d+)$", out, re.MULTILINE)
        assert m, out
        totals[key.lower()] = int(m.group(1))
    return totals


@pytest.mark.parametrize("version", [5, 9, 10])
async def test_softflowd_export_matches_nfcapd(
    start_appliance: Any, tmp_path: Path, version: int
) -> None:
    need_tool("softflowd")
    need_tool("nfcapd")
    need_tool("nfdump")
    pcap = tmp_path / "traffic.pcap"
    sent_packets = _traffic(pcap)
    run = await start_appliance(
        sources={"netflow": [{"listen": "127.0.0.1:0", "allowed": ["127.0.0.0/8"]}]}
    )
    nf_dir = tmp_path / "nfcapd"
    nf_dir.mkdir()
    nf_port = free_port(kind=2)
    nfcapd = await asyncio.create_subprocess_exec(
        "nfcapd", "-w", str(nf_dir), "-p", str(nf_port), "-b", "127.0.0.1", "-t", "3600",
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )  # fmt: skip
    try:
        await asyncio.sleep(0.5)  # nfcapd binds
        port = run.source("netflow").address[1]
        await asyncio.to_thread(_softflowd, pcap, port, version)
        await asyncio.to_thread(_softflowd, pcap, nf_port, version)
        await asyncio.sleep(0.5)
    finally:
        nfcapd.terminate()
        await asyncio.wait_for(nfcapd.wait(), 20)
    theirs = _nfdump_totals(nf_dir)
    assert theirs["flows"] == 60 and theirs["packets"] == sent_packets
    await run.wait_for(lambda: run.app.flows.processed.total() >= theirs["flows"])
    await run.wait_for(lambda: run.app.flows.stored.total() >= theirs["flows"])
    body = await run.get_json("/api/v1/flows", limit=1000)
    flows = body["flows"]
    ours = {
        "flows": len(flows),
        "packets": sum(f["network"]["packets"] for f in flows),
        "bytes": sum(f["network"]["bytes"] for f in flows),
    }
    assert ours == theirs
    assert {f["netflow"]["exporter"]["version"] for f in flows} == {version}
    errors = [line for line in (await run.metrics()).splitlines()
              if line.startswith("appliance_netflow_errors_total")]  # fmt: skip
    assert errors == []
