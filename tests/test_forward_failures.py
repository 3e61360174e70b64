"""Delivery under failure: outages, 5xx, 429, 409, per-item errors, timeouts, bad certificates."""

from __future__ import annotations

import asyncio
import json
import socket
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from tests.conftest import free_port
from tests.forwarding import (
    Receiver,
    forwarder,
    incident,
    make_pki,
    outbox_rows,
    raise_incidents,
    upstream,
)


async def drained(run: Any) -> None:
    async def empty() -> bool:
        # The sender's backlog figure moves last, after its counters: wait for it too.
        settled = all(s.stats.pending == 0 for s in forwarder(run).senders.values())
        rows = await outbox_rows(run.app.store)
        return settled and not [r for r in rows if r["state"] == "pending"]

    await run.wait_for(empty, timeout=10)


def metric(text: str, name: str) -> float:
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name + "{") or line.startswith(name + " "):
            total += float(line.rsplit(" ", 1)[1])
    return total


def items_of(seen: Any) -> list[str]:
    return [i["idempotency_key"] for i in seen.json()["items"]]


async def test_upstream_down_then_up_delivers_everything_in_order(start_appliance, tmp_path):
    pki = make_pki(tmp_path)
    # The upstream's port is held bound but not listening while it is "down": connecting is
    # refused, and no other test's listener can take the port meanwhile (one did, and the
    # sender's first failures were TLS errors against it instead of refused connections).
    down = socket.socket()
    down.bind(("127.0.0.1", 0))
    port = down.getsockname()[1]
    try:
        run = await start_appliance(
            upstream=[upstream("c", "webhook", f"https://127.0.0.1:{port}/h", pki, batch_size=100)]
        )
        docs = [incident(i) for i in range(1, 11)]
        await raise_incidents(run.app, docs)
        fwd = forwarder(run)
        await run.wait_for(lambda: fwd.senders["c"].failures >= 3)
        assert 'reason="connect"' in await run.metrics()
        status = (await run.get_json("/api/v1/upstreams"))["upstreams"][0]
        assert status["status"] == "failing" and status["backlog"] == 10
    finally:
        down.close()

    rx = Receiver(pki.server, pki.ca)
    await rx.start(port)
    try:
        await drained(run)
    finally:
        await rx.stop()
    keys = [k for s in rx.seen for k in items_of(s)]
    assert keys == [f"test-01:{d['id']}:1" for d in docs]
    assert fwd.senders["c"].failures == 0


async def test_500_is_retried_with_the_same_keys(start_appliance, receiver):
    answers = iter([500, 500, 502])
    receiver.respond = lambda s: web.Response(status=next(answers, 200))
    run = await start_appliance(
        upstream=[upstream("c", "webhook", receiver.url("/h"), receiver.pki)]
    )
    await raise_incidents(run.app, [incident(1), incident(2)])
    await drained(run)
    assert len(receiver.seen) == 4
    assert len({s.body for s in receiver.seen}) == 1  # byte-identical retries
    m = await run.metrics()
    assert metric(m, 'appliance_forward_failures_total{upstream="c",reason="http_500"}') == 2
    assert metric(m, 'appliance_forward_failures_total{upstream="c",reason="http_502"}') == 1
    assert metric(m, "appliance_forward_delivered_total") == 2


async def test_429_retry_after_sets_the_wait(start_appliance, receiver):
    answers = iter([web.Response(status=429, headers={"Retry-After": "7"})])
    receiver.respond = lambda s: next(answers, web.json_response({}))
    run = await start_appliance(
        upstream=[upstream("c", "webhook", receiver.url("/h"), receiver.pki)]
    )
    slept: list[float] = []

    async def fake_sleep(seconds: float) -> None:
        slept.append(seconds)

    forwarder(run).sleep = fake_sleep
    await raise_incidents(run.app, [incident(1)])
    await drained(run)
    assert slept == [7.0]
    assert len(receiver.seen) == 2


async def test_retry_after_is_capped_by_retry_after_max(start_appliance, receiver):
    answers = iter([web.Response(status=503, headers={"Retry-After": "86400"})])
    receiver.respond = lambda s: next(answers, web.json_response({}))
    run = await start_appliance(
        upstream=[upstream("c", "webhook", receiver.url("/h"), receiver.pki, retry_after_max=60)]
    )
    slept: list[float] = []

    async def fake_sleep(seconds: float) -> None:
        slept.append(seconds)

    forwarder(run).sleep = fake_sleep
    await raise_incidents(run.app, [incident(1)])
    await drained(run)
    assert slept == [60.0]


async def test_backoff_grows_and_is_capped_with_full_jitter(start_appliance, receiver):
    answers = iter([500] * 6)
    receiver.respond = lambda s: web.Response(status=next(answers, 200))
    run = await start_appliance(
        upstream=[
            upstream(
                "c", "webhook", receiver.url("/h"), receiver.pki, backoff_base=1, backoff_cap=8
            )
        ]
    )
    slept: list[float] = []

    async def fake_sleep(seconds: float) -> None:
        slept.append(seconds)

    fwd = forwarder(run)
    fwd.sleep = fake_sleep
    for s in fwd.senders.values():
        s.rand.random = lambda: 0.999999  # type: ignore[method-assign]  # top of the jitter range
    await raise_incidents(run.app, [incident(1)])
    await drained(run)
    assert [round(x) for x in slept] == [1, 2, 4, 8, 8, 8]


