"""Console sessions, login throttling, CSRF and the audit log, on the appliance's database.

A session is a random 256-bit cookie value (``sem_session``: HttpOnly, SameSite=Strict, Secure
when served over TLS); the database keeps only its SHA-256, so a copy of the database logs
nobody in. Each session carries a synchronizer CSRF token that its pages send back in the
``X-CSRF-Token`` header (fetch) or a ``csrf`` form field: SameSite=Strict already keeps other
sites' requests from carrying the cookie, the token covers browsers and proxies that do not
honour it. Sessions end after ``console.session_idle`` without a request (``last_seen`` is
written at most once a minute, so at most a minute early), ``console.session_max`` after
login, at logout, and when the user's password changes or the user is removed.

Login throttling counts wrong passwords per client address and per user name in memory (a
restart forgets them; the scrypt cost already bounds guessing to a few per second):
``login_max_failures`` within ``login_window`` locks the address or name out for
``login_lockout`` seconds. The tables of failures are bounded, oldest dropped first.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import secrets
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from appliance.config import ConsoleSection
from appliance.console import users as u
from appliance.logutil import RateLimitedLog, printable
from appliance.metrics import Registry
from appliance.store import Store

log = logging.getLogger(__name__)
_rl = RateLimitedLog(log)

COOKIE = "sem_session"
CSRF_HEADER = "X-CSRF-Token"
MAX_TRACKED = 10_000
LOGIN_RESULTS = ("ok", "bad_credentials", "locked_out")
AUDIT_KEEP = 100_000  # newest audit entries kept


@dataclass(frozen=True, slots=True)
class Session:
    id_hash: str
    username: str
    role: str
    csrf: str
    created: float
    last_seen: float

    @property
    def scope(self) -> str:
        return u.ROLE_SCOPE[self.role]

    def allows(self, role: str) -> bool:
        return u.ROLES.index(self.role) >= u.ROLES.index(role)


def _hash(value: str) -> str:
    return hashlib.sha256(value.encode("utf-8", "replace")).hexdigest()


class LoginThrottle:
    """Failed logins per key (``ip:...`` / ``user:...``) and the lockouts they earned."""

    def __init__(self, cfg: ConsoleSection, clock: Callable[[], float] = time.monotonic) -> None:
        self.cfg = cfg
        self.clock = clock
        self.failures: OrderedDict[str, deque[float]] = OrderedDict()
        self.locked: OrderedDict[str, float] = OrderedDict()

    def locked_for(self, *keys: str) -> float:
        """Seconds until every key may try again (0 when none is locked)."""
        now = self.clock()
        wait = 0.0
        for key in keys:
            until = self.locked.get(key)
            if until is None:
                continue
            if until <= now:
                del self.locked[key]
            else:
                wait = max(wait, until - now)
        return wait

    def failed(self, *keys: str) -> None:
        now = self.clock()
        for key in keys:
            times = self.failures.pop(key, None) or deque()
            times.append(now)
            while times and times[0] < now - self.cfg.login_window:
                times.popleft()
            if len(times) >= self.cfg.login_max_failures:
                self.locked[key] = now + self.cfg.login_lockout
                self.locked.move_to_end(key)
                times.clear()
                _rl.warning(
                    f"lockout:{key[:5]}",
                    "console: %s locked out of login for %.0f s after %d failures",
                    printable(key, 80),
                    self.cfg.login_lockout,
                    self.cfg.login_max_failures,
                )
            self.failures[key] = times
            for table in (self.failures, self.locked):
                while len(table) > MAX_TRACKED:
                    table.popitem(last=False)

    def succeeded(self, *keys: str) -> None:
        for key in keys:
            self.failures.pop(key, None)


class ConsoleAuth:
    """Users, sessions and audit entries of one running appliance."""

    def __init__(self, store: Store, cfg: ConsoleSection, metrics: Registry) -> None:
        self.store = store
        self.cfg = cfg
        self.throttle = LoginThrottle(cfg)
        # One scrypt at a time: 128 MiB each; a burst of logins waits instead of swapping.
        self._hashing = asyncio.Semaphore(1)
        self.logins = metrics.counter(
            "console_logins_total",
            "Console login attempts by result: ok, bad_credentials (unknown user or wrong"
            " password), locked_out (refused by the login throttle).",
            ["result"],
        )
        for result in LOGIN_RESULTS:
            self.logins.inc(result, n=0)
        self.csrf_failures = metrics.counter(
            "console_csrf_failures_total",
            "Console requests that changed state without the session's CSRF token (refused).",
        )

    async def _fetchone(self, sql: str, args: tuple[Any, ...]) -> Any:
        conn = self.store.reader
        assert conn is not None
        async with conn.execute(sql, args) as cur:
            return await cur.fetchone()

    async def login(self, username: str, password: str, remote: str) -> tuple[str, str] | float:
        """``(cookie value, csrf token)`` on success, else the seconds of lockout left (0.0
        for plain bad credentials)."""
        keys = (f"ip:{remote}", f"user:{username[:64]}")
        wait = self.throttle.locked_for(*keys)
        if wait > 0:
            self.logins.inc("locked_out")
            return wait
        row = await self._fetchone(
            "SELECT password FROM console_users WHERE name = ?", (username[:200],)
        )
        stored = row[0] if row else u.dummy_hash()
        async with self._hashing:
            ok = await asyncio.to_thread(u.verify_password, password, stored)
        if not ok or row is None:
            self.logins.inc("bad_credentials")
            self.throttle.failed(*keys)
            _rl.warning(
                "login:bad",
                "console: failed login for %r from %s",
                printable(username, 64),
                remote,
            )
            return 0.0
        self.throttle.succeeded(*keys)
        self.logins.inc("ok")
        cookie = secrets.token_urlsafe(32)
        csrf = secrets.token_urlsafe(32)
        now = time.time()
        async with self.store.transaction() as conn:
            await conn.execute(
                "DELETE FROM console_sessions WHERE last_seen < ? OR created < ?",
                (now - self.cfg.session_idle, now - self.cfg.session_max),
            )
            await conn.execute(
                "INSERT INTO console_sessions (id_hash, username, csrf, created, last_seen,"
                " remote) VALUES (?, ?, ?, ?, ?, ?)",
                (_hash(cookie), username, csrf, now, now, remote),
            )
            await self._audit(conn, username, remote, "login", username, "")
        return cookie, csrf

    async def session(self, cookie: str | None) -> Session | None:
        """The live session a cookie names (its idle clock restarted), or ``None``."""
        if not cookie or len(cookie) > 100:
            return None
        id_hash = _hash(cookie)
        row = await self._fetchone(
            "SELECT s.username, u.role, s.csrf, s.created, s.last_seen FROM console_sessions s"
            " JOIN console_users u ON u.name = s.username WHERE s.id_hash = ?",
            (id_hash,),
        )
        if row is None:
            return None
        username, role, csrf, created, last_seen = row
        now = time.time()
        if now - last_seen > self.cfg.session_idle or now - created > self.cfg.session_max:
            await self.logout_hash(id_hash)
            return None
        if role not in u.ROLES:
            return None
        if now - last_seen > min(60.0, self.cfg.session_idle / 10):
            async with self.store.transaction() as conn:
                await conn.execute(
                    "UPDATE console_sessions SET last_seen = ? WHERE id_hash = ?", (now, id_hash)
                )
            last_seen = now
        return Session(id_hash, username, role, csrf, created, last_seen)

    def csrf_ok(self, session: Session, presented: str | None) -> bool:
        ok = bool(presented) and hmac.compare_digest(
            (presented or "").encode("utf-8", "replace"), session.csrf.encode()
        )
        if not ok:
            self.csrf_failures.inc()
        return ok

    async def logout_hash(self, id_hash: str) -> None:
        async with self.store.transaction() as conn:
            await conn.execute("DELETE FROM console_sessions WHERE id_hash = ?", (id_hash,))

    async def logout(self, session: Session, remote: str) -> None:
        async with self.store.transaction() as conn:
            await conn.execute("DELETE FROM console_sessions WHERE id_hash = ?", (session.id_hash,))
            await self._audit(conn, session.username, remote, "logout", session.username, "")

    @staticmethod
    async def _audit(
        conn: Any, actor: str, remote: str, action: str, target: str, detail: str
    ) -> None:
        cur = await conn.execute(
            "INSERT INTO audit_log (ts, actor, remote, action, target, detail)"
            " VALUES (?, ?, ?, ?, ?, ?)",
            (time.time(), actor, remote, action, target[:500], detail[:2000]),
        )
        # Bounded: a script acking incidents all day must not grow the table without end.
        # One range delete on the primary key, only when the id crosses a multiple of 1000.
        last = cur.lastrowid or 0
        if last % 1000 == 0 and last > AUDIT_KEEP:
            await conn.execute("DELETE FROM audit_log WHERE id <= ?", (last - AUDIT_KEEP,))

    async def audit(self, actor: str, remote: str, action: str, target: str, detail: str) -> None:
        async with self.store.transaction() as conn:
            await self._audit(conn, actor, remote, action, target, detail)

    async def audit_entries(
        self, *, since: float | None, actor: str | None, limit: int
    ) -> list[dict[str, Any]]:
        clauses: list[str] = []
        args: list[Any] = []
        if since is not None:
            clauses.append("ts >= ?")
            args.append(since)
        if actor:
            clauses.append("actor = ?")
            args.append(actor)
        where = f"WHERE {' AND '.join(clauses)}" if clauses else ""
        sql = (
            "SELECT id, ts, actor, remote, action, target, detail FROM audit_log "  # noqa: S608
            + where
            + " ORDER BY id DESC LIMIT ?"
        )
        args.append(limit)
        conn = self.store.reader
        assert conn is not None
        async with conn.execute(sql, args) as cur:
            rows = await cur.fetchall()
        keys = ("id", "ts", "actor", "remote", "action", "target", "detail")
        return [dict(zip(keys, r, strict=True)) for r in rows]
