"""The optional raw-event stream: its own lane, own limits, same delivery machinery."""

from __future__ import annotations

import json
import socket
from pathlib import Path
from typing import Any

import jsonschema
from aiohttp import web

from tests.conftest import free_port
from tests.forwarding import incident, make_pki, outbox_rows, raise_incidents, upstream

SCHEMA = Path(__file__).parents[1] / "appliance" / "forward" / "schema" / "webhook-v1.schema.json"


def send_udp(addr: tuple[str, int], *payloads: bytes) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        for p in payloads:
            s.sendto(p, addr)


async def test_events_go_in_their_own_batches_beside_incidents(start_appliance, receiver):
    run = await start_appliance(
        upstream=[upstream("c", "webhook", receiver.url("/h"), receiver.pki, events=True)]
    )
    send_udp(
        run.source().address,
        b"<34>1 2026-11-29T10:00:00Z fw1 sshd 42 - - auth failed",
        b"<14>1 2026-11-29T10:00:01Z fw1 app - - - hello",
    )
    await run.wait_stored(2)
    await raise_incidents(run.app, [incident(1)])

    def kinds() -> dict[str, list[Any]]:
        out: dict[str, list[Any]] = {}
        for s in receiver.seen:
            body = s.json()
            out.setdefault(body["kind"], []).extend(body["items"])
        return out

    await run.wait_for(
        lambda: len(kinds().get("event_batch", [])) == 2 and kinds().get("incident_batch")
    )
    schema = json.loads(SCHEMA.read_text())
    for s in receiver.seen:
        jsonschema.validate(s.json(), schema)
    events = kinds()["event_batch"]
    assert [e["event"]["message"] for e in events] == ["auth failed", "hello"]
    assert all(e["idempotency_key"].startswith("test-01:event:") for e in events)
    assert len({e["idempotency_key"] for e in events}) == 2
    assert kinds()["incident_batch"][0]["incident"]["id"] == incident(1)["id"]
    lanes = {u["name"]: u for u in (await run.get_json("/api/v1/upstreams"))["upstreams"]}
    assert lanes["c"]["stream"] == "incident" and lanes["c/events"]["stream"] == "events"

    # The receiver sees a request before the sender has read the answer and counted it.
    async def counted() -> bool:
        return 'appliance_forward_delivered_total{upstream="c/events"} 2' in await run.metrics()

    await run.wait_for(counted)


async def test_elastic_events_use_the_events_index_and_key_as_id(start_appliance, receiver):
    def respond(s):
        n = len(s.body.splitlines()) // 2
        return web.json_response({"errors": False, "items": [{"create": {"status": 201}}] * n})

    receiver.respond = respond
    run = await start_appliance(
        appliance={"tenant": "acme"},
        upstream=[
            upstream(
                "es",
                "elastic_bulk",
                receiver.url(),
                receiver.pki,
                events=True,
                events_index="sem-events-x",
            )
        ],
    )
    send_udp(run.source().address, b"<13>Nov 29 10:00:00 host1 app: one line")
    await run.wait_stored(1)
    await run.wait_for(lambda: len(receiver.seen) >= 1)
    lines = receiver.seen[0].body.decode().splitlines()
    action, source = json.loads(lines[0]), json.loads(lines[1])
    assert action["create"]["_index"] == "sem-events-x"
    assert action["create"]["_id"].startswith("test-01:event:")
    assert source["message"] == "one line" and source["ecs"]["version"]
    assert source["labels"] == {"sensor_id": "test-01", "tenant": "acme"}


async def test_event_spool_limit_drops_low_severity_events_and_spares_incidents(
    start_appliance, tmp_path
):
    from appliance.event import Event
    from appliance.forward import Forwarder

    pki = make_pki(tmp_path)
    run = await start_appliance(
        upstream=[
            upstream(
                "c",
                "webhook",
                f"https://127.0.0.1:{free_port()}/h",
                pki,
                events=True,
                events_spool_max_bytes=8000,
            )
        ]
    )
    fwd = next(c for c in run.app.components if isinstance(c, Forwarder))
    await raise_incidents(run.app, [incident(1, severity="low")])

    def events(first_id: int, severity: int, n: int) -> list[Event]:
        return [
            Event(
                1.0,
                2.0,
                "syslog",
                {"log.syslog.severity.code": severity, "message": "x" * 200},
                id=first_id + i,
            )
            for i in range(n)
        ]

    # Debug (7) first, then critical (2): the debug ones must go first.
    now = run.app.clock()
    await fwd.event_stage.process(events(1, 7, 20), now)
    await fwd.event_stage.process(events(21, 2, 5), now)
    rows = await outbox_rows(run.app.store)
    lane = [r for r in rows if r["upstream"] == "c/events"]
    assert [r for r in rows if r["upstream"] == "c"] != []  # the incident is untouched
    assert sum(1 for r in lane if r["drop_class"] == 4) == 5  # every critical event kept
    assert 0 < len(lane) < 25
    m = await run.metrics()
    dropped = [
        line
        for line in m.splitlines()
        if line.startswith('appliance_forward_dropped_total{upstream="c/events"')
    ]
    assert dropped and float(dropped[0].rsplit(" ", 1)[1]) == 25 - len(lane)
    assert not any('upstream="c",' in line for line in dropped)
