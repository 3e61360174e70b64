"""``webhook``: the native JSON batch, versioned, signed per Standard Webhooks when configured.

Body: ``{"envelope_version": 1, "kind": "incident_batch", "sensor_id", "tenant", "site",
"count", "items": [<document>...]}`` (schema ``appliance/forward/schema/webhook-v1.schema.json``).
The body and its ``webhook-id`` are deterministic in the items sent, so a retry of the same
batch is byte-identical apart from the signature timestamp. A one-item batch uses the item's
idempotency key as ``webhook-id``; a larger batch uses a digest of its keys, and each item
still carries its own ``idempotency_key`` for the receiver to dedupe with.
"""

from __future__ import annotations

import hashlib

from appliance.forward.document import ENVELOPE_VERSION
from appliance.forward.formats.base import (
    FormatContext,
    HttpRequest,
    OutboxItem,
    Verdict,
    dumps,
    is_event,
    whole_batch,
)


def batch_id(items: list[OutboxItem]) -> str:
    if len(items) == 1:
        return items[0].key
    digest = hashlib.sha256("\n".join(it.key for it in items).encode()).hexdigest()[:32]
    return f"batch_{digest}"


class WebhookFormat:
    name = "webhook"

    def __init__(self, ctx: FormatContext) -> None:
        self.ctx = ctx

    def request(self, items: list[OutboxItem]) -> HttpRequest:
        ident = self.ctx.identity
        body = {
            "envelope_version": ENVELOPE_VERSION,
            "kind": "event_batch" if items and is_event(items[0].document) else "incident_batch",
            "sensor_id": ident.sensor_id,
            "tenant": ident.tenant,
            "site": ident.site,
            "count": len(items),
            "items": [it.document for it in items],
        }
        msg_id = batch_id(items)
        return HttpRequest(
            url=self.ctx.config.url,
            body=dumps(body),
            headers={"Content-Type": "application/json", "Idempotency-Key": msg_id},
            message_id=msg_id,
        )

    def verdict(
        self, items: list[OutboxItem], status: int, headers: dict[str, str], body: bytes, now: float
    ) -> Verdict:
        return whole_batch(items, status, headers, now)
