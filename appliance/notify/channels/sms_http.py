"""SMS through a generic HTTP gateway, described by a request template and a success test.

Placeholders ``{to}``, ``{text}``, ``{subject}``, ``{severity}``, ``{from}`` and ``{token}``
(the channel's secret) are replaced in ``url``, ``headers`` and ``body``; every other brace
is left alone, so a JSON body template is written as plain JSON. Each value is escaped for
where it lands: percent-encoded in the URL and in a form body, JSON-string-escaped in a JSON
body (write the placeholder inside quotes: ``"text": "{text}"``), one clean line in a header,
control characters escaped in a plain-text body. One request per recipient.

Success is every configured test at once: the status in ``success_status`` (default any 2xx),
``success_contains`` in the answer, ``success_field`` (a dotted path into a JSON answer)
equal to ``success_value`` (or just truthy). A failing status follows the shared HTTP rules
(5xx/408/429 retry, other 4xx give up); a 2xx whose body says "failed" is retried, since a
gateway uses that both for "out of credit" and "busy".
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import Any
from urllib.parse import quote, quote_plus

from appliance.notify.channels.base import DeliveryError, Message
from appliance.notify.channels.http import Answer, HttpChannel, check_status, retry_after
from appliance.notify.channels.sms_twilio import sms_text
from appliance.notify.channels.text import clean_body, clean_line

PLACEHOLDERS = ("to", "text", "subject", "severity", "from", "token")
_PLACEHOLDER = re.compile(r"\{(" + "|".join(PLACEHOLDERS) + r")\}")
CONTENT_TYPES = {
    "form": "application/x-www-form-urlencoded",
    "json": "application/json",
    "text": "text/plain; charset=utf-8",
}


def _json_string(value: str) -> str:
    return json.dumps(value, ensure_ascii=False)[1:-1]


ESCAPE: dict[str, Callable[[str], str]] = {
    "form": quote_plus,
    "json": _json_string,
    "text": clean_body,
    "url": lambda v: quote(v, safe=""),
    "header": lambda v: clean_line(v, 1000),
}


def render(template: str, values: dict[str, str], escape: Callable[[str], str]) -> str:
    """``template`` with each known placeholder replaced by its escaped value."""
    return _PLACEHOLDER.sub(lambda m: escape(values[m.group(1)]), template)


def json_field(doc: Any, path: str) -> Any:
    for part in path.split("."):
        if isinstance(doc, dict) and part in doc:
            doc = doc[part]
        elif isinstance(doc, list) and part.isdigit() and int(part) < len(doc):
            doc = doc[int(part)]
        else:
            return None
    return doc


def _as_text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


class HttpSmsChannel(HttpChannel):
    type = "sms_http"

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self.token = self.secret("token")
        self.url_template = self.endpoint()

    def request_for(self, message: Message, to: str) -> tuple[str, dict[str, str], bytes | None]:
        cfg = self.cfg
        values = {
            "to": to,
            "text": sms_text(message, cfg.max_segments, cfg.max_length),
            "subject": clean_line(message.subject, 200),
            "severity": message.severity,
            "from": cfg.from_,
            "token": self.token,
        }
        url = render(self.url_template, values, ESCAPE["url"])
        headers = {k: render(v, values, ESCAPE["header"]) for k, v in cfg.headers.items()}
        body = None
        if cfg.method != "GET":
            headers.setdefault("Content-Type", CONTENT_TYPES[cfg.content_type])
            body = render(cfg.body, values, ESCAPE[cfg.content_type]).encode()
        return url, headers, body

    def check(self, answer: Answer, to: str) -> None:
        cfg = self.cfg
        what = f"sms gateway to {to}"
        if not cfg.success_status:
            check_status(answer, what)
        elif answer.status not in cfg.success_status:
            status = answer.status
            raise DeliveryError(
                f"{what}: HTTP {status}: {answer.text()}",
                retryable=status in (408, 429) or status >= 500 or status < 400,
                retry_after=retry_after(answer.headers.get("Retry-After")),
            )
        text = answer.body.decode("utf-8", "replace")
        if cfg.success_contains and cfg.success_contains not in text:
            raise DeliveryError(f"{what}: answer lacks {cfg.success_contains!r}: {answer.text()}")
        if cfg.success_field:
            try:
                value = json_field(json.loads(text), cfg.success_field)
            except ValueError:
                raise DeliveryError(f"{what}: answer is not JSON: {answer.text()}") from None
            ok = _as_text(value) == cfg.success_value if cfg.success_value else bool(value)
            if not ok:
                raise DeliveryError(
                    f"{what}: {cfg.success_field} is {_as_text(value)!r}: {answer.text()}"
                )

    async def _deliver(self, message: Message) -> None:
        for to in self.pending(message, self.recipients(message)):
            url, headers, body = self.request_for(message, to)
            answer = await self.request(self.cfg.method, url, data=body, headers=headers)
            self.check(answer, to)
            self.delivered(message, to)
