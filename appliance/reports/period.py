"""Report periods as people write them: ``24h``, ``7d``, ``90m``."""

from __future__ import annotations

UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
MAX_SPAN = 366 * 86400


def parse_span(text: str) -> float:
    """``24h``, ``7d``, ``90m``, ``2w``, ``3600s`` (or plain seconds) to seconds."""
    text = text.strip().lower()
    try:
        unit = UNITS.get(text[-1:], 0)
        value = float(text[:-1]) * unit if unit else float(text)
    except ValueError:
        raise ValueError(f"{text!r} is not a duration like 24h or 7d") from None
    if not 0 < value <= MAX_SPAN:  # also false for nan
        raise ValueError(f"{text!r}: must be more than 0 and at most 366 days")
    return value
