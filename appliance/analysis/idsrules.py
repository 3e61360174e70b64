"""Snort/Suricata rule files as a map from signature id to the CVEs the rule detects.

A rule is ``action proto src sport -> dst dport (option; option:value; ...)``. The CVEs come
from the rule's own ``reference:cve,YYYY-NNNN`` options, else from ``metadata`` entries such as
``cve CVE_2021_44228`` (ET Open writes these), else from a CVE named in ``msg``. Disabled rules
(commented out with ``#``, as rule sets ship many) are read too: the mapping is knowledge about
the signature, and an IDS may run a rule that this copy of the file has disabled.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

from appliance.analysis.vulns import normalize_cve

ACTIONS = ("alert", "drop", "reject", "pass", "log", "sdrop", "rejectsrc", "rejectdst")
_RULE_START = re.compile(r"^\s*#*\s*(" + "|".join(ACTIONS) + r")\s+\S+.*\(")
MAX_RULE_CHARS = 65_536
_MSG_CVE = re.compile(r"CVE[-_ ](\d{4})[-_](\d{4,7})", re.IGNORECASE)


class IdsRuleError(ValueError):
    """A rule file (or a rule in it) that cannot be read; says where."""


@dataclass(frozen=True, slots=True)
class Signature:
    sid: int
    gid: int = 1
    rev: int = 0
    msg: str = ""
    classtype: str = ""
    cves: tuple[str, ...] = ()
    enabled: bool = True
    source: str = ""


def _options(body: str) -> list[tuple[str, str]]:
    """Split ``k:v; k2:"a;b"; flag;`` into pairs, honouring quotes and ``\\`` escapes."""
    out: list[tuple[str, str]] = []
    buf: list[str] = []
    quoted = escaped = False
    for ch in body:
        if escaped:
            buf.append(ch)
            escaped = False
        elif ch == "\\":
            escaped = True
        elif ch == '"':
            quoted = not quoted
            buf.append(ch)
        elif ch == ";" and not quoted:
            item = "".join(buf).strip()
            buf = []
            if item:
                key, _, value = item.partition(":")
                out.append((key.strip().lower(), value.strip()))
        else:
            buf.append(ch)
    item = "".join(buf).strip()
    if item:
        key, _, value = item.partition(":")
        out.append((key.strip().lower(), value.strip()))
    return out


def _unquote(value: str) -> str:
    if len(value) >= 2 and value[0] == value[-1] == '"':
        return value[1:-1]
    return value


def parse_rule(line: str, source: str = "") -> Signature | None:
    """One rule line; ``None`` for a line that is not a rule (a comment, a blank)."""
    if not _RULE_START.match(line):
        return None
    enabled = not line.lstrip().startswith("#")
    open_at = line.find("(")
    close_at = line.rfind(")")
    if close_at <= open_at:
        raise IdsRuleError(f"{source}: rule without a closing parenthesis")
    opts = _options(line[open_at + 1 : close_at])
    values: dict[str, str] = {}
    refs: list[str] = []
    meta_cves: list[str] = []
    for key, value in opts:
        if key == "reference":
            kind, _, ident = value.partition(",")
            if kind.strip().lower() == "cve":
                ident = ident.strip()
                cve = normalize_cve(ident if ident.upper().startswith("CVE") else f"CVE-{ident}")
                if cve is not None:
                    refs.append(cve)
        elif key == "metadata":
            for m in _MSG_CVE.finditer(value):
                meta_cves.append(f"CVE-{m.group(1)}-{m.group(2)}")
        else:
            values.setdefault(key, value)
    sid_text = values.get("sid", "")
    if not sid_text.isdigit():
        raise IdsRuleError(f"{source}: rule without a numeric sid")
    msg = _unquote(values.get("msg", ""))
    cves = refs or meta_cves
    if not cves:
        cves = [f"CVE-{m.group(1)}-{m.group(2)}" for m in _MSG_CVE.finditer(msg)]
    gid = values.get("gid", "1")
    rev = values.get("rev", "0")
    return Signature(
        sid=int(sid_text),
        gid=int(gid) if gid.isdigit() else 1,
        rev=int(rev) if rev.isdigit() else 0,
        msg=msg[:500],
        classtype=values.get("classtype", "")[:100],
        cves=tuple(dict.fromkeys(cves)),
        enabled=enabled,
        source=source,
    )


def parse_rules(text: str, source: str = "rules") -> tuple[list[Signature], list[str]]:
    """Every rule of a file (continuation lines joined) and the errors of the bad ones.

    A bad rule is reported and skipped: one typo in a vendor's file of thousands should not
    lose the others.
    """
    sigs: list[Signature] = []
    errors: list[str] = []
    pending = ""
    start = 0
    for n, raw in enumerate(text.splitlines(), start=1):
        line = raw.rstrip()
        if pending:
            pending += line.lstrip("#").strip() if line.lstrip().startswith("#") else line.strip()
        else:
            pending, start = line, n
        if pending.endswith("\\") and len(pending) < MAX_RULE_CHARS:
            pending = pending[:-1]
            continue
        rule, pending = pending, ""
        try:
            sig = parse_rule(rule, f"{source}:{start}")
        except IdsRuleError as exc:
            if not rule.lstrip().startswith("#"):
                errors.append(str(exc))  # a commented-out draft need not be a valid rule
            continue
        if sig is not None:
            sigs.append(sig)
    return sigs, errors


class SignatureIndex:
    """``sid`` → signature; an enabled rule wins over a disabled copy of the same sid."""

    def __init__(self, sigs: Iterable[Signature] = ()) -> None:
        self.by_sid: dict[int, Signature] = {}
        for s in sigs:
            old = self.by_sid.get(s.sid)
            if old is None or (s.enabled and not old.enabled):
                self.by_sid[s.sid] = s

    def __len__(self) -> int:
        return len(self.by_sid)

    def cves(self, rule_id: object) -> tuple[str, ...]:
        """The CVEs of the signature an event names (``rule.id``, a string or a number)."""
        if isinstance(rule_id, int):
            sid = rule_id
        elif isinstance(rule_id, str) and rule_id.isdigit():
            sid = int(rule_id)
        else:
            return ()
        sig = self.by_sid.get(sid)
        return sig.cves if sig is not None else ()

    def get(self, rule_id: object) -> Signature | None:
        try:
            return self.by_sid.get(int(str(rule_id)))
        except ValueError:
            return None

    @property
    def with_cves(self) -> int:
        return sum(1 for s in self.by_sid.values() if s.cves)
