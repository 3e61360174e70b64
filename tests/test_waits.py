"""The tests' own waits fail with what they last saw, so a failure in CI explains itself."""

from __future__ import annotations

from typing import Any

import pytest

from tests.conftest import wait_until, wait_until_sync


async def test_a_failed_wait_names_its_last_result_and_the_books(start_appliance: Any) -> None:
    run = await start_appliance()
    with pytest.raises(AssertionError, match=r"last result 0\); received=0 stored=0 queue=0"):
        await run.wait_for(lambda: run.app.pipeline.stored.total(), timeout=0.05)


async def test_a_failed_wait_shows_each_operand_of_its_condition() -> None:
    backlog = [b"x"] * 187
    with pytest.raises(AssertionError) as failed:
        await wait_until(lambda: len(backlog) == 300 and backlog[0] == b"y", timeout=0.05)
    assert "len(backlog) == 300 and backlog[0] == b'y' → False" in str(failed.value)
    assert "len(backlog) = 187" in str(failed.value)
    assert "backlog[0] = b'x'" in str(failed.value)


def test_a_failed_blocking_wait_says_what_it_waited_for_and_saw() -> None:
    seen = {"received": 3}
    with pytest.raises(AssertionError, match=r"stored rows not met in 0.05 s: .*received"):
        wait_until_sync(lambda: seen["received"] >= 4, timeout=0.05, what="stored rows")
    with pytest.raises(AssertionError, match=r"seen\['received'\] = 3"):
        wait_until_sync(lambda: seen["received"] >= 4, timeout=0.05)


async def test_a_wait_returns_the_first_true_result() -> None:
    answers = iter([0, [], {"id": 7}])
    assert await wait_until(lambda: next(answers), timeout=5) == {"id": 7}
