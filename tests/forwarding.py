"""Helpers for the forwarding tests: an mTLS HTTPS receiver, certificates, incident documents."""

from __future__ import annotations

import asyncio
import json
import ssl
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import trustme
from aiohttp import web

from appliance.app import Appliance
from appliance.forward import Forwarder
from appliance.store import Store


@dataclass
class Pki:
    ca: trustme.CA
    ca_file: Path
    client_cert: Path
    client_key: Path
    server: trustme.LeafCert


def make_pki(tmp: Path, name: str = "pki") -> Pki:
    d = tmp / name
    d.mkdir(parents=True, exist_ok=True)
    ca = trustme.CA()
    server = ca.issue_cert("127.0.0.1", "localhost")
    client = ca.issue_cert("edge-01.client.example", common_name="edge-01.client.example")
    ca.cert_pem.write_to_path(str(d / "ca.pem"))
    client.cert_chain_pems[0].write_to_path(str(d / "client.pem"))
    client.private_key_pem.write_to_path(str(d / "client.key"))
    return Pki(ca, d / "ca.pem", d / "client.pem", d / "client.key", server)


@dataclass
class Seen:
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: bytes
    peer_subject: Any

    def json(self) -> Any:
        return json.loads(self.body)


Responder = Callable[[Seen], Awaitable[web.StreamResponse] | web.StreamResponse]


@dataclass
class Receiver:
    """An HTTPS server that requires a client certificate from ``client_ca`` and records
    every request; ``respond`` decides each answer (default 200 with an empty JSON body)."""

    server_cert: trustme.LeafCert
    client_ca: trustme.CA
    respond: Responder | None = None
    seen: list[Seen] = field(default_factory=list)
    runner: web.AppRunner | None = None
    port: int = 0

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        peer = request.transport.get_extra_info("peercert") if request.transport else None
        seen = Seen(
            request.method,
            request.path,
            dict(request.query),
            dict(request.headers),
            await request.read(),
            peer.get("subject") if peer else None,
        )
        self.seen.append(seen)
        if self.respond is None:
            return web.json_response({})
        got = self.respond(seen)
        if asyncio.iscoroutine(got):
            got = await got
        return got  # type: ignore[return-value]

    def ssl_context(self) -> ssl.SSLContext:
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self.server_cert.configure_cert(ctx)
        self.client_ca.configure_trust(ctx)
        ctx.verify_mode = ssl.CERT_REQUIRED
        return ctx

    async def start(self, port: int = 0) -> None:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self.runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", port, ssl_context=self.ssl_context())
        await site.start()
        self.port = int(self.runner.addresses[0][1])

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()
            self.runner = None

    def url(self, path: str = "") -> str:
        return f"https://127.0.0.1:{self.port}{path}"


def incident(
    n: int = 1,
    revision: int = 1,
    *,
    severity: str = "high",
    status: str = "open",
    sensor_id: str = "test-01",
    id_: str | None = None,
) -> dict[str, Any]:
    """An incident document of the shape appliance/incidents documents."""
    return {
        "schema_version": 1,
        "id": id_ or str(uuid.UUID(int=n)),
        "revision": revision,
        "sensor_id": sensor_id,
        "title": f"SSH brute force #{n}",
        "rule": {
            "id": "ssh-bruteforce",
            "title": "SSH brute force",
            "level": severity,
            "tags": ["attack.t1110"],
        },
        "severity": severity,
        "status": status,
        "group_key": f"source.ip=203.0.113.{n % 250}",
        "first_seen": "2026-11-29T10:00:00.000000Z",
        "last_seen": "2026-11-29T10:05:00.000000Z",
        "hit_count": 12,
        "suppressed_count": 0,
        "evidence": {"event_ids": [1, 2], "samples": ["Failed password for root"]},
        "created": "2026-11-29T10:00:01.000000Z",
        "updated": "2026-11-29T10:05:00.500000Z",
    }


async def raise_incidents(app: Appliance, docs: list[dict[str, Any]]) -> None:
    """What the correlation engine does: run the appliance's incident hooks inside one
    durable transaction."""
    async with app.store.transaction(durable=True) as conn:
        for doc in docs:
            for hook in list(app.incident_hooks):
                await hook(conn, doc)


async def outbox_rows(store: Store) -> list[dict[str, Any]]:
    assert store.reader is not None
    cols = ("upstream", "key", "state", "attempts", "rejections", "drop_class")
    async with store.reader.execute(f"SELECT {', '.join(cols)} FROM outbox ORDER BY id") as cur:
        return [dict(zip(cols, r, strict=True)) for r in await cur.fetchall()]


def upstream(name: str, type_: str, url: str, pki: Pki, **extra: Any) -> dict[str, Any]:
    """An ``[[upstream]]`` table for a test receiver: mTLS, fast polling and backoff."""
    cfg: dict[str, Any] = {
        "name": name,
        "type": type_,
        "url": url,
        "ca_file": str(pki.ca_file),
        "client_cert": str(pki.client_cert),
        "client_key": str(pki.client_key),
        "poll_interval": 0.05,
        "backoff_base": 0.02,
        "backoff_cap": 0.1,
        "request_timeout": 5.0,
        "connect_timeout": 2.0,
    }
    cfg.update(extra)
    return cfg


def forwarder(run: Any) -> Forwarder:
    """The running appliance's forwarding component."""
    return next(c for c in run.app.components if isinstance(c, Forwarder))
