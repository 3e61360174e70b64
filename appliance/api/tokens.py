"""API tokens: stored hashed, with scopes, rotated without a restart.

The token file (``api.tokens_file``, default ``data_dir/api-tokens.json``, mode 0600) lists
every token's id, name, scopes, creation time and hash; the token itself is printed once by
``appliance tokens add`` and never stored. A token looks like ``sem_<id>_<secret>``: the id
(8 hex digits) finds the entry, and SHA-256 of the whole token is compared with the stored
hash in constant time (``hmac.compare_digest``).

Why SHA-256 and not bcrypt/scrypt/Argon2: those are slow on purpose so that a stolen hash of
a *low-entropy* secret (a password a person chose) cannot be brute-forced. Our tokens are 32
random bytes (256 bits) from ``secrets``: no dictionary or brute force of the hash can find
one, however fast the hash, so a slow hash adds no protection and would cost ~50-100 ms of CPU
per request on the event loop that also receives syslog, a lever for denial of service on a
2-core box. This is what GitHub, Stripe and others do for API keys. A pepper (keyed hash)
would live beside the file it protects, so it would add nothing either.

Scopes form a ladder: ``admin`` includes ``write``, which includes ``read``. GET/HEAD need
``read``, every other method ``write``; a handler may ask for more with :func:`requires`
(``admin`` is reserved for token/user management endpoints; none exists yet).

The legacy single token (``api.token``, ``api.token_file`` or the generated
``data_dir/api-token``) keeps working as an ``admin`` token with the id ``legacy``.

The running appliance re-reads the file when its identity or mtime changes (checked at most
once a second, on a request) and on SIGHUP. A file that cannot be read or parsed leaves no
file token valid (logged at ERROR): a revocation must never be undone by a typo.
"""

from __future__ import annotations

import contextlib
import datetime
import fcntl
import hashlib
import hmac
import json
import logging
import os
import re
import secrets
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from appliance.config import ApiSection

log = logging.getLogger(__name__)

SCOPES = ("read", "write", "admin")
_RANK = {s: i for i, s in enumerate(SCOPES)}
TOKENS_FILE = "api-tokens.json"
PREFIX = "sem_"
_TOKEN_RE = re.compile(r"^sem_([0-9a-f]{8})_[A-Za-z0-9_-]{43}$")
CHECK_INTERVAL = 1.0
LEGACY_ID = "legacy"


def tokens_path(api: ApiSection, data_dir: Path, base: Callable[[str], Path]) -> Path:
    """``api.tokens_file`` (relative to the config file's folder), else data_dir's."""
    return base(api.tokens_file) if api.tokens_file else data_dir / TOKENS_FILE


def hash_token(token: str) -> str:
    return "sha256:" + hashlib.sha256(token.encode("utf-8", "replace")).hexdigest()


@dataclass(frozen=True, slots=True)
class Token:
    id: str
    name: str
    scopes: tuple[str, ...]
    created: str
    hash: str

    def allows(self, scope: str) -> bool:
        return any(_RANK[s] >= _RANK[scope] for s in self.scopes if s in _RANK)

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "name": self.name,
            "scopes": list(self.scopes),
            "created": self.created,
            "hash": self.hash,
        }


def requires(scope: str) -> Callable[[Any], Any]:
    """Mark a route handler as needing ``scope`` (instead of the method's default)."""
    if scope not in _RANK:
        raise ValueError(scope)

    def mark(handler: Any) -> Any:
        handler.required_scope = scope
        return handler

    return mark


def scope_for(method: str, handler: Any) -> str:
    declared = getattr(handler, "required_scope", None)
    if declared:
        return str(declared)
    return "read" if method in ("GET", "HEAD", "OPTIONS") else "write"


# ------------------------------------------------------------------------------- the token file


def parse_tokens(data: Any) -> list[Token]:
    """The file's JSON to tokens; ``ValueError`` naming the problem."""
    if not isinstance(data, dict) or not isinstance(data.get("tokens"), list):
        raise ValueError('expected {"tokens": [...]}')
    out: list[Token] = []
    for i, item in enumerate(data["tokens"]):
        if not isinstance(item, dict):
            raise ValueError(f"tokens[{i}]: expected an object")
        try:
            tok = Token(
                id=str(item["id"]),
                name=str(item.get("name", "")),
                scopes=tuple(item["scopes"]),
                created=str(item.get("created", "")),
                hash=str(item["hash"]),
            )
        except (KeyError, TypeError) as exc:
            raise ValueError(f"tokens[{i}]: missing or bad {exc}") from None
        if not tok.scopes or any(s not in _RANK for s in tok.scopes):
            raise ValueError(f"tokens[{i}].scopes: each one of {', '.join(SCOPES)}")
        if not tok.hash.startswith("sha256:"):
            raise ValueError(f"tokens[{i}].hash: expected sha256:<hex>")
        out.append(tok)
    return out


