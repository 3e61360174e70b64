"""Query-string parsing shared by the API's list endpoints: times, limits, cursors.

Every endpoint reads its parameters through these functions so that a hostile or mistyped
value is a 400 naming the parameter, checked once here, instead of a 500 (or an empty page)
somewhere deeper in a query or in the formatting of the answer.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime

from aiohttp import web

# The range an API time may take, in epoch seconds: what ``datetime`` (and so every time we
# format back into an answer) can represent, 1970-01-01T00:00:00Z to 9999-12-31T23:59:59Z.
# Event times are never before the epoch, so nothing real is refused.
TIME_MIN = 0.0
TIME_MAX = 253_402_300_799.0
_TIME_RANGE = "out of range (epoch seconds 0 to 253402300799, 1970-01-01 to 9999-12-31)"


class BadParam(web.HTTPBadRequest):
    def __init__(self, name: str, problem: str) -> None:
        super().__init__(
            text=json.dumps({"error": f"{name}: {problem}"}), content_type="application/json"
        )


def parse_time(name: str, value: str | None) -> float | None:
    """Epoch seconds, or an RFC 3339 / ISO 8601 time (UTC when no offset is given).

    ``float()`` also reads ``nan``, ``inf`` and ``1e999``; those, and anything outside what a
    datetime can show, are refused here rather than matching nothing or failing later.
    """
    if value is None or value == "":
        return None
    try:
        ts = float(value)
    except ValueError:
        try:
            dt = datetime.fromisoformat(value.replace("z", "Z"))
        except ValueError:
            raise BadParam(name, "not a time (epoch seconds or RFC 3339)") from None
        if dt.tzinfo is None:
            dt = dt.replace(tzinfo=UTC)
        try:
            ts = dt.timestamp()
        except (OverflowError, ValueError):
            raise BadParam(name, _TIME_RANGE) from None
    if not TIME_MIN <= ts <= TIME_MAX:  # also false for nan
        raise BadParam(name, _TIME_RANGE)
    return ts


def parse_int(name: str, value: str | None, default: int, lo: int, hi: int) -> int:
    """A plain ASCII decimal between ``lo`` and ``hi``.

    ``str.isdigit`` alone admits superscripts that ``int()`` refuses, and ``int()`` refuses
    strings of more than 4300 digits: both would be a 500, so only ASCII digits pass and the
    length is checked before converting.
    """
    if value is None or value == "":
        return default
    if not (value.isascii() and value.isdigit()):
        raise BadParam(name, "not a non-negative integer")
    if len(value.lstrip("0")) > len(str(hi)) or not lo <= int(value) <= hi:
        raise BadParam(name, f"must be between {lo} and {hi}")
    return int(value)
