"""One policy for the datagram sources: syslog over UDP, SNMP traps, NetFlow/IPFIX.

All three are unauthenticated UDP (an SNMP v1/v2c community travels in clear text, a NetFlow
exporter signs nothing), so they answer the same questions the same way, in this order:

0. **How they are read.** One reader for the three (:class:`~appliance.sources.udp.UdpBatchReader`):
   ``recvmmsg`` batches into a backlog of raw datagrams (``backlog_bytes``) held while the
   pipeline has no room, with ``rcvbuf_bytes`` of kernel buffer behind it; the steps below run
   as each datagram leaves the backlog.
1. **Who may send.** ``allowed`` networks; the default for every source is the private,
   link-local and loopback ranges (:data:`DEFAULT_ALLOWED`): a box listening on ``0.0.0.0``
   then accepts the site's own devices and nothing from a public address until a network is
   listed. Each source logs its effective list at start.
2. **How big.** A datagram longer than ``max_message_bytes``: text (syslog) is cut to the limit
   and counted in ``truncated`` (RFC 5426 lets a receiver truncate; the start of a log line is
   its most useful part); binary formats (SNMP BER, NetFlow) cannot be decoded from a prefix and
   are dropped as ``too_large``.
3. **How often.** One token bucket per sender address (:class:`SenderRateLimit`), with the
   same keys on every source: ``rate_limit`` (datagrams per second, 0 = off), ``rate_burst``
   and ``max_senders`` (the buckets tracked; past it they are reset rather than grown, so a
   spoofed-source flood cannot grow memory).
4. **Decode.** A decoder that raises costs that one datagram (``decode_error``), never the
   listener.

Every datagram a source does not turn into events is counted under one of the reasons in
:data:`DROP_REASONS` (``appliance_events_dropped_total`` for syslog and SNMP,
``appliance_netflow_datagrams_rejected_total`` for NetFlow, whose datagrams carry many flows).
"""

from __future__ import annotations

from collections.abc import Iterable

from netaddr import AddrFormatError, IPAddress, IPSet

from appliance.config import PRIVATE_AND_LOOPBACK

DEFAULT_ALLOWED: tuple[str, ...] = tuple(PRIVATE_AND_LOOPBACK)

NOT_ALLOWED = "not_allowed"
EMPTY = "empty"
TOO_LARGE = "too_large"
RATE_LIMITED = "rate_limited"
DECODE_ERROR = "decode_error"

# The per-datagram reasons every datagram source uses (the pipeline adds its own: queue_full,
# store_full, ...; a protocol adds what only it has, e.g. SNMP's community checks).
DROP_REASONS: dict[str, str] = {
    NOT_ALLOWED: "the sender's address is not in the source's allowed networks",
    EMPTY: "a datagram with no payload",
    TOO_LARGE: "a binary datagram longer than max_message_bytes (text is truncated instead)",
    RATE_LIMITED: "the sender's token bucket (rate_limit, rate_burst) was empty",
    DECODE_ERROR: "the decoder failed on this datagram (counted, logged, the listener goes on)",
}


class AllowList:
    """Sender networks allowed on a listener; answers are cached per address (bounded)."""

    MAX_CACHE = 65_536

    def __init__(self, networks: Iterable[str]) -> None:
        self.networks = list(networks)
        self._set = IPSet(self.networks)
        self._all = "0.0.0.0/0" in self.networks and "::/0" in self.networks
        self._cache: dict[str, bool] = {}

    def __contains__(self, ip: str) -> bool:
        if self._all:
            return True
        hit = self._cache.get(ip)
        if hit is None:
            try:
                addr = IPAddress(ip)
                if addr.version == 6 and addr.is_ipv4_mapped():
                    addr = addr.ipv4()
                hit = addr in self._set
            except (AddrFormatError, ValueError, TypeError):  # not an address: never allowed
                hit = False
            if len(self._cache) >= self.MAX_CACHE:
                self._cache.clear()
            self._cache[ip] = hit
        return hit

    def describe(self) -> str:
        """The effective list for the start-up log line."""
        if self._all:
            return "any address"
        return ", ".join(self.networks) if self.networks else "nobody (allowed = [])"


class SenderRateLimit:
    """A token bucket per sender address, bounded in the number of senders tracked."""

    def __init__(self, rate: float, burst: int, max_senders: int) -> None:
        self.rate = rate
        self.burst = float(burst)
        self.max_senders = max_senders
        self._buckets: dict[str, list[float]] = {}

    def allow(self, ip: str, now: float) -> bool:
        if self.rate <= 0:
            return True
        bucket = self._buckets.get(ip)
        if bucket is None:
            if len(self._buckets) >= self.max_senders:
                self._buckets.clear()  # a spoofed-source flood resets rather than grows
            bucket = self._buckets[ip] = [self.burst, now]
        tokens = min(self.burst, bucket[0] + (now - bucket[1]) * self.rate)
        bucket[1] = now
        if tokens < 1.0:
            bucket[0] = tokens
            return False
        bucket[0] = tokens - 1.0
        return True
