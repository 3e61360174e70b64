"""The one normalized event shape that sources produce and rules, storage, the API and sinks read.

Fields live in one flat dict keyed by ECS dotted names (``source.ip``, ``log.syslog.severity.code``)
because that is what rules look up on the hot path: one dict probe per field, no nested walks.
The nested form Elastic stores is produced only at the edges (API, sinks) by :func:`nest`.
"""

from __future__ import annotations

import datetime as _dt
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

ECS_VERSION = "8.11.0"


@dataclass(slots=True)
class Event:
    """One normalized event.

    ``timestamp`` is the event time (``@timestamp``: device time when the message carries one,
    else receive time); ``created`` is when the appliance received it (``event.created``).
    ``raw`` is the original bytes, already bounded by the source (``event.original``).
    """

    timestamp: float
    created: float
    module: str
    fields: dict[str, Any] = field(default_factory=dict)
    raw: bytes = b""
    id: int | None = None
    # The line the store keeps (appliance.store.segments), encoded when the event is offered
    # (or by a decode worker). A ``before_store`` stage that changes ``fields`` calls
    # :meth:`changed`, and the pipeline encodes the line again before the insert.
    line: bytes | None = None
    # The configured source (listener) that received it: ``sources.*.name``, else its default
    # label. Set by the pipeline's and the flow path's ``offer`` for the before-store stages
    # (per-listener rates); kept in memory only, so an event read back from the store has "".
    listener: str = ""

    def changed(self) -> None:
        """Say that ``fields`` changed after the stored line was encoded (enrichment)."""
        self.line = None

    def get(self, name: str, default: Any = None) -> Any:
        return self.fields.get(name, default)

    def to_ecs(self, sensor_id: str | None = None) -> dict[str, Any]:
        """The Elastic-style nested document for the API and upstream sinks."""
        return to_ecs(self, sensor_id)


# The reference: the class the Python data plane makes and the one the native class (below)
# is held to. Type checkers see only this one.
ReferenceEvent = Event


def to_ecs(ev: Event, sensor_id: str | None = None) -> dict[str, Any]:
    """``ev.to_ecs(sensor_id)`` for both classes: the nested document made from the flat
    fields, the times and the raw text."""
    flat: dict[str, Any] = dict(ev.fields)
    flat["@timestamp"] = iso8601(ev.timestamp)
    flat["event.created"] = iso8601(ev.created)
    flat["event.module"] = ev.module
    flat.setdefault("event.kind", "event")
    flat["ecs.version"] = ECS_VERSION
    if ev.raw:
        flat["event.original"] = ev.raw.decode("utf-8", "backslashreplace")
    if ev.id is not None:
        flat["event.id"] = str(ev.id)
    if sensor_id is not None:
        flat["observer.name"] = flat.get("observer.name", sensor_id)
        flat["agent.id"] = sensor_id
    return nest(flat)


def iso8601(ts: float) -> str:
    """RFC 3339 UTC with microseconds, the form ECS ``@timestamp`` uses."""
    return (
        _dt.datetime.fromtimestamp(ts, tz=_dt.UTC)
        .isoformat(timespec="microseconds")
        .replace("+00:00", "Z")
    )


def nest(flat: dict[str, Any]) -> dict[str, Any]:
    """Turn ``{"a.b": 1, "a.c": 2}`` into ``{"a": {"b": 1, "c": 2}}``.

    A key that is both a leaf and a parent (``log.syslog.priority`` and a deeper key) keeps the
    leaf under the parent's own name so nothing is lost. ``@timestamp`` is never split.
    """
    out: dict[str, Any] = {}
    for key in sorted(flat, key=lambda k: k.count(".")):
        value = flat[key]
        if key.startswith("@"):
            out[key] = value
            continue
        parts = key.split(".")
        node = out
        for part in parts[:-1]:
            child = node.get(part)
            if not isinstance(child, dict):
                child = {} if child is None else {"value": child}
                node[part] = child
            node = child
        leaf = parts[-1]
        if isinstance(node.get(leaf), dict):
            node[leaf]["value"] = value
        else:
            node[leaf] = value
    return out


if not TYPE_CHECKING:
    from appliance import dataplane as _dataplane

    if _dataplane.native is not None:
        # The same class made natively (dataplane/src/python_event.rs): the batch calls
        # make one per message, and the native stages read its attributes from the struct.
        Event = _dataplane.native.Event
