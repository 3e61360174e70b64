"""Child process for the outage test: an appliance whose clock the test moves.

``python -m tests.notify_child CONFIG OFFSET_FILE N`` starts the appliance from CONFIG (its
real channels) with ``clock = time.time() + <seconds in OFFSET_FILE>`` (re-read every 50 ms),
raises N critical incidents through the incident manager, prints ``raised`` and serves until
killed.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
import time
from pathlib import Path

from appliance.app import Appliance
from appliance.config import load_config
from appliance.correlate.component import correlation_of
from tests.notifying import alert


async def main(config: str, offset_file: str, n: int) -> None:
    path = Path(offset_file)
    offset = [float(path.read_text() or 0)]

    def clock() -> float:
        return time.time() + offset[0]

    async def follow() -> None:
        while True:
            with contextlib.suppress(OSError, ValueError):
                offset[0] = float(path.read_text() or 0)
            await asyncio.sleep(0.05)

    task = asyncio.create_task(follow())
    app = Appliance(load_config(config), clock=clock)
    await app.start()
    comp = correlation_of(app)
    assert comp is not None
    for i in range(n):
        await comp.incidents.apply([alert(f"203.0.113.{i + 1}", level="critical")])
    print("raised", flush=True)
    await asyncio.Event().wait()
    task.cancel()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2], int(sys.argv[3])))
