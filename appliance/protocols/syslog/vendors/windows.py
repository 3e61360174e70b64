"""Windows event logs as forwarded by Snare (``MSWinEventLog<TAB>...``) or as JSON: eventchannel
(``{"win": {"system": ..., "eventdata": ...}}``, Wazuh's shape), NXLog's ``to_json()`` (flat:
``EventID``, ``SourceName``, ``Channel``, ``Hostname`` and the event data beside them) and
Winlogbeat's (``{"winlog": {"event_id", "provider_name", "event_data": ...}}``).

All land on the same map from event ID to ECS (logons, account management, policy and
audit changes, Filtering Platform connections); the rest keep ID, channel and provider.
Microsoft Defender Antivirus events (provider ``Microsoft-Windows-Windows Defender``, or
``Microsoft Antimalware`` for SCEP, which shares the IDs) have their own map onto the malware
contract (detections, remediation, signature updates, protection switched off).
"""

from __future__ import annotations

import json
import re
from typing import Any

from appliance.protocols.syslog.message import SyslogMessage
from appliance.protocols.syslog.vendors.base import (
    Fields,
    VendorDecoder,
    authentication,
    json_int,
    malware,
    network_verdict,
    set_int,
    set_ip,
)

# Event ID → (category, type, action, outcome or None = from the audit result)
EVENTS: dict[str, tuple[str, str, str, str | None]] = {
    "4624": ("authentication", "start", "login", "success"),
    "4625": ("authentication", "start", "login", "failure"),
    "4634": ("authentication", "end", "logout", "success"),
    "4647": ("authentication", "end", "logout", "success"),
    "4648": ("authentication", "start", "explicit_credentials_login", None),
    "4740": ("iam", "change", "account_locked", "success"),
    "4720": ("iam", "creation", "user_created", "success"),
    "4722": ("iam", "change", "user_enabled", "success"),
    "4725": ("iam", "change", "user_disabled", "success"),
    "4726": ("iam", "deletion", "user_deleted", "success"),
    "4738": ("iam", "change", "user_changed", "success"),
    "4728": ("iam", "change", "group_member_added", "success"),
    "4732": ("iam", "change", "group_member_added", "success"),
    "4756": ("iam", "change", "group_member_added", "success"),
    "4719": ("configuration", "change", "config_change", "success"),
    "4907": ("configuration", "change", "config_change", "success"),
    "1102": ("configuration", "change", "audit_log_cleared", "success"),
    "4698": ("configuration", "creation", "scheduled_task_created", "success"),
    "4776": ("authentication", "info", "credential_validation", None),
    "4771": ("authentication", "start", "kerberos_preauth", "failure"),
}
# Defender event ID -> malware action; None: from the event's "Action Name" (1007, 1117).
# learn.microsoft.com, "Microsoft Defender Antivirus event IDs and error codes".
DEFENDER_EVENTS: dict[str, str | None] = {
    "1000": "scan_started",
    "1001": "scan_completed",
    "1006": "detected",
    "1007": None,
    "1008": "clean_failed",
    "1015": "detected",
    "1116": "detected",
    "1117": None,
    "1118": "clean_failed",
    "1119": "clean_failed",
    "1150": "status",
    "1151": "status",
    "2000": "signature_update",
    "2001": "signature_update_failed",
    "2003": "signature_update_failed",
    "2004": "signature_update_failed",
    "2005": "signature_update_failed",
    "2006": "signature_update_failed",
    "3002": "protection_disabled",
    "5000": "status",
    "5001": "protection_disabled",
    "5008": "protection_disabled",
    "5010": "protection_disabled",
    "5012": "protection_disabled",
}
# "Action Name" (first word, lower case) of an action-taken event -> malware action.
DEFENDER_ACTIONS = {
    "quarantine": "quarantined",
    "remove": "deleted",
    "clean": "cleaned",
    "block": "blocked",
    "allow": "left_alone",
    "no": "left_alone",
}
# Event data (names without spaces, lower case: "Threat Name", Wazuh's "threatName") -> ECS;
# the first name present wins.
DEFENDER_FIELDS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("rule.name", ("threatname",)),
    ("rule.id", ("threatid",)),
    ("rule.category", ("categoryname",)),
    ("windows_defender.severity", ("severityname",)),
    ("user.name", ("detectionuser",)),
    ("process.executable", ("processname",)),
    ("windows_defender.action", ("actionname",)),
    ("windows_defender.detection_source", ("sourcename",)),
    ("error.message", ("errordescription",)),
    ("error.code", ("errorcode",)),
    (
        "windows_defender.signature_version",
        ("securityintelligenceversion", "signatureversion", "currentsecurityintelligenceversion",
         "currentsignatureversion"),
    ),
    ("windows_defender.engine_version", ("engineversion", "currentengineversion")),
)  # fmt: skip
# The rendered message's labels (what Snare forwards) -> the event data names.
_DEFENDER_LABELS = {
    "Name": "threatname",
    "ID": "threatid",
    "Severity": "severityname",
    "Category": "categoryname",
    "Path": "path",
    "Detection Source": "sourcename",
    "User": "detectionuser",
    "Process Name": "processname",
    "Action": "actionname",
    "Error Code": "errorcode",
    "Error description": "errordescription",
    "Security intelligence Version": "securityintelligenceversion",
    "Signature Version": "signatureversion",
    "Engine Version": "engineversion",
    "Current security intelligence Version": "currentsecurityintelligenceversion",
    "Current Signature Version": "currentsignatureversion",
    "Current Engine Version": "currentengineversion",
}
_DEFENDER_SNARE_FIELD = re.compile(
    r"(?:^|\s)(Name|ID|Severity|Category|Path|Detection Source|User|Process Name|Action|"
    r"Error Code|Error description|Security intelligence Version|Signature Version|"
    r"Engine Version|Current security intelligence Version|Current Signature Version|"
    r"Current Engine Version):\s+(\S[^\t]*?)(?=\s{2,}|$)"
)


