"""Configuration: one TOML file decoded into frozen dataclasses, fully validated before start.

The loader is driven by the dataclasses' type hints, so adding a section or a key is declaring a
field; unknown keys, wrong types and bad values all become errors naming the TOML key path
(``sources.syslog[0].listen: not host:port``). Per-field value checks live in field metadata
(``check``), cross-field checks in a class's ``validate`` method.

Paths: ``appliance.data_dir`` is relative to the working directory (the systemd unit gives an
absolute one); file paths elsewhere (certificates, rule folders) are relative to the config
file's folder, resolved by :meth:`AppConfig.path`.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import re
import sys
import tomllib
import types
import typing
from contextvars import ContextVar
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, cast

from netaddr import AddrFormatError, IPNetwork

EXAMPLE_CONFIG = Path(__file__).with_name("example-config.toml")


class ConfigError(Exception):
    """The configuration is invalid; ``errors`` lists every problem with its key path."""

    def __init__(self, errors: list[str]) -> None:
        super().__init__("; ".join(errors))
        self.errors = errors


# ---------------------------------------------------------------- value checks (return error text)


def parse_hostport(value: str) -> tuple[str, int]:
    """``host:port`` or ``[v6]:port`` to a (host, port) pair; ``ValueError`` if it is neither."""
    if value.startswith("["):
        host, sep, port = value[1:].partition("]:")
        if not sep:
            raise ValueError(value)
        ipaddress.IPv6Address(host)
    else:
        host, sep, port = value.rpartition(":")
        if not sep or not host or ":" in host:
            raise ValueError(value)
    if not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(value)
    return host, int(port)


def check_hostport(value: str) -> str | None:
    try:
        parse_hostport(value)
    except ValueError:
        return "not host:port (IPv6 as [::]:port)"
    return None


def check_networks(value: list[str]) -> str | None:
    for item in value:
        try:
            IPNetwork(item)
        except (AddrFormatError, ValueError, TypeError):
            return f"{item!r} is not an IP network (CIDR)"
    return None


def positive(value: float) -> str | None:
    return None if value > 0 else "must be > 0"


def non_negative(value: float) -> str | None:
    return None if value >= 0 else "must be >= 0"


def sensor_name(value: str) -> str | None:
    if not value or len(value) > 64 or not all(c.isalnum() or c in "-_." for c in value):
        return "1-64 characters of letters, digits, '-', '_' or '.'"
    return None


def check(fn: Any, **kw: Any) -> dict[str, Any]:
    """Field metadata carrying a value check: ``field(default=..., metadata=check(positive))``."""
    return {"check": fn, **kw}


# ---------------------------------------------------------------------------------------- sections

PRIVATE_AND_LOOPBACK = [
    "127.0.0.0/8",
    "10.0.0.0/8",
    "172.16.0.0/12",
    "192.168.0.0/16",
    "169.254.0.0/16",
    "::1/128",
    "fc00::/7",
    "fe80::/10",
]


@dataclass(frozen=True, slots=True)
class ApplianceSection:
    data_dir: str = "var"
    sensor_id: str = field(default="edge-01", metadata=check(sensor_name))
    tenant: str = ""
    site: str = ""
    loop: Literal["auto", "uvloop", "asyncio"] = "auto"
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    shutdown_timeout: float = field(default=15.0, metadata=check(positive))
    watchdog: bool = True
    # A config with no source receives nothing; that is a mistake (an empty or truncated
    # file) unless it says so here, e.g. for a box that only serves its stored data.
    allow_empty: bool = False


def is_loopback_host(host: str) -> bool:
    """``localhost`` or a loopback address; a wildcard (0.0.0.0, ::) or any other name is not."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@dataclass(frozen=True, slots=True)
class ApiSection:
    listen: str = field(default="127.0.0.1:8080", metadata=check(check_hostport))
    # Legacy single token (admin scope): inline, from token_file, else data_dir/api-token.
    token: str = field(default="", repr=False)
    token_file: str = ""
    # Scoped, hashed tokens managed with `appliance tokens` (default data_dir/api-tokens.json);
    # re-read when the file changes, so rotation needs no restart.
    tokens_file: str = ""
    # TLS: unset = on when listen is not loopback or a certificate is configured. Without
    # tls_cert/tls_key a self-signed certificate is generated into data_dir.
    tls: bool | None = None
    tls_cert: str = ""
    tls_key: str = ""
    # A non-loopback listen without TLS sends bearer tokens in clear: only when asked.
    allow_plaintext: bool = False
    max_page: int = field(default=1000, metadata=check(positive))
    # Bounds on what the API holds at once (see appliance.api.limits); beyond them: 503.
    max_concurrent_requests: int = field(default=32, metadata=check(positive))
    max_response_bytes_in_flight: int = field(default=64 * 1024 * 1024, metadata=check(positive))

    @property
    def loopback(self) -> bool:
        try:
            return is_loopback_host(parse_hostport(self.listen)[0])
        except ValueError:
            return False

    @property
    def tls_enabled(self) -> bool:
        if self.tls is not None:
            return self.tls
        return bool(self.tls_cert) or not self.loopback

    def validate(self) -> list[str]:
        errors = []
        if bool(self.tls_cert) != bool(self.tls_key):
            errors.append("tls_cert: tls_cert and tls_key go together")
        if self.tls is False and self.tls_cert:
            errors.append("tls_cert: set, but tls = false")
        if not self.tls_enabled and not self.loopback and not self.allow_plaintext:
            errors.append(
                f"tls: false on a non-loopback listen ({self.listen}) would send bearer tokens"
                " in clear; enable TLS, or set api.allow_plaintext = true to accept that"
            )
        return errors


@dataclass(frozen=True, slots=True)
class PipelineSection:
    queue_size: int = field(default=200_000, metadata=check(positive))
    batch_size: int = field(default=5_000, metadata=check(positive))
    flush_interval: float = field(default=0.2, metadata=check(positive))


@dataclass(frozen=True, slots=True)
class StorageSection:
    retention_days: float = field(default=7.0, metadata=check(positive))
    max_db_bytes: int = field(default=2 * 1024**3, metadata=check(positive))
    retention_interval: float = field(default=60.0, metadata=check(positive))
    raw_max_bytes: int = field(default=8192, metadata=check(non_negative))
    # Space held in data_dir/reserve.bin and given back when the disk fills, so the
    # appliance can still delete old events and checkpoint the WAL (0 disables).
    reserve_bytes: int = field(default=16 * 1024 * 1024, metadata=check(non_negative))


def check_timezone(value: str) -> str | None:
    if not value:
        return None
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError):
        return "not an IANA time zone name (e.g. Europe/Paris, UTC)"
    return None


def check_fingerprints_or_names(value: list[str]) -> str | None:
    for item in value:
        if not item.strip():
            return "empty entry"
    return None


