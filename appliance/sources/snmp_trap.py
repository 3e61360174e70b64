"""SNMP notifications over UDP: v1/v2c traps and informs on a fast path, v3 through pysnmp.

One socket, bound by us and read like the other datagram sources: by a
:class:`~appliance.sources.udp.UdpBatchReader` (``recvmmsg`` batches into a bounded backlog,
``backlog_bytes``, that holds a trap storm while the pipeline has no room), else by an asyncio
datagram endpoint where ``recvmmsg`` is missing. Each datagram passes the datagram policy
(allow-list, size, rate) and is routed by its msgVersion: v1/v2c go to our bounded BER decoder
(:mod:`appliance.protocols.snmp`), which keeps up with trap storms; v3 goes to a pysnmp engine
(:class:`~appliance.sources.snmp_v3.UsmReceiver`) for USM, whose answers (Reports for engine-ID
discovery, inform responses) leave from the same socket. Every datagram is counted received,
then either offered to the pipeline or counted dropped with its reason.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import socket
from typing import TYPE_CHECKING, Any

from appliance.config import SnmpSource, parse_engine_id
from appliance.logutil import RateLimitedLog
from appliance.mibs import DEFAULT_SEVERITIES, INDEX_FILE, MibResolver, load_index
from appliance.protocols.snmp.ecs import SeverityTable, trap_event
from appliance.protocols.snmp.message import (
    PDU_INFORM,
    VERSION_1,
    VERSION_3,
    BerError,
    UnsupportedPdu,
    VarBind,
    decode_message,
    encode_inform_response,
    message_version,
    v2_varbinds,
)
from appliance.sources.base import SourceContext
from appliance.sources.policy import AllowList, SenderRateLimit
from appliance.sources.udp import (
    DatagramSender,
    KernelDropTracker,
    SocketReplies,
    UdpBatchReader,
    bind_udp,
    drain_socket,
    register_backlog_gauge,
    socket_drops,
)
from appliance.store.state import INT

if TYPE_CHECKING:
    from appliance.sources.snmp_v3 import UsmReceiver

log = logging.getLogger(__name__)
_rl = RateLimitedLog(log)

MIB_CACHE = "mibs"  # under data_dir: written by `appliance mibs compile`
MIB_CACHE_POLL = 10.0  # seconds between checks for a newly compiled MIB cache


class CommunityTable:
    """Which configured community a message used, if it is accepted from that sender.

    The event stores only the label (``communities[0]``), never the community itself.
    """

    def __init__(self, cfg: SnmpSource) -> None:
        self.anywhere: dict[bytes, str] = {
            c.encode(): f"communities[{i}]" for i, c in enumerate(cfg.communities)
        }
        self.rules: list[tuple[AllowList, dict[bytes, str]]] = [
            (
                AllowList(rule.networks),
                {
                    c.encode(): f"community_rules[{r}].communities[{i}]"
                    for i, c in enumerate(rule.communities)
                },
            )
            for r, rule in enumerate(cfg.community_rules)
        ]

    def match(self, community: bytes, ip: str) -> str | None:
        label = self.anywhere.get(community)
        if label is not None:
            return label
        for networks, table in self.rules:
            label = table.get(community)
            if label is not None and ip in networks:
                return label
        return None


class SnmpTrapProtocol(asyncio.DatagramProtocol):
    """Datagram → policy → route by version → decode → event → pipeline. Fed by the batch
    reader (:meth:`datagram_received` is its ``deliver``) or, without ``recvmmsg``, by asyncio;
    answers go out through :attr:`transport` either way."""

    def __init__(self, source: SnmpTrapSource) -> None:
        self.source = source
        self.name = source.name
        self.cfg = source.cfg
        self.pipeline = source.ctx.pipeline
        self.clock = source.ctx.clock
        self.allowed = source.allowed
        self.received = source.ctx.pipeline.received
        self.dropped = source.ctx.pipeline.dropped
        self.transport: DatagramSender | None = None

    def attach(self, sender: DatagramSender) -> None:
        """Where answers go: inform responses here, and pysnmp's Reports and responses."""
        self.transport = sender
        if self.source.v3 is not None:
            self.source.v3.attach(sender)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.attach(transport)  # type: ignore[arg-type]  # a DatagramTransport here

    def drop(self, reason: str, ip: str) -> None:
        self.dropped.inc(self.name, reason)
        _rl.warning(
            f"{reason}:{self.name}", "%s: dropped a datagram from %s: %s", self.name, ip, reason
        )

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        src = self.source
        name = self.name
        self.received.inc(name)
        ip = addr[0]
        if ip not in self.allowed:
            self.drop("not_allowed", ip)
            return
        if len(data) > self.cfg.max_message_bytes:
            self.drop("too_large", ip)
            return
        now = self.clock()
        if not src.rate_limit.allow(ip, now):
            self.drop("rate_limited", ip)
            return
        try:
            self.handle(data, addr, now)
        except Exception:  # a bug must cost one message, never the listener
            self.dropped.inc(name, "decode_error")
            _rl.log(
                logging.ERROR,
                f"decode:{name}",
                "%s: failed on a datagram from %s",
                name,
                ip,
                exc_info=True,
            )

    def handle(self, data: bytes, addr: tuple[str, int], now: float) -> None:
        src = self.source
        ip = addr[0]
        if _version(data) == VERSION_3:  # malformed envelopes fall through to the decoder
            self.handle_v3(data, addr)
            return
        if self.cfg.snmpv3_only:
            self.drop("v1v2c_in_v3_only", ip)
            return
        try:
            msg = decode_message(data, self.cfg.max_varbinds)
        except BerError as exc:
            src.malformed.inc(self.name, exc.reason)
            self.drop("malformed", ip)
            return
        except UnsupportedPdu:
            self.drop("not_a_notification", ip)
            return
        label = src.communities.match(msg.community, ip)
        if label is None:
            self.drop("bad_community", ip)
            return
        v1 = msg.v1
        event = trap_event(
            v2_varbinds(msg),
            version="1" if msg.version == VERSION_1 else "2c",
            pdu="inform" if msg.pdu_type == PDU_INFORM else "trap",
            peer_ip=_unmap(ip),
            peer_port=addr[1],
            agent_ip=v1.agent_addr if v1 is not None and v1.agent_addr != "0.0.0.0" else None,
            now=now,
            resolver=src.resolver,
            severities=src.severities,
            extra=_v1_fields(v1) | {"snmp.community_index": label},
        )
        # An inform is acknowledged only once queued: when the queue is full the sender's
        # retry is the one chance the notification still has.
        accepted = self.pipeline.offer(event, self.name)
        if accepted and msg.pdu_type == PDU_INFORM and self.transport is not None:
            self.transport.sendto(encode_inform_response(data, msg), addr)
            src.informs_answered.inc(self.name)

    def handle_v3(self, data: bytes, addr: tuple[str, int]) -> None:
        v3 = self.source.v3
        if v3 is None:
            self.drop("v3_not_configured", addr[0])  # no users and no engine_id configured
            return
        reason = v3.feed(data, addr)
        if reason is not None:
            if reason == "malformed":
                self.source.malformed.inc(self.name, "v3")
            self.drop(reason, addr[0])

    def error_received(self, exc: Exception) -> None:
        _rl.warning(f"err:{self.name}", "%s: socket error: %s", self.name, exc)


