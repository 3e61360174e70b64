"""Command line: ``appliance run | check-config | tokens | respond | vuln | notify | ...``.

Exit codes (the firmware hooks rely on them): 0 ok, 1 runtime failure (cannot bind, cannot
open the database), 2 invalid configuration or usage.
"""

from __future__ import annotations

import argparse
import sqlite3
import sys
from pathlib import Path

from appliance import __version__
from appliance.config import EXAMPLE_CONFIG, ConfigError, load_config, load_config_or_report


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="appliance", description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run the appliance in the foreground")
    run.add_argument(
        "--config", "-c", type=Path, help="TOML config file (default: the packaged example config)"
    )
    chk = sub.add_parser("check-config", help="validate a config file: prints ok or each error")
    chk.add_argument("file", type=Path)
    db = sub.add_parser("db", help="database maintenance (migrate, check, backup, restore, index)")
    dbsub = db.add_subparsers(dest="db_command", required=True)
    for name, text in (
        ("migrate", "create or upgrade the schema, then exit"),
        ("check", "run SQLite's integrity check; exit 1 if it fails"),
        ("index", "write the search index of events stored before it existed (optional)"),
    ):
        c = dbsub.add_parser(name, help=text)
        c.add_argument("--config", "-c", type=Path)
    b = dbsub.add_parser("backup", help="consistent online copy of the database to PATH")
    b.add_argument("path", type=Path)
    b.add_argument("--config", "-c", type=Path)
    r = dbsub.add_parser(
        "restore", help="replace the database with the backup at PATH (the appliance stopped)"
    )
    r.add_argument("path", type=Path)
    r.add_argument("--config", "-c", type=Path)
    tok = sub.add_parser("tokens", help="API tokens: add, list, revoke (live without restart)")
    tok_sub = tok.add_subparsers(dest="tokens_command", required=True)
    t_add = tok_sub.add_parser("add", help="create a token and print it (shown only once)")
    t_add.add_argument("name", help="who or what uses it (a label)")
    t_add.add_argument(
        "--scope",
        action="append",
        choices=("read", "write", "admin"),
        required=True,
        help="read (GET), write (also changes state), admin (everything); repeatable",
    )
    t_list = tok_sub.add_parser("list", help="list tokens (id, name, scopes, created)")
    t_rev = tok_sub.add_parser("revoke", help="delete a token by id; it stops working at once")
    t_rev.add_argument("id")
    for c in (t_add, t_list, t_rev):
        c.add_argument("--config", "-c", type=Path)
    from appliance.console import cli as console_cli

    console_cli.add_parser(sub)
    sub.add_parser("version", help="print the version")
    sub.add_parser("example-config", help="print the commented example config")
    mibs = sub.add_parser("mibs", help="SNMP MIB names")
    mibs_sub = mibs.add_subparsers(dest="mibs_command", required=True)
    comp = mibs_sub.add_parser(
        "compile", help="compile the MIB files of every SNMP source's mib_dir into the name cache"
    )
    comp.add_argument("--config", "-c", type=Path, help="TOML config file")
    comp.add_argument(
        "--source", type=Path, action="append", help="a folder of MIB files (instead of mib_dir)"
    )
    comp.add_argument("--dest", type=Path, help="cache folder (default: <data_dir>/mibs)")
    tr = sub.add_parser(
        "test-rule",
        help="feed lines through the rules: decode, matches, correlation state, incidents",
        description="Lines: raw syslog, '@<time> <raw syslog>' or JSON events (one per line).",
    )
    tr.add_argument("input", nargs="?", type=Path, help="scenario file (default: stdin)")
    tr.add_argument("--line", action="append", default=[], help="a line to feed (repeatable)")
    tr.add_argument("--rules", action="append", type=Path, default=[], help="rule folder/file")
    tr.add_argument("--no-builtin", action="store_true", help="leave out the built-in rules")
    tr.add_argument("--tail", type=float, default=0.0, help="run timers this long past the end")
    tr.add_argument("--json", action="store_true", help="one JSON object per line of output")
    from appliance.protocols.syslog.vendors import cli as decoders_cli

    decoders_cli.add_parser(sub)
    from appliance.analysis import intel_cli

    intel_cli.add_parser(sub)
    rules = sub.add_parser("rules", help="Sigma rule files: check which load and why not")
    rules_sub = rules.add_subparsers(dest="rules_command", required=True)
    rc = rules_sub.add_parser("check", help="one line per rule: ok (kind) or failed (why)")
    rc.add_argument("paths", nargs="+", type=Path, help="rule folders or files")
    rc.add_argument("--builtin", action="store_true", help="also report the built-in rules")
    rc.add_argument("--json", action="store_true", help="one JSON object per rule")
    from appliance.notify import cli as notify_cli

    notify_cli.add_parser(sub)
    from appliance.analysis import cli as analysis_cli

    analysis_cli.add_parser(sub)
    from appliance.respond import cli as respond_cli

    respond_cli.add_parser(sub)
    rp = sub.add_parser(
        "replay",
        help="replay a scenario in event time and diff the incidents against a golden file",
    )
    rp.add_argument("--rules", action="append", type=Path, default=[], required=True)
    rp.add_argument("--input", type=Path, required=True)
    rp.add_argument("--expect", type=Path, required=True, help="golden JSON of incidents")
    rp.add_argument("--builtin", action="store_true", help="also load the built-in rules")
    rp.add_argument("--tail", type=float, default=0.0, help="run timers this long past the end")
    rp.add_argument("--update", action="store_true", help="write the golden file instead")
    rep = sub.add_parser(
        "report",
        help="write a report (incidents, MTTA/MTTR, top sources, devices, flows) from the database",
    )
    rep.add_argument("--since", default="24h", help="period ending now: 24h, 7d, 90m (default 24h)")
    rep.add_argument("--format", choices=("html", "pdf", "csv"), default="html")
    rep.add_argument("--output", "-o", type=Path, required=True, help="file to write")
    rep.add_argument("--config", "-c", type=Path, help="TOML config file (for data_dir)")
    return p


