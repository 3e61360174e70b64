"""The tests' own waits fail with what they last saw, so a failure in CI explains itself."""

from __future__ import annotations

from typing import Any

import pytest


async def test_a_failed_wait_names_its_last_result_and_the_books(start_appliance: Any) -> None:
    run = await start_appliance()
    with pytest.raises(AssertionError, match=r"last result 0\); received=0 stored=0 queue=0"):
        await run.wait_for(lambda: run.app.pipeline.stored.total(), timeout=0.05)
