"""Component state in the ``state`` table: one typed slot per ``(component, key)``.

Why one accessor: the NetFlow templates, the correlation windows, the SNMP engine boots, the
forwarder's last success and the baselines each used to write their own SQL with their own
value encoding (JSON text, JSON bytes, a decimal string). A :class:`StateSlot` names the row
and the :class:`Codec` that turns its value into bytes and back, so every component reads and
writes the table the same way and gets back the type it stored.

The codecs read what the hand-written accessors wrote: JSON parses from text or bytes, and the
decimal strings the SNMP boots and the forwarder's last success were kept as are valid JSON
numbers too, so a database written before keeps its values.

A slot reads through the store's reader and writes in a transaction of its own
(:meth:`StateSlot.load`, :meth:`StateSlot.save`), or works on the connection of a transaction
the caller holds (:meth:`StateSlot.read`, :meth:`StateSlot.write`) when the state must change
atomically with the component's other writes (the outbox's deletes, the SNMP boots counter).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Generic, TypeVar

import aiosqlite

from appliance.store.errors import StoreError

if TYPE_CHECKING:
    from appliance.store.db import Store

T = TypeVar("T")

_SELECT = "SELECT value FROM state WHERE component = ? AND key = ?"
_UPSERT = (
    "INSERT INTO state (component, key, value, updated) VALUES (?,?,?,?)"
    " ON CONFLICT (component, key) DO UPDATE SET value = excluded.value,"
    " updated = excluded.updated"
)


@dataclass(frozen=True)
class Codec(Generic[T]):
    """How a slot's value becomes the stored bytes and back; ``decode`` raises ``ValueError``
    or ``TypeError`` on a value it cannot read (callers decide whether to start afresh)."""

    name: str
    encode: Callable[[T], bytes]
    decode: Callable[[bytes | str], T]


def json_codec(default: Callable[[Any], Any] | None = None) -> Codec[Any]:
    """Compact JSON as UTF-8 bytes; ``default`` turns values JSON has no type for (the
    correlation windows keep a few) into ones it has."""

    def encode(value: Any) -> bytes:
        return json.dumps(value, separators=(",", ":"), default=default).encode()

    return Codec("json", encode, json.loads)


def _decode_int(raw: bytes | str) -> int:
    value = json.loads(raw)
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"not an integer: {value!r}")
    return value


def _decode_float(raw: bytes | str) -> float:
    value = json.loads(raw)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"not a number: {value!r}")
    return float(value)


JSON: Codec[Any] = json_codec()
INT: Codec[int] = Codec("int", lambda v: str(int(v)).encode(), _decode_int)
FLOAT: Codec[float] = Codec("float", lambda v: repr(float(v)).encode(), _decode_float)


class StateSlot(Generic[T]):
    """One ``(component, key)`` row of the ``state`` table and the codec of its value."""

    __slots__ = ("codec", "component", "key", "store")

    def __init__(self, store: Store, component: str, key: str, codec: Codec[T]) -> None:
        self.store = store
        self.component = component
        self.key = key
        self.codec = codec

    def __repr__(self) -> str:
        return f"StateSlot({self.component!r}, {self.key!r}, {self.codec.name})"

    async def load(self) -> T | None:
        """The stored value through the reader connection, ``None`` when there is none."""
        conn = self.store.reader
        if conn is None:
            raise StoreError("store is closed")
        return await self.read(conn)

    async def save(self, value: T, *, durable: bool = False, off_loop: bool = False) -> None:
        """Store ``value`` in a transaction of its own; ``off_loop`` encodes it in a thread
        (a large snapshot would hold the event loop)."""
        blob = await asyncio.to_thread(self.codec.encode, value) if off_loop else None
        async with self.store.transaction(durable=durable) as conn:
            await self._put(conn, blob if blob is not None else self.codec.encode(value))

    async def read(self, conn: aiosqlite.Connection) -> T | None:
        """The stored value on ``conn`` (inside the caller's transaction, or the reader)."""
        async with conn.execute(_SELECT, (self.component, self.key)) as cur:
            row = await cur.fetchone()
        if row is None or row[0] is None or row[0] in (b"", ""):
            return None
        raw = row[0]
        return self.codec.decode(bytes(raw) if isinstance(raw, memoryview) else raw)

    async def write(self, conn: aiosqlite.Connection, value: T) -> None:
        """Store ``value`` on ``conn``, the connection of a transaction the caller holds."""
        await self._put(conn, self.codec.encode(value))

    async def _put(self, conn: aiosqlite.Connection, blob: bytes) -> None:
        await conn.execute(_UPSERT, (self.component, self.key, blob, self.store.clock()))
