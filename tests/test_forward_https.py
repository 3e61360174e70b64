"""Each upstream format against a real mTLS HTTPS receiver: request shape, auth, batching."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import jsonschema
from aiohttp import web
from standardwebhooks import Webhook

from tests.forwarding import (
    forwarder,
    incident,
    outbox_rows,
    raise_incidents,
    upstream,
)

SCHEMA = Path(__file__).parents[1] / "appliance" / "forward" / "schema" / "webhook-v1.schema.json"
SECRET = "whsec_" + base64.b64encode(b"0123456789abcdef0123456789abcdef").decode()


async def delivered_all(run: Any) -> None:
    async def empty() -> bool:
        settled = all(s.stats.pending == 0 for s in forwarder(run).senders.values())
        return settled and not await outbox_rows(run.app.store)

    await run.wait_for(empty, timeout=10)


async def test_webhook_sends_signed_schema_valid_batches_over_mtls(start_appliance, receiver):
    run = await start_appliance(
        appliance={"tenant": "acme", "site": "branch-12"},
        upstream=[
            upstream(
                "console",
                "webhook",
                receiver.url("/hook"),
                receiver.pki,
                batch_size=10,
                hmac_secret=SECRET,
                token="tok-123",
            )
        ],
    )
    docs = [incident(i) for i in range(1, 26)]
    await raise_incidents(run.app, docs)
    await delivered_all(run)

    assert [len(s.json()["items"]) for s in receiver.seen] == [10, 10, 5]
    schema = json.loads(SCHEMA.read_text())
    wh = Webhook(SECRET)
    keys = []
    for s in receiver.seen:
        assert s.method == "POST" and s.path == "/hook"
        assert s.headers["Content-Type"] == "application/json"
        assert s.headers["Authorization"] == "Bearer tok-123"
        assert (("commonName", "edge-01.client.example"),) in s.peer_subject  # mTLS
        # Independent check of the Standard Webhooks signature with the reference library.
        wh.verify(s.body, {k.lower(): v for k, v in s.headers.items()})
        body = s.json()
        jsonschema.validate(body, schema)
        assert body["tenant"] == "acme" and body["site"] == "branch-12"
        assert s.headers["Idempotency-Key"] == s.headers["webhook-id"]
        for item in body["items"]:
            assert item["sensor_id"] == "test-01"
            assert (item["tenant"], item["site"]) == ("acme", "branch-12")
            keys.append(item["idempotency_key"])
    assert keys == [f"test-01:{d['id']}:1" for d in docs]  # creation order, stable keys


async def test_webhook_single_item_uses_idempotency_key_as_webhook_id(start_appliance, receiver):
    run = await start_appliance(
        upstream=[upstream("c", "webhook", receiver.url("/h"), receiver.pki, hmac_secret=SECRET)]
    )
    doc = incident(7, revision=4)
    await raise_incidents(run.app, [doc])
    await delivered_all(run)
    (s,) = receiver.seen
    assert s.headers["webhook-id"] == f"test-01:{doc['id']}:4"
    assert s.headers["webhook-signature"].startswith("v1,")
    assert "Authorization" not in s.headers


async def test_splunk_hec_concatenates_events_and_waits_for_indexer_ack(start_appliance, receiver):
    acks: dict[int, int] = {}
    polls: list[dict[str, Any]] = []

    def respond(s):
        if s.path == "/services/collector/event":
            ack = len(acks)
            acks[ack] = 0
            return web.json_response({"text": "Success", "code": 0, "ackId": ack})
        assert s.path == "/services/collector/ack"
        asked = s.json()["acks"]
        polls.append(s.json())
        out = {}
        for a in asked:
            acks[a] += 1
            out[str(a)] = acks[a] >= 2  # indexed on the second poll
        return web.json_response({"acks": out})

    receiver.respond = respond
    run = await start_appliance(
        upstream=[
            upstream(
                "splunk",
                "splunk_hec",
                receiver.url(),
                receiver.pki,
                token="hec-token",
                batch_size=3,
                hec_ack=True,
                hec_ack_poll_interval=0.02,
                hec_index="sem",
            )
        ]
    )
    docs = [incident(i) for i in range(1, 6)]
    await raise_incidents(run.app, docs)
    await delivered_all(run)

    posts = [s for s in receiver.seen if s.path == "/services/collector/event"]
    assert len(posts) == 2 and len(polls) == 4
    channels = {s.headers["X-Splunk-Request-Channel"] for s in receiver.seen}
    assert len(channels) == 1
    events = []
    for s in receiver.seen:
        assert s.headers["Authorization"] == "Splunk hec-token"
    for s in posts:
        text, dec, pos, batch = s.body.decode(), json.JSONDecoder(), 0, []
        while pos < len(text):  # concatenated JSON objects, as HEC documents
            obj, pos = dec.raw_decode(text, pos)
            batch.append(obj)
        events.append(batch)
    assert [len(b) for b in events] == [3, 2]
    first = events[0][0]
    assert set(first) == {"time", "host", "source", "sourcetype", "index", "event", "fields"}
    assert first["host"] == "test-01" and first["index"] == "sem"
    assert first["fields"]["idempotency_key"] == f"test-01:{docs[0]['id']}:1"
    assert first["event"]["incident"] == docs[0]
    assert polls[0] == {"acks": [0]}


async def test_splunk_hec_without_ack_id_keeps_the_batch_queued(start_appliance, receiver):
    receiver.respond = lambda s: web.json_response({"text": "Success", "code": 0})
    run = await start_appliance(
        upstream=[
            upstream("splunk", "splunk_hec", receiver.url(), receiver.pki, token="t", hec_ack=True)
        ]
    )
    await raise_incidents(run.app, [incident(1)])
    await run.wait_for(lambda: len(receiver.seen) >= 2)
    assert [r["key"] for r in await outbox_rows(run.app.store)] == [
        f"test-01:{incident(1)['id']}:1"
    ]
    assert "hec_no_ack_id" in await run.metrics()


async def test_elastic_bulk_creates_with_idempotency_key_as_id(start_appliance, receiver):
    def respond(s):
        lines = s.body.decode().splitlines()
        items = [
            {"create": {"_id": json.loads(a)["create"]["_id"], "status": 201}} for a in lines[::2]
        ]
        return web.json_response({"took": 1, "errors": False, "items": items})

    receiver.respond = respond
    run = await start_appliance(
        appliance={"tenant": "acme"},
        upstream=[
            upstream(
                "es",
                "elastic_bulk",
                receiver.url("/"),
                receiver.pki,
                token="a2V5",
                index="sem-incidents",
                batch_size=50,
            )
        ],
    )
    docs = [incident(i, severity="critical") for i in range(1, 4)]
    await raise_incidents(run.app, docs)
    await delivered_all(run)
    (s,) = receiver.seen
    assert s.path == "/_bulk"
    assert s.headers["Content-Type"] == "application/x-ndjson"
    assert s.headers["Authorization"] == "ApiKey a2V5"
    assert s.body.endswith(b"\n")
    lines = s.body.decode().splitlines()
    assert len(lines) == 6
    for i, doc in enumerate(docs):
        action, source = json.loads(lines[2 * i]), json.loads(lines[2 * i + 1])
        key = f"test-01:{doc['id']}:1"
        assert action == {"create": {"_index": "sem-incidents", "_id": key}}
        assert source["event"]["kind"] == "alert" and source["event"]["id"] == key
        assert source["event"]["severity"] == 99
        assert source["ecs"]["version"]
        assert source["@timestamp"] == "2026-11-29T10:05:00.500000Z"
        assert source["rule"] == {"id": "ssh-bruteforce", "name": "SSH brute force"}
        assert source["labels"] == {"sensor_id": "test-01", "tenant": "acme"}
        assert source["sem"]["incident"] == doc


async def test_otlp_logs_posts_one_record_per_incident_revision(start_appliance, receiver):
    run = await start_appliance(
        appliance={"site": "branch-12"},
        upstream=[upstream("otel", "otlp_logs", receiver.url(), receiver.pki, token="otel-tok")],
    )
    docs = [incident(1, severity="medium"), incident(1, revision=2, status="resolved")]
    await raise_incidents(run.app, docs)
    await delivered_all(run)
    (s,) = receiver.seen
    assert s.path == "/v1/logs" and s.headers["Content-Type"] == "application/json"
    assert s.headers["Authorization"] == "Bearer otel-tok"
    (rl,) = s.json()["resourceLogs"]
    res = {a["key"]: a["value"] for a in rl["resource"]["attributes"]}
    assert res["service.name"] == {"stringValue": "sem-appliance"}
    assert res["host.name"] == {"stringValue": "test-01"}
    assert res["sem.site"] == {"stringValue": "branch-12"}
    (scope,) = rl["scopeLogs"]
    records = scope["logRecords"]
    assert len(records) == 2
    assert records[0]["timeUnixNano"] == "1795946700500000000"
    assert records[0]["severityNumber"] == 14 and records[0]["severityText"] == "medium"
    attrs = {a["key"]: a["value"] for a in records[1]["attributes"]}
    assert attrs["sem.incident.revision"] == {"intValue": "2"}
    assert attrs["sem.idempotency_key"] == {"stringValue": f"test-01:{docs[1]['id']}:2"}
    assert json.loads(records[1]["body"]["stringValue"])["incident"] == docs[1]


async def test_upstreams_api_reports_status_backlog_and_success(start_appliance, receiver):
    run = await start_appliance(
        upstream=[
            upstream("console", "webhook", receiver.url("/h"), receiver.pki),
            upstream("off", "webhook", receiver.url("/h"), receiver.pki, enabled=False),
        ]
    )
    await raise_incidents(run.app, [incident(1)])
    await delivered_all(run)
    body = await run.get_json("/api/v1/upstreams")
    by_name = {u["name"]: u for u in body["upstreams"]}
    assert by_name["off"]["status"] == "disabled"
    up = by_name["console"]
    assert up["status"] == "ok" and up["backlog"] == 0 and up["delivered"] == 1
    assert up["consecutive_failures"] == 0 and up["last_success"] > 0
    metrics = await run.metrics()
    assert 'appliance_forward_delivered_total{upstream="console"} 1' in metrics
    assert 'appliance_forward_backlog_rows{upstream="console"} 0' in metrics
    assert 'appliance_forward_spool_max_bytes{upstream="console"}' in metrics


async def test_splunk_hec_without_indexer_ack_in_time_resends_the_batch(start_appliance, receiver):
    posts: list[Any] = []

    def respond(s):
        if s.path == "/services/collector/event":
            posts.append(s)
            return web.json_response({"text": "Success", "code": 0, "ackId": len(posts) - 1})
        acked = len(posts) >= 2  # the first batch is never indexed; its resend is
        return web.json_response({"acks": {str(a): acked for a in s.json()["acks"]}})

    receiver.respond = respond
    run = await start_appliance(
        upstream=[
            upstream(
                "splunk",
                "splunk_hec",
                receiver.url(),
                receiver.pki,
                token="t",
                hec_ack=True,
                hec_ack_poll_interval=0.02,
                hec_ack_timeout=0.1,
            )
        ]
    )
    await raise_incidents(run.app, [incident(1)])
    await delivered_all(run)
    assert len(posts) == 2 and posts[0].body == posts[1].body
    assert 'reason="hec_ack_timeout"' in await run.metrics()
