"""``appliance respond list | undo ID``: the response ledger from the shell.

``list`` reads the database read-only, so it works beside a running appliance. ``undo``
must not race the running appliance's worker (which may be lifting the same block on its
TTL at that moment, and which holds the in-flight state): when the data directory is locked
by a running appliance, ``undo`` asks that appliance through its API (the legacy/admin
token from the config or ``data_dir/api-token``, or ``APPLIANCE_API_TOKEN``); otherwise it
takes the data-directory lock itself, so the appliance cannot start meanwhile, and makes
the undo call directly.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sqlite3
import ssl
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from appliance.config import AppConfig, parse_hostport
from appliance.datalock import DataDirBusy, DataDirLock
from appliance.respond.ledger import COLUMNS, STATES, ActionRow


def add_parser(sub: Any) -> None:
    rp = sub.add_parser("respond", help="active response: list actions, undo one")
    rsub = rp.add_subparsers(dest="respond_command", required=True)
    ls = rsub.add_parser("list", help="actions, newest first: id, action, state, value, expiry")
    ls.add_argument("--state", choices=STATES)
    ls.add_argument("--limit", type=int, default=50)
    ls.add_argument("--json", action="store_true", help="one JSON object per line")
    un = rsub.add_parser("undo", help="lift a block now (cancel it if it has not run yet)")
    un.add_argument("id", type=int)
    for c in (ls, un):
        c.add_argument("--config", "-c", type=Path)


def _when(ts: float | None) -> str:
    if ts is None:
        return "-"
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts))


def list_command(config: AppConfig, args: argparse.Namespace) -> int:
    path = config.data_dir / "appliance.db"
    if not path.exists():
        print(f"no database at {path}", file=sys.stderr)
        return 1
    sql = f"SELECT {COLUMNS} FROM respond_actions"  # noqa: S608
    params: list[Any] = []
    if args.state:
        sql += " WHERE state = ?"
        params.append(args.state)
    sql += " ORDER BY id DESC LIMIT ?"
    params.append(max(1, args.limit))
    try:
        with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as conn:
            rows = [ActionRow.of(r) for r in conn.execute(sql, params)]
    except sqlite3.Error as exc:
        print(f"{path}: {exc}", file=sys.stderr)
        return 1
    if args.json:
        for r in rows:
            print(json.dumps(r.to_json()))
        return 0
    print(f"{'ID':>6} {'ACTION':<16} {'STATE':<12} {'VALUE':<28} {'DRY':<3} {'EXPIRES':<20} ERROR")
    for r in rows:
        print(
            f"{r.id:>6} {r.action:<16} {r.state:<12} {r.value[:28]:<28} "
            f"{'yes' if r.dry_run else 'no':<3} {_when(r.expires):<20} {(r.last_error or '')[:60]}"
        )
    return 0


def _api_token(config: AppConfig) -> str:
    if config.api.token:
        return config.api.token
    env = os.environ.get("APPLIANCE_API_TOKEN", "")
    if env:
        return env
    path = config.path(config.api.token_file) if config.api.token_file else None
    path = path or config.data_dir / "api-token"
    try:
        return path.read_text(encoding="utf-8").strip()
    except OSError:
        return ""


def _api_undo(config: AppConfig, action_id: int) -> int:
    """The running appliance does the undo: POST to its API on the configured listen."""
    token = _api_token(config)
    if not token:
        print("no API token: set api.token, or APPLIANCE_API_TOKEN", file=sys.stderr)
        return 1
    host, port = parse_hostport(config.api.listen)
    host = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}.get(host, host)
    ctx: ssl.SSLContext | None = None
    if config.api.tls_enabled:
        from appliance.api.tls import self_signed_paths

        cert = (
            config.path(config.api.tls_cert)
            if config.api.tls_cert
            else self_signed_paths(config.data_dir)[0]
        )
        ctx = ssl.create_default_context(cafile=str(cert))
        ctx.check_hostname = False  # the one certificate trusted is the appliance's own
    scheme = "https" if ctx else "http"
    netloc = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    req = urllib.request.Request(  # noqa: S310 - our own API, scheme fixed above
        f"{scheme}://{netloc}/api/v1/respond/actions/{action_id}/undo",
        method="POST",
        headers={"Authorization": f"Bearer {token}"},
    )
    try:
        with urllib.request.urlopen(req, timeout=10, context=ctx) as resp:  # noqa: S310
            row = json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        try:
            message = json.loads(exc.read()).get("error", exc.reason)
        except ValueError:
            message = exc.reason
        print(f"undo {action_id}: {message} (HTTP {exc.code})", file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"cannot reach the running appliance's API: {exc}", file=sys.stderr)
        return 1
    print(f"action {action_id}: {row['state']} (the running appliance makes the call)")
    return 0


async def _offline_undo(config: AppConfig, action_id: int) -> int:
    from appliance.metrics import Registry
    from appliance.respond.responder import Responder, UndoRefused
    from appliance.store import Store, StoreError

    store = Store(config.data_dir / "appliance.db", quick_check=False)
    try:
        await store.open()
    except StoreError as exc:
        print(exc, file=sys.stderr)
        return 1
    try:
        responder = Responder(store, config, Registry(), time.time)
        try:
            row = await responder.undo(action_id, "cli")
        except UndoRefused as exc:
            print(exc, file=sys.stderr)
            return 1
        if row is None:
            print(f"no action {action_id}", file=sys.stderr)
            return 1
        row = await responder.run_one(action_id)
        assert row is not None
        print(
            f"action {action_id}: {row.state}" + (f" ({row.last_error})" if row.last_error else "")
        )
        return 0 if row.state in ("undone", "cancelled") else 1
    finally:
        await store.close()


def undo_command(config: AppConfig, args: argparse.Namespace) -> int:
    if not (config.data_dir / "appliance.db").exists():
        print(f"no database at {config.data_dir / 'appliance.db'}", file=sys.stderr)
        return 1
    lock = DataDirLock(config.data_dir)
    try:
        lock.acquire()
    except DataDirBusy:
        return _api_undo(config, args.id)
    try:
        return asyncio.run(_offline_undo(config, args.id))
    finally:
        lock.release()


def run(config: AppConfig, args: argparse.Namespace) -> int:
    if args.respond_command == "list":
        return list_command(config, args)
    return undo_command(config, args)
