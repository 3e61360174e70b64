"""Notification channels: one module per transport, all behind :class:`base.Channel`.

:func:`build_channel` turns one ``[[notify.channels]]`` table into a ready channel: secrets
and CA files are read now (a ConfigError names what is missing), connections are opened on
the first send. Each channel escapes control characters and cuts its text to its limit
through :mod:`.text` (SMS sizing in :mod:`.gsm`), and counts its sends in
``appliance_notify_channel_sends_total``.
"""

from __future__ import annotations

from pathlib import Path

from appliance.config import NotifyChannel
from appliance.metrics import Registry
from appliance.notify.channels.base import Channel, DeliveryError, Message
from appliance.notify.channels.core import ChannelBase, ChannelMetrics

__all__ = ["Channel", "DeliveryError", "Message", "build_channel", "channel_classes"]


def channel_classes() -> dict[str, type[ChannelBase]]:
    """Type name to class; imported here, on demand, so loading the package stays light."""
    from appliance.notify.channels.email import EmailChannel
    from appliance.notify.channels.mattermost import MattermostChannel
    from appliance.notify.channels.slack import SlackChannel
    from appliance.notify.channels.sms_http import HttpSmsChannel
    from appliance.notify.channels.sms_modem import ModemChannel
    from appliance.notify.channels.sms_twilio import TwilioChannel
    from appliance.notify.channels.teams import TeamsChannel
    from appliance.notify.channels.telegram import TelegramChannel
    from appliance.notify.channels.webhook import WebhookChannel

    classes: list[type[ChannelBase]] = [
        EmailChannel,
        TwilioChannel,
        HttpSmsChannel,
        ModemChannel,
        SlackChannel,
        TeamsChannel,
        MattermostChannel,
        TelegramChannel,
        WebhookChannel,
    ]
    return {cls.type: cls for cls in classes}


def build_channel(
    cfg: NotifyChannel, base_dir: str | Path, metrics: Registry | None = None
) -> ChannelBase:
    """The channel ``cfg`` describes (ConfigError when a secret or CA file cannot be read).
    ``metrics`` is the appliance's Registry (asking it twice for a metric returns the same
    one); without one the counts stay private."""
    m = ChannelMetrics(metrics if metrics is not None else Registry())
    return channel_classes()[cfg.type](cfg, Path(base_dir), m)
