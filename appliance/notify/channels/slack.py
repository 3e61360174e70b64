"""Slack incoming webhook: ``text`` (the notification fallback) plus Block Kit blocks.

Slack reads ``&``, ``<`` and ``>`` in mrkdwn as markup (``<url|label>`` is a link,
``<!channel>`` pings everyone), so event text is escaped to entities; the only link is our
own acknowledgement URL. Limits: a header block holds 150 characters, a section 3,000.
"""

from __future__ import annotations

from typing import Any

from appliance.notify.channels.base import Message
from appliance.notify.channels.http import HttpChannel, check_status
from appliance.notify.channels.text import clean_body, clean_line, fit_escaped

HEADER_LIMIT = 150
SECTION_LIMIT = 3000


def mrkdwn_escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def payload(message: Message, limit: int = SECTION_LIMIT) -> dict[str, Any]:
    subject = clean_line(message.subject, HEADER_LIMIT)
    body = fit_escaped(clean_body(message.text), min(limit, SECTION_LIMIT), mrkdwn_escape)
    blocks: list[dict[str, Any]] = [
        {"type": "header", "text": {"type": "plain_text", "text": subject}},
        {"type": "section", "text": {"type": "mrkdwn", "text": body or " "}},
    ]
    if message.ack_url:
        blocks.append(
            {
                "type": "actions",
                "elements": [
                    {
                        "type": "button",
                        "text": {"type": "plain_text", "text": "Acknowledge"},
                        "url": message.ack_url,
                        "style": "primary",
                    }
                ],
            }
        )
    return {"text": mrkdwn_escape(subject), "blocks": blocks}


class SlackChannel(HttpChannel):
    type = "slack"

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self.url = self.endpoint()

    async def _deliver(self, message: Message) -> None:
        answer = await self.request(
            "POST", self.url, json=payload(message, self.cfg.max_length or SECTION_LIMIT)
        )
        check_status(answer, "slack")
