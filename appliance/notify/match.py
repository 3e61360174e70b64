"""Which routes and silences an incident meets: pure functions of the incident and the time.

Kept apart from the engine so the rules (severity order, globs, networks, time windows in the
configured zone, Alertmanager's first-match-unless-continue) are testable without a store.
"""

from __future__ import annotations

import fnmatch
import ipaddress
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from appliance.config import (
    SEVERITY_ORDER,
    WEEKDAYS,
    NotifyQuietHours,
    NotifyRoute,
    parse_time_range,
)

SOURCE_FIELDS = ("source.ip", "client.ip", "src_ip")


def rank(severity: str) -> int:
    """Position in the severity order; an unknown name ranks as medium (as incidents do)."""
    try:
        return SEVERITY_ORDER.index(severity)
    except ValueError:
        return SEVERITY_ORDER.index("medium")


def _glob_any(patterns: Iterable[str], values: Iterable[str]) -> bool:
    vals = list(values)
    return any(fnmatch.fnmatchcase(v, p) for p in patterns for v in vals)


def source_ip(incident: Mapping[str, Any]) -> str | None:
    """The incident's source address, from its group-by values, if it has one."""
    group = incident.get("group") or {}
    for name in SOURCE_FIELDS:
        value = group.get(name)
        if value:
            return str(value)
    return None


def in_networks(address: str | None, networks: Iterable[str]) -> bool:
    if not address:
        return False
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(ip in ipaddress.ip_network(n, strict=False) for n in networks)


def in_window(hours: str, days: list[str], now: float, tz: ZoneInfo) -> bool:
    """Whether ``now`` is inside ``HH:MM-HH:MM`` on one of ``days`` (empty = every day).

    A range past midnight (22:00-07:00) belongs to the day it starts on: Friday's night
    runs into Saturday morning.
    """
    local = datetime.fromtimestamp(now, tz)
    minute = local.hour * 60 + local.minute
    weekday = local.weekday()
    if not hours:
        return not days or WEEKDAYS[weekday] in days
    start, end = parse_time_range(hours)
    if start <= end:
        return start <= minute < end and (not days or WEEKDAYS[weekday] in days)
    if minute >= start:
        return not days or WEEKDAYS[weekday] in days
    if minute < end:
        return not days or WEEKDAYS[(weekday - 1) % 7] in days
    return False


def window_end(hours: str, now: float, tz: ZoneInfo) -> float:
    """The next clock time the ``HH:MM-HH:MM`` window ends after ``now`` (for held messages)."""
    _, end = parse_time_range(hours)
    local = datetime.fromtimestamp(now, tz)
    target = local.replace(hour=end // 60 % 24, minute=end % 60, second=0, microsecond=0)
    ts = target.timestamp()
    if ts <= now:
        ts += 86400
    return ts


def rule_names(incident: Mapping[str, Any]) -> list[str]:
    """What a ``rules`` glob is tried on: the rule's id and its title (built-in ids are
    UUIDs; "SSH brute force*" is what people write)."""
    rule = incident.get("rule") or {}
    return [str(rule.get("id", "")), str(rule.get("title", ""))]


def route_matches(
    route: NotifyRoute, incident: Mapping[str, Any], *, site: str, now: float, tz: ZoneInfo
) -> bool:
    if rank(str(incident.get("severity", ""))) < rank(route.min_severity):
        return False
    rule = incident.get("rule") or {}
    if route.rules and not _glob_any(route.rules, rule_names(incident)):
        return False
    if route.tags and not _glob_any(route.tags, [str(t) for t in rule.get("tags") or ()]):
        return False
    if route.source_networks and not in_networks(source_ip(incident), route.source_networks):
        return False
    if route.sites and not _glob_any(route.sites, [site]):
        return False
    return not ((route.hours or route.days) and not in_window(route.hours, route.days, now, tz))


def select_routes(
    routes: Iterable[NotifyRoute],
    incident: Mapping[str, Any],
    *,
    site: str,
    now: float,
    tz: ZoneInfo,
) -> list[NotifyRoute]:
    """The routes an incident takes: in order, stopping at the first match without
    ``continue``."""
    out = []
    for route in routes:
        if route_matches(route, incident, site=site, now=now, tz=tz):
            out.append(route)
            if not route.continue_:
                break
    return out


def in_quiet_hours(quiet: NotifyQuietHours | None, severity: str, now: float, tz: ZoneInfo) -> bool:
    """Whether quiet hours hold back an incident of ``severity`` at ``now``."""
    if quiet is None or not quiet.hours:
        return False
    if rank(severity) >= rank(quiet.min_severity):
        return False
    return in_window(quiet.hours, quiet.days, now, tz)


def group_bucket(route: NotifyRoute, incident: Mapping[str, Any]) -> str:
    """The group an incident joins on a route: its values of ``group_by`` (``rule.id``,
    ``severity``, ``group_key`` or a group-by field of the rule)."""
    parts = []
    for name in route.group_by:
        if name == "rule.id":
            value = (incident.get("rule") or {}).get("id", "")
        elif name in ("severity", "group_key", "title", "sensor_id"):
            value = incident.get(name, "")
        else:
            value = (incident.get("group") or {}).get(name, "")
        parts.append(f"{name}={value}")
    return ",".join(parts)


# ---------------------------------------------------------------------------------- silences

SILENCE_KEYS = ("rule", "severity", "group_key", "source")


@dataclass(frozen=True, slots=True)
class Silence:
    id: str
    created: float
    expires: float
    created_by: str
    comment: str
    matchers: dict[str, Any]

    def active(self, now: float) -> bool:
        return self.created <= now < self.expires

    def matches(self, incident: Mapping[str, Any]) -> bool:
        """Every matcher given must hold: ``rule`` glob on the rule id or title,
        ``severity`` one name or a list, ``group_key`` glob, ``source`` a CIDR the source
        address is in."""
        m = self.matchers
        if "rule" in m and not _glob_any([str(m["rule"])], rule_names(incident)):
            return False
        if "severity" in m:
            allowed = m["severity"] if isinstance(m["severity"], list) else [m["severity"]]
            if incident.get("severity") not in allowed:
                return False
        if "group_key" in m and not fnmatch.fnmatchcase(
            str(incident.get("group_key", "")), str(m["group_key"])
        ):
            return False
        return not ("source" in m and not in_networks(source_ip(incident), [str(m["source"])]))

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "created": self.created,
            "expires": self.expires,
            "created_by": self.created_by,
            "comment": self.comment,
            "matchers": self.matchers,
        }


def check_matchers(matchers: Any) -> str | None:
    """Why a silence's matchers are unacceptable, or None."""
    if not isinstance(matchers, dict) or not matchers:
        return "matchers must be a non-empty object"
    for key, value in matchers.items():
        if key not in SILENCE_KEYS:
            return f"unknown matcher {key!r} (use {', '.join(SILENCE_KEYS)})"
        if key == "severity":
            values = value if isinstance(value, list) else [value]
            if not values or any(v not in SEVERITY_ORDER for v in values):
                return f"severity must be among {', '.join(SEVERITY_ORDER)}"
        elif not isinstance(value, str) or not value or len(value) > 200:
            return f"{key} must be a string of 1-200 characters"
        if key == "source":
            try:
                ipaddress.ip_network(value, strict=False)
            except ValueError:
                return "source must be an IP address or network"
    return None
