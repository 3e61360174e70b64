"""What every upstream format shares: the request it builds and how it reads the answer.

Formats are sans-I/O: they turn outbox items into an :class:`HttpRequest` and a response
(status, headers, body) into a per-item :class:`Verdict`. The sender does the I/O, so the
exact request shape and the retry classification are testable without sockets.
"""

from __future__ import annotations

import enum
import json
from dataclasses import dataclass, field
from email.utils import parsedate_to_datetime
from typing import Any, Protocol

from appliance.config import UpstreamSection
from appliance.forward.document import Identity


class Outcome(enum.Enum):
    DELIVERED = "delivered"
    DUPLICATE = "duplicate"  # the upstream already had it (409): delivered
    RETRY = "retry"  # transient: try again after a backoff
    REJECT = "reject"  # permanent for this item: dead-letter after max_rejections


@dataclass(frozen=True, slots=True)
class OutboxItem:
    id: int
    key: str
    document: dict[str, Any]
    size: int
    attempts: int = 0
    rejections: int = 0


@dataclass(slots=True)
class HttpRequest:
    url: str
    body: bytes
    headers: dict[str, str] = field(default_factory=dict)
    # The id signed into Standard Webhooks headers; stable for a given set of items.
    message_id: str = ""


@dataclass(slots=True)
class Verdict:
    outcomes: dict[int, Outcome]
    reason: str = "ok"  # counter label for failures: http_500, item_429, ...
    retry_after: float | None = None
    ack_id: int | None = None  # splunk_hec: delivery waits for this indexer ack
    detail: str = ""  # short text for last_error (never a secret)
    # True when each outcome was decided for that item alone (``_bulk`` item statuses); a
    # whole-batch 4xx only isolates its items (next tries go one by one) and never
    # dead-letters a good item that shared a request with a poisoned one.
    per_item: bool = False
    discarded: int = 0  # records the upstream took but said it dropped (not retryable)


class Format(Protocol):
    name: str

    def request(self, items: list[OutboxItem]) -> HttpRequest: ...

    def verdict(
        self, items: list[OutboxItem], status: int, headers: dict[str, str], body: bytes, now: float
    ) -> Verdict: ...


# 4xx codes that say "this link is misconfigured" rather than "this item is bad": retrying
# them with backoff (and alerting through the failure gauge) keeps a wrong token or URL from
# dead-lettering the whole queue one item at a time.
LINK_ERRORS = frozenset({401, 403, 404, 405, 407, 421})


def classify_status(status: int) -> Outcome:
    """HTTP status to outcome: 2xx delivered, 409 duplicate, 408/429/5xx retry, 4xx reject."""
    if 200 <= status < 300:
        return Outcome.DELIVERED
    if status == 409:
        return Outcome.DUPLICATE
    if status in (408, 429) or status >= 500 or status in LINK_ERRORS:
        return Outcome.RETRY
    if 400 <= status < 500:
        return Outcome.REJECT
    return Outcome.RETRY  # 1xx/3xx: redirects are not followed; treat as a link problem


def parse_retry_after(value: str | None, now: float) -> float | None:
    """``Retry-After`` (delta-seconds or HTTP-date, RFC 9110 10.2.3) to seconds from now."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(int(value))
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    return max(0.0, when.timestamp() - now)


def whole_batch(
    items: list[OutboxItem], status: int, headers: dict[str, str], now: float
) -> Verdict:
    """The verdict when the status applies to every item of the request."""
    outcome = classify_status(status)
    return Verdict(
        {it.id: outcome for it in items},
        reason="ok" if outcome in (Outcome.DELIVERED, Outcome.DUPLICATE) else f"http_{status}",
        retry_after=parse_retry_after(headers.get("Retry-After"), now)
        if status in (429, 503)
        else None,
        detail="" if outcome is Outcome.DELIVERED else f"HTTP {status}",
    )


def is_event(doc: dict[str, Any]) -> bool:
    """Raw-event stream document (``kind: event``) rather than an incident revision."""
    return doc.get("kind") == "event"


def doc_time(doc: dict[str, Any]) -> float:
    """When the thing happened: the incident's last update, or the event's ``@timestamp``."""
    from appliance.forward.document import parse_time

    if is_event(doc):
        return parse_time(doc.get("event", {}).get("@timestamp"), 0.0)
    return parse_time(doc.get("incident", {}).get("updated"), 0.0)


def dumps(obj: Any) -> bytes:
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode()


def endpoint(url: str, path: str) -> str:
    """``url`` with ``path`` appended unless it already ends with it (base URL or full URL)."""
    base = url.rstrip("/")
    return base if base.endswith(path) else base + path


@dataclass(frozen=True, slots=True)
class FormatContext:
    config: UpstreamSection
    identity: Identity
    version: str
