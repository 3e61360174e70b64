"""SMS through Twilio's REST API (or a gateway speaking its layout):
``POST {url}/2010-04-01/Accounts/{account_sid}/Messages.json`` with form fields ``To``,
``From``, ``Body`` and HTTP basic auth ``account_sid:auth_token``, one request per recipient.

Twilio concatenates long texts itself; the body is cut to ``max_segments`` concatenated
parts (153 GSM-7 / 67 UCS-2 characters each) so one incident cannot cost dozens of SMS.
"""

from __future__ import annotations

import base64
from typing import Any
from urllib.parse import quote

from appliance.notify.channels import gsm
from appliance.notify.channels.base import Message
from appliance.notify.channels.http import HttpChannel, check_status
from appliance.notify.channels.text import clean_body

DEFAULT_URL = "https://api.twilio.com"


def sms_text(message: Message, max_segments: int, max_length: int = 0) -> str:
    text = clean_body(message.short or message.subject, max_length, "...")
    return gsm.cut_segments(text, max_segments)


class TwilioChannel(HttpChannel):
    type = "sms_twilio"

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        cfg = self.cfg
        token = self.secret("auth_token")
        pair = base64.b64encode(f"{cfg.account_sid}:{token}".encode()).decode()
        self.headers = {"Authorization": f"Basic {pair}"}
        self._secrets.append(pair)
        base = (self.endpoint() if cfg.has("url") else DEFAULT_URL).rstrip("/")
        self.url = f"{base}/2010-04-01/Accounts/{quote(cfg.account_sid, safe='')}/Messages.json"

    async def _deliver(self, message: Message) -> None:
        body = sms_text(message, self.cfg.max_segments, self.cfg.max_length)
        for number in self.pending(message, self.recipients(message)):
            form = {"To": number, "From": self.cfg.from_, "Body": body}
            answer = await self.request("POST", self.url, data=form, headers=self.headers)
            check_status(answer, f"twilio to {number}")
            self.delivered(message, number)
