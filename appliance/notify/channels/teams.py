"""Microsoft Teams incoming webhook (a Workflows "send webhook alerts to a channel" flow, the
replacement for the Office 365 connectors retired in 2026, which took the same body): a
``message`` whose one attachment is an Adaptive Card (schema 1.4): the subject as a bold
heading, the body as a wrapped TextBlock, the acknowledgement link as an ``Action.OpenUrl``
button.

TextBlock renders a Markdown subset, so event text has its Markdown punctuation escaped. A
Teams message is limited to about 28 KB; the body is cut to 20,000 characters by default.
"""

from __future__ import annotations

from typing import Any

from appliance.notify.channels.base import Message
from appliance.notify.channels.http import HttpChannel, check_status
from appliance.notify.channels.mattermost import markdown_escape
from appliance.notify.channels.text import clean_body, clean_line, fit_escaped

BODY_LIMIT = 20000
SEVERITY_COLOR = {"critical": "Attention", "high": "Attention", "medium": "Warning"}


def payload(message: Message, limit: int = BODY_LIMIT) -> dict[str, Any]:
    card: dict[str, Any] = {
        "$schema": "http://adaptivecards.io/schemas/adaptive-card.json",
        "type": "AdaptiveCard",
        "version": "1.4",
        "body": [
            {
                "type": "TextBlock",
                "text": markdown_escape(clean_line(message.subject, 300)),
                "weight": "Bolder",
                "size": "Medium",
                "wrap": True,
                "color": SEVERITY_COLOR.get(message.severity, "Default"),
            },
            {
                "type": "TextBlock",
                "text": fit_escaped(clean_body(message.text), limit, markdown_escape),
                "wrap": True,
            },
        ],
    }
    if message.ack_url:
        card["actions"] = [
            {"type": "Action.OpenUrl", "title": "Acknowledge", "url": message.ack_url}
        ]
    return {
        "type": "message",
        "attachments": [
            {
                "contentType": "application/vnd.microsoft.card.adaptive",
                "contentUrl": None,
                "content": card,
            }
        ],
    }


class TeamsChannel(HttpChannel):
    type = "teams"

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self.url = self.endpoint()

    async def _deliver(self, message: Message) -> None:
        answer = await self.request(
            "POST", self.url, json=payload(message, self.cfg.max_length or BODY_LIMIT)
        )
        check_status(answer, "teams")