def report_command(args: argparse.Namespace) -> int:
    """Read-only on the database, so it runs while the appliance does."""
    from appliance.reports.build import build_report, write_atomically
    from appliance.reports.period import parse_span

    config = load_config_or_report(args.config)
    if config is None:
        return 2
    try:
        span = parse_span(args.since)
    except ValueError as exc:
        print(f"--since: {exc}", file=sys.stderr)
        return 2
    try:
        body = build_report(
            config.data_dir / "appliance.db",
            span=span,
            fmt=args.format,
            sensor_id=config.appliance.sensor_id,
        )
        write_atomically(args.output, body)
    except (OSError, sqlite3.Error) as exc:
        print(f"report failed: {exc}", file=sys.stderr)
        return 1
    print(f"wrote {args.format} report ({len(body)} bytes) to {args.output}")
    return 0


def compile_mibs_command(args: argparse.Namespace) -> int:
    from appliance.mibs import compile_mibs
    from appliance.sources.snmp_trap import MIB_CACHE

    config = load_config_or_report(args.config)
    if config is None:
        return 2
    sources = list(args.source or [])
    if not sources:
        sources = [config.path(s.mib_dir) for s in config.sources.snmp if s.mib_dir]
    if not sources:
        print("no MIB folder: set mib_dir in [[sources.snmp]] or pass --source", file=sys.stderr)
        return 2
    for folder in sources:
        if not folder.is_dir():
            print(f"{folder}: not a folder", file=sys.stderr)
            return 2
    dest = args.dest or config.data_dir / MIB_CACHE
    results = compile_mibs(sources, dest)
    for module, status in sorted(results.items()):
        print(f"{module}: {status}")
    failed = [m for m, s in results.items() if s == "failed"]
    print(
        f"{len(results) - len(failed)} module(s) processed, {len(failed)} failed; cache in {dest}"
    )
    return 1 if failed else 0