def _is_defender(provider: str) -> bool:
    return "Defender" in provider or "Antimalware" in provider


def _defender(event_id: str, data: dict[str, str], fields: Fields) -> None:
    """The malware contract for a Defender event; ``data`` keyed by lower-case names without
    spaces (``threatname``, ``path``, ``actionname``)."""
    if event_id not in DEFENDER_EVENTS:
        return
    fields["observer.product"] = "Microsoft Defender Antivirus"
    fields["observer.type"] = "antivirus"
    for target, names in DEFENDER_FIELDS:
        for n in names:
            value = data.get(n)
            if value:
                fields[target] = value
                break
    action = DEFENDER_EVENTS[event_id]
    if action is None:
        word = (fields.get("windows_defender.action") or "").lower().split(" ", 1)[0]
        action = DEFENDER_ACTIONS.get(word, "cleaned")
    malware(fields, action)
    path = data.get("path")
    if path:
        # "file:_C:\\x\\y.exe; process:_pid:..." -> the first resource; "a.zip->member" -> a.zip
        first = path.split(";", 1)[0].strip()
        kind, sep, rest = first.partition(":_")
        if sep and kind.isalpha():
            first = rest
        first = first.partition("->")[0]
        fields["file.path"] = first
        name = first.replace("/", "\\").rsplit("\\", 1)[-1]
        if name and name != first:
            fields["file.name"] = name


_SNARE_FIELD = re.compile(
    r"(Account Name|Source Network Address|Source Port|Logon Type|"
    r"Workstation Name|Process Name|Destination Address|"
    r"Destination Port|Source Address|Protocol):\s+(\S[^\t]*?)(?=\s{2,}|$)"
)


def _apply(event_id: str, outcome_hint: str | None, fields: Fields) -> None:
    fields["event.code"] = event_id
    fields["winlog.event_id"] = event_id
    known = EVENTS.get(event_id)
    if known is None:
        if outcome_hint:
            fields["event.outcome"] = outcome_hint
        return
    category, kind, action, outcome = known
    outcome = outcome or outcome_hint or "success"
    if category == "authentication":
        authentication(fields, action, outcome, None, kind)
    else:
        fields["event.category"] = [category]
        fields["event.type"] = [kind]
        fields["event.action"] = action
        fields["event.outcome"] = outcome


def _snare(msg: SyslogMessage, fields: Fields) -> bool:
    cols = msg.message.split("\t")
    if len(cols) < 12:
        return False
    fields["observer.vendor"] = "Microsoft"
    fields["observer.product"] = "Windows"
    fields["winlog.channel"] = cols[2]
    fields["winlog.record_id"] = cols[3]
    fields["winlog.provider_name"] = cols[6]
    fields["host.name"] = cols[10]
    if cols[11]:
        fields["winlog.task"] = cols[11]
    audit = cols[9]
    hint = "failure" if audit.startswith("Failure") else "success" if "Success" in audit else None
    _apply(cols[5], hint, fields)
    text = cols[13] if len(cols) > 13 else ""
    if text:
        fields["message"] = text.strip()
        found: dict[str, list[str]] = {}
        for m in _SNARE_FIELD.finditer(text):
            found.setdefault(m.group(1), []).append(m.group(2).strip())
        names = [n for n in found.get("Account Name", []) if n != "-"]
        if names:
            # The last account named is the one acted on (4624 "New Logon", 4625 "Account For
            # Which Logon Failed"); the first is the subject that asked.
            fields["user.name"] = names[-1]
        set_ip(
            fields,
            "source.ip",
            _first(found.get("Source Network Address") or found.get("Source Address")),
        )
        set_int(fields, "source.port", _first(found.get("Source Port")))
        set_ip(fields, "destination.ip", _first(found.get("Destination Address")))
        set_int(fields, "destination.port", _first(found.get("Destination Port")))
        if found.get("Logon Type"):
            fields["winlog.logon.type"] = found["Logon Type"][0]
    if text and _is_defender(cols[6]):
        data: dict[str, str] = {}
        for m in _DEFENDER_SNARE_FIELD.finditer(text):
            data.setdefault(_DEFENDER_LABELS[m.group(1)], m.group(2).strip())
        _defender(cols[5], data, fields)
    if cols[5] in ("5157", "5152"):
        network_verdict(fields, "deny")
    elif cols[5] == "5156":
        network_verdict(fields, "allow")
    return True


