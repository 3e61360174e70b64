"""API load bounds: requests being served and response bytes in flight are capped, the excess
answers 503 with Retry-After and is counted, and /healthz and /metrics stay outside the cap."""

from __future__ import annotations

import asyncio
import re
from typing import Any

import aiohttp
import pytest

from appliance.config import ConfigError, parse_config
from appliance.event import Event
from appliance.store import search
from tests.conftest import TOKEN

HEADERS = {"Authorization": f"Bearer {TOKEN}"}


def rejected(metrics: str, reason: str) -> int:
    m = re.search(rf'^appliance_api_requests_rejected_total{{reason="{reason}"}} (\d+)$', metrics,
                  re.M)  # fmt: skip
    return int(m.group(1)) if m else 0


async def fill(run: Any, n: int, size: int = 200) -> None:
    """Store ``n`` events straight through the pipeline (the API is what is under test)."""
    now = run.app.clock()
    for i in range(n):
        ev = Event(timestamp=now, created=now, module="test", raw=b"x" * size, fields={"n": i})
        assert run.app.pipeline.offer(ev, "test")
    await run.wait_stored(n)


async def get(session: aiohttp.ClientSession, url: str, **params: str) -> tuple[int, str | None]:
    async with session.get(url, params=params, headers=HEADERS) as resp:
        await resp.read()
        return resp.status, resp.headers.get("Retry-After")


def hold_queries(run: Any, monkeypatch: pytest.MonkeyPatch) -> asyncio.Event:
    """Make every events query wait for the returned gate: requests stay in flight."""
    gate = asyncio.Event()
    real = search.find_events

    async def held(*args: Any, **kw: Any) -> Any:
        await gate.wait()
        return await real(*args, **kw)

    monkeypatch.setattr(search, "find_events", held)
    return gate


async def test_requests_beyond_max_concurrent_answer_503_with_retry_after(
    start_appliance: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    run = await start_appliance(api={"max_concurrent_requests": 2})
    gate = hold_queries(run, monkeypatch)
    url = run.api + "/api/v1/events"
    held = [asyncio.create_task(get(run.session, url)) for _ in range(2)]
    await run.wait_for(lambda: run.app.api.limiter.in_flight == 2)
    extra = await asyncio.gather(*(get(run.session, url) for _ in range(10)))
    assert extra == [(503, "1")] * 10
    gate.set()
    assert [status for status, _ in await asyncio.gather(*held)] == [200, 200]
    assert rejected(await run.metrics(), "max_concurrent_requests") == 10


async def test_healthz_and_metrics_answer_while_the_api_is_full(
    start_appliance: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    run = await start_appliance(api={"max_concurrent_requests": 1})
    gate = hold_queries(run, monkeypatch)
    held = asyncio.create_task(get(run.session, run.api + "/api/v1/events"))
    await run.wait_for(lambda: run.app.api.limiter.in_flight == 1)
    async with run.session.get(run.api + "/healthz") as resp:
        assert resp.status == 200
    async with run.session.get(run.api + "/metrics") as resp:
        assert resp.status == 200
        assert "appliance_api_requests_in_flight 1" in await resp.text()
    gate.set()
    assert (await held)[0] == 200


async def test_many_concurrent_pages_get_some_503s_and_healthz_stays_200(
    start_appliance: Any,
) -> None:
    run = await start_appliance(api={"max_concurrent_requests": 4})
    await fill(run, 300)
    url = run.api + "/api/v1/events"
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as flood:
        pages = [get(flood, url, limit="1000") for _ in range(200)]
        health = [get(flood, run.api + "/healthz") for _ in range(20)]
        results = await asyncio.gather(*pages, *health)
    page_results, health_results = results[:200], results[200:]
    busy = [r for r in page_results if r[0] == 503]
    assert {status for status, _ in page_results} <= {200, 503}
    assert busy and all(retry == "1" for _, retry in busy)
    assert [status for status, _ in health_results] == [200] * 20
    assert rejected(await run.metrics(), "max_concurrent_requests") == len(busy)


async def test_responses_beyond_the_bytes_in_flight_budget_answer_503(
    start_appliance: Any,
) -> None:
    run = await start_appliance(api={"max_response_bytes_in_flight": 4096})
    await fill(run, 50)
    limiter = run.app.api.limiter
    assert limiter.try_reserve(1)  # another response is still being sent
    url = run.api + "/api/v1/events"
    assert await get(run.session, url, limit="50") == (503, "1")
    assert (await get(run.session, run.api + "/api/v1/upstreams"))[0] == 200  # small: fits
    limiter.release(1)
    assert rejected(await run.metrics(), "max_response_bytes_in_flight") == 1
    # Alone, a response larger than the whole budget is still served: progress is possible.
    assert (await get(run.session, url, limit="50"))[0] == 200
    assert limiter.bytes_in_flight == 0


@pytest.mark.parametrize("key", ["max_concurrent_requests", "max_response_bytes_in_flight"])
def test_api_limits_must_be_positive(key: str) -> None:
    with pytest.raises(ConfigError) as exc:
        parse_config({"api": {key: 0}, "sources": {"syslog": [{}]}})
    assert exc.value.errors == [f"api.{key}: must be > 0"]
