"""What every source shares: the context it is built with, and the sender allow-list."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Protocol

from netaddr import AddrFormatError, IPAddress, IPSet

from appliance.config import AppConfig
from appliance.metrics import Registry
from appliance.pipeline.bus import Pipeline
from appliance.protocols.syslog.vendors import REGISTRY, VendorRegistry


class Source(Protocol):
    """A listener: ``start`` binds (raising :class:`~appliance.sources.udp.BindError` when it
    cannot), ``stop`` closes the socket and stops offering events."""

    name: str

    @property
    def listening(self) -> bool:
        """Whether the socket is open and read: /healthz reports a configured source that is
        not as degraded."""
        ...

    async def start(self) -> None: ...

    async def stop(self) -> None: ...


@dataclass
class SourceContext:
    config: AppConfig
    pipeline: Pipeline
    metrics: Registry
    clock: Callable[[], float] = field(default=time.time)
    # The vendor decoders in force: built-ins plus the config's site files.
    decoders: VendorRegistry = field(default_factory=lambda: REGISTRY)


class AllowList:
    """Sender networks allowed on a listener; answers are cached per address (bounded)."""

    MAX_CACHE = 65_536

    def __init__(self, networks: Iterable[str]) -> None:
        self.networks = list(networks)
        self._set = IPSet(self.networks)
        self._all = any(n in ("0.0.0.0/0", "::/0") for n in self.networks) and (
            "0.0.0.0/0" in self.networks and "::/0" in self.networks
        )
        self._cache: dict[str, bool] = {}

    def __contains__(self, ip: str) -> bool:
        if self._all:
            return True
        hit = self._cache.get(ip)
        if hit is None:
            try:
                addr = IPAddress(ip)
                if addr.version == 6 and addr.is_ipv4_mapped():
                    addr = addr.ipv4()
                hit = addr in self._set
            except (AddrFormatError, ValueError, TypeError):  # not an address: never allowed
                hit = False
            if len(self._cache) >= self.MAX_CACHE:
                self._cache.clear()
            self._cache[ip] = hit
        return hit
