"""Console users: roles, password hashing, and the user/audit tables the CLI and server share.

Passwords are hashed with scrypt (``hashlib.scrypt``, in the standard library): memory-hard,
so that a stolen database cannot be brute-forced cheaply on GPUs. Argon2id (argon2-cffi) would
do the same job; scrypt needs no new C dependency on the box. The parameters follow OWASP's
minimum for scrypt (N=2^17, r=8, p=1: 128 MiB and a few hundred ms per hash) and are stored
beside each hash, so raising them later leaves existing passwords valid. The server hashes in a
worker thread, one at a time, so a burst of logins costs 128 MiB, not 128 MiB each.

Roles form a ladder matching the API's token scopes: ``viewer`` reads (``read``), ``operator``
also acts on incidents and rules (``write``), ``admin`` also manages users (``admin``).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import re
import secrets
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path

ROLES = ("viewer", "operator", "admin")
ROLE_SCOPE = {"viewer": "read", "operator": "write", "admin": "admin"}
SCRYPT_N = 2**17
SCRYPT_R = 8
SCRYPT_P = 1
_SALT_BYTES = 16
_HASH_BYTES = 32
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.@-]{0,63}$")
MAX_PASSWORD = 1024  # bytes: bounds the work an attacker can ask of one login
MIN_PASSWORD = 8


class UserError(ValueError):
    """A user name, role or password that cannot be accepted; the message says why."""


@dataclass(frozen=True, slots=True)
class User:
    name: str
    role: str
    created: float
    updated: float

    @property
    def scope(self) -> str:
        return ROLE_SCOPE[self.role]


def check_name(name: str) -> str:
    if not _NAME_RE.match(name):
        raise UserError(
            "user name: 1-64 characters, letters, digits and _ . @ -, starting with a letter"
            " or digit"
        )
    return name


def check_role(role: str) -> str:
    if role not in ROLES:
        raise UserError(f"role: one of {', '.join(ROLES)}")
    return role


def check_password(password: str) -> str:
    size = len(password.encode("utf-8", "surrogatepass"))
    if size < MIN_PASSWORD:
        raise UserError(f"password: at least {MIN_PASSWORD} characters")
    if size > MAX_PASSWORD:
        raise UserError(f"password: at most {MAX_PASSWORD} bytes")
    return password


def _scrypt(password: str, salt: bytes, n: int, r: int, p: int) -> bytes:
    return hashlib.scrypt(
        password.encode("utf-8", "surrogatepass"),
        salt=salt,
        n=n,
        r=r,
        p=p,
        maxmem=256 * r * n + 1024 * 1024,
        dklen=_HASH_BYTES,
    )


def hash_password(password: str) -> str:
    salt = secrets.token_bytes(_SALT_BYTES)
    digest = _scrypt(password, salt, SCRYPT_N, SCRYPT_R, SCRYPT_P)
    b64 = base64.b64encode
    return f"scrypt${SCRYPT_N}${SCRYPT_R}${SCRYPT_P}${b64(salt).decode()}${b64(digest).decode()}"


def verify_password(password: str, stored: str) -> bool:
    """Whether ``password`` matches ``stored``; a malformed hash matches nothing."""
    if len(password.encode("utf-8", "surrogatepass")) > MAX_PASSWORD:
        return False
    try:
        kind, n, r, p, salt, digest = stored.split("$")
        if kind != "scrypt":
            return False
        ni, ri, pi = int(n), int(r), int(p)
        if not (2 <= ni <= 2**20 and 1 <= ri <= 16 and 1 <= pi <= 4):
            return False
        want = base64.b64decode(digest, validate=True)
        got = _scrypt(password, base64.b64decode(salt, validate=True), ni, ri, pi)
    except ValueError:
        return False
    return hmac.compare_digest(got, want)


# A hash to verify against when the user does not exist, so that the answer takes as long as
# for a real user and does not tell which names exist. Made once, lazily.
_dummy: list[str] = []


def dummy_hash() -> str:
    if not _dummy:
        _dummy.append(hash_password(secrets.token_urlsafe(16)))
    return _dummy[0]


# ------------------------------------------------------------ the tables, for the CLI (sqlite3)


def connect(db_path: Path) -> sqlite3.Connection:
    """A connection to a migrated database (``appliance db migrate`` or a first run made it)."""
    if not db_path.exists():
        raise UserError(f"no database at {db_path}: run `appliance db migrate` first")
    conn = sqlite3.connect(db_path, isolation_level=None, timeout=10)
    conn.execute("PRAGMA busy_timeout=10000")
    (version,) = conn.execute("PRAGMA user_version").fetchone()
    if version < 13:
        conn.close()
        raise UserError(f"database {db_path} predates users: run `appliance db migrate` first")
    return conn


def audit(
    conn: sqlite3.Connection, actor: str, remote: str, action: str, target: str, detail: str = ""
) -> None:
    conn.execute(
        "INSERT INTO audit_log (ts, actor, remote, action, target, detail)"
        " VALUES (?, ?, ?, ?, ?, ?)",
        (time.time(), actor, remote, action, target, detail),
    )


def cli_actor() -> str:
    try:
        import pwd

        return f"cli:{pwd.getpwuid(os.geteuid()).pw_name}"
    except (ImportError, KeyError):
        return f"cli:uid{os.geteuid()}"


def list_users(conn: sqlite3.Connection) -> list[User]:
    rows = conn.execute(
        "SELECT name, role, created, updated FROM console_users ORDER BY name"
    ).fetchall()
    return [User(*row) for row in rows]


def add_user(conn: sqlite3.Connection, name: str, role: str, password: str, actor: str) -> User:
    check_name(name)
    check_role(role)
    check_password(password)
    hashed = hash_password(password)
    now = time.time()
    conn.execute("BEGIN IMMEDIATE")
    try:
        if conn.execute("SELECT 1 FROM console_users WHERE name = ?", (name,)).fetchone():
            raise UserError(f"user {name!r} exists (use `appliance users passwd`)")
        conn.execute(
            "INSERT INTO console_users (name, role, password, created, updated)"
            " VALUES (?, ?, ?, ?, ?)",
            (name, role, hashed, now, now),
        )
        audit(conn, actor, "local", "user.add", name, f"role={role}")
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    return User(name, role, now, now)


def set_password(conn: sqlite3.Connection, name: str, password: str, actor: str) -> None:
    """New password; every session of the user ends (a changed password locks out whoever
    had the old one)."""
    check_password(password)
    hashed = hash_password(password)
    conn.execute("BEGIN IMMEDIATE")
    try:
        cur = conn.execute(
            "UPDATE console_users SET password = ?, updated = ? WHERE name = ?",
            (hashed, time.time(), name),
        )
        if cur.rowcount == 0:
            raise UserError(f"no user {name!r}")
        conn.execute("DELETE FROM console_sessions WHERE username = ?", (name,))
        audit(conn, actor, "local", "user.passwd", name)
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise


def remove_user(conn: sqlite3.Connection, name: str, actor: str) -> None:
    conn.execute("BEGIN IMMEDIATE")
    try:
        cur = conn.execute("DELETE FROM console_users WHERE name = ?", (name,))
        if cur.rowcount == 0:
            raise UserError(f"no user {name!r}")
        conn.execute("DELETE FROM console_sessions WHERE username = ?", (name,))
        audit(conn, actor, "local", "user.remove", name)
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise
