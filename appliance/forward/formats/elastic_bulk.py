"""``elastic_bulk``: Elasticsearch/OpenSearch ``POST /_bulk`` with ``create`` and ``_id``.

The ``_id`` is the idempotency key, so a re-send after a lost answer fails per item with 409,
which counts as delivered. ``_bulk`` answers 200 even when items failed: each
``items[i].create.status`` decides that item alone, so only the failed ones are retried.
Documents are ECS-shaped (``event.kind: alert``) with the native envelope under ``sem``.
"""

from __future__ import annotations

import json
from typing import Any

from appliance.forward.document import SEVERITIES, parse_time
from appliance.forward.formats.base import (
    FormatContext,
    HttpRequest,
    OutboxItem,
    Outcome,
    Verdict,
    classify_status,
    dumps,
    endpoint,
    is_event,
    parse_retry_after,
    whole_batch,
)

ECS_VERSION = "8.11.0"
# Elastic Security's risk-score scale for low/medium/high/critical alerts.
SEVERITY_SCORE = {"informational": 1, "low": 21, "medium": 47, "high": 73, "critical": 99}


def iso(ts: float) -> str:
    from datetime import UTC, datetime

    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def to_ecs(doc: dict[str, Any], key: str) -> dict[str, Any]:
    incident = doc.get("incident", {})
    rule = incident.get("rule") or {}
    severity = incident.get("severity")
    updated = parse_time(incident.get("updated"), 0.0)
    out: dict[str, Any] = {
        "@timestamp": iso(updated),
        "ecs": {"version": ECS_VERSION},
        "message": incident.get("title", ""),
        "event": {
            "kind": "alert",
            "id": key,
            "dataset": "sem.incident",
            "module": "sem",
            "severity": SEVERITY_SCORE.get(severity, 1) if severity in SEVERITIES else 1,
            "start": incident.get("first_seen"),
            "end": incident.get("last_seen"),
            "created": incident.get("created"),
        },
        "rule": {k: rule[k] for k in ("id", "name") if k in rule},
        "observer": {"name": doc.get("sensor_id"), "type": "sem-appliance"},
        "labels": {"sensor_id": doc.get("sensor_id")},
        "sem": doc,
    }
    if "title" in rule and "name" not in rule:
        out["rule"]["name"] = rule["title"]
    if rule.get("tags"):
        out["tags"] = list(rule["tags"])
    for name in ("tenant", "site"):
        if doc.get(name):
            out["labels"][name] = doc[name]
    return out


def event_source(doc: dict[str, Any]) -> dict[str, Any]:
    """A raw event is already ECS: add the sensor identity as labels."""
    source = dict(doc.get("event", {}))
    labels = dict(source.get("labels") or {})
    labels["sensor_id"] = doc.get("sensor_id")
    for name in ("tenant", "site"):
        if doc.get(name):
            labels[name] = doc[name]
    source["labels"] = labels
    return source


class ElasticBulkFormat:
    name = "elastic_bulk"

    def __init__(self, ctx: FormatContext) -> None:
        self.ctx = ctx
        self.url = endpoint(ctx.config.url, "/_bulk")

    def request(self, items: list[OutboxItem]) -> HttpRequest:
        cfg = self.ctx.config
        lines = []
        for it in items:
            if is_event(it.document):
                index, source = cfg.events_index, event_source(it.document)
            else:
                index, source = cfg.index, to_ecs(it.document, it.key)
            lines.append(dumps({"create": {"_index": index, "_id": it.key}}))
            lines.append(dumps(source))
        return HttpRequest(
            url=self.url,
            body=b"\n".join(lines) + b"\n",
            headers={"Content-Type": "application/x-ndjson"},
        )

    def verdict(
        self, items: list[OutboxItem], status: int, headers: dict[str, str], body: bytes, now: float
    ) -> Verdict:
        if status != 200:
            return whole_batch(items, status, headers, now)
        try:
            answer = json.loads(body)
            results = answer["items"]
        except (ValueError, KeyError, TypeError):
            return Verdict(
                {it.id: Outcome.RETRY for it in items},
                reason="bulk_unreadable",
                detail="200 without a readable items list",
            )
        if not isinstance(results, list) or len(results) != len(items):
            return Verdict(
                {it.id: Outcome.RETRY for it in items},
                reason="bulk_item_count",
                detail="items list does not match the request",
            )
        outcomes: dict[int, Outcome] = {}
        reason, detail = "ok", ""
        for it, res in zip(items, results, strict=True):
            op = res.get("create", res.get("index", {})) if isinstance(res, dict) else {}
            code = op.get("status", 0) if isinstance(op, dict) else 0
            outcome = classify_status(int(code)) if isinstance(code, int) else Outcome.RETRY
            outcomes[it.id] = outcome
            if outcome in (Outcome.RETRY, Outcome.REJECT) and reason == "ok":
                reason = f"item_{code}"
                err = op.get("error") if isinstance(op, dict) else None
                etype = err.get("type") if isinstance(err, dict) else err
                detail = f"item status {code}: {str(etype)[:120]}"
        return Verdict(
            outcomes,
            reason=reason,
            retry_after=parse_retry_after(headers.get("Retry-After"), now),
            detail=detail,
            per_item=True,
        )
