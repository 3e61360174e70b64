"""The per-message work every syslog listener shares: sender profile, rate limit, decode.

UDP, TCP and TLS sources differ only in how bytes arrive; from a message's bytes on, they call
the same :class:`SyslogIntake`. Everything known about a sender (allowed?, configured tags,
time zone, vendor, token bucket) is resolved once per sender address into a
:class:`SenderProfile` and cached, so the hot path is one dict probe per message.
"""

from __future__ import annotations

import logging
from datetime import tzinfo
from typing import Any
from zoneinfo import ZoneInfo

from netaddr import AddrFormatError, IPAddress, IPNetwork

from appliance import dataplane
from appliance.config import SyslogSender, SyslogSource
from appliance.event import Event
from appliance.logutil import RateLimitedLog
from appliance.metrics import Registry
from appliance.protocols.syslog import decode as syslog_decode
from appliance.protocols.syslog.decode import decode_with_fields, decode_with_fields_reference
from appliance.protocols.syslog.message import body_time, device_time
from appliance.protocols.syslog.vendors import REGISTRY, VendorDecoder, VendorRegistry
from appliance.sources.policy import AllowList
from appliance.store.segments import encode_line_reference

_rl = RateLimitedLog(logging.getLogger(__name__))
MAX_SKEW_SENDERS = 1024  # senders with a clock-skew gauge series


class SenderProfile:
    """One sender address as this listener sees it; mutable only in its token bucket."""

    __slots__ = ("allowed", "decoder", "key", "last", "static", "tokens", "tz")

    def __init__(
        self,
        ip: str,
        allowed: bool,
        static: dict[str, Any] | None,
        tz: tzinfo | None,
        decoder: VendorDecoder | None,
        burst: float,
    ) -> None:
        self.allowed = allowed
        self.static = static
        self.tz = tz
        self.decoder = decoder
        self.key = (ip,)
        self.tokens = burst
        self.last = 0.0


def _static_fields(sender: SyslogSender) -> dict[str, Any] | None:
    fields: dict[str, Any] = {}
    if sender.site:
        fields["observer.geo.name"] = sender.site
        fields["labels.site"] = sender.site
    if sender.device_name:
        fields["observer.name"] = sender.device_name
    if sender.vendor:
        fields["labels.vendor"] = sender.vendor
    if sender.timezone:
        fields["event.timezone"] = sender.timezone
    if sender.tags:
        fields["tags"] = list(sender.tags)
    return fields or None


