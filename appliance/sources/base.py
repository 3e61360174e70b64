"""What every source shares: the context it is built with (the datagram policy is in
:mod:`appliance.sources.policy`)."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

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
