"""Sans-I/O pieces of forwarding: status classification, backoff, signing, schema, config."""

from __future__ import annotations

import base64
import json
import random
from datetime import UTC, datetime
from pathlib import Path

import jsonschema
import pytest
from standardwebhooks import Webhook

from appliance.config import ConfigError, parse_config
from appliance.forward.document import Identity, build_document, drop_class, idempotency_key
from appliance.forward.formats.base import (
    FormatContext,
    OutboxItem,
    Outcome,
    classify_status,
    parse_retry_after,
)
from appliance.forward.formats.elastic_bulk import ElasticBulkFormat
from appliance.forward.formats.otlp_logs import OtlpLogsFormat
from appliance.forward.formats.splunk_hec import SplunkHecFormat
from appliance.forward.formats.webhook import WebhookFormat
from appliance.forward.transport import backoff_delay, full_jitter, webhook_key, webhook_signature
from tests.forwarding import incident

SCHEMA_DIR = Path(__file__).parents[1] / "appliance" / "forward" / "schema"


def item(n: int, revision: int = 1) -> OutboxItem:
    doc = build_document(incident(n, revision), Identity("test-01", "acme", "b12"))
    return OutboxItem(n, doc["idempotency_key"], doc, 100)


def ctx(type_: str, **extra: object) -> FormatContext:
    cfg = parse_config(
        {
            "appliance": {"allow_empty": True},
            "upstream": [
                {"name": "u", "type": type_, "url": "https://h.example:8088", "token": "x", **extra}
            ],
        }
    ).upstream[0]
    return FormatContext(cfg, Identity("test-01", "acme", "b12"), "0.1.0")


@pytest.mark.parametrize(
    ("status", "outcome"),
    [
        (200, Outcome.DELIVERED),
        (201, Outcome.DELIVERED),
        (202, Outcome.DELIVERED),
        (409, Outcome.DUPLICATE),
        (408, Outcome.RETRY),
        (429, Outcome.RETRY),
        (500, Outcome.RETRY),
        (503, Outcome.RETRY),
        (401, Outcome.RETRY),  # a wrong token is the link's fault, not the item's
        (403, Outcome.RETRY),
        (400, Outcome.REJECT),
        (413, Outcome.REJECT),
        (422, Outcome.REJECT),
        (301, Outcome.RETRY),
    ],
)
def test_status_classification(status: int, outcome: Outcome) -> None:
    assert classify_status(status) is outcome


def test_retry_after_seconds_and_http_date() -> None:
    assert parse_retry_after("120", 0.0) == 120.0
    now = 1_795_946_700.0  # 2026-11-29T10:05:00Z
    assert parse_retry_after("Sun, 29 Nov 2026 10:05:30 GMT", now) == 30.0
    assert parse_retry_after("Sun, 29 Nov 2026 10:00:00 GMT", now) == 0.0
    assert parse_retry_after("soon", now) is None
    assert parse_retry_after(None, now) is None


def test_full_jitter_stays_under_the_capped_exponential() -> None:
    rand = random.Random(7)
    for failures in range(1, 40):
        ceiling = min(30.0, 0.5 * 2 ** (failures - 1))
        for _ in range(50):
            assert 0.0 <= full_jitter(failures, 0.5, 30.0, rand) <= ceiling
    assert full_jitter(0, 0.5, 30.0, rand) == 0.0


def test_retry_after_wins_over_backoff_and_is_bounded() -> None:
    rand = random.Random(1)
    kw = {"base": 1.0, "cap": 5.0, "retry_after_max": 100.0, "rand": rand}
    assert backoff_delay(3, 42.0, **kw) == 42.0
    assert backoff_delay(3, 1e6, **kw) == 100.0
    assert 0 <= backoff_delay(3, None, **kw) <= 4.0


def test_signature_matches_the_reference_library() -> None:
    secret = "whsec_" + base64.b64encode(b"k" * 24).decode()
    body = '{"a":1}'
    when = datetime.fromtimestamp(1_795_946_700, UTC)
    ours = webhook_signature(webhook_key(secret), "msg_1", 1_795_946_700, body.encode())
    assert ours == Webhook(secret).sign("msg_1", when, body)


def test_webhook_key_rejects_secrets_that_are_not_whsec_base64() -> None:
    with pytest.raises(ValueError):
        webhook_key("plain-secret")
    with pytest.raises(ValueError):
        webhook_key("whsec_***not base64***")


def test_idempotency_key_is_stable_and_header_safe() -> None:
    assert idempotency_key("edge-01", "abc", 3) == "edge-01:abc:3"
    assert idempotency_key("edge-01", "abc", 3) == idempotency_key("edge-01", "abc", 3)
    unsafe = idempotency_key("edge-01", "a\r\nInjected: 1", 1)
    assert "\n" not in unsafe and unsafe.startswith("edge-01:") and unsafe.endswith(":1")


