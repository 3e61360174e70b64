"""SNMPv3 (USM) notifications through pysnmp, fed from the trap source's own socket.

Why pysnmp here and not our decoder: USM is where the subtle, security-relevant work is (key
localization per engine ID, HMAC-SHA-2, DES/AES privacy, the 150-second time window, Report
PDUs and inform acknowledgements), and pysnmp does it correctly. v3 traffic is a small share
of a trap storm, so its cost per message does not matter the way v2c's does.

How: the trap source owns the socket and reads it (with the datagram sources' batch reader, so
v3 datagrams wait in the same backlog as v1/v2c ones). Each v3 datagram that passed the
datagram policy is handed to a pysnmp UDP transport object that was never opened itself; its
sending side is attached to what writes to our socket (:meth:`UsmReceiver.attach`), so
pysnmp's replies (Reports for engine-ID discovery and USM errors, inform responses) go out of
the same socket. The transport's receive callback (the one the transport dispatcher registered
with it) is called directly, which runs pysnmp's whole receive path synchronously: by the time
:meth:`UsmReceiver.feed` returns we know whether a notification came out and, if not, why
(an observer on pysnmp's security-module failure point gives the reason).
"""

from __future__ import annotations

import contextlib
import ipaddress
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pysnmp.carrier.asyncio.dgram import udp, udp6
from pysnmp.entity import config as snmp_config
from pysnmp.entity import engine as snmp_engine
from pysnmp.entity.rfc3413 import ntfrcv
from pysnmp.proto import errind
from pysnmp.proto.api import v2c

from appliance.config import SnmpUser, parse_engine_id
from appliance.protocols.snmp import ber
from appliance.protocols.snmp.ber import BerError
from appliance.protocols.snmp.message import VarBind
from appliance.sources.udp import DatagramSender

log = logging.getLogger(__name__)

AUTH_PROTOCOLS = {
    "none": snmp_config.USM_AUTH_NONE,
    "md5": snmp_config.USM_AUTH_HMAC96_MD5,
    "sha": snmp_config.USM_AUTH_HMAC96_SHA,
    "sha224": snmp_config.USM_AUTH_HMAC128_SHA224,
    "sha256": snmp_config.USM_AUTH_HMAC192_SHA256,
    "sha384": snmp_config.USM_AUTH_HMAC256_SHA384,
    "sha512": snmp_config.USM_AUTH_HMAC384_SHA512,
}
PRIV_PROTOCOLS = {
    "none": snmp_config.USM_PRIV_NONE,
    "des": snmp_config.USM_PRIV_CBC56_DES,
    "3des": snmp_config.USM_PRIV_CBC168_3DES,
    "aes": snmp_config.USM_PRIV_CFB128_AES,
    "aes192": snmp_config.USM_PRIV_CFB192_AES,
    "aes256": snmp_config.USM_PRIV_CFB256_AES,
}

# pysnmp error indications → our drop reasons (metrics labels).
_REASONS: list[tuple[type[Exception], str]] = [
    (errind.UnknownEngineID, "unknown_engine_id"),
    (errind.UnknownUserName, "unknown_user"),
    (errind.AuthenticationFailure, "auth_failure"),
    (errind.WrongDigest, "auth_failure"),
    (errind.AuthenticationError, "auth_failure"),
    (errind.DecryptionError, "decrypt_failure"),
    (errind.NotInTimeWindow, "not_in_time_window"),
    (errind.UnsupportedSecurityLevel, "unsupported_security_level"),
    (errind.ParseError, "malformed"),
    (errind.InvalidMsg, "malformed"),
]

# pysnmp value class name → the SMI type names our decoder reports.
_TYPE_NAMES = {
    "Integer": "Integer32",
    "Integer32": "Integer32",
    "OctetString": "OctetString",
    "Bits": "OctetString",
    "Null": "Null",
    "ObjectIdentifier": "ObjectIdentifier",
    "ObjectName": "ObjectIdentifier",
    "IpAddress": "IpAddress",
    "Counter32": "Counter32",
    "Gauge32": "Gauge32",
    "Unsigned32": "Gauge32",
    "TimeTicks": "TimeTicks",
    "Opaque": "Opaque",
    "Counter64": "Counter64",
    "NoSuchObject": "noSuchObject",
    "NoSuchInstance": "noSuchInstance",
    "EndOfMibView": "endOfMibView",
}

SECURITY_LEVELS = {1: "noAuthNoPriv", 2: "authNoPriv", 3: "authPriv"}


def plain_varbind(name: Any, value: Any) -> VarBind:
    """A pysnmp (ObjectName, value) pair as our plain :class:`VarBind`."""
    type_name = _TYPE_NAMES.get(type(value).__name__, type(value).__name__)
    plain: Any
    if type_name in ("OctetString", "Opaque"):
        plain = bytes(value.asOctets())
    elif type_name == "ObjectIdentifier":
        plain = str(value)
    elif type_name == "IpAddress":
        octets = bytes(value.asOctets())
        plain = str(ipaddress.IPv4Address(octets)) if len(octets) == 4 else octets.hex(":")
    elif type_name in ("Null", "noSuchObject", "noSuchInstance", "endOfMibView"):
        plain = None
    else:
        try:
            plain = int(value)
        except (TypeError, ValueError):
            plain = str(value)
    return VarBind(str(name), type_name, plain)


