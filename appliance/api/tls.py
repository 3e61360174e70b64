"""TLS for the API: the configured certificate, or a self-signed one generated into data_dir.

The API serves TLS whenever it listens beyond loopback (a bearer token must not cross a
network in clear) and on loopback when a certificate is configured or ``api.tls = true``.
Without ``api.tls_cert``/``api.tls_key`` the appliance generates an ECDSA P-256 certificate
on first start (``data_dir/api-tls.crt``, key ``data_dir/api-tls.key`` mode 0600) whose
subject alternative names are the listen address and the host name, reuses it on later
starts, and logs its SHA-256 fingerprint so clients can pin it. A listen address the saved
certificate does not name gets a new certificate (and a new fingerprint, logged).
"""

from __future__ import annotations

import datetime
import ipaddress
import logging
import os
import socket
import ssl
from collections.abc import Callable
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from appliance.config import ApiSection, ConfigError, parse_hostport

log = logging.getLogger(__name__)

SELF_SIGNED_CERT = "api-tls.crt"
SELF_SIGNED_KEY = "api-tls.key"
SELF_SIGNED_DAYS = 3650  # pinned by fingerprint, not checked against a CA's lifetime rules


def fingerprint(cert_pem: bytes) -> str:
    """SHA-256 of the certificate's DER form, as colon-separated hex (what browsers show)."""
    cert = x509.load_pem_x509_certificate(cert_pem)
    return cert.fingerprint(hashes.SHA256()).hex(":").upper()


def wanted_names(listen: str) -> tuple[set[str], set[str]]:
    """(DNS names, IP addresses) a self-signed certificate for ``listen`` should carry: the
    listen host (unless a wildcard) and this machine's host name."""
    host, _ = parse_hostport(listen)
    dns = {socket.gethostname()}
    ips: set[str] = set()
    try:
        addr = ipaddress.ip_address(host)
    except ValueError:
        dns.add(host)
    else:
        if not addr.is_unspecified:
            ips.add(str(addr))
    if any(ipaddress.ip_address(i).is_loopback for i in ips) or "localhost" in dns:
        dns.add("localhost")
    return {d for d in dns if d}, ips


def _names_of(cert: x509.Certificate) -> tuple[set[str], set[str]]:
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return set(), set()
    return (
        set(san.get_values_for_type(x509.DNSName)),
        {str(a) for a in san.get_values_for_type(x509.IPAddress)},
    )


def generate_self_signed(cert_path: Path, key_path: Path, listen: str) -> None:
    """Write a new key (mode 0600, created so: never readable by others, not even briefly)
    and a self-signed certificate naming ``listen``; both replace older files atomically."""
    dns, ips = wanted_names(listen)
    key = ec.generate_private_key(ec.SECP256R1())
    cn = sorted(ips)[0] if ips else sorted(dns)[0]
    name = x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "SEM appliance (self-signed)"),
            x509.NameAttribute(NameOID.COMMON_NAME, cn[:64]),
        ]
    )
    now = datetime.datetime.now(datetime.UTC)
    alt: list[x509.GeneralName] = [x509.DNSName(d) for d in sorted(dns)]
    alt += [x509.IPAddress(ipaddress.ip_address(i)) for i in sorted(ips)]
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=SELF_SIGNED_DAYS))
        .add_extension(x509.SubjectAlternativeName(alt), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False
        )
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    key_path.parent.mkdir(parents=True, exist_ok=True)
    _write_atomic(key_path, key_pem, 0o600)
    _write_atomic(cert_path, cert.public_bytes(serialization.Encoding.PEM), 0o644)


def _write_atomic(path: Path, data: bytes, mode: int) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, mode)
    try:
        os.fchmod(fd, mode)  # the umask may have taken bits; set exactly what was asked
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)


def self_signed_paths(data_dir: Path) -> tuple[Path, Path]:
    return data_dir / SELF_SIGNED_CERT, data_dir / SELF_SIGNED_KEY


def ensure_self_signed(data_dir: Path, listen: str) -> tuple[Path, Path]:
    """The self-signed certificate and key for ``listen``: reused when they exist and name
    it, else (re)generated. Logs the fingerprint either way."""
    cert_path, key_path = self_signed_paths(data_dir)
    reason = "generated"
    if cert_path.exists() and key_path.exists():
        try:
            cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
            dns, ips = _names_of(cert)
            want_dns, want_ips = wanted_names(listen)
            if want_ips <= ips and want_dns <= dns:
                reason = ""
            else:
                reason = f"regenerated (the saved one does not name {listen})"
        except ValueError:
            reason = "regenerated (the saved one could not be read)"
    if reason:
        generate_self_signed(cert_path, key_path, listen)
    log.log(
        logging.WARNING if reason else logging.INFO,
        "api TLS: %s self-signed certificate %s, SHA-256 fingerprint %s",
        reason or "using",
        cert_path,
        fingerprint(cert_path.read_bytes()),
    )
    return cert_path, key_path


def server_context(
    api: ApiSection, data_dir: Path, resolve: Callable[[str], Path]
) -> ssl.SSLContext | None:
    """The API's TLS context, or ``None`` when it serves plain HTTP (loopback by default)."""
    if not api.tls_enabled:
        return None
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.options |= ssl.OP_NO_RENEGOTIATION | ssl.OP_NO_COMPRESSION
    if not api.tls_cert:
        cert, key = ensure_self_signed(data_dir, api.listen)
        ctx.load_cert_chain(str(cert), str(key))
        return ctx
    cert, key = resolve(api.tls_cert), resolve(api.tls_key)
    try:
        ctx.load_cert_chain(str(cert), str(key))
        digest = fingerprint(cert.read_bytes())
    except (OSError, ValueError) as exc:
        raise ConfigError([f"api.tls_cert: cannot load {cert} / {key}: {exc}"]) from exc
    log.info("api TLS: certificate %s, SHA-256 fingerprint %s", cert, digest)
    return ctx
