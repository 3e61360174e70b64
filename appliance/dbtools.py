"""``appliance db migrate|check|backup|restore|index``: what firmware hooks and operators run
offline (``index`` also runs beside a running appliance: it writes in short transactions)."""

from __future__ import annotations

import argparse
import os
import sqlite3
import sys
from pathlib import Path

import aiosqlite

from appliance.config import AppConfig
from appliance.datalock import DataDirBusy, DataDirLock
from appliance.store import Store, StoreError
from appliance.store.schema import migrations


async def run_db_command(config: AppConfig, args: argparse.Namespace) -> int:
    path = config.data_dir / "appliance.db"
    if args.db_command == "restore":
        return await restore(path, args.path)
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
    if args.db_command == "index":
        store = Store(path, quick_check=False)
        try:
            await store.open()
            done = await store.backfill_index()
        except StoreError as exc:
            print(exc, file=sys.stderr)
            return 1
        finally:
            await store.close()
        print(f"indexed {done} segments")
        return 0
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
        tmp = await _copy(path, target.with_name(target.name + ".partial"))
        tmp.replace(target)
        print(f"backed up to {target}")
        return 0
    return 2


async def _copy(source: Path, tmp: Path) -> Path:
    """A consistent copy of the database at ``source`` (SQLite's online backup API) in
    ``tmp``, the temporary file the caller renames into place."""
    tmp.unlink(missing_ok=True)
    async with (
        aiosqlite.connect(f"file:{source}?mode=ro", uri=True) as src,
        aiosqlite.connect(tmp) as dst,
    ):
        await src.backup(dst)
    return tmp


def _check_backup(source: Path) -> str | None:
    """Why ``source`` cannot be restored, or ``None``: it must be an SQLite database that
    passes the integrity check, with a schema this build knows (a newer one would be read by
    code that does not understand it)."""
    if not source.is_file():
        return f"{source}: no such file"
    try:
        conn = sqlite3.connect(f"file:{source}?mode=ro", uri=True)
    except sqlite3.Error as exc:
        return f"{source}: {exc}"
    try:
        rows = [r[0] for r in conn.execute("PRAGMA integrity_check")]
        version = conn.execute("PRAGMA user_version").fetchone()[0]
    except sqlite3.DatabaseError as exc:
        return f"{source}: not a usable database ({exc})"
    finally:
        conn.close()
    if rows != ["ok"]:
        return f"{source}: integrity check failed: {'; '.join(rows[:3])}"
    newest = max(number for number, _, _ in migrations())
    if version > newest:
        return f"{source}: schema version {version} is newer than this build's ({newest})"
    if version == 0:
        return f"{source}: not an appliance database (no schema version)"
    return None


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


async def restore(target: Path, source: Path) -> int:
    """Replace the database with a backup, atomically, while no appliance runs on it.

    The copy is made with SQLite's backup API into a temporary file beside the target and
    synced; the old WAL and shared-memory files are removed *before* the rename, or SQLite
    would replay the old database's WAL onto the restored one at the next open.
    """
    problem = _check_backup(source)
    if problem is not None:
        print(problem, file=sys.stderr)
        return 1
    target.parent.mkdir(parents=True, exist_ok=True)
    lock = DataDirLock(target.parent)
    try:
        lock.acquire()
    except DataDirBusy as exc:
        print(f"refusing to restore: {exc}; stop it first", file=sys.stderr)
        return 1
    try:
        tmp = await _copy(source, target.with_name(target.name + ".restore-partial"))
        _fsync(tmp)
        for suffix in ("-wal", "-shm"):
            target.with_name(target.name + suffix).unlink(missing_ok=True)
        tmp.replace(target)
        _fsync(target.parent)
    finally:
        lock.release()
    print(f"restored {target} from {source}")
    return 0
