"""Notification channels: one module per transport, all behind :class:`base.Channel`."""
