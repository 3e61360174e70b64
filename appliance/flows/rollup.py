"""Per-minute flow aggregates with bounded cardinality: top keys plus "other".

Why bounded: the keys are attacker-controlled (a spoofed-source flood makes every flow a new
source address), so each dimension of each minute holds at most ``max_keys`` keys. When that
fills, all but the largest eighth is folded into ``"other"``; totals stay exact (every flow is
counted in exactly one key), only the ranking of small keys is approximate. At flush only the top
``top_k`` by bytes and the top ``top_k`` by packets are kept; the rest joins ``"other"``.
Minutes are by receive time so a late or clock-skewed exporter cannot reopen a closed minute.

:func:`new_rollup` picks the native twin (``appliance._dataplane.FlowRollup``, same rows in the
same order) when the extension runs; this class is its reference and the fallback.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable
from typing import Any

from appliance import dataplane
from appliance.event import Event

OTHER = "other"
DIMENSIONS = ("source.ip", "destination.ip", "conversation", "destination.port")

Totals = list[int]  # [bytes, packets, flows]
RollupRow = tuple[int, str, str, int, int, int]  # (minute, dim, key, bytes, packets, flows)


class MinuteBucket:
    __slots__ = ("admit", "dims", "folded", "minute")

    def __init__(self, minute: int) -> None:
        self.minute = minute
        # One dict per DIMENSIONS entry, same order; keys: address, address, (src, dst),
        # (port, transport).
        self.dims: tuple[dict[Any, Totals], ...] = tuple({} for _ in DIMENSIONS)
        self.folded = 0  # keys (or newcomers) folded into "other" because a dimension filled
        self.admit = [0, 0, 0, 0]  # per dimension: smallest first flow admitted as a new key

    @property
    def by_dim(self) -> dict[str, dict[Any, Totals]]:
        return dict(zip(DIMENSIONS, self.dims, strict=True))


def new_rollup(top_k: int = 100, max_keys: int = 20_000) -> FlowRollup:
    """The rollup of the running data plane: native (a few dict reads per flow, the counting
    in Rust) or this module's reference."""
    if dataplane.native is not None:
        native: FlowRollup = dataplane.native.FlowRollup(top_k, max_keys)
        return native
    return FlowRollup(top_k, max_keys)


