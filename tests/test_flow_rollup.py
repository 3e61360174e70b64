"""Per-minute flow rollups: bounded keys, exact totals, heavy talkers kept."""

from __future__ import annotations

from appliance.event import Event
from appliance.flows.rollup import OTHER, FlowRollup


def _flow(src: str, nbytes: int, created: float = 60.0) -> Event:
    fields = {
        "source.ip": src,
        "destination.ip": "10.1.0.1",
        "destination.port": 443,
        "network.transport": "tcp",
        "network.bytes": nbytes,
        "network.packets": 1,
    }
    return Event(created, created, "netflow", fields)


def _rows(rollup: FlowRollup, dim: str) -> dict[str, tuple[int, int, int]]:
    return {r[2]: (r[3], r[4], r[5]) for r in rollup.take_all() if r[1] == dim}


def test_rollup_folds_keys_beyond_the_limit_and_keeps_totals() -> None:
    rollup = FlowRollup(top_k=5, max_keys=100)
    rollup.add([_flow(f"10.0.{i // 256}.{i % 256}", i) for i in range(1000)])
    assert len(rollup.buckets[60].by_dim["source.ip"]) <= 100
    assert rollup.folded > 0
    src = _rows(rollup, "source.ip")
    assert sum(t[0] for t in src.values()) == sum(range(1000))
    assert sum(t[2] for t in src.values()) == 1000
    assert len(src) <= 5 + 5 + 1 and OTHER in src
    assert "10.0.3.231" in src  # the biggest talker survives folding


def test_after_a_fold_small_newcomers_go_to_other_and_big_ones_get_a_row() -> None:
    rollup = FlowRollup(top_k=5, max_keys=16)
    rollup.add([_flow(f"10.0.0.{i}", 100 + i) for i in range(16)])
    rollup.add([_flow("10.9.9.9", 1)])  # dimension full: fold, then admit only big flows
    rollup.add([_flow("10.8.8.8", 1), _flow("10.7.7.7", 1_000_000)])
    src = _rows(rollup, "source.ip")
    assert "10.7.7.7" in src and "10.8.8.8" not in src
    assert sum(t[2] for t in src.values()) == 19


def test_minutes_are_separate_and_closed_minutes_are_taken() -> None:
    rollup = FlowRollup()
    rollup.add([_flow("10.0.0.1", 5, created=60.5), _flow("10.0.0.1", 7, created=125.0)])
    closed = rollup.take_closed(now=130.0)
    assert [(r[0], r[3]) for r in closed if r[1] == "source.ip"] == [(60, 5)]
    assert list(rollup.buckets) == [120]
