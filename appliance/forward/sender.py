"""One sender task per upstream: oldest rows first, acknowledged before deleted, backoff between.

Order: the sender always sends the head of its queue, so delivery follows creation order; a
failed batch is retried before anything newer. A rejected item (4xx) goes alone on its next
tries and is dead-lettered after ``max_rejections``, so one poisoned item never blocks the
rest. Transient failures (connect, TLS, timeout, 408/429/5xx) back off with capped
exponential delay and full jitter, or the server's ``Retry-After``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import ssl
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import aiohttp

from appliance.config import UpstreamSection
from appliance.forward.formats.base import Format, HttpRequest, OutboxItem, Outcome, Verdict
from appliance.forward.formats.splunk_hec import SplunkHecFormat
from appliance.forward.formats.webhook import batch_id
from appliance.forward.outbox import Outbox, SpoolStats
from appliance.forward.transport import backoff_delay, webhook_signature
from appliance.logutil import RateLimitedLog, printable
from appliance.metrics import Registry

log = logging.getLogger(__name__)

MAX_RESPONSE_BYTES = 4 * 1024 * 1024
USER_AGENT = "sem-appliance-forward"


@dataclass(frozen=True, slots=True)
class Credentials:
    token: str = ""
    hmac_key: bytes = b""

    def __repr__(self) -> str:  # never print secrets, even in a traceback's locals
        return "Credentials(<redacted>)"


AUTH_SCHEME = {
    "webhook": "Bearer",
    "otlp_logs": "Bearer",
    "splunk_hec": "Splunk",
    "elastic_bulk": "ApiKey",
}


def public_url(url: str) -> str:
    """The URL without any ``user:password@`` part, for status output."""
    from urllib.parse import urlsplit, urlunsplit

    parts = urlsplit(url)
    netloc = parts.netloc.rpartition("@")[2]
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


def _detail(exc: BaseException) -> str:
    """Exception text for last_error: class and message (host, port, TLS reason), escaped.
    Requests carry secrets only in headers, which aiohttp errors do not include."""
    return printable(f"{type(exc).__name__}: {exc}", 200)


class ForwardMetrics:
    def __init__(self, metrics: Registry) -> None:
        up = ["upstream"]
        self.enqueued = metrics.counter("forward_enqueued_total", "Outbox rows written.", up)
        self.delivered = metrics.counter(
            "forward_delivered_total", "Items acknowledged by the upstream.", up
        )
        self.duplicates = metrics.counter(
            "forward_duplicates_total",
            "Items the upstream already had (409): counted as delivered too.",
            up,
        )
        self.failures = metrics.counter(
            "forward_failures_total",
            "Failed delivery attempts, by reason (connect, timeout, tls_verify, http_NNN...).",
            ["upstream", "reason"],
        )
        self.dead = metrics.counter(
            "forward_dead_lettered_total", "Items parked after max_rejections 4xx answers.", up
        )
        self.dropped = metrics.counter(
            "forward_dropped_total",
            "Outbox rows dropped by the spool limits (age, spool_full).",
            ["upstream", "reason"],
        )
        self.discarded = metrics.counter(
            "forward_upstream_discarded_total",
            "Records the upstream accepted the request for but said it discarded"
            " (OTLP partialSuccess.rejectedLogRecords).",
            up,
        )
        self.requests = metrics.counter(
            "forward_requests_total", "HTTP requests sent upstream.", up
        )


class UpstreamSender:
    def __init__(
        self,
        cfg: UpstreamSection,
        outbox: Outbox,
        fmt: Format,
        *,
        ssl_ctx: ssl.SSLContext,
        creds: Credentials,
        metrics: ForwardMetrics,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        rand: random.Random | None = None,
        barrier: Callable[[], Awaitable[None]] | None = None,
        stream: str = "incident",
    ) -> None:
        self.cfg = cfg
        # The incident lane is named after the upstream; the raw-event lane "<name>/events"
        # (names cannot contain "/"), in the outbox and in metric labels.
        self.stream = stream
        self.name = cfg.name if stream == "incident" else f"{cfg.name}/events"
        self.outbox = outbox
        self.fmt = fmt
        self.ssl_ctx = ssl_ctx
        self.creds = creds
        self.m = metrics
        self.clock = clock
        self.sleep = sleep
        self.rand = rand or random.Random()
        self.barrier = barrier
        self.session: aiohttp.ClientSession | None = None
        self.task: asyncio.Task[None] | None = None
        self.channel = str(uuid.uuid4())
        self.failures = 0
        self.last_success: float | None = None
        self.last_error = ""
        self.stats = SpoolStats()
        self._wake = asyncio.Event()
        self._rlog = RateLimitedLog(log, 30.0)
        self._last_maintenance = 0.0
        self._last_refresh = 0.0

    # ------------------------------------------------------------------------- lifecycle

    async def start(self) -> None:
        connector = aiohttp.TCPConnector(ssl=self.ssl_ctx, limit=2)
        self.session = aiohttp.ClientSession(
            connector=connector,
            timeout=aiohttp.ClientTimeout(
                total=self.cfg.request_timeout, sock_connect=self.cfg.connect_timeout
            ),
            headers={"User-Agent": USER_AGENT},
            raise_for_status=False,
        )
        self.last_success = await self.outbox.last_success(self.name)
        await self.refresh_stats()
        self.task = asyncio.create_task(self.run(), name=f"forward-{self.name}")

    async def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()
            with contextlib.suppress(BaseException):
                await self.task
            self.task = None
        if self.session is not None:
            await self.session.close()
            self.session = None

    def wake(self) -> None:
        self._wake.set()

    # ------------------------------------------------------------------------------ loop

    async def run(self) -> None:
        while True:
            try:
                await self.maintain()
                items = await self.outbox.head(
                    self.name, self.cfg.batch_size, self.cfg.batch_max_bytes
                )
                if not items:
                    await self._idle()
                    continue
                verdict = await self.attempt(items)
                await self.settle(items, verdict)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                # A bug or a database error must not kill forwarding: log, back off, go on.
                self.failures += 1
                self.m.failures.inc(self.name, "internal")
                self._rlog.log(logging.ERROR, "internal", "forward %s: %r", self.name, exc)
                await self.sleep(self._delay(None))

    async def _idle(self) -> None:
        # The wake flag is cleared only here, after the wait: a wake that came while the
        # queue was being read (from a transaction not yet committed) is never lost.
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wake.wait(), self.cfg.poll_interval)
        if self._wake.is_set():
            self._wake.clear()
            if self.barrier is not None:
                # Woken from inside an incident transaction: wait for it to commit.
                await self.barrier()

    async def maintain(self, force: bool = False) -> None:
        mono = time.monotonic()
        if not force and mono - self._last_maintenance < max(1.0, self.cfg.poll_interval):
            return
        self._last_maintenance = mono
        await self.refresh_stats(force=True)
        if not (self.stats.pending or self.stats.dead):
            return  # nothing to age out: do not take the writer for an empty transaction
        async with self.outbox.store.transaction(durable=True) as conn:
            dropped = await Outbox.trim(
                conn,
                self.name,
                max_bytes=self.cfg.spool_max_bytes,
                max_age=self.cfg.spool_max_age,
                now=self.clock(),
                check_bytes=self.stats.bytes > self.cfg.spool_max_bytes * 0.9,
            )
        self.count_drops(dropped)
        await self.refresh_stats(force=True)

    def count_drops(self, dropped: dict[str, int]) -> None:
        for reason, n in dropped.items():
            if n:
                self.m.dropped.inc(self.name, reason, n=n)
                self._rlog.warning(
                    f"drop-{reason}",
                    "forward %s: spool dropped %d row(s) (%s)",
                    self.name,
                    n,
                    reason,
                )

    async def refresh_stats(self, force: bool = False) -> None:
        """Re-read backlog figures (a scan of this upstream's rows): at most twice a second
        while draining, so a deep backlog does not slow its own drain."""
        mono = time.monotonic()
        if force or mono - self._last_refresh >= 0.5 or self.stats.pending <= self.cfg.batch_size:
            self._last_refresh = mono
            self.stats = await self.outbox.stats(self.name)

    def _delay(self, retry_after: float | None) -> float:
        c = self.cfg
        return backoff_delay(
            self.failures,
            retry_after,
            base=c.backoff_base,
            cap=c.backoff_cap,
            retry_after_max=c.retry_after_max,
            rand=self.rand,
        )

    async def settle(self, items: list[OutboxItem], verdict: Verdict) -> None:
        now = self.clock()
        s = await self.outbox.settle(
            self.name,
            verdict.outcomes,
            error=printable(verdict.detail or verdict.reason),
            max_rejections=self.cfg.max_rejections,
            now=now,
            per_item=verdict.per_item,
        )
        if s.delivered:
            self.m.delivered.inc(self.name, n=s.delivered)
        if s.duplicates:
            self.m.delivered.inc(self.name, n=s.duplicates)
            self.m.duplicates.inc(self.name, n=s.duplicates)
        if s.delivered or s.duplicates:
            self.last_success = now
        if verdict.discarded:
            self.m.discarded.inc(self.name, n=verdict.discarded)
        failed = bool(s.retried or s.rejected)
        if failed:
            self.failures += 1
            self.last_error = printable(verdict.detail or verdict.reason)
            self.m.failures.inc(self.name, verdict.reason)
        else:
            self.failures = 0
        if s.dead:
            self.m.dead.inc(self.name, n=s.dead)
            self._rlog.warning(
                "dead",
                "forward %s: %d item(s) dead-lettered: %s",
                self.name,
                s.dead,
                self.last_error,
            )
        # Last: the backlog figures move only once every other figure of this attempt has.
        self.stats.pending = max(0, self.stats.pending - s.delivered - s.duplicates - s.dead)
        await self.refresh_stats()
        if failed:
            delay = self._delay(verdict.retry_after)
            self._rlog.warning(
                f"fail-{verdict.reason}",
                "forward %s: %s; %d consecutive failure(s), next try in %.1fs",
                self.name,
                self.last_error,
                self.failures,
                delay,
            )
            await self.sleep(delay)

    # ------------------------------------------------------------------------- one attempt

    def headers(self, req: HttpRequest) -> dict[str, str]:
        headers = dict(req.headers)
        if self.creds.token:
            headers["Authorization"] = f"{AUTH_SCHEME[self.cfg.type]} {self.creds.token}"
        if self.cfg.type == "splunk_hec" and self.cfg.hec_ack:
            headers["X-Splunk-Request-Channel"] = self.channel
        if self.creds.hmac_key:
            msg_id = req.message_id
            ts = int(self.clock())
            headers["webhook-id"] = msg_id
            headers["webhook-timestamp"] = str(ts)
            headers["webhook-signature"] = webhook_signature(
                self.creds.hmac_key, msg_id, ts, req.body
            )
        return headers

    async def post(self, req: HttpRequest) -> tuple[int, dict[str, str], bytes] | tuple[str, str]:
        """Send one request; the response, or (failure reason for the counter, detail)."""
        assert self.session is not None
        self.m.requests.inc(self.name)
        try:
            async with self.session.post(
                req.url, data=req.body, headers=self.headers(req), allow_redirects=False
            ) as resp:
                body = bytearray()
                while len(body) < MAX_RESPONSE_BYTES:
                    chunk = await resp.content.read(65536)
                    if not chunk:
                        break
                    body += chunk
                return resp.status, dict(resp.headers), bytes(body)
        except aiohttp.ClientConnectorCertificateError as exc:
            return "tls_verify", _detail(exc)
        except aiohttp.ClientSSLError as exc:
            return "tls", _detail(exc)
        except (TimeoutError, aiohttp.ServerTimeoutError):
            return "timeout", f"no answer within {self.cfg.request_timeout:g}s"
        except (aiohttp.ClientError, OSError) as exc:
            return "connect", _detail(exc)

    async def attempt(self, items: list[OutboxItem]) -> Verdict:
        req = self.fmt.request(items)
        if not req.message_id:
            req.message_id = batch_id(items)
        got = await self.post(req)
        if len(got) == 2:
            reason, detail = got
            return self._all(items, Outcome.RETRY, reason, detail)
        status, headers, body = got
        verdict = self.fmt.verdict(items, status, headers, body, self.clock())
        if verdict.ack_id is not None and isinstance(self.fmt, SplunkHecFormat):
            verdict = await self.wait_ack(items, verdict.ack_id)
        return verdict

    def _all(self, items: list[OutboxItem], outcome: Outcome, reason: str, detail: str) -> Verdict:
        return Verdict({it.id: outcome for it in items}, reason=reason, detail=detail)

    async def wait_ack(self, items: list[OutboxItem], ack_id: int) -> Verdict:
        """Poll ``/services/collector/ack`` until the indexer confirms, or give up (retry)."""
        assert isinstance(self.fmt, SplunkHecFormat)
        polls = max(1, int(self.cfg.hec_ack_timeout / self.cfg.hec_ack_poll_interval))
        for _ in range(polls):
            await self.sleep(self.cfg.hec_ack_poll_interval)
            got = await self.post(self.fmt.ack_request([ack_id]))
            if len(got) == 2:
                continue
            status, _headers, body = got
            if status == 200 and ack_id in SplunkHecFormat.acked(body):
                return self._all(items, Outcome.DELIVERED, "ok", "")
        return self._all(
            items, Outcome.RETRY, "hec_ack_timeout", f"no indexer ack for ackId {ack_id}"
        )

    # ---------------------------------------------------------------------------- status

    def snapshot(self, now: float) -> dict[str, object]:
        st = self.stats
        return {
            "name": self.name,
            "upstream": self.cfg.name,
            "stream": self.stream,
            "type": self.cfg.type,
            "url": public_url(self.cfg.url),
            # "failing" from the first failed attempt until the next acknowledged one.
            "status": "failing" if self.failures else "ok",
            "backlog": st.pending,
            "backlog_age_seconds": round(now - st.oldest_created, 3)
            if st.oldest_created is not None
            else 0.0,
            "dead_letters": st.dead,
            "spool_bytes": st.bytes,
            "spool_max_bytes": self.cfg.spool_max_bytes,
            "spool_max_age_seconds": self.cfg.spool_max_age,
            "last_success": self.last_success,
            "consecutive_failures": self.failures,
            "last_error": self.last_error,
            "delivered": self.m.delivered.value(self.name),
            "dropped": {k[1]: v for k, v in self.m.dropped.values.items() if k[0] == self.name},
        }