class SyslogIntake:
    """Bytes from one sender to an :class:`Event`, with the listener's policy applied."""

    def __init__(
        self,
        cfg: SyslogSource,
        senders: list[SyslogSender],
        metrics: Registry,
        transport: str,
        decoders: VendorRegistry = REGISTRY,
    ) -> None:
        self.transport = transport
        self.decoders = decoders
        self.source = cfg.label
        self.allowed = AllowList(cfg.allowed)
        self.rate = cfg.rate_limit
        self.burst = float(cfg.rate_burst)
        self.max_senders = cfg.max_senders  # profile cache; reset (buckets refilled) past it
        self.profiles: dict[str, SenderProfile] = {}
        self._sender_cfg = list(senders)
        self._senders = self._sender_table(decoders)
        self.skew = metrics.gauge(
            "syslog_clock_skew_seconds",
            "Device time minus receive time of the last message with a time stamp, per sender.",
            ["sender"],
        )
        self.parse_errors = metrics.counter(
            "syslog_parse_errors_total",
            "Syslog header problems by reason (pri_invalid, sd_invalid, ...); the message is kept.",
            ["source", "reason"],
        )
        self.limits = metrics.gauge(
            "syslog_limit",
            "Configured syslog listener limits (max_connections, rate_limit, ...).",
            ["source", "limit"],
        )
        self.decoded = metrics.counter(
            "syslog_vendor_decoded_total",
            "Syslog messages a vendor decoder understood, by decoder ('' = generic syslog).",
            ["decoder"],
        )
        self._batch = self._native_batch()

    def _native_batch(self) -> Any:
        """The extension's batch entry point over this intake's decoders and gauges, or
        ``None`` on the Python backend (then :meth:`datagrams` and :meth:`frames` loop over
        the per-message path, the reference)."""
        header = syslog_decode._native
        if dataplane.native is None or header is None:
            return None
        return dataplane.native.SyslogBatch(
            header,
            decode_with_fields_reference,
            self.decoders,
            body_time,
            Event,
            encode_line_reference,
            self.skew.values,
            MAX_SKEW_SENDERS,
            self.transport,
        )

    @property
    def native(self) -> bool:
        """Whether batches decode natively (then a native UDP receiver can feed them)."""
        return self._batch is not None

    def _sender_table(
        self, decoders: VendorRegistry
    ) -> list[tuple[list[IPNetwork], Any, tzinfo | None, VendorDecoder | None]]:
        return [
            (
                [IPNetwork(n) for n in s.networks],
                _static_fields(s),
                ZoneInfo(s.timezone) if s.timezone else None,
                decoders.by_name.get(s.vendor) if s.vendor else None,
            )
            for s in self._sender_cfg
        ]

    def use_decoders(self, decoders: VendorRegistry) -> None:
        """Switch to a new set of vendor decoders (SIGHUP re-read the decoder files) without
        restarting the listener; sender profiles are rebuilt on their next message."""
        self.decoders = decoders
        self._senders = self._sender_table(decoders)
        self.profiles.clear()
        self._batch = self._native_batch()

    def export_limits(self, cfg: SyslogSource, *names: str) -> None:
        """Show the listener's configured limits in /metrics (with the shared rate limit)."""
        for name in ("rate_limit", "rate_burst", "max_message_bytes", *names):
            self.limits.set(float(getattr(cfg, name)), self.source, name)

    def profile(self, ip: str) -> SenderProfile:
        """The cached profile of ``ip`` (built on first sight)."""
        prof = self.profiles.get(ip)
        if prof is not None:
            return prof
        static = tz = decoder = None
        if self._senders:
            try:
                addr = IPAddress(ip)
                if addr.version == 6 and addr.is_ipv4_mapped():
                    addr = addr.ipv4()
            except (AddrFormatError, ValueError, TypeError):
                addr = None
            if addr is not None:
                for nets, s_static, s_tz, s_dec in self._senders:
                    if any(addr in n for n in nets):
                        static, tz, decoder = s_static, s_tz, s_dec
                        break
        prof = SenderProfile(ip, ip in self.allowed, static, tz, decoder, self.burst)
        if len(self.profiles) >= self.max_senders:
            self.profiles.clear()
        self.profiles[ip] = prof
        return prof

    def take(self, prof: SenderProfile, now: float) -> bool:
        """Spend one token of the sender's bucket; ``False`` when it is empty (rate limited)."""
        tokens = prof.tokens + (now - prof.last) * self.rate
        prof.last = now
        if tokens > self.burst:
            tokens = self.burst
        if tokens < 1.0:
            prof.tokens = tokens
            return False
        prof.tokens = tokens - 1.0
        return True

    def datagram(
        self, data: bytes, ip: str, now: float, max_bytes: int, dropped: Any, truncated: Any
    ) -> Event | None:
        """The per-datagram policy every UDP reader shares (in-process or a decode worker):
        allow-list, empty, truncation, rate limit, decode. ``None`` when the datagram was
        dropped, which is counted in ``dropped`` by reason (``received`` is the caller's)."""
        name = self.source
        prof = self.profiles.get(ip)
        if prof is None:
            prof = self.profile(ip)
        if not prof.allowed:
            dropped.inc(name, "not_allowed")
            _rl.warning(f"deny:{name}", "%s: datagram from %s not in allow-list", name, ip)
            return None
        if not data:
            dropped.inc(name, "empty")
            return None
        if len(data) > max_bytes:
            truncated.inc(name)
            data = data[:max_bytes]
        return self.admit(data, ip, prof, now, dropped)

    def admit(
        self,
        data: bytes,
        ip: str,
        prof: SenderProfile,
        now: float,
        dropped: Any,
        unit: str = "datagram",
    ) -> Event | None:
        """Rate limit, then decode: the step every syslog path shares (a datagram, a stream's
        frame) before the caller offers the event to the pipeline. ``None`` when the message
        was dropped, counted in ``dropped`` by reason (``rate_limited``, ``decode_error``)."""
        if self.rate and not self.take(prof, now):
            dropped.inc(self.source, "rate_limited")
            return None
        try:
            return self.event(data, ip, prof, now)
        except Exception:  # a decoder bug must cost one message, never the listener
            dropped.inc(self.source, "decode_error")
            _rl.decoder_bug(self.source, ip, unit)
            return None

    def event(self, data: bytes, ip: str, prof: SenderProfile, now: float) -> Event:
        """Decode one message (header, then vendor) into an event; raises only on a bug."""
        msg, fields = decode_with_fields(data, now, prof.tz, ip)
        if msg.errors:
            for reason in msg.errors:
                self.parse_errors.inc(self.source, reason)
        fields["log.source.transport"] = self.transport
        static = prof.static
        if static is not None:
            tags = fields.get("tags")
            fields.update(static)
            if tags is not None and "tags" in static:
                fields["tags"] = tags + static["tags"]
        name = self.decoders.decode(msg, fields, prof.decoder)
        if name:
            fields["event.dataset"] = name
        self.decoded.inc(name)
        ts = device_time(msg, prof.tz)
        if ts is None:
            ts = now
        else:
            values = self.skew.values
            if len(values) < MAX_SKEW_SENDERS or prof.key in values:
                values[prof.key] = ts - now
        return Event(timestamp=ts, created=now, module="syslog", fields=fields, raw=data)

    def datagrams(
        self,
        items: list[tuple[bytes, tuple[str, int]]],
        now: float,
        max_bytes: int,
        raw_max: int,
        dropped: Any,
        truncated: Any,
    ) -> list[Event]:
        """:meth:`datagram` for a whole ``recvmmsg`` batch (``(bytes, (ip, port))`` each, one
        receive time): one native call instead of several per message. The events come with
        their stored line (``raw`` cut to ``raw_max``, the store's limit) and every counter
        moves as the per-message path moves it."""
        batch = self._batch
        if batch is None:
            out = []
            for data, addr in items:
                event = self.datagram(data, addr[0], now, max_bytes, dropped, truncated)
                if event is not None:
                    out.append(event)
            return out
        got = batch.datagrams(
            items, now, max_bytes, raw_max, self.rate, self.burst, self.profiles, self.profile
        )
        return self._fold(got, dropped, truncated, "datagram")

    def receiver_datagrams(
        self,
        receiver: Any,
        count: int,
        now: float,
        max_bytes: int,
        raw_max: int,
        dropped: Any,
        truncated: Any,
        listener: str,
    ) -> tuple[list[Event], int, int]:
        """:meth:`datagrams` over the next ``count`` datagrams of a native ``UdpReceiver``'s
        backlog, taken and decoded in one native call (native backend only: the receiver
        exists only there). ``(events, datagrams taken, bytes of the events' stored lines)``;
        each event comes with its line and ``listener`` set (``Pipeline.offer_batch``'s fast
        path)."""
        batch = self._batch
        assert batch is not None
        got, taken, line_bytes = batch.receiver(
            receiver,
            count,
            now,
            max_bytes,
            raw_max,
            self.rate,
            self.burst,
            self.profiles,
            self.profile,
            listener,
        )
        return self._fold(got, dropped, truncated, "datagram"), taken, line_bytes

    def frames(
        self,
        frames: list[bytes],
        ip: str,
        prof: SenderProfile,
        now: float,
        raw_max: int,
        dropped: Any,
    ) -> list[Event]:
        """:meth:`admit` for the frames of one stream read (one sender, one receive time)."""
        batch = self._batch
        if batch is None:
            out = []
            for frame in frames:
                event = self.admit(frame, ip, prof, now, dropped, "frame")
                if event is not None:
                    out.append(event)
            return out
        got = batch.frames(frames, ip, prof, now, raw_max, self.rate, self.burst)
        return self._fold(got, dropped, None, "frame")

    def stream(
        self,
        framer: Any,
        want: int,
        ip: str,
        prof: SenderProfile,
        now: float,
        raw_max: int,
        dropped: Any,
        listener: str,
    ) -> tuple[list[Event], int, int | None]:
        """:meth:`frames` over the next ``want`` complete frames of a stream's ``framer``:
        ``(events, frames taken, bytes of the events' stored lines or None)``. On the native
        backend the frames are taken and decoded in one call and each event comes with its
        line and ``listener`` set, so the line bytes are known (``Pipeline.offer_batch``'s
        fast path); otherwise the frames are taken one by one and decoded by :meth:`frames`,
        and the pipeline does the per-event steps (``None``)."""
        batch = self._batch
        native = dataplane.native
        if batch is not None and native is not None and type(framer) is native.SyslogFramer:
            got, taken, line_bytes = batch.stream(
                framer, want, ip, prof, now, raw_max, self.rate, self.burst, listener
            )
            return self._fold(got, dropped, None, "frame"), taken, line_bytes
        chunk = []
        next_frame = framer.next_frame
        for _ in range(want):
            frame = next_frame()
            if frame is None:
                break
            chunk.append(frame)
        if not chunk:
            return [], 0, None
        return self.frames(chunk, ip, prof, now, raw_max, dropped), len(chunk), None

    def _fold(self, got: Any, dropped: Any, truncated: Any, unit: str) -> list[Event]:
        """Fold a native batch's counts into the counters the per-message path moves."""
        events, drops, cut, parse, decoded, denied, bugs = got
        name = self.source
        for reason, n in drops.items():
            dropped.inc(name, reason, n=n)
        if cut:
            truncated.inc(name, n=cut)
        for reason, n in parse.items():
            self.parse_errors.inc(name, reason, n=n)
        for decoder, n in decoded.items():
            self.decoded.inc(decoder, n=n)
        if denied is not None:
            _rl.warning(f"deny:{name}", "%s: datagram from %s not in allow-list", name, denied)
        for ip, exc in bugs:
            _rl.decoder_bug(name, ip, unit, exc)
        result: list[Event] = events
        return result