def _version(data: bytes) -> int:
    try:
        return message_version(data)
    except BerError:
        return -1


def _unmap(ip: str) -> str:
    return ip[7:] if ip.startswith("::ffff:") and "." in ip else ip


def _v1_fields(v1: Any) -> dict[str, Any]:
    if v1 is None:
        return {}
    return {
        "snmp.v1.enterprise": v1.enterprise,
        "snmp.v1.generic_trap": v1.generic_trap,
        "snmp.v1.specific_trap": v1.specific_trap,
        "snmp.v1.agent_addr": v1.agent_addr,
    }


class SnmpTrapSource:
    def __init__(self, cfg: SnmpSource, ctx: SourceContext) -> None:
        self.cfg = cfg
        self.ctx = ctx
        self.name = cfg.label
        self.allowed = AllowList(cfg.allowed)
        self.communities = CommunityTable(cfg)
        self.rate_limit = SenderRateLimit(cfg.rate_limit, cfg.rate_burst, cfg.max_senders)
        self.severities = SeverityTable(
            {**DEFAULT_SEVERITIES, **cfg.severity}, cfg.default_severity
        )
        self.mib_cache = ctx.config.data_dir / MIB_CACHE
        self.resolver = MibResolver(load_index(self.mib_cache))
        self._mib_stamp = self._mib_cache_stamp()
        self._watch: asyncio.Task[None] | None = None
        m = ctx.metrics
        self.malformed = m.counter(
            "snmp_malformed_total",
            "SNMP datagrams rejected as malformed, by the decoder's reason.",
            ["source", "reason"],
        )
        self.informs_answered = m.counter(
            "snmp_informs_answered_total", "InformRequests acknowledged (v2c and v3).", ["source"]
        )
        limits = m.gauge(
            "snmp_limit",
            "Configured SNMP source limits (max_message_bytes, max_varbinds, rate_limit, ...).",
            ["source", "limit"],
        )
        for key in (
            "max_message_bytes",
            "max_varbinds",
            "rate_limit",
            "rate_burst",
            "max_senders",
            "rcvbuf_bytes",
            "backlog_bytes",
        ):
            limits.set(float(getattr(cfg, key)), self.name, key)
        self.sock: socket.socket | None = None
        self.transport: asyncio.DatagramTransport | None = None  # without recvmmsg only
        self.reader: UdpBatchReader | None = None
        self.protocol: SnmpTrapProtocol | None = None
        self.kernel = KernelDropTracker(self.name, ctx.pipeline)
        register_backlog_gauge(ctx.metrics)
        # pysnmp is imported only when v3 is configured (about 0.3 s of start-up otherwise).
        self.v3: UsmReceiver | None = None

    async def start(self) -> None:
        self.sock = bind_udp(self.cfg.listen, self.cfg.rcvbuf_bytes)
        try:
            if self.cfg.users or self.cfg.engine_id:
                from appliance.sources.snmp_v3 import UsmReceiver

                self.v3 = UsmReceiver(
                    list(self.cfg.users),
                    ipv6=self.sock.family == socket.AF_INET6,
                    engine_id=self.engine_id,
                    boots=await self._next_engine_boots(),
                    on_notification=self._v3_notification,
                )
            loop = asyncio.get_running_loop()
            protocol = self.protocol = SnmpTrapProtocol(self)
            if UdpBatchReader.available:
                # A trap storm waits here raw (a few hundred bytes a trap) while the pipeline
                # has two batches queued, instead of overflowing the kernel's buffer. Slices of
                # 64: a v3 authPriv trap costs pysnmp ~0.65 ms (scripts/bench snmp --v3), so
                # the socket is read again within ~40 ms even in a v3 storm.
                protocol.attach(SocketReplies(self.sock, self.name))
                self.reader = UdpBatchReader(
                    self.sock,
                    protocol.datagram_received,
                    max_bytes=self.cfg.max_message_bytes,
                    backlog_bytes=self.cfg.backlog_bytes,
                    slice_=64,
                    ready=self.ctx.pipeline.wants_more,
                    name=self.name,
                )
                self.reader.start(loop)
            else:
                self.transport, _ = await loop.create_datagram_endpoint(
                    lambda: protocol, sock=self.sock
                )
        except BaseException:
            await self.stop()
            raise
        self.kernel.start(self.sock)
        self._watch = asyncio.create_task(self._watch_mib_cache(), name=f"{self.name}-mibs")
        log.info(
            "%s: listening on udp %s; senders allowed: %s",
            self.name,
            self.sock.getsockname()[:2],
            self.allowed.describe(),
        )

    def _mib_cache_stamp(self) -> float | None:
        try:
            return (self.mib_cache / INDEX_FILE).stat().st_mtime
        except OSError:
            return None

    async def _watch_mib_cache(self) -> None:
        """Pick up names from a new `appliance mibs compile` without a restart."""
        while True:
            await asyncio.sleep(MIB_CACHE_POLL)
            stamp = self._mib_cache_stamp()
            if stamp != self._mib_stamp:
                self._mib_stamp = stamp
                names = await asyncio.to_thread(load_index, self.mib_cache)
                self.resolver = MibResolver(names)
                log.info("%s: %d MIB names loaded from %s", self.name, len(names), self.mib_cache)

    @property
    def engine_id(self) -> bytes:
        """The configured engine ID, else one derived from the sensor and source names, so it
        stays the same across restarts (v3 informs senders keep it) without storing it."""
        if self.cfg.engine_id:
            return parse_engine_id(self.cfg.engine_id)
        seed = f"{self.ctx.config.appliance.sensor_id}/{self.name}".encode()
        # RFC 3411 SnmpEngineID: high bit set, enterprise 0, format 5 (octets), 12 octets.
        return b"\x80\x00\x00\x00\x05" + hashlib.sha256(seed).digest()[:12]

    async def _next_engine_boots(self) -> int:
        """snmpEngineBoots, incremented and stored durably at each start (RFC 3414 §2.2)."""
        slot = self.ctx.pipeline.store.state("snmp", f"{self.name}:engine_boots", INT)
        async with self.ctx.pipeline.store.transaction(durable=True) as conn:
            try:
                boots = (await slot.read(conn) or 0) + 1
            except (TypeError, ValueError):
                boots = 1
            boots = min(boots, 2147483647)
            await slot.write(conn, boots)
        return boots

    def _v3_notification(
        self, varbinds: list[VarBind], peer: tuple[str, int], info: dict[str, Any]
    ) -> None:
        now = self.ctx.clock()
        event = trap_event(
            varbinds,
            version="3",
            pdu="inform" if info["inform"] else "trap",
            peer_ip=_unmap(peer[0]),
            peer_port=peer[1],
            agent_ip=None,
            now=now,
            resolver=self.resolver,
            severities=self.severities,
            extra={
                "user.name": info["security_name"],
                "snmp.security_name": info["security_name"],
                "snmp.security_level": info["security_level"],
                "snmp.context_engine_id": info["context_engine_id"],
            },
        )
        self.ctx.pipeline.offer(event, self.name)
        if info["inform"]:  # pysnmp has sent the Response-PDU
            self.informs_answered.inc(self.name)

    @property
    def listening(self) -> bool:
        return self.reader is not None or self.transport is not None

    @property
    def address(self) -> tuple[str, int]:
        assert self.sock is not None
        host, port = self.sock.getsockname()[:2]
        return host, port

    def kernel_drops(self) -> int | None:
        return socket_drops(self.sock) if self.sock is not None else None

    async def stop(self) -> None:
        if self.reader is not None:
            # What it holds goes through the protocol now (v3 too: pysnmp is still open), as
            # the pipeline has room.
            await self.reader.aclose(self.ctx.config.appliance.shutdown_timeout / 2)
            self.reader = None
        if self.sock is not None and self.protocol is not None:
            # Datagrams that reached the socket are stored (or counted), not lost from the books.
            drain_socket([self.sock], self.protocol.datagram_received)
        self.kernel.stop()  # last read of the kernel's drop count, while the socket is open
        if self._watch is not None:
            self._watch.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watch
            self._watch = None
        if self.v3 is not None:
            self.v3.close()
            self.v3 = None
        if self.transport is not None:
            self.transport.close()
            self.transport = None
        elif self.sock is not None:
            self.sock.close()
        self.sock = None
        self.protocol = None
