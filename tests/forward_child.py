"""Child process for the crash test: an appliance that raises incidents, then keeps running.

``python -m tests.forward_child CONFIG N`` starts the appliance from CONFIG, raises N incidents
(two revisions each) the way the correlation engine does, prints ``raised`` and serves until
killed. The restart after SIGKILL uses the real ``python -m appliance run``.
"""

from __future__ import annotations

import asyncio
import sys

from appliance.app import Appliance
from appliance.config import load_config
from tests.forwarding import incident, raise_incidents


async def main(path: str, n: int) -> None:
    app = Appliance(load_config(path))
    await app.start()
    for i in range(1, n + 1):
        await raise_incidents(app, [incident(i)])
        await raise_incidents(app, [incident(i, revision=2, severity="critical")])
    print("raised", flush=True)
    await asyncio.Event().wait()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], int(sys.argv[2])))
