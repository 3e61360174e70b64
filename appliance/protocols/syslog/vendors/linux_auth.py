"""Linux authentication: OpenSSH ``sshd``, Dropbear, ``sudo``, ``su`` and PAM modules.

Selected by program name only (``sshd``, ``sudo``, ``su``, ``su(pam_unix)``...), then the first
word of the message picks one pattern: never a cascade over every line.

Still code, not a decoder file (docs/decoders.md): the syslog program name decides the
meaning (``su(pam_unix)`` tags, the PAM service → action table falling back to the program,
``process.name`` from the program), and decoder files read the message text only, not the
program; su and sudo lines are rewritten into PAM's shape and decoded again; whether a line
is claimed depends on the program (sshd, dropbear, sudo and su lines always, other PAM users
only for their PAM lines). A program capture and a message-id table on the first word would
carry most of it.
"""

from __future__ import annotations

import re

from appliance import dataplane
from appliance.protocols.syslog.message import SyslogMessage
from appliance.protocols.syslog.vendors.base import (
    Fields,
    VendorDecoder,
    authentication,
    set_int,
    set_ip,
)

_SSH_RESULT = re.compile(
    r"(Accepted|Failed) (\S+) for (?:invalid user )?(.*?) from (\S+) port (\d+)"
)
_SSH_INVALID = re.compile(r"[Ii]nvalid user (.*?) from (\S+)(?: port (\d+))?")
_SSH_MAX = re.compile(
    r"error: maximum authentication attempts exceeded for (?:invalid user )?(.*?) from (\S+)"
    r" port (\d+)"
)
_SSH_NOT_ALLOWED = re.compile(r"User (\S+) from (\S+) not allowed because")
_FROM_IP_PORT = re.compile(
    r"(?:from|by) (?:(?:authenticating|invalid) user (\S+) )?"
    r"([0-9a-fA-F.:]+)(?: port (\d+))?"
)
_DROPBEAR = re.compile(
    r"(Bad password attempt|Login attempt for nonexistent user|Password auth succeeded|"
    r"Pubkey auth succeeded|Exit before auth)(?: for '([^']*)')?.*? from ([0-9a-fA-F.:\[\]]+):(\d+)"
)
_PAM = re.compile(r"pam_(\w+)\(([\w\-]+):(\w+)\): (.*)")
_KV = re.compile(r"(\w+)=(\S*)")
_SESSION = re.compile(r"session (opened|closed) for user (\S+?)(?:\(uid=\d+\))?(?: by|$)")
_SUDO_HEAD = re.compile(r"\s*(\S+) : (?:(.*?) ; )?TTY=")
_SU_OK = re.compile(
    r"(?:Successful su for (\S+) by (\S+)|\(to (\S+)\) (\S+) on|(\S+) to (\S+) on /)"
)
_TOO_MANY = re.compile(
    r"Disconnecting(?: \S+ user \S+ \S+ port \d+)?: Too many authentication "
    r"failures(?: for (?:invalid user )?(\S+))?"
)
_PAM_MORE = re.compile(r"(?:PAM )?\d+ more authentication failures?;")
_PAM_ERROR = re.compile(r"error: PAM: (.*?) for (?:illegal user |invalid user )?(\S+) from (\S+)")
_SU_BAD = re.compile(r"(?:FAILED su for (\S+) by (\S+)|BAD SU (\S+) to (\S+))")

SERVICE_ACTION = {"sshd": "ssh_login", "su": "su", "sudo": "sudo", "su-l": "su"}


def _pam(text: str, fields: Fields, program: str) -> bool:
    """``pam_unix(sshd:auth): authentication failure; ... rhost=IP user=U``."""
    m = _PAM.match(text)
    if m is None:
        return False
    service, kind, rest = m.group(2), m.group(3), m.group(4)
    action = SERVICE_ACTION.get(service, SERVICE_ACTION.get(program, "login"))
    fields["process.name"] = program or service
    if rest.startswith("authentication failure"):
        kv = dict(_KV.findall(rest))
        authentication(fields, action, "failure", kv.get("user") or None)
        set_ip(fields, "source.ip", kv.get("rhost"))
        if kv.get("ruser"):
            fields["user.effective.name"] = kv["ruser"]  # who asked (su/sudo)
        return True
    if rest.startswith("check pass; user unknown"):
        authentication(fields, action, "failure")
        return True
    s = _SESSION.match(rest)
    if s is not None and kind == "session":
        opened = s.group(1) == "opened"
        authentication(fields, action, "success", s.group(2), "start" if opened else "end")
        if not opened:
            fields["event.action"] = "logout"
        return True
    return False


