"""``splunk_hec``: HTTP Event Collector, ``POST /services/collector/event``.

Batching is several JSON event objects concatenated in one body, as Splunk documents
(``{"event": ...}{"event": ...}``). HEC does not dedupe, so the idempotency key travels in
``fields.idempotency_key`` (an indexed field) for search-time dedupe. A 200 only means "looks
valid": with ``hec_ack = true`` the sender sends ``X-Splunk-Request-Channel``, keeps the
returned ``ackId`` and marks the batch delivered only when ``/services/collector/ack`` says
it was indexed.
"""

from __future__ import annotations

import json

from appliance.forward.formats.base import (
    FormatContext,
    HttpRequest,
    OutboxItem,
    Outcome,
    Verdict,
    doc_time,
    dumps,
    endpoint,
    is_event,
    whole_batch,
)

EVENT_PATH = "/services/collector/event"
ACK_PATH = "/services/collector/ack"


class SplunkHecFormat:
    name = "splunk_hec"

    def __init__(self, ctx: FormatContext) -> None:
        self.ctx = ctx
        base = ctx.config.url.rstrip("/")
        if base.endswith(EVENT_PATH):
            base = base[: -len(EVENT_PATH)]
        self.event_url = endpoint(base, EVENT_PATH)
        self.ack_url = endpoint(base, ACK_PATH)

    def event(self, item: OutboxItem) -> dict[str, object]:
        cfg = self.ctx.config
        doc = item.document
        ev: dict[str, object] = {
            "time": round(doc_time(doc), 3),
            "host": doc.get("sensor_id", self.ctx.identity.sensor_id),
            "source": cfg.hec_source,
            "sourcetype": cfg.hec_event_sourcetype if is_event(doc) else cfg.hec_sourcetype,
        }
        if cfg.hec_index:
            ev["index"] = cfg.hec_index
        ev["event"] = doc
        fields = {"idempotency_key": item.key, "sensor_id": str(doc.get("sensor_id", ""))}
        for name in ("tenant", "site"):
            if doc.get(name):
                fields[name] = str(doc[name])
        ev["fields"] = fields
        return ev

    def request(self, items: list[OutboxItem]) -> HttpRequest:
        body = b"".join(dumps(self.event(it)) for it in items)
        return HttpRequest(
            url=self.event_url, body=body, headers={"Content-Type": "application/json"}
        )

    def verdict(
        self, items: list[OutboxItem], status: int, headers: dict[str, str], body: bytes, now: float
    ) -> Verdict:
        v = whole_batch(items, status, headers, now)
        if status == 200 and self.ctx.config.hec_ack:
            try:
                ack_id = json.loads(body).get("ackId")
            except (ValueError, AttributeError):
                ack_id = None
            if not isinstance(ack_id, int):
                # Acks enabled here but not on the token: nothing proves indexing, so retry
                # and say why (the operator must enable indexer acknowledgement on the token).
                return Verdict(
                    {it.id: Outcome.RETRY for it in items},
                    reason="hec_no_ack_id",
                    detail="HEC answered without ackId (enable indexer ack on the token)",
                )
            v.ack_id = ack_id
        return v

    def ack_request(self, ack_ids: list[int]) -> HttpRequest:
        return HttpRequest(
            url=self.ack_url,
            body=dumps({"acks": ack_ids}),
            headers={"Content-Type": "application/json"},
        )

    @staticmethod
    def acked(body: bytes) -> set[int]:
        """Ack ids the indexer confirmed, from ``{"acks": {"0": true, "1": false}}``."""
        try:
            acks = json.loads(body).get("acks", {})
        except (ValueError, AttributeError):
            return set()
        if not isinstance(acks, dict):
            return set()
        return {int(k) for k, v in acks.items() if v is True and str(k).isdigit()}