def _other_shapes(doc: dict[str, Any]) -> tuple[dict[str, Any], Any] | None:
    """NXLog's flat ``to_json()`` and Winlogbeat's ``winlog`` object as the eventchannel
    ``system`` names and the event data."""
    winlog = doc.get("winlog")
    if isinstance(winlog, dict) and "event_id" in winlog:
        system = {
            "eventID": str(winlog.get("event_id", "")),
            "channel": winlog.get("channel"),
            "providerName": winlog.get("provider_name"),
            "computer": winlog.get("computer_name"),
            "eventRecordID": str(winlog.get("record_id", "")),
            "message": doc.get("message"),
        }
        return system, winlog.get("event_data") or {}
    if "EventID" in doc and ("SourceName" in doc or "Channel" in doc):
        system = {
            "eventID": str(doc.get("EventID", "")),
            "channel": doc.get("Channel"),
            "providerName": doc.get("SourceName") or doc.get("ProviderName"),
            "computer": doc.get("Hostname"),
            "eventRecordID": str(doc.get("RecordNumber", "")),
            "keywords": doc.get("Keywords", ""),
            "message": doc.get("Message"),
        }
        return system, doc
    return None


def _json(msg: SyslogMessage, fields: Fields) -> bool:
    text = msg.message
    if (
        '"win"' not in text[:20]
        and '"System"' not in text[:200]
        and '"winlog"' not in text
        and '"EventID"' not in text
    ):
        return False
    try:
        doc: Any = json.loads(text, parse_int=json_int)
    except (ValueError, RecursionError):  # RecursionError: hostile nesting depth
        return False
    if not isinstance(doc, dict):
        return False
    win = doc.get("win")
    if isinstance(win, dict) and isinstance(win.get("system"), dict):
        system, data = win["system"], win.get("eventdata") or {}
    else:
        other = _other_shapes(doc)
        if other is None:
            return False
        system, data = other
    fields["observer.vendor"] = "Microsoft"
    fields["observer.product"] = "Windows"
    for key, target in (
        ("channel", "winlog.channel"),
        ("providerName", "winlog.provider_name"),
        ("computer", "host.name"),
        ("eventRecordID", "winlog.record_id"),
    ):
        if isinstance(system.get(key), str):
            fields[target] = system[key]
    keywords = str(system.get("keywords", ""))
    hint = (
        "failure"
        if keywords.startswith("0x801")
        else "success"
        if keywords.startswith("0x802")
        else None
    )
    event_id = str(system.get("eventID", ""))
    _apply(event_id, hint, fields)
    if isinstance(data, dict):
        data = {
            k.replace(" ", "").lower(): v
            for k, v in data.items()
            if isinstance(k, str) and isinstance(v, str | int)
        }
        target_user: Any = data.get("targetusername") or data.get("samaccountname")
        if isinstance(target_user, str) and target_user:
            fields["user.name"] = target_user
        if isinstance(data.get("subjectusername"), str):
            fields["user.effective.name"] = data["subjectusername"]
        set_ip(
            fields,
            "source.ip",
            data.get("ipaddress") if isinstance(data.get("ipaddress"), str) else None,
        )
        set_int(fields, "source.port", str(data.get("ipport", "")))
        provider = system.get("providerName")
        if isinstance(provider, str) and _is_defender(provider):
            _defender(event_id, {k: str(v) for k, v in data.items()}, fields)
    if isinstance(system.get("message"), str):
        fields["message"] = system["message"].strip('"').strip()
    return True


def decode(msg: SyslogMessage, fields: Fields) -> bool:
    if msg.message.startswith("{"):
        return _json(msg, fields)
    return _snare(msg, fields)


DECODER = VendorDecoder(
    name="windows",
    decode=decode,
    programs=("MSWinEventLog",),
    prefixes=("MSWinEventLog", "{"),
    order=21,
)


def _first(values: list[str] | None) -> str | None:
    return values[0] if values else None
