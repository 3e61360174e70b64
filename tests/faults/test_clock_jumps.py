"""The wall clock jumps back an hour and forward a day while events arrive.

The appliance reads time only through its injectable clock (``Appliance(clock=...)``): receive
times, the pipeline's ``now``, retention's cutoff and the correlation timer all come from it.
Here the clock is real time plus an offset the test changes between phases.

What is asserted:

- no crash: every line sent is received and stored (books balance), the source keeps running;
- receive times are the clock's as given, jumps included (``event.created`` of each phase lies
  in that phase's clock interval, so the back jump gives older receive times than before);
- retention (``retention_days = 2``) deletes nothing after the +1 day jump (the newest events
  are not old), and after a later jump to +2 days 30 minutes deletes exactly the events
  received before the jumps, keeping the +1 day phase: no more than its policy says;
- correlation windows do not fire spuriously: 6 failed SSH logins from one address in each of
  three phases (18 in all, never 10 within 5 minutes of event time) raise no brute-force
  incident, while 4 more in the last phase (10 within 5 minutes) raise exactly one;
- the silent-source rule (15 minutes of wall clock) does not take the +1 day jump for a
  day of silence from a device that kept sending (it did before this test: the correlation
  component now notices a step of the wall clock against the monotonic one and moves the
  silent-source timers with it, counted in ``appliance_correlation_clock_steps_total``).
"""

from __future__ import annotations

import socket
import time
from pathlib import Path

import aiohttp
import pytest

from appliance.app import Appliance
from appliance.config import parse_config
from tests.conftest import Running, make_config

pytestmark = pytest.mark.slow

HOUR, DAY = 3600.0, 86400.0
BRUTE = "SSH brute force from one source"
SILENT = "Log source went silent (15 minutes)"


class JumpingClock:
    def __init__(self) -> None:
        self.offset = 0.0

    def __call__(self) -> float:
        return time.time() + self.offset


def failures(n: int, tag: str) -> list[bytes]:
    return [
        b"<38>1 - srv1 sshd 4242 - - Failed password for root from 203.0.113.7 port %d ssh2 %s%d"
        % (40000 + i, tag.encode(), i)
        for i in range(n)
    ]


async def incidents(run: Running, title: str) -> list[dict]:
    body = await run.get_json("/api/v1/incidents")
    return [i for i in body["incidents"] if i["rule"]["title"] == title]


async def test_clock_jumps_keep_receive_times_retention_and_correlation_windows_honest(
    tmp_path: Path,
) -> None:
    clock = JumpingClock()
    cfg = parse_config(
        make_config(
            tmp_path,
            storage={"retention_days": 2.0, "retention_interval": 0.1},
            pipeline={"flush_interval": 0.02},
        ),
        base_dir=tmp_path,
    )
    app = Appliance(cfg, clock=clock)
    await app.start()
    run = Running(app, aiohttp.ClientSession())
    try:
        await _exercise(run, clock)
    finally:
        await run.session.close()
        await app.stop()


async def _exercise(run: Running, clock: JumpingClock) -> None:
    app, p = run.app, run.app.pipeline
    addr = run.source().address
    correlation = next(c for c in app.components if hasattr(c, "engine"))
    phases: dict[str, tuple[float, float]] = {}
    sent = 0

    async def phase(tag: str, offset: float, n: int = 6) -> None:
        nonlocal sent
        clock.offset = offset
        correlation._wake.set()  # the correlation timer ticks right after the jump
        start = clock()
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            for line in failures(n, tag):
                s.sendto(line, addr)
        sent += n
        await run.wait_stored(sent, timeout=10)
        phases[tag] = (start, clock())

    await phase("a", 0.0)
    await phase("b", -HOUR)
    await phase("c", DAY)
    # A retention pass at +1 day, as the retention loop runs it (it also runs every 0.1 s).
    st = app.config.storage
    by_age, _ = await app.store.enforce_retention(
        max_age=st.retention_days * DAY, max_bytes=st.max_db_bytes, now=clock()
    )
    assert by_age == 0
    assert await app.store.count_events() == 18
    assert app.retention_deleted.value("age") == 0

    # Receive times are the clock's, each phase's inside its own interval.
    events = await app.store.query_events(limit=100)
    for e in events:
        tag = e.fields["message"].rsplit(" ", 1)[1][0]
        lo, hi = phases[tag]
        assert lo <= e.created <= hi, (tag, e.created, lo, hi)
    assert not await incidents(run, BRUTE)  # 6 + 6 + 6 failures, never 10 in 5 minutes
    assert not await incidents(run, SILENT)  # the device never went quiet
    steps = correlation.clock_steps
    assert steps.value("back") == 1 and steps.value("forward") == 1  # both jumps seen

    await phase("d", DAY, n=4)  # with the 6 of phase c: 10 within 5 minutes
    await run.wait_for(lambda: _one(run, BRUTE), timeout=10)

    # Retention by its policy only: at +2 days 30 minutes, what was received before the jumps
    # (phases a and b) is older than 2 days by the clock; c and d are not.
    clock.offset = 2 * DAY + 30 * 60
    await run.wait_for(lambda: app.retention_deleted.value("age") >= 12, timeout=10)
    assert app.retention_deleted.value("age") == 12
    left = sorted(e.fields["message"].rsplit(" ", 1)[1] for e in await app.store.query_events())
    assert left == sorted([f"c{i}" for i in range(6)] + [f"d{i}" for i in range(4)])
    assert p.received.total() == sent == p.stored.total()
    assert p.dropped.total() == 0
    assert app.running and run.source().name


async def _one(run: Running, title: str) -> bool:
    return len(await incidents(run, title)) == 1
