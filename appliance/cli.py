"""Command line: ``appliance run | check-config | version``.

Exit codes (the firmware hooks rely on them): 0 ok, 1 runtime failure (cannot bind, cannot
open the database), 2 invalid configuration or usage.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from appliance import __version__
from appliance.config import EXAMPLE_CONFIG, ConfigError, load_config


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="appliance", description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run the appliance in the foreground")
    run.add_argument(
        "--config", "-c", type=Path, help="TOML config file (default: the packaged example config)"
    )
    chk = sub.add_parser("check-config", help="validate a config file: prints ok or each error")
    chk.add_argument("file", type=Path)
    db = sub.add_parser("db", help="database maintenance (migrate, backup, check)")
    dbsub = db.add_subparsers(dest="db_command", required=True)
    for name, text in (
        ("migrate", "create or upgrade the schema, then exit"),
        ("check", "run SQLite's integrity check; exit 1 if it fails"),
    ):
        c = dbsub.add_parser(name, help=text)
        c.add_argument("--config", "-c", type=Path)
    b = dbsub.add_parser("backup", help="consistent online copy of the database to PATH")
    b.add_argument("path", type=Path)
    b.add_argument("--config", "-c", type=Path)
    sub.add_parser("version", help="print the version")
    sub.add_parser("example-config", help="print the commented example config")
    return p


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "version":
        print(__version__)
        return 0
    if args.command == "example-config":
        sys.stdout.write(EXAMPLE_CONFIG.read_text(encoding="utf-8"))
        return 0
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

        try:
            config = load_config(args.config or EXAMPLE_CONFIG)
        except ConfigError as exc:
            for err in exc.errors:
                print(f"config error: {err}", file=sys.stderr)
            return 2
        return asyncio.run(run_db_command(config, args))
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
