"""Wire format between the store and its event writer process (see writer_process.py), and
the encoding of an event into its ``events`` row, which both sides use."""

from __future__ import annotations

import marshal
import pickle
import struct
from typing import Any

import orjson

REQUEST = struct.Struct("<QI")
REPLY = struct.Struct("<QIBH")
INSERT = (
    "INSERT OR REPLACE INTO events (id, ts, created, module, observer_ip, source_ip, hostname,"
    " message, fields, raw) VALUES (?,?,?,?,?,?,?,?,?,?)"
)


def _json_default(value: Any) -> Any:
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value).decode("utf-8", "backslashreplace")
    if isinstance(value, (set, frozenset, tuple)):
        return list(value)
    return str(value)


def encode_row(
    id_: int | None,
    ts: float,
    created: float,
    module: str,
    fields: dict[str, Any],
    raw: bytes,
    max_raw: int,
) -> tuple[Any, ...]:
    """An event as an ``events`` row: the filter columns pulled out, the rest as JSON."""
    rest = dict(fields)
    pop = rest.pop
    observer_ip = pop("observer.ip", None)
    source_ip = pop("source.ip", None)
    hostname = pop("host.hostname", None)
    message = pop("message", None)
    return (
        id_,
        ts,
        created,
        module,
        observer_ip,
        source_ip,
        hostname,
        message,
        orjson.dumps(rest, default=_json_default, option=orjson.OPT_NON_STR_KEYS).decode(),
        raw[:max_raw] if raw else None,
    )


def pack_batch(max_raw: int, parts: list[tuple[Any, ...]]) -> bytes:
    """Serialise a batch for the writer process: ``marshal`` (twice as fast as pickle on our
    plain event dicts), or ``pickle`` when a field holds a type marshal does not know."""
    try:
        return b"M" + marshal.dumps((max_raw, parts))
    except ValueError:
        return b"P" + pickle.dumps((max_raw, parts), protocol=pickle.HIGHEST_PROTOCOL)


def unpack_batch(payload: bytes) -> tuple[int, list[tuple[Any, ...]]]:
    """The inverse of :func:`pack_batch`; only ever fed by our own parent process."""
    body = memoryview(payload)[1:]
    if payload[:1] == b"M":
        return marshal.loads(body)  # noqa: S302 - our own parent's bytes over a private pipe
    return pickle.loads(body)  # noqa: S301 - our own parent's bytes over a private pipe
