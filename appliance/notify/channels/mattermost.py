"""Mattermost incoming webhook: one Markdown ``text``.

Markdown punctuation from event data is backslash-escaped so a log line cannot turn into a
link, an image or a heading; the subject is our heading and the acknowledgement link our
only link. Mattermost refuses posts over 16,383 characters.
"""

from __future__ import annotations

import re
from typing import Any

from appliance.notify.channels.base import Message
from appliance.notify.channels.http import HttpChannel, check_status
from appliance.notify.channels.text import clean_body, clean_line, fit_escaped

POST_LIMIT = 16383
_MARKDOWN = re.compile(r"([\\`*_{}\[\]()<>#+\-.!|~@:])")


def markdown_escape(text: str) -> str:
    return _MARKDOWN.sub(r"\\\1", text)


def payload(message: Message, limit: int = POST_LIMIT) -> dict[str, Any]:
    head = "#### " + markdown_escape(clean_line(message.subject, 300))
    tail = f"\n\n[Acknowledge]({message.ack_url})" if message.ack_url else ""
    room = max(limit - len(head) - len(tail) - 2, 1)
    body = fit_escaped(clean_body(message.text), room, markdown_escape)
    return {"text": f"{head}\n\n{body}{tail}"}


class MattermostChannel(HttpChannel):
    type = "mattermost"

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self.url = self.endpoint()

    async def _deliver(self, message: Message) -> None:
        limit = min(self.cfg.max_length or POST_LIMIT, POST_LIMIT)
        answer = await self.request("POST", self.url, json=payload(message, limit))
        check_status(answer, "mattermost")
