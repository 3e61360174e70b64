"""``appliance intel update|show``: fetch the configured feeds now; show what would load.

``update`` is what the running appliance does on its own timer, run by hand (or from cron on
a box whose appliance is stopped): the appliance notices the swapped files within seconds and
reloads its index.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from pathlib import Path
from typing import Any

from appliance.config import EXAMPLE_CONFIG, AppConfig, ConfigError, load_config


def add_parser(sub: Any) -> None:
    intel = sub.add_parser("intel", help="threat-intel lists: fetch feeds, show what loads")
    isub = intel.add_subparsers(dest="intel_command", required=True)
    up = isub.add_parser("update", help="fetch every [[analysis.feeds]] now (ETag / 304 aware)")
    up.add_argument("--config", "-c", type=Path)
    show = isub.add_parser(
        "show", help="load the configured lists: indicators per feed and type, malformed entries"
    )
    show.add_argument("--config", "-c", type=Path)


def _config(args: argparse.Namespace) -> AppConfig | None:
    try:
        return load_config(args.config or EXAMPLE_CONFIG)
    except ConfigError as exc:
        for err in exc.errors:
            print(f"config error: {err}", file=sys.stderr)
        return None


def run(args: argparse.Namespace) -> int:
    """Exit 0 ok, 1 a feed failed (the old copy stays), 2 invalid config or nothing to do."""
    config = _config(args)
    if config is None:
        return 2
    if args.intel_command == "update":
        from appliance.analysis.feeds import update_feeds

        if not config.analysis.feeds:
            print("no [[analysis.feeds]] configured", file=sys.stderr)
            return 2
        results = asyncio.run(update_feeds(config))
        for r in results:
            extra = f" ({r.bytes} bytes)" if r.status == "updated" else ""
            detail = f": {r.detail}" if r.detail else ""
            print(f"{r.feed}: {r.status}{extra}{detail}")
        return 1 if any(r.status == "failed" for r in results) else 0
    from appliance.analysis.intel_stage import load_index

    index, report, errors = load_index(config)
    out = {
        **index.summary(),
        "malformed": report.malformed,
        "malformed_samples": report.samples,
        "refused": report.refused,
        "errors": errors,
    }
    print(json.dumps(out, indent=2, sort_keys=True))
    return 1 if errors else 0