def test_drop_classes_put_open_critical_last() -> None:
    order = [
        drop_class(incident(1, severity="critical", status="resolved")),
        drop_class(incident(1, severity="low")),
        drop_class(incident(1, severity="medium")),
        drop_class(incident(1, severity="high", status="acknowledged")),
        drop_class(incident(1, severity="critical")),
    ]
    assert order == sorted(order) and len(set(order)) == 5


def test_schema_accepts_the_example_and_rejects_a_document_without_key() -> None:
    schema = json.loads((SCHEMA_DIR / "webhook-v1.schema.json").read_text())
    example = json.loads((SCHEMA_DIR / "webhook-v1.example.json").read_text())
    jsonschema.Draft202012Validator.check_schema(schema)
    jsonschema.validate(example, schema)
    del example["items"][0]["idempotency_key"]
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(example, schema)


def test_webhook_batch_is_deterministic_for_the_same_items() -> None:
    fmt = WebhookFormat(ctx("webhook"))
    a, b = fmt.request([item(1), item(2)]), fmt.request([item(1), item(2)])
    assert a.body == b.body and a.message_id == b.message_id
    assert a.message_id != fmt.request([item(1), item(3)]).message_id
    assert fmt.request([item(5)]).message_id == item(5).key


def test_splunk_url_accepts_base_or_full_endpoint() -> None:
    assert SplunkHecFormat(ctx("splunk_hec")).event_url == (
        "https://h.example:8088/services/collector/event"
    )
    full = ctx("splunk_hec", url="https://h.example:8088/services/collector/event")
    assert SplunkHecFormat(full).ack_url == "https://h.example:8088/services/collector/ack"
    assert SplunkHecFormat.acked(b'{"acks":{"0":true,"1":false,"7":true}}') == {0, 7}
    assert SplunkHecFormat.acked(b"garbage") == set()


def test_bulk_answer_with_wrong_item_count_retries_everything() -> None:
    fmt = ElasticBulkFormat(ctx("elastic_bulk"))
    items = [item(1), item(2)]
    v = fmt.verdict(items, 200, {}, b'{"errors":false,"items":[{"create":{"status":201}}]}', 0.0)
    assert set(v.outcomes.values()) == {Outcome.RETRY}


def test_otlp_partial_success_is_final_and_reported() -> None:
    fmt = OtlpLogsFormat(ctx("otlp_logs"))
    body = b'{"partialSuccess":{"rejectedLogRecords":"1","errorMessage":"too big"}}'
    v = fmt.verdict([item(1)], 200, {}, body, 0.0)
    assert v.outcomes == {1: Outcome.DELIVERED} and v.reason == "otlp_partial_rejected"


@pytest.mark.parametrize(
    ("table", "error"),
    [
        ({"name": "u", "url": "http://h/x"}, "upstream[0].url: must be an https:// URL"),
        ({"name": "u", "url": "https://h/x", "token": "a", "token_file": "f"}, "give one of"),
        ({"name": "u", "url": "https://h/x", "hmac_secret": "plain"}, "must start with whsec_"),
        ({"name": "u", "url": "https://h/x", "client_cert": "c.pem"}, "go together"),
        ({"name": "u", "url": "https://h/x", "type": "splunk_hec"}, "needs a HEC token"),
        ({"name": "u", "url": "https://h/x", "type": "kafka"}, "upstream[0].type: must be one"),
        ({"url": "https://h/x"}, "upstream[0].name"),
        ({"name": "u", "url": "https://me:pw@h/x"}, "must not carry credentials"),
    ],
)
def test_upstream_config_errors(table: dict[str, object], error: str) -> None:
    with pytest.raises(ConfigError) as exc:
        parse_config({"upstream": [table]})
    assert any(error in e for e in exc.value.errors), exc.value.errors


def test_duplicate_upstream_names_are_an_error() -> None:
    up = {"name": "u", "url": "https://h/x"}
    with pytest.raises(ConfigError, match="duplicate upstream name"):
        parse_config({"upstream": [up, up]})


def test_secrets_are_not_in_the_config_repr() -> None:
    up = {"name": "u", "url": "https://h/x", "token": "s3cret-token"}
    cfg = parse_config({"appliance": {"allow_empty": True}, "upstream": [up]})
    assert "s3cret-token" not in repr(cfg)


def test_every_upstream_key_is_documented_in_the_example_config() -> None:
    import dataclasses
    import re

    from appliance.config import EXAMPLE_CONFIG, UpstreamSection

    text = EXAMPLE_CONFIG.read_text()
    section = text[text.index("# [[upstream]]") :]
    for f in dataclasses.fields(UpstreamSection):
        assert re.search(rf"(?<![\w.]){f.name}(?![\w.])", section), f.name