def tokens_command(args: argparse.Namespace) -> int:
    from appliance.api import tokens as api_tokens

    config = load_config_or_report(args.config)
    if config is None:
        return 2
    path = api_tokens.tokens_path(config.api, config.data_dir, config.path)
    try:
        if args.tokens_command == "add":
            secret, entry = api_tokens.add_token(path, args.name, args.scope)
            print(secret)
            print(
                f"token {entry.id} ({entry.name}: {', '.join(entry.scopes)}) added to {path};"
                " it is shown only this once",
                file=sys.stderr,
            )
            return 0
        if args.tokens_command == "revoke":
            gone = api_tokens.revoke_token(path, args.id)
            if gone is None:
                print(f"no token with id {args.id!r} in {path}", file=sys.stderr)
                return 1
            print(f"revoked {gone.id} ({gone.name})", file=sys.stderr)
            return 0
        entries = api_tokens.read_tokens(path)
    except (OSError, ValueError) as exc:
        print(f"{path}: {exc}", file=sys.stderr)
        return 1
    print(f"{'ID':<10} {'NAME':<24} {'SCOPES':<18} CREATED")
    for t in entries:
        print(f"{t.id:<10} {t.name:<24} {','.join(t.scopes):<18} {t.created}")
    if config.api.token or config.api.token_file or (config.data_dir / "api-token").exists():
        print(f"{api_tokens.LEGACY_ID:<10} {'(api.token / api-token)':<24} {'admin':<18} -")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "version":
        from appliance import dataplane

        print(f"{__version__} ({dataplane.backend()} data plane)")
        return 0
    if args.command == "example-config":
        sys.stdout.write(EXAMPLE_CONFIG.read_text(encoding="utf-8"))
        return 0
    if args.command == "mibs":
        return compile_mibs_command(args)
    if args.command == "tokens":
        return tokens_command(args)
    if args.command == "users":
        from appliance.console import cli as console_cli

        config = load_config_or_report(args.config)
        if config is None:
            return 2
        return console_cli.run(config, args)
    if args.command == "decoders":
        from appliance.protocols.syslog.vendors import cli as decoders_cli

        return decoders_cli.run(args)
    if args.command == "intel":
        from appliance.analysis import intel_cli

        return intel_cli.run(args)
    if args.command == "notify":
        from appliance.notify import cli as notify_cli

        return notify_cli.run(args)
    if args.command == "vuln":
        from appliance.analysis import cli as analysis_cli

        return analysis_cli.run(args)
    if args.command == "respond":
        from appliance.respond import cli as respond_cli

        config = load_config_or_report(args.config)
        if config is None:
            return 2
        return respond_cli.run(config, args)
    if args.command == "check-config":
        try:
            load_config(args.file)
        except ConfigError as exc:
            for err in exc.errors:
                print(err)
            return 2
        print("ok")
        return 0
    if args.command == "db":
        import asyncio

        from appliance.dbtools import run_db_command

        config = load_config_or_report(args.config)
        if config is None:
            return 2
        return asyncio.run(run_db_command(config, args))
    if args.command == "rules":
        from appliance.correlate.cli import run_rules_check

        return run_rules_check(args)
    if args.command == "report":
        return report_command(args)
    if args.command in ("test-rule", "replay"):
        from appliance.correlate.cli import run_replay, run_test_rule

        return run_test_rule(args) if args.command == "test-rule" else run_replay(args)
    if args.command == "run":
        from appliance.runtime import run, setup_logging

        path = args.config
        try:
            config = load_config(path or EXAMPLE_CONFIG)
        except ConfigError as exc:
            for err in exc.errors:
                print(f"config error: {err}", file=sys.stderr)
            return 2
        setup_logging(config.appliance.log_level)
        try:
            return run(config, path)
        except ConfigError as exc:
            for err in exc.errors:
                print(f"config error: {err}", file=sys.stderr)
            return 2
    return 2
