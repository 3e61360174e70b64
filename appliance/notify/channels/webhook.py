"""Generic JSON webhook: the notification as JSON, signed like ``[[upstream]]`` webhooks.

With ``hmac_secret`` set, each request carries the Standard Webhooks headers
(``webhook-id``, ``webhook-timestamp``, ``webhook-signature``) from the signing code in
:mod:`appliance.forward.transport`. The ``webhook-id`` is derived from the content, so the
engine's retries of one notification carry the same id and a receiver can drop repeats.
"""

from __future__ import annotations

import hashlib
import time
from typing import Any

import orjson

from appliance.config import ConfigError
from appliance.forward.transport import webhook_key, webhook_signature
from appliance.notify.channels.base import Message
from appliance.notify.channels.http import HttpChannel, check_status
from appliance.notify.channels.text import clean_body, clean_line

BODY_LIMIT = 64 * 1024


def document(message: Message, limit: int = BODY_LIMIT) -> dict[str, Any]:
    return {
        "type": "notification",
        "subject": clean_line(message.subject, 1000),
        "text": clean_body(message.text, limit),
        "short": clean_body(message.short, limit),
        "severity": message.severity,
        "incident_ids": list(message.incident_ids),
        "ack_url": message.ack_url,
        "extra": dict(message.extra),
    }


def message_id(body: bytes) -> str:
    return "msg_" + hashlib.sha256(body).hexdigest()[:32]


class WebhookChannel(HttpChannel):
    type = "webhook"

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self.url = self.endpoint()
        secret = self.secret("hmac_secret")
        try:
            self.key = webhook_key(secret) if secret else b""
        except ValueError as exc:
            raise ConfigError([f"notify channel {self.name}: hmac_secret: {exc}"]) from None

    async def _deliver(self, message: Message) -> None:
        body = orjson.dumps(document(message, self.cfg.max_length or BODY_LIMIT))
        headers = {"Content-Type": "application/json"}
        if self.key:
            msg_id = message_id(body)
            ts = int(time.time())
            headers["webhook-id"] = msg_id
            headers["webhook-timestamp"] = str(ts)
            headers["webhook-signature"] = webhook_signature(self.key, msg_id, ts, body)
        answer = await self.request("POST", self.url, data=body, headers=headers)
        check_status(answer, "webhook")
