"""Per-minute flow aggregates with bounded cardinality: top keys plus "other".

Why bounded: the keys are attacker-controlled (a spoofed-source flood makes every flow a new
source address), so each dimension of each minute holds at most ``max_keys`` keys. When that
fills, the smaller half is folded into ``"other"``; totals stay exact (every flow is counted
in exactly one key), only the ranking of small keys is approximate. At flush only the top
``top_k`` by bytes and the top ``top_k`` by packets are kept; the rest joins ``"other"``.
Minutes are by receive time so a late or clock-skewed exporter cannot reopen a closed minute.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

OTHER = "other"
DIMENSIONS = ("source.ip", "destination.ip", "conversation", "destination.port")

Totals = list[int]  # [bytes, packets, flows]
RollupRow = tuple[int, str, str, int, int, int]  # (minute, dim, key, bytes, packets, flows)


class MinuteBucket:
    __slots__ = ("by_dim", "folded", "minute")

    def __init__(self, minute: int) -> None:
        self.minute = minute
        self.by_dim: dict[str, dict[str, Totals]] = {d: {} for d in DIMENSIONS}
        self.folded = 0  # keys folded into "other" because the dimension was full


class FlowRollup:
    def __init__(self, top_k: int = 100, max_keys: int = 20_000) -> None:
        self.top_k = top_k
        self.max_keys = max_keys
        self.buckets: dict[int, MinuteBucket] = {}
        self.flows = 0
        self.folded = 0

    def add(self, batch: Iterable[tuple[float, dict[str, Any]]]) -> None:
        """Count each ``(receive time, fields)`` flow in its minute, in every dimension.

        Flows are first summed per (minute, source, destination, port, transport) in one dict
        probe each, then each distinct tuple is added to the four dimensions: a batch of
        flows between few hosts costs little more than one probe per flow.
        """
        groups: dict[tuple[Any, ...], list[int]] = {}
        n = 0
        for created, f in batch:
            n += 1
            g = f.get
            key = (
                int(created) // 60 * 60,
                g("source.ip"),
                g("destination.ip"),
                g("destination.port"),
                g("network.transport") or g("network.iana_number"),
            )
            b = g("network.bytes") or 0
            p = g("network.packets") or 0
            t = groups.get(key)
            if t is None:
                groups[key] = [b, p, 1]
            else:
                t[0] += b
                t[1] += p
                t[2] += 1
        self.flows += n
        buckets = self.buckets
        max_keys = self.max_keys
        for (minute, src, dst, port, transport), (b, p, c) in groups.items():
            bucket = buckets.get(minute)
            if bucket is None:
                bucket = buckets[minute] = MinuteBucket(minute)
            by_dim = bucket.by_dim
            for dim, key in (
                ("source.ip", src),
                ("destination.ip", dst),
                ("conversation", f"{src} > {dst}" if src is not None else None),
                ("destination.port", f"{port}/{transport}" if port is not None else None),
            ):
                if key is None:
                    continue
                d = by_dim[dim]
                t = d.get(key)
                if t is None:
                    if len(d) >= max_keys:
                        self._fold(d, bucket)
                    d[key] = [b, p, c]
                else:
                    t[0] += b
                    t[1] += p
                    t[2] += c

    def _fold(self, d: dict[str, Totals], bucket: MinuteBucket) -> None:
        """Keep the larger half by bytes; add the rest to "other"."""
        other = d.pop(OTHER, [0, 0, 0])
        ranked = sorted(d.items(), key=lambda kv: kv[1][0], reverse=True)
        keep = len(ranked) // 2
        for _key, t in ranked[keep:]:
            other[0] += t[0]
            other[1] += t[1]
            other[2] += t[2]
        folded = len(ranked) - keep
        d.clear()
        d.update(ranked[:keep])
        d[OTHER] = other
        bucket.folded += folded
        self.folded += folded

    def rows(self, bucket: MinuteBucket) -> list[RollupRow]:
        """The bucket as rows: top-K by bytes plus top-K by packets, the rest as "other"."""
        out: list[RollupRow] = []
        k = self.top_k
        for dim, d in bucket.by_dim.items():
            other = list(d.get(OTHER, (0, 0, 0)))
            items = [(key, t) for key, t in d.items() if key != OTHER]
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
            rows.extend(self.rows(self.buckets.pop(minute)))
        return rows

    def take_all(self) -> list[RollupRow]:
        rows: list[RollupRow] = []
        for minute in sorted(self.buckets):
            rows.extend(self.rows(self.buckets.pop(minute)))
        return rows

    def open_rows(self) -> list[RollupRow]:
        """Rows of minutes still open (the API adds them so "top" is current)."""
        rows: list[RollupRow] = []
        for minute in sorted(self.buckets):
            rows.extend(self.rows(self.buckets[minute]))
        return rows