@dataclass(frozen=True, slots=True)
class SyslogSource:
    protocol: Literal["udp", "tcp", "tls"] = "udp"
    listen: str = field(default="0.0.0.0:5514", metadata=check(check_hostport))
    name: str = ""
    allowed: list[str] = field(
        default_factory=lambda: list(PRIVATE_AND_LOOPBACK), metadata=check(check_networks)
    )
    rcvbuf_bytes: int = field(default=8 * 1024 * 1024, metadata=check(positive))
    max_message_bytes: int = field(default=8192, metadata=check(positive))
    # UDP: decode worker processes sharing the port (SO_REUSEPORT); 0 = decode in-process,
    # which measured faster on 2 cores (workers cost ~1.6x the CPU per message in all).
    workers: int = field(default=0, metadata=check(non_negative))
    # UDP: datagrams a reader thread holds in memory while the event loop is busy (bursts
    # beyond the kernel's receive buffer), in bytes of payload.
    backlog_bytes: int = field(default=64 * 1024 * 1024, metadata=check(positive))
    # Per sender IP: a token bucket of `rate_limit` msg/s with `rate_burst` tokens (0 = off).
    rate_limit: float = field(default=0.0, metadata=check(non_negative))
    rate_burst: int = field(default=20_000, metadata=check(positive))
    # Sender profiles (and their buckets) tracked; past it they are reset, never grown.
    max_senders: int = field(default=65_536, metadata=check(positive))
    # TCP and TLS (RFC 6587 framing, RFC 5425).
    max_frame_bytes: int = field(default=65_536, metadata=check(positive))
    max_count_digits: int = field(default=8, metadata=check(positive))
    max_connections: int = field(default=1000, metadata=check(positive))
    max_connections_per_ip: int = field(default=50, metadata=check(positive))
    idle_timeout: float = field(default=300.0, metadata=check(positive))
    frame_timeout: float = field(default=30.0, metadata=check(positive))
    tls_cert: str = ""
    tls_key: str = ""
    tls_client_ca: str = ""
    tls_client_allowed: list[str] = field(
        default_factory=list, metadata=check(check_fingerprints_or_names)
    )
    tls_min_version: Literal["1.2", "1.3"] = "1.2"
    tls_handshake_timeout: float = field(default=10.0, metadata=check(positive))

    def validate(self) -> list[str]:
        errors = []
        if self.protocol == "tls" and not (self.tls_cert and self.tls_key):
            errors.append('tls_cert: required with protocol = "tls" (and tls_key)')
        if self.protocol != "tls" and (self.tls_cert or self.tls_client_ca):
            errors.append('tls_cert: only used with protocol = "tls"')
        if self.tls_client_allowed and not self.tls_client_ca:
            errors.append("tls_client_allowed: needs tls_client_ca (client certificates)")
        if self.max_connections_per_ip > self.max_connections:
            errors.append("max_connections_per_ip: larger than max_connections")
        return errors

    @property
    def label(self) -> str:
        return self.name or f"syslog-{self.protocol}"


SnmpAuth = Literal["none", "md5", "sha", "sha224", "sha256", "sha384", "sha512"]
SnmpPriv = Literal["none", "des", "3des", "aes", "aes192", "aes256"]
SnmpSeverity = Literal[
    "emergency", "alert", "critical", "error", "warning", "notice", "info", "debug"
]


def parse_engine_id(value: str) -> bytes:
    """``0x8000...`` or plain hex to bytes; RFC 3411 engine IDs are 5 to 32 octets."""
    text = value[2:] if value.lower().startswith("0x") else value
    raw = bytes.fromhex(text.replace(":", ""))
    if not 5 <= len(raw) <= 32:
        raise ValueError(value)
    return raw


def check_engine_id(value: str) -> str | None:
    if not value:
        return None
    try:
        parse_engine_id(value)
    except ValueError:
        return "not an engine ID (hex, 5 to 32 octets, e.g. 0x8000000001020304)"
    return None


@dataclass(frozen=True, slots=True)
class SnmpUser:
    """An SNMPv3 USM user. For traps the key is (name, the sending device's engine_id); an
    empty engine_id means this appliance's own engine (what informs are sent to)."""

    name: str = ""
    engine_id: str = field(default="", metadata=check(check_engine_id))
    auth_protocol: SnmpAuth = "none"
    auth_key: str = ""
    priv_protocol: SnmpPriv = "none"
    priv_key: str = ""

    def validate(self) -> list[str]:
        errors = []
        if not self.name or len(self.name) > 32:
            errors.append("name: required, 1-32 characters")
        if self.auth_protocol != "none" and len(self.auth_key) < 8:
            errors.append("auth_key: at least 8 characters (RFC 3414)")
        if self.priv_protocol != "none":
            if self.auth_protocol == "none":
                errors.append("priv_protocol: privacy needs an auth_protocol")
            if len(self.priv_key) < 8:
                errors.append("priv_key: at least 8 characters (RFC 3414)")
        return errors


@dataclass(frozen=True, slots=True)
class SnmpCommunityRule:
    """Communities accepted only from these sender networks."""

    networks: list[str] = field(default_factory=list, metadata=check(check_networks))
    communities: list[str] = field(default_factory=list)

    def validate(self) -> list[str]:
        if not self.networks or not self.communities:
            return ["networks and communities: both required"]
        return []


@dataclass(frozen=True, slots=True)
class SnmpSource:
    listen: str = field(default="0.0.0.0:1162", metadata=check(check_hostport))
    name: str = ""
    communities: list[str] = field(default_factory=list)
    community_rules: list[SnmpCommunityRule] = field(default_factory=list)
    users: list[SnmpUser] = field(default_factory=list)
    allowed: list[str] = field(
        default_factory=lambda: list(PRIVATE_AND_LOOPBACK), metadata=check(check_networks)
    )
    snmpv3_only: bool = False
    engine_id: str = field(default="", metadata=check(check_engine_id))
    rate_limit: float = field(default=10_000.0, metadata=check(non_negative))
    rate_burst: int = field(default=20_000, metadata=check(positive))
    max_senders: int = field(default=10_000, metadata=check(positive))
    max_message_bytes: int = field(default=16_384, metadata=check(positive))
    max_varbinds: int = field(default=256, metadata=check(positive))
    rcvbuf_bytes: int = field(default=8 * 1024 * 1024, metadata=check(positive))
    # Datagrams held in memory while the pipeline is busy (trap storms beyond the kernel
    # buffer), bytes of payload; the same reader and key as syslog/UDP and NetFlow.
    backlog_bytes: int = field(default=64 * 1024 * 1024, metadata=check(positive))
    mib_dir: str = ""
    severity: dict[str, SnmpSeverity] = field(default_factory=dict)
    default_severity: SnmpSeverity = "info"

    def validate(self) -> list[str]:
        errors = []
        seen: set[tuple[str, bytes]] = set()
        for i, user in enumerate(self.users):
            try:
                key = (user.name, parse_engine_id(user.engine_id) if user.engine_id else b"")
            except ValueError:
                continue
            if key in seen:
                errors.append(f"users[{i}]: duplicate user {user.name!r} for this engine_id")
            seen.add(key)
        if self.snmpv3_only and not self.users:
            errors.append("snmpv3_only: needs at least one entry in users (else nothing passes)")
        if self.max_message_bytes > 65507:
            errors.append("max_message_bytes: at most 65507 (the largest UDP payload)")
        return errors

    @property
    def label(self) -> str:
        return self.name or "snmp"


@dataclass(frozen=True, slots=True)
class SyslogSender:
    """What the appliance knows about a sender that its messages do not say."""

    networks: list[str] = field(default_factory=list, metadata=check(check_networks))
    site: str = ""
    device_name: str = ""
    vendor: str = ""  # a decoder name (see appliance.protocols.syslog.vendors): no guessing
    timezone: str = field(default="", metadata=check(check_timezone))
    tags: list[str] = field(default_factory=list)

    def validate(self) -> list[str]:
        errors = []
        if not self.networks:
            errors.append("networks: required (the sender's addresses, CIDR)")
        if self.vendor:
            names = _decoder_names.get()
            if names is None:
                from appliance.protocols.syslog.vendors import REGISTRY

                names = frozenset(REGISTRY.by_name)
            if self.vendor not in names:
                known = ", ".join(sorted(names))
                errors.append(f"vendor: {self.vendor!r} is not a decoder ({known})")
        return errors


