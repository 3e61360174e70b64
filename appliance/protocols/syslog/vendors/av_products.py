"""Antivirus products that ride on CEF or LEEF: what their events mean, as data.

The CEF and LEEF decoders read the envelope (escaping, labels, the common dictionary keys); a
product listed here then gets the malware contract (``base.malware``) on top: which event IDs
are detections or remediation, which extension holds the vendor's action and what its words
mean, which keys hold hashes and the protected host, and (Kaspersky) which lines of ``msg`` hold
the detection. A declarative file cannot do this: it would re-read CEF's escaping with regular
expressions and lose the generic fields. A new product is one more entry in :data:`PRODUCTS`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field

from appliance.protocols.syslog.vendors.base import Fields, malware


@dataclass(frozen=True, slots=True)
class AvProduct:
    """``events``: event class ID -> malware action (``None``: from ``action_key``);
    ``id_range``: numeric IDs in it are events whose action comes from ``action_key``;
    ``actions``: (lower-case text the vendor's action contains, our action), first match wins,
    ``default`` when none does; ``host_key``: the extension naming the protected endpoint;
    ``fields``: extension key (or CEF label) -> ECS field; ``msg_fields``: (regex with one
    group over ``msg``, ECS field)."""

    product: str
    events: Mapping[str, str | None] = field(default_factory=dict)
    id_range: tuple[int, int] | None = None
    action_key: str = "act"
    actions: tuple[tuple[str, str], ...] = ()
    default: str = "detected"
    host_key: str | None = None
    fields: Mapping[str, str] = field(default_factory=dict)
    msg_fields: tuple[tuple[re.Pattern[str], str], ...] = ()


LOWER = frozenset({"file.hash.md5", "file.hash.sha1", "file.hash.sha256"})

# Trend Micro Deep Security Anti-Malware events: signature IDs 4000000-4000999 ("Syslog message
# formats", Deep Security help center), the malware's name as the CEF Name / LEEF ``name``.
TREND_DEEP_SECURITY = AvProduct(
    product="Deep Security",
    id_range=(4000000, 4000999),
    actions=(
        ("fail", "clean_failed"),
        ("unable", "clean_failed"),
        ("quarantine", "quarantined"),
        ("delete", "deleted"),
        ("clean", "cleaned"),
        ("deny access", "blocked"),
        ("terminate", "blocked"),
        ("pass", "left_alone"),
    ),
    host_key="dvchost",
    fields={
        "TrendMicroDsFileMD5": "file.hash.md5",
        "TrendMicroDsFileSHA1": "file.hash.sha1",
        "TrendMicroDsFileSHA256": "file.hash.sha256",
        "TrendMicroDsMalwareTarget": "trendmicro.malware_target",
        "TrendMicroDsMalwareTargetType": "trendmicro.malware_target_type",
        "filePath": "file.path",
        "name": "rule.name",
        "msg": "trendmicro.scan_type",
    },
)

# Kaspersky Security Center's CEF export: the event type is the class ID (KLEVP's generic
# events), the endpoint in ``dhost``; the detection's details are lines of ``msg``
# ("Result\Name: ...", "Object: ...", "User: ... (Initiator)", "SHA256: ...").
_KSC_MSG = (
    (r"(?m)^\s*Result\\Name: (.+?)\s*$", "rule.name"),
    (r"(?m)^\s*Result\\Type: (.+?)\s*$", "rule.category"),
    (r"(?m)^\s*Object: (.+?)\s*$", "file.path"),
    (r"(?m)^\s*Object\\Name: (.+?)\s*$", "file.name"),
    (r"(?m)^\s*User: (.+?)(?: \([^)]*\))?\s*$", "user.name"),
    (r"(?m)^\s*SHA256: ([0-9A-Fa-f]{64})\s*$", "file.hash.sha256"),
    (r"(?m)^\s*MD5: ([0-9A-Fa-f]{32})\s*$", "file.hash.md5"),
    (r"(?m)^\s*Component: (.+?)\s*$", "kaspersky.component"),
)
KASPERSKY_SECURITY_CENTER = AvProduct(
    product="Kaspersky Security Center",
    events={
        "GNRL_EV_VIRUS_FOUND": "detected",
        "GNRL_EV_INFECTED_OBJECT_FOUND": "detected",
        "GNRL_EV_SUSPICIOUS_OBJECT_FOUND": "detected",
        "GNRL_EV_VIRUS_FOUND_BY_KSN": "detected",
        "GNRL_EV_OBJECT_REPORTED": "detected",
        "GNRL_EV_VIRUS_FOUND_AND_BLOCKED": "blocked",
        "GNRL_EV_OBJECT_BLOCKED": "blocked",
        "GNRL_EV_OBJECT_CURED": "cleaned",
        "GNRL_EV_OBJECT_DELETED": "deleted",
        "GNRL_EV_OBJECT_QUARANTINED": "quarantined",
        "GNRL_EV_OBJECT_NOTCURED": "clean_failed",
    },
    host_key="dhost",
    msg_fields=tuple((re.compile(rx), target) for rx, target in _KSC_MSG),
)

# (observer.vendor, observer.product) as the CEF/LEEF header writes them -> the product.
PRODUCTS: dict[tuple[str, str], AvProduct] = {
    ("Trend Micro", "Deep Security Agent"): TREND_DEEP_SECURITY,
    ("Trend Micro", "Deep Security Manager"): TREND_DEEP_SECURITY,
    ("KasperskyLab", "SecurityCenter"): KASPERSKY_SECURITY_CENTER,
    ("Kaspersky Lab", "SecurityCenter"): KASPERSKY_SECURITY_CENTER,
}


def apply(vendor: str, product: str, event_id: str, ext: Mapping[str, str], fields: Fields) -> None:
    """The malware contract and product fields when (vendor, product, event ID) is an antivirus
    event; nothing otherwise. ``ext``: the extensions by key, CEF labels resolved."""
    p = PRODUCTS.get((vendor, product))
    if p is None:
        return
    fields["observer.type"] = "antivirus"
    action: str | None = p.events.get(event_id, "")
    lo, hi = p.id_range or (1, 0)
    if not action and event_id.isdigit() and lo <= int(event_id) <= hi:
        action = None
    if action == "":
        return
    if action is None:
        said = ext.get(p.action_key, "").lower()
        action = next((ours for word, ours in p.actions if word in said), p.default)
    malware(fields, action)
    fields["observer.product"] = p.product
    if p.host_key and ext.get(p.host_key):
        fields["host.name"] = ext[p.host_key]
    for key, target in p.fields.items():
        value = ext.get(key)
        if value and value != "N/A":
            fields[target] = value.lower() if target in LOWER else value
    text = ext.get("msg", "")
    for rx, target in p.msg_fields:
        m = rx.search(text)
        if m:
            fields[target] = m.group(1).lower() if target in LOWER else m.group(1)
    path = fields.get("file.path")
    if isinstance(path, str) and "file.name" not in fields:
        name = path.replace("/", "\\").rsplit("\\", 1)[-1]
        if name and name != path:
            fields["file.name"] = name
