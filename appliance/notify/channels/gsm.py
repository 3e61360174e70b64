"""SMS sizing: the GSM 03.38 alphabet, segment limits, splitting and cutting.

A text in the GSM 7-bit default alphabet fits 160 septets in one SMS (the extension
characters ``^{}\\[~]|€`` and form feed take two); anything else is sent as UCS-2 with 70
UTF-16 units. A gateway that concatenates (Twilio, most HTTP gateways) spends a 6-byte UDH
per part, leaving 153 septets or 67 units, which is what :func:`cut_segments` budgets for.
The modem channel sends numbered stand-alone parts instead (see :mod:`.sms_modem`), each a
full 160/70 with its ``(i/n)`` prefix, which :func:`numbered_parts` builds.
"""

from __future__ import annotations

from typing import Literal

BASIC = (
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞ\x1bÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?"
    "¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà"
)
EXTENSION = "\x0c^{}\\[~]|€"
_BASIC = frozenset(BASIC) - {"\x1b"}
_EXTENSION = frozenset(EXTENSION)

Encoding = Literal["gsm7", "ucs2"]
SINGLE = {"gsm7": 160, "ucs2": 70}
CONCATENATED = {"gsm7": 153, "ucs2": 67}


def encoding_of(text: str) -> Encoding:
    """``gsm7`` when every character is in the default alphabet or its extension."""
    return "gsm7" if all(c in _BASIC or c in _EXTENSION for c in text) else "ucs2"


def char_cost(c: str, encoding: Encoding) -> int:
    """Septets (gsm7) or UTF-16 code units (ucs2) one character takes."""
    if encoding == "gsm7":
        return 2 if c in _EXTENSION else 1
    return 2 if ord(c) > 0xFFFF else 1


def length(text: str, encoding: Encoding | None = None) -> int:
    enc = encoding or encoding_of(text)
    return sum(char_cost(c, enc) for c in text)


def segments(text: str) -> int:
    """How many SMS a concatenating sender needs for ``text``."""
    enc = encoding_of(text)
    n = length(text, enc)
    if n <= SINGLE[enc]:
        return 1
    return -(-n // CONCATENATED[enc])


def _take(text: str, budget: int, encoding: Encoding) -> int:
    """How many characters of ``text`` fit in ``budget`` units (never half a pair)."""
    used = 0
    for i, c in enumerate(text):
        used += char_cost(c, encoding)
        if used > budget:
            return i
    return len(text)


def cut_segments(text: str, max_segments: int, mark: str = "...") -> str:
    """``text`` cut so a concatenating gateway sends at most ``max_segments`` parts."""
    enc = encoding_of(text)
    budget = SINGLE[enc] if max_segments == 1 else CONCATENATED[enc] * max_segments
    if length(text, enc) <= budget:
        return text
    keep = _take(text, budget - length(mark, enc), enc)
    return text[:keep].rstrip() + mark


def numbered_parts(
    text: str, max_segments: int, mark: str = "...", encoding: Encoding | None = None
) -> list[str]:
    """Stand-alone SMS texts, ``(i/n) `` before each when there is more than one; cut with
    ``mark`` when the text needs more than ``max_segments``. ``encoding`` forces how the
    parts will be sent (a sender that only does GSM-7 for ASCII says ``ucs2`` for the rest)."""
    enc = encoding or encoding_of(text)
    if length(text, enc) <= SINGLE[enc]:
        return [text]
    for n in range(2, max_segments + 1):
        parts = _split(text, n, enc)
        if parts is not None:
            return parts
    n = max_segments
    if n == 1:
        return [text[: _take(text, SINGLE[enc] - length(mark, enc), enc)].rstrip() + mark]
    prefix_len = len(f"({n}/{n}) ")
    budget = (SINGLE[enc] - prefix_len) * n - length(mark, enc)
    short = text[: _take(text, budget, enc)].rstrip() + mark
    parts = _split(short, n, enc)
    assert parts is not None  # short fits n parts by construction
    return parts


def _split(text: str, n: int, enc: Encoding) -> list[str] | None:
    """``text`` in at most ``n`` prefixed parts, or None when it needs more."""
    chunks: list[str] = []
    rest = text
    while rest:
        if len(chunks) == n:
            return None
        prefix = f"({len(chunks) + 1}/{n}) "
        take = _take(rest, SINGLE[enc] - len(prefix), enc)
        # Prefer to break at a space in the last fifth of the part.
        space = rest.rfind(" ", take * 4 // 5, take) if take < len(rest) else -1
        if space > 0:
            take = space + 1
        chunks.append(rest[:take])
        rest = rest[take:]
    total = len(chunks)
    return [f"({i}/{total}) {c.rstrip()}" for i, c in enumerate(chunks, 1)]
