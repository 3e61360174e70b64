"""The responder: plans actions inside the incident's transaction, carries them out after it.

Durability: :meth:`Responder.hook` is one of the appliance's ``incident_hooks``, so the planned
row (and its audit line) commit with the incident or not at all. The worker then executes what
is due, records the outcome durably, and lifts each block when its TTL passes; at start
anything overdue runs at once, so a restart (or a power cut) delays an undo but never loses it.
A crash between a call and its record repeats the call after the restart (at least once);
firewall alias add/delete are idempotent, so that is harmless.

Safety: a value must parse as its type, an address in the never-block list is refused, a
value already held by the action is not acted on twice, and at most ``max_per_minute``
actions are planned a minute. Each of those is a row and an audit line, never silence.
"""

from __future__ import annotations

import asyncio
import contextlib
import fnmatch
import logging
import random
import ssl
from collections.abc import Callable
from typing import Any

import aiosqlite

from appliance.config import AppConfig, RespondAction
from appliance.logutil import RateLimitedLog
from appliance.metrics import Registry
from appliance.respond import ledger
from appliance.respond.calls import Call, CallFailed, basic_auth, build_call, run_call
from appliance.respond.safety import NeverBlock, RateLimit
from appliance.respond.values import BadValue, parse_ident, typed
from appliance.store import Store

log = logging.getLogger(__name__)
_rl = RateLimitedLog(log)
SEVERITIES = ("informational", "low", "medium", "high", "critical")
IDLE_WAKE = 60.0  # seconds between worker passes when nothing is due
PURGE_INTERVAL = 3600.0
DUE_BATCH = 64
EVIDENCE_LOOKUP = 10  # evidence events read for a value the incident's group lacks
JOB_ERROR_PAUSE = 5.0  # seconds before a job whose record failed (database) is due again
STOP_GRACE = 10.0  # seconds in-flight calls get to finish and be recorded at stop


class UndoRefused(Exception):
    """The action cannot be undone from its current state."""


def matches(action: RespondAction, incident: dict[str, Any]) -> bool:
    sev = incident.get("severity", "medium")
    if sev not in SEVERITIES or SEVERITIES.index(sev) < SEVERITIES.index(action.min_severity):
        return False
    rule = incident.get("rule") or {}
    if action.rules and not any(
        fnmatch.fnmatchcase(str(rule.get("id", "")), pat) for pat in action.rules
    ):
        return False
    tags = [str(t) for t in rule.get("tags") or []]
    return not action.tags or any(fnmatch.fnmatchcase(t, p) for t in tags for p in action.tags)


def in_networks(ip: str, networks: list[str]) -> bool:
    from netaddr import IPAddress, IPNetwork

    addr = IPAddress(ip)
    return any(addr in IPNetwork(n) for n in networks)


def secret_of(action: RespondAction, cfg: AppConfig) -> str:
    if action.password_file:
        return cfg.path(action.password_file).read_text(encoding="utf-8").strip()
    return action.password