@dataclass(frozen=True, slots=True)
class NetflowSource:
    """One UDP listener for NetFlow v5, v9 and IPFIX (version sniffed per datagram).

    ``allowed``, ``rate_limit``, ``rate_burst`` and ``max_senders`` follow the datagram
    policy every UDP source shares (appliance.sources.policy): private and loopback senders by
    default. The ``max_*``, ``template_lifetime`` and ``pending_*`` keys bound the decoder's
    state.
    """

    listen: str = field(default="0.0.0.0:2055", metadata=check(check_hostport))
    name: str = ""
    allowed: list[str] = field(
        default_factory=lambda: list(PRIVATE_AND_LOOPBACK), metadata=check(check_networks)
    )
    # Per exporter address: a token bucket of `rate_limit` datagrams/s (0 = off).
    rate_limit: float = field(default=0.0, metadata=check(non_negative))
    rate_burst: int = field(default=20_000, metadata=check(positive))
    max_senders: int = field(default=10_000, metadata=check(positive))
    rcvbuf_bytes: int = field(default=32 * 1024 * 1024, metadata=check(positive))
    max_exporters: int = field(default=1000, metadata=check(positive))
    max_domains_per_exporter: int = field(default=64, metadata=check(positive))
    max_templates_per_exporter: int = field(default=256, metadata=check(positive))
    max_templates: int = field(default=10_000, metadata=check(positive))
    max_fields_per_template: int = field(default=256, metadata=check(positive))
    max_field_length: int = field(default=128, metadata=check(positive))
    template_lifetime: float = field(default=1800.0, metadata=check(positive))
    pending_max_sets: int = field(default=256, metadata=check(non_negative))
    pending_max_age: float = field(default=10.0, metadata=check(positive))
    # Datagrams held in memory while decoding lags (bursts beyond the kernel buffer), bytes.
    backlog_bytes: int = field(default=64 * 1024 * 1024, metadata=check(positive))

    @property
    def label(self) -> str:
        return self.name or "netflow"


@dataclass(frozen=True, slots=True)
class SourcesSection:
    syslog: list[SyslogSource] = field(default_factory=list)
    snmp: list[SnmpSource] = field(default_factory=list)
    syslog_senders: list[SyslogSender] = field(default_factory=list)
    netflow: list[NetflowSource] = field(default_factory=list)


UPSTREAM_TYPES = ("webhook", "splunk_hec", "elastic_bulk", "otlp_logs")


def check_https_url(value: str) -> str | None:
    from urllib.parse import urlsplit

    try:
        parts = urlsplit(value)
        # urlsplit raises for an unbalanced "[" or "]"; hostname and port raise for a bad
        # bracketed address or port, which would otherwise fail at the first delivery.
        hostname, _port = parts.hostname, parts.port
    except ValueError:
        return "must be an https:// URL (TLS verification is always on)"
    if parts.scheme != "https" or not hostname:
        return "must be an https:// URL (TLS verification is always on)"
    if "@" in parts.netloc:
        return "must not carry credentials (user:password@): use token_file or hmac_secret_file"
    return None


@dataclass(frozen=True, slots=True)
class UpstreamSection:
    """One ``[[upstream]]``: where incidents go, how to authenticate, how much to spool.

    Secrets (``token``, ``hmac_secret``) are excluded from ``repr`` so a logged config never
    shows them; prefer ``token_file``/``token_env`` over inline values.
    """

    name: str = field(default="", metadata=check(sensor_name))
    type: Literal["webhook", "splunk_hec", "elastic_bulk", "otlp_logs"] = "webhook"
    url: str = field(default="", metadata=check(check_https_url))
    enabled: bool = True
    ca_file: str = ""
    client_cert: str = ""
    client_key: str = ""
    token: str = field(default="", repr=False)
    token_file: str = ""
    token_env: str = ""
    hmac_secret: str = field(default="", repr=False)
    hmac_secret_file: str = ""
    hmac_secret_env: str = ""
    connect_timeout: float = field(default=10.0, metadata=check(positive))
    request_timeout: float = field(default=30.0, metadata=check(positive))
    batch_size: int = field(default=100, metadata=check(positive))
    batch_max_bytes: int = field(default=1024 * 1024, metadata=check(positive))
    spool_max_bytes: int = field(default=256 * 1024 * 1024, metadata=check(positive))
    spool_max_age: float = field(default=7 * 86400.0, metadata=check(positive))
    backoff_base: float = field(default=1.0, metadata=check(positive))
    backoff_cap: float = field(default=300.0, metadata=check(positive))
    retry_after_max: float = field(default=3600.0, metadata=check(positive))
    max_rejections: int = field(default=3, metadata=check(positive))
    poll_interval: float = field(default=1.0, metadata=check(positive))
    # splunk_hec
    hec_ack: bool = False
    hec_ack_timeout: float = field(default=120.0, metadata=check(positive))
    hec_ack_poll_interval: float = field(default=2.0, metadata=check(positive))
    hec_index: str = ""
    hec_sourcetype: str = "sem:incident"
    hec_source: str = "sem-appliance"
    # elastic_bulk
    index: str = "sem-incidents"
    # otlp_logs
    service_name: str = "sem-appliance"
    # optional raw-event stream (every stored event), its own queue and limits
    events: bool = False
    events_batch_size: int = field(default=500, metadata=check(positive))
    events_spool_max_bytes: int = field(default=64 * 1024 * 1024, metadata=check(positive))
    events_spool_max_age: float = field(default=86400.0, metadata=check(positive))
    events_index: str = "sem-events"
    hec_event_sourcetype: str = "sem:event"

    def validate(self) -> list[str]:
        errors = []
        if not self.name:
            errors.append("name: required")
        if not self.url:
            errors.append("url: required")
        if bool(self.client_cert) != bool(self.client_key):
            errors.append("client_cert: client_cert and client_key go together")
        if sum(map(bool, (self.token, self.token_file, self.token_env))) > 1:
            errors.append("token: give one of token, token_file, token_env")
        if sum(map(bool, (self.hmac_secret, self.hmac_secret_file, self.hmac_secret_env))) > 1:
            errors.append("hmac_secret: give one of hmac_secret, hmac_secret_file, hmac_secret_env")
        if self.hmac_secret and not self.hmac_secret.startswith("whsec_"):
            errors.append("hmac_secret: must start with whsec_ (Standard Webhooks secret)")
        if self.type == "splunk_hec" and not (self.token or self.token_file or self.token_env):
            errors.append("token: splunk_hec needs a HEC token (token, token_file or token_env)")
        if self.backoff_cap < self.backoff_base:
            errors.append("backoff_cap: must be >= backoff_base")
        return errors


@dataclass(frozen=True, slots=True)
class FlowsSection:
    """The flow path: every decoded flow is offered to the rules and counted in the per-minute
    rollups; raw flow rows are kept only up to ``raw_max_per_second`` (the rest counted) and
    for ``raw_retention_hours``, rollups for ``rollup_retention_days``."""

    queue_size: int = field(default=100_000, metadata=check(positive))  # ~1.4 KB per flow
    batch_size: int = field(default=20_000, metadata=check(positive))
    flush_interval: float = field(default=0.2, metadata=check(positive))
    raw_max_per_second: int = field(default=5_000, metadata=check(non_negative))
    raw_retention_hours: float = field(default=24.0, metadata=check(positive))
    raw_max_rows: int = field(default=2_000_000, metadata=check(positive))
    rollup_top_k: int = field(default=100, metadata=check(positive))
    rollup_max_keys: int = field(default=20_000, metadata=check(positive))
    rollup_retention_days: float = field(default=30.0, metadata=check(positive))
    state_save_interval: float = field(default=10.0, metadata=check(positive))

    def validate(self) -> list[str]:
        if self.rollup_max_keys < 2 * self.rollup_top_k:
            return ["rollup_max_keys: must be at least twice rollup_top_k"]
        return []


@dataclass(frozen=True, slots=True)
class RulesSection:
    paths: list[str] = field(default_factory=list)
    builtin: bool = True
    allowed_lateness: float = field(default=60.0, metadata=check(non_negative))
    max_groups_per_rule: int = field(default=10_000, metadata=check(positive))
    max_window_events: int = field(default=10_000, metadata=check(positive))
    max_regex_length: int = field(default=1000, metadata=check(positive))
    snapshot_interval: float = field(default=60.0, metadata=check(positive))
    evidence_events: int = field(default=50, metadata=check(positive))
    evidence_samples: int = field(default=10, metadata=check(positive))
    incident_retention_days: float = field(default=90.0, metadata=check(positive))


