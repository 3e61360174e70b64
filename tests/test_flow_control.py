"""When a stream reads: backpressure and spent turns, in memory (the protocol obeys what
ReadFlow says; tests/test_syslog_tcp.py runs it on real sockets)."""

from __future__ import annotations

from appliance.sources.flow_control import ReadFlow


def test_backpressure_pauses_reading_once_and_room_resumes_it() -> None:
    flow = ReadFlow()
    assert flow.pause() is True
    assert flow.pause() is False  # already paused: no second count, no second callback
    assert flow.reading_change(closed=False) is True
    assert flow.reading_change(closed=False) is None
    flow.resume()
    assert flow.reading_change(closed=False) is False
    assert not flow.holding


def test_a_spent_turn_schedules_one_continuation() -> None:
    flow = ReadFlow()
    assert flow.yield_turn() is True
    assert flow.yield_turn() is False
    assert flow.holding
    flow.next_turn()
    assert not flow.holding


def test_reading_stays_paused_while_either_reason_holds() -> None:
    flow = ReadFlow()
    flow.pause()
    flow.yield_turn()
    assert flow.reading_change(closed=False) is True
    flow.next_turn()  # the turn came back, the pipeline is still full
    assert flow.reading_change(closed=False) is None
    flow.resume()
    assert flow.reading_change(closed=False) is False


def test_a_closed_connection_is_not_told_to_read_or_stop() -> None:
    flow = ReadFlow()
    flow.pause()
    assert flow.reading_change(closed=True) is None
    assert flow.holding  # frames still held: the stream finishes when they are handed over
