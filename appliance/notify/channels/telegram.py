"""Telegram Bot API: ``POST {api_url}/bot{token}/sendMessage`` per chat, ``parse_mode`` HTML.

In HTML mode Telegram parses ``<``, ``>`` and ``&``, so event text is entity-escaped and the
only tags are ours (``<b>`` for the subject, ``<a>`` for the acknowledgement link). A message
holds 4,096 characters after entities are parsed; the plain text is cut to that before
escaping. Telegram answers ``{"ok": false, "error_code", "description"}`` on failure and
``parameters.retry_after`` on 429, which wins over the header.
"""

from __future__ import annotations

import html
import json
from typing import Any

from appliance.notify.channels.base import DeliveryError, Message
from appliance.notify.channels.http import HttpChannel, check_status
from appliance.notify.channels.text import clean_body, clean_line

MESSAGE_LIMIT = 4096


def render(message: Message, limit: int = MESSAGE_LIMIT) -> str:
    subject = clean_line(message.subject, 300)
    link = "Acknowledge" if message.ack_url else ""
    room = max(limit - len(subject) - len(link) - 4, 1)
    parts = [f"<b>{html.escape(subject, quote=False)}</b>"]
    parts.append(html.escape(clean_body(message.text, room), quote=False))
    if message.ack_url:
        parts.append(f'<a href="{html.escape(message.ack_url)}">{link}</a>')
    return "\n\n".join(parts)


class TelegramChannel(HttpChannel):
    type = "telegram"

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        token = self.secret("bot_token")
        self.url = f"{self.cfg.api_url.rstrip('/')}/bot{token}/sendMessage"

    async def _deliver(self, message: Message) -> None:
        text = render(message, min(self.cfg.max_length or MESSAGE_LIMIT, MESSAGE_LIMIT))
        for chat in self.pending(message, self.recipients(message)):
            body = {
                "chat_id": chat,
                "text": text,
                "parse_mode": "HTML",
                "link_preview_options": {"is_disabled": True},
            }
            answer = await self.request("POST", self.url, json=body)
            try:
                check_status(answer, f"telegram chat {chat}")
            except DeliveryError as exc:
                wait = _retry_after(answer.body)
                if wait is not None:
                    exc.retry_after = wait
                raise
            if _ok(answer.body) is False:
                raise DeliveryError(f"telegram chat {chat}: {answer.text()}", retryable=False)
            self.delivered(message, chat)


def _parsed(body: bytes) -> dict[str, Any] | None:
    try:
        doc = json.loads(body)
    except ValueError:
        return None
    return doc if isinstance(doc, dict) else None


def _ok(body: bytes) -> bool | None:
    doc = _parsed(body)
    return None if doc is None else bool(doc.get("ok"))


def _retry_after(body: bytes) -> float | None:
    doc = _parsed(body) or {}
    params = doc.get("parameters")
    wait = params.get("retry_after") if isinstance(params, dict) else None
    return float(wait) if isinstance(wait, int | float) and not isinstance(wait, bool) else None
