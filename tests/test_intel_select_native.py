"""The native intel prefilter (``_dataplane.intel_select``) against the Python reference
(``IntelEnricher.select``): the same events picked from generated batches, whatever the
fields hold and whatever state the stage's memory of misses is in."""

from __future__ import annotations

import random
from typing import Any

import pytest

from appliance import dataplane
from appliance.analysis.intel import IntelIndex, SourceText, build_index
from appliance.analysis.intel_stage import (
    DOMAIN_FIELDS,
    HASH_FIELDS,
    IP_FIELDS,
    MISS_CACHE,
    URL_FIELDS,
    IntelEnricher,
)
from appliance.event import Event
from appliance.metrics import Registry

pytestmark = pytest.mark.skipif(
    dataplane.native is None,
    reason="native data plane not loaded (not built, or APPLIANCE_NATIVE=0)",
)

T0 = 1_790_000_000.0
LISTED = ["198.51.100.7", "203.0.113.0/24", "bad.example.net", "a" * 64]
FIELDS = IP_FIELDS + DOMAIN_FIELDS + URL_FIELDS + HASH_FIELDS + ("message", "event.action")


def index_of(lines: list[str]) -> IntelIndex:
    text = "\n".join(lines)
    index, _report = build_index([SourceText("test", "plain", text, 80, T0, None)], 10_000)
    return index


def value(rnd: random.Random, pool: list[str]) -> Any:
    """A field value as events carry them, and as they should not but might."""
    r = rnd.random()
    if r < 0.6:
        return rnd.choice(pool)
    if r < 0.7:
        return [rnd.choice(pool)]  # unhashable
    if r < 0.8:
        return rnd.randint(0, 65535)
    if r < 0.85:
        return None
    if r < 0.9:
        return {"ip": rnd.choice(pool)}
    return f"10.{rnd.randint(0, 255)}.{rnd.randint(0, 255)}.{rnd.randint(1, 254)}"


def batch(rnd: random.Random, pool: list[str], n: int) -> list[Event]:
    events = []
    for _ in range(n):
        fields: dict[str, Any] = {}
        for name in FIELDS:
            # The two addresses are usually there; the other looked-up fields seldom are.
            if rnd.random() < (0.85 if name in IP_FIELDS[:2] else 0.04):
                fields[name] = value(rnd, pool)
        if rnd.random() < 0.02:
            fields["threat.indicator.type"] = "ipv4-addr"
        events.append(Event(T0, T0, "syslog", fields))
    return events


def pool_of(rnd: random.Random, n: int) -> list[str]:
    pool = [f"192.0.2.{i}" for i in range(1, 200)] + ["198.51.100.7", "203.0.113.9"]
    pool += ["bad.example.net", "good.example.org", "a" * 64, "b" * 64, "https://x.test/p"]
    return pool[:n] if n < len(pool) else pool


def stage_for(lines: list[str]) -> IntelEnricher:
    return IntelEnricher(index_of(lines), Registry())


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("lists", [LISTED, LISTED[:2]], ids=["all-kinds", "addresses-only"])
def test_native_selection_matches_the_reference_as_the_memory_fills(
    seed: int, lists: list[str]
) -> None:
    rnd = random.Random(seed)
    stage = stage_for(lists)
    pool = pool_of(rnd, 1000)
    for _ in range(4):  # the memory grows between batches (enrich_batch fills it)
        events = batch(rnd, pool, 400)
        got = dataplane.native.intel_select(
            events, stage._miss, IP_FIELDS[0], IP_FIELDS[1], stage._rare_keys
        )
        assert got == stage.select(events)
        stage.enrich_batch(events, T0)
    assert len(stage._miss) > 1  # the batches did reach remembered misses


def test_native_selection_follows_a_full_memory_cleared_and_a_swapped_index() -> None:
    rnd = random.Random(99)
    stage = stage_for(LISTED)
    pool = pool_of(rnd, 1000)
    events = batch(rnd, pool, 500)
    stage.enrich_batch(events, T0)
    native = dataplane.native.intel_select
    while len(stage._miss) < MISS_CACHE:  # full: the next miss clears it in place
        stage._remember(f"x{len(stage._miss)}")
    assert native(events, stage._miss, *IP_FIELDS[:2], stage._rare_keys) == stage.select(events)
    stage._remember("192.0.2.1")
    assert len(stage._miss) == 2
    assert native(events, stage._miss, *IP_FIELDS[:2], stage._rare_keys) == stage.select(events)
    stage.use(index_of(LISTED[:1]))  # a new index, a new (empty) memory
    assert native(events, stage._miss, *IP_FIELDS[:2], stage._rare_keys) == stage.select(events)
    # An empty memory knows only absence: every event with an address or a rare field.
    rare = ("client.ip", "server.ip")  # addresses-only lists: the other groups are not read
    assert stage.select(events) == [
        i
        for i, e in enumerate(events)
        if e.fields.get("source.ip") is not None
        or e.fields.get("destination.ip") is not None
        or any(k in e.fields for k in rare)
    ]


def test_a_listed_address_among_remembered_misses_is_picked_and_stamped() -> None:
    stage = stage_for(LISTED)
    quiet = [Event(T0, T0, "syslog", {"source.ip": "192.0.2.1", "destination.ip": "10.0.0.1"})]
    stage.enrich_batch(quiet * 3, T0)
    listed = Event(T0, T0, "syslog", {"source.ip": "198.51.100.7", "destination.ip": "10.0.0.1"})
    events = [*quiet, listed, *quiet]
    assert dataplane.native.intel_select(events, stage._miss, *IP_FIELDS[:2], stage._rare_keys) == [
        1
    ]
    assert stage.enrich_batch(events, T0) == 1
    assert listed.fields["threat.indicator.ip"] == "198.51.100.7"


def test_a_batch_the_extension_cannot_filter_goes_through_the_python_loop() -> None:
    stage = stage_for(LISTED)
    stage.native_select = lambda *args: None  # what intel_select answers after a panic
    listed = Event(T0, T0, "syslog", {"source.ip": "203.0.113.9", "destination.ip": "10.0.0.1"})
    quiet = Event(T0, T0, "syslog", {"source.ip": "192.0.2.1", "destination.ip": "10.0.0.1"})
    assert stage.enrich_batch([quiet, listed, quiet], T0) == 1
    assert listed.fields["threat.indicator.ip"] == "203.0.113.9"
    assert "192.0.2.1" in stage._miss
