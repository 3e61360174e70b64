"""The outbox on a real SQLite file: same-transaction writes, drop order, dead letters."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import pytest

from appliance.forward.document import Identity, build_document, drop_class
from appliance.forward.formats.base import Outcome
from appliance.forward.outbox import Outbox
from appliance.store import Store
from tests.forwarding import incident, outbox_rows, raise_incidents, upstream


@pytest.fixture
async def store(tmp_path: Path) -> Any:
    s = Store(tmp_path / "db.sqlite")
    await s.open()
    yield s
    await s.close()


async def put(store: Store, docs: list[dict[str, Any]], now: float = 1000.0) -> None:
    async with store.transaction(durable=True) as conn:
        for d in docs:
            doc = build_document(d, Identity("test-01"))
            await Outbox.enqueue(conn, "u", doc["idempotency_key"], doc, drop_class(d), now)


async def test_incident_hook_writes_outbox_row_in_the_same_transaction(start_appliance, tmp_path):
    from tests.forwarding import make_pki

    pki = make_pki(tmp_path)
    # Unreachable upstream: rows stay queued so the test can look at them.
    run = await start_appliance(upstream=[upstream("u", "webhook", "https://127.0.0.1:9/h", pki)])
    store = run.app.store

    async def failing_hook(conn: Any, doc: dict[str, Any]) -> None:
        raise RuntimeError("incident insert failed")

    run.app.incident_hooks.append(failing_hook)
    try:
        with pytest.raises(RuntimeError):
            await raise_incidents(run.app, [incident(1)])
    finally:
        run.app.incident_hooks.remove(failing_hook)
    assert await outbox_rows(store) == []  # rolled back with the incident

    await raise_incidents(run.app, [incident(1), incident(1, revision=2)])
    rows = await outbox_rows(store)
    assert [r["key"] for r in rows] == [
        f"test-01:{incident(1)['id']}:1",
        f"test-01:{incident(1)['id']}:2",
    ]
    await raise_incidents(run.app, [incident(1)])  # the same revision again: not queued twice
    assert len(await outbox_rows(store)) == 2


async def test_spool_full_drops_in_the_documented_order(store):
    # Oldest first in the queue: the drop order must not follow age across classes.
    docs = [
        incident(1, severity="critical"),
        incident(2, severity="high"),
        incident(3, severity="medium"),
        incident(4, severity="low"),
        incident(5, severity="critical", status="resolved"),
        incident(6, severity="informational"),
        incident(7, severity="critical"),
    ]
    await put(store, docs)
    async with store.transaction(durable=True) as conn:
        await conn.execute(
            "UPDATE outbox SET state = 'dead' WHERE key LIKE ?", (f"%{docs[6]['id']}%",)
        )
        sizes = await Outbox.spool_bytes(conn, "u")
        one = sizes // len(docs) + 1
        # Room for three rows: keep the open critical and high ones.
        dropped = await Outbox.trim(conn, "u", max_bytes=one * 3, max_age=1e9, now=1000.0)
    assert dropped == {"age": 0, "spool_full": 4}
    left = {r["key"].split(":")[1] for r in await outbox_rows(store)}
    assert left == {docs[0]["id"], docs[1]["id"], docs[2]["id"]}


async def test_rows_past_max_age_are_dropped_and_counted(store):
    await put(store, [incident(1)], now=1000.0)
    await put(store, [incident(2)], now=5000.0)
    async with store.transaction(durable=True) as conn:
        dropped = await Outbox.trim(conn, "u", max_bytes=10**9, max_age=3600, now=5000.0)
    assert dropped == {"age": 1, "spool_full": 0}
    assert [r["key"].split(":")[1] for r in await outbox_rows(store)] == [incident(2)["id"]]


async def test_rejected_head_is_sent_alone_and_dead_lettered_after_max_rejections(store):
    await put(store, [incident(i) for i in range(1, 4)])
    ob = Outbox(store)
    batch = await ob.head("u", 10, 10**6)
    assert len(batch) == 3
    first = batch[0].id
    await ob.settle("u", {first: Outcome.REJECT}, error="HTTP 400", max_rejections=2, now=1.0)
    assert [it.id for it in await ob.head("u", 10, 10**6)] == [first]  # isolated
    s = await ob.settle("u", {first: Outcome.REJECT}, error="HTTP 400", max_rejections=2, now=2.0)
    assert s.dead == 1
    assert [it.id for it in await ob.head("u", 10, 10**6)] == [batch[1].id, batch[2].id]
    stats = await ob.stats("u")
    assert (stats.pending, stats.dead) == (2, 1)


async def test_a_delivered_row_is_not_read_again_while_another_read_is_open(store):
    """The shared reader's open statements pin its snapshot; the sender's next rows and its
    backlog figures are read past them, so what its last settle deleted is gone."""
    await put(store, [incident(i) for i in range(1, 4)])
    ob = Outbox(store)
    batch = await ob.head("u", 1, 10**6)
    assert store.reader is not None
    async with store.reader.execute("SELECT id FROM outbox ORDER BY id") as other:
        assert await other.fetchone() is not None  # another task's read, left open
        await ob.settle("u", {batch[0].id: Outcome.DELIVERED}, error="", max_rejections=1, now=1.0)
        assert batch[0].id not in [it.id for it in await ob.head("u", 10, 10**6)]
        assert (await ob.stats("u")).pending == 2


async def test_whole_batch_rejection_never_dead_letters(store):
    await put(store, [incident(i) for i in range(1, 3)])
    ob = Outbox(store)
    batch = await ob.head("u", 10, 10**6)
    s = await ob.settle(
        "u", {it.id: Outcome.REJECT for it in batch}, error="HTTP 400", max_rejections=1, now=1.0
    )
    assert s.dead == 0 and s.rejected == 2


async def test_delivery_survives_reopen_with_attempts_and_last_success(tmp_path):
    path = tmp_path / "db.sqlite"
    s1 = Store(path)
    await s1.open()
    await put(s1, [incident(1), incident(2)])
    ob = Outbox(s1)
    a, b = await ob.head("u", 10, 10**6)
    await ob.settle(
        "u",
        {a.id: Outcome.DELIVERED, b.id: Outcome.RETRY},
        error="timeout",
        max_rejections=3,
        now=42.0,
    )
    await s1.close()
    s2 = Store(path)
    await s2.open()
    try:
        ob2 = Outbox(s2)
        (left,) = await ob2.head("u", 10, 10**6)
        assert (left.key, left.attempts) == (b.key, 1)
        assert await ob2.last_success("u") == 42.0
    finally:
        await s2.close()


async def test_outbox_key_is_unique_per_upstream(store):
    await put(store, [incident(1)])
    async with store.transaction() as conn:
        with pytest.raises(sqlite3.IntegrityError):
            await conn.execute(
                "INSERT INTO outbox (upstream, key, created, drop_class, size, body)"
                " SELECT upstream, key, created, drop_class, size, body FROM outbox"
            )


async def test_rows_of_a_removed_upstream_are_dropped_at_start_and_counted(
    start_appliance, tmp_path
):
    from tests.conftest import free_port
    from tests.forwarding import make_pki

    pki = make_pki(tmp_path)
    dead_url = f"https://127.0.0.1:{free_port()}/h"
    first = await start_appliance(
        upstream=[upstream("a", "webhook", dead_url, pki), upstream("b", "webhook", dead_url, pki)]
    )
    await raise_incidents(first.app, [incident(1), incident(2)])
    await first.app.stop()
    second = await start_appliance(upstream=[upstream("b", "webhook", dead_url, pki)])
    assert {r["upstream"] for r in await outbox_rows(second.app.store)} == {"b"}
    assert 'appliance_forward_dropped_total{upstream="a",reason="upstream_removed"} 2' in (
        await second.metrics()
    )


async def test_start_leaves_the_rows_of_other_streams_sharing_the_table(store):
    """The notifier queues in the same table (stream 'notify'); the forwarder's clean-up of
    removed upstreams must not take its rows."""
    async with store.transaction() as conn:
        await Outbox.enqueue(conn, "notify/mail", "k1", {"subject": "x"}, 3, 1.0, stream="notify")
        await Outbox.enqueue(conn, "gone", "k2", {"id": "y"}, 3, 1.0)
    dropped = await Outbox(store).drop_unconfigured(set())
    assert dropped == {"gone": 1}
    assert [r["upstream"] for r in await outbox_rows(store)] == ["notify/mail"]
