"""SIGKILL during the outbox send, restart: every revision arrives at least once, duplicates
keep their key, and a receiver that dedupes on it ends with exactly one copy of each.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from tests import conftest
from tests.forwarding import Receiver, Seen, incident, make_pki

pytestmark = pytest.mark.slow

ROOT = Path(__file__).parents[2]
N = 40  # incidents, two revisions each


def write_config(
    tmp: Path, url: str, pki: Any, type_: str = "webhook", batch_size: int = 1
) -> Path:
    cfg = tmp / "appliance.toml"
    cfg.write_text(
        f"""
[appliance]
data_dir = "{tmp / "data"}"
sensor_id = "test-01"
shutdown_timeout = 3.0
allow_empty = true

[api]
listen = "127.0.0.1:0"
token = "t"

[[upstream]]
name = "console"
type = "{type_}"
url = "{url}"
ca_file = "{pki.ca_file.name}"
client_cert = "{pki.client_cert.name}"
client_key = "{pki.client_key.name}"
batch_size = {batch_size}
poll_interval = 0.05
backoff_base = 0.05
backoff_cap = 0.2
"""
    )
    for p in (pki.ca_file, pki.client_cert, pki.client_key):
        (tmp / p.name).write_bytes(p.read_bytes())  # relative to the config file
    return cfg


async def spawn(*args: str, log: Path | None = None) -> asyncio.subprocess.Process:
    """The child, its stderr (the appliance's log) kept in ``log`` when given."""
    with open(log or os.devnull, "ab") as err:
        return await asyncio.create_subprocess_exec(
            sys.executable,
            *args,
            cwd=ROOT,
            stdout=asyncio.subprocess.PIPE,
            stderr=err,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
        )


def forward_log(*logs: Path) -> list[str]:
    """The forwarding lines of the children's logs (a failed test shows why a row went twice)."""
    return [
        line
        for log in logs
        if log.exists()
        for line in log.read_text(errors="replace").splitlines()
        if "forward" in line
    ]


async def wait_until(cond: Any, timeout: float = 60.0) -> None:
    await conftest.wait_until(cond, timeout)


def key_of(s: Seen) -> str:
    (item,) = s.json()["items"]
    inc = item["incident"]
    assert item["idempotency_key"] == f"test-01:{inc['id']}:{inc['revision']}"
    assert s.headers["Idempotency-Key"] == item["idempotency_key"]
    return str(item["idempotency_key"])


async def test_sigkill_mid_backlog_then_restart_delivers_every_revision(tmp_path: Path):
    pki = make_pki(tmp_path)
    in_flight = asyncio.Event()
    release = asyncio.Event()

    async def respond(s: Seen) -> web.StreamResponse:
        if len(rx.seen) == 10:  # hold the 10th request: the appliance dies waiting for it
            in_flight.set()
            await release.wait()
        return web.json_response({})

    rx = Receiver(pki.server, pki.ca, respond)
    await rx.start()
    cfg = write_config(tmp_path, rx.url("/hook"), pki)
    expected = {f"test-01:{incident(i)['id']}:{r}" for i in range(1, N + 1) for r in (1, 2)}

    child = await spawn("-m", "tests.forward_child", str(cfg), str(N))
    restarted = None
    try:
        assert child.stdout is not None
        assert (await asyncio.wait_for(child.stdout.readline(), 60)).startswith(b"raised")
        await asyncio.wait_for(in_flight.wait(), 60)
        child.send_signal(signal.SIGKILL)
        assert await child.wait() == -signal.SIGKILL
        release.set()
        before = [key_of(s) for s in rx.seen]
        assert len(set(before)) < len(expected)  # killed mid-backlog

        restarted = await spawn("-m", "appliance", "run", "--config", str(cfg))
        await wait_until(lambda: {key_of(s) for s in rx.seen} >= expected)
        restarted.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(restarted.wait(), 30) == 0
    finally:
        for proc in (child, restarted):
            if proc is not None and proc.returncode is None:
                proc.kill()
                await proc.wait()
        await rx.stop()

    keys = [key_of(s) for s in rx.seen]
    assert set(keys) == expected
    # The request in flight at the kill was never acknowledged, so it came again, same key.
    assert keys.count(before[-1]) >= 2
    # Order: the first copy of each key arrived in creation order.
    first_seen = list(dict.fromkeys(keys))
    created = [f"test-01:{incident(i)['id']}:{r}" for i in range(1, N + 1) for r in (1, 2)]
    assert first_seen == created


def keys_in(s: Seen) -> list[str]:
    """The idempotency keys one request carries (webhook items or ``_bulk`` ``_id``s)."""
    if s.path == "/_bulk":
        lines = [json.loads(x) for x in s.body.splitlines() if x.strip()]
        return [a["create"]["_id"] for a in lines[0::2]]
    return [item["idempotency_key"] for item in s.json()["items"]]


@pytest.mark.parametrize(
    ("type_", "batch_size"),
    [("webhook", 1), ("elastic_bulk", 4)],
    ids=["webhook-single", "elastic_bulk-batch4"],
)
async def test_sigkill_after_the_receiver_stored_a_batch_is_deduped_by_key_and_nothing_is_lost(
    tmp_path: Path, type_: str, batch_size: int
) -> None:
    """The harder half of a kill during delivery: the console has *stored* the request but the
    appliance dies before the answer. The restart re-sends it with the same keys; a console
    that dedupes on the key (as Elasticsearch does with ``create`` + ``_id``: 409) ends with
    exactly one copy of every revision and none missing."""
    pki = make_pki(tmp_path)
    in_flight = asyncio.Event()
    release = asyncio.Event()
    console: dict[str, int] = {}  # key -> copies received (the console keeps the first)
    held: list[str] = []

    async def respond(s: Seen) -> web.StreamResponse:
        keys = keys_in(s)
        statuses = []
        for k in keys:
            statuses.append(409 if k in console else 201)
            console[k] = console.get(k, 0) + 1
        if len(rx.seen) == 5 and not held:  # stored, then never answered: the kill comes
            held.extend(keys)
            in_flight.set()
            await release.wait()  # after the kill: the answer goes to a closed connection
        if s.path == "/_bulk":
            return web.json_response(
                {
                    "errors": any(c == 409 for c in statuses),
                    "items": [{"create": {"status": c}} for c in statuses],
                }
            )
        return web.json_response({})

    rx = Receiver(pki.server, pki.ca, respond)
    await rx.start()
    path = "" if type_ == "elastic_bulk" else "/hook"
    cfg = write_config(tmp_path, rx.url(path), pki, type_, batch_size)
    expected = {f"test-01:{incident(i)['id']}:{r}" for i in range(1, N + 1) for r in (1, 2)}

    logs = (tmp_path / "child.log", tmp_path / "restarted.log")
    child = await spawn("-m", "tests.forward_child", str(cfg), str(N), log=logs[0])
    restarted = None
    try:
        assert child.stdout is not None
        assert (await asyncio.wait_for(child.stdout.readline(), 60)).startswith(b"raised")
        await asyncio.wait_for(in_flight.wait(), 60)
        child.send_signal(signal.SIGKILL)  # only the PID this test started
        assert await child.wait() == -signal.SIGKILL
        release.set()
        assert len(console) < len(expected)  # killed mid-backlog
        assert 1 <= len(held) <= batch_size
        before_restart = len(rx.seen)

        restarted = await spawn("-m", "appliance", "run", "--config", str(cfg), log=logs[1])
        await wait_until(lambda: set(console) >= expected)
        restarted.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(restarted.wait(), 30) == 0
    finally:
        release.set()
        for proc in (child, restarted):
            if proc is not None and proc.returncode is None:
                proc.kill()
                await proc.wait()
        await rx.stop()

    assert set(console) == expected  # nothing lost
    # At least once: the batch stored but unanswered at the kill came again, same keys ...
    assert all(console[k] >= 2 for k in held)
    # ... and that batch alone: acknowledged rows were deleted, never sent again.
    extra = sum(n - 1 for n in console.values())
    print(f"\n{type_}: {len(expected) + extra} copies delivered for {len(expected)} revisions")
    # what went twice, as which requests (those from before_restart on: the restarted one's)
    sent = [(i, k) for i, x in enumerate(rx.seen) for k in keys_in(x)]
    twice = {k: [i for i, x in sent if x == k] for k, n in console.items() if n > 1}
    assert extra == len(held), (held, before_restart, twice, forward_log(*logs))
