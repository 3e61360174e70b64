"""The native flow rollup against the Python reference: the same flow events, in the same
batches, give the same rows (same order, same totals), the same fold counts and flow counts,
at every flush (closed minutes, open minutes for the API, everything at stop)."""

from __future__ import annotations

import random
from typing import Any

import pytest

from appliance import dataplane
from appliance.event import Event
from appliance.flows.rollup import FlowRollup, new_rollup

pytestmark = pytest.mark.skipif(
    dataplane.native is None,
    reason="native data plane not loaded (not built, or APPLIANCE_NATIVE=0)",
)


def _events(rng: random.Random, n: int, t0: float, keys: int) -> list[Event]:
    out = []
    for i in range(n):
        fields: dict[str, Any] = {}
        if rng.random() < 0.97:
            fields["source.ip"] = f"10.0.{rng.randrange(keys) // 256}.{rng.randrange(keys) % 256}"
        if rng.random() < 0.97:
            fields["destination.ip"] = rng.choice(["192.0.2.1", "2001:db8::1", "8.8.8.8"])
        if rng.random() < 0.95:
            fields["destination.port"] = rng.choice([22, 53, 443, 8080, rng.randrange(65536)])
        roll = rng.random()
        if roll < 0.8:
            fields["network.transport"] = rng.choice(["tcp", "udp"])
            fields["network.iana_number"] = "6"
        elif roll < 0.9:
            fields["network.iana_number"] = str(rng.randrange(256))
        if rng.random() < 0.98:
            fields["network.bytes"] = rng.choice([0, 40, rng.randrange(1 << 20), 1 << 70])
        if rng.random() < 0.98:
            fields["network.packets"] = rng.randrange(1, 1000)
        created = t0 + i * 0.05 + rng.random()  # crosses minutes
        out.append(Event(created, created, "netflow", fields))
    return out


@pytest.mark.parametrize(("seed", "max_keys", "top_k"), [(0, 20_000, 100), (1, 16, 3),
                                                         (2, 64, 5), (3, 200, 10)])  # fmt: skip
def test_native_rollup_rows_match_the_reference(seed: int, max_keys: int, top_k: int) -> None:
    rng = random.Random(seed)
    native = new_rollup(top_k, max_keys)
    assert not isinstance(native, FlowRollup)
    reference = FlowRollup(top_k, max_keys)
    t = 1_700_000_000.0
    for _ in range(12):
        batch = _events(rng, rng.randint(1, 400), t, keys=rng.choice([5, 50, 5000]))
        t = batch[-1].created
        native.add(batch)
        reference.add(batch)
        assert native.flows == reference.flows
        assert native.folded == reference.folded
        assert native.open_rows() == reference.open_rows()
        now = t + rng.choice([0.0, 30.0, 90.0])
        assert native.take_closed(now) == reference.take_closed(now)
    assert native.take_all() == reference.take_all()
    assert native.take_all() == []


def test_python_backend_uses_the_reference(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(dataplane, "native", None)
    assert isinstance(new_rollup(), FlowRollup)
