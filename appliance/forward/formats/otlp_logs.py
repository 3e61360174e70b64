"""``otlp_logs``: OTLP/HTTP with the JSON encoding, ``POST /v1/logs``.

One ``resourceLogs`` per request (the sensor is the resource), one ``logRecord`` per incident
revision. Following the OTLP/JSON mapping, 64-bit integers (``timeUnixNano``, ``intValue``) are
decimal strings. The body is the native envelope as a JSON string, so gateways (OpenTelemetry
Collector, Vector) can forward it untouched; the fields consoles filter on are attributes.
A 200 with ``partialSuccess.rejectedLogRecords`` is final per the OTLP spec (the receiver will
not take them on a retry), so it counts as delivered and the rejected count is reported.
"""

from __future__ import annotations

import json
from typing import Any

from appliance.forward.document import parse_time
from appliance.forward.formats.base import (
    FormatContext,
    HttpRequest,
    OutboxItem,
    Verdict,
    doc_time,
    dumps,
    endpoint,
    is_event,
    whole_batch,
)

# OpenTelemetry log data model SeverityNumber: INFO=9, WARN=13, WARN2=14, ERROR=17, FATAL=21.
# syslog severity (0 emergency .. 7 debug) to SeverityNumber.
SYSLOG_SEVERITY_NUMBER = {0: 21, 1: 19, 2: 18, 3: 17, 4: 13, 5: 10, 6: 9, 7: 5}
SEVERITY_NUMBER = {"informational": 9, "low": 13, "medium": 14, "high": 17, "critical": 21}


def _str(key: str, value: str) -> dict[str, Any]:
    return {"key": key, "value": {"stringValue": value}}


def _int(key: str, value: int) -> dict[str, Any]:
    return {"key": key, "value": {"intValue": str(int(value))}}


class OtlpLogsFormat:
    name = "otlp_logs"

    def __init__(self, ctx: FormatContext) -> None:
        self.ctx = ctx
        self.url = endpoint(ctx.config.url, "/v1/logs")

    def event_record(self, item: OutboxItem) -> dict[str, Any]:
        doc = item.document
        ev = doc.get("event", {})
        syslog_sev = ev.get("log", {}).get("syslog", {}).get("severity", {})
        code = syslog_sev.get("code") if isinstance(syslog_sev, dict) else None
        ts = str(int(doc_time(doc) * 1e9))
        return {
            "timeUnixNano": ts,
            "observedTimeUnixNano": ts,
            "severityNumber": SYSLOG_SEVERITY_NUMBER.get(code, 9) if isinstance(code, int) else 9,
            "severityText": str(syslog_sev.get("name", "")) if isinstance(syslog_sev, dict) else "",
            "body": {"stringValue": json.dumps(ev, separators=(",", ":"), ensure_ascii=False)},
            "attributes": [
                _str("sem.idempotency_key", item.key),
                _str("event.module", str(ev.get("event", {}).get("module", ""))),
            ],
        }

    def record(self, item: OutboxItem) -> dict[str, Any]:
        doc = item.document
        if is_event(doc):
            return self.event_record(item)
        incident = doc.get("incident", {})
        rule = incident.get("rule") or {}
        severity = str(incident.get("severity", ""))
        updated = parse_time(incident.get("updated"), 0.0)
        attrs = [
            _str("sem.idempotency_key", item.key),
            _str("sem.incident.id", str(incident.get("id", ""))),
            _int("sem.incident.revision", int(incident.get("revision", 0))),
            _str("sem.incident.status", str(incident.get("status", ""))),
            _str("sem.incident.title", str(incident.get("title", ""))),
            _str("rule.id", str(rule.get("id", ""))),
            _str("event.kind", "alert"),
        ]
        return {
            "timeUnixNano": str(int(updated * 1e9)),
            "observedTimeUnixNano": str(int(updated * 1e9)),
            "severityNumber": SEVERITY_NUMBER.get(severity, 9),
            "severityText": severity or "informational",
            "body": {"stringValue": json.dumps(doc, separators=(",", ":"), ensure_ascii=False)},
            "attributes": attrs,
        }

    def request(self, items: list[OutboxItem]) -> HttpRequest:
        ident = self.ctx.identity
        resource = [
            _str("service.name", self.ctx.config.service_name),
            _str("service.version", self.ctx.version),
            _str("host.name", ident.sensor_id),
            _str("sem.sensor_id", ident.sensor_id),
        ]
        if ident.tenant:
            resource.append(_str("sem.tenant", ident.tenant))
        if ident.site:
            resource.append(_str("sem.site", ident.site))
        body = {
            "resourceLogs": [
                {
                    "resource": {"attributes": resource},
                    "scopeLogs": [
                        {
                            "scope": {"name": "appliance.forward", "version": self.ctx.version},
                            "logRecords": [self.record(it) for it in items],
                        }
                    ],
                }
            ]
        }
        return HttpRequest(
            url=self.url, body=dumps(body), headers={"Content-Type": "application/json"}
        )

    def verdict(
        self, items: list[OutboxItem], status: int, headers: dict[str, str], body: bytes, now: float
    ) -> Verdict:
        v = whole_batch(items, status, headers, now)
        if 200 <= status < 300 and body:
            try:
                partial = json.loads(body).get("partialSuccess") or {}
                rejected = int(partial.get("rejectedLogRecords", 0) or 0)
            except (ValueError, AttributeError, TypeError):
                rejected = 0
            if rejected:
                v.discarded = rejected
                v.reason = "otlp_partial_rejected"
                v.detail = f"{rejected} log records rejected: {partial.get('errorMessage', '')}"
        return v
