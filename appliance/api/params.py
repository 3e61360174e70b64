"""Query-string parsing shared by the API's list endpoints: times, limits, cursors."""

from __future__ import annotations

import math
from datetime import UTC, datetime

from aiohttp import web


class BadParam(web.HTTPBadRequest):
    def __init__(self, name: str, problem: str) -> None:
        super().__init__(text=f'{{"error": "{name}: {problem}"}}', content_type="application/json")


def parse_time(name: str, value: str | None) -> float | None:
    """Epoch seconds, or an RFC 3339 / ISO 8601 time (UTC when no offset is given).

    ``nan`` and ``inf`` (and ``1e999``) are numbers to ``float`` but no time: a NaN bound
    silently matched nothing, so they are refused like any other non-time."""
    if value is None or value == "":
        return None
    try:
        t = float(value)
    except ValueError:
        try:
            dt = datetime.fromisoformat(value.replace("z", "Z"))
        except ValueError:
            raise BadParam(name, "not a time (epoch seconds or RFC 3339)") from None
        if dt.tzinfo is None:
            dt = dt.replace(tzinfo=UTC)
        t = dt.timestamp()
    if not math.isfinite(t):
        raise BadParam(name, "not a time (epoch seconds or RFC 3339)")
    return t


# More digits than this (leading zeros aside) is past every bound the endpoints use (<= 2**62),
# and ``int()`` refuses strings of more than 4,300 digits with a ValueError.
_MAX_DIGITS = 19


def parse_int(name: str, value: str | None, default: int, lo: int, hi: int) -> int:
    if value is None or value == "":
        return default
    # ASCII only: str.isdigit() is also true for "²" and other digits int() does not take.
    if not (value.isascii() and value.isdigit()):
        raise BadParam(name, "not a non-negative integer")
    digits = value.lstrip("0") or "0"
    n = int(digits) if len(digits) <= _MAX_DIGITS else hi + 1
    if not lo <= n <= hi:
        raise BadParam(name, f"must be between {lo} and {hi}")
    return n
