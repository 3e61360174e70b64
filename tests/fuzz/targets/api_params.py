"""The API's query parameters (``appliance/api/params.py``): any query value is a result in
range or :class:`BadParam` (HTTP 400); anything else would be a 500 from a query string.

Input: one byte choosing the function and its bounds, then the value as UTF-8 (aiohttp hands
handlers decoded text; undecodable bytes become U+FFFD as they do there).
"""

from __future__ import annotations

import math
from collections.abc import Iterator

from appliance.api.params import BadParam, parse_int, parse_time
from tests.fuzz.harness import committed_seeds

MAX_LEN = 8192  # aiohttp takes request lines up to 8190 bytes
# (default, lo, hi) as the endpoints call parse_int: limit, cursor, top-N.
_BOUNDS = [(100, 1, 1000), (0, 0, 2**62), (10, 1, 100), (0, 0, 0)]

DICTIONARY = (b"nan", b"inf", b"e", b"T", b"Z", b"+05:30", b"2026-11-29", b"00:00:00",
              "²".encode(), "\u0661".encode(), "\uff11".encode(), b"_")  # fmt: skip
HAND_MADE = ["1700000000", "1700000000.5", "2026-11-29T12:00:00Z", "2026-11-29T12:00:00+05:30",
             "2026-11-29", "2026-11-29 12:00:00z", "-1", "1e3", "nan", "inf", "0x10", "",
             "100", "0", "99999999999999999999", "\uff11\uff12", "²", " 5", "5 ", "+5"]  # fmt: skip


def seeds() -> Iterator[bytes]:
    for i, value in enumerate(HAND_MADE):
        for selector in (0, 1 + i % len(_BOUNDS)):
            yield bytes([selector]) + value.encode()
    yield from committed_seeds("api-params")


def one_input(data: bytes) -> None:
    if not data:
        return
    value = data[1:].decode("utf-8", "replace")
    selector = data[0] % (len(_BOUNDS) + 1)
    try:
        if selector == 0:
            t = parse_time("since", value)
            assert t is None if value == "" else isinstance(t, float) and math.isfinite(t), t
        else:
            default, lo, hi = _BOUNDS[selector - 1]
            n = parse_int("limit", value, default, lo, hi)
            assert n == default if value == "" else isinstance(n, int) and lo <= n <= hi, n
    except BadParam:
        pass
