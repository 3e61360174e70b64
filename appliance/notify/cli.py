"""``appliance notify test CHANNEL``: send a test message through one channel, now.

It goes straight to the channel (not through the engine's outbox), so it shows whether the
transport works: credentials, TLS, a registered modem. Exit 0 delivered, 1 the channel
failed (the reason printed), 2 no such channel or an invalid config.
"""

from __future__ import annotations

import argparse
import asyncio
import socket
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from appliance.config import ConfigError, load_config_or_report

if TYPE_CHECKING:
    from appliance.notify.channels.base import Message

# The channels (aiohttp, smtplib, serial) are imported where a test message is sent, not
# here: every `appliance` command builds this parser, and most never send anything.


def add_parser(sub: Any) -> None:
    p = sub.add_parser("notify", help="notification channels: send a test message")
    nsub = p.add_subparsers(dest="notify_command", required=True)
    t = nsub.add_parser("test", help="send a test message through CHANNEL now and print the result")
    t.add_argument("channel", help="the name of a [[notify.channels]] entry")
    t.add_argument("--config", "-c", type=Path, help="TOML config file")


def test_message(sensor_id: str, channel: str) -> Message:
    from appliance.notify.channels.base import Message

    when = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())
    host = socket.gethostname()
    return Message(
        subject=f"Test notification from {sensor_id}",
        text=(
            f"This is a test of the notification channel {channel!r} on appliance {sensor_id}"
            f" ({host}), sent {when} by `appliance notify test`. No incident is open."
        ),
        html=(
            f"<p>This is a test of the notification channel <b>{channel}</b> on appliance"
            f" <b>{sensor_id}</b>, sent {when}. No incident is open.</p>"
        ),
        short=f"SEM {sensor_id}: test of channel {channel}, {when}. No incident.",
        severity="low",
        incident_ids=(),
    )


async def _send(channel: Any, message: Message) -> None:
    try:
        await channel.send(message)
    finally:
        await channel.close()


def run(args: argparse.Namespace) -> int:
    config = load_config_or_report(args.config)
    if config is None:
        return 2
    by_name = {c.name: c for c in config.notify.channels}
    cfg = by_name.get(args.channel)
    if cfg is None:
        known = ", ".join(sorted(by_name)) or "none configured"
        print(f"no channel {args.channel!r} in [[notify.channels]] ({known})", file=sys.stderr)
        return 2
    from appliance.notify.channels import build_channel
    from appliance.notify.channels.base import DeliveryError

    try:
        channel = build_channel(cfg, config.base_dir)
    except ConfigError as exc:
        for err in exc.errors:
            print(f"config error: {err}", file=sys.stderr)
        return 2
    started = time.monotonic()
    try:
        asyncio.run(_send(channel, test_message(config.appliance.sensor_id, cfg.name)))
    except DeliveryError as exc:
        kind = "transient, would be retried" if exc.retryable else "permanent"
        print(f"{cfg.name} ({cfg.type}): failed ({kind}): {exc}", file=sys.stderr)
        return 1
    print(f"{cfg.name} ({cfg.type}): delivered in {time.monotonic() - started:.2f}s")
    return 0
