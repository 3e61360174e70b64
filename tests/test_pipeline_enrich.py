"""The enrich-then-store order: what a ``before_store`` stage adds is what the store keeps."""

from __future__ import annotations

import asyncio
from pathlib import Path

from appliance.event import Event
from appliance.metrics import Registry
from appliance.pipeline.bus import Pipeline
from appliance.store import Store


class StampZone:
    """An enrichment stage: stamps a zone on events from one network, leaves the rest."""

    name = "zone"

    async def process(self, events: list[Event], now: float) -> None:
        for e in events:
            if str(e.get("source.ip", "")).startswith("10."):
                e.fields["source.zone"] = "internal"
                e.changed()


def event(ip: str, n: int) -> Event:
    return Event(1000.0, 1000.0, "syslog", {"source.ip": ip, "message": f"m{n}"}, b"r")


async def store_through_pipeline(tmp_path: Path, events: list[Event]) -> list[Event]:
    store = Store(tmp_path / "a.db")
    await store.open()
    pipeline = Pipeline(store, Registry(), batch_size=10, flush_interval=0.01)
    pipeline.before_store.append(StampZone())
    pipeline.start()
    try:
        for e in events:
            assert pipeline.offer(e, "test")
        for _ in range(500):
            if pipeline.stored.value() >= len(events):
                break
            await asyncio.sleep(0.01)
        return await store.query_events(limit=100)
    finally:
        await pipeline.stop(5.0)
        await store.close()


async def test_fields_added_by_an_enrichment_stage_are_in_the_stored_event(
    tmp_path: Path,
) -> None:
    stored = await store_through_pipeline(tmp_path, [event("10.0.0.1", 1), event("192.0.2.1", 2)])
    by_ip = {e.fields["source.ip"]: e.fields for e in stored}
    assert by_ip["10.0.0.1"]["source.zone"] == "internal"
    assert "source.zone" not in by_ip["192.0.2.1"]
