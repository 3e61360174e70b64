"""RFC 6587 framing for syslog over TCP/TLS, sans-I/O in the style of h11.

``feed(data)`` appends bytes; ``next_frame()`` (or iterating) returns complete frames. Each
frame's framing is detected on its own first byte, so octet-counted and non-transparent frames
may be mixed on one connection (rsyslog, syslog-ng and logger all accept that):

* a digit starts octet counting: ``MSG-LEN SP MSG`` (leading zeros are read as OpenBSD's
  syslogd sends them);
* anything else (normally ``<``) is non-transparent framing, ended by LF or NUL.

Hostile input costs bounded memory: a frame longer than ``max_length`` is cut to ``max_length``
(kept, counted as ``frame_too_long``) and the rest is skipped up to the end of the frame; a run
of more than ``max_digits`` digits (the CVE-2022-24903 shape) is not a length: the bytes are
skipped to the next LF and counted as ``octet_count_invalid``. Problems are added to
``errors`` (reason → count) for the transport to export and clear.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from appliance import dataplane

_DIGITS = frozenset(b"0123456789")
_SKIP_COUNT = 1  # discarding the rest of an octet-counted frame (``_skip`` bytes left)
_SKIP_LINE = 2  # discarding up to the next LF/NUL


class SyslogFramer:
    """Splits a TCP byte stream into syslog messages; never holds more than ~``max_length``."""

    __slots__ = (
        "_buf",
        "_pos",
        "_scan",
        "_skip",
        "_state",
        "errors",
        "frames",
        "max_digits",
        "max_length",
    )

    def __init__(self, max_length: int = 65536, max_digits: int = 8) -> None:
        self.max_length = max_length
        self.max_digits = max_digits
        self._buf = bytearray()
        self._pos = 0
        self._scan = 0  # bytes already searched for the delimiter of the current frame
        self._state = 0
        self._skip = 0
        self.errors: dict[str, int] = {}
        self.frames = 0  # frames returned so far (transports time out stalled frames with it)

    def feed(self, data: bytes) -> None:
        if self._state:
            data = self._discard(data)
            if not data:
                return
        self._buf += data

    @property
    def buffered(self) -> int:
        """Bytes of an incomplete frame held (0 when the stream is at a frame boundary)."""
        return len(self._buf) - self._pos

    def close(self) -> bytes | None:
        """The stream ended: an unterminated last line is a message (returned); half of an
        octet-counted frame is not (counted as ``incomplete_frame``)."""
        frame = self.next_frame()  # the caller drained already; this only finds the tail
        if frame is not None:
            return frame
        rest = bytes(self._buf[self._pos :])
        self._buf.clear()
        self._pos = self._scan = 0
        if not rest or self._state:
            self._state = 0
            return None
        if rest[0] in _DIGITS:
            k = 0
            while k < len(rest) and rest[k] in _DIGITS:
                k += 1
            if k == len(rest) or rest[k] == 32:
                self._error("incomplete_frame")
                return None
        return rest[: self.max_length]

    def __iter__(self) -> Iterator[bytes]:
        while (frame := self.next_frame()) is not None:
            yield frame

    def _error(self, reason: str) -> None:
        self.errors[reason] = self.errors.get(reason, 0) + 1

    def _discard(self, data: bytes) -> bytes:
        """Drop bytes of a frame being skipped; return what follows it."""
        if self._state == _SKIP_COUNT:
            if len(data) < self._skip:
                self._skip -= len(data)
                return b""
            data = data[self._skip :]
            self._skip = 0
            self._state = 0
            return data
        end = data.find(b"\n")
        nul = data.find(b"\x00", 0, end if end >= 0 else len(data))
        if nul >= 0:
            end = nul
        if end < 0:
            return b""
        self._state = 0
        return data[end + 1 :]

    def next_frame(self) -> bytes | None:
        """The next complete frame, or ``None`` until more bytes are fed."""
        buf = self._buf
        while True:
            pos = self._pos
            n = len(buf)
            # Blank separators between frames (LF after an octet-counted frame, keep-alives).
            while pos < n and buf[pos] in b"\n\r\x00 ":
                pos += 1
            if pos >= n:
                buf.clear()
                self._pos = self._scan = 0
                return None
            if pos != self._pos:
                self._pos = pos
                self._scan = 0
            if buf[pos] in _DIGITS:
                frame = self._octet_counted(pos, n)
            else:
                frame = self._non_transparent(pos, n)
            if frame is None:
                self._compact()
                return None
            if frame:  # b"": something was dropped or skipped; look again
                self.frames += 1
                self._scan = 0
                return frame

    def _compact(self) -> None:
        pos = self._pos
        if pos:
            del self._buf[:pos]
            self._pos = 0
            self._scan = max(0, self._scan - pos)

    def _octet_counted(self, pos: int, n: int) -> bytes | None:
        buf = self._buf
        end = min(n, pos + self.max_digits + 1)
        k = pos
        while k < end and buf[k] in _DIGITS:
            k += 1
        if k == end:
            if k - pos > self.max_digits:
                return self._bad_header(pos, n, "octet_count_invalid")
            return None  # still reading the count
        if buf[k] != 32:
            # "2024-01-05T..." or "05/30-19:09:10 ...": a line that starts with a digit.
            return self._non_transparent(pos, n)
        length = int(buf[pos:k])
        start = k + 1
        if length == 0:
            self._error("octet_count_zero")
            self._pos = start
            return b""
        max_length = self.max_length
        have = n - start
        if length > max_length:
            if have < max_length:
                return None  # wait for the part we keep
            self._error("frame_too_long")
            frame = bytes(buf[start : start + max_length])
            if have >= length:
                self._pos = start + length
            else:
                self._skip = length - have
                self._state = _SKIP_COUNT
                buf.clear()
                self._pos = 0
            return frame
        if have < length:
            return None
        self._pos = start + length
        return bytes(buf[start : start + length])

    def _find_end(self, pos: int, n: int) -> int:
        """Index of the LF or NUL ending the frame at ``pos``, or -1 (resuming the last scan)."""
        buf = self._buf
        scan = self._scan if self._scan > pos else pos
        end = buf.find(b"\n", scan)
        nul = buf.find(b"\x00", scan, end if end >= 0 else n)
        if nul >= 0:
            end = nul
        if end < 0:
            self._scan = n
        return end

    def _non_transparent(self, pos: int, n: int) -> bytes | None:
        buf = self._buf
        end = self._find_end(pos, n)
        max_length = self.max_length
        if end < 0:
            if n - pos <= max_length:
                return None
            # No delimiter within the limit: keep the first max_length bytes, skip to the LF.
            self._error("frame_too_long")
            frame = bytes(buf[pos : pos + max_length])
            buf.clear()
            self._pos = self._scan = 0
            self._state = _SKIP_LINE
            return frame
        self._pos = end + 1
        if end - pos > max_length:
            self._error("frame_too_long")
            return bytes(buf[pos : pos + max_length])
        if end > pos and buf[end - 1] == 13:  # CR LF
            end -= 1
        return bytes(buf[pos:end])

    def _bad_header(self, pos: int, n: int, reason: str) -> bytes:
        """Drop a frame whose header cannot be trusted, up to the next LF/NUL."""
        self._error(reason)
        end = self._find_end(pos, n)
        if end < 0:
            self._buf.clear()
            self._pos = self._scan = 0
            self._state = _SKIP_LINE
        else:
            self._pos = end + 1
        return b""


def new_framer(max_length: int = 65536, max_digits: int = 8) -> Any:
    """A framer from the running backend: the extension's ``SyslogFramer`` (same API and
    behaviour, held to this module by the tests) or :class:`SyslogFramer`."""
    if dataplane.native is not None:
        return dataplane.native.SyslogFramer(max_length, max_digits)
    return SyslogFramer(max_length, max_digits)
