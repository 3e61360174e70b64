"""``appliance db migrate|check|backup``: what firmware hooks and operators run offline."""

from __future__ import annotations

import argparse
import sqlite3
import sys

import aiosqlite

from appliance.config import AppConfig
from appliance.store import Store, StoreError


async def run_db_command(config: AppConfig, args: argparse.Namespace) -> int:
    path = config.data_dir / "appliance.db"
    if args.db_command == "migrate":
        store = Store(path, quick_check=False)
        try:
            await store.open()
        except StoreError as exc:
            print(exc, file=sys.stderr)
            return 1
        await store.close()
        print("ok")
        return 0
    if not path.exists():
        print(f"no database at {path}", file=sys.stderr)
        return 1
    if args.db_command == "check":
        async with aiosqlite.connect(f"file:{path}?mode=ro", uri=True) as conn:
            try:
                async with conn.execute("PRAGMA integrity_check") as cur:
                    rows = [r[0] for r in await cur.fetchall()]
            except sqlite3.DatabaseError as exc:
                rows = [str(exc)]
        print("\n".join(rows))
        return 0 if rows == ["ok"] else 1
    if args.db_command == "backup":
        target = args.path
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(target.name + ".partial")
        tmp.unlink(missing_ok=True)
        async with (
            aiosqlite.connect(f"file:{path}?mode=ro", uri=True) as src,
            aiosqlite.connect(tmp) as dst,
        ):
            await src.backup(dst)
        tmp.replace(target)
        print(f"backed up to {target}")
        return 0
    return 2
