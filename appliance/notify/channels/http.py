"""The HTTP side every web channel shares: verified TLS, timeouts, bounded answers, and the
HTTP status mapped to retry or give up.

5xx, 408 and 429 are transient (the ``Retry-After`` the server sent rides on the
DeliveryError for the engine's backoff); every other 4xx means the request itself is wrong
(a revoked webhook, a bad number) and trying again cannot help. Redirects are not followed:
a webhook that moved is a configuration change, not something to chase with the payload.
"""

from __future__ import annotations

import email.utils
import ssl
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp

from appliance.config import ConfigError, NotifyChannel, check_url_template
from appliance.notify.channels.base import DeliveryError
from appliance.notify.channels.core import ChannelBase, ChannelMetrics

MAX_ANSWER_BYTES = 64 * 1024
USER_AGENT = "sem-appliance-notify"


def client_ssl_context(cfg: NotifyChannel, base_dir: Path) -> ssl.SSLContext:
    """Verifying context; ``ca_file`` replaces the system store (a private CA only)."""
    try:
        cafile = None
        if cfg.ca_file:
            p = Path(cfg.ca_file).expanduser()
            cafile = str(p if p.is_absolute() else base_dir / p)
        ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=cafile)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(
            [f"notify channel {cfg.name}: cannot load ca_file: {type(exc).__name__}: {exc}"]
        ) from exc
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    return ctx


def retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds from a ``Retry-After`` header (delta-seconds or an HTTP date), or None."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


@dataclass(frozen=True, slots=True)
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes  # at most MAX_ANSWER_BYTES

    def text(self, limit: int = 200) -> str:
        return self.body[:limit].decode("utf-8", "replace")


def check_status(answer: Answer, what: str) -> None:
    """Raise the DeliveryError an unsuccessful status stands for."""
    status = answer.status
    if 200 <= status < 300:
        return
    detail = f"{what}: HTTP {status}: {answer.text()}"
    if status in (408, 429) or status >= 500:
        raise DeliveryError(
            detail, retryable=True, retry_after=retry_after(answer.headers.get("Retry-After"))
        )
    raise DeliveryError(detail, retryable=False)


class HttpChannel(ChannelBase):
    """A channel that speaks HTTP through one aiohttp session (made on first use)."""

    def __init__(self, cfg: NotifyChannel, base_dir: Path, metrics: ChannelMetrics) -> None:
        super().__init__(cfg, base_dir, metrics)
        self.ssl_context = client_ssl_context(cfg, base_dir)
        self._session: aiohttp.ClientSession | None = None

    def endpoint(self) -> str:
        """The ``url`` secret (inline, file or env), checked like an inline one."""
        url = self.secret("url")
        problem = check_url_template(url) or self.cfg.check_plain_http(url)
        if problem:
            raise ConfigError([f"notify channel {self.name}: url: {problem}"])
        return url

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=self.cfg.timeout),
                connector=aiohttp.TCPConnector(ssl=self.ssl_context, limit=8),
                headers={"User-Agent": USER_AGENT},
            )
        return self._session

    async def request(
        self,
        method: str,
        url: str,
        *,
        data: bytes | dict[str, str] | None = None,
        json: Any = None,
        headers: dict[str, str] | None = None,
    ) -> Answer:
        """One request; the answer (body bounded), or a retryable DeliveryError when the
        server could not be reached or did not answer in time."""
        try:
            async with self._client().request(
                method,
                url,
                data=data,
                json=json,
                headers=headers,
                allow_redirects=False,
            ) as resp:
                body = bytearray()
                async for chunk in resp.content.iter_chunked(8192):
                    body += chunk
                    if len(body) >= MAX_ANSWER_BYTES:
                        del body[MAX_ANSWER_BYTES:]
                        break
                return Answer(resp.status, dict(resp.headers), bytes(body))
        except TimeoutError:
            raise DeliveryError(f"no answer within {self.cfg.timeout:g}s") from None
        except aiohttp.ClientConnectorCertificateError as exc:
            raise DeliveryError(f"TLS certificate not trusted: {exc.certificate_error}") from None
        except (aiohttp.ClientError, OSError) as exc:
            raise DeliveryError(f"{type(exc).__name__}: {exc}") from None

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None
