"""Store.transaction under cancellation: a cancelled writer never leaves a transaction open."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from appliance.store import Store


async def test_task_cancelled_while_begin_runs_leaves_no_open_transaction(tmp_path: Path) -> None:
    store = Store(tmp_path / "db.sqlite")
    await store.open()
    try:
        entered = False

        async def writer() -> None:
            nonlocal entered
            async with store.transaction():
                entered = True

        task = asyncio.create_task(writer())
        await asyncio.sleep(0)  # the task now awaits BEGIN running in aiosqlite's thread
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert not entered
        assert store.writer is not None and not store.writer.in_transaction
        async with store.transaction() as conn:  # the next writer is not locked out
            await conn.execute("INSERT INTO state VALUES ('t', 'k', 'v', 0)")
    finally:
        await store.close()
