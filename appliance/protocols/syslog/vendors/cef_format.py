"""CEF's layout, read: the seven header fields (pipes escaped as ``\\|``) and the extension's
``key=value`` pairs (values may hold spaces; ``\\=``, ``\\\\``, ``\\n``, ``\\r`` escaped).

Shared by the ``cef`` decoder module and the decoder files' ``cef`` step; the native
interpreter (``dataplane/src/decoders.rs``) reads the same way and leaves text with a
backslash to this reference.
"""

from __future__ import annotations

import re

_KEY = re.compile(r"(?:^|(?<=\s))([\w.\[\]-]+)=")
_UNESCAPE = re.compile(r"\\([=\\|nr])")
MAX_KEYS = 256
HEADER = ("version", "device_vendor", "device_product", "device_version", "signature_id",
          "name", "severity")  # fmt: skip


def split_header(text: str) -> list[str] | None:
    """``CEF:0|a|b|c|d|e|f|ext`` → the seven header fields (unescaped) and the extension."""
    parts: list[str] = []
    start = i = 0
    n = len(text)
    while i < n and len(parts) < 7:
        c = text[i]
        if c == "\\":
            i += 2
            continue
        if c == "|":
            parts.append(text[start:i].replace("\\|", "|").replace("\\\\", "\\"))
            start = i + 1
        i += 1
    if len(parts) < 7:
        return None
    parts.append(text[start:])
    return parts


def extensions(text: str) -> dict[str, str]:
    """The extension's pairs in order (a repeated key: the last value, first position)."""
    out: dict[str, str] = {}
    keys = list(_KEY.finditer(text))
    for k, m in enumerate(keys[:MAX_KEYS]):
        end = keys[k + 1].start() if k + 1 < len(keys) else len(text)
        value = text[m.end() : end].strip()
        if "\\" in value:
            value = _UNESCAPE.sub(
                lambda x: {"n": "\n", "r": "\r"}.get(x.group(1), x.group(1)), value
            )
        out[m.group(1)] = value
    return out


def cef_captures(text: str) -> dict[str, str] | None:
    """The ``cef`` step: from the first ``CEF:`` among the first 40 characters, the header
    as ``cef.version`` ... ``cef.severity`` (without the ``CEF:``) and every extension key
    as itself; ``None`` when the text is not CEF."""
    at = text.find("CEF:", 0, 40)
    if at < 0:
        return None
    parts = split_header(text[at + 4 :])
    if parts is None:
        return None
    out = {f"cef.{name}": value for name, value in zip(HEADER, parts, strict=False)}
    for key, value in extensions(parts[7]).items():
        out.setdefault(key, value)
    return out


# -- LEEF (IBM QRadar's Log Event Extended Format), read for the decoder files' leef step ----

LEEF_HEADER = ("version", "vendor", "product", "product_version", "event_id")


def leef_delimiter(spec: str) -> str:
    """LEEF 2.0's sixth header field: a character, or its code as ``xHH``/``0xHH``; tab when
    empty or unreadable."""
    if spec.startswith(("x", "0x")):
        try:
            return chr(int(spec.removeprefix("0").removeprefix("x"), 16))
        except (ValueError, OverflowError):
            return "\t"
    return spec[:1] or "\t"


def leef_captures(text: str) -> dict[str, str] | None:
    """The ``leef`` step: from the first ``LEEF:`` among the first 40 characters, the header
    as ``leef.version`` ... ``leef.event_id`` and every ``key=value`` of the attributes (tab
    between pairs, or LEEF 2.0's own delimiter; the first of a repeated key wins, pairs
    without a value are skipped, at most 256 read); ``None`` when the text is not LEEF."""
    at = text.find("LEEF:", 0, 40)
    if at < 0:
        return None
    head = text[at + 5 :].split("|", 6)
    if len(head) < 6:
        return None
    delim = "\t"
    if head[0].startswith("2") and len(head) == 7:
        delim = leef_delimiter(head[5])
        ext = head[6]
    else:
        ext = "|".join(head[5:])
    out = {f"leef.{name}": value for name, value in zip(LEEF_HEADER, head, strict=False)}
    for n, pair in enumerate(ext.split(delim)):
        if n >= MAX_KEYS:
            break
        key, eq, value = pair.partition("=")
        if eq and value:
            out.setdefault(key, value)
    return out
