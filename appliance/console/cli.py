"""``appliance users add|list|passwd|remove``: console users, kept in the appliance database.

The password is read from standard input (one line), so that scripts can pipe it in and it
never appears in ``ps`` or shell history; on a terminal it is asked twice without echo. Works
while the appliance runs (SQLite serialises the writes; sessions of a removed user or a changed
password end at once) and before its first start (the database is created and migrated).
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import sqlite3
import sys
from datetime import UTC, datetime
from pathlib import Path

from appliance.config import AppConfig
from appliance.console import users as u


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("users", help="console users: add, list, passwd, remove")
    s = p.add_subparsers(dest="users_command", required=True)
    add = s.add_parser("add", help="create a user; the password is read from standard input")
    add.add_argument("name")
    add.add_argument("--role", choices=u.ROLES, required=True)
    lst = s.add_parser("list", help="list users (name, role, created)")
    pw = s.add_parser("passwd", help="set a user's password (from standard input)")
    pw.add_argument("name")
    rm = s.add_parser("remove", help="delete a user; their sessions end at once")
    rm.add_argument("name")
    for c in (add, lst, pw, rm):
        c.add_argument("--config", "-c", type=Path)


def _read_password() -> str:
    if sys.stdin.isatty():
        first = getpass.getpass("password: ")
        if getpass.getpass("again: ") != first:
            raise u.UserError("the two passwords differ")
        return first
    line = sys.stdin.readline()
    return line.removesuffix("\n").removesuffix("\r")


def _ensure_migrated(db_path: Path) -> None:
    if db_path.exists():
        with sqlite3.connect(db_path) as conn:
            (version,) = conn.execute("PRAGMA user_version").fetchone()
        conn.close()
        if version >= 13:
            return
    from appliance.store import Store

    async def migrate() -> None:
        store = Store(db_path, quick_check=False)
        await store.open()
        await store.close()

    asyncio.run(migrate())


def run(config: AppConfig, args: argparse.Namespace) -> int:
    db_path = config.data_dir / "appliance.db"
    actor = u.cli_actor()
    try:
        _ensure_migrated(db_path)
        conn = u.connect(db_path)
        try:
            if args.users_command == "add":
                user = u.add_user(conn, args.name, args.role, _read_password(), actor)
                print(f"added {user.name} ({user.role})")
            elif args.users_command == "passwd":
                u.set_password(conn, args.name, _read_password(), actor)
                print(f"password of {args.name} changed; their sessions ended")
            elif args.users_command == "remove":
                u.remove_user(conn, args.name, actor)
                print(f"removed {args.name}")
            else:
                print(f"{'NAME':<24} {'ROLE':<9} CREATED")
                for user in u.list_users(conn):
                    created = datetime.fromtimestamp(user.created, UTC).isoformat(
                        timespec="seconds"
                    )
                    print(f"{user.name:<24} {user.role:<9} {created.replace('+00:00', 'Z')}")
        finally:
            conn.close()
    except u.UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except (sqlite3.Error, OSError) as exc:
        print(f"error: database {db_path}: {exc}", file=sys.stderr)
        return 1
    return 0
