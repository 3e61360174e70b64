"""Which data plane runs: the Rust extension ``appliance._dataplane`` or the Python reference.

The per-message work (syslog framing and headers today; more as it moves) has two
implementations with one behaviour, as aiohttp keeps its Python HTTP parser beside the C one:
the extension for speed, the Python modules as the reference the tests hold it to and the
fallback when the extension is missing or ``APPLIANCE_NATIVE=0`` is set.
"""

from __future__ import annotations

import logging
import os
from types import ModuleType

log = logging.getLogger(__name__)


def _load() -> ModuleType | None:
    if os.environ.get("APPLIANCE_NATIVE", "1").strip().lower() in ("0", "false", "no", "off"):
        return None
    try:
        from appliance import _dataplane  # type: ignore[attr-defined]
    except ImportError as exc:
        log.warning("native data plane unavailable (%s): using the Python reference", exc)
        return None
    return _dataplane


native: ModuleType | None = _load()

# The native flow batch (``FlowEvents``): a sequence of events made on demand, which the
# native stages read in place; handed to them as it is, never copied into a list.
NATIVE_SEQUENCES: tuple[type, ...] = (native.FlowEvents,) if native is not None else ()


def backend() -> str:
    """``"native"`` or ``"python"``: shown by ``/healthz`` and ``appliance version``."""
    return "native" if native is not None else "python"


def native_panics() -> int:
    """Decoder panics the extension caught (each message then went to the Python reference)."""
    return int(native.panics()) if native is not None else 0


def records_past_bound() -> int:
    """Syslog batch events whose fields were made a dict up front because they passed a
    fields record's bound (a header of more than 24 keys, more than 48 items): the same
    event at more CPU."""
    return int(native.records_past_bound()) if native is not None else 0