async def test_409_counts_as_delivered(start_appliance, receiver):
    receiver.respond = lambda s: web.Response(status=409)
    run = await start_appliance(
        upstream=[upstream("c", "webhook", receiver.url("/h"), receiver.pki)]
    )
    await raise_incidents(run.app, [incident(1)])
    await drained(run)
    assert await outbox_rows(run.app.store) == []
    m = await run.metrics()
    assert metric(m, "appliance_forward_duplicates_total") == 1
    assert metric(m, "appliance_forward_failures_total") == 0


async def test_bulk_item_errors_retry_only_the_failed_items(start_appliance, receiver):
    bodies: list[list[str]] = []

    def respond(s):
        ids = [json.loads(a)["create"]["_id"] for a in s.body.decode().splitlines()[::2]]
        bodies.append(ids)
        statuses = [201, 429, 409, 201] if len(bodies) == 1 else [201] * len(ids)
        items: list[dict[str, Any]] = [
            {"create": {"_id": i, "status": st}} for i, st in zip(ids, statuses, strict=True)
        ]
        if len(bodies) == 1:
            items[1]["create"]["error"] = {"type": "es_rejected_execution_exception"}
        return web.json_response({"errors": True, "items": items})

    receiver.respond = respond
    run = await start_appliance(
        upstream=[upstream("es", "elastic_bulk", receiver.url(), receiver.pki)]
    )
    docs = [incident(i) for i in range(1, 5)]
    await raise_incidents(run.app, docs)
    await drained(run)
    keys = [f"test-01:{d['id']}:1" for d in docs]
    assert bodies == [keys, [keys[1]]]
    m = await run.metrics()
    assert metric(m, 'appliance_forward_failures_total{upstream="es",reason="item_429"}') == 1
    assert metric(m, "appliance_forward_delivered_total") == 4


async def test_poisoned_item_is_dead_lettered_and_does_not_block(start_appliance, receiver):
    poison = incident(2)["id"]

    def respond(s):
        ids = [i["incident"]["id"] for i in s.json()["items"]]
        return web.Response(status=400) if poison in ids else web.json_response({})

    receiver.respond = respond
    run = await start_appliance(
        upstream=[upstream("c", "webhook", receiver.url("/h"), receiver.pki, max_rejections=3)]
    )
    await raise_incidents(run.app, [incident(1), incident(2), incident(3)])
    await drained(run)
    await raise_incidents(run.app, [incident(4)])
    await drained(run)
    rows = await outbox_rows(run.app.store)
    assert [(r["key"], r["state"], r["rejections"]) for r in rows] == [
        (f"test-01:{poison}:1", "dead", 3)
    ]
    delivered = [k for s in receiver.seen if s.headers.get("Idempotency-Key") for k in items_of(s)]
    for n in (1, 3, 4):
        assert f"test-01:{incident(n)['id']}:1" in delivered
    status = (await run.get_json("/api/v1/upstreams"))["upstreams"][0]
    assert status["dead_letters"] == 1 and status["backlog"] == 0
    assert metric(await run.metrics(), "appliance_forward_dead_lettered_total") == 1
    dead = await run.get_json("/api/v1/upstreams/c/dead-letters")
    (row,) = dead["dead_letters"]
    assert (row["key"], row["rejections"], row["last_error"]) == (
        f"test-01:{poison}:1",
        3,
        "HTTP 400",
    )


async def test_slow_response_past_the_timeout_is_retried(start_appliance, receiver):
    calls = 0

    async def respond(s):
        nonlocal calls
        calls += 1
        if calls == 1:
            await asyncio.sleep(1.0)
        return web.json_response({})

    receiver.respond = respond
    run = await start_appliance(
        upstream=[upstream("c", "webhook", receiver.url("/h"), receiver.pki, request_timeout=0.4)]
    )
    await raise_incidents(run.app, [incident(1)])
    await drained(run)
    assert (
        metric(
            await run.metrics(), 'appliance_forward_failures_total{upstream="c",reason="timeout"}'
        )
        == 1
    )
    assert len(receiver.seen) == 2


async def test_server_certificate_from_another_ca_gets_nothing(start_appliance, tmp_path):
    pki = make_pki(tmp_path, "ours")
    other = make_pki(tmp_path, "other")
    port = free_port()
    impostor = Receiver(other.server, pki.ca)  # trusts our client, but its cert is not ours
    await impostor.start(port)
    run = await start_appliance(
        upstream=[upstream("c", "webhook", f"https://127.0.0.1:{port}/h", pki)]
    )
    try:
        await raise_incidents(run.app, [incident(1)])
        fwd = forwarder(run)
        await run.wait_for(lambda: fwd.senders["c"].failures >= 2)
        assert impostor.seen == []
        m = await run.metrics()
        assert metric(m, 'appliance_forward_failures_total{upstream="c",reason="tls_verify"}') >= 2
        status = (await run.get_json("/api/v1/upstreams"))["upstreams"][0]
        assert "certificate verify failed" in status["last_error"]
    finally:
        await impostor.stop()
    genuine = Receiver(pki.server, pki.ca)
    await genuine.start(port)
    try:
        await drained(run)
    finally:
        await genuine.stop()
    assert len(genuine.seen) == 1


