"""Syslog/UDP with decode worker processes (``workers = N``): real sockets, real processes."""

from __future__ import annotations

import asyncio
import os
import signal
import socket

from tests.test_syslog_udp import send_udp


def workers(n: int = 2, **extra: object) -> dict:
    return {"syslog": [{"listen": "127.0.0.1:0", "workers": n, **extra}]}


async def test_worker_decoded_events_are_stored_with_their_fields(start_appliance) -> None:
    run = await start_appliance(sources=workers())
    send_udp(
        run.source().address,
        b"<34>1 2026-11-29T10:00:00Z fw1 sshd 42 ID7 - auth failed",
        b"<38>Nov 29 10:00:00 bastion sshd[99]: Failed password for root from 203.0.113.9"
        b" port 4242 ssh2",
    )
    await run.wait_stored(2, timeout=15)
    events = (await run.get_json("/api/v1/events"))["events"]
    by_host = {e["host"]["hostname"]: e for e in events}
    assert by_host["fw1"]["message"] == "auth failed"
    assert by_host["fw1"]["event"]["original"].startswith("<34>1 ")
    assert by_host["bastion"]["source"]["ip"] == "203.0.113.9"
    assert by_host["bastion"]["event"]["dataset"] == "linux_auth"
    metrics = await run.metrics()  # both name sshd as their program
    assert 'appliance_syslog_vendor_decoded_total{decoder="linux_auth"} 2' in metrics


async def test_one_sender_is_spread_over_every_worker(start_appliance) -> None:
    run = await start_appliance(sources=workers(2))
    src = run.source()
    send_udp(src.address, *(b"<13>spread %d" % i for i in range(400)))  # one source port
    await run.wait_stored(400, timeout=15)
    key = "appliance_events_received_total"
    await run.wait_for(
        lambda: (
            sum(w.last_metrics.get(key, {}).get(("syslog-udp",), 0) for w in src.workers) == 400
        ),
        timeout=5,
    )
    shares = [w.last_metrics[key][("syslog-udp",)] for w in src.workers]
    assert all(share > 100 for share in shares), shares  # random spread, not a hash of the port


async def test_worker_counters_reach_the_parents_metrics(start_appliance) -> None:
    run = await start_appliance(sources=workers(2, allowed=["10.0.0.0/8"]))
    send_udp(run.source().address, b"<13>not allowed", b"<13>nor this")
    await run.wait_for(lambda: run.app.pipeline.dropped.total() >= 2, timeout=15)
    assert run.app.pipeline.dropped.value("syslog-udp", "not_allowed") == 2
    assert run.app.pipeline.received.value("syslog-udp") == 2
    assert run.app.pipeline.stored.total() == 0


async def test_a_killed_worker_is_restarted_and_traffic_goes_on(start_appliance) -> None:
    run = await start_appliance(sources=workers(1))
    src = run.source()
    send_udp(src.address, b"<13>before")
    await run.wait_stored(1, timeout=15)
    proc = src.workers[0].proc
    os.kill(proc.pid, signal.SIGKILL)
    await run.wait_for(lambda: src.worker_restarts.value("syslog-udp") == 1, timeout=10)
    await run.wait_for(lambda: src.workers[0].proc.pid != proc.pid, timeout=10)
    send_udp(src.address, b"<13>after")
    await run.wait_stored(2, timeout=15)
    messages = [e["message"] for e in (await run.get_json("/api/v1/events"))["events"]]
    assert messages == ["after", "before"]


async def test_stop_stores_every_datagram_the_sockets_received(start_appliance) -> None:
    run = await start_appliance(sources=workers(2))
    src = run.source()
    n = 3000
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        for i in range(n):
            s.sendto(b"<13>1 - h app - - - drain %d" % i, src.address)
            if i % 500 == 499:
                await asyncio.sleep(0.01)
    await run.app.stop()
    p = run.app.pipeline
    assert p.received.total() == n
    assert p.stored.total() + p.dropped.total() == n
    assert p.stored.total() == n - p.dropped.value("syslog-udp", "kernel_buffer_full")
