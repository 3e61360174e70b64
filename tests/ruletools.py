"""Helpers for rule tests: events shaped like the decoders' output (the brief's ECS contract)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from appliance.correlate import Alert, Engine, Limits, load_rules
from appliance.correlate.rules import RuleSet
from appliance.event import Event

T0 = 1_790_000_000.0  # 2026-09-21, an arbitrary event-time origin
_ids = iter(range(1, 10**9))
_BUILTIN: RuleSet | None = None


def builtin() -> RuleSet:
    global _BUILTIN
    if _BUILTIN is None:
        _BUILTIN = load_rules([], builtin=True)
    return _BUILTIN


def ev(dt: float, fields: dict[str, Any], module: str = "syslog", raw: str = "") -> Event:
    return Event(
        timestamp=T0 + dt,
        created=T0 + dt,
        module=module,
        fields=dict(fields),
        raw=raw.encode(),
        id=next(_ids),
    )


def ssh(dt: float, ip: str, user: str = "root", ok: bool = False, port: int = 40000) -> Event:
    word = "Accepted" if ok else "Failed"
    return ev(
        dt,
        {
            "event.category": ["authentication"],
            "event.type": ["start"],
            "event.action": "ssh_login",
            "event.outcome": "success" if ok else "failure",
            "user.name": user,
            "source.ip": ip,
            "source.port": port,
            "process.name": "sshd",
            "host.hostname": "srv1",
            "observer.ip": "10.0.0.5",
            "message": f"{word} password for {user} from {ip} port {port} ssh2",
        },
        raw=f"<38>Nov 29 10:00:00 srv1 sshd[26279]: {word} password for {user} from {ip} port "
        f"{port} ssh2",
    )


def auth(dt: float, action: str, ip: str, user: str, ok: bool, **extra: Any) -> Event:
    f = {
        "event.category": ["authentication"],
        "event.type": ["start"],
        "event.action": action,
        "event.outcome": "success" if ok else "failure",
        "user.name": user,
        "source.ip": ip,
        "observer.ip": "10.0.0.1",
        **extra,
    }
    return ev(dt, f)


def fw(
    dt: float,
    src: str,
    dst: str,
    dport: int,
    action: str = "deny",
    raw: str = "",
) -> Event:
    denied = action in ("deny", "drop", "reject")
    return ev(
        dt,
        {
            "event.category": ["network"],
            "event.type": ["connection", "denied" if denied else "allowed"],
            "event.action": action,
            "event.outcome": "failure" if denied else "success",
            "source.ip": src,
            "source.port": 51000,
            "destination.ip": dst,
            "destination.port": dport,
            "network.transport": "tcp",
            "observer.vendor": "Cisco",
            "observer.product": "ASA",
            "observer.type": "firewall",
            "observer.ip": "10.0.0.1",
        },
        raw=raw
        or f"%ASA-4-106023: Deny tcp src outside:{src}/51000 dst inside:{dst}/{dport} by "
        'access-group "outside_in"',
    )


def flow(dt: float, src: str, dst: str, dport: int, nbytes: int = 1200) -> Event:
    return ev(
        dt,
        {
            "event.category": ["network"],
            "event.type": ["connection"],
            "source.ip": src,
            "source.port": 40000,
            "destination.ip": dst,
            "destination.port": dport,
            "network.transport": "tcp",
            "network.iana_number": 6,
            "network.bytes": nbytes,
            "network.packets": max(1, nbytes // 1000),
            "event.start": T0 + dt - 1,
            "event.end": T0 + dt,
            "netflow.exporter.address": "10.0.0.1",
            "observer.ip": "10.0.0.1",
        },
        module="netflow",
    )


def ids(dt: float, src: str, dst: str, severity: int, sid: str = "1:527:8") -> Event:
    return ev(
        dt,
        {
            "event.category": ["intrusion_detection"],
            "event.kind": "alert",
            "event.severity": severity,
            "rule.id": sid,
            "rule.name": "BAD-TRAFFIC same SRC/DST",
            "source.ip": src,
            "destination.ip": dst,
            "observer.ip": "10.0.0.9",
        },
        raw=f"05/30-19:09:10.917356  [**] [{sid}] BAD-TRAFFIC same SRC/DST [**] "
        f"[Priority: {severity}] {{TCP}} {src}:1029 -> {dst}:80",
    )


def device(
    dt: float, action: str, module: str = "syslog", ip: str = "10.0.0.1", **extra: Any
) -> Event:
    f = {"event.action": action, "observer.ip": ip, **extra}
    return ev(dt, f, module=module)


def run(
    events: list[Event],
    rules: RuleSet | None = None,
    limits: Limits | None = None,
    timer_until: float | None = None,
) -> list[Alert]:
    """Feed events in order with ``now`` = event time; optionally run timers up to a time."""
    eng = Engine(rules or builtin(), limits)
    out: list[Alert] = []
    for e in events:
        out.extend(eng.observe(e, e.timestamp))
    if timer_until is not None:
        t = events[-1].timestamp if events else T0
        while t <= T0 + timer_until:
            out.extend(eng.on_timer(t))
            t += 30
    return out


def fired(alerts: list[Alert], include_suppressed: bool = False) -> set[str]:
    return {a.rule.name or a.rule.id for a in alerts if include_suppressed or not a.suppressed}


def rules_from(tmp: Path, **files: str) -> RuleSet:
    for name, text in files.items():
        (tmp / f"{name}.yml").write_text(text)
    return load_rules([tmp], builtin=False)


_DETECTION = """\
title: {name}
id: 9a1c0f3e-0000-4000-8000-0000000000{n:02d}
name: {name}
status: test
logsource: {{product: appliance}}
detection:
  sel: {{event.action: {action}}}
  condition: sel
level: informational
"""


def detection(n: int, name: str, action: str) -> str:
    """A Sigma rule (number ``n`` < 100 makes its id) matching ``event.action: action``: the
    base a correlation test chains its windows on."""
    return _DETECTION.format(n=n, name=name, action=action)