@dataclass(frozen=True, slots=True)
class DecodersSection:
    """Site decoder files (``*.toml``, docs/decoders.md): files or folders, read at start and
    on SIGHUP; a bad file is logged and skipped, never stops the others."""

    paths: list[str] = field(default_factory=list)


# ------------------------------------------------------------- notify, respond, analysis, console
# One section each; the feature's own module reads it (appliance.notify, appliance.respond,
# appliance.analysis, appliance.console). Secrets are kept out of ``repr``.


NotifyChannelType = Literal[
    "email",
    "sms_twilio",
    "sms_http",
    "sms_modem",
    "slack",
    "teams",
    "mattermost",
    "telegram",
    "webhook",
]
NOTIFY_CHANNEL_TYPES: tuple[str, ...] = typing.get_args(NotifyChannelType)
# Secrets a channel may take, each also as ``<name>_file`` (first line) and ``<name>_env``.
NOTIFY_SECRETS = ("password", "auth_token", "token", "bot_token", "hmac_secret", "pin", "url")
# Which keys each type needs (one of ``x``, ``x_file``, ``x_env`` for a secret).
_NOTIFY_REQUIRED: dict[str, tuple[str, ...]] = {
    "email": ("host", "from", "to"),
    "sms_twilio": ("account_sid", "auth_token", "from", "to"),
    "sms_http": ("url", "to"),  # and body, unless method = "GET"
    "sms_modem": ("device", "to"),
    "slack": ("url",),
    "teams": ("url",),
    "mattermost": ("url",),
    "telegram": ("bot_token", "to"),
    "webhook": ("url",),
}


def check_url_template(value: str) -> str | None:
    """An http(s) URL without credentials; ``{placeholders}`` are allowed (sms_http)."""
    from urllib.parse import urlsplit

    if not value:
        return None
    try:
        parts = urlsplit(value)
        parts.port  # noqa: B018 (raises for a bad port)
    except ValueError:
        return "not a valid URL"
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return "must be an http:// or https:// URL"
    if "@" in parts.netloc:
        return "must not carry credentials (user:password@): use the channel's secret keys"
    return None


@dataclass(frozen=True, slots=True)
class NotifyChannel:
    """One ``[[notify.channels]]``: where a notification can go (appliance.notify.channels).

    One flat table for every type; ``validate`` names the keys a type needs and refuses the
    ones that contradict. Secrets (``password``, ``auth_token``, ``token``, ``bot_token``,
    ``hmac_secret``, ``pin`` and ``url``, which for chat webhooks is itself the credential)
    are kept out of ``repr`` and may come from ``<key>_file`` or ``<key>_env`` instead.
    """

    name: str = field(default="", metadata=check(sensor_name))
    type: NotifyChannelType = "webhook"
    # Recipients: e-mail addresses, phone numbers (E.164), Telegram chat ids.
    to: list[str] = field(default_factory=list)
    from_: str = field(default="", metadata={"key": "from"})
    # Seconds for one delivery attempt (connect, TLS, request, answer).
    timeout: float = field(default=30.0, metadata=check(positive))
    # Characters of text the channel sends at most (0: the transport's own limit).
    max_length: int = field(default=0, metadata=check(non_negative))
    # TLS: a CA bundle replacing the system store (private PKI); verification is always on.
    ca_file: str = ""
    # email
    host: str = ""
    port: int = field(default=0, metadata=check(non_negative))  # 0: 25, 587 or 465 by tls
    tls: Literal["none", "starttls", "implicit"] = "starttls"
    username: str = ""
    password: str = field(default="", repr=False)
    password_file: str = ""
    password_env: str = ""
    # HTTP channels: the endpoint (sms_twilio: the API base; chat: the incoming webhook).
    url: str = field(default="", repr=False, metadata=check(check_url_template))
    url_file: str = ""
    url_env: str = ""
    # Plain http:// is refused except to loopback unless this is set (a LAN gateway).
    allow_http: bool = False
    # sms_twilio
    account_sid: str = ""
    auth_token: str = field(default="", repr=False)
    auth_token_file: str = ""
    auth_token_env: str = ""
    # sms_http: request template and success test
    method: Literal["POST", "PUT", "GET"] = "POST"
    headers: dict[str, str] = field(default_factory=dict, repr=False)
    content_type: Literal["form", "json", "text"] = "form"
    body: str = ""
    token: str = field(default="", repr=False)  # the {token} placeholder in headers/url/body
    token_file: str = ""
    token_env: str = ""
    success_status: list[int] = field(default_factory=list)  # empty: any 2xx
    success_contains: str = ""
    success_field: str = ""  # dotted path into a JSON answer
    success_value: str = ""  # the field's value as text (empty: any truthy value)
    # sms_modem
    device: str = ""
    baud: int = field(default=115200, metadata=check(positive))
    pin: str = field(default="", repr=False)
    pin_file: str = ""
    pin_env: str = ""
    max_segments: int = field(default=3, metadata=check(positive))
    command_timeout: float = field(default=10.0, metadata=check(positive))
    reply_poll_interval: float = field(default=30.0, metadata=check(non_negative))  # 0: off
    # telegram
    api_url: str = field(default="https://api.telegram.org", metadata=check(check_url_template))
    bot_token: str = field(default="", repr=False)
    bot_token_file: str = ""
    bot_token_env: str = ""
    # webhook (Standard Webhooks signature, like [[upstream]] type "webhook")
    hmac_secret: str = field(default="", repr=False)
    hmac_secret_file: str = ""
    hmac_secret_env: str = ""

    def check_plain_http(self, url: str) -> str | None:
        """Plain http:// is for loopback (a local relay) unless ``allow_http`` says otherwise."""
        from urllib.parse import urlsplit

        parts = urlsplit(url)
        if parts.scheme != "http" or self.allow_http or is_loopback_host(parts.hostname or ""):
            return None
        return "plain http:// only to loopback; use https:// or allow_http = true"

    def has(self, key: str) -> bool:
        """Whether ``key`` is set; for a secret, inline or through its ``_file``/``_env``."""
        attr = "from_" if key == "from" else key
        if key in NOTIFY_SECRETS:
            return any(getattr(self, f"{key}{sfx}") for sfx in ("", "_file", "_env"))
        return bool(getattr(self, attr))

    def validate(self) -> list[str]:
        errors = []
        if not self.name:
            errors.append("name: required")
        for key in _NOTIFY_REQUIRED[self.type]:
            if not self.has(key):
                errors.append(f"{key}: required for type {self.type!r}")
        for key in NOTIFY_SECRETS:
            given = [f"{key}{s}" for s in ("", "_file", "_env") if getattr(self, f"{key}{s}")]
            if len(given) > 1:
                errors.append(f"{key}: give one of {key}, {key}_file, {key}_env")
        if self.type == "email":
            if bool(self.username) != self.has("password"):
                errors.append("username: username and password go together")
            if self.has("password") and self.tls == "none":
                errors.append("password: SMTP AUTH needs tls = 'starttls' or 'implicit'")
            for key, addr in [("from", self.from_), *(("to", a) for a in self.to)]:
                if addr and (any(c in addr for c in '\r\n,;<>" ') or "@" not in addr):
                    errors.append(f"{key}: {addr!r} is not a plain e-mail address (local@domain)")
        if self.type in ("sms_twilio", "sms_modem") and self.to:
            errors.extend(
                f"to: {n!r} is not an E.164 number (+ and 8-15 digits)"
                for n in self.to
                if not (n.startswith("+") and n[1:].isdigit() and 8 <= len(n) - 1 <= 15)
            )
        if self.type == "telegram":
            errors.extend(
                f"to: {c!r} is not a Telegram chat id (a number or @channel)"
                for c in self.to
                if not (c.lstrip("-").isdigit() or (c.startswith("@") and len(c) > 1))
            )
        if self.hmac_secret and not self.hmac_secret.startswith("whsec_"):
            errors.append("hmac_secret: must start with whsec_ (Standard Webhooks secret)")
        urls = [("url", self.url)]
        if self.type == "telegram":
            urls.append(("api_url", self.api_url))
        errors.extend(f"{key}: {e}" for key, url in urls if (e := self.check_plain_http(url)))
        if self.type == "sms_http":
            if self.method == "GET" and self.body:
                errors.append("body: a GET request has no body; put placeholders in url")
            if self.method != "GET" and not self.body:
                errors.append(f"body: required for method {self.method!r}")
            import re

            templates = self.body + self.url + "".join(self.headers.values())
            names = set(re.findall(r"\{([A-Za-z_][A-Za-z0-9_]*)\}", templates))
            unknown = names - {"to", "text", "subject", "severity", "token", "from"}
            if unknown:
                errors.append(
                    f"body: unknown placeholder(s) {sorted(unknown)}; use to, text, subject,"
                    " severity, from, token"
                )
            if any(s < 100 or s > 599 for s in self.success_status):
                errors.append("success_status: HTTP status codes are 100-599")
        return errors


