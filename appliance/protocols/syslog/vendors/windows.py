"""Windows event logs as forwarded by Snare (``MSWinEventLog<TAB>...``) or as eventchannel
JSON (``{"win": {"system": ..., "eventdata": ...}}``, Wazuh's and NXLog's shape).

Both land on the same map from event ID to ECS (logons, account management, policy and
audit changes, Filtering Platform connections); the rest keep ID, channel and provider.
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
            (found.get("Source Network Address") or found.get("Source Address") or [None])[0],
        )
        set_int(fields, "source.port", (found.get("Source Port") or [None])[0])
        set_ip(fields, "destination.ip", (found.get("Destination Address") or [None])[0])
        set_int(fields, "destination.port", (found.get("Destination Port") or [None])[0])
        if found.get("Logon Type"):
            fields["winlog.logon.type"] = found["Logon Type"][0]
    if cols[5] in ("5157", "5152"):
        network_verdict(fields, "deny")
    elif cols[5] == "5156":
        network_verdict(fields, "allow")
    return True


def _json(msg: SyslogMessage, fields: Fields) -> bool:
    text = msg.message
    if '"win"' not in text[:20] and '"System"' not in text[:200]:
        return False
    try:
        doc: Any = json.loads(text, parse_int=json_int)
    except (ValueError, RecursionError):  # RecursionError: hostile nesting depth
        return False
    win = doc.get("win") if isinstance(doc, dict) else None
    if not isinstance(win, dict) or not isinstance(win.get("system"), dict):
        return False
    system, data = win["system"], win.get("eventdata") or {}
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
    _apply(str(system.get("eventID", "")), hint, fields)
    if isinstance(data, dict):
        target = data.get("targetUserName") or data.get("samAccountName")
        if isinstance(target, str) and target:
            fields["user.name"] = target
        if isinstance(data.get("subjectUserName"), str):
            fields["user.effective.name"] = data["subjectUserName"]
        set_ip(
            fields,
            "source.ip",
            data.get("ipAddress") if isinstance(data.get("ipAddress"), str) else None,
        )
        set_int(fields, "source.port", str(data.get("ipPort", "")))
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
