"""Incidents: what correlation raises, people handle, and the outbox forwards upstream.

The contract between the correlation engine (which creates and updates incidents) and anything
that must change atomically with them (the forwarding outbox): every create or update of an
incident runs, inside the same ``store.transaction(durable=True)``, each hook in
of the appliance's ``incident_hooks`` (each component adds its own at start: the forwarder,
notify, respond) with the connection and the incident document. A hook that raises
rolls the whole change back, so an incident is never committed without its outbox row.

The incident document (native JSON, versioned by ``schema_version``)::

    {
      "schema_version": 1,
      "id": "<uuid4>",             # stable for the incident's life
      "revision": 3,               # grows by one on every change
      "sensor_id": "edge-01",
      "title": "...",
      "rule": {"id": "...", "title": "...", "level": "high", "tags": ["attack.t1110"]},
      "severity": "high",          # informational | low | medium | high | critical
      "status": "open",            # open | acknowledged | resolved | suppressed
      "group_key": "source.ip=203.0.113.9",
      "first_seen": "2026-11-29T10:00:00.000000Z",   # event time
      "last_seen": "2026-11-29T10:05:00.000000Z",
      "hit_count": 12,
      "suppressed_count": 0,
      "evidence": {"event_ids": [1, 2], "samples": ["<raw line>", ...]},
      "created": "...", "updated": "...",            # wall-clock times of the changes
      "risk_score": 60,            # 0-100, the worst hit's (appliance.analysis.risk)
      "risk": {                    # what moved the score and the severity
        "severity_base": "medium", # the rule's level
        "severity_reasons": ["medium → high: target db1 has CVE-2020-1350 (scan)"],
        "inputs": {"rule_level": "medium", "asset_criticality": 4, "vuln_match": "matched",
                   "cvss": 10.0, "kev": false, "intel_confidence": null, "rarity": 0.0, ...},
        "reasons": ["rule level medium (0.6)", ...],
        "unmatched_hits": 0        # IDS hits against a target without the CVE or service
      }
    }

``risk_score`` and ``risk`` were added without a version bump (schema_version 1): documents
written before them lack both, and readers treat that as "not scored".
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import aiosqlite

IncidentTxnHook = Callable[[aiosqlite.Connection, dict[str, Any]], Awaitable[None]]
