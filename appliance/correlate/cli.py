"""``appliance test-rule`` and ``appliance replay``: rules on a scenario, without a daemon.

Exit codes: 0 ok; 1 ``replay`` found a difference from the golden file; 2 bad usage, an
unreadable input line or (``replay``) a rule that failed to load.
"""

from __future__ import annotations

import argparse
import difflib
import json
import sys
from pathlib import Path
from typing import Any, TextIO

from appliance.correlate.engine import Alert, Engine
from appliance.correlate.replay import InputError, Replay, parse_line
from appliance.correlate.rules import RuleSet, load_rules
from appliance.logutil import printable


def _lines(args: argparse.Namespace) -> list[str]:
    if args.line:
        return [str(line) for line in args.line]
    src: TextIO
    if args.input is None or str(args.input) == "-":
        src = sys.stdin
        lines: list[str] = src.read().splitlines()
        return lines
    text: str = args.input.read_text(encoding="utf-8", errors="surrogateescape")
    return text.splitlines()


def _alert_dict(a: Alert) -> dict[str, Any]:
    return {
        "rule": a.rule.name or a.rule.id,
        "title": a.rule.title,
        "kind": a.kind,
        "level": a.rule.level,
        "group_key": a.group_key,
        "suppressed": a.suppressed,
        "event_ids": a.event_ids,
        **({"detail": a.detail} if a.detail else {}),
    }


def _report_failures(rs: RuleSet, out: TextIO) -> None:
    for f in rs.failures:
        print(f"rule not loaded: {f.path}: {f.title or '?'}: {f.reason}", file=out)


def run_test_rule(args: argparse.Namespace) -> int:
    rs = load_rules(args.rules, builtin=not args.no_builtin)
    _report_failures(rs, sys.stderr)
    engine = Engine(rs)
    rp = Replay(engine)
    now = 0.0
    for n, line in enumerate(_lines(args), 1):
        try:
            ev = parse_line(line, now)
        except InputError as exc:
            print(f"line {n}: {exc}", file=sys.stderr)
            return 2
        if ev is None:
            continue
        now = ev.timestamp
        matched = [d.meta.name or d.meta.id for d in engine.matches(ev)]
        alerts = rp.feed(ev)
        if args.json:
            print(
                json.dumps(
                    {
                        "line": n,
                        "event": ev.to_ecs(),
                        "matched": matched,
                        "alerts": [_alert_dict(a) for a in alerts],
                    },
                    default=str,
                )
            )
            continue
        print(f"--- line {n} @ {ev.to_ecs()['@timestamp']}")
        for k, v in sorted(ev.fields.items()):
            print(f"    {k}: {printable(str(v))}")
        print(f"  matched: {', '.join(matched) or '-'}")
        for a in alerts:
            flag = " (suppressed)" if a.suppressed else ""
            print(f"  ALERT {a.rule.level} {a.rule.name or a.rule.id} [{a.group_key}]{flag}")
    tail = rp.finish(args.tail)
    if args.json:
        print(
            json.dumps(
                {
                    "tail_alerts": [_alert_dict(a) for a in tail],
                    "state": rp.state(),
                    "incidents": rp.summary(),
                },
                default=str,
            )
        )
        return 0
    for a in tail:
        print(f"  ALERT {a.rule.level} {a.rule.name or a.rule.id} [{a.group_key}] (timer)")
    print("=== correlation state")
    print(json.dumps(rp.state(), indent=2, default=str))
    print("=== incidents")
    print(json.dumps(rp.summary(), indent=2))
    return 0


def run_replay(args: argparse.Namespace) -> int:
    rs = load_rules(args.rules, builtin=args.builtin)
    if rs.failures:
        _report_failures(rs, sys.stderr)
        return 2
    rp = Replay(Engine(rs))
    now = 0.0
    try:
        text = args.input.read_text(encoding="utf-8", errors="surrogateescape")
    except OSError as exc:
        print(f"cannot read {args.input}: {exc}", file=sys.stderr)
        return 2
    for n, line in enumerate(text.splitlines(), 1):
        try:
            ev = parse_line(line, now)
        except InputError as exc:
            print(f"{args.input}:{n}: {exc}", file=sys.stderr)
            return 2
        if ev is not None:
            now = ev.timestamp
            rp.feed(ev)
    rp.finish(args.tail)
    got = json.dumps(rp.summary(), indent=2) + "\n"
    expect_path: Path = args.expect
    if args.update:
        expect_path.write_text(got, encoding="utf-8")
        print(f"wrote {len(rp.incidents)} incident(s) to {expect_path}")
        return 0
    try:
        want = json.dumps(json.loads(expect_path.read_text(encoding="utf-8")), indent=2) + "\n"
    except (OSError, json.JSONDecodeError) as exc:
        print(f"cannot read golden file {expect_path}: {exc}", file=sys.stderr)
        return 2
    if got == want:
        print(f"ok: {rp.lines} events, {len(rp.incidents)} incident(s) as expected")
        return 0
    sys.stdout.writelines(
        difflib.unified_diff(
            want.splitlines(True), got.splitlines(True), str(expect_path), "replay"
        )
    )
    return 1


def run_rules_check(args: argparse.Namespace) -> int:
    """``appliance rules check DIR...``: every rule file under the paths, one line per rule:
    ``ok`` with its kind, or ``failed`` with why. Built-in rules are loaded too (so a
    correlation may reference them) but only reported with ``--builtin``."""
    for p in args.paths:
        if not p.exists():
            print(f"{p}: no such file or folder", file=sys.stderr)
            return 2
    rs = load_rules(list(args.paths), builtin=True)
    own = {str(p.resolve()) for p in args.paths}

    def mine(path: str) -> bool:
        if args.builtin:
            return True
        rp = Path(path).resolve()
        return str(rp) in own or any(str(rp).startswith(d.rstrip("/") + "/") for d in own)

    rows: list[dict[str, Any]] = []
    for r in rs.all_rules():
        if mine(r.meta.path):
            rows.append(
                {
                    "status": "ok",
                    "path": r.meta.path,
                    "id": r.meta.id,
                    "title": r.meta.title,
                    "kind": r.kind,
                    "reason": None,
                }
            )
    for flt, refs in rs.filters:
        if mine(flt.meta.path):
            rows.append(
                {
                    "status": "ok",
                    "path": flt.meta.path,
                    "id": flt.meta.id,
                    "title": flt.meta.title,
                    "kind": f"filter of {', '.join(refs)}",
                    "reason": None,
                }
            )
    for f in rs.failures:
        if mine(f.path):
            rows.append(
                {
                    "status": "failed",
                    "path": f.path,
                    "id": f.id,
                    "title": f.title,
                    "kind": None,
                    "reason": f.reason,
                }
            )
    rows.sort(key=lambda r: (r["path"], r["title"] or ""))
    for row in rows:
        if args.json:
            print(json.dumps(row, sort_keys=True))
        elif row["status"] == "ok":
            print(f"ok      {row['path']}: {row['title']} ({row['kind']})")
        else:
            print(f"failed  {row['path']}: {row['title'] or '?'}: {row['reason']}")
    failed = sum(1 for r in rows if r["status"] == "failed")
    print(f"{len(rows) - failed} loaded, {failed} failed", file=sys.stderr)
    return 1 if failed else 0