class FlowRollup:
    def __init__(self, top_k: int = 100, max_keys: int = 20_000) -> None:
        self.top_k = top_k
        self.max_keys = max_keys
        self.buckets: dict[int, MinuteBucket] = {}
        self.flows = 0
        self.folded = 0
        self._folded_closed = 0

    def add(self, events: Iterable[Event]) -> None:
        """Count each flow event in the minute it was received, in every dimension.

        Hot path (every flow): four dict probes, keys kept as the decoded values or tuples of
        them (conversation and port keys become text only when a minute is written), unrolled
        over the four dimensions.
        """
        buckets = self.buckets
        max_keys = self.max_keys
        fold = self._fold
        lo = hi = 0.0
        src_d = dst_d = conv_d = port_d = {}
        admit = [0, 0, 0, 0]
        bucket = MinuteBucket(0)
        n = 0
        for ev in events:
            n += 1
            c = ev.created
            if c >= hi or c < lo:
                m = int(c) // 60 * 60
                lo, hi = m, m + 60
                got = buckets.get(m)
                if got is None:
                    got = buckets[m] = MinuteBucket(m)
                bucket = got
                src_d, dst_d, conv_d, port_d = bucket.dims
                admit = bucket.admit
            g = ev.fields.get
            src = g("source.ip")
            dst = g("destination.ip")
            b = g("network.bytes") or 0
            p = g("network.packets") or 0
            t = src_d.get(src)
            if t is None:
                if b < admit[0]:  # after a fold: small newcomers go straight to "other"
                    t = src_d[OTHER]
                    t[0] += b
                    t[1] += p
                    t[2] += 1
                    bucket.folded += 1
                else:
                    if len(src_d) >= max_keys:
                        fold(src_d, bucket, 0)
                    src_d[src] = [b, p, 1]
            else:
                t[0] += b
                t[1] += p
                t[2] += 1
            t = dst_d.get(dst)
            if t is None:
                if b < admit[1]:  # after a fold: small newcomers go straight to "other"
                    t = dst_d[OTHER]
                    t[0] += b
                    t[1] += p
                    t[2] += 1
                    bucket.folded += 1
                else:
                    if len(dst_d) >= max_keys:
                        fold(dst_d, bucket, 1)
                    dst_d[dst] = [b, p, 1]
            else:
                t[0] += b
                t[1] += p
                t[2] += 1
            key = (src, dst)
            t = conv_d.get(key)
            if t is None:
                if b < admit[2]:  # after a fold: small newcomers go straight to "other"
                    t = conv_d[OTHER]
                    t[0] += b
                    t[1] += p
                    t[2] += 1
                    bucket.folded += 1
                else:
                    if len(conv_d) >= max_keys:
                        fold(conv_d, bucket, 2)
                    conv_d[key] = [b, p, 1]
            else:
                t[0] += b
                t[1] += p
                t[2] += 1
            key = (g("destination.port"), g("network.transport") or g("network.iana_number"))
            t = port_d.get(key)
            if t is None:
                if b < admit[3]:  # after a fold: small newcomers go straight to "other"
                    t = port_d[OTHER]
                    t[0] += b
                    t[1] += p
                    t[2] += 1
                    bucket.folded += 1
                else:
                    if len(port_d) >= max_keys:
                        fold(port_d, bucket, 3)
                    port_d[key] = [b, p, 1]
            else:
                t[0] += b
                t[1] += p
                t[2] += 1
        self.flows += n
        self.folded = sum(bk.folded for bk in buckets.values()) + self._folded_closed

    def _fold(self, d: dict[Any, Totals], bucket: MinuteBucket, dim: int) -> None:
        """Keep the largest eighth of the keys by bytes; add the rest to "other".

        Freeing most of the dimension at once keeps folds rare, and from then on a new key is
        admitted only when its first flow is at least as big as the smallest key kept: a
        spoofed-source flood (every flow a new key) then costs one probe per flow, not a fold
        per ``max_keys`` flows, while heavy talkers keep their own rows.
        """
        other = d.pop(OTHER, None) or [0, 0, 0]
        keep = dict(heapq.nlargest(max(1, len(d) // 8), d.items(), key=_by_bytes))
        folded = 0
        for k, t in d.items():
            if k not in keep:
                other[0] += t[0]
                other[1] += t[1]
                other[2] += t[2]
                folded += 1
        d.clear()
        d.update(keep)
        d[OTHER] = other
        bucket.admit[dim] = max(1, min(t[0] for t in keep.values())) if keep else 1
        bucket.folded += folded

    def rows(self, bucket: MinuteBucket) -> list[RollupRow]:
        """The bucket as rows: top-K by bytes plus top-K by packets, the rest as "other"."""
        out: list[RollupRow] = []
        k = self.top_k
        for dim, d in bucket.by_dim.items():
            other = list(d.get(OTHER, (0, 0, 0)))
            items = []
            for key, t in d.items():
                text = _key_text(key) if key != OTHER else None
                if text is None:
                    other[0] += t[0] if key != OTHER else 0
                    other[1] += t[1] if key != OTHER else 0
                    other[2] += t[2] if key != OTHER else 0
                else:
                    items.append((text, t))
            keep = {key for key, _ in sorted(items, key=lambda kv: kv[1][0], reverse=True)[:k]}
            keep |= {key for key, _ in sorted(items, key=lambda kv: kv[1][1], reverse=True)[:k]}
            for key, t in items:
                if key in keep:
                    out.append((bucket.minute, dim, key, t[0], t[1], t[2]))
                else:
                    other[0] += t[0]
                    other[1] += t[1]
                    other[2] += t[2]
            if other[2]:
                out.append((bucket.minute, dim, OTHER, other[0], other[1], other[2]))
        return out

    def take_closed(self, now: float) -> list[RollupRow]:
        """Rows of every minute before the current one, removing them from memory."""
        current = int(now) // 60 * 60
        rows: list[RollupRow] = []
        for minute in sorted(m for m in self.buckets if m < current):
            bucket = self.buckets.pop(minute)
            self._folded_closed += bucket.folded
            rows.extend(self.rows(bucket))
        return rows

    def take_all(self) -> list[RollupRow]:
        rows: list[RollupRow] = []
        for minute in sorted(self.buckets):
            bucket = self.buckets.pop(minute)
            self._folded_closed += bucket.folded
            rows.extend(self.rows(bucket))
        return rows

    def open_rows(self) -> list[RollupRow]:
        """Rows of minutes still open (the API adds them so "top" is current)."""
        rows: list[RollupRow] = []
        for minute in sorted(self.buckets):
            rows.extend(self.rows(self.buckets[minute]))
        return rows


def _key_text(key: Any) -> str | None:
    """Stored form of a key: the address, "src > dst", or "port/transport"."""
    if isinstance(key, tuple):
        a, b = key
        if a is None:
            return None
        return f"{a} > {b}" if isinstance(a, str) else f"{a}/{b}"
    return key if key is None or isinstance(key, str) else str(key)


def _by_bytes(item: tuple[Any, Totals]) -> int:
    return item[1][0]
