"""The server side of a TLS stream, sans I/O: bytes from the peer in, plaintext and the bytes
to send back out.

Why not asyncio's SSL transport: on memory BIOs every handshake failure is seen here and given
a bounded reason (plaintext on the TLS port, unknown CA, expired certificate, no certificate,
not on the allow-list, renegotiation), with asyncio and uvloop alike. Why apart from the
protocol: no socket, no loop, no metrics, so it is tested in memory against a client
``SSLObject`` (tests/test_tls_session.py); the protocol counts, logs and closes.
"""

from __future__ import annotations

import contextlib
import hashlib
import ssl
from typing import Any

# The first byte of a TLS record carrying a handshake (a ClientHello starts the stream).
TLS_RECORD_HANDSHAKE = 0x16
READ_CHUNK = 262_144


def tls_error_reason(exc: ssl.SSLError) -> str:
    """A short, bounded reason label for a failed handshake or TLS stream."""
    reason = (getattr(exc, "reason", None) or "").upper()
    if "CERTIFICATE_VERIFY_FAILED" in reason or "UNKNOWN_CA" in reason:
        return "bad_client_cert"
    if "CERTIFICATE_REQUIRED" in reason or "DID_NOT_RETURN_A_CERTIFICATE" in reason:
        return "no_client_cert"
    if "VERSION" in reason or "UNSUPPORTED_PROTOCOL" in reason:
        return "protocol_version"
    if "HTTP_REQUEST" in reason or "WRONG_VERSION" in reason or "RECORD" in reason:
        return "not_tls"
    if "RENEGOTIATION" in reason:
        return "renegotiation"
    return "handshake_failed"


class ClientAllowList:
    """Client certificates allowed by SHA-256 fingerprint or by subject CN / SAN DNS name."""

    def __init__(self, entries: list[str]) -> None:
        self.fingerprints: set[str] = set()
        self.names: set[str] = set()
        for entry in entries:
            hexed = entry.replace(":", "").lower()
            if len(hexed) == 64 and all(c in "0123456789abcdef" for c in hexed):
                self.fingerprints.add(hexed)
            else:
                self.names.add(entry.lower())

    def __bool__(self) -> bool:
        return bool(self.fingerprints or self.names)

    def allows(self, sslobj: ssl.SSLObject) -> bool:
        der = sslobj.getpeercert(binary_form=True)
        if der is None:
            return False
        if hashlib.sha256(der).hexdigest() in self.fingerprints:
            return True
        cert: Any = sslobj.getpeercert() or {}  # the ssl module's nested tuples
        names = {
            value.lower()
            for rdn in cert.get("subject", ())
            for key, value in rdn
            if key == "commonName"
        }
        names.update(v.lower() for k, v in cert.get("subjectAltName", ()) if k == "DNS")
        return bool(names & self.names)


class TlsRefused(Exception):
    """The stream cannot go on: ``reason`` is the bounded label (``plaintext``,
    ``client_not_allowed``, a :func:`tls_error_reason`, ``renegotiation``, ``stream_error``);
    ``answer`` says the session has an alert for the peer (send it, then close)."""

    def __init__(self, reason: str, detail: str = "", *, answer: bool = False) -> None:
        super().__init__(detail or reason)
        self.reason = reason
        self.detail = detail
        self.answer = answer


class ServerTlsSession:
    """One server-side TLS session over memory BIOs.

    :meth:`receive` takes what the peer sent and returns the plaintext it completes (``b""``
    while the handshake runs or a record is partial), raising :class:`TlsRefused` when the
    stream must end; :meth:`data_to_send` is what must go back to the peer after each call
    (handshake records, the answer to a close_notify, an alert). :attr:`eof` turns true when
    the peer closed TLS cleanly (close_notify), which has been answered.
    """

    def __init__(self, context: ssl.SSLContext, allow: ClientAllowList | None = None) -> None:
        self._in = ssl.MemoryBIO()
        self._out = ssl.MemoryBIO()
        self.sslobj = context.wrap_bio(self._in, self._out, server_side=True)
        self.allow = allow
        self.handshaken = False
        self.eof = False
        self._first = True

    def data_to_send(self) -> bytes:
        return self._out.read()

    def receive(self, data: bytes) -> bytes:
        if self._first and data:
            self._first = False
            if data[0] != TLS_RECORD_HANDSHAKE:
                raise TlsRefused("plaintext")
        self._in.write(data)
        sslobj = self.sslobj
        try:
            if not self.handshaken:
                try:
                    sslobj.do_handshake()
                except ssl.SSLWantReadError:
                    return b""
                self.handshaken = True
                if self.allow and not self.allow.allows(sslobj):
                    raise TlsRefused("client_not_allowed")
            chunks = []
            while True:
                try:
                    chunk = sslobj.read(READ_CHUNK)
                except ssl.SSLWantReadError:
                    break
                except ssl.SSLZeroReturnError:
                    chunk = b""
                if not chunk:  # the sender's close_notify: answer it, then close
                    self.eof = True
                    with contextlib.suppress(ssl.SSLError):
                        sslobj.unwrap()
                    break
                chunks.append(chunk)
        except ssl.SSLError as exc:
            reason = tls_error_reason(exc)
            if self.handshaken:  # a handshake record after the handshake: renegotiation
                reason = (
                    "renegotiation"
                    if "HANDSHAKE" in (exc.reason or "").upper() or (reason == "renegotiation")
                    else "stream_error"
                )
            raise TlsRefused(reason, str(exc), answer=True) from exc
        return b"".join(chunks) if len(chunks) != 1 else chunks[0]