def _sshd(text: str, fields: Fields) -> bool:
    first = text[:8]
    if first.startswith(("Accepted", "Failed ")):
        m = _SSH_RESULT.match(text)
        if m is None:
            return False
        ok = m.group(1) == "Accepted"
        authentication(fields, "ssh_login", "success" if ok else "failure", m.group(3))
        fields["user_agent.original"] = m.group(2)  # auth method: password, publickey...
        set_ip(fields, "source.ip", m.group(4))
        set_int(fields, "source.port", m.group(5))
        return True
    if "nvalid user" in first or first.startswith(("Invalid ", "input_us")):
        m = _SSH_INVALID.search(text)
        if m is None:
            authentication(fields, "ssh_login", "failure")
            return True
        authentication(fields, "ssh_login", "failure", m.group(1))
        set_ip(fields, "source.ip", m.group(2))
        set_int(fields, "source.port", m.group(3))
        return True
    if first.startswith("pam_"):
        return _pam(text, fields, "sshd")
    if first.startswith("error: m"):
        m = _SSH_MAX.match(text)
        if m is not None:
            authentication(fields, "ssh_login", "failure", m.group(1))
            set_ip(fields, "source.ip", m.group(2))
            set_int(fields, "source.port", m.group(3))
            return True
    if first.startswith("User "):
        m = _SSH_NOT_ALLOWED.match(text)
        if m is not None:
            authentication(fields, "ssh_login", "failure", m.group(1))
            set_ip(fields, "source.ip", m.group(2))
            return True
    if first.startswith("Disconne") and "Too many" in text:
        m = _TOO_MANY.match(text)
        authentication(fields, "ssh_login", "failure", m.group(1) if m else None)
        return True
    if first.startswith("PAM "):
        if _PAM_MORE.match(text):
            kv = dict(_KV.findall(text))
            authentication(fields, "ssh_login", "failure", kv.get("user") or None)
            set_ip(fields, "source.ip", kv.get("rhost"))
            return True
        return False
    if first.startswith("error: P"):
        m = _PAM_ERROR.match(text)
        if m is not None:
            authentication(fields, "ssh_login", "failure", m.group(2))
            fields["event.reason"] = m.group(1)
            set_ip(fields, "source.ip", m.group(3))
            return True
    if first.startswith(("Received", "Connecti", "Disconne", "Did not ", "error: R")):
        m = _FROM_IP_PORT.search(text)
        if m is not None:
            fields["event.category"] = ["authentication"]
            fields["event.type"] = ["info"]
            fields["event.action"] = "ssh_disconnect" if "isconnect" in text else "ssh_connection"
            if m.group(1):
                fields["user.name"] = m.group(1)
            set_ip(fields, "source.ip", m.group(2))
            set_int(fields, "source.port", m.group(3))
            return True
    if first.startswith("reverse "):
        lb = text.find("[")
        if lb > 0:
            set_ip(fields, "source.ip", text[lb + 1 : text.find("]", lb)])
        fields["event.category"] = ["authentication"]
        fields["event.type"] = ["info"]
        fields["event.action"] = "ssh_reverse_mapping_failed"
        return True
    return False


def _dropbear(text: str, fields: Fields) -> bool:
    m = _DROPBEAR.search(text)
    if m is None:
        return False
    ok = "succeeded" in m.group(1)
    authentication(fields, "ssh_login", "success" if ok else "failure", m.group(2))
    set_ip(fields, "source.ip", m.group(3).strip("[]"))
    set_int(fields, "source.port", m.group(4))
    return True