SEVERITY_ORDER = ("informational", "low", "medium", "high", "critical")
Severity = Literal["informational", "low", "medium", "high", "critical"]
WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


def check_time_range(value: str) -> str | None:
    """``HH:MM-HH:MM`` (a range past midnight, ``22:00-07:00``, is allowed); empty = always."""
    if not value:
        return None
    try:
        parse_time_range(value)
    except ValueError:
        return "not HH:MM-HH:MM (24-hour clock, e.g. 22:00-07:00)"
    return None


def parse_time_range(value: str) -> tuple[int, int]:
    """Minutes after midnight of a ``HH:MM-HH:MM`` range's start and end."""
    start, sep, end = value.partition("-")
    if not sep:
        raise ValueError(value)
    out = []
    for part in (start, end):
        hh, colon, mm = part.strip().partition(":")
        if not colon or not hh.isdigit() or not mm.isdigit() or len(mm) != 2:
            raise ValueError(value)
        h, m = int(hh), int(mm)
        if not (0 <= h <= 24 and 0 <= m < 60) or (h == 24 and m):
            raise ValueError(value)
        out.append(h * 60 + m)
    return out[0], out[1]


def check_weekdays(value: list[str]) -> str | None:
    for day in value:
        if day not in WEEKDAYS:
            return f"{day!r} is not one of {', '.join(WEEKDAYS)}"
    return None


def check_group_by(value: list[str]) -> str | None:
    for name in value:
        if not name or len(name) > 64:
            return "field names of 1-64 characters"
    return None


@dataclass(frozen=True, slots=True)
class NotifyQuietHours:
    """Hours when only incidents at or above ``min_severity`` go out at once; the rest are
    held until the hours end (``action = "hold"``, sent then as one digest) or dropped
    (``"drop"``, counted). Read in ``[notify] timezone``."""

    hours: str = field(default="", metadata=check(check_time_range))
    days: list[str] = field(default_factory=list, metadata=check(check_weekdays))
    min_severity: Severity = "critical"
    action: Literal["hold", "drop"] = "hold"


@dataclass(frozen=True, slots=True)
class NotifyRoute:
    """One ``[[notify.routes]]``: which incidents go to which channels (appliance.notify).

    Routes are tried in order; the first that matches takes the incident and the rest are
    skipped unless it says ``continue = true`` (Alertmanager's rule). Every matcher left
    empty matches everything.
    """

    channels: list[str] = field(default_factory=list)
    min_severity: Severity = "low"
    name: str = ""
    rules: list[str] = field(default_factory=list)  # rule id or title globs ("SSH*")
    tags: list[str] = field(default_factory=list)  # any of these rule tags (globs)
    source_networks: list[str] = field(default_factory=list, metadata=check(check_networks))
    sites: list[str] = field(default_factory=list)  # appliance.site values (globs)
    hours: str = field(default="", metadata=check(check_time_range))  # active HH:MM-HH:MM
    days: list[str] = field(default_factory=list, metadata=check(check_weekdays))
    continue_: bool = field(default=False, metadata={"key": "continue"})
    group_by: list[str] = field(default_factory=list, metadata=check(check_group_by))
    group_wait: float = field(default=0.0, metadata=check(non_negative))
    group_interval: float = field(default=300.0, metadata=check(positive))
    repeat_interval: float = field(default=0.0, metadata=check(non_negative))  # 0 = never
    digest_interval: float = field(default=0.0, metadata=check(non_negative))  # 0 = no digest
    digest_below: Severity = "high"  # severities below this go to the digest
    quiet_hours: NotifyQuietHours | None = None
    escalation: str = ""  # a [[notify.escalations]] name

    @property
    def label(self) -> str:
        return self.name or ",".join(self.channels)


@dataclass(frozen=True, slots=True)
class NotifyEscalationLevel:
    after: float = field(default=900.0, metadata=check(positive))  # seconds unacknowledged
    channels: list[str] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class NotifyEscalation:
    """One ``[[notify.escalations]]``: while an incident its route matched stays open (not
    acknowledged), each level in turn, ``after`` seconds after the previous one, notifies its
    channels. Acknowledging or resolving the incident stops it."""

    name: str = field(default="", metadata=check(sensor_name))
    min_severity: Severity = "high"
    levels: list[NotifyEscalationLevel] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class NotifyRateLimit:
    """At most ``max_messages`` per ``per`` seconds on ``channel``: the rest wait their turn in
    the outbox (counted in ``appliance_notify_rate_limited_total``). Or, with ``recipient``
    (an address, number or chat id as written in channels' ``to``), at most that many
    messages to that recipient across every channel: past it the recipient is left out of a
    message (counted in ``appliance_notify_recipient_limited_total``) and the others still get
    it, so one person's phone is not flooded while the team's mail keeps every message."""

    channel: str = ""
    recipient: str = ""
    max_messages: int = field(default=10, metadata=check(positive))
    per: float = field(default=3600.0, metadata=check(positive))


@dataclass(frozen=True, slots=True)
class NotifySection:
    channels: list[NotifyChannel] = field(default_factory=list)
    routes: list[NotifyRoute] = field(default_factory=list)
    escalations: list[NotifyEscalation] = field(default_factory=list)
    rate_limits: list[NotifyRateLimit] = field(default_factory=list)
    # Base of the acknowledgement links put in messages (the API as people reach it, e.g.
    # "https://sem.site.example:8080"); empty = no links.
    public_url: str = ""
    ack_link_ttl: float = field(default=86400.0, metadata=check(positive))
    timezone: str = field(default="UTC", metadata=check(check_timezone))
    tick: float = field(default=1.0, metadata=check(positive))  # timer resolution, seconds
    send_timeout: float = field(default=30.0, metadata=check(positive))
    backoff_base: float = field(default=5.0, metadata=check(positive))
    backoff_cap: float = field(default=300.0, metadata=check(positive))
    max_rejections: int = field(default=3, metadata=check(positive))
    sms_max_chars: int = field(default=306, metadata=check(positive))  # two segments
    digest_max_items: int = field(default=50, metadata=check(positive))

    def validate(self) -> list[str]:
        errors: list[str] = []
        names = [c.name for c in self.channels]
        known = set(names)
        for i, name in enumerate(names):
            if name in names[:i]:
                errors.append(f"channels[{i}].name: duplicate channel name {name!r}")
        escalations = {e.name for e in self.escalations}
        for i, r in enumerate(self.routes):
            for ch in r.channels:
                if ch not in known:
                    errors.append(f"routes[{i}].channels: no channel named {ch!r}")
            if r.escalation and r.escalation not in escalations:
                errors.append(f"routes[{i}].escalation: no escalation named {r.escalation!r}")
        for i, e in enumerate(self.escalations):
            if not e.levels:
                errors.append(f"escalations[{i}].levels: at least one level")
            for j, lvl in enumerate(e.levels):
                for ch in lvl.channels:
                    if ch not in known:
                        errors.append(
                            f"escalations[{i}].levels[{j}].channels: no channel named {ch!r}"
                        )
        recipients = {r for c in self.channels for r in c.to}
        for i, rl in enumerate(self.rate_limits):
            if bool(rl.channel) == bool(rl.recipient):
                errors.append(f"rate_limits[{i}]: give one of channel or recipient")
            elif rl.channel and rl.channel not in known:
                errors.append(f"rate_limits[{i}].channel: no channel named {rl.channel!r}")
            elif rl.recipient and rl.recipient not in recipients:
                errors.append(f"rate_limits[{i}].recipient: {rl.recipient!r} is in no channel's to")
        if self.public_url and not self.public_url.startswith(("http://", "https://")):
            errors.append("public_url: must start with http:// or https://")
        return errors


