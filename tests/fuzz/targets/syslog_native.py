"""Syslog header, native decoder against the reference, field for field.

atheris sees only Python coverage, so the search is steered by the reference's branches; the
Rust side of the same bytes is fuzzed with its own coverage by ``rust-header``. A native
answer differing from the reference, or a panic the extension caught and hid (counted by
``panics()``), is a failure; ``None`` is allowed only where the native decoder documents it.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from appliance import dataplane
from appliance.protocols.syslog.decode import _native_header, decode_syslog_reference
from tests.fuzz.targets._syslog import DICTIONARY, check_message, params, syslog_seeds

MAX_LEN = 2048
__all__ = ["AVAILABLE", "DICTIONARY", "MAX_LEN", "one_input", "seeds"]
AVAILABLE = dataplane.native is not None
_native: Any = _native_header()


def seeds() -> Iterator[bytes]:
    return syslog_seeds("syslog-native")


def one_input(data: bytes) -> None:
    if _native is None:
        return
    now, tz, raw = params(data)
    panics = dataplane.native_panics()
    native = _native.decode(raw, now, tz)
    assert dataplane.native_panics() == panics, "the native decoder panicked"
    reference = decode_syslog_reference(raw, now, tz)
    if native is None:  # left to the reference: RFC 3164 with non-ASCII text only
        assert not raw.isascii(), "native declined an ASCII line"
        return
    check_message(native, raw, tz)
    assert native == reference, f"native {native!r} != reference {reference!r}"
