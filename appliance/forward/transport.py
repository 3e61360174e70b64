"""TLS, secrets, request signing and backoff for the upstream link.

TLS verification is always on: the CA bundle in ``ca_file`` replaces the system store when
given (a private PKI should not also trust every public CA), and ``client_cert``/``client_key``
make it mutual TLS. Secrets come from the config, a file, or an environment variable; they are
read once at start and never appear in logs, reprs or errors.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
import random
import ssl
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

from appliance.config import ConfigError, UpstreamSection


def ssl_context(cfg: UpstreamSection, path: Callable[[str], Path]) -> ssl.SSLContext:
    """Verifying client context with the configured CA and client certificate."""
    try:
        ctx = ssl.create_default_context(
            ssl.Purpose.SERVER_AUTH, cafile=str(path(cfg.ca_file)) if cfg.ca_file else None
        )
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        if cfg.client_cert:
            ctx.load_cert_chain(str(path(cfg.client_cert)), str(path(cfg.client_key)))
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(
            [f"upstream {cfg.name}: cannot load TLS files: {type(exc).__name__}: {exc}"]
        ) from exc
    return ctx


class _Named(Protocol):
    @property
    def name(self) -> str: ...


def read_secret(
    cfg: _Named,
    inline: str,
    file: str,
    env: str,
    what: str,
    path: Callable[[str], Path],
    *,
    section: str = "upstream",
) -> str:
    """The secret from the config value, a file (first line) or an environment variable.
    ``section`` names the config section in errors (``upstream``, ``notify channel``)."""
    if inline:
        return inline
    if file:
        try:
            value = path(file).read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise ConfigError(
                [f"{section} {cfg.name}: cannot read {what} file: {exc.strerror or exc}"]
            ) from exc
        if not value:
            raise ConfigError([f"{section} {cfg.name}: {what} file is empty"])
        return value
    if env:
        value = os.environ.get(env, "").strip()
        if not value:
            raise ConfigError([f"{section} {cfg.name}: environment variable {env} is not set"])
        return value
    return ""


def webhook_key(secret: str) -> bytes:
    """The HMAC key of a Standard Webhooks secret: base64 after the ``whsec_`` prefix."""
    if not secret.startswith("whsec_"):
        raise ValueError("Standard Webhooks secrets start with whsec_")
    try:
        return base64.b64decode(secret[len("whsec_") :], validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ValueError("the secret after whsec_ is not base64") from exc


def webhook_signature(key: bytes, msg_id: str, timestamp: int, body: bytes) -> str:
    """``v1,<base64 HMAC-SHA256 of "id.timestamp.body">`` (Standard Webhooks 1.0)."""
    signed = f"{msg_id}.{timestamp}.".encode() + body
    digest = hmac.new(key, signed, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


def full_jitter(failures: int, base: float, cap: float, rand: random.Random) -> float:
    """``random(0, min(cap, base * 2**(failures-1)))``: AWS "full jitter" backoff."""
    if failures <= 0:
        return 0.0
    ceiling = min(cap, base * (2 ** min(failures - 1, 62)))
    return rand.uniform(0.0, ceiling)


def backoff_delay(
    failures: int,
    retry_after: float | None,
    *,
    base: float,
    cap: float,
    retry_after_max: float,
    rand: random.Random,
) -> float:
    """The wait before the next attempt: the server's ``Retry-After`` when it gave one
    (bounded by ``retry_after_max``), else capped exponential backoff with full jitter."""
    if retry_after is not None:
        return min(max(retry_after, 0.0), retry_after_max)
    return full_jitter(failures, base, cap, rand)
