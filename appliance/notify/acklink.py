"""Signed, expiring acknowledgement links and SMS reply codes.

A link carries ``<incident id>.<expiry>.<signature>``: HMAC-SHA256 over the first two parts
with a 32-byte key generated once into ``data_dir/notify-ack.key`` (mode 0600). Whoever holds
a link may acknowledge that one incident until it expires, and nothing else; a changed id or
expiry breaks the signature. The key never leaves the box, so links cannot be made elsewhere.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import secrets
from pathlib import Path

KEY_FILE = "notify-ack.key"
CODE_ALPHABET = "23456789ABCDEFGHJKMNPQRSTUVWXYZ"  # no 0/O, 1/I/L: read off a phone screen
CODE_LENGTH = 6


class AckRefused(Exception):
    """A link that must not acknowledge; ``status`` is 403 (forged, malformed) or 410."""

    def __init__(self, reason: str, status: int) -> None:
        super().__init__(reason)
        self.reason = reason
        self.status = status


def load_or_create_key(data_dir: Path) -> bytes:
    path = data_dir / KEY_FILE
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        key = bytes.fromhex(path.read_text(encoding="ascii").strip())
        if len(key) < 32:
            raise ValueError(f"{path}: key shorter than 32 bytes") from None
        return key
    key = secrets.token_bytes(32)
    with os.fdopen(fd, "w", encoding="ascii") as f:
        f.write(key.hex() + "\n")
    return key


def _sig(key: bytes, payload: str) -> str:
    mac = hmac.new(key, payload.encode(), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(mac).rstrip(b"=").decode()


def make_token(key: bytes, incident_id: str, expires: float) -> str:
    payload = f"{incident_id}.{int(expires)}"
    return f"{payload}.{_sig(key, payload)}"


def verify_token(key: bytes, token: str, now: float) -> str:
    """The incident id a valid token names; :class:`AckRefused` otherwise.

    The signature is checked before the expiry, so an altered expiry is "forged", not
    "expired".
    """
    parts = token.split(".")
    if len(parts) != 3 or not parts[1].isdigit() or not 0 < len(parts[0]) <= 64:
        raise AckRefused("malformed", 403)
    incident_id, expires, sig = parts
    if not hmac.compare_digest(_sig(key, f"{incident_id}.{expires}"), sig):
        raise AckRefused("forged", 403)
    if int(expires) <= now:
        raise AckRefused("expired", 410)
    return incident_id


def _is_code(word: str) -> bool:
    # At least one digit and one letter: an ordinary word ("THANKS") is never a code.
    return (
        len(word) == CODE_LENGTH
        and all(c in CODE_ALPHABET for c in word)
        and any(c.isdigit() for c in word)
        and any(c.isalpha() for c in word)
    )


def new_code() -> str:
    while True:
        code = "".join(secrets.choice(CODE_ALPHABET) for _ in range(CODE_LENGTH))
        if _is_code(code):
            return code


def find_code(text: str) -> str | None:
    """The code in an SMS reply (``ACK 7KQ2PX``, ``ack 7kq2px``, or just the code)."""
    for word in text.upper().replace(",", " ").split():
        if _is_code(word):
            return word
    return None
