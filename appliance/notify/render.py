"""Turning incidents into the words people read: subject, plain text, HTML and SMS-short.

One place escapes and cuts: every value taken from an incident (titles, group keys, sensor
names all come from events, which an attacker can write) passes :func:`clean`, which escapes
control characters and bidi overrides and caps its length, and each form is then cut to its
own limit by :func:`cut`. HTML gets ``html.escape`` on top. Nothing here does I/O.
"""

from __future__ import annotations

import html
from collections.abc import Mapping, Sequence
from typing import Any

from appliance.logutil import printable
from appliance.notify.match import rank

SUBJECT_MAX = 200
TEXT_MAX = 20_000
VALUE_MAX = 300
MAX_IDS = 5000  # incident ids a message carries (a digest of a bigger storm lists the first)

# What a pending message keeps of an incident (JSON in notify_pending / notify_timers).
SUMMARY_KEYS = (
    "id",
    "title",
    "severity",
    "status",
    "group_key",
    "hit_count",
    "first_seen",
    "last_seen",
    "sensor_id",
)


def summary(incident: Mapping[str, Any], site: str) -> dict[str, Any]:
    out = {k: incident.get(k) for k in SUMMARY_KEYS}
    rule = incident.get("rule") or {}
    out["rule_id"] = rule.get("id", "")
    out["rule_title"] = rule.get("title", "")
    out["site"] = site
    return out


def clean(value: Any, limit: int = VALUE_MAX) -> str:
    return printable("" if value is None else str(value), limit)


def cut(text: str, limit: int) -> str:
    """``text`` in at most ``limit`` characters, an ellipsis marking a cut."""
    if len(text) <= limit:
        return text
    return text[: max(0, limit - 1)] + "…"


def _line(s: Mapping[str, Any]) -> str:
    return (
        f"[{clean(s.get('severity'), 20).upper()}] {clean(s.get('title'), 120)}"
        f" ({clean(s.get('group_key'), 120)}) x{clean(s.get('hit_count'), 12)}"
    )


def render(
    items: Sequence[Mapping[str, Any]],
    *,
    kind: str,
    ack_url: str | None = None,
    ack_code: str | None = None,
    sms_max: int = 306,
    max_items: int = 50,
    note: str = "",
) -> dict[str, Any]:
    """The fields of a :class:`~appliance.notify.channels.base.Message` for ``items``.

    ``kind`` is ``incident`` (one), ``group`` (several of one group), ``digest``, ``quiet``
    (held by quiet hours), ``escalate`` or ``repeat``; ``note`` is a prefix such as the
    escalation level. Links and codes are only offered when one incident is covered.
    """
    items = sorted(items, key=lambda s: -rank(str(s.get("severity", ""))))
    top = items[0]
    severity = str(top.get("severity") or "medium")
    n = len(items)
    prefix = {"escalate": "ESCALATION", "repeat": "Reminder", "quiet": "Held"}.get(kind, "")
    if note:
        prefix = f"{prefix} {note}".strip()
    head = f"{prefix}: " if prefix else ""
    site = clean(top.get("site"), 64)
    sensor = clean(top.get("sensor_id"), 64)
    where = f"{sensor}{'/' + site if site else ''}"
    if n == 1:
        key = clean(top.get("group_key"), 80)
        subject = f"{head}[{severity.upper()}] {clean(top.get('title'), 120)}: {key} ({where})"
    elif kind == "digest":
        subject = f"{head}Digest: {n} incidents on {where}, highest {severity}"
    else:
        subject = f"{head}[{severity.upper()}] {n} incidents: {clean(top.get('title'), 120)}"
    lines: list[str] = []
    html_rows: list[str] = []
    shown = items[:max_items]
    for s in shown:
        lines += [
            _line(s),
            f"  rule: {clean(s.get('rule_id'), 120)} - {clean(s.get('rule_title'), 150)}",
            f"  first seen {clean(s.get('first_seen'), 40)}, last seen"
            f" {clean(s.get('last_seen'), 40)}; status {clean(s.get('status'), 20)}",
            f"  sensor {clean(s.get('sensor_id'), 64)}, site {clean(s.get('site'), 64)},"
            f" incident {clean(s.get('id'), 40)}",
        ]
        html_rows.append(
            "<tr>"
            + "".join(
                f"<td>{html.escape(clean(s.get(k), 150))}</td>"
                for k in ("severity", "title", "rule_id", "group_key", "hit_count", "last_seen")
            )
            + "</tr>"
        )
    if n > len(shown):
        lines.append(f"... and {n - len(shown)} more")
    if ack_url:
        lines += ["", f"Acknowledge: {ack_url}"]
    text = cut("\n".join(lines), TEXT_MAX)
    ack_html = (
        f'<p><a href="{html.escape(ack_url, quote=True)}">Acknowledge</a></p>' if ack_url else ""
    )
    more = f"<p>... and {n - len(shown)} more</p>" if n > len(shown) else ""
    body_html = (
        f"<p>{html.escape(subject)}</p><table border=1 cellpadding=4>"
        "<tr><th>Severity</th><th>Title</th><th>Rule</th><th>Group</th><th>Hits</th>"
        f"<th>Last seen</th></tr>{''.join(html_rows)}</table>{more}{ack_html}"
    )
    if n == 1:
        title, key = clean(top.get("title"), 100), clean(top.get("group_key"), 60)
        short = f"{head}{severity.upper()} {title} {key} @{where}"
    else:
        title = clean(top.get("title"), 80)
        short = f"{head}{n} incidents on {where}, highest {severity.upper()}: {title}"
    tail = f" Reply ACK {ack_code}" if ack_code else ""
    short = cut(short, max(10, sms_max - len(tail))) + tail
    return {
        "subject": cut(subject, SUBJECT_MAX),
        "text": text,
        "html": cut(body_html, TEXT_MAX * 2),
        "short": short,
        "severity": severity,
        "incident_ids": [str(s.get("id")) for s in items[:MAX_IDS]],
        "ack_url": ack_url,
        "ack_code": ack_code,
    }