def read_tokens(path: Path) -> list[Token]:
    """The tokens in ``path`` (none when it does not exist)."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return []
    try:
        return parse_tokens(json.loads(text))
    except json.JSONDecodeError as exc:
        raise ValueError(f"not JSON: {exc}") from None


def write_tokens(path: Path, tokens: list[Token]) -> None:
    """Replace the file atomically (a reader never sees half of it), mode 0600, keeping the
    owner of the file or, for a new file, of its folder (``root`` running the CLI for the
    ``appliance`` user must not leave a file the service cannot read)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        owner = path.stat()
    except FileNotFoundError:
        owner = path.parent.stat()
    body = json.dumps({"tokens": [t.to_json() for t in tokens]}, indent=2) + "\n"
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    try:
        os.fchmod(fd, 0o600)
        if os.geteuid() == 0:
            os.fchown(fd, owner.st_uid, owner.st_gid)
        os.write(fd, body.encode())
        os.fsync(fd)
    except BaseException:
        os.close(fd)
        tmp.unlink(missing_ok=True)
        raise
    os.close(fd)
    os.replace(tmp, path)


@contextlib.contextmanager
def locked(path: Path) -> Iterator[None]:
    """Serialise read-modify-write of the token file between CLI invocations."""
    path.parent.mkdir(parents=True, exist_ok=True)
    lock = path.with_name(f".{path.name}.lock")
    fd = os.open(lock, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def add_token(path: Path, name: str, scopes: list[str]) -> tuple[str, Token]:
    """Create a token; returns (the token, its entry). The token is not stored anywhere."""
    for s in scopes:
        if s not in _RANK:
            raise ValueError(f"scope {s!r}: one of {', '.join(SCOPES)}")
    with locked(path):
        tokens = read_tokens(path)
        ids = {t.id for t in tokens}
        tid = secrets.token_hex(4)
        while tid in ids:
            tid = secrets.token_hex(4)
        secret = f"{PREFIX}{tid}_{secrets.token_urlsafe(32)}"
        created = datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")
        created = created.replace("+00:00", "Z")
        entry = Token(tid, name, tuple(dict.fromkeys(scopes)), created, hash_token(secret))
        write_tokens(path, [*tokens, entry])
    return secret, entry


def revoke_token(path: Path, token_id: str) -> Token | None:
    with locked(path):
        tokens = read_tokens(path)
        gone = next((t for t in tokens if t.id == token_id), None)
        if gone is not None:
            write_tokens(path, [t for t in tokens if t.id != token_id])
    return gone


# ---------------------------------------------------------------------- what the API checks


class TokenStore:
    """The tokens the API accepts: the file's, re-read when it changes, plus the legacy one."""

    def __init__(
        self,
        path: Path,
        legacy: str = "",
        *,
        clock: Callable[[], float] = time.monotonic,
        interval: float = CHECK_INTERVAL,
    ) -> None:
        self.path = path
        self.clock = clock
        self.interval = interval
        self.legacy = (
            Token(LEGACY_ID, "api.token", ("admin",), "", hash_token(legacy)) if legacy else None
        )
        self.by_id: dict[str, Token] = {}
        self._stamp: tuple[int, int, int, int] | None = None
        self._next_check = 0.0
        self.reload("start", force=True)

    def _file_stamp(self) -> tuple[int, int, int, int] | None:
        try:
            st = self.path.stat()
        except FileNotFoundError:
            return None
        return (st.st_dev, st.st_ino, st.st_mtime_ns, st.st_size)

    def reload(self, why: str, *, force: bool = False) -> bool:
        """Re-read the file if it changed (or ``force``); ``True`` when the set changed."""
        try:
            stamp = self._file_stamp()
        except OSError:
            stamp = (-1, -1, -1, -1)  # reading it fails too, and says why (once)
        if stamp == self._stamp and not force:
            return False
        self._stamp = stamp
        try:
            tokens = read_tokens(self.path)
        except (OSError, ValueError) as exc:
            log.error(
                "api tokens: cannot load %s (%s): no token from it is accepted until it is fixed",
                self.path,
                exc,
            )
            tokens = []
        else:
            with contextlib.suppress(OSError):
                mode = self.path.stat().st_mode & 0o777
                if mode & 0o077:
                    log.warning("api tokens: %s is mode %o; it should be 0600", self.path, mode)
        before = set(self.by_id.items())
        self.by_id = {t.id: t for t in tokens}
        changed = before != set(self.by_id.items())
        if changed or why == "start":
            log.info("api tokens: %d from %s (%s)", len(self.by_id), self.path, why)
        return changed

    def maybe_reload(self) -> None:
        now = self.clock()
        if now < self._next_check:
            return
        self._next_check = now + self.interval
        self.reload("file changed")

    def authenticate(self, header: str) -> Token | None:
        """The token an ``Authorization`` header carries, or ``None``."""
        scheme, _, value = header.partition(" ")
        if scheme.lower() != "bearer" or not value:
            return None
        value = value.strip()
        digest = hash_token(value).encode()
        m = _TOKEN_RE.match(value)
        if m is not None:
            tok = self.by_id.get(m.group(1))
            if tok is not None and hmac.compare_digest(digest, tok.hash.encode()):
                return tok
        if self.legacy is not None and hmac.compare_digest(digest, self.legacy.hash.encode()):
            return self.legacy
        return None
