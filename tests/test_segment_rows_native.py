"""A stored batch's segment rows made natively in one pass (ids given, lines joined, time
bounds taken) are the reference's ``segment_rows`` rows, id for id and byte for byte."""

from __future__ import annotations

import math
import random
from typing import Any

import pytest

from appliance import dataplane
from appliance.event import Event
from appliance.store import segments
from appliance.store.segments import SEGMENT_EVENTS, segment_rows, segment_rows_with_ids

pytestmark = pytest.mark.skipif(dataplane.native is None, reason="the Rust extension is not loaded")

TIMES = [0.0, -0.0, 1e-300, 1.79e9, -5.5, math.inf, -math.inf, math.nan, 1e308]


def batch(rng: random.Random, n: int) -> list[Event]:
    events = []
    for _ in range(n):
        ts = rng.choice(TIMES) if rng.random() < 0.1 else 1.79e9 + rng.uniform(-1e5, 1e5)
        created = rng.choice(TIMES) if rng.random() < 0.1 else 1.79e9 + rng.uniform(-10, 10)
        e = Event(ts, created, "syslog", {})
        e.line = rng.randbytes(rng.randrange(0, 300))
        events.append(e)
    return events


def reference(events: list[Event], first_id: int) -> tuple[list[tuple[Any, ...]], list[int]]:
    copies = [
        Event(e.timestamp, e.created, e.module, e.fields, e.raw, None, e.line) for e in events
    ]
    for i, e in enumerate(copies):
        e.id = first_id + i
    return segment_rows(copies, 8192), [first_id + i for i in range(len(events))]


@pytest.mark.parametrize("n", [0, 1, 7, SEGMENT_EVENTS - 1, SEGMENT_EVENTS, 2 * SEGMENT_EVENTS + 5])
def test_native_rows_and_ids_are_the_references(n: int) -> None:
    rng = random.Random(n)
    events = batch(rng, n)
    want_rows, want_ids = reference(events, 1_000 + n)
    rows = segment_rows_with_ids(events, 1_000 + n, 8192)
    # repr: a NaN bound compares unequal to itself, its text does not.
    assert repr(rows) == repr(want_rows)
    assert [e.id for e in events] == want_ids


def test_a_line_still_to_encode_leaves_the_rows_to_the_reference_with_the_ids_given() -> None:
    events = batch(random.Random(1), 5)
    events[3].line = None
    events[3].fields = {"message": "encoded by the reference"}
    assert dataplane.native is not None
    assert dataplane.native.segment_rows_with_ids(events, 41, SEGMENT_EVENTS) is None
    assert [e.id for e in events] == [41, 42, 43, 44, 45]
    rows = segment_rows_with_ids(events, 41, 8192)
    assert b"encoded by the reference" in rows[0][7]
    assert rows[0][:3] == (41, 45, 5)


def test_an_int_time_is_kept_as_the_reference_keeps_it() -> None:
    events = batch(random.Random(2), 3)
    events[0].timestamp = 5  # type: ignore[assignment]
    events[1].timestamp = 9.5
    events[2].timestamp = 7.0
    rows = segment_rows_with_ids(events, 1, 8192)
    assert rows[0][3] == 5 and type(rows[0][3]) is int
    assert rows[0][4] == 9.5


def test_line_census_counts_bytes_lines_and_lists_the_others_as_the_reference(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    rng = random.Random(11)
    kinds: list[Any] = [None, "text", bytearray(b"ab"), b""]
    events = []
    for _ in range(700):
        e = Event(1.0, 2.0, "syslog", {})
        e.line = rng.choice(kinds) if rng.random() < 0.2 else rng.randbytes(rng.randrange(1, 90))
        events.append(e)
    native = segments.line_census(events)
    monkeypatch.setattr(dataplane, "native", None)
    reference = segments.line_census(events)
    assert native == reference
    assert native[0] == sum(len(e.line) for e in events if type(e.line) is bytes)
    assert native[1] == [i for i, e in enumerate(events) if type(e.line) is not bytes]