RESPOND_PLACEHOLDERS = ("ip", "user", "value", "ttl", "incident_id", "rule_id", "action", "alias")
RESPOND_PLACEHOLDER_PATTERN = r"\{([A-Za-z_][A-Za-z0-9_]*)\}"


def _placeholders(text: str) -> list[str]:
    return re.findall(RESPOND_PLACEHOLDER_PATTERN, text)


def check_severity(value: str) -> str | None:
    allowed = ("informational", "low", "medium", "high", "critical")
    return None if value in allowed else f"must be one of {', '.join(allowed)}"


@dataclass(frozen=True, slots=True)
class RespondAction:
    """One ``[[respond.actions]]``: what the box does when an incident opens (appliance.respond).

    Values from incidents reach a call only through typed placeholders (``{ip}`` parses as an
    IP address, ``{user}`` matches a conservative name pattern), each inside one argv element
    or one URL/header/body string: no shell ever sees them. ``dry_run`` is on until a site
    turns it off on purpose. Secrets (``password``) stay out of ``repr``.
    """

    name: str = field(default="", metadata=check(sensor_name))
    type: Literal["http", "exec"] = "exec"
    enabled: bool = True
    dry_run: bool = True
    # match (all given conditions must hold; an empty list matches everything)
    min_severity: str = field(default="high", metadata=check(check_severity))
    rules: list[str] = field(default_factory=list)  # rule ids or globs (fnmatch)
    tags: list[str] = field(default_factory=list)  # any of these (globs) on the rule
    source_networks: list[str] = field(default_factory=list, metadata=check(check_networks))
    # the value acted on: an incident group field, typed
    target_field: str = "source.ip"
    target_type: Literal["ip", "user"] = "ip"
    ttl: float = field(default=3600.0, metadata=check(non_negative))  # 0 = permanent
    timeout: float = field(default=10.0, metadata=check(positive))
    max_attempts: int = field(default=5, metadata=check(positive))
    backoff_base: float = field(default=2.0, metadata=check(positive))
    backoff_cap: float = field(default=300.0, metadata=check(positive))
    # exec: absolute program path first; placeholders inside single elements
    argv: list[str] = field(default_factory=list)
    undo_argv: list[str] = field(default_factory=list)
    # http: preset fills url paths, method and body; generic needs them all
    preset: Literal["generic", "opnsense", "pfsense"] = "generic"
    url: str = ""  # generic: the full URL template; presets: the firewall's base URL
    method: Literal["GET", "POST", "PUT", "PATCH", "DELETE"] = "POST"
    headers: dict[str, str] = field(default_factory=dict)
    body: str = ""
    undo_url: str = ""
    undo_method: Literal["GET", "POST", "PUT", "PATCH", "DELETE"] = "DELETE"
    undo_body: str = ""
    alias: str = "sem_blocklist"  # presets: the firewall alias (table) that is blocked
    username: str = ""  # HTTP basic auth (OPNsense: the API key)
    password: str = field(default="", repr=False)  # (OPNsense: the API secret)
    password_file: str = ""
    ca_file: str = ""
    # plain http only to loopback unless asked: credentials would cross the network in clear
    allow_plaintext: bool = False

    def templates(self) -> list[tuple[str, str]]:
        """(key, template text) of every string a placeholder may appear in."""
        out = [(f"argv[{i}]", a) for i, a in enumerate(self.argv)]
        out += [(f"undo_argv[{i}]", a) for i, a in enumerate(self.undo_argv)]
        out += [("url", self.url), ("body", self.body), ("undo_url", self.undo_url)]
        out += [("undo_body", self.undo_body)]
        out += [(f"headers.{k}", v) for k, v in self.headers.items()]
        return out

    def validate(self) -> list[str]:
        errors = []
        if not self.name:
            errors.append("name: required")
        for key, text in self.templates():
            for name in _placeholders(text):
                if name not in RESPOND_PLACEHOLDERS:
                    errors.append(
                        f"{key}: unknown placeholder {{{name}}}"
                        f" (known: {', '.join(RESPOND_PLACEHOLDERS)})"
                    )
                elif name in ("ip", "user") and name != self.target_type:
                    errors.append(f"{key}: {{{name}}} but target_type is {self.target_type!r}")
        if self.type == "exec":
            if not self.argv:
                errors.append("argv: required for type = exec (an argv list, no shell)")
            elif not self.argv[0].startswith("/") or _placeholders(self.argv[0]):
                errors.append("argv: the program must be an absolute path, not a placeholder")
            if self.undo_argv and (
                not self.undo_argv[0].startswith("/") or _placeholders(self.undo_argv[0])
            ):
                errors.append("undo_argv: the program must be an absolute path, not a placeholder")
            if self.ttl and not self.undo_argv:
                errors.append("undo_argv: required when ttl > 0 (how is the block lifted?)")
        else:
            from urllib.parse import urlsplit

            if not self.url:
                errors.append("url: required for type = http")
            for key in ("url", "undo_url"):
                value = getattr(self, key)
                if not value:
                    continue
                parts = urlsplit(value)
                if parts.scheme not in ("http", "https") or not parts.hostname:
                    errors.append(f"{key}: must be an http(s) URL")
                elif "@" in parts.netloc:
                    errors.append(f"{key}: credentials go in username/password, not the URL")
                elif (
                    parts.scheme == "http"
                    and not is_loopback_host(parts.hostname)
                    and not self.allow_plaintext
                ):
                    errors.append(
                        f"{key}: plain http beyond loopback sends credentials in clear; use"
                        " https, or set allow_plaintext = true"
                    )
                if _placeholders(parts.netloc):
                    errors.append(f"{key}: placeholders may not choose the host")
            if self.preset == "generic" and self.ttl and not self.undo_url:
                errors.append("undo_url: required when ttl > 0 (how is the block lifted?)")
            if self.preset != "generic" and self.target_type != "ip":
                errors.append("preset: firewall alias presets block addresses (target_type ip)")
        if self.password and self.password_file:
            errors.append("password: give one of password, password_file")
        if self.backoff_cap < self.backoff_base:
            errors.append("backoff_cap: must be >= backoff_base")
        return errors


@dataclass(frozen=True, slots=True)
class RespondSection:
    """``[respond]``: active response. ``never_block`` adds to what is never blocked anyway:
    loopback, the box's own interface addresses, the API listen address."""

    actions: list[RespondAction] = field(default_factory=list)
    never_block: list[str] = field(default_factory=list, metadata=check(check_networks))
    management_networks: list[str] = field(default_factory=list, metadata=check(check_networks))
    discover_own_addresses: bool = True
    max_per_minute: int = field(default=30, metadata=check(positive))
    concurrency: int = field(default=4, metadata=check(positive))
    history_days: float = field(default=90.0, metadata=check(positive))

    def validate(self) -> list[str]:
        errors = []
        names: set[str] = set()
        for i, a in enumerate(self.actions):
            if a.name in names:
                errors.append(f"actions[{i}].name: duplicate action name {a.name!r}")
            names.add(a.name)
        return errors


def check_confidence(value: int) -> str | None:
    return None if 0 <= value <= 100 else "must be 0-100"


