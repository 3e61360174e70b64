"""The server TLS session in memory: a client SSLObject on memory BIOs talks to it, bytes
carried by hand, no socket and no event loop."""

from __future__ import annotations

import ssl

import pytest
import trustme

from appliance.sources.tls_session import ClientAllowList, ServerTlsSession, TlsRefused


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


def server_context(ca: trustme.CA, client_ca: trustme.CA | None = None) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.num_tickets = 0
    ca.issue_cert("syslog.example").configure_cert(ctx)
    if client_ca is not None:
        ctx.verify_mode = ssl.CERT_REQUIRED
        client_ca.configure_trust(ctx)
    return ctx


class Client:
    """A TLS client on memory BIOs; ``pump`` carries bytes both ways until neither moves."""

    def __init__(self, ca: trustme.CA, cert: trustme.LeafCert | None = None) -> None:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ca.configure_trust(ctx)
        if cert is not None:
            cert.configure_cert(ctx)
        self.incoming = ssl.MemoryBIO()
        self.outgoing = ssl.MemoryBIO()
        self.obj = ctx.wrap_bio(self.incoming, self.outgoing, server_hostname="syslog.example")
        self.plaintext = b""

    def handshake(self) -> bool:
        try:
            self.obj.do_handshake()
            return True
        except ssl.SSLWantReadError:
            return False

    def pump(self, server: ServerTlsSession) -> None:
        for _ in range(10):
            self.handshake()  # a no-op once done
            sent = self.outgoing.read()
            if sent:
                self.plaintext += server.receive(sent)
            back = server.data_to_send()
            if back:
                self.incoming.write(back)
            if not sent and not back:
                return


def test_a_handshake_then_records_give_the_plaintext(ca: trustme.CA) -> None:
    server = ServerTlsSession(server_context(ca))
    client = Client(ca)
    client.pump(server)
    assert server.handshaken and client.handshake()
    client.obj.write(b"<13>1 - h app - - - one\n<13>1 - h app - - - two\n")
    client.pump(server)
    assert client.plaintext == b"<13>1 - h app - - - one\n<13>1 - h app - - - two\n"


def test_a_partial_record_gives_nothing_until_it_is_complete(ca: trustme.CA) -> None:
    server = ServerTlsSession(server_context(ca))
    client = Client(ca)
    client.pump(server)
    client.obj.write(b"a line\n")
    record = client.outgoing.read()
    assert server.receive(record[:5]) == b""
    assert server.receive(record[5:]) == b"a line\n"


def test_plaintext_on_the_tls_port_is_refused_at_the_first_byte(ca: trustme.CA) -> None:
    server = ServerTlsSession(server_context(ca))
    with pytest.raises(TlsRefused) as refused:
        server.receive(b"<13>Nov 29 10:00:00 host app: hello\n")
    assert refused.value.reason == "plaintext" and not refused.value.answer


def test_the_peers_close_notify_is_answered_and_marks_the_end(ca: trustme.CA) -> None:
    server = ServerTlsSession(server_context(ca))
    client = Client(ca)
    client.pump(server)
    client.obj.write(b"last\n")
    with pytest.raises(ssl.SSLWantReadError):
        client.obj.unwrap()
    assert server.receive(client.outgoing.read()) == b"last\n"
    assert server.eof
    assert server.data_to_send()  # our close_notify, for the peer


def test_a_client_without_a_required_certificate_is_refused_with_an_alert(
    ca: trustme.CA,
) -> None:
    server = ServerTlsSession(server_context(ca, client_ca=trustme.CA()))
    client = Client(ca)
    with pytest.raises(TlsRefused) as refused:
        client.pump(server)
    assert refused.value.reason == "no_client_cert" and refused.value.answer
    assert not server.handshaken


def test_a_certificate_from_an_unknown_ca_is_refused(ca: trustme.CA) -> None:
    server = ServerTlsSession(server_context(ca, client_ca=trustme.CA()))
    client = Client(ca, cert=trustme.CA().issue_cert("sender-1.example"))
    with pytest.raises(TlsRefused) as refused:
        client.pump(server)
    assert refused.value.reason == "bad_client_cert"


def test_a_valid_certificate_not_on_the_allow_list_is_refused_after_the_handshake(
    ca: trustme.CA,
) -> None:
    clients = trustme.CA()
    allow = ClientAllowList(["sender-1.example"])
    server = ServerTlsSession(server_context(ca, client_ca=clients), allow)
    with pytest.raises(TlsRefused) as refused:
        Client(ca, cert=clients.issue_cert("sender-2.example")).pump(server)
    assert refused.value.reason == "client_not_allowed" and server.handshaken

    server = ServerTlsSession(server_context(ca, client_ca=clients), allow)
    client = Client(ca, cert=clients.issue_cert("sender-1.example"))
    client.pump(server)
    assert server.handshaken
