"""The incident manager on a real SQLite file: keying, the bounded cache, write failures."""

from __future__ import annotations

from pathlib import Path

import pytest

from appliance.correlate.engine import Alert
from appliance.correlate.rules import RuleMeta
from appliance.incidents import manager as manager_mod
from appliance.incidents.manager import IncidentManager
from appliance.store import Store

RULE = RuleMeta(id="r-1", title="Brute force", level="high", tags=["attack.t1110"], path="x")


def alert(ip: str, t: float = 1000.0) -> Alert:
    return Alert(RULE, "event_count", {"source.ip": ip}, t, t, 10, [1, 2], ["raw line"])


@pytest.fixture
async def store(tmp_path: Path):
    s = Store(tmp_path / "appliance.db")
    await s.open()
    yield s
    await s.close()


async def test_hits_on_an_incident_evicted_from_the_cache_update_it(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(manager_mod, "MAX_CACHED", 2)
    m = IncidentManager(store, "t", clock=lambda: 5000.0, hooks=[])
    await m.load()
    (first,) = await m.apply([alert("192.0.2.1")])
    await m.apply([alert("192.0.2.2")])
    await m.apply([alert("192.0.2.3")])  # evicts 192.0.2.1 from memory
    assert len(m.active) == 2 and not m.complete
    (again,) = await m.apply([alert("192.0.2.1", 2000.0)])
    assert again["id"] == first["id"]
    assert again["hit_count"] == 2 and again["revision"] == 2


async def test_restart_loads_active_incidents_and_keeps_keying(store: Store) -> None:
    m = IncidentManager(store, "t", clock=lambda: 5000.0, hooks=[])
    await m.load()
    (first,) = await m.apply([alert("192.0.2.1")])
    m2 = IncidentManager(store, "t", clock=lambda: 6000.0, hooks=[])
    await m2.load()
    (again,) = await m2.apply([alert("192.0.2.1", 3000.0)])
    assert again["id"] == first["id"] and again["last_seen"].startswith("1970-01-01T00:50:00")


async def test_failed_write_leaves_memory_as_committed(store: Store) -> None:
    async def broken(conn, doc) -> None:
        raise RuntimeError("no outbox")

    m = IncidentManager(store, "t", clock=lambda: 5000.0, hooks=[broken])
    await m.load()
    with pytest.raises(RuntimeError):
        await m.apply([alert("192.0.2.1")])
    assert not m.active
    m.hooks = []
    (doc,) = await m.apply([alert("192.0.2.1")])
    assert doc["hit_count"] == 1 and doc["revision"] == 1


async def test_purge_deletes_old_resolved_incidents_only(store: Store) -> None:
    now = [5000.0]
    m = IncidentManager(store, "t", clock=lambda: now[0], hooks=[])
    await m.load()
    (old,) = await m.apply([alert("192.0.2.1")])
    (kept,) = await m.apply([alert("192.0.2.2")])
    await m.transition(old["id"], "resolve")
    now[0] += 100 * 86400
    assert await m.purge(90 * 86400) == 1
    assert await m.get(old["id"]) is None
    assert (await m.get(kept["id"]))["status"] == "open"