TIME_WINDOW = 150  # seconds, RFC 3414 §3.2.7
MAX_TIMELINES = 10_000


@dataclass(frozen=True, slots=True)
class UsmHeader:
    """The clear-text part of a v3 message that USM decisions need."""

    engine_id: bytes
    boots: int
    time: int
    user: str
    level: int  # 1 noAuthNoPriv, 2 authNoPriv, 3 authPriv (from msgFlags)


def usm_header(data: bytes) -> UsmHeader | None:
    """Read msgFlags and the USM security parameters (never encrypted) of a v3 message;
    ``None`` when they cannot be read (pysnmp then reports why)."""
    try:
        end = len(data)
        start, stop = ber.expect(data, 0, end, ber.SEQUENCE, "message")
        _s, pos = ber.expect(data, start, stop, ber.INTEGER, "version")
        gs, pos = ber.expect(data, pos, stop, ber.SEQUENCE, "global_data")
        _s, e = ber.expect(data, gs, pos, ber.INTEGER, "msg_id")
        _s, e = ber.expect(data, e, pos, ber.INTEGER, "max_size")
        fs, fe = ber.expect(data, e, pos, ber.OCTET_STRING, "flags")
        flags = data[fs] if fe > fs else 0
        ps, pe = ber.expect(data, pos, stop, ber.OCTET_STRING, "security_parameters")
        ps, pe = ber.expect(data, ps, pe, ber.SEQUENCE, "usm")
        es, ee = ber.expect(data, ps, pe, ber.OCTET_STRING, "engine_id")
        bs, be = ber.expect(data, ee, pe, ber.INTEGER, "boots")
        ts, te = ber.expect(data, be, pe, ber.INTEGER, "time")
        us, ue = ber.expect(data, te, pe, ber.OCTET_STRING, "user")
        boots = ber.decode_signed(data, bs, be, 5)
        etime = ber.decode_signed(data, ts, te, 5)
    except BerError:
        return None
    level = 1 if not flags & 1 else 3 if flags & 2 else 2
    user = data[us:ue].decode("utf-8", "replace")
    return UsmHeader(data[es:ee], boots, etime, user, level)