def _sudo(text: str, fields: Fields) -> bool:
    if "pam_" in text[:6]:
        return _pam(text, fields, "sudo")
    m = _SUDO_HEAD.match(text)
    if m is None:
        return False
    problem = m.group(2)
    kv = {}
    for part in text[m.end() - 4 :].split(" ; "):
        key, _, value = part.partition("=")
        kv[key.strip()] = value
    authentication(fields, "sudo", "failure" if problem else "success", m.group(1), "info")
    if problem:
        fields["event.reason"] = problem
    if kv.get("USER"):
        fields["user.target.name"] = kv["USER"]
    if kv.get("COMMAND"):
        fields["process.command_line"] = kv["COMMAND"]
    if kv.get("PWD"):
        fields["process.working_directory"] = kv["PWD"]
    return True


def _su(text: str, fields: Fields) -> bool:
    if text.startswith("pam_"):
        return _pam(text, fields, "su")
    if text.startswith(("authentication failure;", "check pass;")):  # "su(pam_unix)[1]: ..."
        return _pam("pam_unix(su:auth): " + text, fields, "su")
    if text.startswith("session "):
        return _pam("pam_unix(su:session): " + text, fields, "su")
    m = _SU_BAD.match(text)
    if m is not None:
        target, user = (m.group(1), m.group(2)) if m.group(1) else (m.group(4), m.group(3))
        authentication(fields, "su", "failure", user)
        fields["user.target.name"] = target
        return True
    if text.startswith("'su "):  # "'su root' failed for lonvick on /dev/pts/8" (RFC 3164)
        parts = text.split()
        if len(parts) >= 5 and parts[2] == "failed":
            authentication(fields, "su", "failure", parts[4])
            fields["user.target.name"] = parts[1].rstrip("'")
            return True
    if text.startswith("failed:") or text.startswith("FAILED"):
        authentication(fields, "su", "failure")
        return True
    m = _SU_OK.match(text)
    if m is not None:
        g = m.groups()
        target, user = (g[0], g[1]) if g[0] else (g[2], g[3]) if g[2] else (g[5], g[4])
        authentication(fields, "su", "success", user)
        fields["user.target.name"] = target
        return True
    return False


def _generic_pam(text: str, fields: Fields, program: str) -> bool:
    if text.startswith("pam_"):
        return _pam(text, fields, program)
    if text.startswith(("authentication failure;", "check pass;")):
        return _pam(f"pam_unix({program}:auth): " + text, fields, program)
    if _PAM_MORE.match(text):
        kv = dict(_KV.findall(text))
        authentication(fields, SERVICE_ACTION.get(program, "login"), "failure", kv.get("user"))
        set_ip(fields, "source.ip", kv.get("rhost"))
        return True
    if text.startswith("session "):
        return _pam(f"pam_unix({program}:session): " + text, fields, program)
    return False


def decode(msg: SyslogMessage, fields: Fields) -> bool:
    """Claims every line of sshd, dropbear, sudo and su (known programs, even when the line is
    not an authentication event); other PAM users only for their PAM lines."""
    app = msg.app_name or ""
    text = msg.message
    program, paren, module = app.partition("(")
    if paren and module.startswith("pam"):  # "sshd(pam_unix)": old PAM tag style
        return _generic_pam(text, fields, program) or program in OWNED
    if program in ("sshd", "sshd-session"):
        _sshd(text, fields)
    elif program == "dropbear":
        _dropbear(text, fields)
    elif program == "sudo":
        _sudo(text, fields)
    elif program == "su":
        _su(text, fields)
    else:
        return _generic_pam(text, fields, program)
    return True


OWNED = frozenset(("sshd", "sshd-session", "dropbear", "sudo", "su"))


DECODER = VendorDecoder(
    name="linux_auth",
    decode=decode,
    # OpenSSH's failed / accepted / invalid-user and connection lines, sudo's command lines
    # and a PAM user's non-PAM lines (not claimed) in Rust on the native batch path
    # (dataplane/src/linux_auth.rs); this module decides every other line and stays the
    # reference (tests/test_linux_auth_native.py compares the two).
    native=dataplane.native.SshdAuthLines() if dataplane.native is not None else None,
    programs=(
        "sshd",
        "sshd-session",
        "dropbear",
        "sudo",
        "su",
        "login",
        "vsftpd",
        "passwd",
        "systemd-logind",
        "gdm-password",
        "polkitd",
        "cron",
        "CRON",
        "crond",
    ),
)
