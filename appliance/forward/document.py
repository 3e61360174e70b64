"""The forwarded document: the incident as the appliance knows it, wrapped with who sent it.

Every upstream format is derived from this one envelope, so a console receiving several formats
sees the same idempotency key and identity fields. The key ``sensor_id:incident_id:revision``
is computed from the incident itself, never from the attempt, so it survives retries and
restarts and lets the console drop the duplicates that at-least-once delivery implies.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from appliance.event import Event

ENVELOPE_VERSION = 1

SEVERITIES = ("informational", "low", "medium", "high", "critical")

# Drop order when a spool is full (lowest class first, oldest first within a class):
#   0 dead-lettered rows (the upstream already refused them)
#   1 resolved or suppressed incidents, any severity
#   2 informational and low severity
#   3 medium severity
#   4 open or acknowledged high
#   5 open or acknowledged critical (dropped last)
DROP_DEAD = 0
_SAFE_KEY = re.compile(r"[A-Za-z0-9._:\-]{1,200}")


@dataclass(frozen=True, slots=True)
class Identity:
    """Who is sending: stamped on every document so multi-tenant consoles can route."""

    sensor_id: str
    tenant: str = ""
    site: str = ""


def idempotency_key(sensor_id: str, incident_id: str, revision: int) -> str:
    """``sensor_id:incident_id:revision``; hashed if the id is not header-safe.

    Header serialization rejects control characters, and the key goes into headers
    (``webhook-id``), so an id from elsewhere that is not plain is replaced by its digest.
    """
    key = f"{sensor_id}:{incident_id}:{int(revision)}"
    if _SAFE_KEY.fullmatch(key):
        return key
    digest = hashlib.sha256(str(incident_id).encode("utf-8", "replace")).hexdigest()[:32]
    return f"{sensor_id}:{digest}:{int(revision)}"


def drop_class(incident: dict[str, Any]) -> int:
    status = incident.get("status")
    severity = incident.get("severity")
    if status in ("resolved", "suppressed"):
        return 1
    if severity in ("high", "critical"):
        return 4 if severity == "high" else 5
    if severity == "medium":
        return 3
    return 2


def build_document(incident: dict[str, Any], identity: Identity) -> dict[str, Any]:
    """The native envelope (JSON Schema ``appliance/forward/schema/webhook-v1.schema.json``)."""
    return {
        "envelope_version": ENVELOPE_VERSION,
        "kind": "incident",
        "idempotency_key": idempotency_key(
            identity.sensor_id, str(incident.get("id", "")), int(incident.get("revision", 0))
        ),
        "sensor_id": identity.sensor_id,
        "tenant": identity.tenant,
        "site": identity.site,
        "incident": incident,
    }


def event_key(sensor_id: str, ev: Event) -> str:
    """``sensor_id:event:<receive time µs>-<row id>``: row ids restart if the database is
    ever replaced, the receive time makes the pair unique anyway."""
    return f"{sensor_id}:event:{int(ev.created * 1e6)}-{ev.id}"


def event_drop_class(ev: Event) -> int:
    """Drop class of a raw event by syslog severity: debug/info first, emergencies last."""
    sev = ev.fields.get("log.syslog.severity.code")
    if isinstance(sev, int):
        return 4 if sev <= 3 else 3 if sev <= 5 else 2
    return 3


def build_event_document(ev: Event, identity: Identity) -> dict[str, Any]:
    return {
        "envelope_version": ENVELOPE_VERSION,
        "kind": "event",
        "idempotency_key": event_key(identity.sensor_id, ev),
        "sensor_id": identity.sensor_id,
        "tenant": identity.tenant,
        "site": identity.site,
        "event": ev.to_ecs(identity.sensor_id),
    }


def parse_time(value: Any, default: float) -> float:
    """An ISO 8601 UTC time from the incident document to epoch seconds (``default`` if bad)."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    if not isinstance(value, str) or not value:
        return default
    try:
        dt = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return default
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return dt.timestamp()
