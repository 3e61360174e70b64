"""``appliance vuln import FILE... | list | remove NAME``: scans and catalogs kept on the box.

Imported files are copied into ``data_dir/analysis/imported`` (the appliance reads that folder
with the ``[analysis]`` files at start and on every SIGHUP). Files, not database rows: a report
is re-parsed by the same code that reads configured files, an operator can see and delete what
is in force, a re-import of the weekly scan under the same name replaces the last one, and the
database backups stay about events and incidents. Every file is validated before any is copied
(all or nothing), and each copy is written to a temporary name and renamed, so a running
appliance never reads half a file.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

from appliance.analysis.context import IMPORT_DIR, AnalysisFileError, Loaded, read_file
from appliance.config import (
    AppConfig,
    load_config_or_report,
)


def add_parser(sub: Any) -> None:
    vuln = sub.add_parser(
        "vuln", help="vulnerability scans and catalogs kept on the box: import, list, remove"
    )
    vsub = vuln.add_subparsers(dest="vuln_command", required=True)
    imp = vsub.add_parser(
        "import",
        help="validate scan reports / KEV / NVD / asset / rule files and copy them into"
        " data_dir (SIGHUP applies them)",
    )
    imp.add_argument("files", nargs="+", type=Path)
    imp.add_argument("--config", "-c", type=Path)
    imp.add_argument("--dry-run", action="store_true", help="validate and report, copy nothing")
    ls = vsub.add_parser("list", help="the imported files and what each holds")
    ls.add_argument("--config", "-c", type=Path)
    rm = vsub.add_parser("remove", help="delete an imported file by name (SIGHUP applies it)")
    rm.add_argument("name")
    rm.add_argument("--config", "-c", type=Path)


def _describe(loaded: Loaded) -> str:
    counts = ", ".join(f"{v} {k.replace('_', ' ')}" for k, v in loaded.counts().items())
    return f"{loaded.kind}: {counts or 'nothing usable'}"


def _copy(src: Path, dest_dir: Path) -> Path:
    dest_dir.mkdir(parents=True, exist_ok=True)
    dest = dest_dir / src.name
    fd, tmp = tempfile.mkstemp(prefix=".import-", dir=dest_dir)
    try:
        with os.fdopen(fd, "wb") as out, src.open("rb") as inp:
            while chunk := inp.read(1 << 20):
                out.write(chunk)
            out.flush()
            os.fsync(out.fileno())
        os.chmod(tmp, 0o640)
        os.replace(tmp, dest)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return dest


def import_files(config: AppConfig, files: list[Path], *, dry_run: bool = False) -> int:
    loaded: list[tuple[Path, Loaded]] = []
    errors: list[str] = []
    names: set[str] = set()
    for path in files:
        if path.name.startswith(".") or path.name in names:
            errors.append(f"{path}: a file name must be unique and not start with '.'")
            continue
        names.add(path.name)
        try:
            loaded.append((path, read_file(path)))
        except AnalysisFileError as exc:
            errors.append(str(exc))
    for err in errors:
        print(f"error: {err}", file=sys.stderr)
    if errors:
        print("nothing imported", file=sys.stderr)
        return 2
    dest_dir = config.data_dir / IMPORT_DIR
    for path, item in loaded:
        for skipped in item.errors[:20]:
            print(f"warning: entry skipped: {skipped}", file=sys.stderr)
        if dry_run:
            print(f"{path}: {_describe(item)} (dry run, not copied)")
            continue
        try:
            dest = _copy(path, dest_dir)
        except OSError as exc:
            print(f"error: {path}: cannot copy into {dest_dir}: {exc}", file=sys.stderr)
            return 1
        print(f"{path}: {_describe(item)} -> {dest}")
    if not dry_run:
        print(
            f"{len(loaded)} file(s) imported; a running appliance applies them on SIGHUP"
            " (systemctl reload appliance)",
            file=sys.stderr,
        )
    return 0


def list_files(config: AppConfig) -> int:
    folder = config.data_dir / IMPORT_DIR
    paths = sorted(p for p in folder.iterdir() if p.is_file()) if folder.is_dir() else []
    paths = [p for p in paths if not p.name.startswith(".")]
    if not paths:
        print(f"no imported files in {folder}", file=sys.stderr)
        return 0
    failed = 0
    for path in paths:
        try:
            print(f"{path.name}: {_describe(read_file(path))}")
        except AnalysisFileError as exc:
            failed += 1
            print(f"{path.name}: error: {exc}")
    return 1 if failed else 0


def remove_file(config: AppConfig, name: str) -> int:
    folder = config.data_dir / IMPORT_DIR
    if "/" in name or name in ("", ".", "..") or name.startswith("."):
        print(f"error: {name!r} is not an imported file name", file=sys.stderr)
        return 2
    path = folder / name
    if not path.is_file():
        print(f"error: no imported file {name!r} in {folder}", file=sys.stderr)
        return 1
    path.unlink()
    print(f"removed {path}; a running appliance forgets it on SIGHUP", file=sys.stderr)
    return 0


def run(args: argparse.Namespace) -> int:
    config = load_config_or_report(args.config)
    if config is None:
        return 2
    if args.vuln_command == "import":
        return import_files(config, list(args.files), dry_run=args.dry_run)
    if args.vuln_command == "list":
        return list_files(config)
    return remove_file(config, args.name)
