"""linux_auth's native part (``SshdAuthLines``: OpenSSH's failed, accepted and invalid-user
lines and the connection lines around them) against the Python decoder, message for message:
whatever the native part claims, it claims with the same fields in the same order; whatever it
leaves, it leaves untouched."""

from __future__ import annotations

import calendar
import random
from collections.abc import Iterator
from typing import Any

import orjson
import pytest

from appliance import dataplane
from appliance.protocols.syslog import decode_syslog
from appliance.protocols.syslog.ecs import syslog_fields
from appliance.protocols.syslog.vendors import linux_auth
from tests.conftest import syslog_corpus_lines

NOW = calendar.timegm((2026, 12, 5, 2, 0, 0))

pytestmark = pytest.mark.skipif(
    dataplane.native is None,
    reason="native data plane not loaded (not built, or APPLIANCE_NATIVE=0)",
)

BODIES = [
    "Failed password for root from 203.0.113.9 port 4022 ssh2",
    "Failed password for invalid user admin from 198.51.100.7 port 52113 ssh2",
    "Failed password for invalid user  from 198.51.100.7 port 1 ssh2",
    "Failed password for user with spaces from 198.51.100.7 port 2 ssh2",
    "Failed none for invalid user test from 192.0.2.1 port 1 ssh2",
    "Failed publickey for git from 2001:db8::1 port 22 ssh2",
    "Failed password for x from 010.1.1.1 port 22 ssh2",
    "Failed password for x from 1.2.3.4 port 0000000000000000000022 ssh2",
    "Failed password for x from 1.2.3.4 port",
    "Failed password",
    "Failed keyboard-interactive/pam for root from 1.2.3.4 port 9 ssh2",
    "Accepted publickey for alice from 10.1.2.5 port 51234 ssh2: RSA SHA256:abc",
    "Accepted password for alice from 10.1.2.5 port 51234 ssh2",
    "Accepted",
    "Accepted password for a from 1.2.3.4 port 5 from 5.6.7.8 port 6",
    "Invalid user oracle from 203.0.113.4 port 40000",
    "Invalid user oracle from 203.0.113.4",
    "Invalid user  from 203.0.113.4 port 4",
    "Invalid user x",
    "input_userauth_request: invalid user test [preauth]",
    "input_userauth_request: invalid user test from 1.2.3.4 port 5 [preauth]",
    "invalid user lower from 1.2.3.4 port 5",
    "Connection closed by 203.0.113.9 port 4022 [preauth]",
    "Received disconnect from 192.0.2.44 port 3000:11: Bye Bye [preauth]",
    "Connection closed by authenticating user root 203.0.113.9 port 4022 [preauth]",
    "Connection reset by invalid user test 198.51.100.7 port 1 [preauth]",
    "Connection reset by authenticating user x y port 1",
    'Connection from 203.0.113.9 port 4022 on 10.0.0.1 port 22 rdomain ""',
    "Disconnected from invalid user oracle 203.0.113.4 port 40000 [preauth]",
    "Disconnected from user alice 10.1.2.5 port 51234",
    "Disconnecting: Too many authentication failures for root [preauth]",
    "Disconnecting invalid user a 1.2.3.4 port 5: Too many authentication failures [preauth]",
    "Did not receive identification string from 203.0.113.9 port 4022",
    "error: Received disconnect from 203.0.113.9 port 4022:3: bye [preauth]",
    "Received disconnect from 2001:db8::1 port 3000:11: Bye Bye [preauth]",
    "Received disconnect from 010.1.1.1 port 3000:11:",
    "Received signal 15; terminating.",
    "Connection closed by 1.2.3.4 port 00000000000000000000022",
    "Server listening on 0.0.0.0 port 22.",
    "pam_unix(sshd:auth): authentication failure; logname= uid=0 rhost=1.2.3.4 user=root",
    "Failed password for caf\u00e9 from 1.2.3.4 port 1 ssh2",
    "Failed password for a\x1c from 1.2.3.4 port 1 ssh2",
    "Failed password for a\tb from 1.2.3.4 port 1 ssh2",
    "Failed password for a\x0bb from 1.2.3.4 port 1 ssh2",
]
PROGRAMS = ["sshd", "sshd-session", "sshd(pam_unix)", "sshd(x)", "sudo", "dropbear", "su"]
SUDO_BODIES = [
    "   alice : TTY=pts/0 ; PWD=/home/alice ; USER=root ; COMMAND=/bin/ls",
    "alice : 3 incorrect password attempts ; TTY=pts/0 ; PWD=/ ; USER=root ; COMMAND=/bin/sh -c x",
    "bob : user NOT in sudoers ; TTY=pts/1 ; PWD=/tmp ; USER=root ; COMMAND=/usr/bin/id",
    "bob :  ; TTY=x ; USER=root ; USER= ; COMMAND=a=b ; PWD",
    "bob : a ; b ; TTY=pts/1 ; USER=root ;COMMAND=x ;  PWD = /p ; \tUSER\t=u",
    "carol : TTY=unknown ; PWD=/ ; USER=root ; ENV=A=1 B=2 ; COMMAND=/bin/true",
    "carol : TTY=",
    "carol TTY=pts/0 ; USER=root",
    "pam_unix(sudo:session): session opened for user root(uid=0) by alice(uid=1000)",
    "  pam_unix(sudo:auth): authentication failure; logname=alice uid=1000 rhost=  user=alice",
    "",
]
PAM_USER_BODIES = [
    "(root) CMD (run-parts /etc/cron.hourly)",
    "pam_unix(cron:session): session opened for user root(uid=0) by (uid=0)",
    "session opened for user root by (uid=0)",
    "authentication failure; logname= uid=0 euid=0 tty=tty1 ruser= rhost=  user=bob",
    "check pass; user unknown",
    "PAM 2 more authentication failures; logname= uid=0 euid=0 tty=tty1 ruser= rhost=  user=bob",
    "3 more authentication failures; logname= rhost=1.2.3.4 user=bob",
    "New session 5 of user alice.",
    "",
]


