"""Query-string parsing shared by the API's list endpoints: times, limits, cursors."""

from __future__ import annotations

from datetime import UTC, datetime

from aiohttp import web


class BadParam(web.HTTPBadRequest):
    def __init__(self, name: str, problem: str) -> None:
        super().__init__(text=f'{{"error": "{name}: {problem}"}}', content_type="application/json")


def parse_time(name: str, value: str | None) -> float | None:
    """Epoch seconds, or an RFC 3339 / ISO 8601 time (UTC when no offset is given)."""
    if value is None or value == "":
        return None
    try:
        return float(value)
    except ValueError:
        pass
    try:
        dt = datetime.fromisoformat(value.replace("z", "Z"))
    except ValueError:
        raise BadParam(name, "not a time (epoch seconds or RFC 3339)") from None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return dt.timestamp()


def parse_int(name: str, value: str | None, default: int, lo: int, hi: int) -> int:
    if value is None or value == "":
        return default
    if not value.isdigit():
        raise BadParam(name, "not a non-negative integer")
    n = int(value)
    if not lo <= n <= hi:
        raise BadParam(name, f"must be between {lo} and {hi}")
    return n
