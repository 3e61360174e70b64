"""Exporter and template floods on a real NetFlow listener: state stays at its limits.

Spoofed exporters are loopback addresses (all of 127/8 is local on Linux), so each datagram
really comes from a different source address. Limits are set low so the floods are small.
"""

from __future__ import annotations

import re
import socket
from typing import Any

import pytest

from tests.netflow_packets import FLOW_FIELDS, set_, template_record, v9, v9_flows

pytestmark = pytest.mark.slow

MAX_EXPORTERS = 10
PER_EXPORTER = 16
MAX_TEMPLATES = 40
SPOOFED = 40  # exporters, each one flow with its template
TEMPLATE_IDS = 200  # from one exporter


def send_from(source: str, addr: tuple[str, int], *datagrams: bytes) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind((source, 0))
        for d in datagrams:
            s.sendto(d, addr)


def metric(text: str, name: str, **labels: str) -> float:
    want = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    for line in text.splitlines():
        m = re.fullmatch(rf"appliance_{name}\{{(.*)\}} (\S+)", line)
        if m and ",".join(sorted(m.group(1).split(","))) == want:
            return float(m.group(2))
    return 0.0


async def test_exporter_and_template_floods_stay_at_their_limits_and_a_real_exporter_decodes(
    start_appliance: Any,
) -> None:
    run = await start_appliance(
        sources={
            "netflow": [
                {
                    "listen": "127.0.0.1:0",
                    "allowed": ["127.0.0.0/8"],
                    "max_exporters": MAX_EXPORTERS,
                    "max_templates_per_exporter": PER_EXPORTER,
                    "max_templates": MAX_TEMPLATES,
                }
            ]
        }
    )
    src = run.source("netflow")
    dec, addr, flows = src.decoder, src.address, run.app.flows

    # Flood 1: many exporters, each with its template and one flow.
    for i in range(SPOOFED):
        send_from(f"127.0.1.{i + 1}", addr, v9_flows(1, seq=0))
    await run.wait_for(lambda: flows.processed.total() >= SPOOFED, timeout=20)
    assert dec.domain_count == MAX_EXPORTERS

    # Flood 2: one exporter announcing far more template ids than its share.
    recs = [template_record(256 + i, FLOW_FIELDS) for i in range(TEMPLATE_IDS)]
    sets = [set_(0, b"".join(recs[i : i + 40])) for i in range(0, TEMPLATE_IDS, 40)]
    send_from("127.0.2.1", addr, *(v9([one], seq=n) for n, one in enumerate(sets)))
    over = TEMPLATE_IDS - PER_EXPORTER
    await run.wait_for(lambda: dec.counts.get(("limit", "templates_per_exporter"), 0) >= over)

    # A legitimate exporter, heard for the first time after both floods, decodes at once.
    before = flows.processed.total()
    send_from("127.0.0.1", addr, v9_flows(2, seq=0))
    await run.wait_for(lambda: flows.processed.total() == before + 2, timeout=10)

    # Memory: every table at (not past) its limit.
    assert dec.domain_count == MAX_EXPORTERS
    assert dec.template_count <= MAX_TEMPLATES
    assert max(dec.templates_per_domain()) <= PER_EXPORTER
    # Counters: every refusal and eviction counted, in the decoder and in /metrics.
    assert dec.counts[("limit", "templates_per_exporter")] == over
    evicted = SPOOFED + 2 - MAX_EXPORTERS  # the flood exporter and the real one got in too
    assert dec.counts[("limit", "exporters")] == evicted

    async def exported() -> bool:
        text = await run.metrics()
        return (
            metric(text, "netflow_limit_hits_total", source="netflow", limit="exporters") == evicted
            and metric(
                text, "netflow_limit_hits_total", source="netflow", limit="templates_per_exporter"
            )
            == over
        )

    await run.wait_for(exported, timeout=15)
    await run.wait_for(lambda: flows.stored.total() >= SPOOFED + 2, timeout=10)
    body = await run.get_json("/api/v1/flows", **{"observer.ip": "127.0.0.1"})
    assert body["count"] == 2