class Responder:
    def __init__(
        self,
        store: Store,
        config: AppConfig,
        metrics: Registry,
        clock: Callable[[], float],
        *,
        own_addresses: list[str] | None = None,
        rand: random.Random | None = None,
    ) -> None:
        self.store = store
        self.metrics = metrics
        self.clock = clock
        self.rand = rand or random.Random()  # backoff jitter, not a secret
        self.events = metrics.counter(
            "respond_events_total",
            "Active response audit events by action and event (planned, executed, dry_run,"
            " refused, duplicate, retry, failed, expired, undo_requested, undone, undo_failed,"
            " cancelled).",
            ["action", "event"],
        )
        self.refused = metrics.counter(
            "respond_refused_total",
            "Actions refused by reason: never_block, bad_value, no_value, rate_limit.",
            ["reason"],
        )
        self._own = own_addresses
        self.configure(config)
        self.inflight: set[int] = set()
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._jobs: set[asyncio.Task[None]] = set()
        self._last_purge = 0.0

    def configure(self, config: AppConfig) -> None:
        self.config = config
        r = config.respond
        self.actions = {a.name: a for a in r.actions}
        self.never = NeverBlock.from_config(config, self._own)
        self.rate = RateLimit(r.max_per_minute)
        self.sem = asyncio.Semaphore(r.concurrency)

    # --------------------------------------------------------------------------- planning

    async def _audit(
        self, conn: aiosqlite.Connection, now: float, event: str, action: str, **kw: Any
    ) -> None:
        await ledger.audit(conn, now, event, action, **kw)
        self.events.inc(action, event)

    def values_for(
        self, action: RespondAction, value: str, incident_id: str, rule_id: str
    ) -> dict[str, str]:
        values = {
            action.target_type: value,
            "value": value,
            "ttl": str(int(action.ttl)),
            "incident_id": parse_ident(incident_id),
            "action": action.name,
            "alias": parse_ident(action.alias),
        }
        with contextlib.suppress(BadValue):
            values["rule_id"] = parse_ident(rule_id)
        return values

    async def hook(self, conn: aiosqlite.Connection, incident: dict[str, Any]) -> None:
        """Plan the matching actions for an open incident, in the incident's transaction."""
        if conn is not self.store.writer or incident.get("status") != "open":
            return
        planned = False
        for action in self.actions.values():
            if action.enabled and matches(action, incident):
                planned |= await self._plan(conn, action, incident)
        if planned:
            self._wake.set()  # the worker's pass waits for this transaction's commit

    async def _plan(
        self, conn: aiosqlite.Connection, action: RespondAction, incident: dict[str, Any]
    ) -> bool:
        """Record what ``action`` does about ``incident``; ``True`` when a call is due."""
        inc_id = str(incident.get("id", ""))
        if await ledger.planned_for(conn, action.name, inc_id):
            return False  # a later revision of an incident already handled
        now = self.clock()
        rule_id = str((incident.get("rule") or {}).get("id", ""))
        raw: object = (incident.get("group") or {}).get(action.target_field)
        common = {"action": action.name, "incident_id": inc_id, "rule_id": rule_id}

        async def refuse(reason: str, detail: str, value: str) -> None:
            self.refused.inc(reason)
            _rl.warning(
                f"respond-refused:{reason}",
                "respond %s: refused for incident %s: %s",
                action.name,
                inc_id,
                detail,
            )
            row = await ledger.insert(
                conn,
                **common,
                value=value,
                state="refused",
                dry_run=action.dry_run,
                ttl=action.ttl,
                now=now,
                last_error=detail,
            )
            await self._audit(
                conn,
                now,
                "refused",
                action.name,
                action_id=row,
                incident_id=inc_id,
                value=value,
                detail=f"{reason}: {detail}",
            )

        if raw is None:
            raw, missing = await self._from_evidence(incident, action.target_field)
            if raw is None:
                await refuse("no_value", missing, "")
                return False
        try:
            value = typed(action.target_type, raw)
            call = build_call(action, self.values_for(action, value, inc_id, rule_id), undo=False)
        except BadValue as exc:
            shown = str(raw)[:200]
            await refuse("bad_value", f"{action.target_field}: {exc}", shown)
            return False
        if action.target_type == "ip":
            if action.source_networks and not in_networks(value, action.source_networks):
                return False  # outside the action's scope: not a match, nothing to audit
            allowed_why = self.never.reason(value)
            if allowed_why is not None:
                msg = f"{value} is in the never-block list: {allowed_why}"
                await refuse("never_block", msg, value)
                return False
        held = await ledger.held_by(conn, action.name, value)
        if held is not None:
            row = await ledger.insert(
                conn,
                **common,
                value=value,
                state="duplicate",
                dry_run=action.dry_run,
                ttl=action.ttl,
                now=now,
                last_error=f"already held by action {held}",
            )
            await self._audit(
                conn,
                now,
                "duplicate",
                action.name,
                action_id=row,
                incident_id=inc_id,
                value=value,
                detail=f"already held by action {held}",
            )
            return False
        if not self.rate.allow(now):
            limit = self.config.respond.max_per_minute
            await refuse("rate_limit", f"more than {limit} actions in a minute", value)
            return False
        row = await ledger.insert(
            conn,
            **common,
            value=value,
            state="pending",
            dry_run=action.dry_run,
            ttl=action.ttl,
            now=now,
        )
        assert call is not None
        await self._audit(
            conn,
            now,
            "planned",
            action.name,
            action_id=row,
            incident_id=inc_id,
            value=value,
            detail=("dry run: " if action.dry_run else "") + call.describe(),
        )
        return True

    async def _from_evidence(self, incident: dict[str, Any], field: str) -> tuple[str | None, str]:
        """The field's value from the incident's evidence events when the group lacks it.

        Only when every evidence event read agrees: a rule grouped by user name may have
        seen many addresses, and blocking one of them at random would be wrong.
        """
        ids = [
            i for i in (incident.get("evidence") or {}).get("event_ids", []) if isinstance(i, int)
        ]
        seen: set[str] = set()
        for event_id in ids[-EVIDENCE_LOOKUP:]:
            found = await self.store.query_events(before_id=event_id + 1, limit=1)
            if found and found[0].id == event_id:
                value = found[0].get(field)
                if value is not None:
                    seen.add(str(value))
        if len(seen) == 1:
            return seen.pop(), ""
        if not seen:
            return None, f"neither the incident's group nor its evidence has {field}"
        return None, f"the evidence has {len(seen)} different {field} values"

    # ----------------------------------------------------------------------------- worker

    async def start(self) -> None:
        self._task = asyncio.create_task(self._loop(), name="respond-worker")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(BaseException):
                await self._task
            self._task = None
        # A call already under way is let finish and recorded (bounded): cancelled between the
        # call and its commit, a block would be in place but not "active" in the ledger, and a
        # later undo would cancel it instead of lifting it.
        jobs = list(self._jobs)
        if jobs:
            _done, pending = await asyncio.wait(jobs, timeout=STOP_GRACE)
            for job in pending:
                job.cancel()
            for job in pending:
                with contextlib.suppress(BaseException):
                    await job

    def wake(self) -> None:
        self._wake.set()

    async def _loop(self) -> None:
        while True:
            try:
                wait = await self.run_due()
            except Exception:
                _rl.log(logging.ERROR, "respond-loop", "respond: worker pass failed", exc_info=True)
                wait = 5.0
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), max(0.01, wait))
            self._wake.clear()

    async def run_due(self, *, wait: bool = False) -> float:
        """One pass: expire what passed its TTL, start what is due; seconds to the next.

        ``wait=True`` (the offline CLI) runs the started calls to their end before returning.
        """
        now = self.clock()
        async with self.store.transaction(durable=True) as conn:
            for row in await ledger.expire(conn, now):
                await self._audit(
                    conn,
                    now,
                    "expired",
                    row.action,
                    action_id=row.id,
                    incident_id=row.incident_id,
                    value=row.value,
                    detail=f"ttl {row.ttl:g} s passed",
                )
            rows = await ledger.due(conn, now, self.inflight, DUE_BATCH)
            if now - self._last_purge > PURGE_INTERVAL:
                self._last_purge = now
                await ledger.purge(conn, now - self.config.respond.history_days * 86400)
        started = []
        for row in rows:
            self.inflight.add(row.id)
            job = asyncio.create_task(self._run(row), name=f"respond-{row.id}")
            self._jobs.add(job)
            job.add_done_callback(self._jobs.discard)
            started.append(job)
        if wait and started:
            await asyncio.gather(*started, return_exceptions=True)
        reader = self.store.reader
        assert reader is not None
        nxt = await ledger.next_due(reader, self.inflight)
        return IDLE_WAKE if nxt is None else min(IDLE_WAKE, max(0.0, nxt - self.clock()))

    def _backoff(self, action: RespondAction, attempts: int) -> float:
        base = min(action.backoff_cap, action.backoff_base * 2 ** (attempts - 1))
        return base * (0.5 + self.rand.random() / 2)

    async def _execute(self, action: RespondAction, call: Call) -> str:
        auth = None
        ctx: ssl.SSLContext | None = None
        if call.kind == "http":
            if action.username:
                auth = basic_auth(action.username, secret_of(action, self.config))
            if action.ca_file:
                ctx = ssl.create_default_context(cafile=str(self.config.path(action.ca_file)))
        return await run_call(call, timeout=action.timeout, auth=auth, ssl_ctx=ctx)

    async def _run(self, row: ledger.ActionRow) -> None:
        try:
            async with self.sem:
                await self._run_one(row)
        except Exception:
            _rl.log(logging.ERROR, "respond-job", "respond: action %d failed", row.id,
                    exc_info=True)  # fmt: skip
            await asyncio.sleep(JOB_ERROR_PAUSE)  # the outcome was not recorded: not a hot loop
        finally:
            self.inflight.discard(row.id)
            self._wake.set()

    async def _run_one(self, row: ledger.ActionRow) -> None:
        undo = row.state == "undo_pending"
        action = self.actions.get(row.action)
        kw = {"action_id": row.id, "incident_id": row.incident_id, "value": row.value}
        error: CallFailed | None = None
        detail = ""
        if action is None:
            error = CallFailed("the action is no longer configured", retryable=False)
        else:
            try:
                call = build_call(
                    action,
                    self.values_for(action, row.value, row.incident_id, row.rule_id),
                    undo=undo,
                )
            except BadValue as exc:
                call, error = None, CallFailed(str(exc), retryable=False)
            if call is None and error is None:
                detail = "no undo call configured: nothing to lift"
            elif call is not None and row.dry_run:
                detail = f"dry run: would {'undo' if undo else 'run'} {call.describe()}"
                log.warning("respond %s (action %d): %s", row.action, row.id, detail)
            elif call is not None:
                try:
                    out = await self._execute(action, call)
                    detail = call.describe() + (f" -> {out}" if out else "")
                    log.warning(
                        "respond %s (action %d): %s %s",
                        row.action,
                        row.id,
                        "lifted" if undo else "executed",
                        call.describe(),
                    )
                except CallFailed as exc:
                    error = exc
                except Exception as exc:  # a secret file gone, a bad CA file: retry, visibly
                    error = CallFailed(f"{type(exc).__name__}: {exc}")
        now = self.clock()
        async with self.store.transaction(durable=True) as conn:
            if error is None:
                await self._succeeded(conn, row, undo, now, detail, **kw)
            else:
                await self._failed(conn, row, action, undo, error, now, **kw)

    async def _succeeded(
        self,
        conn: aiosqlite.Connection,
        row: ledger.ActionRow,
        undo: bool,
        now: float,
        detail: str,
        **kw: Any,
    ) -> None:
        if undo:
            await ledger.set_state(conn, row.id, "undone", now, last_error=None)
            await self._audit(conn, now, "undone", row.action, detail=detail, **kw)
            return
        expires = now + row.ttl if row.ttl else None
        event = "dry_run" if row.dry_run else "executed"
        if await ledger.set_state(
            conn, row.id, "active", now, expect="pending", executed=now, expires=expires,
            last_error=None,
        ):  # fmt: skip
            await self._audit(conn, now, event, row.action, detail=detail, **kw)
            return
        # Cancelled while the call ran: the block is in place, so it must be lifted now.
        await ledger.set_state(conn, row.id, "undo_pending", now, executed=now, next_attempt=now)
        await self._audit(
            conn, now, event, row.action, detail=detail + " (cancelled meanwhile: lifting)", **kw
        )

    async def _failed(
        self,
        conn: aiosqlite.Connection,
        row: ledger.ActionRow,
        action: RespondAction | None,
        undo: bool,
        error: CallFailed,
        now: float,
        **kw: Any,
    ) -> None:
        attempts = row.attempts + 1
        text = str(error)
        limit = action.max_attempts if action else 1
        _rl.warning(
            f"respond-fail:{row.action}",
            "respond %s (action %d): %s failed (attempt %d of %d): %s",
            row.action,
            row.id,
            "undo" if undo else "call",
            attempts,
            limit,
            text,
        )
        expect = "undo_pending" if undo else "pending"
        if action is not None and error.retryable and attempts < limit:
            nxt = now + self._backoff(action, attempts)
            await ledger.set_state(
                conn, row.id, expect, now, expect=expect, attempts=attempts, next_attempt=nxt,
                last_error=text,
            )  # fmt: skip
            await self._audit(
                conn, now, "retry", row.action, detail=f"attempt {attempts}: {text}", **kw
            )
            return
        final = "undo_failed" if undo else "failed"
        await ledger.set_state(
            conn, row.id, final, now, expect=expect, attempts=attempts, last_error=text
        )
        await self._audit(conn, now, final, row.action, detail=f"gave up: {text}", **kw)

    # ------------------------------------------------------------------------ manual undo

    async def undo(self, action_id: int, actor: str) -> ledger.ActionRow | None:
        """Ask for the block to be lifted now; ``None`` if there is no such action.

        An action not yet executed is cancelled; an active one (or one whose undo failed)
        goes to ``undo_pending`` and the worker lifts it. Anything else is
        :class:`UndoRefused`.
        """
        now = self.clock()
        async with self.store.transaction(durable=True) as conn:
            row = await ledger.get(conn, action_id)
            if row is None:
                return None
            kw = {"action_id": row.id, "incident_id": row.incident_id, "value": row.value}
            if row.state in ("pending", "failed"):
                await ledger.set_state(conn, row.id, "cancelled", now, expect=row.state)
                await self._audit(
                    conn, now, "cancelled", row.action, actor=actor, detail="manual undo", **kw
                )
            elif row.state in ("active", "undo_failed"):
                await ledger.set_state(
                    conn, row.id, "undo_pending", now, expect=row.state, attempts=0,
                    next_attempt=now,
                )  # fmt: skip
                await self._audit(
                    conn, now, "undo_requested", row.action, actor=actor, detail="manual undo",
                    **kw,
                )  # fmt: skip
            elif row.state != "undo_pending":
                raise UndoRefused(f"action {row.id} is {row.state}: nothing to undo")
            row = await ledger.get(conn, action_id)
        self._wake.set()
        return row

    async def run_one(self, action_id: int) -> ledger.ActionRow | None:
        """Carry out one row now if it is due work (the offline ``appliance respond undo``:
        only what was asked for, not every other due action); the row afterwards."""
        async with self.store.transaction() as conn:
            row = await ledger.get(conn, action_id)
        if row is not None and row.state in ("pending", "undo_pending"):
            self.inflight.add(row.id)
            await self._run(row)
            async with self.store.transaction() as conn:
                row = await ledger.get(conn, action_id)
        return row

    async def list_actions(
        self, *, state: str | None = None, action: str | None = None, limit: int = 100
    ) -> list[ledger.ActionRow]:
        conn = self.store.reader
        assert conn is not None
        return await ledger.list_actions(conn, state=state, action=action, limit=limit)
