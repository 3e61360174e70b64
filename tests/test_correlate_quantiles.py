"""value_median and value_percentile correlations: the statistic over the window's values,
sliding on event time, restored from a snapshot; and what the loader refuses."""

from __future__ import annotations

import json
from pathlib import Path

from appliance.correlate import Engine
from appliance.correlate.engine import quantile
from appliance.event import Event
from tests.ruletools import detection, ev, fired, rules_from, run
from tests.test_correlate_engine import corr


def flow_bytes(dt: float, n: int, src: str = "10.0.0.1") -> Event:
    return ev(dt, {"event.action": "flow", "source.ip": src, "network.bytes": n})


def test_median_of_an_odd_and_an_even_count_and_nearest_rank_percentiles() -> None:
    assert quantile([1.0, 2.0, 9.0], None) == 2.0
    assert quantile([1.0, 2.0, 4.0, 9.0], None) == 3.0
    values = [float(v) for v in range(1, 101)]
    assert quantile(values, 95) == 95.0 and quantile(values, 100) == 100.0
    assert quantile([5.0], 1) == 5.0


def test_value_median_fires_on_the_median_not_on_one_outlier(tmp_path: Path) -> None:
    rs = rules_from(
        tmp_path,
        b=detection(1, "flows", "flow"),
        c=corr(
            "big_median",
            "value_median",
            ["flows"],
            ["source.ip"],
            "10m",
            "{gte: 1000, field: network.bytes}",
        ),
    )
    # One huge flow after small ones: the average would fire, the median does not.
    outlier = [flow_bytes(0, 100), flow_bytes(1, 100), flow_bytes(2, 100_000)]
    assert "big_median" not in fired(run(outlier, rs))
    mostly_big = [flow_bytes(0, 100), flow_bytes(1, 2000), flow_bytes(2, 3000)]
    assert "big_median" in fired(run(mostly_big, rs))


def test_value_percentile_uses_the_rules_percentile_and_the_window(tmp_path: Path) -> None:
    rs = rules_from(
        tmp_path,
        b=detection(1, "flows", "flow"),
        c=corr(
            "p90",
            "value_percentile",
            ["flows"],
            ["source.ip"],
            "1m",
            "{gte: 5000, field: network.bytes, percentile: 90}",
        ),
    )
    small = [flow_bytes(i, 100) for i in range(9)]
    assert "p90" not in fired(run([*small, flow_bytes(9, 9000)], rs))  # 1 in 10: p90 = 100
    two_big = [*small[:8], flow_bytes(8, 9000), flow_bytes(9, 9000)]
    assert "p90" in fired(run(two_big, rs))  # 2 in 10: p90 = 9000
    # A minute later the small ones have slid out of the window: one big flow is the p90.
    assert "p90" in fired(run([*small, flow_bytes(9, 9000), flow_bytes(100, 9000)], rs))


def test_a_quantile_window_survives_a_snapshot(tmp_path: Path) -> None:
    rs = rules_from(
        tmp_path,
        b=detection(1, "flows", "flow"),
        c=corr(
            "big_median",
            "value_median",
            ["flows"],
            ["source.ip"],
            "10m",
            "{gte: 3000, field: network.bytes}",
        ),
    )
    before = Engine(rs)
    for e in [flow_bytes(0, 100), flow_bytes(1, 5000)]:  # median 100, then 2550
        assert "big_median" not in fired(before.observe(e, e.timestamp))
    restored = Engine(rs)
    restored.restore(json.loads(json.dumps(before.snapshot())))
    got = restored.observe(flow_bytes(2, 5000), flow_bytes(2, 5000).timestamp)
    assert "big_median" in fired(got)  # median of 100, 5000, 5000


def test_value_percentile_without_a_percentile_is_refused_with_the_reason(
    tmp_path: Path,
) -> None:
    rs = rules_from(
        tmp_path,
        b=detection(1, "flows", "flow"),
        c=corr(
            "p",
            "value_percentile",
            ["flows"],
            ["source.ip"],
            "1m",
            "{gte: 5, field: network.bytes}",
        ),
    )
    (failure,) = rs.failures
    assert "percentile" in failure.reason