def both(line: bytes) -> tuple[Any, dict[str, Any], Any, dict[str, Any]]:
    """(reference claimed, its fields, native answer, its fields) for one syslog line."""
    msg = decode_syslog(line, NOW)
    base = syslog_fields(msg, "192.0.2.1")
    want, got = dict(base), dict(base)
    claimed = linux_auth.decode(msg, want)
    answer = linux_auth.DECODER.native.decode(msg, got)
    return claimed, want, answer, got


def assert_same_or_left(line: bytes) -> bool:
    """True when the native part claimed the line (and agreed with the reference); a line it
    calls not the decoder's is one the reference leaves too, both untouched."""
    claimed, want, answer, got = both(line)
    before = syslog_fields(decode_syslog(line, NOW), "192.0.2.1")
    if answer is None or answer is False:
        assert orjson.dumps(got) == orjson.dumps(before), line
        if answer is False:
            assert claimed is False and orjson.dumps(want) == orjson.dumps(before), line
        return False
    assert answer is True and claimed is True, line
    assert orjson.dumps(got) == orjson.dumps(want), line
    return True


def lines_of(programs: list[str], bodies: list[str]) -> Iterator[bytes]:
    for program in programs:
        for body in bodies:
            yield f"<38>Dec  5 02:00:00 srv1 {program}[42]: {body}".encode()


def test_the_lines_it_takes_get_the_references_fields_and_the_rest_are_left() -> None:
    taken = sum(assert_same_or_left(line) for line in lines_of(PROGRAMS, BODIES))
    # sshd and sshd-session: the failed/accepted/invalid and connection bodies
    assert taken >= 2 * 27


def test_it_takes_only_sshd_and_sudo_programs_without_a_pam_tag() -> None:
    for line in lines_of(["dropbear", "su", "sshd(pam_unix)", "sudo(pam_unix)"], BODIES):
        assert both(line)[2] is None, line


def test_sudo_lines_get_the_references_fields() -> None:
    taken = sum(assert_same_or_left(line) for line in lines_of(["sudo"], SUDO_BODIES))
    assert taken == len(SUDO_BODIES) - 2  # its PAM lines are the reference's


def test_a_pam_users_other_lines_are_left_to_the_next_decoder_as_the_reference_does() -> None:
    programs = ["CRON", "cron", "crond", "login", "systemd-logind", "polkitd", "CRON(x)", "nginx"]
    for line in lines_of(programs, PAM_USER_BODIES + BODIES):
        assert_same_or_left(line)
    assert both(next(lines_of(["CRON"], PAM_USER_BODIES)))[2] is False


@pytest.mark.parametrize(
    "body",
    [
        "Failed publickey for git from 2001:db8::1 port 22 ssh2",  # the reference's ipaddress
        "Failed password for x from 010.1.1.1 port 22 ssh2",  # leading zero: not an address
        "Failed password for caf\u00e9 from 1.2.3.4 port 1 ssh2",  # Unicode \\S and \\d
        "Failed password for a\x1c from 1.2.3.4 port 1 ssh2",  # Python's \\s has \\x1c-\\x1f
        "Received disconnect from 2001:db8::1 port 3000:11: x",  # the reference's ipaddress
        "Disconnecting: Too many authentication failures [preauth]",  # other sshd lines
        "Server listening on 0.0.0.0 port 22.",
    ],
)
def test_what_only_the_reference_reads_is_left_to_it(body: str) -> None:
    assert both(next(lines_of(["sshd"], [body])))[2] is None


def test_generated_sshd_lines_decode_identically() -> None:
    rng = random.Random(20261205)
    alphabet = [" ", "port ", "from ", "for ", "invalid user ", ":", ".", "1", "\x1c", "é", "["]
    alphabet += ["by ", "authenticating user ", "isconnect", "Too many", "a", "::", " ; ", "="]
    alphabet += ["TTY=", "USER=", "COMMAND=", "PWD=", " : ", "pam_", "session ", "PAM ", "\t"]
    seeds = [line.decode() for line in lines_of(["sshd"], BODIES)]
    seeds += [line.decode() for line in lines_of(["sudo"], SUDO_BODIES)]
    seeds += [line.decode() for line in lines_of(["CRON"], PAM_USER_BODIES)]
    for _ in range(20_000):
        line = list(rng.choice(seeds))
        for _ in range(rng.randint(1, 4)):
            at = rng.randint(0, len(line))
            if rng.random() < 0.6:
                line[at:at] = rng.choice(alphabet)
            else:
                del line[at : at + rng.randint(1, 6)]
        assert_same_or_left("".join(line).encode())


@pytest.mark.corpus
def test_every_corpus_line_decodes_identically() -> None:
    taken = sum(assert_same_or_left(line) for line in syslog_corpus_lines())
    assert taken > 0
