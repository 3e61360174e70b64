"""Logging helpers: a rate limit so hostile input cannot flood the journal, and safe text."""

from __future__ import annotations

import logging
import time

_CONTROL = {i: f"\\x{i:02x}" for i in [*range(0x20), 0x7F, *range(0x80, 0xA0)] if i not in (0x09,)}
_CONTROL.update(
    {
        0x202E: "\\u202e",
        0x202D: "\\u202d",
        0x2066: "\\u2066",
        0x2067: "\\u2067",
        0x2068: "\\u2068",
        0x2069: "\\u2069",
    }
)


def printable(text: str, limit: int = 200) -> str:
    """Escape C0/C1 controls, ESC and bidi overrides before text meets a terminal (CWE-150)."""
    if len(text) > limit:
        text = text[:limit] + "…"
    return text.translate(_CONTROL)


class RateLimitedLog:
    """Log a line per key at most once per ``interval`` seconds, counting what was held back."""

    def __init__(self, logger: logging.Logger, interval: float = 10.0) -> None:
        self.logger = logger
        self.interval = interval
        self._last: dict[str, float] = {}
        self._held: dict[str, int] = {}

    def log(self, level: int, key: str, msg: str, *args: object, **kwargs: object) -> None:
        now = time.monotonic()
        last = self._last.get(key)
        if last is not None and now - last < self.interval:
            self._held[key] = self._held.get(key, 0) + 1
            return
        held = self._held.pop(key, 0)
        if len(self._last) > 10_000:  # keys come from bounded reason sets; this is a backstop
            self._last.clear()
        self._last[key] = now
        if held:
            msg += " (%d similar suppressed)"
            args = (*args, held)
        self.logger.log(level, msg, *args, **kwargs)  # type: ignore[arg-type]

    def decoder_bug(
        self,
        source: str,
        peer: str,
        unit: str = "datagram",
        exc: BaseException | bool | None = True,
    ) -> None:
        """A decoder raised: log it with the traceback (rate-limited per source). The caller
        counts the drop; the listener carries on. ``exc`` is the exception when it was caught
        elsewhere (a native batch hands it back), ``True`` inside the ``except`` block, and
        ``None`` when there is no traceback to show (a caught panic)."""
        self.log(
            logging.ERROR,
            f"decode:{source}",
            "%s: decoder failed on a %s from %s",
            source,
            unit,
            peer,
            exc_info=exc if exc is not None else False,
        )

    def warning(self, key: str, msg: str, *args: object) -> None:
        self.log(logging.WARNING, key, msg, *args)

    def error(self, key: str, msg: str, *args: object, exc_info: bool = False) -> None:
        self.log(logging.ERROR, key, msg, *args, exc_info=exc_info)