class UsmReceiver:
    """A pysnmp engine that receives v3 notifications handed to it by :meth:`feed`.

    ``on_notification(varbinds, peer, info)`` gets each authenticated notification with plain
    varbinds; :meth:`feed` returns ``None`` when one came out, else a drop reason.
    """

    def __init__(
        self,
        users: list[SnmpUser],
        *,
        ipv6: bool,
        engine_id: bytes,
        boots: int,
        on_notification: Callable[[list[VarBind], tuple[str, int], dict[str, Any]], None],
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        # Built inside the running loop: SnmpEngine and the transport capture it in __init__.
        self.engine = snmp_engine.SnmpEngine()
        self._set_engine_state(engine_id, boots)
        self.on_notification = on_notification
        self.user_names = {u.name.encode() for u in users}
        # The lowest security level configured for each user name (see feed).
        self.min_level: dict[str, int] = {}
        for u in users:
            level = 1 if u.auth_protocol == "none" else 2 if u.priv_protocol == "none" else 3
            self.min_level[u.name] = min(level, self.min_level.get(u.name, 3))
        self.transport = udp6.Udp6Transport() if ipv6 else udp.UdpTransport()
        domain = udp6.DOMAIN_NAME if ipv6 else udp.DOMAIN_NAME
        snmp_config.add_transport(self.engine, domain, self.transport)
        for user in users:
            extra = {}
            if user.engine_id:
                extra["securityEngineId"] = v2c.OctetString(parse_engine_id(user.engine_id))
            snmp_config.add_v3_user(
                self.engine,
                user.name,
                AUTH_PROTOCOLS[user.auth_protocol],
                user.auth_key or None,
                PRIV_PROTOCOLS[user.priv_protocol],
                user.priv_key or None,
                **extra,
            )
        self.receiver = ntfrcv.NotificationReceiver(self.engine, self._callback)
        self.engine.observer.register_observer(
            self._sm_failure, "rfc3412.prepareDataElements:sm-failure"
        )
        self._delivered = False
        self._failure: str | None = None
        self._header: UsmHeader | None = None
        # engine ID → (boots, latest time seen, monotonic second it was seen)
        self._timeline: dict[bytes, tuple[int, int, float]] = {}
        self.clock = clock

    def _set_engine_state(self, engine_id: bytes, boots: int) -> None:
        """Our engine ID and boot counter (RFC 3414 §2.2), kept by the appliance.

        Set after construction rather than passed to SnmpEngine: given an engine ID, pysnmp
        persists the boot counter itself under the system temp folder; ours lives in the
        appliance's database (state table), next to everything else it keeps.
        """
        mib = self.engine.get_mib_builder()
        (mib_engine_id, mib_boots) = mib.import_symbols(
            "__SNMP-FRAMEWORK-MIB", "snmpEngineID", "snmpEngineBoots"
        )
        mib_engine_id.syntax = mib_engine_id.syntax.clone(engine_id)
        self.engine.snmpEngineID = mib_engine_id.syntax
        self._engine_id = engine_id
        mib_boots.syntax = mib_boots.syntax.clone(boots)

    @property
    def boots(self) -> int:
        (mib_boots,) = self.engine.get_mib_builder().import_symbols(
            "__SNMP-FRAMEWORK-MIB", "snmpEngineBoots"
        )
        return int(mib_boots.syntax)

    @property
    def engine_id(self) -> bytes:
        return self._engine_id

    def attach(self, sender: DatagramSender) -> None:
        """Send pysnmp's replies (inform responses, Reports) out of our socket: pysnmp's
        transport writes to whatever it was handed as its asyncio transport, and only calls
        ``sendto`` on it (our :class:`~appliance.sources.udp.SocketReplies` when the batch
        reader owns the socket)."""
        self.transport.connection_made(sender)

    def feed(self, data: bytes, addr: tuple[str, int]) -> str | None:
        self._delivered = False
        self._failure = None
        header = self._header = usm_header(data)
        # USM accepts a lower level than a user is keyed for; we do not (C2: noAuthNoPriv from
        # a user configured for authPriv is a downgrade). Checked before pysnmp sees the
        # message, so a downgraded inform is not acknowledged either.
        if header is not None and header.level < self.min_level.get(header.user, 1):
            return "unsupported_security_level"
        address = self.transport.normalize_address(addr[:2])
        try:
            self.transport._callback_function(self.transport, address, data)
        except Exception:  # pysnmp must never take the listener down
            log.debug("pysnmp raised on a v3 datagram from %s", addr[0], exc_info=True)
            return "malformed"
        if self._delivered:
            return None
        return self._failure or "not_a_notification"

    def _sm_failure(self, engine: Any, execpoint: str, variables: dict[str, Any], ctx: Any) -> None:
        info = variables.get("statusInformation") or {}
        indication = info.get("errorIndication")
        reason = "v3_rejected"
        for cls, name in _REASONS:
            if isinstance(indication, cls):
                reason = name
                break
        if isinstance(indication, errind.UnknownSecurityName):
            user = bytes(info.get("msgUserName", b"") or b"")
            reason = "unknown_engine_id" if user in self.user_names else "unknown_user"
        header = self._header
        if reason == "unknown_engine_id" and header is not None and not header.engine_id:
            reason = "engine_discovery"  # RFC 3414 §4: a probe answered by a Report
        self._failure = reason

    def _timely(self) -> bool:
        """RFC 3414 §3.2.7b for notifications from an authoritative sender (traps).

        pysnmp overwrites its notion of a sender's clock with every authenticated message, so
        it never rejects a replayed trap; this keeps the notion the RFC describes, updated only
        by newer authenticated messages (we run after authentication succeeded).
        """
        header = self._header
        if header is None or header.engine_id == self.engine_id:
            return True  # informs: pysnmp checks against our own engine's clock
        engine, boots, etime = header.engine_id, header.boots, header.time
        now = self.clock()
        known = self._timeline.get(engine)
        if known is not None:
            kboots, ktime, seen = known
            estimate = ktime + (now - seen)
            if boots < kboots or (boots == kboots and etime < estimate - TIME_WINDOW):
                return False
            if boots == kboots and etime <= ktime:
                return True
        if len(self._timeline) >= MAX_TIMELINES:
            self._timeline.clear()
        self._timeline[engine] = (boots, etime, now)
        return True

    def _callback(
        self,
        engine: Any,
        state_reference: Any,
        context_engine_id: Any,
        context_name: Any,
        var_binds: Any,
        cb_ctx: Any,
    ) -> None:
        ctx = engine.observer.get_execution_context("rfc3412.receiveMessage:request")
        peer = tuple(ctx["transportAddress"])[:2]
        pdu = ctx.get("pdu")
        name = str(ctx.get("securityName", ""))
        level = int(ctx.get("securityLevel", 0))
        if level < self.min_level.get(name, 1):  # feed() already refused these; belt and braces
            self._failure = "unsupported_security_level"
            return
        if level >= 2 and not self._timely():
            self._failure = "not_in_time_window"
            return
        info = {
            "security_name": name,
            "security_level": SECURITY_LEVELS.get(level, ""),
            "context_engine_id": bytes(context_engine_id.asOctets()).hex(),
            "inform": pdu is not None and pdu.tagSet == v2c.InformRequestPDU.tagSet,
        }
        self._delivered = True
        self.on_notification([plain_varbind(n, v) for n, v in var_binds], peer, info)

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.receiver.close(self.engine)
        # Detach our socket's transport first: the dispatcher would close it, and we own it.
        self.transport.transport = None
        with contextlib.suppress(Exception):
            self.engine.close_dispatcher()