@dataclass(frozen=True, slots=True)
class IntelFeed:
    """One ``[[analysis.feeds]]``: a threat-intel list fetched over HTTPS (appliance.analysis.
    feeds) into ``data_dir/intel/``, refreshed every ``interval`` seconds by the running
    appliance and by ``appliance intel update``. Its indicators stop matching ``ttl`` seconds
    after the feed last listed them (or at their own ``valid_until``)."""

    name: str = field(default="", metadata=check(sensor_name))
    url: str = field(default="", metadata=check(check_https_url))
    format: Literal["auto", "plain", "netset", "csv", "misp", "stix"] = "auto"
    confidence: int = field(default=50, metadata=check(check_confidence))
    ttl: float = field(default=7 * 86400.0, metadata=check(positive))
    interval: float = field(default=3600.0, metadata=check(positive))
    ca_file: str = ""  # extra CA bundle (a private feed server); verification is always on
    max_bytes: int = field(default=256 * 1024 * 1024, metadata=check(positive))
    timeout: float = field(default=60.0, metadata=check(positive))
    enabled: bool = True

    def validate(self) -> list[str]:
        errors = []
        if not self.name:
            errors.append("name: required")
        if not self.url:
            errors.append("url: required")
        return errors


def severity_levels(value: int) -> str | None:
    return None if 0 <= value <= 4 else "must be 0-4 severity levels"


@dataclass(frozen=True, slots=True)
class AnalysisSection:
    """``[analysis]``: context that raises or lowers what the rules say (appliance.analysis).
    Paths are relative to the config file; files are re-read on SIGHUP."""

    asset_files: list[str] = field(default_factory=list)
    vuln_files: list[str] = field(default_factory=list)
    ids_rule_files: list[str] = field(default_factory=list)
    intel_files: list[str] = field(default_factory=list)
    # Threat intelligence (appliance.analysis.intel): local files' indicators carry this
    # confidence unless they state their own, and age out `intel_ttl` seconds after the file
    # last changed (0: they never age; their own valid_until still applies).
    intel_confidence: int = field(default=75, metadata=check(check_confidence))
    intel_ttl: float = field(default=0.0, metadata=check(non_negative))
    intel_max_indicators: int = field(default=5_000_000, metadata=check(positive))
    feeds: list[IntelFeed] = field(default_factory=list)
    # GeoIP/ASN (appliance.analysis.geoip): MaxMind-format databases (GeoLite2/GeoIP2 City or
    # Country, ASN; or any MMDB with the same record shape), optional.
    geoip_database: str = ""
    asn_database: str = ""
    # Statistics and baselines (appliance.analysis.baselines): hourly rates per device and
    # source against the same hour of earlier weeks, new terms, rarity.
    baselines: bool = True
    baseline_factor: float = field(default=2.0, metadata=check(positive))
    baseline_min_count: int = field(default=20, metadata=check(positive))
    baseline_warmup_weeks: int = field(default=2, metadata=check(positive))
    baseline_alpha: float = field(default=0.3, metadata=check(positive))
    baseline_max_keys: int = field(default=10_000, metadata=check(positive))
    baseline_snapshot_interval: float = field(default=300.0, metadata=check(positive))
    new_term_learning: float = field(default=7 * 86400.0, metadata=check(non_negative))
    new_term_max_keys: int = field(default=10_000, metadata=check(positive))
    new_term_max_values: int = field(default=1_000, metadata=check(positive))

    # IDS alert vs the target's vulnerability scan (appliance.analysis.risk): severity levels
    # added for a CVE match and for a match listed in CISA KEV; what an alert against a
    # target without the CVE or the service does (lower | suppress | keep), and by how much.
    vuln_match_raise: int = field(default=1, metadata=check(severity_levels))
    kev_raise: int = field(default=1, metadata=check(severity_levels))
    unmatched_ids: Literal["lower", "suppress", "keep"] = "lower"
    unmatched_lower: int = field(default=1, metadata=check(severity_levels))
    # Stamp asset fields on flows too (NetFlow/IPFIX): off by default, since at flow rates
    # the lookups take a measured share of the per-flow budget (README, scripts/bench budget).
    enrich_flows: bool = False

    def validate(self) -> list[str]:
        errors = []
        if self.baseline_alpha > 1:
            errors.append("baseline_alpha: must be at most 1")
        names = [f.name for f in self.feeds]
        dups = sorted({n for n in names if n and names.count(n) > 1})
        return errors + [f"feeds: duplicate feed name {n!r}" for n in dups]


@dataclass(frozen=True, slots=True)
class ConsoleSection:
    """``[console]``: the web console served beside the API (appliance.console).

    Sessions end after ``session_idle`` seconds without a request and ``session_max`` seconds
    after login whatever happens. ``login_max_failures`` wrong passwords within
    ``login_window`` seconds, from one address or for one user name, lock that address or
    name out of logging in for ``login_lockout`` seconds. Pages re-fetch their data every
    ``refresh_seconds`` while they are open (and not at all when nobody looks)."""

    enabled: bool = True
    session_idle: float = field(default=1800.0, metadata=check(positive))
    session_max: float = field(default=43200.0, metadata=check(positive))
    login_max_failures: int = field(default=5, metadata=check(positive))
    login_window: float = field(default=300.0, metadata=check(positive))
    login_lockout: float = field(default=900.0, metadata=check(positive))
    refresh_seconds: float = field(default=5.0, metadata=check(positive))


def check_hhmm(value: str) -> str | None:
    parts = value.split(":")
    if (
        len(parts) != 2
        or not all(p.isascii() and p.isdigit() and len(p) == 2 for p in parts)
        or not (int(parts[0]) < 24 and int(parts[1]) < 60)
    ):
        return f"expected HH:MM (UTC, 00:00 to 23:59), not {value!r}"
    return None


@dataclass(frozen=True, slots=True)
class ReportSchedule:
    """One ``[[reports.schedules]]``: a report written every day or week (appliance.reports).

    The files go to ``[reports] dir``; ``email`` names ``[[notify.channels]]`` of type
    ``email`` that also get them, attached to one message per run."""

    name: str = field(default="", metadata=check(sensor_name))
    every: Literal["daily", "weekly"] = "daily"
    at: str = field(default="06:00", metadata=check(check_hhmm))  # UTC
    weekday: Literal[
        "monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday"
    ] = "monday"
    formats: list[Literal["html", "pdf", "csv"]] = field(default_factory=lambda: ["pdf"])
    # The period covered, ending at the run: default 24h (daily) or 7d (weekly).
    since: str = ""
    email: list[str] = field(default_factory=list)  # notify channels (type email)

    @property
    def span(self) -> float:
        from appliance.reports.period import parse_span

        return parse_span(self.since or ("24h" if self.every == "daily" else "7d"))

    def validate(self) -> list[str]:
        errors = []
        if not self.name:
            errors.append("name: required")
        if not self.formats:
            errors.append("formats: at least one of html, pdf, csv")
        try:
            _ = self.span
        except ValueError as exc:
            errors.append(f"since: {exc}")
        return errors


@dataclass(frozen=True, slots=True)
class ReportsSection:
    """``[reports]``: where scheduled reports are written and how many are kept."""

    dir: str = ""  # default data_dir/reports
    keep: int = field(default=30, metadata=check(positive))  # files per schedule and format
    schedules: list[ReportSchedule] = field(default_factory=list)

    def validate(self) -> list[str]:
        names = [s.name for s in self.schedules]
        dupes = sorted({n for n in names if names.count(n) > 1})
        return [f"schedules: duplicate schedule name {n!r}" for n in dupes]


