"""A reload storm: 50 reloads in quick succession while a listener ingests.

``app.reload`` is what SIGHUP runs (``appliance.runtime``); calling it directly makes every
reload count (SIGHUPs arriving while one is applied coalesce into one). Each reload adds or
removes a second listener, so sockets really open and close; the ingesting listener's config
does not change, so it is kept and never stops receiving.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import os
import socket
from pathlib import Path
from typing import Any

import pytest

from appliance.config import parse_config
from tests.conftest import make_config

pytestmark = pytest.mark.slow

RELOADS = 50
UDP = {"protocol": "udp", "listen": "127.0.0.1:0", "name": "ingest"}
EXTRA = {"protocol": "tcp", "listen": "127.0.0.1:0", "name": "extra"}


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def fd_targets() -> list[str]:
    out = []
    for fd in os.listdir("/proc/self/fd"):
        with contextlib.suppress(OSError):  # the listing's own fd is gone by now
            out.append(f"{fd}:{os.readlink(f'/proc/self/fd/{fd}')}")
    return sorted(out)


async def test_reload_storm_keeps_the_listener_receiving_books_balanced_no_fd_leak(
    start_appliance: Any, tmp_path: Path
) -> None:
    run = await start_appliance(sources={"syslog": [UDP]})
    app = run.app
    configs = [
        parse_config(make_config(tmp_path, sources={"syslog": s}), base_dir=tmp_path)
        for s in ([UDP, EXTRA], [UDP])
    ]
    ingest = run.source("ingest")
    addr = ingest.address
    # One add/remove round first, so whatever a first reload opens once for good (the
    # rules loader, thread pools) is open before counting (there is nothing such today).
    for cfg in configs:
        await app.reload(cfg)
    await run.metrics()  # the API's keep-alive connection (two sockets) is open before, too
    gc.collect()
    fds_before = open_fds()
    targets_before = fd_targets()
    reloads_before = app.config_reloads.value("applied")

    sent = 0
    stop = asyncio.Event()

    async def sender() -> None:
        nonlocal sent
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            while not stop.is_set():
                for _ in range(20):
                    s.sendto(b"<13>1 - h app - - - storm %06d" % sent, addr)
                    sent += 1
                await asyncio.sleep(0.002)

    task = asyncio.create_task(sender())
    received_at: list[float] = []
    for i in range(RELOADS):
        await app.reload(configs[i % 2])
        received_at.append(app.pipeline.received.total())
    stop.set()
    await task

    p = app.pipeline
    await run.wait_for(lambda: p.received.total() >= sent, timeout=20)
    await run.wait_for(lambda: p.stored.total() + p.dropped.total() == p.received.total(), 20)
    assert p.received.total() == sent  # kernel drops would count as received and dropped
    assert run.source("ingest") is ingest  # never restarted
    # The listener kept receiving through the storm, not just before and after it.
    assert received_at[-1] > received_at[0]
    assert app.config_reloads.value("applied") - reloads_before == RELOADS
    metric = f'appliance_config_reloads_total{{result="applied"}} {RELOADS + 2}'
    assert metric in await run.metrics()
    # The last reload removed the extra listener: every socket it opened is closed.
    assert [s.name for s in app.sources] == ["ingest"]
    await asyncio.sleep(0.1)  # transports close on the next loop turns
    gc.collect()
    assert open_fds() == fds_before, sorted(set(fd_targets()) - set(targets_before))
    print(f"\nreload storm: {RELOADS} reloads, {sent} lines, fds {fds_before} -> {open_fds()}")
