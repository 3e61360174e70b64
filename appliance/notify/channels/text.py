"""Text that reaches people: control characters escaped, cut to the channel's limit.

Every channel passes what it sends through here, so an event field carrying a terminal
escape, a bidi override or a CR/LF cannot reshape a subject line, an SMS or a chat message.
Newlines are kept in bodies (they are how a message is laid out) and folded in one-line
fields (subjects, headers).
"""

from __future__ import annotations

import re
from collections.abc import Callable

# C0 and C1 controls, DEL, and the bidi embeddings/overrides/isolates (CVE-2021-42574 class).
_ESCAPED = {i: f"\\x{i:02x}" for i in [*range(0x20), 0x7F, *range(0x80, 0xA0)]}
_ESCAPED.update({i: f"\\u{i:04x}" for i in [*range(0x202A, 0x202F), *range(0x2066, 0x206A)]})
_BODY = {k: v for k, v in _ESCAPED.items() if k != 0x0A} | {0x09: " ", 0x0D: None}
_LINE_BREAKS = re.compile(r"[ \t]*[\r\n\t\u2028\u2029\x0b\x0c\x85]+[ \t]*")

ELLIPSIS = "…"


def cut(text: str, limit: int, ellipsis: str = ELLIPSIS) -> str:
    """``text`` if it fits in ``limit`` characters, else its start and ``ellipsis``."""
    if limit <= 0 or len(text) <= limit:
        return text
    if limit <= len(ellipsis):
        return text[:limit]
    return text[: limit - len(ellipsis)] + ellipsis


def fit_escaped(
    text: str, limit: int, escape: Callable[[str], str], ellipsis: str = ELLIPSIS
) -> str:
    """``escape(text)`` within ``limit`` characters: the plain text is cut before escaping
    (so no entity or escape sequence is cut in half) as far as the escaped form needs."""
    room = limit
    out = escape(cut(text, room, ellipsis))
    while len(out) > limit and room > 1:
        room = max(1, min(room - 1, room * limit // len(out)))
        out = escape(cut(text, room, ellipsis))
    return out


def clean_body(text: str, limit: int = 0, ellipsis: str = ELLIPSIS) -> str:
    """A multi-line body: LF kept, CR dropped, tabs as spaces, other controls escaped."""
    return cut(text.translate(_BODY), limit, ellipsis)


def clean_line(text: str, limit: int = 0, ellipsis: str = ELLIPSIS) -> str:
    """One line (a subject, a header): breaks folded to spaces, other controls escaped."""
    return cut(_LINE_BREAKS.sub(" ", text).strip().translate(_ESCAPED), limit, ellipsis)