@dataclass(frozen=True, slots=True)
class AppConfig:
    appliance: ApplianceSection = field(default_factory=ApplianceSection)
    api: ApiSection = field(default_factory=ApiSection)
    pipeline: PipelineSection = field(default_factory=PipelineSection)
    storage: StorageSection = field(default_factory=StorageSection)
    sources: SourcesSection = field(default_factory=SourcesSection)
    upstream: list[UpstreamSection] = field(default_factory=list)
    flows: FlowsSection = field(default_factory=FlowsSection)
    rules: RulesSection = field(default_factory=RulesSection)
    decoders: DecodersSection = field(default_factory=DecodersSection)
    notify: NotifySection = field(default_factory=NotifySection)
    respond: RespondSection = field(default_factory=RespondSection)
    analysis: AnalysisSection = field(default_factory=AnalysisSection)
    console: ConsoleSection = field(default_factory=ConsoleSection)
    reports: ReportsSection = field(default_factory=ReportsSection)
    base_dir: str = field(default=".", metadata={"internal": True})

    def validate(self) -> list[str]:
        errors = []
        names: set[str] = set()
        for i, src in enumerate(self.sources.syslog):
            if src.label in names and src.name:
                errors.append(f"sources.syslog[{i}].name: duplicate source name {src.name!r}")
            names.add(src.label)
        for i, snmp in enumerate(self.sources.snmp):
            if snmp.label in names:
                errors.append(f"sources.snmp[{i}].name: duplicate source name {snmp.label!r}")
            names.add(snmp.label)
        upstreams: set[str] = set()
        for i, up in enumerate(self.upstream):
            if up.name in upstreams:
                errors.append(f"upstream[{i}].name: duplicate upstream name {up.name!r}")
            upstreams.add(up.name)
        for i, nf in enumerate(self.sources.netflow):
            if nf.label in names:
                errors.append(f"sources.netflow[{i}].name: duplicate source name {nf.label!r}")
            names.add(nf.label)
        mail = {c.name for c in self.notify.channels if c.type == "email"}
        for i, sched in enumerate(self.reports.schedules):
            for name in sched.email:
                if name not in mail:
                    errors.append(
                        f"reports.schedules[{i}].email: no [[notify.channels]] of type email"
                        f" named {name!r}"
                    )
        return errors

    @property
    def source_labels(self) -> list[str]:
        """The names of the configured listeners, as the running sources are named."""
        s = self.sources
        return [*(x.label for x in s.syslog), *(x.label for x in s.snmp),
                *(x.label for x in s.netflow)]  # fmt: skip

    @property
    def decoder_paths(self) -> list[Path]:
        return [self.path(p) for p in self.decoders.paths]

    def path(self, value: str) -> Path:
        """A file path from the config, relative to the config file's folder."""
        p = Path(value).expanduser()
        return p if p.is_absolute() else Path(self.base_dir) / p

    @property
    def data_dir(self) -> Path:
        return Path(self.appliance.data_dir).expanduser()


# ----------------------------------------------------------------------------------------- loader


def _type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin is Literal:
        return " | ".join(repr(a) for a in typing.get_args(tp))
    if origin is list:
        return f"list of {_type_name(typing.get_args(tp)[0])}"
    if dataclasses.is_dataclass(tp):
        return "table"
    return {str: "string", int: "integer", float: "number", bool: "boolean"}.get(tp, str(tp))


def _convert(tp: Any, value: Any, path: str, errors: list[str]) -> Any:
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if value is None:
            return None
        return _convert(args[0], value, path, errors)
    if origin is Literal:
        if value not in typing.get_args(tp):
            errors.append(f"{path}: must be one of {_type_name(tp)}, not {value!r}")
        return value
    if origin is list:
        if not isinstance(value, list):
            errors.append(f"{path}: expected a {_type_name(tp)}")
            return []
        (item_tp,) = typing.get_args(tp)
        return [_convert(item_tp, v, f"{path}[{i}]", errors) for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            errors.append(f"{path}: expected a table")
            return {}
        _, val_tp = typing.get_args(tp)
        return {k: _convert(val_tp, v, f"{path}.{k}", errors) for k, v in value.items()}
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            errors.append(f"{path}: expected a table")
            return cast(Any, tp)()
        return build(tp, value, path, errors)
    if tp is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if tp is Any:
        return value
    if not isinstance(value, tp) or (tp is int and isinstance(value, bool)):
        errors.append(f"{path}: expected {_type_name(tp)}, got {type(value).__name__}")
        return None
    return value


def build(cls: Any, data: dict[str, Any], path: str, errors: list[str]) -> Any:
    """Decode one TOML table into ``cls``, appending every problem to ``errors``."""
    hints = typing.get_type_hints(cls)
    # A field whose TOML key is not a Python name (``from``, ``continue``) names it in
    # ``metadata["key"]``.
    fields = {
        f.metadata.get("key", f.name): f
        for f in dataclasses.fields(cls)
        if not f.metadata.get("internal")
    }
    kwargs: dict[str, Any] = {}
    prefix = f"{path}." if path else ""
    for key, value in data.items():
        if key not in fields:
            errors.append(f"{prefix}{key}: unknown key")
            continue
        n_before = len(errors)
        converted = _convert(hints[fields[key].name], value, prefix + key, errors)
        if len(errors) != n_before:
            continue
        checker = fields[key].metadata.get("check")
        if checker is not None:
            problem = checker(converted)
            if problem:
                errors.append(f"{prefix}{key}: {problem}")
                continue
        kwargs[fields[key].name] = converted
    obj = cls(**kwargs)
    validate = getattr(obj, "validate", None)
    if validate is not None:
        errors.extend(f"{prefix}{e}" for e in validate())
    return obj


def load_config(path: str | Path) -> AppConfig:
    """Read and validate a config file; raise :class:`ConfigError` listing every problem."""
    path = Path(path)
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError([f"{path}: cannot read: {exc.strerror or exc}"]) from exc
    except UnicodeDecodeError as exc:  # TOML is UTF-8 (a Latin-1 file is the usual case)
        raise ConfigError([f"{path}: not UTF-8 text (byte {exc.start})"]) from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError([f"{path}: not valid TOML: {exc}"]) from exc
    except RecursionError as exc:  # tomllib recurses per nested array / inline table
        raise ConfigError([f"{path}: not valid TOML: nested too deeply"]) from exc
    return parse_config(data, base_dir=path.resolve().parent)


def load_config_or_report(path: str | Path | None) -> AppConfig | None:
    """The config a command-line subcommand runs with (the packaged example when ``path`` is
    ``None``), or ``None`` after printing every error to stderr: the command then exits 2."""
    try:
        return load_config(path or EXAMPLE_CONFIG)
    except ConfigError as exc:
        for err in exc.errors:
            print(f"config error: {err}", file=sys.stderr)
        return None


def parse_config(data: dict[str, Any], base_dir: str | Path = ".") -> AppConfig:
    errors: list[str] = []
    token = _decoder_names.set(_site_decoder_names(data, base_dir))
    try:
        cfg = build(AppConfig, data, "", errors)
    finally:
        _decoder_names.reset(token)
    # Only on an otherwise valid config: a source table with an error is left out of ``cfg``,
    # and "no source" would then be a second, wrong complaint about the same table.
    if not errors and not cfg.source_labels and not cfg.appliance.allow_empty:
        errors.append(
            "sources: no source configured, so nothing would be received; add one, or set"
            " appliance.allow_empty = true to run without sources"
        )
    if errors:
        raise ConfigError(errors)
    return dataclasses.replace(cfg, base_dir=str(base_dir))


# The decoder names a sender's ``vendor`` may use while one config is parsed: the built-ins
# plus the site files its [decoders] paths name (relative to the config's folder).
_decoder_names: ContextVar[frozenset[str] | None] = ContextVar("decoder_names", default=None)


def _site_decoder_names(data: dict[str, Any], base_dir: str | Path) -> frozenset[str] | None:
    section = data.get("decoders")
    paths = section.get("paths") if isinstance(section, dict) else None
    if not isinstance(paths, list) or not all(isinstance(p, str) for p in paths):
        return None  # none, or malformed (the loader names that error)
    from appliance.protocols.syslog.vendors import build_registry

    base = Path(base_dir)
    resolved = [q if (q := Path(p).expanduser()).is_absolute() else base / q for p in paths]
    return frozenset(build_registry(resolved).registry.by_name)
