"""Threat-intel feeds on disk and over HTTPS: conditional fetch, atomic swap, and reading
every configured list back as :class:`~appliance.analysis.intel.SourceText`.

A feed lives in ``data_dir/intel/<name>.data`` with ``<name>.json`` beside it (ETag,
Last-Modified, when it was last checked and last changed). An update asks with
``If-None-Match``/``If-Modified-Since``; a 304 only records the check, so the feed's
indicators count as listed again (their TTL runs from the last check that found them). A
new body is written to a temporary file in the same folder, fsynced and renamed over the old
one: a reader (the running appliance, a crash half-way) sees the old list or the new, never
part of one. A failed fetch leaves the old list in force.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import ssl
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp

from appliance.analysis.intel import SourceText
from appliance.config import AppConfig, IntelFeed

log = logging.getLogger(__name__)
INTEL_DIR = "intel"


def feed_paths(data_dir: Path, name: str) -> tuple[Path, Path]:
    folder = data_dir / INTEL_DIR
    return folder / f"{name}.data", folder / f"{name}.json"


def read_meta(path: Path) -> dict[str, Any]:
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return meta if isinstance(meta, dict) else {}


def atomic_write(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` so that it is the old content or the new, never a mix."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        _unlink_quietly(tmp)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)  # the rename itself survives a power cut
    finally:
        os.close(dir_fd)


def _unlink_quietly(path: str) -> None:
    with contextlib.suppress(OSError):
        os.unlink(path)


def feed_ssl_context(feed: IntelFeed, path: Callable[[str], Path]) -> ssl.SSLContext:
    """Verifying client context: the system store, or the feed's own CA bundle instead."""
    ctx = ssl.create_default_context(
        ssl.Purpose.SERVER_AUTH, cafile=str(path(feed.ca_file)) if feed.ca_file else None
    )
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    return ctx


@dataclass(slots=True)
class FetchResult:
    feed: str
    status: str  # updated | not_modified | failed
    detail: str = ""
    bytes: int = 0


class FeedTooLarge(Exception):
    pass


async def fetch_feed(
    feed: IntelFeed,
    data_dir: Path,
    path: Callable[[str], Path],
    *,
    clock: Callable[[], float] = time.time,
) -> FetchResult:
    """One conditional GET of a feed; the new body swapped in atomically. Never raises for
    network, TLS or HTTP problems: they are the result's ``failed`` status and detail."""
    data_path, meta_path = feed_paths(data_dir, feed.name)
    meta = read_meta(meta_path) if data_path.exists() else {}
    headers = {"User-Agent": "sem-appliance intel", "Accept-Encoding": "gzip"}
    if meta.get("etag"):
        headers["If-None-Match"] = str(meta["etag"])
    if meta.get("last_modified"):
        headers["If-Modified-Since"] = str(meta["last_modified"])
    try:
        ctx = feed_ssl_context(feed, path)
    except (OSError, ssl.SSLError) as exc:
        return FetchResult(feed.name, "failed", f"TLS setup: {exc}")
    timeout = aiohttp.ClientTimeout(total=feed.timeout)
    now = clock()
    try:
        async with (
            aiohttp.ClientSession(timeout=timeout) as session,
            session.get(feed.url, headers=headers, ssl=ctx, allow_redirects=True) as resp,
        ):
            if resp.url.scheme != "https":
                return FetchResult(feed.name, "failed", "redirected away from https")
            if resp.status == 304:
                meta["checked"] = now
                await asyncio.to_thread(atomic_write, meta_path, json.dumps(meta).encode())
                return FetchResult(feed.name, "not_modified")
            if resp.status != 200:
                return FetchResult(feed.name, "failed", f"HTTP {resp.status}")
            if resp.content_length is not None and resp.content_length > feed.max_bytes:
                raise FeedTooLarge
            chunks: list[bytes] = []
            size = 0
            async for chunk in resp.content.iter_chunked(1 << 16):
                size += len(chunk)
                if size > feed.max_bytes:
                    raise FeedTooLarge
                chunks.append(chunk)
            etag = resp.headers.get("ETag")
            modified = resp.headers.get("Last-Modified")
    except FeedTooLarge:
        return FetchResult(feed.name, "failed", f"larger than max_bytes ({feed.max_bytes})")
    except (aiohttp.ClientError, TimeoutError, OSError, ssl.SSLError) as exc:
        return FetchResult(feed.name, "failed", f"{type(exc).__name__}: {exc}")
    body = b"".join(chunks)
    new_meta = {
        "url": feed.url,
        "etag": etag,
        "last_modified": modified,
        "checked": now,
        "changed": now,
        "bytes": len(body),
    }
    await asyncio.to_thread(atomic_write, data_path, body)
    await asyncio.to_thread(atomic_write, meta_path, json.dumps(new_meta).encode())
    return FetchResult(feed.name, "updated", bytes=len(body))


async def update_feeds(
    config: AppConfig,
    *,
    only_due: bool = False,
    clock: Callable[[], float] = time.time,
) -> list[FetchResult]:
    """Fetch every enabled feed (or only those whose ``interval`` has passed), one at a time
    (a box with 2 cores and a slow uplink gains nothing from parallel downloads)."""
    results = []
    now = clock()
    for feed in config.analysis.feeds:
        if not feed.enabled:
            continue
        if only_due:
            _data, meta_path = feed_paths(config.data_dir, feed.name)
            checked = read_meta(meta_path).get("checked")
            if isinstance(checked, int | float) and now - checked < feed.interval:
                continue
        results.append(await fetch_feed(feed, config.data_dir, config.path, clock=clock))
    return results


def _read_text(path: Path) -> str:
    return path.read_bytes().decode("utf-8", "replace")


def read_sources(config: AppConfig) -> tuple[list[SourceText], list[str]]:
    """Every configured intel file and fetched feed as text, with the errors of those that
    cannot be read (a missing file is an error to report, not a reason to load nothing)."""
    a = config.analysis
    sources: list[SourceText] = []
    errors: list[str] = []
    for entry in a.intel_files:
        p = config.path(entry)
        try:
            text = _read_text(p)
            seen = p.stat().st_mtime
        except OSError as exc:
            errors.append(f"{p}: {exc.strerror or exc}")
            continue
        sources.append(SourceText(p.stem, "auto", text, a.intel_confidence, seen, a.intel_ttl))
    for feed in a.feeds:
        if not feed.enabled:
            continue
        data_path, meta_path = feed_paths(config.data_dir, feed.name)
        if not data_path.exists():
            continue  # not fetched yet
        try:
            text = _read_text(data_path)
            mtime = data_path.stat().st_mtime
        except OSError as exc:
            errors.append(f"feed {feed.name}: {exc.strerror or exc}")
            continue
        checked = read_meta(meta_path).get("checked")
        seen = float(checked) if isinstance(checked, int | float) else mtime
        sources.append(SourceText(feed.name, feed.format, text, feed.confidence, seen, feed.ttl))
    return sources, errors


def sources_stamp(config: AppConfig) -> tuple[tuple[str, float, int], ...]:
    """What the loaded index was built from: path, mtime and size of each file (and feed
    metadata, whose ``checked`` time moves indicators' last sighting)."""
    paths = [config.path(p) for p in config.analysis.intel_files]
    for feed in config.analysis.feeds:
        paths.extend(feed_paths(config.data_dir, feed.name))
    stamp = []
    for p in paths:
        try:
            st = p.stat()
        except OSError:
            stamp.append((str(p), -1.0, -1))
            continue
        stamp.append((str(p), st.st_mtime, st.st_size))
    return tuple(stamp)