async def test_upstream_without_our_client_certificate_refuses_and_nothing_is_lost(
    start_appliance, receiver
):
    up = upstream("c", "webhook", receiver.url("/h"), receiver.pki)
    del up["client_cert"], up["client_key"]
    run = await start_appliance(upstream=[up])
    await raise_incidents(run.app, [incident(1)])
    fwd = forwarder(run)
    await run.wait_for(lambda: fwd.senders["c"].failures >= 2)
    assert receiver.seen == []
    assert len(await outbox_rows(run.app.store)) == 1


async def test_secrets_from_file_and_env_are_sent_but_never_logged(
    start_appliance, receiver, tmp_path, monkeypatch, caplog
):
    import base64 as b64

    (tmp_path / "console.token").write_text("file-token-XYZ\n")
    secret = "whsec_" + b64.b64encode(b"env-secret-0123456789abcdef").decode()
    monkeypatch.setenv("TEST_WHSEC", secret)
    answers = iter([401, 401])
    receiver.respond = lambda s: web.Response(status=next(answers, 200))
    caplog.set_level("DEBUG")
    run = await start_appliance(
        upstream=[
            upstream(
                "c",
                "webhook",
                receiver.url("/h"),
                receiver.pki,
                token_file="console.token",
                hmac_secret_env="TEST_WHSEC",
            )
        ]
    )
    await raise_incidents(run.app, [incident(1)])
    await drained(run)
    assert receiver.seen[-1].headers["Authorization"] == "Bearer file-token-XYZ"
    assert "webhook-signature" in receiver.seen[-1].headers
    assert (
        metric(
            await run.metrics(), 'appliance_forward_failures_total{upstream="c",reason="http_401"}'
        )
        == 2
    )
    status = json.dumps(await run.get_json("/api/v1/upstreams"))
    for text in (caplog.text, status, repr(run.app.config)):
        assert "file-token-XYZ" not in text and secret not in text and secret[6:] not in text


async def test_missing_secret_env_fails_start_with_a_config_error(start_appliance, receiver):
    from appliance.config import ConfigError

    with pytest.raises(ConfigError, match="TEST_UNSET_TOKEN is not set"):
        await start_appliance(
            upstream=[
                upstream(
                    "c", "webhook", receiver.url("/h"), receiver.pki, token_env="TEST_UNSET_TOKEN"
                )
            ]
        )


async def test_full_spool_drops_low_value_rows_first_and_counts_them(start_appliance, tmp_path):
    pki = make_pki(tmp_path)
    run = await start_appliance(
        upstream=[
            upstream(
                "c", "webhook", f"https://127.0.0.1:{free_port()}/h", pki, spool_max_bytes=6000
            )
        ]
    )
    low = [incident(i, severity="low") for i in range(1, 11)]
    crit = [incident(i, severity="critical") for i in range(11, 16)]
    await raise_incidents(run.app, low[:5] + crit + low[5:])
    rows = await outbox_rows(run.app.store)
    kept = {r["key"].split(":")[1] for r in rows}
    assert {d["id"] for d in crit} <= kept
    m = await run.metrics()
    dropped = metric(m, 'appliance_forward_dropped_total{upstream="c",reason="spool_full"}')
    assert dropped == 15 - len(rows) and dropped > 0
    assert metric(m, 'appliance_forward_spool_bytes{upstream="c"}') <= 6000


async def test_reload_with_a_new_upstream_starts_forwarding_to_it(start_appliance, receiver):
    import dataclasses

    from appliance.config import parse_config
    from tests.conftest import make_config

    run = await start_appliance()
    assert await run.get_json("/api/v1/upstreams") == {"upstreams": [], "count": 0}
    base = Path(run.app.config.base_dir)
    new = parse_config(
        make_config(base, upstream=[upstream("c", "webhook", receiver.url("/h"), receiver.pki)]),
        base_dir=base,
    )
    await run.app.reload(dataclasses.replace(new, api=run.app.config.api))
    await raise_incidents(run.app, [incident(1)])
    await drained(run)
    assert len(receiver.seen) == 1


async def test_reload_with_a_missing_certificate_keeps_forwarding_as_it_was(
    start_appliance, receiver
):
    import dataclasses

    from appliance.config import ConfigError

    run = await start_appliance(
        upstream=[upstream("c", "webhook", receiver.url("/h"), receiver.pki)]
    )
    bad = dataclasses.replace(
        run.app.config.upstream[0], ca_file="missing-ca.pem", request_timeout=9.0
    )
    with pytest.raises(ConfigError, match="cannot load TLS files"):
        await run.app.reload(dataclasses.replace(run.app.config, upstream=[bad]))
    await raise_incidents(run.app, [incident(1)])
    await drained(run)
    assert len(receiver.seen) == 1
