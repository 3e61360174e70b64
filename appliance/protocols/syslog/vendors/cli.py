"""``appliance decoders list | test [FILE...] | try LINE``: what a site needs to write, check
and debug a decoder file without running the appliance."""

from __future__ import annotations

import argparse
import json
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from appliance.protocols.syslog.decode import decode_with_fields
from appliance.protocols.syslog.vendors import Decoders, build_registry
from appliance.protocols.syslog.vendors.base import iso_time
from appliance.protocols.syslog.vendors.declarative import (
    DecoderFile,
    DecoderFileError,
    load_file,
)

SAMPLE_SENDER = "192.0.2.1"


def add_parser(sub: Any) -> None:
    dec = sub.add_parser("decoders", help="vendor decoder files: list, test samples, try a line")
    dsub = dec.add_subparsers(dest="decoders_command", required=True)
    ls = dsub.add_parser("list", help="every decoder in force: name, kind, how it is selected")
    ls.add_argument("--config", "-c", type=Path)
    te = dsub.add_parser(
        "test", help="run the [[tests]] samples of decoder files (default: every file in force)"
    )
    te.add_argument("files", nargs="*", type=Path)
    te.add_argument("--config", "-c", type=Path)
    tr = dsub.add_parser("try", help="decode one syslog line: which decoder claimed it, and fields")
    tr.add_argument("line")
    tr.add_argument("--config", "-c", type=Path)
    tr.add_argument("--vendor", help="decode as this decoder (a sender's configured vendor)")


def sample_failures(f: DecoderFile, now: float | None = None) -> list[str]:
    """What the file's own samples say is wrong with it (empty: all pass)."""
    now = time.time() if now is None else now
    failures = []
    for i, t in enumerate(f.tests):
        msg, fields = decode_with_fields(t["line"].encode("utf-8"), now, None, SAMPLE_SENDER)
        claimed = f.decoder.decode(msg, fields)
        want = bool(t.get("claims", True))
        where = f"{f.path}: tests[{i}]"
        if claimed != want:
            failures.append(f"{where}: {'claimed' if claimed else 'did not claim'} the line")
            continue
        for key, value in (t.get("expect") or {}).items():
            if fields.get(key) != value:
                failures.append(f"{where}: {key} is {fields.get(key)!r}, expected {value!r}")
        for key in t.get("absent") or ():
            if key in fields:
                failures.append(f"{where}: {key} is {fields[key]!r}, expected no such field")
        if "time" in t:  # the device time from the message body, a local one read in UTC
            expected, found = _epoch(iso_time(t["time"])), _epoch(msg.payload_time)
            if found != expected:
                failures.append(f"{where}: the device time is {_iso(found)}, expected {t['time']}")
    return failures


def _epoch(t: float | datetime | None) -> float | None:
    """A body's device time as epoch seconds, a local (naive) one read in UTC."""
    return t.replace(tzinfo=UTC).timestamp() if isinstance(t, datetime) else t


def _iso(epoch: float | None) -> str:
    return "none" if epoch is None else datetime.fromtimestamp(epoch, UTC).isoformat()


def _decoders(args: argparse.Namespace) -> Decoders | int:
    if args.config is None:
        return build_registry()
    from appliance.config import ConfigError, load_config

    try:
        config = load_config(args.config)
    except ConfigError as exc:
        for err in exc.errors:
            print(f"config error: {err}", file=sys.stderr)
        return 2
    return build_registry(config.decoder_paths)


def run(args: argparse.Namespace) -> int:
    decoders = _decoders(args)
    if isinstance(decoders, int):
        return decoders
    for error in decoders.errors:
        print(f"error: {error}", file=sys.stderr)
    cmd = args.decoders_command
    if cmd == "list":
        files = {f.decoder.name: f for f in decoders.files}
        for name, d in sorted(decoders.registry.by_name.items()):
            how = [f"programs={','.join(d.programs)}"] if d.programs else []
            how += [f"prefixes={','.join(d.prefixes)}"] if d.prefixes else []
            how += [f"fallback(needle={d.needle!r})"] if d.fallback else []
            where = str(files[name].path) if name in files else "built-in code"
            print(f"{name}\t{' '.join(how) or 'by vendor only'}\t{where}")
        return 2 if decoders.errors else 0
    if cmd == "test":
        targets: list[DecoderFile] = []
        bad = bool(decoders.errors)
        for path in args.files:
            try:
                targets.append(load_file(path))
            except DecoderFileError as exc:
                print(f"error: {exc}", file=sys.stderr)
                bad = True
        if not args.files:
            targets = list(decoders.files)
        failed = 0
        for f in targets:
            failures = sample_failures(f)
            failed += bool(failures)
            for line in failures:
                print(f"FAIL {line}")
            if not failures:
                print(f"ok   {f.decoder.name}: {len(f.tests)} samples ({f.path})")
        print(f"{len(targets) - failed} passed, {failed} failed")
        return 2 if bad else 1 if failed else 0
    # try
    hint = None
    if args.vendor:
        hint = decoders.registry.by_name.get(args.vendor)
        if hint is None:
            print(f"error: no decoder named {args.vendor!r}", file=sys.stderr)
            return 2
    msg, fields = decode_with_fields(args.line.encode("utf-8"), time.time(), None, SAMPLE_SENDER)
    name = decoders.registry.decode(msg, fields, hint)
    if name:
        fields["event.dataset"] = name  # as the intake sets it
    # The device time the body gives (read in UTC when it names no zone).
    stamp = None if msg.payload_time is None else _iso(_epoch(msg.payload_time))
    out = {"decoder": name or None, "device_time": stamp, "fields": fields}
    print(json.dumps(out, indent=2, default=str))
    return 0
