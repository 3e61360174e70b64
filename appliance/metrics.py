"""A small Prometheus registry: counters and gauges with labels, rendered in text format 0.0.4.

Written here rather than taken from ``prometheus-client`` because the hot path increments
counters tens of thousands of times a second: an ``inc`` is one dict update keyed by a tuple of
label values, with no per-call object creation. A metric kept elsewhere is a callback, read at
scrape time.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

LabelValues = tuple[str, ...]


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _fmt(value: float) -> str:
    if value == int(value) and abs(value) < 1e15:
        return str(int(value))
    return repr(float(value))


# What a metric kept elsewhere reports when rendered: its value, or its values by labels.
Reading = Callable[[], dict[LabelValues, float] | float]


class _Metric:
    kind = "untyped"

    def __init__(self, name: str, help: str, labels: Iterable[str] = ()) -> None:
        self.name = name
        self.help = help
        self.labelnames: tuple[str, ...] = tuple(labels)
        self.values: dict[LabelValues, float] = {}
        # Set for a value kept elsewhere (a component's state, the native data plane's
        # counts): read when rendered, never reported by a worker's snapshot.
        self.callback: Reading | None = None

    def _key(self, labels: tuple[str, ...]) -> LabelValues:
        if len(labels) != len(self.labelnames):
            raise ValueError(f"{self.name}: expected labels {self.labelnames}, got {labels}")
        return labels

    def samples(self) -> Iterable[tuple[LabelValues, float]]:
        if self.callback is not None:
            got = self.callback()
            if isinstance(got, dict):
                return sorted(got.items())
            return [((), float(got))]
        return sorted(self.values.items())

    def value(self, *labels: str) -> float:
        return self.values.get(labels, 0.0)

    def render(self) -> list[str]:
        lines = [f"# HELP {self.name} {self.help}", f"# TYPE {self.name} {self.kind}"]
        for labels, value in self.samples():
            if labels:
                inner = ",".join(
                    f'{n}="{_escape(v)}"' for n, v in zip(self.labelnames, labels, strict=True)
                )
                lines.append(f"{self.name}{{{inner}}} {_fmt(value)}")
            else:
                lines.append(f"{self.name} {_fmt(value)}")
        return lines


class Counter(_Metric):
    kind = "counter"

    def inc(self, *labels: str, n: float = 1) -> None:
        values = self.values
        values[labels] = values.get(labels, 0) + n

    def total(self) -> float:
        return sum(self.values.values())


class Gauge(_Metric):
    kind = "gauge"

    def set(self, value: float, *labels: str) -> None:
        self.values[self._key(labels)] = value


class Registry:
    """Named metrics; asking twice for the same name returns the same metric."""

    def __init__(self, prefix: str = "appliance_") -> None:
        self.prefix = prefix
        self._metrics: dict[str, _Metric] = {}

    def counter(
        self, name: str, help: str, labels: Iterable[str] = (), callback: Reading | None = None
    ) -> Counter:
        return self._get(Counter, name, help, labels, callback)

    def gauge(
        self, name: str, help: str, labels: Iterable[str] = (), callback: Reading | None = None
    ) -> Gauge:
        return self._get(Gauge, name, help, labels, callback)

    def _get(
        self, cls: type, name: str, help: str, labels: Iterable[str], callback: Reading | None
    ):
        full = self.prefix + name
        metric = self._metrics.get(full)
        if metric is None:
            metric = cls(full, help, labels)
            self._metrics[full] = metric
        elif not isinstance(metric, cls):
            raise TypeError(f"{full} is already a {metric.kind}")
        if callback is not None:
            metric.callback = callback
        return metric

    def snapshot(self) -> dict[str, list[Any]]:
        """Counters and set gauges as ``{name: [kind, [[labels, value], ...]]}`` (JSON-able):
        how a worker process reports its metrics to the parent."""
        out: dict[str, list[Any]] = {}
        for name, metric in self._metrics.items():
            reported = isinstance(metric, Counter | Gauge) and metric.callback is None
            if reported and metric.values:
                out[name] = [metric.kind, [[list(k), v] for k, v in metric.values.items()]]
        return out

    def apply_snapshot(
        self, snapshot: dict[str, list[Any]], last: dict[str, dict[LabelValues, float]]
    ) -> None:
        """Fold a worker's :meth:`snapshot` into this registry: counters grow by what they
        grew since ``last`` (the worker's previous snapshot, updated here), gauges are set.
        Names this registry does not know are ignored."""
        for name, (kind, series) in snapshot.items():
            metric = self._metrics.get(name)
            if metric is None or metric.kind != kind:
                continue
            prev = last.setdefault(name, {})
            for labels, value in series:
                key = tuple(labels)
                if len(key) != len(metric.labelnames):
                    continue
                if isinstance(metric, Counter):
                    delta = value - prev.get(key, 0.0)
                    if delta:
                        metric.inc(*key, n=delta)
                elif isinstance(metric, Gauge):
                    metric.set(value, *key)
                prev[key] = value

    def get(self, name: str) -> _Metric | None:
        return self._metrics.get(self.prefix + name) or self._metrics.get(name)

    def render(self) -> str:
        lines: list[str] = []
        for name in sorted(self._metrics):
            lines.extend(self._metrics[name].render())
        return "\n".join(lines) + "\n"
